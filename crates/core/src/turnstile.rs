//! Cloudflare Turnstile's server-side check (`siteverify`), as plain data: the request the
//! worker sends and what its answer means. The worker's shell does the `fetch`; the gate
//! ([`crate::gate`], `entry`) decides with [`judge`].
//!
//! Protocol (<https://developers.cloudflare.com/turnstile/get-started/server-side-validation/>):
//!
//! ```text
//! POST <TURNSTILE_VERIFY_URL>            default https://challenges.cloudflare.com/turnstile/v0/siteverify
//! Content-Type: application/json
//! {"secret":"…","response":"<widget token>","remoteip":"<CF-Connecting-IP>","idempotency_key":"<uuid>"}
//!
//! 200 {"success":true,"challenge_ts":"…","hostname":"…","error-codes":[],…}
//! 200 {"success":false,"error-codes":["invalid-input-response"]}
//! ```
//!
//! Invariants:
//! - A token is checked once: a retry of the same check (after silence, a 5xx or
//!   `internal-error`) reuses the same `idempotency_key`, so Cloudflare answers it as the same
//!   verification rather than as a second use of a single-use token (`timeout-or-duplicate`).
//! - The check fails closed: anything but a readable `success: true` issues no ticket.
//!   A readable `success: false` is the shopper's failure ([`Verdict::Fail`]); silence, a
//!   non-2xx status, an unreadable body, `internal-error` or a problem with our own secret
//!   (`missing-input-secret`, `invalid-input-secret`) is ours ([`Unavailable`]).

use serde::{Deserialize, Serialize};

/// Cloudflare's siteverify endpoint.
pub const DEFAULT_VERIFY_URL: &str = "https://challenges.cloudflare.com/turnstile/v0/siteverify";
/// Turnstile tokens are at most 2048 characters; anything longer is refused unsent.
pub const MAX_TOKEN_LEN: usize = 2048;
/// The request body's media type.
pub const CONTENT_TYPE: &str = "application/json";

/// The Turnstile settings: on when `TURNSTILE_SECRET` is set.
#[derive(Clone, PartialEq)]
pub struct TurnstileConfig {
    pub secret: String,
    /// The public site key the page renders the widget with (`TURNSTILE_SITE_KEY`).
    pub site_key: Option<String>,
    pub verify_url: String,
}

impl std::fmt::Debug for TurnstileConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnstileConfig")
            .field("secret", &"..")
            .field("site_key", &self.site_key)
            .field("verify_url", &self.verify_url)
            .finish()
    }
}

/// One siteverify request.
#[derive(Serialize, Debug, PartialEq)]
pub struct VerifyRequest<'a> {
    pub secret: &'a str,
    pub response: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remoteip: Option<&'a str>,
    pub idempotency_key: &'a str,
}

impl VerifyRequest<'_> {
    /// The JSON body (sent with [`CONTENT_TYPE`]).
    pub fn body(&self) -> String {
        serde_json::to_string(self).expect("plain strings serialize")
    }
}

/// What siteverify said about a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// The token was refused; Cloudflare's `error-codes`, for the shopper and the log.
    Fail(Vec<String>),
}

/// siteverify could not give a verdict: retry once with the same key, then fail closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unavailable(pub String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "siteverify unavailable: {}", self.0)
    }
}

#[derive(Deserialize)]
struct Answer {
    success: bool,
    #[serde(default, rename = "error-codes")]
    error_codes: Vec<String>,
}

/// Error codes that are not the shopper's doing: our secret, or Cloudflare's own trouble.
const OURS: [&str; 3] = [
    "missing-input-secret",
    "invalid-input-secret",
    "internal-error",
];

/// What a siteverify answer (`status`, `body`) means.
pub fn judge(status: u16, body: &str) -> Result<Verdict, Unavailable> {
    if !(200..300).contains(&status) {
        return Err(Unavailable(format!("HTTP {status}")));
    }
    let a: Answer =
        serde_json::from_str(body).map_err(|e| Unavailable(format!("unreadable answer: {e}")))?;
    if a.success {
        return Ok(Verdict::Pass);
    }
    if let Some(c) = a.error_codes.iter().find(|c| OURS.contains(&c.as_str())) {
        return Err(Unavailable(format!("error code {c}")));
    }
    Ok(Verdict::Fail(a.error_codes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_request_body() {
        let r = VerifyRequest {
            secret: "1x0000000000000000000000000000000AA",
            response: "XXXX.DUMMY.TOKEN.XXXX",
            remoteip: Some("203.0.113.7"),
            idempotency_key: "6f1c3a52-2b1e-4c8e-9a51-3f0d9b1e2c44",
        };
        assert_eq!(
            r.body(),
            r#"{"secret":"1x0000000000000000000000000000000AA","response":"XXXX.DUMMY.TOKEN.XXXX","remoteip":"203.0.113.7","idempotency_key":"6f1c3a52-2b1e-4c8e-9a51-3f0d9b1e2c44"}"#
        );
        let no_ip = VerifyRequest {
            remoteip: None,
            ..r
        };
        assert_eq!(
            no_ip.body(),
            r#"{"secret":"1x0000000000000000000000000000000AA","response":"XXXX.DUMMY.TOKEN.XXXX","idempotency_key":"6f1c3a52-2b1e-4c8e-9a51-3f0d9b1e2c44"}"#
        );
    }

    #[test]
    fn golden_answers() {
        // Cloudflare's documented answers.
        let pass = r#"{"success":true,"challenge_ts":"2022-02-28T15:14:30.096Z","hostname":"example.com","error-codes":[],"action":"login","cdata":"sessionid-123456789","metadata":{"ephemeral_id":"x:y"}}"#;
        assert_eq!(judge(200, pass), Ok(Verdict::Pass));
        let fail = r#"{"success":false,"error-codes":["invalid-input-response"]}"#;
        assert_eq!(
            judge(200, fail),
            Ok(Verdict::Fail(vec!["invalid-input-response".into()]))
        );
        let dup = r#"{"success":false,"error-codes":["timeout-or-duplicate"],"messages":[]}"#;
        assert_eq!(
            judge(200, dup),
            Ok(Verdict::Fail(vec!["timeout-or-duplicate".into()]))
        );
        assert_eq!(
            judge(200, r#"{"success":false}"#),
            Ok(Verdict::Fail(vec![]))
        );
    }

    #[test]
    fn trouble_is_ours_and_fails_closed() {
        for (status, body) in [
            (500, r#"{"success":true}"#),
            (502, "<html>bad gateway</html>"),
            (429, ""),
            (200, "not json"),
            (200, r#"{"error-codes":[]}"#),
            (200, r#"{"success":"yes"}"#),
            (200, r#"{"success":false,"error-codes":["internal-error"]}"#),
            (
                200,
                r#"{"success":false,"error-codes":["invalid-input-secret"]}"#,
            ),
            (
                200,
                r#"{"success":false,"error-codes":["missing-input-secret"]}"#,
            ),
        ] {
            assert!(judge(status, body).is_err(), "{status} {body}");
        }
    }
}
