//! The event snapshot an isolate works from: from its cache, or (for one request at a time)
//! from the origin through view.lua. See `edge` for the freshness invariants.

use super::Gate;
use crate::edge::SnapshotPlan;
use crate::keys::EventKeys;
use crate::origin::{Origin, OriginError};
use crate::script::{parse_view, view_call, Snapshot, VIEW};
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
                        st.take_report(event)
                    };
                    let (keys, args) = view_call(&EventKeys::new(event), now, &report.to_args());
                    let read = VIEW
                        .eval(origin, &keys, &args)
                        .await
                        .and_then(|v| parse_view(&v, now.div_euclid(1000)))
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
