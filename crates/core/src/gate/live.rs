//! `GET /api/events/{event}/live`: the operator's live view of a sale across the whole fleet,
//! for the ops page (`/ops/`) and `flashgate event status --watch --json`. Operator only (as
//! `/api/stats`), never cached, and exactly one origin command per call (live.lua), whatever
//! the window: `?minutes=N`, 1 to [`LIVE_MAX_MINUTES`], default [`DEFAULT_MINUTES`].
//!
//! Per item it gives stock, sold and remaining; per whole second of the window the fleet's
//! counts (what the isolates reported that second, see `fleet`); orders pending, paid and
//! expired; how far the order writer is behind the order stream; and, for a
//! `fairness = line` event, how far the line has advanced and how many shoppers have entered.

use super::event::{event_json, EventBody};
use super::stats::operator_only;
use super::{ApiRequest, Gate};
use crate::error::{ApiError, ApiReply, Code};
use crate::fleet::FleetFigures;
use crate::model::{valid_id, Fairness};
use crate::origin::Origin;
use crate::script::{read_live, LiveView, LiveWindow, Snapshot, WriterLag, LIVE_MAX_MINUTES};
use serde::Serialize;
use std::collections::BTreeMap;

/// The window when the query names none.
pub const DEFAULT_MINUTES: u32 = 5;

/// The live view as the API sends it (golden-tested below).
#[derive(Serialize, Debug, PartialEq)]
pub struct LiveBody<'a> {
    /// The event as `GET /api/events/{event}` shows it (name, state, times, caps, items),
    /// but read now, not from the isolate's snapshot.
    pub event: EventBody<'a>,
    /// Purchase attempts per second the event's origin shard should see at most.
    pub origin_budget: u32,
    /// How long this read took at the origin, in ms (one EVALSHA).
    pub read_ms: i64,
    pub items: Vec<LiveItem<'a>>,
    pub orders: OrdersBody,
    /// Entries in the order stream: order changes the writer has not trimmed yet.
    pub stream_len: u64,
    /// The order writer's consumer group; `null` until a writer has started.
    pub writer: Option<WriterLag>,
    /// One entry per whole second of the window, oldest first.
    pub seconds: Vec<SecondBody<'a>>,
    /// The line of a `fairness = line` event ([`LineBody`]); `null` for `fairness = attempt`.
    pub line: Option<LineBody>,
}

/// How far the line has advanced, and who has entered it. Entrants are counted from a sample
/// of one user in [`crate::threshold::SAMPLE`] (each sighting × that), so they are estimates.
#[derive(Serialize, Debug, PartialEq, Clone, Copy)]
pub struct LineBody {
    /// The threshold as isolates apply it now, as a position on the line (window rank +
    /// fraction: below 1 the early entrants); `null` before its first advance (the start).
    pub threshold: Option<f64>,
    /// Shoppers admitted so far: the entrants below the threshold.
    pub admitted: u64,
    /// Shoppers who have entered: `early` (before the start) plus `late`.
    pub entered: u64,
    pub early: u64,
    pub late: u64,
    /// Shoppers the line admits a second now (0 before its first advance).
    pub rate: f64,
    /// The line has caught up: shoppers are admitted as they arrive.
    pub open: bool,
}

/// The line of `s` at `now`: `None` unless the event's fairness is `line`.
pub fn line_body(s: &Snapshot, now: i64) -> Option<LineBody> {
    if s.meta.fairness != Fairness::Line {
        return None;
    }
    let e = &s.entrants;
    let (early, late) = e.early_late();
    let threshold = s.line.map(|l| l.admits_below(now, s.meta.starts_at));
    let round = |x: f64, to: f64| (x * to).round() / to;
    Some(LineBody {
        threshold: threshold.map(|t| round(t, 1000.0)),
        admitted: threshold.map_or(0.0, |t| e.below(t)).round() as u64,
        entered: (early + late).round() as u64,
        early: early.round() as u64,
        late: late.round() as u64,
        rate: s.line.map_or(0.0, |l| round(l.rate, 10.0)),
        open: s.line.is_some_and(|l| l.open),
    })
}

/// What an item has sold.
#[derive(Serialize, Debug, PartialEq)]
pub struct LiveItem<'a> {
    pub sku: &'a str,
    pub stock: u32,
    /// Units of pending and paid orders.
    pub sold: u32,
    pub remaining: u32,
}

