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
    // connections, the verbs rotating over the connections.
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
    assert!(
        paid > 0 && cancelled > 0 && expired > 0,
        "each verb wins some races"
    );
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

const SHOP_KEY: &str = "test-shop-api-token-0123";

/// A shop API request, signed with `key` at Unix second `t` (`nonce` fresh per request).
async fn shop_call(sale: &Sale, key: &str, t: i64, nonce: &str, path: &str) -> Answer {
    let sig = flashgate_core::shop::sign(key.as_bytes(), t, nonce, "POST", path, b"");
    shop_raw(sale, Some(&sig), path).await
}

async fn shop_raw(sale: &Sale, sig: Option<&str>, path: &str) -> Answer {
    let mut b = sale.http.post(sale.worker.url(path));
    if let Some(s) = sig {
        b = b.header("flashgate-signature", s);
    }
    let resp = b.send().await.unwrap();
    Answer {
        request: format!("POST {path}"),
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.json().await.unwrap_or(serde_json::Value::Null),
    }
}

/// `user`'s orders through the worker (`GET /api/events/{event}/orders`).
async fn my_orders(sale: &Sale, user: &str) -> Answer {
    sale.send(&Req {
        method: "GET",
        path: format!("/api/events/{}/orders", sale.event),
        auth: Some(format!("Bearer {}", token(user))),
        ctype: None,
        key: None,
        body: Vec::new(),
    })
    .await
}

/// The shopper's orders and the shop's payment API through the worker: a shopper sees their
/// own orders (one origin command), the shop pays and cancels with signed requests, every
/// bad credential is refused with 401 at no origin cost, and pay/cancel are idempotent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shop_pays_and_cancels_through_the_api_and_the_shopper_sees_it() {
    let sale = Sale::start(
        spec("shop", &[("A", 5), ("B", 5)], -1000, (1, 5, 1)),
        &[
            ("SHOP_API_TOKEN", SHOP_KEY),
            (
                "CHECKOUT_URL",
                "https://shop.example/checkout?order={id}&ref={ref}",
            ),
        ],
    )
    .await;
    let a = sale.buy("ann", "key-ann-a", &["A"]).await;
    let b = sale.buy("ann", "key-ann-b", &["B"]).await;
    assert_eq!((a.status, b.status), (201, 201), "{} {}", a.body, b.body);
    let (id_a, id_b) = (
        a.body["order"]["id"].as_str().unwrap().to_string(),
        b.body["order"]["id"].as_str().unwrap().to_string(),
    );

    // The shopper's orders: one origin command, their own only, not cached by anyone.
    let (mine, d) = sale
        .commands_during(async || my_orders(&sale, "ann").await)
        .await;
    assert_eq!(mine.status, 200, "{}", mine.body);
    assert_eq!(
        d,
        BTreeMap::from([("hgetall".to_string(), 1)]),
        "one origin command"
    );
    assert_eq!(mine.headers["cache-control"], "private, no-store");
    let orders = mine.body["orders"].as_array().unwrap();
    assert_eq!(orders.len(), 2);
    assert_eq!(orders[0]["id"], id_b.as_str(), "newest first");
    assert_eq!(orders[1]["idempotency_key"], "key-ann-a");
    assert_eq!(orders[1]["state"], "pending");
    assert_eq!(orders[1]["pay_by"], a.body["order"]["pay_by"]);
    assert_eq!(orders[1]["lines"][0]["sku"], "A");
    let link = orders[1]["checkout_url"].as_str().unwrap();
    let r = flashgate_core::shop::order_ref(SHOP_KEY.as_bytes(), "shop", &id_a, "ann");
    assert_eq!(
        link,
        format!("https://shop.example/checkout?order={id_a}&ref={r}")
    );
    let theirs = my_orders(&sale, "bob").await;
    assert_eq!(theirs.body["orders"], serde_json::json!([]));
    let anonymous = sale
        .send(&Req {
            auth: None,
            ..Req::purchase("shop", "x", "key-x-0000", &["A"])
        })
        .await;
    assert_eq!(anonymous.status, 401);

    // Bad credentials: 401, and the origin hears nothing.
    let now = now_ms() / 1000;
    let pay_a = format!("/api/events/shop/orders/{id_a}/pay");
    let used = flashgate_core::shop::sign(
        SHOP_KEY.as_bytes(),
        now,
        "nonce-used-1",
        "POST",
        &pay_a,
        b"",
    );
    let for_cancel = flashgate_core::shop::sign(
        SHOP_KEY.as_bytes(),
        now,
        "nonce-other-path",
        "POST",
        &pay_a.replace("/pay", "/cancel"),
        b"",
    );
    let (refused, d) = sale
        .commands_during(async || {
            vec![
                shop_raw(&sale, None, &pay_a).await,
                shop_call(&sale, "not-the-shop-api-token", now, "nonce-wrong1", &pay_a).await,
                shop_call(&sale, SHOP_KEY, now - 3600, "nonce-stale1", &pay_a).await,
                shop_raw(&sale, Some(&for_cancel), &pay_a).await,
            ]
        })
        .await;
    for r in &refused {
        assert_eq!(
            (r.status, r.code()),
            (401, Some("unauthenticated")),
            "{}",
            r.body
        );
    }
    assert_eq!(
        d,
        BTreeMap::new(),
        "refused credentials cost no origin command"
    );

    // Pay: done, then idempotent; a replayed signature is refused at no origin cost.
    let paid = shop_raw(&sale, Some(&used), &pay_a).await;
    assert_eq!(paid.status, 200, "{}", paid.body);
    assert_eq!(
        paid.body,
        serde_json::json!({"order": id_a, "state": "paid", "changed": true})
    );
    let (replayed, d) = sale
        .commands_during(async || shop_raw(&sale, Some(&used), &pay_a).await)
        .await;
    assert_eq!(
        (replayed.status, replayed.code()),
        (401, Some("unauthenticated"))
    );
    assert_eq!(d, BTreeMap::new());
    let again = shop_call(&sale, SHOP_KEY, now, "nonce-again1", &pay_a).await;
    assert_eq!(
        (again.status, again.body["changed"].as_bool()),
        (200, Some(false))
    );
    let cancel_a = format!("/api/events/shop/orders/{id_a}/cancel");
    let no = shop_call(&sale, SHOP_KEY, now, "nonce-cancel-paid", &cancel_a).await;
    assert_eq!(
        (no.status, no.code()),
        (409, Some("order_paid")),
        "{}",
        no.body
    );

    // Cancel: done, then idempotent; paying a cancelled order is refused.
    let cancel_b = format!("/api/events/shop/orders/{id_b}/cancel");
    let c = shop_call(&sale, SHOP_KEY, now, "nonce-cancel-b1", &cancel_b).await;
    assert_eq!(
        c.body,
        serde_json::json!({"order": id_b, "state": "cancelled", "changed": true})
    );
    let c2 = shop_call(&sale, SHOP_KEY, now, "nonce-cancel-b2", &cancel_b).await;
    assert_eq!(
        (c2.status, c2.body["changed"].as_bool()),
        (200, Some(false))
    );
    let pay_b = format!("/api/events/shop/orders/{id_b}/pay");
    let late = shop_call(&sale, SHOP_KEY, now, "nonce-pay-b-01", &pay_b).await;
    assert_eq!((late.status, late.code()), (410, Some("order_cancelled")));
    let none = shop_call(
        &sale,
        SHOP_KEY,
        now,
        "nonce-none-001",
        "/api/events/shop/orders/o_nope/pay",
    )
    .await;
    assert_eq!((none.status, none.code()), (404, Some("unknown_order")));

    // The shopper sees both ends.
    let mine = my_orders(&sale, "ann").await;
    let states: Vec<(&str, &str)> = mine.body["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["id"].as_str().unwrap(), o["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [(id_b.as_str(), "cancelled"), (id_a.as_str(), "paid")]
    );
    assert!(
        mine.body["orders"][1].get("checkout_url").is_none(),
        "paid: no link"
    );
}

