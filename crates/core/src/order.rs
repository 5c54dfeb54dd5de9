//! Purchase requests: strict parsing and validation, and the order document.
//!
//! Invariants:
//! - A request that passes [`parse_order`] has 1..=[`MAX_LINES`] lines, distinct valid skus and
//!   quantities in 1..=[`MAX_QTY`]; unknown JSON fields are refused.
//! - The fingerprint is a canonical form of the lines (sorted by sku), so the same intent sent
//!   twice with lines in another order is the same request for idempotency.
//! - The order id is derived from (event, user, idempotency key): a retry names the same order.

use crate::error::{ApiError, Code};
use crate::model::{format_ms, valid_id};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One order line: a sku and how many units of it, as the order and purchase.lua carry it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub sku: String,
    pub qty: u32,
}

pub const MAX_LINES: usize = 10;
pub const MAX_QTY: u32 = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    items: Vec<BodyLine>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BodyLine {
    sku: String,
    qty: u32,
}

/// Parses and checks a purchase body.
pub fn parse_order(body: &[u8]) -> Result<Vec<Line>, ApiError> {
    let parsed: Body = serde_json::from_slice(body).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => ApiError::new(
                Code::InvalidJson,
                format!("the body is not valid JSON: {e}"),
            ),
            Category::Data => ApiError::new(
                Code::InvalidRequest,
                format!(
                    "the body does not match {{\"items\":[{{\"sku\":\"...\",\"qty\":1}}]}}: {e}"
                ),
            ),
        }
    })?;
    if parsed.items.is_empty() || parsed.items.len() > MAX_LINES {
        return Err(ApiError::new(
            Code::InvalidRequest,
            format!("an order has 1 to {MAX_LINES} items"),
        ));
    }
    let mut lines: Vec<Line> = Vec::with_capacity(parsed.items.len());
    for l in parsed.items {
        if !valid_id(&l.sku) {
            return Err(ApiError::invalid_id("sku"));
        }
        if l.qty == 0 || l.qty > MAX_QTY {
            return Err(
                ApiError::new(Code::InvalidRequest, format!("qty must be 1 to {MAX_QTY}"))
                    .with("sku", l.sku),
            );
        }
        if lines.iter().any(|x| x.sku == l.sku) {
            return Err(
                ApiError::new(Code::InvalidRequest, "each sku may appear once per order")
                    .with("sku", l.sku),
            );
        }
        lines.push(Line {
            sku: l.sku,
            qty: l.qty,
        });
    }
    Ok(lines)
}

/// `Idempotency-Key`: 8 to 64 characters of `[A-Za-z0-9_-]`.
pub fn check_idempotency_key(key: Option<&str>) -> Result<&str, ApiError> {
    match key {
        None => Err(ApiError::new(
            Code::InvalidRequest,
            "the Idempotency-Key header is required",
        )),
        Some(k)
            if (8..=64).contains(&k.len())
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            Ok(k)
        }
        Some(_) => Err(ApiError::new(
            Code::InvalidRequest,
            "Idempotency-Key must be 8 to 64 characters of A-Z a-z 0-9 _ -",
        )),
    }
}