/// Orders by state.
#[derive(Serialize, Debug, PartialEq)]
pub struct OrdersBody {
    /// Awaiting payment now.
    pub pending: u64,
    /// Paid since the event was created.
    pub paid: u64,
    /// Expired (units given back) since the event was created.
    pub expired: u64,
    /// Cancelled by the shop (units given back) since the event was created.
    pub cancelled: u64,
}

/// The fleet's counts for one second.
#[derive(Serialize, Debug, PartialEq)]
pub struct SecondBody<'a> {
    /// Unix second.
    pub second: i64,
    /// Reports that second: about the number of isolates that saw traffic.
    pub isolates: u64,
    pub attempts: u64,
    /// Attempts that passed every edge check.
    pub candidates: u64,
    /// Attempts sent to the origin.
    pub forwarded: u64,
    /// Candidates refused `busy` by admission control.
    pub shed: u64,
    /// Orders placed (= `decisions["origin:placed"]`).
    pub placed: u64,
    /// Decisions per place and code, e.g. `edge:sold_out`, `origin:placed`.
    pub decisions: BTreeMap<&'a str, u64>,
}

impl<'a> SecondBody<'a> {
    fn of(f: &'a FleetFigures) -> SecondBody<'a> {
        SecondBody {
            second: f.second,
            isolates: f.isolates(),
            attempts: f.get("attempts"),
            candidates: f.get("candidates"),
            forwarded: f.get("forwarded"),
            shed: f.get("shed"),
            placed: f.get("origin:placed"),
            decisions: f
                .counts
                .iter()
                .filter(|(k, _)| k.contains(':'))
                .map(|(k, &n)| (k.as_str(), n))
                .collect(),
        }
    }
}

/// The live view at `now`, read in `read_ms`.
pub fn live_body(v: &LiveView, now: i64, read_ms: i64) -> LiveBody<'_> {
    let s = &v.snapshot;
    LiveBody {
        event: event_json(s, now),
        origin_budget: s.meta.origin_budget,
        read_ms,
        items: s
            .meta
            .items
            .iter()
            .zip(&s.items)
            .map(|(info, it)| LiveItem {
                sku: &info.sku,
                stock: it.stock,
                sold: it.sold,
                remaining: it.remaining(),
            })
            .collect(),
        orders: OrdersBody {
            pending: s.pending,
            paid: v.paid,
            expired: v.expired,
            cancelled: v.cancelled,
        },
        stream_len: s.stream_len,
        writer: v.writer,
        seconds: v.seconds.iter().map(SecondBody::of).collect(),
        line: line_body(s, now),
    }
}

/// The window in minutes from the query string (`minutes=N`).
pub fn window_minutes(query: Option<&str>) -> Result<u32, ApiError> {
    let Some(raw) = query
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("minutes="))
    else {
        return Ok(DEFAULT_MINUTES);
    };
    raw.parse()
        .ok()
        .filter(|m| (1..=LIVE_MAX_MINUTES).contains(m))
        .ok_or_else(|| {
            ApiError::new(
                Code::InvalidRequest,
                format!("minutes must be a whole number from 1 to {LIVE_MAX_MINUTES}"),
            )
        })
}

