//! The sale-event model: identifiers, caps, items, the state machine and calendar days.
//!
//! Invariants:
//! - Every id (event, sku, user) matches `[A-Za-z0-9_-]{1,64}`; keys and tokens rely on it
//!   (no `{`, `}`, `:` or `.` can appear inside an id).
//! - Time is Unix milliseconds on the edge's clock, always passed in (`now_ms`); nothing here
//!   reads a clock. The same numbers reach purchase.lua as ARGV, so edge and origin agree.
//! - [`effective_state`] is the one definition of the state machine; purchase.lua mirrors it
//!   line by line and the tests in `tests/script.rs` hold the two together.
//! - The origin stores an event as the flat fields of [`EventMeta::to_fields`]; the CLI writes
//!   them and the worker reads them back with [`EventMeta::from_fields`], nowhere else.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

pub const MAX_ID_LEN: usize = 64;
pub const MS_PER_DAY: i64 = 86_400_000;
/// The most items one event may list, and the most lines one order may hold.
pub const MAX_ITEMS: usize = 100;

/// What every id must match, as said in error messages.
pub const ID_RULE: &str = "[A-Za-z0-9_-]{1,64}";

/// [`ID_RULE`].
pub fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The operator's flag and, through [`effective_state`], what shoppers see.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Scheduled,
    Live,
    Paused,
    Ended,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Scheduled => "scheduled",
            State::Live => "live",
            State::Paused => "paused",
            State::Ended => "ended",
        }
    }
    pub fn parse(s: &str) -> Option<State> {
        Some(match s {
            "scheduled" => State::Scheduled,
            "live" => State::Live,
            "paused" => State::Paused,
            "ended" => State::Ended,
            _ => return None,
        })
    }
}

/// scheduled → live at `starts_at` (or when the operator starts it); live ↔ paused by the
/// operator; anything → ended at `ends_at` or by the operator.
pub fn effective_state(flag: State, starts_at: i64, ends_at: i64, now_ms: i64) -> State {
    if flag == State::Ended || now_ms >= ends_at {
        State::Ended
    } else if flag == State::Paused {
        State::Paused
    } else if flag == State::Live || now_ms >= starts_at {
        State::Live
    } else {
        State::Scheduled
    }
}

/// The calendar day number of `now_ms` in a zone `offset_min` minutes east of UTC.
/// Per-item caps count per such day.
pub fn day_number(now_ms: i64, offset_min: i32) -> i64 {
    (now_ms + i64::from(offset_min) * 60_000).div_euclid(MS_PER_DAY)
}

/// When the calendar day after `now_ms` begins, in Unix ms.
pub fn next_day_start(now_ms: i64, offset_min: i32) -> i64 {
    (day_number(now_ms, offset_min) + 1) * MS_PER_DAY - i64::from(offset_min) * 60_000
}

