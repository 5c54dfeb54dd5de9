//! Edge gating against the real worker and a real redis-server: malformed requests, the
//! start flag, sold-out items and capped users are answered with no origin command; the edge
//! follows the operator within 2 s; a stopped or frozen origin fails closed and recovers with
//! the purchase path's invariants intact.

mod common;

use common::*;
use flashgate::keys::EventKeys;
use flashgate::native::load::{commandstats, commandstats_delta};
use flashgate::native::{now_ms, ops};
use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value as Json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

struct Req {
    method: &'static str,
    path: String,
    auth: Option<String>,
    ctype: Option<&'static str>,
    key: Option<String>,
    body: Vec<u8>,
}

impl Req {
    fn order(event: &str, body: impl Into<Vec<u8>>) -> Req {
        Req {
            method: "POST",
            path: format!("/api/events/{event}/orders"),
            auth: Some(format!("Bearer {}", token("edge-user"))),
            ctype: Some("application/json"),
            key: Some("key-edge-0001".into()),
            body: body.into(),
        }
    }
}

async fn send(c: &reqwest::Client, w: &Worker, r: &Req) -> (u16, Json, reqwest::header::HeaderMap) {
    let mut b = c
        .request(r.method.parse().unwrap(), w.url(&r.path))
        .body(r.body.clone());
    if let Some(a) = &r.auth {
        b = b.header("authorization", a);
    }
    if let Some(t) = r.ctype {
        b = b.header("content-type", t);
    }
    if let Some(k) = &r.key {
        b = b.header("idempotency-key", k);
    }
    let resp = b.send().await.unwrap();
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    (status, resp.json().await.unwrap_or(Json::Null), headers)
}

async fn buy(
    c: &reqwest::Client,
    w: &Worker,
    event: &str,
    user: &str,
    key: &str,
    sku: &str,
) -> (u16, Json) {
    let mut r = Req::order(event, json!({"items":[{"sku": sku, "qty": 1}]}).to_string());
    r.auth = Some(format!("Bearer {}", token(user)));
    r.key = Some(key.to_string());
    let (s, b, _) = send(c, w, &r).await;
    (s, b)
}

/// One attempt by `user` with `key`, which must be refused with `status`/`code`; the body.
#[allow(clippy::too_many_arguments)]
async fn refused(
    c: &reqwest::Client,
    w: &Worker,
    event: &str,
    user: &str,
    key: &str,
    sku: &str,
    status: u16,
    code: &str,
) -> Json {
    let (s, b) = buy(c, w, event, user, key, sku).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (status, Some(code)),
        "{user} {key}: {b}"
    );
    b
}

/// `n` users (`<who>0`, `<who>1`, ...) each try once; every answer must be `status`/`code`.
/// Returns the bodies.
#[allow(clippy::too_many_arguments)]
async fn expect_refused(
    c: &reqwest::Client,
    w: &Worker,
    event: &str,
    who: &str,
    n: usize,
    sku: &str,
    status: u16,
    code: &str,
) -> Vec<Json> {
    let mut bodies = Vec::with_capacity(n);
    for i in 0..n {
        bodies.push(
            refused(
                c,
                w,
                event,
                &format!("{who}{i}"),
                &format!("key-{who}-{i}"),
                sku,
                status,
                code,
            )
            .await,
        );
    }
    bodies
}

