//! The fleet's figures and admission control, as plain data with time passed in.
//!
//! Every isolate counts what it sees per event ([`Counts`]: attempts, candidates, forwarded,
//! shed, and decisions per code and place). When it refreshes its snapshot (view.lua, at most
//! once per `EDGE_CACHE_MS`) it reports those counts and the origin adds them into a bucket per
//! second (`fg:{E}:fleet:<sec>`, kept 10 minutes). The snapshot it gets back carries the last
//! full second's sums from the whole fleet ([`FleetFigures`]). No extra round trip.
//!
//! Admission: an event's `origin_budget` is the purchase attempts per second its shard should
//! see. The origin should also see no more than a small multiple of the remaining stock
//! ([`STOCK_MULTIPLE`]). From the fleet's figures each isolate computes its [`Share`]:
//! - `p`: the chance to forward one candidate attempt (one that passed every edge check),
//!   `allowed / demand` where demand is the fleet's candidates per second. Shedding is random
//!   per attempt, so every attempt has the same chance; the per-user token bucket keeps
//!   hammering from buying extra chances.
//! - `rate`: a per-isolate cap, `allowed / isolates`, saving at most [`BURST_SECS`] of it
//!   (a fraction of a token admits with that chance, so small rates still flow). It bounds
//!   the first second of a sale, when demand is not known yet but the isolates are (they
//!   report while the crowd waits for the start). A bucket's first fill is what it gathered
//!   since the sale opened (`starts_at`), never a bucket saved up while the crowd waited, plus
//!   the isolate's part of the fleet's burst, `BURST_SECS × rate`. In a large fleet that part
//!   is under a token and is lent ahead (the bucket gathers nothing more until `BURST_SECS`
//!   after the start): 1,000 isolates at 1/s each hold a fifth of a token each at the start,
//!   not one each (which would send 1,000 attempts in the first milliseconds), and by any time
//!   `T` after the start the fleet has forwarded about `T × allowed`, the burst included. In a
//!   small fleet the part is a whole token or more and is given, so a lone shopper's quick
//!   retry is not shed (at most `(1 + BURST_SECS) × allowed` in the first second). An isolate
//!   first used long after the start is full.
//!
//! Late or missing figures fail safe. The origin still decides every sale, so nothing is ever
//! oversold whatever the edge does. Without figures for an event, an isolate keeps the
//! isolate count it last learnt (1 if it never learnt one) and forwards with `p = 1` up to its
//! `rate`; so it never sheds everything, and without any figures it bounds itself to the whole
//! budget. Figures are at most two seconds old when used; an isolate recomputes its share at
//! every refresh.

use crate::decision::{Decided, Decision};
use std::collections::{BTreeMap, BTreeSet};

/// The origin should see at most this many attempts per second per unit left.
pub const STOCK_MULTIPLE: f64 = 2.0;
/// ... but never fewer than this many, so a last unit still sells quickly.
pub const MIN_ALLOWED: f64 = 10.0;
/// How much of its rate an idle isolate saves up, in seconds.
pub const BURST_SECS: f64 = 0.2;

/// An isolate's counts for one event since its last report: named counts (`attempts`,
/// `candidates`, `forwarded`, `shed`) and decisions by place. Decisions are counted typed and
/// named (`edge:sold_out`) only in the report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    named: BTreeMap<&'static str, u64>,
    decisions: BTreeMap<(Decided, Decision), u64>,
    /// Sampled users seen per window rank (`threshold::sampled`), for the line's entrants,
    /// and their purchases (`user:key`), for the intents per entrant.
    sightings: BTreeSet<(u64, String)>,
    intents: BTreeSet<(u64, String)>,
    /// This isolate has reported already this second: the report does not count it again
    /// among the isolates (`reports`).
    pub again: bool,
    /// Milliseconds of each window rank this report covers (the isolate watched for arrivals
    /// throughout them): with the fleet's size, how much of a window its count has seen.
    exposure: BTreeMap<u64, u64>,
}

impl Counts {
    pub fn add(&mut self, name: &'static str, n: u64) {
        *self.named.entry(name).or_insert(0) += n;
    }

    /// One purchase decision (an attempt), and where it was made.
    pub fn decided(&mut self, decision: Decision, at: Decided) {
        self.add("attempts", 1);
        *self.decisions.entry((at, decision)).or_insert(0) += 1;
    }

