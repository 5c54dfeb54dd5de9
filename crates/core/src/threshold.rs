//! The line's threshold: how far the line has advanced, the same for the whole fleet, as
//! plain data with time passed in.
//!
//! A place ([`PlaceKey`]) is a point on the line, `rank + fraction` ([`position`]). A
//! shopper is admitted (in `fairness = "line"`) iff their position is below the threshold.
//! The threshold is a [`LineState`]: a position at a moment and a speed, so every isolate
//! extrapolates the same threshold between refreshes; at most [`HORIZON_MS`] ahead, so an
//! isolate with an old state cannot run away with it.
//!
//! Who advances it: every [`ADVANCE_MS`], the first isolate whose snapshot read (view.lua)
//! claims that tick computes the next state with [`advance`] from the figures the snapshot
//! carries and writes it back (line.lua). The origin keeps each second's highest reachable
//! threshold (bounded, [`HISTORY_SECS`]) so that `flashgate event verify-draw` can check
//! every order against the line.
//!
//! How fast: the line admits shoppers, not attempts. The target is `allowed` attempts a
//! second at the origin (the budget, or a small multiple of the stock left). The controller
//! turns that into shoppers a second with `gain`, the attempts an admitted shopper sends the
//! origin (learnt from what the origin actually counted, per second), and into a speed on the
//! line with the entrants per window (sampled by the isolates, deduplicated at the origin).
//! The threshold never passes the current second's window: nobody is admitted before they
//! arrived.

use crate::fleet::{MIN_ALLOWED, STOCK_MULTIPLE};
use crate::line::{PlaceKey, Window};
use std::collections::{BTreeMap, HashMap};

/// How often the line advances at the origin.
pub const ADVANCE_MS: i64 = 250;
/// The line starts this far ahead (in seconds of its rate): shoppers admitted come back
/// within a Retry-After, so the origin's first second is not spent waiting for them.
pub const LEAD_SECS: f64 = 0.5;
/// The line may be open (everyone who has arrived admitted) only this long after the start.
pub const OPEN_AFTER_MS: i64 = 5000;
/// How far ahead of its state an isolate may extrapolate the threshold.
pub const HORIZON_MS: i64 = 2000;
/// The per-second threshold history kept at the origin for `verify-draw`: six hours.
pub const HISTORY_SECS: i64 = 6 * 3600;
/// One user in this many is sampled to count the entrants of each window.
pub const SAMPLE: u64 = 4;
/// The share of the fleet that must have reported in a second before the line enters that
/// second's window: until then nobody knows how many arrived in it.
pub const MIN_COVERAGE: f64 = 0.2;
/// Bounds of the attempts an admitted shopper sends the origin, as learnt: shoppers who left
/// send none (the line then runs faster, at most twice its budget in shoppers), several tabs
/// and several intents send more.
pub const MIN_GAIN: f64 = 0.7;
/// Bounds of the within-second correction of the rate.
pub const MIN_PACE: f64 = 0.25;
pub const MAX_PACE: f64 = 1.25;
/// How much of the gain it had each advance keeps (the rest is the latest observation).
pub const GAIN_SMOOTHING: f64 = 0.6;
/// The gain is learnt once this many shoppers were admitted.
pub const MIN_LEARNT: f64 = 30.0;
pub const MAX_GAIN: f64 = 4.0;
/// The most sightings one isolate reports with one refresh.
pub const MAX_SIGHTINGS: usize = 400;

/// The window rank of an arrival at `now` in a sale that has started: at least 1, as a sale
/// the operator started before `starts_at` (`event start`) takes late entries from then on
/// (`entry::window_at`), all in window 1 until `starts_at` ([`Window::rank`] clamps). The line
/// only advances, and admits, in a started sale.
pub fn arrived_rank(now_ms: i64, starts_at_ms: i64) -> u64 {
    Window::Arrived(now_ms.div_euclid(1000)).rank(starts_at_ms.div_euclid(1000))
}

/// A place as a point on the line.
pub fn position(key: PlaceKey) -> f64 {
    key.rank as f64 + key.fraction()
}

/// Whether `user` is one of the sampled users whose sightings count the entrants.
pub fn sampled(event: &str, user: &str) -> bool {
    // FNV-1a: stable, cheap, and unrelated to the secret draw.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in event.bytes().chain([0]).chain(user.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h.is_multiple_of(SAMPLE)
}

