//! The life of an order through the real worker, a real redis-server and the shop's real
//! database (a SQLite file and a throwaway Postgres): placed, written once by the order sink,
//! then paid or expired by settle.lua; expired units go back on sale and the crowd at the edge
//! gets them.

mod common;

use common::db::*;
use common::*;
use flashgate_core::keys::EventKeys;
use flashgate_core::model::now_ms;
use flashgate_core::orders::{expire_due, settle};
use flashgate_core::origin::{Cmd, Origin};
use flashgate_core::script::{SettleVerb, Settled};
use futures_util::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_units_go_back_to_the_crowd_within_two_seconds() {
    let mut s = spec("life", &[("A", 20)], -1000, (1, 1, 1));
    s.pay_within = 2;
    let sale = Sale::start(s, &[]).await;
    let o = &sale.origin;

    // 20 buyers take the 20 units; 20 latecomers are refused.
    let mut orders = BTreeMap::new();
    for i in 0..20 {
        let a = sale
            .buy(&format!("b{i}"), &format!("key-b{i:04}"), &["A"])
            .await;
        assert_eq!(a.status, 201, "{}", a.body);
        orders.insert(i, a.body["order"]["id"].as_str().unwrap().to_string());
    }
    for i in 0..20 {
        let a = sale
            .buy(&format!("late{i}"), &format!("key-l{i:04}-0"), &["A"])
            .await;
        assert_eq!((a.status, a.code()), (410, Some("sold_out")), "{}", a.body);
    }
    // Half pay in time.
    for i in 0..10 {
        let paid = settle(o, "life", &orders[&i], SettleVerb::Pay, now_ms());
        assert_eq!(paid.await.unwrap(), Settled::Done { units: 0 });
    }
    // The rest expire once their window has passed.
    let t0 = Instant::now();
    let mut back = 0;
    while back < 10 && t0.elapsed() < Duration::from_secs(10) {
        back += expire_due(o, "life", now_ms(), 100).await.unwrap().units;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(back, 10, "the 10 unpaid orders gave their units back");
    let expired_at = Instant::now();

    // The crowd (latecomers, and one buyer whose order expired) keeps trying; the returned
    // units must be bought within 2 s, and no attempt is refused on a stale cap mark.
    let mut placed: HashMap<String, u64> = HashMap::new();
    let mut attempt = 0;
    let mut again_by_expired_buyer = None;
    while placed.len() < 10 && expired_at.elapsed() < Duration::from_secs(5) {
        attempt += 1;
        let mut who = vec!["b15".to_string()];
        who.extend((0..20).map(|i| format!("late{i}")));
        for user in who {
            if placed.contains_key(&user) || placed.len() >= 10 {
                continue;
            }
            let a = sale
                .buy(&user, &format!("key-{user}-{attempt}"), &["A"])
                .await;
            match (a.status, a.code()) {
                (201, _) => {
                    let ms = expired_at.elapsed().as_millis() as u64;
                    if user == "b15" {
                        again_by_expired_buyer = Some(ms);
                    }
                    placed.insert(user, ms);
                }
                (410, Some("sold_out")) => {}
                other => panic!("{user}: unexpected answer {other:?} {}", a.body),
            }
        }
    }
    let last = placed.values().max().copied().unwrap_or(u64::MAX);
    eprintln!(
        "10 returned units bought by {} users, the last {last} ms after the expiry; \
         the buyer whose order expired bought again after {again_by_expired_buyer:?} ms",
        placed.len()
    );
    assert_eq!(placed.len(), 10, "every returned unit was bought again");
    assert!(
        again_by_expired_buyer.is_some(),
        "the buyer whose order expired was not refused on a stale cap mark"
    );
    assert!(
        last <= 2000,
        "the last returned unit sold {last} ms after the expiry"
    );

    // The origin agrees: 20 sold, nobody over a cap, nothing pending but the new orders.
    let k = EventKeys::new("life");
    let sold = o
        .call(&Cmd::new(["HGET", &k.meta, "sold:A"]))
        .await
        .unwrap();
    assert_eq!(sold.as_int(), Some(20));
    let mut users: Vec<String> = (0..20).map(|i| format!("b{i}")).collect();
    users.extend((0..20).map(|i| format!("late{i}")));
    for u in users {
        let t = o.call(&Cmd::new(["HGET", &k.user(&u), "t"])).await.unwrap();
        assert!(t.as_int().unwrap_or(0) <= 1, "{u} is over the total cap");
    }
    // Once tracked (the order writer and the sweep track before they act).
    flashgate_core::orders::track(o, "life").await.unwrap();
    let pending = o.call(&Cmd::new(["ZCARD", &k.pending])).await.unwrap();
    assert_eq!(
        pending.as_int(),
        Some(10),
        "the 10 new orders await payment"
    );
}

/// Runs the order sink once over `event` into `db`; its stdout summary.
fn sink_once(sale: &Sale, event: &str, db: &Db) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flashgate"))
        .args(["--origin", &sale.redis.url(), "orders", "sink", "--once"])
        .args(["--event", event, "--db", &db.url])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "sink into {}: {err}", db.url);
    assert!(!err.contains("ALARM"), "{err}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A crowd through the worker; then the sink. Rows = stream entries = 201 answers, and units
/// = sold, at the origin and in the database.
async fn crowd_into(db: Db, event: &str) {
    let sale = Sale::start(spec(event, &[("A", 120), ("B", 40)], -1000, (1, 2, 1)), &[]).await;
    // 400 users, one intent each (A, B or both); every fourth intent is sent twice.
    let intents: Vec<(String, String, Vec<&str>)> = (0..400)
        .flat_map(|u| {
            let skus = match u % 3 {
                0 => vec!["A"],
                1 => vec!["B"],
                _ => vec!["A", "B"],
            };
            let copies = if u % 4 == 0 { 2 } else { 1 };
            let intent = (format!("c{u}"), format!("key-c{u:05}"), skus);
            std::iter::repeat_n(intent, copies)
        })
        .collect();
    let answers = futures_util::stream::iter(intents)
        .map(|(user, key, skus)| {
            let sale = &sale;
            async move { sale.buy(&user, &key, &skus).await }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    let mut placed: BTreeMap<String, u64> = BTreeMap::new();
    for a in &answers {
        match (a.status, a.code()) {
            (201, _) => {
                let o = &a.body["order"];
                let units = o["lines"].as_array().unwrap().iter();
                let units = units.map(|l| l["qty"].as_u64().unwrap()).sum();
                placed.insert(o["id"].as_str().unwrap().to_string(), units);
            }
            (410, Some("sold_out")) | (403, Some("total_limit_reached")) => {}
            other => panic!("unexpected answer {other:?}: {}", a.body),
        }
    }
    let k = EventKeys::new(event);
    let sold = |sku: &'static str| {
        let (o, k) = (&sale.origin, &k);
        async move {
            let v = o
                .call(&Cmd::new([
                    "HGET".to_string(),
                    k.meta.clone(),
                    format!("sold:{sku}"),
                ]))
                .await
                .unwrap();
            v.as_int().unwrap_or(0)
        }
    };
    let (sold_a, sold_b) = (sold("A").await, sold("B").await);
    let stream = sale
        .origin
        .call(&Cmd::new(["XLEN", &k.stream]))
        .await
        .unwrap();
    assert_eq!(
        stream.as_int(),
        Some(placed.len() as i64),
        "one stream entry per order"
    );
    assert_eq!(
        placed.values().sum::<u64>() as i64,
        sold_a + sold_b,
        "units in 201s = sold"
    );
    assert_eq!((sold_a, sold_b), (120, 40), "the crowd bought everything");

    let summary = sink_once(&sale, event, &db);
    eprintln!("{}: {} orders, {summary}", db.url, placed.len());
    let pool = db.pool().await;
    let rows = orders(&pool).await;
    assert_eq!(
        rows.keys().cloned().collect::<Vec<_>>(),
        placed.keys().cloned().collect::<Vec<_>>(),
        "database rows = 201 answers"
    );
    assert!(rows.values().all(|s| s == "pending"));
    let inv = inventory(&pool, event).await;
    assert_eq!(inv["A"], (120, sold_a));
    assert_eq!(inv["B"], (40, sold_b));
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM fg_quarantine").await, 0);
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM fg_dead_letters").await,
        0
    );
    // Everything committed is trimmed; a second run writes nothing twice.
    let stream = sale
        .origin
        .call(&Cmd::new(["XLEN", &k.stream]))
        .await
        .unwrap();
    assert_eq!(stream.as_int(), Some(0));
    sink_once(&sale, event, &db);
    assert_eq!(orders(&pool).await.len(), placed.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_lands_in_sqlite_exactly_once() {
    crowd_into(Db::sqlite(), "dbsq").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_lands_in_postgres_exactly_once() {
    crowd_into(Db::postgres(), "dbpg").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_payment_races_and_the_database_agree() {
    let mut s = spec("race", &[("A", 1000)], -1000, (1, 1, 1));
    s.pay_within = 1;
    let sale = Sale::start(s, &[]).await;
    let (o, o2) = (&sale.origin, &sale.redis.origin());
    // 1,000 orders, placed through the worker.
    let ids = futures_util::stream::iter(0..1000)
        .map(|i| {
            let sale = &sale;
            async move {
                let a = sale
                    .buy(&format!("r{i}"), &format!("key-r{i:05}"), &["A"])
                    .await;
                assert_eq!(a.status, 201, "{}", a.body);
                a.body["order"]["id"].as_str().unwrap().to_string()
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    // Past the 1 s window, a payment and an expiry of each order race on two connections.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (mut paid, mut expired) = (0i64, 0i64);
    for id in &ids {
        let now = now_ms();
        let (p, e) = tokio::join!(
            settle(o, "race", id, SettleVerb::Pay, now),
            settle(o2, "race", id, SettleVerb::Expire, now)
        );
        match (p.unwrap(), e.unwrap()) {
            (Settled::Done { .. }, Settled::AlreadyPaid) => paid += 1,
            (Settled::AlreadyExpired, Settled::Done { units: 1 }) => expired += 1,
            other => panic!("{id}: not exactly one winner: {other:?}"),
        }
    }
    eprintln!("1000 races: {paid} paid, {expired} expired");
    assert_eq!(paid + expired, 1000);
    let k = EventKeys::new("race");
    let sold = o
        .call(&Cmd::new(["HGET", &k.meta, "sold:A"]))
        .await
        .unwrap();
    assert_eq!(sold.as_int(), Some(paid), "stock kept for paid orders only");
    // The database follows: every order paid or expired as the origin decided.
    let db = Db::sqlite();
    sink_once(&sale, "race", &db);
    let pool = db.pool().await;
    let rows = orders(&pool).await;
    let status = |s: &str| rows.values().filter(|v| v.as_str() == s).count() as i64;
    assert_eq!(
        (status("paid"), status("expired"), status("pending")),
        (paid, expired, 0)
    );
    assert_eq!(
        inventory(&pool, "race").await["A"],
        (1000, paid),
        "stock and the database agree"
    );
}
