//! The line: a place per shopper, drawn from a secret seed, and the signed entry ticket that
//! carries a shopper's entry.
//!
//! Invariants:
//! - A shopper's place is a pure function of the event's seed, the event, the user and the
//!   entry's window ([`place_key`]). Retries, tabs and isolates cannot change it, and the edge
//!   keeps no per-user state for it.
//! - Shoppers who entered before the start share one window ([`Window::Early`]), ordered by a
//!   hash of the seed and the user: a random permutation that nobody can know before the seed
//!   is revealed. Later shoppers queue behind, one window per second of arrival, in a random
//!   order within their second.
//! - Before the start only the seed's commitment ([`commitment`], the SHA-256 of the seed) is
//!   public; from the start on, the seed is. With the seed anyone can recompute every key.
//!
//! Entry ticket format (ASCII, no padding):
//!
//! ```text
//! e1.<event>.<user>.<window>.<exp>.<sig>
//! window = 0 for an entry before the start, else the Unix second of arrival
//! exp    = decimal Unix seconds; the ticket is refused from this second on
//! sig    = base64url(HMAC-SHA256(IDENTITY_SECRET, "e1.<event>.<user>.<window>.<exp>"))
//! ```
//!
//! The `e1` prefix keeps tickets and identity tokens (`v1`) apart although one secret signs
//! both: neither can stand in for the other.

use crate::model::valid_id;
use crate::token::mac;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::Mac;
use sha2::{Digest, Sha256};

const TICKET_VERSION: &str = "e1";

/// An event's draw seed: 32 random bytes, made when the event is created, secret until the start.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Seed(pub [u8; 32]);

impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seed(..)")
    }
}

impl Seed {
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Seed> {
        if s.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
            let pair = std::str::from_utf8(chunk).ok()?;
            out[i] = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(Seed(out))
    }
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The public commitment to a seed: the lowercase hex SHA-256 of its 32 bytes.
pub fn commitment(seed: &Seed) -> String {
    hex(&Sha256::digest(seed.0))
}

/// Whether `seed` is the one `commitment` was made for.
pub fn reveals(seed: &Seed, commitment_hex: &str) -> bool {
    commitment(seed).eq_ignore_ascii_case(commitment_hex)
}

/// When a shopper entered a sale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Window {
    /// Before the start: everyone here shares the first window.
    Early,
    /// The Unix second of arrival, at or after the start.
    Arrived(i64),
}

impl Window {
    /// The window of an entry at `now_ms` for a sale that starts at `starts_at_ms`.
    pub fn at(now_ms: i64, starts_at_ms: i64) -> Window {
        if now_ms < starts_at_ms {
            Window::Early
        } else {
            Window::Arrived(now_ms.div_euclid(1000))
        }
    }

    /// The ticket's encoding: 0 for early, else the Unix second.
    pub fn as_u64(self) -> u64 {
        match self {
            Window::Early => 0,
            Window::Arrived(s) => s.max(1) as u64,
        }
    }

    pub fn from_u64(w: u64) -> Window {
        if w == 0 {
            Window::Early
        } else {
            Window::Arrived(w as i64)
        }
    }

    /// The window's rank in the line: 0 for early, `1 + s - start_sec` for an arrival in Unix
    /// second `s` of a sale that starts at Unix second `start_sec` (an arrival before the start
    /// second counts as the first second after it).
    pub fn rank(self, start_sec: i64) -> u64 {
        match self {
            Window::Early => 0,
            Window::Arrived(s) => 1 + (s - start_sec).max(0) as u64,
        }
    }
}

/// A shopper's place in the line, as a sort key: the window's rank, then the draw within the
/// window. A smaller key comes first. `draw` is uniform over `u64` and independent per user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PlaceKey {
    pub rank: u64,
    pub draw: u64,
}

impl PlaceKey {
    /// Where in its window the key falls, in [0, 1).
    pub fn fraction(&self) -> f64 {
        self.draw as f64 / 18_446_744_073_709_551_616.0
    }
}

/// The draw of `user` in `event`: the first 8 bytes (big-endian) of
/// SHA-256(seed ‖ event ‖ 0x00 ‖ user).
pub fn draw(seed: &Seed, event: &str, user: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(seed.0);
    h.update(event.as_bytes());
    h.update([0u8]);
    h.update(user.as_bytes());
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
}

/// A shopper's place key.
pub fn place_key(seed: &Seed, event: &str, user: &str, window: Window, start_sec: i64) -> PlaceKey {
    PlaceKey {
        rank: window.rank(start_sec),
        draw: draw(seed, event, user),
    }
}

/// A verified entry ticket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ticket {
    pub event: String,
    pub user: String,
    pub window: Window,
    /// Unix seconds.
    pub exp: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TicketError {
    Malformed,
    BadSignature,
    Expired,
}

impl TicketError {
    pub fn message(self) -> &'static str {
        match self {
            TicketError::Malformed => "the entry ticket is malformed",
            TicketError::BadSignature => "the entry ticket's signature is not valid",
            TicketError::Expired => "the entry ticket has expired",
        }
    }
}

/// Mints an entry ticket. `event` and `user` must be valid ids.
pub fn mint_ticket(secret: &[u8], t: &Ticket) -> String {
    debug_assert!(valid_id(&t.event) && valid_id(&t.user));
    let signed = format!(
        "{TICKET_VERSION}.{}.{}.{}.{}",
        t.event,
        t.user,
        t.window.as_u64(),
        t.exp
    );
    let sig = URL_SAFE_NO_PAD.encode(mac(secret, &signed).finalize().into_bytes());
    format!("{signed}.{sig}")
}

