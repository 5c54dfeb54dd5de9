//! The request pipeline: route, check, answer early, forward the survivors, render.
//!
//! Each phase may answer; the cheapest come first. A purchase attempt passes, in order:
//! method → content type → body size → identity → Idempotency-Key → body → rate limit →
//! event snapshot (cached) → state → item, quantity, stock → the user's known caps → origin.
//! Everything before "event snapshot" costs no origin command at all, and the snapshot costs
//! at most one read per isolate per `EDGE_CACHE_MS`. Only the last phase sends a purchase.
//!
//! Nothing here touches `worker`: the wasm shell passes in the request as plain data, the
//! origin behind [`Origin`], and the time.

use crate::config::Config;
use crate::edge::{CapHit, EdgeState, KeyNews, Plan};
use crate::error::{ApiError, Code, Reply};
use crate::keys::EventKeys;
use crate::model::{day_number, format_ms, format_utc_offset, next_day_start, valid_id, State};
use crate::order::{self, Order, OrderLine};
use crate::origin::{Cmd, Origin, OriginError};
use crate::script::{
    parse_outcome, parse_view, view_keys, Line, Outcome, PurchaseCall, Snapshot, PURCHASE, VIEW,
};
use crate::token::{self, Identity};
use serde::Deserialize;
use serde_json::{json, Value as Json};
use std::cell::RefCell;
use subtle::ConstantTimeEq;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const SESSION_COOKIE: &str = "fg_session";
/// How long a request waits between looks at a snapshot another request is refreshing.
const WAIT_STEP_MS: u64 = 5;
/// Lifetime of a development session.
pub const DEV_SESSION_SECS: i64 = 12 * 3600;

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

/// Retry-After for a refusal by the outside limiter, whose period the gate does not know.
const LIMITER_RETRY_SECS: u64 = 10;

/// The parts of an HTTP request the gate looks at.
#[derive(Clone, Debug, Default)]
pub struct ApiRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub authorization: Option<&'a str>,
    pub cookie: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub idempotency_key: Option<&'a str>,
    pub body: &'a [u8],
    /// `Content-Length` as sent; the shell does not read bodies declared over the cap.
    pub declared_len: Option<usize>,
}

/// The answer and, for decisions, one structured log line.
#[derive(Debug)]
pub struct Handled {
    pub reply: Reply,
    pub log: Option<Json>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route<'a> {
    Health,
    Event(&'a str),
    Orders(&'a str),
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
        _ => Route::NotFound,
    }
}

pub struct Gate {
    pub config: Config,
    pub state: RefCell<EdgeState>,
}

impl Gate {
    pub fn new(config: Config) -> Gate {
        let state = RefCell::new(EdgeState::new(config.edge));
        Gate { config, state }
    }

