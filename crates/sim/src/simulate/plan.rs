//! The crowd, decided before the sale starts, and what a shopper does with an answer.
//!
//! [`arrivals`] fixes every purchase intent's first attempt: when (milliseconds after the
//! start, exponential with mean `mean_ms`, truncated to the run), from which user (intent `i`
//! is user `i mod users`, so the first `users` intents come from distinct users) and at which
//! isolate (uniform: a CDN spreads users over its fleet). [`next`] says whether an answer ends
//! the intent or sends it back, with the same Idempotency-Key, after `Retry-After`. Pure and
//! seeded: the same arguments plan the same crowd.

use flashgate_core::model::{
    format_ms, Caps, EventSpec, Fairness, ItemSpec, DEFAULT_PAY_WITHIN_SECS,
};

/// The simulator's IDENTITY_SECRET: it mints the crowd's tokens, its isolates check them.
pub(super) const SECRET: &str = "flashgate-simulator-identity-secret";

/// The fresh event of `--stock`: one item `A`, caps 1/day and 1 in total, starting at
/// `t0_ms` and lasting a day.
pub(super) fn sale_spec(
    id: &str,
    t0_ms: i64,
    stock: u32,
    budget: u32,
    fairness: Fairness,
) -> EventSpec {
    EventSpec {
        id: id.to_string(),
        name: format!("flashgate simulate {id}"),
        utc_offset: "+00:00".into(),
        starts_at: format_ms(t0_ms),
        ends_at: format_ms(t0_ms + 86_400_000),
        caps: Caps {
            per_item_per_day: 1,
            total: 1,
            per_order_qty: 1,
        },
        items: vec![ItemSpec {
            sku: "A".into(),
            name: "Item A".into(),
            price: 1000,
            currency: "EUR".into(),
            stock,
        }],
        pay_within: DEFAULT_PAY_WITHIN_SECS,
        origin_budget: budget,
        fairness,
    }
}

/// The share of a crowd that comes through a small share of the isolates: `--skew F:S` sends
/// the share `F` of the attempts to the first `S` of the isolates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Skew {
    pub crowd: f64,
    pub isolates: f64,
}

impl Skew {
    pub fn parse(s: &str) -> Result<Skew, String> {
        let bad = || format!("--skew {s:?} must be CROWD:ISOLATES, two shares, e.g. 0.5:0.05");
        let (c, i) = s.split_once(':').ok_or_else(bad)?;
        let (crowd, isolates): (f64, f64) =
            (c.parse().map_err(|_| bad())?, i.parse().map_err(|_| bad())?);
        if !(0.0..=1.0).contains(&crowd) || !(0.0..=1.0).contains(&isolates) || isolates == 0.0 {
            return Err(bad());
        }
        Ok(Skew { crowd, isolates })
    }
}

/// The isolate an attempt reaches: uniform, or with `skew` the crowd's share through the few.
pub fn pick_isolate(rng: &mut fastrand::Rng, isolates: usize, skew: Option<Skew>) -> usize {
    let n = isolates.max(1);
    match skew {
        Some(k) if rng.f64() < k.crowd => {
            let few = ((k.isolates * n as f64).ceil() as usize).clamp(1, n);
            rng.usize(..few)
        }
        _ => rng.usize(..n),
    }
}

/// How a shopper behaves, and the group the fairness report counts them in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Group {
    /// Arrives after the start and waits as the page does (Retry-After, patience).
    Late,
    /// Entered 10 minutes before the start (an entry ticket for the early window).
    Early600,
    /// Entered 10 seconds before the start.
    Early10,
    /// Retries at the rate limit, ignoring Retry-After (a script; `--accounts-per-bot`
    /// accounts per bot).
    Hammer,
}

impl Group {
    pub fn name(self) -> &'static str {
        match self {
            Group::Late => "late",
            Group::Early600 => "early_10min",
            Group::Early10 => "early_10s",
            Group::Hammer => "hammer",
        }
    }
    pub const ALL: [Group; 4] = [Group::Late, Group::Early600, Group::Early10, Group::Hammer];
}

/// The mix of a crowd: shares of hammerers and early entrants.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Mix {
    pub hammer: f64,
    pub early: f64,
}

