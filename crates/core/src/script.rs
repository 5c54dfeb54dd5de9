//! The Lua scripts, their arguments and their replies as Rust types.
//!
//! `lua/purchase.lua` places orders: it is the only code that raises sold counts and user
//! counters or writes idempotency records. `lua/track.lua` records placed orders, read back
//! from the stream, where pay and expiry find them (the order index and the pending set).
//! `lua/settle.lua` ends a pending order (paid, or expired with its units given back); only it
//! lowers sold counts and counters. purchase.lua and settle.lua append every change to the
//! event's order stream in the same atomic step. `lua/view.lua` reads (and adds an isolate's
//! fleet report); `lua/live.lua` only reads, for the operator. All are versioned files; their
//! SHA1s are computed once per process/isolate.

use crate::fleet::{parse_counts, FleetFigures};
use crate::keys::{EventKeys, FLEET_TTL_SECS};
use crate::line::Seed;
use crate::model::{EventMeta, State};
/// One order line (defined with the order it belongs to; the script takes it as is).
pub use crate::order::Line;
use crate::origin::{Origin, OriginError, Script, Value};
use crate::threshold::{Entrants, LineState, ADVANCE_MS, HISTORY_SECS};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::LazyLock;

pub static PURCHASE: LazyLock<Script> =
    LazyLock::new(|| Script::new("purchase.lua", include_str!("lua/purchase.lua")));
pub static VIEW: LazyLock<Script> =
    LazyLock::new(|| Script::new("view.lua", include_str!("lua/view.lua")));
pub static SETTLE: LazyLock<Script> =
    LazyLock::new(|| Script::new("settle.lua", include_str!("lua/settle.lua")));
pub static LIVE: LazyLock<Script> =
    LazyLock::new(|| Script::new("live.lua", include_str!("lua/live.lua")));
pub static LINE: LazyLock<Script> =
    LazyLock::new(|| Script::new("line.lua", include_str!("lua/line.lua")));
pub static TRACK: LazyLock<Script> =
    LazyLock::new(|| Script::new("track.lua", include_str!("lua/track.lua")));

/// Everything purchase.lua needs for one attempt.
#[derive(Clone, Debug)]
pub struct PurchaseCall<'a> {
    pub keys: &'a EventKeys,
    pub user: &'a str,
    pub now_ms: i64,
    pub idempotency_key: &'a str,
    /// The lines' canonical form (`order::fingerprint`): a replay whose order has other
    /// lines is [`Outcome::KeyReused`].
    pub fingerprint: &'a str,
    pub order_json: &'a str,
    pub pay_by_ms: i64,
    pub lines: &'a [Line],
    /// The edge knows nothing of this key: the script may refuse a sold-out item before it
    /// reads the user's hash (no replay check first).
    pub fresh: bool,
}

impl PurchaseCall<'_> {
    /// KEYS and ARGV, in the order purchase.lua reads them.
    pub fn keys_and_args(&self) -> (Vec<String>, Vec<String>) {
        let k = self.keys;
        let keys = vec![k.meta.clone(), k.user(self.user), k.stream.clone()];
        let mut args = vec![
            self.now_ms.to_string(),
            self.idempotency_key.to_string(),
            self.order_json.to_string(),
            self.pay_by_ms.to_string(),
            if self.fresh { "1" } else { "0" }.to_string(),
        ];
        for l in self.lines {
            args.push(l.sku.clone());
            args.push(l.qty.to_string());
        }
        (keys, args)
    }
}

impl PurchaseCall<'_> {
    /// KEYS and ARGV for an attempt in a `fairness = line` sale: the second's fleet bucket
    /// (where purchase.lua counts the attempts that reach the origin) and the attempt's entry
    /// window (recorded with a placed order, for `verify-draw`).
    pub fn keys_and_args_in_line(&self, window: crate::line::Window) -> (Vec<String>, Vec<String>) {
        let (mut keys, mut args) = self.keys_and_args();
        keys.push(self.keys.fleet(self.now_ms.div_euclid(1000)));
        args[4] = format!("{}:{}", args[4], window.as_u64());
        (keys, args)
    }
}

/// A line's counters after a placed order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineAfter {
    /// Units of this sku the user has bought today, this order included.
    pub today: u32,
    /// Units of this sku left.
    pub remaining: u32,
}

/// What purchase.lua decided. Line indexes are 0-based here (1-based in Lua).
///
/// `due` is the earliest pay_by (ms) among the user's pending orders, `None` when there is
/// none: the user's counters cannot go down before it (only an expiry lowers them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Placed {
        total: u32,
        due: Option<i64>,
        lines: Vec<LineAfter>,
    },
    Replayed {
        order_json: String,
        total: u32,
        paid: bool,
        due: Option<i64>,
        /// The counters the order's 201 reported, when recorded (purchase.lua v7 on).
        placed: Option<PlacedCounters>,
    },
    /// The key's order ended unpaid (expired, or cancelled by the shop) and gave its units back.
    EndedUnpaid {
        order_json: String,
        end: OrderEnd,
    },
    UnknownEvent,
    NotStarted,
    Paused,
    Ended,
    UnknownItem {
        line: usize,
    },
    SoldOut {
        line: usize,
        remaining: u32,
    },
    ItemLimit {
        line: usize,
        today: u32,
        due: Option<i64>,
    },
    TotalLimit {
        total: u32,
        due: Option<i64>,
    },
    KeyReused,
    OrderQtyLimit {
        line: usize,
        cap: u32,
    },
    BadArguments,
}

/// A reply the script should not give. The script ran (or may have), so this counts as
/// "may have run": the caller must treat the attempt's outcome as unknown.
fn bad(v: &Value) -> OriginError {
    OriginError::may_have_run(format!("purchase.lua gave an unexpected reply: {v:?}"))
}

