//! The sale's clock. With `--time-scale K` the simulated sale runs K times slower than the
//! wall clock: every time the fleet reads (the `now` the isolates decide with, passed to the
//! origin's scripts) and every wait it makes is the sale's time, and a second of the sale
//! lasts K seconds of the machine's.
//!
//! Why: the fleet is simulated on one thread. A crowd of 100,000 first attempts within a
//! few hundred milliseconds is more than that thread can decide in time (thousands of
//! isolates have thousands of CPUs), so it would decide them late, and what the simulation
//! measured would be the machine, not the admission. In slow motion the fleet keeps up.
//! The origin is still the real one; it simply has K times as long per second of the sale,
//! which a budget of a few hundred attempts a second never needs. (Its latencies are
//! reported as measured, in real time.)
//!
//! The clock is process-wide: set once per run ([`set_scale`]) before anything reads it;
//! scale 1 is the wall clock itself.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// The wall clock, slowed by `scale` from the moment `anchor_ms` (Unix ms) on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Slow {
    pub scale: f64,
    pub anchor_ms: i64,
}

impl Slow {
    /// The sale's time at wall-clock time `real_ms`.
    pub fn at(&self, real_ms: i64) -> i64 {
        if self.scale == 1.0 {
            return real_ms;
        }
        self.anchor_ms + ((real_ms - self.anchor_ms) as f64 / self.scale).floor() as i64
    }

    /// How long `ms` of the sale's time lasts on the wall clock.
    pub fn span(&self, ms: f64) -> Duration {
        Duration::from_secs_f64((ms * self.scale).max(0.0) / 1000.0)
    }
}

static SCALE_BITS: AtomicU64 = AtomicU64::new(0x3FF0_0000_0000_0000); // 1.0
static ANCHOR_MS: AtomicI64 = AtomicI64::new(0);

/// Slows the clock by `scale` (at least 1) from now on.
pub fn set_scale(scale: f64) {
    let scale = if scale.is_finite() {
        scale.max(1.0)
    } else {
        1.0
    };
    ANCHOR_MS.store(flashgate_core::model::now_ms(), Ordering::SeqCst);
    SCALE_BITS.store(scale.to_bits(), Ordering::SeqCst);
}

/// The clock as set.
pub fn slow() -> Slow {
    Slow {
        scale: f64::from_bits(SCALE_BITS.load(Ordering::SeqCst)),
        anchor_ms: ANCHOR_MS.load(Ordering::SeqCst),
    }
}

/// The sale's time now, in Unix ms.
pub fn now_ms() -> i64 {
    slow().at(flashgate_core::model::now_ms())
}

/// How long `ms` of the sale's time lasts on the wall clock.
pub fn span(ms: f64) -> Duration {
    slow().span(ms)
}

/// Waits `ms` of the sale's time (on a tokio runtime).
pub async fn sleep(ms: u64) {
    tokio::time::sleep(span(ms as f64)).await;
}

/// Waits until the sale's time `ms` (Unix ms).
pub async fn sleep_until_ms(ms: i64) {
    let wait = ms - now_ms();
    if wait > 0 {
        sleep(wait as u64).await;
    }
}

/// `--time-scale`: a factor, or `auto` (the default): as slow as [`auto_scale`] says the
/// crowd needs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scale {
    Auto,
    Fixed(f64),
}

impl std::str::FromStr for Scale {
    type Err = String;

    fn from_str(s: &str) -> Result<Scale, String> {
        if s == "auto" {
            return Ok(Scale::Auto);
        }
        match s.parse::<f64>() {
            Ok(k) if (1.0..=MAX_SCALE).contains(&k) => Ok(Scale::Fixed(k)),
            _ => Err(format!("must be auto or a number from 1 to {MAX_SCALE}")),
        }
    }
}

