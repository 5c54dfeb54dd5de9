//! Entering a sale through the real worker (`wrangler dev`) and a real redis-server, with
//! Turnstile on and a stand-in siteverify on a local port (Cloudflare's own cannot be reached
//! from the test machine; docs/configuration.md has the production smoke with Cloudflare's
//! test keys). Covered: a pass, a fail, a 5xx retried once with the same idempotency key,
//! a siteverify that keeps failing (5xx) and one that cannot be reached (fail closed, 503 with
//! Retry-After); tickets as cookie and header buy; and a purchase with no ticket, a forged
//! ticket, another user's or another sale's is refused at no origin cost.

mod common;

use common::*;
use flashgate_core::line::{mint_ticket, Ticket, Window};
use flashgate_core::model::now_ms;
use serde_json::{json, Value as Json};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const TURNSTILE_SECRET: &str = "stand-in-secret-0AA";

/// One request the stand-in received: its content type and JSON body.
#[derive(Clone, Debug)]
struct Seen {
    content_type: String,
    body: Json,
}

/// A stand-in siteverify speaking Cloudflare's protocol, one request per connection
/// (`Connection: close`), so that stopping it leaves nothing listening. It answers by the
/// token: `pass…` passes, `fail…` fails with `invalid-input-response`, `flaky…` answers 500
/// to the first request with a given idempotency key and passes the next, `down…` always 500.
struct StandIn {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl StandIn {
    async fn start() -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let log = log.clone();
                tokio::spawn(async move {
                    let Some(s) = read_request(&mut sock).await else {
                        return;
                    };
                    let key = s.body["idempotency_key"].as_str().unwrap_or("").to_string();
                    let token = s.body["response"].as_str().unwrap_or("").to_string();
                    let earlier = {
                        let mut l = log.lock().unwrap();
                        let n = l
                            .iter()
                            .filter(|x| x.body["idempotency_key"] == key.as_str())
                            .count();
                        l.push(s.clone());
                        n
                    };
                    let good_secret = s.body["secret"] == TURNSTILE_SECRET;
                    let (status, body) = if !good_secret {
                        (
                            200,
                            json!({"success": false, "error-codes": ["invalid-input-secret"]}),
                        )
                    } else if token.starts_with("pass")
                        || (token.starts_with("flaky") && earlier > 0)
                    {
                        (
                            200,
                            json!({"success": true, "challenge_ts": "2026-12-02T06:00:00.000Z", "hostname": "127.0.0.1", "error-codes": [], "action": "", "cdata": ""}),
                        )
                    } else if token.starts_with("fail") {
                        (
                            200,
                            json!({"success": false, "error-codes": ["invalid-input-response"]}),
                        )
                    } else {
                        (
                            500,
                            json!({"success": false, "error-codes": ["internal-error"]}),
                        )
                    };
                    let body = body.to_string();
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(reply.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        StandIn { port, seen, task }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/turnstile/v0/siteverify", self.port)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Stops listening: from now on the port is closed.
    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Reads one HTTP/1.1 request: its content type and JSON body.
async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.trim().to_string())
    };
    let len: usize = header("content-length")?.parse().ok()?;
    while buf.len() < head_end + len {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(Seen {
        content_type: header("content-type").unwrap_or_default(),
        body: serde_json::from_slice(&buf[head_end..head_end + len]).ok()?,
    })
}

/// `POST /api/events/{event}/entry` as `user` with `body`.
async fn enter(sale: &Sale, event: &str, user: &str, body: Json) -> Answer {
    sale.send(&Req {
        method: "POST",
        path: format!("/api/events/{event}/entry"),
        auth: Some(format!("Bearer {}", token(user))),
        ctype: Some("application/json"),
        key: None,
        body: body.to_string().into_bytes(),
    })
    .await
}

/// `user` buys one A in the sale with key `key`, sending `ticket` in the `Flashgate-Entry`
/// header or, with `cookie`, as the `fg_entry` cookie.
async fn buy(sale: &Sale, user: &str, key: &str, ticket: Option<&str>, cookie: bool) -> Answer {
    let r = Req::purchase(&sale.event, user, key, &["A"]);
    let mut b = sale
        .http
        .post(sale.worker.url(&r.path))
        .header("authorization", r.auth.unwrap())
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(r.body);
    match (ticket, cookie) {
        (Some(t), false) => b = b.header("flashgate-entry", t),
        (Some(t), true) => b = b.header("cookie", format!("fg_entry={t}")),
        (None, _) => {}
    }
    let resp = b.send().await.unwrap();
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    Answer {
        request: format!("POST {} key {key} ticket {ticket:?}", r.path),
        status,
        body: resp.json().await.unwrap_or(Json::Null),
        headers,
    }
}

fn ticket_for(user: &str, event: &str, secret: &[u8]) -> String {
    mint_ticket(
        secret,
        &Ticket {
            event: event.into(),
            user: user.into(),
            window: Window::Early,
            exp: now_ms() / 1000 + 3600,
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turnstile_at_entry_and_tickets_at_purchase() {
    let stand = StandIn::start().await;
    let url = stand.url();
    let sale = Sale::start(
        spec("entry", &[("A", 100)], -1000, (5, 50, 1)),
        &[
            ("TURNSTILE_SECRET", TURNSTILE_SECRET),
            ("TURNSTILE_SITE_KEY", "1x00000000000000000000AA"),
            ("TURNSTILE_VERIFY_URL", &url),
        ],
    )
    .await;
    let later = spec("later", &[("A", 10)], 3_600_000, (5, 50, 1));
    flashgate_core::ops::create(&sale.origin, &later, true)
        .await
        .unwrap();

    // The page learns the site key from the public view.
    let view = get_json(&sale.http, sale.worker.url("/api/events/entry")).await;
    assert_eq!(view["turnstile_site_key"], "1x00000000000000000000AA");

    // No token: refused without asking siteverify.
    let b = enter(&sale, "entry", "alice", json!({}))
        .await
        .refused(403, "turnstile_failed");
    assert_eq!(b["error"]["error_codes"], json!(["missing-input-response"]));
    assert!(stand.seen().is_empty());

    // Fail: Cloudflare's error codes are passed on, no ticket.
    let a = enter(&sale, "entry", "alice", json!({"turnstile": "fail-1"})).await;
    assert!(a.headers.get("set-cookie").is_none());
    let b = a.refused(403, "turnstile_failed");
    assert_eq!(b["error"]["error_codes"], json!(["invalid-input-response"]));
    let seen = stand.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].content_type, "application/json");
    assert_eq!(seen[0].body["secret"], TURNSTILE_SECRET);
    assert_eq!(seen[0].body["response"], "fail-1");
    let key = seen[0].body["idempotency_key"].as_str().unwrap();
    assert_eq!(key.len(), 36, "a UUID: {key}");

    // Pass (the widget's own field name), after the start: a late window.
    let a = enter(
        &sale,
        "entry",
        "alice",
        json!({"cf-turnstile-response": "pass-1"}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let cookie = a.headers["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("Secure")
            && cookie.contains("SameSite=Strict")
            && cookie.contains("Path=/api/events/entry"),
        "{cookie}"
    );
    assert_eq!(a.body["early"], false);
    let alice_ticket = a.body["ticket"].as_str().unwrap().to_string();
    assert!(cookie.starts_with(&format!("fg_entry={alice_ticket};")));

    // Before the start: early.
    let a = enter(&sale, "later", "bob", json!({"turnstile": "pass-2"})).await;
    assert_eq!(
        (a.status, &a.body["early"]),
        (200, &json!(true)),
        "{}",
        a.body
    );
    let bob_later = a.body["ticket"].as_str().unwrap().to_string();
    // Carol's own ticket, but for another sale: refused for the sale alone.
    let carol_later = ticket_for("carol", "later", SECRET.as_bytes());

    // A 5xx is retried once with the same idempotency key, and then passes.
    let before = stand.seen().len();
    let a = enter(&sale, "entry", "bob", json!({"turnstile": "flaky-1"})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let bob_ticket = a.body["ticket"].as_str().unwrap().to_string();
    let seen = stand.seen()[before..].to_vec();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].body, seen[1].body, "the same verification twice");

    // siteverify keeps failing: fail closed.
    let a = enter(&sale, "entry", "carol", json!({"turnstile": "down-1"})).await;
    assert!(a.headers.get("retry-after").is_some());
    a.refused(503, "turnstile_unavailable");

    // Tickets buy, as a header or as the cookie.
    let a = buy(&sale, "alice", "key-alice-1", Some(&alice_ticket), false).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let a = buy(&sale, "bob", "key-bob-1", Some(&bob_ticket), true).await;
    assert_eq!(a.status, 201, "{}", a.body);

    // Refused at the edge, at no origin cost: no ticket, a forged one, another user's,
    // another sale's.
    let forged = ticket_for("carol", "entry", b"not-the-identity-secret-0123");
    let ((), d) = sale
        .commands_during(async || {
            for i in 0..5 {
                buy(&sale, "carol", &format!("key-none-{i}"), None, false)
                    .await
                    .refused(403, "entry_required");
                for (t, cookie) in [
                    (&forged, false),
                    (&forged, true),
                    (&alice_ticket, false),
                    (&bob_later, true),
                    (&carol_later, false),
                ] {
                    buy(&sale, "carol", &format!("key-bad-{i}"), Some(t), cookie)
                        .await
                        .refused(403, "bad_ticket");
                }
            }
        })
        .await;
    assert!(d.is_empty(), "no origin command: {d:?}");

    // siteverify cannot be reached: fail closed, 503 with Retry-After, and no ticket.
    stand.stop().await;
    let a = enter(&sale, "entry", "dave", json!({"turnstile": "pass-3"})).await;
    assert!(a.headers.get("retry-after").is_some());
    assert!(a.headers.get("set-cookie").is_none());
    a.refused(503, "turnstile_unavailable");
    // A shopper who already holds a ticket re-enters without a second check, and keeps it.
    let resp = sale
        .http
        .post(sale.worker.url("/api/events/entry/entry"))
        .bearer_auth(token("alice"))
        .header("cookie", format!("fg_entry={alice_ticket}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let b: Json = resp.json().await.unwrap();
    assert_eq!(b["ticket"], alice_ticket.as_str());
    let logs = sale.worker.log_text();
    assert!(
        logs.contains("siteverify unavailable"),
        "the cause is logged"
    );
}
