//! Translations between the store's types and PostgreSQL: values, rows and errors.

use std::fmt::Display;

use taskfleet_common::state::{AttemptOutcome, TaskState};
use taskfleet_common::Millis;
use taskfleet_engine::predict::{FeatureModel, LogStats};
use tokio_postgres::error::SqlState;
use tokio_postgres::Row;

use crate::store::{decode, AttemptRecord, StoreError, TaskRecord, WorkflowRecord, WorkflowState};

/// Maps a PostgreSQL error to the store error that tells the caller what to do about it;
/// `context` says what the store was doing ("apply updates").
pub(super) fn classify(error: tokio_postgres::Error, context: &str) -> StoreError {
    let reason = format!("{context}: {}", describe(&error));
    let Some(code) = error.code() else {
        // No SQLSTATE: the connection closed, timed out or could not be made.
        return StoreError::Unavailable { reason };
    };
    if [
        SqlState::UNIQUE_VIOLATION,
        SqlState::FOREIGN_KEY_VIOLATION,
        SqlState::NOT_NULL_VIOLATION,
        SqlState::CHECK_VIOLATION,
        SqlState::PROGRAM_LIMIT_EXCEEDED,
    ]
    .contains(code)
    {
        return StoreError::Conflict { reason };
    }
    match &code.code()[..2] {
        // Connection exceptions, insufficient resources, operator intervention (shutdown,
        // terminated backend), rolled-back transactions (serialization, deadlock), locks.
        "08" | "53" | "57" | "40" | "55" | "58" => StoreError::Unavailable { reason },
        // Anything else from our fixed statements means the schema or the data is not ours.
        _ => StoreError::Corrupt { reason },
    }
}

/// The error with the server's message, which `Display` alone leaves out.
fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => error.to_string(),
    }
}

/// A count or instant as PostgreSQL's signed `BIGINT`.
pub(super) fn sql_count(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

pub(super) fn millis_to_sql(at: Millis) -> i64 {
    sql_count(at.0)
}

/// Reads the columns of one row, naming the row in errors (the name is only built on error).
struct Cols<'a> {
    row: &'a Row,
    table: &'static str,
    key: &'a dyn Fn() -> String,
}

impl Cols<'_> {
    fn corrupt(&self, column: &str, detail: impl Display) -> StoreError {
        let reason = format!("{} row ({}) has {column} {detail}", self.table, (self.key)());
        StoreError::Corrupt { reason }
    }

    fn get<'r, T: tokio_postgres::types::FromSql<'r>>(&'r self, idx: usize, column: &str) -> Result<T, StoreError> {
        self.row
            .try_get(idx)
            .map_err(|error| self.corrupt(column, format_args!("that cannot be read: {error}")))
    }

    fn u32(&self, idx: usize, column: &str) -> Result<u32, StoreError> {
        decode::to_u32(self.get(idx, column)?).map_err(|detail| self.corrupt(column, detail))
    }

    fn i32(&self, idx: usize, column: &str) -> Result<Option<i32>, StoreError> {
        decode::to_i32(self.get(idx, column)?).map_err(|detail| self.corrupt(column, detail))
    }

    /// A count that is never negative, or `NULL`.
    fn count(&self, idx: usize, column: &str) -> Result<Option<u64>, StoreError> {
        decode::to_count(self.get(idx, column)?).map_err(|detail| self.corrupt(column, detail))
    }

    fn millis(&self, idx: usize, column: &str) -> Result<Option<Millis>, StoreError> {
        Ok(self.count(idx, column)?.map(Millis))
    }

    fn required_millis(&self, idx: usize, column: &str) -> Result<Millis, StoreError> {
        self.millis(idx, column)?.ok_or_else(|| self.corrupt(column, "missing"))
    }
}

/// Columns read by [`workflow_from_row`].
pub(super) const WORKFLOW_COLUMNS: &str =
    "id, name, spec_hash, source, state, submitted_at, finished_at, idempotency_key";

pub(super) fn workflow_from_row(row: &Row) -> Result<WorkflowRecord, StoreError> {
    let id: String = row.try_get(0).map_err(|error| StoreError::Corrupt {
        reason: format!("a workflows row has an unreadable id: {error}"),
    })?;
    let key = || format!("id '{id}'");
    let cols = Cols {
        row,
        table: "workflows",
        key: &key,
    };
    let state: String = cols.get(4, "state")?;
    let state =
        WorkflowState::parse(&state).ok_or_else(|| cols.corrupt("state", format_args!("unknown value '{state}'")))?;
    Ok(WorkflowRecord {
        name: cols.get(1, "name")?,
        spec_hash: cols.get(2, "spec_hash")?,
        source: cols.get(3, "source")?,
        state,
        submitted_at: cols.required_millis(5, "submitted_at")?,
        finished_at: cols.millis(6, "finished_at")?,
        idempotency_key: cols.get(7, "idempotency_key")?,
        id,
    })
}

