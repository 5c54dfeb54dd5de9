//! The order sink (`flashgate orders sink`) against a real redis-server, real SQLite files and
//! a real Postgres: changes applied exactly once in any arrival order, trimming only what was
//! committed, crash recovery with two sinks killed mid-stream, the oversell guard's quarantine,
//! dead letters, and one-sentence errors. The tests write the stream entries themselves (XADD)
//! in the contract's format.

mod common;

use common::db::*;
use common::*;
use flashgate_core::net::NativeOrigin;
use flashgate_core::origin::{Cmd, Origin, Value};
use sqlx::Row;
use std::collections::BTreeMap;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A database under test: a SQLite file in its own directory, or a throwaway Postgres.
struct Rig {
    redis: Redis,
    o: NativeOrigin,
    event: String,
}

impl Rig {
    async fn new(event: &str, items: &[(&str, u32)]) -> Rig {
        let redis = Redis::start();
        let o = redis.origin();
        flashgate_core::ops::create(&o, &spec(event, items, -60_000, (1, 1, 1)), true)
            .await
            .unwrap();
        Rig {
            redis,
            o,
            event: event.to_string(),
        }
    }

    fn key(&self) -> String {
        format!("fg:{{{}}}:stream", self.event)
    }

    async fn cmd(&self, args: &[&str]) -> Value {
        self.o.call(&Cmd::new(args.iter().copied())).await.unwrap()
    }

    /// Appends one change; answers its stream id.
    async fn xadd(&self, kind: &str, order: &str, at: i64) -> String {
        let at = at.to_string();
        let key = self.key();
        let v = self
            .cmd(&["XADD", &key, "*", "type", kind, "order", order, "at", &at])
            .await;
        v.as_str().unwrap().to_string()
    }

    /// Reads the next new entry as consumer `who` of the `sink` group, as a writer does, and
    /// never acknowledges it: XREADGROUP's reply.
    async fn read_one_as(&self, who: &str) -> Value {
        let key = self.key();
        self.cmd(&[
            "XREADGROUP",
            "GROUP",
            "sink",
            who,
            "COUNT",
            "1",
            "STREAMS",
            &key,
            ">",
        ])
        .await
    }

    async fn xlen(&self) -> i64 {
        self.cmd(&["XLEN", &self.key()]).await.as_int().unwrap()
    }

    /// Entries pending in the `sink` group (0 when it does not exist yet).
    async fn pending(&self) -> i64 {
        let v = self.cmd(&["XPENDING", &self.key(), "sink"]).await;
        v.as_array().unwrap()[0].as_int().unwrap()
    }

    /// Consumers of the `sink` group holding pending entries.
    async fn holders(&self) -> Vec<String> {
        let v = self.cmd(&["XPENDING", &self.key(), "sink"]).await;
        match &v.as_array().unwrap()[3] {
            Value::Array(c) => c
                .iter()
                .map(|p| p.as_array().unwrap()[0].as_str().unwrap().to_string())
                .collect(),
            _ => vec![],
        }
    }

    fn sink_cmd(&self, db: &Db, extra: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_flashgate"));
        c.args(["--origin", &self.redis.url(), "orders", "sink"])
            .args(["--event", &self.event, "--db", &db.url])
            .args(extra);
        c
    }

    /// A long-running writer named `name` (its consumer name too) with `flags`, its stderr
    /// in `logs/<name>.err`; stopped when dropped.
    fn writer(&self, db: &Db, logs: &std::path::Path, name: &str, flags: &[&str]) -> Proc {
        let mut c = self.sink_cmd(db, &["--consumer", name]);
        c.args(flags)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(logs.join(format!("{name}.err"))).unwrap());
        Proc::spawn(name, &mut c)
    }

    /// Runs `flashgate orders sink --once …` to its end; panics with its stderr on failure.
    fn drain(&self, db: &Db, extra: &[&str]) -> Output {
        let out = self.sink_cmd(db, extra).arg("--once").output().unwrap();
        assert!(
            out.status.success(),
            "sink {extra:?} on {} failed: {}",
            db.url,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

fn oid(n: usize) -> String {
    format!("o_{n:024x}")
}

/// An order document in the stream's format.
fn doc(event: &str, n: usize, lines: &[(&str, u32)]) -> String {
    serde_json::json!({
        "id": oid(n), "event": event, "user": format!("u{n}"),
        "lines": lines.iter().map(|(sku, qty)| serde_json::json!({"sku": sku, "qty": qty, "unit_price": 1999, "currency": "USD"})).collect::<Vec<_>>(),
        "created_at": "2026-11-21T12:00:00.000Z", "idempotency_key": format!("key-{n:08}"),
        "pay_by": "2026-11-21T12:15:00.000Z",
    })
    .to_string()
}

/// Order n of the mixed scenario: A×(n%3+1), plus B×2 when n is even.
fn lines_of(n: usize) -> Vec<(&'static str, u32)> {
    let mut l = vec![("A", (n % 3 + 1) as u32)];
    if n.is_multiple_of(2) {
        l.push(("B", 2));
    }
    l
}

/// How order n ends: n%4 == 1 is paid, n%4 == 2 expires, the rest stay pending.
fn end_of(n: usize) -> Option<&'static str> {
    match n % 4 {
        1 => Some("paid"),
        2 => Some("expired"),
        _ => None,
    }
}

fn status_of(n: usize) -> &'static str {
    end_of(n).unwrap_or("pending")
}

