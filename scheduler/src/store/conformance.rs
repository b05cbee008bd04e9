//! The store conformance suite: what every [`Store`] must do, written once and run against
//! each implementation (SQLite here, other databases in their own tests).
//!
//! Scenarios name their workflows and source hashes after the given prefix, so the suite can
//! run against a shared database; each function panics with a message naming the broken rule.
//!
//! Beyond the trait's documentation, the suite pins down: a duplicate workflow id and an
//! update naming a workflow, task or attempt that does not exist are both
//! [`StoreError::Conflict`](super::StoreError::Conflict), and such an update fails its whole batch.

use std::sync::Arc;

use taskfleet_common::state::TaskState;
use taskfleet_common::workflow::parse_workflow;
use taskfleet_common::{Millis, ValidateOptions, WorkflowSpec};

use super::{AttemptRecord, Store, StoreUpdate, TaskRecord, WorkflowRecord, WorkflowState};

mod listing;
mod updates;
mod workflows;

pub use listing::workflows_list_newest_first_in_pages;
pub use updates::{every_outcome_round_trips, failed_batch_changes_nothing, updates_round_trip};
pub use workflows::{
    create_and_read_back, duplicate_workflow_is_a_conflict, ended_workflows_reopen_for_a_retry,
    idempotency_keys_find_their_workflow, pages_and_counts_cover_their_tasks, running_workflows_filter_and_order,
};

/// A five-task workflow: `extract` and `lint` are roots, the rest wait for dependencies.
pub const DIAMOND: &str = "
name: diamond
tasks:
  - {id: extract, handler: noop}
  - {id: left, deps: [extract], handler: noop}
  - {id: right, deps: [extract], handler: noop}
  - {id: join, deps: [left, right], handler: noop}
  - {id: lint, handler: noop}
";

/// Runs every scenario.
pub async fn run_all(store: &dyn Store, prefix: &str) {
    create_and_read_back(store, prefix).await;
    duplicate_workflow_is_a_conflict(store, prefix).await;
    idempotency_keys_find_their_workflow(store, prefix).await;
    updates_round_trip(store, prefix).await;
    every_outcome_round_trips(store, prefix).await;
    running_workflows_filter_and_order(store, prefix).await;
    failed_batch_changes_nothing(store, prefix).await;
    runtime_stats_round_trip(store, prefix).await;
    feature_models_round_trip(store, prefix).await;
    pages_and_counts_cover_their_tasks(store, prefix).await;
    workflows_list_newest_first_in_pages(store, prefix).await;
    ended_workflows_reopen_for_a_retry(store, prefix).await;
}

/// Runtime statistics are stored per signature, the latest replacing the earlier.
pub async fn runtime_stats_round_trip(store: &dyn Store, prefix: &str) {
    use taskfleet_engine::predict::LogStats;
    let signature = format!("{prefix}|handler|noop");
    let first = LogStats {
        n: 1,
        mean: 0.5,
        m2: 0.0,
    };
    let second = LogStats {
        n: 2,
        mean: 0.75,
        m2: 0.125,
    };
    store
        .apply(
            vec![StoreUpdate::RuntimeStats {
                signature: signature.clone(),
                stats: first,
            }]
            .into(),
        )
        .await
        .expect("save stats");
    store
        .apply(
            vec![StoreUpdate::RuntimeStats {
                signature: signature.clone(),
                stats: second,
            }]
            .into(),
        )
        .await
        .expect("save stats");
    let stored = store.runtime_stats().await.expect("read stats");
    let mine: Vec<_> = stored.into_iter().filter(|(known, _)| *known == signature).collect();
    assert_eq!(
        mine,
        vec![(signature, second)],
        "runtime stats: the latest statistics replace the earlier"
    );
}

