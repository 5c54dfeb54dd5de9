//! Edge gating against the real worker and a real redis-server: malformed requests, the
//! start flag, sold-out items and capped users are answered with no origin command; the edge
//! follows the operator within 2 s; a stopped or frozen origin fails closed and recovers with
//! the purchase path's invariants intact.

mod common;

use common::*;
use flashgate_core::keys::EventKeys;
use flashgate_core::model::now_ms;
use flashgate_core::ops;
use futures_util::stream::{self, StreamExt};
use serde_json::Value as Json;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

/// What a malformed case changes in a well-formed order by `edge-user`.
enum Change<'a> {
    ContentType(Option<&'static str>),
    Method(&'static str),
    /// The event id in the path.
    Event(&'a str),
    /// The whole `Authorization` header.
    Auth(Option<&'a str>),
    /// The `Idempotency-Key` header.
    Key(Option<&'a str>),
    Body(&'a str),
}

impl Change<'_> {
    fn request(&self, event: &str) -> Req {
        let mut r = Req::purchase(event, "edge-user", "key-edge-0001", &["A"]);
        match *self {
            Change::ContentType(t) => r.ctype = t,
            Change::Method(m) => r.method = m,
            Change::Event(e) => r.path = format!("/api/events/{e}/orders"),
            Change::Auth(a) => r.auth = a.map(str::to_string),
            Change::Key(k) => r.key = k.map(str::to_string),
            Change::Body(b) => r.body = b.as_bytes().to_vec(),
        }
        r
    }
}

/// At least 40 malformed requests, each with its code, and not one origin command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_never_reach_the_origin() {
    let sale = Sale::start(
        spec("bad", &[("A", 10)], -1000, (1, 5, 1)),
        &[("MAX_BODY_BYTES", "512")],
    )
    .await;
    let bearer = |t: String| format!("Bearer {t}");
    let expired = bearer(flashgate_core::token::mint(
        SECRET.as_bytes(),
        "edge-user",
        now_ms() / 1000 - 10,
    ));
    let forged = bearer(flashgate_core::token::mint(
        b"some-other-secret-0123456789",
        "edge-user",
        now_ms() / 1000 + 60,
    ));
    let tampered = bearer(token("edge-user").replace("edge-user", "edge-admin"));
    let line = |sku: &str| format!(r#"{{"sku":"{sku}","qty":1}}"#);
    let over_the_cap = format!(r#"{{"items":[{}]}}"#, line(&"A".repeat(600)));
    let long_sku = format!(r#"{{"items":[{}]}}"#, line(&"S".repeat(65)));
    let eleven_lines: Vec<String> = (0..11).map(|i| line(&format!("S{i}"))).collect();
    let eleven_lines = format!(r#"{{"items":[{}]}}"#, eleven_lines.join(","));
    let (long_event, long_key) = ("e".repeat(65), "k".repeat(65));

    use Change::*;
    #[rustfmt::skip]
    let cases = [
        ((415, "unsupported_media_type"), vec![
            ("no content type", ContentType(None)),
            ("text/plain", ContentType(Some("text/plain"))),
            ("form", ContentType(Some("application/x-www-form-urlencoded"))),
            ("json-ish type", ContentType(Some("application/jsonx"))),
        ]),
        ((413, "body_too_large"), vec![
            ("body over the cap", Body(&over_the_cap)),
        ]),
        ((405, "method_not_allowed"), vec![
            ("PUT on orders", Method("PUT")),
            ("DELETE on orders", Method("DELETE")),
            ("PATCH on orders", Method("PATCH")),
        ]),
        ((401, "unauthenticated"), vec![
            ("no identity", Auth(None)),
            ("basic auth", Auth(Some("Basic dXNlcjpwYXNz"))),
            ("empty bearer", Auth(Some("Bearer "))),
            ("garbage token", Auth(Some("Bearer not-a-token"))),
            ("expired token", Auth(Some(&expired))),
            ("forged token", Auth(Some(&forged))),
            ("tampered token", Auth(Some(&tampered))),
        ]),
        ((400, "invalid_json"), vec![
            ("empty body", Body("")),
            ("truncated json", Body(r#"{"items":[{"sku":"A""#)),
            ("not json", Body("items=A")),
            ("trailing garbage", Body(r#"{"items":[{"sku":"A","qty":1}]} x"#)),
        ]),
        ((400, "invalid_request"), vec![
            ("event id with a space", Event("a%20b")),
            ("event id too long", Event(&long_event)),
            ("event id with braces", Event("%7Bx%7D")),
            ("event id with a colon", Event("a:b")),
            ("no idempotency key", Key(None)),
            ("short idempotency key", Key(Some("short"))),
            ("long idempotency key", Key(Some(&long_key))),
            ("idempotency key with a space", Key(Some("key with space"))),
            ("idempotency key with a dot", Key(Some("key.0000001"))),
            ("a JSON array", Body("[]")),
            ("a JSON string", Body(r#""A""#)),
            ("no items", Body("{}")),
            ("empty items", Body(r#"{"items":[]}"#)),
            ("items not a list", Body(r#"{"items":{"sku":"A"}}"#)),
            ("unknown top-level field", Body(r#"{"items":[{"sku":"A","qty":1}],"price":0}"#)),
            ("unknown line field", Body(r#"{"items":[{"sku":"A","qty":1,"discount":100}]}"#)),
            ("missing qty", Body(r#"{"items":[{"sku":"A"}]}"#)),
            ("missing sku", Body(r#"{"items":[{"qty":1}]}"#)),
            ("qty zero", Body(r#"{"items":[{"sku":"A","qty":0}]}"#)),
            ("qty negative", Body(r#"{"items":[{"sku":"A","qty":-2}]}"#)),
            ("qty fractional", Body(r#"{"items":[{"sku":"A","qty":1.5}]}"#)),
            ("qty as a string", Body(r#"{"items":[{"sku":"A","qty":"1"}]}"#)),
            ("qty huge", Body(r#"{"items":[{"sku":"A","qty":99999999999}]}"#)),
            ("qty over the bound", Body(r#"{"items":[{"sku":"A","qty":1001}]}"#)),
            ("sku empty", Body(r#"{"items":[{"sku":"","qty":1}]}"#)),
            ("sku with a slash", Body(r#"{"items":[{"sku":"A/B","qty":1}]}"#)),
            ("sku with braces", Body(r#"{"items":[{"sku":"{A}","qty":1}]}"#)),
            ("sku too long", Body(&long_sku)),
            ("sku a number", Body(r#"{"items":[{"sku":7,"qty":1}]}"#)),
            ("duplicate sku", Body(r#"{"items":[{"sku":"A","qty":1},{"sku":"A","qty":1}]}"#)),
            ("too many lines", Body(&eleven_lines)),
        ]),
    ];
    let n: usize = cases.iter().map(|(_, group)| group.len()).sum();
    assert!(n >= 40, "{n} cases");
    let ((), d) = sale
        .commands_during(async || {
            for ((status, code), group) in &cases {
                for (what, change) in group {
                    let a = sale.send(&change.request("bad")).await;
                    assert_eq!(
                        (a.status, a.code()),
                        (*status, Some(*code)),
                        "{what}: {}",
                        a.body
                    );
                }
            }
        })
        .await;
    assert_eq!(
        d,
        BTreeMap::new(),
        "malformed requests cost no origin command"
    );
    eprintln!("{n} malformed requests, 0 origin commands");
}

/// The edge follows `flashgate event start` and `pause` within 2 s, and before the start it
/// answers not_started (with Retry-After and server_time) without a purchase at the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_and_pause_are_followed_within_two_seconds() {
    let sale = Sale::start(spec("flip", &[("A", 100)], 3_600_000, (5, 50, 1)), &[]).await;

    let (t0, d) = sale
        .commands_during(async || {
            let t0 = Instant::now();
            for a in sale.newcomers("early", 200, "A").await {
                let b = a.refused(409, "not_started");
                assert!(
                    b["error"]["server_time"].is_string() && b["error"]["starts_at"].is_string()
                );
            }
            let a = sale.buy("edge-user", "key-edge-0001", &["A"]).await;
            let retry: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
            assert!(
                (3500..=3600).contains(&retry),
                "Retry-After counts down to the start: {retry}"
            );
            t0
        })
        .await;
    let secs = t0.elapsed().as_secs() + 1;
    // A snapshot is kept for EDGE_CACHE_MS (1 s) less up to a quarter (`edge::fresh_for`).
    let most = (secs * 4).div_ceil(3) + 1;
    assert!(
        d.get("evalsha").copied().unwrap_or(0) <= most,
        "at most one snapshot read per 750 ms for 201 attempts over {secs} s: {d:?}"
    );
    assert_eq!(d.get("xadd"), None, "no purchase ran: {d:?}");

    // Start: live at the edge within 2 s.
    cli(&sale.redis.url(), &["event", "start", "flip"]);
    let t0 = Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        let a = sale
            .buy(&format!("starter{n}"), &format!("key-start-{n}"), &["A"])
            .await;
        if a.status == 201 {
            break;
        }
        assert_eq!(a.body["error"]["code"], "not_started");
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "not live after {:?}",
            t0.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let to_live = t0.elapsed();

    // Pause: refused at the edge within 2 s, with Retry-After.
    cli(&sale.redis.url(), &["event", "pause", "flip"]);
    let t0 = Instant::now();
    loop {
        n += 1;
        let a = sale
            .buy(&format!("pauser{n}"), &format!("key-pause-{n}"), &["A"])
            .await;
        if a.body["error"]["code"] == "paused" {
            assert_eq!(a.status, 409);
            assert!(a.headers.contains_key("retry-after"));
            break;
        }
        assert_eq!(a.status, 201);
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "not paused after {:?}",
            t0.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "edge followed start in {to_live:?} and pause in {:?}",
        t0.elapsed()
    );
    let ev = get_json(&sale.http, sale.worker.url("/api/events/flip")).await;
    assert_eq!(ev["state"], "paused");
}

/// Once the origin has said an item is sold out, or a user is at a cap, the edge answers
/// further attempts itself: not one origin command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sold_out_and_capped_users_are_answered_at_the_edge() {
    // A long cache so that snapshot refreshes cannot blur the count.
    let sale = Sale::start(
        spec(
            "gone",
            &[("A", 3), ("B", 100), ("C", 100)],
            -1000,
            (1, 2, 1),
        ),
        &[("EDGE_CACHE_MS", "60000")],
    )
    .await;
    for u in 0..3 {
        let (user, key) = (format!("buyer{u}"), format!("key-gone-{u}"));
        assert_eq!(sale.buy(&user, &key, &["A"]).await.status, 201);
    }
    // buyer0 also takes B: now at the total cap (2) and at B's daily cap.
    assert_eq!(sale.buy("buyer0", "key-gone-b0", &["B"]).await.status, 201);

    let ((), d) = sale
        .commands_during(async || {
            for a in sale.newcomers("late", 50, "A").await {
                a.refused(410, "sold_out");
            }
            // The one attempt here that may succeed, and so reaches the origin.
            assert_eq!(sale.buy("buyer1", "key-b1-b", &["B"]).await.status, 201);
            for i in 0..20 {
                // Sold out comes before the caps.
                for (user, key, sku, status, code) in [
                    ("buyer1", "again", "A", 410, "sold_out"),
                    ("buyer0", "more", "B", 403, "item_limit_reached"),
                    ("buyer0", "total", "C", 403, "total_limit_reached"),
                    ("buyer1", "b1", "B", 403, "item_limit_reached"),
                ] {
                    let key = format!("key-{key}-{i}");
                    sale.buy(user, &key, &[sku]).await.refused(status, code);
                }
            }
        })
        .await;
    assert_eq!(
        client_commands(d, 1),
        BTreeMap::from([("evalsha".to_string(), 1)]),
        "of 131 attempts only buyer1's B reached the origin"
    );

    // A retry of a placed order is a replay, answered at the edge too.
    let (a, d) = sale
        .commands_during(async || sale.buy("buyer2", "key-gone-2", &["A"]).await)
        .await;
    assert_eq!(
        (a.status, a.body["replayed"].as_bool()),
        (201, Some(true)),
        "{}",
        a.body
    );
    assert_eq!(d, BTreeMap::new());
}

/// Per-user token bucket: 429 with Retry-After, no origin command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hammering_users_get_429() {
    let sale = Sale::start(
        spec("fast", &[("A", 100)], 3_600_000, (1, 5, 1)),
        &[
            ("RATE_LIMIT_PER_SEC", "1"),
            ("RATE_LIMIT_BURST", "3"),
            ("EDGE_CACHE_MS", "60000"),
        ],
    )
    .await;
    let _ = sale.buy("warm", "key-warm-00", &["A"]).await;
    let (answers, d) = sale
        .commands_during(async || sale.tries("edge-user", 6, "A").await)
        .await;
    let mut codes = Vec::new();
    for a in &answers {
        if a.status == 429 {
            assert_eq!(a.headers["retry-after"].to_str().unwrap(), "1");
        }
        codes.push(a.code().unwrap_or(""));
    }
    assert_eq!(codes[..3], ["not_started", "not_started", "not_started"]);
    assert_eq!(codes[3..], ["rate_limited", "rate_limited", "rate_limited"]);
    assert_eq!(d, BTreeMap::new());
    // Another user is not affected.
    assert_eq!(
        sale.buy("someone-else", "key-else-01", &["A"]).await.code(),
        Some("not_started")
    );
}

/// An origin that is stopped, or frozen past the timeout, gives origin_unavailable with
/// Retry-After; nothing is half-done, retries with the same keys are safe, and afterwards the
/// invariants hold: sold = units in placed orders = queued orders' units, nobody over a cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_down_mid_sale_fails_closed_and_recovers() {
    let mut r = Redis::start_durable();
    ops::create(
        &r.origin(),
        &spec("outage", &[("A", 60)], -1000, (1, 1, 1)),
        true,
    )
    .await
    .unwrap();
    let w = Worker::start(&[("ORIGIN_URL", &r.url()), ("ORIGIN_TIMEOUT_MS", "300")]);
    let c = http();

    let attempts: Vec<(String, String)> = (0..150)
        .map(|u| (format!("o{u}"), format!("key-outage-{u}")))
        .collect();
    let round = |list: Vec<(String, String)>| {
        let (c, w) = (&c, &w);
        stream::iter(list)
            .map(move |(user, key)| async move {
                let a = w
                    .send(c, &Req::purchase("outage", &user, &key, &["A"]))
                    .await;
                (user, key, a.status, a.body)
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
    };
    let mut answers: HashMap<String, (u16, Json)> = HashMap::new();
    let first = round(attempts[..50].to_vec()).await;
    for (_, k, s, b) in first {
        answers.insert(k, (s, b));
    }

    // Down: refused connections.
    r.stop();
    let during = round(attempts[50..100].to_vec()).await;
    for (_, _, s, b) in &during {
        assert_eq!(
            (*s, b["error"]["code"].as_str()),
            (503, Some("origin_unavailable")),
            "{b}"
        );
    }
    let a = w
        .send(
            &c,
            &Req::purchase("outage", "edge-user", "key-edge-0001", &["A"]),
        )
        .await;
    assert!(a.headers.contains_key("retry-after"));
    r.restart();

    // Slow: frozen past the 300 ms timeout.
    r.freeze(true);
    let frozen = round(attempts[100..130].to_vec()).await;
    r.freeze(false);
    for (_, _, s, b) in &frozen {
        assert_eq!(
            (*s, b["error"]["code"].as_str()),
            (503, Some("origin_unavailable")),
            "{b}"
        );
    }

    // Recovery: everyone retries with the same key until the answer is final.
    let mut pending: Vec<(String, String)> = attempts.clone();
    for pass in 0..20 {
        let got = round(pending.clone()).await;
        pending.clear();
        for (u, k, s, b) in got {
            if s == 503 {
                pending.push((u, k));
            } else {
                answers.insert(k, (s, b));
            }
        }
        if pending.is_empty() {
            break;
        }
        assert!(pass < 19, "still unavailable: {}", pending.len());
        std::thread::sleep(Duration::from_millis(300));
    }

    let mut placed = HashSet::new();
    for (key, (s, b)) in &answers {
        match *s {
            201 => {
                placed.insert(b["order"]["id"].as_str().unwrap().to_string());
            }
            _ => assert_eq!(b["error"]["code"], "sold_out", "{key}: {b}"),
        }
    }
    let o = r.origin();
    let k = EventKeys::new("outage");
    let sold = r
        .cli(&["HGET", &k.meta, "sold:A"])
        .trim()
        .parse::<usize>()
        .unwrap();
    assert_eq!(sold, 60, "sold out exactly");
    assert_eq!(
        placed.len(),
        60,
        "one placed order per unit, each answered 201 in the end"
    );
    let queued = placed_order_ids(&o, "outage").await;
    assert_eq!(queued, placed, "the queue holds exactly the placed orders");
}

/// The decisions the worker logged (JSON lines with `"msg":"decision"`).
fn decisions(log: &str) -> Vec<Json> {
    log.lines()
        .filter_map(|l| {
            l.find('{')
                .and_then(|i| serde_json::from_str::<Json>(&l[i..]).ok())
        })
        .filter(|j| j["msg"] == "decision")
        .collect()
}

/// Operator stats and structured decision logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_and_decision_logs() {
    let sale = Sale::start(spec("obs", &[("A", 1)], -1000, (1, 5, 1)), &[]).await;
    let (c, w) = (&sale.http, &sale.worker);
    assert_eq!(sale.buy("s1", "key-obs-001", &["A"]).await.status, 201);
    assert_eq!(sale.buy("s2", "key-obs-002", &["A"]).await.status, 410);
    let mut truncated = Req::purchase("obs", "edge-user", "key-edge-0001", &["A"]);
    truncated.body = b"{".to_vec();
    let _ = sale.send(&truncated).await;

    assert_eq!(
        c.get(w.url("/api/stats")).send().await.unwrap().status(),
        401
    );
    assert_eq!(
        c.get(w.url("/api/stats"))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let s = sale.stats().await;
    assert_eq!(s["decisions"]["placed"], 1, "{s}");
    assert_eq!(s["decisions"]["sold_out"], 1, "{s}");
    assert_eq!(s["decisions"]["invalid_json"], 1, "{s}");
    assert_eq!(s["forwarded"], 1, "{s}");
    assert_eq!(s["edge_rejected"], 2, "{s}");

    let logged = |what: fn(&Json) -> bool| {
        eventually(Duration::from_secs(10), || {
            decisions(&w.log_text()).iter().any(what)
        })
    };
    assert!(
        logged(|d| d["code"] == "placed" && d["user"] == "s1" && d["edge"] == false),
        "{}",
        w.log_text()
    );
    assert!(
        logged(|d| d["code"] == "sold_out" && d["edge"] == true),
        "{}",
        w.log_text()
    );
}

/// Cloudflare's rate-limiting binding, where `[[ratelimits]]` configures it (simulated by
/// `wrangler dev`): its refusals are 429s with no origin command. The binding counts in fixed
/// windows of its period; 60 s (not 10 s) makes a window turning over mid-test rare.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limiting_binding_is_consulted() {
    let dir = std::env::temp_dir().join(format!("flashgate-rl-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("wrangler.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"flashgate-ratelimit-test\"\nmain = \"{root}/build/worker/shim.mjs\"\ncompatibility_date = \"2025-09-01\"\n\
             [[ratelimits]]\nname = \"RATE_LIMITER\"\nnamespace_id = \"1001\"\nsimple = {{ limit = 2, period = 60 }}\n",
            root = root().display()
        ),
    )
    .unwrap();
    let sale = Sale::start_with(
        Some(&config),
        spec("bound", &[("A", 100)], 3_600_000, (1, 5, 1)),
        &[("EDGE_CACHE_MS", "60000")],
    )
    .await;
    let _ = sale.buy("warm", "key-warm-00", &["A"]).await;
    let (answers, d) = sale
        .commands_during(async || sale.tries("limited", 4, "A").await)
        .await;
    let codes: Vec<(u16, &str)> = answers
        .iter()
        .map(|a| (a.status, a.code().unwrap_or("")))
        .collect();
    assert_eq!(codes[..2], [(409, "not_started"), (409, "not_started")]);
    assert_eq!(codes[2..], [(429, "rate_limited"), (429, "rate_limited")]);
    assert_eq!(d, BTreeMap::new());
    // This config binds no PAGES: the gate answers only /api/* and says where the pages are.
    let page = sale.http.get(sale.worker.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 404);
    assert!(page.text().await.unwrap().contains("flashgate-pages"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The optional Workers Analytics Engine binding (`DECISIONS`). `wrangler dev` simulates it and
/// drops the data points, so this checks what can be seen locally: with the binding bound,
/// every decision is written without a failure (a failed write is logged) and answers do not
/// change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_go_to_the_analytics_engine_binding_when_bound() {
    let dir = std::env::temp_dir().join(format!("flashgate-ae-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("wrangler.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"flashgate-analytics-test\"\nmain = \"{root}/build/worker/shim.mjs\"\ncompatibility_date = \"2025-09-01\"\n\
             [[analytics_engine_datasets]]\nbinding = \"DECISIONS\"\ndataset = \"flashgate_decisions\"\n",
            root = root().display()
        ),
    )
    .unwrap();
    let sale = Sale::start_with(
        Some(&config),
        spec("ae", &[("A", 1)], -1000, (1, 5, 1)),
        &[("LOG_SAMPLE_RATE", "1")],
    )
    .await;
    assert_eq!(sale.buy("a1", "key-ae-0001", &["A"]).await.status, 201);
    assert_eq!(sale.buy("a2", "key-ae-0002", &["A"]).await.status, 410);
    let mut truncated = Req::purchase("ae", "a3", "key-ae-0003", &["A"]);
    truncated.body = b"{".to_vec();
    assert_eq!(sale.send(&truncated).await.status, 400);
    let s = sale.stats().await;
    assert_eq!(s["decisions"]["placed"], 1, "{s}");
    assert_eq!(s["decisions"]["sold_out"], 1, "{s}");
    assert_eq!(s["decisions"]["invalid_json"], 1, "{s}");
    // Every decision is logged (LOG_SAMPLE_RATE=1); once the last is, no write has failed.
    let w = &sale.worker;
    assert!(
        eventually(Duration::from_secs(10), || decisions(&w.log_text())
            .iter()
            .any(|d| d["code"] == "invalid_json")),
        "{}",
        w.log_text()
    );
    assert!(
        !w.log_text().contains(r#""msg":"analytics""#),
        "{}",
        w.log_text()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