fn decimal(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 12 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Verifies an entry ticket at `now_ms`. Whose and which event's it is, the caller checks.
pub fn verify_ticket(secret: &[u8], ticket: &str, now_ms: i64) -> Result<Ticket, TicketError> {
    if ticket.len() > 320 {
        return Err(TicketError::Malformed);
    }
    let (signed, sig) = ticket.rsplit_once('.').ok_or(TicketError::Malformed)?;
    let mut parts = signed.split('.');
    let (Some(TICKET_VERSION), Some(event), Some(user), Some(window), Some(exp), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(TicketError::Malformed);
    };
    if !valid_id(event) || !valid_id(user) {
        return Err(TicketError::Malformed);
    }
    let (Some(window), Some(exp)) = (decimal(window), decimal(exp)) else {
        return Err(TicketError::Malformed);
    };
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| TicketError::Malformed)?;
    mac(secret, signed)
        .verify_slice(&sig)
        .map_err(|_| TicketError::BadSignature)?;
    if now_ms.div_euclid(1000) >= exp as i64 {
        return Err(TicketError::Expired);
    }
    Ok(Ticket {
        event: event.to_string(),
        user: user.to_string(),
        window: Window::from_u64(window),
        exp: exp as i64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn seed() -> Seed {
        let mut s = [0u8; 32];
        for (i, b) in s.iter_mut().enumerate() {
            *b = i as u8;
        }
        Seed(s)
    }

    #[test]
    fn golden_commitment_and_draw() {
        // Pinned from Python: hashlib.sha256(bytes(range(32))).hexdigest(), and
        // int.from_bytes(hashlib.sha256(bytes(range(32)) + b"launch\0alice").digest()[:8], "big").
        let s = seed();
        assert_eq!(
            commitment(&s),
            "630dcd2966c4336691125448bbb25b4ff412a49c732db2c8abc1b8581bd710dd"
        );
        assert!(reveals(&s, &commitment(&s).to_uppercase()));
        assert!(!reveals(&Seed([7; 32]), &commitment(&s)));
        assert_eq!(draw(&s, "launch", "alice"), 0xebab_f8a6_1522_3811);
        assert_eq!(Seed::from_hex(&s.to_hex()), Some(s));
        assert_eq!(Seed::from_hex("zz"), None);
    }

    #[test]
    fn places_order_windows_then_draws() {
        let s = seed();
        let start = 1_800_000_000;
        let early = place_key(&s, "launch", "alice", Window::Early, start);
        let first = place_key(&s, "launch", "bob", Window::Arrived(start), start);
        let later = place_key(&s, "launch", "bob", Window::Arrived(start + 5), start);
        assert!(early < first && first < later);
        assert_eq!((early.rank, first.rank, later.rank), (0, 1, 6));
        // Pure: the same inputs, the same place.
        assert_eq!(
            early,
            place_key(&s, "launch", "alice", Window::Early, start)
        );
        assert_eq!(Window::at(999, 1000), Window::Early);
        assert_eq!(Window::at(1000, 1000), Window::Arrived(1));
    }

    #[test]
    fn draws_are_uniform_enough() {
        let s = seed();
        let n = 20_000;
        let below_half = (0..n)
            .filter(|i| draw(&s, "e", &format!("u{i}")) < u64::MAX / 2)
            .count();
        let share = below_half as f64 / n as f64;
        assert!((0.48..0.52).contains(&share), "{share}");
    }

    #[test]
    fn golden_ticket_round_trip() {
        let t = Ticket {
            event: "launch".into(),
            user: "alice".into(),
            window: Window::Early,
            exp: 1_800_000_000,
        };
        let minted = mint_ticket(SECRET, &t);
        assert!(minted.starts_with("e1.launch.alice.0.1800000000."));
        assert_eq!(verify_ticket(SECRET, &minted, 0), Ok(t.clone()));
        assert_eq!(
            verify_ticket(SECRET, &minted, 1_800_000_000_000),
            Err(TicketError::Expired)
        );
        let late = Ticket {
            window: Window::Arrived(1_799_999_000),
            ..t
        };
        assert_eq!(
            verify_ticket(SECRET, &mint_ticket(SECRET, &late), 0),
            Ok(late)
        );
    }

    #[test]
    fn forged_tickets_fail() {
        let t = Ticket {
            event: "launch".into(),
            user: "alice".into(),
            window: Window::Arrived(1_800_000_100),
            exp: 1_800_000_000,
        };
        let minted = mint_ticket(SECRET, &t);
        let moved_up = minted.replace(".1800000100.", ".0.");
        assert_eq!(
            verify_ticket(SECRET, &moved_up, 0),
            Err(TicketError::BadSignature)
        );
        let other_user = minted.replace(".alice.", ".mallory.");
        assert_eq!(
            verify_ticket(SECRET, &other_user, 0),
            Err(TicketError::BadSignature)
        );
        // An identity token is not a ticket.
        let token = crate::token::mint(SECRET, "alice", 1_800_000_000);
        assert_eq!(
            verify_ticket(SECRET, &token, 0),
            Err(TicketError::Malformed)
        );
        for bad in [
            "",
            "e1",
            "e1.a.b.0.1",
            "e1.a.b.x.1.sig",
            "e1.a.b.0.1.!!",
            "e1.a b.c.0.1.s",
        ] {
            assert_eq!(
                verify_ticket(SECRET, bad, 0),
                Err(TicketError::Malformed),
                "{bad}"
            );
        }
    }
}