impl PurchaseCall<'_> {
    /// What purchase.lua decided, from its reply to this call.
    pub fn outcome(&self, v: &Value) -> Result<Outcome, OriginError> {
        parse_outcome(v, self.lines.len(), self.fingerprint)
    }
}

/// The canonical lines (`order::fingerprint`) of a stored order document.
fn doc_fingerprint(order_json: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Doc {
        lines: Vec<DocLine>,
    }
    #[derive(serde::Deserialize)]
    struct DocLine {
        sku: String,
        qty: u32,
    }
    let d: Doc = serde_json::from_str(order_json).ok()?;
    let lines: Vec<Line> = d
        .lines
        .into_iter()
        .map(|l| Line {
            sku: l.sku,
            qty: l.qty,
        })
        .collect();
    Some(crate::order::fingerprint(&lines))
}

/// Parses purchase.lua's reply for an attempt of `n` lines whose canonical form is
/// `fingerprint`. The script answers a known key with its order; an order with other lines
/// than the attempt's is [`Outcome::KeyReused`].
pub fn parse_outcome(v: &Value, n: usize, fingerprint: &str) -> Result<Outcome, OriginError> {
    let a = v.as_array().ok_or_else(|| bad(v))?;
    let int = |i: usize| a.get(i).and_then(Value::as_int).ok_or_else(|| bad(v));
    let u = |i: usize| int(i).and_then(|x| u32::try_from(x).map_err(|_| bad(v)));
    let due = |i: usize| int(i).map(|d| (d > 0).then_some(d));
    let string = |i: usize| {
        a.get(i)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| bad(v))
    };
    let line = |i: usize| {
        // 1-based; `x - 1` would overflow on i64::MIN (found by tests/fuzz.rs).
        int(i).and_then(|x| {
            usize::try_from(x)
                .ok()
                .and_then(|x| x.checked_sub(1))
                .filter(|&l| l < n)
                .ok_or_else(|| bad(v))
        })
    };
    let same_lines = |i: usize| {
        let doc = string(i)?;
        match doc_fingerprint(&doc) {
            Some(f) => Ok((f == fingerprint).then_some(doc)),
            None => Err(bad(v)),
        }
    };
    Ok(match int(0)? {
        0 => {
            if a.len() != 3 + 2 * n {
                return Err(bad(v));
            }
            let lines = (0..n)
                .map(|i| {
                    Ok(LineAfter {
                        today: u(3 + 2 * i)?,
                        remaining: u(4 + 2 * i)?,
                    })
                })
                .collect::<Result<_, OriginError>>()?;
            Outcome::Placed {
                total: u(1)?,
                due: due(2)?,
                lines,
            }
        }
        1 => match same_lines(1)? {
            Some(order_json) => Outcome::Replayed {
                order_json,
                total: u(2)?,
                paid: int(3)? == 1,
                due: due(4)?,
                placed: a
                    .get(5)
                    .and_then(Value::as_str)
                    .and_then(|s| PlacedCounters::parse(s, n)),
            },
            None => Outcome::KeyReused,
        },
        13 => match same_lines(1)? {
            Some(order_json) => Outcome::EndedUnpaid {
                order_json,
                // purchase.lua v6 and earlier named no state: only expiry existed.
                end: match a.get(2).and_then(Value::as_str) {
                    None | Some("x") => OrderEnd::Expired,
                    Some("c") => OrderEnd::Cancelled,
                    Some(_) => return Err(bad(v)),
                },
            },
            None => Outcome::KeyReused,
        },
        2 => Outcome::UnknownEvent,
        3 => Outcome::NotStarted,
        4 => Outcome::Paused,
        5 => Outcome::Ended,
        6 => Outcome::UnknownItem { line: line(1)? },
        7 => Outcome::SoldOut {
            line: line(1)?,
            remaining: u(2)?,
        },
        8 => Outcome::ItemLimit {
            line: line(1)?,
            today: u(2)?,
            due: due(3)?,
        },
        9 => Outcome::TotalLimit {
            total: u(1)?,
            due: due(2)?,
        },
        10 => Outcome::KeyReused,
        11 => Outcome::OrderQtyLimit {
            line: line(1)?,
            cap: u(2)?,
        },
        12 => Outcome::BadArguments,
        _ => return Err(bad(v)),
    })
}

/// An item as the edge sees it: what is on sale and what is left.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemView {
    pub stock: u32,
    pub sold: u32,
}

impl ItemView {
    pub fn remaining(&self) -> u32 {
        self.stock.saturating_sub(self.sold)
    }
}

/// One consistent read of an event (view.lua).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub meta: EventMeta,
    /// In the order of `meta.items`.
    pub items: Vec<ItemView>,
    /// Entries in the order stream (the order writer trims what it has committed).
    pub stream_len: u64,
    /// Orders awaiting payment, as tracked (track.lua; see `orders::track`).
    pub pending: u64,
    /// The fleet's figures for the last second that has any (at most two seconds back).
    pub fleet: Option<FleetFigures>,
    /// Orders of the event ever cancelled (meta's `cancels`, raised by settle.lua): a cancel
    /// gives counters back before the order's deadline, so what an isolate learnt of users
    /// and keys under another count may be stale (src/edge.rs).
    pub cancels: u64,
    /// The fleet's figures of the second the snapshot was read in, so far.
    pub fleet_now: FleetFigures,
    /// The purchase attempts the origin counted in the two whole seconds before, the latest
    /// first (line events only: purchase.lua counts them).
    pub origin_before: [Option<u64>; 2],
    /// The draw's seed: `None` before the start (and for events created before the line).
    pub seed: Option<Seed>,
    /// The line's threshold (`None` before its first advance) and entrants per window.
    pub line: Option<LineState>,
    pub entrants: Entrants,
    /// The sampled entrants and their purchases (`threshold::sampled_intents`).
    pub sampled_intents: (u64, u64),
    /// Milliseconds of each window the fleet watched (`threshold::exposure_from_fields`).
    pub exposure: std::collections::BTreeMap<u64, u64>,
    /// This read claimed the line's advance tick: the reader advances the line.
    pub claimed: bool,
}