/// The line's state, as stored in the line hash (`LineState::to_fields`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LineState {
    /// When this state was made (Unix ms), and the threshold then.
    pub at_ms: i64,
    pub pos: f64,
    /// Positions per second from `at_ms` on.
    pub speed: f64,
    /// Shoppers admitted per second (for wait estimates).
    pub rate: f64,
    /// Origin attempts per admitted shopper, learnt.
    pub gain: f64,
    /// The threshold at the start of each of the last seconds: `marks[0]` at the start of
    /// the second of `at_ms`, `marks[1]` a second before, ...
    pub marks: [f64; 5],
    /// The line had caught up with the arrivals (few were waiting): shoppers are admitted as
    /// they arrive until the next advance.
    pub open: bool,
    /// Where the line started, and the attempts the origin counted in each of the last
    /// three whole seconds, the latest first, through Unix second `counted_sec`.
    pub pos0: f64,
    pub origin_recent: [u64; 3],
    pub counted_sec: i64,
}

impl LineState {
    /// The threshold at `now`.
    pub fn threshold_at(&self, now_ms: i64) -> f64 {
        let dt = (now_ms - self.at_ms).clamp(0, HORIZON_MS) as f64 / 1000.0;
        self.pos + self.speed * dt
    }

    /// The threshold an isolate applies at `now` for a sale that starts at `starts_at_ms`:
    /// [`LineState::threshold_at`], or everyone who has arrived while the line is open.
    pub fn admits_below(&self, now_ms: i64, starts_at_ms: i64) -> f64 {
        let t = self.threshold_at(now_ms);
        if self.open {
            // Arrivals up to a second after the state, no later: a surge after that waits for
            // the next advance.
            let until = now_ms.min(self.at_ms + 1000);
            t.max(arrived_rank(until, starts_at_ms) as f64 + 1.0)
        } else {
            t
        }
    }

    /// The highest threshold any isolate can use with this state, up to the second `sec`
    /// (Unix) for an open line.
    pub fn reach(&self) -> f64 {
        self.threshold_at(self.at_ms + HORIZON_MS)
    }

    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        let m = &self.marks;
        vec![
            ("at", self.at_ms.to_string()),
            ("pos", format!("{:.12}", self.pos)),
            ("speed", format!("{:.12}", self.speed)),
            ("rate", format!("{:.3}", self.rate)),
            ("gain", format!("{:.4}", self.gain)),
            (
                "marks",
                format!(
                    "{:.12} {:.12} {:.12} {:.12} {:.12}",
                    m[0], m[1], m[2], m[3], m[4]
                ),
            ),
            ("open", u8::from(self.open).to_string()),
            ("pos0", format!("{:.12}", self.pos0)),
            (
                "origin_recent",
                format!(
                    "{} {} {}",
                    self.origin_recent[0], self.origin_recent[1], self.origin_recent[2]
                ),
            ),
            ("counted_sec", self.counted_sec.to_string()),
        ]
    }

    /// The state in the line hash's fields; `None` before the first advance.
    pub fn from_fields(f: &HashMap<String, String>) -> Option<LineState> {
        let num = |k: &str| f.get(k)?.parse::<f64>().ok().filter(|x| x.is_finite());
        let mut marks = [0.0; 5];
        let parsed: Vec<f64> = (f.get("marks")?.split(' '))
            .filter_map(|x| x.parse().ok())
            .collect();
        if parsed.len() != 5 {
            return None;
        }
        marks.copy_from_slice(&parsed);
        let mut origin_recent = [0u64; 3];
        let recent: Vec<u64> = (f.get("origin_recent").map_or("", String::as_str).split(' '))
            .filter_map(|x| x.parse().ok())
            .collect();
        if recent.len() == 3 {
            origin_recent.copy_from_slice(&recent);
        }
        Some(LineState {
            at_ms: f.get("at")?.parse().ok()?,
            pos: num("pos")?,
            speed: num("speed")?,
            rate: num("rate")?,
            gain: num("gain")?,
            marks,
            open: f.get("open").is_some_and(|v| v == "1"),
            pos0: num("pos0").unwrap_or(0.0),
            origin_recent,
            counted_sec: f
                .get("counted_sec")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        })
    }
}