/// The canonical form of the lines, e.g. `A:1,B:2`.
pub fn fingerprint(lines: &[Line]) -> String {
    let mut v: Vec<_> = lines.iter().map(|l| (l.sku.as_str(), l.qty)).collect();
    v.sort_unstable();
    v.iter()
        .map(|(s, q)| format!("{s}:{q}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// `o_` and 24 hex characters of SHA-256(event, user, key).
pub fn order_id(event: &str, user: &str, key: &str) -> String {
    let h = Sha256::new()
        .chain_update(event)
        .chain_update([0])
        .chain_update(user)
        .chain_update([0])
        .chain_update(key)
        .finalize();
    let hex: String = h.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("o_{hex}")
}

/// A line of a placed order, with the price it was sold at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub sku: String,
    pub qty: u32,
    pub unit_price: i64,
    pub currency: String,
}

/// The order document: what the API returns and what the queue holds for the order writer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    pub event: String,
    pub user: String,
    pub lines: Vec<OrderLine>,
    pub created_at: String,
    pub idempotency_key: String,
    /// When the order expires unless paid (RFC 3339).
    pub pay_by: String,
}

impl Order {
    pub fn new(
        event: &str,
        user: &str,
        key: &str,
        lines: Vec<OrderLine>,
        now_ms: i64,
        pay_by_ms: i64,
    ) -> Order {
        Order {
            id: order_id(event, user, key),
            event: event.to_string(),
            user: user.to_string(),
            lines,
            created_at: format_ms(now_ms),
            idempotency_key: key.to_string(),
            pay_by: format_ms(pay_by_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(body: &str) -> Option<Code> {
        parse_order(body.as_bytes()).err().map(|e| e.code)
    }

    #[test]
    fn accepts_good_orders() {
        let l = parse_order(br#"{"items":[{"sku":"B","qty":2},{"sku":"A","qty":1}]}"#).unwrap();
        assert_eq!(fingerprint(&l), "A:1,B:2");
    }

    #[test]
    fn refuses_bad_orders() {
        use Code::*;
        let cases = [
            ("", Some(InvalidJson)),
            ("{", Some(InvalidJson)),
            ("[]", Some(InvalidRequest)),
            (r#"{"items":[]}"#, Some(InvalidRequest)),
            (r#"{"items":[{"sku":"A","qty":0}]}"#, Some(InvalidRequest)),
            (r#"{"items":[{"sku":"A","qty":-1}]}"#, Some(InvalidRequest)),
            (r#"{"items":[{"sku":"A","qty":1.5}]}"#, Some(InvalidRequest)),
            (r#"{"items":[{"sku":"A","qty":"1"}]}"#, Some(InvalidRequest)),
            (
                r#"{"items":[{"sku":"A","qty":1001}]}"#,
                Some(InvalidRequest),
            ),
            (r#"{"items":[{"sku":"A b","qty":1}]}"#, Some(InvalidRequest)),
            (
                r#"{"items":[{"sku":"A","qty":1,"price":0}]}"#,
                Some(InvalidRequest),
            ),
            (
                r#"{"items":[{"sku":"A","qty":1}],"coupon":"x"}"#,
                Some(InvalidRequest),
            ),
            (
                r#"{"items":[{"sku":"A","qty":1},{"sku":"A","qty":1}]}"#,
                Some(InvalidRequest),
            ),
            (r#"{"items":[{"sku":"A","qty":1}]}"#, None),
        ];
        for (body, want) in cases {
            assert_eq!(code(body), want, "{body}");
        }
        let eleven = format!(
            r#"{{"items":[{}]}}"#,
            (0..11)
                .map(|i| format!(r#"{{"sku":"S{i}","qty":1}}"#))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(code(&eleven), Some(InvalidRequest));
    }

    #[test]
    fn idempotency_keys() {
        assert!(check_idempotency_key(Some("abcd-123")).is_ok());
        assert!(check_idempotency_key(Some(&"k".repeat(64))).is_ok());
        for bad in [
            None,
            Some("short"),
            Some("has space1"),
            Some(&*"k".repeat(65)),
        ] {
            assert!(check_idempotency_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn golden_order_document() {
        let o = Order::new(
            "demo",
            "alice",
            "key-0001",
            vec![OrderLine {
                sku: "A".into(),
                qty: 1,
                unit_price: 1999,
                currency: "USD".into(),
            }],
            1_800_000_000_000,
            1_800_000_900_000,
        );
        assert_eq!(o.id, order_id("demo", "alice", "key-0001"));
        assert_ne!(o.id, order_id("demo", "alice", "key-0002"));
        assert_eq!(o.id.len(), 26);
        let json = serde_json::to_string(&o).unwrap();
        assert_eq!(
            json,
            format!(
                r#"{{"id":"{}","event":"demo","user":"alice","lines":[{{"sku":"A","qty":1,"unit_price":1999,"currency":"USD"}}],"created_at":"2027-01-15T08:00:00.000Z","idempotency_key":"key-0001","pay_by":"2027-01-15T08:15:00.000Z"}}"#,
                o.id
            )
        );
    }
}
