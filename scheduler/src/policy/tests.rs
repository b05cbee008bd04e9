//! Policy ordering tests: a list of ready tasks in, the dispatch order out.

use taskfleet_common::{Millis, PriorityClass};

use super::*;

/// `(name, workflow_seq, class, weight)`; ready order is list order.
type Fixture<'a> = &'a [(&'a str, u64, PriorityClass, f64)];

#[track_caller]
fn check(kind: PolicyKind, fixture: Fixture<'_>, expected: &str) {
    let mut policy = kind.build();
    for (ready_seq, &(_, workflow_seq, class, weight)) in fixture.iter().enumerate() {
        policy.push(ReadyTask {
            task: TaskRef {
                workflow_slot: 0,
                task_idx: ready_seq as u32,
            },
            workflow_seq,
            ready_seq: ready_seq as u64,
            ready_at: Millis(ready_seq as u64),
            class,
            weight,
            estimate_ms: None,
        });
    }
    assert_eq!(policy.len(), fixture.len());
    let mut order = Vec::new();
    while let Some(task) = policy.pop(Millis(1_000)) {
        order.push(fixture[task.task_idx as usize].0);
    }
    assert!(policy.is_empty());
    assert_eq!(order.join(" "), expected);
}

use PriorityClass::{High, Low, Normal};

#[test]
fn fcfs_orders_by_workflow_then_readiness() {
    check(
        PolicyKind::Fcfs,
        &[
            ("b1", 2, High, 0.0),
            ("a1", 1, Low, 0.0),
            ("b2", 2, Normal, 9.0),
            ("a2", 1, High, 0.0),
        ],
        "a1 a2 b1 b2",
    );
}

#[test]
fn priority_orders_by_class_then_weight_then_fcfs() {
    check(
        PolicyKind::Priority,
        &[
            ("low", 1, Low, 100.0),
            ("normal-late-wf", 2, Normal, 0.0),
            ("normal", 1, Normal, 0.0),
            ("high", 3, High, 0.0),
            ("normal-heavy", 3, Normal, 5.0),
        ],
        "high normal-heavy normal normal-late-wf low",
    );
}

#[test]
fn policy_names_parse() {
    for kind in PolicyKind::ALL {
        assert_eq!(kind.as_str().parse::<PolicyKind>(), Ok(kind));
    }
    assert_eq!(
        "sjf-ish".parse::<PolicyKind>().unwrap_err(),
        "unknown policy `sjf-ish` (known: fcfs, priority)"
    );
}
