//! The store's writes on PostgreSQL: creating a workflow with its task rows (and the request
//! that tells the leader), and applying update batches.
//!
//! Task rows go in by arrays (`INSERT … SELECT FROM unnest(…)`), many thousands per
//! statement. A batch of updates is one transaction with one array statement per kind of
//! update (task records, dispatched, started and finished attempts, finished workflows), so
//! it costs a few round trips and the commit, not one per update. The statements return the
//! keys they touched, so an update naming a row that does not exist is found and named.

use std::collections::{HashMap, HashSet};

use deadpool_postgres::Transaction;
use taskfleet_common::WorkflowSpec;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};

use super::codec::{classify, millis_to_sql, sql_count};
use super::lease::{Fence, CHECK_FENCE};
use crate::store::{AttemptRecord, StoreError, StoreUpdate, TaskRecord, WorkflowRecord};

/// Task rows per `INSERT` statement of a new workflow.
const TASK_ROWS_PER_STATEMENT: usize = 50_000;

const INSERT_WORKFLOW: &str = "INSERT INTO workflows (id, name, spec_hash, source, state, submitted_at, \
     finished_at, idempotency_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
const INSERT_TASKS: &str = "INSERT INTO tasks (workflow_id, task_idx, task_id, state) \
     SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[])";
const UPDATE_TASKS: &str = "UPDATE tasks AS t SET state = u.state, attempt = u.attempt, \
     n_failures = u.n_failures, retry_at = u.retry_at, output = u.output \
     FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::text[]) \
     AS u (workflow_id, task_idx, state, attempt, n_failures, retry_at, output) \
     WHERE t.workflow_id = u.workflow_id AND t.task_idx = u.task_idx \
     RETURNING t.workflow_id, t.task_idx";
/// A dispatch starts the attempt's row afresh, so applying it twice changes nothing; rows of
/// tasks that do not exist are left out (and reported).
const INSERT_ATTEMPTS: &str = "INSERT INTO attempts (workflow_id, task_idx, attempt, dispatched_at) \
     SELECT u.workflow_id, u.task_idx, u.attempt, u.dispatched_at \
     FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[]) \
     AS u (workflow_id, task_idx, attempt, dispatched_at) \
     JOIN tasks t ON t.workflow_id = u.workflow_id AND t.task_idx = u.task_idx \
     ON CONFLICT (workflow_id, task_idx, attempt) DO UPDATE SET \
     dispatched_at = excluded.dispatched_at, worker = NULL, started_at = NULL, finished_at = NULL, \
     outcome = NULL, exit_code = NULL, signal = NULL, error = NULL, stdout_tail = '', \
     stderr_tail = '', peak_memory_bytes = NULL, cpu_time_ms = NULL \
     RETURNING workflow_id, task_idx";
const START_ATTEMPTS: &str = "UPDATE attempts AS a SET worker = u.worker, started_at = u.started_at \
     FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::bigint[]) \
     AS u (workflow_id, task_idx, attempt, worker, started_at) \
     WHERE a.workflow_id = u.workflow_id AND a.task_idx = u.task_idx AND a.attempt = u.attempt \
     RETURNING a.workflow_id, a.task_idx, a.attempt";
/// A finish keeps the stored dispatch time of an attempt it completes.
const FINISH_ATTEMPTS: &str = "INSERT INTO attempts (workflow_id, task_idx, attempt, \
     dispatched_at, worker, started_at, finished_at, outcome, exit_code, signal, error, \
     stdout_tail, stderr_tail, peak_memory_bytes, cpu_time_ms) \
     SELECT u.* FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[], \
     $6::bigint[], $7::bigint[], $8::text[], $9::bigint[], $10::bigint[], $11::text[], $12::text[], \
     $13::text[], $14::bigint[], $15::bigint[]) \
     AS u (workflow_id, task_idx, attempt, dispatched_at, worker, started_at, finished_at, \
     outcome, exit_code, signal, error, stdout_tail, stderr_tail, peak_memory_bytes, cpu_time_ms) \
     JOIN tasks t ON t.workflow_id = u.workflow_id AND t.task_idx = u.task_idx \
     ON CONFLICT (workflow_id, task_idx, attempt) DO UPDATE SET \
     worker = excluded.worker, started_at = excluded.started_at, \
     finished_at = excluded.finished_at, outcome = excluded.outcome, \
     exit_code = excluded.exit_code, signal = excluded.signal, error = excluded.error, \
     stdout_tail = excluded.stdout_tail, stderr_tail = excluded.stderr_tail, \
     peak_memory_bytes = excluded.peak_memory_bytes, cpu_time_ms = excluded.cpu_time_ms \
     RETURNING workflow_id, task_idx";
