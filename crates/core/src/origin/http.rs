//! The HTTP JSON command API, in two dialects, as pure functions over bytes.
//!
//! | | Dragonfly `/api` | Upstash REST |
//! |---|---|---|
//! | request | `POST <base>/api`, a non-empty JSON array of strings only | `POST <base>/`, a JSON array (numbers allowed) |
//! | auth | HTTP Basic, user `default`, password = requirepass | `Authorization: Bearer <token>` |
//! | success | 200 `{"result": v}` | 200 `{"result": v}` |
//! | failure | 200 `{"error": "msg"}`; codes keep a dash: `-NOSCRIPT ...` | 400 `{"error": "ERR ..."}` |
//!
//! Integers are JSON numbers, nil is `null`, arrays nest. The client side
//! ([`HttpConfig::request`], [`decode_response`]) is what the worker sends; the server side
//! ([`parse_command`], [`encode_response`]) is what `flashgate bridge` answers. Golden tests
//! pin both to the table above.

use super::{Cmd, OriginError, ServerError, ServerErrorKind, Value};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value as Json};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Dragonfly,
    Upstash,
}

impl Dialect {
    pub fn parse(s: &str) -> Option<Dialect> {
        match s {
            "dragonfly" => Some(Dialect::Dragonfly),
            "upstash" => Some(Dialect::Upstash),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Dragonfly => "dragonfly",
            Dialect::Upstash => "upstash",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpConfig {
    /// `http(s)://host[:port]`, no trailing slash.
    pub base: String,
    pub dialect: Dialect,
    /// Dragonfly: the requirepass password. Upstash: the REST token.
    pub secret: Option<String>,
    pub timeout_ms: u64,
    /// Replicas every write script must reach (Dragonfly: WAIT, a second request after the
    /// script). Upstash replicates on its own terms: the configuration refuses it there.
    pub acks: Option<super::Acks>,
}

/// A request to send, as plain data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRequest {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl HttpConfig {
    pub fn new(
        url: &str,
        dialect: Dialect,
        secret: Option<String>,
        timeout_ms: u64,
    ) -> Result<HttpConfig, String> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "origin URL {url:?} must start with http:// or https://"
            ));
        }
        let base = url.trim_end_matches('/');
        let base = base.strip_suffix("/api").unwrap_or(base).to_string();
        Ok(HttpConfig {
            base,
            dialect,
            secret,
            timeout_ms,
            acks: None,
        })
    }

    pub fn request(&self, cmd: &Cmd) -> HttpRequest {
        let mut headers = vec![("content-type", "application/json".to_string())];
        let url = match self.dialect {
            Dialect::Dragonfly => {
                if let Some(pw) = &self.secret {
                    headers.push((
                        "authorization",
                        format!("Basic {}", STANDARD.encode(format!("default:{pw}"))),
                    ));
                }
                format!("{}/api", self.base)
            }
            Dialect::Upstash => {
                if let Some(t) = &self.secret {
                    headers.push(("authorization", format!("Bearer {t}")));
                }
                format!("{}/", self.base)
            }
        };
        HttpRequest {
            url,
            headers,
            body: Json::from(cmd.args.clone()).to_string(),
        }
    }
}

/// Turns an HTTP answer into a reply. Statuses that mean "refused before running" (400, 401,
/// 403, 404, 405, 413, 415) are NotSent; other non-2xx statuses may have run.
pub fn decode_response(dialect: Dialect, status: u16, body: &str) -> Result<Value, OriginError> {
    let parsed: Option<Json> = serde_json::from_str(body).ok();
    if let Some(Json::Object(o)) = &parsed {
        if let Some(r) = o.get("result") {
            if (200..300).contains(&status) {
                return Ok(from_json(r));
            }
        }
        if let Some(Json::String(e)) = o.get("error") {
            // Upstash answers command errors with 400; Dragonfly with 200.
            if status == 200 || (dialect == Dialect::Upstash && status == 400) {
                return Err(OriginError::Server(server_error(e)));
            }
        }
    } else if status == 200 && dialect == Dialect::Dragonfly {
        // Dragonfly does not JSON-escape error text; read it raw.
        if let Some(e) = body
            .strip_prefix("{\"error\":")
            .and_then(|b| b.trim().strip_suffix('}'))
        {
            return Err(OriginError::Server(server_error(
                e.trim().trim_matches('"'),
            )));
        }
    }
    let snippet: String = body.chars().take(120).collect();
    let msg = format!("origin HTTP {status}: {snippet}");
    match status {
        400 | 401 | 403 | 404 | 405 | 413 | 415 => Err(OriginError::not_sent(msg)),
        _ => Err(OriginError::may_have_run(msg)),
    }
}

