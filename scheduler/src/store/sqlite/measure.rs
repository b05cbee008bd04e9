//! Throughput figures of the SQLite store, printed rather than asserted (timings depend on the
//! machine). Run them with an optimised build:
//!
//! ```text
//! cargo test -p taskfleet-scheduler --release --lib store::sqlite::measure -- --ignored --nocapture
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use taskfleet_common::dag::Dag;
use taskfleet_common::state::{AttemptOutcome, TaskState};
use taskfleet_common::workflow::{Resources, RetryPolicy};
use taskfleet_common::{Action, Millis, PriorityClass, TaskSpec, WorkflowSpec};

use super::SqliteStore;
use crate::store::conformance::{attempt, dispatched, finished, record, started, task, task_update};
use crate::store::{AttemptRecord, Store, StoreUpdate, TaskRecord};

/// Tasks in the workflow of the creation figure.
const CREATE_TASKS: u32 = 1_000_000;
/// Tasks taken through their whole life for the update figure.
const LIFE_TASKS: u32 = 200_000;
/// Tasks per applied batch (five updates each).
const TASKS_PER_BATCH: u32 = 1_000;

/// `n` tasks in chains of ten: every tenth task is a root.
fn chains(n: u32) -> WorkflowSpec {
    let pool: Arc<str> = Arc::from("default");
    let tasks = (0..n)
        .map(|idx| TaskSpec {
            id: format!("task-{idx}"),
            deps: Vec::new(),
            action: Action::Handler {
                name: "noop".to_string(),
                args: serde_json::Value::Null,
                env: BTreeMap::new(),
            },
            priority: PriorityClass::Normal,
            weight: 0.0,
            estimate: None,
            estimate_by_worker: None,
            resources: Resources::default(),
            timeout: None,
            retry: RetryPolicy::default(),
            pool: pool.clone(),
        })
        .collect();
    let parents = (0..n).map(|idx| if idx % 10 == 0 { None } else { Some(idx - 1) });
    let dag = Dag::new(parents).expect("chains are acyclic");
    WorkflowSpec {
        name: "chains".to_string(),
        tasks,
        dag,
    }
}

/// The five updates of one task's successful life.
fn life(id: &Arc<str>, task_idx: u32, updates: &mut Vec<StoreUpdate>) {
    let finished_attempt = AttemptRecord {
        worker: Some("worker-1".to_string()),
        started_at: Some(Millis(2)),
        finished_at: Some(Millis(3)),
        outcome: Some(AttemptOutcome::Succeeded),
        exit_code: Some(0),
        ..attempt(task_idx, 1, 1)
    };
    let output = Some(format!("{{\"task\": {task_idx}}}"));
    let succeeded = TaskRecord {
        output,
        ..task(task_idx, TaskState::Succeeded, 1, 0)
    };
    updates.extend([
        task_update(id, task(task_idx, TaskState::Dispatched, 1, 0)),
        dispatched(id, task_idx, 1, 1),
        started(id, task_idx, 1, "worker-1", 2),
        finished(id, &finished_attempt),
        task_update(id, succeeded),
    ]);
}

async fn measure(store: &dyn Store, label: &str) {
    let spec = chains(CREATE_TASKS);
    let started = Instant::now();
    store
        .create_workflow(&record("big", "big-hash", 1), &spec)
        .await
        .expect("create the big workflow");
    let created = started.elapsed();
    let started = Instant::now();
    let n_read = store.tasks("big").await.expect("read the big workflow").len();
    let read = started.elapsed();
    assert_eq!(n_read, CREATE_TASKS as usize);

    store
        .create_workflow(&record("life", "life-hash", 2), &chains(LIFE_TASKS))
        .await
        .expect("create");
    let id: Arc<str> = Arc::from("life");
    let batches: Vec<Vec<StoreUpdate>> = (0..LIFE_TASKS / TASKS_PER_BATCH)
        .map(|batch| {
            let mut updates = Vec::with_capacity(5 * TASKS_PER_BATCH as usize);
            for task_idx in batch * TASKS_PER_BATCH..(batch + 1) * TASKS_PER_BATCH {
                life(&id, task_idx, &mut updates);
            }
            updates
        })
        .collect();
    let n_updates: usize = batches.iter().map(Vec::len).sum();
    let started = Instant::now();
    for batch in batches {
        store.apply(batch).await.expect("apply a batch");
    }
    let applied = started.elapsed();
    let per_second = |n: f64, time: Duration| n / time.as_secs_f64();
    println!(
        "{label}: create_workflow of {CREATE_TASKS} tasks {created:.2?}; tasks() of them {read:.2?}; \
         apply {n_updates} updates in batches of {} in {applied:.2?} = {:.0} updates/s ({:.0} tasks/s)",
        5 * TASKS_PER_BATCH,
        per_second(n_updates as f64, applied),
        per_second(f64::from(LIFE_TASKS), applied),
    );
}

#[tokio::test]
#[ignore = "a measurement: run it with --release --ignored --nocapture"]
async fn measure_throughput() {
    measure(&SqliteStore::in_memory().expect("open in memory"), "in memory").await;
    let dir = tempfile::tempdir().expect("make a temporary directory");
    measure(
        &SqliteStore::open(&dir.path().join("store.db")).expect("open a file"),
        "file",
    )
    .await;
}
