//! The scheduler's source of truth: workflows, tasks, attempts, results and outputs.
//!
//! [`Store`] is the interface the scheduler loop talks to; [`SqliteStore`] implements it in
//! a file (or an in-memory database) on one machine, [`PostgresStore`] in a PostgreSQL
//! database that several schedulers can share, [`MemoryStore`] in this process's memory for
//! runs that keep nothing. Writes arrive as batches of the engine's
//! [`StoreUpdate`]s applied in one transaction, so the scheduler pays one commit per batch,
//! not per task.

mod coalesce;
pub mod conformance;
mod decode;
mod memory;
mod postgres;
mod shared;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use taskfleet_common::state::TaskState;
use taskfleet_common::{Millis, WorkflowSpec};
use taskfleet_engine::predict::{FeatureModel, LogStats};

pub use coalesce::coalesce;
pub use memory::MemoryStore;
pub use postgres::PostgresStore;
pub use shared::{Lease, Request, SharedStore};
pub use sqlite::SqliteStore;
/// The engine's records, which the store persists.
pub use taskfleet_engine::records::{AttemptRecord, StoreUpdate, TaskRecord, WorkflowState};

/// Errors of a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or is busy: retry later.
    #[error("store unavailable: {reason}")]
    Unavailable { reason: String },
    /// The stored data is not what this build expects (newer schema, corrupt row): give up.
    #[error("store data is unusable: {reason}")]
    Corrupt { reason: String },
    /// The request conflicts with what is stored (e.g. a duplicate workflow id).
    #[error("store conflict: {reason}")]
    Conflict { reason: String },
    /// Another process holds the store: retrying will not help until it stops.
    #[error("{reason}")]
    InUse { reason: String },
    /// The write was refused: this scheduler no longer holds the leadership it wrote under
    /// (another scheduler leads now).
    #[error("{reason}")]
    Fenced { reason: String },
}

/// How many migrations of `known` a database with schema `version` has had, or why it cannot
/// be opened (a version that is not one, or one newer than this build knows).
fn applied_migrations(version: i64, known: usize) -> Result<usize, StoreError> {
    let applied = usize::try_from(version).map_err(|_| StoreError::Corrupt {
        reason: format!("database schema version {version} is not valid"),
    })?;
    if applied > known {
        return Err(StoreError::Corrupt {
            reason: format!(
                "database schema version {applied} is newer than this build knows ({known}): \
                 upgrade taskfleet to open it"
            ),
        });
    }
    Ok(applied)
}

/// A stored workflow.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkflowRecord {
    /// Unique id, chosen by the scheduler.
    pub id: String,
    pub name: String,
    /// Hash of the workflow's source text; a run of the same file resumes the unfinished run.
    pub spec_hash: String,
    /// The workflow file as submitted (YAML or JSON); the spec is rebuilt from it on load.
    pub source: String,
    pub state: WorkflowState,
    pub submitted_at: Millis,
    pub finished_at: Option<Millis>,
    /// The key a client gave so that resubmitting returns this workflow instead of a new one.
    pub idempotency_key: Option<String>,
}

impl WorkflowRecord {
    /// A workflow just submitted: running, no source, no hash, no idempotency key (callers set
    /// those they have with struct update syntax).
    pub fn running(id: impl Into<String>, name: impl Into<String>, submitted_at: Millis) -> WorkflowRecord {
        WorkflowRecord {
            id: id.into(),
            name: name.into(),
            spec_hash: String::new(),
            source: String::new(),
            state: WorkflowState::Running,
            submitted_at,
            finished_at: None,
            idempotency_key: None,
        }
    }
}

/// Which workflows to list, newest first (`GET /v1/workflows`, `taskfleet list`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkflowQuery {
    pub state: Option<WorkflowState>,
    /// Only workflows of exactly this name.
    pub name: Option<String>,
    /// Only workflows submitted at or after this instant.
    pub submitted_after: Option<Millis>,
    /// Only workflows listed after this one (the last of the previous page): submitted
    /// earlier, or at the same instant with a smaller id.
    pub before: Option<(Millis, String)>,
    /// The most to return.
    pub limit: u32,
}

impl WorkflowQuery {
    /// Whether `record` is listed (its place in the order aside).
    pub fn matches(&self, record: &WorkflowRecord) -> bool {
        self.state.is_none_or(|state| record.state == state)
            && self.name.as_deref().is_none_or(|name| record.name == name)
            && self.submitted_after.is_none_or(|after| record.submitted_at >= after)
            && self
                .before
                .as_ref()
                .is_none_or(|(at, id)| (record.submitted_at, &record.id) < (*at, id))
    }

    /// The statement listing what this query selects and its parameters, numbered from 1 by
    /// `placeholder` (`?1` for SQLite, `$1` for PostgreSQL): one text for every SQL store.
    pub(super) fn to_sql(&self, placeholder: fn(usize) -> String) -> (String, Vec<SqlParam>) {
        let (clause, params) = self.where_clause(placeholder);
        let sql = format!(
            "SELECT {WORKFLOW_SUMMARY_COLUMNS} FROM workflows {clause} ORDER BY submitted_at DESC, id DESC LIMIT {}",
            self.limit
        );
        (sql, params)
    }

