//! One event's order stream as the `sink` consumer group sees it: create the group, read new
//! entries, claim idle ones, acknowledge, and trim. The reply parsers are plain functions over
//! [`Value`]s.
//!
//! Invariants:
//! - Every command names the stream key as its route, so a cluster sends it to the owner.
//! - `XTRIM MINID` cuts only below [`trim_floor`] of the group's state read in the order that
//!   function requires: nothing that the group has not acknowledged is ever trimmed.

use super::change::{parse_change, trim_floor, StreamId};
use super::error::SinkError;
use flashgate_core::origin::{Cmd, Origin, Value};
use flashgate_core::stream::parse_id;
pub use flashgate_core::stream::{parse_entries, Delivery};
use std::future::Future;

/// The consumer group every sink joins.
pub const GROUP: &str = "sink";

/// The stream of order changes of `event`. (`EventKeys` will carry it; until then, here.)
pub fn stream_key(event: &str) -> String {
    flashgate_core::keys::EventKeys::new(event).stream
}

/// The group's state (XINFO GROUPS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupInfo {
    pub pending: u64,
    pub last_delivered: StreamId,
    /// Entries not yet delivered (Redis 7+; `None` when the server cannot tell).
    pub lag: Option<u64>,
}

fn bad(doing: &str, got: &Value) -> SinkError {
    SinkError::Reply {
        doing: doing.to_string(),
        got: got.clone(),
    }
}

/// XREADGROUP on one stream: nil (nothing new) or `[[key, entries]]`.
pub fn parse_readgroup(v: &Value) -> Option<Vec<Delivery>> {
    match v {
        Value::Nil => Some(Vec::new()),
        Value::Array(streams) if streams.is_empty() => Some(Vec::new()),
        Value::Array(streams) => {
            let [_key, entries] = streams.first()?.as_array()? else {
                return None;
            };
            parse_entries(entries)
        }
        _ => None,
    }
}

/// XAUTOCLAIM: `[next cursor, entries]` (Redis 7 adds a third element, the deleted ids, which
/// it has already dropped from the pending list).
pub fn parse_autoclaim(v: &Value) -> Option<(StreamId, Vec<Delivery>)> {
    let a = v.as_array()?;
    Some((parse_id(a.first()?)?, parse_entries(a.get(1)?)?))
}

/// XPENDING's extended form: `[[id, consumer, idle ms, deliveries], ...]` as id → deliveries.
pub fn parse_pending_counts(v: &Value) -> Option<Vec<(StreamId, u64)>> {
    v.as_array()?
        .iter()
        .map(|row| {
            let [id, _consumer, _idle, n] = row.as_array()? else {
                return None;
            };
            Some((parse_id(id)?, u64::try_from(n.as_int()?).ok()?))
        })
        .collect()
}

/// XPENDING's summary: `[count, lowest id, highest id, [[consumer, count], ...]]`; the ids and
/// the list are nil when nothing is pending. Answers the lowest pending id and the consumers
/// that hold entries.
pub fn parse_pending_summary(v: &Value) -> Option<(Option<StreamId>, Vec<String>)> {
    let a = v.as_array()?;
    let lowest = match a.get(1)? {
        Value::Nil => None,
        id => Some(parse_id(id)?),
    };
    let consumers = match a.get(3)? {
        Value::Nil => Vec::new(),
        Value::Array(c) => c
            .iter()
            .map(|pair| Some(pair.as_array()?.first()?.as_str()?.to_string()))
            .collect::<Option<Vec<_>>>()?,
        _ => return None,
    };
    Some((lowest, consumers))
}

/// XINFO GROUPS: one flat `[name, value, ...]` list per group; answers `group`'s.
pub fn parse_group_info(v: &Value, group: &str) -> Option<GroupInfo> {
    v.as_array()?.iter().find_map(|g| {
        let a = g.as_array()?;
        let get = |name: &str| {
            a.chunks(2)
                .find(|kv| kv.len() == 2 && kv[0].as_str() == Some(name))
                .map(|kv| &kv[1])
        };
        if get("name")?.as_str()? != group {
            return None;
        }
        Some(GroupInfo {
            pending: u64::try_from(get("pending")?.as_int()?).ok()?,
            last_delivered: parse_id(get("last-delivered-id")?)?,
            lag: get("lag")
                .and_then(Value::as_int)
                .and_then(|n| u64::try_from(n).ok()),
        })
    })
}

