//! flashgate-core: everything that decides, with no Workers types, no SQL and no runtime.
//!
//! A Cloudflare Worker stands at the CDN tier, serves the static sale pages, answers most of
//! the crowd itself (malformed requests, bad identity, not started, sold out, over a cap,
//! too fast) and forwards only surviving purchase attempts to one atomic Lua script on a
//! Dragonfly/Redis origin, in one round trip. This crate is that worker's core, and the
//! native programs' too:
//! - the data: [`model`], [`keys`], [`token`], [`line`] (places and entry tickets), [`order`], [`change`] (the order stream's
//!   entries) and [`config`];
//! - bots: [`turnstile`] (the siteverify protocol, checked at entry);
//! - the origin: one trait with two transports ([`origin`]) and the Lua scripts ([`script`]);
//! - the gate: [`edge`] (what an isolate learns), [`fleet`], [`gate`] (the request pipeline)
//!   and [`error`] (every status code chosen in one place);
//! - the operator's origin-side operations, shared by the CLI, the order writer and the
//!   simulator: [`ops`] (events) and [`orders`] (tracking, payment, expiry);
//! - with the `tokio-net` feature, [`net`]: the native programs' RESP connection.
//!
//! The wasm shell (the workspace's root package) and the native programs (crates/sink,
//! crates/sim, crates/cli) are thin layers over it.

pub mod bounded;
pub mod change;
pub mod config;
pub mod decision;
pub mod draw;
pub mod edge;
pub mod error;
pub mod fleet;
pub mod gate;
pub mod keys;
pub mod line;
pub mod model;
#[cfg(feature = "tokio-net")]
pub mod net;
pub mod ops;
pub mod order;
pub mod orders;
pub mod origin;
pub mod script;
pub mod shop;
pub mod stream;
pub mod threshold;
pub mod token;
pub mod turnstile;
pub mod usermark;
