use std::sync::Arc;

use taskfleet_common::state::{AttemptOutcome, TaskState};

use super::*;
use crate::store::conformance::{attempt, create, dispatched, finished, record, started, task, task_update};
use crate::store::SqliteStore;

#[tokio::test]
async fn statuses_page_through_the_tasks_with_full_counts() {
    let store = SqliteStore::in_memory().unwrap();
    create(&store, &record("wf", "h", 1)).await;
    let window = TaskWindow { from: 0, limit: 2 };
    let (first, _) = workflow_status_page(&store, "wf", window).await.unwrap().unwrap();
    let ids: Vec<&str> = first.tasks.iter().map(|task| task.id.as_str()).collect();
    assert_eq!(ids, ["extract", "left"]);
    assert_eq!(first.next_cursor.as_deref(), Some("2"));
    assert_eq!(first.counts.get("ready"), Some(&2));
    assert_eq!(first.counts.get("pending"), Some(&3));
    let (last, _) = workflow_status_page(&store, "wf", TaskWindow { from: 4, limit: 2 })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(last.tasks.len(), 1);
    assert_eq!(last.tasks[0].id, "lint");
    assert_eq!(last.next_cursor, None, "the last page has no next one");
    let (counts_only, _) = workflow_status_page(&store, "wf", TaskWindow { from: 0, limit: 0 })
        .await
        .unwrap()
        .unwrap();
    assert!(counts_only.tasks.is_empty() && counts_only.next_cursor.is_none());
    assert_eq!(counts_only.counts.values().sum::<usize>(), 5);
    assert!(workflow_status_page(&store, "nope", window).await.unwrap().is_none());
}

#[tokio::test]
async fn an_attempt_lost_before_it_reached_a_worker_is_not_counted() {
    let store = SqliteStore::in_memory().unwrap();
    create(&store, &record("wf", "h", 1)).await;
    let id: Arc<str> = Arc::from("wf");
    let mut done = attempt(0, 2, 20);
    done.worker = Some("w1".into());
    done.started_at = Some(Millis(21));
    done.finished_at = Some(Millis(22));
    done.outcome = Some(AttemptOutcome::Succeeded);
    let updates = vec![
        // Attempt 1 went out; the scheduler restarted before any worker took it.
        dispatched(&id, 0, 1, 10),
        task_update(&id, task(0, TaskState::Dispatched, 1, 0)),
        // Attempt 2 ran.
        dispatched(&id, 0, 2, 20),
        started(&id, 0, 2, "w1", 21),
        finished(&id, &done),
        task_update(&id, task(0, TaskState::Succeeded, 2, 0)),
        // Attempt 1 of another task is out now.
        dispatched(&id, 4, 1, 30),
        task_update(&id, task(4, TaskState::Dispatched, 1, 0)),
    ];
    store.apply(updates.into()).await.unwrap();
    let status = workflow_status(&store, "wf").await.unwrap().unwrap();
    assert_eq!(status.tasks[0].attempts, 1, "{:?}", status.tasks[0]);
    assert_eq!(status.tasks[0].worker.as_deref(), Some("w1"));
    assert_eq!(status.tasks[4].attempts, 1, "the attempt out now counts");
    assert_eq!(status.tasks[1].attempts, 0);
}
