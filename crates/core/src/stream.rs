//! The order stream's entries as the origin lists them (XRANGE, XREADGROUP, XAUTOCLAIM): the
//! reply parser shared by order tracking (`orders`) and the order writer, which reads
//! the same entries through its consumer group. Plain functions over [`Value`]s.

use crate::change::StreamId;
use crate::origin::Value;

/// An entry handed to this consumer. `fields` is `None` for an entry deleted from the stream
/// while it was pending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub id: StreamId,
    pub fields: Option<Vec<(String, String)>>,
    /// How many times the group has handed it out, this time included.
    pub deliveries: u64,
}

/// An entry id (`<ms>-<seq>`).
pub fn parse_id(v: &Value) -> Option<StreamId> {
    StreamId::parse(v.as_str()?)
}

/// `[id, [field, value, ...] | nil]`, as XREADGROUP, XAUTOCLAIM and XCLAIM list entries.
fn parse_entry(v: &Value) -> Option<Delivery> {
    let [id, fields] = v.as_array()? else {
        return None;
    };
    let fields = match fields {
        Value::Nil => None,
        Value::Array(a) if a.len() % 2 == 0 => Some(
            a.chunks(2)
                .map(|kv| Some((kv[0].as_str()?.to_string(), kv[1].as_str()?.to_string())))
                .collect::<Option<Vec<_>>>()?,
        ),
        _ => return None,
    };
    Some(Delivery {
        id: parse_id(id)?,
        fields,
        deliveries: 1,
    })
}

/// A list of entries; a nil in place of an entry (Redis 6.2 for deleted ones) is skipped.
pub fn parse_entries(v: &Value) -> Option<Vec<Delivery>> {
    v.as_array()?
        .iter()
        .filter(|e| **e != Value::Nil)
        .map(parse_entry)
        .collect()
}