pub(super) async fn handle_live<O: Origin>(
    gate: &Gate,
    origin: &O,
    id: &str,
    req: &ApiRequest<'_>,
    now: i64,
    clock: &dyn Fn() -> i64,
) -> Result<ApiReply, ApiError> {
    operator_only(gate, req)?;
    if !valid_id(id) {
        return Err(ApiError::invalid_id("event id"));
    }
    let window = LiveWindow::last_minutes(now, window_minutes(req.query)?);
    let t0 = clock();
    let view = read_live(origin, id, window)
        .await
        .map_err(|_| ApiError::origin_unavailable())?
        .ok_or_else(|| ApiError::unknown_event(id))?;
    Ok(ApiReply::json(200, &live_body(&view, now, clock() - t0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::gate::{Handled, NoLimiter};
    use crate::origin::fake::FakeOrigin;
    use crate::origin::OriginError;
    use crate::script::{live_reply, parse_live, sample_live};
    use futures_util::FutureExt;
    use serde_json::{json, Value as Json};

    /// 2027-01-01T00:00:10.250Z: the sale (2027-01-01 to 02-01) is live.
    const NOW: i64 = 1_798_761_610_250;

    fn gate(operator: Option<&str>) -> Gate {
        Gate::new(
            Config::from_lookup(|k| match k {
                "ORIGIN_URL" => Some("redis://127.0.0.1:1".into()),
                "IDENTITY_SECRET" => Some("0123456789abcdef".into()),
                "OPERATOR_TOKEN" => operator.map(str::to_string),
                _ => None,
            })
            .unwrap(),
        )
    }

    fn get(g: &Gate, o: &FakeOrigin, auth: Option<&str>, query: Option<&str>) -> Handled {
        let req = ApiRequest {
            method: "GET",
            path: "/api/events/e/live",
            query,
            authorization: auth,
            ..Default::default()
        };
        // A clock that moves 3 ms each time it is read.
        let t = std::cell::Cell::new(NOW);
        let clock = || {
            t.set(t.get() + 3);
            t.get()
        };
        g.handle(o, &NoLimiter, &req, NOW, &clock)
            .now_or_never()
            .expect("the fake never waits")
    }

    fn code(h: &Handled) -> (u16, String) {
        let b: Json = serde_json::from_str(&h.reply.body).unwrap();
        (
            h.reply.status,
            b["error"]["code"].as_str().unwrap_or("").into(),
        )
    }

    #[test]
    fn the_window_comes_from_the_query() {
        assert_eq!(window_minutes(None).unwrap(), DEFAULT_MINUTES);
        assert_eq!(window_minutes(Some("x=1")).unwrap(), DEFAULT_MINUTES);
        assert_eq!(window_minutes(Some("x=1&minutes=10")).unwrap(), 10);
        assert_eq!(window_minutes(Some("minutes=1")).unwrap(), 1);
        for bad in [
            "minutes=0",
            "minutes=11",
            "minutes=",
            "minutes=5s",
            "minutes=-1",
        ] {
            let e = window_minutes(Some(bad)).unwrap_err();
            assert_eq!(e.code, Code::InvalidRequest, "{bad}");
        }
    }

    #[test]
    fn golden_live_body() {
        let v = sample_live();
        let body = serde_json::to_value(live_body(&v, NOW, 2)).unwrap();
        let event = serde_json::to_value(event_json(&v.snapshot, NOW)).unwrap();
        assert_eq!(event["server_time"], "2027-01-01T00:00:10.250Z");
        assert_eq!(
            body,
            json!({
                "event": event,
                "origin_budget": 300,
                "read_ms": 2,
                "items": [
                    {"sku": "A", "stock": 10, "sold": 4, "remaining": 6},
                    {"sku": "B", "stock": 5, "sold": 5, "remaining": 0}
                ],
                "orders": {"pending": 3, "paid": 2, "expired": 1, "cancelled": 4},
                "stream_len": 9,
                "writer": {"lag": 0, "pending": 2},
                "seconds": [{
                    "second": 1_798_761_608, "isolates": 2, "attempts": 12, "candidates": 5,
                    "forwarded": 4, "shed": 1, "placed": 3,
                    "decisions": {"edge:busy": 1, "edge:sold_out": 7, "origin:placed": 3,
                                  "origin:sold_out": 1}
                }, {
                    "second": 1_798_761_609, "isolates": 1, "attempts": 4, "candidates": 0,
                    "forwarded": 1, "shed": 0, "placed": 0,
                    "decisions": {"edge:sold_out": 3, "origin:sold_out": 1}
                }],
                "line": {"threshold": 3.5, "admitted": 1420, "entered": 1440, "early": 1200,
                         "late": 240, "rate": 100.0, "open": false}
            })
        );
        // No writer yet, and a second nobody reported in.
        let w = LiveWindow {
            first: 7,
            seconds: 1,
        };
        let quiet = parse_live(&live_reply([0, 0, 0], &[&[]]), w)
            .unwrap()
            .unwrap();
        let body = serde_json::to_value(live_body(&quiet, NOW, 0)).unwrap();
        assert_eq!(body["writer"], Json::Null);
        assert_eq!(
            body["seconds"],
            json!([{"second": 7, "isolates": 0, "attempts": 0, "candidates": 0,
                "forwarded": 0, "shed": 0, "placed": 0, "decisions": {}}])
        );
    }

    #[test]
    fn the_line_in_the_live_body() {
        use crate::script::{live_reply_with_line, SAMPLE_LINE};
        let w = LiveWindow {
            first: 7,
            seconds: 1,
        };
        let body = |line: &[(&str, &str)], now: i64| {
            let v = parse_live(&live_reply_with_line([0, 0, 0], &[&[]], line), w)
                .unwrap()
                .unwrap();
            serde_json::to_value(live_body(&v, now, 0)).unwrap()["line"].clone()
        };
        // Shoppers entered before the start; the line has not advanced yet.
        assert_eq!(
            body(&[("n:0", "25")], NOW),
            json!({"threshold": null, "admitted": 0, "entered": 100, "early": 100, "late": 0,
                   "rate": 0.0, "open": false})
        );
        // The threshold extrapolates (at most HORIZON_MS, 1.5 s) from the state's moment: at
        // 3.8 half of window 3 is still to come; at 4.0 (the horizon) everyone counted is in.
        let at = |ms: i64| body(SAMPLE_LINE, 1_798_761_610_000 + ms);
        assert_eq!(at(0)["threshold"], 3.4);
        assert_eq!(
            (at(0)["admitted"].clone(), at(1000)["admitted"].clone()),
            (json!(1416), json!(1432))
        );
        assert_eq!(
            (at(1500)["threshold"].clone(), at(1500)["admitted"].clone()),
            (json!(4.0), json!(1440))
        );
        assert_eq!(at(9000), at(1500), "no further than the horizon");
        // An open line admits everyone who has arrived.
        let open: Vec<_> = SAMPLE_LINE
            .iter()
            .map(|&(k, v)| (k, if k == "open" { "1" } else { v }))
            .collect();
        assert_eq!(body(&open, NOW)["admitted"], 1440);
        assert_eq!(body(&open, NOW)["open"], true);
        // `fairness = attempt`: no line.
        let mut v = sample_live();
        v.snapshot.meta.fairness = Fairness::Attempt;
        assert_eq!(
            serde_json::to_value(live_body(&v, NOW, 0)).unwrap()["line"],
            Json::Null
        );
    }

    #[test]
    fn operator_only_and_one_command() {
        let (g, o) = (gate(Some("op-token")), FakeOrigin::default());
        assert_eq!(
            code(&get(&g, &o, None, None)),
            (401, "unauthenticated".into())
        );
        let wrong = get(&g, &o, Some("Bearer op-tokex"), None);
        assert_eq!(code(&wrong), (401, "unauthenticated".into()));
        let off = get(&gate(None), &o, Some("Bearer op-token"), None);
        assert_eq!(code(&off), (403, "forbidden".into()));
        assert!(o.commands().is_empty(), "refusals cost no origin command");

        // Five minutes by default: 300 buckets, the last one the second before now.
        let buckets: Vec<&[(&str, i64)]> = vec![&[]; 300];
        o.push(Ok(live_reply([0, 0, 0], &buckets)));
        let ok = get(&g, &o, Some("Bearer op-token"), None);
        assert_eq!(ok.reply.status, 200, "{}", ok.reply.body);
        assert!(ok
            .reply
            .headers
            .contains(&("cache-control", "no-store".into())));
        assert_eq!(
            o.commands(),
            ["EVALSHA ".to_string() + &crate::script::LIVE.sha1]
        );
        let sent = o.log.borrow()[0].args.clone();
        assert_eq!(sent[2], "305", "5 event keys and 300 buckets");
        assert_eq!(sent.last().unwrap(), "sink");
        assert_eq!(sent[sent.len() - 2], "fg:{e}:fleet:1798761609");
        let b: Json = serde_json::from_str(&ok.reply.body).unwrap();
        assert_eq!(b["seconds"].as_array().unwrap().len(), 300);
        assert_eq!(b["read_ms"], 3, "the clock moved 3 ms during the read");

        // ?minutes=1: 60 buckets. Out of range: refused before the origin.
        let buckets: Vec<&[(&str, i64)]> = vec![&[]; 60];
        o.push(Ok(live_reply([0, 0, 0], &buckets)));
        let one = get(&g, &o, Some("Bearer op-token"), Some("minutes=1"));
        assert_eq!(one.reply.status, 200, "{}", one.reply.body);
        let wide = get(&g, &o, Some("Bearer op-token"), Some("minutes=11"));
        assert_eq!(code(&wide), (400, "invalid_request".into()));
        assert_eq!(o.commands().len(), 2);

        // No such event; the origin down.
        o.push(Ok(crate::origin::Value::Int(0)));
        let unknown = get(&g, &o, Some("Bearer op-token"), None);
        assert_eq!(code(&unknown), (404, "unknown_event".into()));
        o.push(Err(OriginError::not_sent("connection refused")));
        let down = get(&g, &o, Some("Bearer op-token"), None);
        assert_eq!(code(&down), (503, "origin_unavailable".into()));
        let post = ApiRequest {
            method: "POST",
            path: "/api/events/e/live",
            ..Default::default()
        };
        let h = g
            .handle(&o, &NoLimiter, &post, NOW, &|| NOW)
            .now_or_never()
            .unwrap();
        assert_eq!(code(&h), (405, "method_not_allowed".into()));
    }
}
