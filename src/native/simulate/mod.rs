//! `flashgate simulate`: a fleet of N isolates in one native process meets a flash crowd,
//! against a real origin. Only the number of isolates and the crowd are synthetic.
//!
//! Each isolate is the worker's own core: a [`Gate`](crate::gate::Gate) built from the
//! [`Config`](crate::config::Config) its vars give, with its own `EdgeState`, called as the
//! wasm shell calls it. They reach the real origin (purchase.lua and view.lua at a real
//! redis-server or Dragonfly) over a shared pool of RESP connections. The figures are measured
//! where they happen: at the origin (`INFO commandstats`, a PING probe, the sold counter) and
//! at each isolate's origin boundary (which purchases it forwarded); the simulator's own
//! counters say only what the crowd sent and got. See `measure` for how each figure is taken.
//!
//! Timeline: the event is created to start a moment later (or `--event` is looked up), the
//! probe watches the idle origin for a second, every isolate serves one event page (and so
//! reads its snapshot), the sale starts, and the crowd arrives (most of it in the first
//! second), retrying 503s and 429s after `Retry-After`. The run ends when every intent has
//! ended, or after `--seconds`. Nothing else should use the origin meanwhile: its counters
//! would count that too.
//!
//! Threads: the fleet runs on one (the gates are not `Send`), the pool's connections on
//! another, the instruments on the process's runtime. The figures are only as good as the
//! machine: `late_p99_ms` says how far the fleet fell behind its planned crowd (one thread
//! decides every attempt), and an origin that shares the simulator's cores answers slower
//! than it would alone.
//!
//! The parts: `plan` (when and where each intent arrives, and when it retries: pure),
//! `measure` (readings into figures: pure), `report` (the JSON and the table), `origin` (the
//! pool and each isolate's tap), `meter` (the instruments at the origin), `fleet` (the
//! isolates and the crowd) and `run` (arguments, setup and [`main`]).

mod fleet;
mod measure;
mod meter;
mod origin;
mod plan;
mod report;
mod run;

pub use measure::{per_second, sellout_ms, Forward, Second};
pub use plan::{arrivals, next, Arrival, Crowd, Next, MAX_RETRIES};
pub use report::{render_table, Report};
pub use run::{main, SimulateArgs};
