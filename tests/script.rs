//! purchase.lua and view.lua against a real redis-server (and a real Redis Cluster), driven
//! natively through the same RESP client the worker uses. Time is an argument, so calendar
//! days and the state machine are tested without waiting.

mod common;

use common::*;
use flashgate::keys::EventKeys;
use flashgate::model::{effective_state, parse_rfc3339_ms, State, MS_PER_DAY};
use flashgate::native::{ops, NativeOrigin};
use flashgate::origin::{Cmd, Origin, Value};
use flashgate::script::{parse_outcome, Line, LineAfter, Outcome, PurchaseCall, PURCHASE};

struct Attempt<'a> {
    event: &'a str,
    user: &'a str,
    key: &'a str,
    lines: Vec<Line>,
    now: i64,
}

fn lines(v: &[(&str, u32)]) -> Vec<Line> {
    v.iter()
        .map(|(s, q)| Line {
            sku: s.to_string(),
            qty: *q,
        })
        .collect()
}

async fn attempt(o: &NativeOrigin, a: &Attempt<'_>) -> Outcome {
    let keys = EventKeys::new(a.event);
    let fp = flashgate::order::fingerprint(&a.lines);
    let order = format!(
        r#"{{"id":"{}"}}"#,
        flashgate::order::order_id(a.event, a.user, a.key)
    );
    let call = PurchaseCall {
        keys: &keys,
        user: a.user,
        now_ms: a.now,
        idempotency_key: a.key,
        fingerprint: &fp,
        order_json: &order,
        lines: &a.lines,
    };
    let (k, args) = call.keys_and_args();
    let v = PURCHASE.eval(o, &k, &args).await.unwrap();
    parse_outcome(&v, a.lines.len()).unwrap()
}

async fn hget(o: &NativeOrigin, key: &str, field: &str) -> Option<String> {
    o.call(&Cmd::new(["HGET", key, field]))
        .await
        .unwrap()
        .as_str()
        .map(str::to_string)
}

