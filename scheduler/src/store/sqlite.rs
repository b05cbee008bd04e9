//! [`SqliteStore`]: the store of the embedded mode, in a SQLite file or in memory.
//!
//! SQLite calls block, so they never run on the async runtime. The store owns one connection
//! on a dedicated thread and sends it jobs over a channel, rather than sharing it behind a
//! mutex with `spawn_blocking`: jobs run strictly in the order they were submitted (so
//! batches handed over in order are applied in order, even if the caller does not await each
//! one), the connection and its statement cache stay on one warm thread, and a long write
//! never occupies (or waits for) a thread of the runtime's blocking pool. Dropping the store
//! closes the channel; the thread finishes the queued jobs and closes the database. A call
//! whose future is dropped still takes effect once queued; if a job ever panicked, the thread
//! would end and every later call fail as [`StoreError::Unavailable`].

mod codec;
mod lock;
mod schema;
mod write;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::Connection;
use taskfleet_common::WorkflowSpec;
use tokio::sync::oneshot;

use self::codec::{classify, ATTEMPT_COLUMNS, TASK_COLUMNS, WORKFLOW_COLUMNS};
use self::write::NewTasks;
use rusqlite::params;
use taskfleet_common::state::TaskState;

use super::{
    AttemptRecord, SqlParam, Store, StoreError, StoreUpdate, TaskPage, TaskRecord, WorkflowQuery, WorkflowRecord,
};
use taskfleet_engine::predict::{FeatureModel, LogStats};

/// Work for the store thread.
type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// A [`Store`] in SQLite. See the module documentation for how it keeps off the runtime.
#[derive(Debug)]
pub struct SqliteStore {
    jobs: mpsc::Sender<Job>,
}

impl SqliteStore {
    /// Opens (or creates) the database file at `path` and brings its schema up to date. Only
    /// one process at a time may hold a store file: another's is [`StoreError::InUse`].
    ///
    /// This blocks while the file is opened and migrated; call it before serving requests.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let lock = lock::StoreLock::acquire(path)?;
        let conn = Connection::open(path).map_err(|error| classify(error, &format!("open {}", path.display())))?;
        SqliteStore::start(conn, Some(lock))
    }

    /// A store in memory, gone when dropped: for tests and throwaway runs.
    pub fn in_memory() -> Result<SqliteStore, StoreError> {
        let conn = Connection::open_in_memory().map_err(|error| classify(error, "open an in-memory database"))?;
        SqliteStore::start(conn, None)
    }

    /// Serves `conn` from a thread of its own, which holds `lock` until the connection closes.
    fn start(mut conn: Connection, lock: Option<lock::StoreLock>) -> Result<SqliteStore, StoreError> {
        schema::prepare(&mut conn)?;
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("taskfleet-sqlite".to_string())
            .spawn(move || {
                for job in queue {
                    job(&mut conn);
                }
                drop(conn);
                drop(lock);
            })
            .map_err(|error| StoreError::Unavailable {
                reason: format!("start the store thread: {error}"),
            })?;
        Ok(SqliteStore { jobs })
    }

    /// Runs `job` on the store thread and waits for its result without blocking the runtime.
    async fn run<T, F>(&self, job: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, result) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            // The caller may have given up waiting; the job's effect stands either way.
            let _ = reply.send(job(conn));
        });
        let stopped = || StoreError::Unavailable {
            reason: "the store thread has stopped".to_string(),
        };
        self.jobs.send(job).map_err(|_| stopped())?;
        result.await.map_err(|_| stopped())?
    }
}

