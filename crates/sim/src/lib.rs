//! flashgate-sim: the native programs that put a crowd in front of flashgate.
//! - [`load`] (`flashgate load`): a flash crowd over HTTP against any worker's base URL.
//! - [`simulate`] (`flashgate simulate`): a fleet of isolates, each the worker's very own
//!   [`Gate`](flashgate_core::gate::Gate) from flashgate-core, meeting a crowd against a real
//!   origin.

pub mod load;
pub mod simulate;
