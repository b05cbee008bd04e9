//! [`MemoryStore`]: a store in this process's memory, for runs that keep nothing
//! (`taskfleet run` without `--db`) and for tests. It keeps the same records as the SQLite
//! store and passes the same conformance suite, without a database's cost per update.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use taskfleet_common::state::TaskState;
use taskfleet_common::WorkflowSpec;
use taskfleet_engine::predict::{FeatureModel, LogStats};

use super::{
    AttemptRecord, Store, StoreError, StoreUpdate, TaskPage, TaskRecord, WorkflowQuery, WorkflowRecord, WorkflowState,
};

/// A [`Store`] in memory, gone when dropped.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    workflows: HashMap<String, Stored>,
    by_key: HashMap<String, String>,
    runtime_stats: BTreeMap<String, LogStats>,
    feature_models: BTreeMap<String, FeatureModel>,
}

/// One workflow with its tasks and attempts.
#[derive(Debug)]
struct Stored {
    record: WorkflowRecord,
    tasks: Vec<TaskRecord>,
    ids: Vec<String>,
    /// Each task's attempts, by task index, in attempt order.
    attempts: Vec<Vec<AttemptRecord>>,
}

impl Stored {
    fn attempt(&self, task_idx: u32, attempt: u32) -> Option<&AttemptRecord> {
        let attempts = self.attempts.get(task_idx as usize)?;
        let at = attempts.binary_search_by_key(&attempt, |record| record.attempt).ok()?;
        attempts.get(at)
    }

    fn attempt_mut(&mut self, task_idx: u32, attempt: u32) -> Option<&mut AttemptRecord> {
        let attempts = self.attempts.get_mut(task_idx as usize)?;
        let at = attempts.binary_search_by_key(&attempt, |record| record.attempt).ok()?;
        attempts.get_mut(at)
    }

    /// Stores an attempt, in place of the one with its number if there is one.
    fn put_attempt(&mut self, record: AttemptRecord) {
        let Some(attempts) = self.attempts.get_mut(record.task_idx as usize) else {
            return;
        };
        match attempts.binary_search_by_key(&record.attempt, |known| known.attempt) {
            Ok(at) => attempts[at] = record,
            Err(at) => attempts.insert(at, record),
        }
    }
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What `read` makes of a workflow's records; nothing (empty) for an unknown workflow.
    fn read<T: Default>(&self, workflow_id: &str, read: impl FnOnce(&Stored) -> T) -> T {
        self.inner().workflows.get(workflow_id).map(read).unwrap_or_default()
    }
}

fn missing(what: String) -> StoreError {
    StoreError::Conflict {
        reason: format!("{what} does not exist"),
    }
}

impl Inner {
    /// Checks that every update of a batch names what exists (or what an earlier update of
    /// the batch creates), so that a batch is applied whole or not at all.
    fn check(&self, updates: &[StoreUpdate]) -> Result<(), StoreError> {
        let mut created: HashSet<(&str, u32, u32)> = HashSet::new();
        for update in updates {
            let (workflow_id, task_idx) = match update {
                StoreUpdate::Task { workflow_id, record } => (workflow_id, Some(record.task_idx)),
                StoreUpdate::AttemptDispatched {
                    workflow_id,
                    task_idx,
                    attempt,
                    ..
                } => {
                    created.insert((workflow_id, *task_idx, *attempt));
                    (workflow_id, Some(*task_idx))
                }
                StoreUpdate::AttemptFinished { workflow_id, record } => {
                    created.insert((workflow_id, record.task_idx, record.attempt));
                    (workflow_id, Some(record.task_idx))
                }
                StoreUpdate::AttemptStarted {
                    workflow_id,
                    task_idx,
                    attempt,
                    ..
                } => {
                    let stored = self.workflows.get(&**workflow_id);
                    let exists = stored.is_some_and(|stored| stored.attempt(*task_idx, *attempt).is_some())
                        || created.contains(&(&**workflow_id, *task_idx, *attempt));
                    if !exists {
                        let what = format!("attempt {attempt} of task {task_idx} of workflow '{workflow_id}'");
                        return Err(missing(what));
                    }
                    continue;
                }
                StoreUpdate::WorkflowFinished { workflow_id, .. } => (workflow_id, None),
                StoreUpdate::RuntimeStats { .. } | StoreUpdate::FeatureModel { .. } => continue,
            };
            let Some(stored) = self.workflows.get(&**workflow_id) else {
                return Err(match task_idx {
                    Some(task_idx) => missing(format!("task {task_idx} of workflow '{workflow_id}'")),
                    None => missing(format!("workflow '{workflow_id}'")),
                });
            };
            if let Some(task_idx) = task_idx.filter(|&idx| idx as usize >= stored.tasks.len()) {
                return Err(missing(format!("task {task_idx} of workflow '{workflow_id}'")));
            }
        }
        Ok(())
    }

