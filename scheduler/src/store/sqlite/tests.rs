//! Tests of the SQLite store: the conformance suite in memory and on disk, persistence,
//! schema versions, corrupt rows and error classification.

use std::path::Path;
use std::sync::Arc;

use rusqlite::Connection;

use super::schema::MIGRATIONS;
use super::{codec, SqliteStore};
use crate::store::conformance::{self, diamond, fresh_diamond_tasks, record};
use crate::store::{Store, StoreError, StoreUpdate};
use taskfleet_common::Millis;

/// A plain connection to a store's file, to look at or damage what the store wrote.
fn raw(path: &Path) -> Connection {
    let conn = Connection::open(path).expect("open the database directly");
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .expect("set a busy timeout");
    conn
}

#[tokio::test]
async fn in_memory_store_passes_the_conformance_suite() {
    let store = SqliteStore::in_memory().expect("open an in-memory store");
    conformance::run_all(&store, "memory").await;
}

#[tokio::test]
async fn file_store_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().expect("make a temporary directory");
    let store = SqliteStore::open(&dir.path().join("store.db")).expect("open a file store");
    conformance::run_all(&store, "file").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_store_keeps_everything_across_reopening() {
    let dir = tempfile::tempdir().expect("make a temporary directory");
    let path = dir.path().join("store.db");
    let store = SqliteStore::open(&path).expect("open a file store");
    conformance::updates_round_trip(&store, "reopen").await;
    let workflow = store.workflow("reopen-updates").await.expect("read the workflow");
    let tasks = store.tasks("reopen-updates").await.expect("read tasks");
    let attempts = store.attempts("reopen-updates").await.expect("read attempts");
    drop(store);

    let store = SqliteStore::open(&path).expect("reopen the file store");
    assert!(workflow.is_some());
    assert_eq!(
        store.workflow("reopen-updates").await.expect("read the workflow"),
        workflow
    );
    assert_eq!(store.tasks("reopen-updates").await.expect("read tasks"), tasks);
    assert_eq!(store.attempts("reopen-updates").await.expect("read attempts"), attempts);
    assert_eq!(attempts.len(), 2);
}

