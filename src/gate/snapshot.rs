//! The event snapshot an isolate works from: from its cache, or (for one request at a time)
//! from the origin through view.lua. See `edge` for the freshness invariants.

use super::Gate;
use crate::edge::SnapshotPlan;
use crate::keys::EventKeys;
use crate::origin::{Origin, OriginError};
use crate::script::{parse_view, view_keys, Snapshot, VIEW};

/// How long a request waits between looks at a snapshot another request is refreshing.
const WAIT_STEP_MS: u64 = 5;

impl Gate {
    /// The event snapshot; `None` when the event does not exist.
    pub async fn snapshot<O: Origin>(
        &self,
        origin: &O,
        event: &str,
        now: i64,
    ) -> Result<Option<Snapshot>, OriginError> {
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
                    self.state.borrow_mut().stats.view_reads += 1;
                    let read = VIEW
                        .eval(origin, &view_keys(&EventKeys::new(event)), &[])
                        .await
                        .and_then(|v| parse_view(&v));
                    self.state
                        .borrow_mut()
                        .store(event, read.as_ref().ok().cloned(), now);
                    return read;
                }
            }
        }
    }
}
