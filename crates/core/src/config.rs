//! Worker configuration, read once per isolate from vars and secrets and validated.
//! Production code may rely on every field being valid.
//!
//! | name | kind | default | meaning |
//! |---|---|---|---|
//! | `ORIGIN_URL` | var | — | `redis://` / `rediss://` (RESP over TCP) or `http(s)://` (JSON command API) |
//! | `ORIGIN_HTTP_DIALECT` | var | `dragonfly` | `dragonfly` (`/api`, Basic auth) or `upstash` (Bearer) |
//! | `ORIGIN_PASSWORD` | secret | none | RESP AUTH password, Dragonfly requirepass, or the Upstash token |
//! | `ORIGIN_TIMEOUT_MS` | var | 1500 | bound on every origin call |
//! | `ORIGIN_REPLICA_ACKS` | var | 0 | replicas that must acknowledge a placed or settled order before it is answered as done (`WAIT`); 0 = do not wait; refused with the Upstash dialect |
//! | `ORIGIN_REPLICA_ACK_MS` | var | 100 | how long to wait for them (10 to 5000) |
//! | `IDENTITY_SECRET` | secret | — | HMAC key for identity tokens, at least 16 bytes |
//! | `OPERATOR_TOKEN` | secret | none | bearer token for `GET /api/stats`; stats are off without it |
//! | `EDGE_CACHE_MS` | var | 1000 | how long an event snapshot is used before a refresh |
//! | `RATE_LIMIT_PER_SEC` / `RATE_LIMIT_BURST` | var | 5 / 10 | per-user token bucket for purchases (0 = off) |
//! | `MAX_BODY_BYTES` | var | 4096 | purchase body cap |
//! | `DEV_SIGNIN` | var | `false` | `true` enables `POST /api/dev/session` (never in production) |
//! | `ADMISSION` | var | `on` | `off` forwards every surviving attempt (no shedding to the origin budget) |
//! | `TURNSTILE_SECRET` | secret | none | Turnstile secret key: when set, `POST …/entry` requires a Turnstile token checked with siteverify, and purchases require an entry ticket |
//! | `TURNSTILE_SITE_KEY` | var | none | Turnstile site key the sale page renders the widget with (only with `TURNSTILE_SECRET`) |
//! | `TURNSTILE_VERIFY_URL` | var | Cloudflare's siteverify | where siteverify is (`http(s)://`); tests point it at a stand-in |
//! | `SHOP_API_TOKEN` | secret | none | HMAC key (at least 16 bytes) the shop's payment service signs `POST …/orders/{id}/pay` and `…/cancel` with (`crates/core/src/shop.rs`); the shop API is off without it |
//! | `CHECKOUT_URL` | var | none | the shop's checkout link for a pending order, `{id}` → the order id, `{ref}` → its signed reference (needs `SHOP_API_TOKEN`); shown in the shopper's orders |
//! | `LOG_SAMPLE_RATE` | var | 0.01 | share of edge refusals logged; placed orders, 5xx and origin errors are always logged |

use crate::edge::EdgeConfig;
use crate::origin::http::{Dialect, HttpConfig};
use crate::origin::resp::RespConfig;
use crate::origin::Acks;
use crate::token::MIN_SECRET_LEN;
use crate::turnstile::{TurnstileConfig, DEFAULT_VERIFY_URL};

#[derive(Clone, Debug, PartialEq)]
pub enum OriginConfig {
    Resp(RespConfig),
    Http(HttpConfig),
}