/// Feature regressions are stored per key, the latest replacing the earlier, exactly.
pub async fn feature_models_round_trip(store: &dyn Store, prefix: &str) {
    use taskfleet_engine::predict::FeatureModel;
    let key = format!("{prefix}|handler|noop|features:rows");
    let mut model = FeatureModel::new(vec!["rows".to_string()]);
    for (x, y) in [(1.0, 0.1), (2.0, 0.3), (3.5, 0.45)] {
        model.add(&[1.0, x], y);
        store
            .apply(
                vec![StoreUpdate::FeatureModel {
                    key: key.clone(),
                    model: model.clone(),
                }]
                .into(),
            )
            .await
            .expect("save a feature model");
    }
    let stored = store.feature_models().await.expect("read feature models");
    let mine: Vec<_> = stored.into_iter().filter(|(known, _)| *known == key).collect();
    assert_eq!(
        mine,
        vec![(key, model)],
        "feature models: the latest replaces the earlier"
    );
}

/// The [`DIAMOND`] spec.
pub fn diamond() -> WorkflowSpec {
    parse_workflow(DIAMOND, &ValidateOptions::default()).expect("the diamond workflow is valid")
}

/// A running workflow record with the [`DIAMOND`] source.
pub fn record(id: &str, spec_hash: &str, submitted_at: u64) -> WorkflowRecord {
    WorkflowRecord {
        id: id.to_string(),
        name: "diamond".to_string(),
        spec_hash: spec_hash.to_string(),
        source: DIAMOND.to_string(),
        state: WorkflowState::Running,
        submitted_at: Millis(submitted_at),
        finished_at: None,
        idempotency_key: None,
    }
}

/// A task record with no retry time and no output.
pub fn task(task_idx: u32, state: TaskState, attempt: u32, n_failures: u32) -> TaskRecord {
    TaskRecord {
        task_idx,
        state,
        attempt,
        n_failures,
        retry_at: None,
        output: None,
    }
}

/// An attempt dispatched at `dispatched_at` and nothing more.
pub fn attempt(task_idx: u32, attempt: u32, dispatched_at: u64) -> AttemptRecord {
    AttemptRecord::dispatched(task_idx, attempt, Millis(dispatched_at))
}

/// The stored tasks of a [`DIAMOND`] workflow nothing has happened to.
pub fn fresh_diamond_tasks() -> Vec<TaskRecord> {
    use TaskState::{Pending, Ready};
    [Ready, Pending, Pending, Pending, Ready]
        .into_iter()
        .zip(0..)
        .map(|(state, idx)| task(idx, state, 0, 0))
        .collect()
}

pub(crate) async fn create(store: &dyn Store, record: &WorkflowRecord) {
    let context = format!("create workflow {}", record.id);
    store.create_workflow(record, &diamond()).await.expect(&context);
}

pub(crate) async fn apply(store: &dyn Store, updates: Vec<StoreUpdate>, what: &str) {
    if let Err(error) = store.apply(updates.into()).await {
        panic!("{what}: apply failed: {error}");
    }
}

/// A [`StoreUpdate::Task`].
pub fn task_update(workflow_id: &Arc<str>, record: TaskRecord) -> StoreUpdate {
    StoreUpdate::Task {
        workflow_id: workflow_id.clone(),
        record,
    }
}

/// A [`StoreUpdate::AttemptDispatched`].
pub fn dispatched(workflow_id: &Arc<str>, task_idx: u32, attempt: u32, at: u64) -> StoreUpdate {
    StoreUpdate::AttemptDispatched {
        workflow_id: workflow_id.clone(),
        task_idx,
        attempt,
        at: Millis(at),
    }
}

/// A [`StoreUpdate::AttemptStarted`].
pub fn started(workflow_id: &Arc<str>, task_idx: u32, attempt: u32, worker: &str, at: u64) -> StoreUpdate {
    let worker = worker.to_string();
    StoreUpdate::AttemptStarted {
        workflow_id: workflow_id.clone(),
        task_idx,
        attempt,
        worker,
        at: Millis(at),
    }
}

/// A [`StoreUpdate::AttemptFinished`].
pub fn finished(workflow_id: &Arc<str>, record: &AttemptRecord) -> StoreUpdate {
    StoreUpdate::AttemptFinished {
        workflow_id: workflow_id.clone(),
        record: record.clone(),
    }
}
