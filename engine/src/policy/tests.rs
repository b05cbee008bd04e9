//! Policy ordering tests: ready tasks in, the dispatch order out.

use std::time::Duration;

use taskfleet_common::{Millis, PriorityClass};

use super::*;

/// `(name, workflow_seq, class, weight, estimate_ms)`; ready order is list order, one
/// millisecond apart; each workflow's index is its `workflow_seq`.
type Fixture<'a> = &'a [(&'a str, u64, PriorityClass, f64, u64)];

fn ready(fixture: Fixture<'_>, idx: usize) -> ReadyTask {
    let (_, workflow_seq, class, weight, estimate_ms) = fixture[idx];
    ReadyTask {
        task: TaskRef::new(workflow_seq as u32, idx as u32),
        workflow_seq,
        ready_seq: idx as u64,
        ready_at: Millis(idx as u64),
        class,
        weight,
        estimate_ms,
        slots: 1,
        rank: 0.0,
        criticality: 0.0,
    }
}

#[track_caller]
fn check(kind: PolicyKind, fixture: Fixture<'_>, expected: &str) {
    check_with(kind, &PolicyConfig::default(), fixture, Millis(1_000), expected);
}

#[track_caller]
fn check_with(kind: PolicyKind, config: &PolicyConfig, fixture: Fixture<'_>, now: Millis, expected: &str) {
    let mut policy = kind.build(config);
    for idx in 0..fixture.len() {
        policy.push(ready(fixture, idx));
    }
    assert_eq!(policy.len(), fixture.len());
    let mut order = Vec::new();
    while let Some(task) = policy.pop(now) {
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
            ("b1", 2, High, 0.0, 5),
            ("a1", 1, Low, 0.0, 5),
            ("b2", 2, Normal, 9.0, 5),
            ("a2", 1, High, 0.0, 5),
        ],
        "a1 a2 b1 b2",
    );
}

#[test]
fn priority_orders_by_class_then_weight_then_fcfs() {
    check(
        PolicyKind::Priority,
        &[
            ("low", 1, Low, 100.0, 5),
            ("normal-late-wf", 2, Normal, 0.0, 5),
            ("normal", 1, Normal, 0.0, 5),
            ("high", 3, High, 0.0, 5),
            ("normal-heavy", 3, Normal, 5.0, 5),
        ],
        "high normal-heavy normal normal-late-wf low",
    );
}

#[test]
fn priority_ages_waiting_tasks_up_a_class_per_period() {
    let config = PolicyConfig {
        aging: Duration::from_millis(100),
        ..PolicyConfig::default()
    };
    let fixture: Fixture<'_> = &[
        ("old-low", 1, Low, 0.0, 5),
        ("high-1", 2, High, 0.0, 5),
        ("high-2", 2, High, 0.0, 5),
    ];
    // At 150 ms the low task (ready at 0) has waited one period: it is normal now, still last.
    check_with(
        PolicyKind::Priority,
        &config,
        fixture,
        Millis(150),
        "high-1 high-2 old-low",
    );
    // At 250 ms it has waited two periods: it is high, and older than the high tasks.
    check_with(
        PolicyKind::Priority,
        &config,
        fixture,
        Millis(250),
        "old-low high-1 high-2",
    );
}

#[test]
fn sjf_takes_the_shortest_estimate_first() {
    check(
        PolicyKind::Sjf,
        &[
            ("long", 1, Normal, 0.0, 9_000),
            ("short", 2, Low, 0.0, 10),
            ("medium", 1, High, 0.0, 500),
            ("short-2", 1, Normal, 0.0, 10),
        ],
        "short-2 short medium long",
    );
}

