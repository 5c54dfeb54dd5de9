//! purchase.lua, settle.lua and view.lua against a real redis-server (and a real Redis
//! Cluster), driven natively through the same RESP client the worker uses. Time is an
//! argument, so calendar days, payment deadlines and the state machine are tested without
//! waiting.

mod common;

use common::*;
use flashgate_core::keys::EventKeys;
use flashgate_core::model::{effective_state, parse_rfc3339_ms, State, MS_PER_DAY};
use flashgate_core::net::NativeOrigin;
use flashgate_core::ops;
use flashgate_core::order::{Order, OrderLine};
use flashgate_core::orders::{expire_due, settle, track};
use flashgate_core::origin::{Cmd, Origin, Value};
use flashgate_core::script::{
    Line, LineAfter, Outcome, PurchaseCall, SettleVerb, Settled, PURCHASE,
};

/// The payment window of events made by [`spec`]: the default, 15 minutes.
const PAY_MS: i64 = 900_000;

struct Attempt<'a> {
    event: &'a str,
    user: &'a str,
    key: &'a str,
    lines: Vec<Line>,
    now: i64,
}

impl<'a> Attempt<'a> {
    /// `user` asks for `lines` as (sku, qty) in `event` with key `key`, at `now`.
    fn new(event: &'a str, user: &'a str, key: &'a str, lines: &[(&str, u32)], now: i64) -> Self {
        let lines = lines
            .iter()
            .map(|(s, q)| Line {
                sku: s.to_string(),
                qty: *q,
            })
            .collect();
        Attempt {
            event,
            user,
            key,
            lines,
            now,
        }
    }
}

/// One attempt as the edge sends a key it has seen before (a possible retry): the script
/// checks for a replay before anything else.
async fn attempt(o: &NativeOrigin, a: &Attempt<'_>) -> Outcome {
    attempt_as(o, a, false).await
}

/// One attempt; `fresh` says the edge knows nothing of the key.
async fn attempt_as(o: &NativeOrigin, a: &Attempt<'_>, fresh: bool) -> Outcome {
    let keys = EventKeys::new(a.event);
    let fp = flashgate_core::order::fingerprint(&a.lines);
    let lines = a
        .lines
        .iter()
        .map(|l| OrderLine {
            sku: l.sku.clone(),
            qty: l.qty,
            unit_price: 100,
            currency: "USD".into(),
        })
        .collect();
    let order = Order::new(a.event, a.user, a.key, lines, a.now, a.now + PAY_MS);
    let order = serde_json::to_string(&order).unwrap();
    let call = PurchaseCall {
        keys: &keys,
        user: a.user,
        now_ms: a.now,
        idempotency_key: a.key,
        fingerprint: &fp,
        order_json: &order,
        pay_by_ms: a.now + PAY_MS,
        lines: &a.lines,
        fresh,
    };
    let (k, args) = call.keys_and_args();
    let v = PURCHASE.eval(o, &k, &args).await.unwrap();
    call.outcome(&v).unwrap()
}

async fn hget(o: &NativeOrigin, key: &str, field: &str) -> Option<String> {
    o.call(&Cmd::new(["HGET", key, field]))
        .await
        .unwrap()
        .as_str()
        .map(str::to_string)
}

async fn xlen(o: &NativeOrigin, key: &str) -> i64 {
    o.call(&Cmd::new(["XLEN", key]))
        .await
        .unwrap()
        .as_int()
        .unwrap()
}

/// Creates event `id` (live from `start`), items A=10, B=1, caps 1/day/item, total 3.
async fn setup(o: &NativeOrigin, id: &str) -> i64 {
    let s = spec(id, &[("A", 10), ("B", 1)], -1000, (1, 3, 1));
    ops::create(o, &s, true).await.unwrap();
    parse_rfc3339_ms(&s.starts_at).unwrap()
}

/// A fresh redis-server (stopped when dropped) with event `id` made by [`setup`], a client
/// of it, and a time 10 ms into the sale.
async fn live(id: &str) -> (Redis, NativeOrigin, i64) {
    let r = Redis::start();
    let o = r.origin();
    let t = setup(&o, id).await + 10;
    (r, o, t)
}

