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

#[cfg(test)]
mod tests {
    use super::*;

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