impl Snapshot {
    pub fn state(&self, now_ms: i64) -> State {
        self.meta.state(now_ms)
    }
    pub fn item(&self, sku: &str) -> Option<(usize, &ItemView)> {
        let i = self.meta.items.iter().position(|it| it.sku == sku)?;
        Some((i, &self.items[i]))
    }
}

fn pairs(v: &Value) -> Option<HashMap<String, String>> {
    let a = v.as_array()?;
    a.chunks(2)
        .map(|c| match c {
            [k, v] => Some((
                k.as_str()?.to_string(),
                match v {
                    Value::Int(i) => i.to_string(),
                    other => other.as_str()?.to_string(),
                },
            )),
            _ => None,
        })
        .collect()
}

/// Parses view.lua's reply, read at Unix second `second`: `None` when the event does not exist.
pub fn parse_view(v: &Value, second: i64) -> Result<Option<Snapshot>, OriginError> {
    if v.as_int() == Some(0) {
        return Ok(None);
    }
    let bad = || OriginError::may_have_run(format!("view.lua gave an unexpected reply: {v:?}"));
    // 11 members since view.lua version 5; a version 4 reply (7) has no line.
    let a = (v.as_array())
        .filter(|a| a.len() == 11 || a.len() == 7)
        .ok_or_else(bad)?;
    let fields = pairs(&a[0]).ok_or_else(bad)?;
    let meta = EventMeta::from_fields(&fields).map_err(|e| {
        OriginError::may_have_run("view.lua read a bad event hash").caused_by_msg(e)
    })?;
    let cancels = fields
        .get("cancels")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let stock = pairs(&a[1]).ok_or_else(bad)?;
    let sold = pairs(&a[2]).ok_or_else(bad)?;
    let num = |m: &HashMap<String, String>, sku: &str| {
        m.get(sku).and_then(|s| s.parse().ok()).unwrap_or(0)
    };
    let items = meta
        .items
        .iter()
        .map(|it| ItemView {
            stock: num(&stock, &it.sku),
            sold: num(&sold, &it.sku),
        })
        .collect();
    let count = |i: usize| a[i].as_int().unwrap_or(0).max(0) as u64;
    // The attempts the origin counted (purchase.lua, line events) in seconds - 1 and - 2.
    let origin_before = [5, 6].map(|i| {
        let counts = parse_counts(a[i].as_array()?);
        counts.get("origin").copied()
    });
    let fleet = [5, 6].into_iter().find_map(|i| {
        let counts = parse_counts(a[i].as_array()?);
        (counts.get("reports").copied().unwrap_or(0) > 0).then_some((i, counts))
    });
    let empty = Value::Array(vec![]);
    let at = |i: usize| a.get(i).unwrap_or(&empty);
    let line = pairs(at(8)).ok_or_else(bad)?;
    let now_counts = at(10).as_array().map(parse_counts).ok_or_else(bad)?;
    Ok(Some(Snapshot {
        meta,
        items,
        stream_len: count(3),
        pending: count(4),
        fleet: fleet.map(|(i, counts)| FleetFigures {
            second: second - (i as i64 - 4),
            counts,
        }),
        cancels,
        fleet_now: FleetFigures {
            second,
            counts: now_counts,
        },
        origin_before,
        seed: at(7).as_str().and_then(Seed::from_hex),
        line: LineState::from_fields(&line),
        entrants: Entrants::from_fields(&line),
        sampled_intents: crate::threshold::sampled_intents(&line),
        exposure: crate::threshold::exposure_from_fields(&line),
        claimed: at(9).as_int() == Some(1),
    }))
}

/// KEYS and ARGV for line.lua: the state the claimer of `tick` computed from the state made at
/// `base_ms` (`None`: from none, the first advance). Its reach goes into the history under the
/// second of the tick: the claimer's own request uses the state from then on, though a claimer
/// that settled made it up to `SETTLE_MS` later, perhaps in the next second (an order placed
/// then was reported out of turn).
pub fn line_call(
    k: &EventKeys,
    tick: i64,
    (state, base_ms): (&LineState, Option<i64>),
    reach: f64,
) -> (Vec<String>, Vec<String>) {
    let sec = (tick * ADVANCE_MS).div_euclid(1000);
    let keys = vec![k.meta.clone(), k.line(), k.line_history()];
    let mut args = vec![
        tick.to_string(),
        sec.to_string(),
        format!("{reach:.12}"),
        (sec - HISTORY_SECS).to_string(),
        base_ms.unwrap_or(0).to_string(),
    ];
    for (f, v) in state.to_fields() {
        args.push(f.to_string());
        args.push(v);
    }
    (keys, args)
}

/// KEYS and ARGV for view.lua at `now_ms`, with the isolate's report (empty from the CLI,
/// which claims no advance of the line either).
pub fn view_call(k: &EventKeys, now_ms: i64, report: &[String]) -> (Vec<String>, Vec<String>) {
    let sec = now_ms.div_euclid(1000);
    let keys = vec![
        k.meta.clone(),
        k.pending.clone(),
        k.stream.clone(),
        k.fleet(sec),
        k.fleet(sec - 1),
        k.fleet(sec - 2),
        k.seed(),
        k.line(),
        k.line_seen(),
    ];
    let tick = if report.is_empty() {
        0
    } else {
        now_ms.div_euclid(ADVANCE_MS)
    };
    let mut args = vec![
        FLEET_TTL_SECS.to_string(),
        now_ms.to_string(),
        tick.to_string(),
    ];
    args.extend(report.iter().cloned());
    (keys, args)
}

