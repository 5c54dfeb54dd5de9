//! What one isolate remembers between requests, as plain data with time passed in.
//!
//! Invariants:
//! - An event snapshot is used while younger than its TTL: `cache_ms` less up to a quarter,
//!   drawn per read ([`fresh_for`]), so that isolates woken together do not refresh together
//!   for ever. When it is older, exactly one
//!   request (the refresher) reads the origin; others keep using the old snapshot until the
//!   refresher's lease (`lease_ms`, the origin timeout) runs out, or, when there is no snapshot
//!   young enough (a cold or long-idle isolate), wait for the refresher. So N requests in one
//!   TTL cost at most one origin read per isolate (at most 4/3 a `cache_ms`), and a snapshot
//!   is never used when older than `cache_ms + lease_ms`.
//! - Idempotency keys this isolate saw placed are answered here as replays; keys whose attempt
//!   may have run (the origin went silent) skip every edge rejection, so their retry always
//!   reaches the origin, which replays or decides. A retry never gets a wrong "no".
//! - User marks are lower bounds of the user's counters at the origin, so rejecting on them is
//!   never wrong; the origin stays the authority. Counters grow with purchases and go down
//!   only when a pending order expires, never before its deadline. So every answer about a
//!   user's counters carries `due`, the earliest deadline among the user's pending orders, and
//!   a mark is trusted only until the earliest `due` it has learnt: after that it is dropped
//!   and learnt afresh from the origin. Marks learnt on another calendar day are ignored for
//!   per-day caps.
//! - A placed order is replayed at the edge only before its payment deadline (after it, the
//!   order may have expired: only the origin knows); paid, expired and cancelled orders are final.
//! - A cancel gives an order's units and its user's counters back before the deadline. So every
//!   user mark and placed-order news is stamped with the event's cancel count
//!   ([`Snapshot::cancels`]) when learnt, and is used only while the snapshot shows the same
//!   count: after any cancel of the event, what this isolate knows of users and keys is learnt
//!   again from the origin (within one snapshot refresh).
//! - Every map is a [`Bounded`] one ([`MAX_TRACKED`] users' entries, [`MAX_EVENTS`] events');
//!   when full, idle entries are dropped first.

use crate::bounded::Bounded;
use crate::decision::Decision;
use crate::fleet::{Admission, Counts};
use crate::model::{day_number, parse_rfc3339_ms};
use crate::order::Line;
use crate::script::{LineAfter, OrderEnd, Outcome, PlacedCounters, Snapshot};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

pub const MAX_TRACKED: usize = 100_000;
/// Bound on the per-event maps (snapshots, reports, admission shares).
pub const MAX_EVENTS: usize = 1000;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EdgeConfig {
    pub cache_ms: i64,
    pub lease_ms: i64,
    /// Token bucket per user: refill rate and capacity.
    pub rate_per_sec: f64,
    pub rate_burst: f64,
}

struct CachedEvent {
    /// `None`: never read yet. `Some(None)`: the origin said the event does not exist.
    /// Shared with the requests that use it: a request takes a reference, not a copy.
    snapshot: Option<Option<Rc<Snapshot>>>,
    fetched_at: i64,
    /// How long this snapshot is used ([`fresh_for`]).
    ttl_ms: i64,
    refreshing_since: Option<i64>,
    /// Since when this isolate has watched the event's arrivals unreported: the exposure its
    /// next report carries (`take_report`); and whether it has reported yet.
    watched_since: i64,
    reported: bool,
}

/// How long a snapshot read at `fetched_at` is used: `cache_ms` less up to a quarter of it,
/// drawn from the moment of the read. Isolates that a surge woke together would otherwise
/// refresh together every `cache_ms`, and the line ticks in the rest of each second would
/// find nobody to claim them; with the jitter their reads drift apart within a few refreshes.
/// (An isolate reads at most a third more often.)
///
/// The first snapshot after the fleet read every line tick ([`reads_every_tick`]: the line
/// waited for a window's count, as at the start of the sale) is kept for anything from a
/// tick to `cache_ms` (`after_ticks`): the whole fleet read at the same ticks then, and would
/// otherwise leave the ticks of the next second unclaimed.
pub fn fresh_for(cache_ms: i64, fetched_at: i64, after_ticks: bool) -> i64 {
    // SplitMix64's finaliser: moments a millisecond apart land far apart.
    let mut z = (fetched_at as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let spread = if after_ticks {
        cache_ms - crate::threshold::ADVANCE_MS
    } else {
        cache_ms / 4
    };
    cache_ms - (z % (spread.max(0) as u64 + 1)) as i64
}

/// Whether an isolate holding `s` reads the origin every line tick while it has sightings to
/// report: a started line sale whose line waits for a window to be counted, or has not
/// advanced yet.
fn reads_every_tick(s: &Snapshot) -> bool {
    s.seed.is_some()
        && s.meta.fairness == crate::model::Fairness::Line
        && s.line.as_ref().is_none_or(|l| l.waiting)
}

/// The windows (ranks) of a started sale watched from `from` to `to` (Unix ms), and for how
/// long each: at most the last [`MAX_WATCH_MS`].
fn watched(from: i64, to: i64, starts_at: i64) -> Vec<(u64, u64)> {
    let mut t = from.max(starts_at).max(to - MAX_WATCH_MS);
    let mut out = Vec::new();
    while t < to {
        let end = ((t.div_euclid(1000) + 1) * 1000).min(to);
        out.push((
            crate::threshold::arrived_rank(t, starts_at),
            (end - t) as u64,
        ));
        t = end;
    }
    out
}

/// The longest time one report's exposure covers.
const MAX_WATCH_MS: i64 = 10_000;

/// What to do for an event lookup.
#[derive(Debug, PartialEq)]
pub enum SnapshotPlan {
    /// Use this (possibly a little stale) answer.
    Use(Option<Rc<Snapshot>>),
    /// This request is the refresher: read the origin, then call [`EdgeState::store`].
    Refresh,
    /// Another request is refreshing and there is nothing young enough to use: wait a little
    /// and plan again.
    Wait,
}

/// What this isolate knows about an idempotency key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyNews {
    /// Placed: the fingerprint of its lines, the order document, and until when this isolate
    /// may replay it itself (the order's pay_by; `i64::MAX` once paid).
    Placed {
        fingerprint: String,
        order_json: String,
        replay_until: i64,
        /// The event's cancel count when learnt.
        cancels: u64,
        /// The counters the order's 201 reported, for a replay's body.
        placed: Option<PlacedCounters>,
    },
    /// Its order ended unpaid (expired or cancelled): the answer is final.
    EndedUnpaid {
        fingerprint: String,
        order_json: String,
        end: OrderEnd,
    },
    /// Sent to an origin that went silent: it may have run.
    Uncertain,
}

