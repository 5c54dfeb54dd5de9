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
//! carries and writes it back (line.lua), only if the state it started from is still the
//! latest. The origin keeps each second's highest reachable threshold (bounded,
//! [`HISTORY_SECS`]) so that `flashgate event verify-draw` can check every order against the
//! line.
//!
//! How fast: the line admits shoppers, not attempts. The target is [`line_allowed`] attempts a
//! second at the origin (the budget, or what keeps the shoppers on their way within a small
//! multiple of the stock left), and the origin counts exactly the attempts that reach it
//! (purchase.lua, per second). The controller
//! learns the gain, the attempts the origin counted per shopper the line admitted half a
//! second earlier (an admitted shopper is back within their Retry-After of 1 s), and admits
//! `target / gain` shoppers a second, less what is still on its way: the shoppers admitted in
//! the last half second that the origin has not seen yet beyond their due share. Shoppers
//! become positions through the entrants per window (sampled by the isolates, deduplicated at
//! the origin). The threshold never passes the current second's window: nobody is admitted
//! before they arrived.

use crate::fleet::{allowed, allowed_within};
use crate::line::{PlaceKey, Window};
use std::collections::{BTreeMap, HashMap};

/// How often the line advances at the origin.
pub const ADVANCE_MS: i64 = 250;
/// A line that enters a window it waited for takes this lead (in seconds of its rate): the
/// shoppers it admits are waiting, and come back only within their `retry_ms`, so the origin's
/// next half second is not spent waiting for them. (Entering the sale's first second 500 ms
/// in, half a second gave that second 0.79–0.96 of the budget in `flashgate simulate`; 0.6 s
/// 0.86–1.04 but once, entering late, 0.70 and then 1.29 in the next second; 0.75 s
/// 1.02–1.24. Entering it 330 ms in, after [`SETTLE_MS`], half a second gave 0.90–1.11 with
/// the simulated crowd a little late, and 0.97–1.22 once it came on time; 0.45 s gives
/// 0.86–1.18, and the next second 0.77–0.95 (the gain learnt too high, docs/admission.md).)
pub const LEAD_SECS: f64 = 0.45;
/// The line's lead when it starts in a window it knows (the early window, at the start):
/// smaller, as the shoppers it admits then are arriving, not waiting, and those admitted
/// before they come pass at once. (Half a second put 1.26–1.36× the budget on the origin in
/// the first second of `flashgate simulate` with half the crowd early; a quarter 1.09–1.20,
/// then 0.8–1.1. A crowd already waiting at the start gets 0.6–0.75 in its first second.)
pub const START_LEAD_SECS: f64 = 0.25;
/// How long the claimer of a tick waits, while the line waits for a window to be counted,
/// before it reads the fleet's figures again and advances from them (`gate::snapshot`). The
/// claimer is the first isolate to read after the tick; a fleet that the sale's start woke
/// together reports at the same ticks, just after it, so without the wait the line sees the
/// crowd's sightings a tick late and enters the sale's first second at 500 ms, not ~330 ms.
pub const SETTLE_MS: i64 = 80;
/// The line may be open (everyone who has arrived admitted) only this long after the start.
pub const OPEN_AFTER_MS: i64 = 5000;
/// How far ahead of its state an isolate may extrapolate the threshold: a little more than an
/// isolate's refresh interval, so a line whose controller falls silent stops soon.
pub const HORIZON_MS: i64 = 1500;
/// The per-second threshold history kept at the origin for `verify-draw`: six hours.
pub const HISTORY_SECS: i64 = 6 * 3600;
/// One user in this many is sampled to count the entrants of each window.
pub const SAMPLE: u64 = 4;
/// The share of the last second's window's fleet time (isolates × the window's milliseconds)
/// the reports must have covered before the line enters it: until then nobody knows how many
/// arrived in it, and a line that guesses too few runs through them at many times its rate.
/// (The rest is extrapolated: `counted_entrants`.)
pub const KNOWN_SHARE: f64 = 0.5;
/// The share of the fleet time gone by in the window still arriving (this second's) that the
/// reports must have covered before the line enters it (`counted_entrants`). The fleet reports
/// every tick and the claimer reads the reports before its own tick's: a crowd that arrives
/// only after the start is entered at the second tick, 500 ms in.
pub const ARRIVING_SHARE: f64 = 0.25;
/// ... and only once it has counted this many seconds of the line's rate in it. A line in a
/// window of few counted shoppers runs through it, and everyone who arrives in it after that
/// is admitted as they come: a crowd still growing would flood the origin (one isolate,
/// which reports its first shoppers at once, put 4.4× the budget on it). With this many, the
/// line's lead and horizon stay within a fifth of the window. Less: the window is counted
/// as the last second's is, once half of it was watched, with a forecast.
pub const ARRIVING_CROWD_SECS: f64 = 10.0;
/// How soon after the line enters a window it waited at its shoppers come, on average, until
/// the fleet has measured it: they were told to come back every [`WAITING_RETRY_MS`] or up
/// to a tick later (`gate::purchase`), so each is half such a period from their next attempt.
pub const WAITED_LAG_MS: f64 = (WAITING_RETRY_MS + ADVANCE_MS as f64 / 2.0) / 2.0;
/// The least `retry_ms` of a shopper in line (two tabs then stay within a rate limit of 5 a
/// second), the one told to those whose window the line has not counted yet.
pub const WAITING_RETRY_MS: f64 = 400.0;
/// Bounds of the attempts an admitted shopper sends the origin, as learnt: shoppers who left
/// send none (the line then runs faster), several tabs and several intents send more.
pub const MIN_GAIN: f64 = 0.25;
pub const MAX_GAIN: f64 = 16.0;
/// How much of the gain it had each advance keeps (the rest is the latest observation).
pub const GAIN_SMOOTHING: f64 = 0.75;
/// For this long after the start the gain keeps only this much of what it had each advance.
pub const FAST_LEARNING_MS: i64 = 1500;
pub const FAST_SMOOTHING: f64 = 0.6;
/// The gain is learnt once this many shoppers were admitted in the second observed.
pub const MIN_LEARNT: f64 = 100.0;
/// The attempts of the shoppers admitted at one moment reach the origin spread over at most
/// this long: a Retry-After of 1 s brings them back at any moment of it (`Return::after`).
pub const RETURN_MS: i64 = 1000;
/// How long after the threshold passed their place admitted shoppers reach the origin on
/// average, until the fleet has measured it (`Inputs::lag_ms`): half a Retry-After of 1 s.
pub const LAG_MS: f64 = 500.0;
/// The lag is measured from this many forwarded shoppers a second, or not at all.
pub const MIN_LAG_SAMPLE: u64 = 20;
/// The longest lag the controller allows for.
pub const MAX_LAG_MS: f64 = 4000.0;
/// How much of the gap between the attempts due in the next second and the target the line
/// makes up at once.
pub const CATCH_UP: f64 = 0.5;
/// The most the within-second brake slows the line, and how far ahead of its pro rata share of
/// the budget the origin's count may be before it brakes.
pub const MIN_PACE: f64 = 0.5;
pub const BRAKE_MARGIN: f64 = 1.1;
/// Advances remembered ([`Mark`]): the last, then one in each [`MARK_SPACING_MS`] before it,
/// enough for the longest lag.
pub const PAST: usize = 16;
pub const MARK_SPACING_MS: i64 = 500;
/// The most sightings one isolate reports with one refresh (of each kind): enough for a lone
/// isolate that sees a crowd of 20,000 users arrive within a line tick. Past it, a report's
/// time watched is cut in proportion (`fleet::Counts::to_args`), and the window takes that
/// much longer to be known.
pub const MAX_SIGHTINGS: usize = 5000;

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

