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

/// First attempts (`late`, a percentile) came no later than the fleet's thread woke at worst,
/// give or take a fifth and 30 ms: a late machine delays every task on the thread alike, so
/// only a fleet that made its crowd wait for something is later.
fn assert_no_later_than_the_thread(r: &Value, late: &str) {
    let ms = r[late].as_f64().unwrap_or_else(|| panic!("{late} in {r}"));
    let thread = r["thread_late_max_ms"]
        .as_f64()
        .expect("thread_late_max_ms");
    assert!(
        ms < thread * 1.25 + 30.0,
        "first attempts {ms} ms late ({late}), the thread at most {thread} ms: {r}"
    );
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

    // Who won, by group: one group here (everyone arrives late and waits), fair by definition.
    assert_eq!(
        r["fairness"]["mode"], "line",
        "the default for a fresh event"
    );
    let groups = r["fairness"]["groups"].as_array().expect("fairness.groups");
    assert_eq!(groups.len(), 1, "{r}");
    let g = &groups[0];
    assert_eq!((g["name"].as_str(), num(g, "users")), (Some("late"), 300));
    assert_eq!(num(g, "won"), 50);
    assert!(num(g, "attempts") >= 600);
    assert_eq!(g["win_ratio"].as_f64(), Some(1.0));
    assert!(r["patience"]["gave_up"].is_u64() && r["patience"]["mean_s"].as_f64() == Some(60.0));

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

#[test]
fn a_mixed_crowd_is_reported_by_group() {
    let redis = common::Redis::start();
    let r = simulate(
        &redis,
        &[
            "--isolates",
            "10",
            "--users",
            "400",
            "--attempts",
            "800",
            "--stock",
            "40",
            "--budget",
            "50",
            "--seconds",
            "8",
            "--hammer-share",
            "0.2",
            "--early-share",
            "0.5",
            "--patience-s",
            "30",
        ],
    );
    assert_eq!((num(&r, "sold"), num(&r, "oversold")), (40, 0), "{r}");
    let groups = r["fairness"]["groups"].as_array().expect("fairness.groups");
    let names: Vec<&str> = groups.iter().filter_map(|g| g["name"].as_str()).collect();
    assert_eq!(names, ["late", "early_10min", "early_10s", "hammer"], "{r}");
    let users: u64 = groups.iter().map(|g| num(g, "users")).sum();
    let won: u64 = groups.iter().map(|g| num(g, "won")).sum();
    assert_eq!(users, 400);
    assert_eq!(won, r["intents"]["placed"].as_u64().unwrap(), "{r}");
    // The early entrants were in line before the start: they won about their share at least.
    // 40 units are a small sample (one unit is 2.5 points of share, and the generator's timing
    // under a loaded machine moves a few), so the bound allows 20 % below the users' share;
    // the fairness figures proper come from the 1,000-isolate runs (docs/simulator.md).
    let early: u64 = groups[1..3].iter().map(|g| num(g, "won")).sum();
    let early_users: u64 = groups[1..3].iter().map(|g| num(g, "users")).sum();
    assert!(
        early as f64 / won as f64 >= early_users as f64 / users as f64 * 0.8,
        "{r}"
    );
    assert_eq!(r["patience"]["mean_s"].as_f64(), Some(30.0));
}

#[test]
fn a_slowed_sale_runs_on_the_sales_clock() {
    // --time-scale 3: each second of the sale lasts three of the wall clock's, and every
    // figure is in the sale's time.
    let redis = common::Redis::start();
    let began = std::time::Instant::now();
    let r = simulate(
        &redis,
        &[
            "--isolates",
            "10",
            "--users",
            "200",
            "--attempts",
            "300",
            "--stock",
            "40",
            "--budget",
            "100",
            "--seconds",
            "3",
            "--time-scale",
            "3",
        ],
    );
    let took = began.elapsed().as_secs_f64();
    assert_eq!(r["time_scale"].as_f64(), Some(3.0), "{r}");
    assert_eq!((num(&r, "sold"), num(&r, "oversold")), (40, 0), "{r}");
    // The sale's three seconds took at least nine of the wall clock's.
    assert!(took >= 9.0, "ran for {took:.1} s");
    let secs = r["per_second"].as_array().expect("per_second");
    // A row a second of the sale's clock up to the fleet's end (it ends once every shopper is
    // done, as soon as the second after the sell-out): at most three, not the wall clock's nine.
    assert!(
        (1..=3).contains(&secs.len()),
        "seconds of the sale's clock: {r}"
    );
    let ms = r["sellout_ms"].as_i64().expect("it sold out");
    assert!((0..3000).contains(&ms), "{ms} ms on the sale's clock");
    // Its first attempts kept to their plan on the sale's clock, as late as its thread at most.
    assert_no_later_than_the_thread(&r, "late_p50_ms");
}

#[test]
fn the_crowd_does_not_wait_for_a_page_that_claimed_the_lines_first_tick() {
    // 3,000 isolates poll their pages until the start, three a millisecond, on the wall clock:
    // a page served a moment after the start claims the line's first tick, and its claimer
    // waits SETTLE_MS (80 ms) for a second read. The rest of the fleet must not wait with it:
    // when the crowd waited, every first attempt planned in the first 80 ms came up to 80 ms
    // late, and the line entered the sale's first second a tick late.
    let redis = common::Redis::start();
    let args = "--isolates 3000 --users 300 --attempts 600 --stock 50 --budget 100 --seconds 2";
    let r = simulate(&redis, &args.split(' ').collect::<Vec<_>>());
    // The default scale, auto, keeps a crowd this small on the wall clock.
    assert_eq!(r["time_scale"].as_f64(), Some(1.0), "{r}");
    assert_eq!(r["time_scale_auto"].as_bool(), Some(true), "{r}");
    assert_eq!(num(&r, "warmed_isolates"), 3000, "{r}");
    // First attempts are as late as the fleet's thread, no later: a machine that cannot keep
    // up delays every task on the thread (a busy CI runner: 0.4–0.6 s at p99), and a task
    // spawned behind a backlog a little more (up to 1.15 times the thread's worst under
    // contention, 46/42, 89/71, 295/274, 1,965/1,720 ms), while a crowd that waited for the
    // claimer was 83–84 ms late at p99 on a thread late by 6–17 ms at worst.
    assert_no_later_than_the_thread(&r, "late_p99_ms");
}