/// Columns read by [`task_from_row`].
pub(super) const TASK_COLUMNS: &str = "task_idx, state, attempt, n_failures, retry_at, output";

pub(super) fn task_from_row(row: &Row, workflow_id: &str) -> Result<TaskRecord, StoreError> {
    let task_idx = row.try_get::<_, i64>(0).ok();
    let key = || format!("workflow '{workflow_id}', task {}", task_idx.unwrap_or(-1));
    let cols = Cols {
        row,
        table: "tasks",
        key: &key,
    };
    let state: String = cols.get(1, "state")?;
    let state =
        TaskState::parse(&state).ok_or_else(|| cols.corrupt("state", format_args!("unknown value '{state}'")))?;
    Ok(TaskRecord {
        task_idx: cols.u32(0, "task_idx")?,
        state,
        attempt: cols.u32(2, "attempt")?,
        n_failures: cols.u32(3, "n_failures")?,
        retry_at: cols.millis(4, "retry_at")?,
        output: cols.get(5, "output")?,
    })
}

/// Columns read by [`attempt_from_row`].
pub(super) const ATTEMPT_COLUMNS: &str = "task_idx, attempt, dispatched_at, worker, started_at, \
     finished_at, outcome, exit_code, signal, error, stdout_tail, stderr_tail, peak_memory_bytes, \
     cpu_time_ms";

pub(super) fn attempt_from_row(row: &Row, workflow_id: &str) -> Result<AttemptRecord, StoreError> {
    let (task_idx, attempt) = (row.try_get::<_, i64>(0).ok(), row.try_get::<_, i64>(1).ok());
    let key = || {
        let (task_idx, attempt) = (task_idx.unwrap_or(-1), attempt.unwrap_or(-1));
        format!("workflow '{workflow_id}', task {task_idx}, attempt {attempt}")
    };
    let cols = Cols {
        row,
        table: "attempts",
        key: &key,
    };
    let outcome = match cols.get::<Option<String>>(6, "outcome")? {
        None => None,
        Some(text) => Some(
            AttemptOutcome::parse(&text)
                .ok_or_else(|| cols.corrupt("outcome", format_args!("unknown value '{text}'")))?,
        ),
    };
    Ok(AttemptRecord {
        task_idx: cols.u32(0, "task_idx")?,
        attempt: cols.u32(1, "attempt")?,
        dispatched_at: cols.required_millis(2, "dispatched_at")?,
        worker: cols.get(3, "worker")?,
        started_at: cols.millis(4, "started_at")?,
        finished_at: cols.millis(5, "finished_at")?,
        outcome,
        exit_code: cols.i32(7, "exit_code")?,
        signal: cols.i32(8, "signal")?,
        error: cols.get(9, "error")?,
        stdout_tail: cols.get(10, "stdout_tail")?,
        stderr_tail: cols.get(11, "stderr_tail")?,
        peak_memory_bytes: cols.count(12, "peak_memory_bytes")?,
        cpu_time_ms: cols.count(13, "cpu_time_ms")?,
    })
}

/// A row of `SELECT signature, n, mean, m2 FROM runtime_stats`.
pub(super) fn runtime_stats_from_row(row: &Row) -> Result<(String, LogStats), StoreError> {
    let key = || "runtime statistics".to_string();
    let cols = Cols {
        row,
        table: "runtime_stats",
        key: &key,
    };
    let stats = LogStats {
        n: cols.count(1, "n")?.unwrap_or(0),
        mean: cols.get(2, "mean")?,
        m2: cols.get(3, "m2")?,
    };
    Ok((cols.get(0, "signature")?, stats))
}

/// A row of `SELECT key, model FROM feature_models`.
pub(super) fn feature_model_from_row(row: &Row) -> Result<(String, FeatureModel), StoreError> {
    let key = || "a feature model".to_string();
    let cols = Cols {
        row,
        table: "feature_models",
        key: &key,
    };
    let key: String = cols.get(0, "key")?;
    let text: String = cols.get(1, "model")?;
    let model = serde_json::from_str(&text).map_err(|error| StoreError::Corrupt {
        reason: format!("feature model `{key}`: {error}"),
    })?;
    Ok((key, model))
}