#[tokio::test]
async fn placing_replaying_and_caps() {
    let (_r, o, t) = live("s1").await;
    let k = EventKeys::new("s1");
    let a = |user, key, l: &[(&str, u32)], now| Attempt::new("s1", user, key, l, now);

    let out = attempt(&o, &a("u1", "key-00001", &[("A", 1), ("B", 1)], t)).await;
    assert_eq!(
        out,
        Outcome::Placed {
            total: 2,
            due: Some(t + PAY_MS),
            lines: vec![
                LineAfter {
                    today: 1,
                    remaining: 9
                },
                LineAfter {
                    today: 1,
                    remaining: 0
                }
            ]
        }
    );
    assert_eq!(xlen(&o, &k.stream).await, 1);

    // Same key, same lines (in another order): a replay, no second deduction or order.
    let out = attempt(&o, &a("u1", "key-00001", &[("B", 1), ("A", 1)], t + 5)).await;
    assert!(matches!(out, Outcome::Replayed { total: 2, .. }), "{out:?}");
    // Same key, other lines: refused.
    assert_eq!(
        attempt(&o, &a("u1", "key-00001", &[("A", 1)], t)).await,
        Outcome::KeyReused
    );
    assert_eq!(hget(&o, &k.meta, "sold:A").await.as_deref(), Some("1"));
    assert_eq!(xlen(&o, &k.stream).await, 1);

    // Per item per day.
    assert_eq!(
        attempt(&o, &a("u1", "key-00002", &[("A", 1)], t)).await,
        Outcome::ItemLimit {
            line: 0,
            today: 1,
            due: Some(t + PAY_MS)
        }
    );
    // B is gone for everyone.
    assert_eq!(
        attempt(&o, &a("u2", "key-00003", &[("B", 1)], t)).await,
        Outcome::SoldOut {
            line: 0,
            remaining: 0
        }
    );
    // Too many of one item in one order.
    assert_eq!(
        attempt(&o, &a("u2", "key-00004", &[("A", 2)], t)).await,
        Outcome::OrderQtyLimit { line: 0, cap: 1 }
    );
    assert_eq!(
        attempt(&o, &a("u2", "key-00005", &[("Z", 1)], t)).await,
        Outcome::UnknownItem { line: 0 }
    );

    // Next calendar day: the per-item cap resets, the total cap (3) does not.
    let tomorrow = t + MS_PER_DAY;
    let out = attempt(&o, &a("u1", "key-00006", &[("A", 1)], tomorrow)).await;
    assert!(matches!(out, Outcome::Placed { total: 3, .. }), "{out:?}");
    // A fourth unit for u1 on yet another day breaks the total cap.
    assert_eq!(
        attempt(
            &o,
            &a("u1", "key-00007", &[("A", 1)], tomorrow + MS_PER_DAY)
        )
        .await,
        Outcome::TotalLimit {
            total: 3,
            due: Some(t + PAY_MS)
        }
    );
    assert_eq!(hget(&o, &k.meta, "sold:A").await.as_deref(), Some("2"));
    assert_eq!(xlen(&o, &k.stream).await, 2);
}

#[tokio::test]
async fn all_or_nothing() {
    let (_r, o, t) = live("s2").await;
    let k = EventKeys::new("s2");
    // B has 1 left; u2 takes it.
    let placed = attempt(&o, &Attempt::new("s2", "u2", "key-first", &[("B", 1)], t)).await;
    assert!(matches!(placed, Outcome::Placed { .. }));
    // u1 asks for A and B: B cannot be met, so A is not deducted either.
    let out = attempt(
        &o,
        &Attempt::new("s2", "u1", "key-multi", &[("A", 1), ("B", 1)], t),
    )
    .await;
    assert_eq!(
        out,
        Outcome::SoldOut {
            line: 1,
            remaining: 0
        }
    );
    assert_eq!(hget(&o, &k.meta, "sold:A").await, None, "nothing deducted");
    assert_eq!(hget(&o, &k.user("u1"), "t").await, None, "no counters");
    assert_eq!(xlen(&o, &k.stream).await, 1, "no order handed on");
    // Duplicated skus in one attempt are malformed, even if they slipped past the edge.
    let dup = attempt(
        &o,
        &Attempt::new("s2", "u3", "key-dup01", &[("A", 1), ("A", 1)], t),
    )
    .await;
    assert_eq!(dup, Outcome::BadArguments);
}

