//! Turning what was measured into figures, per second of the sale and for the whole run.
//! Pure: the readings come in as plain data, all times in milliseconds after the start.
//!
//! How each figure is measured:
//! - `origin_attempts` (per second): purchase attempts that reached the origin, from two
//!   `INFO commandstats` readings at the second's edges: Δ`evalsha` − Δ`exists`. Every purchase
//!   is one EVALSHA of purchase.lua, which issues no EXISTS; every snapshot read is one EVALSHA
//!   of view.lua, which issues exactly one EXISTS (Redis counts a script's own commands). The
//!   simulator's INFO is left out ([`commandstats_delta`]) and its probes are PING and HGET.
//! - `origin_p50_ms` / `origin_p99_ms`: nearest-rank percentiles of the round trips of the
//!   PING probe sent in that second (one every 2 ms, on a connection and an OS thread of its
//!   own; see `meter`); `idle_*` the same before the fleet warms up, `sale_*` over every
//!   second reported.
//! - `sold`: `HGET fg:{E}:sold <sku>` by the same probe, the last reading in the second.
//! - `sellout_ms`: the first probe reading of `sold ≥ stock`, at the midpoint of its HGET
//!   (so within one reading period, 10 ms, of the moment the last unit was taken).
//! - `forwarding_isolates_after_sellout`: distinct isolates that forwarded a purchase of the
//!   sku after `sellout_ms` in that second, timed when each isolate called its origin (its
//!   decision to forward), as noted at that boundary.
//! - `last_forward_after_sellout_ms`: how long after `sellout_ms` the last purchase of the
//!   sku was forwarded, timed as above.
//! - `reached_origin_pct`: the sum of `origin_attempts` over the attempts the crowd sent to
//!   isolates, retries included.
//! - `late_p50_ms` / `late_p99_ms`: how long after its planned arrival each intent's first
//!   attempt reached its isolate. The simulator's own health, not the origin's: when it is
//!   large, one thread could not keep up with the fleet and the crowd arrived gentler than
//!   planned.
//! - `thread_late_p99_ms` / `thread_late_max_ms`: how late the fleet's thread woke for a
//!   timer every 10 ms over the crowd's first two seconds: the lag every task on it shares.
//!   First attempts much later than that waited for something in the fleet.

use crate::load::{commandstats_delta, percentile};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// One `INFO commandstats` reading: command → calls.
#[derive(Clone, Debug, PartialEq)]
pub struct CommandReading {
    pub at_ms: i64,
    pub calls: BTreeMap<String, u64>,
}

/// One PING round trip of the probe.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ping {
    pub at_ms: i64,
    pub micros: u64,
}

/// One reading of the units sold.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sold {
    pub at_ms: i64,
    pub units: u64,
}

/// A purchase an isolate forwarded, as its origin boundary saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct Forward {
    /// When the isolate called its origin.
    pub at_ms: i64,
    pub isolate: usize,
    pub skus: Vec<String>,
    /// Whether a connection sent it (else none was free in time).
    pub sent: bool,
}

/// One second of the sale, `[t, t + 1)` seconds after the start.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Second {
    pub t: u64,
    /// Attempts the crowd sent to isolates (retries included).
    pub sent: u64,
    pub origin_attempts: u64,
    pub origin_p50_ms: f64,
    pub origin_p99_ms: f64,
    pub sold: u64,
    /// `None` before the sellout.
    pub forwarding_isolates_after_sellout: Option<usize>,
}

/// Purchase attempts the origin ran between two readings.
pub fn purchase_calls(before: &CommandReading, after: &CommandReading) -> u64 {
    let d = commandstats_delta(&before.calls, &after.calls);
    let get = |k: &str| d.get(k).copied().unwrap_or(0);
    get("evalsha").saturating_sub(get("exists"))
}

/// p50 and p99 of samples in microseconds, in ms; zeros when there are none.
pub fn p50_p99_ms(mut us: Vec<u64>) -> (f64, f64) {
    us.sort_unstable();
    let ms = |p: f64| percentile(&us, p) as f64 / 1000.0;
    (ms(50.0), ms(99.0))
}

/// p50 and p99 of the pings in `[from, to)`, in ms.
pub fn ping_percentiles(pings: &[Ping], from: i64, to: i64) -> (f64, f64) {
    p50_p99_ms(
        pings
            .iter()
            .filter(|p| (from..to).contains(&p.at_ms))
            .map(|p| p.micros)
            .collect(),
    )
}

