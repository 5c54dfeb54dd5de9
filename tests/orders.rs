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

/// `flashgate orders cancel` gives a pending order's unit and its user's caps back at once:
/// the crowd at the edge buys the unit within 2 s, the user may buy again, a retry of the
/// cancelled order's key is told so, and the shop's database records the cancel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_order_gives_its_unit_and_caps_back_at_once() {
    let sale = Sale::start(spec("cancel", &[("A", 1)], -1000, (1, 1, 1)), &[]).await;
    let first = sale.buy("ann", "key-ann-1", &["A"]).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let id = first.body["order"]["id"].as_str().unwrap().to_string();
    let late = sale.buy("bob", "key-bob-0", &["A"]).await;
    assert_eq!((late.status, late.code()), (410, Some("sold_out")));

    let cancel = |id: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_flashgate"))
            .args(["--origin", &sale.redis.url(), "orders", "cancel", id])
            .args(["--event", "cancel"])
            .output()
            .unwrap()
    };
    let out = cancel(&id);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("is cancelled; 1 units went back"), "{said}");
    let cancelled_at = Instant::now();
    // Idempotent: a second cancel says so and changes nothing.
    let again = cancel(&id);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("already cancelled"));

    // The crowd gets the unit back within 2 s (the edge learns it within EDGE_CACHE_MS).
    let mut bought = None;
    let mut attempt = 0;
    while bought.is_none() && cancelled_at.elapsed() < Duration::from_secs(5) {
        attempt += 1;
        let a = sale.buy("bob", &format!("key-bob-{attempt}"), &["A"]).await;
        match (a.status, a.code()) {
            (201, _) => bought = Some(cancelled_at.elapsed()),
            (410, Some("sold_out")) => tokio::time::sleep(Duration::from_millis(50)).await,
            other => panic!("unexpected answer {other:?} {}", a.body),
        }
    }
    let bought = bought.expect("the cancelled unit was never bought again");
    eprintln!("the cancelled unit was bought again after {bought:?}");
    assert!(bought <= Duration::from_secs(2), "{bought:?}");

    // A retry of the cancelled order's key is told it was cancelled, with the order.
    let retry = sale.buy("ann", "key-ann-1", &["A"]).await;
    assert_eq!(
        (retry.status, retry.code()),
        (410, Some("order_cancelled")),
        "{}",
        retry.body
    );
    assert_eq!(retry.body["error"]["order"]["id"], id.as_str());
    // Ann's caps came back: she is refused only because the unit is gone, not over her cap.
    let k = EventKeys::new("cancel");
    let t = (sale
        .origin
        .call(&Cmd::new(["HGET", &k.user("ann"), "t"]))
        .await)
        .unwrap();
    assert_eq!(t.as_int().unwrap_or(0), 0, "ann's total cap came back");

    // The shop's database: ann's order cancelled, bob's pending, one unit held.
    let db = Db::sqlite();
    sink_once(&sale, "cancel", &db);
    let pool = db.pool().await;
    let rows = orders(&pool).await;
    assert_eq!(rows[&id], "cancelled");
    assert_eq!(rows.len(), 2);
    assert_eq!(inventory(&pool, "cancel").await["A"], (1, 1));
    // Paid orders cannot be cancelled.
    let other = rows.keys().find(|k| **k != id).unwrap().clone();
    let paid = settle(&sale.origin, "cancel", &other, SettleVerb::Pay, now_ms()).await;
    assert_eq!(paid.unwrap(), Settled::Done { units: 0 });
    let refused = cancel(&other);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("is paid and cannot be cancelled"));
}