/// The changes of orders `range`, each with duplicates: in order (placed, then its end), or
/// out of order (every end first, then every placed).
fn changes(range: std::ops::Range<usize>, out_of_order: bool) -> Vec<(&'static str, usize)> {
    let ends: Vec<_> = range
        .clone()
        .filter_map(|n| end_of(n).map(|k| (k, n)))
        .collect();
    let placed: Vec<_> = range.map(|n| ("placed", n)).collect();
    let dups = |v: &[(&'static str, usize)]| {
        v.iter()
            .flat_map(|&(k, n)| {
                let times = if n.is_multiple_of(5) { 2 } else { 1 };
                std::iter::repeat_n((k, n), times)
            })
            .collect::<Vec<_>>()
    };
    if out_of_order {
        [dups(&ends), dups(&placed)].concat()
    } else {
        let mut v = Vec::new();
        for &(k, n) in &placed {
            v.extend(std::iter::repeat_n(
                (k, n),
                if n.is_multiple_of(5) { 2 } else { 1 },
            ));
            if let Some(e) = end_of(n) {
                v.extend(std::iter::repeat_n(
                    (e, n),
                    if n.is_multiple_of(3) { 2 } else { 1 },
                ));
            }
        }
        v
    }
}

async fn add_changes(rig: &Rig, cs: &[(&str, usize)]) {
    for (i, &(kind, n)) in cs.iter().enumerate() {
        rig.xadd(kind, &doc(&rig.event, n, &lines_of(n)), 1_000 + i as i64)
            .await;
    }
}

/// The rows and sold units orders `ns` of the mixed scenario must end with.
fn expected(ns: impl Iterator<Item = usize>) -> (BTreeMap<String, String>, BTreeMap<String, i64>) {
    let mut rows = BTreeMap::new();
    let mut sold: BTreeMap<String, i64> = [("A".to_string(), 0), ("B".to_string(), 0)].into();
    for n in ns {
        rows.insert(oid(n), status_of(n).to_string());
        if status_of(n) != "expired" {
            for (sku, q) in lines_of(n) {
                *sold.get_mut(sku).unwrap() += i64::from(q);
            }
        }
    }
    (rows, sold)
}

async fn assert_state(db: &Db, rig: &Rig, ns: impl Iterator<Item = usize> + Clone) {
    let pool = db.pool().await;
    let (rows, sold) = expected(ns.clone());
    assert_eq!(orders(&pool).await, rows, "order rows in {}", db.url);
    let inv = inventory(&pool, &rig.event).await;
    for (sku, units) in &sold {
        assert_eq!(inv[sku], (1000, *units), "inventory of {sku} in {}", db.url);
    }
    let lines: usize = ns.map(|n| lines_of(n).len()).sum();
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM fg_order_lines").await,
        lines as i64,
        "one row per order line"
    );
    pool.close().await;
}

#[tokio::test]
async fn applies_changes_once_and_trims_only_what_was_committed() {
    for db in Db::both() {
        let rig = Rig::new("mixed", &[("A", 1000), ("B", 1000)]).await;
        // Phase 1: orders 0..20 with duplicates; everything is applied, acked and trimmed.
        add_changes(&rig, &changes(0..20, false)).await;
        let out = rig.drain(&db, &[]);
        assert!(String::from_utf8_lossy(&out.stdout).contains("0 pending"));
        assert_state(&db, &rig, 0..20).await;
        assert_eq!((rig.pending().await, rig.xlen().await), (0, 0));

        // Phase 2: another consumer holds one entry (not idle long enough to be claimed);
        // the sink applies the rest, and trims nothing from that entry on.
        let ghost = rig
            .xadd("placed", &doc("mixed", 99, &lines_of(99)), 5)
            .await;
        let key = rig.key();
        let got = rig
            .cmd(&[
                "XREADGROUP",
                "GROUP",
                "sink",
                "ghost",
                "COUNT",
                "1",
                "STREAMS",
                &key,
                ">",
            ])
            .await;
        assert!(format!("{got:?}").contains(&ghost));
        let rest = changes(20..30, false);
        add_changes(&rig, &rest).await;
        rig.drain(&db, &[]);
        assert_state(&db, &rig, 0..30).await;
        assert_eq!(rig.pending().await, 1, "the ghost's entry stays pending");
        assert_eq!(
            rig.xlen().await,
            1 + rest.len() as i64,
            "committed entries after a pending one stay until it is acked"
        );
        let first = rig.cmd(&["XRANGE", &key, "-", "+", "COUNT", "1"]).await;
        assert!(format!("{first:?}").contains(&ghost), "{first:?}");

        // Phase 3: once idle, the ghost's entry is claimed, applied and trimmed.
        rig.drain(&db, &["--claim-idle-ms", "0"]);
        assert_state(&db, &rig, (0..30).chain([99])).await;
        assert_eq!((rig.pending().await, rig.xlen().await), (0, 0));
    }
}

#[tokio::test]
async fn out_of_order_changes_end_in_the_same_rows() {
    for db in Db::both() {
        let rig = Rig::new("shuffled", &[("A", 1000), ("B", 1000)]).await;
        let cs = changes(0..30, true);
        assert_eq!(cs[0].0, "paid", "ends come before their orders are placed");
        add_changes(&rig, &cs).await;
        rig.drain(&db, &["--batch", "7"]);
        assert_state(&db, &rig, 0..30).await;
        assert_eq!((rig.pending().await, rig.xlen().await), (0, 0));
    }
}