impl KeyNews {
    /// The fingerprint of the lines the key was used for, when known.
    pub fn fingerprint(&self) -> Option<&str> {
        match self {
            KeyNews::Placed { fingerprint, .. } | KeyNews::EndedUnpaid { fingerprint, .. } => {
                Some(fingerprint)
            }
            KeyNews::Uncertain => None,
        }
    }
}

#[derive(Default, Clone, Debug, PartialEq)]
struct UserMark {
    total: u32,
    day: i64,
    today: HashMap<String, u32>,
    /// Trusted until then (the earliest pending deadline learnt); `None`: no limit.
    until: Option<i64>,
    /// The event's cancel count when learnt: trusted only while it stays the same.
    cancels: u64,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: i64,
}

/// Per-reason decision counters.
#[derive(Default, Clone, Debug, PartialEq)]
pub struct Stats {
    pub decisions: BTreeMap<&'static str, u64>,
    /// Attempts answered without any origin command.
    pub edge_rejected: u64,
    /// Purchase attempts sent to the origin.
    pub forwarded: u64,
    /// view.lua reads for the cache.
    pub view_reads: u64,
}

pub struct EdgeState {
    pub config: EdgeConfig,
    events: Bounded<String, CachedEvent>,
    marks: Bounded<(String, String), UserMark>,
    buckets: Bounded<String, Bucket>,
    keys: Bounded<(String, String, String), KeyNews>,
    /// Per event: counts since the last report to the fleet, and the admission share.
    reports: Bounded<String, Counts>,
    admissions: Bounded<String, Admission>,
    pub stats: Stats,
}

/// When counters were learnt: the request's time, its calendar day in the event's zone, and
/// the earliest pending deadline the origin reported (`None`: the user has none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CountsAt {
    pub now: i64,
    pub day: i64,
    pub due: Option<i64>,
}

/// A purchase the origin answered, as [`EdgeState::learn_purchase`] learns from it.
pub struct Purchase<'a> {
    pub event: &'a str,
    pub user: &'a str,
    pub key: &'a str,
    /// The canonical form of the attempt's lines (`order::fingerprint`).
    pub fingerprint: &'a str,
    pub lines: &'a [Line],
    /// The order document sent, and its payment deadline (ms).
    pub order_json: &'a str,
    pub pay_by: i64,
    /// The time of the attempt, and its calendar day in the event's zone.
    pub now: i64,
    pub day: i64,
}

/// An order document's `pay_by` in ms (0 when it has none: never replayed at the edge).
fn pay_by_of(order_json: &str) -> i64 {
    serde_json::from_str::<serde_json::Value>(order_json)
        .ok()
        .and_then(|d| parse_rfc3339_ms(d.get("pay_by")?.as_str()?))
        .unwrap_or(0)
}

/// Why the edge refused an attempt on the user's own counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CapHit {
    Item { sku: String, today: u32 },
    Total { total: u32 },
}

impl EdgeState {
    pub fn new(config: EdgeConfig) -> EdgeState {
        EdgeState {
            config,
            events: Bounded::new(MAX_EVENTS),
            marks: Bounded::new(MAX_TRACKED),
            buckets: Bounded::new(MAX_TRACKED),
            keys: Bounded::new(MAX_TRACKED),
            reports: Bounded::new(MAX_EVENTS),
            admissions: Bounded::new(MAX_EVENTS),
            stats: Stats::default(),
        }
    }