/// User `u`'s group, fixed by the user number: hammerers, then among the others early entrants
/// (half 10 min, half 10 s before), the rest late. Whether a user enters early is drawn
/// independently of hammering ([`enters_early`]), so hammerers are early as often as anyone.
pub fn group_of(u: u64, mix: Mix) -> Group {
    if unit(u, 0x9E37_79B9_7F4A_7C15) < mix.hammer.clamp(0.0, 1.0) {
        Group::Hammer
    } else if enters_early(u, mix) {
        if u.is_multiple_of(2) {
            Group::Early600
        } else {
            Group::Early10
        }
    } else {
        Group::Late
    }
}

/// Whether user `u` enters before the start (hammerers too).
pub fn enters_early(u: u64, mix: Mix) -> bool {
    unit(u, 0xD1B5_4A32_D192_ED03) < mix.early.clamp(0.0, 1.0)
}

/// A uniform number in [0, 1) from `u` and a multiplier.
fn unit(u: u64, m: u64) -> f64 {
    let x = (u ^ (u >> 29)).wrapping_mul(m);
    ((x ^ (x >> 32)) >> 11) as f64 / (1u64 << 53) as f64
}

/// A shopper gives up once their place is more than this many times the units left.
pub const HOPELESS: f64 = 4.0;

/// What a shopper has learnt from a `busy` answer.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Busy {
    /// Shoppers ahead, and units left, when the answer says.
    pub place: Option<u64>,
    pub remaining: Option<u64>,
    /// When to come back, in ms, when the answer says (`retry_ms`, finer than Retry-After).
    pub retry_ms: Option<u64>,
}

impl Busy {
    pub fn of(body: &[u8]) -> Busy {
        let j: Option<serde_json::Value> = serde_json::from_slice(body).ok();
        let e = j.as_ref().and_then(|j| j.get("error"));
        let n = |k: &str| e.and_then(|e| e.get(k)).and_then(|v| v.as_u64());
        Busy {
            place: n("place"),
            remaining: n("remaining"),
            retry_ms: n("retry_ms"),
        }
    }
    /// The place shown is hopeless: far more shoppers ahead than units left.
    pub fn hopeless(&self) -> bool {
        matches!((self.place, self.remaining), (Some(p), Some(r)) if p as f64 > HOPELESS * r.max(1) as f64)
    }
}

/// What a patient shopper (the page) or a hammerer does after an answer, `elapsed_ms` after
/// their first attempt, with `patience_ms` (`None`: the old script, [`MAX_RETRIES`]).
pub fn after(
    status: u16,
    retry_after: Option<&str>,
    busy: Busy,
    hammer_ms: Option<u64>,
    (elapsed_ms, patience_ms): (u64, Option<u64>),
    tries: u32,
) -> Next {
    let Some(patience) = patience_ms else {
        return next(status, retry_after, tries);
    };
    if status != 503 && status != 429 {
        return Next::Done;
    }
    if elapsed_ms >= patience || busy.hopeless() {
        return Next::GiveUp;
    }
    if let Some(ms) = hammer_ms {
        return Next::Retry { after_ms: ms };
    }
    // The page comes back when the answer says, to the millisecond when it says so.
    match (next(status, retry_after, 1), busy.retry_ms) {
        (Next::Retry { .. }, Some(ms)) => Next::Retry { after_ms: ms },
        (other, _) => other,
    }
}

/// Retries an intent makes at most after its first attempt.
pub const MAX_RETRIES: u32 = 3;

/// The first attempt of one purchase intent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Arrival {
    /// Milliseconds after the start of the sale.
    pub at_ms: i64,
    /// The intent's number; its Idempotency-Key is derived from it.
    pub intent: u64,
    pub user: u64,
    pub isolate: usize,
}

/// The shape of the crowd.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Crowd {
    pub users: u64,
    /// Intents (first attempts).
    pub intents: u64,
    pub isolates: usize,
    /// Mean of the exponential arrival curve.
    pub mean_ms: f64,
    /// Arrivals fall in `[0, horizon_ms)`.
    pub horizon_ms: i64,
    pub skew: Option<Skew>,
}

/// Inverse CDF of the exponential distribution of mean `mean` truncated to `[0, horizon)`,
/// at `u` in `[0, 1)`.
fn truncated_exponential(u: f64, mean: f64, horizon: f64) -> f64 {
    if mean <= 0.0 {
        return 0.0;
    }
    let mass = 1.0 - (-horizon / mean).exp();
    -mean * (1.0 - u * mass).ln()
}

