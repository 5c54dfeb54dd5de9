//! `POST /api/events/{event}/orders`: the purchase pipeline, as small named steps.
//!
//! 1. [`check_request`]: content type, body size, event id, identity, Idempotency-Key, body.
//! 2. [`rate_limit`]: the isolate's per-user token bucket, then the outside limiter.
//! 3. [`event_snapshot`]: the event as this isolate knows it (cached; one refresher).
//! 4. [`known_key`]: a key this isolate saw placed is replayed here; a key whose attempt may
//!    have run is marked so that the edge's own refusals are skipped for it. Then
//!    [`check_snapshot`]: state, items, quantity, stock and the user's known caps. No await
//!    between the two, so a concurrent copy of an attempt is replayed, never capped.
//! 5. [`admit`]: admission control: a candidate attempt is forwarded with the isolate's share
//!    of the event's origin budget (see `fleet`), or answered 503 `busy` with a jittered
//!    Retry-After.
//! 6. [`forward`]: one EVALSHA of purchase.lua.
//! 7. [`record`]: the isolate learns from the origin's answer (key news, counters, stock,
//!    state): [`crate::edge::EdgeState::learn_purchase`].
//! 8. [`render`]: the answer, from the replies in `reply`.
//!
//! Every decision is counted per event for the fleet's figures. Steps 1–5 refuse at the edge ([`Decided::Edge`]) with no origin command (the snapshot
//! aside); 6–8 answer for the origin. Invariant: a key whose attempt may have run (the origin
//! went silent, or answered something unreadable) is never refused by the edge's own
//! knowledge: only the origin can say whether to replay it.

use super::reply::{cap_error, expired, placed_reply, replay_reply, state_check};
use super::{
    ApiRequest, Decided, Decision, DecisionLog, DecisionRecord, Gate, Handled, Limiter, Refusal,
};
use crate::edge::{CapHit, KeyNews, Purchase};
use crate::error::{ApiError, ApiReply, Code};
use crate::keys::EventKeys;
use crate::line::{self, Window};
use crate::model::{day_number, valid_id, Fairness, State};
use crate::order::{self, Line, Order, OrderLine};
use crate::origin::{Origin, OriginError};
use crate::script::{Outcome, PurchaseCall, Snapshot, PURCHASE};
use crate::threshold;
use std::rc::Rc;

/// The longest Retry-After of a shopper waiting in line: they come back at about half their
/// estimated wait, and at least this often, so that a line that speeds up finds them there.
const MAX_LINE_RETRY_SECS: f64 = 5.0;

/// Retry-After for a refusal by the outside limiter, whose period the gate does not know.
const LIMITER_RETRY_SECS: u64 = 10;

/// A well-formed attempt from a known user.
#[derive(Clone, Debug)]
struct Attempt<'a> {
    event: &'a str,
    user: String,
    key: &'a str,
    lines: Vec<Line>,
    fingerprint: String,
    /// The `Flashgate-Entry` header, unverified (see [`entry_window`]).
    entry: Option<&'a str>,
}

/// What step 6 sends: the order's JSON, its deadline, and whether the key is fresh to this
/// isolate.
struct Forward<'a> {
    order_json: &'a str,
    pay_by: i64,
    fresh: bool,
    /// The entry window, for a `fairness = line` sale (counted and recorded at the origin).
    window: Option<Window>,
}

/// A successful answer and the decision it counts as (placed or replayed).
struct Answer {
    reply: ApiReply,
    decision: Decision,
}

/// What this isolate knows of the attempt's key.
enum Known {
    /// Nothing: the edge's refusals apply.
    Fresh,
    /// Sent before to an origin that went silent: skip the edge's refusals.
    MayHaveRun,
}

pub(super) async fn handle_purchase<O: Origin, L: Limiter>(
    gate: &Gate,
    origin: &O,
    limiter: &L,
    event: &str,
    req: &ApiRequest<'_>,
    now: i64,
) -> Handled {
    let (user, units, result) = match check_request(gate, event, req, now) {
        Err(r) => (None, 0, Err(r)),
        Ok(a) => {
            let r = purchase(gate, origin, limiter, &a, (now, req.roll)).await;
            let units = a.lines.iter().map(|l| l.qty).sum();
            (Some(a.user), units, r)
        }
    };
    let (reply, decision, at, cause) = match result {
        Ok(a) => (a.reply, a.decision, Decided::Origin, None),
        Err(r) => (
            r.error.to_reply(),
            Decision::Refused(r.error.code),
            r.at,
            r.cause,
        ),
    };
    let d = decided(gate, event, user, units, reply, decision, at);
    sampled(gate, d, cause, req.roll)
}

/// Keeps the log line of a decision that must be logged (placed, a 5xx, origin trouble), and
/// of others when `roll` falls under `LOG_SAMPLE_RATE`.
fn sampled(gate: &Gate, mut h: Handled, cause: Option<Box<OriginError>>, roll: f64) -> Handled {
    let must = h
        .log
        .as_ref()
        .is_some_and(|l| l.code == Decision::Placed || l.status >= 500)
        || cause.is_some();
    if let Some(l) = h.log.as_mut() {
        // The log line is where the cause becomes text.
        l.error = cause.map(|e| e.to_string());
    }
    if !must && roll >= gate.config.log_sample_rate {
        h.log = None;
    }
    h
}

/// A wrong method on the orders route still counts as a decision at the edge.
pub(super) fn refuse_method(gate: &Gate, event: &str, req_roll: f64) -> Handled {
    let e = ApiError::method_not_allowed("POST");
    let decision = Decision::Refused(e.code);
    let d = decided(gate, event, None, 0, e.to_reply(), decision, Decided::Edge);
    sampled(gate, d, None, req_roll)
}