/// One past advance: when, the threshold then, and the attempts the origin had counted since
/// the line began. `at_ms == 0`: none.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Mark {
    pub at_ms: i64,
    pub pos: f64,
    pub origin: u64,
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
    /// Origin attempts per admitted shopper: learnt once `learnt`, until then the purchases
    /// per entrant.
    pub gain: f64,
    pub learnt: bool,
    /// How long after the threshold passes them admitted shoppers come, on average, learnt.
    pub lag_ms: f64,
    /// The line had caught up with the arrivals (few were waiting): shoppers are admitted as
    /// they arrive until the next advance.
    pub open: bool,
    /// The line stands at a window it has not counted enough of yet, or is in the window
    /// still arriving (this second's): isolates that have seen its shoppers report them every
    /// advance rather than every refresh interval. (A line that stands still, `speed` 0, and
    /// waits enters its window with a lead once it is counted.)
    pub waiting: bool,
    /// The attempts the origin counted since the line began, through Unix second
    /// `counted_sec` (whole seconds only).
    pub origin_sum: u64,
    pub counted_sec: i64,
    /// The last advances, the latest first (this one included).
    pub past: [Mark; PAST],
    /// The windows still being counted at this advance ([`Filling`]).
    pub filling: [Filling; FILLING],
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

    /// The remembered advance made by `t_ms` (the newest such), or the oldest remembered.
    fn mark_at(&self, t_ms: i64) -> Option<&Mark> {
        let mut known = self.past.iter().filter(|m| m.at_ms > 0);
        known
            .clone()
            .find(|m| m.at_ms <= t_ms)
            .or(known.next_back())
    }

    /// When the threshold passed `place`, by this state and the advances it remembers (at
    /// most `now`); `None` when that was before the oldest one remembered.
    pub fn crossed_at(&self, place: f64, now_ms: i64) -> Option<i64> {
        if place >= self.pos {
            if self.speed <= 0.0 {
                return Some(now_ms);
            }
            let t = self.at_ms + ((place - self.pos) / self.speed * 1000.0) as i64;
            return Some(t.min(now_ms));
        }
        // Consecutive remembered advances, newest first (no allocation: this runs for every
        // forwarded shopper).
        let known = || self.past.iter().filter(|m| m.at_ms > 0);
        known().zip(known().skip(1)).find_map(|(newer, older)| {
            (older.pos <= place && place < newer.pos).then(|| {
                let share = (place - older.pos) / (newer.pos - older.pos);
                older.at_ms + (share * (newer.at_ms - older.at_ms) as f64) as i64
            })
        })
    }

    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        let filling: Vec<String> = (self.filling.iter())
            .filter(|f| f.rank > 0)
            .map(|f| format!("{}:{:.0}:{:.0}", f.rank, f.n, f.watched))
            .collect();
        let past: Vec<String> = (self.past.iter())
            .filter(|m| m.at_ms > 0)
            .map(|m| format!("{}:{:.12}:{}", m.at_ms, m.pos, m.origin))
            .collect();
        vec![
            ("at", self.at_ms.to_string()),
            ("pos", format!("{:.12}", self.pos)),
            ("speed", format!("{:.12}", self.speed)),
            ("rate", format!("{:.3}", self.rate)),
            ("gain", format!("{:.4}", self.gain)),
            ("learnt", u8::from(self.learnt).to_string()),
            ("lag_ms", format!("{:.0}", self.lag_ms)),
            ("open", u8::from(self.open).to_string()),
            ("waiting", u8::from(self.waiting).to_string()),
            ("origin_sum", self.origin_sum.to_string()),
            ("counted_sec", self.counted_sec.to_string()),
            ("past", past.join(" ")),
            ("filling", filling.join(" ")),
        ]
    }

    /// The state in the line hash's fields; `None` before the first advance.
    pub fn from_fields(f: &HashMap<String, String>) -> Option<LineState> {
        let num = |k: &str| f.get(k)?.parse::<f64>().ok().filter(|x| x.is_finite());
        let mut past = [Mark::default(); PAST];
        let marks = (f.get("past").map_or("", String::as_str).split(' ')).filter_map(|m| {
            let mut p = m.split(':');
            let mark = Mark {
                at_ms: p.next()?.parse().ok()?,
                pos: p.next()?.parse().ok().filter(|x: &f64| x.is_finite())?,
                origin: p.next()?.parse().ok()?,
            };
            Some(mark)
        });
        for (slot, m) in past.iter_mut().zip(marks) {
            *slot = m;
        }
        let mut filling = [Filling::default(); FILLING];
        let windows = (f.get("filling").map_or("", String::as_str).split(' ')).filter_map(|w| {
            let mut p = w.split(':');
            let finite = |x: &f64| x.is_finite();
            Some(Filling {
                rank: p.next()?.parse().ok()?,
                n: p.next()?.parse().ok().filter(finite)?,
                watched: p.next()?.parse().ok().filter(finite)?,
            })
        });
        for (slot, w) in filling.iter_mut().zip(windows) {
            *slot = w;
        }
        Some(LineState {
            at_ms: f.get("at")?.parse().ok()?,
            pos: num("pos")?,
            speed: num("speed")?,
            rate: num("rate")?,
            gain: num("gain")?,
            learnt: f.get("learnt").is_some_and(|v| v == "1"),
            lag_ms: num("lag_ms").unwrap_or(LAG_MS),
            open: f.get("open").is_some_and(|v| v == "1"),
            waiting: f.get("waiting").is_some_and(|v| v == "1"),
            origin_sum: f
                .get("origin_sum")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            counted_sec: f
                .get("counted_sec")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            past,
            filling,
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
    /// Purchase attempts the origin counted in each of the last two whole seconds, the latest
    /// first (`None`: unknown).
    pub origin_before: [Option<u64>; 2],
    /// Purchase attempts the origin counted so far in the current second.
    pub origin_this_second: Option<u64>,
    /// The share of the fleet that has reported since the current second began (0 to 1).
    pub coverage: f64,
    /// Milliseconds of each window the fleet's reports have covered ([`exposure_from_fields`]),
    /// and the isolates in the fleet: together, how much of each window the entrants count
    /// has seen.
    pub exposure: &'a BTreeMap<u64, u64>,
    pub fleet: f64,
    /// How long after the threshold passed their place the shoppers the fleet forwarded
    /// lately came, on average (`None`: too few to tell).
    pub lag_ms: Option<f64>,
    /// Purchases (Idempotency-Keys) per entrant that may reach the origin, as sampled
    /// ([`intents_per_entrant`]): the gain until the origin has counted enough to learn it.
    pub per_entrant: Option<f64>,
}

/// The sampled entrants and their purchases, from the line hash (`n:<rank>`, `k:<rank>`).
pub fn sampled_intents(f: &HashMap<String, String>) -> (u64, u64) {
    let sum = |prefix: &str| -> u64 {
        (f.iter())
            .filter(|(k, _)| k.starts_with(prefix))
            .filter_map(|(_, v)| v.parse::<u64>().ok())
            .sum()
    };
    (sum("n:"), sum("k:"))
}

/// Purchases per entrant from [`sampled_intents`], once a few dozen entrants were sampled, at
/// most the units one user may buy in the sale (`per_user`, the total cap): an admitted
/// shopper's purchases beyond their cap are refused at the edge by the mark their first 201
/// set (`usermark`), so they never reach the origin.
pub fn intents_per_entrant((entrants, intents): (u64, u64), per_user: u32) -> Option<f64> {
    (entrants >= 25 && intents > 0)
        .then(|| (intents as f64 / entrants as f64).min(f64::from(per_user.max(1))))
}

/// The line's target, attempts a second: the budget, or as many as keep the shoppers on their
/// way (admitted within the last `lag_ms`, their attempts not yet at the origin) within
/// [`STOCK_MULTIPLE`](crate::fleet::STOCK_MULTIPLE) times the stock left. The line admits
/// shoppers who come back a lag later, not attempts spread over a second, so its bound is per
/// lag, not per second ([`allowed`]'s): with `allowed` the line slowed from 200 units left on and its last
/// second ran at 0.6–0.75 of the budget. The lag counts from a tick ([`ADVANCE_MS`]) to a
/// second, where this is `allowed`.
pub fn line_allowed(budget: u32, remaining: u64, lag_ms: f64) -> f64 {
    allowed_within(
        budget,
        remaining,
        lag_ms.clamp(ADVANCE_MS as f64, 1000.0) / 1000.0,
    )
}

/// The milliseconds of each window the fleet watched, from the line hash's `x:<rank>` fields
/// (view.lua adds every report's `~<rank>`).
pub fn exposure_from_fields(f: &HashMap<String, String>) -> BTreeMap<u64, u64> {
    (f.iter())
        .filter_map(|(k, v)| Some((k.strip_prefix("x:")?.parse().ok()?, v.parse().ok()?)))
        .collect()
}

/// How long window `rank` of a sale starting at `starts_at_ms` lasts: a second, the first
/// only what is left of the start's second.
fn window_ms(rank: u64, starts_at_ms: i64) -> f64 {
    if rank == 1 {
        (1000 - starts_at_ms.rem_euclid(1000)) as f64
    } else {
        1000.0
    }
}

/// How much of window `rank` has passed at `now_ms`.
fn window_elapsed_ms(rank: u64, starts_at_ms: i64, now_ms: i64) -> f64 {
    let begins = if rank <= 1 {
        starts_at_ms
    } else {
        (starts_at_ms.div_euclid(1000) + rank as i64 - 1) * 1000
    };
    ((now_ms - begins) as f64).clamp(0.0, window_ms(rank, starts_at_ms))
}

/// A window still being counted, as an advance saw it: the entrants counted in it and the
/// milliseconds of it the fleet had watched. `rank == 0`: none.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Filling {
    pub rank: u64,
    pub n: f64,
    pub watched: f64,
}

/// Windows being counted that the state remembers (this second's and the last).
pub const FILLING: usize = 2;
/// The share of a window's fleet time that must have been watched between two looks at it
/// before its arrival rate is measured from them.
const RATE_SPAN: f64 = 0.05;

/// The entrants as the controller counts them, the first window after the start it has not
/// counted enough of (of this second's and the last; older windows are final; `here + 1`
/// when every window through this second's is known), and the windows still being counted,
/// for the next advance.
///
/// A window's count is the sampled sightings the reports carried; they covered `watched` of
/// its fleet time.
/// - This second's window, still arriving, is known once the reports cover
///   [`ARRIVING_SHARE`] of its fleet time gone by and count [`ARRIVING_CROWD_SECS`] of the
///   line's rate in it, and is counted as reported, with no forecast (with fewer, as the
///   last second's window below). A line that stood waiting for it (`entering`: where it
///   stood) enters it with the entrants the fleet had seen by the tick: the count in
///   proportion to the fleet time up to the tick, when the reports cover less of it (at
///   10,000 isolates, half the fleet had read again 80 ms after the tick, and the line that
///   entered with what they reported put 1.7× the budget on the origin). The reports are a
///   tick old, and a crowd that thins within its second (as a sale's first second does)
///   forecast from them is several times too large: the line then crawls through the first
///   second. Those who arrived since, and those still to come, are admitted as they come if
///   their place is below the threshold, and reach the origin at once, where the count and
///   the brake see them.
/// - The last second's window is known once [`KNOWN_SHARE`] of its fleet time was watched.
///   The arrivals in the rest are forecast at the rate measured since an earlier advance
///   (`prev`), or, before there is one, at the average rate so far, with a margin as large
///   as the share not watched: a line errs towards a window too full, which feedback
///   corrects, not one too empty, which it runs through at several times its rate.
/// - The early window, counted over the minutes before the start, is known.
fn counted_entrants(
    i: &Inputs<'_>,
    here: u64,
    prev: &[Filling],
    entering: Option<f64>,
) -> (Entrants, u64, [Filling; FILLING]) {
    let mut entrants = i.entrants.clone();
    let tick_ms = i.now_ms.div_euclid(ADVANCE_MS) * ADVANCE_MS;
    let fleet = i.fleet.max(1.0);
    let mut unknown = here + 1;
    let mut filling = Vec::new();
    // Only this second's window and the last are still being counted: a window closed a
    // second or more ago has been reported by every isolate that refreshes once a second
    // (the line's own requirement of `EDGE_CACHE_MS`), and its count is final. (The fleet
    // now may also be larger than the one that watched it: a fleet that grows must not make
    // an old window look unwatched.)
    for rank in here.saturating_sub(1).max(1)..=here {
        let watched = i.exposure.get(&rank).copied().unwrap_or(0) as f64;
        let full = fleet * window_ms(rank, i.starts_at_ms);
        if watched >= full {
            continue;
        }
        let n = entrants.0.get(&rank).copied().unwrap_or(0.0);
        let before = (prev.iter()).find(|f| f.rank == rank && f.n <= n && f.watched < watched);
        let measured = before.filter(|f| watched - f.watched >= RATE_SPAN * full);
        let elapsed = fleet * window_elapsed_ms(rank, i.starts_at_ms, i.now_ms);
        let crowd = ARRIVING_CROWD_SECS * allowed(i.budget, i.remaining);
        let as_reported =
            rank == here && watched > 0.0 && watched >= ARRIVING_SHARE * elapsed && n >= crowd;
        if as_reported {
            // Still arriving, with a crowd already many seconds of the line's rate: the
            // entrants as reported; as the line enters it, those the fleet had seen by the
            // tick (the isolates yet to report since it are assumed to have seen as many
            // per millisecond watched as the rest).
            let by_tick = fleet * window_elapsed_ms(rank, i.starts_at_ms, tick_ms);
            if entering.is_some_and(|pos| pos <= rank as f64) && watched < by_tick {
                entrants.0.insert(rank, n * by_tick / watched);
            }
        } else if watched < KNOWN_SHARE * full {
            unknown = unknown.min(rank);
        } else {
            let rate = measured.map_or(n / watched, |f| (n - f.n) / (watched - f.watched));
            // The less of it was watched, the less the forecast is trusted: the share not
            // watched is added again as a margin.
            let margin = 2.0 - watched / full;
            entrants
                .0
                .insert(rank, n + margin * rate * (full - watched));
        }
        // The earlier look stays the base until the rate can be measured against it.
        filling.push(match before {
            Some(f) if measured.is_none() => *f,
            _ => Filling { rank, n, watched },
        });
    }
    let mut keep = [Filling::default(); FILLING];
    for (slot, f) in keep.iter_mut().zip(filling.iter().rev()) {
        *slot = *f;
    }
    (entrants, unknown, keep)
}

/// The attempts the origin has counted since the line began, through whole second
/// `counted_sec`, after folding in the seconds finished since `prev` (`sec` is the current
/// Unix second).
fn origin_counted(prev: Option<&LineState>, i: &Inputs<'_>, sec: i64) -> (u64, i64) {
    let Some(p) = prev else {
        // The line begins now: what the origin counted before does not count.
        return (0, sec - 1);
    };
    let (mut sum, mut counted) = (p.origin_sum, p.counted_sec);
    for back in (1..=2).rev() {
        let s = sec - back;
        if s > counted {
            sum += i.origin_before[back as usize - 1].unwrap_or(0);
            counted = s;
        }
    }
    // Seconds older than the view carries are lost (a controller silent for seconds).
    (sum, counted.max(sec - 1))
}

/// The next state of the line at `now` (the first when `prev` is `None`).
pub fn advance(prev: Option<&LineState>, i: &Inputs<'_>) -> LineState {
    let now = i.now_ms;
    let sec = now.div_euclid(1000);
    // Nobody is admitted before they arrived (a threshold in this second's window admits only
    // those of it who have come), nor before their window is counted: the line stops at the
    // start of the first window not yet known.
    let here = arrived_rank(now, i.starts_at_ms);
    // Where the line stands still, waiting for a window to be counted.
    let stood = prev.filter(|p| p.waiting && p.speed <= 0.0).map(|p| p.pos);
    let (entrants, unknown, filling) =
        counted_entrants(i, here, prev.map_or(&[][..], |p| &p.filling[..]), stood);
    // (A sale the operator started before `starts_at` has all its arrivals in window 1 until
    // then, a window that stays open: the line enters it once a fifth of the fleet reported.)
    let limit = if now < i.starts_at_ms {
        here as f64 + if i.coverage >= 0.2 { 1.0 } else { 0.0 }
    } else {
        unknown as f64
    };
    let blocked = limit <= here as f64;
    let admitted = |pos: f64| entrants.below(pos);
    let target = if i.remaining == 0 {
        0.0
    } else {
        let lag_ms = (i.lag_ms.or(prev.map(|p| p.lag_ms))).unwrap_or(LAG_MS);
        line_allowed(i.budget, i.remaining, lag_ms)
    };
    // Until the origin has counted enough, each admitted shopper is assumed to send one
    // attempt per purchase that may reach the origin. (Tabs that fire before the first one's
    // 201 comes back are not counted: the jittered `retry_ms` spreads a shopper's tabs over a
    // line tick, a round trip is a few ms. Feedback learns what they add.)
    let prior = i.per_entrant.unwrap_or(1.0).clamp(1.0, MAX_GAIN);
    let (origin_sum, counted_sec) = origin_counted(prev, i, sec);
    let origin = origin_sum + i.origin_this_second.unwrap_or(0);
    let Some(p) = prev else {
        // The first advance: a lead of START_LEAD_SECS of the line's rate.
        let start = 0.0;
        let pos = entrants.advance_by(start, target / prior * START_LEAD_SECS, limit);
        let ahead = entrants.advance_by(pos, target / prior, limit);
        let mut past = [Mark::default(); PAST];
        past[0] = Mark {
            at_ms: now,
            pos,
            origin,
        };
        // Where it started, a moment before the lead.
        past[1] = Mark {
            at_ms: now - 1,
            pos: start,
            origin,
        };
        return LineState {
            at_ms: now,
            pos,
            speed: (ahead - pos).max(0.0),
            rate: target / prior,
            gain: prior,
            learnt: false,
            lag_ms: i.lag_ms.unwrap_or(LAG_MS),
            open: false,
            waiting: blocked && target > 0.0 && pos >= limit,
            origin_sum,
            counted_sec,
            past,
            filling,
        };
    };
    let mut pos = p.threshold_at(now);
    // A line that waited at a window it had not counted takes the lead it starts with as it
    // enters it: the shoppers it admits now are back only after their lag.
    let mut prior_lag = p.lag_ms;
    let entering = stood.is_some_and(|pos| pos < limit);
    if entering && target > 0.0 {
        pos = entrants.advance_by(pos, target / p.gain * LEAD_SECS, limit);
        if !p.learnt {
            prior_lag = prior_lag.min(WAITED_LAG_MS);
        }
    }
    // Until the gain is learnt, the lag it is learnt against is the latest measured: the
    // prior (LAG_MS) is a guess, and a lag remembered too long makes the shoppers who came
    // back look like extra attempts (a gain learnt too high, a line too slow).
    let lag_ms = i.lag_ms.map_or(prior_lag, |l| {
        let l = l.clamp(0.0, MAX_LAG_MS);
        if p.learnt {
            0.5 * p.lag_ms + 0.5 * l
        } else {
            l
        }
    });
    let kernel = Return::after(lag_ms);
    // The shoppers admitted so far, at each remembered advance and now, oldest first.
    let admissions: Vec<(i64, f64)> = (p.past.iter().rev())
        .filter(|m| m.at_ms > 0 && m.at_ms < now)
        .map(|m| (m.at_ms, admitted(m.pos)))
        .chain([(now, admitted(pos))])
        .collect();
    // Gain: the attempts the origin counted since about a second ago, against those the
    // shoppers admitted before would have sent by then at one attempt each.
    let (mut gain, mut learnt) = if p.learnt {
        (p.gain, true)
    } else {
        (prior, false)
    };
    // Only against a lag the fleet has measured: until a second with enough forwarded
    // shoppers has been reported, their absence at the origin says nothing (they may all be
    // on their way).
    let measured = i.lag_ms.is_some();
    // Nor while the shoppers admitted since the mark a second ago include some of a window
    // still arriving then: those who arrive behind the line come to the origin at once, not a
    // lag after the line passed them, and their excess looked like extra attempts (a gain
    // learnt 1.2 where it was 1.0, and a second 1 at 0.77-0.95 of the budget). The line only
    // moves forward, so the window it is in now is the last it admitted from.
    let settled = |m: &Mark| (pos.floor() as u64) < arrived_rank(m.at_ms, i.starts_at_ms);
    if let Some(back) =
        (p.mark_at(now - 1000)).filter(|m| measured && now - m.at_ms >= 500 && settled(m))
    {
        let expected = kernel.returned(&admissions, now, now - back.at_ms);
        if expected >= MIN_LEARNT {
            let seen = origin.saturating_sub(back.origin) as f64;
            let observed = (seen / expected).clamp(MIN_GAIN, MAX_GAIN);
            // The first seconds learn fast: the gain it started with is a guess.
            let keep = if now - i.starts_at_ms < FAST_LEARNING_MS {
                FAST_SMOOTHING
            } else {
                GAIN_SMOOTHING
            };
            gain = (keep * gain + (1.0 - keep) * observed).clamp(MIN_GAIN, MAX_GAIN);
            learnt = true;
        }
    }
    // Due: the attempts that the shoppers admitted already will send in the next second. A
    // steady line has half of its second's worth due; the line makes up the difference.
    let due = gain * kernel.returned(&admissions, now + 1000, 1000);
    let steady = target * kernel.steady_share();
    // Until the gain is learnt, the shoppers on their way are a guess too: the line does not
    // hurry for those it thinks are missing, but does slow for a surplus on its way.
    let gap = if learnt {
        steady - due
    } else {
        (steady - due).min(0.0)
    };
    let mut rate = (target + CATCH_UP * gap).max(0.0) / gain;
    // Within the second: the origin's count so far beyond the budget's pro rata share (and
    // a margin for the ordinary unevenness of arrivals, or the line would brake at random
    // and fall short of its budget on average) brakes the line at once.
    let into = (now - sec * 1000) as f64 / 1000.0;
    if let Some(c) = i
        .origin_this_second
        .filter(|_| into >= 0.25 && target > 0.0)
    {
        let allowed_so_far = BRAKE_MARGIN * target * into;
        rate *= (allowed_so_far / (c as f64).max(1.0)).clamp(MIN_PACE, 1.0);
    }
    if target == 0.0 {
        rate = 0.0;
    }
    let ahead = entrants.advance_by(pos, rate, limit);
    // An isolate extrapolates the state up to HORIZON_MS: no further than the windows that
    // will have opened by then.
    let beyond = arrived_rank(now + HORIZON_MS, i.starts_at_ms) as f64 + 1.0;
    let speed = (ahead - pos)
        .max(0.0)
        .min((beyond - pos).max(0.0) * 1000.0 / HORIZON_MS as f64);
    let waiting_here = entrants.0.get(&here).copied().unwrap_or(0.0);
    let mut past = [Mark::default(); PAST];
    past[0] = Mark {
        at_ms: now,
        pos,
        origin,
    };
    // Older advances: the last state's, then the newest of each MARK_SPACING_MS before it,
    // as far back as the lag needs, and the oldest of those: the shoppers admitted before
    // the oldest mark kept are missing from the admissions the gain is learnt against, while
    // their attempts are in the origin's count. (The line's start, its lead a millisecond
    // later and its next advance fall in one half second; keeping only the last of them made
    // a crowd waiting at the start look like 1.8 attempts a shopper after its first second:
    // seconds 1 and 2 then got 0.69–0.91 and 0.29–0.64 of the budget in `flashgate simulate`.)
    let keep_ms = (lag_ms + RETURN_MS as f64) as i64 + 1500;
    let recent = |m: &&Mark| m.at_ms > 0 && m.at_ms < now && now - m.at_ms <= keep_ms;
    let mut bucket = None;
    let mut older: Vec<Mark> = (p.past.iter().filter(recent))
        .filter(|m| {
            let b = m.at_ms.div_euclid(MARK_SPACING_MS);
            let keep = bucket != Some(b);
            bucket = Some(b);
            keep
        })
        .copied()
        .collect();
    if let Some(&oldest) = p.past.iter().rfind(recent) {
        if older.last() != Some(&oldest) {
            older.truncate(PAST - 2);
            older.push(oldest);
        }
    }
    for (slot, m) in past[1..].iter_mut().zip(older) {
        *slot = m;
    }
    LineState {
        at_ms: now,
        pos,
        speed,
        rate,
        gain,
        learnt,
        lag_ms,
        // Open only in a sale that has run a while, with most of the fleet heard from this
        // second and few arriving: a crowd still on its way (the first seconds) never finds
        // the line open.
        waiting: rate > 0.0 && ((blocked && pos >= limit) || pos >= here as f64),
        open: now - i.starts_at_ms >= OPEN_AFTER_MS
            && i.coverage >= 0.5
            && rate > 0.0
            && ahead >= limit
            && waiting_here < rate / 4.0,
        origin_sum,
        counted_sec,
        past,
        filling,
    }
}

/// When the attempts of shoppers admitted at one moment reach the origin: spread evenly over
/// `width_ms`, from `from_ms` after their admission.
#[derive(Clone, Copy, Debug)]
struct Return {
    from_ms: f64,
    width_ms: f64,
}

impl Return {
    /// The spread centred on an average lag of `lag_ms`: [`RETURN_MS`] wide, or narrower for a
    /// short lag (shoppers told to come back when their place is due come within a line tick
    /// or two of it, not over a whole second), never before the admission.
    fn after(lag_ms: f64) -> Return {
        let width_ms = (2.0 * lag_ms).clamp(ADVANCE_MS as f64, RETURN_MS as f64);
        Return {
            from_ms: (lag_ms - width_ms / 2.0).max(0.0),
            width_ms,
        }
    }

    /// The share of a shopper admitted `age_ms` ago whose attempt has been sent.
    fn sent_by(&self, age_ms: f64) -> f64 {
        ((age_ms - self.from_ms) / self.width_ms).clamp(0.0, 1.0)
    }

    /// The attempts that the shoppers admitted by `admissions` (cumulative counts at moments,
    /// oldest first, admitted evenly between them) send between `until - span_ms` and
    /// `until`, at one attempt each.
    fn returned(&self, admissions: &[(i64, f64)], until: i64, span_ms: i64) -> f64 {
        let weight = |age: f64| self.sent_by(age) - self.sent_by(age - span_ms as f64);
        let mut sum = 0.0;
        for w in admissions.windows(2) {
            let ((t0, a0), (t1, a1)) = (w[0], w[1]);
            if t1 <= t0 || a1 <= a0 {
                continue;
            }
            // Midpoints of ten slices of the interval.
            const SLICES: usize = 10;
            let dt = (t1 - t0) as f64 / SLICES as f64;
            for k in 0..SLICES {
                let t = t0 as f64 + (k as f64 + 0.5) * dt;
                sum += (a1 - a0) / SLICES as f64 * weight(until as f64 - t);
            }
        }
        sum
    }

    /// Of a line admitting one shopper a second for ever, the attempts due in the next second
    /// from those admitted already.
    fn steady_share(&self) -> f64 {
        let horizon = (self.from_ms as i64 + RETURN_MS + 1000) * 2;
        let steady = [(-horizon, 0.0), (0, horizon as f64 / 1000.0)];
        self.returned(&steady, 1000, 1000)
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
    const NOT_WATCHED: &BTreeMap<u64, u64> = &BTreeMap::new();

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
            origin_before: [origin, origin],
            origin_this_second: None,
            coverage: 1.0,
            exposure: NOT_WATCHED,
            fleet: 1.0,
            lag_ms: None,
            per_entrant: None,
        }
    }

    #[test]
    fn the_line_admits_the_budget_in_shoppers_per_second() {
        // 40,000 early entrants: 400 a second is 1% of the early window a second.
        let e = crowd(&[(0, 40_000.0)]);
        let s = advance(None, &inputs(&e, START + 10, None));
        // It starts a quarter of a second (100 shoppers) in.
        assert!((s.pos - 0.0025).abs() < 1e-12, "{}", s.pos);
        assert!((s.speed - 0.01).abs() < 1e-9, "{}", s.speed);
        assert!((s.threshold_at(START + 1010) - 0.0125).abs() < 1e-9);
        assert!(!s.open, "a crowd is waiting");
        // Extrapolation stops at the horizon.
        assert_eq!(s.threshold_at(START + 60_000), s.reach());
        let (place, wait) = ahead(&s, &e, 0.02, START + 10);
        assert_eq!(place, 700);
        assert!((wait - 1.75).abs() < 1e-9);
    }

    /// A fluid model of the fleet and the crowd around [`advance`]: isolates apply the state
    /// they last read (each refreshes once a second, so on average half a second old), every
    /// shopper the threshold passes sends `per_shopper` attempts, each at a moment spread
    /// evenly over the next second (their Retry-After), and the origin counts them exactly,
    /// per second. Returns the attempts the origin counted in each of `seconds`.
    fn plant(e: &Entrants, per_shopper: f64, budget: u32, seconds: usize) -> Vec<f64> {
        plant_late(e, (per_shopper, None), (budget, seconds), 0)
    }

    /// [`plant`], with every attempt `late_ms` later (a crowd that is slow to come back, or
    /// a fleet that is slow to decide), as the fleet measures and reports it (once
    /// [`MIN_LAG_SAMPLE`] attempts reached the origin in the seconds before this one: the
    /// isolates report once a second), and the purchases per entrant the fleet sampled
    /// (`prior`).
    fn plant_late(
        e: &Entrants,
        (per_shopper, prior): (f64, Option<f64>),
        (budget, seconds): (u32, usize),
        late_ms: i64,
    ) -> Vec<f64> {
        const STEP: i64 = 10;
        let mut per_sec = vec![0.0; seconds + 2];
        // Attempts due at the origin, per step from now on.
        let mut due = vec![0.0; ((seconds as i64 * 1000 + late_ms) / STEP) as usize + 200];
        let mut states: Vec<LineState> = Vec::new();
        let mut applied = 0.0;
        let lag = (late_ms + 500) as f64;
        let i = |now: i64, this: f64, before: [Option<u64>; 2]| Inputs {
            now_ms: now,
            starts_at_ms: START,
            budget,
            remaining: 1_000_000,
            entrants: e,
            origin_before: before,
            origin_this_second: Some(this as u64),
            coverage: 1.0,
            exposure: NOT_WATCHED,
            fleet: 1.0,
            lag_ms: None,
            per_entrant: prior,
        };
        for step in 0..(seconds as i64 * 1000 / STEP) {
            let now = START + step * STEP;
            let sec = (step * STEP / 1000) as usize;
            if step % (ADVANCE_MS / STEP) == 0 {
                let before = [1, 2].map(|b| sec.checked_sub(b).map(|s| per_sec[s] as u64));
                let came: f64 = per_sec[..sec].iter().sum();
                let inputs = Inputs {
                    lag_ms: (came >= MIN_LAG_SAMPLE as f64).then_some(lag),
                    ..i(now, per_sec[sec], before)
                };
                let next = advance(states.last(), &inputs);
                states.push(next);
            }
            // The fleet's threshold: a state read half a second ago, extrapolated.
            let read = states
                .iter()
                .rev()
                .find(|s| s.at_ms <= now - 500)
                .unwrap_or(&states[0]);
            let t = read.threshold_at(now).max(applied);
            let admitted = e.below(t) - e.below(applied);
            applied = t;
            let (spread, late) = ((1000 / STEP) as usize, (late_ms / STEP) as usize);
            for d in &mut due[step as usize + late..step as usize + late + spread] {
                *d += admitted * per_shopper / spread as f64;
            }
            per_sec[sec] += due[step as usize];
        }
        per_sec.truncate(seconds);
        per_sec
    }

    #[test]
    fn the_line_uses_the_budget_whatever_each_shopper_sends() {
        // 40,000 early entrants; the origin's budget is 400 attempts a second. Shoppers who
        // left send nothing, several tabs send more: whatever the crowd sends per shopper,
        // the origin sees its budget every second once the line has learnt it, and from the
        // second second on when the crowd is about as the line assumes at first. (The plant's
        // shoppers are all waiting at the start and come back over a second once admitted; the
        // start's lead is sized for shoppers who arrive then, so this first second is short:
        // 0.6–1.2 of the budget, never over.)
        let e = crowd(&[(0, 40_000.0)]);
        for (per_shopper, from) in [(0.85, 0), (1.0, 0), (1.2, 0), (0.3, 3), (1.8, 3), (3.0, 6)] {
            let seen = plant(&e, per_shopper, 400, 12);
            for (sec, n) in seen.iter().enumerate().skip(from) {
                let band = if sec == 0 {
                    240.0..=480.0
                } else {
                    320.0..=480.0
                };
                assert!(
                    band.contains(n),
                    "{per_shopper} attempts a shopper, second {sec}: {n:.0} ({seen:.0?})"
                );
            }
        }
    }

    #[test]
    fn the_line_takes_the_lag_it_measures_first() {
        // The prior (half a second) is replaced by the first lag measured, before the gain is
        // learnt; after, a measurement moves the lag half way. (Moved half way from the
        // prior, a measured lag of about 230 ms was remembered as 362 ms, then 298: the
        // shoppers who came looked like 1.14–1.2 attempts each, the line slowed, and the
        // second after the first fell to 0.74–0.89 of the budget in `flashgate simulate` with
        // 100 isolates, against 0.78–0.97 with this rule.)
        let e = crowd(&[(0, 40_000.0)]);
        let first = advance(None, &inputs(&e, START + 10, None));
        assert_eq!((first.lag_ms, first.learnt), (LAG_MS, false));
        let measured = Inputs {
            lag_ms: Some(200.0),
            ..inputs(&e, START + 260, Some(0))
        };
        let next = advance(Some(&first), &measured);
        assert_eq!(next.lag_ms, 200.0);
        let learnt = LineState {
            learnt: true,
            ..first
        };
        assert_eq!(advance(Some(&learnt), &measured).lag_ms, 350.0);
    }

    #[test]
    fn the_gain_counts_the_shoppers_admitted_at_the_start() {
        // A crowd of 25,008 waiting at the start (`flashgate simulate`, half the crowd early, at
        // 1,000 isolates): the line starts with its lead, advances every quarter second, and
        // every shopper it admits buys once, most of them within the second. After that
        // second the gain learnt is about one, not the 1.32 learnt when the start's marks
        // were forgotten (the line then ran at 270 shoppers a second for a second).
        let e = crowd(&[(0, 25_008.0)]);
        let mut s = advance(None, &inputs(&e, START + 1, None));
        for (at, origin) in [(251, 115), (536, 237), (751, 374)] {
            let i = Inputs {
                origin_this_second: Some(origin),
                ..inputs(&e, START + at, None)
            };
            s = advance(Some(&s), &i);
        }
        let admitted = e.below(s.threshold_at(START + 1001));
        assert!((470.0..500.0).contains(&admitted), "{admitted}");
        let after = Inputs {
            origin_before: [Some(468), None],
            origin_this_second: Some(0),
            lag_ms: Some(242.0),
            ..inputs(&e, START + 1001, None)
        };
        let next = advance(Some(&s), &after);
        assert!(next.learnt);
        assert!((0.95..=1.15).contains(&next.gain), "{next:?}");
    }

    #[test]
    fn the_line_starts_from_the_purchases_each_entrant_made() {
        // Every shopper has three tabs open and may buy two units: the sampled entrants made
        // three purchases each, of which the origin sees two (the third is refused at the edge
        // by the mark), so the line admits half as many shoppers from the first second on.
        assert_eq!(intents_per_entrant((100, 300), 2), Some(2.0));
        assert_eq!(intents_per_entrant((100, 300), 5), Some(3.0));
        assert_eq!(
            intents_per_entrant((100, 300), 0),
            Some(1.0),
            "no cap below one"
        );
        assert_eq!(intents_per_entrant((10, 30), 5), None, "too few sampled");
        let e = crowd(&[(0, 40_000.0)]);
        let seen = plant_late(&e, (2.0, intents_per_entrant((100, 300), 2)), (400, 8), 0);
        assert!((240.0..=480.0).contains(&seen[0]), "{seen:.0?}");
        assert!(
            seen[1..].iter().all(|n| (320.0..=480.0).contains(n)),
            "{seen:.0?}"
        );
        let blind = plant_late(&e, (2.0, None), (400, 8), 0);
        assert!(
            blind[0] > 480.0,
            "without it, the first second is over: {blind:.0?}"
        );
    }

    #[test]
    fn the_line_allows_for_shoppers_who_come_late() {
        // Admitted shoppers come a second later than their Retry-After says (a slow network,
        // or a fleet that is slow to decide), as the fleet measures: the line does not mistake
        // them for shoppers who left.
        let e = crowd(&[(0, 40_000.0)]);
        for per_shopper in [1.0, 1.8] {
            // Purchases sampled such that the origin sees `per_shopper` of them (see above).
            let seen = plant_late(&e, (per_shopper, Some(per_shopper)), (400, 12), 1000);
            // Nothing comes in the first second; within 0.7-1.3 from the next, learnt by the
            // sixth.
            for (sec, n) in seen.iter().enumerate().skip(1) {
                let band = if sec < 5 {
                    280.0..=520.0
                } else {
                    320.0..=480.0
                };
                assert!(
                    band.contains(n),
                    "{per_shopper}, second {sec}: {n:.0} ({seen:.0?})"
                );
            }
            for (sec, n) in seen.iter().enumerate().skip(5) {
                assert!(
                    (320.0..=480.0).contains(n),
                    "{per_shopper} attempts a shopper, second {sec}: {n:.0} ({seen:.0?})"
                );
            }
        }
    }

    /// Every window through rank `to` watched in full by a fleet of one, and `part` of the
    /// next.
    fn watched(to: u64, part: f64) -> BTreeMap<u64, u64> {
        (1..=to)
            .map(|r| (r, 1000))
            .chain([(to + 1, (part * 1000.0) as u64)])
            .collect()
    }

    #[test]
    fn the_line_never_passes_the_current_second() {
        // Nobody waiting: the line runs to the end of this second's window and stops there.
        let e = crowd(&[]);
        let x = watched(3, 1.0);
        let known = Inputs {
            exposure: &x,
            ..inputs(&e, START + 2500, None)
        };
        let s = advance(None, &known);
        assert!(s.reach() <= 4.0 && s.reach() > 3.0, "{}", s.reach());
        let again = advance(Some(&s), &inputs(&e, START + 2750, None));
        assert!(again.pos <= 4.0 && again.pos >= s.pos);
        // Before the fleet's reports cover a quarter of this second's window so far, nobody
        // knows how many arrived in it: the line waits at its start, is not open, and says it
        // is waiting.
        let x = watched(2, 0.02);
        let blind = Inputs {
            exposure: &x,
            ..inputs(&e, START + 2100, None)
        };
        let b = advance(None, &blind);
        assert!(b.reach() <= 3.0 && !b.open && b.waiting, "{b:?}");
        assert!(b.admits_below(START + 2900, START) <= 3.0);
        // An earlier window not watched enough stops it there, whatever came after.
        let mut x = watched(3, 1.0);
        x.insert(2, 200);
        let gap = Inputs {
            exposure: &x,
            ..inputs(&e, START + 2500, None)
        };
        assert!(advance(None, &gap).reach() <= 2.0);
    }

    #[test]
    fn a_window_still_arriving_is_counted_as_reported() {
        // A fleet of 10 isolates, 400 ms into window 1: 4,000 ms of its fleet time gone by.
        // The line's rate is the budget, 400 a second.
        let e = crowd(&[(1, 5000.0)]);
        let look = |e, x, now| Inputs {
            exposure: x,
            fleet: 10.0,
            ..inputs(e, now, None)
        };
        // Reports that cover less than a quarter of it: not known yet.
        let x = BTreeMap::from([(1, 900)]);
        let (_, unknown, filling) = counted_entrants(&look(&e, &x, START + 400), 1, &[], None);
        assert_eq!(unknown, 1);
        assert_eq!(filling[0].rank, 1, "the look is remembered");
        // A quarter: known, with the arrivals the reports carried and no more (a crowd that
        // thins within its second would be forecast several times too large: the 5,000 seen
        // in 1,000 ms are not 20,000 in 4,000). Those who come later are admitted as they
        // come.
        let x = BTreeMap::from([(1, 1000)]);
        let (counted, unknown, _) = counted_entrants(&look(&e, &x, START + 400), 1, &[], None);
        assert_eq!((counted.0[&1], unknown), (5000.0, 2));
        // A crowd of fewer than ten seconds of the line's rate is not known so early: a line
        // would run through it, and admit everyone who came after as they came (a lone
        // isolate reports its first shoppers at once: 4.4× the budget reached the origin).
        let few = crowd(&[(1, 3000.0)]);
        let (_, unknown, _) = counted_entrants(&look(&few, &x, START + 400), 1, &[], None);
        assert_eq!(unknown, 1);
        let lone = BTreeMap::from([(1, 3)]);
        let start = Inputs {
            exposure: &lone,
            fleet: 1.0,
            ..inputs(&few, START + 3, None)
        };
        assert_eq!(counted_entrants(&start, 1, &[], None).1, 1);
    }

    #[test]
    fn the_last_seconds_window_is_forecast_from_its_latest_rate() {
        // A fleet of 10 isolates: window 1's fleet time is 10,000 ms; window 2 is this
        // second's, and is not watched yet.
        let early = crowd(&[(1, 400.0)]);
        let x = BTreeMap::from([(1, 4000)]);
        let look = |e, x, now| Inputs {
            exposure: x,
            fleet: 10.0,
            ..inputs(e, now, None)
        };
        let of_1 = |f: &[Filling; FILLING]| f.iter().find(|f| f.rank == 1).copied();
        // 40 % watched: not known yet; the line waits at its start, and remembers the look.
        let (_, unknown, filling) = counted_entrants(&look(&early, &x, START + 1100), 2, &[], None);
        assert_eq!(unknown, 1);
        assert_eq!(
            of_1(&filling),
            Some(Filling {
                rank: 1,
                n: 400.0,
                watched: 4000.0
            })
        );
        // 60 % watched and 1,000 counted: 600 arrived in the last 2,000 ms watched, so the
        // 4,000 left bring 1,200 more, and as much again times the 40 % not watched.
        let later = crowd(&[(1, 1000.0)]);
        let x = BTreeMap::from([(1, 6000)]);
        let (e, unknown, next) =
            counted_entrants(&look(&later, &x, START + 1200), 2, &filling, None);
        assert_eq!(unknown, 2);
        assert!((e.0[&1] - (1000.0 + 1.4 * 1200.0)).abs() < 1e-6, "{e:?}");
        assert_eq!(
            of_1(&next),
            Some(Filling {
                rank: 1,
                n: 1000.0,
                watched: 6000.0
            })
        );
        // Without the earlier look, the average rate so far: 1,000 in 6,000 ms.
        let (e, _, _) = counted_entrants(&look(&later, &x, START + 1200), 2, &[], None);
        assert!((e.0[&1] - (1000.0 + 1.4 * 1000.0 / 6000.0 * 4000.0)).abs() < 1e-6);
        // A look too close to the last (under 5 % of the fleet time since) keeps the older
        // base, so the rate is measured over a span long enough to mean something.
        let x2 = BTreeMap::from([(1, 6300)]);
        let (_, _, kept) = counted_entrants(&look(&later, &x2, START + 1250), 2, &next, None);
        assert_eq!(of_1(&kept), of_1(&next));
        // Watched in full: the count as it is, and no more to remember of it (only of the
        // next window, not watched yet).
        let x = BTreeMap::from([(1, 10_000)]);
        let (e, unknown, done) = counted_entrants(&look(&later, &x, START + 1300), 2, &next, None);
        assert_eq!((e.0[&1], unknown), (1000.0, 2));
        assert_eq!(done.map(|f| f.rank), [2, 0], "{done:?}");
    }

    #[test]
    fn a_window_closed_a_second_ago_is_final_however_the_fleet_grew() {
        // Window 1 was watched by a fleet of 10; the fleet has grown to 30 since.
        let e = crowd(&[(1, 5000.0), (2, 4000.0), (3, 100.0)]);
        let x = BTreeMap::from([(1, 10_000), (2, 30_000), (3, 3_000)]);
        let i = Inputs {
            exposure: &x,
            fleet: 30.0,
            ..inputs(&e, START + 2500, None)
        };
        let (counted, unknown, _) = counted_entrants(&i, 3, &[], None);
        assert_eq!(counted.0[&1], 5000.0, "final: not forecast again");
        assert_eq!(counted.0[&2], 4000.0, "watched in full by the fleet of 30");
        assert_eq!(
            unknown, 3,
            "this second's window: a fifth of its time so far watched"
        );
    }

    #[test]
    fn a_line_that_waited_enters_its_window_with_a_lead() {
        let e = crowd(&[(1, 20_000.0)]);
        let none = BTreeMap::new();
        let blind = Inputs {
            exposure: &none,
            ..inputs(&e, START + 100, None)
        };
        let waiting = advance(None, &blind);
        assert!(waiting.waiting && waiting.pos == 1.0, "{waiting:?}");
        let x = BTreeMap::from([(1, 1000)]);
        let known = Inputs {
            exposure: &x,
            ..inputs(&e, START + 1100, None)
        };
        let entered = advance(Some(&waiting), &known);
        // LEAD_SECS (0.45 s) of 400 shoppers a second, of 20,000: 0.9 % of the window.
        assert!((entered.pos - 1.009).abs() < 1e-9, "{entered:?}");
        assert!(!entered.waiting);
        assert!((entered.speed - 0.02).abs() < 1e-9, "{entered:?}");
        // Its shoppers were told to come back within 400-650 ms: until the fleet measures the
        // lag, they are expected a quarter second after the line passes them, not half a
        // second (the line then slowed for shoppers who had come already).
        assert_eq!(entered.lag_ms, WAITED_LAG_MS);
        assert!((250.0..300.0).contains(&WAITED_LAG_MS));
    }

    #[test]
    fn a_line_in_the_window_still_arriving_takes_its_lead_once() {
        // 500 ms into the sale's first window, the reports cover it so far.
        let e = crowd(&[(1, 20_000.0)]);
        let none = BTreeMap::new();
        let waiting = advance(
            None,
            &Inputs {
                exposure: &none,
                ..inputs(&e, START + 250, None)
            },
        );
        let x = BTreeMap::from([(1, 500)]);
        let at = |now| Inputs {
            exposure: &x,
            ..inputs(&e, now, None)
        };
        let entered = advance(Some(&waiting), &at(START + 500));
        // Its lead: 0.45 s of 400 shoppers a second, of 20,000.
        assert!((entered.pos - 1.009).abs() < 1e-9, "{entered:?}");
        // In the window still arriving, the fleet keeps reporting every tick...
        assert!(entered.waiting, "{entered:?}");
        // ... but the line has entered: the next advance goes on from where it is.
        let next = advance(Some(&entered), &at(START + 750));
        assert!(
            (next.pos - entered.threshold_at(START + 750)).abs() < 1e-9,
            "{next:?}"
        );
    }

    #[test]
    fn no_gain_is_learnt_from_a_window_still_arriving() {
        // A crowd of 20,000 that arrives in the sale's first second. Those who arrive behind
        // the line come to the origin at once, not a lag after it passed them: in the second
        // after it entered, the origin counts more than the shoppers it admitted would have
        // sent by the kernel. That is no evidence that each sends more (a gain learnt 1.2
        // from it ran second 1 at 0.77-0.95 of the budget in `flashgate simulate`).
        let e = crowd(&[(1, 20_000.0)]);
        let none = BTreeMap::new();
        let x = BTreeMap::from([(1, 500)]);
        let full = BTreeMap::from([(1, 1000), (2, 500)]);
        let mut s = advance(
            None,
            &Inputs {
                exposure: &none,
                ..inputs(&e, START + 250, None)
            },
        );
        // (ms, attempts the origin counted in this second, the last second's, the lag).
        let steps = [
            (500, 0, None, None),
            (750, 100, None, None),
            (1000, 0, Some(200), Some(250.0)),
            (1250, 200, Some(200), Some(250.0)),
            (1500, 380, Some(200), Some(250.0)),
            (1750, 560, Some(200), Some(250.0)),
        ];
        for (at, this, last, lag) in steps {
            let i = Inputs {
                exposure: if at < 1000 { &x } else { &full },
                origin_this_second: Some(this),
                origin_before: [last, None],
                lag_ms: lag,
                ..inputs(&e, START + at, None)
            };
            s = advance(Some(&s), &i);
        }
        // At 1,750 ms the line is in window 1, still arriving at the mark a second back (750 ms).
        assert!(s.pos.floor() == 1.0 && !s.learnt && s.gain == 1.0, "{s:?}");
        // At 2,250 ms window 1 had closed by the mark a second back (1,250 ms).
        for (at, this) in [(2000, 0), (2250, 100)] {
            let i = Inputs {
                exposure: &full,
                origin_this_second: Some(this),
                origin_before: [Some(660), Some(200)],
                lag_ms: Some(250.0),
                ..inputs(&e, START + at, None)
            };
            s = advance(Some(&s), &i);
        }
        assert!(s.learnt, "{s:?}");
    }

    #[test]
    fn a_line_enters_with_the_arrivals_of_the_isolates_yet_to_report_since_the_tick() {
        // A fleet of 10 isolates, the line waiting at the sale's first window. The claimer of
        // the tick at 250 ms advances 80 ms later (`SETTLE_MS`): half the fleet has reported
        // since the tick, 20,000 shoppers in 1,250 ms of the 2,500 up to it.
        let e = crowd(&[(1, 20_000.0)]);
        let look = |x, now| Inputs {
            exposure: x,
            fleet: 10.0,
            ..inputs(&e, now, None)
        };
        let waiting = advance(None, &look(NOT_WATCHED, START));
        assert!(waiting.waiting && waiting.speed == 0.0, "{waiting:?}");
        let x = BTreeMap::from([(1, 1250)]);
        let now = START + ADVANCE_MS + SETTLE_MS;
        let (counted, unknown, _) = counted_entrants(&look(&x, now), 1, &[], Some(1.0));
        assert_eq!((counted.0[&1], unknown), (40_000.0, 2));
        // Its lead: 0.45 s of 400 shoppers a second, of 40,000, not of the 20,000 reported
        // (it would admit twice its lead).
        let entered = advance(Some(&waiting), &look(&x, now));
        assert!((entered.pos - 1.0045).abs() < 1e-9, "{entered:?}");
        // A line already in the window counts it as reported; so does one that stood
        // elsewhere, and so do reports that cover the time up to the tick.
        let (counted, _, _) = counted_entrants(&look(&x, now), 1, &[], None);
        assert_eq!(counted.0[&1], 20_000.0);
        let (counted, _, _) = counted_entrants(&look(&x, now), 1, &[], Some(0.5));
        assert_eq!(counted.0[&1], 40_000.0);
        let (counted, _, _) = counted_entrants(&look(&x, now), 1, &[], Some(1.2));
        assert_eq!(counted.0[&1], 20_000.0);
        let full = BTreeMap::from([(1, 2600)]);
        let (counted, _, _) = counted_entrants(&look(&full, now), 1, &[], Some(1.0));
        assert_eq!(counted.0[&1], 20_000.0);
    }

    #[test]
    fn the_stock_and_the_origin_so_far_bound_the_rate() {
        let e = crowd(&[(0, 100_000.0)]);
        let mut s = advance(None, &inputs(&e, START, None));
        for tick in 1..=8 {
            s = advance(Some(&s), &inputs(&e, START + tick * ADVANCE_MS, Some(400)));
        }
        // The stock bounds it: 20 left, at most twice that on the way within a lag.
        let low = Inputs {
            remaining: 20,
            ..inputs(&e, START + 2_250, Some(400))
        };
        let t = advance(Some(&s), &low);
        let cap = line_allowed(400, 20, t.lag_ms);
        assert!(cap < 200.0, "{cap} at a lag of {}", t.lag_ms);
        assert!(t.rate * t.gain <= 2.0 * cap + 1e-6, "{t:?}");
        assert!(t.rate < s.rate / 2.0, "{} after {}", t.rate, s.rate);
        // Halfway through a second the origin has counted 400 where 200 were due: the line
        // slows to a half at once (each state read without the brake for comparison).
        let hot = Inputs {
            origin_this_second: Some(400),
            ..inputs(&e, START + 2_500, Some(400))
        };
        let braked = advance(Some(&t), &hot);
        let plain = advance(Some(&t), &inputs(&e, START + 2_500, Some(400)));
        assert!(
            braked.rate < 0.75 * plain.rate,
            "{} {}",
            braked.rate,
            plain.rate
        );
        let none = Inputs {
            remaining: 0,
            ..low
        };
        assert_eq!(advance(Some(&t), &none).speed, 0.0);
    }

    #[test]
    fn the_stock_left_bounds_the_shoppers_on_their_way_not_the_attempts_of_a_second() {
        assert_eq!(line_allowed(400, 3000, 500.0), 400.0);
        // 150 left: at most 300 on the way; with a lag of half a second, the whole budget.
        assert_eq!(line_allowed(400, 150, 500.0), 400.0);
        assert_eq!(line_allowed(400, 50, 500.0), 200.0);
        // A lag of a second or more: `allowed`'s bound; under a tick, a tick's.
        assert_eq!(line_allowed(400, 50, 4000.0), allowed(400, 50));
        assert_eq!(line_allowed(400, 20, 100.0), 160.0);
        assert_eq!(line_allowed(400, 1, 500.0), crate::fleet::MIN_ALLOWED);
        // A line 150 units from its sell-out still runs at its budget (it ran at 0.75 of it).
        let e = crowd(&[(0, 100_000.0)]);
        let mut s = advance(None, &inputs(&e, START, None));
        for tick in 1..=8 {
            s = advance(Some(&s), &inputs(&e, START + tick * ADVANCE_MS, Some(400)));
        }
        let at = |remaining| {
            let i = Inputs {
                remaining,
                ..inputs(&e, START + 2_250, Some(400))
            };
            advance(Some(&s), &i).rate
        };
        assert!(s.lag_ms <= 500.0, "{}", s.lag_ms);
        assert_eq!(at(150), at(3000));
    }

    #[test]
    fn the_threshold_only_moves_forward_and_is_continuous() {
        let e = crowd(&[(0, 1000.0), (1, 5000.0), (2, 5000.0)]);
        let x = watched(2, 0.0);
        let known = |now| Inputs {
            exposure: &x,
            ..inputs(&e, now, Some(400))
        };
        let mut s = advance(None, &known(START));
        let mut last = 0.0;
        for tick in 1..=24 {
            let now = START + tick * ADVANCE_MS;
            assert!((s.threshold_at(now) - last) >= 0.0);
            let n = advance(Some(&s), &known(now));
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
        assert!(s.past[0].pos >= s.past[1].pos && s.past[1].at_ms < s.past[0].at_ms);
    }

    #[test]
    fn state_round_trips_through_the_line_hash() {
        let e = crowd(&[(0, 10.0)]);
        let mut past = [Mark::default(); PAST];
        past[0] = Mark {
            at_ms: START,
            pos: 0.75,
            origin: 900,
        };
        past[1] = Mark {
            at_ms: START - 250,
            pos: 0.5,
            origin: 412,
        };
        let s = LineState {
            open: true,
            origin_sum: 801,
            counted_sec: START / 1000 - 1,
            past,
            filling: [
                Filling {
                    rank: 2,
                    n: 1200.0,
                    watched: 5000.0,
                },
                Filling::default(),
            ],
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
        for (a, b) in back.past.iter().zip(&s.past) {
            assert!(near(a.pos, b.pos, 1e-9) && (a.at_ms, a.origin) == (b.at_ms, b.origin));
        }
        assert_eq!(back.past[2], Mark::default());
        assert_eq!(
            (back.open, back.waiting, back.origin_sum, back.counted_sec),
            (s.open, s.waiting, s.origin_sum, s.counted_sec)
        );
        assert_eq!(back.filling, s.filling);
        let counts: HashMap<String, String> = [("n:0".to_string(), "25".to_string())]
            .into_iter()
            .collect();
        assert_eq!(Entrants::from_fields(&counts).0[&0], 100.0);
        assert!(LineState::from_fields(&HashMap::new()).is_none());
    }

    #[test]
    fn when_the_threshold_passed_a_place() {
        let e = crowd(&[(0, 10.0)]);
        let mut past = [Mark::default(); PAST];
        past[0] = Mark {
            at_ms: START + 1000,
            pos: 2.0,
            origin: 0,
        };
        past[1] = Mark {
            at_ms: START + 500,
            pos: 1.0,
            origin: 0,
        };
        let s = LineState {
            at_ms: START + 1000,
            pos: 2.0,
            speed: 1.0,
            past,
            filling: Default::default(),
            ..advance(None, &inputs(&e, START, None))
        };
        assert_eq!(
            s.crossed_at(1.5, START + 2000),
            Some(START + 750),
            "between advances"
        );
        assert_eq!(
            s.crossed_at(2.5, START + 2000),
            Some(START + 1500),
            "by the speed"
        );
        assert_eq!(
            s.crossed_at(2.9, START + 1200),
            Some(START + 1200),
            "not after now"
        );
        assert_eq!(
            s.crossed_at(0.5, START + 2000),
            None,
            "before anything remembered"
        );
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