    pub fn plan(&mut self, event: &str, now: i64) -> SnapshotPlan {
        let c = self.config;
        let e = self
            .events
            .entry_or_insert_with(event.to_string(), || CachedEvent {
                snapshot: None,
                fetched_at: i64::MIN / 2,
                ttl_ms: 0,
                refreshing_since: None,
                watched_since: now,
                reported: false,
            });
        let age = now - e.fetched_at;
        // A snapshot read before the start is not used after it: the start changes what the
        // edge decides (the flag, and a line's seed, revealed from then on).
        let crossed = (e.snapshot.as_ref().and_then(Option::as_ref))
            .is_some_and(|s| e.fetched_at < s.meta.starts_at && now >= s.meta.starts_at);
        // While the line waits for a window to be counted, an isolate that has seen some of
        // its shoppers reports them every line tick rather than once a refresh interval.
        // (A started line sale whose line has not advanced yet waits too. An operator who set
        // a cache longer than the line's horizon has chosen fewer reads over a line that
        // keeps up: that cache is kept.)
        let counting = c.cache_ms <= crate::threshold::HORIZON_MS
            && (e.snapshot.as_ref().and_then(Option::as_ref)).is_some_and(|s| reads_every_tick(s))
            && age >= crate::threshold::ADVANCE_MS
            && self.reports.get(event).is_some_and(Counts::has_sightings);
        if let Some(s) = &e.snapshot {
            if age < e.ttl_ms && !crossed && !counting {
                return SnapshotPlan::Use(s.clone());
            }
        }
        if e.refreshing_since.is_some_and(|t| now - t < c.lease_ms) {
            return match &e.snapshot {
                Some(s) if age < c.cache_ms + c.lease_ms && !crossed => {
                    SnapshotPlan::Use(s.clone())
                }
                _ => SnapshotPlan::Wait,
            };
        }
        e.refreshing_since = Some(now);
        SnapshotPlan::Refresh
    }

    /// The refresher's result. `None` for `result` means the read failed: the lease is
    /// released and the old snapshot keeps aging.
    pub fn store(&mut self, event: &str, result: Option<Option<Rc<Snapshot>>>, now: i64) {
        if let Some(Some(s)) = &result {
            let remaining = s.items.iter().map(|i| u64::from(i.remaining())).sum();
            let a = (self.admissions).entry_or_insert_with(event.to_string(), Admission::default);
            a.update(
                s.meta.origin_budget,
                remaining,
                s.fleet.as_ref(),
                s.meta.starts_at,
            );
        }
        match result {
            Some(snapshot) => {
                let ticking = |s: Option<&Rc<Snapshot>>| s.is_some_and(|s| reads_every_tick(s));
                let (watched_since, reported, was_ticking) =
                    (self.events.get(event)).map_or((now, false, false), |e| {
                        let old = e.snapshot.as_ref().and_then(Option::as_ref);
                        (e.watched_since, e.reported, ticking(old))
                    });
                let after_ticks = was_ticking && !ticking(snapshot.as_ref());
                self.events.insert(
                    event.to_string(),
                    CachedEvent {
                        snapshot: Some(snapshot),
                        fetched_at: now,
                        ttl_ms: fresh_for(self.config.cache_ms, now, after_ticks),
                        refreshing_since: None,
                        watched_since,
                        reported,
                    },
                );
            }
            None => {
                if let Some(e) = self.events.get_mut(event) {
                    e.refreshing_since = None;
                }
            }
        }
    }

    /// What this isolate knows of a key. A placed order learnt before the event's latest
    /// cancel may be the one cancelled: it is uncertain, so the origin answers (and no edge
    /// refusal, such as sold out, stands in for the key's own order).
    pub fn key_news(&self, event: &str, user: &str, key: &str) -> Option<&KeyNews> {
        static UNCERTAIN: KeyNews = KeyNews::Uncertain;
        let cancels = self.cancels(event);
        let news = self
            .keys
            .get(&(event.to_string(), user.to_string(), key.to_string()))?;
        match news {
            KeyNews::Placed { cancels: c, .. } if *c != cancels => Some(&UNCERTAIN),
            _ => Some(news),
        }
    }

    /// The event's cancel count in the cached snapshot (0 without one).
    fn cancels(&self, event: &str) -> u64 {
        self.events
            .get(event)
            .and_then(|e| e.snapshot.as_ref())
            .and_then(Option::as_ref)
            .map_or(0, |s| s.cancels)
    }

    pub fn learn_key(&mut self, event: &str, user: &str, key: &str, news: Option<KeyNews>) {
        let k = (event.to_string(), user.to_string(), key.to_string());
        match news {
            Some(n) => {
                self.keys.insert(k, n);
            }
            None => {
                self.keys.remove(&k);
            }
        }
    }

    /// Applies stock news from a purchase reply: `remaining` of `sku` as the origin reported it.
    pub fn learn_remaining(&mut self, event: &str, sku: &str, remaining: u32) {
        if let Some(snap) = self
            .events
            .get_mut(event)
            .and_then(|e| e.snapshot.as_mut())
            .and_then(Option::as_mut)
        {
            // Copied only if a request still holds the old one; it keeps what it read.
            let snap = Rc::make_mut(snap);
            if let Some(i) = snap.meta.items.iter().position(|it| it.sku == sku) {
                let item = &mut snap.items[i];
                item.sold = item.sold.max(item.stock.saturating_sub(remaining));
            }
        }
    }