/// When `sold` first read `stock` or more, from the start on.
pub fn sellout_ms(sold: &[Sold], stock: u64) -> Option<i64> {
    sold.iter()
        .find(|s| s.at_ms >= 0 && s.units >= stock)
        .map(|s| s.at_ms)
}

/// Distinct isolates that sent a purchase of `sku` in `[from, to)`.
pub fn forwarding_isolates(forwards: &[Forward], sku: &str, from: i64, to: i64) -> usize {
    forwards
        .iter()
        .filter(|f| (from..to).contains(&f.at_ms) && f.skus.iter().any(|s| s == sku))
        .map(|f| f.isolate)
        .collect::<BTreeSet<_>>()
        .len()
}

/// How long after `sellout` the last purchase of `sku` was forwarded (0 when right at it);
/// `None` when none was forwarded from the sellout on.
pub fn last_forward_after(forwards: &[Forward], sku: &str, sellout: i64) -> Option<i64> {
    forwards
        .iter()
        .filter(|f| f.at_ms >= sellout && f.skus.iter().any(|s| s == sku))
        .map(|f| f.at_ms - sellout)
        .max()
}

/// What the run saw, as measured.
pub struct Readings<'a> {
    /// One reading at each second's edge from the start: `commands[k]` at `k` s.
    pub commands: &'a [CommandReading],
    pub pings: &'a [Ping],
    pub sold: &'a [Sold],
    pub forwards: &'a [Forward],
    /// Attempts sent to isolates in each second from the start.
    pub sent: &'a [u64],
    /// The units sold before the start.
    pub sold_before: u64,
}

/// The per-second table: one row for each pair of consecutive command readings.
pub fn per_second(r: &Readings, sku: &str, sellout: Option<i64>) -> Vec<Second> {
    r.commands
        .windows(2)
        .enumerate()
        .map(|(k, w)| {
            let (from, to) = (k as i64 * 1000, (k as i64 + 1) * 1000);
            let (p50, p99) = ping_percentiles(r.pings, from, to);
            let sold = r
                .sold
                .iter()
                .take_while(|s| s.at_ms < to)
                .last()
                .map_or(r.sold_before, |s| s.units);
            Second {
                t: k as u64,
                sent: r.sent.get(k).copied().unwrap_or(0),
                origin_attempts: purchase_calls(&w[0], &w[1]),
                origin_p50_ms: p50,
                origin_p99_ms: p99,
                sold,
                forwarding_isolates_after_sellout: sellout
                    .filter(|&s| s < to)
                    .map(|s| forwarding_isolates(r.forwards, sku, s.max(from), to)),
            }
        })
        .collect()
}

