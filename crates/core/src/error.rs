//! Client-facing errors and the one place that turns them into HTTP.
//!
//! Every answer the API gives that is not a success is an [`ApiError`]: a stable
//! machine-readable [`Code`], a human sentence, and optional `Retry-After`. [`Code::status`]
//! is the only mapping from codes to HTTP statuses in the crate. Internal errors are logged in
//! full by the caller and answered bare.

use crate::model::ID_RULE;
use serde::Serialize;
use serde_json::{Map, Value};
use strum::{EnumCount, EnumIter, IntoStaticStr};

/// Every code the API answers with. `strum` derives the list ([`Code::iter`]) and the names
/// (snake_case), so there is no hand-kept list to fall out of step.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, EnumIter, EnumCount, IntoStaticStr,
)]
#[strum(serialize_all = "snake_case")]
pub enum Code {
    InvalidRequest,
    InvalidJson,
    BodyTooLarge,
    MethodNotAllowed,
    UnsupportedMediaType,
    NotFound,
    Unauthenticated,
    Forbidden,
    BadTicket,
    EntryRequired,
    TurnstileFailed,
    UnknownEvent,
    UnknownItem,
    NotStarted,
    Paused,
    Ended,
    SoldOut,
    OrderExpired,
    OrderCancelled,
    UnknownOrder,
    OrderPaid,
    ItemLimitReached,
    TotalLimitReached,
    OrderQtyLimit,
    IdempotencyKeyReused,
    RateLimited,
    Busy,
    OriginUnavailable,
    TurnstileUnavailable,
    Internal,
}

impl Code {
    pub fn iter() -> impl Iterator<Item = Code> {
        <Code as strum::IntoEnumIterator>::iter()
    }

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The HTTP status of each code: the only such table in flashgate.
    pub fn status(self) -> u16 {
        match self {
            Code::InvalidRequest | Code::InvalidJson => 400,
            Code::Unauthenticated => 401,
            Code::Forbidden
            | Code::BadTicket
            | Code::EntryRequired
            | Code::TurnstileFailed
            | Code::ItemLimitReached
            | Code::TotalLimitReached => 403,
            Code::NotFound | Code::UnknownEvent | Code::UnknownOrder => 404,
            Code::MethodNotAllowed => 405,
            Code::NotStarted | Code::Paused | Code::OrderPaid => 409,
            Code::Ended | Code::SoldOut | Code::OrderExpired | Code::OrderCancelled => 410,
            Code::BodyTooLarge => 413,
            Code::UnsupportedMediaType => 415,
            Code::UnknownItem | Code::OrderQtyLimit | Code::IdempotencyKeyReused => 422,
            Code::RateLimited => 429,
            Code::Internal => 500,
            Code::OriginUnavailable | Code::Busy | Code::TurnstileUnavailable => 503,
        }
    }
}

/// How long a response may be cached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caching {
    /// Personal or changing answers: `no-store` (every API answer unless said otherwise).
    NoStore,
    /// Public for this many seconds.
    Public(u32),
    /// One user's answer: `private, no-store`, so that no shared cache keeps it either.
    Private,
}

