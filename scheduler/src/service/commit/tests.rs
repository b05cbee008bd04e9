//! Group commit keeps the loop's invariant: nothing a transaction implies is published before
//! it has committed, and the loop goes on meanwhile.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use taskfleet_common::state::TaskState;
use taskfleet_common::workflow::{parse_workflow, ValidateOptions};
use taskfleet_common::WorkflowSpec;
use taskfleet_engine::predict::{FeatureModel, LogStats};
use taskfleet_transport::queues::QueueNames;
use taskfleet_transport::{MemoryTransport, Transport};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::service::{Capacity, Scheduler, SchedulerConfig};
use crate::store::{AttemptRecord, MemoryStore, Store, StoreError, StoreUpdate, TaskPage, TaskRecord, WorkflowRecord};

/// A memory store whose writes each wait for a permit; it keeps every batch it was handed.
struct Gated {
    inner: MemoryStore,
    gate: Semaphore,
    batches: std::sync::Mutex<Vec<Arc<[StoreUpdate]>>>,
}

impl Gated {
    /// The workflows whose attempts the `n`th batch (from 0) dispatches, if it came.
    fn dispatched_in(&self, n: usize) -> Option<Vec<String>> {
        let batches = self.batches.lock().unwrap();
        let ids = batches.get(n)?.iter().filter_map(|update| match update {
            StoreUpdate::AttemptDispatched { workflow_id, .. } => Some(workflow_id.to_string()),
            _ => None,
        });
        Some(ids.collect())
    }
}

#[async_trait]
impl Store for Gated {
    async fn create_workflow(&self, record: &WorkflowRecord, spec: &WorkflowSpec) -> Result<(), StoreError> {
        self.inner.create_workflow(record, spec).await
    }
    async fn workflow(&self, id: &str) -> Result<Option<WorkflowRecord>, StoreError> {
        self.inner.workflow(id).await
    }
    async fn workflow_by_idempotency_key(&self, key: &str) -> Result<Option<WorkflowRecord>, StoreError> {
        self.inner.workflow_by_idempotency_key(key).await
    }
    async fn running_workflows(&self, spec_hash: Option<&str>) -> Result<Vec<WorkflowRecord>, StoreError> {
        self.inner.running_workflows(spec_hash).await
    }
    async fn list_workflows(&self, query: &crate::store::WorkflowQuery) -> Result<Vec<WorkflowRecord>, StoreError> {
        self.inner.list_workflows(query).await
    }
    async fn tasks(&self, workflow_id: &str) -> Result<Vec<TaskRecord>, StoreError> {
        self.inner.tasks(workflow_id).await
    }
    async fn task_ids(&self, workflow_id: &str) -> Result<Vec<String>, StoreError> {
        self.inner.task_ids(workflow_id).await
    }
    async fn attempts(&self, workflow_id: &str) -> Result<Vec<AttemptRecord>, StoreError> {
        self.inner.attempts(workflow_id).await
    }
    async fn task_page(&self, workflow_id: &str, from: u32, limit: u32) -> Result<TaskPage, StoreError> {
        self.inner.task_page(workflow_id, from, limit).await
    }
    async fn task_counts(&self, workflow_id: &str) -> Result<Vec<(TaskState, usize)>, StoreError> {
        self.inner.task_counts(workflow_id).await
    }
    async fn runtime_stats(&self) -> Result<Vec<(String, LogStats)>, StoreError> {
        self.inner.runtime_stats().await
    }
    async fn feature_models(&self) -> Result<Vec<(String, FeatureModel)>, StoreError> {
        self.inner.feature_models().await
    }
    async fn reopen_workflow(&self, workflow_id: &str, reset: &[TaskRecord]) -> Result<bool, StoreError> {
        self.inner.reopen_workflow(workflow_id, reset).await
    }
    async fn apply(&self, updates: Arc<[StoreUpdate]>) -> Result<(), StoreError> {
        self.batches.lock().unwrap().push(updates.clone());
        let permit = self.gate.acquire().await.map_err(|_| StoreError::Unavailable {
            reason: "the gate closed".into(),
        })?;
        permit.forget();
        self.inner.apply(updates).await
    }
}

#[tokio::test]
async fn task_messages_wait_for_their_transaction_while_the_loop_goes_on() {
    let store = Arc::new(Gated {
        inner: MemoryStore::new(),
        gate: Semaphore::new(0),
        batches: std::sync::Mutex::default(),
    });
    let queues = QueueNames::default();
    let transport = Arc::new(MemoryTransport::new(&queues));
    let config = SchedulerConfig {
        capacity: Capacity::Fixed(HashMap::from([("default".to_string(), 10)])),
        ..SchedulerConfig::default()
    };
    let (scheduler, handle) = Scheduler::new(config, store.clone(), transport.clone());
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(scheduler.run(shutdown.clone()));
    let queue = queues.tasks("default", "normal");
    // Stored first, as a submission does, then handed to the loop.
    let spec = |name: &'static str| {
        let store = store.clone();
        async move {
            let source = format!("name: {name}\ntasks:\n  - {{id: a, handler: noop}}\n");
            let spec = parse_workflow(&source, &ValidateOptions::default()).unwrap();
            let record = WorkflowRecord::running(name, name, taskfleet_common::Millis(1));
            store.create_workflow(&record, &spec).await.unwrap();
            Arc::new(spec)
        }
    };
    let queued = || async { transport.queue_len(&queue).await.unwrap_or(0) };
    transport.declare(&[queue.clone()]).await.unwrap();

    handle.add_workflow(Arc::from("w1"), spec("w1").await, None).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(queued().await, 0, "w1's dispatch is not committed yet");
    assert_eq!(store.dispatched_in(0), Some(vec!["w1".to_string()]));
    assert!(
        handle.progress().borrow().is_empty(),
        "no progress is told before its commit"
    );
    // The loop goes on while the store is held up: it takes w2 and dispatches its task,
    // which waits for the next transaction.
    handle.add_workflow(Arc::from("w2"), spec("w2").await, None).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(store.dispatched_in(1), None, "one transaction at a time");
    assert_eq!(queued().await, 0, "nothing is published before its commit");

    // The first transaction commits: only w1's message goes out; w2's waits for the next,
    // which starts at once with the dispatch the loop made meanwhile.
    store.gate.add_permits(1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        queued().await,
        1,
        "w1's task is published once its dispatch is committed"
    );
    assert_eq!(store.dispatched_in(1), Some(vec!["w2".to_string()]));
    let told: Vec<Arc<str>> = handle.progress().borrow().keys().cloned().collect();
    assert_eq!(
        told,
        vec![Arc::from("w1")],
        "the progress told is the first transaction's"
    );
    store.gate.add_permits(1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(queued().await, 2, "then w2's, with the next transaction");
    shutdown.cancel();
    store.gate.close();
    running.await.unwrap().unwrap();
}