/// The consumer group of the order writer (`flashgate orders sink`).
pub const SINK_GROUP: &str = "sink";

/// The longest live window: the fleet's buckets are kept [`FLEET_TTL_SECS`].
pub const LIVE_MAX_MINUTES: u32 = (FLEET_TTL_SECS / 60) as u32;

/// The seconds a live read covers: `seconds` whole seconds from Unix second `first`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveWindow {
    pub first: i64,
    pub seconds: u32,
}

impl LiveWindow {
    /// The last `minutes` minutes of whole seconds before `now_ms`: the current second is
    /// left out, as the fleet is still reporting into it.
    pub fn last_minutes(now_ms: i64, minutes: u32) -> LiveWindow {
        let seconds = minutes * 60;
        LiveWindow {
            first: now_ms.div_euclid(1000) - i64::from(seconds),
            seconds,
        }
    }

    /// KEYS and ARGV for live.lua: the event's keys (the line's last), then one fleet bucket
    /// per second.
    pub fn call(&self, k: &EventKeys) -> (Vec<String>, Vec<String>) {
        let mut keys = vec![
            k.meta.clone(),
            k.orders.clone(),
            k.pending.clone(),
            k.stream.clone(),
            k.line(),
        ];
        keys.extend((0..i64::from(self.seconds)).map(|i| k.fleet(self.first + i)));
        (keys, vec![SINK_GROUP.to_string()])
    }
}

/// How far the order writer's consumer group is behind the stream (the live view's `writer`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct WriterLag {
    /// Entries not yet handed to any writer (`None`: the server cannot tell).
    pub lag: Option<u64>,
    /// Entries handed to a writer and not yet acknowledged (committed).
    pub pending: u64,
}

/// The operator's live view of an event (live.lua): what view.lua reads, and more.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveView {
    /// The event, its items, the stream's length, the orders pending, and the line (its
    /// threshold and entrants; no seed). Its `fleet` is `None`: the window's figures are in
    /// `seconds`.
    pub snapshot: Snapshot,
    /// Orders paid since the event was created (settle.lua's `n:paid`).
    pub paid: u64,
    /// Orders expired since the event was created (settle.lua's `n:expired`).
    pub expired: u64,
    /// Orders cancelled since the event was created (settle.lua's `n:cancelled`).
    pub cancelled: u64,
    /// `None` until an order writer has created its consumer group.
    pub writer: Option<WriterLag>,
    /// The fleet's counts, one per second of the window, oldest first (empty when nothing
    /// was reported that second).
    pub seconds: Vec<FleetFigures>,
}

/// Parses live.lua's reply for window `w`: `None` when the event does not exist.
pub fn parse_live(v: &Value, w: LiveWindow) -> Result<Option<LiveView>, OriginError> {
    if v.as_int() == Some(0) {
        return Ok(None);
    }
    let bad = || OriginError::may_have_run(format!("live.lua gave an unexpected reply: {v:?}"));
    let a = v.as_array().filter(|a| a.len() == 6).ok_or_else(bad)?;
    let fields = pairs(&a[0]).ok_or_else(bad)?;
    let line = pairs(&a[5]).ok_or_else(bad)?;
    let meta = EventMeta::from_fields(&fields).map_err(|e| {
        OriginError::may_have_run("live.lua read a bad event hash").caused_by_msg(e)
    })?;
    let sold = pairs(&a[1]).ok_or_else(bad)?;
    let num = |m: &HashMap<String, String>, k: &str| m.get(k).and_then(|s| s.parse().ok());
    let items = meta
        .items
        .iter()
        .map(|it| ItemView {
            stock: num(&fields, &format!("stock:{}", it.sku)).unwrap_or(0),
            sold: num(&sold, &it.sku).unwrap_or(0),
        })
        .collect();
    let ints = |v: &Value, n: usize| {
        v.as_array()
            .filter(|x| x.len() == n)
            .and_then(|x| x.iter().map(Value::as_int).collect::<Option<Vec<i64>>>())
            .ok_or_else(bad)
    };
    let count = |i: i64| i.max(0) as u64;
    let o = ints(&a[2], 4)?;
    let wr = ints(&a[3], 4)?;
    let buckets = a[4]
        .as_array()
        .filter(|b| b.len() == w.seconds as usize)
        .ok_or_else(bad)?;
    let seconds = buckets
        .iter()
        .zip(w.first..)
        .map(|(b, second)| {
            Ok(FleetFigures {
                second,
                counts: parse_counts(b.as_array().ok_or_else(bad)?),
            })
        })
        .collect::<Result<_, OriginError>>()?;
    Ok(Some(LiveView {
        snapshot: Snapshot {
            meta,
            items,
            stream_len: count(wr[0]),
            pending: count(o[0]),
            fleet: None,
            origin_before: [None; 2],
            cancels: fields
                .get("cancels")
                .and_then(|c| c.parse().ok())
                .unwrap_or(0),
            fleet_now: FleetFigures::default(),
            seed: None,
            line: LineState::from_fields(&line),
            entrants: Entrants::from_fields(&line),
            sampled_intents: crate::threshold::sampled_intents(&line),
            exposure: crate::threshold::exposure_from_fields(&line),
            claimed: false,
        },
        paid: count(o[1]),
        expired: count(o[2]),
        cancelled: count(o[3]),
        writer: (wr[1] == 1).then(|| WriterLag {
            lag: u64::try_from(wr[2]).ok(),
            pending: count(wr[3]),
        }),
        seconds,
    }))
}