    /// Handles one `/api/*` request. `now_ms` is the request's time; `clock` is read only to
    /// measure the origin's latency for health.
    pub async fn handle<O: Origin, L: Limiter>(
        &self,
        origin: &O,
        limiter: &L,
        req: &ApiRequest<'_>,
        now_ms: i64,
        clock: &dyn Fn() -> i64,
    ) -> Handled {
        let r = route(req.path);
        let method = req.method;
        let plain = |res: Result<Reply, ApiError>| Handled {
            reply: res.unwrap_or_else(|e| e.to_reply()),
            log: None,
        };
        match (r, method) {
            (Route::Health, "GET") => plain(Ok(self.health(origin, clock).await)),
            (Route::Event(id), "GET") => plain(self.view_event(origin, id, now_ms).await),
            (Route::Orders(id), "POST") => self.place_order(origin, limiter, id, req, now_ms).await,
            (Route::Stats, "GET") => plain(self.stats(req)),
            (Route::DevSession, "POST") => plain(self.dev_session(req, now_ms)),
            // The 401 says whether dev sign-in is on, so the page knows to offer it.
            (Route::Session, "GET") => plain(
                self.identity(req, now_ms)
                    .map(|id| {
                        Reply::json(
                            200,
                            &json!({ "user": id.user, "expires_at": format_ms(id.exp * 1000) }),
                        )
                        .with_header("cache-control", "no-store")
                    })
                    .map_err(|e| e.with("dev_signin", self.config.dev_signin)),
            ),
            (Route::Session, "DELETE") => {
                plain(Ok(Reply::json(200, &json!({ "signed_out": true }))
                    .with_header(
                        "set-cookie",
                        format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
                    )))
            }
            (Route::NotFound, _) => plain(Err(ApiError::new(
                Code::NotFound,
                format!("no API at {}", req.path),
            ))),
            (Route::Health | Route::Event(_) | Route::Stats, _) => {
                plain(Err(ApiError::method_not_allowed("GET")))
            }
            (Route::Orders(_) | Route::DevSession, _) => {
                let mut h = plain(Err(ApiError::method_not_allowed("POST")));
                if matches!(r, Route::Orders(_)) {
                    self.state
                        .borrow_mut()
                        .count(Code::MethodNotAllowed.as_str(), true);
                    h.log = Some(
                        json!({ "msg": "decision", "code": "method_not_allowed", "edge": true }),
                    );
                }
                h
            }
            (Route::Session, _) => plain(Err(ApiError::method_not_allowed("GET, DELETE"))),
        }
    }

    async fn health<O: Origin>(&self, origin: &O, clock: &dyn Fn() -> i64) -> Reply {
        let t0 = clock();
        let ping = origin.call(&Cmd::new(["PING"])).await;
        let latency = clock() - t0;
        let transport = self.config.origin.transport();
        match ping {
            Ok(_) => Reply::json(200, &json!({ "version": VERSION, "transport": transport, "origin": { "ok": true, "latency_ms": latency } })),
            Err(e) => Reply::json(503, &json!({ "version": VERSION, "transport": transport, "origin": { "ok": false, "latency_ms": latency, "error": e.to_string() } })),
        }
        .with_header("cache-control", "no-store")
    }

    /// The event snapshot, from the isolate's cache or (for one request at a time) the origin.
    pub async fn snapshot<O: Origin>(
        &self,
        origin: &O,
        event: &str,
        now: i64,
    ) -> Result<Option<Snapshot>, OriginError> {
        let lease = self.config.edge.lease_ms.max(0) as u64;
        let mut waited = 0;
        loop {
            let plan = self.state.borrow_mut().plan(event, now);
            match plan {
                Plan::Use(s) => return Ok(s),
                Plan::Wait if waited < lease => {
                    origin.sleep(WAIT_STEP_MS).await;
                    waited += WAIT_STEP_MS;
                }
                Plan::Wait => {
                    return Err(OriginError::NotSent(
                        "the event snapshot is being refreshed by another request".into(),
                    ))
                }
                Plan::Refresh => {
                    self.state.borrow_mut().stats.view_reads += 1;
                    let read = VIEW
                        .eval(origin, &view_keys(&EventKeys::new(event)), &[])
                        .await
                        .and_then(|v| parse_view(&v));
                    self.state
                        .borrow_mut()
                        .store(event, read.as_ref().ok().cloned(), now);
                    return read;
                }
            }
        }
    }

    async fn view_event<O: Origin>(
        &self,
        origin: &O,
        id: &str,
        now: i64,
    ) -> Result<Reply, ApiError> {
        if !valid_id(id) {
            return Err(ApiError::new(
                Code::InvalidRequest,
                "event id must match [A-Za-z0-9_-]{1,64}",
            ));
        }
        let snap = self
            .snapshot(origin, id, now)
            .await
            .map_err(|_| ApiError::origin_unavailable())?;
        let snap = snap.ok_or_else(|| {
            ApiError::new(Code::UnknownEvent, format!("there is no sale event {id}"))
        })?;
        Ok(Reply::json(200, &event_json(&snap, now))
            .with_header("cache-control", "public, max-age=1"))
    }