#[tokio::test]
async fn state_machine_matches_the_rust_one() {
    let r = Redis::start();
    let o = r.origin();
    let s = spec("s3", &[("A", 100)], 60_000, (100, 100, 1));
    ops::create(&o, &s, true).await.unwrap();
    let (start, end) = (
        parse_rfc3339_ms(&s.starts_at).unwrap(),
        parse_rfc3339_ms(&s.ends_at).unwrap(),
    );
    let mut n = 0;
    for flag in [State::Scheduled, State::Live, State::Paused, State::Ended] {
        o.call(&Cmd::new(["HSET", "fg:{s3}:meta", "state", flag.as_str()]))
            .await
            .unwrap();
        for now in [start - 1, start, end - 1, end] {
            n += 1;
            let key = format!("key-{n:05}");
            let out = attempt(&o, &Attempt::new("s3", "u", &key, &[("A", 1)], now)).await;
            let want = match effective_state(flag, start, end, now) {
                State::Scheduled => Outcome::NotStarted,
                State::Paused => Outcome::Paused,
                State::Ended => Outcome::Ended,
                State::Live => {
                    assert!(
                        matches!(out, Outcome::Placed { .. }),
                        "{flag:?} at {now}: {out:?}"
                    );
                    continue;
                }
            };
            assert_eq!(out, want, "{flag:?} at {}", now - start);
        }
    }
    let unknown = attempt(
        &o,
        &Attempt::new("nope", "u", "key-00000", &[("A", 1)], start),
    )
    .await;
    assert_eq!(unknown, Outcome::UnknownEvent);
}

#[tokio::test]
async fn script_cache_loss_is_survived() {
    let (_r, o, t) = live("s4").await;
    for i in 0..6 {
        if i == 3 {
            assert_eq!(
                o.call(&Cmd::new(["SCRIPT", "FLUSH"])).await.unwrap(),
                Value::Str("OK".into())
            );
        }
        let (user, key) = (format!("u{i}"), format!("key-{i:05}"));
        let out = attempt(&o, &Attempt::new("s4", &user, &key, &[("A", 1)], t)).await;
        assert!(
            matches!(out, Outcome::Placed { .. }),
            "attempt {i}: {out:?}"
        );
    }
    assert_eq!(
        hget(&o, "fg:{s4}:meta", "sold:A").await.as_deref(),
        Some("6")
    );
}

#[tokio::test]
async fn cluster_events_on_different_nodes() {
    let c = Cluster::start();
    let o = flashgate_core::net::connect(&c.seed_url(), None, 5000).unwrap();
    let by_node = c.event_per_node("c");
    assert!(by_node.len() >= 2, "ids spread over nodes: {by_node:?}");
    for (node, id) in &by_node {
        let t = setup(&o, id).await + 10;
        let out = attempt(
            &o,
            &Attempt::new(id, "u1", "key-00001", &[("A", 1), ("B", 1)], t),
        )
        .await;
        assert!(
            matches!(out, Outcome::Placed { total: 2, .. }),
            "{id} on {node}: {out:?}"
        );
        let sold =
            flashgate_core::net::connect(&format!("redis://127.0.0.1:{node}"), None, 5000).unwrap();
        assert_eq!(
            hget(&sold, &EventKeys::new(id).meta, "sold:B")
                .await
                .as_deref(),
            Some("1"),
            "written on its own node"
        );
    }
}

/// The fields of every entry in an event's order stream, oldest first.
async fn stream_entries(o: &NativeOrigin, event: &str) -> Vec<(String, serde_json::Value)> {
    let v = o
        .call(&Cmd::new([
            "XRANGE",
            &EventKeys::new(event).stream,
            "-",
            "+",
        ]))
        .await
        .unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let f = e.as_array().unwrap()[1].as_array().unwrap();
            let get = |name: &str| {
                let i = f.iter().position(|x| x.as_str() == Some(name)).unwrap();
                f[i + 1].as_str().unwrap().to_string()
            };
            (get("type"), serde_json::from_str(&get("order")).unwrap())
        })
        .collect()
}

