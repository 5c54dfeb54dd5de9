//! The shop's payment API: `POST /api/events/{event}/orders/{id}/pay` and `…/cancel`, signed
//! with `SHOP_API_TOKEN` ([`crate::shop`]), the way a payment provider's webhook reaches the
//! shop and the shop tells flashgate.
//!
//! Steps, cheapest first: ids → the shop API is on → the signature (no origin command:
//! missing, wrong, stale or replayed credentials are refused with 401 here) → settle.lua,
//! where pay, cancel and expiry of one order race safely: exactly one wins.
//!
//! Both verbs are idempotent: paying a paid order answers 200 with `changed: false`, and so
//! does cancelling a cancelled one; cancelling an expired order says it expired (its units
//! were already back). Paying an order that expired or was cancelled is refused (410), and so
//! is cancelling a paid one (409): refunds are the shop's.

use super::{ApiRequest, Gate};
use crate::error::{ApiError, ApiReply, Code};
use crate::model::valid_id;
use crate::orders::settle;
use crate::origin::Origin;
use crate::script::{SettleVerb, Settled};
use crate::shop::{self, SigError, TOLERANCE_SECS};
use serde::Serialize;

/// The answer to a pay or cancel that the origin decided.
#[derive(Serialize, Debug, PartialEq)]
pub struct SettledBody<'a> {
    pub order: &'a str,
    /// The order's state now: `paid`, `cancelled` or `expired`.
    pub state: &'static str,
    /// Whether this request changed it (false: it already was).
    pub changed: bool,
}

/// Refuses unless the request is signed with the shop's key and not seen before here.
fn signed(gate: &Gate, req: &ApiRequest<'_>, now: i64) -> Result<(), ApiError> {
    let Some(secret) = &gate.config.shop_api_token else {
        return Err(ApiError::new(
            Code::Forbidden,
            "the shop API is off: set the SHOP_API_TOKEN secret",
        ));
    };
    let unauthenticated = |e: SigError| ApiError::unauthenticated(e.message());
    let s = shop::verify(secret, req.signature, req.method, req.path, req.body, now)
        .map_err(unauthenticated)?;
    let mut seen = gate.shop_seen.borrow_mut();
    // Signatures past the tolerance are refused as stale anyway: those may be forgotten.
    let horizon = now.div_euclid(1000) - TOLERANCE_SECS;
    seen.make_room(&s.mac, |&t| t < horizon);
    if seen.get(&s.mac).is_some() {
        return Err(unauthenticated(SigError::Replayed));
    }
    seen.insert(s.mac, s.t);
    Ok(())
}

/// The answer to what settle.lua decided for `verb`.
fn answer(order: &str, verb: SettleVerb, settled: Settled) -> Result<ApiReply, ApiError> {
    let ok = |state, changed| {
        Ok(ApiReply::json(
            200,
            &SettledBody {
                order,
                state,
                changed,
            },
        ))
    };
    let gone = |code, why: &str| {
        Err(ApiError::new(code, format!("order {order} {why}")).with("order", order))
    };
    match (verb, settled) {
        (SettleVerb::Pay, Settled::Done { .. }) => ok("paid", true),
        (SettleVerb::Pay, Settled::AlreadyPaid) => ok("paid", false),
        (SettleVerb::Pay, Settled::AlreadyExpired) => gone(
            Code::OrderExpired,
            "expired before it was paid; its units went back on sale",
        ),
        (SettleVerb::Pay, Settled::AlreadyCancelled) => gone(
            Code::OrderCancelled,
            "was cancelled before it was paid; its units went back on sale",
        ),
        (SettleVerb::Cancel, Settled::Done { .. }) => ok("cancelled", true),
        (SettleVerb::Cancel, Settled::AlreadyCancelled) => ok("cancelled", false),
        (SettleVerb::Cancel, Settled::AlreadyExpired) => ok("expired", false),
        (SettleVerb::Cancel, Settled::AlreadyPaid) => gone(
            Code::OrderPaid,
            "is paid and cannot be cancelled; refund it in the shop",
        ),
        (_, Settled::NoSuchOrder | Settled::NotDue { .. }) | (SettleVerb::Expire, _) => {
            gone(Code::UnknownOrder, "is not an order of this sale")
        }
    }
}

