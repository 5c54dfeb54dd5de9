//! `POST /api/events/{event}/entry`: a signed-in shopper enters a sale and gets a signed entry
//! ticket ([`crate::line`]) as an HttpOnly cookie and a body field; and [`entry_ticket`] /
//! [`entry_window`], the purchase pipeline's steps that read it back.
//!
//! Steps of an entry, cheapest first: event id → identity → body → a valid ticket the
//! shopper already holds (re-issued as it is: entering again never moves a shopper back) →
//! the event snapshot (cached; no origin command of its own) → Turnstile, when configured
//! (the user's token bucket, shared with purchases, then one siteverify check, retried once
//! with the same idempotency key; fails closed) → mint.
//!
//! Invariants:
//! - An entry costs no origin command beyond the isolate's cached snapshot: the ticket is an
//!   HMAC over (event, user, window, exp) with `IDENTITY_SECRET`. Each new ticket is counted
//!   as `entered` in the isolate's report to the fleet's figures (sent with its next refresh).
//! - The window is [`Window::Early`] while the sale has not started (its state is
//!   `scheduled`: before `starts_at`, unless the operator started it early), else the second
//!   of arrival ([`window_at`]).
//! - With Turnstile on, no ticket is issued without a `success: true` from siteverify.
//! - A purchase's ticket must verify and name the purchase's user and event, or the purchase
//!   is refused at the edge (`bad_ticket`). A purchase with no ticket enters late
//!   ([`window_at`] its own time) unless Turnstile is on (`entry_required`).

use super::session::cookie;
use super::{ApiRequest, Decision, DecisionLog, Gate, Handled, Refusal};
use crate::error::{ApiError, ApiReply, Code};
use crate::line::{mint_ticket, verify_ticket, Ticket, Window};
use crate::model::{format_ms, valid_id, Fairness, State};
use crate::origin::Origin;
use crate::script::Snapshot;
use crate::threshold;
use crate::turnstile::{self, Unavailable, Verdict, VerifyRequest};
use serde::{Deserialize, Serialize};

/// The entry ticket's cookie (Path `/api/events/{event}`, so it goes with that event's calls).
pub const ENTRY_COOKIE: &str = "fg_entry";
/// The header a client may send its ticket in instead (the body field of the entry answer).
pub const ENTRY_HEADER: &str = "Flashgate-Entry";
/// A ticket is good until the sale's end plus this long (the end may be moved a little).
pub const TICKET_GRACE_SECS: i64 = 3600;
/// Retry-After for `turnstile_unavailable`.
const SITEVERIFY_RETRY_SECS: u64 = 5;

/// Cloudflare's siteverify over HTTP (in the worker: `fetch`, with a timeout). Tests and the
/// native programs use a stand-in.
#[allow(async_fn_in_trait)]
pub trait Siteverify {
    /// POSTs `body` with `content_type` to `url`: the status and body, or why there was none.
    async fn post(
        &self,
        url: &str,
        content_type: &str,
        body: String,
    ) -> Result<(u16, String), String>;
    /// A fresh idempotency key (a random UUID) for one check.
    fn idempotency_key(&self) -> String;
}

/// No siteverify: every check is unavailable (so Turnstile, if configured, fails closed).
pub struct NoSiteverify;

impl Siteverify for NoSiteverify {
    async fn post(&self, _: &str, _: &str, _: String) -> Result<(u16, String), String> {
        Err("no siteverify client in this program".into())
    }
    fn idempotency_key(&self) -> String {
        String::new()
    }
}

#[derive(Deserialize, Default)]
struct EntryBody {
    #[serde(default)]
    turnstile: Option<String>,
    #[serde(default, rename = "cf-turnstile-response")]
    cf_turnstile_response: Option<String>,
}

#[derive(Serialize)]
struct Entered<'a> {
    event: &'a str,
    user: &'a str,
    /// True for an entry before the start.
    early: bool,
    /// For a late entry: the second of arrival (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    arrived_at: Option<String>,
    expires_at: String,
    ticket: &'a str,
}