/// An HTTP answer as plain data; the wasm shell turns it into a `worker::Response`.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiReply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl ApiReply {
    /// A JSON answer, `no-store` unless [`ApiReply::cache`] says otherwise.
    pub fn json(status: u16, body: &impl Serialize) -> ApiReply {
        ApiReply {
            status,
            headers: vec![
                ("content-type", "application/json; charset=utf-8".into()),
                ("cache-control", "no-store".into()),
            ],
            body: serde_json::to_string(body).expect("response bodies serialize"),
        }
    }

    pub fn cache(mut self, c: Caching) -> ApiReply {
        let value = match c {
            Caching::NoStore => "no-store".to_string(),
            Caching::Public(secs) => format!("public, max-age={secs}"),
            Caching::Private => "private, no-store".to_string(),
        };
        self.headers.retain(|(k, _)| *k != "cache-control");
        self.headers.push(("cache-control", value));
        self
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> ApiReply {
        self.headers.push((name, value.into()));
        self
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
    /// Seconds, for `Retry-After`.
    pub retry_after: Option<u64>,
    /// Extra members of the `error` object (e.g. `server_time`, `sku`).
    pub extra: Map<String, Value>,
    /// For 405: the methods the path takes.
    pub allow: Option<&'static str>,
}

/// The body of every error answer: `{"error": {"code", "message", "retry_after"?, ...}}`.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorObject<'a>,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    code: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after: Option<u64>,
    #[serde(flatten)]
    extra: &'a Map<String, Value>,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            retry_after: None,
            extra: Map::new(),
            allow: None,
        }
    }

    pub fn retry_after(mut self, secs: u64) -> ApiError {
        self.retry_after = Some(secs.max(1));
        self
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> ApiError {
        self.extra.insert(key.to_string(), value.into());
        self
    }

    // ------------------------------------------------------------ the recurring refusals

    pub fn method_not_allowed(allow: &'static str) -> ApiError {
        let mut e = ApiError::new(Code::MethodNotAllowed, format!("this path takes {allow}"));
        e.allow = Some(allow);
        e
    }

    pub fn not_found(path: &str) -> ApiError {
        ApiError::new(Code::NotFound, format!("no API at {path}"))
    }

    /// An id (`what`: event id, sku, user) that breaks [`ID_RULE`].
    pub fn invalid_id(what: &str) -> ApiError {
        ApiError::new(Code::InvalidRequest, format!("{what} must match {ID_RULE}"))
    }

    pub fn unknown_event(event: &str) -> ApiError {
        ApiError::new(
            Code::UnknownEvent,
            format!("there is no sale event {event}"),
        )
    }

    pub fn unknown_item(event: &str, sku: &str) -> ApiError {
        ApiError::new(
            Code::UnknownItem,
            format!("{sku} is not on sale in {event}"),
        )
        .with("sku", sku)
    }

    pub fn unauthenticated(message: impl Into<String>) -> ApiError {
        ApiError::new(Code::Unauthenticated, message)
    }

    pub fn sold_out(sku: &str, remaining: u32) -> ApiError {
        let msg = if remaining == 0 {
            format!("{sku} is sold out")
        } else {
            format!("only {remaining} of {sku} left")
        };
        ApiError::new(Code::SoldOut, msg)
            .with("sku", sku)
            .with("remaining", remaining)
    }

    pub fn qty_limit(sku: &str, cap: u32) -> ApiError {
        ApiError::new(
            Code::OrderQtyLimit,
            format!("at most {cap} of {sku} per order"),
        )
        .with("sku", sku)
        .with("cap", cap)
    }

    /// The key's order was not paid in time; `order` is its document.
    pub fn order_expired(order: Value) -> ApiError {
        ApiError::new(
            Code::OrderExpired,
            "this order was not paid in time and has expired; its units went back on sale",
        )
        .with("order", order)
    }

    pub fn order_cancelled(order: Value) -> ApiError {
        ApiError::new(
            Code::OrderCancelled,
            "this order was cancelled before it was paid; its units went back on sale",
        )
        .with("order", order)
    }

    pub fn key_reused() -> ApiError {
        ApiError::new(
            Code::IdempotencyKeyReused,
            "this Idempotency-Key was used for a different order; use a new key",
        )
    }

    pub fn rate_limited(message: &str, retry_after: u64) -> ApiError {
        ApiError::new(Code::RateLimited, message).retry_after(retry_after)
    }

    /// Origin trouble: the caller may retry with the same Idempotency-Key.
    pub fn origin_unavailable() -> ApiError {
        ApiError::new(
            Code::OriginUnavailable,
            "the sale is busy; try again in a moment with the same Idempotency-Key",
        )
        .retry_after(1)
    }

    /// Shed by admission control: the origin is at its budget. Retry with the same key.
    pub fn busy(retry_after: u64) -> ApiError {
        ApiError::new(
            Code::Busy,
            "the sale is very busy; retrying with the same Idempotency-Key after Retry-After",
        )
        .retry_after(retry_after)
    }

    /// A purchase's entry ticket is forged, expired, or another user's or event's.
    pub fn bad_ticket(message: impl Into<String>) -> ApiError {
        ApiError::new(
            Code::BadTicket,
            format!(
                "{}; enter the sale again (POST /api/events/{{event}}/entry)",
                message.into()
            ),
        )
    }

    /// Turnstile is required and the purchase carries no entry ticket.
    pub fn entry_required() -> ApiError {
        ApiError::new(
            Code::EntryRequired,
            "enter the sale first (POST /api/events/{event}/entry): this sale checks shoppers at entry",
        )
    }

    /// siteverify refused the Turnstile token; `codes` are its `error-codes`.
    pub fn turnstile_failed(codes: &[String]) -> ApiError {
        ApiError::new(
            Code::TurnstileFailed,
            "the bot check failed; complete the check again and retry",
        )
        .with("error_codes", codes.to_vec())
    }

    /// siteverify could not be reached or did not answer: no ticket (fail closed); retry.
    pub fn turnstile_unavailable(retry_after: u64) -> ApiError {
        ApiError::new(
            Code::TurnstileUnavailable,
            "the bot check is unavailable right now; try again in a moment",
        )
        .retry_after(retry_after)
    }

    pub fn internal() -> ApiError {
        ApiError::new(Code::Internal, "internal error")
    }

    pub fn to_reply(&self) -> ApiReply {
        let body = ErrorBody {
            error: ErrorObject {
                code: self.code.as_str(),
                message: &self.message,
                retry_after: self.retry_after,
                extra: &self.extra,
            },
        };
        let mut r = ApiReply::json(self.code.status(), &body);
        if let Some(s) = self.retry_after {
            r = r.with_header("retry-after", s.to_string());
        }
        if let Some(a) = self.allow {
            r = r.with_header("allow", a);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_and_unique() {
        let names: std::collections::BTreeSet<_> = Code::iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), <Code as strum::EnumCount>::COUNT);
        assert_eq!(names.len(), 30);
        assert_eq!(
            Code::IdempotencyKeyReused.as_str(),
            "idempotency_key_reused"
        );
        for c in Code::iter() {
            let s = c.status();
            assert!((400..600).contains(&s), "{c:?}");
        }
    }

    #[test]
    fn golden_error_body() {
        let r = ApiError::new(Code::NotStarted, "the sale has not started")
            .retry_after(30)
            .with("server_time", "2026-11-21T12:00:00.000Z")
            .to_reply();
        assert_eq!(r.status, 409);
        assert_eq!(r.header("retry-after"), Some("30"));
        assert_eq!(
            r.body,
            r#"{"error":{"code":"not_started","message":"the sale has not started","retry_after":30,"server_time":"2026-11-21T12:00:00.000Z"}}"#
        );
    }

    #[test]
    fn internal_errors_are_bare() {
        let r = ApiError::internal().to_reply();
        assert_eq!(r.status, 500);
        assert_eq!(
            r.body,
            r#"{"error":{"code":"internal","message":"internal error"}}"#
        );
    }

    #[test]
    fn method_not_allowed_says_allow() {
        let r = ApiError::method_not_allowed("POST").to_reply();
        assert_eq!((r.status, r.header("allow")), (405, Some("POST")));
    }
}
