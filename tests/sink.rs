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
    for db in Db::both() {
        let rig = Rig::new("crash", &[("A", 10_000)]).await;
        rig.drain(&db, &[]); // creates the tables and the group before two sinks race to
        let log = std::env::temp_dir().join(format!("flashgate-sink-crash-{}.log", free_port()));
        let spawn = |name: &str| {
            let mut c = rig.sink_cmd(
                &db,
                &[
                    "--consumer",
                    name,
                    "--claim-idle-ms",
                    "300",
                    "--batch",
                    "20",
                ],
            );
            c.stdout(Stdio::null())
                .stderr(std::fs::File::create(log.with_extension(name)).unwrap());
            Proc::spawn(name, &mut c)
        };
        let pool = db.pool().await;
        let mut a = spawn("a0");
        let b = spawn("b");
        let mut kills = 0;
        let mut n = 0;
        while n < N {
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
                    for _ in 0..40 {
                        if n < N - 1 {
                            rig.xadd("placed", &doc("crash", n, &[("A", 1)]), n as i64)
                                .await;
                            n += 1;
                        }
                    }
                }
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
        assert_eq!(ids.len(), N, "one row per order in {}", db.url);
        assert!((0..N).all(|n| ids.get(&oid(n)).map(String::as_str) == Some("pending")));
        assert_eq!(
            count(&pool, "SELECT COUNT(*) FROM fg_order_lines").await,
            N as i64
        );
        assert_eq!(inventory(&pool, "crash").await["A"], (10_000, N as i64));
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
        for n in 0..N {
            let entry = index.get(&format!("o:{}", oid(n))).map(String::as_str);
            let want = format!("u{n} key-{n:08} ");
            assert!(
                entry.is_some_and(|e| e.starts_with(&want)),
                "order {n} untracked: {entry:?}"
            );
        }
        pool.close().await;
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
        assert!(alarms[0].contains(&oid(3)) && alarms[0].contains("exceed the stock of 3"));
        assert!(alarms[2].contains(&oid(4)) && alarms[2].contains("not in the event"));

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
