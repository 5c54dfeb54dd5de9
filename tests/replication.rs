//! Replicated acknowledgements (`ORIGIN_REPLICA_ACKS`): an order is answered as the shopper's,
//! and a payment as done, only once enough replicas hold it. A real primary and replica
//! (Debian's redis-server); the replica is stalled with SIGSTOP, so that `WAIT` cannot be
//! satisfied, then let go.

mod common;

use common::*;
use flashgate_core::keys::EventKeys;
use flashgate_core::model::now_ms;
use flashgate_core::orders::settle;
use flashgate_core::origin::Acks;
use flashgate_core::script::{SettleVerb, Settled};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A replica of `primary`, in touch with it when this returns; stopped when dropped.
struct Replica {
    port: u16,
    proc: Proc,
}

impl Replica {
    fn of(primary: &Redis) -> Replica {
        let port = free_port();
        let dir = tmpdir("replica");
        let proc = Proc::spawn(
            "redis-server (replica)",
            Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .args(["--replicaof", "127.0.0.1", &primary.port.to_string()])
                .arg("--dir")
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let r = Replica { port, proc };
        let up = eventually(Duration::from_secs(20), || {
            r.cli(&["INFO", "replication"])
                .contains("master_link_status:up")
                && primary
                    .cli(&["INFO", "replication"])
                    .contains("connected_slaves:1")
        });
        assert!(up, "the replica never came in touch with the primary");
        r
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Stalls (SIGSTOP) or lets go (SIGCONT): a stalled replica acknowledges nothing (and
    /// answers nothing: do not ask it anything while stalled).
    fn stall(&self, stalled: bool) {
        let sig = if stalled { "STOP" } else { "CONT" };
        let ok = Command::new("kill")
            .args(["-s", sig, &self.proc.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    fn sold(&self, event: &str) -> String {
        self.cli(&["HGET", &EventKeys::new(event).meta, "sold:A"])
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.stall(false);
    }
}

/// Through the real worker: with the replica in touch, a purchase gets its 201 and the
/// replica holds the order; with the replica stalled, the primary places the order but the
/// shopper gets 503 `origin_unavailable` (the 201 would not survive the primary's loss); the
/// retry with the same key, once the replica has it, gets the order (a replay), never a second
/// one. The same holds for a payment (settle.lua).
#[tokio::test]
async fn an_order_and_its_payment_are_answered_only_once_a_replica_holds_them() {
    let acks = [
        ("ORIGIN_REPLICA_ACKS", "1"),
        ("ORIGIN_REPLICA_ACK_MS", "500"),
    ];
    let sale = Sale::start(spec("rep", &[("A", 10)], -1000, (1, 3, 1)), &acks).await;
    let replica = Replica::of(&sale.redis);

    let first = sale.buy("u1", "key-u1-0001", &["A"]).await;
    assert_eq!(
        first.status,
        201,
        "{}\n{}",
        first.body,
        sale.worker.log_text()
    );
    assert_eq!(replica.sold("rep"), "1", "the replica holds the order");

    replica.stall(true);
    let t0 = Instant::now();
    let lost = sale.buy("u2", "key-u2-0001", &["A"]).await;
    let waited = t0.elapsed();
    assert!(
        lost.headers.contains_key("retry-after"),
        "{:?}",
        lost.headers
    );
    lost.refused(503, "origin_unavailable");
    assert!(
        waited >= Duration::from_millis(500),
        "it waited for the replica: {waited:?}"
    );
    let primary_sold = sale
        .redis
        .cli(&["HGET", &EventKeys::new("rep").meta, "sold:A"]);
    assert_eq!(primary_sold.trim(), "2", "the primary placed it");

    replica.stall(false);
    assert!(
        eventually(Duration::from_secs(10), || replica.sold("rep") == "2"),
        "the replica caught up"
    );
    let retry = sale.buy("u2", "key-u2-0001", &["A"]).await;
    assert_eq!(retry.status, 201, "{}", retry.body);
    assert_eq!(retry.body["replayed"], true, "the same order, not a second");
    let primary_sold = sale
        .redis
        .cli(&["HGET", &EventKeys::new("rep").meta, "sold:A"]);
    assert_eq!(primary_sold.trim(), "2");

    // The CLI's and the sweep's writes (settle.lua) too: a payment the replica cannot
    // acknowledge is an error that says so; run again once it can, it is "already paid".
    let o = flashgate_core::net::connect_acked(
        &sale.redis.url(),
        None,
        5000,
        Some(Acks {
            replicas: 1,
            timeout_ms: 500,
        }),
    )
    .unwrap();
    let id = first.body["order"]["id"].as_str().unwrap();
    replica.stall(true);
    let err = settle(&o, "rep", id, SettleVerb::Pay, now_ms())
        .await
        .unwrap_err();
    assert!(
        err.contains("acknowledged by 0 of 1 replicas within 500 ms"),
        "{err}"
    );
    replica.stall(false);
    let t0 = Instant::now();
    let paid = loop {
        match settle(&o, "rep", id, SettleVerb::Pay, now_ms()).await {
            Ok(a) => break a,
            Err(e) => assert!(t0.elapsed() < Duration::from_secs(10), "{e}"),
        }
    };
    assert_eq!(paid, Settled::AlreadyPaid, "the primary kept the payment");
}

/// The order writer with `--replica-acks 1` writes only entries a replica holds: with the
/// replica stalled, its read fails (saying so) and nothing reaches the database; once the
/// replica has the entries, a later run claims them (they idled) and writes each once.
#[tokio::test]
async fn the_writer_writes_only_orders_a_replica_holds() {
    let sale = Sale::start(spec("repw", &[("A", 10)], -1000, (1, 3, 1)), &[]).await;
    let replica = Replica::of(&sale.redis);
    let db = common::db::Db::sqlite();
    let url = sale.redis.url();
    let sink = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_flashgate"))
            .args([
                "--origin",
                &url,
                "--replica-acks",
                "1",
                "--replica-ack-ms",
                "200",
            ])
            .args([
                "orders", "sink", "--once", "--event", "repw", "--db", &db.url,
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    // The tables and the group, while the replica is in touch.
    let out = sink(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    replica.stall(true);
    // Without acks at the worker, the shopper gets a 201 the replica does not hold.
    let a = sale.buy("w1", "key-w1-0001", &["A"]).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let out = sink(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the read was refused");
    assert!(
        err.contains("the delivery was acknowledged by 0 of 1 replicas within 200 ms"),
        "{err}"
    );
    let pool = db.pool().await;
    assert!(
        common::db::orders(&pool).await.is_empty(),
        "nothing written"
    );

    replica.stall(false);
    assert!(eventually(Duration::from_secs(10), || replica.sold("repw") == "1"));
    let out = sink(&["--claim-idle-ms", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = common::db::orders(&pool).await;
    let id = a.body["order"]["id"].as_str().unwrap();
    assert_eq!(rows.keys().collect::<Vec<_>>(), [id], "written once");
}