    /// A sampled user seen in the window of `rank` (reported at most
    /// `threshold::MAX_SIGHTINGS` at a time; the rest wait for the next report).
    pub fn sight(&mut self, rank: u64, user: &str, key: &str) {
        self.sight_entrant(rank, user);
        if self.intents.len() < 4 * crate::threshold::MAX_SIGHTINGS {
            self.intents.insert((rank, format!("{user}:{key}")));
        }
    }

    /// Whether any sampled shopper was seen since the last report.
    pub fn has_sightings(&self) -> bool {
        !self.sightings.is_empty()
    }

    /// `ms` more of window `rank` watched.
    pub fn expose(&mut self, rank: u64, ms: u64) {
        *self.exposure.entry(rank).or_insert(0) += ms;
    }

    /// A sampled user who entered the window of `rank` (a ticket), before any purchase.
    pub fn sight_entrant(&mut self, rank: u64, user: &str) {
        if self.sightings.len() < 4 * crate::threshold::MAX_SIGHTINGS {
            self.sightings.insert((rank, user.to_string()));
        }
    }

    pub fn merge(&mut self, other: Counts) {
        self.sightings.extend(other.sightings);
        for (rank, ms) in other.exposure {
            self.expose(rank, ms);
        }
        self.intents.extend(other.intents);
        for (k, v) in other.named {
            self.add(k, v);
        }
        for (k, v) in other.decisions {
            *self.decisions.entry(k).or_insert(0) += v;
        }
    }

    /// Every count under its report name (`attempts`, `edge:sold_out`, ...), in name order.
    fn by_name(&self) -> BTreeMap<String, u64> {
        let named = self.named.iter().map(|(k, v)| (k.to_string(), *v));
        let decisions = (self.decisions.iter())
            .map(|((at, d), v)| (format!("{}:{}", at.as_str(), d.as_str()), *v));
        named.chain(decisions).collect()
    }

    /// The count reported as `name` (0 when none).
    pub fn get(&self, name: &str) -> u64 {
        self.by_name().get(name).copied().unwrap_or(0)
    }

    /// view.lua's report arguments: `name count ...`, with `reports 1` first (unless
    /// [`Counts::again`]), then the
    /// sightings as `@<rank>:<user> 1` and `#<rank>:<user>:<key> 1` (at most
    /// `threshold::MAX_SIGHTINGS` of each; the rest are dropped), then the exposure as
    /// `~<rank> <ms>`, of a rank whose sightings were cut only the share sent.
    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec![];
        if !self.again {
            a.extend(["reports".to_string(), "1".to_string()]);
        }
        for (k, v) in self.by_name() {
            a.push(k);
            a.push(v.to_string());
        }
        let sent = || self.sightings.iter().take(crate::threshold::MAX_SIGHTINGS);
        for (rank, user) in sent() {
            a.push(format!("@{rank}:{user}"));
            a.push("1".to_string());
        }
        for (rank, intent) in self.intents.iter().take(crate::threshold::MAX_SIGHTINGS) {
            a.push(format!("#{rank}:{intent}"));
            a.push("1".to_string());
        }
        // Sightings kept and sent per rank, in one pass each (sent is a prefix of kept).
        let per_rank = |it: &mut dyn Iterator<Item = &(u64, String)>| {
            let mut n = BTreeMap::<u64, u64>::new();
            it.for_each(|(r, _)| *n.entry(*r).or_insert(0) += 1);
            n
        };
        let (seen, sent) = (per_rank(&mut self.sightings.iter()), per_rank(&mut sent()));
        for (&rank, &ms) in &self.exposure {
            let count = |m: &BTreeMap<u64, u64>| m.get(&rank).copied().unwrap_or(0);
            let ms = (ms * count(&sent)).checked_div(count(&seen)).unwrap_or(ms);
            if ms > 0 {
                a.push(format!("~{rank}"));
                a.push(ms.to_string());
            }
        }
        a
    }
}

/// The fleet's sums for one second, as view.lua returns them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FleetFigures {
    /// The Unix second they were reported in.
    pub second: i64,
    pub counts: BTreeMap<String, u64>,
}

