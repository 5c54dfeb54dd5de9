//! The order sink (`flashgate orders sink`): it reads each event's stream of order changes
//! (`fg:{E}:stream`, entries `type` = placed | paid | expired | cancelled, `order` = the order document,
//! `at` = Unix ms) as a member of the consumer group `sink`, and writes them into the shop's SQL
//! database (SQLite or Postgres): orders, their lines, and per-sku inventory.
//!
//! Invariants:
//! - **Exactly-once effect.** An entry is acknowledged (XACK) only after the transaction that
//!   applied it commits, and applying an entry twice changes nothing ([`store`]), so a crash
//!   anywhere loses nothing and duplicates nothing.
//! - **Any arrival order.** Several sinks may apply one order's entries in any order; an
//!   order's status goes pending → paid, expired or cancelled and never back ([`change::decide`]),
//!   and inventory `sold` counts the units of pending and paid orders.
//! - **Stock is never oversold in SQL.** `sold` changes only under a guard and a CHECK keeps
//!   `0 <= sold <= stock`.
//! - **Arrival order across orders refuses nothing.** A reservation that finds its sku short
//!   while the group still holds an unacknowledged entry that may give units of it back (an
//!   expiry held by a dead, hung or slower sink) is deferred: left pending and applied again
//!   about once a second, and by whoever claims it. Only a trip no pending entry can mend is
//!   quarantined (`fg_quarantine`, with its reason), alarmed on stderr (`flashgate sink:
//!   ALARM: …`) and acknowledged: never dropped; `--requeue-quarantined` applies it again
//!   once its cause is mended ([`store`] has the argument).
//! - **Poison entries end.** An entry that fails on its `--max-deliveries`-th delivery (the
//!   group's delivery count) goes to `fg_dead_letters` with its last error, and is acknowledged.
//! - **Recovery.** Entries held by a consumer that died are claimed (XAUTOCLAIM) once idle for
//!   `--claim-idle-ms`; sinks with distinct consumer names share the group.
//! - **Trimming.** Only entries the group has acknowledged are trimmed ([`change::trim_floor`]).
//!
//! Layout: [`change`] decides (pure), [`stream`] talks to the origin, [`store`] to the
//! database; this file runs the loop. The loop is single-threaded: one sink process applies
//! one batch at a time; more throughput comes from more sinks.

pub mod bench;
pub use flashgate_core::change;
pub mod cli;
pub mod error;
pub mod store;
pub mod stream;

pub use error::SinkError;

use change::StreamId;
use flashgate_core::origin::Origin;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use store::{Outcome, Store};
use stream::{Delivery, EventStream};

/// How long one XREADGROUP waits for new entries when the sink is idle. The origin's command
/// timeout must be longer.
pub const BLOCK_MS: u64 = 500;
/// How often the sweeps, claims of idle entries, trimming and the progress line run.
const TICK: Duration = Duration::from_secs(1);
/// The longest wait between tries while the database or the origin is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What a sweep's failure carries.
pub type SweepError = Box<dyn std::error::Error + Send + Sync>;

/// The seam for the expiry sweep. The sink calls [`Sweep::sweep`] about once a second per event
/// (once per event, before draining, with `--once`), on its own task, between batches; a sweep
/// expires the event's unpaid orders past `pay_by` at the origin (whose expiry appends
/// `expired` entries to the stream, which the sink then applies like any other) and answers how
/// many it expired. A failure is reported on stderr and the sink goes on.
pub trait Sweep {
    fn sweep(&self, event: &str, now_ms: i64) -> impl Future<Output = Result<usize, SweepError>>;
}

/// A sweep that does nothing (the sink bench: it measures writing, not expiring).
pub struct NoSweep;

impl Sweep for NoSweep {
    async fn sweep(&self, _event: &str, _now_ms: i64) -> Result<usize, SweepError> {
        Ok(0)
    }
}

/// The expiry sweep at the origin: settle.lua expires each due order (`flashgate_core::orders`).
pub struct OriginSweep<'a, O>(pub &'a O);

/// Orders one sweep expires at most, per event.
pub const SWEEP_BATCH: usize = 1000;

impl<O: Origin> Sweep for OriginSweep<'_, O> {
    async fn sweep(&self, event: &str, now_ms: i64) -> Result<usize, SweepError> {
        let swept = flashgate_core::orders::expire_due(self.0, event, now_ms, SWEEP_BATCH).await?;
        Ok(swept.expired)
    }
}

