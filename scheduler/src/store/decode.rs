//! Reading the store's records back from rows, the same way for every database: each store
//! says how to read one column of its rows ([`Column`]); the checks of what the values mean
//! (a task index fits, a state is one, an instant is not negative) and the errors naming the
//! row are written once, here.

use std::fmt::Display;

use taskfleet_common::state::{AttemptOutcome, TaskState};
use taskfleet_common::Millis;
use taskfleet_engine::predict::{FeatureModel, LogStats};

use super::{AttemptRecord, StoreError, TaskRecord, WorkflowRecord, WorkflowState};

/// One row of a database, read column by column; an error says why the value cannot be read.
pub(super) trait Column {
    fn text(&self, idx: usize) -> Result<Option<String>, String>;
    fn int(&self, idx: usize) -> Result<Option<i64>, String>;
    fn real(&self, idx: usize) -> Result<Option<f64>, String>;
}

/// A row being decoded, naming itself in errors (the name is only built on error).
struct Cols<'a, R> {
    row: &'a R,
    table: &'static str,
    key: &'a dyn Fn() -> String,
}

impl<R: Column> Cols<'_, R> {
    fn corrupt(&self, column: &str, detail: impl Display) -> StoreError {
        let reason = format!("{} row ({}) has {column} {detail}", self.table, (self.key)());
        StoreError::Corrupt { reason }
    }

    fn unreadable(&self, column: &str) -> impl Fn(String) -> StoreError + '_ {
        let column = column.to_string();
        move |error| self.corrupt(&column, format_args!("that cannot be read: {error}"))
    }

    fn opt_text(&self, idx: usize, column: &str) -> Result<Option<String>, StoreError> {
        self.row.text(idx).map_err(self.unreadable(column))
    }

    fn text(&self, idx: usize, column: &str) -> Result<String, StoreError> {
        self.opt_text(idx, column)?
            .ok_or_else(|| self.corrupt(column, "missing"))
    }

    fn opt_int(&self, idx: usize, column: &str) -> Result<Option<i64>, StoreError> {
        self.row.int(idx).map_err(self.unreadable(column))
    }

    fn real(&self, idx: usize, column: &str) -> Result<f64, StoreError> {
        self.row
            .real(idx)
            .map_err(self.unreadable(column))?
            .ok_or_else(|| self.corrupt(column, "missing"))
    }

    fn u32(&self, idx: usize, column: &str) -> Result<u32, StoreError> {
        let value = self
            .opt_int(idx, column)?
            .ok_or_else(|| self.corrupt(column, "missing"))?;
        u32::try_from(value).map_err(|_| self.corrupt(column, format_args!("out of range: {value}")))
    }

    fn i32(&self, idx: usize, column: &str) -> Result<Option<i32>, StoreError> {
        self.opt_int(idx, column)?
            .map(|value| i32::try_from(value).map_err(|_| self.corrupt(column, format_args!("out of range: {value}"))))
            .transpose()
    }

    /// A count that is never negative, or `NULL`.
    fn count(&self, idx: usize, column: &str) -> Result<Option<u64>, StoreError> {
        self.opt_int(idx, column)?
            .map(|value| u64::try_from(value).map_err(|_| self.corrupt(column, format_args!("negative: {value}"))))
            .transpose()
    }

    fn millis(&self, idx: usize, column: &str) -> Result<Option<Millis>, StoreError> {
        Ok(self.count(idx, column)?.map(Millis))
    }

    fn required_millis(&self, idx: usize, column: &str) -> Result<Millis, StoreError> {
        self.millis(idx, column)?.ok_or_else(|| self.corrupt(column, "missing"))
    }
}

/// Columns read by [`workflow`].
pub(super) const WORKFLOW_COLUMNS: &str =
    "id, name, spec_hash, source, state, submitted_at, finished_at, idempotency_key";