/// What the consumer group still holds unacknowledged. The store asks it when a reservation's
/// guard finds a sku short (see the store's invariants).
pub trait Backlog {
    /// An entry other than `except`, delivered and not acknowledged, that may give units of
    /// `sku` back; `None` when the group holds no such entry.
    fn release_pending(
        &self,
        except: StreamId,
        sku: &str,
    ) -> impl Future<Output = Result<Option<StreamId>, SinkError>>;
}

/// A backlog that holds nothing: every trip is final (the operator's requeue, and tests of the
/// store alone).
pub struct NoBacklog;

impl Backlog for NoBacklog {
    async fn release_pending(
        &self,
        _except: StreamId,
        _sku: &str,
    ) -> Result<Option<StreamId>, SinkError> {
        Ok(None)
    }
}

/// Pending entries [`EventStream::release_pending`] looks at; past that it cannot tell, and
/// answers the first of them.
const BACKLOG_SCAN: usize = 1000;

/// Of the entries the group holds pending (`pending`, in id order, `except` left out), the
/// first that may give units of `sku` back, given the stream's entries from the first of them
/// to the last (`entries`, as XRANGE answers, at most `scanned` asked for): an `expired` change
/// of an order with a line of `sku`, or one this cannot read (not in `entries` though the scan
/// was cut short).
pub fn first_release(
    event: &str,
    pending: &[StreamId],
    except: StreamId,
    sku: &str,
    entries: &[Delivery],
    scanned: usize,
) -> Option<StreamId> {
    let cut_short = entries.len() >= scanned;
    pending
        .iter()
        .copied()
        .filter(|id| *id != except)
        .find(|id| {
            match entries.iter().find(|d| d.id == *id) {
                // Deleted while pending: nothing to apply, nothing to release.
                Some(Delivery { fields: None, .. }) => false,
                Some(Delivery {
                    fields: Some(f), ..
                }) => parse_change(event, f)
                    .is_ok_and(|c| c.kind.releases() && c.order.lines.iter().any(|l| l.sku == sku)),
                None => cut_short,
            }
        })
}

/// One event's stream, read by one named consumer of [`GROUP`].
pub struct EventStream<'o, O> {
    origin: &'o O,
    pub key: String,
    consumer: String,
    event: String,
}

impl<'o, O: Origin> EventStream<'o, O> {
    pub fn new(origin: &'o O, event: &str, consumer: &str) -> EventStream<'o, O> {
        EventStream {
            origin,
            key: stream_key(event),
            consumer: consumer.to_string(),
            event: event.to_string(),
        }
    }

    async fn call(&self, doing: &str, args: Vec<String>) -> Result<Value, SinkError> {
        self.origin
            .call(&Cmd { args, route: None }.routed(&self.key))
            .await
            .map_err(|source| SinkError::Origin {
                doing: format!("{doing} {}", self.key),
                source,
            })
    }

    /// A command that delivers entries (XREADGROUP, XAUTOCLAIM, XCLAIM). With the origin's
    /// replica acks (`--replica-acks N`) it is followed by WAIT on the same connection (one
    /// round trip): the delivery propagates, so WAIT covers every write before it, the
    /// entries' XADDs included. Entries fewer than N replicas hold are not applied (a failover
    /// could lose them, and the shopper was told 503): the read fails as "may have run", and
    /// the entries, now pending for this consumer, are delivered again by a claim once idle
    /// for `--claim-idle-ms`.
    async fn deliver(
        &self,
        doing: &str,
        args: Vec<String>,
        delivered: impl Fn(&Value) -> bool,
    ) -> Result<Value, SinkError> {
        let Some(acks) = self.origin.replica_acks() else {
            return self.call(doing, args).await;
        };
        let err = |source| SinkError::Origin {
            doing: format!("{doing} {}", self.key),
            source,
        };
        let cmd = Cmd { args, route: None }.routed(&self.key);
        let (v, acked) = self.origin.call_then_wait(&cmd, acks).await.map_err(err)?;
        if delivered(&v) {
            acks.check("the delivery", acked).map_err(err)?;
        }
        Ok(v)
    }

    fn args(&self, parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| s.to_string()).collect()
    }