/// The slowest clock a run may ask for.
pub const MAX_SCALE: f64 = 100.0;
/// Requests a second of the sale's time that the fleet's one thread decides on time, beside
/// a redis-server, on the 2-core machines this was measured on: at ×4 (up to 1,000
/// isolates) and ×8 (3,000 and 10,000) the issue's crowd of 100,000 intents was decided
/// within 1–5 ms of its plan at p99, and at ×1 0.4–0.7 s late at p50.
pub const KEEPS_UP_PER_S: f64 = 90_000.0;
/// While the crowd waits, a patient shopper asks about twice a second (a `busy` says come
/// back in 400–650 ms) ...
const WAITING_ASKS_PER_S: f64 = 2.0;
/// ... and every isolate that gets a request reports to the line every tick (four a second),
/// each report as much work for the thread as about this many requests (a view.lua round
/// trip and the snapshot it returns).
const REPORT_COST: f64 = 13.0;

/// The time scale `--time-scale auto` picks for a crowd of `intents` arriving with an
/// exponential curve of mean `arrival_ms` at `isolates` isolates: the thread's peak load
/// (first attempts at the curve's peak, the waiting crowd's retries, the isolates' reports)
/// over what it keeps up with, rounded up; 1 for a crowd it decides in real time.
pub fn auto_scale(intents: u64, arrival_ms: u64, isolates: usize) -> f64 {
    let arriving = intents as f64 * 1000.0 / (arrival_ms.max(100) as f64);
    let waiting = intents as f64 * WAITING_ASKS_PER_S;
    let ticks = (1000 / flashgate_core::threshold::ADVANCE_MS) as f64;
    let reports = (isolates as f64 * ticks).min(arriving + waiting) * REPORT_COST;
    ((arriving + waiting + reports) / KEEPS_UP_PER_S)
        .ceil()
        .clamp(1.0, MAX_SCALE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_runs_the_issues_crowd_slow_enough_and_a_small_one_in_real_time() {
        // The issue's crowd: 100,000 intents, mean 300 ms.
        let issue = |isolates| auto_scale(100_000, 300, isolates);
        assert_eq!(
            [issue(100), issue(1000), issue(3000), issue(10_000)],
            [6.0, 7.0, 8.0, 12.0]
        );
        // The tests' and the bench smoke's crowds run on the wall clock.
        assert_eq!(auto_scale(600, 300, 20), 1.0);
        assert_eq!(auto_scale(4000, 300, 10), 1.0);
        // A small crowd at many isolates: only isolates with requests report.
        assert_eq!(auto_scale(600, 300, 3000), 1.0);
        // All at once: the peak counts as a tenth of a second.
        assert_eq!(auto_scale(100_000, 0, 100), auto_scale(100_000, 100, 100));
        assert_eq!(auto_scale(100_000_000, 300, 100_000), MAX_SCALE);
    }

    #[test]
    fn a_scale_is_auto_or_a_factor_within_bounds() {
        assert_eq!("auto".parse(), Ok(Scale::Auto));
        assert_eq!("8".parse(), Ok(Scale::Fixed(8.0)));
        assert_eq!("1.5".parse(), Ok(Scale::Fixed(1.5)));
        for bad in ["0.5", "101", "fast", "", "NaN"] {
            assert!(bad.parse::<Scale>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_slow_clock_runs_scale_times_slower_from_its_anchor() {
        let s = Slow {
            scale: 4.0,
            anchor_ms: 1_000_000,
        };
        assert_eq!(s.at(1_000_000), 1_000_000);
        assert_eq!(s.at(1_004_000), 1_001_000);
        assert_eq!(s.at(1_000_003), 1_000_000, "whole ms, rounded down");
        assert_eq!(s.span(250.0), Duration::from_millis(1000));
        let wall = Slow { scale: 1.0, ..s };
        assert_eq!(wall.at(1_234_567), 1_234_567);
        assert_eq!(wall.span(250.0), Duration::from_millis(250));
    }
}
