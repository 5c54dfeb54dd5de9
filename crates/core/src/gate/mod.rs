//! The request pipeline: route, check, answer early, forward the survivors, render.
//!
//! Each route has a handler in a file of its own (`handle_*`); the purchase route is a
//! pipeline of small named steps ([`purchase`]). Every step either passes what it learnt on
//! or refuses with a [`Refusal`], which says where the decision was made ([`Decided`]: at the
//! edge, with no origin command, or by the origin). The cheapest steps come first:
//! request shape → identity → entry ticket → Idempotency-Key → body → rate limit → a known
//! key's replay → the event snapshot (cached) → state, items, quantity, stock and the user's
//! known caps → the origin. The entry route (`entry`) issues the tickets. Everything before the snapshot costs no origin command, and the snapshot costs
//! at most one read per isolate per `EDGE_CACHE_MS`. Only the last step sends a purchase.
//!
//! Nothing here touches `worker`: the wasm shell passes in the request as plain data, the
//! origin behind [`Origin`], and the time.

mod entry;
mod event;
mod health;
mod live;
mod mine;
mod purchase;
mod reply;
mod session;
mod shop;
mod snapshot;
mod stats;

pub use crate::decision::{Decided, Decision};
pub use entry::{
    window_at, NoSiteverify, Siteverify, ENTRY_COOKIE, ENTRY_HEADER, TICKET_GRACE_SECS,
};
pub use event::event_json;
pub use live::{line_body, live_body, LineBody, LiveBody};
pub use session::{DEV_SESSION_SECS, SESSION_COOKIE};

use crate::bounded::Bounded;
use crate::config::Config;
use crate::edge::{EdgeState, MAX_TRACKED};
use crate::error::{ApiError, ApiReply};
use crate::origin::{Origin, OriginError};
use crate::script::SettleVerb;
use serde::Serialize;
use std::cell::RefCell;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// An outside rate limiter, consulted after the isolate's own token bucket (in the worker:
/// Cloudflare's rate-limiting binding, when `[[ratelimits]]` names `RATE_LIMITER`). `Err`
/// means it could not answer; the gate then refuses the attempt: it fails closed.
#[allow(async_fn_in_trait)]
pub trait Limiter {
    async fn allow(&self, key: &str) -> Result<bool, String>;
}

/// No outside limiter.
pub struct NoLimiter;

impl Limiter for NoLimiter {
    async fn allow(&self, _key: &str) -> Result<bool, String> {
        Ok(true)
    }
}

/// The parts of an HTTP request the gate looks at.
#[derive(Clone, Debug, Default)]
pub struct ApiRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The query string, without `?`.
    pub query: Option<&'a str>,
    pub authorization: Option<&'a str>,
    pub cookie: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub idempotency_key: Option<&'a str>,
    /// The `Flashgate-Entry` header: an entry ticket (else the `fg_entry` cookie is read).
    pub entry: Option<&'a str>,
    /// The client's address (`CF-Connecting-IP`), passed to siteverify as `remoteip`.
    pub remote_ip: Option<&'a str>,
    /// The `Flashgate-Signature` header of a shop API request ([`crate::shop`]).
    pub signature: Option<&'a str>,
    pub body: &'a [u8],
    /// `Content-Length` as sent; the shell does not read bodies declared over the cap.
    pub declared_len: Option<usize>,
    /// A uniform random number in [0, 1) drawn for this request (log sampling). Passed in,
    /// like the time, so that the core stays deterministic under test.
    pub roll: f64,
}

/// A step's "no": the error to answer with, where it was decided, and for origin trouble
/// what went wrong, with its cause (for the log; never sent to the client).
#[derive(Clone, Debug, PartialEq)]
pub struct Refusal {
    pub error: ApiError,
    pub at: Decided,
    pub cause: Option<Box<OriginError>>,
}

impl Refusal {
    pub fn edge(error: ApiError) -> Refusal {
        Refusal {
            error,
            at: Decided::Edge,
            cause: None,
        }
    }
    pub fn origin(error: ApiError) -> Refusal {
        Refusal {
            error,
            at: Decided::Origin,
            cause: None,
        }
    }
    /// Origin trouble, keeping what went wrong for the log.
    pub fn origin_failed(error: ApiError, cause: OriginError) -> Refusal {
        Refusal {
            cause: Some(Box::new(cause)),
            ..Refusal::origin(error)
        }
    }
}