    fn identity(&self, req: &ApiRequest<'_>, now: i64) -> Result<Identity, ApiError> {
        let token = match req.authorization {
            Some(h) => h
                .strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
                .ok_or_else(|| {
                    ApiError::new(
                        Code::Unauthenticated,
                        "Authorization must be Bearer <token>",
                    )
                })?,
            None => cookie(req.cookie, SESSION_COOKIE).ok_or_else(|| {
                ApiError::new(Code::Unauthenticated, "sign in first: no identity token")
            })?,
        };
        token::verify(&self.config.identity_secret, token.trim(), now)
            .map_err(|e| ApiError::new(Code::Unauthenticated, e.message()))
    }

    fn stats(&self, req: &ApiRequest<'_>) -> Result<Reply, ApiError> {
        let Some(want) = &self.config.operator_token else {
            return Err(ApiError::new(
                Code::Forbidden,
                "stats are off: set the OPERATOR_TOKEN secret",
            ));
        };
        let got = req
            .authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .unwrap_or("");
        if !bool::from(got.as_bytes().ct_eq(want.as_bytes())) {
            return Err(ApiError::new(
                Code::Unauthenticated,
                "stats need Authorization: Bearer <OPERATOR_TOKEN>",
            ));
        }
        let st = self.state.borrow();
        let s = &st.stats;
        Ok(Reply::json(
            200,
            &json!({
                "version": VERSION,
                "decisions": s.decisions,
                "edge_rejected": s.edge_rejected,
                "forwarded": s.forwarded,
                "view_reads": s.view_reads,
            }),
        )
        .with_header("cache-control", "no-store"))
    }

