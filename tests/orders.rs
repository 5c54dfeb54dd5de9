//! The life of an order through the real worker and a real redis-server: placed, then paid or
//! expired by settle.lua; expired units go back on sale and the crowd at the edge gets them.

mod common;

use common::*;
use flashgate::keys::EventKeys;
use flashgate::native::now_ms;
use flashgate::native::orders::{expire_due, settle};
use flashgate::origin::{Cmd, Origin};
use flashgate::script::{SettleVerb, Settled};
use serde_json::Value as Json;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// One purchase attempt of one unit of A: (status, body).
async fn buy(sale: &Sale, event: &str, user: &str, key: &str) -> (u16, Json) {
    let resp = sale
        .http
        .post(sale.worker.url(&format!("/api/events/{event}/orders")))
        .bearer_auth(token(user))
        .header("idempotency-key", key)
        .json(&serde_json::json!({"items": [{"sku": "A", "qty": 1}]}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

fn code(body: &Json) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_units_go_back_to_the_crowd_within_two_seconds() {
    let mut s = spec("life", &[("A", 20)], -1000, (1, 1, 1));
    s.pay_within = 2;
    let sale = Sale::start(s, &[]).await;
    let o = &sale.origin;

    // 20 buyers take the 20 units; 20 latecomers are refused.
    let mut orders = BTreeMap::new();
    for i in 0..20 {
        let (st, b) = buy(&sale, "life", &format!("b{i}"), &format!("key-b{i:04}")).await;
        assert_eq!(st, 201, "{b}");
        orders.insert(i, b["order"]["id"].as_str().unwrap().to_string());
    }
    for i in 0..20 {
        let (st, b) = buy(
            &sale,
            "life",
            &format!("late{i}"),
            &format!("key-l{i:04}-0"),
        )
        .await;
        assert_eq!((st, code(&b)), (410, "sold_out"));
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
            let (st, b) = buy(&sale, "life", &user, &format!("key-{user}-{attempt}")).await;
            match (st, code(&b)) {
                (201, _) => {
                    let ms = expired_at.elapsed().as_millis() as u64;
                    if user == "b15" {
                        again_by_expired_buyer = Some(ms);
                    }
                    placed.insert(user, ms);
                }
                (410, "sold_out") => {}
                other => panic!("{user}: unexpected answer {other:?} {b}"),
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
    let sold = o.call(&Cmd::new(["HGET", &k.sold, "A"])).await.unwrap();
    assert_eq!(sold.as_int(), Some(20));
    let mut users: Vec<String> = (0..20).map(|i| format!("b{i}")).collect();
    users.extend((0..20).map(|i| format!("late{i}")));
    for u in users {
        let t = o.call(&Cmd::new(["HGET", &k.user(&u), "t"])).await.unwrap();
        assert!(t.as_int().unwrap_or(0) <= 1, "{u} is over the total cap");
    }
    let pending = o.call(&Cmd::new(["ZCARD", &k.pending])).await.unwrap();
    assert_eq!(
        pending.as_int(),
        Some(10),
        "the 10 new orders await payment"
    );
}