const FINISH_WORKFLOWS: &str = "UPDATE workflows AS w SET state = u.state, finished_at = u.finished_at \
     FROM unnest($1::text[], $2::text[], $3::bigint[]) AS u (id, state, finished_at) \
     WHERE w.id = u.id RETURNING w.id";
const SAVE_RUNTIME_STATS: &str = "INSERT INTO runtime_stats (signature, n, mean, m2) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (signature) DO UPDATE SET n = excluded.n, mean = excluded.mean, m2 = excluded.m2";
const SAVE_FEATURE_MODEL: &str = "INSERT INTO feature_models (key, model) VALUES ($1, $2) \
     ON CONFLICT (key) DO UPDATE SET model = excluded.model";

/// Inserts the workflow row and one row per task, in one transaction.
pub(super) async fn create_workflow(
    tx: Transaction<'_>,
    record: &WorkflowRecord,
    spec: &WorkflowSpec,
    channel: &str,
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
    // The leader runs it, whichever scheduler stored it.
    super::lease::add_request(&tx, channel, "submit", &record.id).await?;
    tx.commit().await.map_err(|error| classify(error, &context))
}

/// The updates of a batch, one column per field and one list per kind, each row once (the
/// last update of a row wins, as applying them in order would).
#[derive(Default)]
struct Columns<'u> {
    tasks: Rows<(&'u str, i64), &'u TaskRecord>,
    dispatched: Rows<(&'u str, i64, i64), i64>,
    started: Rows<(&'u str, i64, i64), (&'u str, i64)>,
    finished: Rows<(&'u str, i64, i64), &'u AttemptRecord>,
    workflows: Rows<&'u str, (&'u str, i64)>,
}

/// Rows by key, in first-seen order, the last value of each key kept.
struct Rows<K, V> {
    order: Vec<K>,
    values: HashMap<K, V>,
}

impl<K, V> Default for Rows<K, V> {
    fn default() -> Self {
        Rows {
            order: Vec::new(),
            values: HashMap::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Copy, V> Rows<K, V> {
    fn put(&mut self, key: K, value: V) {
        if self.values.insert(key, value).is_none() {
            self.order.push(key);
        }
    }

    fn iter(&self) -> impl ExactSizeIterator<Item = (K, &V)> + '_ {
        self.order.iter().map(|key| (*key, &self.values[key]))
    }

    fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// Applies the updates in one transaction, all of them or none, if `fence` (when given) still
/// holds the leader's lease.
pub(super) async fn apply(
    tx: Transaction<'_>,
    updates: &[StoreUpdate],
    fence: Option<&Fence>,
) -> Result<(), StoreError> {
    let sql_error = |error| classify(error, "apply updates");
    let mut columns = Columns::default();
    let mut stats = Vec::new();
    let mut models = Vec::new();
    for update in updates {
        match update {
            StoreUpdate::Task { workflow_id, record } => {
                columns.tasks.put((&**workflow_id, i64::from(record.task_idx)), record);
            }
            StoreUpdate::AttemptDispatched {
                workflow_id,
                task_idx,
                attempt,
                at,
            } => {
                let key = (&**workflow_id, i64::from(*task_idx), i64::from(*attempt));
                columns.dispatched.put(key, millis_to_sql(*at));
            }
            StoreUpdate::AttemptStarted {
                workflow_id,
                task_idx,
                attempt,
                worker,
                at,
            } => {
                let key = (&**workflow_id, i64::from(*task_idx), i64::from(*attempt));
                columns.started.put(key, (worker.as_str(), millis_to_sql(*at)));
            }
            StoreUpdate::AttemptFinished { workflow_id, record } => {
                let key = (&**workflow_id, i64::from(record.task_idx), i64::from(record.attempt));
                columns.finished.put(key, record);
            }
            StoreUpdate::WorkflowFinished { workflow_id, state, at } => {
                columns
                    .workflows
                    .put(&**workflow_id, (state.as_str(), millis_to_sql(*at)));
            }
            StoreUpdate::RuntimeStats {
                signature,
                stats: value,
            } => stats.push((signature, value)),
            StoreUpdate::FeatureModel { key, model } => {
                let text = serde_json::to_string(model).map_err(|error| StoreError::Corrupt {
                    reason: format!("feature model `{key}`: {error}"),
                })?;
                models.push((key, text));
            }
        }
    }
    // Each kind's columns, then its statement (prepared once per connection). The statements
    // then go out together, pipelined, in this order: the fence first, so the lease row is
    // locked before anything is written, and an attempt's dispatch before its start.
    let mut t = TaskColumns::default();
    for ((workflow_id, task_idx), record) in columns.tasks.iter() {
        t.push(workflow_id, task_idx, record);
    }
    let mut d = AttemptKeys::default();
    let mut dispatched_at = Vec::with_capacity(columns.dispatched.order.len());
    for (key, &at) in columns.dispatched.iter() {
        d.push(key);
        dispatched_at.push(at);
    }
    let mut s = AttemptKeys::default();
    let (mut started_by, mut started_at) = (vec![], vec![]);
    for (key, &(by, at)) in columns.started.iter() {
        s.push(key);
        started_by.push(by);
        started_at.push(at);
    }
    let mut f = FinishedColumns::default();
    for ((workflow_id, task_idx, number), record) in columns.finished.iter() {
        f.push(workflow_id, task_idx, number, record);
    }
    let (mut w_ids, mut w_state, mut w_at) = (vec![], vec![], vec![]);
    for (workflow_id, &(to, finished_at)) in columns.workflows.iter() {
        w_ids.push(workflow_id);
        w_state.push(to);
        w_at.push(finished_at);
    }
    let prepare = |sql: &'static str, wanted: bool| {
        let tx = &tx;
        async move {
            match wanted {
                true => tx.prepare_cached(sql).await.map(Some).map_err(sql_error),
                false => Ok(None),
            }
        }
    };
    let fence_sql = prepare(CHECK_FENCE, fence.is_some()).await?;
    let tasks_sql = prepare(UPDATE_TASKS, !columns.tasks.is_empty()).await?;
    let dispatched_sql = prepare(INSERT_ATTEMPTS, !columns.dispatched.is_empty()).await?;
    let started_sql = prepare(START_ATTEMPTS, !columns.started.is_empty()).await?;
    let finished_sql = prepare(FINISH_ATTEMPTS, !columns.finished.is_empty()).await?;
    let workflows_sql = prepare(FINISH_WORKFLOWS, !columns.workflows.is_empty()).await?;
    let fence_params: Vec<&(dyn ToSql + Sync)> = match fence {
        Some(fence) => vec![&fence.holder, &fence.epoch],
        None => vec![],
    };
    let task_params: [&(dyn ToSql + Sync); 7] =
        [&t.ids, &t.idx, &t.state, &t.attempt, &t.failures, &t.retry, &t.output];
    let dispatched_params: [&(dyn ToSql + Sync); 4] = [&d.ids, &d.idx, &d.attempt, &dispatched_at];
    let started_params: [&(dyn ToSql + Sync); 5] = [&s.ids, &s.idx, &s.attempt, &started_by, &started_at];
    let finished_params: [&(dyn ToSql + Sync); 15] = [
        &f.ids,
        &f.idx,
        &f.attempt,
        &f.dispatched_at,
        &f.worker,
        &f.started_at,
        &f.finished_at,
        &f.outcome,
        &f.exit_code,
        &f.signal,
        &f.error,
        &f.stdout_tail,
        &f.stderr_tail,
        &f.peak_memory_bytes,
        &f.cpu_time_ms,
    ];
    let workflow_params: [&(dyn ToSql + Sync); 3] = [&w_ids, &w_state, &w_at];
    // Polled in order by `join!`, so sent in this order.
    let (fenced, tasks, dispatched, started, finished, workflows) = tokio::join!(
        run(&tx, fence_sql.as_ref(), &fence_params),
        run(&tx, tasks_sql.as_ref(), &task_params),
        run(&tx, dispatched_sql.as_ref(), &dispatched_params),
        run(&tx, started_sql.as_ref(), &started_params),
        run(&tx, finished_sql.as_ref(), &finished_params),
        run(&tx, workflows_sql.as_ref(), &workflow_params),
    );
    if let Some(fence) = fence {
        if fenced?.is_empty() {
            return Err(super::lease::fenced(fence));
        }
    }
    let task_keys = |rows: Vec<Row>| -> HashSet<(String, i64)> {
        rows.iter()
            .map(|row| (row.get::<_, String>(0), row.get::<_, i64>(1)))
            .collect()
    };
    expect_all(
        columns.tasks.iter().map(|(key, _)| key),
        &task_keys(tasks?),
        |(w, t)| format!("task {t} of workflow '{w}'"),
    )?;
    expect_all(
        columns.dispatched.iter().map(|((w, t, _), _)| (w, t)),
        &task_keys(dispatched?),
        |(w, t)| format!("task {t} of workflow '{w}'"),
    )?;
    let touched: HashSet<(String, i64, i64)> = started?
        .iter()
        .map(|row| (row.get::<_, String>(0), row.get::<_, i64>(1), row.get::<_, i64>(2)))
        .collect();
    // The rows are unique: as many back as sent means none is missing.
    if touched.len() < columns.started.order.len() {
        let missing = columns
            .started
            .iter()
            .find(|((w, t, a), _)| !touched.contains(&(w.to_string(), *t, *a)));
        if let Some(((w, t, a), _)) = missing {
            return Err(StoreError::Conflict {
                reason: format!("attempt {a} of task {t} of workflow '{w}' does not exist"),
            });
        }
    }
    expect_all(
        columns.finished.iter().map(|((w, t, _), _)| (w, t)),
        &task_keys(finished?),
        |(w, t)| format!("task {t} of workflow '{w}'"),
    )?;
    let touched: HashSet<String> = workflows?.iter().map(|row| row.get::<_, String>(0)).collect();
    if let Some((missing, _)) = columns.workflows.iter().find(|(id, _)| !touched.contains(*id)) {
        return Err(StoreError::Conflict {
            reason: format!("workflow '{missing}' does not exist"),
        });
    }
    if !stats.is_empty() {
        let statement = tx.prepare_cached(SAVE_RUNTIME_STATS).await.map_err(sql_error)?;
        for (signature, value) in stats {
            tx.execute(&statement, &[signature, &sql_count(value.n), &value.mean, &value.m2])
                .await
                .map_err(sql_error)?;
        }
    }
    if !models.is_empty() {
        let statement = tx.prepare_cached(SAVE_FEATURE_MODEL).await.map_err(sql_error)?;
        for (key, text) in &models {
            tx.execute(&statement, &[key, text]).await.map_err(sql_error)?;
        }
    }
    // Dropping an uncommitted transaction (on any error above) rolls it back.
    tx.commit().await.map_err(sql_error)
}

/// Runs `statement`, if there is one, and returns its rows. The request goes out on the first
/// poll, so statements polled in turn are pipelined in that order.
async fn run(
    tx: &Transaction<'_>,
    statement: Option<&Statement>,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, StoreError> {
    match statement {
        Some(statement) => tx
            .query(statement, params)
            .await
            .map_err(|error| classify(error, "apply updates")),
        None => Ok(Vec::new()),
    }
}

/// Fails with the first of `wanted` (workflow, task) that `touched` lacks, named by `name`.
/// The rows are unique, so when as many came back as were sent, none is missing.
fn expect_all<'k>(
    wanted: impl ExactSizeIterator<Item = (&'k str, i64)>,
    touched: &HashSet<(String, i64)>,
    name: impl Fn((&str, i64)) -> String,
) -> Result<(), StoreError> {
    if touched.len() == wanted.len() {
        return Ok(());
    }
    for (workflow_id, task_idx) in wanted {
        if !touched.contains(&(workflow_id.to_string(), task_idx)) {
            return Err(StoreError::Conflict {
                reason: format!("{} does not exist", name((workflow_id, task_idx))),
            });
        }
    }
    Ok(())
}

/// The columns of the task records of a batch.
#[derive(Default)]
struct TaskColumns<'u> {
    ids: Vec<&'u str>,
    idx: Vec<i64>,
    state: Vec<&'static str>,
    attempt: Vec<i64>,
    failures: Vec<i64>,
    retry: Vec<Option<i64>>,
    output: Vec<Option<&'u str>>,
}

impl<'u> TaskColumns<'u> {
    fn push(&mut self, workflow_id: &'u str, task_idx: i64, record: &'u TaskRecord) {
        self.ids.push(workflow_id);
        self.idx.push(task_idx);
        self.state.push(record.state.as_str());
        self.attempt.push(i64::from(record.attempt));
        self.failures.push(i64::from(record.n_failures));
        self.retry.push(record.retry_at.map(millis_to_sql));
        self.output.push(record.output.as_deref());
    }
}

/// The keys of attempts of a batch.
#[derive(Default)]
struct AttemptKeys<'u> {
    ids: Vec<&'u str>,
    idx: Vec<i64>,
    attempt: Vec<i64>,
}

impl<'u> AttemptKeys<'u> {
    fn push(&mut self, (workflow_id, task_idx, attempt): (&'u str, i64, i64)) {
        self.ids.push(workflow_id);
        self.idx.push(task_idx);
        self.attempt.push(attempt);
    }
}

/// The columns of the finished attempts of a batch.
#[derive(Default)]
struct FinishedColumns<'u> {
    ids: Vec<&'u str>,
    idx: Vec<i64>,
    attempt: Vec<i64>,
    dispatched_at: Vec<i64>,
    worker: Vec<Option<&'u str>>,
    started_at: Vec<Option<i64>>,
    finished_at: Vec<Option<i64>>,
    outcome: Vec<Option<&'static str>>,
    exit_code: Vec<Option<i64>>,
    signal: Vec<Option<i64>>,
    error: Vec<Option<&'u str>>,
    stdout_tail: Vec<&'u str>,
    stderr_tail: Vec<&'u str>,
    peak_memory_bytes: Vec<Option<i64>>,
    cpu_time_ms: Vec<Option<i64>>,
}

impl<'u> FinishedColumns<'u> {
    fn push(&mut self, workflow_id: &'u str, task_idx: i64, attempt: i64, record: &'u AttemptRecord) {
        self.ids.push(workflow_id);
        self.idx.push(task_idx);
        self.attempt.push(attempt);
        self.dispatched_at.push(millis_to_sql(record.dispatched_at));
        self.worker.push(record.worker.as_deref());
        self.started_at.push(record.started_at.map(millis_to_sql));
        self.finished_at.push(record.finished_at.map(millis_to_sql));
        self.outcome.push(record.outcome.map(|outcome| outcome.as_str()));
        self.exit_code.push(record.exit_code.map(i64::from));
        self.signal.push(record.signal.map(i64::from));
        self.error.push(record.error.as_deref());
        self.stdout_tail.push(&record.stdout_tail);
        self.stderr_tail.push(&record.stderr_tail);
        self.peak_memory_bytes.push(record.peak_memory_bytes.map(sql_count));
        self.cpu_time_ms.push(record.cpu_time_ms.map(sql_count));
    }
}