impl OriginConfig {
    /// `resp`, `http-dragonfly` or `http-upstash`, for health and logs.
    pub fn transport(&self) -> &'static str {
        match self {
            OriginConfig::Resp(_) => "resp",
            OriginConfig::Http(h) if h.dialect == Dialect::Upstash => "http-upstash",
            OriginConfig::Http(_) => "http-dragonfly",
        }
    }

    pub fn timeout_ms(&self) -> u64 {
        match self {
            OriginConfig::Resp(r) => r.timeout_ms,
            OriginConfig::Http(h) => h.timeout_ms,
        }
    }

    /// Makes every write script wait for `acks` replicas. Upstash's REST API has no WAIT and
    /// replicates on its own terms, so a wait cannot be honoured there.
    pub fn with_acks(mut self, acks: Option<Acks>) -> Result<OriginConfig, String> {
        match &mut self {
            OriginConfig::Resp(r) => r.acks = acks,
            OriginConfig::Http(h) if h.dialect == Dialect::Upstash && acks.is_some() => {
                return Err("ORIGIN_REPLICA_ACKS cannot be honoured with ORIGIN_HTTP_DIALECT=upstash (no WAIT; Upstash replicates on its own terms): set it to 0, or use RESP or Dragonfly".into())
            }
            OriginConfig::Http(h) => h.acks = acks,
        }
        Ok(self)
    }

    pub fn parse(
        url: &str,
        dialect: &str,
        password: Option<String>,
        timeout_ms: u64,
    ) -> Result<OriginConfig, String> {
        if url.starts_with("redis://") || url.starts_with("rediss://") {
            let mut c = RespConfig::from_url(url, timeout_ms)?;
            if c.password.is_none() {
                c.password = password;
            }
            Ok(OriginConfig::Resp(c))
        } else {
            let d = Dialect::parse(dialect).ok_or_else(|| {
                format!("ORIGIN_HTTP_DIALECT must be dragonfly or upstash, not {dialect:?}")
            })?;
            Ok(OriginConfig::Http(HttpConfig::new(
                url, d, password, timeout_ms,
            )?))
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub origin: OriginConfig,
    pub identity_secret: Vec<u8>,
    pub operator_token: Option<String>,
    pub edge: EdgeConfig,
    pub max_body_bytes: usize,
    pub dev_signin: bool,
    /// Share (0 to 1) of refusals that get a decision log line.
    pub log_sample_rate: f64,
    /// Shed attempts beyond the event's origin budget (`ADMISSION`, on by default).
    pub admission: bool,
    /// Turnstile at entry (`TURNSTILE_SECRET`); off when `None`.
    pub turnstile: Option<TurnstileConfig>,
    /// The shop API's key (`SHOP_API_TOKEN`); the shop API is off when `None`.
    pub shop_api_token: Option<Vec<u8>>,
    /// The checkout link template (`CHECKOUT_URL`).
    pub checkout_url: Option<String>,
}

impl Config {
    /// Reads and checks every setting; the error names the setting and what is wrong.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let get = |k: &str| {
            get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        fn num<T: std::str::FromStr>(
            v: Option<String>,
            name: &str,
            default: T,
        ) -> Result<T, String> {
            match v {
                None => Ok(default),
                Some(s) => s
                    .parse()
                    .map_err(|_| format!("{name} must be a number, not {s:?}")),
            }
        }
        let timeout_ms: u64 = num(get("ORIGIN_TIMEOUT_MS"), "ORIGIN_TIMEOUT_MS", 1500)?;
        if !(10..=30_000).contains(&timeout_ms) {
            return Err("ORIGIN_TIMEOUT_MS must be 10 to 30000".into());
        }
        let url = get("ORIGIN_URL").ok_or("ORIGIN_URL is not set")?;
        let dialect = get("ORIGIN_HTTP_DIALECT").unwrap_or_else(|| "dragonfly".into());
        let replicas: u32 = num(get("ORIGIN_REPLICA_ACKS"), "ORIGIN_REPLICA_ACKS", 0)?;
        let ack_ms: u64 = num(get("ORIGIN_REPLICA_ACK_MS"), "ORIGIN_REPLICA_ACK_MS", 100)?;
        if !(10..=5_000).contains(&ack_ms) {
            return Err("ORIGIN_REPLICA_ACK_MS must be 10 to 5000".into());
        }
        let acks = (replicas > 0).then_some(Acks {
            replicas,
            timeout_ms: ack_ms,
        });
        let origin = OriginConfig::parse(&url, &dialect, get("ORIGIN_PASSWORD"), timeout_ms)?
            .with_acks(acks)?;
        let secret = get("IDENTITY_SECRET")
            .ok_or("IDENTITY_SECRET is not set (wrangler secret put IDENTITY_SECRET)")?;
        if secret.len() < MIN_SECRET_LEN {
            return Err(format!(
                "IDENTITY_SECRET must be at least {MIN_SECRET_LEN} bytes"
            ));
        }
        let cache_ms: i64 = num(get("EDGE_CACHE_MS"), "EDGE_CACHE_MS", 1000)?;
        if !(0..=60_000).contains(&cache_ms) {
            return Err("EDGE_CACHE_MS must be 0 to 60000".into());
        }
        let rate_per_sec: f64 = num(get("RATE_LIMIT_PER_SEC"), "RATE_LIMIT_PER_SEC", 5.0)?;
        let rate_burst: f64 = num(get("RATE_LIMIT_BURST"), "RATE_LIMIT_BURST", 10.0)?;
        if !(rate_per_sec >= 0.0 && rate_burst >= 1.0) {
            return Err("RATE_LIMIT_PER_SEC must be ≥ 0 and RATE_LIMIT_BURST ≥ 1".into());
        }
        let max_body_bytes: usize = num(get("MAX_BODY_BYTES"), "MAX_BODY_BYTES", 4096)?;
        let admission = match get("ADMISSION").as_deref() {
            None | Some("on") => true,
            Some("off") => false,
            Some(other) => return Err(format!("ADMISSION must be on or off, not {other:?}")),
        };
        let log_sample_rate: f64 = num(get("LOG_SAMPLE_RATE"), "LOG_SAMPLE_RATE", 0.01)?;
        if !(0.0..=1.0).contains(&log_sample_rate) {
            return Err("LOG_SAMPLE_RATE must be 0 to 1".into());
        }
        let dev_signin = match get("DEV_SIGNIN").as_deref() {
            None | Some("false") | Some("0") => false,
            Some("true") | Some("1") => true,
            Some(other) => return Err(format!("DEV_SIGNIN must be true or false, not {other:?}")),
        };
        let turnstile = turnstile(&get)?;
        let (shop_api_token, checkout_url) = shop(&get)?;
        Ok(Config {
            origin,
            identity_secret: secret.into_bytes(),
            operator_token: get("OPERATOR_TOKEN"),
            edge: EdgeConfig {
                cache_ms,
                lease_ms: timeout_ms as i64,
                rate_per_sec,
                rate_burst,
            },
            max_body_bytes,
            dev_signin,
            log_sample_rate,
            admission,
            turnstile,
            shop_api_token,
            checkout_url,
        })
    }
}