    /// Applies one update the batch check let through.
    fn apply(&mut self, update: StoreUpdate) {
        match update {
            StoreUpdate::Task { workflow_id, record } => {
                if let Some(stored) = self.workflows.get_mut(&*workflow_id) {
                    let idx = record.task_idx as usize;
                    stored.tasks[idx] = record;
                }
            }
            StoreUpdate::AttemptDispatched {
                workflow_id,
                task_idx,
                attempt,
                at,
            } => {
                if let Some(stored) = self.workflows.get_mut(&*workflow_id) {
                    stored.put_attempt(AttemptRecord::dispatched(task_idx, attempt, at));
                }
            }
            StoreUpdate::AttemptStarted {
                workflow_id,
                task_idx,
                attempt,
                worker,
                at,
            } => {
                let stored = self.workflows.get_mut(&*workflow_id);
                if let Some(record) = stored.and_then(|stored| stored.attempt_mut(task_idx, attempt)) {
                    record.worker = Some(worker);
                    record.started_at = Some(at);
                }
            }
            StoreUpdate::AttemptFinished { workflow_id, record } => {
                if let Some(stored) = self.workflows.get_mut(&*workflow_id) {
                    // A finish keeps the stored dispatch time of an attempt it completes.
                    let dispatched_at = stored
                        .attempt(record.task_idx, record.attempt)
                        .map_or(record.dispatched_at, |known| known.dispatched_at);
                    stored.put_attempt(AttemptRecord {
                        dispatched_at,
                        ..record
                    });
                }
            }
            StoreUpdate::WorkflowFinished { workflow_id, state, at } => {
                if let Some(stored) = self.workflows.get_mut(&*workflow_id) {
                    stored.record.state = state;
                    stored.record.finished_at = Some(at);
                }
            }
            StoreUpdate::RuntimeStats { signature, stats } => {
                self.runtime_stats.insert(signature, stats);
            }
            StoreUpdate::FeatureModel { key, model } => {
                self.feature_models.insert(key, model);
            }
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn create_workflow(&self, record: &WorkflowRecord, spec: &WorkflowSpec) -> Result<(), StoreError> {
        let mut inner = self.inner();
        let key_taken = record
            .idempotency_key
            .as_ref()
            .is_some_and(|key| inner.by_key.contains_key(key));
        if inner.workflows.contains_key(&record.id) || key_taken {
            let reason = match &record.idempotency_key {
                Some(key) => format!("workflow '{}' or idempotency key '{key}' already exists", record.id),
                None => format!("workflow '{}' already exists", record.id),
            };
            return Err(StoreError::Conflict { reason });
        }
        let tasks = (0u32..)
            .zip(&spec.tasks)
            .map(|(task_idx, _)| TaskRecord {
                task_idx,
                state: if spec.dag.parents(task_idx).is_empty() {
                    TaskState::Ready
                } else {
                    TaskState::Pending
                },
                attempt: 0,
                n_failures: 0,
                retry_at: None,
                output: None,
            })
            .collect();
        if let Some(key) = &record.idempotency_key {
            inner.by_key.insert(key.clone(), record.id.clone());
        }
        inner.workflows.insert(
            record.id.clone(),
            Stored {
                record: record.clone(),
                tasks,
                ids: spec.tasks.iter().map(|task| task.id.clone()).collect(),
                attempts: vec![Vec::new(); spec.tasks.len()],
            },
        );
        Ok(())
    }

    async fn workflow(&self, id: &str) -> Result<Option<WorkflowRecord>, StoreError> {
        Ok(self.inner().workflows.get(id).map(|stored| stored.record.clone()))
    }

    async fn workflow_by_idempotency_key(&self, key: &str) -> Result<Option<WorkflowRecord>, StoreError> {
        let inner = self.inner();
        let id = inner.by_key.get(key);
        Ok(id
            .and_then(|id| inner.workflows.get(id))
            .map(|stored| stored.record.clone()))
    }

    async fn running_workflows(&self, spec_hash: Option<&str>) -> Result<Vec<WorkflowRecord>, StoreError> {
        let mut running: Vec<WorkflowRecord> = self
            .inner()
            .workflows
            .values()
            .map(|stored| &stored.record)
            .filter(|record| !record.state.is_terminal())
            .filter(|record| spec_hash.is_none_or(|hash| record.spec_hash == hash))
            .cloned()
            .collect();
        running.sort_by(|a, b| (a.submitted_at, &a.id).cmp(&(b.submitted_at, &b.id)));
        Ok(running)
    }

    async fn list_workflows(&self, query: &WorkflowQuery) -> Result<Vec<WorkflowRecord>, StoreError> {
        let mut listed: Vec<WorkflowRecord> = self
            .inner()
            .workflows
            .values()
            .map(|stored| &stored.record)
            .filter(|record| query.matches(record))
            .map(|record| WorkflowRecord {
                source: String::new(),
                ..record.clone()
            })
            .collect();
        listed.sort_by(|a, b| (b.submitted_at, &b.id).cmp(&(a.submitted_at, &a.id)));
        listed.truncate(usize::try_from(query.limit).unwrap_or(usize::MAX));
        Ok(listed)
    }

    async fn tasks(&self, workflow_id: &str) -> Result<Vec<TaskRecord>, StoreError> {
        Ok(self.read(workflow_id, |stored| stored.tasks.clone()))
    }

    async fn task_ids(&self, workflow_id: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.read(workflow_id, |stored| stored.ids.clone()))
    }

    async fn attempts(&self, workflow_id: &str) -> Result<Vec<AttemptRecord>, StoreError> {
        Ok(self.read(workflow_id, |stored| {
            stored.attempts.iter().flatten().cloned().collect()
        }))
    }

    async fn task_page(&self, workflow_id: &str, from: u32, limit: u32) -> Result<TaskPage, StoreError> {
        let inner = self.inner();
        let Some(stored) = inner.workflows.get(workflow_id) else {
            return Ok(TaskPage::default());
        };
        let start = (from as usize).min(stored.tasks.len());
        let end = start.saturating_add(limit as usize).min(stored.tasks.len());
        Ok(TaskPage {
            records: stored.tasks[start..end].to_vec(),
            ids: stored.ids[start..end].to_vec(),
            attempts: stored.attempts[start..end].iter().flatten().cloned().collect(),
        })
    }

    async fn task_counts(&self, workflow_id: &str) -> Result<Vec<(TaskState, usize)>, StoreError> {
        let inner = self.inner();
        let Some(stored) = inner.workflows.get(workflow_id) else {
            return Ok(Vec::new());
        };
        let mut counts = [0usize; TaskState::ALL.len()];
        for task in &stored.tasks {
            counts[task.state as usize] += 1;
        }
        Ok(TaskState::ALL.into_iter().zip(counts).filter(|&(_, n)| n > 0).collect())
    }

    async fn runtime_stats(&self) -> Result<Vec<(String, LogStats)>, StoreError> {
        let inner = self.inner();
        Ok(inner
            .runtime_stats
            .iter()
            .map(|(signature, stats)| (signature.clone(), *stats))
            .collect())
    }

    async fn feature_models(&self) -> Result<Vec<(String, FeatureModel)>, StoreError> {
        let inner = self.inner();
        Ok(inner
            .feature_models
            .iter()
            .map(|(key, model)| (key.clone(), model.clone()))
            .collect())
    }

    async fn reopen_workflow(&self, workflow_id: &str, reset: &[TaskRecord]) -> Result<bool, StoreError> {
        let mut inner = self.inner();
        let Some(stored) = inner.workflows.get_mut(workflow_id) else {
            return Ok(false);
        };
        if !matches!(stored.record.state, WorkflowState::Failed | WorkflowState::Cancelled) {
            return Ok(false);
        }
        if let Some(record) = reset
            .iter()
            .find(|record| record.task_idx as usize >= stored.tasks.len())
        {
            return Err(missing(format!("task {} of workflow '{workflow_id}'", record.task_idx)));
        }
        stored.record.state = WorkflowState::Running;
        stored.record.finished_at = None;
        for record in reset {
            stored.tasks[record.task_idx as usize] = record.clone();
        }
        Ok(true)
    }

    async fn apply(&self, updates: Arc<[StoreUpdate]>) -> Result<(), StoreError> {
        let mut inner = self.inner();
        inner.check(&updates)?;
        for update in updates.iter() {
            inner.apply(update.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance;

    #[tokio::test]
    async fn memory_store_passes_the_conformance_suite() {
        conformance::run_all(&MemoryStore::new(), "memory").await;
    }
}
