//! Order payment and expiry, decided at the origin by settle.lua.
//!
//! An order is found by its id through the event's order index (`o:<order id>` in the sold
//! hash), which names its user and Idempotency-Key; settle.lua checks the index again inside
//! its atomic step. The expiry sweep reads the event's pending set in deadline order and
//! expires what is due, a bounded batch at a time.

use crate::keys::EventKeys;
use crate::origin::{Cmd, Origin};
use crate::script::{parse_order_index, parse_settled, SettleCall, SettleVerb, Settled, SETTLE};

/// Pays for (or expires) one order by id.
pub async fn settle<O: Origin>(
    o: &O,
    event: &str,
    order_id: &str,
    verb: SettleVerb,
    now_ms: i64,
) -> Result<Settled, String> {
    let keys = EventKeys::new(event);
    let index = o
        .call(&Cmd::new(["HGET", &keys.sold, &format!("o:{order_id}")]))
        .await
        .map_err(|e| e.to_string())?;
    let Some((user, key)) = index.as_str().and_then(parse_order_index) else {
        return Ok(Settled::NoSuchOrder);
    };
    let call = SettleCall {
        keys: &keys,
        verb,
        order_id,
        user,
        idempotency_key: key,
        now_ms,
    };
    let (k, a) = call.keys_and_args();
    let v = SETTLE.eval(o, &k, &a).await.map_err(|e| e.to_string())?;
    parse_settled(&v).map_err(|e| e.to_string())
}

/// What one sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Orders this sweep expired.
    pub expired: usize,
    /// Units they gave back.
    pub units: u64,
}

/// Expires up to `limit` orders of `event` whose deadline is at or before `now_ms`. An order
/// paid meanwhile is left alone (settle.lua decides).
pub async fn expire_due<O: Origin>(
    o: &O,
    event: &str,
    now_ms: i64,
    limit: usize,
) -> Result<Swept, String> {
    let pending = EventKeys::new(event).pending;
    let due = o
        .call(&Cmd::new([
            "ZRANGEBYSCORE",
            &pending,
            "-inf",
            &now_ms.to_string(),
            "LIMIT",
            "0",
            &limit.max(1).to_string(),
        ]))
        .await
        .map_err(|e| e.to_string())?;
    let mut swept = Swept::default();
    for id in due
        .as_array()
        .unwrap_or(&[])
        .iter()
        .filter_map(|v| v.as_str())
    {
        if let Settled::Done { units } = settle(o, event, id, SettleVerb::Expire, now_ms).await? {
            swept.expired += 1;
            swept.units += u64::from(units);
        }
    }
    Ok(swept)
}
