//! flashgate: an edge gate for flash sales.
//!
//! A Cloudflare Worker stands at the CDN tier, serves the static sale pages, answers most of
//! the crowd itself (malformed requests, bad identity, not started, sold out, over a cap,
//! too fast) and forwards only surviving purchase attempts to one atomic Lua script on a
//! Dragonfly/Redis origin, in one round trip.
//!
//! Layout: a pure core ([`model`], [`keys`], [`token`], [`order`], [`script`], [`edge`],
//! [`gate`], [`error`], [`config`]) with no Workers types; the origin behind one trait with two
//! transports ([`origin`]); a thin wasm shell (`shell`, wasm32 only) and, natively, the
//! operator's tools ([`native`]: CLI operations, the HTTP bridge, the load generator).

pub mod config;
pub mod edge;
pub mod error;
pub mod fleet;
pub mod gate;
pub mod keys;
pub mod model;
pub mod order;
pub mod origin;
pub mod script;
pub mod token;

#[cfg(not(target_arch = "wasm32"))]
pub mod native;
#[cfg(target_arch = "wasm32")]
mod shell;
