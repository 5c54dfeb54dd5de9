//! `POST /api/events/{event}/orders`: the purchase pipeline, as small named steps.
//!
//! 1. [`check_request`]: content type, body size, event id, identity, the entry ticket
//!    (`entry_ticket`: a forged, expired or someone else's ticket is `bad_ticket`; none is a
//!    late entry, or `entry_required` when Turnstile is on), Idempotency-Key, body.
//! 2. [`rate_limit`]: the isolate's per-user token bucket, then the outside limiter.
//! 3. [`event_snapshot`]: the event as this isolate knows it (cached; one refresher); then
//!    `entry_window`: the ticket's window, or a late entry's second of arrival.
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

use super::entry::{entry_ticket, entry_window};
use super::reply::{cap_error, ended_unpaid, placed_reply, replay_reply, state_check};
use super::session::cookie;
use super::{
    ApiRequest, Decided, Decision, DecisionLog, DecisionRecord, Gate, Handled, Limiter, Refusal,
};
use crate::edge::{CapHit, KeyNews, Purchase};
use crate::error::{ApiError, ApiReply, Code};
use crate::keys::EventKeys;
use crate::line::{self, Window};
use crate::model::{day_number, valid_id, Caps, Fairness, State};
use crate::order::{self, Line, Order, OrderLine};
use crate::origin::{Origin, OriginError};
use crate::script::{Outcome, PurchaseCall, Snapshot, PURCHASE};
use crate::threshold;
use crate::usermark::{self, UserMark, MARK_COOKIE};
use std::rc::Rc;

/// The longest Retry-After of a shopper waiting in line: they come back at about half their
/// estimated wait, and at least this often, so that a line that speeds up finds them there.
const MAX_LINE_RETRY_SECS: f64 = 5.0;
/// A shopper whose place is due within [`SOON_MS`] (or whose window the line has not counted
/// yet) is told, in the body's `retry_ms`, to come back when it is due, but no sooner than
/// this: with two tabs that stays within the per-user rate limit of 5 a second.
const MIN_LINE_RETRY_MS: f64 = threshold::WAITING_RETRY_MS;
const SOON_MS: f64 = 2000.0;

/// The longest lag (from the line passing a place to the shopper's attempt) counted.
const MAX_LAG_MS: i64 = threshold::MAX_LAG_MS as i64;

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
    /// The verified entry ticket; `None` for a late entry.
    ticket: Option<crate::line::Ticket>,
    /// The user's counters another isolate signed (`fg_mark`), if valid and theirs.
    mark: Option<UserMark>,
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
    let e = ApiError::method_not_allowed("GET, POST");
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
    // The shopper's place in the line is drawn from this window (fairness = line).
    let window = entry_window(a.ticket.as_ref(), &snap, now);
    sight(gate, a, &snap, window);
    // No await from here to the cap check: a copy of this attempt that completes meanwhile
    // is seen as a placed key (a replay), never as caps used up.
    let known = match known_key(gate, a, snap.meta.caps, now)? {
        Ok(replay) => return Ok(replay),
        Err(known) => known,
    };
    let trust_edge = matches!(known, Known::Fresh);
    // What the user's other tabs learnt: their counters, as another isolate signed them.
    if let Some(m) = &a.mark {
        gate.state.borrow_mut().learn_mark(m, snap.cancels, now);
    }
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
    let answer = render(a, &snap, outcome, &order, now)?;
    Ok(sign_mark(gate, a, answer, now))
}