/// Runs a query and decodes every row.
fn query_all<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    context: &str,
    decode: impl Fn(&rusqlite::Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut statement = conn.prepare_cached(sql).map_err(|error| classify(error, context))?;
    let mut rows = statement.query(params).map_err(|error| classify(error, context))?;
    let mut found = Vec::new();
    while let Some(row) = rows.next().map_err(|error| classify(error, context))? {
        found.push(decode(row)?);
    }
    Ok(found)
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_workflow(&self, record: &WorkflowRecord, spec: &WorkflowSpec) -> Result<(), StoreError> {
        let tasks = NewTasks::of(spec)?;
        let record = record.clone();
        self.run(move |conn| write::create_workflow(conn, &record, &tasks))
            .await
    }

    async fn workflow(&self, id: &str) -> Result<Option<WorkflowRecord>, StoreError> {
        let id = id.to_string();
        self.run(move |conn| {
            let sql = format!("SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE id = ?1");
            let found = query_all(conn, &sql, [&id], "read a workflow", codec::workflow_from_row)?;
            Ok(found.into_iter().next())
        })
        .await
    }

    async fn workflow_by_idempotency_key(&self, key: &str) -> Result<Option<WorkflowRecord>, StoreError> {
        let key = key.to_string();
        self.run(move |conn| {
            let sql = format!("SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE idempotency_key = ?1");
            let found = query_all(
                conn,
                &sql,
                [&key],
                "find a workflow by idempotency key",
                codec::workflow_from_row,
            )?;
            Ok(found.into_iter().next())
        })
        .await
    }

    async fn running_workflows(&self, spec_hash: Option<&str>) -> Result<Vec<WorkflowRecord>, StoreError> {
        let spec_hash = spec_hash.map(str::to_string);
        self.run(move |conn| {
            let (select, order) = (
                format!("SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE state = 'running'"),
                "ORDER BY submitted_at, id",
            );
            let context = "list running workflows";
            match spec_hash {
                None => query_all(
                    conn,
                    &format!("{select} {order}"),
                    [],
                    context,
                    codec::workflow_from_row,
                ),
                Some(hash) => {
                    let sql = format!("{select} AND spec_hash = ?1 {order}");
                    query_all(conn, &sql, [&hash], context, codec::workflow_from_row)
                }
            }
        })
        .await
    }

    async fn list_workflows(&self, query: &WorkflowQuery) -> Result<Vec<WorkflowRecord>, StoreError> {
        let (sql, params) = query.to_sql(|n| format!("?{n}"));
        let params: Vec<rusqlite::types::Value> = params
            .into_iter()
            .map(|param| match param {
                SqlParam::Text(text) => rusqlite::types::Value::Text(text),
                SqlParam::Int(int) => rusqlite::types::Value::Integer(int),
            })
            .collect();
        self.run(move |conn| {
            query_all(
                conn,
                &sql,
                rusqlite::params_from_iter(params),
                "list workflows",
                codec::workflow_from_row,
            )
        })
        .await
    }

    async fn tasks(&self, workflow_id: &str) -> Result<Vec<TaskRecord>, StoreError> {
        let workflow_id = workflow_id.to_string();
        self.run(move |conn| {
            let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE workflow_id = ?1 ORDER BY task_idx");
            let decode = |row: &rusqlite::Row<'_>| codec::task_from_row(row, &workflow_id);
            query_all(conn, &sql, [&workflow_id], "read tasks", decode)
        })
        .await
    }

    async fn task_ids(&self, workflow_id: &str) -> Result<Vec<String>, StoreError> {
        let workflow_id = workflow_id.to_string();
        self.run(move |conn| {
            let sql = "SELECT task_id FROM tasks WHERE workflow_id = ?1 ORDER BY task_idx";
            let decode = |row: &rusqlite::Row<'_>| row.get(0).map_err(|error| codec::classify(error, "read a task id"));
            query_all(conn, sql, [&workflow_id], "read task ids", decode)
        })
        .await
    }

    async fn runtime_stats(&self) -> Result<Vec<(String, LogStats)>, StoreError> {
        self.run(move |conn| {
            let sql = "SELECT signature, n, mean, m2 FROM runtime_stats ORDER BY signature";
            query_all(conn, sql, [], "read runtime statistics", codec::runtime_stats_from_row)
        })
        .await
    }

    async fn feature_models(&self) -> Result<Vec<(String, FeatureModel)>, StoreError> {
        self.run(move |conn| {
            let sql = "SELECT key, model FROM feature_models ORDER BY key";
            query_all(conn, sql, [], "read feature models", codec::feature_model_from_row)
        })
        .await
    }

    async fn attempts(&self, workflow_id: &str) -> Result<Vec<AttemptRecord>, StoreError> {
        let workflow_id = workflow_id.to_string();
        self.run(move |conn| {
            let sql = format!(
                "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE workflow_id = ?1 \
                 ORDER BY task_idx, attempt"
            );
            let decode = |row: &rusqlite::Row<'_>| codec::attempt_from_row(row, &workflow_id);
            query_all(conn, &sql, [&workflow_id], "read attempts", decode)
        })
        .await
    }

    async fn task_page(&self, workflow_id: &str, from: u32, limit: u32) -> Result<TaskPage, StoreError> {
        let workflow_id = workflow_id.to_string();
        self.run(move |conn| {
            let end = i64::from(from) + i64::from(limit);
            let sql = format!(
                "SELECT {TASK_COLUMNS}, task_id FROM tasks WHERE workflow_id = ?1 \
                 AND task_idx >= ?2 AND task_idx < ?3 ORDER BY task_idx"
            );
            let decode = |row: &rusqlite::Row<'_>| {
                let record = codec::task_from_row(row, &workflow_id)?;
                let id: String = row.get(6).map_err(|error| codec::classify(error, "read a task id"))?;
                Ok((record, id))
            };
            let page = params![&workflow_id, from, end];
            let rows = query_all(conn, &sql, page, "read a page of tasks", decode)?;
            let sql = format!(
                "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE workflow_id = ?1 \
                 AND task_idx >= ?2 AND task_idx < ?3 ORDER BY task_idx, attempt"
            );
            let decode = |row: &rusqlite::Row<'_>| codec::attempt_from_row(row, &workflow_id);
            let attempts = query_all(conn, &sql, page, "read a page of attempts", decode)?;
            let (records, ids) = rows.into_iter().unzip();
            Ok(TaskPage { records, ids, attempts })
        })
        .await
    }

    async fn task_counts(&self, workflow_id: &str) -> Result<Vec<(TaskState, usize)>, StoreError> {
        let workflow_id = workflow_id.to_string();
        self.run(move |conn| {
            let sql = "SELECT state, count(*) FROM tasks WHERE workflow_id = ?1 GROUP BY state";
            let decode = |row: &rusqlite::Row<'_>| {
                let read = |error| codec::classify(error, "count tasks");
                let state: String = row.get(0).map_err(read)?;
                let count: i64 = row.get(1).map_err(read)?;
                let state = TaskState::parse(&state).ok_or_else(|| StoreError::Corrupt {
                    reason: format!("unknown task state `{state}` in workflow '{workflow_id}'"),
                })?;
                Ok((state, usize::try_from(count).unwrap_or(0)))
            };
            let mut counts = query_all(conn, sql, [&workflow_id], "count tasks", decode)?;
            counts.sort_by_key(|&(state, _)| state);
            Ok(counts)
        })
        .await
    }

    async fn reopen_workflow(&self, workflow_id: &str, reset: &[TaskRecord]) -> Result<bool, StoreError> {
        let (workflow_id, reset) = (workflow_id.to_string(), reset.to_vec());
        self.run(move |conn| write::reopen_workflow(conn, &workflow_id, &reset))
            .await
    }

    async fn apply(&self, updates: Arc<[StoreUpdate]>) -> Result<(), StoreError> {
        if updates.is_empty() {
            return Ok(());
        }
        self.run(move |conn| write::apply(conn, &updates)).await
    }
}
