//! The purchase pipeline's answers: 201 for a placed or replayed order (its body pins the
//! order and the user's counters), and the refusals whose bodies say when to come back (the
//! sale's state, the user's caps, an expired order). Plain functions over plain data.

use crate::edge::CapHit;
use crate::error::{ApiError, ApiReply, Code};
use crate::model::{format_ms, next_day_start, Caps, State};
use crate::order::{Line, Order};
use crate::script::{LineAfter, OrderEnd, PlacedCounters, Snapshot};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

#[derive(Serialize)]
struct PlacedBody<'a, O: Serialize + ?Sized> {
    order: &'a O,
    counters: Counters<'a>,
    replayed: bool,
}

#[derive(Serialize)]
struct Counters<'a> {
    total: Option<u32>,
    total_cap: Option<u32>,
    items: Vec<ItemCounter<'a>>,
}

#[derive(Serialize)]
struct ItemCounter<'a> {
    sku: &'a str,
    today: u32,
    cap: u32,
}

/// The refusal for a key whose order ended unpaid (expired or cancelled), with the order.
pub(super) fn ended_unpaid(order_json: &str, end: OrderEnd) -> ApiError {
    match (serde_json::from_str(order_json), end) {
        (Ok(doc), OrderEnd::Expired) => ApiError::order_expired(doc),
        (Ok(doc), OrderEnd::Cancelled) => ApiError::order_cancelled(doc),
        (Err(_), _) => ApiError::internal(),
    }
}

/// 201 for a placed order.
pub(super) fn placed_reply(
    order: &Order,
    total: u32,
    caps: Caps,
    lines: &[Line],
    after: &[LineAfter],
) -> ApiReply {
    let items = lines
        .iter()
        .zip(after)
        .map(|(l, a)| ItemCounter {
            sku: &l.sku,
            today: a.today,
            cap: caps.per_item_per_day,
        })
        .collect();
    let body = PlacedBody {
        order,
        counters: Counters {
            total: Some(total),
            total_cap: Some(caps.total),
            items,
        },
        replayed: false,
    };
    ApiReply::json(201, &body)
}

#[derive(Deserialize)]
struct StoredLines<'a> {
    #[serde(borrow)]
    lines: Vec<StoredLine<'a>>,
}

#[derive(Deserialize)]
struct StoredLine<'a> {
    sku: &'a str,
}

/// 201 for a replayed order: the original 201's body, with `"replayed": true` (and the
/// `Idempotent-Replayed` header). The order is the stored document byte for byte (it is what
/// the original answer serialized), and the counters are those the original reported when the
/// origin recorded them (`placed`; orders placed before purchase.lua v7 have none: then the
/// user's `total_now`, if known, and no items).
pub(super) fn replay_reply(
    order_json: &str,
    placed: Option<&PlacedCounters>,
    total_now: Option<u32>,
    caps: Option<Caps>,
) -> Result<ApiReply, ApiError> {
    let bad = |_| ApiError::internal();
    let stored: &RawValue = serde_json::from_str(order_json).map_err(bad)?;
    // The skus are read only when the original counters are there to pair them with.
    let lines = match (placed, caps) {
        (Some(_), Some(_)) => Some(serde_json::from_str::<StoredLines>(order_json).map_err(bad)?),
        _ => None,
    };
    let counters = match (placed, caps, &lines) {
        (Some(p), Some(caps), Some(lines)) if p.today.len() == lines.lines.len() => Counters {
            total: Some(p.total),
            total_cap: Some(caps.total),
            items: (lines.lines.iter())
                .zip(&p.today)
                .map(|(l, &today)| ItemCounter {
                    sku: l.sku,
                    today,
                    cap: caps.per_item_per_day,
                })
                .collect(),
        },
        _ => Counters {
            total: total_now,
            total_cap: caps.map(|c| c.total),
            items: Vec::new(),
        },
    };
    let body = PlacedBody {
        order: stored,
        counters,
        replayed: true,
    };
    Ok(ApiReply::json(201, &body).with_header("idempotent-replayed", "true"))
}

/// The answer for a sale that is not live, or `Ok` when it is.
pub(super) fn state_check(snap: &Snapshot, now: i64) -> Result<(), ApiError> {
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

pub(super) fn cap_error(hit: CapHit, snap: &Snapshot, now: i64) -> ApiError {
    let caps = snap.meta.caps;
    match hit {
        CapHit::Item { sku, .. } => {
            let wait = (next_day_start(now, snap.meta.utc_offset_min) - now).max(0) as u64;
            let cap = caps.per_item_per_day;
            ApiError::new(
                Code::ItemLimitReached,
                format!("you have bought your {cap} of {sku} for today"),
            )
            .retry_after(wait.div_ceil(1000))
            .with("sku", sku)
            .with("cap", cap)
        }
        CapHit::Total { .. } => ApiError::new(
            Code::TotalLimitReached,
            format!("you have bought the most this sale allows ({})", caps.total),
        )
        .with("cap", caps.total),
    }
}