    /// The `WHERE` clause and its parameters.
    fn where_clause(&self, placeholder: fn(usize) -> String) -> (String, Vec<SqlParam>) {
        let mut conditions = Vec::new();
        let mut params = Vec::new();
        let next = |param: SqlParam, params: &mut Vec<SqlParam>| {
            params.push(param);
            placeholder(params.len())
        };
        if let Some(state) = self.state {
            let at = next(SqlParam::Text(state.as_str().to_string()), &mut params);
            conditions.push(format!("state = {at}"));
        }
        if let Some(name) = &self.name {
            let at = next(SqlParam::Text(name.clone()), &mut params);
            conditions.push(format!("name = {at}"));
        }
        if let Some(after) = self.submitted_after {
            let at = next(SqlParam::Int(millis_param(after)), &mut params);
            conditions.push(format!("submitted_at >= {at}"));
        }
        if let Some((at_ms, id)) = &self.before {
            let at = next(SqlParam::Int(millis_param(*at_ms)), &mut params);
            let id = next(SqlParam::Text(id.clone()), &mut params);
            conditions.push(format!("(submitted_at < {at} OR (submitted_at = {at} AND id < {id}))"));
        }
        let clause = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        (clause, params)
    }
}

fn millis_param(at: Millis) -> i64 {
    i64::try_from(at.0).unwrap_or(i64::MAX)
}

/// A parameter of a generated SQL statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum SqlParam {
    Text(String),
    Int(i64),
}

/// The columns of a listed workflow: its record without the source text.
const WORKFLOW_SUMMARY_COLUMNS: &str =
    "id, name, spec_hash, '' AS source, state, submitted_at, finished_at, idempotency_key";

/// Some consecutive tasks of a workflow, as stored.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskPage {
    pub records: Vec<TaskRecord>,
    /// Each record's task id, in the same order.
    pub ids: Vec<String>,
    /// The attempts of these tasks, by task index then attempt number.
    pub attempts: Vec<AttemptRecord>,
}

/// Persistent scheduler state.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a new workflow and one `pending` task row per task of `spec` (roots `ready`).
    async fn create_workflow(&self, record: &WorkflowRecord, spec: &WorkflowSpec) -> Result<(), StoreError>;

    /// The workflow with this id.
    async fn workflow(&self, id: &str) -> Result<Option<WorkflowRecord>, StoreError>;

    /// The workflow created with this idempotency key, if any.
    async fn workflow_by_idempotency_key(&self, key: &str) -> Result<Option<WorkflowRecord>, StoreError>;

    /// Workflows still running, oldest first; with `spec_hash`, only those of that source.
    async fn running_workflows(&self, spec_hash: Option<&str>) -> Result<Vec<WorkflowRecord>, StoreError>;

    /// The workflows `query` selects, newest first (by submission, then id), at most
    /// `query.limit`, each without its source text.
    async fn list_workflows(&self, query: &WorkflowQuery) -> Result<Vec<WorkflowRecord>, StoreError>;

    /// Every task's stored state, by task index.
    async fn tasks(&self, workflow_id: &str) -> Result<Vec<TaskRecord>, StoreError>;

    /// Every task's id (its name in the workflow file), by task index.
    async fn task_ids(&self, workflow_id: &str) -> Result<Vec<String>, StoreError>;

    /// Every attempt of the workflow, by task index then attempt number.
    async fn attempts(&self, workflow_id: &str) -> Result<Vec<AttemptRecord>, StoreError>;

    /// The tasks whose index is in `from..from + limit`: records, ids and attempts, by index.
    async fn task_page(&self, workflow_id: &str, from: u32, limit: u32) -> Result<TaskPage, StoreError>;

    /// How many tasks of the workflow are in each state (states with none left out).
    async fn task_counts(&self, workflow_id: &str) -> Result<Vec<(TaskState, usize)>, StoreError>;

    /// The runtime statistics learned so far, by task signature.
    async fn runtime_stats(&self) -> Result<Vec<(String, LogStats)>, StoreError>;

    /// The feature regressions learned so far, by key.
    async fn feature_models(&self) -> Result<Vec<(String, FeatureModel)>, StoreError>;

    /// Opens an ended workflow again for a retry, atomically: if it ended `failed` or
    /// `cancelled`, it is `running` again (its end and any cancellation request cleared) and
    /// each of `reset` replaces its task's record; a shared store also tells the leader. False
    /// (and nothing written) if it is running or succeeded, or does not exist.
    async fn reopen_workflow(&self, workflow_id: &str, reset: &[TaskRecord]) -> Result<bool, StoreError>;

    /// Applies the updates atomically, in order.
    async fn apply(&self, updates: Arc<[StoreUpdate]>) -> Result<(), StoreError>;

    /// What the store offers several schedulers sharing it; `None` for a store of one
    /// scheduler (which then always leads).
    fn shared(&self) -> Option<&dyn SharedStore> {
        None
    }
}
