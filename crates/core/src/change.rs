//! The sink's pure core: a stream entry parsed into the change it records, the order state
//! machine that decides what applying it does, and the arithmetic of stream ids and trimming.
//! Nothing here does I/O; the order writer's `store` and `stream` (flashgate-sink) carry the
//! decisions out.
//!
//! Invariants:
//! - An order's status moves pending → paid or pending → expired, never back, so a change is
//!   applied by comparing it with the status already stored, whatever order changes arrive in.
//! - An order holds stock while it is pending or paid ([`Status::holds_stock`]): units are
//!   reserved when an order first appears in such a status and released exactly when it moves
//!   from such a status to one that holds none.

use crate::model::parse_rfc3339_ms;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A stream entry id, `<ms>-<seq>`. Ordered as Redis orders them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    pub const ZERO: StreamId = StreamId { ms: 0, seq: 0 };

    pub fn parse(s: &str) -> Option<StreamId> {
        let (ms, seq) = s.split_once('-')?;
        Some(StreamId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }

    /// The smallest id greater than this one.
    pub fn successor(self) -> StreamId {
        match self.seq.checked_add(1) {
            Some(seq) => StreamId { ms: self.ms, seq },
            None => StreamId {
                ms: self.ms + 1,
                seq: 0,
            },
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Where `XTRIM MINID` may cut: below the group's lowest pending entry and at most just past
/// its last delivered one. Every entry below that id was delivered and is not pending, so it
/// was acknowledged, that is committed. `last_delivered` must be read before `lowest_pending`
/// (an entry delivered between the two reads is then above `last_delivered`).
pub fn trim_floor(last_delivered: StreamId, lowest_pending: Option<StreamId>) -> StreamId {
    let past_delivered = last_delivered.successor();
    match lowest_pending {
        Some(p) => p.min(past_delivered),
        None => past_delivered,
    }
}

/// An order's status in the shop's database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Pending,
    Paid,
    Expired,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Paid => "paid",
            Status::Expired => "expired",
            Status::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "pending" => Some(Status::Pending),
            "paid" => Some(Status::Paid),
            "expired" => Some(Status::Expired),
            "cancelled" => Some(Status::Cancelled),
            _ => None,
        }
    }

    /// Whether an order in this status keeps its units out of the remaining stock.
    pub fn holds_stock(self) -> bool {
        matches!(self, Status::Pending | Status::Paid)
    }
}

/// The `type` field of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Placed,
    Paid,
    Expired,
    Cancelled,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "placed" => Some(Kind::Placed),
            "paid" => Some(Kind::Paid),
            "expired" => Some(Kind::Expired),
            "cancelled" => Some(Kind::Cancelled),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Placed => "placed",
            Kind::Paid => "paid",
            Kind::Expired => "expired",
            Kind::Cancelled => "cancelled",
        }
    }

    /// Whether applying this change can give units back to stock (an order that held stock
    /// moves to a status that holds none).
    pub fn releases(self) -> bool {
        !self.target().holds_stock()
    }

    /// The status this change moves its order to.
    pub fn target(self) -> Status {
        match self {
            Kind::Placed => Status::Pending,
            Kind::Paid => Status::Paid,
            Kind::Expired => Status::Expired,
            Kind::Cancelled => Status::Cancelled,
        }
    }
}

/// One line of an order document.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct LineDoc {
    pub sku: String,
    pub qty: i64,
    pub unit_price: i64,
    pub currency: String,
}

/// The order document as the stream carries it. Unknown fields are ignored and `pay_by` may be
/// absent (entries written before it existed), unlike [`crate::order::Order`].
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct OrderDoc {
    pub id: String,
    pub event: String,
    pub user: String,
    pub lines: Vec<LineDoc>,
    pub created_at: String,
    pub idempotency_key: String,
    #[serde(default)]
    pub pay_by: Option<String>,
}

/// One order change: what a stream entry records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub kind: Kind,
    pub order: OrderDoc,
    /// The `order` field as it came, kept for the quarantine.
    pub order_json: String,
    /// When the change happened at the origin (Unix ms).
    pub at_ms: i64,
}

