//! `flashgate simulate`: a fleet of N isolates in one native process meets a flash crowd,
//! against a real origin. Only the number of isolates and the crowd are synthetic.
//!
//! Each isolate is the worker's own core: a [`Gate`](flashgate_core::gate::Gate) built from the
//! [`Config`](flashgate_core::config::Config) its vars give, with its own `EdgeState`, called as the
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
//! another, and each instrument on an OS thread of its own with a blocking connection of its
//! own, at `SCHED_FIFO` where permitted (the report's `probe_priority` says what it got). So
//! the probe's round trip is the origin's latency, not the time the generator took to notice
//! the reply: a task on a runtime that shares two cores with tens of thousands of attempts a
//! second measured mostly the generator (see `probe`).
//!
//! The figures are only as good as the machine: `late_p99_ms` says how far the fleet fell
//! behind its planned crowd (one thread decides every attempt), and an origin that shares the
//! simulator's cores also shares their CPU time: under a crowd it answers slower than it
//! would on a machine of its own, whatever its own load. To measure the origin's own latency
//! on a shared machine, give it the CPU whenever it has work: `make bench` runs its
//! redis-server at `SCHED_FIFO` (`chrt -f`), and measures idle and sale alike.
//!
//! The parts: `plan` (when and where each intent arrives, and when it retries: pure),
//! `measure` (readings into figures: pure), `report` (the JSON and the table), `origin` (the
//! pool and each isolate's tap), `probe` (the instruments' connection, priority and clock),
//! `meter` (the instruments at the origin), `fleet` (the isolates and the crowd) and `run`
//! (arguments, setup and [`main`]).

mod fleet;
mod measure;
mod meter;
mod origin;
mod plan;
mod probe;
mod report;
mod run;
pub mod time;

pub use measure::{per_second, sellout_ms, Forward, Second};
pub use plan::{arrivals, next, Arrival, Crowd, Next, MAX_RETRIES};
pub use report::{render_table, Report};
pub use run::{main, SimulateArgs};
