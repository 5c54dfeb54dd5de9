//! flashgate-worker: the Cloudflare Worker, a thin wasm shell over [`flashgate_core`].
//!
//! `shell` holds the `#[event]` entry points: it reads `Env` into a validated config once per
//! isolate, picks the origin transport (a Workers socket for RESP, `Fetch` for the HTTP command
//! API), calls the core's gate and renders its reply. Every decision is made in the core.

mod shell;
