//! Conformance scenarios for [`Store::apply`]: updates read back exactly, and a batch is
//! applied whole or not at all.

use std::sync::Arc;

use taskfleet_common::limits::Limit;
use taskfleet_common::state::{AttemptOutcome, TaskState};
use taskfleet_common::Millis;

use super::{apply, attempt, create, dispatched, finished, fresh_diamond_tasks, record, started, task, task_update};
use crate::store::{AttemptRecord, Store, StoreError, StoreUpdate, TaskRecord};

/// A task fails, waits for its retry, runs again and succeeds; every step reads back exactly.
pub async fn updates_round_trip(store: &dyn Store, prefix: &str) {
    use TaskState::{Dispatched, Pending, Ready, Retrying, Running, Succeeded};
    let workflow = record(&format!("{prefix}-updates"), &format!("{prefix}-updates-hash"), 1_000);
    create(store, &workflow).await;
    let id: Arc<str> = Arc::from(workflow.id.as_str());

    let first_dispatch = vec![
        task_update(&id, task(0, Dispatched, 1, 0)),
        dispatched(&id, 0, 1, 100),
        // Applying an update twice changes nothing.
        task_update(&id, task(0, Dispatched, 1, 0)),
        dispatched(&id, 0, 1, 100),
    ];
    apply(store, first_dispatch, "first dispatch").await;
    apply(
        store,
        vec![
            started(&id, 0, 1, "worker-a", 110),
            task_update(&id, task(0, Running, 1, 0)),
        ],
        "first start",
    )
    .await;
    let failure = AttemptRecord {
        worker: Some("worker-a".to_string()),
        started_at: Some(Millis(110)),
        finished_at: Some(Millis(150)),
        outcome: Some(AttemptOutcome::Failed { retryable: true }),
        exit_code: Some(1),
        error: Some("exit status 1".to_string()),
        stdout_tail: "reading input\n".to_string(),
        stderr_tail: "boom\n".to_string(),
        ..attempt(0, 1, 100)
    };
    let retrying = TaskRecord {
        retry_at: Some(Millis(1_150)),
        ..task(0, Retrying, 1, 1)
    };
    apply(
        store,
        vec![finished(&id, &failure), task_update(&id, retrying.clone())],
        "first failure",
    )
    .await;
    let tasks = store.tasks(&id).await.expect("read tasks");
    assert_eq!(tasks[0], retrying, "updates: the retrying task does not read back");
    assert_eq!(
        store.attempts(&id).await.expect("read attempts"),
        std::slice::from_ref(&failure),
        "updates: the failed attempt"
    );

    let success = AttemptRecord {
        worker: Some("worker-b".to_string()),
        started_at: Some(Millis(1_210)),
        finished_at: Some(Millis(1_300)),
        outcome: Some(AttemptOutcome::Succeeded),
        exit_code: Some(0),
        stdout_tail: "done\n".to_string(),
        ..attempt(0, 2, 1_200)
    };
    let succeeded = TaskRecord {
        output: Some(r#"{"rows": 42}"#.to_string()),
        ..task(0, Succeeded, 2, 1)
    };
    let retry = vec![
        task_update(&id, task(0, Ready, 1, 1)),
        task_update(&id, task(0, Dispatched, 2, 1)),
        dispatched(&id, 0, 2, 1_200),
        started(&id, 0, 2, "worker-b", 1_210),
        finished(&id, &success),
        task_update(&id, succeeded.clone()),
        task_update(&id, task(1, Ready, 0, 0)),
        task_update(&id, task(2, Ready, 0, 0)),
    ];
    apply(store, retry, "retry and success").await;
    let expected = vec![
        succeeded,
        task(1, Ready, 0, 0),
        task(2, Ready, 0, 0),
        task(3, Pending, 0, 0),
        task(4, Ready, 0, 0),
    ];
    assert_eq!(
        store.tasks(&id).await.expect("read tasks"),
        expected,
        "updates: tasks after the success"
    );
    assert_eq!(
        store.attempts(&id).await.expect("read attempts"),
        [failure, success],
        "updates: attempts after the success"
    );
}

/// Every outcome, optional field and odd value survives the store, and a finished attempt
/// needs no earlier dispatch (and replaces what was stored for it).
pub async fn every_outcome_round_trips(store: &dyn Store, prefix: &str) {
    let workflow = record(&format!("{prefix}-outcomes"), &format!("{prefix}-outcomes-hash"), 1_000);
    create(store, &workflow).await;
    let id: Arc<str> = Arc::from(workflow.id.as_str());
    let outcomes = [
        Some(AttemptOutcome::Succeeded),
        Some(AttemptOutcome::Failed { retryable: true }),
        Some(AttemptOutcome::Failed { retryable: false }),
        Some(AttemptOutcome::TimedOut),
        Some(AttemptOutcome::Cancelled),
        None,
        Some(AttemptOutcome::LimitExceeded(Limit::Memory)),
        Some(AttemptOutcome::LimitExceeded(Limit::Cpu)),
        Some(AttemptOutcome::LimitExceeded(Limit::Pids)),
    ];
    let mut records: Vec<AttemptRecord> = (1..)
        .zip(outcomes)
        .map(|(number, outcome)| AttemptRecord {
            worker: Some(format!("worker-{number}")),
            started_at: Some(Millis(u64::from(number) * 10 + 1)),
            finished_at: Some(Millis(u64::from(number) * 10 + 2)),
            outcome,
            ..attempt(4, number, u64::from(number) * 10)
        })
        .collect();
    records[1].exit_code = Some(-1);
    records[2].error = Some("no such program: «frobnicate» 'quoted' \"double\"".to_string());
    records[3].signal = Some(9);
    records[3].stderr_tail = "x".repeat(64 * 1024);
    records[4].dispatched_at = Millis(i64::MAX as u64);
    records[5].worker = None;
    records[5].started_at = None;
    records[6].peak_memory_bytes = Some(64 * 1024 * 1024);
    records[6].cpu_time_ms = Some(118);
    records[7].peak_memory_bytes = Some(i64::MAX as u64);
    records[7].cpu_time_ms = Some(0);
    let updates = records.iter().map(|record| finished(&id, record)).collect();
    apply(store, updates, "finish attempts").await;
    assert_eq!(
        store.attempts(&id).await.expect("read attempts"),
        records,
        "outcomes: attempts do not read back"
    );

    records[0].outcome = Some(AttemptOutcome::Cancelled);
    records[0].stdout_tail = "replaced".to_string();
    apply(store, vec![finished(&id, &records[0])], "finish an attempt again").await;
    assert_eq!(
        store.attempts(&id).await.expect("read attempts"),
        records,
        "outcomes: a second finish must replace the first"
    );
}

/// A batch with an update naming something that does not exist fails as a conflict, and none
/// of the batch's updates (not even those before the bad one) are stored.
pub async fn failed_batch_changes_nothing(store: &dyn Store, prefix: &str) {
    use TaskState::{Dispatched, Running};
    let workflow = record(&format!("{prefix}-atomic"), &format!("{prefix}-atomic-hash"), 1_000);
    create(store, &workflow).await;
    let id: Arc<str> = Arc::from(workflow.id.as_str());
    apply(
        store,
        vec![task_update(&id, task(0, Dispatched, 1, 0)), dispatched(&id, 0, 1, 100)],
        "dispatch",
    )
    .await;
    let tasks_before = store.tasks(&id).await.expect("read tasks");
    let attempts_before = store.attempts(&id).await.expect("read attempts");
    assert_ne!(
        tasks_before,
        fresh_diamond_tasks(),
        "atomic: the good batch was not applied"
    );

    let missing: Arc<str> = Arc::from(format!("{prefix}-atomic-missing").as_str());
    let start = || {
        vec![
            task_update(&id, task(0, Running, 1, 0)),
            started(&id, 0, 1, "worker-a", 110),
        ]
    };
    let bad_batches = [
        (
            "start of an attempt never dispatched",
            started(&id, 0, 7, "worker-a", 120),
        ),
        (
            "update of a task that does not exist",
            task_update(&id, task(99, Running, 1, 0)),
        ),
        ("dispatch of a task that does not exist", dispatched(&id, 99, 1, 120)),
        (
            "finish of a task that does not exist",
            finished(&id, &attempt(99, 1, 120)),
        ),
        (
            "update of a workflow that does not exist",
            task_update(&missing, task(0, Running, 1, 0)),
        ),
        (
            "end of a workflow that does not exist",
            StoreUpdate::WorkflowFinished {
                workflow_id: missing.clone(),
                state: crate::store::WorkflowState::Failed,
                at: Millis(130),
            },
        ),
    ];
    for (what, bad) in bad_batches {
        let mut batch = start();
        batch.push(bad);
        batch.push(dispatched(&id, 4, 1, 140));
        match store.apply(batch.into()).await {
            Err(StoreError::Conflict { .. }) => {}
            other => panic!("atomic: {what}: expected a conflict, got {other:?}"),
        }
        assert_eq!(
            store.tasks(&id).await.expect("read tasks"),
            tasks_before,
            "atomic: {what}: tasks changed"
        );
        assert_eq!(
            store.attempts(&id).await.expect("read attempts"),
            attempts_before,
            "atomic: {what}: attempts changed"
        );
    }
    assert_eq!(store.workflow(&missing).await.expect("read a missing workflow"), None);
    apply(store, Vec::new(), "an empty batch").await;
    apply(store, start(), "the good part alone").await;
    assert_eq!(
        store.tasks(&id).await.expect("read tasks")[0],
        task(0, Running, 1, 0),
        "atomic: the good part alone"
    );
}