/// At least 40 malformed requests, each with its code, and not one origin command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_never_reach_the_origin() {
    let Sale {
        redis: _r,
        origin: o,
        worker: w,
        http: c,
    } = Sale::start(
        spec("bad", &[("A", 10)], -1000, (1, 5, 1)),
        &[("MAX_BODY_BYTES", "512")],
    )
    .await;
    let good = r#"{"items":[{"sku":"A","qty":1}]}"#;
    let expired = flashgate::token::mint(SECRET.as_bytes(), "edge-user", now_ms() / 1000 - 10);
    let forged = flashgate::token::mint(
        b"some-other-secret-0123456789",
        "edge-user",
        now_ms() / 1000 + 60,
    );
    let with = |f: &dyn Fn(&mut Req)| {
        let mut r = Req::order("bad", good);
        f(&mut r);
        r
    };
    let body = |b: &str| Req::order("bad", b);
    let cases: Vec<(&str, Req, u16, &str)> = vec![
        (
            "no content type",
            with(&|r| r.ctype = None),
            415,
            "unsupported_media_type",
        ),
        (
            "text/plain",
            with(&|r| r.ctype = Some("text/plain")),
            415,
            "unsupported_media_type",
        ),
        (
            "form",
            with(&|r| r.ctype = Some("application/x-www-form-urlencoded")),
            415,
            "unsupported_media_type",
        ),
        (
            "json-ish type",
            with(&|r| r.ctype = Some("application/jsonx")),
            415,
            "unsupported_media_type",
        ),
        (
            "body over the cap",
            with(&|r| {
                r.body =
                    format!(r#"{{"items":[{{"sku":"{}","qty":1}}]}}"#, "A".repeat(600)).into_bytes()
            }),
            413,
            "body_too_large",
        ),
        (
            "GET on orders",
            with(&|r| r.method = "GET"),
            405,
            "method_not_allowed",
        ),
        (
            "PUT on orders",
            with(&|r| r.method = "PUT"),
            405,
            "method_not_allowed",
        ),
        (
            "DELETE on orders",
            with(&|r| r.method = "DELETE"),
            405,
            "method_not_allowed",
        ),
        (
            "PATCH on orders",
            with(&|r| r.method = "PATCH"),
            405,
            "method_not_allowed",
        ),
        (
            "event id with a space",
            with(&|r| r.path = "/api/events/a%20b/orders".into()),
            400,
            "invalid_request",
        ),
        (
            "event id too long",
            with(&|r| r.path = format!("/api/events/{}/orders", "e".repeat(65))),
            400,
            "invalid_request",
        ),
        (
            "event id with braces",
            with(&|r| r.path = "/api/events/%7Bx%7D/orders".into()),
            400,
            "invalid_request",
        ),
        (
            "event id with a colon",
            with(&|r| r.path = "/api/events/a:b/orders".into()),
            400,
            "invalid_request",
        ),
        (
            "no identity",
            with(&|r| r.auth = None),
            401,
            "unauthenticated",
        ),
        (
            "basic auth",
            with(&|r| r.auth = Some("Basic dXNlcjpwYXNz".into())),
            401,
            "unauthenticated",
        ),
        (
            "empty bearer",
            with(&|r| r.auth = Some("Bearer ".into())),
            401,
            "unauthenticated",
        ),
        (
            "garbage token",
            with(&|r| r.auth = Some("Bearer not-a-token".into())),
            401,
            "unauthenticated",
        ),
        (
            "expired token",
            with(&|r| r.auth = Some(format!("Bearer {expired}"))),
            401,
            "unauthenticated",
        ),
        (
            "forged token",
            with(&|r| r.auth = Some(format!("Bearer {forged}"))),
            401,
            "unauthenticated",
        ),
        (
            "tampered token",
            with(&|r| {
                r.auth = Some(format!(
                    "Bearer {}",
                    token("edge-user").replace("edge-user", "edge-admin")
                ))
            }),
            401,
            "unauthenticated",
        ),
        (
            "no idempotency key",
            with(&|r| r.key = None),
            400,
            "invalid_request",
        ),
        (
            "short idempotency key",
            with(&|r| r.key = Some("short".into())),
            400,
            "invalid_request",
        ),
        (
            "long idempotency key",
            with(&|r| r.key = Some("k".repeat(65))),
            400,
            "invalid_request",
        ),
        (
            "idempotency key with a space",
            with(&|r| r.key = Some("key with space".into())),
            400,
            "invalid_request",
        ),
        (
            "idempotency key with a dot",
            with(&|r| r.key = Some("key.0000001".into())),
            400,
            "invalid_request",
        ),
        ("empty body", body(""), 400, "invalid_json"),
        (
            "truncated json",
            body(r#"{"items":[{"sku":"A""#),
            400,
            "invalid_json",
        ),
        ("not json", body("items=A"), 400, "invalid_json"),
        (
            "trailing garbage",
            body(r#"{"items":[{"sku":"A","qty":1}]} x"#),
            400,
            "invalid_json",
        ),
        ("a JSON array", body("[]"), 400, "invalid_request"),
        ("a JSON string", body(r#""A""#), 400, "invalid_request"),
        ("no items", body("{}"), 400, "invalid_request"),
        (
            "empty items",
            body(r#"{"items":[]}"#),
            400,
            "invalid_request",
        ),
        (
            "items not a list",
            body(r#"{"items":{"sku":"A"}}"#),
            400,
            "invalid_request",
        ),
        (
            "unknown top-level field",
            body(r#"{"items":[{"sku":"A","qty":1}],"price":0}"#),
            400,
            "invalid_request",
        ),
        (
            "unknown line field",
            body(r#"{"items":[{"sku":"A","qty":1,"discount":100}]}"#),
            400,
            "invalid_request",
        ),
        (
            "missing qty",
            body(r#"{"items":[{"sku":"A"}]}"#),
            400,
            "invalid_request",
        ),
        (
            "missing sku",
            body(r#"{"items":[{"qty":1}]}"#),
            400,
            "invalid_request",
        ),
        (
            "qty zero",
            body(r#"{"items":[{"sku":"A","qty":0}]}"#),
            400,
            "invalid_request",
        ),
        (
            "qty negative",
            body(r#"{"items":[{"sku":"A","qty":-2}]}"#),
            400,
            "invalid_request",
        ),
        (
            "qty fractional",
            body(r#"{"items":[{"sku":"A","qty":1.5}]}"#),
            400,
            "invalid_request",
        ),
        (
            "qty as a string",
            body(r#"{"items":[{"sku":"A","qty":"1"}]}"#),
            400,
            "invalid_request",
        ),
        (
            "qty huge",
            body(r#"{"items":[{"sku":"A","qty":99999999999}]}"#),
            400,
            "invalid_request",
        ),
        (
            "qty over the bound",
            body(r#"{"items":[{"sku":"A","qty":1001}]}"#),
            400,
            "invalid_request",
        ),
        (
            "sku empty",
            body(r#"{"items":[{"sku":"","qty":1}]}"#),
            400,
            "invalid_request",
        ),
        (
            "sku with a slash",
            body(r#"{"items":[{"sku":"A/B","qty":1}]}"#),
            400,
            "invalid_request",
        ),
        (
            "sku with braces",
            body(r#"{"items":[{"sku":"{A}","qty":1}]}"#),
            400,
            "invalid_request",
        ),
        (
            "sku too long",
            body(format!(r#"{{"items":[{{"sku":"{}","qty":1}}]}}"#, "S".repeat(65)).as_str()),
            400,
            "invalid_request",
        ),
        (
            "sku a number",
            body(r#"{"items":[{"sku":7,"qty":1}]}"#),
            400,
            "invalid_request",
        ),
        (
            "duplicate sku",
            body(r#"{"items":[{"sku":"A","qty":1},{"sku":"A","qty":1}]}"#),
            400,
            "invalid_request",
        ),
        (
            "too many lines",
            body(
                format!(
                    r#"{{"items":[{}]}}"#,
                    (0..11)
                        .map(|i| format!(r#"{{"sku":"S{i}","qty":1}}"#))
                        .collect::<Vec<_>>()
                        .join(",")
                )
                .as_str(),
            ),
            400,
            "invalid_request",
        ),
    ];
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let before = commandstats(&o).await.unwrap();
    for (what, req, status, code) in &cases {
        let (s, b, _) = send(&c, &w, req).await;
        assert_eq!(
            (s, b["error"]["code"].as_str().unwrap_or("")),
            (*status, *code),
            "{what}: {b}"
        );
    }
    assert_eq!(
        commandstats_delta(&before, &commandstats(&o).await.unwrap()),
        BTreeMap::new(),
        "malformed requests cost no origin command"
    );
    eprintln!("{} malformed requests, 0 origin commands", cases.len());
}

/// The edge follows `flashgate event start` and `pause` within 2 s, and before the start it
/// answers not_started (with Retry-After and server_time) without a purchase at the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_and_pause_are_followed_within_two_seconds() {
    let Sale {
        redis: r,
        origin: o,
        worker: w,
        http: c,
    } = Sale::start(spec("flip", &[("A", 100)], 3_600_000, (5, 50, 1)), &[]).await;

    let before = commandstats(&o).await.unwrap();
    let t0 = Instant::now();
    for b in expect_refused(&c, &w, "flip", "early", 200, "A", 409, "not_started").await {
        assert!(b["error"]["server_time"].is_string() && b["error"]["starts_at"].is_string());
    }
    let (_, _, headers) = send(
        &c,
        &w,
        &Req::order("flip", r#"{"items":[{"sku":"A","qty":1}]}"#),
    )
    .await;
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(
        (3500..=3600).contains(&retry),
        "Retry-After counts down to the start: {retry}"
    );
    let d = commandstats_delta(&before, &commandstats(&o).await.unwrap());
    let secs = t0.elapsed().as_secs() + 1;
    assert!(
        d.get("evalsha").copied().unwrap_or(0) <= secs + 1,
        "at most one snapshot read per second for 201 attempts over {secs} s: {d:?}"
    );
    assert_eq!(d.get("xadd"), None, "no purchase ran: {d:?}");

    // Start: live at the edge within 2 s.
    cli(&r.url(), &["event", "start", "flip"]);
    let t0 = Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        let (s, b) = buy(
            &c,
            &w,
            "flip",
            &format!("starter{n}"),
            &format!("key-start-{n}"),
            "A",
        )
        .await;
        if s == 201 {
            break;
        }
        assert_eq!(b["error"]["code"], "not_started");
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "not live after {:?}",
            t0.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let to_live = t0.elapsed();

    // Pause: refused at the edge within 2 s, with Retry-After.
    cli(&r.url(), &["event", "pause", "flip"]);
    let t0 = Instant::now();
    loop {
        n += 1;
        let mut req = Req::order("flip", r#"{"items":[{"sku":"A","qty":1}]}"#);
        req.auth = Some(format!("Bearer {}", token(&format!("pauser{n}"))));
        req.key = Some(format!("key-pause-{n}"));
        let (s, b, h) = send(&c, &w, &req).await;
        if b["error"]["code"] == "paused" {
            assert_eq!(s, 409);
            assert!(h.contains_key("retry-after"));
            break;
        }
        assert_eq!(s, 201);
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
    let ev = get_json(&c, w.url("/api/events/flip")).await;
    assert_eq!(ev["state"], "paused");
}

/// Once the origin has said an item is sold out, or a user is at a cap, the edge answers
/// further attempts itself: not one origin command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sold_out_and_capped_users_are_answered_at_the_edge() {
    // A long cache so that snapshot refreshes cannot blur the count.
    let Sale {
        redis: _r,
        origin: o,
        worker: w,
        http: c,
    } = Sale::start(
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
        assert_eq!(
            buy(
                &c,
                &w,
                "gone",
                &format!("buyer{u}"),
                &format!("key-gone-{u}"),
                "A"
            )
            .await
            .0,
            201
        );
    }
    // buyer0 also takes B: now at the total cap (2) and at B's daily cap.
    assert_eq!(
        buy(&c, &w, "gone", "buyer0", "key-gone-b0", "B").await.0,
        201
    );

    let before = commandstats(&o).await.unwrap();
    expect_refused(&c, &w, "gone", "late", 50, "A", 410, "sold_out").await;
    // The one attempt here that may succeed, and so reaches the origin.
    assert_eq!(buy(&c, &w, "gone", "buyer1", "key-b1-b", "B").await.0, 201);
    for i in 0..20 {
        // Sold out comes before the caps.
        refused(
            &c,
            &w,
            "gone",
            "buyer1",
            &format!("key-again-{i}"),
            "A",
            410,
            "sold_out",
        )
        .await;
        refused(
            &c,
            &w,
            "gone",
            "buyer0",
            &format!("key-more-{i}"),
            "B",
            403,
            "item_limit_reached",
        )
        .await;
        refused(
            &c,
            &w,
            "gone",
            "buyer0",
            &format!("key-total-{i}"),
            "C",
            403,
            "total_limit_reached",
        )
        .await;
        refused(
            &c,
            &w,
            "gone",
            "buyer1",
            &format!("key-b1-{i}"),
            "B",
            403,
            "item_limit_reached",
        )
        .await;
    }
    let d = client_commands(
        commandstats_delta(&before, &commandstats(&o).await.unwrap()),
        1,
    );
    assert_eq!(
        d,
        BTreeMap::from([("evalsha".to_string(), 1)]),
        "of 131 attempts only buyer1's B reached the origin"
    );

    // A retry of a placed order is a replay, answered at the edge too.
    let before = commandstats(&o).await.unwrap();
    let (s, b) = buy(&c, &w, "gone", "buyer2", "key-gone-2", "A").await;
    assert_eq!((s, b["replayed"].as_bool()), (201, Some(true)), "{b}");
    assert_eq!(
        commandstats_delta(&before, &commandstats(&o).await.unwrap()),
        BTreeMap::new()
    );
}

/// Per-user token bucket: 429 with Retry-After, no origin command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hammering_users_get_429() {
    let Sale {
        redis: _r,
        origin: o,
        worker: w,
        http: c,
    } = Sale::start(
        spec("fast", &[("A", 100)], 3_600_000, (1, 5, 1)),
        &[
            ("RATE_LIMIT_PER_SEC", "1"),
            ("RATE_LIMIT_BURST", "3"),
            ("EDGE_CACHE_MS", "60000"),
        ],
    )
    .await;
    let _ = buy(&c, &w, "fast", "warm", "key-warm-00", "A").await;
    let before = commandstats(&o).await.unwrap();
    let mut codes = Vec::new();
    for i in 0..6 {
        let mut req = Req::order("fast", r#"{"items":[{"sku":"A","qty":1}]}"#);
        req.key = Some(format!("key-fast-{i}"));
        let (s, b, h) = send(&c, &w, &req).await;
        if s == 429 {
            assert_eq!(h["retry-after"].to_str().unwrap(), "1");
        }
        codes.push(b["error"]["code"].as_str().unwrap_or("").to_string());
    }
    assert_eq!(codes[..3], ["not_started", "not_started", "not_started"]);
    assert_eq!(codes[3..], ["rate_limited", "rate_limited", "rate_limited"]);
    assert_eq!(
        commandstats_delta(&before, &commandstats(&o).await.unwrap()),
        BTreeMap::new()
    );
    // Another user is not affected.
    assert_eq!(
        buy(&c, &w, "fast", "someone-else", "key-else-01", "A")
            .await
            .1["error"]["code"],
        "not_started"
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
                let (s, b) = buy(c, w, "outage", &user, &key, "A").await;
                (user, key, s, b)
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
    let (_, _, h) = send(
        &c,
        &w,
        &Req::order("outage", r#"{"items":[{"sku":"A","qty":1}]}"#),
    )
    .await;
    assert!(h.contains_key("retry-after"));
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
        .cli(&["HGET", &k.sold, "A"])
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

/// Operator stats and structured decision logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_and_decision_logs() {
    let r = Redis::start();
    ops::create(
        &r.origin(),
        &spec("obs", &[("A", 1)], -1000, (1, 5, 1)),
        true,
    )
    .await
    .unwrap();
    let w = Worker::start(&[("ORIGIN_URL", &r.url())]);
    let c = http();
    assert_eq!(buy(&c, &w, "obs", "s1", "key-obs-001", "A").await.0, 201);
    assert_eq!(buy(&c, &w, "obs", "s2", "key-obs-002", "A").await.0, 410);
    let _ = send(&c, &w, &Req::order("obs", "{")).await;

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
    let s: Json = c
        .get(w.url("/api/stats"))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(s["decisions"]["placed"], 1, "{s}");
    assert_eq!(s["decisions"]["sold_out"], 1, "{s}");
    assert_eq!(s["decisions"]["invalid_json"], 1, "{s}");
    assert_eq!(s["forwarded"], 1, "{s}");
    assert_eq!(s["edge_rejected"], 2, "{s}");

    std::thread::sleep(Duration::from_millis(300));
    let log = w.log_text();
    let decisions: Vec<Json> = log
        .lines()
        .filter_map(|l| {
            l.find('{')
                .and_then(|i| serde_json::from_str::<Json>(&l[i..]).ok())
        })
        .filter(|j| j["msg"] == "decision")
        .collect();
    assert!(
        decisions
            .iter()
            .any(|d| d["code"] == "placed" && d["user"] == "s1" && d["edge"] == false),
        "{log}"
    );
    assert!(
        decisions
            .iter()
            .any(|d| d["code"] == "sold_out" && d["edge"] == true),
        "{log}"
    );
}

/// Cloudflare's rate-limiting binding, where `[[ratelimits]]` configures it (simulated by
/// `wrangler dev`): its refusals are 429s with no origin command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limiting_binding_is_consulted() {
    let r = Redis::start();
    let o = r.origin();
    ops::create(
        &o,
        &spec("bound", &[("A", 100)], 3_600_000, (1, 5, 1)),
        true,
    )
    .await
    .unwrap();
    let dir = std::env::temp_dir().join(format!("flashgate-rl-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("wrangler.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"flashgate-ratelimit-test\"\nmain = \"{root}/build/worker/shim.mjs\"\ncompatibility_date = \"2025-09-01\"\n\
             [assets]\ndirectory = \"{root}/static\"\nbinding = \"ASSETS\"\nrun_worker_first = [\"/api/*\"]\n\
             [[ratelimits]]\nname = \"RATE_LIMITER\"\nnamespace_id = \"1001\"\nsimple = {{ limit = 2, period = 10 }}\n",
            root = root().display()
        ),
    )
    .unwrap();
    let w = Worker::start_with(
        Some(&config),
        &[("ORIGIN_URL", &r.url()), ("EDGE_CACHE_MS", "60000")],
    );
    let c = http();
    let _ = buy(&c, &w, "bound", "warm", "key-warm-00", "A").await;
    let before = commandstats(&o).await.unwrap();
    let mut codes = Vec::new();
    for i in 0..4 {
        let (s, b) = buy(&c, &w, "bound", "limited", &format!("key-bound-{i}"), "A").await;
        codes.push((s, b["error"]["code"].as_str().unwrap_or("").to_string()));
    }
    assert_eq!(
        codes[..2],
        [
            (409, "not_started".to_string()),
            (409, "not_started".to_string())
        ]
    );
    assert_eq!(
        codes[2..],
        [
            (429, "rate_limited".to_string()),
            (429, "rate_limited".to_string())
        ]
    );
    assert_eq!(
        commandstats_delta(&before, &commandstats(&o).await.unwrap()),
        BTreeMap::new()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