// Parsed from finite numbers only (`from_fields`), so equality is an equivalence.
impl Eq for LineState {}
impl Eq for Entrants {}

/// Estimated entrants per window rank (sampled sightings × [`SAMPLE`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Entrants(pub BTreeMap<u64, f64>);

impl Entrants {
    /// From the line hash's `n:<rank>` fields (sampled counts).
    pub fn from_fields(f: &HashMap<String, String>) -> Entrants {
        Entrants(
            f.iter()
                .filter_map(|(k, v)| {
                    let rank = k.strip_prefix("n:")?.parse().ok()?;
                    Some((rank, v.parse::<f64>().ok()? * SAMPLE as f64))
                })
                .collect(),
        )
    }

    /// Shoppers per unit of position in window `rank` (at least one: an empty window is
    /// crossed quickly, not instantly).
    pub fn density(&self, rank: u64) -> f64 {
        self.0.get(&rank).copied().unwrap_or(0.0).max(1.0)
    }

    /// Every entrant counted so far.
    pub fn total(&self) -> f64 {
        self.0.values().sum()
    }

    /// Entrants of window `rank` 0 (before the start) and of the later windows.
    pub fn early_late(&self) -> (f64, f64) {
        let early = self.0.get(&0).copied().unwrap_or(0.0);
        (early, self.total() - early)
    }

    /// The entrants counted below position `t` (a window's entrants spread evenly over it):
    /// the shoppers a threshold at `t` has admitted. Unlike [`Entrants::between`], an empty
    /// window counts nobody.
    pub fn below(&self, t: f64) -> f64 {
        (self.0.iter())
            .map(|(&rank, &n)| n * (t - rank as f64).clamp(0.0, 1.0))
            .sum()
    }

    /// Shoppers between positions `a` and `b` (`a ≤ b`).
    pub fn between(&self, a: f64, b: f64) -> f64 {
        let (mut x, mut sum) = (a.max(0.0), 0.0);
        while x < b {
            let rank = x.floor();
            let end = (rank + 1.0).min(b);
            sum += (end - x) * self.density(rank as u64);
            x = end;
        }
        sum
    }

    /// The position `shoppers` after `from`, no further than `limit`.
    pub fn advance_by(&self, from: f64, mut shoppers: f64, limit: f64) -> f64 {
        let mut x = from.max(0.0);
        while shoppers > 0.0 && x < limit {
            let rank = x.floor();
            let d = self.density(rank as u64);
            let room = ((rank + 1.0).min(limit) - x) * d;
            if shoppers <= room {
                return x + shoppers / d;
            }
            shoppers -= room;
            x = (rank + 1.0).min(limit);
        }
        x.min(limit)
    }
}

/// What [`advance`] reads.
#[derive(Clone, Debug)]
pub struct Inputs<'a> {
    pub now_ms: i64,
    pub starts_at_ms: i64,
    pub budget: u32,
    /// Units left over all items.
    pub remaining: u64,
    pub entrants: &'a Entrants,
    /// Purchase attempts the origin counted in the last whole second (`None`: unknown).
    pub origin_last_second: Option<u64>,
    /// Purchase attempts the origin counted so far in the current second.
    pub origin_this_second: Option<u64>,
    /// The share of the fleet that has reported since the current second began (0 to 1):
    /// how much of the current window the entrants count has seen.
    pub coverage: f64,
}

/// Attempts a second the origin should see: the budget, or a small multiple of the stock left.
pub fn allowed(budget: u32, remaining: u64) -> f64 {
    f64::from(budget).min((STOCK_MULTIPLE * remaining as f64).max(MIN_ALLOWED))
}