    /// Creates the group (and the stream) unless it exists; the group starts at the beginning.
    pub async fn ensure_group(&self) -> Result<(), SinkError> {
        let args = self.args(&["XGROUP", "CREATE", &self.key, GROUP, "0", "MKSTREAM"]);
        match self.call("create the consumer group of", args).await {
            Ok(_) => Ok(()),
            Err(SinkError::Origin {
                source: flashgate_core::origin::OriginError::Server(e),
                ..
            }) if e.kind == flashgate_core::origin::ServerErrorKind::Other("BUSYGROUP".into()) => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Up to `count` entries never delivered to the group, waiting up to `block_ms` for one.
    pub async fn read_new(
        &self,
        count: usize,
        block_ms: Option<u64>,
    ) -> Result<Vec<Delivery>, SinkError> {
        let count = count.to_string();
        let mut args = self.args(&[
            "XREADGROUP",
            "GROUP",
            GROUP,
            &self.consumer,
            "COUNT",
            &count,
        ]);
        if let Some(ms) = block_ms {
            args.extend(["BLOCK".to_string(), ms.max(1).to_string()]);
        }
        args.extend(self.args(&["STREAMS", &self.key, ">"]));
        let v = self
            .deliver("read the stream", args, |v| !matches!(v, Value::Nil))
            .await?;
        parse_readgroup(&v).ok_or_else(|| bad("read the stream", &v))
    }

    /// Takes over up to `count` entries idle for `min_idle_ms` or more, from `start` on.
    /// Answers the cursor to continue from (`0-0`: the scan is complete) and the entries.
    pub async fn autoclaim(
        &self,
        min_idle_ms: u64,
        start: StreamId,
        count: usize,
    ) -> Result<(StreamId, Vec<Delivery>), SinkError> {
        let (idle, start, count) = (
            min_idle_ms.to_string(),
            start.to_string(),
            count.to_string(),
        );
        let args = self.args(&[
            "XAUTOCLAIM",
            &self.key,
            GROUP,
            &self.consumer,
            &idle,
            &start,
            "COUNT",
            &count,
        ]);
        let v = self
            .deliver("claim idle entries of", args, |v| {
                parse_autoclaim(v).is_some_and(|(_, ds)| !ds.is_empty())
            })
            .await?;
        let (next, mut ds) = parse_autoclaim(&v).ok_or_else(|| bad("claim idle entries", &v))?;
        self.fill_counts(&mut ds).await?;
        Ok((next, ds))
    }

    /// Takes `ids` back at once (they are this consumer's own), counting a new delivery.
    pub async fn claim(&self, ids: &[StreamId]) -> Result<Vec<Delivery>, SinkError> {
        let mut args = self.args(&["XCLAIM", &self.key, GROUP, &self.consumer, "0"]);
        args.extend(ids.iter().map(StreamId::to_string));
        let v = self
            .deliver("claim entries of", args, |v| {
                v.as_array().is_some_and(|a| !a.is_empty())
            })
            .await?;
        let mut ds = parse_entries(&v).ok_or_else(|| bad("claim entries", &v))?;
        self.fill_counts(&mut ds).await?;
        Ok(ds)
    }

    /// Sets each delivery's count from the pending list (claims do not answer it).
    async fn fill_counts(&self, ds: &mut [Delivery]) -> Result<(), SinkError> {
        let (Some(lo), Some(hi)) = (ds.iter().map(|d| d.id).min(), ds.iter().map(|d| d.id).max())
        else {
            return Ok(());
        };
        let (lo, hi, n) = (lo.to_string(), hi.to_string(), ds.len().to_string());
        let args = self.args(&["XPENDING", &self.key, GROUP, &lo, &hi, &n, &self.consumer]);
        let v = self.call("read the pending entries of", args).await?;
        let counts = parse_pending_counts(&v).ok_or_else(|| bad("read pending entries", &v))?;
        for d in ds.iter_mut() {
            // Claimed by another sink in the meantime: its count is theirs to judge.
            d.deliveries = counts
                .iter()
                .find(|(id, _)| *id == d.id)
                .map_or(1, |(_, n)| *n);
        }
        Ok(())
    }

    pub async fn ack(&self, ids: &[StreamId]) -> Result<(), SinkError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut args = self.args(&["XACK", &self.key, GROUP]);
        args.extend(ids.iter().map(StreamId::to_string));
        self.call("acknowledge entries of", args).await.map(drop)
    }

    pub async fn group(&self) -> Result<GroupInfo, SinkError> {
        let v = self
            .call(
                "read the group of",
                self.args(&["XINFO", "GROUPS", &self.key]),
            )
            .await?;
        parse_group_info(&v, GROUP).ok_or_else(|| bad("read the consumer group", &v))
    }

    async fn pending_summary(&self) -> Result<(Option<StreamId>, Vec<String>), SinkError> {
        let v = self
            .call(
                "read the pending entries of",
                self.args(&["XPENDING", &self.key, GROUP]),
            )
            .await?;
        parse_pending_summary(&v).ok_or_else(|| bad("read pending entries", &v))
    }

    /// Tracks the placed orders the stream holds past the tracked mark, up to entry `upto`
    /// (track.lua, through [`flashgate_core::orders::track_upto`]). The sink tracks a batch's
    /// entries before it acknowledges any of them, so every entry it acknowledges, and so
    /// every entry [`EventStream::trim`] drops, has been tracked.
    pub async fn track(&self, event: &str, upto: StreamId) -> Result<usize, SinkError> {
        flashgate_core::orders::track_upto(self.origin, event, Some(upto))
            .await
            .map_err(|source| SinkError::Origin {
                doing: format!("track the placed orders of {}", self.key),
                source,
            })
    }

    /// Drops the entries the group has acknowledged (up to [`trim_floor`]); answers how many.
    pub async fn trim(&self) -> Result<u64, SinkError> {
        // This order of reads is what makes the floor safe; see `trim_floor`.
        let last = self.group().await?.last_delivered;
        let (lowest, _) = self.pending_summary().await?;
        let floor = trim_floor(last, lowest).to_string();
        let v = self
            .call("trim", self.args(&["XTRIM", &self.key, "MINID", &floor]))
            .await?;
        v.as_int()
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| bad("trim the stream", &v))
    }