#[test]
fn srpt_serves_the_workflow_with_least_work_left_and_follows_progress() {
    let mut policy = PolicyKind::Srpt.build(&PolicyConfig::default());
    policy.on_workflow_added(1, 1, 10_000);
    policy.on_workflow_added(2, 2, 3_000);
    let fixture: Fixture<'_> = &[
        ("big-1", 1, Normal, 0.0, 5_000),
        ("small-1", 2, Normal, 0.0, 1_000),
        ("big-2", 1, Normal, 0.0, 5_000),
        ("small-2", 2, Normal, 0.0, 2_000),
    ];
    for idx in 0..fixture.len() {
        policy.push(ready(fixture, idx));
    }
    let name = |task: Option<TaskRef>| fixture[task.unwrap().task_idx as usize].0;
    assert_eq!(name(policy.pop(Millis(0))), "small-1");
    // The big workflow finishes most of its work elsewhere: 1 s left, less than small's 3 s.
    policy.on_task_done(TaskRef::new(1, 99), 9_000);
    assert_eq!(name(policy.pop(Millis(0))), "big-1");
    assert_eq!(name(policy.pop(Millis(0))), "big-2");
    assert_eq!(name(policy.pop(Millis(0))), "small-2");
    assert!(policy.pop(Millis(0)).is_none());
}

#[test]
fn rr_takes_turns_between_workflows_by_quantum() {
    let config = PolicyConfig {
        quantum: Duration::from_millis(1_000),
        ..PolicyConfig::default()
    };
    // Workflow 1 (huge) has six 500 ms tasks ready first; workflow 2 (small) two.
    check_with(
        PolicyKind::Rr,
        &config,
        &[
            ("h1", 1, Normal, 0.0, 500),
            ("h2", 1, Normal, 0.0, 500),
            ("h3", 1, Normal, 0.0, 500),
            ("h4", 1, Normal, 0.0, 500),
            ("h5", 1, Normal, 0.0, 500),
            ("h6", 1, Normal, 0.0, 500),
            ("s1", 2, Normal, 0.0, 500),
            ("s2", 2, Normal, 0.0, 500),
        ],
        Millis(0),
        "h1 h2 s1 s2 h3 h4 h5 h6",
    );
}

#[test]
fn rr_lets_a_late_workflow_start_level_with_the_least_served() {
    let config = PolicyConfig {
        quantum: Duration::from_millis(1_000),
        ..PolicyConfig::default()
    };
    let mut policy = PolicyKind::Rr.build(&config);
    let early: Fixture<'_> = &[
        ("e1", 1, Normal, 0.0, 1_000),
        ("e2", 1, Normal, 0.0, 1_000),
        ("e3", 1, Normal, 0.0, 1_000),
    ];
    for idx in 0..early.len() {
        policy.push(ready(early, idx));
    }
    assert!(policy.pop(Millis(0)).is_some());
    assert!(policy.pop(Millis(0)).is_some());
    // A workflow arriving now starts at the early one's usage, so they alternate from here.
    policy.push(ReadyTask {
        task: TaskRef::new(2, 0),
        workflow_seq: 2,
        ..ready(early, 0)
    });
    policy.push(ReadyTask {
        task: TaskRef::new(2, 1),
        workflow_seq: 2,
        ready_seq: 10,
        ..ready(early, 0)
    });
    let order: Vec<u32> = std::iter::from_fn(|| policy.pop(Millis(0)))
        .map(|task| task.workflow_idx)
        .collect();
    assert_eq!(order, [1, 2, 2]);
}

#[test]
fn policy_names_parse() {
    for kind in PolicyKind::ALL {
        assert_eq!(kind.as_str().parse::<PolicyKind>(), Ok(kind));
    }
    assert_eq!(
        "sjf-ish".parse::<PolicyKind>().unwrap_err(),
        "unknown policy `sjf-ish` (known: fcfs, priority, sjf, srpt, rr, mct, mct-bounded, heft, cpop, min-min, max-min, sufferage)"
    );
}

#[test]
fn priority_breaks_ties_of_class_and_weight_by_criticality() {
    let fixture: Fixture<'_> = &[
        ("a", 0, PriorityClass::Normal, 0.0, 100),
        ("b", 0, PriorityClass::Normal, 0.0, 100),
        ("c", 0, PriorityClass::Normal, 1.0, 100),
    ];
    let mut policy = PolicyKind::Priority.build(&PolicyConfig::default());
    for (idx, criticality) in [0.1, 0.9, 0.0].into_iter().enumerate() {
        policy.push(ReadyTask {
            criticality,
            ..ready(fixture, idx)
        });
    }
    let order: Vec<u32> = std::iter::from_fn(|| policy.pop(Millis(0)))
        .map(|task| task.task_idx)
        .collect();
    // Weight first (c), then the more critical of a and b.
    assert_eq!(order, [2, 1, 0]);
}