fn server_error(text: &str) -> ServerError {
    let coded = text
        .split_whitespace()
        .next()
        .is_some_and(|w| w.len() > 1 && w.bytes().all(|b| b.is_ascii_uppercase()));
    if text.starts_with('-') || coded {
        ServerError::parse(text)
    } else {
        ServerError {
            kind: ServerErrorKind::Err,
            line: format!("ERR {text}"),
        }
    }
}

fn from_json(j: &Json) -> Value {
    match j {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Int(i64::from(*b)),
        Json::Number(n) => n
            .as_i64()
            .map(Value::Int)
            .unwrap_or_else(|| Value::Str(n.to_string())),
        Json::String(s) => Value::Str(s.clone()),
        Json::Array(a) => Value::Array(a.iter().map(from_json).collect()),
        Json::Object(o) => Value::Array(
            o.iter()
                .flat_map(|(k, v)| [Value::Str(k.clone()), from_json(v)])
                .collect(),
        ),
    }
}

fn to_json(v: &Value) -> Json {
    match v {
        Value::Nil => Json::Null,
        Value::Int(i) => json!(i),
        Value::Str(s) => json!(s),
        Value::Array(a) => Json::Array(a.iter().map(to_json).collect()),
    }
}

/// Server side: the command in a request body, or the error text to answer with.
pub fn parse_command(dialect: Dialect, body: &[u8]) -> Result<Vec<String>, String> {
    const BAD: &str = "Failed to parse json";
    let Ok(Json::Array(items)) = serde_json::from_slice::<Json>(body) else {
        return Err(BAD.into());
    };
    if items.is_empty() {
        return Err(BAD.into());
    }
    items
        .into_iter()
        .map(|j| match (dialect, j) {
            (_, Json::String(s)) => Ok(s),
            (Dialect::Upstash, Json::Number(n)) => Ok(n.to_string()),
            _ => Err(BAD.to_string()),
        })
        .collect()
}

/// Server side: the HTTP status and body for a reply.
pub fn encode_response(dialect: Dialect, reply: &Result<Value, ServerError>) -> (u16, String) {
    match (dialect, reply) {
        (_, Ok(v)) => (200, json!({ "result": to_json(v) }).to_string()),
        (Dialect::Dragonfly, Err(e)) => {
            // Generic errors drop their ERR; coded ones keep a leading dash.
            let text = match e.line.strip_prefix("ERR ") {
                Some(rest) => rest.to_string(),
                None => format!("-{}", e.line),
            };
            (200, json!({ "error": text }).to_string())
        }
        (Dialect::Upstash, Err(e)) => (400, json!({ "error": e.line }).to_string()),
    }
}