pub(super) fn workflow(row: &impl Column) -> Result<WorkflowRecord, StoreError> {
    let id = row.text(0).ok().flatten().unwrap_or_default();
    let key = || format!("id '{id}'");
    let cols = Cols {
        row,
        table: "workflows",
        key: &key,
    };
    let state = cols.text(4, "state")?;
    let state =
        WorkflowState::parse(&state).ok_or_else(|| cols.corrupt("state", format_args!("unknown value '{state}'")))?;
    Ok(WorkflowRecord {
        id: cols.text(0, "id")?,
        name: cols.text(1, "name")?,
        spec_hash: cols.text(2, "spec_hash")?,
        source: cols.text(3, "source")?,
        state,
        submitted_at: cols.required_millis(5, "submitted_at")?,
        finished_at: cols.millis(6, "finished_at")?,
        idempotency_key: cols.opt_text(7, "idempotency_key")?,
    })
}

/// Columns read by [`task`].
pub(super) const TASK_COLUMNS: &str = "task_idx, state, attempt, n_failures, retry_at, output";

pub(super) fn task(row: &impl Column, workflow_id: &str) -> Result<TaskRecord, StoreError> {
    let task_idx = row.int(0).ok().flatten();
    let key = || format!("workflow '{workflow_id}', task {}", task_idx.unwrap_or(-1));
    let cols = Cols {
        row,
        table: "tasks",
        key: &key,
    };
    let state = cols.text(1, "state")?;
    let state =
        TaskState::parse(&state).ok_or_else(|| cols.corrupt("state", format_args!("unknown value '{state}'")))?;
    Ok(TaskRecord {
        task_idx: cols.u32(0, "task_idx")?,
        state,
        attempt: cols.u32(2, "attempt")?,
        n_failures: cols.u32(3, "n_failures")?,
        retry_at: cols.millis(4, "retry_at")?,
        output: cols.opt_text(5, "output")?,
    })
}

/// Columns read by [`attempt`].
pub(super) const ATTEMPT_COLUMNS: &str = "task_idx, attempt, dispatched_at, worker, started_at, \
     finished_at, outcome, exit_code, signal, error, stdout_tail, stderr_tail, peak_memory_bytes, \
     cpu_time_ms";

pub(super) fn attempt(row: &impl Column, workflow_id: &str) -> Result<AttemptRecord, StoreError> {
    let (task_idx, attempt) = (row.int(0).ok().flatten(), row.int(1).ok().flatten());
    let key = || {
        let (task_idx, attempt) = (task_idx.unwrap_or(-1), attempt.unwrap_or(-1));
        format!("workflow '{workflow_id}', task {task_idx}, attempt {attempt}")
    };
    let cols = Cols {
        row,
        table: "attempts",
        key: &key,
    };
    let outcome = match cols.opt_text(6, "outcome")? {
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
        worker: cols.opt_text(3, "worker")?,
        started_at: cols.millis(4, "started_at")?,
        finished_at: cols.millis(5, "finished_at")?,
        outcome,
        exit_code: cols.i32(7, "exit_code")?,
        signal: cols.i32(8, "signal")?,
        error: cols.opt_text(9, "error")?,
        stdout_tail: cols.text(10, "stdout_tail")?,
        stderr_tail: cols.text(11, "stderr_tail")?,
        peak_memory_bytes: cols.count(12, "peak_memory_bytes")?,
        cpu_time_ms: cols.count(13, "cpu_time_ms")?,
    })
}

/// A row of `SELECT signature, n, mean, m2 FROM runtime_stats`.
pub(super) fn runtime_stats(row: &impl Column) -> Result<(String, LogStats), StoreError> {
    let signature = row.text(0).ok().flatten().unwrap_or_default();
    let key = || format!("signature '{signature}'");
    let cols = Cols {
        row,
        table: "runtime_stats",
        key: &key,
    };
    let stats = LogStats {
        n: cols.count(1, "n")?.unwrap_or(0),
        mean: cols.real(2, "mean")?,
        m2: cols.real(3, "m2")?,
    };
    Ok((cols.text(0, "signature")?, stats))
}

/// A row of `SELECT key, model FROM feature_models`.
pub(super) fn feature_model(row: &impl Column) -> Result<(String, FeatureModel), StoreError> {
    let name = row.text(0).ok().flatten().unwrap_or_default();
    let key = || format!("key '{name}'");
    let cols = Cols {
        row,
        table: "feature_models",
        key: &key,
    };
    let key = cols.text(0, "key")?;
    let text = cols.text(1, "model")?;
    let model = serde_json::from_str(&text).map_err(|error| StoreError::Corrupt {
        reason: format!("feature model `{key}`: {error}"),
    })?;
    Ok((key, model))
}