/// The ticket a request carries: the `Flashgate-Entry` header, else the cookie.
fn presented<'a>(req: &ApiRequest<'a>) -> Option<&'a str> {
    req.entry
        .or_else(|| cookie(req.cookie, ENTRY_COOKIE))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Purchase step 1b: the purchase's verified ticket, `None` for a late entry, or the edge's
/// refusal (`bad_ticket`; `entry_required` when Turnstile is on and there is no ticket).
pub(super) fn entry_ticket(
    gate: &Gate,
    req: &ApiRequest<'_>,
    event: &str,
    user: &str,
    now: i64,
) -> Result<Option<Ticket>, Refusal> {
    let Some(raw) = presented(req) else {
        return match gate.config.turnstile {
            Some(_) => Err(Refusal::edge(ApiError::entry_required())),
            None => Ok(None),
        };
    };
    let t = verify_ticket(&gate.config.identity_secret, raw, now)
        .map_err(|e| Refusal::edge(ApiError::bad_ticket(e.message())))?;
    if t.user != user {
        return Err(Refusal::edge(ApiError::bad_ticket(
            "the entry ticket is another user's",
        )));
    }
    if t.event != event {
        return Err(Refusal::edge(ApiError::bad_ticket(
            "the entry ticket is for another sale",
        )));
    }
    Ok(Some(t))
}

/// Purchase step 3b: the purchase's entry window: its ticket's, or a late entry at `now`.
pub(super) fn entry_window(ticket: Option<&Ticket>, snap: &Snapshot, now: i64) -> Window {
    ticket.map_or_else(|| window_at(snap, now), |t| t.window)
}

/// The window of an entry at `now`: early while the sale has not started, else the second of
/// arrival. "Started" is the sale's state, not only `starts_at`: an operator may start a sale
/// early (`event start`), and entries after that are not early.
pub fn window_at(snap: &Snapshot, now: i64) -> Window {
    if snap.state(now) == State::Scheduled {
        Window::Early
    } else {
        Window::Arrived(now.div_euclid(1000))
    }
}

/// `POST /api/events/{event}/entry`. A 5xx answer gets a log line with its cause (never sent
/// to the client).
pub(super) async fn handle_entry<O: Origin, V: Siteverify>(
    gate: &Gate,
    origin: &O,
    verifier: &V,
    event: &str,
    req: &ApiRequest<'_>,
    now: i64,
) -> Handled {
    let (reply, log) = match enter(gate, origin, verifier, event, req, now).await {
        Ok(reply) => (reply, None),
        Err((e, cause)) => {
            let reply = e.to_reply();
            let log = (reply.status >= 500).then(|| DecisionLog {
                msg: "entry",
                event: event.to_string(),
                user: None,
                code: Decision::Refused(e.code),
                edge: true,
                status: reply.status,
                error: cause,
            });
            (reply, log)
        }
    };
    Handled {
        reply,
        log,
        record: None,
    }
}

async fn enter<O: Origin, V: Siteverify>(
    gate: &Gate,
    origin: &O,
    verifier: &V,
    event: &str,
    req: &ApiRequest<'_>,
    now: i64,
) -> Result<ApiReply, (ApiError, Option<String>)> {
    let plain = |e: ApiError| (e, None);
    if !valid_id(event) {
        return Err(plain(ApiError::invalid_id("event id")));
    }
    let id = gate.identity(req, now).map_err(plain)?;
    let body = parse_body(gate, req).map_err(plain)?;
    // A shopper who holds a good ticket keeps it (and its window): no second check.
    if let Some(raw) = presented(req) {
        if let Ok(t) = verify_ticket(&gate.config.identity_secret, raw, now) {
            if t.user == id.user && t.event == event {
                return Ok(entered(&t, raw, now));
            }
        }
    }
    let snap = gate
        .snapshot(origin, event, now)
        .await
        .map_err(|e| (ApiError::origin_unavailable(), Some(e.to_string())))?
        .ok_or_else(|| plain(ApiError::unknown_event(event)))?;
    if snap.state(now) == State::Ended {
        return Err(plain(ApiError::new(Code::Ended, "the sale has ended")));
    }
    if let Some(cfg) = &gate.config.turnstile {
        // A siteverify call per entry: the user's token bucket (shared with purchases) first.
        let bucket = gate.state.borrow_mut().take_token(&id.user, now);
        bucket
            .map_err(|secs| plain(ApiError::rate_limited("too many entries; slow down", secs)))?;
        let token = body
            .turnstile
            .or(body.cf_turnstile_response)
            .unwrap_or_default();
        check_turnstile(cfg, verifier, &token, req.remote_ip).await?;
    }
    let t = Ticket {
        event: event.to_string(),
        user: id.user,
        window: window_at(&snap, now),
        exp: snap.meta.ends_at.div_euclid(1000).max(now.div_euclid(1000)) + TICKET_GRACE_SECS,
    };
    let ticket = mint_ticket(&gate.config.identity_secret, &t);
    // Reported with the fleet's figures (`entered` per second): tickets issued, re-issues
    // of a held ticket aside. A sampled shopper of a line sale is counted into their window's
    // entrants now, while the window is counted, not when they buy, perhaps seconds later
    // (the page enters a shopper when it opens).
    let mut st = gate.state.borrow_mut();
    let counts = st.event_counts(event);
    counts.add("entered", 1);
    if snap.meta.fairness == Fairness::Line && threshold::sampled(event, &t.user) {
        counts.sight_entrant(t.window.rank(snap.meta.starts_at.div_euclid(1000)), &t.user);
    }
    drop(st);
    Ok(entered(&t, &ticket, now))
}