/// The next state of the line at `now` (the first when `prev` is `None`).
pub fn advance(prev: Option<&LineState>, i: &Inputs<'_>) -> LineState {
    let now = i.now_ms;
    let sec_ms = now.div_euclid(1000) * 1000;
    // Nobody is admitted before they arrived: the line stops at the end of this second's window.
    let here = arrived_rank(now, i.starts_at_ms);
    // This second's window is entered only once enough of the fleet has reported from it.
    let counted = i.coverage >= MIN_COVERAGE;
    let limit = here as f64 + if counted { 1.0 } else { 0.0 };
    let pos = prev.map_or(0.0, |p| p.threshold_at(now));
    // The threshold at the start of this second and the three before.
    let marks = match prev {
        None => [pos; 5],
        Some(p) => {
            let seconds = (sec_ms - p.at_ms.div_euclid(1000) * 1000) / 1000;
            let mut m = p.marks;
            for _ in 0..seconds.clamp(0, 5) {
                m = [0.0, m[0], m[1], m[2], m[3]];
                m[0] = p.threshold_at(sec_ms).max(m[1]);
            }
            m
        }
    };
    // The open windows (this second's and the last) are not fully counted yet: scale what the
    // fleet has reported by how much of it has, and assume this second's crowd is half in.
    let mut entrants = i.entrants.clone();
    let cov = i.coverage.clamp(0.1, 1.0);
    if here >= 1 {
        if let Some(n) = entrants.0.get_mut(&here) {
            *n *= 2.0 / cov;
        }
        if let Some(n) = entrants.0.get_mut(&(here - 1)).filter(|_| here >= 2) {
            *n /= 0.5 + 0.5 * cov;
        }
    }
    // Gain: the origin's attempts per admitted shopper over the last three whole seconds,
    // against the shoppers admitted over the three seconds half a second to a second
    // earlier (they come back within a Retry-After).
    let sec = now.div_euclid(1000);
    let (mut recent, mut counted_sec) =
        prev.map_or(([0; 3], sec - 1), |p| (p.origin_recent, p.counted_sec));
    if let Some(f) = i.origin_last_second.filter(|_| counted_sec < sec - 1) {
        let gap = (sec - 1 - counted_sec).clamp(1, 3) as usize;
        for _ in 1..gap {
            recent = [0, recent[0], recent[1]];
        }
        recent = [f, recent[0], recent[1]];
        counted_sec = sec - 1;
    }
    let mut gain = prev.map_or(1.0, |p| p.gain);
    if prev.is_some() && counted_sec == sec - 1 {
        let f3: u64 = recent.iter().sum();
        let a3 =
            0.5 * (entrants.between(marks[4], marks[1]) + entrants.between(marks[3], marks[0]));
        if a3 >= MIN_LEARNT && f3 > 0 {
            let observed = (f3 as f64 / a3).clamp(MIN_GAIN, MAX_GAIN);
            gain = (GAIN_SMOOTHING * gain + (1.0 - GAIN_SMOOTHING) * observed)
                .clamp(MIN_GAIN, MAX_GAIN);
        }
    }
    let target = if i.remaining == 0 {
        0.0
    } else {
        allowed(i.budget, i.remaining)
    };
    // Within the second: the origin's count so far against the budget's pro rata share
    // brakes (or spurs) the line at once, before the gain has learnt anything.
    let into = (now - sec_ms) as f64 / 1000.0;
    let pace = match i.origin_this_second {
        Some(c) if into >= 0.25 && target > 0.0 => {
            (target * into / (c as f64).max(1.0)).clamp(MIN_PACE, MAX_PACE)
        }
        _ => 1.0,
    };
    let rate = target / gain * pace;
    let (pos, pos0) = match prev {
        None => {
            let p = entrants.advance_by(pos, rate * LEAD_SECS, limit);
            (p, p)
        }
        Some(prev) => (pos, prev.pos0),
    };
    let ahead = entrants.advance_by(pos, rate, limit);
    let waiting_here = entrants.0.get(&here).copied().unwrap_or(0.0);
    LineState {
        at_ms: now,
        pos,
        speed: (ahead - pos).max(0.0),
        rate,
        gain,
        marks,
        // Open only in a sale that has run a while, with most of the fleet heard from this
        // second and few arriving: a crowd still on its way (the first seconds) never finds
        // the line open.
        open: now - i.starts_at_ms >= OPEN_AFTER_MS
            && i.coverage >= 0.5
            && rate > 0.0
            && ahead >= limit
            && waiting_here < rate / 4.0,
        pos0,
        origin_recent: recent,
        counted_sec,
    }
}