    /// Removes this consumer from the group if it holds no pending entry (deleting one that
    /// does would drop its entries from the pending list). Call only after the last read.
    pub async fn retire(&self) -> Result<bool, SinkError> {
        let (_, holders) = self.pending_summary().await?;
        if holders.contains(&self.consumer) {
            return Ok(false);
        }
        let args = self.args(&["XGROUP", "DELCONSUMER", &self.key, GROUP, &self.consumer]);
        self.call("retire the consumer from", args).await?;
        Ok(true)
    }
}

impl<O: Origin> Backlog for EventStream<'_, O> {
    /// Reads the group's pending list (every consumer's), then the stream's entries across it.
    async fn release_pending(
        &self,
        except: StreamId,
        sku: &str,
    ) -> Result<Option<StreamId>, SinkError> {
        let n = BACKLOG_SCAN.to_string();
        let args = self.args(&["XPENDING", &self.key, GROUP, "-", "+", &n]);
        let v = self.call("read the pending entries of", args).await?;
        let pending: Vec<StreamId> = parse_pending_counts(&v)
            .ok_or_else(|| bad("read pending entries", &v))?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let others: Vec<StreamId> = pending.iter().copied().filter(|id| *id != except).collect();
        let (Some(first), Some(last)) = (others.first(), others.last()) else {
            return Ok(None);
        };
        if pending.len() >= BACKLOG_SCAN {
            return Ok(Some(*first));
        }
        let scanned = 4 * BACKLOG_SCAN;
        let (from, to, count) = (first.to_string(), last.to_string(), scanned.to_string());
        let args = self.args(&["XRANGE", &self.key, &from, &to, "COUNT", &count]);
        let v = self.call("read the pending entries of", args).await?;
        let entries = parse_entries(&v).ok_or_else(|| bad("read pending entries", &v))?;
        Ok(first_release(
            &self.event,
            &others,
            except,
            sku,
            &entries,
            scanned,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Value {
        Value::Str(x.to_string())
    }
    fn a(v: Vec<Value>) -> Value {
        Value::Array(v)
    }
    fn id(x: &str) -> StreamId {
        StreamId::parse(x).unwrap()
    }

    #[test]
    fn golden_key() {
        assert_eq!(stream_key("demo"), "fg:{demo}:stream");
        assert_eq!(
            flashgate_core::keys::slot(&stream_key("demo")),
            flashgate_core::keys::slot(&flashgate_core::keys::EventKeys::new("demo").meta),
            "the stream shares the event's slot"
        );
    }

    #[test]
    fn readgroup_replies() {
        assert_eq!(parse_readgroup(&Value::Nil), Some(vec![]));
        let v = a(vec![a(vec![
            s("fg:{E}:stream"),
            a(vec![
                a(vec![
                    s("1-0"),
                    a(vec![s("type"), s("placed"), s("at"), s("5")]),
                ]),
                a(vec![s("2-1"), Value::Nil]),
            ]),
        ])]);
        let ds = parse_readgroup(&v).unwrap();
        assert_eq!(ds[0].id, id("1-0"));
        assert_eq!(
            ds[0].fields.as_deref(),
            Some(&[("type".into(), "placed".into()), ("at".into(), "5".into())][..])
        );
        assert_eq!((ds[1].id, ds[1].fields.is_none()), (id("2-1"), true));
        assert_eq!(parse_readgroup(&s("OK")), None);
        // An odd number of field items is not an entry.
        let odd = a(vec![a(vec![
            s("k"),
            a(vec![a(vec![s("1-0"), a(vec![s("type")])])]),
        ])]);
        assert_eq!(parse_readgroup(&odd), None);
    }

    #[test]
    fn autoclaim_and_pending_replies() {
        // Redis 7: cursor, entries, deleted ids.
        let v = a(vec![
            s("0-0"),
            a(vec![a(vec![s("3-0"), a(vec![s("type"), s("paid")])])]),
            a(vec![s("2-0")]),
        ]);
        let (next, ds) = parse_autoclaim(&v).unwrap();
        assert_eq!((next, ds.len(), ds[0].id), (StreamId::ZERO, 1, id("3-0")));
        // Redis 6.2: no third element, a nil for a deleted entry.
        let v = a(vec![s("9-0"), a(vec![Value::Nil])]);
        assert_eq!(parse_autoclaim(&v), Some((id("9-0"), vec![])));

        let v = a(vec![a(vec![
            s("3-0"),
            s("c1"),
            Value::Int(12),
            Value::Int(4),
        ])]);
        assert_eq!(parse_pending_counts(&v), Some(vec![(id("3-0"), 4)]));

        let none = a(vec![Value::Int(0), Value::Nil, Value::Nil, Value::Nil]);
        assert_eq!(parse_pending_summary(&none), Some((None, vec![])));
        let some = a(vec![
            Value::Int(3),
            s("4-0"),
            s("8-0"),
            a(vec![
                a(vec![s("host-1"), s("2")]),
                a(vec![s("host-2"), s("1")]),
            ]),
        ]);
        assert_eq!(
            parse_pending_summary(&some),
            Some((Some(id("4-0")), vec!["host-1".into(), "host-2".into()]))
        );
    }

    #[test]
    fn group_info_replies() {
        let g = |name: &str, lag: Value| {
            a(vec![
                s("name"),
                s(name),
                s("consumers"),
                Value::Int(2),
                s("pending"),
                Value::Int(3),
                s("last-delivered-id"),
                s("7-1"),
                s("entries-read"),
                Value::Int(9),
                s("lag"),
                lag,
            ])
        };
        let v = a(vec![g("other", Value::Int(0)), g("sink", Value::Int(5))]);
        assert_eq!(
            parse_group_info(&v, "sink"),
            Some(GroupInfo {
                pending: 3,
                last_delivered: id("7-1"),
                lag: Some(5)
            })
        );
        let v = a(vec![g("sink", Value::Nil)]);
        assert_eq!(parse_group_info(&v, "sink").unwrap().lag, None);
        assert_eq!(parse_group_info(&a(vec![]), "sink"), None);
    }
}
