//! The line against a real redis-server, through the worker's own core (the gate, as the
//! simulator runs it): the draw's commitment before the start and its seed from the start on,
//! in the event's public view; an order placed out of turn directly at the origin, caught by
//! `flashgate event verify-draw`.

mod common;

use common::*;
use flashgate_core::config::Config;
use flashgate_core::gate::{ApiRequest, Gate, NoLimiter};
use flashgate_core::keys::EventKeys;
use flashgate_core::line::{self, mint_ticket, Seed, Ticket, Window};
use flashgate_core::model::{now_ms, Fairness};
use flashgate_core::net::NativeOrigin;
use flashgate_core::order::{self, Line, Order};
use flashgate_core::origin::{Cmd, Origin};
use flashgate_core::script::{parse_view, view_call, PurchaseCall, PURCHASE, VIEW};
use flashgate_core::threshold::{self, ADVANCE_MS};
use serde_json::Value as Json;

fn gate(redis: &Redis) -> Gate {
    let url = redis.url();
    let config = Config::from_lookup(|name| match name {
        "ORIGIN_URL" => Some(url.clone()),
        "IDENTITY_SECRET" => Some(SECRET.to_string()),
        _ => None,
    })
    .unwrap();
    Gate::new(config)
}

async fn get(g: &Gate, o: &NativeOrigin, path: &str) -> Json {
    let req = ApiRequest {
        method: "GET",
        path,
        ..ApiRequest::default()
    };
    let h = g.handle(o, &NoLimiter, &req, now_ms(), &now_ms).await;
    assert_eq!(h.reply.status, 200, "{}", h.reply.body);
    serde_json::from_str(&h.reply.body).unwrap()
}

