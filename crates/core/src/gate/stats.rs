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
    /// Per event: this isolate's admission share (see `fleet`).
    admission: BTreeMap<&'a str, AdmissionBody>,
}

#[derive(Serialize)]
struct AdmissionBody {
    /// Chance to forward a candidate attempt.
    p: f64,
    /// Most attempts per second this isolate forwards (`null`: unbounded).
    rate_per_sec: Option<f64>,
    /// Isolates in the fleet, as last reported.
    isolates: u64,
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
            admission: st
                .admissions()
                .map(|(e, a)| {
                    let body = AdmissionBody {
                        p: a.share.p,
                        rate_per_sec: a.share.rate.is_finite().then_some(a.share.rate),
                        isolates: a.isolates,
                    };
                    (e.as_str(), body)
                })
                .collect(),
        },
    ))
}
