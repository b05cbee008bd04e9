//! The store's writes: creating a workflow with its task rows, and applying update batches.
//!
//! Both are hot paths (a million task rows per workflow, a quarter million updates a second),
//! so each runs in one transaction with statements prepared once per call and parameters
//! bound without building intermediate rows.

use rusqlite::ffi::ErrorCode;
use rusqlite::{params, CachedStatement, Connection, TransactionBehavior};
use taskfleet_common::WorkflowSpec;

use super::codec::{classify, millis_to_sql, outcome_to_sql, sql_count};
use crate::store::{AttemptRecord, StoreError, StoreUpdate, TaskRecord, WorkflowRecord};

/// The task rows of a new workflow, packed so that moving them to the store thread costs a
/// few allocations rather than one per task.
pub(super) struct NewTasks {
    /// Every task id, concatenated.
    ids: String,
    /// End of each task's id in `ids`.
    ends: Vec<usize>,
    /// Whether each task has no dependencies (and so starts `ready`).
    roots: Vec<bool>,
}

impl NewTasks {
    pub(super) fn of(spec: &WorkflowSpec) -> Result<NewTasks, StoreError> {
        if u32::try_from(spec.tasks.len()).is_err() {
            let reason = format!("a workflow of {} tasks is too large to store", spec.tasks.len());
            return Err(StoreError::Conflict { reason });
        }
        let id_bytes = spec.tasks.iter().map(|task| task.id.len()).sum();
        let mut tasks = NewTasks {
            ids: String::with_capacity(id_bytes),
            ends: Vec::with_capacity(spec.tasks.len()),
            roots: Vec::with_capacity(spec.tasks.len()),
        };
        for (idx, task) in (0u32..).zip(&spec.tasks) {
            tasks.ids.push_str(&task.id);
            tasks.ends.push(tasks.ids.len());
            tasks.roots.push(spec.dag.parents(idx).is_empty());
        }
        Ok(tasks)
    }
}

/// Opens an ended workflow again with its `reset` task records (see
/// [`Store::reopen_workflow`](crate::store::Store::reopen_workflow)), in one transaction.
pub(super) fn reopen_workflow(
    conn: &mut Connection,
    workflow_id: &str,
    reset: &[TaskRecord],
) -> Result<bool, StoreError> {
    let context = format!("reopen workflow '{workflow_id}'");
    let sql_error = |error| classify(error, &context);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_error)?;
    let reopened = tx
        .execute(
            "UPDATE workflows SET state = 'running', finished_at = NULL
             WHERE id = ?1 AND state IN ('failed', 'cancelled')",
            [workflow_id],
        )
        .map_err(sql_error)?;
    if reopened == 0 {
        return Ok(false);
    }
    {
        let mut update = tx
            .prepare_cached(
                "UPDATE tasks SET state = ?3, attempt = ?4, n_failures = ?5, retry_at = ?6, output = ?7
                 WHERE workflow_id = ?1 AND task_idx = ?2",
            )
            .map_err(sql_error)?;
        for record in reset {
            let changed = update
                .execute(params![
                    workflow_id,
                    record.task_idx,
                    record.state.as_str(),
                    record.attempt,
                    record.n_failures,
                    record.retry_at.map(millis_to_sql),
                    record.output,
                ])
                .map_err(sql_error)?;
            if changed == 0 {
                return Err(StoreError::Conflict {
                    reason: format!("task {} of workflow '{workflow_id}' does not exist", record.task_idx),
                });
            }
        }
    }
    tx.commit().map_err(sql_error)?;
    Ok(true)
}

