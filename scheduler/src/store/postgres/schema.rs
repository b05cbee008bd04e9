//! The PostgreSQL schema and its migrations.
//!
//! The version lives in the one-row table `taskfleet_schema`: version `n` means the first `n`
//! entries of [`MIGRATIONS`] have been applied. Migrations are append-only; never edit a
//! released one. They run at start-up in one transaction under a transaction-scoped advisory
//! lock, so schedulers starting together apply each migration once, and a database from a
//! newer build is refused.

use tokio_postgres::Client;

use super::codec::classify;
use crate::store::{applied_migrations, StoreError};

/// Key of the advisory lock migrations take (any constant shared by every build).
pub(super) const MIGRATION_LOCK: i64 = 0x7461_736b_666c_6565; // "taskflee"

/// The schema, one migration per entry.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: workflows, tasks, attempts, and what prediction learns.
    "CREATE TABLE workflows (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        spec_hash TEXT NOT NULL,
        source TEXT NOT NULL,
        state TEXT NOT NULL,
        submitted_at BIGINT NOT NULL,
        finished_at BIGINT,
        idempotency_key TEXT UNIQUE
    );
    CREATE INDEX workflows_by_state ON workflows (state, spec_hash);
    CREATE TABLE tasks (
        workflow_id TEXT NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
        task_idx BIGINT NOT NULL,
        task_id TEXT NOT NULL,
        state TEXT NOT NULL,
        attempt BIGINT NOT NULL DEFAULT 0,
        n_failures BIGINT NOT NULL DEFAULT 0,
        retry_at BIGINT,
        output TEXT,
        PRIMARY KEY (workflow_id, task_idx)
    );
    CREATE TABLE attempts (
        workflow_id TEXT NOT NULL,
        task_idx BIGINT NOT NULL,
        attempt BIGINT NOT NULL,
        dispatched_at BIGINT NOT NULL,
        worker TEXT,
        started_at BIGINT,
        finished_at BIGINT,
        outcome TEXT,
        exit_code BIGINT,
        signal BIGINT,
        error TEXT,
        stdout_tail TEXT NOT NULL DEFAULT '',
        stderr_tail TEXT NOT NULL DEFAULT '',
        peak_memory_bytes BIGINT,
        cpu_time_ms BIGINT,
        PRIMARY KEY (workflow_id, task_idx, attempt),
        FOREIGN KEY (workflow_id, task_idx) REFERENCES tasks (workflow_id, task_idx) ON DELETE CASCADE
    );
    CREATE TABLE runtime_stats (
        signature TEXT PRIMARY KEY,
        n BIGINT NOT NULL,
        mean DOUBLE PRECISION NOT NULL,
        m2 DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE feature_models (
        key TEXT PRIMARY KEY,
        model TEXT NOT NULL
    );",
    // 2: standby schedulers: the leader's lease (with its epoch, the fencing token), the
    // requests standbys leave for the leader, and cancellations asked for.
    "CREATE TABLE taskfleet_leader (
        id INT PRIMARY KEY CHECK (id = 1),
        holder TEXT NOT NULL,
        epoch BIGINT NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL,
        renewed_at TIMESTAMPTZ
    );
    INSERT INTO taskfleet_leader (id, holder, epoch, expires_at) VALUES (1, '', 0, '-infinity');
    CREATE TABLE taskfleet_requests (
        id BIGSERIAL PRIMARY KEY,
        kind TEXT NOT NULL,
        workflow_id TEXT NOT NULL
    );
    ALTER TABLE workflows ADD COLUMN cancel_requested BOOLEAN NOT NULL DEFAULT false;",
    // 3: no foreign keys between workflows, tasks and attempts. The store's writes check that
    // what they name exists (task rows go in with their workflow in one transaction; attempt
    // writes join `tasks`; updates return the keys they touched, and a missing one is an
    // error naming it), and nothing deletes rows. The per-row checks of the foreign keys cost
    // as much as the inserts: a million-task workflow took twice as long to store with them.
    "ALTER TABLE tasks DROP CONSTRAINT IF EXISTS tasks_workflow_id_fkey;
    ALTER TABLE attempts DROP CONSTRAINT IF EXISTS attempts_workflow_id_task_idx_fkey;",
    // 4: listing workflows newest first, all of them or those in one state.
    "CREATE INDEX workflows_by_submission ON workflows (submitted_at, id);
    CREATE INDEX workflows_by_state_and_submission ON workflows (state, submitted_at, id);",
];

/// The schema version stored in the database (0 for an empty one).
pub(super) async fn version(client: &Client) -> Result<i64, StoreError> {
    let exists = client
        .query_one("SELECT to_regclass('taskfleet_schema') IS NOT NULL", &[])
        .await
        .map_err(|error| classify(error, "look for the schema version"))?;
    if !exists.get::<_, bool>(0) {
        return Ok(0);
    }
    let row = client
        .query_opt("SELECT version FROM taskfleet_schema", &[])
        .await
        .map_err(|error| classify(error, "read the schema version"))?;
    Ok(row.map_or(0, |row| row.get::<_, i64>(0)))
}

/// Applies the migrations the database lacks, or refuses a database from a newer build.
pub(super) async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let context = "migrate the schema";
    let tx = client.transaction().await.map_err(|error| classify(error, context))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|error| classify(error, "lock the schema for migration"))?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS taskfleet_schema (version BIGINT NOT NULL)")
        .await
        .map_err(|error| classify(error, context))?;
    let row = tx
        .query_opt("SELECT version FROM taskfleet_schema", &[])
        .await
        .map_err(|error| classify(error, "read the schema version"))?;
    let applied = match row {
        Some(row) => row.get::<_, i64>(0),
        None => {
            tx.execute("INSERT INTO taskfleet_schema (version) VALUES (0)", &[])
                .await
                .map_err(|error| classify(error, context))?;
            0
        }
    };
    let known = MIGRATIONS.len();
    let applied = applied_migrations(applied, known)?;
    for (number, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
        let context = format!("apply schema migration {}", number + 1);
        tx.batch_execute(migration)
            .await
            .map_err(|error| classify(error, &context))?;
    }
    tx.execute("UPDATE taskfleet_schema SET version = $1", &[&(known as i64)])
        .await
        .map_err(|error| classify(error, context))?;
    tx.commit().await.map_err(|error| classify(error, context))
}
