//! `flashgate simulate` end to end: the built CLI runs a small fleet against a real
//! redis-server, and its JSON report must show every unit sold once, none oversold, and
//! purchase attempts measured at the origin that agree with what the isolates forwarded.

mod common;

use serde_json::Value;

fn simulate(redis: &common::Redis, extra: &[&str]) -> Value {
    let args: Vec<&str> = ["simulate"]
        .into_iter()
        .chain(extra.iter().copied())
        .chain(["--json"])
        .collect();
    let out = common::cli(&redis.url(), &args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not one JSON document ({e}): {out}"))
}

fn num(r: &Value, field: &str) -> u64 {
    r[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is not a count in {r}"))
}

#[test]
fn a_small_fleet_sells_out_exactly_and_the_origin_counts_every_purchase() {
    let redis = common::Redis::start();
    let r = simulate(
        &redis,
        &[
            "--isolates",
            "20",
            "--users",
            "300",
            "--attempts",
            "600",
            "--stock",
            "50",
            "--budget",
            "200",
            "--seconds",
            "8",
            "--admission",
            "off",
        ],
    );
    assert_eq!(
        (num(&r, "stock"), num(&r, "sold"), num(&r, "oversold")),
        (50, 50, 0),
        "{r}"
    );
    assert_eq!(num(&r, "isolates"), 20);
    assert_eq!(num(&r, "budget"), 200);
    assert_eq!(r["admission"], "off");
    assert_eq!(
        num(&r, "warmed_isolates"),
        20,
        "every isolate read its snapshot"
    );
    // The sold counter at the origin agrees with the placed answers the crowd got.
    assert_eq!(r["intents"]["placed"].as_u64(), Some(50), "{r}");
    let ms = r["sellout_ms"].as_i64().expect("it sold out");
    assert!((0..8000).contains(&ms), "{ms}");

    let secs = r["per_second"].as_array().expect("per_second");
    assert!(!secs.is_empty());
    for s in secs {
        for f in ["t", "origin_attempts", "sold"] {
            assert!(s[f].is_u64(), "{f} in {s}");
        }
        for f in ["origin_p50_ms", "origin_p99_ms"] {
            assert!(s[f].as_f64().is_some_and(|v| v >= 0.0), "{f} in {s}");
        }
    }
    assert!(secs.iter().any(|s| num(s, "origin_attempts") > 0));
    let at_origin: u64 = secs.iter().map(|s| num(s, "origin_attempts")).sum();
    assert!(
        at_origin >= 50,
        "every unit sold took an attempt: {at_origin}"
    );
    assert_eq!(at_origin, num(&r, "origin_attempts"));
    // Measured at the origin (INFO commandstats) and at the isolates' boundaries: the same.
    assert_eq!(at_origin, num(&r, "isolate_forwards"), "{r}");
    let sent = num(&r, "sent");
    assert!(sent >= 600, "every intent was sent at least once: {sent}");
    let pct = r["reached_origin_pct"].as_f64().unwrap();
    assert!(
        (pct - at_origin as f64 * 100.0 / sent as f64).abs() < 1e-9,
        "{pct}"
    );
    assert_eq!(num(&secs[secs.len() - 1], "sold"), 50);
    assert!(r["idle_p99_ms"].as_f64().is_some_and(|v| v > 0.0));
    // The probe's figures over the sale, and how its thread was scheduled.
    let (p50, p99) = (
        r["sale_p50_ms"].as_f64().unwrap(),
        r["sale_p99_ms"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99, "{r}");
    assert_eq!(num(&r, "probe_ms"), 2);
    assert!(
        ["fifo", "nice", "normal"].contains(&r["probe_priority"].as_str().unwrap()),
        "{r}"
    );
    assert_eq!(num(&r, "edge_cache_ms"), 1000);
    match r["last_forward_after_sellout_ms"].as_i64() {
        Some(ms) => assert!(ms >= 0 && num(&r, "forwarded_after_sellout") > 0, "{r}"),
        None => assert_eq!(num(&r, "forwarded_after_sellout"), 0, "{r}"),
    }

    // The event is real: the origin holds it and its sales.
    let event = r["event"].as_str().unwrap();
    let sold = redis.cli(&["HGET", &format!("fg:{{{event}}}:meta"), "sold:A"]);
    assert_eq!(sold.trim(), "50");
}

#[test]
fn an_unreachable_origin_is_one_sentence() {
    let port = common::free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let args = ["simulate", "--stock", "5", "--isolates", "2", "--json"];
    let out = common::cli_output(&url, &args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("flashgate: cannot reach the origin at redis://127.0.0.1:")
            && err.trim_end().lines().count() == 1,
        "{err}"
    );
    assert!(out.stdout.is_empty());
}