async fn seed_at_origin(o: &NativeOrigin, event: &str) -> Seed {
    let v = o
        .call(&Cmd::new(["GET".to_string(), EventKeys::new(event).seed()]))
        .await
        .unwrap();
    Seed::from_hex(v.as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn the_view_shows_the_commitment_before_the_start_and_the_seed_from_it() {
    let redis = Redis::start();
    let o = redis.origin();
    let s = spec("drawn", &[("A", 10)], 60_000, (1, 1, 1));
    assert_eq!(s.fairness, Fairness::Line, "the default for new events");
    flashgate_core::ops::create(&o, &s, true).await.unwrap();
    let seed = seed_at_origin(&o, "drawn").await;

    let before = get(&gate(&redis), &o, "/api/events/drawn").await;
    assert_eq!(before["fairness"], "line");
    assert_eq!(before["commitment"], line::commitment(&seed));
    assert!(
        before.get("seed").is_none(),
        "secret before the start: {before}"
    );

    flashgate_core::ops::set_state(&o, "drawn", flashgate_core::ops::Verb::Start)
        .await
        .unwrap();
    let after = get(&gate(&redis), &o, "/api/events/drawn").await;
    let shown = Seed::from_hex(after["seed"].as_str().expect("the seed")).unwrap();
    assert_eq!(shown, seed);
    assert!(line::reveals(&shown, after["commitment"].as_str().unwrap()));

    // An event with the per-attempt lottery still has a commitment, and says what it is.
    let mut a = spec("lottery", &[("A", 10)], -1000, (1, 1, 1));
    a.fairness = Fairness::Attempt;
    flashgate_core::ops::create(&o, &a, true).await.unwrap();
    let v = get(&gate(&redis), &o, "/api/events/lottery").await;
    assert_eq!(v["fairness"], "attempt");
}

#[tokio::test]
async fn verify_draw_catches_an_order_placed_out_of_turn() {
    let redis = Redis::start();
    let o = redis.origin();
    let s = spec("fair", &[("A", 10)], -1000, (1, 1, 1));
    flashgate_core::ops::create(&o, &s, true).await.unwrap();
    let g = gate(&redis);
    let now = now_ms();

    // An early entrant buys through the edge: the line is short, so their place has come up.
    let ticket = mint_ticket(
        SECRET.as_bytes(),
        &Ticket {
            event: "fair".into(),
            user: "early".into(),
            window: Window::Early,
            exp: now / 1000 + 600,
        },
    );
    let auth = format!("Bearer {}", token("early"));
    let req = ApiRequest {
        method: "POST",
        path: "/api/events/fair/orders",
        authorization: Some(&auth),
        content_type: Some("application/json"),
        idempotency_key: Some("key-early-1"),
        entry: Some(&ticket),
        body: br#"{"items":[{"sku":"A","qty":1}]}"#,
        ..ApiRequest::default()
    };
    let mut placed = false;
    for _ in 0..40 {
        let h = g.handle(&o, &NoLimiter, &req, now_ms(), &now_ms).await;
        if h.reply.status == 201 {
            placed = true;
            break;
        }
        assert_eq!(h.reply.status, 503, "{}", h.reply.body);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(placed, "the early entrant's place came up");
    let r = flashgate_core::draw::verify_draw(&o, "fair", now_ms())
        .await
        .unwrap();
    assert_eq!((r.in_turn, r.out_of_turn.len()), (1, 0), "{r:?}");

    // Someone with access to the origin places an order directly, for a shopper who arrived
    // a minute after the start: the line has not come near that place.
    let keys = EventKeys::new("fair");
    let lines = vec![Line {
        sku: "A".into(),
        qty: 1,
    }];
    let fp = order::fingerprint(&lines);
    let t = now_ms();
    let doc = Order::new(
        "fair",
        "cheat",
        "key-cheat-1",
        vec![order::OrderLine {
            sku: "A".into(),
            qty: 1,
            unit_price: 1000,
            currency: "USD".into(),
        }],
        t,
        t + 900_000,
    );
    let json = serde_json::to_string(&doc).unwrap();
    let call = PurchaseCall {
        keys: &keys,
        user: "cheat",
        now_ms: t,
        idempotency_key: "key-cheat-1",
        fingerprint: &fp,
        order_json: &json,
        pay_by_ms: t + 900_000,
        lines: &lines,
        fresh: true,
    };
    let (k, args) = call.keys_and_args_in_line(Window::Arrived(s_start(&s) + 60));
    let v = PURCHASE.eval(&o, &k, &args).await.unwrap();
    assert_eq!(v.as_array().unwrap()[0].as_int(), Some(0), "placed: {v:?}");

    let r = flashgate_core::draw::verify_draw(&o, "fair", now_ms())
        .await
        .unwrap();
    assert_eq!(r.in_turn, 1, "{r:?}");
    assert_eq!(r.out_of_turn.len(), 1, "{r:?}");
    assert_eq!(r.out_of_turn[0].user, "cheat");
    // The CLI says so, and fails.
    let out = cli_output(&redis.url(), &["event", "verify-draw", "fair"]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("1 orders in turn, 1 out of turn"), "{text}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("out of turn"));
}

fn s_start(s: &flashgate_core::model::EventSpec) -> i64 {
    flashgate_core::model::parse_rfc3339_ms(&s.starts_at).unwrap() / 1000
}

/// view.lua as the edge calls it at `now` with `report`: whether it claimed the tick.
async fn view_at(o: &NativeOrigin, event: &str, now: i64, report: &[&str]) -> bool {
    let report: Vec<String> = report.iter().map(|s| s.to_string()).collect();
    let (keys, args) = view_call(&EventKeys::new(event), now, &report);
    let v = VIEW.eval(o, &keys, &args).await.unwrap();
    parse_view(&v, now.div_euclid(1000))
        .unwrap()
        .unwrap()
        .claimed
}

async fn line_field(o: &NativeOrigin, event: &str, field: &str) -> Option<String> {
    let cmd = Cmd::new([
        "HGET".to_string(),
        EventKeys::new(event).line(),
        field.into(),
    ]);
    o.call(&cmd).await.unwrap().as_str().map(str::to_string)
}

#[tokio::test]
async fn view_sums_the_time_watched_and_hands_out_a_tick_only_once_the_last_is_written() {
    let redis = Redis::start();
    let o = redis.origin();
    let s = spec("ticks", &[("A", 10)], -1000, (1, 1, 1));
    flashgate_core::ops::create(&o, &s, true).await.unwrap();
    let t = now_ms().div_euclid(ADVANCE_MS) * ADVANCE_MS + 10 * ADVANCE_MS;

    // Two isolates report the time they watched window 1: the origin sums it.
    assert!(view_at(&o, "ticks", t, &["reports", "1", "~1", "400"]).await);
    assert_eq!(line_field(&o, "ticks", "x:1").await.as_deref(), Some("400"));
    // The next tick is not handed out while the last claim's state is unwritten ...
    let next = t + ADVANCE_MS;
    assert!(!view_at(&o, "ticks", next, &["reports", "1", "~1", "600"]).await);
    assert_eq!(
        line_field(&o, "ticks", "x:1").await.as_deref(),
        Some("1000")
    );
    // ... and is once line.lua has written it.
    let tick = t.div_euclid(ADVANCE_MS);
    let write = Cmd::new([
        "HSET".to_string(),
        EventKeys::new("ticks").line(),
        "tick".into(),
        tick.to_string(),
    ]);
    o.call(&write).await.unwrap();
    assert!(view_at(&o, "ticks", next, &["reports", "1"]).await);
    // A claim whose state never comes is given up after four ticks.
    assert!(!view_at(&o, "ticks", next + 3 * ADVANCE_MS, &["reports", "1"]).await);
    assert!(view_at(&o, "ticks", next + 4 * ADVANCE_MS, &["reports", "1"]).await);
}

/// A fleet woken together by the start reports at the same ticks, just after them; the first
/// to read after a tick claims it. While the line waits for a window to be counted, the
/// claimer reads again `SETTLE_MS` later and advances from what the others reported meanwhile.
#[tokio::test]
async fn the_claimer_of_a_waiting_line_advances_from_the_reports_made_as_it_settled() {
    let redis = Redis::start();
    let o = redis.origin();
    let s = spec("settle", &[("A", 10)], -1000, (1, 1, 1));
    flashgate_core::ops::create(&o, &s, true).await.unwrap();
    let g = gate(&redis);
    let auth = format!("Bearer {}", token("first"));
    let req = ApiRequest {
        method: "POST",
        path: "/api/events/settle/orders",
        authorization: Some(&auth),
        content_type: Some("application/json"),
        idempotency_key: Some("key-first-1"),
        body: br#"{"items":[{"sku":"A","qty":1}]}"#,
        ..ApiRequest::default()
    };
    let now = now_ms();
    let rank = threshold::arrived_rank(now, s_start(&s) * 1000);
    // Another isolate's report, made once the tick is claimed: 50 sampled shoppers of this
    // second's window, and 200 ms watched.
    let sightings: Vec<String> = (0..50)
        .flat_map(|n| [format!("@{rank}:other-{n}"), "1".to_string()])
        .chain([format!("~{rank}"), "200".to_string()])
        .collect();
    let other = async {
        while line_field(&o, "settle", "claimed").await.is_none() {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        let report: Vec<&str> = sightings.iter().map(String::as_str).collect();
        assert!(
            !view_at(&o, "settle", now_ms(), &report).await,
            "claimed once"
        );
    };
    let (h, ()) = tokio::join!(g.handle(&o, &NoLimiter, &req, now, &now_ms), other);
    assert_eq!(h.reply.status, 503, "{}", h.reply.body);

    // The state was made SETTLE_MS after the claim, from the figures then.
    let at: i64 = line_field(&o, "settle", "at")
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(at, now + threshold::SETTLE_MS);
    let filling = line_field(&o, "settle", "filling").await.unwrap();
    let counted: f64 = (filling.split(' '))
        .find_map(|f| {
            let mut p = f.split(':');
            (p.next()? == rank.to_string()).then(|| p.next()?.parse().ok())?
        })
        .unwrap_or(0.0);
    let sample = threshold::SAMPLE as f64;
    assert!(counted >= 50.0 * sample, "window {rank}: {filling}");
}