#[tokio::test]
async fn an_expiry_gives_everything_back_and_a_payment_keeps_it() {
    let (_r, o, t) = live("s5").await;
    let k = EventKeys::new("s5");
    let buy = |user, key, l: &[(&str, u32)], now| Attempt::new("s5", user, key, l, now);
    // u1 takes the last B and an A; u2 takes an A a minute later.
    let out = attempt(&o, &buy("u1", "key-00001", &[("A", 1), ("B", 1)], t)).await;
    assert!(matches!(out, Outcome::Placed { total: 2, .. }), "{out:?}");
    let out = attempt(&o, &buy("u2", "key-00002", &[("A", 1)], t + 60_000)).await;
    assert!(matches!(out, Outcome::Placed { .. }), "{out:?}");
    let (o1, o2) = (
        flashgate_core::order::order_id("s5", "u1", "key-00001"),
        flashgate_core::order::order_id("s5", "u2", "key-00002"),
    );
    // Nothing is due before its deadline.
    assert_eq!(
        settle(&o, "s5", &o1, SettleVerb::Expire, t + PAY_MS - 1)
            .await
            .unwrap(),
        Settled::NotDue { pay_by: t + PAY_MS }
    );
    assert_eq!(
        expire_due(&o, "s5", t + PAY_MS - 1, 100)
            .await
            .unwrap()
            .expired,
        0
    );
    // u2 pays in time; u1 does not.
    let paid = settle(&o, "s5", &o2, SettleVerb::Pay, t + 120_000);
    assert_eq!(paid.await.unwrap(), Settled::Done { units: 0 });
    let swept = expire_due(&o, "s5", t + 10 * PAY_MS, 100).await.unwrap();
    assert_eq!((swept.expired, swept.units), (1, 2), "only u1's order");
    // Units are back on sale, and u1's counters are as if the order never was.
    assert_eq!(hget(&o, &k.meta, "sold:A").await.as_deref(), Some("1"));
    assert_eq!(hget(&o, &k.meta, "sold:B").await.as_deref(), Some("0"));
    assert_eq!(hget(&o, &k.user("u1"), "t").await.as_deref(), Some("0"));
    assert_eq!(hget(&o, &k.user("u1"), "e").await, None, "no pending order");
    // A retry of the expired key answers with the expired order, not a new purchase.
    let late = t + 11 * PAY_MS;
    let again = attempt(&o, &buy("u1", "key-00001", &[("B", 1), ("A", 1)], late)).await;
    assert!(matches!(again, Outcome::EndedUnpaid { .. }), "{again:?}");
    // The payment is final: the paid order neither expires nor is paid twice.
    let twice = settle(&o, "s5", &o2, SettleVerb::Pay, late).await.unwrap();
    assert_eq!(twice, Settled::AlreadyPaid);
    let expire_paid = settle(&o, "s5", &o2, SettleVerb::Expire, late).await;
    assert_eq!(expire_paid.unwrap(), Settled::AlreadyPaid);
    let pay_expired = settle(&o, "s5", &o1, SettleVerb::Pay, late).await;
    assert_eq!(pay_expired.unwrap(), Settled::AlreadyExpired);
    // u1 can buy the same items again the same day: the per-item cap was given back too.
    let out = attempt(
        &o,
        &buy("u1", "key-00003", &[("A", 1), ("B", 1)], t + PAY_MS + 1),
    )
    .await;
    assert!(matches!(out, Outcome::Placed { total: 2, .. }), "{out:?}");
    // Every change went to the stream, each with its order document.
    let types: Vec<String> = stream_entries(&o, "s5")
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(types, ["placed", "placed", "paid", "expired", "placed"]);
    assert_eq!(
        settle(&o, "s5", "o_nope", SettleVerb::Pay, late)
            .await
            .unwrap(),
        Settled::NoSuchOrder
    );
}