/// Why an entry cannot be applied. Such an entry is retried, then dead-lettered.
#[derive(Debug)]
pub enum ParseError {
    MissingField(&'static str),
    UnknownType(String),
    BadAt(String),
    BadOrder(serde_json::Error),
    WrongEvent { stream: String, order: String },
    BadOrderId(String),
    NoLines,
    BadQty { sku: String, qty: i64 },
    RepeatedSku(String),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::MissingField(name) => write!(f, "the entry has no `{name}` field"),
            ParseError::UnknownType(t) => write!(
                f,
                "`type` is {t:?}, not one of \"placed\", \"paid\", \"expired\", \"cancelled\""
            ),
            ParseError::BadAt(at) => write!(f, "`at` is {at:?}, not Unix milliseconds"),
            ParseError::BadOrder(e) => write!(f, "`order` is not an order document: {e}"),
            ParseError::WrongEvent { stream, order } => write!(
                f,
                "the order belongs to event {order:?} but came on the stream of event {stream:?}"
            ),
            ParseError::BadOrderId(id) => write!(f, "the order id {id:?} is empty or too long"),
            ParseError::NoLines => write!(f, "the order has no lines"),
            ParseError::BadQty { sku, qty } => write!(f, "line {sku:?} has quantity {qty}"),
            ParseError::RepeatedSku(sku) => write!(f, "sku {sku:?} appears on two lines"),
        }
    }
}

impl std::error::Error for ParseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ParseError::BadOrder(e) => Some(e),
            _ => None,
        }
    }
}

fn field<'a>(fields: &'a [(String, String)], name: &'static str) -> Result<&'a str, ParseError> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .ok_or(ParseError::MissingField(name))
}

/// Parses the fields of an entry read from the stream of `event`. Extra fields are ignored.
/// A `placed` entry may have no `at` (purchase.lua v5 leaves it out): it happened at its
/// order's `created_at`.
pub fn parse_change(event: &str, fields: &[(String, String)]) -> Result<Change, ParseError> {
    let kind = field(fields, "type")?;
    let kind = Kind::parse(kind).ok_or_else(|| ParseError::UnknownType(kind.to_string()))?;
    let at_ms = match field(fields, "at") {
        Ok(at) => Some(
            at.parse::<i64>()
                .map_err(|_| ParseError::BadAt(at.to_string()))?,
        ),
        Err(_) if kind == Kind::Placed => None,
        Err(e) => return Err(e),
    };
    let order_json = field(fields, "order")?;
    let order: OrderDoc = serde_json::from_str(order_json).map_err(ParseError::BadOrder)?;
    if order.event != event {
        return Err(ParseError::WrongEvent {
            stream: event.to_string(),
            order: order.event,
        });
    }
    if order.id.is_empty() || order.id.len() > 128 {
        return Err(ParseError::BadOrderId(order.id));
    }
    if order.lines.is_empty() {
        return Err(ParseError::NoLines);
    }
    for (i, l) in order.lines.iter().enumerate() {
        if l.qty < 1 {
            return Err(ParseError::BadQty {
                sku: l.sku.clone(),
                qty: l.qty,
            });
        }
        if order.lines[..i].iter().any(|o| o.sku == l.sku) {
            return Err(ParseError::RepeatedSku(l.sku.clone()));
        }
    }
    let at_ms = at_ms.unwrap_or_else(|| parse_rfc3339_ms(&order.created_at).unwrap_or(0));
    Ok(Change {
        kind,
        order,
        order_json: order_json.to_string(),
        at_ms,
    })
}

/// Why a change needs no write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// The order already has the status the change asks for.
    Duplicate,
    /// The order has moved past it (e.g. `placed` after `paid`, `paid` after `expired`).
    Stale,
}

/// What applying a change does, given the order's stored status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// The order is not stored yet: insert it in `status`, reserving its units if `reserve`.
    Insert {
        status: Status,
        reserve: bool,
    },
    /// Move a pending order to `to`, releasing its units if `release`.
    Transition {
        to: Status,
        release: bool,
    },
    Nothing(Skip),
}

/// The state machine: pending → paid | expired | cancelled, never back.
pub fn decide(current: Option<Status>, target: Status) -> Effect {
    match current {
        None => Effect::Insert {
            status: target,
            reserve: target.holds_stock(),
        },
        Some(cur) if cur == target => Effect::Nothing(Skip::Duplicate),
        Some(Status::Pending) => Effect::Transition {
            to: target,
            release: !target.holds_stock(),
        },
        Some(_) => Effect::Nothing(Skip::Stale),
    }
}

/// A guarded inventory update that changed no row: applying the order would break
/// `0 <= sold <= stock`, or its sku is not on sale. The order goes to the quarantine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuardTrip {
    UnknownSku {
        sku: String,
    },
    OverStock {
        sku: String,
        stock: i64,
        sold: i64,
        qty: i64,
    },
    UnderSold {
        sku: String,
        sold: i64,
        qty: i64,
    },
}

impl GuardTrip {
    /// The sku whose stock a reservation found short. Only such a trip can be a matter of
    /// arrival order (an expiry not yet applied, see [`super::store`]); the others are
    /// disagreements whatever arrives later.
    pub fn short_of(&self) -> Option<&str> {
        match self {
            GuardTrip::OverStock { sku, .. } => Some(sku),
            _ => None,
        }
    }

