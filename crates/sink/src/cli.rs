//! `flashgate orders sink` and the hidden `flashgate orders sink-bench`: flags, signals, and
//! the lines a terminal sees. Errors come back as one sentence for `main` to print.

use super::store::{Options, Requeued, LOCK_TIMEOUT_MS};
use super::{bench, default_consumer, run, Config, OriginSweep, Store, BLOCK_MS};
use flashgate_core::net as native;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(clap::Args, Debug, Clone)]
pub struct SinkArgs {
    /// An event whose order stream to write (repeatable).
    #[arg(long = "event", required = true)]
    pub events: Vec<String>,
    /// The shop's database: sqlite://PATH (created if missing) or postgres://USER@HOST/DB.
    #[arg(
        long,
        env = "FLASHGATE_DB",
        default_value = "sqlite://flashgate-orders.db"
    )]
    pub db: String,
    /// This sink's name in the consumer group (default: <hostname>-<pid>).
    #[arg(long)]
    pub consumer: Option<String>,
    /// Entries per read and per database transaction.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub batch: u64,
    /// Take over entries another sink has held this long without acknowledging them.
    #[arg(long, default_value_t = 30_000)]
    pub claim_idle_ms: u64,
    /// Move an entry to fg_dead_letters when it fails on this delivery.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_deliveries: u64,
    /// Drain what the streams hold now (idle claimable entries included), then exit.
    #[arg(long)]
    pub once: bool,
    /// Postgres: the longest a transaction may sit idle holding locks (a hung sink is cut off
    /// after it) and the longest a statement waits for a lock.
    #[arg(long, default_value_t = LOCK_TIMEOUT_MS, value_parser = clap::value_parser!(u64).range(1..))]
    pub lock_timeout_ms: u64,
    /// Apply the events' quarantined entries again (once their cause is mended), report each,
    /// and exit; entries that apply leave the quarantine. Reads no stream.
    #[arg(long, conflicts_with = "once")]
    pub requeue_quarantined: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct SinkBenchArgs {
    #[arg(long, default_value = "sqlite://flashgate-sink-bench.db")]
    pub db: String,
    /// Placed orders to write.
    #[arg(long, default_value_t = 10_000)]
    pub orders: u32,
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1_000))]
    pub batch: u64,
}

/// Sets the flag on the first SIGINT or SIGTERM; a second one exits at once.
fn stop_on_signals() -> Result<Arc<AtomicBool>, String> {
    use tokio::signal::unix::{signal, SignalKind};
    let stop = Arc::new(AtomicBool::new(false));
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| format!("cannot watch SIGINT: {e}"))?;
    let flag = stop.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            if flag.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!(
                "flashgate sink: stopping after the current transaction (again to quit at once)"
            );
        }
    });
    Ok(stop)
}

/// The origin for the sink: its command timeout outlasts a blocking read. `acks`
/// (`--replica-acks`): the replicas its expiry sweep's writes must reach, and that must hold
/// the entries it reads before it applies them (`stream`).
pub fn origin(
    acks: Option<flashgate_core::origin::Acks>,
    url: &str,
    password: Option<String>,
    timeout_ms: u64,
) -> Result<native::NativeOrigin, String> {
    native::connect_acked(url, password, timeout_ms.max(BLOCK_MS + 2_000), acks)
}

/// Runs the sink against `origin` (see [`origin`]).
pub async fn main(a: SinkArgs, origin: native::NativeOrigin) -> Result<(), String> {
    let stop = stop_on_signals()?;
    let consumer = a.consumer.unwrap_or_else(default_consumer);
    let opts = Options {
        max_connections: 2,
        lock_timeout_ms: a.lock_timeout_ms,
        name: Some(consumer.clone()),
    };
    let store = Store::open_with(&a.db, &opts)
        .await
        .map_err(|e| e.to_string())?;
    if a.requeue_quarantined {
        let result = requeue(&store, &a.events).await;
        store.pool().close().await;
        return result;
    }
    let cfg = Config {
        consumer,
        events: a.events,
        batch: a.batch as usize,
        claim_idle_ms: a.claim_idle_ms,
        max_deliveries: a.max_deliveries,
        once: a.once,
        progress: true,
    };
    if !a.once {
        eprintln!(
            "flashgate sink: {} → {} as consumer {} of group {}",
            cfg.events.join(", "),
            store.url,
            cfg.consumer,
            super::stream::GROUP
        );
    }
    let totals = run(&origin, &store, &cfg, &OriginSweep(&origin), &stop)
        .await
        .map_err(|e| e.to_string())?;
    store.pool().close().await;
    println!("flashgate sink: {totals}");
    Ok(())
}

/// `--requeue-quarantined`: one line per entry, then a summary; an error when any stays.
async fn requeue(store: &Store, events: &[String]) -> Result<(), String> {
    let mut stays = 0;
    for event in events {
        let lines = store
            .requeue_quarantined(event)
            .await
            .map_err(|e| e.to_string())?;
        let mut cleared = 0;
        for l in &lines {
            match &l.result {
                Requeued::Cleared(_) => cleared += 1,
                Requeued::Refused(trip) => println!(
                    "flashgate sink: order {} (event {event}, stream entry {}) is still refused: {trip}",
                    l.order, l.stream_id
                ),
                Requeued::Stuck(why) => println!(
                    "flashgate sink: order {} (event {event}, stream entry {}) cannot be applied: {why}",
                    l.order, l.stream_id
                ),
            }
        }
        stays += lines.len() - cleared;
        println!(
            "flashgate sink: event {event}: {} quarantined entries, {cleared} applied and cleared, {} stay in fg_quarantine",
            lines.len(),
            lines.len() - cleared
        );
    }
    if stays > 0 {
        return Err(format!(
            "{stays} quarantined entries are still refused; they stay in fg_quarantine"
        ));
    }
    Ok(())
}

/// `acks`: as for the sink (`--replica-acks`), so the bench measures their cost.
pub async fn bench_main(
    a: SinkBenchArgs,
    acks: Option<flashgate_core::origin::Acks>,
    origin_url: &str,
    password: Option<String>,
    timeout_ms: u64,
) -> Result<(), String> {
    let origin = origin(acks, origin_url, password, timeout_ms)?;
    let report = bench::run(&origin, &a.db, a.orders, a.batch as usize)
        .await
        .map_err(|e| e.to_string())?;
    println!("{report}");
    Ok(())
}
