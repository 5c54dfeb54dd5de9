//! Admission control through the real worker and a real redis-server: when the fleet's
//! figures say the crowd is far over the event's origin budget, candidates are shed at the
//! edge with 503 `busy` and a jittered Retry-After, at no origin cost; when the figures go
//! away, the edge stops shedding within two refreshes (it never sheds everything forever).

mod common;

use common::*;
use flashgate_core::keys::EventKeys;
use flashgate_core::model::now_ms;
use flashgate_core::origin::{Cmd, Origin};
use flashgate_sim::load::{commandstats, commandstats_delta};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Writes fleet figures (`reports` isolates, `candidates` a second) into the buckets of the
/// coming `secs` seconds, as if a large fleet were reporting.
async fn crowd_figures(o: &impl Origin, event: &str, candidates: u64, secs: i64) {
    let k = EventKeys::new(event);
    let now = now_ms() / 1000;
    for sec in now - 2..now + secs {
        let c = candidates.to_string();
        o.call(&Cmd::new([
            "HSET",
            &k.fleet(sec),
            "reports",
            "50",
            "candidates",
            &c,
        ]))
        .await
        .unwrap();
    }
}

async fn clear_figures(o: &impl Origin, event: &str, secs: i64) {
    let k = EventKeys::new(event);
    let now = now_ms() / 1000;
    for sec in now - 2..now + secs {
        o.call(&Cmd::new(["DEL", &k.fleet(sec)])).await.unwrap();
    }
}

/// This worker's admission chance for `event` and the fleet size it believes, from the
/// operator's stats.
async fn share(sale: &Sale, event: &str) -> (Option<f64>, Option<u64>) {
    let s = sale.stats().await;
    let a = &s["admission"][event];
    (a["p"].as_f64(), a["isolates"].as_u64())
}

/// Calls `probe` until it gives `Some(true)` or 10 s pass; the time it took.
async fn until<F: AsyncFnMut() -> bool>(what: &str, mut probe: F) -> Duration {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        if probe().await {
            return t0.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen within 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_over_the_budget_is_shed_at_the_edge_and_let_in_again() {
    let mut s = spec("adm", &[("A", 1000)], -1000, (1, 1, 1));
    s.origin_budget = 100;
    // The per-attempt lottery (tests/line.rs has the line).
    s.fairness = flashgate_core::model::Fairness::Attempt;
    let sale = Sale::start(s, &[("ADMISSION", "on")]).await;
    let o = &sale.origin;
    // One attempt goes through: the isolate now has a snapshot and reports its counts.
    assert_eq!(sale.buy("first", "key-first", &["A"]).await.status, 201);

    // The fleet reports 1,000,000 candidates a second against a budget of 100.
    crowd_figures(o, "adm", 1_000_000, 30).await;
    let mut n = 0;
    let took = until("shedding", async || {
        // Another attempt (a new one: a known key is replayed before any refresh) triggers
        // the refresh that brings the figures.
        n += 1;
        let _ = sale
            .buy(&format!("trigger{n}"), &format!("key-t{n}"), &["A"])
            .await;
        share(&sale, "adm").await.0.is_some_and(|p| p < 0.001)
    })
    .await;
    eprintln!("the edge followed the fleet's figures in {took:?}");
    let before = commandstats(o).await.unwrap();
    let mut retry = BTreeSet::new();
    for i in 0..30 {
        let a = sale
            .buy(&format!("crowd{i}"), &format!("key-crowd{i}"), &["A"])
            .await;
        assert_eq!((a.status, a.code()), (503, Some("busy")), "{}", a.body);
        let after = a.headers.get("retry-after").expect("a Retry-After");
        retry.insert(after.to_str().unwrap().to_string());
    }
    let d = commandstats_delta(&before, &commandstats(o).await.unwrap());
    assert_eq!(
        d.get("evalsha"),
        None,
        "shed attempts cost the origin nothing: {d:?}"
    );
    assert!(
        retry.iter().all(|r| ["1", "2", "3"].contains(&r.as_str())),
        "{retry:?}"
    );
    assert!(retry.len() > 1, "Retry-After is jittered: {retry:?}");

    // The crowd leaves: its figures go, and the fleet's own reports (one isolate here) take
    // their place. The edge lets attempts in again, at the whole budget.
    clear_figures(o, "adm", 30).await;
    let took = until("admission again", async || {
        n += 1;
        let _ = sale
            .buy(&format!("trigger{n}"), &format!("key-t{n}"), &["A"])
            .await;
        share(&sale, "adm").await == (Some(1.0), Some(1))
    })
    .await;
    eprintln!("the edge let the crowd in again after {took:?}");
    let a = sale.buy("crowd0", "key-crowd0", &["A"]).await;
    assert_eq!(
        a.status, 201,
        "the shed shopper's retry with the same key is placed: {}",
        a.body
    );
}
