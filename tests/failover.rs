//! A failover under a crowd (issue 19): a Redis Cluster of 3 primaries, each with a replica
//! (Debian's redis-server, `cluster-node-timeout` 2000 ms), the real worker under `wrangler
//! dev` speaking RESP to it, and the order writer draining into SQLite throughout.
//!
//! The loss window is made certain, not left to luck: while the crowd buys, the event's
//! replica is stalled (SIGSTOP, so it cannot reconnect) and the primary drops its replication
//! link (`CLIENT KILL TYPE replica`), so what the primary places from then on never reaches
//! the replica (a stalled replica alone would still receive it into its socket buffer). Once
//! the primary has placed orders in that state, it is SIGKILLed, the replica is let go and
//! promoted (`CLUSTER FAILOVER TAKEOVER`), and a fresh node joins as the new primary's replica.
//! The worker and the writer find the new primary by themselves (MOVED from the seed, which is
//! another primary). Every shopper retries a 503 with the same Idempotency-Key, as the sale
//! page does.
//!
//! - `ORIGIN_REPLICA_ACKS=1`: every order a shopper got a 201 for is a `placed` entry in the
//!   new primary's stream and a row in the database, written once; sold ≤ stock; no user over
//!   the cap.
//! - `ORIGIN_REPLICA_ACKS=0`: the same scenario loses orders shoppers got a 201 for, and the
//!   test asserts that it does (so it can catch the loss).
//!
//! Each run prints its counts (`failover acks=N: ...`); see docs/testing.md.

mod common;

use common::db::*;
use common::*;
use flashgate_core::keys::EventKeys;
use flashgate_core::origin::{Cmd, Origin};
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const STOCK: u32 = 300;
const USERS: usize = 200;
/// Orders per user (the event's total cap, and the per-item-per-day cap).
const CAP: u32 = 2;
/// Shoppers buying at once.
const CROWD: usize = 16;
/// Shoppers who arrive once the link is cut (users `u<USERS>`...), one each: with acks on, the
/// crowd's own retries replay orders placed before the cut, so these place the window's orders.
const LATE: usize = 12;
/// Orders the primary must have placed after its replication link was cut before it dies (at
/// least; the window also lasts at least 300 ms). With acks on, each shopper retries a 503
/// with the same key, which replays rather than places, so few new orders come in meanwhile.
const IN_WINDOW: i64 = 5;

/// The two tests start six redis-servers and a `wrangler dev` each: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Default)]
struct Tally {
    /// Order id → (user, key), for every 201.
    ok: BTreeMap<String, (String, String)>,
    /// 201s answered after the new primary took over.
    ok_after: u64,
    n503: u64,
    /// Other answers by status and code.
    refused: BTreeMap<String, u64>,
    /// Keys still answered 503 at the deadline.
    unresolved: u64,
}

#[derive(Debug)]
struct Counts {
    answered_201: usize,
    answered_503: u64,
    lost: usize,
    ok_after_failover: u64,
    placed_in_window: i64,
    sold_new_primary: i64,
    db_rows: usize,
    /// Rows in the database for orders the new primary does not have.
    db_not_at_origin: usize,
}

