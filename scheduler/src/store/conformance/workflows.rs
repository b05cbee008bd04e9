//! Conformance scenarios for workflows: creating, reading back and listing the running ones.

use std::sync::Arc;

use taskfleet_common::state::TaskState;
use taskfleet_common::Millis;

use super::{apply, create, diamond, fresh_diamond_tasks, record};
use crate::store::{Store, StoreError, StoreUpdate, WorkflowRecord, WorkflowState};

/// A workflow reads back as created, roots `ready` and the other tasks `pending`.
pub async fn create_and_read_back(store: &dyn Store, prefix: &str) {
    let record = record(&format!("{prefix}-create"), &format!("{prefix}-create-hash"), 1_000);
    create(store, &record).await;
    let stored = store.workflow(&record.id).await.expect("read the workflow");
    assert_eq!(
        stored.as_ref(),
        Some(&record),
        "create: the workflow does not read back as created"
    );
    let tasks = store.tasks(&record.id).await.expect("read tasks");
    assert_eq!(
        tasks,
        fresh_diamond_tasks(),
        "create: roots must be ready, the others pending"
    );
    let attempts = store.attempts(&record.id).await.expect("read attempts");
    assert_eq!(attempts, [], "create: a new workflow has no attempts");
    let ids = store.task_ids(&record.id).await.expect("read task ids");
    let expected: Vec<String> = diamond().tasks.iter().map(|task| task.id.clone()).collect();
    assert_eq!(ids, expected, "create: task ids read back in file order");
    let missing = format!("{prefix}-no-such-workflow");
    assert_eq!(store.workflow(&missing).await.expect("read a missing workflow"), None);
    assert_eq!(
        store.tasks(&missing).await.expect("read tasks of a missing workflow"),
        []
    );
    assert_eq!(
        store
            .attempts(&missing)
            .await
            .expect("read attempts of a missing workflow"),
        []
    );
}

/// Creating a workflow under an id already taken fails and leaves the first one alone.
pub async fn duplicate_workflow_is_a_conflict(store: &dyn Store, prefix: &str) {
    let first = record(
        &format!("{prefix}-duplicate"),
        &format!("{prefix}-duplicate-hash"),
        1_000,
    );
    create(store, &first).await;
    let second = WorkflowRecord {
        name: "impostor".to_string(),
        submitted_at: Millis(2_000),
        ..first.clone()
    };
    match store.create_workflow(&second, &diamond()).await {
        Err(StoreError::Conflict { reason }) => {
            assert!(
                reason.contains(&first.id),
                "duplicate: the conflict should name the id: {reason}"
            );
        }
        other => panic!("duplicate: expected a conflict, got {other:?}"),
    }
    let stored = store.workflow(&first.id).await.expect("read the workflow");
    assert_eq!(stored, Some(first.clone()), "duplicate: the first workflow was changed");
    let tasks = store.tasks(&first.id).await.expect("read tasks");
    assert_eq!(
        tasks,
        fresh_diamond_tasks(),
        "duplicate: the first workflow's tasks were changed"
    );
}

/// A workflow created with an idempotency key is found by it; a second workflow with the
/// same key is a conflict.
pub async fn idempotency_keys_find_their_workflow(store: &dyn Store, prefix: &str) {
    let key = format!("{prefix}-key");
    let keyed = WorkflowRecord {
        idempotency_key: Some(key.clone()),
        ..record(&format!("{prefix}-keyed"), &format!("{prefix}-keyed-hash"), 1_000)
    };
    create(store, &keyed).await;
    let found = store.workflow_by_idempotency_key(&key).await.expect("find by key");
    assert_eq!(
        found,
        Some(keyed.clone()),
        "idempotency: the keyed workflow is found by its key"
    );
    let missing = store
        .workflow_by_idempotency_key(&format!("{prefix}-other-key"))
        .await
        .expect("find by key");
    assert_eq!(missing, None, "idempotency: an unknown key finds nothing");
    let again = WorkflowRecord {
        id: format!("{prefix}-keyed-again"),
        ..keyed.clone()
    };
    match store.create_workflow(&again, &diamond()).await {
        Err(StoreError::Conflict { reason }) => {
            assert!(
                reason.contains(&key),
                "idempotency: the conflict should name the key: {reason}"
            )
        }
        other => panic!("idempotency: expected a conflict, got {other:?}"),
    }
    assert_eq!(
        store.workflow(&again.id).await.expect("read"),
        None,
        "idempotency: nothing was created"
    );
}

