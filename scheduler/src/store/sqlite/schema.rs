//! Opening a SQLite database for the store: connection settings and schema migrations.
//!
//! The schema version lives in `PRAGMA user_version`: version `n` means the first `n` entries
//! of [`MIGRATIONS`] have been applied. Migrations are append-only; never edit a released one.

use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use super::codec::classify;
use crate::store::{applied_migrations, StoreError};

/// How long a statement waits for a lock held by another connection before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Statements cached per connection; the store uses about a dozen.
const STATEMENT_CACHE_CAPACITY: usize = 32;

/// The schema, one migration per entry, each applied in its own transaction.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: workflows, tasks and attempts.
    "CREATE TABLE workflows (
        id TEXT PRIMARY KEY NOT NULL,
        name TEXT NOT NULL,
        spec_hash TEXT NOT NULL,
        source TEXT NOT NULL,
        state TEXT NOT NULL,
        submitted_at INTEGER NOT NULL,
        finished_at INTEGER
    );
    CREATE INDEX workflows_by_state ON workflows (state, spec_hash);
    CREATE TABLE tasks (
        workflow_id TEXT NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
        task_idx INTEGER NOT NULL,
        task_id TEXT NOT NULL,
        state TEXT NOT NULL,
        attempt INTEGER NOT NULL DEFAULT 0,
        n_failures INTEGER NOT NULL DEFAULT 0,
        retry_at INTEGER,
        output TEXT,
        PRIMARY KEY (workflow_id, task_idx)
    ) WITHOUT ROWID;
    CREATE TABLE attempts (
        workflow_id TEXT NOT NULL,
        task_idx INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        dispatched_at INTEGER NOT NULL,
        worker TEXT,
        started_at INTEGER,
        finished_at INTEGER,
        outcome TEXT,
        exit_code INTEGER,
        signal INTEGER,
        error TEXT,
        stdout_tail TEXT NOT NULL DEFAULT '',
        stderr_tail TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (workflow_id, task_idx, attempt),
        FOREIGN KEY (workflow_id, task_idx) REFERENCES tasks (workflow_id, task_idx) ON DELETE CASCADE
    ) WITHOUT ROWID;",
    // 2: idempotency keys, so a resubmission returns the workflow it already created.
    "ALTER TABLE workflows ADD COLUMN idempotency_key TEXT;
    CREATE UNIQUE INDEX workflows_by_idempotency_key ON workflows (idempotency_key)
        WHERE idempotency_key IS NOT NULL;",
    // 3: runtime statistics learned per task signature, for prediction.
    "CREATE TABLE runtime_stats (
        signature TEXT PRIMARY KEY NOT NULL,
        n INTEGER NOT NULL,
        mean REAL NOT NULL,
        m2 REAL NOT NULL
    ) WITHOUT ROWID;",
    // 4: feature regressions learned per signature and feature set (JSON statistics).
    "CREATE TABLE feature_models (
        key TEXT PRIMARY KEY NOT NULL,
        model TEXT NOT NULL
    ) WITHOUT ROWID;",
    // 5: what each attempt used, as its worker measured it.
    "ALTER TABLE attempts ADD COLUMN peak_memory_bytes INTEGER;
    ALTER TABLE attempts ADD COLUMN cpu_time_ms INTEGER;",
    // 6: listing workflows newest first, all of them or those in one state.
    "CREATE INDEX workflows_by_submission ON workflows (submitted_at, id);
    CREATE INDEX workflows_by_state_and_submission ON workflows (state, submitted_at, id);",
];

/// Applies the connection settings and brings the schema up to date.
pub(super) fn prepare(conn: &mut Connection) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|error| classify(error, "set the busy timeout"))?;
    // An in-memory database answers `memory` and stays so; that is fine.
    conn.pragma_update_and_check(None, "journal_mode", "wal", |_| Ok(()))
        .map_err(|error| classify(error, "enable the write-ahead log"))?;
    // With WAL, NORMAL loses at most the last commits on power loss, never consistency.
    conn.pragma_update(None, "synchronous", "normal")
        .map_err(|error| classify(error, "set synchronous mode"))?;
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(|error| classify(error, "enable foreign keys"))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
    migrate(conn)
}

/// The schema version stored in the database.
pub(super) fn user_version(conn: &Connection) -> Result<i64, StoreError> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|error| classify(error, "read the schema version"))
}

/// Applies the migrations the database lacks, or refuses a database from a newer build.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let known = MIGRATIONS.len();
    loop {
        // IMMEDIATE takes the write lock before reading the version, so two processes opening
        // a fresh file at once do not both try to create the tables.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|error| classify(error, "begin a schema migration"))?;
        let version = user_version(&tx)?;
        let applied = applied_migrations(version, known)?;
        let Some(migration) = MIGRATIONS.get(applied) else {
            return Ok(());
        };
        let context = format!("apply schema migration {}", applied + 1);
        tx.execute_batch(migration).map_err(|error| classify(error, &context))?;
        tx.pragma_update(None, "user_version", applied + 1)
            .map_err(|error| classify(error, &context))?;
        tx.commit().map_err(|error| classify(error, &context))?;
    }
}