/// Reads the live view of `event` over window `w`: one EVALSHA.
pub async fn read_live<O: Origin>(
    o: &O,
    event: &str,
    w: LiveWindow,
) -> Result<Option<LiveView>, OriginError> {
    let (keys, args) = w.call(&EventKeys::new(event));
    parse_live(&LIVE.eval(o, &keys, &args).await?, w)
}

/// The user's counters right after an order was placed, as its 201 reported them: the
/// total, and each line's units that day, in the order's line order. purchase.lua records them
/// as `c:<key>` = "<total> <today_1> ... <today_n>".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacedCounters {
    pub total: u32,
    pub today: Vec<u32>,
}

impl PlacedCounters {
    /// Parses the record of an order of `lines` lines; `None` if absent or not of that shape.
    pub fn parse(s: &str, lines: usize) -> Option<PlacedCounters> {
        let mut nums = s.split(' ').map(|w| w.parse::<u32>().ok());
        let total = nums.next()??;
        let today = nums.collect::<Option<Vec<u32>>>()?;
        (today.len() == lines).then_some(PlacedCounters { total, today })
    }
}

/// How an order that was never paid ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderEnd {
    /// Its payment window passed.
    Expired,
    /// The shop (or the operator) cancelled it.
    Cancelled,
}

/// Pay for, expire or cancel one pending order (settle.lua).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SettleVerb {
    Pay,
    /// Only once the order's deadline has passed.
    Expire,
    /// At any time while it is pending: its units and the user's caps come back at once.
    Cancel,
}

/// Everything settle.lua needs.
#[derive(Clone, Debug)]
pub struct SettleCall<'a> {
    pub keys: &'a EventKeys,
    pub verb: SettleVerb,
    pub order_id: &'a str,
    /// The order's user and Idempotency-Key, as the order index (`o:<order id>` in the
    /// orders hash) names them ([`parse_order_index`]); the script checks them again.
    pub owner: (&'a str, &'a str),
    pub now_ms: i64,
}

impl SettleCall<'_> {
    pub fn keys_and_args(&self) -> (Vec<String>, Vec<String>) {
        let k = self.keys;
        let keys = [
            &k.meta,
            &k.orders,
            &k.user(self.owner.0),
            &k.pending,
            &k.stream,
        ]
        .map(String::clone);
        let verb = match self.verb {
            SettleVerb::Pay => "pay",
            SettleVerb::Expire => "expire",
            SettleVerb::Cancel => "cancel",
        };
        let args = vec![
            verb.to_string(),
            self.order_id.to_string(),
            self.owner.0.to_string(),
            self.owner.1.to_string(),
            self.now_ms.to_string(),
        ];
        (keys.to_vec(), args)
    }
}

/// What settle.lua decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    /// This call won: paid (units 0), or expired or cancelled, giving `units` back.
    Done {
        units: u32,
    },
    AlreadyPaid,
    AlreadyExpired,
    AlreadyCancelled,
    NoSuchOrder,
    /// An expiry before the deadline.
    NotDue {
        pay_by: i64,
    },
}

pub fn parse_settled(v: &Value) -> Result<Settled, OriginError> {
    let bad = || OriginError::may_have_run(format!("settle.lua gave an unexpected reply: {v:?}"));
    let a = v.as_array().ok_or_else(bad)?;
    let int = |i: usize| a.get(i).and_then(Value::as_int).ok_or_else(bad);
    Ok(match int(0)? {
        0 => Settled::Done {
            units: u32::try_from(int(1)?).map_err(|_| bad())?,
        },
        1 => Settled::AlreadyPaid,
        2 => Settled::NoSuchOrder,
        3 => Settled::AlreadyExpired,
        4 => Settled::NotDue { pay_by: int(1)? },
        5 => Settled::AlreadyCancelled,
        _ => return Err(bad()),
    })
}

/// The order index entry (`o:<order id>` in the orders hash): "<user> <key> <day>".
pub fn parse_order_index(v: &str) -> Option<(&str, &str)> {
    let mut w = v.split(' ');
    Some((w.next()?, w.next()?))
}

/// A placed order as track.lua records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    pub order_id: String,
    pub user: String,
    pub idempotency_key: String,
    /// The `now` purchase.lua placed it at (its `created_at`), Unix ms.
    pub created_ms: i64,
}

/// KEYS and ARGV for track.lua: `orders`, read from the stream up to entry id `upto`.
pub fn track_call(k: &EventKeys, upto: &str, orders: &[Placed]) -> (Vec<String>, Vec<String>) {
    let mut keys = vec![k.meta.clone(), k.orders.clone(), k.pending.clone()];
    let mut args = vec![upto.to_string()];
    for o in orders {
        keys.push(k.user(&o.user));
        args.extend([
            o.order_id.clone(),
            o.user.clone(),
            o.idempotency_key.clone(),
            o.created_ms.to_string(),
        ]);
    }
    (keys, args)
}

/// live.lua's reply for a test event `e` (A: 10 in stock, 4 sold; B: 5, all sold), 3
/// pending, 2 paid, 1 expired, 4 cancelled, 9 stream entries, `writer` as {group, lag, pending}, and
/// `buckets` as one flat name/count list per second; its line hash is [`SAMPLE_LINE`].
#[cfg(any(test, feature = "test-support"))]
pub fn live_reply(writer: [i64; 3], buckets: &[&[(&str, i64)]]) -> Value {
    live_reply_with_line(writer, buckets, SAMPLE_LINE)
}

