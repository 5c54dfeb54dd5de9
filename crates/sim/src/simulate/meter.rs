//! The instruments at the origin. Each is an OS thread of its own, not a task on a tokio
//! runtime, with a blocking connection of its own, at the highest scheduling priority this
//! process may take (`SCHED_FIFO` where permitted; see `probe` for why):
//! - the probe: every [`PING_MS`], one PING (its round trip is the origin's latency); every
//!   [`SOLD_MS`], also one `HGET fg:{E}:sold <sku>` (the units sold, timed at the midpoint of
//!   its round trip);
//! - the sampler: `INFO commandstats` at each second's edge from the start of the sale.
//!
//! Every time is read from the monotonic clock ([`Clock`]) and given in milliseconds after the
//! start; the probe starts before the start, so it also sees the idle origin. The fleet runs
//! on other threads and never waits for them, nor they for it.

use super::measure::{CommandReading, Ping, Sold};
use super::probe::{raise_priority, BlockingConn, Clock, Priority};
use crate::load::parse_commandstats;
use flashgate_core::keys::EventKeys;
use flashgate_core::origin::resp::RespConfig;
use flashgate_core::origin::Value;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The probe's PING period.
pub const PING_MS: u64 = 2;
/// How often the probe reads the units sold (a multiple of [`PING_MS`]).
pub const SOLD_MS: u64 = 10;

/// The instruments, running.
pub struct Meter {
    stop: Arc<AtomicBool>,
    /// The index of the last second edge the sampler reads.
    last_edge: Arc<AtomicU64>,
    probe: JoinHandle<(Vec<Ping>, Vec<Sold>, Priority)>,
    sampler: JoinHandle<Vec<CommandReading>>,
}

/// What the instruments read.
pub struct Measured {
    pub commands: Vec<CommandReading>,
    pub pings: Vec<Ping>,
    pub sold: Vec<Sold>,
    /// The scheduling the probe's thread got.
    pub priority: Priority,
}

/// The probe's loop: ticks every [`PING_MS`] from its start (a tick it overran is skipped,
/// not made up), until `stop`.
fn probe(
    mut conn: Option<BlockingConn>,
    config: RespConfig,
    clock: Clock,
    hget: Vec<String>,
    stop: Arc<AtomicBool>,
) -> (Vec<Ping>, Vec<Sold>, Priority) {
    let priority = raise_priority();
    let (mut pings, mut sold) = (Vec::new(), Vec::new());
    let ping = vec!["PING".to_string()];
    let sold_every = (SOLD_MS / PING_MS).max(1);
    let began = Instant::now();
    let mut tick: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let due = began + Duration::from_micros(tick * PING_MS * 1000);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let sent = Instant::now();
        // A lost connection is opened again; that, and a failed PING, still took this long
        // to tell: it counts as latency.
        if conn.is_none() {
            conn = BlockingConn::open(&config).ok();
        }
        let answered = conn.as_mut().is_some_and(|c| c.call(&ping).is_ok());
        let took = sent.elapsed();
        pings.push(Ping {
            at_ms: clock.ms_at(sent),
            micros: took.as_micros() as u64,
        });
        if !answered {
            conn = None;
        }
        if tick.is_multiple_of(sold_every) {
            if let Some(c) = conn.as_mut() {
                let asked = Instant::now();
                match c.call(&hget) {
                    Ok(Ok(v)) => sold.push(Sold {
                        at_ms: (clock.us_at(asked) + clock.us_at(Instant::now())).div_euclid(2000),
                        units: v.as_int().unwrap_or(0).max(0) as u64,
                    }),
                    Ok(Err(_)) => {}
                    Err(_) => conn = None,
                }
            }
        }
        // The next tick still ahead (after a stall, the ticks it overran are skipped).
        let elapsed = began.elapsed().as_micros() as u64;
        tick = (tick + 1).max(elapsed / (PING_MS * 1000) + 1);
    }
    (pings, sold, priority)
}

/// The sampler's loop: one `INFO commandstats` at each second edge from the start, up to
/// `last_edge`. It waits parked, so that [`Meter::finish`] can lower `last_edge` and wake it.
fn sampler(mut conn: BlockingConn, clock: Clock, last_edge: Arc<AtomicU64>) -> Vec<CommandReading> {
    raise_priority();
    let info = ["INFO", "commandstats"].map(String::from);
    let mut out = Vec::new();
    for k in 0u64.. {
        let edge = clock.instant(k as i64 * 1000);
        let wanted = || k <= last_edge.load(Ordering::Relaxed);
        while wanted() {
            let now = Instant::now();
            if now >= edge {
                break;
            }
            std::thread::park_timeout(edge - now);
        }
        if !wanted() {
            break;
        }
        let at_ms = clock.ms_at(Instant::now());
        match conn.call(&info) {
            Ok(Ok(Value::Str(text))) => out.push(CommandReading {
                at_ms,
                calls: parse_commandstats(&text),
            }),
            // A missed edge would shift every later second: stop here instead.
            other => {
                let why = match other {
                    Ok(Ok(v)) => format!("it answered {v:?}"),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                };
                eprintln!("flashgate simulate: INFO commandstats failed at {at_ms} ms, so the per-second figures end there: {why}");
                break;
            }
        }
    }
    out
}

