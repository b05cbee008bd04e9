//! [`PostgresStore`]: the store of a production scheduler, in PostgreSQL, which several
//! schedulers can share (`--db postgres://user@host/db`).
//!
//! Connections come from a small `deadpool-postgres` pool; statements are prepared once per
//! connection. Each call takes a connection for as long as it runs, so reads of the API and the
//! scheduler loop's writes proceed side by side. A lost connection is dropped by the pool and
//! the call fails as [`StoreError::Unavailable`]; the scheduler retries, and the next call
//! connects again.

mod codec;
mod lease;
mod reopen;
mod schema;
mod write;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use taskfleet_common::state::TaskState;
use taskfleet_common::WorkflowSpec;
use taskfleet_engine::predict::{FeatureModel, LogStats};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use self::codec::{classify, ATTEMPT_COLUMNS, TASK_COLUMNS, WORKFLOW_COLUMNS};
use super::{
    AttemptRecord, SqlParam, Store, StoreError, StoreUpdate, TaskPage, TaskRecord, WorkflowQuery, WorkflowRecord,
};

/// Connections the store keeps open at most.
const POOL_SIZE: usize = 8;

/// How long connecting, or waiting for a free connection, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A [`Store`] in PostgreSQL. See the module documentation.
pub struct PostgresStore {
    pool: Pool,
    /// The leadership this store writes under, once it has claimed the lease.
    fence: std::sync::Mutex<Option<lease::Fence>>,
    /// How to connect, for the connection that listens for requests.
    config: tokio_postgres::Config,
    /// The channel on which requests for the leader are announced (one per schema).
    channel: String,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("pool", &self.pool.status())
            .field("fence", &self.fence())
            .finish()
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user[:password]@host[:port]/db`) and
    /// brings its schema up to date (or refuses a schema newer than this build knows).
    pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        PostgresStore::connect_in_schema(url, None).await
    }

    /// Like [`PostgresStore::connect`], with every table in `schema` (created if missing), so
    /// that several stores can share one database (tests do).
    pub async fn connect_in_schema(url: &str, schema: Option<&str>) -> Result<PostgresStore, StoreError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|error| StoreError::Unavailable {
            reason: format!("`{url}` is not a PostgreSQL URL: {error}"),
        })?;
        config.connect_timeout(CONNECT_TIMEOUT);
        // Named in `pg_stat_activity`, unless the URL names it (`?application_name=...`).
        if config.get_application_name().is_none() {
            config.application_name(&match schema {
                None => "taskfleet".to_string(),
                Some(schema) => format!("taskfleet/{schema}"),
            });
        }
        if let Some(schema) = schema {
            if !schema.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') || schema.is_empty() {
                return Err(StoreError::Unavailable {
                    reason: format!("`{schema}` is not a schema name of A-Z a-z 0-9 _"),
                });
            }
            let (client, connection) = config
                .connect(NoTls)
                .await
                .map_err(|error| classify(error, &format!("connect to {}", redact(url))))?;
            let connection = tokio::spawn(connection);
            // Under the migration lock: two `CREATE SCHEMA IF NOT EXISTS` at once can collide.
            let create = format!(
                "BEGIN; SELECT pg_advisory_xact_lock({}); CREATE SCHEMA IF NOT EXISTS {schema}; COMMIT;",
                schema::MIGRATION_LOCK
            );
            client
                .batch_execute(&create)
                .await
                .map_err(|error| classify(error, "create the schema"))?;
            drop(client);
            let _ = connection.await;
            config.options(format!("-c search_path={schema}"));
        }
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|error| StoreError::Unavailable {
                reason: format!("set up the connection pool: {error}"),
            })?;
        let mut store = PostgresStore {
            pool,
            fence: std::sync::Mutex::new(None),
            config,
            channel: String::new(),
        };
        let mut client = store.client().await?;
        schema::migrate(&mut client).await?;
        let current = client
            .query_one("SELECT current_schema()", &[])
            .await
            .map_err(|error| classify(error, "read the current schema"))?;
        drop(client);
        store.channel = channel_name(current.get(0));
        Ok(store)
    }

    /// The leadership this store's writes are fenced by.
    fn fence(&self) -> Option<lease::Fence> {
        self.fence_mut().clone()
    }

    fn fence_mut(&self) -> std::sync::MutexGuard<'_, Option<lease::Fence>> {
        self.fence.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The schema version of the database.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        let client = self.client().await?;
        schema::version(&client).await
    }

    async fn client(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(|error| StoreError::Unavailable {
            reason: format!("connect to the PostgreSQL store: {error}"),
        })
    }

    /// Runs a query and decodes every row.
    async fn query_all<T>(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        context: &str,
        decode: impl Fn(&Row) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(sql)
            .await
            .map_err(|error| classify(error, context))?;
        let rows = client
            .query(&statement, params)
            .await
            .map_err(|error| classify(error, context))?;
        rows.iter().map(decode).collect()
    }
}

/// The notification channel of the schema `schema`: an identifier of at most 63 bytes.
fn channel_name(schema: &str) -> String {
    let mut name = format!("taskfleet_{schema}");
    while name.len() > 63 {
        name.pop();
    }
    name
}

/// A URL as shown in messages: without its password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn create_workflow(&self, record: &WorkflowRecord, spec: &WorkflowSpec) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|error| classify(error, "begin creating a workflow"))?;
        write::create_workflow(tx, record, spec, &self.channel).await
    }

    async fn workflow(&self, id: &str) -> Result<Option<WorkflowRecord>, StoreError> {
        let sql = format!("SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE id = $1");
        let found = self
            .query_all(&sql, &[&id], "read a workflow", codec::workflow_from_row)
            .await?;
        Ok(found.into_iter().next())
    }

    async fn workflow_by_idempotency_key(&self, key: &str) -> Result<Option<WorkflowRecord>, StoreError> {
        let sql = format!("SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE idempotency_key = $1");
        let context = "find a workflow by idempotency key";
        let found = self.query_all(&sql, &[&key], context, codec::workflow_from_row).await?;
        Ok(found.into_iter().next())
    }

    async fn running_workflows(&self, spec_hash: Option<&str>) -> Result<Vec<WorkflowRecord>, StoreError> {
        let select = format!("SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE state = 'running'");
        let (order, context) = ("ORDER BY submitted_at, id", "list running workflows");
        match spec_hash {
            None => {
                self.query_all(&format!("{select} {order}"), &[], context, codec::workflow_from_row)
                    .await
            }
            Some(hash) => {
                let sql = format!("{select} AND spec_hash = $1 {order}");
                self.query_all(&sql, &[&hash], context, codec::workflow_from_row).await
            }
        }
    }

    async fn list_workflows(&self, query: &WorkflowQuery) -> Result<Vec<WorkflowRecord>, StoreError> {
        let (sql, params) = query.to_sql(|n| format!("${n}"));
        let owned: Vec<Box<dyn ToSql + Sync + Send>> = params
            .into_iter()
            .map(|param| -> Box<dyn ToSql + Sync + Send> {
                match param {
                    SqlParam::Text(text) => Box::new(text),
                    SqlParam::Int(int) => Box::new(int),
                }
            })
            .collect();
        let refs: Vec<&(dyn ToSql + Sync)> = owned
            .iter()
            .map(|param| param.as_ref() as &(dyn ToSql + Sync))
            .collect();
        self.query_all(&sql, &refs, "list workflows", codec::workflow_from_row)
            .await
    }

    async fn tasks(&self, workflow_id: &str) -> Result<Vec<TaskRecord>, StoreError> {
        let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE workflow_id = $1 ORDER BY task_idx");
        let decode = |row: &Row| codec::task_from_row(row, workflow_id);
        self.query_all(&sql, &[&workflow_id], "read tasks", decode).await
    }

    async fn task_ids(&self, workflow_id: &str) -> Result<Vec<String>, StoreError> {
        let sql = "SELECT task_id FROM tasks WHERE workflow_id = $1 ORDER BY task_idx";
        let decode = |row: &Row| {
            row.try_get(0).map_err(|error| StoreError::Corrupt {
                reason: format!("a task id of workflow '{workflow_id}' cannot be read: {error}"),
            })
        };
        self.query_all(sql, &[&workflow_id], "read task ids", decode).await
    }

    async fn attempts(&self, workflow_id: &str) -> Result<Vec<AttemptRecord>, StoreError> {
        let sql = format!("SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE workflow_id = $1 ORDER BY task_idx, attempt");
        let decode = |row: &Row| codec::attempt_from_row(row, workflow_id);
        self.query_all(&sql, &[&workflow_id], "read attempts", decode).await
    }

    async fn task_page(&self, workflow_id: &str, from: u32, limit: u32) -> Result<TaskPage, StoreError> {
        let (from, end) = (i64::from(from), i64::from(from) + i64::from(limit));
        let sql = format!(
            "SELECT {TASK_COLUMNS}, task_id FROM tasks WHERE workflow_id = $1 \
             AND task_idx >= $2 AND task_idx < $3 ORDER BY task_idx"
        );
        let decode = |row: &Row| {
            let record = codec::task_from_row(row, workflow_id)?;
            let id: String = row.try_get(6).map_err(|error| StoreError::Corrupt {
                reason: format!("a task id of workflow '{workflow_id}' cannot be read: {error}"),
            })?;
            Ok((record, id))
        };
        let page: [&(dyn ToSql + Sync); 3] = [&workflow_id, &from, &end];
        let rows = self.query_all(&sql, &page, "read a page of tasks", decode).await?;
        let sql = format!(
            "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE workflow_id = $1 \
             AND task_idx >= $2 AND task_idx < $3 ORDER BY task_idx, attempt"
        );
        let decode = |row: &Row| codec::attempt_from_row(row, workflow_id);
        let attempts = self.query_all(&sql, &page, "read a page of attempts", decode).await?;
        let (records, ids) = rows.into_iter().unzip();
        Ok(TaskPage { records, ids, attempts })
    }

    async fn task_counts(&self, workflow_id: &str) -> Result<Vec<(TaskState, usize)>, StoreError> {
        let sql = "SELECT state, count(*) FROM tasks WHERE workflow_id = $1 GROUP BY state";
        let decode = |row: &Row| {
            let unreadable = |error: tokio_postgres::Error| StoreError::Corrupt {
                reason: format!("count tasks of workflow '{workflow_id}': {error}"),
            };
            let state: String = row.try_get(0).map_err(unreadable)?;
            let count: i64 = row.try_get(1).map_err(unreadable)?;
            let state = TaskState::parse(&state).ok_or_else(|| StoreError::Corrupt {
                reason: format!("unknown task state `{state}` in workflow '{workflow_id}'"),
            })?;
            Ok((state, usize::try_from(count).unwrap_or(0)))
        };
        let mut counts = self.query_all(sql, &[&workflow_id], "count tasks", decode).await?;
        counts.sort_by_key(|&(state, _)| state);
        Ok(counts)
    }

    async fn runtime_stats(&self) -> Result<Vec<(String, LogStats)>, StoreError> {
        let sql = "SELECT signature, n, mean, m2 FROM runtime_stats ORDER BY signature";
        self.query_all(sql, &[], "read runtime statistics", codec::runtime_stats_from_row)
            .await
    }

    async fn feature_models(&self) -> Result<Vec<(String, FeatureModel)>, StoreError> {
        let sql = "SELECT key, model FROM feature_models ORDER BY key";
        self.query_all(sql, &[], "read feature models", codec::feature_model_from_row)
            .await
    }

    async fn reopen_workflow(&self, workflow_id: &str, reset: &[TaskRecord]) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|error| classify(error, "begin reopening a workflow"))?;
        reopen::reopen_workflow(tx, &self.channel, workflow_id, reset).await
    }

    async fn apply(&self, updates: Arc<[StoreUpdate]>) -> Result<(), StoreError> {
        if updates.is_empty() {
            return Ok(());
        }
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|error| classify(error, "begin applying updates"))?;
        write::apply(tx, &updates, self.fence().as_ref()).await
    }

    fn shared(&self) -> Option<&dyn super::SharedStore> {
        Some(self)
    }
}
