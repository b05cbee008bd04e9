//! The store conformance suite and the migrations, on the real PostgreSQL (`DATABASE_URL`,
//! by default the local one), each test in a schema of its own, dropped afterwards.

use super::*;
use crate::store::conformance;

fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".to_string())
}

/// A schema for one test, dropped when the value is.
struct Scratch {
    name: String,
}

impl Scratch {
    fn new(test: &str) -> Scratch {
        Scratch {
            name: format!("tf_{test}_{:08x}", rand::random::<u32>()),
        }
    }

    async fn store(&self) -> PostgresStore {
        PostgresStore::connect_in_schema(&database_url(), Some(&self.name))
            .await
            .unwrap_or_else(|error| panic!("PostgreSQL at {} (set DATABASE_URL): {error}", database_url()))
    }

    async fn sql(&self, sql: &str) {
        let (client, connection) = tokio_postgres::connect(&database_url(), NoTls).await.unwrap();
        tokio::spawn(connection);
        client.batch_execute(sql).await.unwrap();
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        let url = database_url();
        // A runtime of its own: the test's may be shutting down.
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok((client, connection)) = tokio_postgres::connect(&url, NoTls).await {
                    tokio::spawn(connection);
                    let _ = client.batch_execute(&sql).await;
                }
            });
        })
        .join()
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_passes_the_conformance_suite() {
    let scratch = Scratch::new("conformance");
    let store = scratch.store().await;
    conformance::run_all(&store, "pg").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_bring_an_empty_database_to_the_latest_version_once_even_when_raced() {
    let scratch = Scratch::new("migrate");
    let (a, b) = tokio::join!(scratch.store(), scratch.store());
    assert_eq!(a.schema_version().await.unwrap(), schema::MIGRATIONS.len() as i64);
    assert_eq!(b.schema_version().await.unwrap(), schema::MIGRATIONS.len() as i64);
    // Opening it again applies nothing and keeps what is there.
    conformance::create_and_read_back(&a, "again").await;
    let again = scratch.store().await;
    assert_eq!(again.schema_version().await.unwrap(), schema::MIGRATIONS.len() as i64);
    assert!(again.workflow("again-create").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_from_a_newer_build_is_refused_with_a_clear_message() {
    let scratch = Scratch::new("newer");
    drop(scratch.store().await);
    scratch
        .sql(&format!("UPDATE {}.taskfleet_schema SET version = 99", scratch.name))
        .await;
    let error = PostgresStore::connect_in_schema(&database_url(), Some(&scratch.name))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains("database schema version 99 is newer than this build knows"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_unavailable_and_says_where() {
    let error = PostgresStore::connect("postgres://root:secret@127.0.0.1:1/test")
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Unavailable { .. }), "{error}");
    assert!(!error.to_string().contains("secret"), "the password stays out: {error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_survives_its_connections_being_terminated() {
    let scratch = Scratch::new("terminate");
    let store = scratch.store().await;
    conformance::create_and_read_back(&store, "before").await;
    scratch
        .sql(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'taskfleet/{}'",
            scratch.name
        ))
        .await;
    // The first call on a dead connection may fail as unavailable; the pool then connects anew.
    let mut answered = false;
    for _ in 0..3 {
        match store.running_workflows(None).await {
            Ok(_) => {
                answered = true;
                break;
            }
            Err(StoreError::Unavailable { .. }) => {}
            Err(other) => panic!("a terminated connection is not {other}"),
        }
    }
    assert!(answered, "the store reconnects");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_scheduler_at_a_time_holds_a_database() {
    let scratch = Scratch::new("exclusive");
    let first = scratch.store().await;
    first.lock_exclusive().await.unwrap();
    let second = scratch.store().await;
    let error = second.lock_exclusive().await.unwrap_err();
    assert!(matches!(error, StoreError::InUse { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains("another taskfleet scheduler uses this database"),
        "{error}"
    );
    drop(first);
    // The lock goes with the first store's connection.
    let mut taken = false;
    for _ in 0..50 {
        if second.lock_exclusive().await.is_ok() {
            taken = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(taken, "the lock is free once its holder is gone");
}
