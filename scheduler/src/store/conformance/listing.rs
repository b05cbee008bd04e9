//! Conformance scenario for listing workflows: filters, newest-first order and paging.

use taskfleet_common::Millis;

use super::{create, record};
use crate::store::{Store, WorkflowQuery, WorkflowRecord, WorkflowState};

/// Workflows list newest first (ties by id, larger first), filtered by state, name and
/// submission time, in pages that continue where the last ended, without their source.
pub async fn workflows_list_newest_first_in_pages(store: &dyn Store, prefix: &str) {
    let name = format!("{prefix}-listing");
    let listed = |id: &str, state: WorkflowState, at: u64| WorkflowRecord {
        name: name.clone(),
        state,
        finished_at: state.is_terminal().then_some(Millis(at + 10)),
        ..record(&format!("{prefix}-list-{id}"), &format!("{prefix}-list-hash"), at)
    };
    let a = listed("a", WorkflowState::Running, 1_000);
    let b = listed("b", WorkflowState::Succeeded, 2_000);
    let c = listed("c", WorkflowState::Failed, 2_000);
    let d = listed("d", WorkflowState::Running, 3_000);
    let e = listed("e", WorkflowState::Cancelled, 500);
    let stranger = WorkflowRecord {
        name: format!("{prefix}-other"),
        ..record(&format!("{prefix}-list-z"), &format!("{prefix}-list-hash"), 2_500)
    };
    for workflow in [&a, &b, &c, &d, &e, &stranger] {
        create(store, workflow).await;
    }
    let without_source = |records: &[&WorkflowRecord]| -> Vec<WorkflowRecord> {
        records
            .iter()
            .map(|record| WorkflowRecord {
                source: String::new(),
                ..(*record).clone()
            })
            .collect()
    };
    let query = |limit: u32| WorkflowQuery {
        name: Some(name.clone()),
        limit,
        ..WorkflowQuery::default()
    };
    let list = |query: WorkflowQuery| async move { store.list_workflows(&query).await.expect("list workflows") };

    assert_eq!(
        list(query(10)).await,
        without_source(&[&d, &c, &b, &a, &e]),
        "list: newest first, ties by id, without the source"
    );
    let running = WorkflowQuery {
        state: Some(WorkflowState::Running),
        ..query(10)
    };
    assert_eq!(list(running).await, without_source(&[&d, &a]), "list: by state");
    let recent = WorkflowQuery {
        submitted_after: Some(Millis(2_000)),
        ..query(10)
    };
    assert_eq!(
        list(recent).await,
        without_source(&[&d, &c, &b]),
        "list: submitted since"
    );

    let mut pages = Vec::new();
    let mut before = None;
    loop {
        let page = list(WorkflowQuery {
            before: before.clone(),
            ..query(2)
        })
        .await;
        let Some(last) = page.last() else {
            break;
        };
        before = Some((last.submitted_at, last.id.clone()));
        pages.push(page.iter().map(|record| record.id.clone()).collect::<Vec<_>>());
        assert!(pages.len() <= 3, "list: pages never end: {pages:?}");
    }
    let ids = |records: &[&WorkflowRecord]| records.iter().map(|record| record.id.clone()).collect::<Vec<_>>();
    assert_eq!(
        pages,
        [ids(&[&d, &c]), ids(&[&b, &a]), ids(&[&e])],
        "list: pages continue where the last ended"
    );
    assert_eq!(
        list(WorkflowQuery {
            name: Some(format!("{prefix}-nobody")),
            ..query(10)
        })
        .await,
        [],
        "list: an unknown name"
    );
}
