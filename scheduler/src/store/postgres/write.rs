//! The store's writes on PostgreSQL: creating a workflow with its task rows, and applying
//! update batches.
//!
//! Task rows go in by arrays (`INSERT … SELECT FROM unnest(…)`), many thousands per
//! statement. A batch of updates is one transaction whose statements are all sent before the
//! first answer is awaited: the connection pipelines them, so a batch costs about one round
//! trip plus the commit, not one per update.

use deadpool_postgres::Transaction;
use futures_util::future::join_all;
use taskfleet_common::WorkflowSpec;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::Statement;

use super::codec::{classify, millis_to_sql, sql_count};
use crate::store::{AttemptRecord, StoreError, StoreUpdate, TaskRecord, WorkflowRecord};

/// Task rows per `INSERT` statement of a new workflow.
const TASK_ROWS_PER_STATEMENT: usize = 50_000;

const INSERT_WORKFLOW: &str = "INSERT INTO workflows (id, name, spec_hash, source, state, submitted_at, \
     finished_at, idempotency_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
const INSERT_TASKS: &str = "INSERT INTO tasks (workflow_id, task_idx, task_id, state) \
     SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[])";
const UPDATE_TASK: &str = "UPDATE tasks SET state = $3, attempt = $4, n_failures = $5, \
     retry_at = $6, output = $7 WHERE workflow_id = $1 AND task_idx = $2";
/// A dispatch starts the attempt's row afresh, so applying it twice changes nothing.
const INSERT_ATTEMPT: &str = "INSERT INTO attempts (workflow_id, task_idx, attempt, dispatched_at) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (workflow_id, task_idx, attempt) DO UPDATE SET \
     dispatched_at = excluded.dispatched_at, worker = NULL, started_at = NULL, finished_at = NULL, \
     outcome = NULL, exit_code = NULL, signal = NULL, error = NULL, stdout_tail = '', \
     stderr_tail = '', peak_memory_bytes = NULL, cpu_time_ms = NULL";
const START_ATTEMPT: &str = "UPDATE attempts SET worker = $4, started_at = $5 \
     WHERE workflow_id = $1 AND task_idx = $2 AND attempt = $3";
/// A finish keeps the stored dispatch time of an attempt it completes.
const FINISH_ATTEMPT: &str = "INSERT INTO attempts (workflow_id, task_idx, attempt, \
     dispatched_at, worker, started_at, finished_at, outcome, exit_code, signal, error, \
     stdout_tail, stderr_tail, peak_memory_bytes, cpu_time_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
     ON CONFLICT (workflow_id, task_idx, attempt) DO UPDATE SET \
     worker = excluded.worker, started_at = excluded.started_at, \
     finished_at = excluded.finished_at, outcome = excluded.outcome, \
     exit_code = excluded.exit_code, signal = excluded.signal, error = excluded.error, \
     stdout_tail = excluded.stdout_tail, stderr_tail = excluded.stderr_tail, \
     peak_memory_bytes = excluded.peak_memory_bytes, cpu_time_ms = excluded.cpu_time_ms";
const SAVE_RUNTIME_STATS: &str = "INSERT INTO runtime_stats (signature, n, mean, m2) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (signature) DO UPDATE SET n = excluded.n, mean = excluded.mean, m2 = excluded.m2";
const SAVE_FEATURE_MODEL: &str = "INSERT INTO feature_models (key, model) VALUES ($1, $2) \
     ON CONFLICT (key) DO UPDATE SET model = excluded.model";
const FINISH_WORKFLOW: &str = "UPDATE workflows SET state = $2, finished_at = $3 WHERE id = $1";