/// Inserts the workflow row and one row per task, in one transaction.
pub(super) fn create_workflow(
    conn: &mut Connection,
    record: &WorkflowRecord,
    tasks: &NewTasks,
) -> Result<(), StoreError> {
    let context = format!("create workflow '{}'", record.id);
    let sql_error = |error| classify(error, &context);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_error)?;
    {
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO workflows (id, name, spec_hash, source, state, submitted_at, finished_at,
                     idempotency_key)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .map_err(sql_error)?;
        let inserted = insert.execute(params![
            record.id,
            record.name,
            record.spec_hash,
            record.source,
            record.state.as_str(),
            millis_to_sql(record.submitted_at),
            record.finished_at.map(millis_to_sql),
            record.idempotency_key,
        ]);
        match inserted {
            Err(error) if is_constraint(&error) => {
                let reason = match &record.idempotency_key {
                    Some(key) => format!("workflow '{}' or idempotency key '{key}' already exists", record.id),
                    None => format!("workflow '{}' already exists", record.id),
                };
                return Err(StoreError::Conflict { reason });
            }
            other => other.map_err(sql_error)?,
        };
        let mut insert = tx
            .prepare_cached("INSERT INTO tasks (workflow_id, task_idx, task_id, state) VALUES (?1, ?2, ?3, ?4)")
            .map_err(sql_error)?;
        // Bindings stay in place between executions: bind the workflow id once.
        insert.raw_bind_parameter(1, record.id.as_str()).map_err(sql_error)?;
        let mut start = 0;
        for (idx, (&end, &root)) in (0u32..).zip(tasks.ends.iter().zip(&tasks.roots)) {
            let state = if root { "ready" } else { "pending" };
            insert.raw_bind_parameter(2, idx).map_err(sql_error)?;
            insert
                .raw_bind_parameter(3, &tasks.ids[start..end])
                .map_err(sql_error)?;
            insert.raw_bind_parameter(4, state).map_err(sql_error)?;
            insert.raw_execute().map_err(sql_error)?;
            start = end;
        }
    }
    tx.commit().map_err(sql_error)
}

const UPDATE_TASK: &str = "UPDATE tasks SET state = ?3, attempt = ?4, n_failures = ?5, \
     retry_at = ?6, output = ?7 WHERE workflow_id = ?1 AND task_idx = ?2";
/// A dispatch starts the attempt's row afresh, so applying it twice changes nothing.
const INSERT_ATTEMPT: &str = "INSERT OR REPLACE INTO attempts \
     (workflow_id, task_idx, attempt, dispatched_at) VALUES (?1, ?2, ?3, ?4)";
const START_ATTEMPT: &str = "UPDATE attempts SET worker = ?4, started_at = ?5 \
     WHERE workflow_id = ?1 AND task_idx = ?2 AND attempt = ?3";
/// A finish keeps the stored dispatch time of an attempt it completes.
const FINISH_ATTEMPT: &str = "INSERT INTO attempts (workflow_id, task_idx, attempt, \
     dispatched_at, worker, started_at, finished_at, outcome, exit_code, signal, error, \
     stdout_tail, stderr_tail, peak_memory_bytes, cpu_time_ms) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) \
     ON CONFLICT (workflow_id, task_idx, attempt) DO UPDATE SET \
     worker = excluded.worker, \
     started_at = excluded.started_at, finished_at = excluded.finished_at, \
     outcome = excluded.outcome, exit_code = excluded.exit_code, signal = excluded.signal, \
     error = excluded.error, stdout_tail = excluded.stdout_tail, \
     stderr_tail = excluded.stderr_tail, peak_memory_bytes = excluded.peak_memory_bytes, \
     cpu_time_ms = excluded.cpu_time_ms";
const SAVE_RUNTIME_STATS: &str =
    "INSERT OR REPLACE INTO runtime_stats (signature, n, mean, m2) VALUES (?1, ?2, ?3, ?4)";
const SAVE_FEATURE_MODEL: &str = "INSERT OR REPLACE INTO feature_models (key, model) VALUES (?1, ?2)";
const FINISH_WORKFLOW: &str = "UPDATE workflows SET state = ?2, finished_at = ?3 WHERE id = ?1";

/// The statements of [`apply`], prepared once per batch.
struct Statements<'c> {
    update_task: CachedStatement<'c>,
    insert_attempt: CachedStatement<'c>,
    start_attempt: CachedStatement<'c>,
    finish_attempt: CachedStatement<'c>,
    finish_workflow: CachedStatement<'c>,
    save_runtime_stats: CachedStatement<'c>,
    save_feature_model: CachedStatement<'c>,
}

/// Applies the updates in order, in one transaction: all of them or none.
pub(super) fn apply(conn: &mut Connection, updates: &[StoreUpdate]) -> Result<(), StoreError> {
    if updates.is_empty() {
        return Ok(());
    }
    let sql_error = |error| classify(error, "apply updates");
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_error)?;
    {
        let prepare = |sql| tx.prepare_cached(sql).map_err(sql_error);
        let mut statements = Statements {
            update_task: prepare(UPDATE_TASK)?,
            insert_attempt: prepare(INSERT_ATTEMPT)?,
            start_attempt: prepare(START_ATTEMPT)?,
            finish_attempt: prepare(FINISH_ATTEMPT)?,
            finish_workflow: prepare(FINISH_WORKFLOW)?,
            save_runtime_stats: prepare(SAVE_RUNTIME_STATS)?,
            save_feature_model: prepare(SAVE_FEATURE_MODEL)?,
        };
        for update in updates {
            apply_one(&mut statements, update)?;
        }
    }
    // Dropping an uncommitted transaction (on any error above) rolls it back.
    tx.commit().map_err(sql_error)
}