/// A purchase whose answer was lost, retried after the item sold out through another
/// isolate that learnt the sell-out, is refused `sold_out` at that edge; the documented
/// client flow (docs/api.md: on a refusal after an unknown outcome, look the key up in the
/// shopper's orders) ends with the placed order, not "sold out".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_lost_answer_finds_its_order() {
    let sale = Sale::start(spec("lost", &[("A", 2)], -1000, (1, 1, 1)), &[]).await;
    let other = Worker::start(&[("ORIGIN_URL", &sale.redis.url())]);
    // The other isolate learns the sale first (its snapshot shows stock).
    let warm = other
        .send(
            &sale.http,
            &Req::purchase("lost", "zed", "key-zed-0001", &["A"]),
        )
        .await;
    assert_eq!(warm.status, 201, "{}", warm.body);
    // Ann's attempt is placed through the first isolate; its answer is dropped on the way.
    let _lost = sale.buy("ann", "key-ann-lost", &["A"]).await;
    // The item is now sold out; the other isolate learns it from a refusal.
    let late = other
        .send(
            &sale.http,
            &Req::purchase("lost", "bob", "key-bob-0001", &["A"]),
        )
        .await;
    assert_eq!(late.code(), Some("sold_out"));
    // Ann's retry reaches the other isolate.
    let retry = other
        .send(
            &sale.http,
            &Req::purchase("lost", "ann", "key-ann-lost", &["A"]),
        )
        .await;
    let found = match (retry.status, retry.code()) {
        (201, _) => retry.body["order"].clone(),
        (_, Some("sold_out" | "item_limit_reached" | "total_limit_reached")) => {
            // The client flow: the outcome was unknown, so look the key up before saying so.
            let mine = other
                .send(
                    &sale.http,
                    &Req {
                        method: "GET",
                        path: "/api/events/lost/orders".into(),
                        auth: Some(format!("Bearer {}", token("ann"))),
                        ctype: None,
                        key: None,
                        body: Vec::new(),
                    },
                )
                .await;
            let orders = mine.body["orders"].as_array().unwrap().clone();
            orders
                .into_iter()
                .find(|o| o["idempotency_key"] == "key-ann-lost")
                .expect("the placed order is in the shopper's orders")
        }
        other => panic!("unexpected answer {other:?}: {}", retry.body),
    };
    eprintln!("the retry was answered {} {:?}", retry.status, retry.code());
    assert_eq!(found["idempotency_key"], "key-ann-lost");
    assert_eq!(found["lines"][0]["sku"], "A");
    let sold = sale
        .origin
        .call(&Cmd::new(["HGET", &EventKeys::new("lost").meta, "sold:A"]))
        .await
        .unwrap();
    assert_eq!(
        sold.as_int(),
        Some(2),
        "one unit each for zed and ann, none twice"
    );
}
