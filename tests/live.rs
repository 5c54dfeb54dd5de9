//! The operator's live view, `GET /api/events/{event}/live`, through the real worker and a
//! real redis-server: operator only; per item the same figures as `flashgate event status
//! --json`; the fleet's per-second counts after a crowd; orders pending, paid and expired;
//! the order writer's lag; the line's progress and entrants; exactly one EVALSHA per call;
//! and `event status --watch --json`.

mod common;

use common::*;
use flashgate_core::keys::EventKeys;
use flashgate_core::model::now_ms;
use flashgate_core::orders::settle;
use flashgate_core::script::{SettleVerb, Settled};
use flashgate_sim::load::{commandstats, commandstats_delta};
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const EVENT: &str = "live";

/// GET the live view with `auth` (a bearer token) and `query`: (status, Cache-Control, body).
async fn live(sale: &Sale, auth: Option<&str>, query: &str) -> (u16, String, Json) {
    let mut req = sale
        .http
        .get(sale.worker.url(&format!("/api/events/{EVENT}/live{query}")));
    if let Some(t) = auth {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let cache = resp
        .headers()
        .get("cache-control")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, cache, resp.json().await.unwrap())
}

/// One purchase attempt of one `sku` by `user`: (status, body).
async fn buy(sale: &Sale, user: &str, sku: &str) -> (u16, Json) {
    let resp = sale
        .http
        .post(sale.worker.url(&format!("/api/events/{EVENT}/orders")))
        .bearer_auth(token(user))
        .header("idempotency-key", format!("key-{user}-{sku}"))
        .json(&serde_json::json!({"items": [{"sku": sku, "qty": 1}]}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// The sums of a per-second field over the window.
fn total(body: &Json, field: &str) -> u64 {
    body["seconds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[field].as_u64().unwrap())
        .sum()
}

/// Decisions over the window by `place:code`.
fn decisions(body: &Json) -> BTreeMap<String, u64> {
    let mut d = BTreeMap::new();
    for s in body["seconds"].as_array().unwrap() {
        for (k, n) in s["decisions"].as_object().unwrap() {
            *d.entry(k.clone()).or_insert(0) += n.as_u64().unwrap();
        }
    }
    d
}

/// Per item (sku, stock, sold, remaining), from the live view or `event status --json`.
fn items(body: &Json) -> Vec<(String, u64, u64, u64)> {
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let n = |f: &str| i[f].as_u64().unwrap();
            (
                i["sku"].as_str().unwrap().to_string(),
                n("stock"),
                n("sold"),
                n("remaining"),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_view_of_a_sale() {
    let sale = Sale::start(spec(EVENT, &[("A", 5), ("B", 50)], -1000, (1, 5, 1)), &[]).await;
    let (o, url) = (&sale.origin, sale.redis.url());

    // Operator only.
    for auth in [None, Some("not-the-operator-token")] {
        let (status, cache, b) = live(&sale, auth, "").await;
        assert_eq!(
            (status, b["error"]["code"].as_str()),
            (401, Some("unauthenticated"))
        );
        assert_eq!(cache, "no-store");
    }
    let (status, _, b) = live(&sale, Some(OPERATOR), "?minutes=11").await;
    assert_eq!(
        (status, b["error"]["code"].as_str()),
        (400, Some("invalid_request")),
        "{b}"
    );

    // Before the crowd: nothing sold, five minutes of empty seconds, no order writer yet.
    let (status, cache, b) = live(&sale, Some(OPERATOR), "").await;
    assert_eq!((status, cache.as_str()), (200, "no-store"), "{b}");
    assert_eq!(b["event"]["state"], "live");
    assert_eq!(b["seconds"].as_array().unwrap().len(), 300);
    let server_sec =
        flashgate_core::model::parse_rfc3339_ms(b["event"]["server_time"].as_str().unwrap())
            .unwrap()
            .div_euclid(1000);
    assert_eq!(
        b["seconds"][299]["second"],
        server_sec - 1,
        "up to the last whole second"
    );
    assert_eq!(b["writer"], Json::Null);
    assert_eq!(
        b["orders"],
        serde_json::json!({"pending": 0, "paid": 0, "expired": 0, "cancelled": 0})
    );

    // A crowd of 60 attempts on A (5 in stock) and 20 on B: 25 orders, 55 refusals.
    let mut placed = Vec::new();
    for i in 0..60 {
        let (st, body) = buy(&sale, &format!("u{i}"), "A").await;
        assert!(st == 201 || st == 410, "{st} {body}");
        if st == 201 {
            placed.push(body["order"]["id"].as_str().unwrap().to_string());
        }
    }
    for i in 0..20 {
        let (st, body) = buy(&sale, &format!("u{i}"), "B").await;
        assert_eq!(st, 201, "{body}");
    }
    assert_eq!(placed.len(), 5);
    // One order of A is paid; another expires (settled as if after its deadline), giving
    // its unit back.
    let paid = settle(o, EVENT, &placed[0], SettleVerb::Pay, now_ms()).await;
    assert_eq!(paid.unwrap(), Settled::Done { units: 0 });
    let late = now_ms() + 3_600_000;
    let expired = settle(o, EVENT, &placed[1], SettleVerb::Expire, late).await;
    assert_eq!(expired.unwrap(), Settled::Done { units: 1 });

    // The isolate reports its last counts with its next snapshot refresh (any request
    // after EDGE_CACHE_MS); the live view shows them once their second is whole.
    let t0 = Instant::now();
    let b = loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        get_json(&sale.http, sale.worker.url(&format!("/api/events/{EVENT}"))).await;
        let (_, _, b) = live(&sale, Some(OPERATOR), "?minutes=1").await;
        if total(&b, "attempts") == 80 || t0.elapsed() > Duration::from_secs(10) {
            break b;
        }
    };
    assert_eq!(b["seconds"].as_array().unwrap().len(), 60);
    assert_eq!(total(&b, "attempts"), 80, "every attempt, reported: {b}");
    assert_eq!(total(&b, "placed"), 25, "{b}");
    assert!(total(&b, "isolates") >= 1);
    assert!(total(&b, "forwarded") >= 25 && total(&b, "forwarded") <= total(&b, "candidates"));
    let d = decisions(&b);
    assert_eq!(
        d.values().sum::<u64>(),
        80,
        "each attempt is one decision: {d:?}"
    );
    assert_eq!(d.get("origin:placed"), Some(&25), "{d:?}");
    let sold_out = d.get("edge:sold_out").unwrap_or(&0) + d.get("origin:sold_out").unwrap_or(&0);
    assert_eq!(sold_out, 55, "{d:?}");
    assert!(
        d.contains_key("edge:sold_out"),
        "the edge learnt A sold out: {d:?}"
    );

    // Per item: exactly what `flashgate event status --json` says.
    let status: Json =
        serde_json::from_str(&cli(&url, &["event", "status", EVENT, "--json"])).unwrap();
    assert_eq!(items(&b), items(&status));
    assert_eq!(
        items(&b),
        [("A".into(), 5, 4, 1), ("B".into(), 50, 20, 30)],
        "the expired unit of A went back"
    );
    assert_eq!(
        b["orders"],
        serde_json::json!({"pending": 23, "paid": 1, "expired": 1, "cancelled": 0})
    );
    assert_eq!(b["orders"]["pending"], status["orders_pending"]);
    // The line (fairness = line, the default): the sale had started, so the 60 shoppers
    // entered late (without a ticket, each attempt enters in its second); entrants are the
    // sampled users' sightings, one per user and window, × SAMPLE; never more admitted than
    // entered; the same figures as `event status --json`.
    let line = &b["line"];
    let sampled = (0..60)
        .filter(|i| flashgate_core::threshold::sampled(EVENT, &format!("u{i}")))
        .count() as u64;
    let entered = line["entered"].as_u64().unwrap();
    let sample = flashgate_core::threshold::SAMPLE;
    assert!(line["threshold"].is_number(), "the line advanced: {line}");
    assert_eq!(
        (line["early"].as_u64(), line["late"].as_u64()),
        (Some(0), Some(entered))
    );
    assert!(entered.is_multiple_of(sample), "{line}");
    assert!(entered >= sample * sampled.min(1), "{line}");
    assert!(line["admitted"].as_u64().unwrap() <= entered, "{line}");
    assert_eq!(line["entered"], status["line"]["entered"]);
    // 25 placed, 1 paid, 1 expired in the stream; no order writer yet.
    assert_eq!(
        (b["stream_len"].as_u64(), &b["writer"]),
        (Some(27), &Json::Null)
    );

    // An order writer's group appears: all 27 entries wait; it reads 10 and commits 4.
    let stream = EventKeys::new(EVENT).stream;
    sale.redis.cli(&["XGROUP", "CREATE", &stream, "sink", "0"]);
    let (_, _, b) = live(&sale, Some(OPERATOR), "?minutes=1").await;
    assert_eq!(b["writer"], serde_json::json!({"lag": 27, "pending": 0}));
    let read = sale.redis.cli(&[
        "XREADGROUP",
        "GROUP",
        "sink",
        "w1",
        "COUNT",
        "10",
        "STREAMS",
        &stream,
        ">",
    ]);
    let ids: Vec<&str> = read
        .lines()
        .filter(|l| l.len() > 2 && l.contains('-') && l.chars().next().unwrap().is_ascii_digit())
        .take(4)
        .collect();
    assert_eq!(ids.len(), 4, "{read}");
    let mut ack = vec!["XACK", &stream, "sink"];
    ack.extend(&ids);
    assert_eq!(sale.redis.cli(&ack).trim(), "4");
    let (_, _, b) = live(&sale, Some(OPERATOR), "?minutes=1").await;
    assert_eq!(b["writer"], serde_json::json!({"lag": 17, "pending": 6}));

    // Exactly one origin command per call, whatever the window.
    let before = commandstats(o).await.unwrap();
    for q in ["", "?minutes=1", "?minutes=10"] {
        assert_eq!(live(&sale, Some(OPERATOR), q).await.0, 200);
    }
    let d = commandstats_delta(&before, &commandstats(o).await.unwrap());
    assert_eq!(d.get("evalsha"), Some(&3), "{d:?}");
    // Everything else is what live.lua runs inside that EVALSHA.
    let inside = ["hgetall", "hmget", "zcard", "xlen", "type", "xinfo|groups"];
    for cmd in d.keys().filter(|c| c.as_str() != "evalsha") {
        assert!(
            inside.contains(&cmd.as_str()),
            "{cmd} is not live.lua's: {d:?}"
        );
    }
    assert_eq!(
        d.get("hgetall"),
        Some(&(3 * 2 + 300 + 60 + 600)),
        "meta, the line and the buckets"
    );

    // `flashgate event status --watch --json`: the same view, one JSON document a second.
    let mut child = Command::new(env!("CARGO_BIN_EXE_flashgate"))
        .args([
            "--origin", &url, "event", "status", EVENT, "--watch", "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let docs: Vec<Json> = (0..2)
        .map(|_| serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap())
        .collect();
    let took = t0.elapsed();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(took < Duration::from_secs(4), "two documents took {took:?}");
    for doc in &docs {
        assert_eq!(items(doc), items(&status));
        assert_eq!(doc["writer"], serde_json::json!({"lag": 17, "pending": 6}));
        assert_eq!(doc["seconds"].as_array().unwrap().len(), 60);
        assert_eq!(doc["orders"], b["orders"]);
    }
    let (s0, s1) = (
        &docs[0]["seconds"][59]["second"],
        &docs[1]["seconds"][59]["second"],
    );
    assert_eq!(
        s1.as_i64().unwrap() - s0.as_i64().unwrap(),
        1,
        "one a second"
    );

    // A wrong event is one sentence, at once.
    let out = cli_output(&url, &["event", "status", "nope", "--watch"]);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "flashgate: there is no event nope at this origin\n"
    );
}