/// Counts a decision and writes it down: its log line (kept or not by [`sampled`]) and its
/// record. `user` and `units` (asked for) are known once the request was well formed.
fn decided(
    gate: &Gate,
    event: &str,
    user: Option<String>,
    units: u32,
    reply: ApiReply,
    decision: Decision,
    at: Decided,
) -> Handled {
    let edge = at == Decided::Edge;
    let valid = valid_id(event);
    let mut st = gate.state.borrow_mut();
    st.count(decision, edge);
    if valid {
        st.event_counts(event).decided(decision, at);
    }
    drop(st);
    let log = DecisionLog {
        msg: "decision",
        event: event.to_string(),
        user,
        code: decision,
        edge,
        status: reply.status,
        error: None,
    };
    let record = DecisionRecord {
        event: if valid {
            event.to_string()
        } else {
            String::new()
        },
        code: decision,
        at,
        status: reply.status,
        units,
    };
    Handled {
        reply,
        log: Some(log),
        record: Some(record),
    }
}

/// Steps 2 to 7 for a well-formed attempt.
async fn purchase<O: Origin, L: Limiter>(
    gate: &Gate,
    origin: &O,
    limiter: &L,
    a: &Attempt<'_>,
    (now, roll): (i64, f64),
) -> Result<Answer, Refusal> {
    rate_limit(gate, limiter, a, now).await?;
    let snap = event_snapshot(gate, origin, a, now).await?;
    let window = entry_window(gate, a, &snap, now);
    sight(gate, a, &snap, window);
    // No await from here to the cap check: a copy of this attempt that completes meanwhile
    // is seen as a placed key (a replay), never as caps used up.
    let known = match known_key(gate, a, now)? {
        Ok(replay) => return Ok(replay),
        Err(known) => known,
    };
    let trust_edge = matches!(known, Known::Fresh);
    let order_lines = check_snapshot(gate, a, &snap, trust_edge, now)?;
    admit(gate, a, &snap, window, (roll, now))?;
    let pay_by = now + snap.meta.pay_within_ms;
    let order = Order::new(a.event, &a.user, a.key, order_lines, now, pay_by);
    let order_json = serde_json::to_string(&order).expect("orders serialize");
    let call = Forward {
        order_json: &order_json,
        pay_by,
        fresh: trust_edge,
        window: (snap.meta.fairness == Fairness::Line).then_some(window),
    };
    let outcome = forward(gate, origin, a, &call, now).await?;
    record(gate, a, &snap, &call, &outcome, now);
    render(a, &snap, outcome, &order, now)
}

/// Step 1: everything that needs neither the origin nor the isolate's memory.
fn check_request<'a>(
    gate: &Gate,
    event: &'a str,
    req: &ApiRequest<'a>,
    now: i64,
) -> Result<Attempt<'a>, Refusal> {
    let ct = req.content_type.unwrap_or("");
    let media = ct.split(';').next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/json") {
        return Err(Refusal::edge(ApiError::new(
            Code::UnsupportedMediaType,
            "send Content-Type: application/json",
        )));
    }
    let max = gate.config.max_body_bytes;
    if req.declared_len.unwrap_or(0).max(req.body.len()) > max {
        return Err(Refusal::edge(ApiError::new(
            Code::BodyTooLarge,
            format!("the body may be at most {max} bytes"),
        )));
    }
    if !valid_id(event) {
        return Err(Refusal::edge(ApiError::invalid_id("event id")));
    }
    let id = gate.identity(req, now).map_err(Refusal::edge)?;
    let key = order::check_idempotency_key(req.idempotency_key).map_err(Refusal::edge)?;
    let lines = order::parse_order(req.body).map_err(Refusal::edge)?;
    Ok(Attempt {
        event,
        user: id.user,
        key,
        fingerprint: order::fingerprint(&lines),
        lines,
        entry: req.entry,
    })
}

/// Step 2: the per-user token bucket, then the outside limiter (which fails closed).
async fn rate_limit<L: Limiter>(
    gate: &Gate,
    limiter: &L,
    a: &Attempt<'_>,
    now: i64,
) -> Result<(), Refusal> {
    const SLOW_DOWN: &str = "too many attempts; slow down";
    let bucket = gate.state.borrow_mut().take_token(&a.user, now);
    bucket.map_err(|secs| Refusal::edge(ApiError::rate_limited(SLOW_DOWN, secs)))?;
    match limiter.allow(&a.user).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(Refusal::edge(ApiError::rate_limited(
            SLOW_DOWN,
            LIMITER_RETRY_SECS,
        ))),
        Err(_) => Err(Refusal::edge(ApiError::rate_limited(
            "the rate limiter did not answer; try again",
            1,
        ))),
    }
}

/// Step 4a: `Ok` is a replay answered here; `Err` says how far to trust the edge for this key.
fn known_key(gate: &Gate, a: &Attempt<'_>, now: i64) -> Result<Result<Answer, Known>, Refusal> {
    let news = gate
        .state
        .borrow()
        .key_news(a.event, &a.user, a.key)
        .cloned();
    if news
        .as_ref()
        .and_then(KeyNews::fingerprint)
        .is_some_and(|fp| fp != a.fingerprint)
    {
        return Err(Refusal::edge(ApiError::key_reused()));
    }
    match news {
        None => Ok(Err(Known::Fresh)),
        Some(KeyNews::Uncertain) => Ok(Err(Known::MayHaveRun)),
        Some(KeyNews::Expired { order_json, .. }) => Err(Refusal::edge(expired(&order_json))),
        // Past its deadline the order may have expired: only the origin knows.
        Some(KeyNews::Placed { replay_until, .. }) if now >= replay_until => {
            Ok(Err(Known::MayHaveRun))
        }
        Some(KeyNews::Placed { order_json, .. }) => {
            let total = gate.state.borrow().known_total(a.event, &a.user, now);
            let reply = replay_reply(&order_json, total, None).map_err(Refusal::edge)?;
            Ok(Ok(Answer {
                reply,
                decision: Decision::Replayed,
            }))
        }
    }
}

