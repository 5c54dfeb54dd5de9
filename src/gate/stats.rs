//! `GET /api/stats`: the isolate's decision counters, for the operator (Bearer
//! `OPERATOR_TOKEN`, compared in constant time).

use super::{ApiRequest, Gate, VERSION};
use crate::error::{ApiError, ApiReply, Code};
use serde::Serialize;
use std::collections::BTreeMap;
use subtle::ConstantTimeEq;

#[derive(Serialize)]
struct StatsBody<'a> {
    version: &'static str,
    decisions: &'a BTreeMap<&'static str, u64>,
    edge_rejected: u64,
    forwarded: u64,
    view_reads: u64,
}

/// Refuses unless the request carries the operator token.
pub(super) fn operator_only(gate: &Gate, req: &ApiRequest<'_>) -> Result<(), ApiError> {
    let Some(want) = &gate.config.operator_token else {
        return Err(ApiError::new(
            Code::Forbidden,
            "operator routes are off: set the OPERATOR_TOKEN secret",
        ));
    };
    let got = req
        .authorization
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or("");
    if !bool::from(got.as_bytes().ct_eq(want.as_bytes())) {
        return Err(ApiError::unauthenticated(
            "operator routes need Authorization: Bearer <OPERATOR_TOKEN>",
        ));
    }
    Ok(())
}

pub(super) fn handle_stats(gate: &Gate, req: &ApiRequest<'_>) -> Result<ApiReply, ApiError> {
    operator_only(gate, req)?;
    let st = gate.state.borrow();
    let s = &st.stats;
    Ok(ApiReply::json(
        200,
        &StatsBody {
            version: VERSION,
            decisions: &s.decisions,
            edge_rejected: s.edge_rejected,
            forwarded: s.forwarded,
            view_reads: s.view_reads,
        },
    ))
}