    /// Names the trip from the inventory row as it stands (`None`: no such row). `reserving` is
    /// whether the update added units (else it released them).
    pub fn explain(sku: &str, qty: i64, row: Option<(i64, i64)>, reserving: bool) -> GuardTrip {
        let sku = sku.to_string();
        match row {
            None => GuardTrip::UnknownSku { sku },
            Some((stock, sold)) if reserving => GuardTrip::OverStock {
                sku,
                stock,
                sold,
                qty,
            },
            Some((_, sold)) => GuardTrip::UnderSold { sku, sold, qty },
        }
    }
}

impl fmt::Display for GuardTrip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuardTrip::UnknownSku { sku } => {
                write!(f, "sku {sku:?} is not in the event's inventory")
            }
            GuardTrip::OverStock {
                sku,
                stock,
                sold,
                qty,
            } => write!(
                f,
                "sku {sku:?}: {sold} sold + {qty} would exceed the stock of {stock}"
            ),
            GuardTrip::UnderSold { sku, sold, qty } => write!(
                f,
                "sku {sku:?}: releasing {qty} units would take sold ({sold}) below zero"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDER: &str = r#"{"id":"o_0123456789abcdef01234567","event":"E","user":"u1","lines":[{"sku":"A","qty":1,"unit_price":1999,"currency":"USD"}],"created_at":"2026-11-21T12:00:00.000Z","idempotency_key":"k123","pay_by":"2026-11-21T12:15:00.000Z"}"#;

    fn fields(kind: &str, order: &str, at: &str) -> Vec<(String, String)> {
        [("type", kind), ("order", order), ("at", at)]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn stream_ids() {
        let id = StreamId::parse("1700000000000-7").unwrap();
        assert_eq!(id.to_string(), "1700000000000-7");
        assert_eq!(id.successor().to_string(), "1700000000000-8");
        let last = StreamId {
            ms: 5,
            seq: u64::MAX,
        };
        assert_eq!(last.successor(), StreamId { ms: 6, seq: 0 });
        assert!(StreamId::parse("5-1") < StreamId::parse("5-10"));
        assert!(StreamId::parse("9-0") < StreamId::parse("10-0"));
        for bad in ["", "5", "5-", "-1", "a-1", "5-1-2"] {
            assert_eq!(StreamId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn trims_only_below_what_was_delivered_and_is_not_pending() {
        let id = |s| StreamId::parse(s).unwrap();
        // Nothing pending: everything delivered may go.
        assert_eq!(trim_floor(id("9-3"), None), id("9-4"));
        // A pending entry keeps itself and everything after it.
        assert_eq!(trim_floor(id("9-3"), Some(id("4-0"))), id("4-0"));
        // Never past the last delivered entry.
        assert_eq!(trim_floor(id("9-3"), Some(id("12-0"))), id("9-4"));
        // Nothing delivered yet: nothing goes.
        assert_eq!(trim_floor(StreamId::ZERO, None), id("0-1"));
    }

    #[test]
    fn parses_entries_tolerantly() {
        let c = parse_change("E", &fields("placed", ORDER, "1763726400000")).unwrap();
        assert_eq!(c.kind, Kind::Placed);
        assert_eq!(c.at_ms, 1_763_726_400_000);
        assert_eq!(c.order.id, "o_0123456789abcdef01234567");
        assert_eq!(c.order.lines[0].unit_price, 1999);
        assert_eq!(c.order.pay_by.as_deref(), Some("2026-11-21T12:15:00.000Z"));
        assert_eq!(c.order_json, ORDER);
        // An old entry without pay_by, with a field added later, and extra entry fields.
        let old = ORDER
            .replace(r#","pay_by":"2026-11-21T12:15:00.000Z""#, "")
            .replace(r#""user":"u1""#, r#""user":"u1","channel":"web""#);
        let mut f = fields("expired", &old, "1");
        f.push(("note".into(), "x".into()));
        let c = parse_change("E", &f).unwrap();
        assert_eq!((c.kind, c.order.pay_by), (Kind::Expired, None));
        // purchase.lua v5's placed entry: no `at`, so the order's created_at.
        let v5 = vec![
            ("type".to_string(), "placed".to_string()),
            ("order".to_string(), ORDER.to_string()),
        ];
        let c = parse_change("E", &v5).unwrap();
        assert_eq!(
            c.at_ms,
            parse_rfc3339_ms("2026-11-21T12:00:00.000Z").unwrap()
        );
    }

    #[test]
    fn refuses_malformed_entries() {
        let err = |f: Vec<(String, String)>| parse_change("E", &f).unwrap_err().to_string();
        assert!(err(fields("placed", "{not json", "1")).contains("`order` is not an order"));
        assert!(err(fields("refunded", ORDER, "1")).contains("\"refunded\""));
        assert!(err(fields("paid", ORDER, "yesterday")).contains("`at`"));
        assert!(err(vec![("type".into(), "paid".into())]).contains("no `at` field"));
        assert!(parse_change("F", &fields("paid", ORDER, "1"))
            .unwrap_err()
            .to_string()
            .contains("event \"E\""));
        let no_lines = ORDER.replace(
            r#"{"sku":"A","qty":1,"unit_price":1999,"currency":"USD"}"#,
            "",
        );
        assert!(err(fields("placed", &no_lines, "1")).contains("no lines"));
        let zero = ORDER.replace(r#""qty":1"#, r#""qty":0"#);
        assert!(err(fields("placed", &zero, "1")).contains("quantity 0"));
        let line = r#"{"sku":"A","qty":1,"unit_price":1999,"currency":"USD"}"#;
        let twice = ORDER.replace(line, &format!("{line},{line}"));
        assert!(err(fields("placed", &twice, "1")).contains("two lines"));
        let e = parse_change("E", &fields("placed", "[]", "1")).unwrap_err();
        assert!(std::error::Error::source(&e).is_some(), "keeps its cause");
    }

    #[test]
    fn the_state_machine_never_goes_back() {
        use Effect::*;
        use Status::*;
        let cases = [
            (
                None,
                Pending,
                Insert {
                    status: Pending,
                    reserve: true,
                },
            ),
            (
                None,
                Paid,
                Insert {
                    status: Paid,
                    reserve: true,
                },
            ),
            (
                None,
                Expired,
                Insert {
                    status: Expired,
                    reserve: false,
                },
            ),
            (Some(Pending), Pending, Nothing(Skip::Duplicate)),
            (
                Some(Pending),
                Paid,
                Transition {
                    to: Paid,
                    release: false,
                },
            ),
            (
                Some(Pending),
                Expired,
                Transition {
                    to: Expired,
                    release: true,
                },
            ),
            (Some(Paid), Pending, Nothing(Skip::Stale)),
            (Some(Paid), Paid, Nothing(Skip::Duplicate)),
            (Some(Paid), Expired, Nothing(Skip::Stale)),
            (Some(Expired), Pending, Nothing(Skip::Stale)),
            (Some(Expired), Paid, Nothing(Skip::Stale)),
            (Some(Expired), Expired, Nothing(Skip::Duplicate)),
        ];
        for (cur, target, want) in cases {
            assert_eq!(decide(cur, target), want, "{cur:?} + {target:?}");
        }
    }

    /// Every order of changes of one order ends in the same stored status and the same units
    /// held: the first of paid/expired/cancelled to arrive wins, whatever comes around it.
    #[test]
    fn any_arrival_order_gives_the_same_end() {
        fn run(kinds: &[Kind]) -> (Option<Status>, i64) {
            let (mut status, mut held) = (None, 0);
            for k in kinds {
                match decide(status, k.target()) {
                    Effect::Insert { status: s, reserve } => {
                        status = Some(s);
                        held += i64::from(reserve);
                    }
                    Effect::Transition { to, release } => {
                        status = Some(to);
                        held -= i64::from(release);
                    }
                    Effect::Nothing(_) => {}
                }
            }
            (status, held)
        }
        use Kind::*;
        for (end, want) in [
            (Paid, (Some(Status::Paid), 1)),
            (Expired, (Some(Status::Expired), 0)),
            (Cancelled, (Some(Status::Cancelled), 0)),
        ] {
            for seq in [
                vec![Placed, end],
                vec![end, Placed],
                vec![Placed, Placed, end, end],
                vec![end, Placed, end, Placed],
            ] {
                assert_eq!(run(&seq), want, "{seq:?}");
            }
        }
        assert_eq!(run(&[Placed, Placed]), (Some(Status::Pending), 1));
    }

    #[test]
    fn guard_trips_say_what_tripped() {
        let t = GuardTrip::explain("A", 2, Some((10, 9)), true);
        assert_eq!(
            t.to_string(),
            "sku \"A\": 9 sold + 2 would exceed the stock of 10"
        );
        assert_eq!(
            GuardTrip::explain("Z", 1, None, true).to_string(),
            "sku \"Z\" is not in the event's inventory"
        );
        assert!(matches!(
            GuardTrip::explain("A", 3, Some((10, 1)), false),
            GuardTrip::UnderSold {
                sold: 1,
                qty: 3,
                ..
            }
        ));
    }
}
