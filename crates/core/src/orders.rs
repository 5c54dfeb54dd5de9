//! Order tracking, payment and expiry, decided at the origin by track.lua and settle.lua.
//!
//! purchase.lua records a placed order in the user's hash and the stream only. [`track`]
//! reads the stream from where tracking last stopped (`n:tracked`) and has track.lua record
//! each placed order in the event's order index (`o:<order id>` in the orders hash, naming
//! its user and Idempotency-Key) and, while it is pending, in the pending set. Tracking is
//! idempotent; the order writer tracks before it acknowledges any entry, and payment and the
//! expiry sweep track first, so every placed order can be paid or expired, whether or not a
//! writer runs. settle.lua checks the index again inside its atomic step. The expiry sweep
//! reads the pending set in deadline order and expires what is due, a bounded batch at a time.

use crate::change::{parse_change, Kind, StreamId};
use crate::keys::EventKeys;
use crate::model::parse_rfc3339_ms;
use crate::origin::{Cmd, Origin, OriginError};
use crate::script::{
    parse_order_index, parse_settled, track_call, Placed, SettleCall, SettleVerb, Settled, SETTLE,
    TRACK,
};
use crate::stream::parse_entries;

/// Stream entries read per track.lua call.
const TRACK_PAGE: usize = 200;

/// Tracks every placed order the stream of `event` holds past the tracked mark; answers how
/// many. An entry that is not a placed order, or cannot be read, is passed over (the order
/// writer dead-letters what it cannot read).
pub async fn track<O: Origin>(o: &O, event: &str) -> Result<usize, OriginError> {
    track_upto(o, event, None).await
}

/// [`track`], but only as far as entry `upto` when given (the order writer tracks the batch
/// it is about to acknowledge, not the stream's whole backlog).
pub async fn track_upto<O: Origin>(
    o: &O,
    event: &str,
    upto: Option<StreamId>,
) -> Result<usize, OriginError> {
    let k = EventKeys::new(event);
    let end = upto.map_or_else(|| "+".to_string(), |id| id.to_string());
    let mut tracked = 0;
    loop {
        let mark = o.call(&Cmd::new(["HGET", &k.orders, "n:tracked"])).await?;
        let from = mark
            .as_str()
            .and_then(StreamId::parse)
            .map_or(StreamId::ZERO, StreamId::successor);
        let page = TRACK_PAGE.to_string();
        let v = o
            .call(&Cmd::new([
                "XRANGE",
                &k.stream,
                &from.to_string(),
                &end,
                "COUNT",
                &page,
            ]))
            .await?;
        let entries = parse_entries(&v).ok_or_else(|| {
            OriginError::may_have_run(format!("XRANGE gave an unexpected reply: {v:?}"))
        })?;
        let Some(last) = entries.last() else {
            return Ok(tracked);
        };
        let placed: Vec<Placed> = entries
            .iter()
            .filter_map(|d| {
                let c = parse_change(event, d.fields.as_deref()?).ok()?;
                (c.kind == Kind::Placed).then(|| Placed {
                    created_ms: parse_rfc3339_ms(&c.order.created_at).unwrap_or(c.at_ms),
                    order_id: c.order.id,
                    user: c.order.user,
                    idempotency_key: c.order.idempotency_key,
                })
            })
            .collect();
        let (keys, args) = track_call(&k, &last.id.to_string(), &placed);
        TRACK.eval(o, &keys, &args).await?;
        tracked += placed.len();
        if entries.len() < TRACK_PAGE {
            return Ok(tracked);
        }
    }
}

/// Pays for (or expires) one order by id.
pub async fn settle<O: Origin>(
    o: &O,
    event: &str,
    order_id: &str,
    verb: SettleVerb,
    now_ms: i64,
) -> Result<Settled, String> {
    let keys = EventKeys::new(event);
    let field = format!("o:{order_id}");
    let mut index = o
        .call(&Cmd::new(["HGET", &keys.orders, &field]))
        .await
        .map_err(|e| e.to_string())?;
    if index.as_str().is_none() {
        // Placed but not yet tracked, perhaps.
        track(o, event).await.map_err(|e| e.to_string())?;
        index = o
            .call(&Cmd::new(["HGET", &keys.orders, &field]))
            .await
            .map_err(|e| e.to_string())?;
    }
    let Some(owner) = index.as_str().and_then(parse_order_index) else {
        return Ok(Settled::NoSuchOrder);
    };
    let call = SettleCall {
        keys: &keys,
        verb,
        order_id,
        owner,
        now_ms,
    };
    let (k, a) = call.keys_and_args();
    let (v, acked) = SETTLE
        .eval_acked(o, &k, &a)
        .await
        .map_err(|e| e.to_string())?;
    let settled = parse_settled(&v).map_err(|e| e.to_string())?;
    // A payment, expiry or cancel is done only once enough replicas hold it; so is the
    // answer that it already happened (a retry after an unconfirmed change reads it from the
    // primary, which may not have replicated it yet).
    let reports_a_change = matches!(
        settled,
        Settled::Done { .. }
            | Settled::AlreadyPaid
            | Settled::AlreadyExpired
            | Settled::AlreadyCancelled
    );
    if let (true, Some((acks, n))) = (reports_a_change, acked) {
        acks.check(&format!("settling order {order_id}"), n)
            .map_err(|e| format!("{e}; run it again: it is idempotent"))?;
    }
    Ok(settled)
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
    track(o, event).await.map_err(|e| e.to_string())?;
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