impl Meter {
    /// Opens both connections to `origin`'s seed node (so that no reading pays for a connect),
    /// then starts the probe now and the sampler, whose first reading is at `t0_ms` (Unix ms);
    /// the probe reads the units of `sku` sold in `event`. The sampler stops by itself at
    /// second edge `max_edges` at the latest.
    pub fn start(
        origin: &RespConfig,
        event: &str,
        sku: &str,
        t0_ms: i64,
        max_edges: u64,
    ) -> Result<Meter, String> {
        let unreachable =
            |e: &dyn std::fmt::Display| format!("the origin probe cannot reach the origin: {e}");
        let open = || -> Result<BlockingConn, String> {
            let mut c = BlockingConn::open(origin).map_err(|e| unreachable(&e))?;
            c.call(&["PING".to_string()])
                .map_err(|e| unreachable(&e))?
                .map_err(|e| unreachable(&e))?;
            Ok(c)
        };
        let (p, s) = (open()?, open()?);
        let clock = Clock::new(t0_ms);
        let stop = Arc::new(AtomicBool::new(false));
        let last_edge = Arc::new(AtomicU64::new(max_edges));
        let hget = vec![
            "HGET".to_string(),
            EventKeys::new(event).meta,
            format!("sold:{sku}"),
        ];
        let spawn = |name: &str| std::thread::Builder::new().name(name.to_string());
        let (config, stop_p) = (origin.clone(), stop.clone());
        let probe = spawn("flashgate-probe")
            .spawn(move || probe(Some(p), config, clock, hget, stop_p))
            .map_err(|e| format!("cannot start the origin probe's thread: {e}"))?;
        let edges = last_edge.clone();
        let sampler = spawn("flashgate-sampler")
            .spawn(move || sampler(s, clock, edges))
            .map_err(|e| format!("cannot start the INFO sampler's thread: {e}"))?;
        Ok(Meter {
            stop,
            last_edge,
            probe,
            sampler,
        })
    }

    /// Reads up to second edge `last` (at most the `max_edges` it was started with), then
    /// stops both instruments.
    pub async fn finish(self, last: u64) -> Result<Measured, String> {
        self.last_edge.fetch_min(last, Ordering::Relaxed);
        self.sampler.thread().unpark();
        let Meter {
            stop,
            probe,
            sampler,
            ..
        } = self;
        tokio::task::spawn_blocking(move || {
            let commands = sampler
                .join()
                .map_err(|_| "the INFO sampler panicked".to_string())?;
            stop.store(true, Ordering::Relaxed);
            let (pings, sold, priority) = probe
                .join()
                .map_err(|_| "the origin probe panicked".to_string())?;
            Ok(Measured {
                commands,
                pings,
                sold,
                priority,
            })
        })
        .await
        .map_err(|e| format!("the instruments could not be joined: {e}"))?
    }
}

#[cfg(test)]
mod tests {
    use super::super::probe::read_command;
    use super::*;
    use std::io::{BufReader, Write};

    /// A RESP server on threads of its own that answers PING, HGET (7 units) and INFO (a
    /// commandstats line counting its PINGs) on every connection it accepts.
    fn fake_origin() -> RespConfig {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("redis://127.0.0.1:{}", l.local_addr().unwrap().port());
        std::thread::spawn(move || {
            let pings = Arc::new(AtomicU64::new(0));
            for s in l.incoming() {
                let (s, pings) = (s.unwrap(), pings.clone());
                std::thread::spawn(move || {
                    let mut r = BufReader::new(s.try_clone().unwrap());
                    let mut w = s;
                    while let Some(args) = read_command(&mut r) {
                        let reply = match args[0].to_ascii_uppercase().as_str() {
                            "PING" => {
                                pings.fetch_add(1, Ordering::Relaxed);
                                "+PONG\r\n".to_string()
                            }
                            "HGET" => "$1\r\n7\r\n".to_string(),
                            _ => {
                                let n = pings.load(Ordering::Relaxed);
                                let text =
                                    format!("# Commandstats\r\ncmdstat_ping:calls={n},usec=1\r\n");
                                format!("${}\r\n{text}\r\n", text.len())
                            }
                        };
                        if w.write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        RespConfig::from_url(&url, 1000).unwrap()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_instruments_keep_their_own_time_on_their_own_threads() {
        // The sale started 900 ms ago: the sampler reads edge 0 at once and edge 1 at +100 ms.
        let t0 = flashgate_core::model::now_ms() - 900;
        let m = Meter::start(&fake_origin(), "e", "A", t0, 5).unwrap();
        // This runtime's only thread is blocked meanwhile: the instruments must not need it.
        std::thread::sleep(Duration::from_millis(150));
        let m = m.finish(1).await.unwrap();

        assert_eq!(m.commands.len(), 2, "edges 0 and 1");
        assert!(
            (880..1000).contains(&m.commands[0].at_ms),
            "at once: {:?}",
            m.commands[0]
        );
        assert!(
            (1000..1100).contains(&m.commands[1].at_ms),
            "{:?}",
            m.commands[1]
        );
        // The two opening PINGs of `start` count too.
        assert!(m.commands[1].calls["ping"] > m.commands[0].calls["ping"]);

        let n = m.pings.len();
        assert!(
            (30..=80).contains(&n),
            "about one PING per {PING_MS} ms: {n}"
        );
        assert!(m.pings.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
        assert!(m.pings.iter().all(|p| (850..1200).contains(&p.at_ms)));
        let sold = m.sold.len();
        assert!(
            (n / 5).saturating_sub(2) <= sold && sold <= n / 5 + 2,
            "one HGET per {SOLD_MS} ms: {sold} for {n} PINGs"
        );
        assert!(m.sold.iter().all(|s| s.units == 7));
        assert_eq!(m.priority, raise_priority_in_a_thread());
    }

    /// What [`raise_priority`] gives a fresh thread here.
    fn raise_priority_in_a_thread() -> Priority {
        std::thread::spawn(raise_priority).join().unwrap()
    }
}