/// Every intent's first attempt, earliest first.
pub fn arrivals(c: &Crowd, rng: &mut fastrand::Rng) -> Vec<Arrival> {
    let users = c.users.max(1);
    let horizon = c.horizon_ms.max(1);
    let mut v: Vec<Arrival> = (0..c.intents)
        .map(|i| {
            let t = truncated_exponential(rng.f64(), c.mean_ms, horizon as f64);
            Arrival {
                at_ms: (t as i64).min(horizon - 1),
                intent: i,
                user: i % users,
                isolate: pick_isolate(rng, c.isolates, c.skew),
            }
        })
        .collect();
    v.sort_by_key(|a| (a.at_ms, a.intent));
    v
}

/// What an intent does after an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// The answer ends it: an order (201) or a refusal that a retry would not change.
    Done,
    /// Try again with the same Idempotency-Key after this many milliseconds.
    Retry { after_ms: u64 },
    /// It would retry, but has used up its [`MAX_RETRIES`].
    GiveUp,
}

/// After attempt number `tries` (1 for the first) got `status` with the `retry-after`
/// header `retry_after`: a 503 (origin unavailable, busy) or a 429 is retried after
/// Retry-After seconds (1 when absent or unreadable); anything else ends the intent.
pub fn next(status: u16, retry_after: Option<&str>, tries: u32) -> Next {
    if status != 503 && status != 429 {
        return Next::Done;
    }
    if tries > MAX_RETRIES {
        return Next::GiveUp;
    }
    let secs = retry_after
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(1);
    Next::Retry {
        after_ms: secs.max(1) * 1000,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crowd() -> Crowd {
        Crowd {
            users: 300,
            intents: 10_000,
            isolates: 20,
            mean_ms: 300.0,
            horizon_ms: 8000,
            skew: None,
        }
    }

    #[test]
    fn arrivals_follow_the_curve_and_cycle_users() {
        let a = arrivals(&crowd(), &mut fastrand::Rng::with_seed(7));
        assert_eq!(a.len(), 10_000);
        assert!(
            a.windows(2).all(|w| w[0].at_ms <= w[1].at_ms),
            "earliest first"
        );
        assert!(a.iter().all(|x| (0..8000).contains(&x.at_ms)));
        assert!(a.iter().all(|x| x.user == x.intent % 300 && x.isolate < 20));
        let mut intents: Vec<u64> = a.iter().map(|x| x.intent).collect();
        intents.sort_unstable();
        assert_eq!(intents, (0..10_000).collect::<Vec<_>>(), "each intent once");
        // Exponential, mean 300 ms: 1 - e^(-1000/300) ≈ 96.4% in the first second.
        let first = a.iter().filter(|x| x.at_ms < 1000).count();
        assert!((9500..=9800).contains(&first), "{first}");
        let mean = a.iter().map(|x| x.at_ms as f64).sum::<f64>() / 10_000.0;
        assert!((270.0..330.0).contains(&mean), "{mean}");
        let mut per_isolate = [0u32; 20];
        a.iter().for_each(|x| per_isolate[x.isolate] += 1);
        assert!(
            per_isolate.iter().all(|&n| (400..600).contains(&n)),
            "{per_isolate:?}"
        );
    }

    #[test]
    fn arrivals_are_reproducible_and_bounded() {
        let c = crowd();
        let a = arrivals(&c, &mut fastrand::Rng::with_seed(1));
        assert_eq!(a, arrivals(&c, &mut fastrand::Rng::with_seed(1)));
        assert_ne!(a, arrivals(&c, &mut fastrand::Rng::with_seed(2)));
        // A mean far beyond the horizon still lands every arrival inside it.
        let wide = Crowd {
            mean_ms: 1e9,
            horizon_ms: 500,
            ..c
        };
        assert!(arrivals(&wide, &mut fastrand::Rng::with_seed(3))
            .iter()
            .all(|x| (0..500).contains(&x.at_ms)));
        let at_once = Crowd { mean_ms: 0.0, ..c };
        assert!(arrivals(&at_once, &mut fastrand::Rng::with_seed(4))
            .iter()
            .all(|x| x.at_ms == 0));
    }

    #[test]
    fn truncated_exponential_spans_the_horizon() {
        assert_eq!(truncated_exponential(0.0, 300.0, 8000.0), 0.0);
        let top = truncated_exponential(0.999_999_999, 300.0, 8000.0);
        assert!(top < 8000.0 && top > 5000.0, "{top}");
        let median = truncated_exponential(0.5, 300.0, 1e12);
        assert!((median - 300.0 * 2f64.ln()).abs() < 1e-6, "{median}");
    }

    #[test]
    fn only_503_and_429_are_retried_after_retry_after() {
        assert_eq!(next(201, None, 1), Next::Done);
        for status in [403, 404, 409, 410, 422, 500] {
            assert_eq!(next(status, Some("5"), 1), Next::Done, "{status}");
        }
        assert_eq!(next(503, Some("1"), 1), Next::Retry { after_ms: 1000 });
        assert_eq!(next(429, Some(" 3 "), 2), Next::Retry { after_ms: 3000 });
        assert_eq!(next(503, None, 1), Next::Retry { after_ms: 1000 });
        assert_eq!(next(503, Some("soon"), 1), Next::Retry { after_ms: 1000 });
        assert_eq!(next(503, Some("0"), 1), Next::Retry { after_ms: 1000 });
        assert_eq!(
            next(503, Some("1"), MAX_RETRIES),
            Next::Retry { after_ms: 1000 }
        );
        assert_eq!(next(503, Some("1"), MAX_RETRIES + 1), Next::GiveUp);
    }

    #[test]
    fn patient_shoppers_wait_and_hammerers_do_not() {
        let b = Busy::default();
        let patient = |elapsed| after(503, Some("4"), b, None, (elapsed, Some(60_000)), 9);
        assert_eq!(patient(1000), Next::Retry { after_ms: 4000 });
        assert_eq!(patient(60_000), Next::GiveUp, "out of patience");
        let hammer = after(503, Some("4"), b, Some(200), (1000, Some(60_000)), 9);
        assert_eq!(hammer, Next::Retry { after_ms: 200 });
        assert_eq!(after(201, None, b, None, (0, Some(1)), 1), Next::Done);
        // A place far behind the units left is hopeless.
        // A `retry_ms` in the answer is finer than Retry-After, and wins.
        let soon = Busy {
            retry_ms: Some(450),
            ..b
        };
        assert_eq!(
            after(503, Some("1"), soon, None, (1000, Some(60_000)), 2),
            Next::Retry { after_ms: 450 }
        );
        let far = Busy {
            place: Some(5000),
            remaining: Some(100),
            retry_ms: None,
        };
        assert_eq!(
            after(503, Some("1"), far, None, (0, Some(60_000)), 1),
            Next::GiveUp
        );
        let near = Busy {
            place: Some(50),
            ..far
        };
        assert!(!near.hopeless());
        // Without patience, the old script's retries.
        assert_eq!(
            after(503, Some("1"), b, None, (0, None), MAX_RETRIES + 1),
            Next::GiveUp
        );
    }

    #[test]
    fn groups_split_the_crowd_by_share() {
        let mix = Mix {
            hammer: 0.1,
            early: 0.5,
        };
        let mut n = std::collections::BTreeMap::new();
        for u in 0..10_000 {
            *n.entry(group_of(u, mix)).or_insert(0) += 1;
        }
        assert!((900..1100).contains(&n[&Group::Hammer]), "{n:?}");
        assert!((2100..2400).contains(&n[&Group::Early600]), "{n:?}");
        assert!((2100..2400).contains(&n[&Group::Early10]), "{n:?}");
        let early_hammers = (0..10_000)
            .filter(|&u| group_of(u, mix) == Group::Hammer && enters_early(u, mix))
            .count();
        assert!((400..600).contains(&early_hammers), "{early_hammers}");
        let skew = Skew::parse("0.5:0.05").unwrap();
        let mut rng = fastrand::Rng::with_seed(1);
        let few = (0..10_000)
            .filter(|_| pick_isolate(&mut rng, 1000, Some(skew)) < 50)
            .count();
        assert!((5000..5600).contains(&few), "{few}");
        assert!(Skew::parse("1:0").is_err());
    }
}