/// The line hash of [`live_reply`]: a state made at 2027-01-01T00:00:10Z with the threshold
/// at 3.4, moving 0.4 a second at 100 shoppers a second; 300 sampled early entrants (1,200
/// shoppers), 50 in window 1 (200), 10 in window 3 (40).
#[cfg(any(test, feature = "test-support"))]
pub const SAMPLE_LINE: &[(&str, &str)] = &[
    ("tick", "7195046440"),
    ("claimed", "7195046441"),
    ("at", "1798761610000"),
    ("pos", "3.400000000000"),
    ("speed", "0.400000000000"),
    ("rate", "100.000"),
    ("gain", "1.2000"),
    ("open", "0"),
    ("origin_sum", "320"),
    ("counted_sec", "1798761609"),
    (
        "past",
        "1798761610000:3.400000000000:330 1798761609750:3.300000000000:300",
    ),
    ("n:0", "300"),
    ("n:1", "50"),
    ("n:3", "10"),
];

/// [`live_reply`] with the line hash `line` (name, value pairs; none for an event without
/// a line).
#[cfg(any(test, feature = "test-support"))]
pub fn live_reply_with_line(
    writer: [i64; 3],
    buckets: &[&[(&str, i64)]],
    line: &[(&str, &str)],
) -> Value {
    let spec: crate::model::EventSpec = serde_json::from_value(serde_json::json!({
        "id": "e", "name": "E", "starts_at": "2027-01-01T00:00:00Z",
        "ends_at": "2027-02-01T00:00:00Z", "origin_budget": 300,
        "items": [{"sku": "A", "name": "Apple", "price": 100, "currency": "USD", "stock": 10},
                  {"sku": "B", "name": "Banana", "price": 50, "currency": "USD", "stock": 5}]}))
    .unwrap();
    let meta = spec.validate().unwrap().meta;
    let mut fields: Vec<Value> = meta
        .to_fields()
        .into_iter()
        .flat_map(|(k, v)| [Value::Str(k.into()), Value::Str(v)])
        .collect();
    for (sku, n) in [("A", "10"), ("B", "5")] {
        fields.push(Value::Str(format!("stock:{sku}")));
        fields.push(Value::Str(n.into()));
    }
    let flat = |pairs: &[(&str, i64)]| {
        Value::Array(
            pairs
                .iter()
                .flat_map(|&(k, n)| [Value::Str(k.into()), Value::Int(n)])
                .collect(),
        )
    };
    let ints = |v: &[i64]| Value::Array(v.iter().map(|&i| Value::Int(i)).collect());
    Value::Array(vec![
        Value::Array(fields),
        flat(&[("A", 4), ("B", 5)]),
        ints(&[3, 2, 1, 4]),
        ints(&[9, writer[0], writer[1], writer[2]]),
        Value::Array(buckets.iter().map(|b| flat(b)).collect()),
        Value::Array(
            line.iter()
                .flat_map(|&(k, v)| [Value::Str(k.into()), Value::Str(v.into())])
                .collect(),
        ),
    ])
}