/// Inserts the workflow row and one row per task, in one transaction.
pub(super) async fn create_workflow(
    tx: Transaction<'_>,
    record: &WorkflowRecord,
    spec: &WorkflowSpec,
) -> Result<(), StoreError> {
    let context = format!("create workflow '{}'", record.id);
    if u32::try_from(spec.tasks.len()).is_err() {
        let reason = format!("a workflow of {} tasks is too large to store", spec.tasks.len());
        return Err(StoreError::Conflict { reason });
    }
    let inserted = tx
        .execute(
            INSERT_WORKFLOW,
            &[
                &record.id,
                &record.name,
                &record.spec_hash,
                &record.source,
                &record.state.as_str(),
                &millis_to_sql(record.submitted_at),
                &record.finished_at.map(millis_to_sql),
                &record.idempotency_key,
            ],
        )
        .await;
    match inserted {
        Err(error) if error.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            let reason = match &record.idempotency_key {
                Some(key) => format!("workflow '{}' or idempotency key '{key}' already exists", record.id),
                None => format!("workflow '{}' already exists", record.id),
            };
            return Err(StoreError::Conflict { reason });
        }
        other => other.map_err(|error| classify(error, &context))?,
    };
    let insert = tx
        .prepare_cached(INSERT_TASKS)
        .await
        .map_err(|error| classify(error, &context))?;
    let mut from = 0;
    while from < spec.tasks.len() {
        let to = (from + TASK_ROWS_PER_STATEMENT).min(spec.tasks.len());
        let indices: Vec<i64> = (from as i64..to as i64).collect();
        let ids: Vec<&str> = spec.tasks[from..to].iter().map(|task| task.id.as_str()).collect();
        let states: Vec<&str> = (from..to)
            .map(|idx| {
                if spec.dag.parents(idx as u32).is_empty() {
                    "ready"
                } else {
                    "pending"
                }
            })
            .collect();
        tx.execute(&insert, &[&record.id, &indices, &ids, &states])
            .await
            .map_err(|error| classify(error, &context))?;
        from = to;
    }
    tx.commit().await.map_err(|error| classify(error, &context))
}

/// A parameter of a statement, owned so that every statement of a batch can be sent before
/// the first answer is read.
type Param = Box<dyn ToSql + Sync + Send>;

/// One statement of a batch: what it runs, with what, and what it must change.
struct Call<'s> {
    statement: &'s Statement,
    params: Vec<Param>,
    /// What the statement is about, if it must change a row (else the row does not exist):
    /// `task 3 of workflow 'w'`.
    about: Option<String>,
}

/// The statements of [`apply`], prepared (once per connection) before a batch.
struct Statements {
    update_task: Statement,
    insert_attempt: Statement,
    start_attempt: Statement,
    finish_attempt: Statement,
    finish_workflow: Statement,
    save_runtime_stats: Statement,
    save_feature_model: Statement,
}

/// Applies the updates in order, in one transaction: all of them or none.
pub(super) async fn apply(tx: Transaction<'_>, updates: &[StoreUpdate]) -> Result<(), StoreError> {
    let sql_error = |error| classify(error, "apply updates");
    let statements = Statements {
        update_task: tx.prepare_cached(UPDATE_TASK).await.map_err(sql_error)?,
        insert_attempt: tx.prepare_cached(INSERT_ATTEMPT).await.map_err(sql_error)?,
        start_attempt: tx.prepare_cached(START_ATTEMPT).await.map_err(sql_error)?,
        finish_attempt: tx.prepare_cached(FINISH_ATTEMPT).await.map_err(sql_error)?,
        finish_workflow: tx.prepare_cached(FINISH_WORKFLOW).await.map_err(sql_error)?,
        save_runtime_stats: tx.prepare_cached(SAVE_RUNTIME_STATS).await.map_err(sql_error)?,
        save_feature_model: tx.prepare_cached(SAVE_FEATURE_MODEL).await.map_err(sql_error)?,
    };
    let calls = updates
        .iter()
        .map(|update| call(&statements, update))
        .collect::<Result<Vec<Call<'_>>, StoreError>>()?;
    let params: Vec<Vec<&(dyn ToSql + Sync)>> = calls
        .iter()
        .map(|call| {
            call.params
                .iter()
                .map(|param| param.as_ref() as &(dyn ToSql + Sync))
                .collect()
        })
        .collect();
    let results = join_all(
        calls
            .iter()
            .zip(&params)
            .map(|(call, params)| tx.execute(call.statement, params)),
    )
    .await;
    // The first failure decides: the ones after it only say the transaction was aborted.
    for (call, result) in calls.iter().zip(results) {
        let missing = || StoreError::Conflict {
            reason: format!("{} does not exist", call.about.as_deref().unwrap_or("a row")),
        };
        match result {
            Ok(0) if call.about.is_some() => return Err(missing()),
            Ok(_) => {}
            Err(error) if error.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) => return Err(missing()),
            Err(error) => return Err(sql_error(error)),
        }
    }
    // Dropping an uncommitted transaction (on any error above) rolls it back.
    tx.commit().await.map_err(sql_error)
}