/// One structured log line for a purchase decision.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DecisionLog {
    pub msg: &'static str,
    pub event: String,
    pub user: Option<String>,
    pub code: Decision,
    pub edge: bool,
    pub status: u16,
    /// What went wrong at the origin, for origin trouble.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One purchase decision as a data point for an analytics sink (in the worker: the optional
/// Workers Analytics Engine binding `DECISIONS`). Every purchase decision has one, unsampled;
/// the sink samples by [`DecisionRecord::index`]. The layout is a wire format: see
/// [`DecisionRecord::blobs`] and [`DecisionRecord::doubles`].
#[derive(Clone, Debug, PartialEq)]
pub struct DecisionRecord {
    /// The event id; empty when the path's id is not a valid id.
    pub event: String,
    /// The decision (on the wire: `placed`, `replayed` or an error code).
    pub code: Decision,
    pub at: Decided,
    pub status: u16,
    /// Units the attempt asked for, summed over its lines (0 when refused before its body
    /// was read).
    pub units: u32,
}

impl DecisionRecord {
    /// The sampling key: the event.
    pub fn index(&self) -> &str {
        &self.event
    }

    /// blob1 event, blob2 decision code, blob3 where it was decided (`edge` or `origin`).
    pub fn blobs(&self) -> [&str; 3] {
        [&self.event, self.code.as_str(), self.at.as_str()]
    }

    /// double1 1 (the decision itself, to be summed with the sample interval), double2 the
    /// units asked for, double3 the HTTP status.
    pub fn doubles(&self) -> [f64; 3] {
        [1.0, f64::from(self.units), f64::from(self.status)]
    }
}

/// The answer and, for decisions that are logged, one structured log line. Placed orders,
/// 5xx answers and origin errors always get one; other decisions at `LOG_SAMPLE_RATE`.
/// Purchase decisions also carry their [`DecisionRecord`], sampled or not.
#[derive(Debug)]
pub struct Handled {
    pub reply: ApiReply,
    pub log: Option<DecisionLog>,
    pub record: Option<DecisionRecord>,
}

