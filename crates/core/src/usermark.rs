//! The `fg_mark` cookie: a user mark (what the origin said the user has bought) signed for
//! the user's other tabs, so that another isolate refuses their over-cap attempts at the edge.
//!
//! A shopper with two tabs open sends two purchases; in a `fairness = line` sale both are
//! admitted together (one place per shopper). The first buys, and the isolate that forwarded
//! it learns the user's counters (`edge::EdgeState` marks). The second tab's attempt may reach
//! another isolate, which knows nothing, and would cost an origin call for a cap refusal. The
//! 201 therefore carries the mark as an HttpOnly cookie that every tab of the browser sends;
//! an isolate that receives a valid one learns from it as if it had forwarded the purchase.
//!
//! Invariants: a mark's counts are lower bounds of the user's counters at the origin when it
//! was signed, and it is trusted only as marks are: until the earliest deadline of the user's
//! pending orders (`until`: an expiry gives units back) and while the event's cancel count is
//! the one it was signed with. A forged, altered or another user's or event's mark is
//! ignored, never an error: the origin still decides.
//!
//! Wire format (version 1, cookie-safe characters only):
//! `u1.<event>.<user>.<day>.<until or ->.<cancels>.<total>.<sku>:<n>~<sku>:<n>.<exp>.<sig>`,
//! where `sig` is the HMAC-SHA256 (base64url) of everything before it, like entry tickets.

use crate::model::valid_id;
use crate::token::mac;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::Mac;

/// The cookie's name.
pub const MARK_COOKIE: &str = "fg_mark";
const VERSION: &str = "u1";
/// The longest mark read (a few dozen skus).
const MAX_LEN: usize = 1024;
/// How long a mark is kept: a day (its `until` and the cancel count bound it anyway).
const MARK_SECS: i64 = 86_400;

/// What the origin said a user has bought in an event, as of a moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserMark {
    pub event: String,
    pub user: String,
    /// The day (`edge::day_number`) `today` counts.
    pub day: i64,
    /// Trusted until then (Unix ms; the earliest pending deadline); `None`: no limit.
    pub until: Option<i64>,
    /// The event's cancel count when signed.
    pub cancels: u64,
    pub total: u32,
    /// Units per sku bought on `day`.
    pub today: Vec<(String, u32)>,
}

/// The signed cookie value, valid until `exp` (Unix seconds).
pub fn mint(secret: &[u8], m: &UserMark, exp: i64) -> String {
    let today: Vec<String> = m.today.iter().map(|(s, n)| format!("{s}:{n}")).collect();
    let until = m.until.map_or("-".to_string(), |u| u.to_string());
    let signed = format!(
        "{VERSION}.{}.{}.{}.{until}.{}.{}.{}.{exp}",
        m.event,
        m.user,
        m.day,
        m.cancels,
        m.total,
        today.join("~")
    );
    let sig = URL_SAFE_NO_PAD.encode(mac(secret, &signed).finalize().into_bytes());
    format!("{signed}.{sig}")
}

/// The `Set-Cookie` value for a mark signed at `now_ms`, scoped like the entry ticket.
pub fn set_cookie(secret: &[u8], m: &UserMark, now_ms: i64) -> String {
    let exp = now_ms.div_euclid(1000) + MARK_SECS;
    format!(
        "{MARK_COOKIE}={}; Path=/api/events/{}; HttpOnly; Secure; SameSite=Strict; Max-Age={MARK_SECS}",
        mint(secret, m, exp),
        m.event
    )
}

/// The mark in `value` if it is well formed, signed with `secret` and not expired at `now_ms`.
pub fn verify(secret: &[u8], value: &str, now_ms: i64) -> Option<UserMark> {
    if value.len() > MAX_LEN {
        return None;
    }
    let (signed, sig) = value.rsplit_once('.')?;
    let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
    mac(secret, signed).verify_slice(&sig).ok()?;
    let p: Vec<&str> = signed.split('.').collect();
    let [VERSION, event, user, day, until, cancels, total, today, exp] = p[..] else {
        return None;
    };
    if !valid_id(event) || !valid_id(user) || now_ms.div_euclid(1000) >= exp.parse().ok()? {
        return None;
    }
    let today = if today.is_empty() {
        Vec::new()
    } else {
        (today.split('~'))
            .map(|e| {
                let (sku, n) = e.split_once(':')?;
                Some((sku.to_string(), n.parse().ok()?))
            })
            .collect::<Option<_>>()?
    };
    Some(UserMark {
        event: event.to_string(),
        user: user.to_string(),
        day: day.parse().ok()?,
        until: if until == "-" {
            None
        } else {
            Some(until.parse().ok()?)
        },
        cancels: cancels.parse().ok()?,
        total: total.parse().ok()?,
        today,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef";
    const NOW: i64 = 1_800_000_000_000;

    fn mark() -> UserMark {
        UserMark {
            event: "launch".into(),
            user: "dana".into(),
            day: 20_833,
            until: Some(NOW + 600_000),
            cancels: 2,
            total: 1,
            today: vec![("KB-1".into(), 1)],
        }
    }

    #[test]
    fn a_mark_round_trips_in_its_wire_format() {
        let v = mint(SECRET, &mark(), NOW / 1000 + 60);
        let (signed, _) = v.rsplit_once('.').unwrap();
        assert_eq!(
            signed,
            "u1.launch.dana.20833.1800000600000.2.1.KB-1:1.1800000060"
        );
        assert_eq!(verify(SECRET, &v, NOW), Some(mark()));
        let none = UserMark {
            until: None,
            today: vec![],
            ..mark()
        };
        let v = mint(SECRET, &none, NOW / 1000 + 60);
        assert!(
            v.starts_with("u1.launch.dana.20833.-.2.1..1800000060."),
            "{v}"
        );
        assert_eq!(verify(SECRET, &v, NOW), Some(none));
        let c = set_cookie(SECRET, &mark(), NOW);
        assert!(c.starts_with("fg_mark=u1.launch.dana."), "{c}");
        assert!(
            c.ends_with(
                "; Path=/api/events/launch; HttpOnly; Secure; SameSite=Strict; Max-Age=86400"
            ),
            "{c}"
        );
    }

    #[test]
    fn forged_altered_or_expired_marks_are_ignored() {
        let v = mint(SECRET, &mark(), NOW / 1000 + 60);
        assert_eq!(verify(b"another secret!!", &v, NOW), None, "another key");
        let altered = v.replacen(".1.KB-1:1.", ".0.KB-1:0.", 1);
        assert_ne!(altered, v);
        assert_eq!(verify(SECRET, &altered, NOW), None, "counts changed");
        assert_eq!(verify(SECRET, &v, NOW + 60_000), None, "expired");
        assert_eq!(verify(SECRET, "u1.launch.dana", NOW), None);
        assert_eq!(verify(SECRET, &"x".repeat(2000), NOW), None);
    }
}
