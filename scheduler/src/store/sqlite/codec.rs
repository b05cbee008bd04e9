//! Translations between the store's types and SQLite: values, rows and errors.

use rusqlite::ffi::ErrorCode;
use rusqlite::Row;
use taskfleet_common::state::AttemptOutcome;
use taskfleet_common::Millis;
use taskfleet_engine::predict::{FeatureModel, LogStats};

use crate::store::{decode, AttemptRecord, StoreError, TaskRecord, WorkflowRecord};

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

/// Reads SQLite rows for the shared decoders of [`crate::store::decode`].
impl decode::Column for Row<'_> {
    fn text(&self, idx: usize) -> Result<Option<String>, String> {
        self.get(idx).map_err(|error| error.to_string())
    }

    fn int(&self, idx: usize) -> Result<Option<i64>, String> {
        self.get(idx).map_err(|error| error.to_string())
    }

    fn real(&self, idx: usize) -> Result<Option<f64>, String> {
        self.get(idx).map_err(|error| error.to_string())
    }
}

pub(super) use decode::{ATTEMPT_COLUMNS, TASK_COLUMNS, WORKFLOW_COLUMNS};

pub(super) fn workflow_from_row(row: &Row<'_>) -> Result<WorkflowRecord, StoreError> {
    decode::workflow(row)
}

pub(super) fn task_from_row(row: &Row<'_>, workflow_id: &str) -> Result<TaskRecord, StoreError> {
    decode::task(row, workflow_id)
}

pub(super) fn attempt_from_row(row: &Row<'_>, workflow_id: &str) -> Result<AttemptRecord, StoreError> {
    decode::attempt(row, workflow_id)
}

pub(super) fn runtime_stats_from_row(row: &Row<'_>) -> Result<(String, LogStats), StoreError> {
    decode::runtime_stats(row)
}

pub(super) fn feature_model_from_row(row: &Row<'_>) -> Result<(String, FeatureModel), StoreError> {
    decode::feature_model(row)
}