/// Two sinks share the stream; one is SIGKILLed three times mid-stream and restarted. After a
/// final drain every order is written exactly once and nothing is left pending.
#[tokio::test]
async fn sinks_killed_mid_stream_lose_and_duplicate_nothing() {
    const N: usize = 3000;
    // The bursts stop here, below the stock.
    const MAX: usize = 9_000;
    for db in Db::both() {
        let rig = Rig::new("crash", &[("A", 10_000)]).await;
        rig.drain(&db, &[]); // creates the tables and the group before two sinks race to
        let logs = tmpdir("crash");
        let spawn = |name: &str| {
            rig.writer(
                &db,
                &logs,
                name,
                &["--claim-idle-ms", "300", "--batch", "20"],
            )
        };
        let pool = db.pool().await;
        let mut a = spawn("a0");
        let b = spawn("b");
        let mut kills = 0;
        let mut n = 0;
        // At least N orders and three kills: a victim slow to start reading (a loaded machine)
        // may see the bursts below run past N before the last kill.
        while n < N || kills < 3 {
            rig.xadd("placed", &doc("crash", n, &[("A", 1)]), n as i64)
                .await;
            n += 1;
            if kills < 3 && n >= 751 + 800 * kills {
                // Kill it while it holds entries it has read and not acknowledged. The stream
                // keeps growing meanwhile: fast sinks may have drained it, and an idle sink
                // holds nothing.
                let victim = format!("a{kills}");
                let t0 = Instant::now();
                while !rig.holders().await.contains(&victim) {
                    assert!(
                        t0.elapsed() < Duration::from_secs(30),
                        "{victim} never read"
                    );
                    // A burst, so that both sinks have batches in hand while we look.
                    // A new victim takes a second or more to start under load: pace the
                    // bursts so that it finds entries in hand when it does.
                    tokio::time::sleep(Duration::from_millis(25)).await;
                    for _ in 0..40 {
                        if n < MAX {
                            rig.xadd("placed", &doc("crash", n, &[("A", 1)]), n as i64)
                                .await;
                            n += 1;
                        }
                    }
                }
                eprintln!(
                    "crash: {victim} held entries {} ms after kill window {kills} opened (n = {n})",
                    t0.elapsed().as_millis()
                );
                let ok = Command::new("kill")
                    .args(["-s", "KILL", &a.pid().to_string()])
                    .status()
                    .unwrap();
                assert!(ok.success());
                kills += 1;
                let written = count(&pool, "SELECT COUNT(*) FROM fg_orders").await;
                assert!(written < N as i64, "killed mid-stream");
                drop(a);
                a = spawn(&format!("a{kills}"));
            }
        }
        assert_eq!(kills, 3);
        let total = n;
        // Let the sinks catch up a little, then stop them; the final drain claims the rest.
        let t0 = Instant::now();
        while count(&pool, "SELECT COUNT(*) FROM fg_orders").await < N as i64 / 2
            && t0.elapsed() < Duration::from_secs(30)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(a);
        drop(b);
        rig.drain(&db, &["--claim-idle-ms", "0"]);

        let ids = orders(&pool).await;
        assert_eq!(ids.len(), total, "one row per order in {}", db.url);
        assert!((0..total).all(|n| ids.get(&oid(n)).map(String::as_str) == Some("pending")));
        assert_eq!(
            count(&pool, "SELECT COUNT(*) FROM fg_order_lines").await,
            total as i64
        );
        assert_eq!(inventory(&pool, "crash").await["A"], (10_000, total as i64));
        for t in ["fg_quarantine", "fg_dead_letters"] {
            assert_eq!(
                count(&pool, &format!("SELECT COUNT(*) FROM {t}")).await,
                0,
                "{t}"
            );
        }
        assert_eq!((rig.pending().await, rig.xlen().await), (0, 0));
        // Every entry was acknowledged and trimmed, so every order was tracked first: its
        // index names its user and key (the sink tracks before it acknowledges).
        let orders = flashgate_core::keys::EventKeys::new("crash").orders;
        let index = rig.cmd(&["HGETALL", &orders]).await;
        let index: BTreeMap<String, String> = index
            .as_array()
            .unwrap()
            .chunks(2)
            .map(|kv| {
                (
                    kv[0].as_str().unwrap().into(),
                    kv[1].as_str().unwrap().into(),
                )
            })
            .collect();
        for n in 0..total {
            let entry = index.get(&format!("o:{}", oid(n))).map(String::as_str);
            let want = format!("u{n} key-{n:08} ");
            assert!(
                entry.is_some_and(|e| e.starts_with(&want)),
                "order {n} untracked: {entry:?}"
            );
        }
        pool.close().await;
        let _ = std::fs::remove_dir_all(&logs);
    }
}

#[tokio::test]
async fn an_order_that_would_oversell_is_quarantined_and_alarmed() {
    for db in Db::both() {
        let rig = Rig::new("guard", &[("A", 3)]).await;
        let o3 = doc("guard", 3, &[("A", 1)]);
        let o4 = doc("guard", 4, &[("Z", 1)]);
        for (kind, order) in [
            ("placed", doc("guard", 1, &[("A", 1)])),
            ("placed", doc("guard", 2, &[("A", 2)])),
            ("placed", o3.clone()), // sold 3 of 3: trips
            ("paid", o3.clone()),   // a paid order holds stock too: trips
            ("placed", o4.clone()), // no such sku: trips
            ("expired", doc("guard", 1, &[("A", 1)])),
            ("placed", doc("guard", 5, &[("A", 1)])), // fits again
        ] {
            rig.xadd(kind, &order, 7).await;
        }
        let out = rig.drain(&db, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        let alarms: Vec<_> = err
            .lines()
            .filter(|l| l.starts_with("flashgate sink: ALARM: "))
            .collect();
        assert_eq!(alarms.len(), 3, "{err}");
        // o3's placement and payment first wait for the expiry of o1 behind them (it may give
        // units back); once it is applied and o5 has taken the unit, nothing pending can
        // mend them and they are quarantined.
        let about = |n: usize, what: &str| {
            alarms
                .iter()
                .filter(|a| a.contains(&oid(n)) && a.contains(what))
                .count()
        };
        assert_eq!(about(3, "exceed the stock of 3"), 2, "{err}");
        assert_eq!(about(4, "not in the event"), 1, "{err}");
        let waited = err
            .lines()
            .filter(|l| l.contains(&oid(3)) && l.contains("waits for entry"))
            .count();
        assert_eq!(waited, 2, "{err}");

        let pool = db.pool().await;
        let rows = orders(&pool).await;
        let want: BTreeMap<String, String> = [(1, "expired"), (2, "pending"), (5, "pending")]
            .into_iter()
            .map(|(n, s)| (oid(n), s.to_string()))
            .collect();
        assert_eq!(rows, want);
        assert_eq!(inventory(&pool, "guard").await["A"], (3, 3));
        let q: Vec<(String, String, String, String)> = sqlx::query(
            "SELECT order_id, kind, order_json, reason FROM fg_quarantine ORDER BY stream_id",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
        assert_eq!(q.len(), 3, "kept, not lost: {q:?}");
        assert_eq!(
            (q[0].0.as_str(), q[0].1.as_str()),
            (oid(3).as_str(), "placed")
        );
        assert_eq!((q[1].1.as_str(), q[1].2.as_str()), ("paid", o3.as_str()));
        assert_eq!(q[2].2, o4);
        assert!(q[2].3.contains("\"Z\""));
        assert_eq!((rig.pending().await, rig.xlen().await), (0, 0));

        // The CHECK holds even against a write that forgets the guard.
        for bad in ["stock + 1", "-1"] {
            let r = sqlx::query(&format!("UPDATE fg_inventory SET sold = {bad}"))
                .execute(&pool)
                .await;
            assert!(r.is_err(), "sold = {bad} must be refused");
        }
        assert_eq!(inventory(&pool, "guard").await["A"], (3, 3));
        pool.close().await;
    }
}

#[tokio::test]
async fn a_malformed_entry_ends_in_the_dead_letters() {
    for db in Db::both() {
        let rig = Rig::new("poison", &[("A", 10)]).await;
        rig.xadd("placed", &doc("poison", 1, &[("A", 1)]), 1).await;
        let bad = rig.xadd("placed", "{\"id\": 42", 2).await;
        rig.xadd("placed", &doc("poison", 2, &[("A", 1)]), 3).await;
        let out = rig.drain(&db, &["--max-deliveries", "3"]);
        let err = String::from_utf8_lossy(&out.stderr);
        for line in [
            "(delivery 1 of 3)",
            "(delivery 2 of 3)",
            "failed 3 deliveries",
        ] {
            assert!(err.contains(line), "{line}: {err}");
        }

        let pool = db.pool().await;
        assert_eq!(orders(&pool).await.len(), 2);
        let r = sqlx::query("SELECT stream_id, fields, error, deliveries FROM fg_dead_letters")
            .fetch_all(&pool)
            .await
            .unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].get::<String, _>(0), bad);
        let fields: Vec<(String, String)> =
            serde_json::from_str(&r[0].get::<String, _>(1)).unwrap();
        assert!(fields.contains(&("order".into(), "{\"id\": 42".into())));
        assert!(r[0]
            .get::<String, _>(2)
            .contains("`order` is not an order document"));
        assert_eq!(r[0].get::<i64, _>(3), 3);
        assert_eq!((rig.pending().await, rig.xlen().await), (0, 0), "acked");
        pool.close().await;
    }
}