/// A retry of a placed order's key answers the original 201's body, field by field (only
/// `replayed` says it is a replay, with the `Idempotent-Replayed` header): from the isolate
/// that placed it, and from another isolate that asks the origin, after the user's counters
/// have moved on with another order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_answers_the_original_body() {
    let sale = Sale::start(
        spec("replay", &[("A", 9), ("B", 9), ("C", 9)], -1000, (1, 5, 1)),
        &[],
    )
    .await;
    let original = sale.buy("ann", "key-ann-ab", &["A", "B"]).await;
    assert_eq!(original.status, 201, "{}", original.body);
    assert_eq!(original.body["counters"]["total"], 2);
    assert_eq!(
        original.body["counters"]["items"].as_array().unwrap().len(),
        2
    );
    let more = sale.buy("ann", "key-ann-c", &["C"]).await;
    assert_eq!(more.status, 201, "{}", more.body);

    let mut want = original.body.clone();
    want["replayed"] = true.into();
    let here = sale.buy("ann", "key-ann-ab", &["A", "B"]).await;
    let other = Worker::start(&[("ORIGIN_URL", &sale.redis.url())]);
    let (there, d) = sale
        .commands_during(async || {
            other
                .send(
                    &sale.http,
                    &Req::purchase("replay", "ann", "key-ann-ab", &["A", "B"]),
                )
                .await
        })
        .await;
    assert!(
        d.get("evalsha").copied().unwrap_or(0) >= 1,
        "the other isolate asked the origin: {d:?}"
    );
    for (who, a) in [("the same isolate", &here), ("another isolate", &there)] {
        assert_eq!(a.status, 201, "{who}: {}", a.body);
        assert_eq!(a.headers["idempotent-replayed"], "true", "{who}");
        for field in ["order", "counters", "replayed"] {
            assert_eq!(a.body[field], want[field], "{who}: {field}");
        }
        assert_eq!(a.body, want, "{who}");
    }
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
async fn a_thousand_pay_cancel_expire_races_and_the_database_agree() {
    let mut s = spec("race", &[("A", 1000)], -1000, (1, 1, 1));
    s.pay_within = 1;
    let sale = Sale::start(s, &[]).await;
    let (o, o2, o3) = (&sale.origin, &sale.redis.origin(), &sale.redis.origin());
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
    // Past the 1 s window, a payment, a cancel and an expiry of each order race on three
    // connections, sent in a rotating order so that each gets to go first.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (mut paid, mut cancelled, mut expired) = (0i64, 0i64, 0i64);
    let conns = [o, o2, o3];
    for (i, id) in ids.iter().enumerate() {
        let now = now_ms();
        let on = |j: usize| conns[(i + j) % 3];
        let (p, c, e) = tokio::join!(
            settle(on(0), "race", id, SettleVerb::Pay, now),
            settle(on(1), "race", id, SettleVerb::Cancel, now),
            settle(on(2), "race", id, SettleVerb::Expire, now)
        );
        use Settled::*;
        match (p.unwrap(), c.unwrap(), e.unwrap()) {
            (Done { units: 0 }, AlreadyPaid, AlreadyPaid) => paid += 1,
            (AlreadyCancelled, Done { units: 1 }, AlreadyCancelled) => cancelled += 1,
            (AlreadyExpired, AlreadyExpired, Done { units: 1 }) => expired += 1,
            other => panic!("{id}: not exactly one winner: {other:?}"),
        }
    }
    eprintln!("1000 races: {paid} paid, {cancelled} cancelled, {expired} expired");
    assert_eq!(paid + cancelled + expired, 1000);
    let k = EventKeys::new("race");
    let sold = o
        .call(&Cmd::new(["HGET", &k.meta, "sold:A"]))
        .await
        .unwrap();
    assert_eq!(sold.as_int(), Some(paid), "stock kept for paid orders only");
    // Caps: a paid order still counts against its user; a cancelled or expired one does not.
    let mut held = 0;
    for i in 0..1000 {
        let t = o
            .call(&Cmd::new(["HGET", &k.user(&format!("r{i}")), "t"]))
            .await
            .unwrap();
        held += t.as_int().unwrap_or(0);
    }
    assert_eq!(held, paid, "the users' caps hold exactly the paid units");
    // The database follows: every order paid or expired as the origin decided.
    let db = Db::sqlite();
    sink_once(&sale, "race", &db);
    let pool = db.pool().await;
    let rows = orders(&pool).await;
    let status = |s: &str| rows.values().filter(|v| v.as_str() == s).count() as i64;
    assert_eq!(
        (
            status("paid"),
            status("cancelled"),
            status("expired"),
            status("pending")
        ),
        (paid, cancelled, expired, 0)
    );
    assert_eq!(
        inventory(&pool, "race").await["A"],
        (1000, paid),
        "stock and the database agree"
    );
}