/// How a sink runs.
#[derive(Clone, Debug)]
pub struct Config {
    pub events: Vec<String>,
    /// This sink's consumer name in the group; distinct per running sink.
    pub consumer: String,
    /// Entries per read and per transaction.
    pub batch: usize,
    pub claim_idle_ms: u64,
    pub max_deliveries: u64,
    /// Drain what is in the streams (new entries, idle claimable ones) and stop.
    pub once: bool,
    /// Print a progress line to stderr about once a second.
    pub progress: bool,
}

/// `<hostname>-<pid>`: distinct for every running sink.
pub fn default_consumer() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "sink".to_string());
    format!("{host}-{}", std::process::id())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What a sink did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Entries handled (every delivery counts, a retried one each time).
    pub entries: u64,
    pub applied: u64,
    /// Duplicates, stale changes, and entries an earlier delivery had settled or deleted.
    pub skipped: u64,
    pub quarantined: u64,
    /// Deliveries deferred behind an entry that may give units back (left pending).
    pub deferred: u64,
    /// Entries taken over after idling `--claim-idle-ms` (another sink's, or own failures).
    pub claimed: u64,
    pub dead_lettered: u64,
    /// Deliveries that failed and were left pending.
    pub failed: u64,
    pub trimmed: u64,
    /// Entries pending in the group at the end (over all events).
    pub pending: u64,
    pub elapsed: Duration,
}

impl fmt::Display for Totals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        write!(
            f,
            "{} entries in {secs:.2} s ({:.0}/s): {} applied, {} duplicate or stale, {} quarantined, {} deferred, {} dead-lettered, {} failed deliveries, {} claimed; {} pending; {} trimmed",
            self.entries,
            self.entries as f64 / secs.max(1e-9),
            self.applied,
            self.skipped,
            self.quarantined,
            self.deferred,
            self.dead_lettered,
            self.failed,
            self.claimed,
            self.pending,
            self.trimmed
        )
    }
}

/// One event's stream and what the sink keeps about it.
struct Lane<'o, O> {
    event: String,
    stream: EventStream<'o, O>,
    /// Where the next XAUTOCLAIM scan continues.
    cursor: StreamId,
    /// With `--once`: own entries that failed, to be delivered again at once.
    failing: Vec<StreamId>,
    /// Own entries deferred behind a possible release, to be delivered again.
    deferred: Vec<StreamId>,
    /// Entries whose deferral was reported (once each, until they are done with).
    waiting: std::collections::HashSet<StreamId>,
}

struct Sink<'a, O, S> {
    store: &'a Store,
    cfg: &'a Config,
    sweep: &'a S,
    stop: &'a AtomicBool,
    lanes: Vec<Lane<'a, O>>,
    totals: Totals,
    last_line: Instant,
    entries_at_last_line: u64,
}

/// Runs the sink until `stop` is set (or, with `cfg.once`, until the streams are drained).
/// Before reading, it creates each event's group and records each event's stock (from the
/// origin's `event status`) in the inventory table.
pub async fn run<O: Origin, S: Sweep>(
    origin: &O,
    store: &Store,
    cfg: &Config,
    sweep: &S,
    stop: &AtomicBool,
) -> Result<Totals, SinkError> {
    let started = Instant::now();
    let mut lanes = Vec::with_capacity(cfg.events.len());
    for event in &cfg.events {
        let snap = flashgate_core::ops::status(origin, event)
            .await
            .map_err(SinkError::Event)?;
        let stock: Vec<(String, i64)> = snap
            .meta
            .items
            .iter()
            .zip(&snap.items)
            .map(|(info, v)| (info.sku.clone(), i64::from(v.stock)))
            .collect();
        store.set_stock(event, &stock).await?;
        let stream = EventStream::new(origin, event, &cfg.consumer);
        stream.ensure_group().await?;
        lanes.push(Lane {
            event: event.clone(),
            stream,
            cursor: StreamId::ZERO,
            failing: Vec::new(),
            deferred: Vec::new(),
            waiting: Default::default(),
        });
    }
    let mut sink = Sink {
        store,
        cfg,
        sweep,
        stop,
        lanes,
        totals: Totals::default(),
        last_line: Instant::now(),
        entries_at_last_line: 0,
    };
    if cfg.once {
        sink.drain().await?;
    } else {
        sink.serve().await?;
    }
    for i in 0..sink.lanes.len() {
        let lane = &sink.lanes[i];
        sink.totals.pending += lane.stream.group().await?.pending;
        lane.stream.retire().await?;
    }
    sink.totals.elapsed = started.elapsed();
    Ok(sink.totals)
}