#[tokio::test]
async fn errors_are_one_sentence() {
    let rig = Rig::new("errs", &[("A", 1)]).await;
    let dead_pg = format!("postgres://flashgate@127.0.0.1:{}/postgres", free_port());
    let db = Db::sqlite();
    for (args, want) in [
        (
            vec!["--event", "errs", "--db", dead_pg.as_str()],
            "cannot open database postgres://flashgate@127.0.0.1:",
        ),
        (
            vec!["--event", "nope", "--db", db.url.as_str()],
            "there is no event nope at this origin",
        ),
        (
            vec!["--event", "errs", "--db", "mysql://root:pw@h/db"],
            "--db mysql://root:***@h/db must be sqlite://PATH or postgres://",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_flashgate"))
            .args(["--origin", &rig.redis.url(), "orders", "sink", "--once"])
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            err.starts_with("flashgate: ") && err.contains(want),
            "{err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
}

/// The writer tracks each batch before it acknowledges it. Run with no expiry sweep (which
/// tracks too), on orders placed after it started (its start tracks what is there), every
/// order it acknowledged is in the order index, in the pending set while pending, and its
/// user's hash expires.
#[tokio::test]
async fn the_writer_tracks_each_batch_before_acknowledging_it() {
    use flashgate_sink::{run, store::Store, Config, NoSweep};
    use std::sync::atomic::{AtomicBool, Ordering};
    const N: usize = 25;
    let rig = Rig::new("trk", &[("A", 100)]).await;
    let k = flashgate_core::keys::EventKeys::new("trk");
    let db = Db::sqlite();
    rig.drain(&db, &[]); // the tables and the group
    let store = Store::open(&db.url, 1).await.unwrap();
    let pool = db.pool().await;
    let cfg = Config {
        events: vec!["trk".into()],
        consumer: "t".into(),
        batch: 7,
        claim_idle_ms: 30_000,
        max_deliveries: 5,
        once: false,
        progress: false,
    };
    let stop = AtomicBool::new(false);
    let feed = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        for n in 0..N {
            // As purchase.lua leaves a pending order: its user's hash holds its deadline.
            let user = k.user(&format!("u{n}"));
            rig.cmd(&["HSET", &user, &format!("s:key-{n:08}"), "1763727300000"])
                .await;
            rig.xadd("placed", &doc("trk", n, &[("A", 1)]), n as i64)
                .await;
        }
        let t0 = Instant::now();
        while count(&pool, "SELECT COUNT(*) FROM fg_orders").await < N as i64
            || rig.pending().await > 0
        {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "the writer is stuck"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.store(true, Ordering::SeqCst);
    };
    let sink_origin = rig.redis.origin(); // its blocking reads hold a connection of its own
    let (totals, ()) = tokio::join!(run(&sink_origin, &store, &cfg, &NoSweep, &stop), feed);
    assert_eq!(totals.unwrap().applied, N as u64);
    let zcard = rig.cmd(&["ZCARD", &k.pending]).await;
    assert_eq!(zcard.as_int(), Some(N as i64), "all tracked as pending");
    for n in 0..N {
        let field = format!("o:{}", oid(n));
        let index = rig.cmd(&["HGET", &k.orders, &field]).await;
        let want = format!("u{n} key-{n:08} ");
        assert!(
            index.as_str().is_some_and(|v| v.starts_with(&want)),
            "order {n}: {index:?}"
        );
        let ttl = rig.cmd(&["PTTL", &k.user(&format!("u{n}"))]).await;
        assert!(ttl.as_int().unwrap() > 0, "u{n}'s hash expires");
    }
    pool.close().await;
}

/// A purchase at the origin through the real purchase.lua, as the edge forwards it: `user`
/// asks for one unit of `sku` with key `key` at `now`, to be paid by `pay_by`. Answers the
/// order id when it was placed.
async fn buy(
    o: &NativeOrigin,
    event: &str,
    user: &str,
    key: &str,
    sku: &str,
    now: i64,
    pay_by: i64,
) -> Option<String> {
    use flashgate_core::order::{Order, OrderLine};
    use flashgate_core::script::{Line, Outcome, PurchaseCall, PURCHASE};
    let keys = flashgate_core::keys::EventKeys::new(event);
    let lines = [Line {
        sku: sku.to_string(),
        qty: 1,
    }];
    let order = Order::new(
        event,
        user,
        key,
        vec![OrderLine {
            sku: sku.to_string(),
            qty: 1,
            unit_price: 1000,
            currency: "USD".into(),
        }],
        now,
        pay_by,
    );
    let order_json = serde_json::to_string(&order).unwrap();
    let call = PurchaseCall {
        keys: &keys,
        user,
        now_ms: now,
        idempotency_key: key,
        fingerprint: &flashgate_core::order::fingerprint(&lines),
        order_json: &order_json,
        pay_by_ms: pay_by,
        lines: &lines,
        fresh: false,
    };
    let (k, args) = call.keys_and_args();
    let v = PURCHASE.eval(o, &k, &args).await.unwrap();
    matches!(call.outcome(&v).unwrap(), Outcome::Placed { .. }).then(|| order.id.clone())
}

/// The origin's view of every order it placed for `event`, from its order index and each
/// buyer's hash: order id → (status, lines as the order JSON says them).
async fn origin_orders(o: &NativeOrigin, event: &str) -> BTreeMap<String, (String, String)> {
    let k = flashgate_core::keys::EventKeys::new(event);
    flashgate_core::orders::track(o, event).await.unwrap();
    let index = o.call(&Cmd::new(["HGETALL", &k.orders])).await.unwrap();
    let mut out = BTreeMap::new();
    for kv in index.as_array().unwrap().chunks(2) {
        let (f, v) = (kv[0].as_str().unwrap(), kv[1].as_str().unwrap());
        let Some(id) = f.strip_prefix("o:") else {
            continue;
        };
        let (user, key) = flashgate_core::script::parse_order_index(v).unwrap();
        let user_key = k.user(user);
        let hget = |field: String| {
            let user_key = user_key.clone();
            async move {
                o.call(&Cmd::new(["HGET", &user_key, &field]))
                    .await
                    .unwrap()
                    .as_str()
                    .map(str::to_string)
            }
        };
        let status = match hget(format!("s:{key}")).await.as_deref() {
            Some("p") => "paid",
            Some("x") => "expired",
            Some("c") => "cancelled",
            Some(_) => "pending",
            None => panic!("order {id}: its buyer's hash has no state"),
        };
        let doc: serde_json::Value =
            serde_json::from_str(&hget(format!("i:{key}")).await.unwrap()).unwrap();
        out.insert(
            id.to_string(),
            (status.to_string(), doc["lines"].to_string()),
        );
    }
    out
}

/// The same orders as the shop's database holds them.
async fn db_orders(pool: &sqlx::AnyPool) -> BTreeMap<String, (String, String)> {
    let lines: Vec<(String, String, i64, i64, String)> = sqlx::query(
        "SELECT order_id, sku, qty, unit_price, currency FROM fg_order_lines ORDER BY order_id, sku",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
    .collect();
    orders(pool)
        .await
        .into_iter()
        .map(|(id, status)| {
            let ls: Vec<_> = lines
                .iter()
                .filter(|l| l.0 == id)
                .map(|l| serde_json::json!({"sku": l.1, "qty": l.2, "unit_price": l.3, "currency": l.4}))
                .collect();
            (id, (status, serde_json::Value::from(ls).to_string()))
        })
        .collect()
}

/// The origin's `sold:<sku>`.
async fn origin_sold(o: &NativeOrigin, event: &str, sku: &str) -> i64 {
    let meta = flashgate_core::keys::EventKeys::new(event).meta;
    let v = o
        .call(&Cmd::new(["HGET", &meta, &format!("sold:{sku}")]))
        .await
        .unwrap();
    v.as_str().map_or(0, |s| s.parse().unwrap())
}

/// Steps 1-4 of issue 22's sequence (see the test below): answers the ids of u1's order
/// (written, then expired) and u2's re-sale of its unit, with the expiry held by a dead
/// consumer and the re-sale not yet read.
async fn expiry_held_by_a_dead_consumer(rig: &Rig, db: &Db) -> (String, String) {
    use flashgate_core::orders::expire_due;
    let o = &rig.o;
    let event = rig.event.as_str();
    let now = flashgate_core::model::now_ms();
    let window = 15 * 60_000;
    // 1. u1 buys the unit; the writer writes it (pending, sold 1).
    let o1 = buy(o, event, "u1", "key-u1-0001", "A", now, now + window).await;
    let o1 = o1.expect("u1 bought the unit");
    rig.drain(db, &[]);
    let pool = db.pool().await;
    assert_eq!(orders(&pool).await[&o1], "pending");
    assert_eq!(inventory(&pool, event).await["A"], (1, 1));
    pool.close().await;
    // 2. u1 does not pay: the expiry gives the unit back (`expired o1` on the stream).
    let swept = expire_due(o, event, now + window + 1, 10).await.unwrap();
    assert_eq!((swept.expired, swept.units), (1, 1));
    // 3. u2 buys the returned unit (`placed o2`).
    let o2 = buy(
        o,
        event,
        "u2",
        "key-u2-0001",
        "A",
        now + 1,
        now + window + 1,
    )
    .await;
    let o2 = o2.expect("u2 bought the returned unit");
    assert_eq!(origin_sold(o, event, "A").await, 1);
    // 4. A consumer reads `expired o1` and dies before acknowledging it.
    let read = rig.read_one_as("dead").await;
    assert!(
        format!("{read:?}").contains("expired") && format!("{read:?}").contains(&o1),
        "the dead consumer holds the expiry: {read:?}"
    );
    (o1, o2)
}

/// Issue 22's sequence, step by step, with the real purchase.lua and the real writer: one unit
/// of A; u1's order is written, then expires; u2 buys the returned unit; a consumer of the
/// group reads the expiry and dies before acknowledging it; another writer reads the re-sale.
/// The database must not refuse the re-sale for the expiry it has not seen yet: it waits,
/// and once the expiry is claimed and applied, both orders are as the origin has them.
#[tokio::test]
async fn a_resale_applied_before_the_expiry_that_freed_its_unit_is_not_quarantined() {
    for db in Db::both() {
        let rig = Rig::new("resale", &[("A", 1)]).await;
        let o = &rig.o;
        let (o1, o2) = expiry_held_by_a_dead_consumer(&rig, &db).await;
        let pool = db.pool().await;
        // 5. Another writer reads `placed o2`: it must not quarantine it.
        let out = rig.drain(&db, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("ALARM"), "{err}");
        assert_eq!(
            count(&pool, "SELECT COUNT(*) FROM fg_quarantine").await,
            0,
            "o2 quarantined in {}: {err}",
            db.url
        );
        assert_eq!(rig.pending().await, 2, "the expiry and the re-sale wait");
        // 6. Later the expiry is claimed and applied, and the re-sale after it.
        rig.drain(&db, &["--claim-idle-ms", "0"]);
        let want: BTreeMap<String, String> = [(o1, "expired"), (o2, "pending")]
            .into_iter()
            .map(|(id, s)| (id, s.to_string()))
            .collect();
        assert_eq!(orders(&pool).await, want, "in {}", db.url);
        assert_eq!(inventory(&pool, "resale").await["A"], (1, 1));
        assert_eq!(db_orders(&pool).await, origin_orders(o, "resale").await);
        assert_eq!(count(&pool, "SELECT COUNT(*) FROM fg_quarantine").await, 0);
        assert_eq!(rig.pending().await, 0);
        pool.close().await;
    }
}

/// Entries an earlier writer quarantined for arrival order alone (as issue 22's bug did) are
/// applied again by `--requeue-quarantined` once the expiry is in; one whose cause is not
/// mended stays, and the command says so and fails.
#[tokio::test]
async fn requeue_applies_quarantined_entries_whose_cause_is_gone() {
    for db in Db::both() {
        let rig = Rig::new("requeue", &[("A", 1)]).await;
        let (o1, o2) = expiry_held_by_a_dead_consumer(&rig, &db).await;
        // What the bug left: the re-sale read, quarantined and acknowledged before the expiry.
        let read = rig.read_one_as("old").await;
        let entry = &read.as_array().unwrap()[0].as_array().unwrap()[1]
            .as_array()
            .unwrap()[0];
        let id = entry.as_array().unwrap()[0].as_str().unwrap().to_string();
        let fields = entry.as_array().unwrap()[1].as_array().unwrap();
        let field = |name: &str| {
            let i = fields
                .iter()
                .position(|f| f.as_str() == Some(name))
                .unwrap();
            fields[i + 1].as_str().unwrap().to_string()
        };
        let (kind, order_json) = (field("type"), field("order"));
        assert_eq!(kind, "placed");
        let pool = db.pool().await;
        let bad = doc("requeue", 9, &[("Z", 1)]);
        for (sid, oid_, k, json) in [
            (id.as_str(), o2.as_str(), "placed", order_json.as_str()),
            ("1-0", oid(9).as_str(), "placed", bad.as_str()),
        ] {
            sqlx::query(
                "INSERT INTO fg_quarantine (event, stream_id, order_id, kind, order_json, reason, \
                 at, quarantined_at) VALUES ('requeue', $1, $2, $3, $4, 'would oversell', 5, 6)",
            )
            .bind(sid)
            .bind(oid_)
            .bind(k)
            .bind(json)
            .execute(&pool)
            .await
            .unwrap();
        }
        rig.cmd(&["XACK", &rig.key(), "sink", &id]).await;
        // The expiry is claimed and applied later: sold 0, o2 missing, one unit unaccounted.
        rig.drain(&db, &["--claim-idle-ms", "0"]);
        assert_eq!(inventory(&pool, "requeue").await["A"], (1, 0));
        assert!(!orders(&pool).await.contains_key(&o2));

        let out = rig
            .sink_cmd(&db, &["--requeue-quarantined"])
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(!out.status.success(), "one entry stays: {stdout}{stderr}");
        assert!(
            stdout.contains("2 quarantined entries, 1 applied and cleared, 1 stay"),
            "{stdout}"
        );
        assert!(
            stdout.contains(&oid(9)) && stdout.contains("not in the event"),
            "{stdout}"
        );
        assert!(
            stderr.contains("1 quarantined entries are still refused"),
            "{stderr}"
        );
        let want: BTreeMap<String, String> = [(o1, "expired"), (o2, "pending")]
            .into_iter()
            .map(|(id, s)| (id, s.to_string()))
            .collect();
        assert_eq!(orders(&pool).await, want, "in {}", db.url);
        assert_eq!(inventory(&pool, "requeue").await["A"], (1, 1));
        assert_eq!(
            db_orders(&pool).await,
            origin_orders(&rig.o, "requeue").await
        );
        let left: Vec<String> = sqlx::query("SELECT order_id FROM fg_quarantine")
            .fetch_all(&pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(left, vec![oid(9)]);
        // Again: nothing more to apply, the same one stays.
        let again = rig
            .sink_cmd(&db, &["--requeue-quarantined"])
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&again.stdout).contains("1 quarantined entries, 0 applied"));
        pool.close().await;
    }
}

/// What one churn run saw, for the closing line and the assertions.
#[derive(Default, Debug)]
struct Churn {
    kills: usize,
    stops: usize,
    placed: usize,
    paid_by_payers: usize,
    pay_lost_to_expiry: usize,
    cancelled_by_shop: usize,
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success(), "kill -s {sig} {pid}");
}

/// Issue 22's crash-and-race test. Three writers share one database while buyers take a small
/// stock through the real purchase.lua, with payment windows of 0.3-1.5 s: the expiry sweep
/// (the writers' own, and a separate one) gives unpaid units back, they are sold again, and
/// payers race the sweep for orders at their deadline. Meanwhile one writer at a time is
/// SIGKILLed (and replaced) or SIGSTOPped past --claim-idle-ms and --lock-timeout-ms (then
/// continued). At the end the database equals the origin order by order: every placed order
/// once, its lines, its status, and sold = the origin's sold; nothing is quarantined,
/// dead-lettered or left pending.
async fn churn(db: &Db, run: usize) {
    use flashgate_core::model::now_ms;
    use flashgate_core::orders::{expire_due, settle};
    use flashgate_core::script::{SettleVerb, Settled};
    use std::cell::RefCell;
    const STOCK: [(&str, u32); 2] = [("A", 8), ("B", 4)];
    const BUSY: Duration = Duration::from_secs(9);
    let event = format!("churn{run}");
    let rig = Rig::new(&event, &STOCK).await;
    rig.drain(db, &[]); // the tables and the group, before three writers race to make them
    let dir = tmpdir("churn");
    let sink = |name: &str| {
        let flags = [
            "--claim-idle-ms",
            "500",
            "--lock-timeout-ms",
            "1000",
            "--batch",
            "4",
        ];
        rig.writer(db, &dir, name, &flags)
    };
    let mut sinks: Vec<(String, Proc)> = (0..3)
        .map(|i| {
            let name = format!("s{i}g0");
            let p = sink(&name);
            (name, p)
        })
        .collect();
    let seen = RefCell::new(Churn::default());
    // (order id, when the shop pays or cancels it, and which)
    let to_pay: RefCell<Vec<(String, i64, SettleVerb)>> = RefCell::new(Vec::new());
    let t0 = Instant::now();
    let (buyer_o, payer_o, sweeper_o) =
        (rig.redis.origin(), rig.redis.origin(), rig.redis.origin());
    let buyers = async {
        let mut n = 0u64;
        while t0.elapsed() < BUSY {
            n += 1;
            let sku = if n.is_multiple_of(3) { "B" } else { "A" };
            let now = now_ms();
            // Windows of 300-1500 ms, spread by the attempt number.
            let pay_by = now + 300 + (n * 397 % 1200) as i64;
            let user = format!("u{n}");
            let key = format!("key-{run}-{n:08}");
            if let Some(id) = buy(&buyer_o, &event, &user, &key, sku, now, pay_by).await {
                seen.borrow_mut().placed += 1;
                // Two in five are paid, and one in five is cancelled (its units come back
                // before the deadline), at their deadline give or take 100 ms.
                if n % 5 < 3 {
                    let at = pay_by - 100 + (n * 31 % 200) as i64;
                    let verb = if n % 5 == 2 {
                        SettleVerb::Cancel
                    } else {
                        SettleVerb::Pay
                    };
                    to_pay.borrow_mut().push((id, at, verb));
                }
            }
            tokio::time::sleep(Duration::from_millis(4)).await;
        }
    };
    let payers = async {
        while t0.elapsed() < BUSY + Duration::from_secs(2) {
            let due: Vec<(String, i64, SettleVerb)> = {
                let mut q = to_pay.borrow_mut();
                let now = now_ms();
                let (due, later) = q.drain(..).partition(|(_, at, _)| *at <= now);
                *q = later;
                due
            };
            for (id, _, verb) in due {
                match (verb, settle(&payer_o, &event, &id, verb, now_ms()).await) {
                    (SettleVerb::Pay, Ok(Settled::Done { .. })) => {
                        seen.borrow_mut().paid_by_payers += 1
                    }
                    (_, Ok(Settled::Done { .. })) => seen.borrow_mut().cancelled_by_shop += 1,
                    (_, Ok(Settled::AlreadyExpired)) => seen.borrow_mut().pay_lost_to_expiry += 1,
                    (verb, other) => panic!("{verb:?} of {id}: {other:?}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let sweeper = async {
        while t0.elapsed() < BUSY + Duration::from_secs(2) {
            expire_due(&sweeper_o, &event, now_ms(), 100).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let chaos = async {
        let mut k = 0;
        tokio::time::sleep(Duration::from_millis(700)).await;
        while t0.elapsed() < BUSY {
            let i = k % 3;
            if k % 2 == 0 {
                signal(sinks[i].1.pid(), "KILL");
                let name = format!("s{i}g{}", k + 1);
                sinks[i] = (name.clone(), sink(&name));
                seen.borrow_mut().kills += 1;
            } else {
                let pid = sinks[i].1.pid();
                signal(pid, "STOP");
                seen.borrow_mut().stops += 1;
                tokio::time::sleep(Duration::from_millis(1300)).await;
                signal(pid, "CONT");
            }
            k += 1;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    tokio::join!(buyers, payers, sweeper, chaos);
    // The writers catch up, then stop and report; a last drain claims what they left.
    let pool = db.pool().await;
    let origin = origin_orders(&rig.o, &event).await;
    let caught_up = Instant::now();
    while count(&pool, "SELECT COUNT(*) FROM fg_orders").await < origin.len() as i64
        && caught_up.elapsed() < Duration::from_secs(20)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (_, p) in &mut sinks {
        p.stop();
    }
    let last = rig.drain(db, &["--claim-idle-ms", "0", "--consumer", "last"]);
    let mut logs = String::from_utf8_lossy(&last.stderr).into_owned();
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        logs.push_str(&std::fs::read_to_string(e.path()).unwrap());
    }
    let alarms: String = logs
        .lines()
        .filter(|l| l.contains("ALARM"))
        .map(|l| format!("{l}\n"))
        .collect();
    // Every writer's log, the killed ones' included.
    let claims: u64 = logs
        .lines()
        .filter_map(|l| l.strip_prefix("flashgate sink: took over "))
        .filter_map(|l| l.split(' ').next()?.parse::<u64>().ok())
        .sum();
    let deferrals = logs
        .lines()
        .filter(|l| l.contains(" waits for entry "))
        .count();

    // The origin, read after the last writer's own sweep.
    let origin = origin_orders(&rig.o, &event).await;
    let dbo = db_orders(&pool).await;
    let seen = seen.into_inner();
    let quarantined = count(&pool, "SELECT COUNT(*) FROM fg_quarantine").await;
    let (mut paid, mut expired, mut cancelled) = (0, 0, 0);
    for (status, _) in origin.values() {
        paid += usize::from(status == "paid");
        expired += usize::from(status == "expired");
        cancelled += usize::from(status == "cancelled");
    }
    let resales: usize = STOCK
        .iter()
        .map(|(sku, stock)| {
            let placed = origin
                .values()
                .filter(|(_, lines)| lines.contains(&format!("\"sku\":\"{sku}\"")))
                .count();
            placed.saturating_sub(*stock as usize)
        })
        .sum();
    eprintln!(
        "churn {run} [{}]: entries {} (placed {}, paid {paid}, expired {expired}, cancelled {cancelled}), kills {}, stops {}, entries claimed {claims}, deferred {deferrals}, re-sales {resales}, payments lost to the sweep {}, quarantined {quarantined}",
        if db.url.starts_with("sqlite") { "sqlite" } else { "postgres" },
        origin.len() + paid + expired + cancelled,
        origin.len(),
        seen.kills,
        seen.stops,
        seen.pay_lost_to_expiry,
    );
    assert!(alarms.is_empty(), "{alarms}");
    assert_eq!(quarantined, 0);
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM fg_dead_letters").await,
        0
    );
    assert_eq!(
        seen.placed,
        origin.len(),
        "every placed order is in the index"
    );
    for (id, want) in &origin {
        assert_eq!(dbo.get(id), Some(want), "order {id} in {}", db.url);
    }
    assert_eq!(dbo.len(), origin.len(), "no order the origin does not have");
    let inv = inventory(&pool, &event).await;
    for (sku, stock) in STOCK {
        let sold = origin_sold(&rig.o, &event, sku).await;
        assert_eq!(
            inv[sku],
            (i64::from(stock), sold),
            "inventory of {sku} in {}",
            db.url
        );
    }
    assert_eq!(rig.pending().await, 0);
    // The run did what it is for.
    assert!(seen.kills >= 3 && seen.stops >= 3, "{seen:?}");
    assert!(
        resales > 0 && expired > 0 && paid > 0 && cancelled > 0,
        "{seen:?}"
    );
    assert_eq!(
        cancelled, seen.cancelled_by_shop,
        "every cancel the shop won holds"
    );
    pool.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn churn_sqlite() {
    churn(&Db::sqlite(), 0).await;
}

#[tokio::test]
async fn churn_postgres() {
    churn(&Db::postgres(), 1).await;
}

/// A writer SIGSTOPped in the middle of a Postgres transaction that holds the inventory row
/// does not block the others for longer than the bound: Postgres ends its session after
/// --lock-timeout-ms idle in the transaction, and its entries are claimed once idle for
/// --claim-idle-ms. The test measures how long after the stop the others have applied
/// everything, the stopped writer's entries included.
#[tokio::test]
async fn a_writer_stopped_mid_transaction_is_taken_over_within_the_bound() {
    const N: usize = 600;
    const CLAIM_MS: u64 = 1000;
    const LOCK_MS: u64 = 2000;
    let db = Db::postgres();
    let rig = Rig::new("hang", &[("A", 100_000)]).await;
    rig.drain(&db, &[]);
    let pool = db.pool().await;
    let dir = tmpdir("hang");
    let (claim, lock) = (CLAIM_MS.to_string(), LOCK_MS.to_string());
    let spawn = |name: &str| {
        let flags = [
            "--claim-idle-ms",
            &claim,
            "--lock-timeout-ms",
            &lock,
            "--batch",
            "10",
        ];
        rig.writer(&db, &dir, name, &flags)
    };
    let mut a = spawn("a");
    let mut b = spawn("b");
    let mut n = 0;
    let mut tries = 0;
    // Stop `a` while its open transaction holds the inventory row (a NOWAIT lock fails).
    let stopped_at = loop {
        tries += 1;
        assert!(tries < 200, "never caught a inside a transaction");
        for _ in 0..20 {
            rig.xadd("placed", &doc("hang", n, &[("A", 1)]), n as i64)
                .await;
            n += 1;
        }
        let in_tx = count(
            &pool,
            "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = 'flashgate-sink:a' \
             AND xact_start IS NOT NULL",
        )
        .await;
        if in_tx == 0 {
            continue;
        }
        signal(a.pid(), "STOP");
        let at = Instant::now();
        // `b` holds the row only for moments; a lock still held after 300 ms is `a`'s.
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("SET LOCAL lock_timeout = 300")
            .execute(&mut *tx)
            .await
            .unwrap();
        let locked = sqlx::query(
            "SELECT sold FROM fg_inventory WHERE event = 'hang' AND sku = 'A' FOR UPDATE",
        )
        .fetch_optional(&mut *tx)
        .await
        .is_err();
        tx.rollback().await.unwrap();
        if locked && rig.holders().await.contains(&"a".to_string()) {
            break at;
        }
        signal(a.pid(), "CONT");
    };
    // The rest of the orders arrive while `a` hangs.
    let total = n.max(N);
    while n < total {
        rig.xadd("placed", &doc("hang", n, &[("A", 1)]), n as i64)
            .await;
        n += 1;
    }
    let mut blocked = false;
    let took = loop {
        let waiting = count(
            &pool,
            "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = 'flashgate-sink:b' \
             AND wait_event_type = 'Lock'",
        )
        .await;
        blocked |= waiting > 0;
        let written = count(&pool, "SELECT COUNT(*) FROM fg_orders").await;
        if written == total as i64 && !rig.holders().await.contains(&"a".to_string()) {
            break stopped_at.elapsed();
        }
        assert!(
            stopped_at.elapsed() < Duration::from_secs(60),
            "b never took over: {written} of {total} written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let bound = Duration::from_millis(CLAIM_MS + LOCK_MS + 1000);
    eprintln!(
        "a writer stopped mid-transaction (caught after {tries} tries): the other applied everything {} ms after the stop (bound {} ms; it waited on a's lock: {blocked})",
        took.as_millis(),
        bound.as_millis()
    );
    assert!(blocked, "b never waited on the stopped writer's lock");
    // The bound, plus slack for a loaded machine.
    assert!(took < bound + Duration::from_secs(2), "took {took:?}");
    // `a` comes back: its session is gone, it reconnects and goes on without harm.
    signal(a.pid(), "CONT");
    rig.xadd("placed", &doc("hang", total, &[("A", 1)]), total as i64)
        .await;
    let t0 = Instant::now();
    while count(&pool, "SELECT COUNT(*) FROM fg_orders").await < total as i64 + 1 {
        assert!(t0.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.stop();
    b.stop();
    rig.drain(&db, &["--claim-idle-ms", "0"]);
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM fg_orders").await,
        total as i64 + 1
    );
    assert_eq!(
        inventory(&pool, "hang").await["A"],
        (100_000, total as i64 + 1)
    );
    for t in ["fg_quarantine", "fg_dead_letters"] {
        assert_eq!(
            count(&pool, &format!("SELECT COUNT(*) FROM {t}")).await,
            0,
            "{t}"
        );
    }
    assert_eq!(rig.pending().await, 0);
    pool.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A shop's database made by an earlier flashgate (only the first migration applied, with
/// orders in it) is upgraded in place when a writer opens it: every row stays, with its lines,
/// and the upgraded table takes the `cancelled` status, which the old CHECK refused.
#[tokio::test]
async fn an_older_database_is_upgraded_in_place() {
    use flashgate_sink::store::Store;
    for db in Db::both() {
        let backend = if db.url.starts_with("sqlite") {
            "sqlite"
        } else {
            "postgres"
        };
        let first = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../sink/migrations")
            .join(backend)
            .join("0001_orders.sql");
        let dir = std::env::temp_dir().join(format!(
            "flashgate-old-migrations-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(&first, dir.join("0001_orders.sql")).unwrap();
        sqlx::any::install_default_drivers();
        let url = match backend {
            "sqlite" => format!("{}?mode=rwc", db.url),
            _ => db.url.clone(),
        };
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        let old = sqlx::migrate::Migrator::new(dir.as_path()).await.unwrap();
        old.run(&pool).await.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        sqlx::query(
            "INSERT INTO fg_orders (id, event, user_id, status, created_at, idempotency_key, \
             updated_at) VALUES ('o_old', 'up', 'ann', 'pending', '2026-01-01T00:00:00Z', 'k', 1)",
        )
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO fg_order_lines (order_id, sku, qty, unit_price, currency) \
             VALUES ('o_old', 'A', 2, 100, 'EUR')",
        )
        .execute(&pool)
        .await
        .unwrap();
        let refused = sqlx::query("UPDATE fg_orders SET status = 'cancelled'")
            .execute(&pool)
            .await;
        assert!(
            refused.is_err(),
            "{backend}: the old CHECK takes only three statuses"
        );
        pool.close().await;

        let store = Store::open(&db.url, 1).await.unwrap();
        let n = sqlx::query(
            "UPDATE fg_orders SET status = 'cancelled', cancelled_at = 2 WHERE id = 'o_old'",
        )
        .execute(store.pool())
        .await
        .unwrap()
        .rows_affected();
        assert_eq!(n, 1, "{backend}");
        let row = sqlx::query(
            "SELECT o.user_id, o.status, l.qty FROM fg_orders o \
             JOIN fg_order_lines l ON l.order_id = o.id WHERE o.id = 'o_old'",
        )
        .fetch_one(store.pool())
        .await
        .unwrap();
        let got: (String, String, i64) = (row.get(0), row.get(1), row.get(2));
        assert_eq!(got, ("ann".into(), "cancelled".into(), 2), "{backend}");
        let bad = sqlx::query("UPDATE fg_orders SET status = 'refunded'")
            .execute(store.pool())
            .await;
        assert!(
            bad.is_err(),
            "{backend}: the new CHECK still guards the status"
        );
        let orphan = sqlx::query(
            "INSERT INTO fg_order_lines (order_id, sku, qty, unit_price, currency) \
             VALUES ('o_none', 'A', 1, 1, 'EUR')",
        )
        .execute(store.pool())
        .await;
        assert!(
            orphan.is_err(),
            "{backend}: lines still reference fg_orders"
        );
        // Opening again applies nothing twice.
        drop(store);
        Store::open(&db.url, 1).await.unwrap();
    }
}