impl FleetFigures {
    pub fn get(&self, name: &str) -> u64 {
        self.counts.get(name).copied().unwrap_or(0)
    }
    /// Reports that second: about the number of isolates that saw traffic.
    pub fn isolates(&self) -> u64 {
        self.get("reports")
    }
    /// Attempts that passed every edge check and wanted the origin.
    pub fn demand(&self) -> u64 {
        self.get("candidates")
    }
}

/// An isolate's part of an event's origin budget.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Share {
    /// Chance to forward one candidate attempt.
    pub p: f64,
    /// Most attempts per second this isolate forwards.
    pub rate: f64,
}

impl Share {
    /// Forward everything (admission off, or before any snapshot).
    pub const OPEN: Share = Share {
        p: 1.0,
        rate: f64::INFINITY,
    };
}

/// Attempts a second the origin should see: the budget, or a small multiple of the stock left.
pub fn allowed(budget: u32, remaining: u64) -> f64 {
    allowed_within(budget, remaining, 1.0)
}

/// The budget, or as many attempts a second as bring [`STOCK_MULTIPLE`] times the stock left
/// within `secs`; never under [`MIN_ALLOWED`].
pub fn allowed_within(budget: u32, remaining: u64, secs: f64) -> f64 {
    f64::from(budget).min((STOCK_MULTIPLE * remaining as f64 / secs).max(MIN_ALLOWED))
}

/// The share for an event with `budget`, `remaining` units over all items, and the fleet's
/// latest figures (`None` when missing), given the isolate count last learnt.
pub fn share(budget: u32, remaining: u64, fleet: Option<&FleetFigures>, isolates: u64) -> Share {
    let allowed = allowed(budget, remaining);
    let isolates = fleet
        .map(FleetFigures::isolates)
        .filter(|&n| n > 0)
        .unwrap_or(isolates)
        .max(1);
    let demand = fleet.map(FleetFigures::demand).unwrap_or(0) as f64;
    let p = if demand > allowed {
        allowed / demand
    } else {
        1.0
    };
    Share {
        p,
        rate: allowed / isolates as f64,
    }
}

/// One event's admission state in an isolate: its share and a token bucket for `rate`.
#[derive(Clone, Debug, PartialEq)]
pub struct Admission {
    pub share: Share,
    /// The isolate count last learnt from the fleet's figures.
    pub isolates: u64,
    /// When the event's sale opens (ms): the bucket counts from there on first use.
    opens_at: i64,
    tokens: f64,
    at: i64,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            share: Share::OPEN,
            isolates: 1,
            opens_at: i64::MIN,
            tokens: 0.0,
            at: i64::MIN,
        }
    }
}

impl Admission {
    /// Takes in a fresh snapshot's figures, and when its sale opens (`i64::MIN`: long ago).
    pub fn update(
        &mut self,
        budget: u32,
        remaining: u64,
        fleet: Option<&FleetFigures>,
        opens_at: i64,
    ) {
        self.opens_at = opens_at;
        if let Some(n) = fleet.map(FleetFigures::isolates).filter(|&n| n > 0) {
            self.isolates = n;
        }
        self.share = share(budget, remaining, fleet, self.isolates);
    }

    /// Whether to forward one candidate attempt at `now` with the uniform `roll`.
    pub fn admit(&mut self, roll: f64, now: i64) -> bool {
        if roll >= self.share.p {
            return false;
        }
        let rate = self.share.rate;
        if !rate.is_finite() {
            return true;
        }
        let cap = (rate * BURST_SECS).max(1.0);
        self.tokens = if self.at == i64::MIN {
            // First use: what the bucket gathered since the sale opened, never a bucket saved up
            // while the crowd waited, plus the isolate's part of the fleet's burst, BURST_SECS
            // of its rate. Where that part is under a token (a large fleet) it is lent ahead,
            // not given: the bucket gathers nothing until that time has passed, so the fleet's
            // first second stays at its budget. A whole token or more (a small fleet) is
            // given, so a lone shopper's quick retry is not shed.
            let since = now.saturating_sub(self.opens_at).max(0) as f64 / 1000.0;
            if rate * BURST_SECS < 1.0 {
                let lent_until = self.opens_at.saturating_add((BURST_SECS * 1000.0) as i64);
                self.at = now.max(lent_until);
                (rate * since.max(BURST_SECS)).min(cap)
            } else {
                self.at = now;
                (rate * (since + BURST_SECS)).min(cap)
            }
        } else {
            let t = (self.tokens + (now - self.at).max(0) as f64 / 1000.0 * rate).min(cap);
            self.at = self.at.max(now);
            t
        };
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return true;
        }
        // Less than a token: spend it on a chance of that size (a second draw from the same
        // roll, which is uniform under p), so the expected rate holds however small it is.
        let second = (roll / self.share.p * 104_729.0).fract();
        let pass = second < self.tokens;
        self.tokens = 0.0;
        pass
    }
}

