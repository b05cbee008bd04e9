//! Translations between the store's types and SQLite: values, rows and errors.

use std::fmt::Display;

use rusqlite::ffi::ErrorCode;
use rusqlite::Row;
use taskfleet_common::state::{AttemptOutcome, TaskState};
use taskfleet_common::Millis;
use taskfleet_engine::predict::{FeatureModel, LogStats};

use crate::store::{decode, AttemptRecord, StoreError, TaskRecord, WorkflowRecord, WorkflowState};

/// Maps a SQLite error to the store error that tells the caller what to do about it;
/// `context` says what the store was doing ("apply updates").
pub(super) fn classify(error: rusqlite::Error, context: &str) -> StoreError {
    use rusqlite::Error as E;
    let reason = format!("{context}: {error}");
    match &error {
        E::SqliteFailure(failure, _) => match failure.code {
            ErrorCode::ConstraintViolation | ErrorCode::TooBig => StoreError::Conflict { reason },
            // Plain SQLITE_ERROR from our fixed statements means the schema is not ours.
            ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase | ErrorCode::TypeMismatch | ErrorCode::Unknown => {
                StoreError::Corrupt { reason }
            }
            _ => StoreError::Unavailable { reason },
        },
        E::FromSqlConversionFailure(..)
        | E::IntegralValueOutOfRange(..)
        | E::Utf8Error(_)
        | E::InvalidColumnIndex(_)
        | E::InvalidColumnName(_)
        | E::InvalidColumnType(..)
        | E::QueryReturnedNoRows => StoreError::Corrupt { reason },
        _ => StoreError::Unavailable { reason },
    }
}

/// An instant as stored: SQLite integers are signed, so instants past the year 292 million
/// are stored as the latest one representable.
/// A count (bytes, milliseconds) as SQLite's signed integer.
pub(super) fn sql_count(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

pub(super) fn millis_to_sql(at: Millis) -> i64 {
    i64::try_from(at.0).unwrap_or(i64::MAX)
}

/// How an attempt outcome is stored.
pub(super) fn outcome_to_sql(outcome: AttemptOutcome) -> &'static str {
    outcome.as_str()
}

fn outcome_from_sql(text: &str) -> Option<AttemptOutcome> {
    AttemptOutcome::parse(text)
}

/// Reads the columns of one row, naming the row in errors (the name is only built on error).
struct Cols<'a, 'r> {
    row: &'a Row<'r>,
    table: &'static str,
    key: &'a dyn Fn() -> String,
}

impl Cols<'_, '_> {
    fn corrupt(&self, column: &str, detail: impl Display) -> StoreError {
        let reason = format!("{} row ({}) has {column} {detail}", self.table, (self.key)());
        StoreError::Corrupt { reason }
    }

    fn get<T: rusqlite::types::FromSql>(&self, idx: usize, column: &str) -> Result<T, StoreError> {
        self.row
            .get(idx)
            .map_err(|error| self.corrupt(column, format_args!("that cannot be read: {error}")))
    }

    fn u32(&self, idx: usize, column: &str) -> Result<u32, StoreError> {
        decode::to_u32(self.get(idx, column)?).map_err(|detail| self.corrupt(column, detail))
    }

    fn i32(&self, idx: usize, column: &str) -> Result<Option<i32>, StoreError> {
        decode::to_i32(self.get(idx, column)?).map_err(|detail| self.corrupt(column, detail))
    }

    fn millis(&self, idx: usize, column: &str) -> Result<Option<Millis>, StoreError> {
        Ok(self.count(idx, column)?.map(Millis))
    }

    /// A count that is never negative, or `NULL`.
    fn count(&self, idx: usize, column: &str) -> Result<Option<u64>, StoreError> {
        decode::to_count(self.get(idx, column)?).map_err(|detail| self.corrupt(column, detail))
    }

    fn required_millis(&self, idx: usize, column: &str) -> Result<Millis, StoreError> {
        self.millis(idx, column)?.ok_or_else(|| self.corrupt(column, "missing"))
    }
}

/// Columns read by [`workflow_from_row`].
pub(super) const WORKFLOW_COLUMNS: &str =
    "id, name, spec_hash, source, state, submitted_at, finished_at, idempotency_key";

pub(super) fn workflow_from_row(row: &Row<'_>) -> Result<WorkflowRecord, StoreError> {
    let id: String = row.get(0).map_err(|error| classify(error, "read a workflows row"))?;
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

pub(super) fn task_from_row(row: &Row<'_>, workflow_id: &str) -> Result<TaskRecord, StoreError> {
    let task_idx = row.get_ref(0).ok().and_then(|value| value.as_i64().ok());
    let key = || format!("workflow '{workflow_id}', task {}", task_idx.unwrap_or(-1));
    let cols = Cols {
        row,
        table: "tasks",
        key: &key,
    };
    let state = row
        .get_ref(1)
        .map_err(|error| cols.corrupt("state", format_args!("that cannot be read: {error}")))?;
    let state = state
        .as_str()
        .ok()
        .and_then(TaskState::parse)
        .ok_or_else(|| cols.corrupt("state", format_args!("unknown value {}", show(state))))?;
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

pub(super) fn attempt_from_row(row: &Row<'_>, workflow_id: &str) -> Result<AttemptRecord, StoreError> {
    let number = |idx| row.get_ref(idx).ok().and_then(|value| value.as_i64().ok());
    let (task_idx, attempt) = (number(0), number(1));
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
            outcome_from_sql(&text).ok_or_else(|| cols.corrupt("outcome", format_args!("unknown value '{text}'")))?,
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
pub(super) fn runtime_stats_from_row(row: &Row<'_>) -> Result<(String, LogStats), StoreError> {
    let read = |error| classify(error, "read runtime statistics");
    let n: i64 = row.get(1).map_err(read)?;
    let stats = LogStats {
        n: u64::try_from(n).unwrap_or(0),
        mean: row.get(2).map_err(read)?,
        m2: row.get(3).map_err(read)?,
    };
    Ok((row.get(0).map_err(read)?, stats))
}

/// A row of `SELECT key, model FROM feature_models`.
pub(super) fn feature_model_from_row(row: &Row<'_>) -> Result<(String, FeatureModel), StoreError> {
    let read = |error| classify(error, "read feature models");
    let key: String = row.get(0).map_err(read)?;
    let text: String = row.get(1).map_err(read)?;
    let model = serde_json::from_str(&text).map_err(|error| StoreError::Corrupt {
        reason: format!("feature model `{key}`: {error}"),
    })?;
    Ok((key, model))
}

/// A stored value as shown in an error message.
fn show(value: rusqlite::types::ValueRef<'_>) -> String {
    use rusqlite::types::ValueRef as V;
    match value {
        V::Null => "null".to_string(),
        V::Integer(number) => number.to_string(),
        V::Real(number) => number.to_string(),
        V::Text(text) => format!("'{}'", String::from_utf8_lossy(text)),
        V::Blob(bytes) => format!("blob of {} bytes", bytes.len()),
    }
}