fn call<'s>(statements: &'s Statements, update: &StoreUpdate) -> Result<Call<'s>, StoreError> {
    let task = |workflow_id: &str, task_idx: u32| format!("task {task_idx} of workflow '{workflow_id}'");
    Ok(match update {
        StoreUpdate::Task { workflow_id, record } => {
            let TaskRecord {
                task_idx,
                state,
                attempt,
                n_failures,
                retry_at,
                output,
            } = record;
            Call {
                statement: &statements.update_task,
                params: vec![
                    Box::new(workflow_id.to_string()),
                    Box::new(i64::from(*task_idx)),
                    Box::new(state.as_str()),
                    Box::new(i64::from(*attempt)),
                    Box::new(i64::from(*n_failures)),
                    Box::new(retry_at.map(millis_to_sql)),
                    Box::new(output.clone()),
                ],
                about: Some(task(workflow_id, *task_idx)),
            }
        }
        StoreUpdate::AttemptDispatched {
            workflow_id,
            task_idx,
            attempt,
            at,
        } => Call {
            statement: &statements.insert_attempt,
            params: vec![
                Box::new(workflow_id.to_string()),
                Box::new(i64::from(*task_idx)),
                Box::new(i64::from(*attempt)),
                Box::new(millis_to_sql(*at)),
            ],
            about: Some(task(workflow_id, *task_idx)),
        },
        StoreUpdate::AttemptStarted {
            workflow_id,
            task_idx,
            attempt,
            worker,
            at,
        } => Call {
            statement: &statements.start_attempt,
            params: vec![
                Box::new(workflow_id.to_string()),
                Box::new(i64::from(*task_idx)),
                Box::new(i64::from(*attempt)),
                Box::new(worker.clone()),
                Box::new(millis_to_sql(*at)),
            ],
            about: Some(format!(
                "attempt {attempt} of task {task_idx} of workflow '{workflow_id}'"
            )),
        },
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
            Call {
                statement: &statements.finish_attempt,
                params: vec![
                    Box::new(workflow_id.to_string()),
                    Box::new(i64::from(*task_idx)),
                    Box::new(i64::from(*attempt)),
                    Box::new(millis_to_sql(*dispatched_at)),
                    Box::new(worker.clone()),
                    Box::new(started_at.map(millis_to_sql)),
                    Box::new(finished_at.map(millis_to_sql)),
                    Box::new(outcome.map(|outcome| outcome.as_str())),
                    Box::new(exit_code.map(i64::from)),
                    Box::new(signal.map(i64::from)),
                    Box::new(error.clone()),
                    Box::new(stdout_tail.clone()),
                    Box::new(stderr_tail.clone()),
                    Box::new(peak_memory_bytes.map(sql_count)),
                    Box::new(cpu_time_ms.map(sql_count)),
                ],
                about: Some(task(workflow_id, *task_idx)),
            }
        }
        StoreUpdate::WorkflowFinished { workflow_id, state, at } => Call {
            statement: &statements.finish_workflow,
            params: vec![
                Box::new(workflow_id.to_string()),
                Box::new(state.as_str()),
                Box::new(millis_to_sql(*at)),
            ],
            about: Some(format!("workflow '{workflow_id}'")),
        },
        StoreUpdate::RuntimeStats { signature, stats } => Call {
            statement: &statements.save_runtime_stats,
            params: vec![
                Box::new(signature.clone()),
                Box::new(sql_count(stats.n)),
                Box::new(stats.mean),
                Box::new(stats.m2),
            ],
            about: None,
        },
        StoreUpdate::FeatureModel { key, model } => {
            let text = serde_json::to_string(model).map_err(|error| StoreError::Corrupt {
                reason: format!("feature model `{key}`: {error}"),
            })?;
            Call {
                statement: &statements.save_feature_model,
                params: vec![Box::new(key.clone()), Box::new(text)],
                about: None,
            }
        }
    })
}