/// Step 3: the event as this isolate knows it.
async fn event_snapshot<O: Origin>(
    gate: &Gate,
    origin: &O,
    a: &Attempt<'_>,
    now: i64,
) -> Result<Rc<Snapshot>, Refusal> {
    gate.snapshot(origin, a.event, now)
        .await
        .map_err(|e| Refusal::origin_failed(ApiError::origin_unavailable(), e))?
        .ok_or_else(|| Refusal::edge(ApiError::unknown_event(a.event)))
}

/// Step 4b: the lines priced from the snapshot, or the edge's refusal. With `trust_edge`
/// false (the key may have run), only what cannot change is checked: items and quantities.
fn check_snapshot(
    gate: &Gate,
    a: &Attempt<'_>,
    snap: &Snapshot,
    trust_edge: bool,
    now: i64,
) -> Result<Vec<OrderLine>, Refusal> {
    if trust_edge {
        state_check(snap, now).map_err(Refusal::edge)?;
    }
    let cap_qty = snap.meta.caps.per_order_qty;
    let mut priced = Vec::with_capacity(a.lines.len());
    for l in &a.lines {
        let (i, item) = snap
            .item(&l.sku)
            .ok_or_else(|| Refusal::edge(ApiError::unknown_item(a.event, &l.sku)))?;
        if l.qty > cap_qty {
            return Err(Refusal::edge(ApiError::qty_limit(&l.sku, cap_qty)));
        }
        if trust_edge && item.remaining() < l.qty {
            return Err(Refusal::edge(ApiError::sold_out(&l.sku, item.remaining())));
        }
        let price = &snap.meta.items[i].price;
        priced.push(OrderLine {
            sku: l.sku.clone(),
            qty: l.qty,
            unit_price: price.amount,
            currency: price.currency.clone(),
        });
    }
    if trust_edge {
        let hit = gate
            .state
            .borrow()
            .cap_hit(a.event, &a.user, snap, &a.lines, now);
        if let Some(hit) = hit {
            return Err(Refusal::edge(cap_error(hit, snap, now)));
        }
    }
    Ok(priced)
}

/// The entry window of an attempt: the seam where a shopper's entry is read. For now a
/// `Flashgate-Entry` ticket (`line::verify_ticket` against IDENTITY_SECRET) for this user and
/// event gives its window; anything else is a late entry, at this moment.
fn entry_window(gate: &Gate, a: &Attempt<'_>, snap: &Snapshot, now: i64) -> Window {
    a.entry
        .and_then(|t| line::verify_ticket(&gate.config.identity_secret, t, now).ok())
        .filter(|t| t.user == a.user && t.event == a.event)
        .map_or_else(|| Window::at(now, snap.meta.starts_at), |t| t.window)
}

/// Counts a sampled shopper into their window's entrants (`threshold::sampled`).
fn sight(gate: &Gate, a: &Attempt<'_>, snap: &Snapshot, window: Window) {
    if snap.meta.fairness == Fairness::Line && threshold::sampled(a.event, &a.user) {
        let rank = window.rank(snap.meta.starts_at.div_euclid(1000));
        gate.state
            .borrow_mut()
            .event_counts(a.event)
            .sight(rank, &a.user);
    }
}

/// Step 5: forward this candidate, or shed it (503 `busy`). With `fairness = line` a shopper
/// is forwarded iff their place is below the line's threshold; the refusal says how many
/// shoppers are ahead (`place`) and the wait (`wait_s`), and Retry-After is about that wait.
/// With `fairness = attempt` (or a sale without a seed) each candidate gets the isolate's share
/// (`fleet::Admission`), Retry-After 1 to 3 s, jittered so that shed attempts do not come
/// back together.
fn admit(
    gate: &Gate,
    a: &Attempt<'_>,
    snap: &Snapshot,
    window: Window,
    (roll, now): (f64, i64),
) -> Result<(), Refusal> {
    let mut st = gate.state.borrow_mut();
    st.event_counts(a.event).add("candidates", 1);
    if !gate.config.admission {
        return Ok(());
    }
    let line = match (snap.meta.fairness, &snap.seed) {
        (Fairness::Line, Some(seed)) => Some(seed),
        _ => None,
    };
    let busy = match line {
        None if st.admit(a.event, roll, now) => return Ok(()),
        None => {
            let jitter = (roll * 7919.0).fract();
            ApiError::busy(1 + (jitter * 3.0) as u64)
        }
        Some(seed) => {
            let start = snap.meta.starts_at;
            let key = line::place_key(seed, a.event, &a.user, window, start.div_euclid(1000));
            let place = threshold::position(key);
            let Some(state) = &snap.line else {
                // The line has not advanced yet (its first tick is being claimed).
                return Err(shed(&mut st, a, ApiError::busy(1)));
            };
            if place < state.admits_below(now, start) {
                return Ok(());
            }
            let (ahead, wait) = threshold::ahead(state, &snap.entrants, place, now);
            let remaining: u32 = snap.items.iter().map(|i| i.remaining()).sum();
            let retry = if wait.is_finite() {
                (wait / 2.0).floor().clamp(1.0, MAX_LINE_RETRY_SECS) as u64
            } else {
                MAX_LINE_RETRY_SECS as u64
            };
            ApiError::busy(retry)
                .with("place", ahead)
                .with(
                    "wait_s",
                    if wait.is_finite() {
                        wait.ceil() as u64
                    } else {
                        0
                    },
                )
                .with("remaining", remaining)
        }
    };
    Err(shed(&mut st, a, busy))
}