type ShopSettings = (Option<Vec<u8>>, Option<String>);

fn shop(get: &impl Fn(&str) -> Option<String>) -> Result<ShopSettings, String> {
    let token = get("SHOP_API_TOKEN");
    if token.as_ref().is_some_and(|t| t.len() < MIN_SECRET_LEN) {
        return Err(format!(
            "SHOP_API_TOKEN must be at least {MIN_SECRET_LEN} bytes"
        ));
    }
    let checkout = get("CHECKOUT_URL");
    if let Some(url) = &checkout {
        if !(url.starts_with("https://") || url.starts_with("http://")) || !url.contains("{id}") {
            return Err(
                "CHECKOUT_URL must be an http(s):// link with {id} where the order id goes".into(),
            );
        }
        if url.contains("{ref}") && token.is_none() {
            return Err("CHECKOUT_URL uses {ref}, which is signed with SHOP_API_TOKEN: set it (wrangler secret put SHOP_API_TOKEN)".into());
        }
    }
    Ok((token.map(String::into_bytes), checkout))
}

fn turnstile(get: &impl Fn(&str) -> Option<String>) -> Result<Option<TurnstileConfig>, String> {
    let site_key = get("TURNSTILE_SITE_KEY");
    let verify_url = get("TURNSTILE_VERIFY_URL").unwrap_or_else(|| DEFAULT_VERIFY_URL.into());
    if !(verify_url.starts_with("https://") || verify_url.starts_with("http://")) {
        return Err("TURNSTILE_VERIFY_URL must start with http:// or https://".into());
    }
    match get("TURNSTILE_SECRET") {
        None if site_key.is_some() => Err(
            "TURNSTILE_SITE_KEY is set without TURNSTILE_SECRET: the page would show a check nobody verifies (wrangler secret put TURNSTILE_SECRET)".into(),
        ),
        None => Ok(None),
        Some(secret) => Ok(Some(TurnstileConfig {
            secret,
            site_key,
            verify_url,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    const BASE: [(&str, &str); 2] = [
        ("ORIGIN_URL", "redis://127.0.0.1:6379"),
        ("IDENTITY_SECRET", "0123456789abcdef"),
    ];

    #[test]
    fn defaults() {
        let c = cfg(&BASE).unwrap();
        assert_eq!(c.origin.transport(), "resp");
        assert_eq!(
            (
                c.edge.cache_ms,
                c.max_body_bytes,
                c.dev_signin,
                c.operator_token
            ),
            (1000, 4096, false, None)
        );
    }

    #[test]
    fn http_dialects_and_password() {
        for (url, extra, transport) in [
            (
                "https://df.example.com",
                ("ORIGIN_PASSWORD", "pw"),
                "http-dragonfly",
            ),
            (
                "https://x.upstash.io",
                ("ORIGIN_HTTP_DIALECT", "upstash"),
                "http-upstash",
            ),
        ] {
            let c = cfg(&[BASE[1], ("ORIGIN_URL", url), extra]).unwrap();
            assert_eq!(c.origin.transport(), transport);
        }
        let OriginConfig::Resp(r) = cfg(&[BASE[0], BASE[1], ("ORIGIN_PASSWORD", "pw")])
            .unwrap()
            .origin
        else {
            panic!()
        };
        assert_eq!(r.password.as_deref(), Some("pw"));
    }

    #[test]
    fn replica_acks() {
        let acks = |c: Config| match c.origin {
            OriginConfig::Resp(r) => r.acks,
            OriginConfig::Http(h) => h.acks,
        };
        assert_eq!(acks(cfg(&BASE).unwrap()), None, "off by default");
        let on = cfg(&[BASE[0], BASE[1], ("ORIGIN_REPLICA_ACKS", "1")]).unwrap();
        assert_eq!(
            acks(on),
            Some(Acks {
                replicas: 1,
                timeout_ms: 100
            })
        );
        let df = [
            BASE[1],
            ("ORIGIN_URL", "https://df.example.com"),
            ("ORIGIN_REPLICA_ACKS", "2"),
            ("ORIGIN_REPLICA_ACK_MS", "250"),
        ];
        assert_eq!(
            acks(cfg(&df).unwrap()),
            Some(Acks {
                replicas: 2,
                timeout_ms: 250
            })
        );
        let upstash = [
            BASE[1],
            ("ORIGIN_URL", "https://x.upstash.io"),
            ("ORIGIN_HTTP_DIALECT", "upstash"),
            ("ORIGIN_REPLICA_ACKS", "1"),
        ];
        assert!(cfg(&upstash)
            .unwrap_err()
            .starts_with("ORIGIN_REPLICA_ACKS cannot"));
        assert!(cfg(&[BASE[0], BASE[1], ("ORIGIN_REPLICA_ACK_MS", "5")])
            .unwrap_err()
            .starts_with("ORIGIN_REPLICA_ACK_MS"));
    }

    #[test]
    fn shop_settings() {
        let c = cfg(&BASE).unwrap();
        assert_eq!(
            (c.shop_api_token, c.checkout_url),
            (None, None),
            "off by default"
        );
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut all = BASE.to_vec();
            all.extend_from_slice(extra);
            cfg(&all)
        };
        let c = with(&[
            ("SHOP_API_TOKEN", "shop-secret-0123456789"),
            ("CHECKOUT_URL", "https://shop.example/pay?o={id}&r={ref}"),
        ])
        .unwrap();
        assert_eq!(
            c.shop_api_token.as_deref(),
            Some(&b"shop-secret-0123456789"[..])
        );
        assert!(with(&[("SHOP_API_TOKEN", "short")]).is_err());
        assert!(
            with(&[("CHECKOUT_URL", "https://shop.example/pay")]).is_err(),
            "no {{id}}"
        );
        assert!(with(&[("CHECKOUT_URL", "shop.example/{id}")]).is_err());
        let unsigned = with(&[("CHECKOUT_URL", "https://shop.example/pay?o={id}&r={ref}")]);
        assert!(unsigned.unwrap_err().contains("SHOP_API_TOKEN"));
        assert!(with(&[("CHECKOUT_URL", "https://shop.example/pay?o={id}")]).is_ok());
    }

    #[test]
    fn turnstile_settings() {
        assert_eq!(cfg(&BASE).unwrap().turnstile, None, "off by default");
        let t = cfg(&[BASE[0], BASE[1], ("TURNSTILE_SECRET", "s3cret")])
            .unwrap()
            .turnstile
            .unwrap();
        assert_eq!(
            (t.secret.as_str(), t.site_key, t.verify_url.as_str()),
            ("s3cret", None, DEFAULT_VERIFY_URL)
        );
        let t = cfg(&[
            BASE[0],
            BASE[1],
            ("TURNSTILE_SECRET", "s"),
            ("TURNSTILE_SITE_KEY", "1x00000000000000000000AA"),
            ("TURNSTILE_VERIFY_URL", "http://127.0.0.1:9/siteverify"),
        ])
        .unwrap()
        .turnstile
        .unwrap();
        assert_eq!(t.site_key.as_deref(), Some("1x00000000000000000000AA"));
        assert_eq!(t.verify_url, "http://127.0.0.1:9/siteverify");
        assert!(
            !format!("{t:?}").contains("\"s\""),
            "the secret stays out of Debug"
        );
        assert!(cfg(&[BASE[0], BASE[1], ("TURNSTILE_SITE_KEY", "k")])
            .unwrap_err()
            .starts_with("TURNSTILE_SITE_KEY is set without"));
        assert!(cfg(&[
            BASE[0],
            BASE[1],
            ("TURNSTILE_SECRET", "s"),
            ("TURNSTILE_VERIFY_URL", "ftp://x")
        ])
        .unwrap_err()
        .starts_with("TURNSTILE_VERIFY_URL"));
    }

    #[test]
    fn errors_name_the_setting() {
        assert_eq!(cfg(&[BASE[1]]).unwrap_err(), "ORIGIN_URL is not set");
        assert!(cfg(&[BASE[0]])
            .unwrap_err()
            .starts_with("IDENTITY_SECRET is not set"));
        assert!(cfg(&[BASE[0], ("IDENTITY_SECRET", "short")])
            .unwrap_err()
            .contains("at least 16"));
        assert!(cfg(&[BASE[0], BASE[1], ("EDGE_CACHE_MS", "soon")])
            .unwrap_err()
            .starts_with("EDGE_CACHE_MS"));
        assert!(cfg(&[BASE[0], BASE[1], ("DEV_SIGNIN", "yes")])
            .unwrap_err()
            .starts_with("DEV_SIGNIN"));
        assert!(cfg(&[BASE[1], ("ORIGIN_URL", "ftp://x")])
            .unwrap_err()
            .contains("must start with http"));
    }
}