/// Tracking records each placed order once, whatever is called twice: its index, its place
/// in the pending set (only while pending), the user hash's expiry and the tracked mark.
#[tokio::test]
async fn tracking_is_idempotent_and_never_brings_a_settled_order_back() {
    let (_r, o, t) = live("s7").await;
    let k = EventKeys::new("s7");
    for (user, key) in [
        ("u1", "key-00001"),
        ("u2", "key-00002"),
        ("u3", "key-00003"),
    ] {
        let a = Attempt::new("s7", user, key, &[("A", 1)], t);
        assert!(matches!(attempt(&o, &a).await, Outcome::Placed { .. }));
    }
    let zcard = || async { o.call(&Cmd::new(["ZCARD", &k.pending])).await.unwrap() };
    assert_eq!(
        zcard().await.as_int(),
        Some(0),
        "purchase.lua leaves it to tracking"
    );
    assert_eq!(track(&o, "s7").await.unwrap(), 3);
    assert_eq!(
        track(&o, "s7").await.unwrap(),
        0,
        "nothing new past the mark"
    );
    assert_eq!(zcard().await.as_int(), Some(3));
    let o1 = flashgate_core::order::order_id("s7", "u1", "key-00001");
    let day = (t / MS_PER_DAY).to_string();
    assert_eq!(
        hget(&o, &k.orders, &format!("o:{o1}")).await,
        Some(format!("u1 key-00001 {day}"))
    );
    let ttl = o.call(&Cmd::new(["PTTL", &k.user("u1")])).await.unwrap();
    assert!(ttl.as_int().unwrap() > 7 * MS_PER_DAY, "{ttl:?}");
    let last = o
        .call(&Cmd::new(["XREVRANGE", &k.stream, "+", "-", "COUNT", "1"]))
        .await
        .unwrap();
    let last_id = last.as_array().unwrap()[0].as_array().unwrap()[0].clone();
    assert_eq!(
        hget(&o, &k.orders, "n:tracked").await.as_deref(),
        last_id.as_str()
    );
    // u1 pays; tracked again from scratch, the paid order stays out of the pending set.
    let paid = settle(&o, "s7", &o1, SettleVerb::Pay, t + 1).await.unwrap();
    assert_eq!(paid, Settled::Done { units: 0 });
    o.call(&Cmd::new(["HDEL", &k.orders, "n:tracked"]))
        .await
        .unwrap();
    assert_eq!(track(&o, "s7").await.unwrap(), 3);
    assert_eq!(zcard().await.as_int(), Some(2));
    // An order placed after the mark is found by pay, which tracks on a miss.
    let late = Attempt::new("s7", "u4", "key-00004", &[("A", 1)], t + 2);
    assert!(matches!(attempt(&o, &late).await, Outcome::Placed { .. }));
    let o4 = flashgate_core::order::order_id("s7", "u4", "key-00004");
    let paid = settle(&o, "s7", &o4, SettleVerb::Pay, t + 3).await.unwrap();
    assert_eq!(paid, Settled::Done { units: 0 });
}