fn parse_body(gate: &Gate, req: &ApiRequest<'_>) -> Result<EntryBody, ApiError> {
    gate.check_body_len(req)?;
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(EntryBody::default());
    }
    serde_json::from_slice(req.body).map_err(|_| {
        ApiError::new(
            Code::InvalidJson,
            r#"send {} or {"turnstile":"<token>"} (or "cf-turnstile-response")"#,
        )
    })
}

/// The 200 answer: the body and the HttpOnly cookie.
fn entered(t: &Ticket, ticket: &str, now: i64) -> ApiReply {
    let body = Entered {
        event: &t.event,
        user: &t.user,
        early: t.window == Window::Early,
        arrived_at: match t.window {
            Window::Early => None,
            Window::Arrived(s) => Some(format_ms(s * 1000)),
        },
        expires_at: format_ms(t.exp * 1000),
        ticket,
    };
    let max_age = (t.exp - now.div_euclid(1000)).max(0);
    let cookie = format!(
        "{ENTRY_COOKIE}={ticket}; Path=/api/events/{}; HttpOnly; Secure; SameSite=Strict; Max-Age={max_age}",
        t.event
    );
    ApiReply::json(200, &body).with_header("set-cookie", cookie)
}

/// One Turnstile check: a missing or oversized token is refused unsent; otherwise siteverify,
/// retried once with the same idempotency key when it gives no verdict, then fail closed.
async fn check_turnstile<V: Siteverify>(
    cfg: &turnstile::TurnstileConfig,
    verifier: &V,
    token: &str,
    remote_ip: Option<&str>,
) -> Result<(), (ApiError, Option<String>)> {
    if token.is_empty() {
        let codes = ["missing-input-response".to_string()];
        return Err((ApiError::turnstile_failed(&codes), None));
    }
    if token.len() > turnstile::MAX_TOKEN_LEN {
        let codes = ["invalid-input-response".to_string()];
        return Err((ApiError::turnstile_failed(&codes), None));
    }
    let key = verifier.idempotency_key();
    let body = VerifyRequest {
        secret: &cfg.secret,
        response: token,
        remoteip: remote_ip,
        idempotency_key: &key,
    }
    .body();
    let mut last = Unavailable(String::new());
    for _ in 0..2 {
        let answer = verifier
            .post(&cfg.verify_url, turnstile::CONTENT_TYPE, body.clone())
            .await
            .map_err(Unavailable)
            .and_then(|(status, text)| turnstile::judge(status, &text));
        match answer {
            Ok(Verdict::Pass) => return Ok(()),
            Ok(Verdict::Fail(codes)) => return Err((ApiError::turnstile_failed(&codes), None)),
            Err(e) => last = e,
        }
    }
    Err((
        ApiError::turnstile_unavailable(SITEVERIFY_RETRY_SECS),
        Some(last.to_string()),
    ))
}