    /// What the origin's answer to a purchase teaches this isolate: the key's news, the
    /// user's counters, an item's stock, or that its snapshot of the sale is stale.
    pub fn learn_purchase(&mut self, p: &Purchase<'_>, outcome: &Outcome) {
        let (event, user) = (p.event, p.user);
        let at = |due: Option<i64>| CountsAt {
            now: p.now,
            day: p.day,
            due,
        };
        let sku = |i: usize| p.lines[i].sku.as_str();
        let cancels = self.cancels(event);
        let placed = |json: &str, replay_until: i64, counters: Option<PlacedCounters>| {
            Some(KeyNews::Placed {
                fingerprint: p.fingerprint.to_string(),
                order_json: json.to_string(),
                replay_until,
                cancels,
                placed: counters,
            })
        };
        let news = match outcome {
            Outcome::Placed { total, lines, .. } => placed(
                p.order_json,
                p.pay_by,
                Some(PlacedCounters {
                    total: *total,
                    today: lines.iter().map(|l| l.today).collect(),
                }),
            ),
            Outcome::Replayed {
                order_json,
                paid,
                placed: counters,
                ..
            } => {
                let until = if *paid {
                    i64::MAX
                } else {
                    pay_by_of(order_json)
                };
                placed(order_json, until, counters.clone())
            }
            Outcome::EndedUnpaid { order_json, end } => Some(KeyNews::EndedUnpaid {
                fingerprint: p.fingerprint.to_string(),
                order_json: order_json.clone(),
                end: *end,
            }),
            _ => None,
        };
        self.learn_key(event, user, p.key, news);
        match outcome {
            Outcome::Placed { total, due, lines } => {
                self.learn_placed(event, user, at(*due), *total, p.lines, lines)
            }
            Outcome::Replayed { total, due, .. } | Outcome::TotalLimit { total, due } => {
                self.learn_counts(event, user, at(*due), Some(*total), &[])
            }
            Outcome::SoldOut { line, remaining } => {
                self.learn_remaining(event, sku(*line), *remaining)
            }
            Outcome::ItemLimit { line, today, due } => {
                self.learn_counts(event, user, at(*due), None, &[(sku(*line), *today)])
            }
            // The origin knows better than our snapshot about the sale itself: drop it.
            Outcome::NotStarted
            | Outcome::Paused
            | Outcome::Ended
            | Outcome::UnknownEvent
            | Outcome::UnknownItem { .. } => self.invalidate(event),
            Outcome::EndedUnpaid { .. }
            | Outcome::KeyReused
            | Outcome::OrderQtyLimit { .. }
            | Outcome::BadArguments => {}
        }
    }

    /// Forget the snapshot (e.g. the origin said the event state differs from ours).
    pub fn invalidate(&mut self, event: &str) {
        self.events.remove(event);
    }

    fn mark(&mut self, event: &str, user: &str) -> &mut UserMark {
        self.marks
            .entry_or_insert_with((event.to_string(), user.to_string()), UserMark::default)
    }

