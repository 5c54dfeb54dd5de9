//! Signed identity tokens, verified at the edge with no origin call.
//!
//! Format (ASCII, no padding):
//!
//! ```text
//! v1.<user>.<exp>.<sig>
//! user = [A-Za-z0-9_-]{1,64}          the shop's user id
//! exp  = decimal Unix seconds           the token is refused from this second on
//! sig  = base64url(HMAC-SHA256(IDENTITY_SECRET, "v1.<user>.<exp>"))   43 characters
//! ```
//!
//! A shop's login service mints these with any HMAC library; `flashgate token` mints them
//! for development. Verification compares the MAC in constant time (`Mac::verify_slice`).

use crate::model::valid_id;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;
const VERSION: &str = "v1";
/// The shortest secret we accept, in bytes.
pub const MIN_SECRET_LEN: usize = 16;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    /// Unix seconds.
    pub exp: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenError {
    Malformed,
    BadSignature,
    Expired,
}

impl TokenError {
    pub fn message(self) -> &'static str {
        match self {
            TokenError::Malformed => "the identity token is malformed",
            TokenError::BadSignature => "the identity token's signature is not valid",
            TokenError::Expired => "the identity token has expired",
        }
    }
}

/// HMAC-SHA256 keyed with `secret` over `signed` (identity tokens, entry tickets).
pub(crate) fn mac(secret: &[u8], signed: &str) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    m.update(signed.as_bytes());
    m
}

/// Mints a token for `user` that expires at `exp` (Unix seconds). `user` must be a valid id.
pub fn mint(secret: &[u8], user: &str, exp: i64) -> String {
    debug_assert!(valid_id(user));
    let signed = format!("{VERSION}.{user}.{exp}");
    let sig = URL_SAFE_NO_PAD.encode(mac(secret, &signed).finalize().into_bytes());
    format!("{signed}.{sig}")
}

/// Verifies `token` at `now_ms`.
pub fn verify(secret: &[u8], token: &str, now_ms: i64) -> Result<Identity, TokenError> {
    if token.len() > 256 {
        return Err(TokenError::Malformed);
    }
    let (signed, sig) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let mut parts = signed.split('.');
    let (Some(VERSION), Some(user), Some(exp), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    if !valid_id(user)
        || exp.is_empty()
        || exp.len() > 12
        || !exp.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(TokenError::Malformed);
    }
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| TokenError::Malformed)?;
    mac(secret, signed)
        .verify_slice(&sig)
        .map_err(|_| TokenError::BadSignature)?;
    let exp: i64 = exp.parse().map_err(|_| TokenError::Malformed)?;
    if now_ms.div_euclid(1000) >= exp {
        return Err(TokenError::Expired);
    }
    Ok(Identity {
        user: user.to_string(),
        exp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn golden_token() {
        // Pinned from Python's hmac module, so a shop's own minting code can be checked against it.
        let t = mint(SECRET, "alice", 1_800_000_000);
        assert_eq!(
            t,
            "v1.alice.1800000000.twahQmYSRYEfq-77Mbo0bm8TCqJAlFuUWPiWGImR2mI"
        );
        assert_eq!(
            verify(SECRET, &t, 1_799_999_999_999),
            Ok(Identity {
                user: "alice".into(),
                exp: 1_800_000_000
            })
        );
    }

    #[test]
    fn expiry_is_exclusive() {
        let t = mint(SECRET, "bob", 100);
        assert!(verify(SECRET, &t, 99_999).is_ok());
        assert_eq!(verify(SECRET, &t, 100_000), Err(TokenError::Expired));
    }

    #[test]
    fn forgeries_fail() {
        let t = mint(SECRET, "alice", 1_800_000_000);
        let other = mint(b"another secret, 32 bytes long!!!", "alice", 1_800_000_000);
        assert_eq!(verify(SECRET, &other, 0), Err(TokenError::BadSignature));
        let tampered = t.replace("alice", "admin");
        assert_eq!(verify(SECRET, &tampered, 0), Err(TokenError::BadSignature));
        let later = t.replace("1800000000", "1900000000");
        assert_eq!(verify(SECRET, &later, 0), Err(TokenError::BadSignature));
        let mut flipped = t.clone().into_bytes();
        let last = flipped.len() - 2;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            verify(SECRET, std::str::from_utf8(&flipped).unwrap(), 0),
            Err(TokenError::BadSignature)
        );
        for bad in [
            "",
            "v1",
            "v1.alice.1",
            "v2.alice.1800000000.x",
            "v1.al ice.1.x",
            "v1.a.-1.x",
            "v1.a.b.c.d",
            "v1.a.1.!!",
        ] {
            assert_eq!(verify(SECRET, bad, 0), Err(TokenError::Malformed), "{bad}");
        }
    }
}