/// Counts a shed candidate.
fn shed(st: &mut crate::edge::EdgeState, a: &Attempt<'_>, e: ApiError) -> Refusal {
    st.event_counts(a.event).add("shed", 1);
    Refusal::edge(e)
}

/// Step 6: one EVALSHA. Any failure after which the script may have run (silence, a cut-off
/// connection, a reply that cannot be read) marks the key uncertain, so that its retry
/// reaches the origin.
async fn forward<O: Origin>(
    gate: &Gate,
    origin: &O,
    a: &Attempt<'_>,
    f: &Forward<'_>,
    now: i64,
) -> Result<Outcome, Refusal> {
    let keys = EventKeys::new(a.event);
    let call = PurchaseCall {
        keys: &keys,
        user: &a.user,
        now_ms: now,
        idempotency_key: a.key,
        fingerprint: &a.fingerprint,
        order_json: f.order_json,
        pay_by_ms: f.pay_by,
        lines: &a.lines,
        fresh: f.fresh,
    };
    let (k, args) = match f.window {
        Some(w) => call.keys_and_args_in_line(w),
        None => call.keys_and_args(),
    };
    {
        let mut st = gate.state.borrow_mut();
        st.stats.forwarded += 1;
        st.event_counts(a.event).add("forwarded", 1);
    }
    let uncertain = |ran_maybe: bool| {
        if ran_maybe {
            gate.state
                .borrow_mut()
                .learn_key(a.event, &a.user, a.key, Some(KeyNews::Uncertain));
        }
    };
    let (reply, acked) = PURCHASE.eval_acked(origin, &k, &args).await.map_err(|e| {
        uncertain(e.ran_maybe());
        Refusal::origin_failed(ApiError::origin_unavailable(), e)
    })?;
    let outcome = call.outcome(&reply).map_err(|e| {
        uncertain(e.ran_maybe());
        Refusal::origin_failed(ApiError::internal(), e)
    })?;
    // An order is answered as the shopper's only once enough replicas hold it (a replay too:
    // its first answer may have been a 503 for the same reason). A refusal wrote nothing.
    if let (Outcome::Placed { .. } | Outcome::Replayed { .. }, Some((acks, n))) = (&outcome, acked)
    {
        acks.check("the order", n).map_err(|e| {
            uncertain(true);
            Refusal::origin_failed(ApiError::origin_unavailable(), e)
        })?;
    }
    Ok(outcome)
}

/// Step 7: what the origin's answer teaches this isolate ([`crate::edge::EdgeState::learn_purchase`]).
fn record(
    gate: &Gate,
    a: &Attempt<'_>,
    snap: &Snapshot,
    f: &Forward<'_>,
    outcome: &Outcome,
    now: i64,
) {
    let p = Purchase {
        event: a.event,
        user: &a.user,
        key: a.key,
        fingerprint: &a.fingerprint,
        lines: &a.lines,
        order_json: f.order_json,
        pay_by: f.pay_by,
        now,
        day: day_number(now, snap.meta.utc_offset_min),
    };
    gate.state.borrow_mut().learn_purchase(&p, outcome);
}