pub(super) async fn handle_settle<O: Origin>(
    gate: &Gate,
    origin: &O,
    (event, order, verb): (&str, &str, SettleVerb),
    req: &ApiRequest<'_>,
    now: i64,
) -> Result<ApiReply, ApiError> {
    if !valid_id(event) {
        return Err(ApiError::invalid_id("event id"));
    }
    if !valid_id(order) {
        return Err(ApiError::invalid_id("order id"));
    }
    signed(gate, req, now)?;
    // An origin error, or too few replicas: the change may or may not have happened, and
    // both verbs are idempotent, so a retry (signed afresh) is safe.
    let settled = settle(origin, event, order, verb, now)
        .await
        .map_err(|_| ApiError::origin_unavailable())?;
    answer(order, verb, settled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::gate::{Handled, NoLimiter};
    use crate::origin::fake::FakeOrigin;
    use futures_util::FutureExt;
    use std::collections::HashMap;

    const SHOP: &str = "shop-secret-0123456789";
    const NOW: i64 = 1_800_000_000_000;

    fn gate(shop: Option<&str>) -> Gate {
        let mut m: HashMap<&str, String> = HashMap::new();
        m.insert("ORIGIN_URL", "redis://127.0.0.1:6379".into());
        m.insert("IDENTITY_SECRET", "0123456789abcdef".into());
        if let Some(s) = shop {
            m.insert("SHOP_API_TOKEN", s.into());
        }
        Gate::new(Config::from_lookup(|k| m.get(k).cloned()).unwrap())
    }

    fn send(g: &Gate, o: &FakeOrigin, path: &str, sig: Option<&str>) -> Handled {
        let req = ApiRequest {
            method: "POST",
            path,
            signature: sig,
            ..ApiRequest::default()
        };
        g.handle(o, &NoLimiter, &req, NOW, &|| NOW)
            .now_or_never()
            .expect("the fake never waits")
    }

    fn code(h: &Handled) -> (u16, String) {
        let v: serde_json::Value = serde_json::from_str(&h.reply.body).unwrap();
        (
            h.reply.status,
            v["error"]["code"].as_str().unwrap_or("").to_string(),
        )
    }

    #[test]
    fn bad_credentials_cost_no_origin_command() {
        let path = "/api/events/launch/orders/o_1/pay";
        let o = FakeOrigin::default();
        let off = send(&gate(None), &o, path, None);
        assert_eq!(code(&off), (403, "forbidden".into()));
        let g = gate(Some(SHOP));
        let sign = |secret: &[u8], t: i64, path: &str| {
            shop::sign(secret, t, "nonce-0001", "POST", path, b"")
        };
        let now_s = NOW / 1000;
        let cancel = path.replace("pay", "cancel");
        for (why, sig) in [
            ("missing", None),
            ("malformed", Some("t=1".to_string())),
            ("another key", Some(sign(b"not-the-shop-key", now_s, path))),
            ("another path", Some(sign(SHOP.as_bytes(), now_s, &cancel))),
            ("stale", Some(sign(SHOP.as_bytes(), now_s - 301, path))),
        ] {
            let h = send(&g, &o, path, sig.as_deref());
            assert_eq!(code(&h), (401, "unauthenticated".into()), "{why}");
        }
        assert_eq!(
            o.log.borrow().len(),
            0,
            "no origin command for a refused credential"
        );
    }

    #[test]
    fn a_signature_is_used_once_per_isolate() {
        let path = "/api/events/launch/orders/o_1/pay";
        let g = gate(Some(SHOP));
        let o = FakeOrigin::default();
        let sig = shop::sign(SHOP.as_bytes(), NOW / 1000, "nonce-0001", "POST", path, b"");
        let first = send(&g, &o, path, Some(&sig));
        assert_ne!(first.reply.status, 401, "{}", first.reply.body);
        let used = o.log.borrow().len();
        let again = send(&g, &o, path, Some(&sig));
        assert_eq!(code(&again), (401, "unauthenticated".into()));
        assert!(again.reply.body.contains("already used"));
        assert_eq!(o.log.borrow().len(), used, "the replay cost nothing");
    }

    #[test]
    fn each_verb_and_state_has_one_answer() {
        use SettleVerb::*;
        let status = |v, s| match answer("o_1", v, s) {
            Ok(r) => (r.status, r.body),
            Err(e) => (e.code.status(), e.code.as_str().to_string()),
        };
        assert_eq!(
            status(Pay, Settled::Done { units: 0 }),
            (
                200,
                r#"{"order":"o_1","state":"paid","changed":true}"#.into()
            )
        );
        assert_eq!(
            status(Pay, Settled::AlreadyPaid).1,
            r#"{"order":"o_1","state":"paid","changed":false}"#
        );
        assert_eq!(
            status(Pay, Settled::AlreadyExpired),
            (410, "order_expired".into())
        );
        assert_eq!(
            status(Pay, Settled::AlreadyCancelled),
            (410, "order_cancelled".into())
        );
        assert_eq!(
            status(Cancel, Settled::Done { units: 2 }).1,
            r#"{"order":"o_1","state":"cancelled","changed":true}"#
        );
        assert_eq!(
            status(Cancel, Settled::AlreadyExpired).1,
            r#"{"order":"o_1","state":"expired","changed":false}"#
        );
        assert_eq!(
            status(Cancel, Settled::AlreadyPaid),
            (409, "order_paid".into())
        );
        assert_eq!(
            status(Cancel, Settled::NoSuchOrder),
            (404, "unknown_order".into())
        );
    }
}
