//! `flashgate load`: a flash-crowd generator against any flashgate base URL.
//!
//! Every attempt is `POST /api/events/<event>/orders` with a freshly minted identity token, an
//! `Idempotency-Key` and a JSON body, over one pooled HTTP client with `--concurrency`
//! attempts in flight. What attempt `i` sends is fixed up front by [`CrowdPlan`], a pure
//! function of `i` and the mix:
//! - its user is `load-<i mod users>`, so the first `users` attempts come from distinct users;
//! - a replay (chance `replay_fraction`, once the user has an earlier attempt) sends the key
//!   and body of that user's previous attempt `i - users`, so a replay repeats an earlier
//!   request exactly;
//! - otherwise the attempt is fresh: a new key, one sku, or two distinct skus with chance
//!   `multi_fraction`.
//!
//! The [`Report`] counts HTTP statuses and outcomes (the body's `error.code`, or `placed` /
//! `replayed` for a 201), latency percentiles and throughput, and what the origin did
//! meanwhile: the delta of `INFO commandstats` around the burst, the tool's own INFO excluded.
//! Nothing else talks to that origin during a run only if the operator makes it so.
//!
//! The parts: `plan` (what each attempt sends), `stats` (counting outcomes, latency, origin
//! commands), `report` (the table and the JSON) and `run` (the HTTP senders and [`main`]).

mod plan;
mod report;
mod run;
mod stats;

pub use plan::{order_body, Attempt, CrowdPlan, Mix};
pub use report::{render_table, Report};
pub use run::{main, LoadArgs};
pub use stats::{
    commandstats, commandstats_delta, latency, origin_use, outcome, parse_commandstats, percentile,
    Latency, OriginUse,
};