/// `user`'s attempts, one key each; a 503 (or 429) is retried with the same key until it is
/// answered otherwise or the deadline passes.
async fn shopper(
    w: Arc<Worker>,
    event: String,
    users: Vec<usize>,
    tally: Arc<Mutex<Tally>>,
    failed_over: Arc<AtomicBool>,
    deadline: Instant,
) {
    let c = http();
    for k in 0..CAP {
        for u in &users {
            let (user, key) = (format!("u{u}"), format!("key-u{u:04}-{k}"));
            loop {
                let a = w
                    .send(&c, &Req::purchase(&event, &user, &key, &["A"]))
                    .await;
                let after = failed_over.load(Ordering::SeqCst);
                let done = {
                    let mut t = tally.lock().unwrap();
                    match a.status {
                        201 => {
                            let id = a.body["order"]["id"].as_str().unwrap().to_string();
                            t.ok.insert(id, (user.clone(), key.clone()));
                            t.ok_after += u64::from(after);
                            true
                        }
                        503 | 429 => {
                            t.n503 += u64::from(a.status == 503);
                            let phase = if after { "after" } else { "before" };
                            *t.refused
                                .entry(format!(
                                    "{} {} ({phase} the takeover)",
                                    a.status,
                                    a.code().unwrap_or("?")
                                ))
                                .or_default() += 1;
                            let late = Instant::now() > deadline;
                            t.unresolved += u64::from(late);
                            late
                        }
                        s => {
                            *t.refused
                                .entry(format!("{s} {}", a.code().unwrap_or("?")))
                                .or_default() += 1;
                            true
                        }
                    }
                };
                if done {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The orders `o` holds for `event`: placed entries still in the stream, and those the order
/// index tracked (the writer trims the entries it has written, after tracking them).
async fn origin_order_ids(o: &impl Origin, event: &str) -> BTreeSet<String> {
    let mut ids: BTreeSet<String> = placed_order_ids(o, event).await.into_iter().collect();
    let index = o
        .call(&Cmd::new(["HGETALL", &EventKeys::new(event).orders]))
        .await
        .unwrap();
    for kv in index.as_array().unwrap().chunks(2) {
        if let Some(id) = kv[0].as_str().and_then(|f| f.strip_prefix("o:")) {
            ids.insert(id.to_string());
        }
    }
    ids
}

fn sold_at(cl: &Cluster, port: u16, meta: &str) -> i64 {
    cl.cli(port, &["HGET", meta, "sold:A"])
        .trim()
        .parse()
        .unwrap_or(0)
}

/// The whole scenario with `ORIGIN_REPLICA_ACKS=acks`; its counts.
async fn failover_under_a_crowd(acks: u32) -> Counts {
    let _one_at_a_time = SERIAL.lock().await;
    let mut cl = Cluster::start_replicated(2000);
    let seed = cl.seed_url();
    let by_node = cl.event_per_node("fo");
    // The event lives on a primary other than the seed: the seed must outlive the failover.
    let primary = cl.ports[1];
    let event = by_node
        .get(&primary)
        .unwrap_or_else(|| panic!("an event on :{primary}: {by_node:?}"))
        .clone();
    let meta = EventKeys::new(&event).meta;
    let replica = cl.replica_of(primary);
    let o = flashgate_core::net::connect(&seed, None, 5000).unwrap();
    flashgate_core::ops::create(
        &o,
        &spec(&event, &[("A", STOCK)], -1000, (CAP, CAP, 1)),
        true,
    )
    .await
    .unwrap();

    // The order writer, running throughout, with the same acks for its own writes.
    let db = Db::sqlite();
    let logs = tmpdir("failover-logs");
    let acks_flag = acks.to_string();
    let mut sink = Proc::spawn(
        "flashgate orders sink",
        Command::new(env!("CARGO_BIN_EXE_flashgate"))
            .args(["--origin", &seed, "--replica-acks", &acks_flag])
            .args(["orders", "sink", "--event", &event, "--db", &db.url])
            // Entries read but not yet replicated are claimed again after this long.
            .args(["--consumer", "w1", "--claim-idle-ms", "2000"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(logs.join("sink.err")).unwrap()),
    );
    let stream = EventKeys::new(&event).stream;
    assert!(
        eventually(Duration::from_secs(20), || cl
            .cli(primary, &["XINFO", "GROUPS", &stream])
            .contains("sink")),
        "the writer made its consumer group"
    );
    cl.wait_in_sync(replica);

    let w = Arc::new(Worker::start(&[
        ("ORIGIN_URL", &seed),
        ("ORIGIN_REPLICA_ACKS", &acks_flag),
        ("ORIGIN_REPLICA_ACK_MS", "300"),
    ]));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let failed_over = Arc::new(AtomicBool::new(false));
    let cut = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut crowd: Vec<_> = (0..CROWD)
        .map(|t| {
            let users = (t..USERS).step_by(CROWD).collect();
            tokio::spawn(shopper(
                w.clone(),
                event.clone(),
                users,
                tally.clone(),
                failed_over.clone(),
                deadline,
            ))
        })
        .collect();
    crowd.extend((USERS..USERS + LATE).map(|u| {
        let (w, event, tally, failed_over, cut) = (
            w.clone(),
            event.clone(),
            tally.clone(),
            failed_over.clone(),
            cut.clone(),
        );
        tokio::spawn(async move {
            while !cut.load(Ordering::SeqCst) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            shopper(w, event, vec![u], tally, failed_over, deadline).await
        })
    }));

    // The failover, on a thread of its own (it waits on redis-cli).
    let placed_in_window = Arc::new(AtomicU64::new(0));
    let cl = {
        let (tally, failed_over, meta, cut) = (
            tally.clone(),
            failed_over.clone(),
            meta.clone(),
            cut.clone(),
        );
        let placed = placed_in_window.clone();
        tokio::task::spawn_blocking(move || {
            assert!(
                eventually(Duration::from_secs(60), || tally.lock().unwrap().ok.len()
                    >= 80),
                "80 orders before the cut"
            );
            // Cut the replication link: the replica cannot read or reconnect, and the primary
            // drops the link, so what it writes from now on is in no replica's socket.
            cl.signal(replica, "STOP");
            let killed = cl.cli(primary, &["CLIENT", "KILL", "TYPE", "replica"]);
            assert_eq!(killed.trim(), "1", "one replication link cut");
            let at_cut = sold_at(&cl, primary, &meta);
            cut.store(true, Ordering::SeqCst);
            let t0 = Instant::now();
            assert!(
                eventually(Duration::from_secs(10), || {
                    sold_at(&cl, primary, &meta) - at_cut >= IN_WINDOW
                        && t0.elapsed() >= Duration::from_millis(300)
                }),
                "the primary placed {IN_WINDOW} orders with its link cut"
            );
            // The primary dies before the replica resyncs; the replica is promoted. (Nothing
            // may ask the stopped replica anything: it would not answer.)
            let in_window = sold_at(&cl, primary, &meta) - at_cut;
            cl.signal(primary, "KILL");
            placed.store(in_window as u64, Ordering::SeqCst);
            cl.signal(replica, "CONT");
            assert!(
                eventually(Duration::from_secs(20), || cl
                    .cli(replica, &["CLUSTER", "FAILOVER", "TAKEOVER"])
                    .trim()
                    == "OK"),
                "the replica took over"
            );
            assert!(
                eventually(Duration::from_secs(20), || cl
                    .cli(replica, &["ROLE"])
                    .starts_with("master")
                    && cl
                        .cli(cl.ports[0], &["EXISTS", &meta])
                        .contains(&format!(":{replica}"))),
                "the seed redirects the event to the new primary"
            );
            failed_over.store(true, Ordering::SeqCst);
            // The new primary gets a replica (a fresh node), so acknowledged writes can be
            // acknowledged again.
            cl.add_replica(replica);
            cl
        })
    };
    let cl = cl.await.unwrap();
    for c in crowd {
        c.await.unwrap();
    }

    // What the new primary holds.
    let new_primary = replica;
    let np = flashgate_core::net::connect(&format!("redis://127.0.0.1:{new_primary}"), None, 5000)
        .unwrap();
    let at_origin = origin_order_ids(&np, &event).await;
    let sold_new_primary = sold_at(&cl, new_primary, &meta);
    let t = std::mem::take(&mut *tally.lock().unwrap());
    let lost: BTreeSet<&String> = t.ok.keys().filter(|id| !at_origin.contains(*id)).collect();
    // The buyer's own record of each 201 at the new primary (purchase.lua writes it in the
    // same step as the stream entry): agrees with the stream and the index.
    for (id, (user, key)) in &t.ok {
        let doc = np
            .call(&Cmd::new([
                "HGET",
                &EventKeys::new(&event).user(user),
                &format!("i:{key}"),
            ]))
            .await
            .unwrap();
        assert_eq!(
            doc.as_str().is_some(),
            at_origin.contains(id),
            "order {id}: the buyer's record and the stream disagree"
        );
    }

    // The writer drains from the new primary.
    let pool = db.pool().await;
    let drained = {
        let t0 = Instant::now();
        loop {
            let rows = orders(&pool).await;
            if at_origin.iter().all(|id| rows.contains_key(id)) {
                break true;
            }
            // Without acks the database may hold lost orders whose units the new primary sold
            // again, so the writer quarantines the resale: it never catches up.
            if t0.elapsed() > Duration::from_secs(if acks > 0 { 30 } else { 5 }) {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    sink.stop();
    let rows = orders(&pool).await;
    let inv = inventory(&pool, &event).await;
    let counts = Counts {
        answered_201: t.ok.len(),
        answered_503: t.n503,
        lost: lost.len(),
        ok_after_failover: t.ok_after,
        placed_in_window: placed_in_window.load(Ordering::SeqCst) as i64,
        sold_new_primary,
        db_rows: rows.len(),
        db_not_at_origin: rows.keys().filter(|id| !at_origin.contains(*id)).count(),
    };
    println!(
        "failover acks={acks}: 201s={} 503s={} lost_201s={} 201s_after_failover={} \
         placed_with_link_cut={} sold_at_new_primary={} db_rows={} db_rows_not_at_origin={} \
         refused={:?} unresolved={}",
        counts.answered_201,
        counts.answered_503,
        counts.lost,
        counts.ok_after_failover,
        counts.placed_in_window,
        counts.sold_new_primary,
        counts.db_rows,
        counts.db_not_at_origin,
        t.refused,
        t.unresolved,
    );
    let sink_log = std::fs::read_to_string(logs.join("sink.err")).unwrap_or_default();

    // Whatever the setting: the origin never oversells, and the crowd was served on both
    // sides of the failover.
    assert!(sold_new_primary <= i64::from(STOCK), "{counts:?}");
    assert_eq!(
        sold_new_primary,
        at_origin.len() as i64,
        "one unit per placed order"
    );
    assert!(
        counts.ok_after_failover > 0,
        "the worker followed MOVED to the new primary: {counts:?}\n{}",
        w.log_text()
    );
    assert_eq!(t.unresolved, 0, "every key was answered in the end");
    if acks > 0 {
        assert!(
            lost.is_empty(),
            "orders answered 201 and lost: {lost:?}\n{counts:?}"
        );
        assert!(counts.answered_503 > 0, "the cut was answered 503");
        assert!(drained, "the writer drained the new primary: {sink_log}");
        for id in t.ok.keys() {
            assert!(rows.contains_key(id), "order {id} (201) is in the database");
        }
        // And nothing else: the writer wrote only orders a replica held (none the failover
        // lost), so the database is the new primary's orders, exactly.
        assert_eq!(
            counts.db_not_at_origin, 0,
            "rows for orders the origin lost: {counts:?}"
        );
        assert_eq!(rows.len(), at_origin.len());
        // Written once: the database's units are its orders' (one unit each), within stock.
        let (stock, sold) = inv["A"];
        assert_eq!(sold, rows.len() as i64, "each order's unit counted once");
        assert!(sold <= stock, "{sold} > {stock}");
        // No user over the cap at the origin: the orders in each buyer's record.
        let mut per_user: BTreeMap<String, u32> = BTreeMap::new();
        for u in 0..USERS + LATE {
            let user = format!("u{u}");
            let h = np
                .call(&Cmd::new(["HGETALL", &EventKeys::new(&event).user(&user)]))
                .await
                .unwrap();
            let n = h
                .as_array()
                .unwrap()
                .chunks(2)
                .filter(|kv| kv[0].as_str().is_some_and(|f| f.starts_with("i:")))
                .count();
            per_user.insert(user, n as u32);
        }
        assert!(
            per_user.values().all(|n| *n <= CAP),
            "a user over the cap of {CAP}: {per_user:?}"
        );
        // And in the database, by its own user_id column.
        let per_user_db: Vec<(String, i64)> =
            sqlx::query("SELECT user_id, COUNT(*) FROM fg_orders GROUP BY user_id")
                .fetch_all(&pool)
                .await
                .unwrap()
                .iter()
                .map(|r| (sqlx::Row::get(r, 0), sqlx::Row::get(r, 1)))
                .collect();
        assert!(!per_user_db.is_empty());
        assert!(
            per_user_db.iter().all(|(_, n)| *n <= i64::from(CAP)),
            "a user over the cap of {CAP} in the database: {per_user_db:?}"
        );
    } else {
        assert!(
            !lost.is_empty(),
            "without replica acks the failover must lose acknowledged orders: {counts:?}"
        );
    }
    drop(t);
    drop(cl);
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_replica_acks_every_201_survives_the_failover() {
    let c = failover_under_a_crowd(1).await;
    assert_eq!(c.lost, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_replica_acks_the_failover_loses_acknowledged_orders() {
    let c = failover_under_a_crowd(0).await;
    assert!(c.lost > 0);
}