async fn llen(o: &NativeOrigin, key: &str) -> i64 {
    o.call(&Cmd::new(["LLEN", key]))
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

#[tokio::test]
async fn placing_replaying_and_caps() {
    let r = Redis::start();
    let o = r.origin();
    let t = setup(&o, "s1").await + 10;
    let k = EventKeys::new("s1");
    let a = |user, key, l: &[(&str, u32)], now| Attempt {
        event: "s1",
        user,
        key,
        lines: lines(l),
        now,
    };

    let out = attempt(&o, &a("u1", "key-00001", &[("A", 1), ("B", 1)], t)).await;
    assert_eq!(
        out,
        Outcome::Placed {
            total: 2,
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
    assert_eq!(llen(&o, &k.orders).await, 1);

    // Same key, same lines (in another order): a replay, no second deduction or order.
    let out = attempt(&o, &a("u1", "key-00001", &[("B", 1), ("A", 1)], t + 5)).await;
    assert!(matches!(out, Outcome::Replayed { total: 2, .. }), "{out:?}");
    // Same key, other lines: refused.
    assert_eq!(
        attempt(&o, &a("u1", "key-00001", &[("A", 1)], t)).await,
        Outcome::KeyReused
    );
    assert_eq!(hget(&o, &k.sold, "A").await.as_deref(), Some("1"));
    assert_eq!(llen(&o, &k.orders).await, 1);

    // Per item per day.
    assert_eq!(
        attempt(&o, &a("u1", "key-00002", &[("A", 1)], t)).await,
        Outcome::ItemLimit { line: 0, today: 1 }
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
        Outcome::TotalLimit { total: 3 }
    );
    assert_eq!(hget(&o, &k.sold, "A").await.as_deref(), Some("2"));
    assert_eq!(llen(&o, &k.orders).await, 2);
}

#[tokio::test]
async fn all_or_nothing() {
    let r = Redis::start();
    let o = r.origin();
    let t = setup(&o, "s2").await + 10;
    let k = EventKeys::new("s2");
    // B has 1 left; u2 takes it.
    let placed = attempt(
        &o,
        &Attempt {
            event: "s2",
            user: "u2",
            key: "key-first",
            lines: lines(&[("B", 1)]),
            now: t,
        },
    )
    .await;
    assert!(matches!(placed, Outcome::Placed { .. }));
    // u1 asks for A and B: B cannot be met, so A is not deducted either.
    let out = attempt(
        &o,
        &Attempt {
            event: "s2",
            user: "u1",
            key: "key-multi",
            lines: lines(&[("A", 1), ("B", 1)]),
            now: t,
        },
    )
    .await;
    assert_eq!(
        out,
        Outcome::SoldOut {
            line: 1,
            remaining: 0
        }
    );
    assert_eq!(hget(&o, &k.sold, "A").await, None, "nothing deducted");
    assert_eq!(hget(&o, &k.user("u1"), "t").await, None, "no counters");
    assert_eq!(llen(&o, &k.orders).await, 1, "no order queued");
    // Duplicated skus in one attempt are malformed, even if they slipped past the edge.
    let dup = attempt(
        &o,
        &Attempt {
            event: "s2",
            user: "u3",
            key: "key-dup01",
            lines: lines(&[("A", 1), ("A", 1)]),
            now: t,
        },
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
            let out = attempt(
                &o,
                &Attempt {
                    event: "s3",
                    user: "u",
                    key: &key,
                    lines: lines(&[("A", 1)]),
                    now,
                },
            )
            .await;
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
        &Attempt {
            event: "nope",
            user: "u",
            key: "key-00000",
            lines: lines(&[("A", 1)]),
            now: start,
        },
    )
    .await;
    assert_eq!(unknown, Outcome::UnknownEvent);
}

#[tokio::test]
async fn script_cache_loss_is_survived() {
    let r = Redis::start();
    let o = r.origin();
    let t = setup(&o, "s4").await + 10;
    for i in 0..6 {
        if i == 3 {
            assert_eq!(
                o.call(&Cmd::new(["SCRIPT", "FLUSH"])).await.unwrap(),
                Value::Str("OK".into())
            );
        }
        let (user, key) = (format!("u{i}"), format!("key-{i:05}"));
        let out = attempt(
            &o,
            &Attempt {
                event: "s4",
                user: &user,
                key: &key,
                lines: lines(&[("A", 1)]),
                now: t,
            },
        )
        .await;
        assert!(
            matches!(out, Outcome::Placed { .. }),
            "attempt {i}: {out:?}"
        );
    }
    assert_eq!(hget(&o, "fg:{s4}:sold", "A").await.as_deref(), Some("6"));
}

#[tokio::test]
async fn cluster_events_on_different_nodes() {
    let c = Cluster::start();
    let o = flashgate::native::connect(&c.seed_url(), None, 5000).unwrap();
    // Pick event ids whose tags land on at least two different nodes.
    let mut by_node = std::collections::BTreeMap::new();
    for i in 0..50 {
        let id = format!("c{i}");
        by_node
            .entry(c.owner(&EventKeys::new(&id).meta))
            .or_insert(id);
    }
    assert!(by_node.len() >= 2, "ids spread over nodes: {by_node:?}");
    for (node, id) in &by_node {
        let t = setup(&o, id).await + 10;
        let out = attempt(
            &o,
            &Attempt {
                event: id,
                user: "u1",
                key: "key-00001",
                lines: lines(&[("A", 1), ("B", 1)]),
                now: t,
            },
        )
        .await;
        assert!(
            matches!(out, Outcome::Placed { total: 2, .. }),
            "{id} on {node}: {out:?}"
        );
        let sold =
            flashgate::native::connect(&format!("redis://127.0.0.1:{node}"), None, 5000).unwrap();
        assert_eq!(
            hget(&sold, &EventKeys::new(id).sold, "B").await.as_deref(),
            Some("1"),
            "written on its own node"
        );
    }
}
