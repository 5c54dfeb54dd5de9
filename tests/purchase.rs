//! The purchase path end to end: a real redis-server (or Redis Cluster), the real worker
//! under `wrangler dev`, over both transports (RESP sockets, and HTTP through the bridge in
//! both dialects). Invariants are checked at the origin after thousands of concurrent
//! attempts: sold = stock, nobody over a cap, one queued order per 201, replays identical.

mod common;

use common::*;
use flashgate_core::keys::EventKeys;
use flashgate_core::model::now_ms;
use flashgate_core::net::NativeOrigin;
use flashgate_core::ops;
use flashgate_core::origin::{Cmd, Origin, Value};
use futures_util::stream::{self, StreamExt};
use std::collections::{BTreeMap, HashMap, HashSet};

async fn strings(o: &NativeOrigin, args: &[&str]) -> Value {
    o.call(&Cmd::new(args.iter().copied())).await.unwrap()
}

fn hash(v: &Value) -> HashMap<String, String> {
    let a = v.as_array().unwrap();
    a.chunks(2)
        .map(|c| {
            (
                c[0].as_str().unwrap().to_string(),
                c[1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Thousands of concurrent attempts from over a thousand users, with multi-item orders and
/// replays, through a worker whose origin is `transport_url`; afterwards every invariant holds
/// at the origin.
async fn crowd(transport_url: &str, origin: &NativeOrigin, event: &str) {
    // 64 attempts in flight through one wrangler dev, on a CI machine that may be running
    // other suites: the default 1.5 s origin bound is a production figure, not this one's.
    let w = Worker::start(&[("ORIGIN_URL", transport_url), ("ORIGIN_TIMEOUT_MS", "8000")]);
    ops::create(
        origin,
        &spec(event, &[("A", 100), ("B", 37)], -1000, (1, 2, 1)),
        true,
    )
    .await
    .unwrap();
    let c = http();

    // 1200 users, 2 intents each (A, B or A+B), every third intent sent twice (a replay).
    let mut attempts = Vec::new();
    for u in 0..1200 {
        for i in 0..2 {
            let skus: Vec<&str> = match (u + i) % 3 {
                0 => vec!["A"],
                1 => vec!["B"],
                _ => vec!["A", "B"],
            };
            let key = format!("k-{u}-{i}-intent");
            let copies = if (u + i) % 3 == 0 { 2 } else { 1 };
            for _ in 0..copies {
                attempts.push((format!("user{u}"), key.clone(), skus.clone()));
            }
        }
    }
    assert!(attempts.len() > 3000);
    let results: Vec<(String, String, Vec<&str>, Answer)> = stream::iter(attempts)
        .map(|(user, key, skus)| {
            let (c, w) = (&c, &w);
            async move {
                let a = w.send(c, &Req::purchase(event, &user, &key, &skus)).await;
                (user, key, skus, a)
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;

    let mut placed_units: HashMap<String, u64> = HashMap::new();
    let mut placed_ids = HashSet::new();
    let mut by_key: HashMap<String, Vec<(String, bool)>> = HashMap::new();
    let mut codes: HashMap<String, u64> = HashMap::new();
    for (_, key, _, r) in &results {
        let code = match r.status {
            201 => {
                let id = r.body["order"]["id"].as_str().unwrap().to_string();
                let replayed = r.body["replayed"].as_bool().unwrap();
                by_key
                    .entry(key.clone())
                    .or_default()
                    .push((id.clone(), replayed));
                if !replayed {
                    assert!(placed_ids.insert(id), "an order id was placed twice");
                    for l in r.body["order"]["lines"].as_array().unwrap() {
                        *placed_units
                            .entry(l["sku"].as_str().unwrap().to_string())
                            .or_default() += l["qty"].as_u64().unwrap();
                    }
                }
                if replayed { "replayed" } else { "placed" }.to_string()
            }
            _ => r.body["error"]["code"].as_str().unwrap_or("?").to_string(),
        };
        *codes.entry(code).or_default() += 1;
    }
    let allowed = [
        "placed",
        "replayed",
        "sold_out",
        "item_limit_reached",
        "total_limit_reached",
    ];
    for c in codes.keys() {
        assert!(
            allowed.contains(&c.as_str()),
            "unexpected outcome {c}: {codes:?}"
        );
    }

    // Sold equals stock exactly, and equals the units the 201s promised.
    let k = EventKeys::new(event);
    let meta = hash(&strings(origin, &["HGETALL", &k.meta]).await);
    assert_eq!(
        meta.get("sold:A").map(String::as_str),
        Some("100"),
        "{codes:?}"
    );
    assert_eq!(
        meta.get("sold:B").map(String::as_str),
        Some("37"),
        "{codes:?}"
    );
    assert_eq!(placed_units.get("A"), Some(&100));
    assert_eq!(placed_units.get("B"), Some(&37));

    // The queue holds exactly one order per placed 201, and they are the same orders.
    let queued = placed_order_ids(origin, event).await;
    assert_eq!(queued.len(), placed_ids.len());
    assert_eq!(queued, placed_ids);

    // Replays return the same order; at most one placement per key.
    for (key, seen) in &by_key {
        let ids: HashSet<_> = seen.iter().map(|(id, _)| id).collect();
        assert_eq!(
            ids.len(),
            1,
            "key {key} answered different orders: {seen:?}"
        );
        assert_eq!(
            seen.iter().filter(|(_, r)| !r).count(),
            1,
            "key {key}: {seen:?}"
        );
    }
    assert!(
        codes.get("replayed").copied().unwrap_or(0) > 0,
        "some replays raced a placed order: {codes:?}"
    );

    // Nobody over a cap (1 per item per day, 2 in total).
    for u in 0..1200 {
        let h = hash(&strings(origin, &["HGETALL", &k.user(&format!("user{u}"))]).await);
        let total: u64 = h.get("t").map(|t| t.parse().unwrap()).unwrap_or(0);
        assert!(total <= 2, "user{u} bought {total}");
        let per_item: u64 = h
            .iter()
            .filter(|(f, _)| f.starts_with("d:"))
            .map(|(_, v)| v.parse::<u64>().unwrap())
            .max()
            .unwrap_or(0);
        assert!(
            per_item <= 1,
            "user{u} bought {per_item} of one item in a day"
        );
        let day_sum: u64 = h
            .iter()
            .filter(|(f, _)| f.starts_with("d:"))
            .map(|(_, v)| v.parse::<u64>().unwrap())
            .sum();
        assert_eq!(day_sum, total, "user{u}'s counters agree");
    }
    eprintln!("{event}: {} attempts: {codes:?}", results.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crowd_over_resp() {
    let r = Redis::start();
    crowd(&r.url(), &r.origin(), "crowd-resp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crowd_over_http_bridge() {
    let r = Redis::start();
    let b = Bridge::start(&r.url(), None);
    crowd(&b.url(), &r.origin(), "crowd-http").await;
}

/// The Upstash dialect with a Bearer token, and Dragonfly's with Basic auth, through the bridge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_dialects_with_auth() {
    let r = Redis::start();
    let b = Bridge::start(&r.url(), Some("bridge-pass"));
    let o = r.origin();
    ops::create(&o, &spec("dialects", &[("A", 10)], -1000, (1, 5, 1)), true)
        .await
        .unwrap();
    let c = http();
    for (dialect, user) in [("upstash", "ua"), ("dragonfly", "ud")] {
        let w = Worker::start(&[
            ("ORIGIN_URL", &b.url()),
            ("ORIGIN_HTTP_DIALECT", dialect),
            ("ORIGIN_PASSWORD", "bridge-pass"),
        ]);
        let h = get_json(&c, w.url("/api/health")).await;
        assert_eq!(h["transport"], format!("http-{dialect}"));
        assert_eq!(h["origin"]["ok"], true, "{h}");
        let a = w
            .send(
                &c,
                &Req::purchase("dialects", user, "key-dialect-1", &["A"]),
            )
            .await;
        assert_eq!(a.status, 201, "{dialect}: {}", a.body);
        drop(w);
        let w = Worker::start(&[
            ("ORIGIN_URL", &b.url()),
            ("ORIGIN_HTTP_DIALECT", dialect),
            ("ORIGIN_PASSWORD", "wrong"),
        ]);
        let h = c.get(w.url("/api/health")).send().await.unwrap();
        assert_eq!(
            h.status(),
            503,
            "{dialect} with a wrong password is unreachable"
        );
    }
}

/// SCRIPT FLUSH in the middle of a run: purchases go on (the worker reloads purchase.lua).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_flush_mid_run() {
    let sale = Sale::start(spec("flush", &[("A", 1000)], -1000, (1, 5, 1)), &[]).await;
    for i in 0..40 {
        if i % 10 == 5 {
            assert_eq!(sale.redis.cli(&["SCRIPT", "FLUSH"]).trim(), "OK");
        }
        let a = sale
            .buy(&format!("f{i}"), &format!("key-flush-{i}"), &["A"])
            .await;
        assert_eq!(a.status, 201, "attempt {i}: {}", a.body);
    }
    assert_eq!(
        sale.redis
            .cli(&["HGET", "fg:{flush}:meta", "sold:A"])
            .trim(),
        "40"
    );
}

/// On a 3-master cluster, the RESP transport completes purchases for events whose tags land
/// on different nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_through_the_worker() {
    let cl = Cluster::start();
    let o = flashgate_core::net::connect(&cl.seed_url(), None, 5000).unwrap();
    let by_node = cl.event_per_node("wc");
    assert_eq!(by_node.len(), 3, "one event per node: {by_node:?}");
    for id in by_node.values() {
        ops::create(&o, &spec(id, &[("A", 5)], -1000, (1, 5, 1)), true)
            .await
            .unwrap();
    }
    let w = Worker::start(&[("ORIGIN_URL", &cl.seed_url())]);
    let c = http();
    for (node, id) in &by_node {
        for u in 0..3 {
            let (user, key) = (format!("u{u}"), format!("key-{id}-{u}"));
            let a = w.send(&c, &Req::purchase(id, &user, &key, &["A"])).await;
            assert_eq!(a.status, 201, "{id} on :{node}: {}", a.body);
        }
        let own =
            flashgate_core::net::connect(&format!("redis://127.0.0.1:{node}"), None, 5000).unwrap();
        assert_eq!(
            strings(&own, &["HGET", &EventKeys::new(id).meta, "sold:A"]).await,
            Value::Str("3".into())
        );
    }
}

/// In steady state, one origin command per attempt that reaches the origin; none for a 401
/// (forged, tampered, expired or missing tokens).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_origin_command_per_attempt_and_none_for_401() {
    // The per-attempt lottery: with `fairness = line` purchase.lua also counts each attempt
    // for the line's controller (one HINCRBY inside the script, an EXPIRE once a second).
    let mut s = spec("ones", &[("A", 1000), ("B", 1000)], -1000, (1, 100, 1));
    s.fairness = flashgate_core::model::Fairness::Attempt;
    let sale = Sale::start(s, &[("EDGE_CACHE_MS", "60000")]).await;
    // Warm up: script cached, event snapshot cached.
    assert_eq!(sale.buy("warm", "key-warm-01", &["A"]).await.status, 201);

    let ((), d) = sale
        .commands_during(async || {
            for i in 0..50 {
                let skus: &[&str] = if i % 2 == 0 { &["A"] } else { &["A", "B"] };
                let (user, key) = (format!("one{i}"), format!("key-one-{i}"));
                assert_eq!(sale.buy(&user, &key, skus).await.status, 201);
            }
        })
        .await;
    assert_eq!(
        client_commands(d, 50),
        BTreeMap::from([("evalsha".to_string(), 50)]),
        "exactly one EVALSHA per attempt, nothing else"
    );

    let good = token("mallory");
    let exp = flashgate_core::token::mint(SECRET.as_bytes(), "mallory", now_ms() / 1000 - 1);
    let forged = flashgate_core::token::mint(
        b"not-the-secret-at-all-0000",
        "mallory",
        now_ms() / 1000 + 3600,
    );
    let tampered = good.replace("mallory", "alice");
    let mut flipped = good.clone().into_bytes();
    let n = flipped.len() - 3;
    flipped[n] = if flipped[n] == b'a' { b'b' } else { b'a' };
    let flipped = String::from_utf8(flipped).unwrap();
    let ((), d) = sale
        .commands_during(async || {
            for (what, auth) in [
                ("expired", Some(exp)),
                ("forged", Some(forged)),
                ("tampered", Some(tampered)),
                ("flipped", Some(flipped)),
                ("garbage", Some("x.y.z".to_string())),
                ("missing", None),
            ] {
                let mut req = Req::purchase("ones", "mallory", "key-auth-001", &["A"]);
                req.auth = auth.map(|t| format!("Bearer {t}"));
                let a = sale.send(&req).await;
                assert_eq!(a.status, 401, "{what}");
                assert_eq!(a.code(), Some("unauthenticated"), "{what}");
            }
        })
        .await;
    assert_eq!(d, BTreeMap::new(), "no origin command for a 401");
}

/// RESP with AUTH: the right password buys, a wrong one is an unreachable origin (503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp_auth() {
    let r = Redis::start_with_password("s3cret-pass");
    let o = flashgate_core::net::connect(&r.url(), Some("s3cret-pass".into()), 5000).unwrap();
    ops::create(&o, &spec("auth", &[("A", 5)], -1000, (1, 5, 1)), true)
        .await
        .unwrap();
    let c = http();
    let w = Worker::start(&[("ORIGIN_URL", &r.url()), ("ORIGIN_PASSWORD", "s3cret-pass")]);
    let a = w
        .send(&c, &Req::purchase("auth", "a1", "key-auth-0001", &["A"]))
        .await;
    assert_eq!(a.status, 201);
    drop(w);
    let w = Worker::start(&[(
        "ORIGIN_URL",
        &format!("redis://:wrong@127.0.0.1:{}", r.port),
    )]);
    let a = w
        .send(&c, &Req::purchase("auth", "a2", "key-auth-0002", &["A"]))
        .await;
    assert_eq!((a.status, a.code()), (503, Some("origin_unavailable")));
}
