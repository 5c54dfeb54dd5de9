//! `flashgate bridge`: Dragonfly's `/api` dialect and Upstash's REST dialect in front of any
//! RESP server, so the worker's HTTP transport works with Redis or Valkey.
//!
//! - `POST /api`: a JSON array of strings only; 200 `{"result":…}` or 200 `{"error":…}`
//!   (coded errors keep their leading dash), HTTP Basic auth (`default:<password>`).
//! - `POST /`: a JSON array (numbers allowed); 400 `{"error":…}` on a command error,
//!   `Authorization: Bearer <password>`.
//! - Without `--password` there is no auth, as with Dragonfly without requirepass.
//!
//! One difference from Dragonfly: behind a Redis Cluster the bridge follows MOVED/ASK itself
//! rather than passing them on. The wire formats are `origin::http`'s, which golden tests pin.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use flashgate_core::net::NativeOrigin;
use flashgate_core::origin::http::{encode_request_error, encode_response, parse_command, Dialect};
use flashgate_core::origin::{Cmd, Origin, OriginError};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Connections to the RESP server, used round-robin (each serves one command at a time).
pub struct Pool {
    conns: Vec<NativeOrigin>,
    next: AtomicUsize,
}

impl Pool {
    pub fn new(conns: Vec<NativeOrigin>) -> Pool {
        assert!(!conns.is_empty());
        Pool {
            conns,
            next: AtomicUsize::new(0),
        }
    }
    fn pick(&self) -> &NativeOrigin {
        &self.conns[self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len()]
    }
}

struct Shared {
    pool: Pool,
    password: Option<String>,
}

pub fn router(pool: Pool, password: Option<String>) -> Router {
    let shared = Arc::new(Shared { pool, password });
    Router::new()
        .route(
            "/api",
            post(|s: State<Arc<Shared>>, h: HeaderMap, b: Bytes| {
                handle(s, h, b, Dialect::Dragonfly)
            }),
        )
        .route(
            "/",
            post(|s: State<Arc<Shared>>, h: HeaderMap, b: Bytes| handle(s, h, b, Dialect::Upstash)),
        )
        .with_state(shared)
}

fn authorised(dialect: Dialect, password: &str, headers: &HeaderMap) -> bool {
    let want = match dialect {
        Dialect::Dragonfly => format!("Basic {}", STANDARD.encode(format!("default:{password}"))),
        Dialect::Upstash => format!("Bearer {password}"),
    };
    let got = headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes)
        .unwrap_or_default();
    bool::from(got.ct_eq(want.as_bytes()))
}

fn json(status: u16, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn handle(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
    dialect: Dialect,
) -> Response {
    if let Some(pw) = &s.password {
        if !authorised(dialect, pw, &headers) {
            let mut r = json(401, encode_request_error("unauthorized"));
            if dialect == Dialect::Dragonfly {
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"dragonfly\""),
                );
            }
            return r;
        }
    }
    let args = match parse_command(dialect, &body) {
        Ok(a) => a,
        Err(msg) => return json(400, encode_request_error(&msg)),
    };
    match s.pool.pick().call(&Cmd { args, route: None }).await {
        Ok(v) => {
            let (st, b) = encode_response(dialect, &Ok(v));
            json(st, b)
        }
        Err(OriginError::Server(e)) => {
            let (st, b) = encode_response(dialect, &Err(e));
            json(st, b)
        }
        // The RESP server itself is unreachable or silent.
        Err(e) => json(503, encode_request_error(&e.to_string())),
    }
}

/// Serves the bridge on `listener` until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    pool: Pool,
    password: Option<String>,
) -> std::io::Result<()> {
    axum::serve(listener, router(pool, password)).await
}
