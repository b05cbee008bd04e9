//! Queue wait: how long each attempt waited from its task becoming ready (on the scheduler's
//! clock) to its start (on its worker's), for the `queue_wait_seconds` histogram. A start is
//! heard from the attempt's `started` event, or from its end for an attempt whose start and end
//! come together. Followed only while the scheduler keeps metrics.

use std::collections::HashMap;
use std::sync::Arc;

use taskfleet_common::state::TaskState;
use taskfleet_common::Millis;

use super::Scheduler;
use crate::store::StoreUpdate;

/// When each task that is ready or out (and not started) became ready, by workflow.
#[derive(Default)]
pub(super) struct QueueWaits {
    ready_since: HashMap<Arc<str>, HashMap<u32, Millis>>,
}

impl QueueWaits {
    /// A task is ready from `now`.
    pub(super) fn ready(&mut self, workflow_id: &Arc<str>, task_idx: u32, now: Millis) {
        self.ready_since
            .entry(workflow_id.clone())
            .or_default()
            .insert(task_idx, now);
    }

    /// Follows a turn's updates at `now`; returns the attempts that started, with how long
    /// each waited in milliseconds.
    pub(super) fn follow(&mut self, updates: &[StoreUpdate], now: Millis) -> Vec<(Arc<str>, u32, u64)> {
        let mut waited = Vec::new();
        let mut started = |workflow_id: &Arc<str>, task_idx: u32, at: Millis, waits: &mut Self| {
            let since = (waits.ready_since.get_mut(workflow_id)).and_then(|tasks| tasks.remove(&task_idx));
            if let Some(since) = since {
                waited.push((workflow_id.clone(), task_idx, at.0.saturating_sub(since.0)));
            }
        };
        for update in updates {
            match update {
                // A task's end is seen after its attempt's (in the same updates).
                StoreUpdate::Task { workflow_id, record } => match record.state {
                    TaskState::Ready => self.ready(workflow_id, record.task_idx, now),
                    TaskState::Dispatched | TaskState::Running => {}
                    _ => {
                        if let Some(tasks) = self.ready_since.get_mut(workflow_id) {
                            tasks.remove(&record.task_idx);
                        }
                    }
                },
                StoreUpdate::AttemptStarted {
                    workflow_id,
                    task_idx,
                    at,
                    ..
                } => started(workflow_id, *task_idx, *at, self),
                StoreUpdate::AttemptFinished { workflow_id, record } => {
                    if let Some(at) = record.started_at {
                        started(workflow_id, record.task_idx, at, self);
                    }
                }
                StoreUpdate::WorkflowFinished { workflow_id, .. } => {
                    self.ready_since.remove(workflow_id);
                }
                _ => {}
            }
        }
        waited
    }
}

impl Scheduler {
    /// Counts the queue waits of the attempts a turn's updates started.
    pub(super) fn count_waits(&mut self, updates: &[StoreUpdate], now: Millis) {
        let Some(metrics) = self.config.metrics.clone() else {
            return;
        };
        for (workflow_id, task_idx, waited_ms) in self.waits.follow(updates, now) {
            if let Some(task) = self.engine.task_spec(&workflow_id, task_idx) {
                metrics.queue_waited(&task.pool, task.priority.as_str(), waited_ms);
            }
        }
    }

    /// The tasks of a workflow just added that are ready now start waiting.
    pub(super) fn ready_on_add(&mut self, workflow_id: &Arc<str>, n_tasks: usize, now: Millis) {
        if self.config.metrics.is_none() {
            return;
        }
        for task_idx in 0..n_tasks as u32 {
            if self.engine.task_state(workflow_id, task_idx) == Some(TaskState::Ready) {
                self.waits.ready(workflow_id, task_idx, now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TaskRecord;

    fn task(state: TaskState, task_idx: u32) -> StoreUpdate {
        StoreUpdate::Task {
            workflow_id: Arc::from("wf"),
            record: TaskRecord {
                task_idx,
                state,
                attempt: 1,
                n_failures: 0,
                retry_at: None,
                output: None,
            },
        }
    }

    fn started(task_idx: u32, at: u64) -> StoreUpdate {
        StoreUpdate::AttemptStarted {
            workflow_id: Arc::from("wf"),
            task_idx,
            attempt: 1,
            worker: "w1".into(),
            at: Millis(at),
        }
    }

    #[test]
    fn an_attempt_waited_from_its_task_being_ready_to_its_start() {
        let mut waits = QueueWaits::default();
        waits.ready(&Arc::from("wf"), 0, Millis(1_000));
        assert!(waits.follow(&[task(TaskState::Ready, 1)], Millis(1_500)).is_empty());
        let out = [task(TaskState::Dispatched, 0), task(TaskState::Dispatched, 1)];
        assert!(waits.follow(&out, Millis(1_600)).is_empty());
        let waited = waits.follow(
            &[task(TaskState::Running, 1), started(1, 2_000), started(0, 2_000)],
            Millis(2_100),
        );
        assert_eq!(waited, [(Arc::from("wf"), 1, 500), (Arc::from("wf"), 0, 1_000)]);
        // Started once: a start heard again is not counted twice.
        assert!(waits.follow(&[started(0, 3_000)], Millis(3_000)).is_empty());
    }

    #[test]
    fn an_attempt_whose_start_comes_with_its_end_is_counted_from_its_end() {
        let mut waits = QueueWaits::default();
        waits.ready(&Arc::from("wf"), 0, Millis(1_000));
        let mut record = crate::store::AttemptRecord::dispatched(0, 1, Millis(1_100));
        record.started_at = Some(Millis(1_300));
        record.finished_at = Some(Millis(1_302));
        let finished = StoreUpdate::AttemptFinished {
            workflow_id: Arc::from("wf"),
            record,
        };
        let waited = waits.follow(&[finished, task(TaskState::Succeeded, 0)], Millis(1_400));
        assert_eq!(waited, [(Arc::from("wf"), 0, 300)]);
    }

    #[test]
    fn tasks_that_end_without_starting_are_forgotten() {
        let mut waits = QueueWaits::default();
        let _ = waits.follow(&[task(TaskState::Ready, 0), task(TaskState::Ready, 1)], Millis(0));
        let _ = waits.follow(&[task(TaskState::Cancelled, 0)], Millis(1));
        assert!(waits.follow(&[started(0, 2)], Millis(2)).is_empty());
        let finished = StoreUpdate::WorkflowFinished {
            workflow_id: Arc::from("wf"),
            state: crate::store::WorkflowState::Cancelled,
            at: Millis(3),
        };
        let _ = waits.follow(&[finished], Millis(3));
        assert!(waits.ready_since.is_empty());
    }
}
