//! `GET /api/events/{event}`: the public view of a sale, from the isolate's snapshot.

use super::Gate;
use crate::error::{ApiError, ApiReply, Caching};
use crate::model::{format_ms, format_utc_offset, valid_id, Caps};
use crate::origin::Origin;
use crate::script::Snapshot;
use serde::Serialize;

/// The public view of an event (golden-tested through the API tests).
#[derive(Serialize, Debug, PartialEq)]
pub struct EventBody<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub state: &'static str,
    pub starts_at: String,
    pub ends_at: String,
    pub server_time: String,
    pub utc_offset: String,
    pub caps: Caps,
    pub items: Vec<ItemBody<'a>>,
    /// `line` or `attempt`: how shoppers are chosen when the origin is at its budget.
    pub fairness: &'static str,
    /// The draw's commitment (SHA-256 of the seed, hex): public from creation on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commitment: Option<&'a str>,
    /// The draw's seed (hex), from the start on: with it anyone can recompute every place
    /// (`line::place_key`) and check it against the commitment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<String>,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct ItemBody<'a> {
    pub sku: &'a str,
    pub name: &'a str,
    pub price: &'a crate::model::Price,
    pub stock: u32,
    pub remaining: u32,
    pub sold_out: bool,
}

/// The public view of an event at `now`.
pub fn event_json(snap: &Snapshot, now: i64) -> EventBody<'_> {
    let m = &snap.meta;
    let items = m
        .items
        .iter()
        .zip(&snap.items)
        .map(|(info, v)| ItemBody {
            sku: &info.sku,
            name: &info.name,
            price: &info.price,
            stock: v.stock,
            remaining: v.remaining(),
            sold_out: v.remaining() == 0,
        })
        .collect();
    EventBody {
        id: &m.id,
        name: &m.name,
        state: snap.state(now).as_str(),
        starts_at: format_ms(m.starts_at),
        ends_at: format_ms(m.ends_at),
        server_time: format_ms(now),
        utc_offset: format_utc_offset(m.utc_offset_min),
        caps: m.caps,
        items,
        fairness: m.fairness.as_str(),
        commitment: m.commitment.as_deref(),
        // view.lua reads the seed only from the start on; checked here again all the same.
        seed: snap
            .seed
            .filter(|_| snap.state(now) != crate::model::State::Scheduled)
            .map(|s| s.to_hex()),
    }
}

/// The public view as answered: [`EventBody`] and, when Turnstile is on, the site key the page
/// renders its widget with (public by design).
#[derive(Serialize)]
struct Answered<'a> {
    #[serde(flatten)]
    event: EventBody<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    turnstile_site_key: Option<&'a str>,
}

pub(super) async fn handle_event<O: Origin>(
    gate: &Gate,
    origin: &O,
    id: &str,
    now: i64,
) -> Result<ApiReply, ApiError> {
    if !valid_id(id) {
        return Err(ApiError::invalid_id("event id"));
    }
    let snap = gate
        .snapshot(origin, id, now)
        .await
        .map_err(|_| ApiError::origin_unavailable())?
        .ok_or_else(|| ApiError::unknown_event(id))?;
    let body = Answered {
        event: event_json(&snap, now),
        turnstile_site_key: gate
            .config
            .turnstile
            .as_ref()
            .and_then(|t| t.site_key.as_deref()),
    };
    Ok(ApiReply::json(200, &body).cache(Caching::Public(1)))
}
