//! The instruments at the origin, each on a connection of its own and on the process's
//! multi-threaded runtime (not on the fleet's thread, whose queue would delay them):
//! - the probe: every [`PROBE_MS`], one PING (its round trip is the origin's latency) and one
//!   `HGET fg:{E}:sold <sku>` (the units sold, timed at the midpoint of its round trip);
//! - the sampler: `INFO commandstats` at each second's edge from the start of the sale.
//!
//! Times are milliseconds after the start (`t0_ms`, Unix ms); the probe starts before the
//! start, so it also sees the idle origin.

use super::measure::{CommandReading, Ping, Sold};
use crate::keys::EventKeys;
use crate::native::load::commandstats;
use crate::native::{now_ms, NativeOrigin};
use crate::origin::{Cmd, Origin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// The probe's period.
pub const PROBE_MS: u64 = 10;

/// The instruments, running.
pub struct Meter {
    stop: Arc<AtomicBool>,
    /// The index of the last second edge the sampler reads.
    last_edge: Arc<AtomicU64>,
    probe: JoinHandle<(Vec<Ping>, Vec<Sold>)>,
    sampler: JoinHandle<Vec<CommandReading>>,
}

/// What the instruments read.
pub struct Measured {
    pub commands: Vec<CommandReading>,
    pub pings: Vec<Ping>,
    pub sold: Vec<Sold>,
}

/// Sleeps until Unix time `ms`.
pub async fn sleep_until_ms(ms: i64) {
    let wait = ms - now_ms();
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
}

async fn probe(
    o: NativeOrigin,
    sold_key: String,
    sku: String,
    t0_ms: i64,
    stop: Arc<AtomicBool>,
) -> (Vec<Ping>, Vec<Sold>) {
    let (mut pings, mut sold) = (Vec::new(), Vec::new());
    let ping = Cmd::new(["PING"]);
    let hget = Cmd::new(["HGET", sold_key.as_str(), sku.as_str()]);
    let mut tick = tokio::time::interval(Duration::from_millis(PROBE_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let at_ms = now_ms() - t0_ms;
        let t = Instant::now();
        // A failed PING still took this long to tell: it counts as latency.
        let _ = o.call(&ping).await;
        let micros = t.elapsed().as_micros() as u64;
        pings.push(Ping { at_ms, micros });
        let sent = now_ms();
        if let Ok(v) = o.call(&hget).await {
            sold.push(Sold {
                at_ms: (sent + now_ms()) / 2 - t0_ms,
                units: v.as_int().unwrap_or(0).max(0) as u64,
            });
        }
    }
    (pings, sold)
}

async fn sampler(o: NativeOrigin, t0_ms: i64, last_edge: Arc<AtomicU64>) -> Vec<CommandReading> {
    let mut out = Vec::new();
    for k in 0u64.. {
        sleep_until_ms(t0_ms + k as i64 * 1000).await;
        let at_ms = now_ms() - t0_ms;
        match commandstats(&o).await {
            Ok(calls) => out.push(CommandReading { at_ms, calls }),
            // A missed edge would shift every later second: stop here instead.
            Err(e) => {
                eprintln!("flashgate simulate: INFO commandstats failed at {at_ms} ms, so the per-second figures end there: {e}");
                break;
            }
        }
        if k >= last_edge.load(Ordering::Relaxed) {
            break;
        }
    }
    out
}

impl Meter {
    /// Opens both connections (so that no reading pays for a connect), then starts the
    /// probe now and the sampler at `t0_ms`; the probe reads the units of `sku` sold in
    /// `event`. The sampler stops by itself at second edge `max_edges` at the latest.
    pub async fn start(
        conns: [NativeOrigin; 2],
        event: &str,
        sku: &str,
        t0_ms: i64,
        max_edges: u64,
    ) -> Result<Meter, String> {
        for c in &conns {
            c.call(&Cmd::new(["PING"]))
                .await
                .map_err(|e| format!("the origin probe cannot reach the origin: {e}"))?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let last_edge = Arc::new(AtomicU64::new(max_edges));
        let [p, s] = conns;
        let sold_key = EventKeys::new(event).sold;
        Ok(Meter {
            probe: tokio::spawn(probe(p, sold_key, sku.to_string(), t0_ms, stop.clone())),
            sampler: tokio::spawn(sampler(s, t0_ms, last_edge.clone())),
            stop,
            last_edge,
        })
    }

    /// Reads up to second edge `last` (at most the `max_edges` it was started with), then
    /// stops both instruments.
    pub async fn finish(self, last: u64) -> Result<Measured, String> {
        self.last_edge.fetch_min(last, Ordering::Relaxed);
        let commands = self
            .sampler
            .await
            .map_err(|e| format!("the INFO sampler failed: {e}"))?;
        self.stop.store(true, Ordering::Relaxed);
        let (pings, sold) = self
            .probe
            .await
            .map_err(|e| format!("the origin probe failed: {e}"))?;
        Ok(Measured {
            commands,
            pings,
            sold,
        })
    }
}