/// Parses a flat `name, value, ...` array of counts.
pub fn parse_counts(flat: &[crate::origin::Value]) -> BTreeMap<String, u64> {
    flat.chunks(2)
        .filter_map(|c| match c {
            [k, v] => Some((k.as_str()?.to_string(), v.as_int()?.max(0) as u64)),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;

    /// Uniform rolls in [0, p) from a fixed-seed xorshift, like the shell's Math.random().
    fn rolls_under(p: f64) -> impl FnMut() -> f64 {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f64 / (1u64 << 53) as f64 * p
        }
    }

    fn figures(reports: u64, candidates: u64) -> FleetFigures {
        FleetFigures {
            second: 1,
            counts: BTreeMap::from([
                ("reports".to_string(), reports),
                ("candidates".to_string(), candidates),
            ]),
        }
    }

    #[test]
    fn the_share_splits_the_budget_by_demand_and_isolates() {
        // 100 isolates saw 40,000 candidates last second; the budget is 2,000; plenty left.
        let s = share(2000, 10_000, Some(&figures(100, 40_000)), 1);
        assert_eq!(s.p, 0.05);
        assert_eq!(s.rate, 20.0);
        // Demand under the budget: everything goes.
        assert_eq!(share(2000, 10_000, Some(&figures(10, 500)), 1).p, 1.0);
        // Little stock left: a small multiple of it, not the whole budget.
        let s = share(2000, 50, Some(&figures(100, 40_000)), 1);
        assert_eq!((s.p, s.rate), (100.0 / 40_000.0, 1.0));
        // ... but never less than MIN_ALLOWED.
        assert_eq!(share(2000, 1, None, 1).rate, MIN_ALLOWED);
    }

    #[test]
    fn missing_figures_fail_safe() {
        // No figures: no random shedding, and the isolate count last learnt bounds the rate.
        let mut a = Admission::default();
        a.update(2000, 10_000, Some(&figures(50, 0)), i64::MIN);
        a.update(2000, 10_000, None, i64::MIN);
        assert_eq!(a.share, Share { p: 1.0, rate: 40.0 });
        // Never learnt anything: at most the whole budget from this isolate, never nothing.
        let mut b = Admission::default();
        b.update(2000, 10_000, None, i64::MIN);
        assert_eq!(
            b.share,
            Share {
                p: 1.0,
                rate: 2000.0
            }
        );
        assert!(b.admit(0.99, 0));
        // A tiny rate still lets attempts through, at that rate.
        let mut c = Admission::default();
        c.update(2000, 10_000, Some(&figures(4000, 40_000)), i64::MIN);
        let mut rolls = rolls_under(0.05);
        let passed = (0..20_000)
            .filter(|i| c.admit(rolls(), i64::from(*i)))
            .count();
        assert!((4..=16).contains(&passed), "{passed} in 20 s at 0.5/s");
    }

    #[test]
    fn admission_is_random_and_bounded_by_the_rate() {
        let mut a = Admission::default();
        a.update(2000, 10_000, Some(&figures(100, 40_000)), i64::MIN);
        // p = 0.05: rolls under it pass (while the bucket has tokens), the rest are shed.
        assert!(!a.admit(0.05, 0));
        assert!(a.admit(0.049, 0));
        // The bucket: 20/s saving 0.2 s (4 tokens); 100 lucky rolls in one instant pass 3.
        let passed = (0..100).filter(|_| a.admit(0.0, 1)).count();
        assert!(
            (3..=4).contains(&passed),
            "{passed}: the 3 saved tokens left, and at most one more by chance"
        );
        assert!(a.admit(0.0, 1 + 50), "a token back after 50 ms at 20/s");
        // Over a long run the rate holds: 10 s of 1,000 candidates a second pass about 200.
        let mut b = Admission::default();
        b.update(2000, 10_000, Some(&figures(100, 40_000)), i64::MIN);
        let mut rolls = rolls_under(0.05); // under p: only the bucket decides
        let mut passed = 0;
        for i in 0..10_000 {
            passed += u32::from(b.admit(rolls(), i64::from(i)));
        }
        assert!(
            (160..=240).contains(&passed),
            "{passed} passed in 10 s at 20/s"
        );
    }

    #[test]
    fn the_fleet_does_not_spend_a_saved_bucket_at_the_start() {
        // 1,000 isolates, 1/s each (allowed 1,000/s), all warm before a start at t = 0, each
        // meeting a candidate at the start and then every 10 ms: about BURST_SECS × 1,000 pass
        // in the first instant, not one per isolate, and about 1,000 in the whole first second.
        let mut fleet: Vec<Admission> = (0..1000)
            .map(|_| {
                let mut a = Admission::default();
                a.update(2000, 500, Some(&figures(1000, 0)), 0);
                a
            })
            .collect();
        let mut rolls = rolls_under(1.0);
        let first = fleet
            .iter_mut()
            .map(|a| a.admit(rolls(), 0))
            .filter(|&p| p)
            .count();
        assert!((150..=250).contains(&first), "{first} in the first instant");
        let mut passed = 0;
        for t in (10..=100).step_by(10) {
            passed += fleet
                .iter_mut()
                .map(|a| a.admit(rolls(), t))
                .filter(|&p| p)
                .count();
        }
        assert_eq!(
            passed, 0,
            "the burst was lent: nothing more in the first 200 ms"
        );
        // ... not given: the whole first second forwards about 1,000, the burst included.
        for t in (110..1000).step_by(10) {
            passed += fleet
                .iter_mut()
                .map(|a| a.admit(rolls(), t))
                .filter(|&p| p)
                .count();
        }
        let second = first + passed;
        assert!(
            (900..=1100).contains(&second),
            "{second} in the first second"
        );
        // An isolate first used an hour after the start has its whole bucket.
        let mut late = Admission::default();
        late.update(2000, 500, Some(&figures(1000, 0)), 0);
        assert!(late.admit(0.99, 3_600_000));
        // A lone isolate (10/s: a fifth of a second of it is 2 whole tokens, given) never sheds
        // the first shopper at the start, nor a quick retry, whatever the roll.
        let mut lone = Admission::default();
        lone.update(2000, 3, Some(&figures(1, 0)), 0);
        assert!(lone.admit(0.999, 0));
        assert!(lone.admit(0.999, 1));
    }

    #[test]
    fn counts_become_report_arguments() {
        let mut c = Counts::default();
        c.decided(Decision::Refused(Code::SoldOut), Decided::Edge);
        c.decided(Decision::Placed, Decided::Origin);
        c.add("forwarded", 1);
        let mut other = Counts::default();
        other.add("forwarded", 2);
        c.merge(other);
        assert_eq!(
            c.to_args(),
            [
                "reports",
                "1",
                "attempts",
                "2",
                "edge:sold_out",
                "1",
                "forwarded",
                "3",
                "origin:placed",
                "1"
            ]
        );
    }

    #[test]
    fn exposure_is_reported_for_the_sightings_sent() {
        let mut c = Counts::default();
        c.expose(1, 300);
        let mut later = Counts::default();
        later.expose(1, 200);
        later.expose(2, 50);
        c.merge(later);
        let args = c.to_args();
        assert_eq!(args[args.len() - 4..], ["~1", "500", "~2", "50"]);
        // Sightings beyond the most one report carries are dropped: the window's exposure is
        // cut in proportion, so the count and the time it covers stay in step.
        let mut full = Counts::default();
        for u in 0..2 * crate::threshold::MAX_SIGHTINGS {
            full.sight(3, &format!("u{u:05}"), "k");
        }
        full.expose(3, 1000);
        let args = full.to_args();
        assert_eq!(args[args.len() - 2..], ["~3", "500"]);
    }
}
