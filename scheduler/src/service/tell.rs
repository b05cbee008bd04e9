//! The event streams: what each transaction changed (task states, workflows that ended), told
//! to the handle's subscribers once it has committed, so that no one hears of a change the
//! store does not hold. Nothing is gathered while no one listens.

use taskfleet_common::api::{FleetEvent, TaskEvent, WorkflowEvent};

use super::{now, Scheduler};
use crate::store::StoreUpdate;

/// Events kept for a subscriber that falls behind before it is told it lagged: enough for a
/// few thousand tasks changing state at once.
pub(super) const EVENTS_BUFFERED: usize = 16_384;

impl Scheduler {
    /// The events of a transaction's updates, read while the engine still holds their
    /// workflows; none when nobody listens.
    pub(super) fn events_of(&self, updates: &[StoreUpdate]) -> Vec<FleetEvent> {
        if self.events.receiver_count() == 0 {
            return Vec::new();
        }
        let at_ms = now().0;
        updates
            .iter()
            .filter_map(|update| match update {
                StoreUpdate::Task { workflow_id, record } => Some(FleetEvent::Task(TaskEvent {
                    workflow_id: workflow_id.to_string(),
                    task: self.engine.task_spec(workflow_id, record.task_idx)?.id.clone(),
                    task_idx: record.task_idx,
                    state: record.state,
                    attempt: record.attempt,
                    at_ms,
                })),
                StoreUpdate::WorkflowFinished { workflow_id, state, at } => Some(FleetEvent::Workflow(WorkflowEvent {
                    workflow_id: workflow_id.to_string(),
                    state: state.as_str().to_string(),
                    at_ms: at.0,
                })),
                _ => None,
            })
            .collect()
    }

    /// Tells committed events to whoever listens.
    pub(super) fn tell(&self, events: Vec<FleetEvent>) {
        if self.events.receiver_count() == 0 {
            return;
        }
        for event in events {
            // Fails only when the last subscriber left meanwhile.
            let _ = self.events.send(event);
        }
    }
}