    fn dev_session(&self, req: &ApiRequest<'_>, now: i64) -> Result<Reply, ApiError> {
        if !self.config.dev_signin {
            return Err(ApiError::new(
                Code::NotFound,
                format!("no API at {}", req.path),
            ));
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Body {
            user: String,
        }
        let b: Body = serde_json::from_slice(req.body)
            .map_err(|_| ApiError::new(Code::InvalidRequest, r#"send {"user":"<id>"}"#))?;
        if !valid_id(&b.user) {
            return Err(ApiError::new(
                Code::InvalidRequest,
                "user must match [A-Za-z0-9_-]{1,64}",
            ));
        }
        let exp = now.div_euclid(1000) + DEV_SESSION_SECS;
        let t = token::mint(&self.config.identity_secret, &b.user, exp);
        Ok(Reply::json(200, &json!({ "user": b.user, "token": t, "expires_at": format_ms(exp * 1000) }))
            .with_header("cache-control", "no-store")
            .with_header("set-cookie", format!("{SESSION_COOKIE}={t}; Path=/; HttpOnly; SameSite=Strict; Max-Age={DEV_SESSION_SECS}")))
    }

    async fn place_order<O: Origin, L: Limiter>(
        &self,
        origin: &O,
        limiter: &L,
        event: &str,
        req: &ApiRequest<'_>,
        now: i64,
    ) -> Handled {
        let mut user = None;
        let result = self
            .decide(origin, limiter, event, req, now, &mut user)
            .await;
        let (reply, code, at_edge) = match result {
            Ok((reply, code)) => (reply, code, false),
            Err((e, at_edge)) => (e.to_reply(), e.code.as_str(), at_edge),
        };
        self.state.borrow_mut().count(code, at_edge);
        let log = json!({ "msg": "decision", "event": event, "user": user, "code": code, "edge": at_edge, "status": reply.status });
        Handled {
            reply,
            log: Some(log),
        }
    }

    /// The purchase pipeline. `Err((e, true))` is an answer given at the edge.
    #[allow(clippy::too_many_arguments)]
    async fn decide<O: Origin, L: Limiter>(
        &self,
        origin: &O,
        limiter: &L,
        event: &str,
        req: &ApiRequest<'_>,
        now: i64,
        who: &mut Option<String>,
    ) -> Result<(Reply, &'static str), (ApiError, bool)> {
        let edge = |e: ApiError| (e, true);
        let ct = req.content_type.unwrap_or("");
        if !ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .eq_ignore_ascii_case("application/json")
        {
            return Err(edge(ApiError::new(
                Code::UnsupportedMediaType,
                "send Content-Type: application/json",
            )));
        }
        if req.declared_len.unwrap_or(0).max(req.body.len()) > self.config.max_body_bytes {
            return Err(edge(ApiError::new(
                Code::BodyTooLarge,
                format!(
                    "the body may be at most {} bytes",
                    self.config.max_body_bytes
                ),
            )));
        }
        if !valid_id(event) {
            return Err(edge(ApiError::new(
                Code::InvalidRequest,
                "event id must match [A-Za-z0-9_-]{1,64}",
            )));
        }
        let id = self.identity(req, now).map_err(edge)?;
        *who = Some(id.user.clone());
        let key = order::check_idempotency_key(req.idempotency_key).map_err(edge)?;
        let lines = order::parse_order(req.body).map_err(edge)?;
        self.state
            .borrow_mut()
            .take_token(&id.user, now)
            .map_err(|secs| {
                edge(
                    ApiError::new(Code::RateLimited, "too many attempts; slow down")
                        .retry_after(secs),
                )
            })?;
        match limiter.allow(&id.user).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(edge(
                    ApiError::new(Code::RateLimited, "too many attempts; slow down")
                        .retry_after(LIMITER_RETRY_SECS),
                ))
            }
            Err(_) => {
                return Err(edge(
                    ApiError::new(
                        Code::RateLimited,
                        "the rate limiter did not answer; try again",
                    )
                    .retry_after(1),
                ))
            }
        }

        let fp = order::fingerprint(&lines);
        let news = self.state.borrow().key_news(event, &id.user, key).cloned();
        if let Some(KeyNews::Placed {
            fingerprint,
            order_json,
        }) = news.as_ref()
        {
            // A retry of an order this isolate placed: answer it here.
            if *fingerprint != fp {
                return Err(edge(key_reused()));
            }
            let total = self.state.borrow().known_total(event, &id.user);
            return Ok((
                replay_reply(order_json, total, None).map_err(|e| (e, true))?,
                "replayed",
            ));
        }
        // A key whose attempt may have run skips the edge's own rejections: only the origin
        // knows whether to replay it.
        let may_have_run = news == Some(KeyNews::Uncertain);

        let snap = self
            .snapshot(origin, event, now)
            .await
            .map_err(|_| (ApiError::origin_unavailable(), false))?;
        let snap = snap.ok_or_else(|| {
            edge(ApiError::new(
                Code::UnknownEvent,
                format!("there is no sale event {event}"),
            ))
        })?;
        if !may_have_run {
            state_check(&snap, now).map_err(edge)?;
        }
        let mut order_lines = Vec::with_capacity(lines.len());
        for l in &lines {
            let (i, item) = snap.item(&l.sku).ok_or_else(|| {
                edge(
                    ApiError::new(
                        Code::UnknownItem,
                        format!("{} is not on sale in {event}", l.sku),
                    )
                    .with("sku", l.sku.as_str()),
                )
            })?;
            if l.qty > snap.meta.caps.per_order_qty {
                return Err(edge(qty_limit(&l.sku, snap.meta.caps.per_order_qty)));
            }
            if item.remaining() < l.qty && !may_have_run {
                return Err(edge(sold_out(&l.sku, item.remaining())));
            }
            let info = &snap.meta.items[i];
            order_lines.push(OrderLine {
                sku: l.sku.clone(),
                qty: l.qty,
                unit_price: info.price.amount,
                currency: info.price.currency.clone(),
            });
        }
        let hit = self
            .state
            .borrow()
            .cap_hit(event, &id.user, &snap, &lines, now);
        if let Some(hit) = hit.filter(|_| !may_have_run) {
            return Err(edge(cap_error(hit, &snap, now)));
        }

        // Survivors go to the origin: one EVALSHA.
        let order = Order::new(event, &id.user, key, order_lines, now);
        let order_json = serde_json::to_string(&order).expect("orders serialize");
        let keys = EventKeys::new(event);
        let call = PurchaseCall {
            keys: &keys,
            user: &id.user,
            now_ms: now,
            idempotency_key: key,
            fingerprint: &fp,
            order_json: &order_json,
            lines: &lines,
        };
        let (k, a) = call.keys_and_args();
        self.state.borrow_mut().stats.forwarded += 1;
        let reply = PURCHASE.eval(origin, &k, &a).await.map_err(|e| {
            if e.may_have_run() {
                self.state
                    .borrow_mut()
                    .learn_key(event, &id.user, key, Some(KeyNews::Uncertain));
            }
            (ApiError::origin_unavailable(), false)
        })?;
        let outcome =
            parse_outcome(&reply, lines.len()).map_err(|_| (ApiError::internal(), false))?;
        let news = match &outcome {
            Outcome::Placed { .. } => Some(KeyNews::Placed {
                fingerprint: fp.clone(),
                order_json: order_json.clone(),
            }),
            Outcome::Replayed { order_json, .. } => Some(KeyNews::Placed {
                fingerprint: fp.clone(),
                order_json: order_json.clone(),
            }),
            _ => None,
        };
        self.state
            .borrow_mut()
            .learn_key(event, &id.user, key, news);
        self.apply(event, &id.user, &snap, &lines, outcome, order, now)
            .map_err(|e| (e, false))
    }

    /// Learns from the origin's decision and renders it.
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &self,
        event: &str,
        user: &str,
        snap: &Snapshot,
        lines: &[Line],
        outcome: Outcome,
        order: Order,
        now: i64,
    ) -> Result<(Reply, &'static str), ApiError> {
        let caps = snap.meta.caps;
        let day = day_number(now, snap.meta.utc_offset_min);
        let mut st = self.state.borrow_mut();
        let sku = |i: usize| lines[i].sku.as_str();
        match outcome {
            Outcome::Placed {
                total,
                lines: after,
            } => {
                st.learn_placed(event, user, day, total, lines, &after);
                let items: Vec<Json> = lines.iter().zip(&after).map(|(l, a)| json!({ "sku": l.sku, "today": a.today, "cap": caps.per_item_per_day })).collect();
                let body = json!({ "order": order, "counters": { "total": total, "total_cap": caps.total, "items": items }, "replayed": false });
                Ok((
                    Reply::json(201, &body).with_header("cache-control", "no-store"),
                    "placed",
                ))
            }
            Outcome::Replayed { order_json, total } => {
                st.learn_counts(event, user, day, Some(total), &[]);
                Ok((
                    replay_reply(&order_json, Some(total), Some(caps.total))?,
                    "replayed",
                ))
            }
            Outcome::SoldOut { line, remaining } => {
                st.learn_remaining(event, sku(line), remaining);
                Err(sold_out(sku(line), remaining))
            }
            Outcome::ItemLimit { line, today } => {
                st.learn_counts(event, user, day, None, &[(sku(line), today)]);
                Err(cap_error(
                    CapHit::Item {
                        sku: sku(line).to_string(),
                        today,
                    },
                    snap,
                    now,
                ))
            }
            Outcome::TotalLimit { total } => {
                st.learn_counts(event, user, day, Some(total), &[]);
                Err(cap_error(CapHit::Total { total }, snap, now))
            }
            Outcome::KeyReused => Err(key_reused()),
            Outcome::OrderQtyLimit { line, cap } => Err(qty_limit(sku(line), cap)),
            Outcome::BadArguments => Err(ApiError::internal()),
            // The origin knows better than our snapshot: drop it and say what the origin said.
            other => {
                st.invalidate(event);
                let mut fresh = snap.clone();
                fresh.meta.flag = match other {
                    Outcome::NotStarted => State::Scheduled,
                    Outcome::Paused => State::Paused,
                    Outcome::Ended => State::Ended,
                    Outcome::UnknownEvent => {
                        return Err(ApiError::new(
                            Code::UnknownEvent,
                            format!("there is no sale event {event}"),
                        ))
                    }
                    Outcome::UnknownItem { line } => {
                        return Err(ApiError::new(
                            Code::UnknownItem,
                            format!("{} is not on sale in {event}", sku(line)),
                        ))
                    }
                    _ => return Err(ApiError::internal()),
                };
                if fresh.meta.flag == State::Scheduled {
                    fresh.meta.starts_at = fresh.meta.starts_at.max(now + 1000);
                }
                Err(state_check(&fresh, now)
                    .err()
                    .unwrap_or_else(ApiError::internal))
            }
        }
    }
}

fn key_reused() -> ApiError {
    ApiError::new(
        Code::IdempotencyKeyReused,
        "this Idempotency-Key was used for a different order; use a new key",
    )
}

/// 201 for a replayed order: the stored document, unchanged.
fn replay_reply(
    order_json: &str,
    total: Option<u32>,
    total_cap: Option<u32>,
) -> Result<Reply, ApiError> {
    let stored: Json = serde_json::from_str(order_json).map_err(|_| ApiError::internal())?;
    let body = json!({ "order": stored, "counters": { "total": total, "total_cap": total_cap, "items": [] }, "replayed": true });
    Ok(Reply::json(201, &body)
        .with_header("cache-control", "no-store")
        .with_header("idempotent-replayed", "true"))
}

/// The answer for a sale that is not live, or `Ok` when it is.
fn state_check(snap: &Snapshot, now: i64) -> Result<(), ApiError> {
    let m = &snap.meta;
    match snap.state(now) {
        State::Live => Ok(()),
        State::Scheduled => {
            let secs = ((m.starts_at - now).max(0) as u64).div_ceil(1000);
            Err(
                ApiError::new(Code::NotStarted, "the sale has not started yet")
                    .retry_after(secs)
                    .with("server_time", format_ms(now))
                    .with("starts_at", format_ms(m.starts_at)),
            )
        }
        State::Paused => Err(ApiError::new(
            Code::Paused,
            "the sale is paused; it will resume shortly",
        )
        .retry_after(5)
        .with("server_time", format_ms(now))),
        State::Ended => Err(ApiError::new(Code::Ended, "the sale has ended")),
    }
}

fn sold_out(sku: &str, remaining: u32) -> ApiError {
    let msg = if remaining == 0 {
        format!("{sku} is sold out")
    } else {
        format!("only {remaining} of {sku} left")
    };
    ApiError::new(Code::SoldOut, msg)
        .with("sku", sku)
        .with("remaining", remaining)
}

fn qty_limit(sku: &str, cap: u32) -> ApiError {
    ApiError::new(
        Code::OrderQtyLimit,
        format!("at most {cap} of {sku} per order"),
    )
    .with("sku", sku)
    .with("cap", cap)
}

fn cap_error(hit: CapHit, snap: &Snapshot, now: i64) -> ApiError {
    let caps = snap.meta.caps;
    match hit {
        CapHit::Item { sku, .. } => {
            let wait = (next_day_start(now, snap.meta.utc_offset_min) - now).max(0) as u64;
            ApiError::new(
                Code::ItemLimitReached,
                format!(
                    "you have bought your {} of {sku} for today",
                    caps.per_item_per_day
                ),
            )
            .retry_after(wait.div_ceil(1000))
            .with("sku", sku)
            .with("cap", caps.per_item_per_day)
        }
        CapHit::Total { .. } => ApiError::new(
            Code::TotalLimitReached,
            format!("you have bought the most this sale allows ({})", caps.total),
        )
        .with("cap", caps.total),
    }
}

/// The public view of an event.
pub fn event_json(snap: &Snapshot, now: i64) -> Json {
    let m = &snap.meta;
    let items: Vec<Json> = m
        .items
        .iter()
        .zip(&snap.items)
        .map(|(info, v)| json!({ "sku": info.sku, "name": info.name, "price": info.price, "stock": v.stock, "remaining": v.remaining(), "sold_out": v.remaining() == 0 }))
        .collect();
    json!({
        "id": m.id,
        "name": m.name,
        "state": snap.state(now).as_str(),
        "starts_at": format_ms(m.starts_at),
        "ends_at": format_ms(m.ends_at),
        "server_time": format_ms(now),
        "utc_offset": format_utc_offset(m.utc_offset_min),
        "caps": m.caps,
        "items": items,
    })
}

fn cookie<'a>(header: Option<&'a str>, name: &str) -> Option<&'a str> {
    header?
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
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
        assert_eq!(route("/api/events/a/b/c"), Route::NotFound);
        assert_eq!(route("/api"), Route::NotFound);
    }

    mod pipeline {
        //! The gate against a fake origin that answers what it is told and fails on demand.
        use super::super::*;
        use crate::config::Config;
        use crate::model::{EventSpec, State};
        use crate::origin::fake::FakeOrigin;
        use crate::origin::{OriginError, Value};
        use futures_util::FutureExt;

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
            ])
        }

        fn placed(remaining: i64) -> Value {
            Value::Array(vec![
                Value::Int(0),
                Value::Int(1),
                Value::Int(1),
                Value::Int(remaining),
            ])
        }

        fn bearer(user: &str) -> String {
            format!(
                "Bearer {}",
                token::mint(b"0123456789abcdef", user, NOW / 1000 + 60)
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

        #[test]
        fn a_silent_origin_fails_closed_and_the_retry_goes_to_the_origin() {
            let (g, o) = (gate(), FakeOrigin::default());
            o.push(Ok(view(1)))
                .push(Err(OriginError::Unknown("timeout".into())));
            let h = order(&g, &o, "u", "key-00001");
            assert_eq!(
                (h.reply.status, h.reply.header("retry-after")),
                (503, Some("1"))
            );
            // Meanwhile the last unit went (to this user, as it happens): the edge learns it.
            g.state.borrow_mut().learn_remaining("e", "A", 0);
            assert_eq!(
                code(&order(&g, &o, "v", "key-00009")),
                "sold_out",
                "others are refused at the edge"
            );
            // The uncertain key is not: only the origin can say whether it ran.
            o.push(Ok(Value::Array(vec![
                Value::Int(1),
                Value::Str(r#"{"id":"o_x"}"#.into()),
                Value::Int(1),
            ])));
            let retry = order(&g, &o, "u", "key-00001");
            assert_eq!(retry.reply.status, 201, "{}", retry.reply.body);
            assert!(retry.reply.body.contains("o_x"));
        }

        #[test]
        fn an_unreachable_origin_is_503_and_not_uncertain() {
            let (g, o) = (gate(), FakeOrigin::default());
            o.push(Ok(view(1)))
                .push(Err(OriginError::NotSent("refused".into())));
            assert_eq!(code(&order(&g, &o, "u", "key-00001")), "origin_unavailable");
            g.state.borrow_mut().learn_remaining("e", "A", 0);
            assert_eq!(
                code(&order(&g, &o, "u", "key-00001")),
                "sold_out",
                "it never ran, so the edge may answer"
            );
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
    }

    #[test]
    fn cookies() {
        assert_eq!(
            cookie(Some("a=1; fg_session=v1.x; b=2"), "fg_session"),
            Some("v1.x")
        );
        assert_eq!(cookie(Some("xfg_session=1"), "fg_session"), None);
        assert_eq!(cookie(None, "fg_session"), None);
    }
}