/// Step 8: the answer for the origin's decision.
fn render(
    a: &Attempt<'_>,
    snap: &Snapshot,
    outcome: Outcome,
    order: &Order,
    now: i64,
) -> Result<Answer, Refusal> {
    let caps = snap.meta.caps;
    let sku = |i: usize| a.lines[i].sku.as_str();
    let refuse = |e: ApiError| Err(Refusal::origin(e));
    match outcome {
        Outcome::Placed { total, lines, .. } => Ok(Answer {
            reply: placed_reply(order, total, caps, &a.lines, &lines),
            decision: Decision::Placed,
        }),
        Outcome::Expired { order_json } => refuse(expired(&order_json)),
        Outcome::Replayed {
            order_json, total, ..
        } => match replay_reply(&order_json, Some(total), Some(caps.total)) {
            Ok(reply) => Ok(Answer {
                reply,
                decision: Decision::Replayed,
            }),
            Err(e) => refuse(e),
        },
        Outcome::SoldOut { line, remaining } => refuse(ApiError::sold_out(sku(line), remaining)),
        Outcome::ItemLimit { line, today, .. } => {
            let hit = CapHit::Item {
                sku: sku(line).to_string(),
                today,
            };
            refuse(cap_error(hit, snap, now))
        }
        Outcome::TotalLimit { total, .. } => refuse(cap_error(CapHit::Total { total }, snap, now)),
        Outcome::KeyReused => refuse(ApiError::key_reused()),
        Outcome::OrderQtyLimit { line, cap } => refuse(ApiError::qty_limit(sku(line), cap)),
        Outcome::BadArguments => refuse(ApiError::internal()),
        Outcome::UnknownEvent => refuse(ApiError::unknown_event(a.event)),
        Outcome::UnknownItem { line } => refuse(ApiError::unknown_item(a.event, sku(line))),
        Outcome::NotStarted | Outcome::Paused | Outcome::Ended => {
            // Say what the origin said, in the words the edge uses for that state.
            let mut fresh = snap.clone();
            fresh.meta.flag = match outcome {
                Outcome::NotStarted => State::Scheduled,
                Outcome::Paused => State::Paused,
                _ => State::Ended,
            };
            if fresh.meta.flag == State::Scheduled {
                fresh.meta.starts_at = fresh.meta.starts_at.max(now + 1000);
            }
            refuse(
                state_check(&fresh, now)
                    .err()
                    .unwrap_or_else(ApiError::internal),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    //! The pipeline against a fake origin that answers what it is told and fails on demand.
    use super::*;
    use crate::config::Config;
    use crate::gate::NoLimiter;
    use crate::model::{EventSpec, State};
    use crate::origin::fake::FakeOrigin;
    use crate::origin::{OriginError, Value};
    use crate::token;
    use futures_util::FutureExt;
    use serde_json::{json, Value as Json};

    const NOW: i64 = 1_800_000_000_000;

    fn gate() -> Gate {
        Gate::new(
            Config::from_lookup(|k| match k {
                "ORIGIN_URL" => Some("redis://127.0.0.1:1".into()),
                "IDENTITY_SECRET" => Some("0123456789abcdef".into()),
                "RATE_LIMIT_PER_SEC" => Some("0".into()),
                _ => None,
            })
            .unwrap(),
        )
    }

    /// view.lua's reply for a live event with item A (`remaining` left of 10).
    fn view(remaining: u32) -> Value {
        view_with_fleet(remaining, vec![])
    }

    /// view.lua's reply with the fleet's figures for the last second.
    fn view_with_fleet(remaining: u32, fleet: Vec<(String, String)>) -> Value {
        let spec: EventSpec = serde_json::from_value(json!({"id":"e","name":"E","starts_at":"2027-01-01T00:00:00Z","ends_at":"2027-02-01T00:00:00Z",
            "items":[{"sku":"A","name":"A","price":100,"currency":"USD","stock":10}]}))
        .unwrap();
        let mut meta = spec.validate().unwrap().meta;
        meta.flag = State::Live;
        let flat = |v: Vec<(String, String)>| {
            Value::Array(
                v.into_iter()
                    .flat_map(|(k, v)| [Value::Str(k), Value::Str(v)])
                    .collect(),
            )
        };
        Value::Array(vec![
            flat(
                meta.to_fields()
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            ),
            flat(vec![("A".into(), "10".into())]),
            flat(vec![("A".into(), (10 - remaining).to_string())]),
            Value::Int(0),
            Value::Int(0),
            flat(fleet),
            Value::Array(vec![]),
        ])
    }

    /// purchase.lua's reply for one unit of A placed, `remaining` left, due in 15 minutes.
    fn placed(remaining: i64) -> Value {
        Value::Array(vec![
            Value::Int(0),
            Value::Int(1),
            Value::Int(NOW + 900_000),
            Value::Int(1),
            Value::Int(remaining),
        ])
    }

    fn bearer(user: &str) -> String {
        format!(
            "Bearer {}",
            token::mint(b"0123456789abcdef", user, NOW / 1000 + 3600)
        )
    }

    /// A well-formed attempt to buy one A.
    fn order_req<'a>(auth: &'a str, key: &'a str) -> ApiRequest<'a> {
        ApiRequest {
            method: "POST",
            path: "/api/events/e/orders",
            authorization: Some(auth),
            content_type: Some("application/json"),
            idempotency_key: Some(key),
            body: br#"{"items":[{"sku":"A","qty":1}]}"#,
            ..Default::default()
        }
    }

    fn order(g: &Gate, o: &FakeOrigin, user: &str, key: &str) -> Handled {
        let auth = bearer(user);
        g.handle(o, &NoLimiter, &order_req(&auth, key), NOW, &|| NOW)
            .now_or_never()
            .expect("the fake never waits")
    }

    fn code(h: &Handled) -> String {
        let b: Json = serde_json::from_str(&h.reply.body).unwrap();
        b["error"]["code"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}", h.reply.status))
    }

    #[test]
    fn a_placed_order_is_replayed_at_the_edge() {
        let (g, o) = (gate(), FakeOrigin::default());
        o.push(Ok(view(10))).push(Ok(placed(9)));
        let first = order(&g, &o, "u", "key-00001");
        assert_eq!(first.reply.status, 201);
        let again = order(&g, &o, "u", "key-00001");
        assert_eq!(again.reply.status, 201);
        assert_eq!(again.reply.header("idempotent-replayed"), Some("true"));
        let (a, b): (Json, Json) = (
            serde_json::from_str(&first.reply.body).unwrap(),
            serde_json::from_str(&again.reply.body).unwrap(),
        );
        assert_eq!(a["order"], b["order"], "the same order");
        assert_eq!(
            o.log.borrow().len(),
            2,
            "one view read and one purchase; the replay cost nothing"
        );
        assert_eq!(
            code(&order(&g, &o, "u", "key-00002")),
            "item_limit_reached",
            "and the cap is known at the edge"
        );
    }

    /// A stored order document: order `id`, for one A (what [`order_req`] asks for).
    fn doc(id: &str) -> String {
        format!(
            r#"{{"id":"{id}","lines":[{{"sku":"A","qty":1,"unit_price":100,"currency":"USD"}}]}}"#
        )
    }

    /// purchase.lua's reply replaying order `id`.
    fn replayed(id: &str) -> Value {
        Value::Array(vec![
            Value::Int(1),
            Value::Str(doc(id)),
            Value::Int(1),
            Value::Int(0),
            Value::Int(0),
        ])
    }

    /// `u`'s first attempt meets `failure` from the origin; then the edge learns that A sold
    /// out. Others are refused at the edge, but `u`'s retry with the same key reaches the
    /// origin, which replays the order. Returns the first answer.
    fn first_then_retry(failure: Result<Value, OriginError>) -> Handled {
        let (g, o) = (gate(), FakeOrigin::default());
        o.push(Ok(view(1))).push(failure);
        let first = order(&g, &o, "u", "key-00001");
        // Meanwhile the last unit went (to this user, as it happens): the edge learns it.
        g.state.borrow_mut().learn_remaining("e", "A", 0);
        assert_eq!(
            code(&order(&g, &o, "v", "key-00009")),
            "sold_out",
            "others are refused at the edge"
        );
        // The uncertain key is not: only the origin can say whether it ran.
        o.push(Ok(replayed("o_x")));
        let retry = order(&g, &o, "u", "key-00001");
        assert_eq!(retry.reply.status, 201, "{}", retry.reply.body);
        assert!(retry.reply.body.contains("o_x"));
        assert_eq!(
            o.log.borrow().len(),
            3,
            "view, the first attempt, the retry"
        );
        first
    }

    #[test]
    fn a_silent_origin_fails_closed_and_the_retry_goes_to_the_origin() {
        let h = first_then_retry(Err(OriginError::may_have_run("timeout")));
        assert_eq!(
            (h.reply.status, h.reply.header("retry-after")),
            (503, Some("1"))
        );
    }

    #[test]
    fn an_unreadable_reply_makes_the_key_uncertain() {
        // The script ran (or may have) but its reply cannot be read: the attempt's fate is
        // unknown, so a retry with the same key must reach the origin, not an edge refusal.
        let h = first_then_retry(Ok(Value::Int(99)));
        assert_eq!(code(&h), "internal");
    }

    #[test]
    fn past_its_deadline_a_placed_order_is_asked_of_the_origin() {
        let (g, o) = (gate(), FakeOrigin::default());
        o.push(Ok(view(10))).push(Ok(placed(9)));
        assert_eq!(order(&g, &o, "u", "key-00001").reply.status, 201);
        let auth = bearer("u");
        let req = order_req(&auth, "key-00001");
        let at = |now: i64| {
            g.handle(&o, &NoLimiter, &req, now, &|| now)
                .now_or_never()
                .unwrap()
        };
        // 15 minutes on, the snapshot is refreshed once; the order is replayed at the edge.
        o.push(Ok(view(10)));
        assert_eq!(at(NOW + 899_999).reply.status, 201, "replayed at the edge");
        let (view_cmd, buy_cmd) = (
            format!("EVALSHA {}", crate::script::VIEW.sha1),
            format!("EVALSHA {}", PURCHASE.sha1),
        );
        assert_eq!(
            o.commands(),
            [view_cmd.clone(), buy_cmd, view_cmd],
            "a view, the purchase, a view: no purchase for that replay"
        );
        // At the deadline the order may have expired: the origin says it did.
        let late = NOW + 900_000;
        o.push(Ok(Value::Array(vec![
            Value::Int(13),
            Value::Str(doc("o_z")),
        ])));
        let h = at(late);
        assert_eq!((h.reply.status, code(&h).as_str()), (410, "order_expired"));
        assert!(h.reply.body.contains("o_z"), "{}", h.reply.body);
        let calls = o.log.borrow().len();
        assert_eq!(code(&at(late + 1)), "order_expired", "final: answered here");
        assert_eq!(o.log.borrow().len(), calls);
    }

    #[test]
    fn an_unreachable_origin_is_503_and_not_uncertain() {
        let (g, o) = (gate(), FakeOrigin::default());
        o.push(Ok(view(1)))
            .push(Err(OriginError::not_sent("refused")));
        assert_eq!(code(&order(&g, &o, "u", "key-00001")), "origin_unavailable");
        g.state.borrow_mut().learn_remaining("e", "A", 0);
        assert_eq!(
            code(&order(&g, &o, "u", "key-00001")),
            "sold_out",
            "it never ran, so the edge may answer"
        );
    }

    #[test]
    fn refusals_log_at_the_sample_rate_and_placed_orders_always() {
        let (g, o) = (gate(), FakeOrigin::default());
        assert_eq!(g.config.log_sample_rate, 0.01, "the default");
        let at_by = |user: &str, key: &str, roll: f64| {
            let auth = bearer(user);
            let req = ApiRequest {
                roll,
                ..order_req(&auth, key)
            };
            g.handle(&o, &NoLimiter, &req, NOW, &|| NOW)
                .now_or_never()
                .unwrap()
        };
        let at = |key: &str, roll: f64| at_by("u", key, roll);
        o.push(Ok(view(10))).push(Ok(placed(9)));
        let placed = at("key-00001", 0.99);
        assert_eq!(
            placed.log.map(|l| l.code),
            Some(Decision::Placed),
            "always logged"
        );
        // The user is now at the per-item cap: refused at the edge, logged 1 time in 100.
        let logged: Vec<bool> = (0..100)
            .map(|i| {
                let h = at(&format!("key-1{i:04}"), f64::from(i) / 100.0);
                assert_eq!(code(&h), "item_limit_reached");
                h.log.is_some()
            })
            .collect();
        assert_eq!(logged.iter().filter(|l| **l).count(), 1);
        assert!(logged[0], "the roll under the rate is the one logged");
        // Origin trouble is always logged, with what went wrong.
        o.push(Err(OriginError::not_sent("connect 127.0.0.1:1")));
        let h = at_by("w", "key-20000", 0.99);
        let l = h.log.expect("origin errors are always logged");
        assert_eq!((l.code.as_str(), l.status), ("origin_unavailable", 503));
        assert!(l.error.unwrap().contains("connect 127.0.0.1:1"));
    }

    #[test]
    fn every_decision_has_a_record_sampled_log_or_not() {
        let (g, o) = (gate(), FakeOrigin::default());
        let at = |user: &str, key: &str| {
            let auth = bearer(user);
            let req = ApiRequest {
                roll: 0.99, // never under LOG_SAMPLE_RATE: refusals are not logged
                ..order_req(&auth, key)
            };
            g.handle(&o, &NoLimiter, &req, NOW, &|| NOW)
                .now_or_never()
                .unwrap()
        };
        o.push(Ok(view(10))).push(Ok(placed(9)));
        let placed = at("u", "key-00001").record.expect("a record");
        assert_eq!(
            placed,
            DecisionRecord {
                event: "e".into(),
                code: Decision::Placed,
                at: Decided::Origin,
                status: 201,
                units: 1,
            }
        );
        let capped = at("u", "key-00002");
        assert!(capped.log.is_none(), "not sampled");
        let r = capped.record.expect("recorded all the same");
        assert_eq!(
            (r.code.as_str(), r.at, r.status, r.units),
            ("item_limit_reached", Decided::Edge, 403, 1)
        );
        // Refused before the body was read: no units; a bad event id is recorded without it.
        let req = ApiRequest {
            path: "/api/events/b@d/orders",
            ..order_req("Bearer x", "key-00003")
        };
        let h = g
            .handle(&o, &NoLimiter, &req, NOW, &|| NOW)
            .now_or_never()
            .unwrap();
        let r = h.record.expect("a record");
        assert_eq!(
            (r.event.as_str(), r.code.as_str(), r.units),
            ("", "invalid_request", 0)
        );
        // Other routes decide no purchase.
        let health = ApiRequest {
            method: "GET",
            path: "/api/session",
            ..Default::default()
        };
        let h = g
            .handle(&o, &NoLimiter, &health, NOW, &|| NOW)
            .now_or_never()
            .unwrap();
        assert!(h.record.is_none());
    }

    #[test]
    fn decision_records_have_a_fixed_layout() {
        // The Analytics Engine columns (blob1..3, double1..3) that operators' queries name.
        let r = DecisionRecord {
            event: "spring".into(),
            code: Decision::Refused(Code::SoldOut),
            at: Decided::Edge,
            status: 410,
            units: 2,
        };
        assert_eq!(r.index(), "spring");
        assert_eq!(r.blobs(), ["spring", "sold_out", "edge"]);
        assert_eq!(r.doubles(), [1.0, 2.0, 410.0]);
        let o = DecisionRecord {
            at: Decided::Origin,
            ..r
        };
        assert_eq!(o.blobs()[2], "origin");
    }

    #[test]
    fn candidates_beyond_the_fleet_share_are_shed_with_a_jittered_retry() {
        let (g, o) = (gate(), FakeOrigin::default());
        // 100 isolates saw 40,000 candidates last second; 10 units left: the origin should
        // see about 20 attempts a second, so each candidate passes with p = 1/2000.
        let fleet = vec![
            ("reports".to_string(), "100".to_string()),
            ("candidates".to_string(), "40000".to_string()),
        ];
        o.push(Ok(view_with_fleet(10, fleet)));
        let at = |user: &str, roll: f64| {
            let auth = bearer(user);
            let req = ApiRequest {
                roll,
                ..order_req(&auth, "key-00001")
            };
            g.handle(&o, &NoLimiter, &req, NOW, &|| NOW)
                .now_or_never()
                .unwrap()
        };
        let mut retry = std::collections::BTreeSet::new();
        for (i, roll) in [0.5, 0.001, 0.9, 0.3337].into_iter().enumerate() {
            let h = at(&format!("u{i}"), roll);
            assert_eq!((h.reply.status, code(&h).as_str()), (503, "busy"));
            retry.insert(h.reply.header("retry-after").unwrap().to_string());
        }
        assert!(retry.iter().all(|r| ["1", "2", "3"].contains(&r.as_str())));
        assert!(retry.len() > 1, "jittered: {retry:?}");
        assert_eq!(
            o.log.borrow().len(),
            1,
            "the view only: nothing was forwarded"
        );
        // A roll under p is forwarded.
        o.push(Ok(placed(9)));
        assert_eq!(at("lucky", 0.0001).reply.status, 201);
        let counts = g.state.borrow_mut().take_report("e");
        assert_eq!(counts.get("shed"), 4);
        assert_eq!(counts.get("candidates"), 5);
        assert_eq!(counts.get("forwarded"), 1);
        assert_eq!(counts.get("edge:busy"), 4);
    }

    struct Refuse(Result<bool, String>);
    impl Limiter for Refuse {
        async fn allow(&self, _key: &str) -> Result<bool, String> {
            self.0.clone()
        }
    }

    #[test]
    fn the_outside_limiter_refuses_and_fails_closed() {
        let (g, o) = (gate(), FakeOrigin::default());
        let auth = bearer("u");
        let req = order_req(&auth, "key-00001");
        for (limiter, retry) in [
            (Refuse(Ok(false)), "10"),
            (Refuse(Err("binding down".into())), "1"),
        ] {
            let h = g
                .handle(&o, &limiter, &req, NOW, &|| NOW)
                .now_or_never()
                .unwrap();
            assert_eq!(
                (h.reply.status, h.reply.header("retry-after")),
                (429, Some(retry))
            );
        }
        assert!(o.log.borrow().is_empty(), "no origin call");
    }

    #[test]
    fn malformed_requests_cost_no_origin_call() {
        let (g, o) = (gate(), FakeOrigin::default());
        let auth = bearer("u");
        let base = ApiRequest {
            body: b"{}",
            ..order_req(&auth, "key-00001")
        };
        let cases = [
            (
                ApiRequest {
                    content_type: Some("text/plain"),
                    ..base.clone()
                },
                415,
            ),
            (
                ApiRequest {
                    authorization: None,
                    ..base.clone()
                },
                401,
            ),
            (
                ApiRequest {
                    idempotency_key: None,
                    ..base.clone()
                },
                400,
            ),
            (
                ApiRequest {
                    declared_len: Some(1 << 20),
                    ..base.clone()
                },
                413,
            ),
            (
                ApiRequest {
                    method: "GET",
                    ..base.clone()
                },
                405,
            ),
            (base.clone(), 400),
        ];
        for (req, status) in cases {
            assert_eq!(
                g.handle(&o, &NoLimiter, &req, NOW, &|| NOW)
                    .now_or_never()
                    .unwrap()
                    .reply
                    .status,
                status
            );
        }
        assert!(o.log.borrow().is_empty());
    }

    /// view.lua's reply (version 5) for a live `fairness = line` event with item A: 1,000 early
    /// entrants, the line halfway through them and standing still, 100 shoppers a second.
    fn line_view(seed: &crate::line::Seed) -> Value {
        let spec: EventSpec = serde_json::from_value(json!({"id":"e","name":"E","starts_at":"2027-01-01T00:00:00Z","ends_at":"2027-02-01T00:00:00Z",
            "items":[{"sku":"A","name":"A","price":100,"currency":"USD","stock":10}]}))
        .unwrap();
        let mut meta = spec.validate().unwrap().meta;
        meta.flag = State::Live;
        let flat = |v: Vec<(String, String)>| {
            Value::Array(
                v.into_iter()
                    .flat_map(|(k, v)| [Value::Str(k), Value::Str(v)])
                    .collect(),
            )
        };
        let state = crate::threshold::LineState {
            at_ms: NOW,
            pos: 0.5,
            speed: 0.0,
            rate: 100.0,
            gain: 1.0,
            marks: [0.5; 5],
            open: false,
            pos0: 0.0,
            origin_recent: [0; 3],
            counted_sec: 0,
        };
        let mut line: Vec<(String, String)> = state
            .to_fields()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        line.push(("n:0".into(), "250".into()));
        Value::Array(vec![
            flat(
                meta.to_fields()
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            ),
            flat(vec![("A".into(), "10".into())]),
            flat(vec![("A".into(), "0".into())]),
            Value::Int(0),
            Value::Int(0),
            flat(vec![]),
            flat(vec![]),
            Value::Str(seed.to_hex()),
            flat(line),
            Value::Int(0),
            flat(vec![]),
        ])
    }

    #[test]
    fn the_line_forwards_places_below_its_threshold_and_tells_the_others_their_place() {
        let seed = crate::line::Seed([9; 32]);
        let (g, o) = (gate(), FakeOrigin::default());
        o.push(Ok(line_view(&seed)));
        let frac = |u: &str| crate::line::draw(&seed, "e", u) as f64 / 2f64.powi(64);
        let users: Vec<String> = (0..40).map(|i| format!("u{i}")).collect();
        let first = users.iter().find(|u| frac(u) < 0.3).unwrap();
        let back = users.iter().find(|u| frac(u) > 0.9).unwrap();
        let ticket = |u: &str| {
            let t = crate::line::Ticket {
                event: "e".into(),
                user: u.into(),
                window: Window::Early,
                exp: NOW / 1000 + 60,
            };
            crate::line::mint_ticket(b"0123456789abcdef", &t)
        };
        let at = |u: &str, entry: Option<&str>| {
            let auth = bearer(u);
            let req = ApiRequest {
                entry,
                ..order_req(&auth, "key-00001")
            };
            g.handle(&o, &NoLimiter, &req, NOW, &|| NOW)
                .now_or_never()
                .unwrap()
        };
        // Far back in the early window: busy, with about (0.9..1 − 0.5) × 1,000 ahead.
        let t = ticket(back);
        let h = at(back, Some(&t));
        assert_eq!((h.reply.status, code(&h).as_str()), (503, "busy"));
        let b: Json = serde_json::from_str(&h.reply.body).unwrap();
        let place = b["error"]["place"].as_u64().unwrap();
        let want = ((frac(back) - 0.5) * 1000.0).round() as u64;
        assert_eq!(place, want, "{b}");
        assert_eq!(b["error"]["wait_s"].as_u64(), Some(want.div_ceil(100)));
        assert_eq!(b["error"]["remaining"].as_u64(), Some(10));
        let retry: u64 = h.reply.header("retry-after").unwrap().parse().unwrap();
        assert_eq!(retry, (want as f64 / 200.0).floor().clamp(1.0, 5.0) as u64);
        // The same user without a ticket enters late: further back still, never ahead.
        assert_eq!(code(&at(back, None)), "busy");
        // Another user's ticket does not count: a late entry.
        assert_eq!(code(&at(first, Some(&t))), "busy");
        assert_eq!(o.log.borrow().len(), 1, "the view only");
        // Below the threshold with their own ticket: forwarded, and the window goes along.
        o.push(Ok(placed(9)));
        let t = ticket(first);
        assert_eq!(at(first, Some(&t)).reply.status, 201);
        let log = o.log.borrow();
        let sent = format!("{:?}", log.last().unwrap());
        assert!(sent.contains("fg:{e}:fleet:1800000000"), "{sent}");
        assert!(sent.contains("\"1:0\""), "fresh, early window: {sent}");
    }
}