/// A placed order's answer carries the user's counters, signed, for their other tabs
/// (`usermark`): another isolate then refuses their over-cap attempts at the edge.
fn sign_mark(gate: &Gate, a: &Attempt<'_>, mut answer: Answer, now: i64) -> Answer {
    if answer.decision == Decision::Placed {
        if let Some(m) = gate.state.borrow().user_mark(a.event, &a.user, now) {
            let c = usermark::set_cookie(&gate.config.identity_secret, &m, now);
            answer.reply = answer.reply.with_header("set-cookie", c);
        }
    }
    answer
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
    gate.check_body_len(req).map_err(Refusal::edge)?;
    if !valid_id(event) {
        return Err(Refusal::edge(ApiError::invalid_id("event id")));
    }
    let id = gate.identity(req, now).map_err(Refusal::edge)?;
    let ticket = entry_ticket(gate, req, event, &id.user, now)?;
    let key = order::check_idempotency_key(req.idempotency_key).map_err(Refusal::edge)?;
    let lines = order::parse_order(req.body).map_err(Refusal::edge)?;
    let mark = cookie(req.cookie, MARK_COOKIE)
        .and_then(|v| usermark::verify(&gate.config.identity_secret, v, now))
        .filter(|m| m.event == event && m.user == id.user);
    Ok(Attempt {
        event,
        user: id.user,
        key,
        fingerprint: order::fingerprint(&lines),
        lines,
        ticket,
        mark,
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
fn known_key(
    gate: &Gate,
    a: &Attempt<'_>,
    caps: Caps,
    now: i64,
) -> Result<Result<Answer, Known>, Refusal> {
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
        Some(KeyNews::EndedUnpaid {
            order_json, end, ..
        }) => Err(Refusal::edge(ended_unpaid(&order_json, end))),
        // Past its deadline the order may have expired: only the origin knows.
        Some(KeyNews::Placed { replay_until, .. }) if now >= replay_until => {
            Ok(Err(Known::MayHaveRun))
        }
        Some(KeyNews::Placed {
            order_json, placed, ..
        }) => {
            let total = gate.state.borrow().known_total(a.event, &a.user, now);
            let reply = replay_reply(&order_json, placed.as_ref(), total, Some(caps))
                .map_err(Refusal::edge)?;
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

/// Counts a sampled shopper into their window's entrants (`threshold::sampled`), and their
/// purchase (its Idempotency-Key) into the window's intents.
fn sight(gate: &Gate, a: &Attempt<'_>, snap: &Snapshot, window: Window) {
    if snap.meta.fairness == Fairness::Line && threshold::sampled(a.event, &a.user) {
        let rank = window.rank(snap.meta.starts_at.div_euclid(1000));
        gate.state
            .borrow_mut()
            .event_counts(a.event)
            .sight(rank, &a.user, a.key);
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
        None => ApiError::busy(1 + (jitter(roll) * 3.0) as u64),
        Some(seed) => {
            let start = snap.meta.starts_at;
            let key = line::place_key(seed, a.event, &a.user, window, start.div_euclid(1000));
            let place = threshold::position(key);
            let Some(state) = &snap.line else {
                // The line has not advanced yet (its first tick is being claimed).
                let busy = ApiError::busy(1).with("retry_ms", line_retry_ms(0.0, roll));
                return Err(shed(&mut st, a, busy));
            };
            if place < state.admits_below(now, start) {
                // How long after the line passed them they came: the controller's lag.
                let crossed = state.crossed_at(place, now).unwrap_or(now - MAX_LAG_MS);
                let counts = st.event_counts(a.event);
                counts.add("line_in", 1);
                counts.add("line_lag_ms", (now - crossed).clamp(0, MAX_LAG_MS) as u64);
                return Ok(());
            }
            let (ahead, wait) = threshold::ahead(state, &snap.entrants, place, now);
            let remaining: u32 = snap.items.iter().map(|i| i.remaining()).sum();
            ApiError::busy(line_retry_after(wait))
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
                .with("retry_ms", line_retry_ms(wait, roll))
        }
    };
    Err(shed(&mut st, a, busy))
}

/// When a shopper in line should come back, in ms, for an estimated wait of `wait_s`: when
/// their place is due if that is soon (at least [`MIN_LINE_RETRY_MS`], jittered by up to an
/// advance of the line), else at Retry-After (half the wait). A shopper told to wait a whole
/// second or more for a place due sooner comes late, and the origin idles meanwhile: the
/// sale's first second, when nobody's window has been counted yet, is the worst case.
fn line_retry_ms(wait_s: f64, roll: f64) -> u64 {
    let wait_ms = wait_s * 1000.0;
    if wait_ms.is_finite() && wait_ms < SOON_MS {
        let jitter = jitter(roll) * threshold::ADVANCE_MS as f64;
        (wait_ms.clamp(MIN_LINE_RETRY_MS, 1000.0) + jitter) as u64
    } else {
        line_retry_after(wait_s) * 1000
    }
}

/// The Retry-After (s) of a shopper in line with an estimated wait of `wait_s`: half the
/// wait, 1 to [`MAX_LINE_RETRY_SECS`].
fn line_retry_after(wait_s: f64) -> u64 {
    if wait_s.is_finite() {
        (wait_s / 2.0).floor().clamp(1.0, MAX_LINE_RETRY_SECS) as u64
    } else {
        MAX_LINE_RETRY_SECS as u64
    }
}

/// A second uniform draw in 0..1 from the attempt's roll, so that shed attempts do not come
/// back together.
fn jitter(roll: f64) -> f64 {
    (roll * 7919.0).fract()
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
        Outcome::EndedUnpaid { order_json, end } => refuse(ended_unpaid(&order_json, end)),
        Outcome::Replayed {
            order_json,
            total,
            placed,
            ..
        } => match replay_reply(&order_json, placed.as_ref(), Some(total), Some(caps)) {
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
        gate_with(&[])
    }

    /// A gate with these settings on top of the tests' own.
    pub(super) fn gate_with(extra: &[(&str, &str)]) -> Gate {
        Gate::new(
            Config::from_lookup(|k| {
                let given = extra.iter().find(|(name, _)| *name == k);
                match (k, given) {
                    (_, Some((_, v))) => Some(v.to_string()),
                    ("ORIGIN_URL", _) => Some("redis://127.0.0.1:1".into()),
                    ("IDENTITY_SECRET", _) => Some("0123456789abcdef".into()),
                    ("RATE_LIMIT_PER_SEC", _) => Some("0".into()),
                    _ => None,
                }
            })
            .unwrap(),
        )
    }

    /// view.lua's reply for a live event with item A (`remaining` left of 10).
    pub(super) fn view(remaining: u32) -> Value {
        view_with_fleet(remaining, vec![])
    }

    /// view.lua's reply with the fleet's figures for the last second.
    fn view_with_fleet(remaining: u32, fleet: Vec<(String, String)>) -> Value {
        view_of(remaining, fleet, State::Live)
    }

    /// view.lua's reply for the event of [`view`] before its start (flag `scheduled`).
    pub(super) fn view_scheduled() -> Value {
        view_of(10, vec![], State::Scheduled)
    }

    fn view_of(remaining: u32, fleet: Vec<(String, String)>, flag: State) -> Value {
        let spec: EventSpec = serde_json::from_value(json!({"id":"e","name":"E","starts_at":"2027-01-01T00:00:00Z","ends_at":"2027-02-01T00:00:00Z",
            "items":[{"sku":"A","name":"A","price":100,"currency":"USD","stock":10}]}))
        .unwrap();
        let mut meta = spec.validate().unwrap().meta;
        meta.flag = flag;
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
    pub(super) fn placed(remaining: i64) -> Value {
        Value::Array(vec![
            Value::Int(0),
            Value::Int(1),
            Value::Int(NOW + 900_000),
            Value::Int(1),
            Value::Int(remaining),
        ])
    }

    pub(super) fn bearer(user: &str) -> String {
        format!(
            "Bearer {}",
            token::mint(b"0123456789abcdef", user, NOW / 1000 + 3600)
        )
    }

    /// A well-formed attempt to buy one A.
    pub(super) fn order_req<'a>(auth: &'a str, key: &'a str) -> ApiRequest<'a> {
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
        order_with_cookie(g, o, user, key, "")
    }

    pub(super) fn code(h: &Handled) -> String {
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

    /// One attempt of `user`'s with the cookie header `cookie`.
    fn order_with_cookie(g: &Gate, o: &FakeOrigin, user: &str, key: &str, cookie: &str) -> Handled {
        let auth = bearer(user);
        let req = ApiRequest {
            cookie: Some(cookie),
            ..order_req(&auth, key)
        };
        g.handle(o, &NoLimiter, &req, NOW, &|| NOW)
            .now_or_never()
            .expect("the fake never waits")
    }

    #[test]
    fn another_tab_over_the_cap_is_refused_at_another_isolate_by_the_signed_mark() {
        // Tab one buys through isolate A: the 201 carries the user's counters, signed.
        let (a, o) = (gate(), FakeOrigin::default());
        o.push(Ok(view(10))).push(Ok(placed(9)));
        let first = order(&a, &o, "u", "key-00001");
        assert_eq!(first.reply.status, 201);
        let set = first
            .reply
            .header("set-cookie")
            .expect("the mark")
            .to_string();
        assert!(
            set.starts_with("fg_mark=u1.e.u.") && set.contains("; Path=/api/events/e; HttpOnly"),
            "{set}"
        );
        let cookie = set.split(';').next().unwrap().to_string();
        // Tab two's attempt reaches isolate B, which has only read the event: refused at the
        // edge on the cap (1 a day), no purchase sent.
        let (b, ob) = (gate(), FakeOrigin::default());
        ob.push(Ok(view(9)));
        let second = order_with_cookie(&b, &ob, "u", "key-00002", &format!("x=1; {cookie}"));
        assert_eq!(code(&second), "item_limit_reached");
        assert_eq!(ob.log.borrow().len(), 1, "the view read only");
        // Another user's, a forged or an altered mark is ignored: the origin decides.
        for (user, c) in [
            ("w", cookie.clone()),
            ("u", cookie.replace(".1.A:1.", ".1.A:2.")),
            ("u", cookie.replace("fg_mark=u1.e.u.", "fg_mark=u1.e.w.")),
        ] {
            let (g, og) = (gate(), FakeOrigin::default());
            og.push(Ok(view(9))).push(Ok(placed(8)));
            let h = order_with_cookie(&g, &og, user, "key-00003", &c);
            assert_eq!(h.reply.status, 201, "{user} {c}");
            assert_eq!(og.log.borrow().len(), 2, "forwarded: {c}");
        }
        // A mark past the deadline of the user's pending order (its units may be back) is
        // not trusted either.
        let (g, og) = (gate(), FakeOrigin::default());
        og.push(Ok(view(9))).push(Ok(placed(8)));
        let auth = bearer("u");
        let late = NOW + 900_000;
        let req = ApiRequest {
            cookie: Some(&cookie),
            ..order_req(&auth, "key-00004")
        };
        let h = g
            .handle(&og, &NoLimiter, &req, late, &|| late)
            .now_or_never()
            .unwrap();
        assert_eq!(h.reply.status, 201);
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
        let counts = g.state.borrow_mut().take_report("e", 0);
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
                    method: "PUT",
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
    pub(super) fn line_view(seed: &crate::line::Seed) -> Value {
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
            learnt: false,
            lag_ms: 500.0,
            open: false,
            waiting: false,
            origin_sum: 0,
            counted_sec: 0,
            past: Default::default(),
            filling: Default::default(),
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
        // A wait of seconds: retry_ms is the Retry-After.
        assert_eq!(b["error"]["retry_ms"].as_u64(), Some(retry * 1000), "{b}");
        // The same user without a ticket enters late: further back still, never ahead.
        let late = at(back, None);
        assert_eq!(code(&late), "busy");
        let b: Json = serde_json::from_str(&late.reply.body).unwrap();
        assert!(b["error"]["place"].as_u64().unwrap() > place, "{b}");
        // Another user's ticket is refused at the edge.
        assert_eq!(code(&at(first, Some(&t))), "bad_ticket");
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

#[cfg(test)]
mod entry_tests {
    //! Entry tickets: issued at entry, checked by the purchase pipeline before anything that
    //! costs an origin command; Turnstile at entry against a stand-in siteverify.
    use super::tests::{
        bearer, code, gate_with, line_view, order_req, placed, view, view_scheduled,
    };
    use super::*;
    use crate::gate::{NoLimiter, Siteverify, ENTRY_COOKIE};
    use crate::line::{mint_ticket, verify_ticket, Ticket, Window};
    use crate::origin::fake::FakeOrigin;
    use crate::origin::Value;
    use futures_util::FutureExt;
    use serde_json::Value as Json;
    use std::cell::RefCell;
    use std::collections::VecDeque;

    const NOW: i64 = 1_800_000_000_000;
    /// view()'s starts_at: 2027-01-01T00:00:00Z.
    const STARTS: i64 = 1_798_761_600_000;
    const SECRET: &[u8] = b"0123456789abcdef";

    /// A stand-in siteverify: canned answers in order, and every body it was sent.
    #[derive(Default)]
    struct Stand {
        answers: RefCell<VecDeque<Result<(u16, String), String>>>,
        sent: RefCell<Vec<String>>,
    }

    impl Stand {
        fn with(answers: &[Result<(u16, &str), &str>]) -> Stand {
            let s = Stand::default();
            for a in answers {
                s.answers
                    .borrow_mut()
                    .push_back(a.map(|(st, b)| (st, b.to_string())).map_err(str::to_string));
            }
            s
        }
    }

    impl Siteverify for Stand {
        async fn post(&self, url: &str, ct: &str, body: String) -> Result<(u16, String), String> {
            assert_eq!(
                (url, ct),
                ("http://stand.in/siteverify", "application/json")
            );
            self.sent.borrow_mut().push(body);
            self.answers
                .borrow_mut()
                .pop_front()
                .unwrap_or(Err("no answer queued".into()))
        }
        fn idempotency_key(&self) -> String {
            format!("key-{}", self.sent.borrow().len())
        }
    }

    fn turnstile_gate() -> Gate {
        gate_with(&[
            ("TURNSTILE_SECRET", "sekret"),
            ("TURNSTILE_SITE_KEY", "1x00000000000000000000AA"),
            ("TURNSTILE_VERIFY_URL", "http://stand.in/siteverify"),
        ])
    }

    fn enter(g: &Gate, o: &FakeOrigin, v: &Stand, user: &str, body: &str, now: i64) -> Handled {
        enter_with(g, o, v, user, body, None, now)
    }

    fn enter_with(
        g: &Gate,
        o: &FakeOrigin,
        v: &Stand,
        user: &str,
        body: &str,
        cookie: Option<&str>,
        now: i64,
    ) -> Handled {
        let auth = bearer(user);
        let req = ApiRequest {
            method: "POST",
            path: "/api/events/e/entry",
            authorization: Some(&auth),
            content_type: Some("application/json"),
            cookie,
            remote_ip: Some("203.0.113.7"),
            body: body.as_bytes(),
            ..Default::default()
        };
        g.serve(o, &NoLimiter, v, &req, now, &|| now)
            .now_or_never()
            .expect("fakes never wait")
    }

    fn buy_with(g: &Gate, o: &FakeOrigin, user: &str, key: &str, ticket: Option<&str>) -> Handled {
        let auth = bearer(user);
        let req = ApiRequest {
            entry: ticket,
            ..order_req(&auth, key)
        };
        g.handle(o, &NoLimiter, &req, NOW, &|| NOW)
            .now_or_never()
            .expect("fakes never wait")
    }

    fn ticket_of(h: &Handled) -> String {
        let b: Json = serde_json::from_str(&h.reply.body).unwrap();
        b["ticket"].as_str().expect("a ticket").to_string()
    }

    #[test]
    fn entry_issues_a_ticket_at_no_origin_cost() {
        let (g, o, v) = (gate_with(&[]), FakeOrigin::default(), Stand::default());
        o.push(Ok(view_scheduled())).push(Ok(view(10)));
        let early = enter(&g, &o, &v, "alice", "", STARTS - 5_000);
        assert_eq!(early.reply.status, 200, "{}", early.reply.body);
        let t = ticket_of(&early);
        let checked = verify_ticket(SECRET, &t, NOW).unwrap();
        assert_eq!(
            (
                checked.event.as_str(),
                checked.user.as_str(),
                checked.window
            ),
            ("e", "alice", Window::Early)
        );
        // ends_at 2027-02-01T00:00:00Z, plus the grace hour.
        assert_eq!(checked.exp, 1_801_440_000 + 3600);
        let cookie = early.reply.header("set-cookie").unwrap();
        assert!(cookie.starts_with(&format!("{ENTRY_COOKIE}={t}; Path=/api/events/e; HttpOnly; Secure; SameSite=Strict; Max-Age=")), "{cookie}");
        let b: Json = serde_json::from_str(&early.reply.body).unwrap();
        assert_eq!(
            (b["early"].as_bool(), b["user"].as_str()),
            (Some(true), Some("alice"))
        );
        // After the start: the second of arrival (a snapshot read: the cached one is stale).
        let late = enter(&g, &o, &v, "bob", "{}", STARTS + 2_500);
        let cached = enter(&g, &o, &v, "carol", "{}", STARTS + 2_900);
        assert_eq!(cached.reply.status, 200, "from the cached snapshot");
        // Started early by the operator (flag live before starts_at): the sale has begun, so
        // an entry then is late, in its second of arrival.
        let (g2, o2) = (gate_with(&[]), FakeOrigin::default());
        o2.push(Ok(view(10)));
        let started = enter(&g2, &o2, &v, "dave", "", STARTS - 60_000);
        let st = verify_ticket(SECRET, &ticket_of(&started), NOW).unwrap();
        assert_eq!(st.window, Window::Arrived(STARTS / 1000 - 60));
        let lt = verify_ticket(SECRET, &ticket_of(&late), NOW).unwrap();
        assert_eq!(lt.window, Window::Arrived(STARTS / 1000 + 2));
        let b: Json = serde_json::from_str(&late.reply.body).unwrap();
        assert_eq!(b["arrived_at"], "2027-01-01T00:00:02.000Z");
        // Entering again with a good ticket keeps it: nobody is moved back by a reload.
        let cookie = format!("{ENTRY_COOKIE}={t}");
        let again = enter_with(&g, &o, &v, "alice", "", Some(&cookie), STARTS + 60_000);
        assert_eq!(ticket_of(&again), t);
        assert_eq!(
            o.log.borrow().len(),
            2,
            "two snapshot reads in all, nothing else"
        );
        // bob and carol: alice's entry went out with the second read's report, and the
        // re-issue is not counted.
        assert_eq!(g.state.borrow_mut().take_report("e", 0).get("entered"), 2);
        assert!(
            v.sent.borrow().is_empty(),
            "no Turnstile without TURNSTILE_SECRET"
        );
    }

    #[test]
    fn a_sampled_entrant_is_counted_in_their_window_when_they_enter() {
        let seed = crate::line::Seed([9; 32]);
        let (g, o, v) = (gate_with(&[]), FakeOrigin::default(), Stand::default());
        o.push(Ok(line_view(&seed)));
        let users: Vec<String> = (0..200).map(|i| format!("u{i}")).collect();
        let sampled = users.iter().find(|u| threshold::sampled("e", u)).unwrap();
        let other = users.iter().find(|u| !threshold::sampled("e", u)).unwrap();
        for u in [sampled, other] {
            assert_eq!(enter(&g, &o, &v, u, "{}", NOW).reply.status, 200);
        }
        let rank = threshold::arrived_rank(NOW, STARTS);
        let args = g.state.borrow_mut().take_report("e", NOW).to_args();
        assert!(
            args.contains(&format!("@{rank}:{sampled}")),
            "{sampled} in window {rank}: {args:?}"
        );
        assert!(!args.iter().any(|a| a.ends_with(&format!(":{other}"))));
        assert!(!args.iter().any(|a| a.starts_with('#')), "no purchase yet");
    }

    #[test]
    fn entry_refusals() {
        let (g, o, v) = (gate_with(&[]), FakeOrigin::default(), Stand::default());
        let req = ApiRequest {
            method: "POST",
            path: "/api/events/e/entry",
            ..Default::default()
        };
        let h = g
            .serve(&o, &NoLimiter, &v, &req, NOW, &|| NOW)
            .now_or_never()
            .unwrap();
        assert_eq!(code(&h), "unauthenticated");
        assert_eq!(
            code(&enter(&g, &o, &v, "u", "{not json", NOW)),
            "invalid_json"
        );
        o.push(Ok(Value::Int(0)));
        let h = enter(&g, &o, &v, "u", "", NOW);
        assert_eq!((h.reply.status, code(&h).as_str()), (404, "unknown_event"));
        let get = ApiRequest {
            method: "GET",
            path: "/api/events/e/entry",
            ..Default::default()
        };
        let h = g
            .serve(&o, &NoLimiter, &v, &get, NOW, &|| NOW)
            .now_or_never()
            .unwrap();
        assert_eq!(
            (h.reply.status, h.reply.header("allow")),
            (405, Some("POST"))
        );
    }

    #[test]
    fn purchases_check_the_ticket_before_any_origin_command() {
        let (g, o) = (gate_with(&[]), FakeOrigin::default());
        let mine = |user: &str, event: &str, secret: &[u8]| {
            mint_ticket(
                secret,
                &Ticket {
                    event: event.into(),
                    user: user.into(),
                    window: Window::Early,
                    exp: NOW / 1000 + 60,
                },
            )
        };
        let forged = mine("alice", "e", b"not-the-secret-at-all");
        let bobs = mine("bob", "e", SECRET);
        let other_sale = mine("alice", "other", SECRET);
        let moved_up = mine("alice", "e", SECRET).replace(".0.", ".1.");
        let expired = mint_ticket(
            SECRET,
            &Ticket {
                event: "e".into(),
                user: "alice".into(),
                window: Window::Early,
                exp: NOW / 1000,
            },
        );
        for (t, why) in [
            (forged.as_str(), "signature"),
            (&bobs, "another user"),
            (&other_sale, "another sale"),
            (&moved_up, "signature"),
            (&expired, "expired"),
            ("garbage", "malformed"),
        ] {
            let h = buy_with(&g, &o, "alice", "key-00001", Some(t));
            assert_eq!(
                (h.reply.status, code(&h).as_str()),
                (403, "bad_ticket"),
                "{t}"
            );
            assert!(h.reply.body.contains(why), "{why}: {}", h.reply.body);
            assert_eq!(h.record.as_ref().unwrap().at, Decided::Edge);
        }
        assert!(
            o.log.borrow().is_empty(),
            "no origin command for any of them"
        );
        // A good ticket, and no ticket (a late entry), both go through.
        o.push(Ok(view(10))).push(Ok(placed(9))).push(Ok(placed(8)));
        let good = mine("alice", "e", SECRET);
        assert_eq!(
            buy_with(&g, &o, "alice", "key-00002", Some(&good))
                .reply
                .status,
            201
        );
        assert_eq!(
            buy_with(&g, &o, "carol", "key-00003", None).reply.status,
            201
        );
    }

    #[test]
    fn entries_that_need_siteverify_take_from_the_users_bucket() {
        let g = gate_with(&[
            ("TURNSTILE_SECRET", "sekret"),
            ("TURNSTILE_VERIFY_URL", "http://stand.in/siteverify"),
            ("RATE_LIMIT_PER_SEC", "1"),
            ("RATE_LIMIT_BURST", "2"),
        ]);
        let o = FakeOrigin::default();
        o.push(Ok(view(10)));
        let fail = r#"{"success":false,"error-codes":["invalid-input-response"]}"#;
        let v = Stand::with(&[Ok((200, fail)), Ok((200, fail)), Ok((200, fail))]);
        let body = r#"{"turnstile":"bad"}"#;
        assert_eq!(
            code(&enter(&g, &o, &v, "mallory", body, NOW)),
            "turnstile_failed"
        );
        assert_eq!(
            code(&enter(&g, &o, &v, "mallory", body, NOW)),
            "turnstile_failed"
        );
        let h = enter(&g, &o, &v, "mallory", body, NOW);
        assert_eq!((h.reply.status, code(&h).as_str()), (429, "rate_limited"));
        assert_eq!(
            v.sent.borrow().len(),
            2,
            "the third was not sent to siteverify"
        );
        assert_eq!(
            code(&enter(&g, &o, &v, "other", body, NOW)),
            "turnstile_failed"
        );
    }

    #[test]
    fn turnstile_on_a_purchase_needs_a_ticket() {
        let (g, o) = (turnstile_gate(), FakeOrigin::default());
        let h = buy_with(&g, &o, "alice", "key-00001", None);
        assert_eq!((h.reply.status, code(&h).as_str()), (403, "entry_required"));
        assert!(o.log.borrow().is_empty(), "refused at no origin cost");
    }

    #[test]
    fn turnstile_pass_fail_and_unavailable() {
        let pass = r#"{"success":true,"error-codes":[]}"#;
        let fail = r#"{"success":false,"error-codes":["invalid-input-response"]}"#;
        let g = turnstile_gate();
        let o = FakeOrigin::default();
        o.push(Ok(view(10)));
        // Pass: one check, with the secret, the token, the shopper's address and a key.
        let v = Stand::with(&[Ok((200, pass))]);
        let h = enter(&g, &o, &v, "alice", r#"{"turnstile":"tok-1"}"#, NOW);
        assert_eq!(h.reply.status, 200, "{}", h.reply.body);
        assert_eq!(
            *v.sent.borrow(),
            [
                r#"{"secret":"sekret","response":"tok-1","remoteip":"203.0.113.7","idempotency_key":"key-0"}"#
            ]
        );
        // The widget's own field name works too.
        let v = Stand::with(&[Ok((200, pass))]);
        let h = enter(
            &g,
            &o,
            &v,
            "bob",
            r#"{"cf-turnstile-response":"tok-2"}"#,
            NOW,
        );
        assert_eq!(h.reply.status, 200);
        // Fail: Cloudflare's codes are passed on; no ticket.
        let v = Stand::with(&[Ok((200, fail))]);
        let h = enter(&g, &o, &v, "carol", r#"{"turnstile":"bad"}"#, NOW);
        assert_eq!(
            (h.reply.status, code(&h).as_str()),
            (403, "turnstile_failed")
        );
        assert!(h.reply.header("set-cookie").is_none());
        let b: Json = serde_json::from_str(&h.reply.body).unwrap();
        assert_eq!(b["error"]["error_codes"][0], "invalid-input-response");
        // No token: refused unsent.
        let v = Stand::default();
        let h = enter(&g, &o, &v, "carol", "{}", NOW);
        assert_eq!(code(&h), "turnstile_failed");
        assert!(v.sent.borrow().is_empty());
        // A 5xx, then a pass: retried once, with the same idempotency key.
        let v = Stand::with(&[Ok((502, "bad gateway")), Ok((200, pass))]);
        let h = enter(&g, &o, &v, "dave", r#"{"turnstile":"tok-3"}"#, NOW);
        assert_eq!(h.reply.status, 200);
        let sent = v.sent.borrow();
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0], sent[1], "the retry is the same verification");
        drop(sent);
        // Unreachable twice: fail closed, 503 with Retry-After, logged with its cause.
        let v = Stand::with(&[Err("connection refused"), Err("connection refused")]);
        let h = enter(&g, &o, &v, "erin", r#"{"turnstile":"tok-4"}"#, NOW);
        assert_eq!(
            (h.reply.status, code(&h).as_str()),
            (503, "turnstile_unavailable")
        );
        assert!(h.reply.header("retry-after").is_some());
        assert!(
            !h.reply.body.contains("refused"),
            "the cause stays in the log"
        );
        assert!(h.log.unwrap().error.unwrap().contains("connection refused"));
        assert_eq!(v.sent.borrow().len(), 2);
        // With no siteverify client at all (`Gate::handle`), Turnstile fails closed too.
        let auth = bearer("frank");
        let req = ApiRequest {
            method: "POST",
            path: "/api/events/e/entry",
            authorization: Some(&auth),
            body: br#"{"turnstile":"tok"}"#,
            ..Default::default()
        };
        let h = g
            .handle(&o, &NoLimiter, &req, NOW, &|| NOW)
            .now_or_never()
            .unwrap();
        assert_eq!(code(&h), "turnstile_unavailable");
        assert_eq!(
            o.log.borrow().len(),
            1,
            "entries cost the one snapshot read"
        );
    }

    #[test]
    fn a_shopper_due_soon_is_told_to_come_back_when_due_not_a_second_later() {
        let tick = threshold::ADVANCE_MS as u64;
        // Due in 700 ms: back then, plus up to a tick of jitter.
        for roll in [0.0, 0.3, 0.999] {
            let ms = line_retry_ms(0.7, roll);
            assert!((700..700 + tick).contains(&ms), "{ms}");
        }
        // Due at once (or the window is not counted yet): the 400 ms floor.
        assert!((400..400 + tick).contains(&line_retry_ms(0.0, 0.5)));
        // Due in 1.5 s: a second at most, so a line that speeds up finds them there.
        assert!((1000..1000 + tick).contains(&line_retry_ms(1.5, 0.5)));
        // Jitter differs between shoppers.
        let spread: std::collections::HashSet<u64> = (0..50)
            .map(|i| line_retry_ms(0.0, i as f64 / 50.0))
            .collect();
        assert!(spread.len() > 10, "{spread:?}");
        // Seconds away: the Retry-After (half the wait, 1 to 5 s).
        assert_eq!(line_retry_ms(2.5, 0.5), 1000);
        assert_eq!(line_retry_ms(7.0, 0.5), 3000);
        assert_eq!(line_retry_ms(60.0, 0.5), 5000);
        assert_eq!(line_retry_ms(f64::INFINITY, 0.5), 5000);
    }
}
