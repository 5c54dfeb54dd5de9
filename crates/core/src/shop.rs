//! The shop's credentials: signed requests to the shop API (pay, cancel) and the signed order
//! reference a checkout link carries. Both are HMAC-SHA256 with `SHOP_API_TOKEN`, a secret the
//! shop's payment service holds and shoppers never see (distinct from `OPERATOR_TOKEN`).
//!
//! A shop API request carries, the way payment webhooks are signed:
//!
//! ```text
//! Flashgate-Signature: t=<unix seconds>,n=<nonce>,v1=<hex HMAC-SHA256(SHOP_API_TOKEN,
//!                      "<t>.<nonce>.<METHOD>.<path>.<body>")>
//! nonce = [A-Za-z0-9_-]{8,64}, fresh for every request (a retry is signed afresh)
//! ```
//!
//! Invariants:
//! - A request is accepted only within [`TOLERANCE_SECS`] of its timestamp, either way; a
//!   captured request replayed later is refused ([`SigError::Stale`]).
//! - Within that window an isolate refuses a signature it has already accepted
//!   ([`SigError::Replayed`]). Another isolate may accept it once more; that is harmless, as
//!   pay and cancel are idempotent.
//! - Verification needs no origin command and compares MACs in constant time.
//!
//! The checkout reference is `<order id>.<base64url HMAC-SHA256(SHOP_API_TOKEN,
//! "ref.<event>.<order id>.<user>")>`: the shop's checkout page checks that an order id came
//! from flashgate for that user before it takes a payment.

use crate::line::hex;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How far a request's timestamp may be from the edge's clock, either way.
pub const TOLERANCE_SECS: i64 = 300;
/// The request header that carries the signature.
pub const SIGNATURE_HEADER: &str = "flashgate-signature";

/// Why a shop API request's credential was refused (all answered 401).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigError {
    Missing,
    Malformed,
    BadSignature,
    /// Its timestamp is this many seconds from now (either way).
    Stale {
        off_by_secs: i64,
    },
    Replayed,
}

impl SigError {
    pub fn message(self) -> String {
        match self {
            SigError::Missing => {
                "send a Flashgate-Signature header signed with SHOP_API_TOKEN".into()
            }
            SigError::Malformed => {
                "the Flashgate-Signature header is malformed: t=<unix seconds>,n=<nonce>,v1=<hex>"
                    .into()
            }
            SigError::BadSignature => "the Flashgate-Signature does not match the request".into(),
            SigError::Stale { off_by_secs } => format!(
                "the signature's timestamp is {off_by_secs} s from the server's clock (at most \
                 {TOLERANCE_SECS} s): sign each request when you send it"
            ),
            SigError::Replayed => {
                "this signature was already used: sign each request afresh, with a new nonce".into()
            }
        }
    }
}

fn mac(secret: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length")
}

fn signed_payload(t: i64, nonce: &str, method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut p = format!("{t}.{nonce}.{method}.{path}.").into_bytes();
    p.extend_from_slice(body);
    p
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn valid_nonce(n: &str) -> bool {
    (8..=64).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The `Flashgate-Signature` value for a request (what a shop's payment service computes).
pub fn sign(secret: &[u8], t: i64, nonce: &str, method: &str, path: &str, body: &[u8]) -> String {
    debug_assert!(valid_nonce(nonce));
    let mut m = mac(secret);
    m.update(&signed_payload(t, nonce, method, path, body));
    format!("t={t},n={nonce},v1={}", hex(&m.finalize().into_bytes()))
}

/// A verified signature: what an isolate remembers to refuse its replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed {
    pub t: i64,
    /// The MAC, hex: unique per request.
    pub mac: String,
}

/// Verifies a shop API request's signature at `now_ms` (replays are the caller's to check,
/// with [`Signed`]).
pub fn verify(
    secret: &[u8],
    header: Option<&str>,
    method: &str,
    path: &str,
    body: &[u8],
    now_ms: i64,
) -> Result<Signed, SigError> {
    let header = header.ok_or(SigError::Missing)?;
    if header.len() > 256 {
        return Err(SigError::Malformed);
    }
    let (mut t, mut n, mut v1) = (None, None, None);
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) if t.is_none() => t = Some(v),
            Some(("n", v)) if n.is_none() => n = Some(v),
            Some(("v1", v)) if v1.is_none() => v1 = Some(v),
            _ => return Err(SigError::Malformed),
        }
    }
    let (Some(t), Some(n), Some(v1)) = (t, n, v1) else {
        return Err(SigError::Malformed);
    };
    if t.is_empty() || t.len() > 12 || !t.bytes().all(|b| b.is_ascii_digit()) || !valid_nonce(n) {
        return Err(SigError::Malformed);
    }
    let t: i64 = t.parse().map_err(|_| SigError::Malformed)?;
    let given = unhex(v1)
        .filter(|m| m.len() == 32)
        .ok_or(SigError::Malformed)?;
    let mut m = mac(secret);
    m.update(&signed_payload(t, n, method, path, body));
    m.verify_slice(&given).map_err(|_| SigError::BadSignature)?;
    let off_by_secs = (now_ms.div_euclid(1000) - t).abs();
    if off_by_secs > TOLERANCE_SECS {
        return Err(SigError::Stale { off_by_secs });
    }
    Ok(Signed {
        t,
        mac: v1.to_ascii_lowercase(),
    })
}

