//! The store conformance suite and the migrations, on the real PostgreSQL (`DATABASE_URL`,
//! by default the local one), each test in a schema of its own, dropped afterwards.

use super::*;
use crate::store::conformance;
use crate::store::{Request, SharedStore};

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

/// A batch that changes one task of the stored diamond `workflow_id`.
fn one_update(workflow_id: &str) -> Arc<[StoreUpdate]> {
    let id: Arc<str> = Arc::from(workflow_id);
    let record = conformance::task(0, TaskState::Running, 1, 0);
    vec![conformance::task_update(&id, record)].into()
}

async fn stored_diamond(store: &PostgresStore, id: &str) {
    let spec = conformance::diamond();
    store
        .create_workflow(&conformance::record(id, "h", 1), &spec)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_scheduler_leads_and_a_deposed_leader_cannot_write() {
    let scratch = Scratch::new("lease");
    let (a, b) = (scratch.store().await, scratch.store().await);
    stored_diamond(&a, "w").await;
    assert_eq!(a.lease().await.unwrap(), None, "nobody led yet");
    let ttl = Duration::from_millis(400);
    assert_eq!(a.claim("a", ttl).await.unwrap(), Some(1));
    assert_eq!(b.claim("b", ttl).await.unwrap(), None, "a's lease runs");
    assert_eq!(a.claim("a", ttl).await.unwrap(), Some(1), "renewing keeps the epoch");
    let lease = b.lease().await.unwrap().unwrap();
    assert_eq!((lease.holder.as_str(), lease.epoch), ("a", 1));
    assert!(lease.remaining.is_some_and(|left| left <= ttl), "{lease:?}");
    a.apply(one_update("w")).await.unwrap();

    // a pauses past its lease; b takes over with the next epoch.
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    assert_eq!(b.claim("b", ttl).await.unwrap(), Some(2));
    let refused = a.apply(one_update("w")).await.unwrap_err();
    assert!(matches!(refused, StoreError::Fenced { .. }), "{refused}");
    assert!(refused.to_string().contains("`a` no longer leads"), "{refused}");
    assert!(matches!(a.take_requests().await, Err(StoreError::Fenced { .. })));
    assert_eq!(a.claim("a", ttl).await.unwrap(), None, "b leads now");
    b.apply(one_update("w")).await.unwrap();

    // A clean stop hands over at once.
    b.resign("b").await.unwrap();
    assert!(
        matches!(b.apply(one_update("w")).await, Ok(())),
        "a store of no leader writes unfenced"
    );
    assert_eq!(a.claim("a", ttl).await.unwrap(), Some(3));
    assert_eq!(b.lease().await.unwrap().unwrap().holder, "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_waits_for_the_write_in_progress() {
    let scratch = Scratch::new("fencewait");
    let (a, b) = (scratch.store().await, scratch.store().await);
    stored_diamond(&a, "w").await;
    assert_eq!(a.claim("a", Duration::from_millis(1)).await.unwrap(), Some(1));
    tokio::time::sleep(Duration::from_millis(20)).await;
    // a's lease has lapsed but nobody took over: a holds the row while it writes.
    let mut client = a.client().await.unwrap();
    let tx = client.transaction().await.unwrap();
    lease::check_fence(&tx, a.fence().as_ref()).await.unwrap();
    let takeover = tokio::spawn(async move { b.claim("b", Duration::from_secs(5)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!takeover.is_finished(), "the takeover waits for a's transaction");
    tx.commit().await.unwrap();
    assert_eq!(takeover.await.unwrap().unwrap(), Some(2));
    assert!(matches!(a.apply(one_update("w")).await, Err(StoreError::Fenced { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submissions_and_cancellations_reach_the_leader_once() {
    let scratch = Scratch::new("requests");
    let (leader, standby) = (scratch.store().await, scratch.store().await);
    leader.claim("leader", Duration::from_secs(30)).await.unwrap();
    let wake = Arc::new(tokio::sync::Notify::new());
    let stop = tokio_util::sync::CancellationToken::new();
    let listener = {
        let (store, wake, stop) = (scratch.store().await, wake.clone(), stop.clone());
        tokio::spawn(async move { store.listen(wake, stop).await })
    };
    // The first wake-up comes once listening; the next only with a request.
    tokio::time::timeout(Duration::from_secs(5), wake.notified())
        .await
        .unwrap();

    stored_diamond(&standby, "w1").await;
    tokio::time::timeout(Duration::from_secs(5), wake.notified())
        .await
        .expect("a stored workflow wakes the leader");
    assert!(standby.request_cancel("w1").await.unwrap());
    assert!(!standby.request_cancel("nope").await.unwrap(), "no such workflow runs");
    assert_eq!(standby.cancel_requests().await.unwrap(), vec!["w1".to_string()]);
    let taken = leader.take_requests().await.unwrap();
    let w1 = || "w1".to_string();
    assert_eq!(
        taken,
        vec![
            Request::Submitted { workflow_id: w1() },
            Request::Cancel { workflow_id: w1() }
        ]
    );
    assert_eq!(leader.take_requests().await.unwrap(), vec![], "each is taken once");
    assert!(matches!(standby.take_requests().await, Err(StoreError::Fenced { .. })));
    stop.cancel();
    listener.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_every_earlier_schema_version_is_migrated_with_its_work() {
    for version in 1..schema::MIGRATIONS.len() {
        let scratch = Scratch::new(&format!("from_v{version}"));
        let name = &scratch.name;
        // The database as a build of that version left it, with a task and an attempt.
        scratch
            .sql(&format!(
                "CREATE SCHEMA {name}; SET search_path = {name}; {} \
                 CREATE TABLE taskfleet_schema (version BIGINT NOT NULL); INSERT INTO taskfleet_schema VALUES ({version}); \
                 INSERT INTO workflows (id, name, spec_hash, source, state, submitted_at) \
                 VALUES ('old', 'old', 'h', 'name: old', 'running', 1); \
                 INSERT INTO tasks (workflow_id, task_idx, task_id, state, attempt) VALUES ('old', 0, 'a', 'running', 1); \
                 INSERT INTO attempts (workflow_id, task_idx, attempt, dispatched_at) VALUES ('old', 0, 1, 5);",
                schema::MIGRATIONS[..version].join(";\n")
            ))
            .await;
        let store = scratch.store().await;
        assert_eq!(store.schema_version().await.unwrap(), schema::MIGRATIONS.len() as i64);
        assert_eq!(
            store.workflow("old").await.unwrap().unwrap().name,
            "old",
            "from version {version}"
        );
        assert_eq!(store.tasks("old").await.unwrap()[0].state, TaskState::Running);
        assert_eq!(store.attempts("old").await.unwrap()[0].dispatched_at.0, 5);
        assert!(store.request_cancel("old").await.unwrap());
        assert_eq!(store.claim("me", Duration::from_secs(1)).await.unwrap(), Some(1));
        // And it takes the writes of this build.
        store.apply(one_update("old")).await.unwrap();
    }
}