/// Server side: the error body for a request that could not be parsed or authorised.
pub fn encode_request_error(message: &str) -> String {
    json!({ "error": message }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request an EVALSHA becomes in `dialect`, sent to `url` with `secret`.
    fn evalsha(url: &str, dialect: Dialect, secret: &str) -> HttpRequest {
        let c = HttpConfig::new(url, dialect, Some(secret.into()), 1000).unwrap();
        c.request(&Cmd::new(["EVALSHA", "abc", "1", "fg:{e}:meta", "42"]))
    }

    #[test]
    fn golden_dragonfly_request() {
        let r = evalsha("http://127.0.0.1:6380/api/", Dialect::Dragonfly, "pw");
        assert_eq!(r.url, "http://127.0.0.1:6380/api");
        assert_eq!(
            r.body, r#"["EVALSHA","abc","1","fg:{e}:meta","42"]"#,
            "strings only"
        );
        assert!(r
            .headers
            .contains(&("authorization", "Basic ZGVmYXVsdDpwdw==".into())));
    }

    #[test]
    fn golden_upstash_request() {
        let r = evalsha("https://eu1-x.upstash.io", Dialect::Upstash, "tok");
        assert_eq!(r.url, "https://eu1-x.upstash.io/");
        assert!(r.headers.contains(&("authorization", "Bearer tok".into())));
    }

    #[test]
    fn golden_replies() {
        use Dialect::*;
        assert_eq!(
            decode_response(Dragonfly, 200, r#"{"result":[0,"x",null,[1]]}"#),
            Ok(Value::Array(vec![
                Value::Int(0),
                Value::Str("x".into()),
                Value::Nil,
                Value::Array(vec![Value::Int(1)])
            ]))
        );
        let e = decode_response(
            Dragonfly,
            200,
            r#"{"error":"-NOSCRIPT No matching script. Please use EVAL."}"#,
        )
        .unwrap_err();
        assert!(e.is_noscript());
        let e = decode_response(
            Upstash,
            400,
            r#"{"error":"NOSCRIPT No matching script. Please use EVAL."}"#,
        )
        .unwrap_err();
        assert!(e.is_noscript());
        let e = decode_response(
            Dragonfly,
            200,
            r#"{"error":"wrong number of arguments for 'get' command"}"#,
        )
        .unwrap_err();
        assert_eq!(
            e,
            OriginError::Server(ServerError {
                kind: ServerErrorKind::Err,
                line: "ERR wrong number of arguments for 'get' command".into()
            })
        );
        // Unescaped quotes in Dragonfly's error text still read as an error.
        let e = decode_response(Dragonfly, 200, r#"{"error":"-ERR bad "thing""}"#).unwrap_err();
        assert!(matches!(e, OriginError::Server(_)));
        assert!(!decode_response(Dragonfly, 401, "unauthorized")
            .unwrap_err()
            .ran_maybe());
        assert!(decode_response(Dragonfly, 502, "bad gateway")
            .unwrap_err()
            .ran_maybe());
    }

    #[test]
    fn golden_bridge_side() {
        use Dialect::*;
        assert_eq!(
            parse_command(Dragonfly, br#"["PING"]"#),
            Ok(vec!["PING".to_string()])
        );
        for bad in [&br#"["SET","k",1]"#[..], b"[]", b"{}", b"[null]", b"nope"] {
            assert_eq!(
                parse_command(Dragonfly, bad),
                Err("Failed to parse json".to_string())
            );
        }
        assert_eq!(
            parse_command(Upstash, br#"["SET","k",1]"#),
            Ok(vec!["SET".into(), "k".into(), "1".into()])
        );
        assert_eq!(
            encode_response(Dragonfly, &Ok(Value::Int(3))),
            (200, r#"{"result":3}"#.into())
        );
        assert_eq!(
            encode_response(Dragonfly, &Ok(Value::Nil)),
            (200, r#"{"result":null}"#.into())
        );
        let noscript = Err(ServerError::parse(
            "NOSCRIPT No matching script. Please use EVAL.",
        ));
        assert_eq!(
            encode_response(Dragonfly, &noscript),
            (
                200,
                r#"{"error":"-NOSCRIPT No matching script. Please use EVAL."}"#.into()
            )
        );
        assert_eq!(
            encode_response(Upstash, &noscript),
            (
                400,
                r#"{"error":"NOSCRIPT No matching script. Please use EVAL."}"#.into()
            )
        );
        let generic = Err(ServerError::parse("ERR unknown command 'FOO'"));
        assert_eq!(
            encode_response(Dragonfly, &generic).1,
            r#"{"error":"unknown command 'FOO'"}"#
        );
    }

    #[test]
    fn round_trip_through_both_sides() {
        for d in [Dialect::Dragonfly, Dialect::Upstash] {
            for reply in [
                Ok(Value::Array(vec![
                    Value::Int(-1),
                    Value::Str("é\"\n".into()),
                    Value::Nil,
                ])),
                Err(ServerError::parse("NOSCRIPT x")),
                Err(ServerError::parse("MOVED 1 h:1")),
            ] {
                let (status, body) = encode_response(d, &reply);
                assert_eq!(
                    decode_response(d, status, &body),
                    reply.clone().map_err(OriginError::Server),
                    "{d:?}"
                );
            }
        }
    }
}