/// The signed reference a checkout link carries for one order.
pub fn order_ref(secret: &[u8], event: &str, order_id: &str, user: &str) -> String {
    let mut m = mac(secret);
    m.update(format!("ref.{event}.{order_id}.{user}").as_bytes());
    format!(
        "{order_id}.{}",
        URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
    )
}

/// A checkout URL from the shop's template: `{id}` becomes the order id and `{ref}` the
/// signed reference (both URL-safe as they are).
pub fn checkout_url(
    template: &str,
    secret: &[u8],
    event: &str,
    order_id: &str,
    user: &str,
) -> String {
    template
        .replace("{id}", order_id)
        .replace("{ref}", &order_ref(secret, event, order_id, user))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"shop-secret-0123456789";
    const PATH: &str = "/api/events/launch/orders/o_1/pay";

    #[test]
    fn golden_signature() {
        // Pinned from Python: hmac.new(b"shop-secret-0123456789",
        //   b"1800000000.nonce-0001.POST./api/events/launch/orders/o_1/pay.", "sha256").hexdigest()
        let s = sign(SECRET, 1_800_000_000, "nonce-0001", "POST", PATH, b"");
        assert_eq!(
            s,
            "t=1800000000,n=nonce-0001,v1=5aa7863343454a9bca171ea2d10fcd7d9570b449e051a7fd00e7ff6e8a0055a1"
        );
        let ok = verify(SECRET, Some(&s), "POST", PATH, b"", 1_800_000_000_000).unwrap();
        assert_eq!(ok.t, 1_800_000_000);
    }

    #[test]
    fn forgeries_stale_and_malformed_fail() {
        let now = 1_800_000_000_000;
        let s = sign(SECRET, 1_800_000_000, "nonce-0001", "POST", PATH, b"");
        let v = |h: Option<&str>, path: &str, now: i64| verify(SECRET, h, "POST", path, b"", now);
        assert_eq!(v(None, PATH, now), Err(SigError::Missing));
        let other = PATH.replace("pay", "cancel");
        assert_eq!(v(Some(&s), &other, now), Err(SigError::BadSignature));
        let wrong_key = sign(
            b"another secret!!",
            1_800_000_000,
            "nonce-0001",
            "POST",
            PATH,
            b"",
        );
        assert_eq!(v(Some(&wrong_key), PATH, now), Err(SigError::BadSignature));
        let moved = s.replace("t=1800000000", "t=1800000100");
        assert_eq!(v(Some(&moved), PATH, now), Err(SigError::BadSignature));
        assert_eq!(
            v(Some(&s), PATH, now + 301_000),
            Err(SigError::Stale { off_by_secs: 301 })
        );
        assert!(v(Some(&s), PATH, now + 300_999).is_ok());
        assert_eq!(
            v(Some(&s), PATH, now - 301_000),
            Err(SigError::Stale { off_by_secs: 301 })
        );
        for bad in [
            "",
            "t=1",
            "t=1,n=nonce-0001",
            "t=x,n=nonce-0001,v1=00",
            "t=1,n=short,v1=00",
            "t=1,n=nonce-0001,v1=zz",
            "t=1,t=2,n=nonce-0001,v1=00",
            "t=1,n=nonce 0001,v1=00",
        ] {
            assert_eq!(v(Some(bad), PATH, now), Err(SigError::Malformed), "{bad}");
        }
    }

    #[test]
    fn checkout_links_carry_a_reference_the_shop_can_check() {
        let url = checkout_url(
            "https://shop.example/checkout?order={id}&ref={ref}",
            SECRET,
            "launch",
            "o_1",
            "ann",
        );
        let r = order_ref(SECRET, "launch", "o_1", "ann");
        assert_eq!(
            url,
            format!("https://shop.example/checkout?order=o_1&ref={r}")
        );
        assert!(r.starts_with("o_1."));
        assert_ne!(
            r,
            order_ref(SECRET, "launch", "o_1", "bob"),
            "bound to the user"
        );
    }
}