/// `part` as a percentage of `whole` (0 when `whole` is 0).
pub fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(at_ms: i64, evalsha: u64, exists: u64, info: u64) -> CommandReading {
        let calls = [("evalsha", evalsha), ("exists", exists), ("info", info)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        CommandReading { at_ms, calls }
    }

    fn fwd(at_ms: i64, isolate: usize, sku: &str) -> Forward {
        Forward {
            at_ms,
            isolate,
            skus: vec![sku.to_string()],
            sent: true,
        }
    }

    #[test]
    fn purchases_are_evalsha_less_view_reads() {
        let a = reading(0, 100, 40, 1);
        // 70 EVALSHA: 50 purchases and 20 snapshot reads (20 EXISTS); INFO is ours.
        let b = reading(1000, 170, 60, 2);
        assert_eq!(purchase_calls(&a, &b), 50);
        assert_eq!(
            purchase_calls(&b, &a),
            0,
            "a reset counter never goes negative"
        );
        let no_exists = CommandReading {
            at_ms: 0,
            calls: BTreeMap::from([("evalsha".to_string(), 5)]),
        };
        assert_eq!(purchase_calls(&no_exists, &reading(1000, 9, 0, 0)), 4);
    }

    #[test]
    fn ping_percentiles_by_window() {
        let pings: Vec<Ping> = (0..200)
            .map(|i| Ping {
                at_ms: i * 10,
                micros: if i < 100 { 100 + i as u64 } else { 5000 },
            })
            .collect();
        assert_eq!(ping_percentiles(&pings, 0, 1000), (0.149, 0.198));
        assert_eq!(ping_percentiles(&pings, 1000, 2000), (5.0, 5.0));
        assert_eq!(ping_percentiles(&pings, 2000, 3000), (0.0, 0.0));
    }

    #[test]
    fn sellout_is_the_first_reading_at_stock_after_the_start() {
        let s = |at_ms, units| Sold { at_ms, units };
        let sold = [s(-500, 50), s(5, 0), s(15, 30), s(25, 50), s(35, 50)];
        assert_eq!(
            sellout_ms(&sold, 50),
            Some(25),
            "the reading before the start is ignored"
        );
        assert_eq!(sellout_ms(&sold, 51), None);
        assert_eq!(
            sellout_ms(&[s(0, 60)], 50),
            Some(0),
            "oversold still sold out"
        );
    }

    #[test]
    fn isolates_forwarding_are_counted_once_per_window_and_sku() {
        let f = [
            fwd(10, 1, "A"),
            fwd(20, 1, "A"),
            fwd(30, 2, "A"),
            fwd(40, 3, "B"),
            fwd(1500, 4, "A"),
        ];
        assert_eq!(forwarding_isolates(&f, "A", 0, 1000), 2);
        assert_eq!(forwarding_isolates(&f, "A", 25, 1000), 1);
        assert_eq!(forwarding_isolates(&f, "B", 0, 2000), 1);
        assert_eq!(forwarding_isolates(&f, "A", 1000, 2000), 1);
    }

    #[test]
    fn the_last_forward_after_the_sellout() {
        // (ms, isolate, sku), out of time order as threads report them.
        let f = [(10, 1, "A"), (900, 2, "A"), (1700, 3, "B"), (400, 4, "A")]
            .map(|(ms, isolate, sku)| fwd(ms, isolate, sku));
        assert_eq!(last_forward_after(&f, "A", 300), Some(600));
        assert_eq!(last_forward_after(&f, "A", 900), Some(0));
        assert_eq!(last_forward_after(&f, "A", 901), None);
        assert_eq!(last_forward_after(&f, "B", 0), Some(1700));
    }

    #[test]
    fn per_second_rows() {
        let commands = [
            reading(0, 10, 10, 1),
            reading(1000, 1010, 110, 2),
            reading(2000, 1060, 160, 3),
            reading(3000, 1060, 160, 4),
        ];
        let pings = [
            Ping {
                at_ms: -300,
                micros: 90_000,
            },
            Ping {
                at_ms: 100,
                micros: 2000,
            },
            Ping {
                at_ms: 1100,
                micros: 500,
            },
        ];
        let sold = [
            Sold {
                at_ms: 100,
                units: 20,
            },
            Sold {
                at_ms: 400,
                units: 50,
            },
        ];
        let forwards = [
            fwd(300, 1, "A"),
            fwd(450, 2, "A"),
            fwd(460, 3, "A"),
            fwd(1200, 2, "A"),
        ];
        let r = Readings {
            commands: &commands,
            pings: &pings,
            sold: &sold,
            forwards: &forwards,
            sent: &[5000, 40],
            sold_before: 0,
        };
        let rows = per_second(&r, "A", sellout_ms(&sold, 50));
        assert_eq!(
            rows,
            vec![
                Second {
                    t: 0,
                    sent: 5000,
                    origin_attempts: 900,
                    origin_p50_ms: 2.0,
                    origin_p99_ms: 2.0,
                    sold: 50,
                    forwarding_isolates_after_sellout: Some(2),
                },
                Second {
                    t: 1,
                    sent: 40,
                    origin_attempts: 0,
                    origin_p50_ms: 0.5,
                    origin_p99_ms: 0.5,
                    sold: 50,
                    forwarding_isolates_after_sellout: Some(1),
                },
                Second {
                    t: 2,
                    sent: 0,
                    origin_attempts: 0,
                    origin_p50_ms: 0.0,
                    origin_p99_ms: 0.0,
                    sold: 50,
                    forwarding_isolates_after_sellout: Some(0),
                },
            ]
        );
        let never = per_second(&r, "A", None);
        assert!(never
            .iter()
            .all(|s| s.forwarding_isolates_after_sellout.is_none()));
        let before = Readings {
            sold: &[],
            sold_before: 7,
            ..r
        };
        assert!(per_second(&before, "A", None).iter().all(|s| s.sold == 7));
        assert!(per_second(
            &Readings {
                commands: &commands[..1],
                ..r
            },
            "A",
            None
        )
        .is_empty());
    }

    #[test]
    fn percentiles_in_ms() {
        assert_eq!(p50_p99_ms(vec![3000, 1000, 2000]), (2.0, 3.0));
        assert_eq!(p50_p99_ms(vec![]), (0.0, 0.0));
    }

    #[test]
    fn percentages() {
        assert_eq!(pct(1, 4), 25.0);
        assert_eq!(pct(3, 0), 0.0);
    }
}