/// Parses `+08:00`, `-05:30`, `Z`, `+00:00` into minutes east of UTC (±14:00 at most).
pub fn parse_utc_offset(s: &str) -> Option<i32> {
    if s == "Z" {
        return Some(0);
    }
    let b = s.as_bytes();
    if b.len() != 6 || b[3] != b':' {
        return None;
    }
    let sign = match b[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let h: i32 = s.get(1..3)?.parse().ok()?;
    let m: i32 = s.get(4..6)?.parse().ok()?;
    if !s[1..3].bytes().all(|c| c.is_ascii_digit()) || !s[4..6].bytes().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let total = h * 60 + m;
    (m < 60 && total <= 14 * 60).then_some(sign * total)
}

pub fn format_utc_offset(min: i32) -> String {
    let sign = if min < 0 { '-' } else { '+' };
    format!("{sign}{:02}:{:02}", min.abs() / 60, min.abs() % 60)
}

/// The wall clock in Unix milliseconds (0 if it reads before 1970), for the native programs
/// (the operator's operations read it here). The core's decisions take `now` as an argument;
/// the worker's shell reads the clock of its own runtime, where `SystemTime` does not exist.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// RFC 3339 in UTC with milliseconds, e.g. `2026-11-21T23:00:00.000Z`.
pub fn format_ms(ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Parses any RFC 3339 timestamp into Unix ms.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Caps {
    /// Units of one item one user may buy per calendar day of the event.
    pub per_item_per_day: u32,
    /// Units one user may buy across the whole event.
    pub total: u32,
    /// Units of one item in one order.
    pub per_order_qty: u32,
}

impl Default for Caps {
    fn default() -> Self {
        Caps {
            per_item_per_day: 1,
            total: 5,
            per_order_qty: 1,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Minor units (cents).
    pub amount: i64,
    pub currency: String,
}

/// An item as the origin keeps it (stock lives in its own hash, see `keys`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemInfo {
    pub sku: String,
    pub name: String,
    pub price: Price,
}

/// An event as stored at the origin, without stock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventMeta {
    pub id: String,
    pub name: String,
    pub utc_offset_min: i32,
    pub starts_at: i64,
    pub ends_at: i64,
    pub flag: State,
    pub caps: Caps,
    pub items: Vec<ItemInfo>,
    /// How long a placed order may stay unpaid before it expires and gives its units back.
    pub pay_within_ms: i64,
    /// Purchase attempts per second the event's origin shard should see at most; the edge
    /// fleet sheds the rest (admission control). The operator may change it live.
    pub origin_budget: u32,
    /// How the edge chooses whom to forward when the origin is at its budget.
    pub fairness: Fairness,
    /// The SHA-256 (hex) of the event's draw seed (`line::commitment`), public from creation
    /// on; `None` for events created before the line.
    pub commitment: Option<String>,
}

/// How admission chooses among shoppers (the event's `fairness`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Fairness {
    /// A place in line per shopper, drawn at the start (see `line`, `threshold`): the default
    /// for new events.
    #[default]
    Line,
    /// A chance per attempt (the per-attempt lottery of `fleet::Admission`): events created
    /// before the line, or a shop's choice.
    Attempt,
}

impl Fairness {
    pub fn as_str(self) -> &'static str {
        match self {
            Fairness::Line => "line",
            Fairness::Attempt => "attempt",
        }
    }
    pub fn parse(s: &str) -> Option<Fairness> {
        match s {
            "line" => Some(Fairness::Line),
            "attempt" => Some(Fairness::Attempt),
            _ => None,
        }
    }
}

/// The origin budget of an event created without one: attempts per second.
pub const DEFAULT_ORIGIN_BUDGET: u32 = 5000;

/// The payment window of an event created without one: 15 minutes.
pub const DEFAULT_PAY_WITHIN_SECS: u32 = 900;

impl EventMeta {
    pub fn state(&self, now_ms: i64) -> State {
        effective_state(self.flag, self.starts_at, self.ends_at, now_ms)
    }

    /// The fields of the event hash. purchase.lua reads `state`, `starts_at`, `ends_at`,
    /// `utc_offset_min`, `cap_item`, `cap_total` and `cap_qty` by these names.
    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("id", self.id.clone()),
            ("name", self.name.clone()),
            ("utc_offset_min", self.utc_offset_min.to_string()),
            ("starts_at", self.starts_at.to_string()),
            ("ends_at", self.ends_at.to_string()),
            ("state", self.flag.as_str().to_string()),
            ("cap_item", self.caps.per_item_per_day.to_string()),
            ("cap_total", self.caps.total.to_string()),
            ("cap_qty", self.caps.per_order_qty.to_string()),
            (
                "items",
                serde_json::to_string(&self.items).unwrap_or_default(),
            ),
            ("pay_within_ms", self.pay_within_ms.to_string()),
            ("origin_budget", self.origin_budget.to_string()),
            ("fairness", self.fairness.as_str().to_string()),
        ]
        .into_iter()
        .chain(self.commitment.clone().map(|c| ("commitment", c)))
        .collect()
    }

    pub fn from_fields(f: &HashMap<String, String>) -> Result<EventMeta, String> {
        fn get<'a>(f: &'a HashMap<String, String>, k: &str) -> Result<&'a str, String> {
            f.get(k)
                .map(String::as_str)
                .ok_or_else(|| format!("event hash lacks field {k}"))
        }
        fn num<T: std::str::FromStr>(f: &HashMap<String, String>, k: &str) -> Result<T, String> {
            get(f, k)?
                .parse()
                .map_err(|_| format!("event field {k} is not a number"))
        }
        Ok(EventMeta {
            id: get(f, "id")?.to_string(),
            name: get(f, "name")?.to_string(),
            utc_offset_min: num(f, "utc_offset_min")?,
            starts_at: num(f, "starts_at")?,
            ends_at: num(f, "ends_at")?,
            flag: State::parse(get(f, "state")?).ok_or("event field state is not a state")?,
            caps: Caps {
                per_item_per_day: num(f, "cap_item")?,
                total: num(f, "cap_total")?,
                per_order_qty: num(f, "cap_qty")?,
            },
            items: serde_json::from_str(get(f, "items")?)
                .map_err(|e| format!("event field items is not valid: {e}"))?,
            pay_within_ms: match f.get("pay_within_ms") {
                Some(_) => num(f, "pay_within_ms")?,
                None => i64::from(DEFAULT_PAY_WITHIN_SECS) * 1000,
            },
            origin_budget: match f.get("origin_budget") {
                Some(_) => num(f, "origin_budget")?,
                None => DEFAULT_ORIGIN_BUDGET,
            },
            // Events stored before the line keep the per-attempt lottery.
            fairness: match f.get("fairness") {
                Some(v) => Fairness::parse(v)
                    .ok_or_else(|| "event field fairness is not line or attempt".to_string())?,
                None => Fairness::Attempt,
            },
            commitment: f.get("commitment").cloned(),
        })
    }
}