impl<O: Origin, S: Sweep> Sink<'_, O, S> {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// `--once`: per event, sweep, claim what idled, read what is new, retry own failures
    /// until they apply or are dead-lettered, then trim.
    async fn drain(&mut self) -> Result<(), SinkError> {
        for i in 0..self.lanes.len() {
            self.sweep_lane(i).await;
            while self.claim_idle(i).await? && !self.stopping() {}
            while !self.stopping() {
                let ds = self.lanes[i].stream.read_new(self.cfg.batch, None).await?;
                if ds.is_empty() {
                    break;
                }
                self.handle(i, ds).await?;
            }
            // Each claim counts a delivery, so this ends by --max-deliveries at the latest.
            while !self.lanes[i].failing.is_empty() && !self.stopping() {
                let ids = std::mem::take(&mut self.lanes[i].failing);
                self.redeliver(i, &ids).await?;
            }
            // Deferred entries wait for releases: those of this drain are applied by now, and
            // those held by others are claimed above once idle. Try again while that helps;
            // what still waits stays pending for the next drain or a running sink.
            while !self.lanes[i].deferred.is_empty() && !self.stopping() {
                let ids = std::mem::take(&mut self.lanes[i].deferred);
                while self.claim_idle(i).await? && !self.stopping() {}
                self.redeliver(i, &ids).await?;
                if self.lanes[i].deferred.len() >= ids.len() {
                    let n = self.lanes[i].deferred.len();
                    eprintln!(
                        "flashgate sink: {n} entries of event {} wait for entries another sink holds; left pending",
                        self.lanes[i].event
                    );
                    break;
                }
            }
            self.totals.trimmed += self.lanes[i].stream.trim().await?;
            self.progress_if_due().await;
        }
        Ok(())
    }

    /// Long-running: read new entries of every event in turn (blocking briefly when all were
    /// idle) and, about once a second, sweep, claim idle entries, trim and report. Origin or
    /// database trouble is reported and waited out.
    async fn serve(&mut self) -> Result<(), SinkError> {
        let mut idle = false;
        let mut backoff = Duration::ZERO;
        let mut next_tick = Instant::now();
        while !self.stopping() {
            let round = async {
                let n = self.round(idle).await?;
                if Instant::now() >= next_tick {
                    next_tick = Instant::now() + TICK;
                    self.tick().await?;
                }
                Ok::<_, SinkError>(n)
            }
            .await;
            match round {
                Ok(n) => {
                    idle = n == 0;
                    backoff = Duration::ZERO;
                }
                Err(e) if e.is_transient() => {
                    backoff = (backoff * 2).clamp(Duration::from_millis(250), MAX_BACKOFF);
                    eprintln!(
                        "flashgate sink: {e}; trying again in {:.1} s",
                        backoff.as_secs_f64()
                    );
                    self.pause(backoff).await;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Sleeps up to `d`, waking early when asked to stop.
    async fn pause(&self, d: Duration) {
        let until = Instant::now() + d;
        while !self.stopping() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50).min(until - Instant::now())).await;
        }
    }

    /// One read of new entries per event; answers how many were handled.
    async fn round(&mut self, idle: bool) -> Result<usize, SinkError> {
        let block = idle.then(|| (BLOCK_MS / self.lanes.len().max(1) as u64).max(10));
        let mut n = 0;
        for i in 0..self.lanes.len() {
            if self.stopping() {
                break;
            }
            let ds = self.lanes[i].stream.read_new(self.cfg.batch, block).await?;
            n += ds.len();
            self.handle(i, ds).await?;
        }
        Ok(n)
    }

    async fn tick(&mut self) -> Result<(), SinkError> {
        for i in 0..self.lanes.len() {
            self.sweep_lane(i).await;
            // Failures are delivered again by these claims, once idle for --claim-idle-ms.
            self.claim_idle(i).await?;
            let deferred = std::mem::take(&mut self.lanes[i].deferred);
            self.redeliver(i, &deferred).await?;
            self.totals.trimmed += self.lanes[i].stream.trim().await?;
        }
        self.progress_if_due().await;
        Ok(())
    }

    /// Claims and applies one page of entries idle for `--claim-idle-ms`, continuing the scan
    /// where the last page ended; answers whether the scan goes on.
    async fn claim_idle(&mut self, i: usize) -> Result<bool, SinkError> {
        let lane = &self.lanes[i];
        let (next, ds) = lane
            .stream
            .autoclaim(self.cfg.claim_idle_ms, lane.cursor, self.cfg.batch)
            .await?;
        self.lanes[i].cursor = next;
        self.totals.claimed += ds.len() as u64;
        if !ds.is_empty() {
            eprintln!(
                "flashgate sink: took over {} entries of event {} idle for {} ms or more",
                ds.len(),
                self.lanes[i].event,
                self.cfg.claim_idle_ms
            );
        }
        self.handle(i, ds).await?;
        Ok(next != StreamId::ZERO)
    }

    /// Takes `ids` (own entries) back at once and applies them again.
    async fn redeliver(&mut self, i: usize, ids: &[StreamId]) -> Result<(), SinkError> {
        for chunk in ids.chunks(self.cfg.batch.max(1)) {
            let ds = self.lanes[i].stream.claim(chunk).await?;
            self.handle(i, ds).await?;
        }
        Ok(())
    }

    async fn sweep_lane(&self, i: usize) {
        let event = &self.lanes[i].event;
        if let Err(e) = self.sweep.sweep(event, now_ms()).await {
            eprintln!("flashgate sink: the expiry sweep of event {event} failed: {e}");
        }
    }

    /// Applies `ds` in one transaction, reports what needs a person, then acknowledges every
    /// entry that is done with.
    async fn handle(&mut self, i: usize, ds: Vec<Delivery>) -> Result<(), SinkError> {
        if ds.is_empty() {
            return Ok(());
        }
        let lane = &self.lanes[i];
        // Tracking (at the origin) and the transaction (in the database) are independent:
        // they overlap, and both must be done before any entry is acknowledged.
        let upto = ds.iter().map(|d| d.id).max().unwrap_or(StreamId::ZERO);
        let (tracked, outcomes) = tokio::join!(
            lane.stream.track(&lane.event, upto),
            self.store.apply(
                &lane.event,
                &ds,
                self.cfg.max_deliveries,
                now_ms(),
                &lane.stream
            )
        );
        tracked?;
        let outcomes = outcomes?;
        let mut done = Vec::with_capacity(ds.len());
        let mut failing = Vec::new();
        let mut deferred = Vec::new();
        let lane = &mut self.lanes[i];
        let t = &mut self.totals;
        for (d, o) in ds.iter().zip(&outcomes) {
            t.entries += 1;
            match o {
                Outcome::Applied(_) => t.applied += 1,
                Outcome::Skipped(_) | Outcome::Settled | Outcome::Gone => t.skipped += 1,
                Outcome::Quarantined { order, trip } => {
                    t.quarantined += 1;
                    eprintln!(
                        "flashgate sink: ALARM: order {order} of event {} (stream entry {}) would oversell and was quarantined, not applied: {trip}. The origin and the database disagree about stock: investigate fg_quarantine.",
                        lane.event, d.id
                    );
                }
                Outcome::Deferred {
                    order,
                    trip,
                    behind,
                } => {
                    t.deferred += 1;
                    deferred.push(d.id);
                    if lane.waiting.insert(d.id) {
                        eprintln!(
                            "flashgate sink: order {order} of event {} (stream entry {}) waits for {behind}: {trip}; left pending",
                            lane.event, d.id
                        );
                    }
                }
                Outcome::DeadLettered(err) => {
                    t.dead_lettered += 1;
                    eprintln!(
                        "flashgate sink: entry {} of event {} failed {} deliveries and went to fg_dead_letters: {err}",
                        d.id, lane.event, d.deliveries
                    );
                }
                Outcome::Failed(err) => {
                    t.failed += 1;
                    failing.push(d.id);
                    eprintln!(
                        "flashgate sink: entry {} of event {} failed (delivery {} of {}), left pending: {err}",
                        d.id, lane.event, d.deliveries, self.cfg.max_deliveries
                    );
                }
            }
            if o.acks() {
                done.push(d.id);
                lane.waiting.remove(&d.id);
            }
        }
        lane.stream.ack(&done).await?;
        if self.cfg.once {
            self.lanes[i].failing.extend(failing);
        }
        self.lanes[i].deferred.extend(deferred);
        self.progress_if_due().await;
        Ok(())
    }

    /// The progress line, at most once per [`TICK`].
    async fn progress_if_due(&mut self) {
        if !self.cfg.progress || self.last_line.elapsed() < TICK {
            return;
        }
        let secs = self.last_line.elapsed().as_secs_f64();
        let rate = (self.totals.entries - self.entries_at_last_line) as f64 / secs;
        self.last_line = Instant::now();
        self.entries_at_last_line = self.totals.entries;
        let (mut pending, mut lag) = (0, Some(0));
        for lane in &self.lanes {
            match lane.stream.group().await {
                Ok(g) => {
                    pending += g.pending;
                    lag = lag.zip(g.lag).map(|(a, b)| a + b);
                }
                Err(_) => lag = None,
            }
        }
        let lag = lag.map_or("?".to_string(), |n| n.to_string());
        let t = &self.totals;
        eprintln!(
            "flashgate sink: {rate:.0} orders/s, lag {lag}, pending {pending}; {} applied, {} duplicate or stale, {} quarantined, {} deferred, {} dead-lettered",
            t.applied, t.skipped, t.quarantined, t.deferred, t.dead_lettered
        );
    }
}