/// The live view the gate's and the CLI's tests render: [`live_reply`] with a group that has
/// read everything (2 entries being written), over two seconds from 2027-01-01T00:00:08Z: a
/// busy one, then a quieter one.
#[cfg(any(test, feature = "test-support"))]
pub fn sample_live() -> LiveView {
    let busy: &[(&str, i64)] = &[
        ("reports", 2),
        ("attempts", 12),
        ("candidates", 5),
        ("forwarded", 4),
        ("shed", 1),
        ("edge:busy", 1),
        ("edge:sold_out", 7),
        ("origin:placed", 3),
        ("origin:sold_out", 1),
    ];
    let quiet: &[(&str, i64)] = &[
        ("reports", 1),
        ("attempts", 4),
        ("forwarded", 1),
        ("edge:sold_out", 3),
        ("origin:sold_out", 1),
    ];
    let w = LiveWindow {
        first: 1_798_761_608,
        seconds: 2,
    };
    parse_live(&live_reply([1, 0, 2], &[busy, quiet]), w)
        .unwrap()
        .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(v: &[i64]) -> Value {
        Value::Array(v.iter().map(|&i| Value::Int(i)).collect())
    }

    #[test]
    fn golden_line_arguments_put_the_reach_under_the_claimed_ticks_second() {
        // The claimer of the tick at .750 settled and made its state 300 ms later, in the
        // next second; its own request used the state in the tick's second.
        let tick_ms = 1_800_000_000_750;
        let state = LineState {
            at_ms: tick_ms + 300,
            pos: 1.25,
            speed: 0.5,
            rate: 400.0,
            gain: 1.0,
            learnt: false,
            lag_ms: 262.0,
            open: false,
            waiting: true,
            origin_sum: 0,
            counted_sec: 1_799_999_999,
            past: Default::default(),
            filling: Default::default(),
        };
        let (keys, args) = line_call(
            &EventKeys::new("demo"),
            tick_ms / ADVANCE_MS,
            (&state, Some(tick_ms - 250)),
            2.0,
        );
        assert_eq!(
            keys,
            ["fg:{demo}:meta", "fg:{demo}:line", "fg:{demo}:line:history"]
        );
        let oldest = (1_800_000_000 - HISTORY_SECS).to_string();
        assert_eq!(
            args[..5],
            [
                "7200000003",
                "1800000000",
                "2.000000000000",
                &oldest,
                "1800000000500"
            ]
        );
        assert_eq!(args[5..7], ["at", "1800000001050"]);
    }

    #[test]
    fn golden_purchase_arguments() {
        let keys = EventKeys::new("demo");
        let lines = [
            Line {
                sku: "A".into(),
                qty: 1,
            },
            Line {
                sku: "B".into(),
                qty: 2,
            },
        ];
        let call = PurchaseCall {
            keys: &keys,
            user: "alice",
            now_ms: 1_800_000_000_000,
            idempotency_key: "key-0001",
            fingerprint: "A:1,B:2",
            order_json: "{}",
            pay_by_ms: 1_800_000_900_000,
            lines: &lines,
            fresh: true,
        };
        let (k, a) = call.keys_and_args();
        assert_eq!(
            k,
            ["fg:{demo}:meta", "fg:{demo}:user:alice", "fg:{demo}:stream"]
        );
        assert_eq!(
            a,
            [
                "1800000000000",
                "key-0001",
                "{}",
                "1800000900000",
                "1",
                "A",
                "1",
                "B",
                "2"
            ]
        );
    }

    #[test]
    fn golden_track_arguments() {
        let placed = |id: &str, user: &str, created_ms| Placed {
            order_id: id.into(),
            user: user.into(),
            idempotency_key: format!("key-{user}"),
            created_ms,
        };
        let (k, a) = track_call(
            &EventKeys::new("demo"),
            "1800000000000-3",
            &[placed("o_1", "alice", 17), placed("o_2", "bob", 18)],
        );
        assert_eq!(
            k,
            [
                "fg:{demo}:meta",
                "fg:{demo}:orders",
                "fg:{demo}:pending",
                "fg:{demo}:user:alice",
                "fg:{demo}:user:bob"
            ]
        );
        assert_eq!(
            a,
            [
                "1800000000000-3",
                "o_1",
                "alice",
                "key-alice",
                "17",
                "o_2",
                "bob",
                "key-bob",
                "18"
            ]
        );
    }

    #[test]
    fn outcomes() {
        assert_eq!(
            parse_outcome(&ints(&[0, 2, 77, 1, 99, 1, 36]), 2, "A:1,B:1").unwrap(),
            Outcome::Placed {
                total: 2,
                due: Some(77),
                lines: vec![
                    LineAfter {
                        today: 1,
                        remaining: 99
                    },
                    LineAfter {
                        today: 1,
                        remaining: 36
                    }
                ]
            }
        );
        assert_eq!(
            parse_outcome(&ints(&[7, 2, 0]), 2, "A:1,B:1").unwrap(),
            Outcome::SoldOut {
                line: 1,
                remaining: 0
            }
        );
        assert_eq!(
            parse_outcome(&ints(&[8, 1, 1, 0]), 1, "A:1").unwrap(),
            Outcome::ItemLimit {
                line: 0,
                today: 1,
                due: None
            }
        );
        assert_eq!(
            parse_outcome(&ints(&[9, 2, 5]), 1, "A:1").unwrap(),
            Outcome::TotalLimit {
                total: 2,
                due: Some(5)
            }
        );
        // A known key answers with its order: the same lines replay it, other lines (in any
        // order, the canonical form is sorted) are a reused key; so for an expired order.
        let doc = r#"{"id":"o","lines":[{"sku":"B","qty":2,"unit_price":5,"currency":"USD"},{"sku":"A","qty":1,"unit_price":5,"currency":"USD"}]}"#;
        let replay = Value::Array(vec![
            Value::Int(1),
            Value::Str(doc.into()),
            Value::Int(3),
            Value::Int(1),
            Value::Int(0),
        ]);
        assert_eq!(
            parse_outcome(&replay, 2, "A:1,B:2").unwrap(),
            Outcome::Replayed {
                order_json: doc.into(),
                total: 3,
                paid: true,
                due: None,
                placed: None
            }
        );
        // v7 records the counters the 201 reported; a record of another shape is not used.
        let with = |placed: &str| {
            let mut v = replay.as_array().unwrap().to_vec();
            v.push(Value::Str(placed.into()));
            match parse_outcome(&Value::Array(v), 2, "A:1,B:2").unwrap() {
                Outcome::Replayed { placed, .. } => placed,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(
            with("3 2 1"),
            Some(PlacedCounters {
                total: 3,
                today: vec![2, 1]
            })
        );
        assert_eq!(with(""), None);
        assert_eq!(with("3 2"), None);
        assert_eq!(with("3 x 1"), None);
        assert_eq!(
            parse_outcome(&replay, 1, "A:1").unwrap(),
            Outcome::KeyReused
        );
        assert_eq!(
            parse_outcome(&replay, 2, "A:1,B:3").unwrap(),
            Outcome::KeyReused
        );
        let expired = Value::Array(vec![Value::Int(13), Value::Str(doc.into())]);
        assert_eq!(
            parse_outcome(&expired, 2, "A:1,B:2").unwrap(),
            Outcome::EndedUnpaid {
                order_json: doc.into(),
                end: OrderEnd::Expired
            }
        );
        let with = |state: &str| {
            let v = Value::Array(vec![
                Value::Int(13),
                Value::Str(doc.into()),
                Value::Str(state.into()),
            ]);
            parse_outcome(&v, 2, "A:1,B:2")
        };
        assert!(matches!(
            with("x"),
            Ok(Outcome::EndedUnpaid {
                end: OrderEnd::Expired,
                ..
            })
        ));
        assert!(matches!(
            with("c"),
            Ok(Outcome::EndedUnpaid {
                end: OrderEnd::Cancelled,
                ..
            })
        ));
        assert!(with("p").is_err());
        assert_eq!(
            parse_settled(&ints(&[5])).unwrap(),
            Settled::AlreadyCancelled
        );
        assert_eq!(
            parse_outcome(&expired, 1, "C:1").unwrap(),
            Outcome::KeyReused
        );
        let not_an_order = Value::Array(vec![Value::Int(13), Value::Str("{}".into())]);
        assert!(parse_outcome(&not_an_order, 1, "A:1").is_err());
        assert_eq!(
            parse_settled(&ints(&[0, 3])).unwrap(),
            Settled::Done { units: 3 }
        );
        assert_eq!(
            parse_settled(&ints(&[4, 9])).unwrap(),
            Settled::NotDue { pay_by: 9 }
        );
        assert!(parse_settled(&ints(&[7])).is_err());
        for bad in [
            ints(&[0, 1]),
            ints(&[7, 3, 0]),
            ints(&[99]),
            Value::Nil,
            ints(&[0, -1, 1, 1]),
        ] {
            assert!(parse_outcome(&bad, 2, "A:1,B:1").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn golden_live_arguments() {
        // 12:00:00.5: the window is the whole minute before 12:00:00.
        let w = LiveWindow::last_minutes(1_800_000_000_500, 1);
        assert_eq!(
            w,
            LiveWindow {
                first: 1_799_999_940,
                seconds: 60
            }
        );
        let (k, a) = w.call(&EventKeys::new("demo"));
        assert_eq!(
            k[..6],
            [
                "fg:{demo}:meta",
                "fg:{demo}:orders",
                "fg:{demo}:pending",
                "fg:{demo}:stream",
                "fg:{demo}:line",
                "fg:{demo}:fleet:1799999940",
            ]
        );
        assert_eq!(k.len(), 5 + 60);
        assert_eq!(k.last().unwrap(), "fg:{demo}:fleet:1799999999");
        assert_eq!(a, ["sink"]);
        let widest = LiveWindow::last_minutes(0, LIVE_MAX_MINUTES).call(&EventKeys::new("d"));
        assert_eq!(widest.0.len(), 5 + 600, "every bucket the origin keeps");
    }

    #[test]
    fn live_replies() {
        let w = LiveWindow {
            first: 100,
            seconds: 2,
        };
        let v = live_reply(
            [1, 7, 2],
            &[
                &[],
                &[("reports", 2), ("attempts", 9), ("edge:sold_out", 9)],
            ],
        );
        let l = parse_live(&v, w).unwrap().unwrap();
        let s = &l.snapshot;
        assert_eq!(s.meta.id, "e");
        assert_eq!(s.meta.origin_budget, 300);
        assert_eq!(
            s.items,
            [
                ItemView { stock: 10, sold: 4 },
                ItemView { stock: 5, sold: 5 }
            ]
        );
        assert_eq!((s.pending, l.paid, l.expired, l.cancelled), (3, 2, 1, 4));
        assert_eq!((s.stream_len, &s.fleet), (9, &None));
        assert_eq!(
            l.writer,
            Some(WriterLag {
                lag: Some(7),
                pending: 2
            })
        );
        assert_eq!(l.seconds.len(), 2);
        assert_eq!((l.seconds[0].second, l.seconds[0].counts.len()), (100, 0));
        assert_eq!(l.seconds[1].second, 101);
        assert_eq!(l.seconds[1].get("edge:sold_out"), 9);
        assert_eq!(l.seconds[1].isolates(), 2);
        let line = s.line.expect("the line's state");
        assert_eq!(
            (line.at_ms, line.pos, line.speed),
            (1_798_761_610_000, 3.4, 0.4)
        );
        assert_eq!(
            (line.rate, line.past[1], line.origin_sum),
            (
                100.0,
                crate::threshold::Mark {
                    at_ms: 1_798_761_609_750,
                    pos: 3.3,
                    origin: 300
                },
                320
            )
        );
        assert_eq!(
            s.entrants.0,
            std::collections::BTreeMap::from([(0, 1200.0), (1, 200.0), (3, 40.0)])
        );

        // An event without a line (or before anyone entered): no state, no entrants.
        let bare = live_reply_with_line([1, 7, 2], &[&[], &[]], &[]);
        let b = parse_live(&bare, w).unwrap().unwrap();
        assert_eq!((b.snapshot.line, b.snapshot.entrants.total()), (None, 0.0));
        // Entrants counted before the line's first advance: no state yet.
        let early = live_reply_with_line([1, 7, 2], &[&[], &[]], &[("n:0", "5")]);
        let e = parse_live(&early, w).unwrap().unwrap();
        assert_eq!((e.snapshot.line, e.snapshot.entrants.total()), (None, 20.0));

        // No consumer group yet; a group whose lag the server cannot tell.
        let none = live_reply([0, 0, 0], &[&[], &[]]);
        assert_eq!(parse_live(&none, w).unwrap().unwrap().writer, None);
        let unknown = live_reply([1, -1, 4], &[&[], &[]]);
        assert_eq!(
            parse_live(&unknown, w).unwrap().unwrap().writer,
            Some(WriterLag {
                lag: None,
                pending: 4
            })
        );
        assert_eq!(parse_live(&Value::Int(0), w).unwrap(), None, "no event");

        // A bucket count that is not the window's, or any other shape, is an error.
        for bad in [
            live_reply([0, 0, 0], &[&[]]),
            Value::Nil,
            ints(&[1, 2, 3, 4, 5]),
        ] {
            assert!(parse_live(&bad, w).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn script_rules_for_dragonfly() {
        for s in [&*PURCHASE, &*VIEW, &*SETTLE, &*LIVE, &*TRACK] {
            assert!(!s.source.starts_with("#!"), "no shebang");
            assert_eq!(s.sha1.len(), 40);
            // Keys only through KEYS[...]: no key names built inside the scripts.
            assert!(!s.source.contains("fg:"), "{} builds a key name", s.name);
        }
    }
}
