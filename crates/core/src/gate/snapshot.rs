//! The event snapshot an isolate works from: from its cache, or (for one request at a time)
//! from the origin through view.lua. See `edge` for the freshness invariants.

use super::Gate;
use crate::edge::SnapshotPlan;
use crate::keys::EventKeys;
use crate::origin::{Origin, OriginError};
use crate::script::{line_call, parse_view, view_call, Snapshot, LINE, VIEW};
use crate::threshold::{self, Inputs, ADVANCE_MS, HORIZON_MS, SETTLE_MS};
use std::rc::Rc;

/// How long a request waits between looks at a snapshot another request is refreshing.
const WAIT_STEP_MS: u64 = 5;

impl Gate {
    /// The event snapshot, shared with the isolate's cache; `None` when the event does not
    /// exist.
    pub async fn snapshot<O: Origin>(
        &self,
        origin: &O,
        event: &str,
        now: i64,
    ) -> Result<Option<Rc<Snapshot>>, OriginError> {
        let lease = self.config.edge.lease_ms.max(0) as u64;
        let mut waited = 0;
        loop {
            // Time passes while a request waits for another's refresh: it plans, and may
            // refresh (and report), at the time it has got to, not the time it came.
            let now = now + waited as i64;
            let plan = self.state.borrow_mut().plan(event, now);
            match plan {
                SnapshotPlan::Use(s) => return Ok(s),
                SnapshotPlan::Wait if waited < lease => {
                    origin.sleep(WAIT_STEP_MS).await;
                    waited += WAIT_STEP_MS;
                }
                SnapshotPlan::Wait => {
                    return Err(OriginError::not_sent(
                        "the event snapshot is being refreshed by another request",
                    ))
                }
                SnapshotPlan::Refresh => {
                    // The refresher reports this isolate's counts for the event on the way.
                    let report = {
                        let mut st = self.state.borrow_mut();
                        st.stats.view_reads += 1;
                        st.take_report(event, now)
                    };
                    let read = match read_view(origin, event, now, &report.to_args()).await {
                        Ok(Some(s)) if s.claimed => {
                            let tick = now.div_euclid(ADVANCE_MS);
                            let (s, at) = settle(origin, event, s, now).await;
                            Ok(Some(advance_line(origin, s, tick, at).await))
                        }
                        other => other,
                    }
                    .map(|s| s.map(Rc::new));
                    let mut st = self.state.borrow_mut();
                    if read.as_ref().is_err_and(|e| !e.ran_maybe()) {
                        st.restore_report(event, report);
                    }
                    st.store(event, read.as_ref().ok().cloned(), now);
                    return read;
                }
            }
        }
    }
}

/// One view.lua read of `event` at `now`, carrying `report` (empty: none, and no claim).
async fn read_view<O: Origin>(
    origin: &O,
    event: &str,
    now: i64,
    report: &[String],
) -> Result<Option<Snapshot>, OriginError> {
    let (keys, args) = view_call(&EventKeys::new(event), now, report);
    (VIEW.eval(origin, &keys, &args).await).and_then(|v| parse_view(&v, now.div_euclid(1000)))
}

/// The claimer of a tick while the line waits for a window to be counted: it reads again
/// [`SETTLE_MS`] later, without a report or a claim, so that the line advances from the
/// reports the fleet made at the tick, not only those made before it (see `SETTLE_MS`). The
/// claim stays with the first read; a failed second read leaves the first.
async fn settle<O: Origin>(origin: &O, event: &str, s: Snapshot, now: i64) -> (Snapshot, i64) {
    if !s.line.as_ref().is_none_or(|l| l.waiting) {
        return (s, now);
    }
    origin.sleep(SETTLE_MS as u64).await;
    let later = now + SETTLE_MS;
    match read_view(origin, event, later, &[]).await {
        Ok(Some(fresh)) => (
            Snapshot {
                claimed: true,
                ..fresh
            },
            later,
        ),
        _ => (s, now),
    }
}

/// The claimer's part of a tick: the line's next state from the snapshot's figures, written
/// back with line.lua. The snapshot comes back with the new state in it. A failed write is
/// left alone: the next tick's claimer advances from the state the origin holds, and every
/// isolate keeps extrapolating the last one meanwhile.
async fn advance_line<O: Origin>(origin: &O, mut s: Snapshot, tick: i64, now: i64) -> Snapshot {
    let remaining = s.items.iter().map(|i| u64::from(i.remaining())).sum();
    let fleet_isolates = s.fleet.as_ref().map_or(0, |f| f.isolates());
    let coverage = if fleet_isolates == 0 {
        1.0
    } else {
        s.fleet_now.isolates() as f64 / fleet_isolates as f64
    };
    // The fleet: the isolates that reported in the last second or, when more, in this one.
    let fleet = fleet_isolates.max(s.fleet_now.isolates()) as f64;
    let next = threshold::advance(
        s.line.as_ref(),
        &Inputs {
            now_ms: now,
            starts_at_ms: s.meta.starts_at,
            budget: s.meta.origin_budget,
            remaining,
            entrants: &s.entrants,
            origin_before: s.origin_before,
            origin_this_second: Some(s.fleet_now.get("origin")),
            coverage,
            exposure: &s.exposure,
            fleet,
            per_entrant: threshold::intents_per_entrant(s.sampled_intents, s.meta.caps.total),
            // The last second's reports and this one's so far: the lag is known as soon as
            // enough forwarded shoppers were reported.
            lag_ms: {
                let sum = |k: &str| s.fleet.as_ref().map_or(0, |f| f.get(k)) + s.fleet_now.get(k);
                let n = sum("line_in");
                (n >= threshold::MIN_LAG_SAMPLE).then(|| sum("line_lag_ms") as f64 / n as f64)
            },
        },
    );
    // What any isolate could use with this state, an open line's arrivals included.
    let mut reach = next.reach();
    if next.open {
        let here = threshold::arrived_rank(now + HORIZON_MS, s.meta.starts_at);
        reach = reach.max(here as f64 + 1.0);
    }
    let (keys, args) = line_call(
        &EventKeys::new(&s.meta.id),
        tick,
        (&next, s.line.map(|l| l.at_ms)),
        reach,
    );
    let wrote = LINE.eval(origin, &keys, &args).await;
    if wrote.is_ok_and(|v| v.as_int() == Some(1)) {
        s.line = Some(next);
    }
    s
}