/// Shoppers ahead of `place` at `now` by `state` and `entrants`, and the wait in seconds.
pub fn ahead(state: &LineState, entrants: &Entrants, place: f64, now_ms: i64) -> (u64, f64) {
    let t = state.threshold_at(now_ms);
    let n = entrants.between(t, place).max(0.0);
    let wait = if state.rate > 0.0 {
        n / state.rate
    } else {
        f64::INFINITY
    };
    (n.round() as u64, wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: i64 = 1_800_000_000_000;

    fn crowd(n: &[(u64, f64)]) -> Entrants {
        Entrants(n.iter().copied().collect())
    }

    fn inputs(e: &Entrants, now: i64, origin: Option<u64>) -> Inputs<'_> {
        Inputs {
            now_ms: now,
            starts_at_ms: START,
            budget: 400,
            remaining: 3000,
            entrants: e,
            origin_last_second: origin,
            origin_this_second: None,
            coverage: 1.0,
        }
    }

    #[test]
    fn the_line_admits_the_budget_in_shoppers_per_second() {
        // 40,000 early entrants: 400 a second is 1% of the early window a second.
        let e = crowd(&[(0, 40_000.0)]);
        let s = advance(None, &inputs(&e, START + 10, None));
        // It starts half a second (200 shoppers) in, so the first admitted are back in time.
        assert!((s.pos - 0.005).abs() < 1e-12, "{}", s.pos);
        assert!((s.speed - 0.01).abs() < 1e-9, "{}", s.speed);
        assert!((s.threshold_at(START + 1010) - 0.015).abs() < 1e-9);
        assert!(!s.open, "a crowd is waiting");
        // Extrapolation stops at the horizon.
        assert_eq!(s.threshold_at(START + 60_000), s.reach());
        let (place, wait) = ahead(&s, &e, 0.02, START + 10);
        assert_eq!(place, 600);
        assert!((wait - 1.5).abs() < 1e-9);
    }

    #[test]
    fn the_line_never_passes_the_current_second() {
        // Nobody waiting: the line runs to the end of this second's window and stops there.
        let e = crowd(&[]);
        let s = advance(None, &inputs(&e, START + 2500, None));
        assert!(s.reach() <= 4.0, "{}", s.reach());
        let again = advance(Some(&s), &inputs(&e, START + 2750, None));
        assert!(again.pos <= 4.0 && again.pos >= s.pos);
        // Before a fifth of the fleet has reported in this second, nobody knows how many
        // arrived in it: the line waits at its start, and is not open.
        let blind = Inputs {
            coverage: 0.01,
            ..inputs(&e, START + 2100, None)
        };
        let b = advance(None, &blind);
        assert!(b.reach() <= 3.0 && !b.open, "{b:?}");
        assert!(b.admits_below(START + 2900, START) <= 3.0);
    }

    #[test]
    fn feedback_learns_the_attempts_per_shopper() {
        // Each admitted shopper sends two attempts (say two tabs): the origin counted 800 where
        // 400 were wanted, so the line slows to 200 shoppers a second.
        let e = crowd(&[(0, 100_000.0)]);
        let mut s = advance(None, &inputs(&e, START, None));
        for tick in 1..=40 {
            let now = START + tick * ADVANCE_MS;
            let f = (s.rate * 2.0) as u64;
            s = advance(Some(&s), &inputs(&e, now, Some(f)));
        }
        assert!((1.6..2.4).contains(&s.gain), "gain {}", s.gain);
        assert!((160.0..250.0).contains(&s.rate), "rate {}", s.rate);
        // The stock bounds it too: 50 left, at most 100 attempts a second.
        let low = Inputs {
            remaining: 50,
            ..inputs(&e, START + 11_000, None)
        };
        let t = advance(Some(&s), &low);
        assert!((t.rate * t.gain - 100.0).abs() < 1e-6);
        // Halfway through a second the origin has counted 600 where 200 were due: the line
        // slows to a third at once.
        let hot = Inputs {
            origin_this_second: Some(600),
            ..inputs(&e, START + 20_500, None)
        };
        let braked = advance(Some(&t), &hot);
        let plain = advance(Some(&t), &inputs(&e, START + 20_500, None));
        assert!((braked.rate / plain.rate - 1.0 / 3.0).abs() < 1e-9);
        let none = Inputs {
            remaining: 0,
            ..low
        };
        assert_eq!(advance(Some(&t), &none).speed, 0.0);
    }

    #[test]
    fn the_threshold_only_moves_forward_and_is_continuous() {
        let e = crowd(&[(0, 1000.0), (1, 5000.0), (2, 5000.0)]);
        let mut s = advance(None, &inputs(&e, START, None));
        let mut last = 0.0;
        for tick in 1..=24 {
            let now = START + tick * ADVANCE_MS;
            assert!((s.threshold_at(now) - last) >= 0.0);
            let n = advance(Some(&s), &inputs(&e, now, Some(400)));
            // Continuous: the new state starts where the old one had got to.
            assert!((n.pos - s.threshold_at(now)).abs() < 1e-9, "tick {tick}");
            assert!(n.pos >= last);
            last = n.pos;
            s = n;
        }
        assert!(
            last > 1.0,
            "the early window is through after 2.5 s: {last}"
        );
        assert_eq!(s.marks[0], s.marks[0].max(s.marks[1]));
    }

    #[test]
    fn state_round_trips_through_the_line_hash() {
        let e = crowd(&[(0, 10.0)]);
        let s = LineState {
            open: true,
            origin_recent: [412, 389, 7],
            counted_sec: START / 1000 - 1,
            marks: [0.75, 0.5, 0.25, 0.125, 0.0],
            pos0: 0.0625,
            ..advance(None, &inputs(&e, START, None))
        };
        let f: HashMap<String, String> = s
            .to_fields()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let back = LineState::from_fields(&f).unwrap();
        assert_eq!(back.at_ms, s.at_ms);
        let near = |a: f64, b: f64, tol: f64| (a - b).abs() < tol;
        assert!(near(back.pos, s.pos, 1e-9) && near(back.speed, s.speed, 1e-9));
        assert!(near(back.rate, s.rate, 1e-3) && near(back.gain, s.gain, 1e-4));
        assert!(near(back.pos0, s.pos0, 1e-9));
        for (a, b) in back.marks.iter().zip(&s.marks) {
            assert!(near(*a, *b, 1e-9));
        }
        assert_eq!(
            (back.open, back.origin_recent, back.counted_sec),
            (s.open, s.origin_recent, s.counted_sec)
        );
        let counts: HashMap<String, String> = [("n:0".to_string(), "25".to_string())]
            .into_iter()
            .collect();
        assert_eq!(Entrants::from_fields(&counts).0[&0], 100.0);
        assert!(LineState::from_fields(&HashMap::new()).is_none());
    }

    #[test]
    fn a_sale_started_early_admits_its_arrivals() {
        // `event start` an hour before `starts_at`: the arrivals since are late entries
        // (`entry::window_at`), all in window 1 (`Window::rank` clamps), not early ones. The
        // line must reach into window 1, or nobody who arrived is ever admitted.
        let early_start = START - 3_600_000;
        let e = crowd(&[(1, 40.0)]);
        let mut s = advance(None, &inputs(&e, early_start + 10, None));
        for t in 1..8 {
            s = advance(
                Some(&s),
                &inputs(&e, early_start + 10 + t * ADVANCE_MS, None),
            );
        }
        assert!(s.pos > 1.5, "the line is stuck at {}", s.pos);
        assert!(s.reach() <= 2.0, "and not past window 1: {}", s.reach());
        let open = LineState { open: true, ..s };
        assert!(open.admits_below(early_start + 2000, START) >= 2.0);
    }

    #[test]
    fn entrants_below_a_threshold_and_early_or_late() {
        let e = crowd(&[(0, 100.0), (1, 40.0), (3, 20.0)]);
        assert_eq!(e.early_late(), (100.0, 60.0));
        assert_eq!(e.below(0.0), 0.0);
        assert_eq!(e.below(0.5), 50.0);
        assert_eq!(e.below(1.25), 110.0);
        assert_eq!(e.below(3.0), 140.0, "the empty window 2 counts nobody");
        assert_eq!(e.below(3.5), 150.0);
        assert_eq!(e.below(99.0), e.total());
        assert_eq!(Entrants::default().early_late(), (0.0, 0.0));
    }

    #[test]
    fn a_quarter_of_users_are_sampled() {
        let n = (0..10_000)
            .filter(|i| sampled("e", &format!("u{i}")))
            .count();
        assert!((2300..2700).contains(&n), "{n}");
    }
}
