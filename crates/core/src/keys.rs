//! Origin key names. Every key of one event carries the hash tag `{<event id>}`, so one
//! script touches one cluster slot; the per-user total cap spans the event, which makes the
//! event the natural tag. Ids cannot contain `{`, `}` or `:` (see `model::valid_id`).

/// The keys of one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventKeys {
    /// Hash: the fields of `EventMeta::to_fields`, `stock:<sku>` → units put on sale and
    /// `sold:<sku>` → units sold. Sold grows only in purchase.lua and shrinks only in
    /// settle.lua's expiry, so sold ≤ stock holds.
    pub meta: String,
    /// Hash: `o:<order id>` → "<user> <key> <day>" (the order index, kept by track.lua),
    /// `n:tracked` (the stream id up to which placed orders are tracked), and `n:paid` /
    /// `n:expired` (orders settled, counted by settle.lua).
    pub orders: String,
    /// Sorted set: order id → pay_by (ms), for orders awaiting payment (added by track.lua,
    /// removed by settle.lua).
    pub pending: String,
    /// Stream: every order change (`placed`, `paid`, `expired`) for the order writer.
    pub stream: String,
    prefix: String,
}

impl EventKeys {
    pub fn new(event: &str) -> EventKeys {
        let prefix = format!("fg:{{{event}}}:");
        EventKeys {
            meta: format!("{prefix}meta"),
            orders: format!("{prefix}orders"),
            pending: format!("{prefix}pending"),
            stream: format!("{prefix}stream"),
            prefix,
        }
    }

    /// Hash: a user's counters (`t` total units, `d:<day>:<sku>` units that day), idempotency
    /// records (`i:<key>` → fingerprint, newline, order JSON), order states (`s:<key>`: the
    /// deadline while pending, then `p` or `x`) and the earliest pending deadline (`e`).
    /// See purchase.lua.
    pub fn user(&self, user: &str) -> String {
        format!("{}user:{user}", self.prefix)
    }

    /// String: the event's draw seed (64 hex digits), made at creation. The edge reads it
    /// (view.lua) only from the start on.
    pub fn seed(&self) -> String {
        format!("{}seed", self.prefix)
    }

    /// Hash: the line (`threshold::LineState::to_fields`), `claimed` (the last advance tick
    /// claimed, in units of `threshold::ADVANCE_MS`) and `n:<rank>` (sampled entrants of each
    /// window).
    pub fn line(&self) -> String {
        format!("{}line", self.prefix)
    }

    /// Hash: `<rank>:<user>` → 1 for each sampled user seen in a window (deduplicates the
    /// entrants count).
    pub fn line_seen(&self) -> String {
        format!("{}line:seen", self.prefix)
    }

    /// Hash: Unix second → the highest threshold the fleet could use in it (line.lua), kept
    /// `threshold::HISTORY_SECS`, for `flashgate event verify-draw`.
    pub fn line_history(&self) -> String {
        format!("{}line:history", self.prefix)
    }

    /// Hash: the fleet's counts reported during Unix second `sec` (counter → sum), kept for
    /// [`FLEET_TTL_SECS`].
    pub fn fleet(&self, sec: i64) -> String {
        format!("{}fleet:{sec}", self.prefix)
    }
}

/// How long the fleet's per-second counts are kept at the origin.
pub const FLEET_TTL_SECS: i64 = 600;

/// The Redis Cluster hash slot of a key (CRC16/XMODEM of its hash tag, mod 16384).
pub fn slot(key: &str) -> u16 {
    let b = key.as_bytes();
    let tagged = b.iter().position(|&c| c == b'{').and_then(|open| {
        let close = b[open + 1..].iter().position(|&c| c == b'}')?;
        (close > 0).then(|| &b[open + 1..open + 1 + close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(b)) % 16384
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_key_names() {
        let k = EventKeys::new("demo");
        assert_eq!(k.meta, "fg:{demo}:meta");
        assert_eq!(k.orders, "fg:{demo}:orders");
        assert_eq!(k.pending, "fg:{demo}:pending");
        assert_eq!(k.stream, "fg:{demo}:stream");
        assert_eq!(k.user("alice"), "fg:{demo}:user:alice");
        assert_eq!(k.fleet(1_800_000_000), "fg:{demo}:fleet:1800000000");
        assert_eq!(k.seed(), "fg:{demo}:seed");
        assert_eq!(k.line(), "fg:{demo}:line");
        assert_eq!(k.line_seen(), "fg:{demo}:line:seen");
        assert_eq!(k.line_history(), "fg:{demo}:line:history");
    }

    #[test]
    fn all_keys_of_an_event_share_a_slot() {
        let k = EventKeys::new("sale-42");
        let s = slot(&k.meta);
        for key in [
            &k.orders,
            &k.pending,
            &k.stream,
            &k.user("u1"),
            &k.user("zz"),
        ] {
            assert_eq!(slot(key), s);
        }
    }

    #[test]
    fn slots_match_redis() {
        // Values from CLUSTER KEYSLOT on Redis 7.
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
        assert_eq!(slot("123456789"), 12739);
        assert_eq!(slot("a{}b"), slot("a{}b"), "empty tag hashes the whole key");
    }
}
