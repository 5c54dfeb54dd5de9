//! Client-facing errors and the one place that turns them into HTTP.
//!
//! Every answer the API gives that is not a success is an [`ApiError`]: a stable
//! machine-readable [`Code`], a human sentence, and optional `Retry-After`. [`Code::status`]
//! is the only mapping from codes to HTTP statuses in the crate. Internal errors are logged in
//! full by the caller and answered bare.

use serde_json::{json, Map, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Code {
    InvalidRequest,
    InvalidJson,
    BodyTooLarge,
    MethodNotAllowed,
    UnsupportedMediaType,
    NotFound,
    Unauthenticated,
    Forbidden,
    UnknownEvent,
    UnknownItem,
    NotStarted,
    Paused,
    Ended,
    SoldOut,
    ItemLimitReached,
    TotalLimitReached,
    OrderQtyLimit,
    IdempotencyKeyReused,
    RateLimited,
    OriginUnavailable,
    Internal,
}

impl Code {
    pub const ALL: [Code; 21] = [
        Code::InvalidRequest,
        Code::InvalidJson,
        Code::BodyTooLarge,
        Code::MethodNotAllowed,
        Code::UnsupportedMediaType,
        Code::NotFound,
        Code::Unauthenticated,
        Code::Forbidden,
        Code::UnknownEvent,
        Code::UnknownItem,
        Code::NotStarted,
        Code::Paused,
        Code::Ended,
        Code::SoldOut,
        Code::ItemLimitReached,
        Code::TotalLimitReached,
        Code::OrderQtyLimit,
        Code::IdempotencyKeyReused,
        Code::RateLimited,
        Code::OriginUnavailable,
        Code::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Code::InvalidRequest => "invalid_request",
            Code::InvalidJson => "invalid_json",
            Code::BodyTooLarge => "body_too_large",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::UnsupportedMediaType => "unsupported_media_type",
            Code::NotFound => "not_found",
            Code::Unauthenticated => "unauthenticated",
            Code::Forbidden => "forbidden",
            Code::UnknownEvent => "unknown_event",
            Code::UnknownItem => "unknown_item",
            Code::NotStarted => "not_started",
            Code::Paused => "paused",
            Code::Ended => "ended",
            Code::SoldOut => "sold_out",
            Code::ItemLimitReached => "item_limit_reached",
            Code::TotalLimitReached => "total_limit_reached",
            Code::OrderQtyLimit => "order_qty_limit",
            Code::IdempotencyKeyReused => "idempotency_key_reused",
            Code::RateLimited => "rate_limited",
            Code::OriginUnavailable => "origin_unavailable",
            Code::Internal => "internal",
        }
    }

    /// The HTTP status of each code: the only such table in flashgate.
    pub fn status(self) -> u16 {
        match self {
            Code::InvalidRequest | Code::InvalidJson => 400,
            Code::Unauthenticated => 401,
            Code::Forbidden | Code::ItemLimitReached | Code::TotalLimitReached => 403,
            Code::NotFound | Code::UnknownEvent => 404,
            Code::MethodNotAllowed => 405,
            Code::NotStarted | Code::Paused => 409,
            Code::Ended | Code::SoldOut => 410,
            Code::BodyTooLarge => 413,
            Code::UnsupportedMediaType => 415,
            Code::UnknownItem | Code::OrderQtyLimit | Code::IdempotencyKeyReused => 422,
            Code::RateLimited => 429,
            Code::Internal => 500,
            Code::OriginUnavailable => 503,
        }
    }
}

/// An HTTP answer as plain data; the wasm shell turns it into a `worker::Response`.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Reply {
    pub fn json(status: u16, body: &Value) -> Reply {
        Reply {
            status,
            headers: vec![("content-type", "application/json; charset=utf-8".into())],
            body: body.to_string(),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
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

    pub fn method_not_allowed(allow: &'static str) -> ApiError {
        let mut e = ApiError::new(Code::MethodNotAllowed, format!("this path takes {allow}"));
        e.allow = Some(allow);
        e
    }

    /// Origin trouble: the caller may retry with the same Idempotency-Key.
    pub fn origin_unavailable() -> ApiError {
        ApiError::new(
            Code::OriginUnavailable,
            "the sale is busy; try again in a moment with the same Idempotency-Key",
        )
        .retry_after(1)
    }

    pub fn internal() -> ApiError {
        ApiError::new(Code::Internal, "internal error")
    }

    pub fn to_reply(&self) -> Reply {
        let mut err = Map::new();
        err.insert("code".into(), self.code.as_str().into());
        err.insert("message".into(), self.message.clone().into());
        if let Some(s) = self.retry_after {
            err.insert("retry_after".into(), s.into());
        }
        for (k, v) in &self.extra {
            err.insert(k.clone(), v.clone());
        }
        let mut r = Reply::json(self.code.status(), &json!({ "error": err }))
            .with_header("cache-control", "no-store");
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
        let names: std::collections::BTreeSet<_> = Code::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), Code::ALL.len());
        for c in Code::ALL {
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