    /// Learns the user's counters from the origin's answer at `now`; `due` is the earliest
    /// deadline among the user's pending orders that the answer reported.
    pub fn learn_counts(
        &mut self,
        event: &str,
        user: &str,
        at: CountsAt,
        total: Option<u32>,
        today: &[(&str, u32)],
    ) {
        let CountsAt { now, day, due } = at;
        let cancels = self.cancels(event);
        let m = self.mark(event, user);
        if m.until.is_some_and(|u| now >= u) || m.cancels != cancels {
            *m = UserMark {
                cancels,
                ..UserMark::default()
            };
        }
        m.until = match (m.until, due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(t) = total {
            m.total = m.total.max(t);
        }
        if !today.is_empty() && m.day != day {
            m.day = day;
            m.today.clear();
        }
        for (sku, n) in today {
            let e = m.today.entry(sku.to_string()).or_insert(0);
            *e = (*e).max(*n);
        }
    }

    pub fn learn_placed(
        &mut self,
        event: &str,
        user: &str,
        at: CountsAt,
        total: u32,
        lines: &[Line],
        after: &[LineAfter],
    ) {
        let today: Vec<(&str, u32)> = lines
            .iter()
            .zip(after)
            .map(|(l, a)| (l.sku.as_str(), a.today))
            .collect();
        self.learn_counts(event, user, at, Some(total), &today);
        for (l, a) in lines.iter().zip(after) {
            self.learn_remaining(event, &l.sku, a.remaining);
        }
    }

    /// The user's counters as far as this isolate trusts them at `now`, to sign for the user's
    /// other tabs (`usermark`).
    pub fn user_mark(
        &self,
        event: &str,
        user: &str,
        now: i64,
    ) -> Option<crate::usermark::UserMark> {
        let cancels = self.cancels(event);
        let m = (self.marks.get(&(event.to_string(), user.to_string())))
            .filter(|m| m.until.is_none_or(|u| now < u) && m.cancels == cancels)?;
        let mut today: Vec<(String, u32)> = m.today.iter().map(|(s, n)| (s.clone(), *n)).collect();
        today.sort();
        Some(crate::usermark::UserMark {
            event: event.to_string(),
            user: user.to_string(),
            day: m.day,
            until: m.until,
            cancels: m.cancels,
            total: m.total,
            today,
        })
    }

    /// Learns the user's counters from a mark another isolate signed (`usermark`), if it is
    /// still to be trusted at `now` with the event's cancel count `cancels`.
    pub fn learn_mark(&mut self, m: &crate::usermark::UserMark, cancels: u64, now: i64) {
        if m.cancels != cancels || m.until.is_some_and(|u| now >= u) {
            return;
        }
        let today: Vec<(&str, u32)> = m.today.iter().map(|(s, n)| (s.as_str(), *n)).collect();
        let at = CountsAt {
            now,
            day: m.day,
            due: m.until,
        };
        self.learn_counts(&m.event, &m.user, at, Some(m.total), &today);
    }

    /// The user's total as far as this isolate knows.
    pub fn known_total(&self, event: &str, user: &str, now: i64) -> Option<u32> {
        let cancels = self.cancels(event);
        self.marks
            .get(&(event.to_string(), user.to_string()))
            .filter(|m| m.until.is_none_or(|u| now < u) && m.cancels == cancels)
            .map(|m| m.total)
    }

    /// Would this attempt go past a cap the edge already knows the user has used up?
    pub fn cap_hit(
        &self,
        event: &str,
        user: &str,
        snap: &Snapshot,
        lines: &[Line],
        now: i64,
    ) -> Option<CapHit> {
        let m = self.marks.get(&(event.to_string(), user.to_string()))?;
        if m.until.is_some_and(|u| now >= u) || m.cancels != snap.cancels {
            return None;
        }
        let caps = snap.meta.caps;
        let sum: u32 = lines.iter().map(|l| l.qty).sum();
        if m.day == day_number(now, snap.meta.utc_offset_min) {
            for l in lines {
                let today = m.today.get(&l.sku).copied().unwrap_or(0);
                if today + l.qty > caps.per_item_per_day {
                    return Some(CapHit::Item {
                        sku: l.sku.clone(),
                        today,
                    });
                }
            }
        }
        (m.total + sum > caps.total).then_some(CapHit::Total { total: m.total })
    }

    /// Takes one token from `key`'s bucket; on refusal, the seconds until one is back.
    pub fn take_token(&mut self, key: &str, now: i64) -> Result<(), u64> {
        let (rate, burst) = (self.config.rate_per_sec, self.config.rate_burst);
        if rate <= 0.0 {
            return Ok(());
        }
        // Buckets that have refilled are idle: their users may be forgotten first.
        (self.buckets).make_room(key, |b| {
            b.tokens + (now - b.at) as f64 / 1000.0 * rate >= burst
        });
        let b = (self.buckets).entry_or_insert_with(key.to_string(), || Bucket {
            tokens: burst,
            at: now,
        });
        b.tokens = (b.tokens + (now - b.at).max(0) as f64 / 1000.0 * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / rate).ceil().max(1.0) as u64)
        }
    }

    /// This isolate's counts for `event` since its last report.
    pub fn event_counts(&mut self, event: &str) -> &mut Counts {
        (self.reports).entry_or_insert_with(event.to_string(), Counts::default)
    }

    /// The counts to report with the next refresh at `now` (the caller gives them back with
    /// [`EdgeState::restore_report`] if the report does not reach the origin). For a started
    /// line sale they include the time watched since the last report, per window.
    pub fn take_report(&mut self, event: &str, now: i64) -> Counts {
        let mut counts = self.reports.remove(event).unwrap_or_default();
        if let Some(e) = self.events.get_mut(event) {
            // An isolate that reports more than once a second (a line waiting for its counts)
            // is one isolate of the fleet, not several.
            counts.again = e.reported && e.watched_since.div_euclid(1000) == now.div_euclid(1000);
            e.reported = true;
            let line_sale = (e.snapshot.as_ref().and_then(Option::as_ref))
                .filter(|s| s.meta.fairness == crate::model::Fairness::Line);
            if let Some(s) = line_sale {
                for (rank, ms) in watched(e.watched_since, now, s.meta.starts_at) {
                    counts.expose(rank, ms);
                }
            }
            // (A report made at an earlier time than the last, by a request that came
            // earlier, covers nothing new.)
            e.watched_since = e.watched_since.max(now);
        }
        counts
    }

    pub fn restore_report(&mut self, event: &str, counts: Counts) {
        self.event_counts(event).merge(counts);
    }

    /// Each event's admission state, for the operator.
    pub fn admissions(&self) -> impl Iterator<Item = (&String, &Admission)> {
        self.admissions.iter()
    }

    /// Whether to forward one candidate attempt for `event` (see `fleet`).
    pub fn admit(&mut self, event: &str, roll: f64, now: i64) -> bool {
        (self.admissions)
            .entry_or_insert_with(event.to_string(), Admission::default)
            .admit(roll, now)
    }

    pub fn count(&mut self, decision: Decision, at_edge: bool) {
        *self.stats.decisions.entry(decision.as_str()).or_insert(0) += 1;
        if at_edge {
            self.stats.edge_rejected += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Caps, EventMeta, ItemInfo, Price, State};
    use crate::script::ItemView;

    fn cfg() -> EdgeConfig {
        EdgeConfig {
            cache_ms: 1000,
            lease_ms: 500,
            rate_per_sec: 2.0,
            rate_burst: 3.0,
        }
    }

    fn snap() -> Snapshot {
        Snapshot {
            meta: EventMeta {
                id: "e".into(),
                name: "E".into(),
                utc_offset_min: 0,
                starts_at: 0,
                ends_at: i64::MAX / 2,
                flag: State::Live,
                caps: Caps {
                    per_item_per_day: 1,
                    total: 2,
                    per_order_qty: 1,
                },
                items: vec![ItemInfo {
                    sku: "A".into(),
                    name: "A".into(),
                    price: Price {
                        amount: 1,
                        currency: "USD".into(),
                    },
                }],
                pay_within_ms: 900_000,
                origin_budget: 1000,
                fairness: crate::model::Fairness::Attempt,
                commitment: None,
            },
            items: vec![ItemView { stock: 10, sold: 0 }],
            stream_len: 0,
            pending: 0,
            fleet: None,
            cancels: 0,
            fleet_now: Default::default(),
            origin_before: [None; 2],
            seed: None,
            line: None,
            entrants: Default::default(),
            sampled_intents: (0, 0),
            exposure: Default::default(),
            claimed: false,
        }
    }

    fn kind(p: SnapshotPlan) -> &'static str {
        match p {
            SnapshotPlan::Refresh => "refresh",
            SnapshotPlan::Wait => "wait",
            SnapshotPlan::Use(Some(_)) => "use",
            SnapshotPlan::Use(None) => "use none",
        }
    }

    /// Plans a lookup at each time in `at`; each must be `want`.
    fn expect(s: &mut EdgeState, at: &[i64], want: &str, why: &str) {
        for &t in at {
            assert_eq!(kind(s.plan("e", t)), want, "{why} (at {t})");
        }
    }

    #[test]
    fn a_snapshot_read_before_the_start_is_not_used_after_it() {
        // The sale starts at 600: the snapshot read at 0 says "not started" (and, for a line,
        // has no seed yet). From 600 on it is refreshed, and not used meanwhile.
        let mut s = EdgeState::new(cfg());
        let before = Snapshot {
            meta: EventMeta {
                starts_at: 600,
                ..snap().meta
            },
            ..snap()
        };
        expect(&mut s, &[0], "refresh", "cold");
        s.store("e", Some(Some(Rc::new(before.clone()))), 0);
        expect(&mut s, &[1, 599], "use", "before the start");
        expect(&mut s, &[600], "refresh", "the start");
        expect(
            &mut s,
            &[601, 900],
            "wait",
            "not the pre-start one meanwhile",
        );
        s.store("e", Some(Some(Rc::new(before))), 650);
        let ttl = fresh_for(1000, 650, false);
        expect(
            &mut s,
            &[651, 650 + ttl - 1],
            "use",
            "read after the start: cached as usual",
        );
        expect(&mut s, &[650 + ttl], "refresh", "then refreshed");
    }

    #[test]
    fn one_refresher_per_window() {
        let mut s = EdgeState::new(cfg());
        expect(&mut s, &[0], "refresh", "cold: one request refreshes");
        expect(&mut s, &[1], "wait", "cold: others wait for the refresher");
        s.store("e", Some(Some(Rc::new(snap()))), 0);
        // Kept for the refresh interval less its jitter.
        let ttl = fresh_for(1000, 0, false);
        assert!((750..1000).contains(&ttl), "{ttl}");
        expect(&mut s, &[1, 500, ttl - 1], "use", "fresh");
        expect(&mut s, &[ttl], "refresh", "first stale request refreshes");
        expect(
            &mut s,
            &[ttl + 1, ttl + 499],
            "use",
            "others use the old one",
        );
        expect(
            &mut s,
            &[ttl + 500],
            "refresh",
            "lease expired: someone else refreshes",
        );
        s.store("e", None, 1600);
        expect(
            &mut s,
            &[1601],
            "refresh",
            "a failed refresh frees the lease",
        );
        expect(
            &mut s,
            &[1602],
            "wait",
            "too old to use while that refresh runs",
        );
        s.store("e", Some(None), 1700);
        expect(&mut s, &[1701], "use none", "unknown events are cached too");
        expect(&mut s, &[10_000], "refresh", "long idle: one refresher");
        expect(
            &mut s,
            &[10_001],
            "wait",
            "the rest wait instead of reading too",
        );
    }

    /// A started line sale whose line waits at `waiting` (or has no state yet: `None`).
    fn line_sale(starts_at: i64, waiting: Option<bool>) -> Snapshot {
        let line = waiting.map(|w| crate::threshold::LineState {
            waiting: w,
            ..crate::threshold::LineState::from_fields(
                &[
                    ("at", "0"),
                    ("pos", "1"),
                    ("speed", "0"),
                    ("rate", "1"),
                    ("gain", "1"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            )
            .unwrap()
        });
        Snapshot {
            meta: EventMeta {
                starts_at,
                fairness: crate::model::Fairness::Line,
                ..snap().meta
            },
            seed: Some(crate::line::Seed([7; 32])),
            line,
            ..snap()
        }
    }

    #[test]
    fn a_line_waiting_for_its_count_hears_from_isolates_every_tick() {
        for waiting in [Some(true), None] {
            let mut s = EdgeState::new(cfg());
            expect(&mut s, &[0], "refresh", "cold");
            s.store("e", Some(Some(Rc::new(line_sale(0, waiting)))), 0);
            expect(&mut s, &[300], "use", "nothing seen yet: nothing to tell");
            s.event_counts("e").sight(1, "u", "k");
            expect(&mut s, &[100], "use", "within a tick of the last read");
            expect(
                &mut s,
                &[300],
                "refresh",
                "{waiting:?}: a sighting to report",
            );
        }
        // An operator's cache longer than the line's horizon is kept.
        let mut s = EdgeState::new(EdgeConfig {
            cache_ms: 60_000,
            ..cfg()
        });
        expect(&mut s, &[0], "refresh", "cold");
        s.store("e", Some(Some(Rc::new(line_sale(0, Some(true))))), 0);
        s.event_counts("e").sight(1, "u", "k");
        let ttl = fresh_for(60_000, 0, false);
        expect(&mut s, &[300, ttl - 1], "use", "a long cache");
        // A line inside a counted window: once a refresh interval, sightings or not.
        let mut s = EdgeState::new(cfg());
        expect(&mut s, &[0], "refresh", "cold");
        s.store("e", Some(Some(Rc::new(line_sale(0, Some(false))))), 0);
        s.event_counts("e").sight(1, "u", "k");
        expect(
            &mut s,
            &[300, fresh_for(1000, 0, false) - 1],
            "use",
            "not waiting",
        );
    }

    #[test]
    fn reports_carry_the_time_watched_per_window_and_count_an_isolate_once_a_second() {
        let mut s = EdgeState::new(cfg());
        // The sale starts at 10,400 (window 1 is 10,400 to 11,000); the isolate's first
        // request comes at 10,100.
        expect(&mut s, &[10_100], "refresh", "cold");
        s.store(
            "e",
            Some(Some(Rc::new(line_sale(10_400, Some(true))))),
            10_100,
        );
        let first = s.take_report("e", 10_100).to_args();
        assert_eq!(
            first,
            ["reports", "1"],
            "nothing watched after the start yet"
        );
        let r = s.take_report("e", 11_250).to_args();
        assert_eq!(r, ["reports", "1", "~1", "600", "~2", "250"]);
        let late = s.take_report("e", 11_100).to_args();
        assert_eq!(
            late,
            [] as [&str; 0],
            "a request from before the last report"
        );
        let again = s.take_report("e", 11_500).to_args();
        assert_eq!(again, ["~2", "250"], "a second report in the same second");
        // An attempt sale reports no exposure.
        let mut a = EdgeState::new(cfg());
        expect(&mut a, &[0], "refresh", "cold");
        a.store("e", Some(Some(Rc::new(snap()))), 0);
        assert_eq!(a.take_report("e", 2500).to_args(), ["reports", "1"]);
    }

    #[test]
    fn learnt_stock_only_goes_down() {
        let mut s = EdgeState::new(cfg());
        s.store("e", Some(Some(Rc::new(snap()))), 0);
        s.learn_remaining("e", "A", 0);
        s.learn_remaining("e", "A", 5);
        let SnapshotPlan::Use(Some(sn)) = s.plan("e", 1) else {
            panic!()
        };
        assert_eq!(sn.items[0].remaining(), 0);
    }

    /// An order for one A.
    fn one_a() -> Vec<Line> {
        vec![Line {
            sku: "A".into(),
            qty: 1,
        }]
    }

    #[test]
    fn caps_at_the_edge_roll_over_with_the_day() {
        let mut s = EdgeState::new(cfg());
        let (sn, a) = (snap(), one_a());
        assert_eq!(s.cap_hit("e", "u", &sn, &a, 10), None, "nothing known");
        s.learn_placed(
            "e",
            "u",
            CountsAt {
                now: 10,
                day: 0,
                due: None,
            },
            1,
            &a,
            &[LineAfter {
                today: 1,
                remaining: 9,
            }],
        );
        assert_eq!(
            s.cap_hit("e", "u", &sn, &a, 10),
            Some(CapHit::Item {
                sku: "A".into(),
                today: 1
            })
        );
        assert_eq!(s.cap_hit("e", "other", &sn, &a, 10), None);
        let next_day = crate::model::MS_PER_DAY;
        assert_eq!(
            s.cap_hit("e", "u", &sn, &a, next_day),
            None,
            "new day, item cap resets"
        );
        let at = CountsAt {
            now: next_day,
            day: 1,
            due: None,
        };
        s.learn_counts("e", "u", at, Some(2), &[]);
        assert_eq!(
            s.cap_hit("e", "u", &sn, &a, next_day),
            Some(CapHit::Total { total: 2 })
        );
    }

    #[test]
    fn marks_are_trusted_only_until_a_pending_order_could_expire() {
        let mut s = EdgeState::new(cfg());
        let (sn, a) = (snap(), one_a());
        let at = |now, due| CountsAt { now, day: 0, due };
        // The user holds 2 (the cap) with an order due at 5_000: until then the edge refuses.
        s.learn_counts("e", "u", at(100, Some(5_000)), Some(2), &[("A", 1)]);
        assert!(s.cap_hit("e", "u", &sn, &a, 4_999).is_some());
        assert_eq!(s.known_total("e", "u", 4_999), Some(2));
        // From the deadline on, the order may have expired: the edge no longer refuses.
        assert_eq!(s.cap_hit("e", "u", &sn, &a, 5_000), None);
        assert_eq!(s.known_total("e", "u", 5_000), None);
        // After the expiry the origin reports lower counters: they replace the stale mark
        // instead of being merged with it.
        s.learn_counts("e", "u", at(5_100, None), Some(1), &[("A", 0)]);
        assert_eq!(s.known_total("e", "u", 5_100), Some(1));
        assert_eq!(s.cap_hit("e", "u", &sn, &a, 5_100), None);
        // An earlier deadline learnt later still bounds the trust.
        s.learn_counts("e", "u", at(6_000, Some(9_000)), Some(2), &[]);
        s.learn_counts("e", "u", at(6_001, None), Some(2), &[]);
        assert!(s.cap_hit("e", "u", &sn, &a, 8_999).is_some());
        assert_eq!(s.cap_hit("e", "u", &sn, &a, 9_000), None);
    }

    /// A cancel gives counters back before any deadline: marks and placed-order news learnt
    /// under another cancel count are not trusted, and are learnt afresh.
    #[test]
    fn a_cancel_of_the_event_voids_what_was_learnt_of_users_and_keys() {
        let mut s = EdgeState::new(cfg());
        let a = one_a();
        s.store("e", Some(Some(Rc::new(snap()))), 0);
        let at = CountsAt {
            now: 100,
            day: 0,
            due: Some(1_000_000),
        };
        s.learn_counts("e", "u", at, Some(2), &[("A", 1)]);
        let placed = KeyNews::Placed {
            fingerprint: "A:1".into(),
            order_json: "{}".into(),
            replay_until: 1_000_000,
            cancels: 0,
            placed: None,
        };
        s.learn_key("e", "u", "k", Some(placed.clone()));
        assert!(s.cap_hit("e", "u", &snap(), &a, 200).is_some());
        assert_eq!(s.key_news("e", "u", "k"), Some(&placed));

        // The next snapshot shows a cancel somewhere in the event.
        let cancelled = Snapshot {
            cancels: 1,
            ..snap()
        };
        s.store("e", Some(Some(Rc::new(cancelled.clone()))), 1_000);
        assert_eq!(s.cap_hit("e", "u", &cancelled, &a, 1_001), None);
        assert_eq!(s.known_total("e", "u", 1_001), None);
        assert_eq!(
            s.key_news("e", "u", "k"),
            Some(&KeyNews::Uncertain),
            "the origin answers"
        );
        // What the origin says next is trusted again, under the new count.
        s.learn_counts(
            "e",
            "u",
            CountsAt { now: 1_100, ..at },
            Some(2),
            &[("A", 1)],
        );
        assert!(s.cap_hit("e", "u", &cancelled, &a, 1_200).is_some());
        assert_eq!(s.known_total("e", "u", 1_200), Some(2));
    }

    #[test]
    fn key_news() {
        let mut s = EdgeState::new(cfg());
        assert_eq!(s.key_news("e", "u", "k"), None);
        s.learn_key("e", "u", "k", Some(KeyNews::Uncertain));
        assert_eq!(s.key_news("e", "u", "k"), Some(&KeyNews::Uncertain));
        assert_eq!(s.key_news("e", "v", "k"), None, "keys are per user");
        s.learn_key("e", "u", "k", None);
        assert_eq!(s.key_news("e", "u", "k"), None);
    }

    #[test]
    fn token_bucket() {
        let mut s = EdgeState::new(cfg());
        for _ in 0..3 {
            assert_eq!(s.take_token("u", 0), Ok(()));
        }
        assert_eq!(s.take_token("u", 0), Err(1));
        assert_eq!(s.take_token("v", 0), Ok(()), "per user");
        assert_eq!(
            s.take_token("u", 500),
            Ok(()),
            "2/s refills one token in 500 ms"
        );
        assert_eq!(s.take_token("u", 500), Err(1));
    }

    #[test]
    fn snapshots_are_kept_for_the_refresh_interval_less_a_jitter_drawn_per_read() {
        let ttls: Vec<i64> = (0..1000)
            .map(|t| fresh_for(1000, 1_800_000_000_000 + t, false))
            .collect();
        assert!(ttls.iter().all(|&t| (750..=1000).contains(&t)), "{ttls:?}");
        // Reads a millisecond apart are kept for different times, spread over the quarter.
        let distinct: std::collections::HashSet<_> = ttls.iter().collect();
        assert!(distinct.len() > 150, "{} distinct", distinct.len());
        let mean = ttls.iter().sum::<i64>() as f64 / ttls.len() as f64;
        assert!((850.0..=900.0).contains(&mean), "mean {mean}");
        // The same read, the same TTL; a cache of 0 stays 0.
        assert_eq!(fresh_for(1000, 42, false), fresh_for(1000, 42, false));
        assert_eq!(fresh_for(0, 42, false), 0);
    }

    #[test]
    fn the_first_snapshot_after_the_fleet_read_every_tick_is_kept_for_a_tick_to_a_refresh() {
        // Over many moments: anything from a tick (250 ms) to the refresh interval.
        let ttls: Vec<i64> = (0..1000).map(|t| fresh_for(1000, t * 7, true)).collect();
        assert!(ttls.iter().all(|&t| (250..=1000).contains(&t)), "{ttls:?}");
        let (lo, hi) = (ttls.iter().min().unwrap(), ttls.iter().max().unwrap());
        assert!(*lo < 300 && *hi > 950, "{lo}..{hi}");
        // An isolate whose line waited (it read every tick) learns the line has entered.
        let mut s = EdgeState::new(cfg());
        expect(&mut s, &[0], "refresh", "cold");
        s.store("e", Some(Some(Rc::new(line_sale(0, Some(true))))), 0);
        s.event_counts("e").sight(1, "u", "k");
        expect(&mut s, &[250], "refresh", "waiting: every tick");
        s.store("e", Some(Some(Rc::new(line_sale(0, Some(false))))), 250);
        let ttl = fresh_for(1000, 250, true);
        assert_ne!(ttl, fresh_for(1000, 250, false), "drawn wider");
        expect(
            &mut s,
            &[251, 250 + ttl - 1],
            "use",
            "kept for its drawn TTL",
        );
        expect(&mut s, &[250 + ttl], "refresh", "then refreshed");
        // Its next snapshot (the line still entered) is kept as usual.
        s.store("e", Some(Some(Rc::new(line_sale(0, Some(false))))), 2000);
        let usual = fresh_for(1000, 2000, false);
        expect(&mut s, &[2000 + usual - 1], "use", "usual TTL");
        expect(&mut s, &[2000 + usual], "refresh", "usual TTL");
    }
}