#[tokio::test]
async fn file_store_uses_wal_and_records_its_schema_version() {
    let dir = tempfile::tempdir().expect("make a temporary directory");
    let path = dir.path().join("store.db");
    let store = SqliteStore::open(&path).expect("open a file store");
    store
        .create_workflow(&record("ids", "ids-hash", 1), &diamond())
        .await
        .expect("create");
    let conn = raw(&path);
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .expect("journal mode");
    assert_eq!(mode, "wal");
    let version: usize = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .expect("user version");
    assert_eq!(version, MIGRATIONS.len());
    let mut query = conn
        .prepare("SELECT task_id FROM tasks WHERE workflow_id = 'ids' ORDER BY task_idx")
        .expect("prepare");
    let ids: Vec<String> = query
        .query_map([], |row| row.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("read ids");
    assert_eq!(ids, ["extract", "left", "right", "join", "lint"]);
    drop(store);
    // Opening again applies no migration twice.
    SqliteStore::open(&path).expect("reopen the file store");
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().expect("make a temporary directory");
    let path = dir.path().join("store.db");
    drop(SqliteStore::open(&path).expect("open a file store"));
    let newer = MIGRATIONS.len() + 1;
    raw(&path)
        .pragma_update(None, "user_version", newer)
        .expect("set a newer user version");
    match SqliteStore::open(&path) {
        Err(StoreError::Corrupt { reason }) => assert_eq!(
            reason,
            format!(
                "database schema version {newer} is newer than this build knows ({}): upgrade taskfleet to open it",
                MIGRATIONS.len()
            )
        ),
        other => panic!("expected the newer schema to be refused, got {other:?}"),
    }
}

#[test]
fn a_file_that_is_not_a_database_is_corrupt() {
    let dir = tempfile::tempdir().expect("make a temporary directory");
    let path = dir.path().join("store.db");
    std::fs::write(
        &path,
        "this is not a database, just some text that is long enough".repeat(100),
    )
    .expect("write");
    let error = SqliteStore::open(&path).expect_err("open garbage");
    assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
}

#[tokio::test]
async fn unknown_stored_values_are_reported_as_corrupt() {
    let dir = tempfile::tempdir().expect("make a temporary directory");
    let path = dir.path().join("store.db");
    let store = SqliteStore::open(&path).expect("open a file store");
    store
        .create_workflow(&record("bad", "bad-hash", 1), &diamond())
        .await
        .expect("create");
    let id: Arc<str> = Arc::from("bad");
    let update = StoreUpdate::AttemptDispatched {
        workflow_id: id,
        task_idx: 2,
        attempt: 1,
        at: Millis(5),
    };
    store.apply(vec![update].into()).await.expect("dispatch");
    assert_eq!(store.tasks("bad").await.expect("read tasks"), fresh_diamond_tasks());

    let conn = raw(&path);
    conn.execute("UPDATE tasks SET state = 'bogus' WHERE task_idx = 1", [])
        .expect("damage a task");
    conn.execute("UPDATE attempts SET outcome = 'exploded'", [])
        .expect("damage an attempt");
    conn.execute("UPDATE workflows SET state = 'sleeping'", [])
        .expect("damage the workflow");
    let expect_corrupt = |result: Result<_, StoreError>, expected: &str| match result {
        Err(StoreError::Corrupt { reason }) => assert_eq!(reason, expected),
        other => panic!("expected corrupt data to be reported, got {other:?}"),
    };
    expect_corrupt(
        store.tasks("bad").await.map(drop),
        "tasks row (workflow 'bad', task 1) has state unknown value 'bogus'",
    );
    expect_corrupt(
        store.attempts("bad").await.map(drop),
        "attempts row (workflow 'bad', task 2, attempt 1) has outcome unknown value 'exploded'",
    );
    expect_corrupt(
        store.workflow("bad").await.map(drop),
        "workflows row (id 'bad') has state unknown value 'sleeping'",
    );
    conn.execute("UPDATE tasks SET state = 'ready', attempt = -3 WHERE task_idx = 1", [])
        .expect("damage a task");
    expect_corrupt(
        store.tasks("bad").await.map(drop),
        "tasks row (workflow 'bad', task 1) has attempt out of range: -3",
    );
}

#[test]
fn errors_are_classified_by_what_the_caller_can_do() {
    let conn = Connection::open_in_memory().expect("open");
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
        .expect("create");
    let constraint = conn
        .execute("INSERT INTO t (id, name) VALUES (1, NULL)", [])
        .expect_err("null name");
    let error = codec::classify(constraint, "insert a row");
    assert!(
        matches!(&error, StoreError::Conflict { reason } if reason == "insert a row: NOT NULL constraint failed: t.name"),
        "{error:?}"
    );
    let busy = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY), None);
    assert!(matches!(
        codec::classify(busy, "commit"),
        StoreError::Unavailable { .. }
    ));
    let io = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR), None);
    assert!(matches!(codec::classify(io, "commit"), StoreError::Unavailable { .. }));
    let wrong_type = conn
        .query_row("SELECT 'text'", [], |row| row.get::<_, i64>(0))
        .expect_err("wrong type");
    assert!(matches!(
        codec::classify(wrong_type, "read"),
        StoreError::Corrupt { .. }
    ));
    let no_table = conn
        .prepare("SELECT * FROM missing")
        .map(drop)
        .expect_err("no such table");
    assert!(matches!(codec::classify(no_table, "read"), StoreError::Corrupt { .. }));
}

#[test]
fn a_store_held_by_another_process_is_refused_naming_it() {
    use nix::fcntl::{Flock, FlockArg};
    use std::io::Write as _;
    let dir = tempfile::tempdir().expect("make a temporary directory");
    let path = dir.path().join("store.db");
    // Another process's lock, as far as the store can tell.
    let file = std::fs::File::create(dir.path().join("store.db.lock")).unwrap();
    let mut held = Flock::lock(file, FlockArg::LockExclusiveNonblock)
        .map_err(|(_, errno)| errno)
        .unwrap();
    held.write_all(b"4242 (taskfleet run other.yaml)").unwrap();
    match SqliteStore::open(&path) {
        Err(StoreError::InUse { reason }) => assert_eq!(
            reason,
            format!(
                "the store {} is in use by process 4242 (taskfleet run other.yaml) (taskfleet allows one process per store: stop it, or use another store)",
                path.display()
            )
        ),
        other => panic!("expected the store to be in use, got {other:?}"),
    }
    drop(held);
    let store = SqliteStore::open(&path).expect("open once the holder let go");
    // This process holds it now: a second open waits a little for it, then gives up.
    assert!(matches!(SqliteStore::open(&path), Err(StoreError::InUse { .. })));
    drop(store);
}