/// Only running workflows are listed, oldest first, and finishing one takes it off the list.
pub async fn running_workflows_filter_and_order(store: &dyn Store, prefix: &str) {
    let hash_a = format!("{prefix}-running-hash-a");
    let hash_b = format!("{prefix}-running-hash-b");
    let new = record(&format!("{prefix}-running-new"), &hash_a, 2_000);
    let old = record(&format!("{prefix}-running-old"), &hash_a, 1_000);
    let other = record(&format!("{prefix}-running-other"), &hash_b, 1_500);
    let done = WorkflowRecord {
        state: WorkflowState::Succeeded,
        finished_at: Some(Millis(600)),
        ..record(&format!("{prefix}-running-done"), &hash_a, 500)
    };
    for workflow in [&new, &old, &other, &done] {
        create(store, workflow).await;
    }
    let listed = |hash: Option<&str>| {
        let hash = hash.map(str::to_string);
        async move {
            let found = store
                .running_workflows(hash.as_deref())
                .await
                .expect("list running workflows");
            let ours = format!("{prefix}-running-");
            found
                .into_iter()
                .filter(|workflow| workflow.id.starts_with(&ours))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        listed(Some(&hash_a)).await,
        [old.clone(), new.clone()],
        "running: filter by source, oldest first"
    );
    assert_eq!(
        listed(Some(&hash_b)).await,
        std::slice::from_ref(&other),
        "running: filter by source"
    );
    assert_eq!(
        listed(None).await,
        [old.clone(), other.clone(), new.clone()],
        "running: every source, oldest first"
    );
    assert_eq!(listed(Some("no-such-hash")).await, [], "running: unknown source");

    let finish = |workflow: &WorkflowRecord, state, at| StoreUpdate::WorkflowFinished {
        workflow_id: Arc::from(workflow.id.as_str()),
        state,
        at: Millis(at),
    };
    apply(
        store,
        vec![finish(&old, WorkflowState::Failed, 3_000)],
        "finish a workflow",
    )
    .await;
    assert_eq!(
        listed(Some(&hash_a)).await,
        std::slice::from_ref(&new),
        "running: a finished workflow is still listed"
    );
    let stored = store.workflow(&old.id).await.expect("read the workflow");
    let expected = WorkflowRecord {
        state: WorkflowState::Failed,
        finished_at: Some(Millis(3_000)),
        ..old
    };
    assert_eq!(
        stored,
        Some(expected),
        "running: the finished workflow does not read back"
    );
    apply(
        store,
        vec![finish(&new, WorkflowState::Cancelled, 3_100)],
        "cancel a workflow",
    )
    .await;
    assert_eq!(
        listed(Some(&hash_a)).await,
        [],
        "running: a cancelled workflow is still listed"
    );
    assert_eq!(
        listed(None).await,
        [other],
        "running: only the unfinished workflow is left"
    );
}

/// A page of tasks holds the records, ids and attempts of the tasks in its range, and the
/// counts per state cover the whole workflow.
pub async fn pages_and_counts_cover_their_tasks(store: &dyn Store, prefix: &str) {
    let record = record(&format!("{prefix}-pages"), &format!("{prefix}-pages-hash"), 1_000);
    create(store, &record).await;
    let id: Arc<str> = Arc::from(record.id.as_str());
    let updates = vec![
        super::dispatched(&id, 0, 1, 1_001),
        super::task_update(&id, super::task(0, TaskState::Dispatched, 1, 0)),
        super::dispatched(&id, 4, 1, 1_002),
        super::task_update(&id, super::task(4, TaskState::Dispatched, 1, 0)),
    ];
    apply(store, updates, "pages").await;
    let page = store.task_page(&record.id, 1, 3).await.expect("read a page");
    let indices: Vec<u32> = page.records.iter().map(|task| task.task_idx).collect();
    assert_eq!(indices, [1, 2, 3], "pages: the page holds the tasks of its range");
    assert_eq!(page.ids, ["left", "right", "join"], "pages: ids in the same order");
    assert_eq!(page.attempts, [], "pages: only the attempts of the page's tasks");
    let page = store.task_page(&record.id, 3, 100).await.expect("read the last page");
    assert_eq!(page.ids, ["join", "lint"], "pages: a page ends with the workflow");
    assert_eq!(
        page.attempts.iter().map(|attempt| attempt.task_idx).collect::<Vec<_>>(),
        [4]
    );
    let counts = store.task_counts(&record.id).await.expect("count tasks");
    assert_eq!(
        counts,
        [(TaskState::Pending, 3), (TaskState::Dispatched, 2)],
        "pages: counts per state, in state order, of the whole workflow"
    );
    let missing = format!("{prefix}-no-such-workflow");
    assert_eq!(
        store.task_page(&missing, 0, 10).await.expect("page of nothing"),
        Default::default()
    );
    assert_eq!(store.task_counts(&missing).await.expect("count nothing"), []);
}

/// A workflow that ended failed or cancelled opens again with the records given; a running
/// or succeeded one (or none) does not, and nothing of it changes.
pub async fn ended_workflows_reopen_for_a_retry(store: &dyn Store, prefix: &str) {
    use super::task;
    use TaskState::{Failed, Pending, Succeeded, UpstreamFailed};
    let failed = record(&format!("{prefix}-reopen"), &format!("{prefix}-reopen-hash"), 9_000);
    create(store, &failed).await;
    let id: Arc<str> = Arc::from(failed.id.as_str());
    let mut succeeded = task(0, Succeeded, 1, 0);
    succeeded.output = Some("{\"rows\":3}".into());
    let mut ended = vec![
        StoreUpdate::Task {
            workflow_id: id.clone(),
            record: succeeded.clone(),
        },
        StoreUpdate::Task {
            workflow_id: id.clone(),
            record: task(1, Failed, 3, 3),
        },
        StoreUpdate::Task {
            workflow_id: id.clone(),
            record: task(3, UpstreamFailed, 0, 0),
        },
    ];
    let reset = [task(1, Pending, 3, 0), task(3, Pending, 0, 0)];
    let running = store
        .reopen_workflow(&failed.id, &reset)
        .await
        .expect("reopen a running workflow");
    assert!(!running, "reopen: a running workflow is not reopened");
    ended.push(StoreUpdate::WorkflowFinished {
        workflow_id: id.clone(),
        state: WorkflowState::Failed,
        at: Millis(9_500),
    });
    apply(store, ended, "reopen: end the workflow").await;
    let reopened = store.reopen_workflow(&failed.id, &reset).await.expect("reopen");
    assert!(reopened, "reopen: a failed workflow is reopened");
    let stored = store.workflow(&failed.id).await.expect("read").expect("exists");
    assert_eq!(
        (stored.state, stored.finished_at),
        (WorkflowState::Running, None),
        "reopen: the workflow runs again and has no end"
    );
    let tasks = store.tasks(&failed.id).await.expect("read tasks");
    assert_eq!(
        tasks[0], succeeded,
        "reopen: a succeeded task keeps its record and output"
    );
    assert_eq!(tasks[1], reset[0], "reopen: a reset task takes its new record");
    assert_eq!(tasks[3], reset[1], "reopen: a reset task takes its new record");
    assert!(
        store
            .running_workflows(None)
            .await
            .expect("running")
            .iter()
            .any(|known| known.id == failed.id),
        "reopen: the workflow is listed as running, so a restarted scheduler resumes it"
    );
    let again = store.reopen_workflow(&failed.id, &reset).await.expect("reopen twice");
    assert!(
        !again,
        "reopen: a workflow reopened already runs, so a second retry is refused"
    );
    let missing = store
        .reopen_workflow(&format!("{prefix}-no-such"), &reset)
        .await
        .expect("reopen a missing workflow");
    assert!(!missing, "reopen: no such workflow");
}