/// purchase.lua takes a straight path for a one-line order and a loop for more lines: each
/// refusal comes out the same both ways (the line it names aside), padded with a line that
/// would pass.
#[tokio::test]
async fn the_one_line_path_and_the_loop_refuse_alike() {
    let r = Redis::start();
    let o = r.origin();
    let s = spec(
        "s6",
        &[("A", 2), ("Y", 1000), ("Z", 1000)],
        -1000,
        (1, 2, 1),
    );
    ops::create(&o, &s, true).await.unwrap();
    let t = parse_rfc3339_ms(&s.starts_at).unwrap() + 10;
    async fn fresh(
        o: &NativeOrigin,
        user: &str,
        key: &str,
        l: &[(&str, u32)],
        now: i64,
    ) -> Outcome {
        attempt_as(o, &Attempt::new("s6", user, key, l, now), true).await
    }
    // A sells out; c has bought a Z today; d has reached the total cap (2) over two days.
    for (user, key, now) in [("a", "key-a0001", t), ("b", "key-b0001", t)] {
        assert!(matches!(
            fresh(&o, user, key, &[("A", 1)], now).await,
            Outcome::Placed { .. }
        ));
    }
    assert!(matches!(
        fresh(&o, "c", "key-c0001", &[("Z", 1)], t).await,
        Outcome::Placed { .. }
    ));
    for (key, now) in [("key-d0001", t), ("key-d0002", t + MS_PER_DAY)] {
        assert!(matches!(
            fresh(&o, "d", key, &[("Z", 1)], now).await,
            Outcome::Placed { .. }
        ));
    }
    let later = t + 2 * MS_PER_DAY;
    for pad in [false, true] {
        let line = usize::from(pad);
        let lines = |l: (&'static str, u32)| {
            if pad {
                vec![("Y", 1), l]
            } else {
                vec![l]
            }
        };
        let n = if pad { "2" } else { "1" };
        let key = |k: &str| format!("key-{k}-{n}");
        assert_eq!(
            fresh(&o, "u", &key("qty"), &lines(("Z", 2)), t).await,
            Outcome::OrderQtyLimit { line, cap: 1 }
        );
        assert_eq!(
            fresh(&o, "u", &key("unknown"), &lines(("Q", 1)), t).await,
            Outcome::UnknownItem { line }
        );
        let sold_out = Outcome::SoldOut { line, remaining: 0 };
        assert_eq!(
            fresh(&o, "u", &key("sold"), &lines(("A", 1)), t).await,
            sold_out
        );
        let seen = Attempt::new("s6", "u", "key-seen-0001", &lines(("A", 1)), t);
        assert_eq!(attempt(&o, &seen).await, sold_out, "a key the edge saw");
        assert_eq!(
            fresh(&o, "c", &key("cap"), &lines(("Z", 1)), t).await,
            Outcome::ItemLimit {
                line,
                today: 1,
                due: Some(t + PAY_MS)
            }
        );
        let total = fresh(&o, "d", &key("total"), &lines(("Z", 1)), later).await;
        assert_eq!(
            total,
            Outcome::TotalLimit {
                total: 2,
                due: Some(t + PAY_MS)
            }
        );
        assert_eq!(
            fresh(&o, "u", &key("early"), &lines(("Z", 1)), t - 1_000_000).await,
            Outcome::NotStarted
        );
    }
    // Nothing refused was written: A's two units, c's Z and d's two.
    let k = EventKeys::new("s6");
    assert_eq!(hget(&o, &k.meta, "sold:A").await.as_deref(), Some("2"));
    assert_eq!(hget(&o, &k.meta, "sold:Z").await.as_deref(), Some("3"));
    assert_eq!(hget(&o, &k.meta, "sold:Y").await, None);
    assert_eq!(xlen(&o, &k.stream).await, 5);
}

#[tokio::test]
async fn a_thousand_races_of_pay_against_expire_each_have_one_winner() {
    let r = Redis::start();
    let (o, o2) = (r.origin(), r.origin());
    let s = spec("race", &[("A", 1000)], -1000, (1, 1, 1));
    ops::create(&o, &s, true).await.unwrap();
    let t = parse_rfc3339_ms(&s.starts_at).unwrap() + 10;
    let users: Vec<String> = (0..1000).map(|i| format!("r{i}")).collect();
    for u in &users {
        let a = Attempt::new("race", u, "key-race-1", &[("A", 1)], t);
        assert!(matches!(attempt(&o, &a).await, Outcome::Placed { .. }));
    }
    // At the deadline, a payment and an expiry of each order race on two connections.
    let due = t + PAY_MS;
    let (mut paid, mut expired) = (0, 0);
    for u in &users {
        let id = flashgate_core::order::order_id("race", u, "key-race-1");
        let (p, e) = tokio::join!(
            settle(&o, "race", &id, SettleVerb::Pay, due),
            settle(&o2, "race", &id, SettleVerb::Expire, due)
        );
        match (p.unwrap(), e.unwrap()) {
            (Settled::Done { .. }, Settled::AlreadyPaid) => paid += 1,
            (Settled::AlreadyExpired, Settled::Done { units: 1 }) => expired += 1,
            other => panic!("{u}: not exactly one winner: {other:?}"),
        }
    }
    assert_eq!(paid + expired, 1000);
    let k = EventKeys::new("race");
    let sold: i64 = hget(&o, &k.meta, "sold:A").await.unwrap().parse().unwrap();
    assert_eq!(sold, paid, "stock kept for paid orders only");
    let entries = stream_entries(&o, "race").await;
    let count = |ty: &str| entries.iter().filter(|e| e.0 == ty).count() as i64;
    assert_eq!(
        (count("placed"), count("paid"), count("expired")),
        (1000, paid, expired)
    );
    let pending = o.call(&Cmd::new(["ZCARD", &k.pending])).await.unwrap();
    assert_eq!(pending.as_int(), Some(0));
    eprintln!("races: {paid} paid, {expired} expired");
}

