//! `GET /api/health`: the worker's version, the origin transport and a PING with its latency.

use super::{Gate, VERSION};
use crate::error::ApiReply;
use crate::origin::{Cmd, Origin};
use serde::Serialize;

#[derive(Serialize)]
struct HealthBody {
    version: &'static str,
    transport: &'static str,
    origin: OriginHealth,
}

#[derive(Serialize)]
struct OriginHealth {
    ok: bool,
    latency_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// 200 when the origin answered PING, else 503.
pub(super) async fn handle_health<O: Origin>(
    gate: &Gate,
    origin: &O,
    clock: &dyn Fn() -> i64,
) -> ApiReply {
    let t0 = clock();
    let ping = origin.call(&Cmd::new(["PING"])).await;
    let latency_ms = clock() - t0;
    let body = HealthBody {
        version: VERSION,
        transport: gate.config.origin.transport(),
        origin: OriginHealth {
            ok: ping.is_ok(),
            latency_ms,
            error: ping.err().map(|e| e.to_string()),
        },
    };
    ApiReply::json(if body.origin.ok { 200 } else { 503 }, &body)
}
