//! Batch coalescing: the scheduler hands the store one batch per loop turn, and many of its
//! updates are superseded within the batch (a task that became running and then succeeded).

use std::collections::HashSet;
use std::sync::Arc;

use super::StoreUpdate;

/// Drops updates that a later update in the same batch makes redundant: a task record
/// followed by a newer record of the same task, an attempt's start followed by its finish
/// (which carries the start too), and runtime statistics or feature models followed by newer
/// ones. Applying the result leaves the store exactly as applying the whole batch would.
pub fn coalesce(updates: Vec<StoreUpdate>) -> Vec<StoreUpdate> {
    let mut seen_tasks: HashSet<(*const u8, u32)> = HashSet::new();
    let mut finished_attempts: HashSet<(*const u8, u32, u32)> = HashSet::new();
    let mut seen_signatures: HashSet<String> = HashSet::new();
    let mut seen_models: HashSet<String> = HashSet::new();
    let mut kept: Vec<StoreUpdate> = Vec::with_capacity(updates.len());
    for update in updates.into_iter().rev() {
        let redundant = match &update {
            StoreUpdate::Task { workflow_id, record } => {
                !seen_tasks.insert((workflow_key(workflow_id), record.task_idx))
            }
            StoreUpdate::AttemptFinished { workflow_id, record } => {
                finished_attempts.insert((workflow_key(workflow_id), record.task_idx, record.attempt));
                false
            }
            StoreUpdate::AttemptStarted {
                workflow_id,
                task_idx,
                attempt,
                ..
            } => finished_attempts.contains(&(workflow_key(workflow_id), *task_idx, *attempt)),
            StoreUpdate::RuntimeStats { signature, .. } => !seen_signatures.insert(signature.clone()),
            StoreUpdate::FeatureModel { key, .. } => !seen_models.insert(key.clone()),
            StoreUpdate::AttemptDispatched { .. } | StoreUpdate::WorkflowFinished { .. } => false,
        };
        if !redundant {
            kept.push(update);
        }
    }
    kept.reverse();
    kept
}

/// Identifies a workflow by its id's text, which every update of one engine shares.
fn workflow_key(workflow_id: &Arc<str>) -> *const u8 {
    // Different `Arc`s with equal text would count as different workflows here, which only
    // makes coalescing keep more than it could; it never drops a needed update.
    workflow_id.as_ptr()
}

#[cfg(test)]
mod tests {
    use taskfleet_common::state::{AttemptOutcome, TaskState};
    use taskfleet_common::Millis;

    use super::*;
    use crate::store::conformance::{attempt, dispatched, finished, started, task, task_update};
    use crate::store::{SqliteStore, Store};

    #[tokio::test]
    async fn coalesced_batches_leave_the_same_state() {
        let workflow: Arc<str> = Arc::from("wf");
        let mut done = attempt(0, 1, 10);
        done.worker = Some("w1".into());
        done.started_at = Some(Millis(11));
        done.finished_at = Some(Millis(12));
        done.outcome = Some(AttemptOutcome::Succeeded);
        let batch = vec![
            task_update(&workflow, task(0, TaskState::Running, 1, 0)),
            started(&workflow, 0, 1, "w1", 11),
            finished(&workflow, &done),
            task_update(&workflow, task(0, TaskState::Succeeded, 1, 0)),
            task_update(&workflow, task(1, TaskState::Ready, 0, 0)),
        ];
        let coalesced = coalesce(batch.clone());
        assert_eq!(coalesced.len(), 3, "{coalesced:#?}");

        let mut states = Vec::new();
        for updates in [batch, coalesced] {
            let store = SqliteStore::in_memory().unwrap();
            let spec = crate::store::conformance::diamond();
            store
                .create_workflow(&crate::store::conformance::record("wf", "h", 1), &spec)
                .await
                .unwrap();
            store.apply(vec![dispatched(&workflow, 0, 1, 10)].into()).await.unwrap();
            store.apply(updates.into()).await.unwrap();
            states.push((store.tasks("wf").await.unwrap(), store.attempts("wf").await.unwrap()));
        }
        assert_eq!(states[0], states[1]);
        assert_eq!(
            states[1].1[0].dispatched_at,
            Millis(10),
            "a finish keeps the dispatch time"
        );
    }
}
