//! `GET /api/events/{event}/orders`: a signed-in shopper's own orders in one sale, with each
//! order's state and payment deadline, for the page's "Your orders" and for a client whose
//! purchase ended in an unknown outcome (it looks its Idempotency-Key up here).
//!
//! Invariants:
//! - One origin command (HGETALL of the user's hash, where purchase.lua keeps each order's
//!   idempotency record and state), and only the signed-in user's hash: a shopper sees their
//!   own orders only. Answered `Cache-Control: private, no-store`.
//! - The state is the origin's: `pending` until settle.lua ends it (`paid`, `expired` or
//!   `cancelled`). A pending order past its `pay_by` is still pending until the expiry sweep
//!   runs; it can still be paid until then.

use super::{ApiRequest, Gate};
use crate::change::{LineDoc, OrderDoc};
use crate::error::{ApiError, ApiReply, Caching};
use crate::keys::EventKeys;
use crate::model::{format_ms, valid_id};
use crate::origin::{Cmd, Origin, Value};
use crate::shop::checkout_url;
use serde::Serialize;
use std::collections::HashMap;

#[derive(Serialize, Debug, PartialEq)]
pub struct MyOrder {
    pub id: String,
    pub idempotency_key: String,
    pub lines: Vec<LineDoc>,
    pub state: &'static str,
    pub pay_by: Option<String>,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkout_url: Option<String>,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct MyOrdersBody {
    pub orders: Vec<MyOrder>,
    pub server_time: String,
}

/// The state an order's `s:<key>` field records (purchase.lua, settle.lua).
fn state_of(s: Option<&str>) -> &'static str {
    match s {
        Some("p") => "paid",
        Some("x") => "expired",
        Some("c") => "cancelled",
        _ => "pending",
    }
}

/// The user's orders from their hash (HGETALL's flat reply) with their states, newest first.
/// Records that do not read as orders are left out.
pub fn my_orders(flat: &[Value]) -> Vec<(OrderDoc, &'static str)> {
    let fields: HashMap<&str, &str> = flat
        .chunks(2)
        .filter_map(|c| Some((c.first()?.as_str()?, c.get(1)?.as_str()?)))
        .collect();
    let mut orders: Vec<(OrderDoc, &'static str)> = fields
        .iter()
        .filter(|(f, _)| f.starts_with("i:"))
        .filter_map(|(_, doc)| serde_json::from_str::<OrderDoc>(doc).ok())
        .map(|d| {
            let state = state_of(
                fields
                    .get(format!("s:{}", d.idempotency_key).as_str())
                    .copied(),
            );
            (d, state)
        })
        .collect();
    orders.sort_by(|(a, _), (b, _)| (&b.created_at, &b.id).cmp(&(&a.created_at, &a.id)));
    orders
}

pub(super) async fn handle_my_orders<O: Origin>(
    gate: &Gate,
    origin: &O,
    event: &str,
    req: &ApiRequest<'_>,
    now: i64,
) -> Result<ApiReply, ApiError> {
    if !valid_id(event) {
        return Err(ApiError::invalid_id("event id"));
    }
    let id = gate.identity(req, now)?;
    let hash = EventKeys::new(event).user(&id.user);
    let v = origin
        .call(&Cmd::new(["HGETALL", &hash]))
        .await
        .map_err(|_| ApiError::origin_unavailable())?;
    let flat = v.as_array().ok_or_else(ApiError::internal)?;
    let c = &gate.config;
    let orders = my_orders(flat)
        .into_iter()
        .map(|(d, state)| {
            let link = match (&c.checkout_url, &c.shop_api_token, state) {
                (Some(t), key, "pending") => {
                    let secret = key.as_deref().unwrap_or_default();
                    Some(checkout_url(t, secret, event, &d.id, &id.user))
                }
                _ => None,
            };
            MyOrder {
                checkout_url: link,
                id: d.id,
                idempotency_key: d.idempotency_key,
                lines: d.lines,
                state,
                pay_by: d.pay_by,
                created_at: d.created_at,
            }
        })
        .collect();
    let body = MyOrdersBody {
        orders,
        server_time: format_ms(now),
    };
    Ok(ApiReply::json(200, &body).cache(Caching::Private))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_read_from_the_user_hash_newest_first() {
        let doc = |id: &str, key: &str, at: &str| {
            format!(
                r#"{{"id":"{id}","event":"e","user":"ann","lines":[{{"sku":"A","qty":1,"unit_price":5,"currency":"USD"}}],"created_at":"{at}","idempotency_key":"{key}","pay_by":"2027-01-01T00:15:00.000Z"}}"#
            )
        };
        let s = |x: &str| Value::Str(x.into());
        let flat = vec![
            s("t"),
            s("3"),
            s("i:k1"),
            s(&doc("o_1", "k1", "2027-01-01T00:00:01.000Z")),
            s("s:k1"),
            s("p"),
            s("i:k2"),
            s(&doc("o_2", "k2", "2027-01-01T00:00:02.000Z")),
            s("s:k2"),
            s("1798762500000"),
            s("i:k3"),
            s(&doc("o_3", "k3", "2027-01-01T00:00:03.000Z")),
            s("s:k3"),
            s("c"),
            s("i:bad"),
            s("not an order"),
            s("c:k1"),
            s("1 1"),
        ];
        let got: Vec<(String, &str)> = my_orders(&flat)
            .into_iter()
            .map(|(d, st)| (d.id, st))
            .collect();
        assert_eq!(
            got,
            [
                ("o_3".to_string(), "cancelled"),
                ("o_2".to_string(), "pending"),
                ("o_1".to_string(), "paid")
            ]
        );
    }
}