/// The file an operator writes to create an event (`flashgate event create --file`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSpec {
    pub id: String,
    pub name: String,
    #[serde(default = "utc")]
    pub utc_offset: String,
    pub starts_at: String,
    pub ends_at: String,
    #[serde(default)]
    pub caps: Caps,
    pub items: Vec<ItemSpec>,
    /// Seconds a placed order may stay unpaid (default 900).
    #[serde(default = "default_pay_within")]
    pub pay_within: u32,
    /// Purchase attempts per second the origin should see at most (default 5000).
    #[serde(default = "default_origin_budget")]
    pub origin_budget: u32,
    /// `line` (default) or `attempt`.
    #[serde(default)]
    pub fairness: Fairness,
}

fn default_origin_budget() -> u32 {
    DEFAULT_ORIGIN_BUDGET
}

fn default_pay_within() -> u32 {
    DEFAULT_PAY_WITHIN_SECS
}

fn utc() -> String {
    "+00:00".into()
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemSpec {
    pub sku: String,
    pub name: String,
    /// Minor units.
    pub price: i64,
    pub currency: String,
    pub stock: u32,
}

/// A validated event ready to be written: its metadata and each sku's stock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    pub meta: EventMeta,
    pub stock: Vec<(String, u32)>,
}

impl EventSpec {
    /// Checks everything an operator can get wrong, with a sentence that says what.
    pub fn validate(&self) -> Result<NewEvent, String> {
        if !valid_id(&self.id) {
            return Err(format!("event id {:?} must match {ID_RULE}", self.id));
        }
        if self.name.trim().is_empty() || self.name.len() > 200 {
            return Err("event name must be 1 to 200 characters".into());
        }
        let offset = parse_utc_offset(&self.utc_offset)
            .ok_or_else(|| format!("utc_offset {:?} must look like +08:00", self.utc_offset))?;
        let starts_at = parse_rfc3339_ms(&self.starts_at)
            .ok_or_else(|| format!("starts_at {:?} is not an RFC 3339 time", self.starts_at))?;
        let ends_at = parse_rfc3339_ms(&self.ends_at)
            .ok_or_else(|| format!("ends_at {:?} is not an RFC 3339 time", self.ends_at))?;
        if ends_at <= starts_at {
            return Err("ends_at must be after starts_at".into());
        }
        let c = self.caps;
        if c.per_item_per_day == 0 || c.total == 0 || c.per_order_qty == 0 {
            return Err("caps must all be at least 1".into());
        }
        if self.origin_budget == 0 {
            return Err("origin_budget must be at least 1 attempt per second".into());
        }
        if !(1..=7 * 86_400).contains(&self.pay_within) {
            return Err("pay_within must be 1 to 604800 seconds".into());
        }
        if self.items.is_empty() || self.items.len() > MAX_ITEMS {
            return Err(format!("an event needs 1 to {MAX_ITEMS} items"));
        }
        let mut items = Vec::new();
        let mut stock = Vec::new();
        for it in &self.items {
            if !valid_id(&it.sku) {
                return Err(format!("sku {:?} must match {ID_RULE}", it.sku));
            }
            if items.iter().any(|i: &ItemInfo| i.sku == it.sku) {
                return Err(format!("sku {} is listed twice", it.sku));
            }
            if it.price < 0
                || it.currency.len() != 3
                || !it.currency.bytes().all(|b| b.is_ascii_uppercase())
            {
                return Err(format!(
                    "item {}: price must be ≥ 0 minor units and currency like USD",
                    it.sku
                ));
            }
            if it.stock > 1_000_000_000 {
                return Err(format!("item {}: stock must be at most 1000000000", it.sku));
            }
            items.push(ItemInfo {
                sku: it.sku.clone(),
                name: it.name.clone(),
                price: Price {
                    amount: it.price,
                    currency: it.currency.clone(),
                },
            });
            stock.push((it.sku.clone(), it.stock));
        }
        Ok(NewEvent {
            meta: EventMeta {
                id: self.id.clone(),
                name: self.name.clone(),
                utc_offset_min: offset,
                starts_at,
                ends_at,
                flag: State::Scheduled,
                caps: c,
                items,
                pay_within_ms: i64::from(self.pay_within) * 1000,
                origin_budget: self.origin_budget,
                fairness: self.fairness,
                commitment: None,
            },
            stock,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(valid_id("demo-2026_A"));
        assert!(valid_id(&"a".repeat(64)));
        for bad in ["", "a b", "a{b}", "a:b", "a.b", "é", &"a".repeat(65)] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn state_machine() {
        use State::*;
        let (s, e) = (1000, 2000);
        assert_eq!(effective_state(Scheduled, s, e, 999), Scheduled);
        assert_eq!(effective_state(Scheduled, s, e, 1000), Live);
        assert_eq!(
            effective_state(Live, s, e, 10),
            Live,
            "operator started early"
        );
        assert_eq!(effective_state(Paused, s, e, 1500), Paused);
        assert_eq!(effective_state(Paused, s, e, 10), Paused);
        assert_eq!(effective_state(Live, s, e, 2000), Ended);
        assert_eq!(effective_state(Ended, s, e, 1500), Ended);
    }

    #[test]
    fn days_roll_over_in_the_event_zone() {
        // 2026-11-21T15:59:59.999Z is 23:59:59.999 at +08:00; one ms later is the next day there.
        let t = parse_rfc3339_ms("2026-11-21T15:59:59.999Z").unwrap();
        assert_eq!(day_number(t, 480) + 1, day_number(t + 1, 480));
        assert_eq!(day_number(t, 0), day_number(t + 1, 0));
        assert_eq!(next_day_start(t, 480), t + 1);
        assert_eq!(day_number(-1, 0), -1, "floor, not truncation");
    }

    #[test]
    fn offsets() {
        assert_eq!(parse_utc_offset("+08:00"), Some(480));
        assert_eq!(parse_utc_offset("-05:30"), Some(-330));
        assert_eq!(parse_utc_offset("Z"), Some(0));
        for bad in ["+8:00", "08:00", "+14:01", "+10:60", "+1a:00", "+08-00"] {
            assert_eq!(parse_utc_offset(bad), None, "{bad}");
        }
        assert_eq!(format_utc_offset(-330), "-05:30");
        assert_eq!(format_utc_offset(480), "+08:00");
    }

    #[test]
    fn times() {
        let ms = parse_rfc3339_ms("2026-11-21T23:00:00+08:00").unwrap();
        assert_eq!(format_ms(ms), "2026-11-21T15:00:00.000Z");
        assert_eq!(format_ms(1_234), "1970-01-01T00:00:01.234Z");
    }

    fn spec() -> EventSpec {
        serde_json::from_str(
            r#"{"id":"demo","name":"Demo","utc_offset":"+08:00","starts_at":"2026-11-21T12:00:00Z",
                "ends_at":"2026-11-22T12:00:00Z","caps":{"per_item_per_day":1,"total":2,"per_order_qty":1},
                "items":[{"sku":"A","name":"Alpha","price":1999,"currency":"USD","stock":100}]}"#,
        )
        .unwrap()
    }

    #[test]
    fn spec_round_trips_through_the_origin_fields() {
        let ev = spec().validate().unwrap();
        let fields: HashMap<String, String> = ev
            .meta
            .to_fields()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(EventMeta::from_fields(&fields).unwrap(), ev.meta);
        assert_eq!(ev.stock, vec![("A".to_string(), 100)]);
    }

    #[test]
    fn spec_errors_are_sentences() {
        let mut s = spec();
        s.ends_at = s.starts_at.clone();
        assert_eq!(s.validate().unwrap_err(), "ends_at must be after starts_at");
        let mut s = spec();
        s.items.push(s.items[0].clone());
        assert_eq!(s.validate().unwrap_err(), "sku A is listed twice");
        let mut s = spec();
        s.id = "no spaces".into();
        assert!(s.validate().unwrap_err().contains("must match"));
    }
}