impl Handled {
    fn plain(res: Result<ApiReply, ApiError>) -> Handled {
        Handled {
            reply: res.unwrap_or_else(|e| e.to_reply()),
            log: None,
            record: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route<'a> {
    Health,
    Event(&'a str),
    Orders(&'a str),
    /// The shop API: pay or cancel one order.
    Settle(&'a str, &'a str, SettleVerb),
    Entry(&'a str),
    Live(&'a str),
    Stats,
    DevSession,
    Session,
    NotFound,
}

fn route(path: &str) -> Route<'_> {
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    match parts.as_slice() {
        ["", "api", "health"] => Route::Health,
        ["", "api", "stats"] => Route::Stats,
        ["", "api", "session"] => Route::Session,
        ["", "api", "dev", "session"] => Route::DevSession,
        ["", "api", "events", id] => Route::Event(id),
        ["", "api", "events", id, "orders"] => Route::Orders(id),
        ["", "api", "events", id, "orders", order, "pay"] => {
            Route::Settle(id, order, SettleVerb::Pay)
        }
        ["", "api", "events", id, "orders", order, "cancel"] => {
            Route::Settle(id, order, SettleVerb::Cancel)
        }
        ["", "api", "events", id, "entry"] => Route::Entry(id),
        ["", "api", "events", id, "live"] => Route::Live(id),
        _ => Route::NotFound,
    }
}

pub struct Gate {
    pub config: Config,
    pub state: RefCell<EdgeState>,
    /// Shop API signatures this isolate accepted (MAC → timestamp), to refuse their replay.
    shop_seen: RefCell<Bounded<String, i64>>,
}

impl Gate {
    pub fn new(config: Config) -> Gate {
        let state = RefCell::new(EdgeState::new(config.edge));
        Gate {
            config,
            state,
            shop_seen: RefCell::new(Bounded::new(MAX_TRACKED)),
        }
    }

    /// Refuses a body (as declared or as read) over `MAX_BODY_BYTES`.
    fn check_body_len(&self, req: &ApiRequest<'_>) -> Result<(), ApiError> {
        let max = self.config.max_body_bytes;
        if req.declared_len.unwrap_or(0).max(req.body.len()) > max {
            return Err(ApiError::new(
                crate::error::Code::BodyTooLarge,
                format!("the body may be at most {max} bytes"),
            ));
        }
        Ok(())
    }

    /// Handles one `/api/*` request with no siteverify client (Turnstile, if configured,
    /// fails closed): [`Gate::serve`] with [`NoSiteverify`].
    pub async fn handle<O: Origin, L: Limiter>(
        &self,
        origin: &O,
        limiter: &L,
        req: &ApiRequest<'_>,
        now_ms: i64,
        clock: &dyn Fn() -> i64,
    ) -> Handled {
        self.serve(origin, limiter, &NoSiteverify, req, now_ms, clock)
            .await
    }

    /// Handles one `/api/*` request. `now_ms` is the request's time; `clock` is read only to
    /// measure the origin's latency for health; `verifier` checks Turnstile tokens at entry.
    pub async fn serve<O: Origin, L: Limiter, V: Siteverify>(
        &self,
        origin: &O,
        limiter: &L,
        verifier: &V,
        req: &ApiRequest<'_>,
        now_ms: i64,
        clock: &dyn Fn() -> i64,
    ) -> Handled {
        let r = route(req.path);
        match (r, req.method) {
            (Route::Health, "GET") => {
                Handled::plain(Ok(health::handle_health(self, origin, clock).await))
            }
            (Route::Event(id), "GET") => {
                Handled::plain(event::handle_event(self, origin, id, now_ms).await)
            }
            (Route::Orders(id), "POST") => {
                purchase::handle_purchase(self, origin, limiter, id, req, now_ms).await
            }
            (Route::Orders(id), "GET") => {
                Handled::plain(mine::handle_my_orders(self, origin, id, req, now_ms).await)
            }
            (Route::Settle(id, order, verb), "POST") => Handled::plain(
                shop::handle_settle(self, origin, (id, order, verb), req, now_ms).await,
            ),
            (Route::Entry(id), "POST") => {
                entry::handle_entry(self, origin, verifier, id, req, now_ms).await
            }
            (Route::Live(id), "GET") => {
                Handled::plain(live::handle_live(self, origin, id, req, now_ms, clock).await)
            }
            (Route::Stats, "GET") => Handled::plain(stats::handle_stats(self, req)),
            (Route::DevSession, "POST") => {
                Handled::plain(session::handle_dev_session(self, req, now_ms))
            }
            (Route::Session, "GET") => Handled::plain(session::handle_session(self, req, now_ms)),
            (Route::Session, "DELETE") => Handled::plain(Ok(session::handle_sign_out())),
            (Route::NotFound, _) => Handled::plain(Err(ApiError::not_found(req.path))),
            (Route::Health | Route::Event(_) | Route::Live(_) | Route::Stats, _) => {
                Handled::plain(Err(ApiError::method_not_allowed("GET")))
            }
            (Route::Orders(id), _) => purchase::refuse_method(self, id, req.roll),
            (Route::DevSession | Route::Entry(_) | Route::Settle(..), _) => {
                Handled::plain(Err(ApiError::method_not_allowed("POST")))
            }
            (Route::Session, _) => Handled::plain(Err(ApiError::method_not_allowed("GET, DELETE"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("/api/health"), Route::Health);
        assert_eq!(route("/api/events/demo"), Route::Event("demo"));
        assert_eq!(route("/api/events/demo/"), Route::Event("demo"));
        assert_eq!(route("/api/events/demo/orders"), Route::Orders("demo"));
        assert_eq!(
            route("/api/events/demo/orders/o_1/pay"),
            Route::Settle("demo", "o_1", SettleVerb::Pay)
        );
        assert_eq!(
            route("/api/events/demo/orders/o_1/cancel"),
            Route::Settle("demo", "o_1", SettleVerb::Cancel)
        );
        assert_eq!(route("/api/events/demo/orders/o_1/refund"), Route::NotFound);
        assert_eq!(route("/api/events/demo/live"), Route::Live("demo"));
        assert_eq!(route("/api/events/demo/entry"), Route::Entry("demo"));
        assert_eq!(route("/api/events/a/b/c"), Route::NotFound);
        assert_eq!(route("/api"), Route::NotFound);
    }
}
