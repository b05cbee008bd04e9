//! Translations between the store's types and PostgreSQL: values, rows and errors.

use taskfleet_common::Millis;
use tokio_postgres::error::SqlState;
use tokio_postgres::Row;

use crate::store::{decode, StoreError};

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

/// Reads PostgreSQL rows for the shared decoders of [`crate::store::decode`].
impl decode::Column for Row {
    fn text(&self, idx: usize) -> Result<Option<String>, String> {
        self.try_get(idx).map_err(|error| error.to_string())
    }

    fn int(&self, idx: usize) -> Result<Option<i64>, String> {
        self.try_get(idx).map_err(|error| error.to_string())
    }

    fn real(&self, idx: usize) -> Result<Option<f64>, String> {
        self.try_get(idx).map_err(|error| error.to_string())
    }
}

pub(super) use decode::{
    attempt as attempt_from_row, feature_model as feature_model_from_row, runtime_stats as runtime_stats_from_row,
    task as task_from_row, workflow as workflow_from_row, ATTEMPT_COLUMNS, TASK_COLUMNS, WORKFLOW_COLUMNS,
};