fn apply_one(statements: &mut Statements<'_>, update: &StoreUpdate) -> Result<(), StoreError> {
    let sql_error = |error| classify(error, "apply updates");
    let missing = |what: String| StoreError::Conflict {
        reason: format!("{what} does not exist"),
    };
    match update {
        StoreUpdate::Task { workflow_id, record } => {
            let TaskRecord {
                task_idx,
                state,
                attempt,
                n_failures,
                retry_at,
                output,
            } = record;
            let changed = statements
                .update_task
                .execute(params![
                    &**workflow_id,
                    task_idx,
                    state.as_str(),
                    attempt,
                    n_failures,
                    retry_at.map(millis_to_sql),
                    output,
                ])
                .map_err(sql_error)?;
            if changed == 0 {
                return Err(missing(format!("task {task_idx} of workflow '{workflow_id}'")));
            }
        }
        StoreUpdate::AttemptDispatched {
            workflow_id,
            task_idx,
            attempt,
            at,
        } => {
            let values = params![&**workflow_id, task_idx, attempt, millis_to_sql(*at)];
            match statements.insert_attempt.execute(values) {
                Err(error) if is_constraint(&error) => {
                    return Err(missing(format!("task {task_idx} of workflow '{workflow_id}'")));
                }
                other => other.map_err(sql_error)?,
            };
        }
        StoreUpdate::AttemptStarted {
            workflow_id,
            task_idx,
            attempt,
            worker,
            at,
        } => {
            let changed = statements
                .start_attempt
                .execute(params![&**workflow_id, task_idx, attempt, worker, millis_to_sql(*at)])
                .map_err(sql_error)?;
            if changed == 0 {
                let what = format!("attempt {attempt} of task {task_idx} of workflow '{workflow_id}'");
                return Err(missing(what));
            }
        }
        StoreUpdate::AttemptFinished { workflow_id, record } => {
            let AttemptRecord {
                task_idx,
                attempt,
                dispatched_at,
                worker,
                started_at,
                finished_at,
                outcome,
                exit_code,
                signal,
                error,
                stdout_tail,
                stderr_tail,
                peak_memory_bytes,
                cpu_time_ms,
            } = record;
            let values = params![
                &**workflow_id,
                task_idx,
                attempt,
                millis_to_sql(*dispatched_at),
                worker,
                started_at.map(millis_to_sql),
                finished_at.map(millis_to_sql),
                outcome.map(outcome_to_sql),
                exit_code,
                signal,
                error,
                stdout_tail,
                stderr_tail,
                peak_memory_bytes.map(sql_count),
                cpu_time_ms.map(sql_count),
            ];
            match statements.finish_attempt.execute(values) {
                Err(error) if is_constraint(&error) => {
                    return Err(missing(format!("task {task_idx} of workflow '{workflow_id}'")));
                }
                other => other.map_err(sql_error)?,
            };
        }
        StoreUpdate::WorkflowFinished { workflow_id, state, at } => {
            let changed = statements
                .finish_workflow
                .execute(params![&**workflow_id, state.as_str(), millis_to_sql(*at)])
                .map_err(sql_error)?;
            if changed == 0 {
                return Err(missing(format!("workflow '{workflow_id}'")));
            }
        }
        StoreUpdate::RuntimeStats { signature, stats } => {
            let n = i64::try_from(stats.n).unwrap_or(i64::MAX);
            statements
                .save_runtime_stats
                .execute(params![signature, n, stats.mean, stats.m2])
                .map_err(sql_error)?;
        }
        StoreUpdate::FeatureModel { key, model } => {
            let text = serde_json::to_string(model).map_err(|error| StoreError::Corrupt {
                reason: format!("feature model `{key}`: {error}"),
            })?;
            statements
                .save_feature_model
                .execute(params![key, text])
                .map_err(sql_error)?;
        }
    }
    Ok(())
}

fn is_constraint(error: &rusqlite::Error) -> bool {
    error.sqlite_error_code() == Some(ErrorCode::ConstraintViolation)
}