#[tokio::test]
async fn a_fresh_attempt_for_a_sold_out_item_costs_one_read_and_a_key_lookup() {
    use flashgate_sim::load::{commandstats, commandstats_delta};
    let (_r, o, t) = live("s6").await;
    let b = |user, key| Attempt::new("s6", user, key, &[("B", 1)], t);
    // u1 takes the only B.
    assert!(matches!(
        attempt_as(&o, &b("u1", "key-00001"), true).await,
        Outcome::Placed { .. }
    ));
    // A fresh attempt by someone else: refused after reading meta (which holds sold) and
    // asking whether its key holds an order (HEXISTS; a key that does is answered with it),
    // nothing more: not the user's counters, no write.
    let before = commandstats(&o).await.unwrap();
    let out = attempt_as(&o, &b("u2", "key-00002"), true).await;
    let after = commandstats(&o).await.unwrap();
    assert_eq!(
        out,
        Outcome::SoldOut {
            line: 0,
            remaining: 0
        }
    );
    let d = commandstats_delta(&before, &after);
    assert_eq!(
        d,
        std::collections::BTreeMap::from([
            ("evalsha".to_string(), 1),
            ("hexists".to_string(), 1),
            ("hmget".to_string(), 1)
        ]),
        "one EVALSHA, one read and one key lookup inside it"
    );
    // A key the edge has seen (a retry) is checked for a replay first, even when sold out.
    let retry = attempt_as(&o, &b("u1", "key-00001"), false).await;
    assert!(matches!(retry, Outcome::Replayed { .. }), "{retry:?}");
}

/// Twins of one key (one request sent twice at once, each through an isolate that knows
/// nothing of the key, so both are "fresh") over the last unit get the same answer at the
/// origin: the order. 100 trials, each on a fresh event of one unit, one- and two-line
/// orders alike; and a fresh retry that comes after the sell-out finds its order too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twins_of_one_key_over_the_last_unit_get_the_same_answer() {
    let r = Redis::start();
    let (o1, o2) = (r.origin(), r.origin());
    let mut placed_first = [0, 0];
    for trial in 0..100 {
        let id = format!("tw{trial}");
        let s = spec(&id, &[("A", 1), ("B", 5)], -1000, (1, 3, 1));
        ops::create(&o1, &s, true).await.unwrap();
        let t = parse_rfc3339_ms(&s.starts_at).unwrap() + 10;
        let lines: &[(&str, u32)] = if trial % 2 == 0 {
            &[("A", 1)]
        } else {
            &[("A", 1), ("B", 1)]
        };
        let a = Attempt::new(&id, "u1", "key-twin-0001", lines, t);
        let (x, y) = tokio::join!(attempt_as(&o1, &a, true), attempt_as(&o2, &a, true));
        let order = |o: &Outcome| match o {
            Outcome::Placed { .. } => Some(None),
            Outcome::Replayed { order_json, .. } => Some(Some(order_json.clone())),
            _ => None,
        };
        let (ox, oy) = (order(&x), order(&y));
        assert!(
            ox.is_some() && oy.is_some(),
            "trial {trial}: twins answered {x:?} and {y:?}"
        );
        assert!(
            ox.as_ref().unwrap().is_none() != oy.as_ref().unwrap().is_none(),
            "trial {trial}: one placed, one replayed: {x:?} {y:?}"
        );
        placed_first[usize::from(ox.unwrap().is_some())] += 1;
        // A third copy, fresh again, after the sell-out: the same order.
        let z = attempt_as(&o1, &a, true).await;
        assert!(
            matches!(z, Outcome::Replayed { .. }),
            "trial {trial}: {z:?}"
        );
        // Another key of the same user is refused as sold out, cheaply.
        let other = Attempt::new(&id, "u1", "key-twin-0002", &[("A", 1)], t);
        let w = attempt_as(&o1, &other, true).await;
        assert!(matches!(w, Outcome::SoldOut { .. }), "trial {trial}: {w:?}");
        let k = EventKeys::new(&id);
        assert_eq!(
            xlen(&o1, &k.stream).await,
            1,
            "trial {trial}: one order placed"
        );
    }
    eprintln!("twins: the first twin placed the order {placed_first:?} times (x, y)");
}
