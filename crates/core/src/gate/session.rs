//! Identity: who a request comes from (Bearer token or the session cookie), the session
//! routes, and development sign-in (`DEV_SIGNIN=true` only).

use super::{ApiRequest, Gate};
use crate::error::{ApiError, ApiReply};
use crate::model::{format_ms, valid_id};
use crate::token::{self, Identity};
use serde::{Deserialize, Serialize};

pub const SESSION_COOKIE: &str = "fg_session";
/// Lifetime of a development session.
pub const DEV_SESSION_SECS: i64 = 12 * 3600;

#[derive(Serialize)]
struct SessionBody<'a> {
    user: &'a str,
    expires_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
}

#[derive(Serialize)]
struct SignedOut {
    signed_out: bool,
}

impl Gate {
    /// The request's verified identity.
    pub(super) fn identity(&self, req: &ApiRequest<'_>, now: i64) -> Result<Identity, ApiError> {
        let token = match req.authorization {
            Some(h) => h
                .strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
                .ok_or_else(|| ApiError::unauthenticated("Authorization must be Bearer <token>"))?,
            None => cookie(req.cookie, SESSION_COOKIE)
                .ok_or_else(|| ApiError::unauthenticated("sign in first: no identity token"))?,
        };
        token::verify(&self.config.identity_secret, token.trim(), now)
            .map_err(|e| ApiError::unauthenticated(e.message()))
    }
}

/// `GET /api/session`. The 401 says whether dev sign-in is on, so the page knows to offer it.
pub(super) fn handle_session(
    gate: &Gate,
    req: &ApiRequest<'_>,
    now: i64,
) -> Result<ApiReply, ApiError> {
    let id = gate
        .identity(req, now)
        .map_err(|e| e.with("dev_signin", gate.config.dev_signin))?;
    let body = SessionBody {
        user: &id.user,
        expires_at: format_ms(id.exp * 1000),
        token: None,
    };
    Ok(ApiReply::json(200, &body))
}

/// `DELETE /api/session`: clears the cookie.
pub(super) fn handle_sign_out() -> ApiReply {
    ApiReply::json(200, &SignedOut { signed_out: true }).with_header(
        "set-cookie",
        format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    )
}

/// `POST /api/dev/session` `{"user": "<id>"}`: a signed session cookie, when `DEV_SIGNIN`.
pub(super) fn handle_dev_session(
    gate: &Gate,
    req: &ApiRequest<'_>,
    now: i64,
) -> Result<ApiReply, ApiError> {
    if !gate.config.dev_signin {
        return Err(ApiError::not_found(req.path));
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        user: String,
    }
    let b: Body = serde_json::from_slice(req.body).map_err(|_| {
        ApiError::new(
            crate::error::Code::InvalidRequest,
            r#"send {"user":"<id>"}"#,
        )
    })?;
    if !valid_id(&b.user) {
        return Err(ApiError::invalid_id("user"));
    }
    let exp = now.div_euclid(1000) + DEV_SESSION_SECS;
    let t = token::mint(&gate.config.identity_secret, &b.user, exp);
    let body = SessionBody {
        user: &b.user,
        expires_at: format_ms(exp * 1000),
        token: Some(&t),
    };
    let cookie = format!(
        "{SESSION_COOKIE}={t}; Path=/; HttpOnly; SameSite=Strict; Max-Age={DEV_SESSION_SECS}"
    );
    Ok(ApiReply::json(200, &body).with_header("set-cookie", cookie))
}

pub(super) fn cookie<'a>(header: Option<&'a str>, name: &str) -> Option<&'a str> {
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
    fn cookies() {
        assert_eq!(
            cookie(Some("a=1; fg_session=v1.x; b=2"), "fg_session"),
            Some("v1.x")
        );
        assert_eq!(cookie(Some("xfg_session=1"), "fg_session"), None);
        assert_eq!(cookie(None, "fg_session"), None);
    }
}
