//! Engine tests: workflows driven through dispatch and results with a controlled clock.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::Duration;
use taskfleet_common::state::{AttemptOutcome, TaskState};
use taskfleet_common::wire::{AttemptStarted, TaskResult, WIRE_VERSION};
use taskfleet_common::workflow::{parse_workflow, parse_workflow_value, ValidateOptions};
use taskfleet_common::{Millis, WorkflowSpec};

use crate::policy::PolicyKind;

use super::*;

fn spec(yaml: &str) -> Arc<WorkflowSpec> {
    Arc::new(parse_workflow(yaml, &ValidateOptions::default()).unwrap_or_else(|invalid| panic!("{invalid}")))
}

fn engine(policy: PolicyKind, capacity: usize, margin: usize) -> Engine {
    let mut engine = Engine::new(EngineConfig {
        policy,
        prefetch_margin: margin,
        jitter_seed: 7,
        ..EngineConfig::default()
    });
    engine.set_capacity("default", capacity);
    if engine.places_tasks() {
        // Eight equal workers share the capacity.
        let per_worker = capacity.div_ceil(8) as u32;
        let workers: Vec<WorkerModel> = (1..=8)
            .map(|w| WorkerModel::new(&format!("w{w}"), &["default"], per_worker, 1.0))
            .collect();
        engine.set_workers(&workers, Millis(0));
    }
    engine
}

fn result(dispatch: &Dispatch, outcome: AttemptOutcome, output: Option<&str>) -> TaskResult {
    let message = &dispatch.message;
    TaskResult {
        outcome,
        output: output.map(|text| RawValue::from_string(text.to_string()).unwrap()),
        ..TaskResult::succeeded(
            &message.workflow_id,
            &message.task,
            message.task_idx,
            message.attempt,
            "w1",
            Millis(0),
            Millis(0),
        )
    }
}

fn names(dispatches: &[Dispatch]) -> String {
    dispatches
        .iter()
        .map(|dispatch| dispatch.message.task.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

fn state(engine: &Engine, task: &str, spec: &WorkflowSpec) -> TaskState {
    engine.task_state("wf", spec.task_index(task).unwrap() as u32).unwrap()
}

const DIAMOND: &str = "name: d\ntasks:\n  - {id: a, handler: noop}\n  - {id: b, deps: [a], handler: noop}\n  - {id: c, deps: [a], handler: noop}\n  - {id: d, deps: [b, c], handler: noop}\n  - {id: e, handler: noop}\n";

#[test]
fn diamond_runs_in_dependency_order() {
    let spec = spec(DIAMOND);
    let mut engine = engine(PolicyKind::Fcfs, 10, 0);
    engine.add_workflow("wf".into(), spec.clone(), None, Millis(0));
    let first = engine.dispatch(Millis(1));
    assert_eq!(names(&first), "a e");
    assert!(engine.dispatch(Millis(1)).is_empty(), "nothing else is ready");
    engine
        .on_finished(
            result(&first[0], AttemptOutcome::Succeeded, Some("{\"rows\":3}")),
            Millis(2),
        )
        .unwrap();
    let second = engine.dispatch(Millis(3));
    assert_eq!(names(&second), "b c");
    assert_eq!(
        second[0].message.inputs["a"].get(),
        "{\"rows\":3}",
        "outputs flow to dependents"
    );
    for dispatch in second.iter().chain(&first[1..]) {
        engine
            .on_finished(result(dispatch, AttemptOutcome::Succeeded, None), Millis(4))
            .unwrap();
    }
    let third = engine.dispatch(Millis(5));
    assert_eq!(names(&third), "d");
    assert!(third[0].message.inputs.is_empty(), "b and c wrote no output");
    assert_eq!(engine.workflow_state("wf"), Some(WorkflowState::Running));
    engine
        .on_finished(result(&third[0], AttemptOutcome::Succeeded, None), Millis(6))
        .unwrap();
    assert_eq!(engine.workflow_state("wf"), Some(WorkflowState::Succeeded));
    let finished = engine
        .take_updates()
        .into_iter()
        .filter(|update| matches!(update, StoreUpdate::WorkflowFinished { .. }))
        .count();
    assert_eq!(finished, 1);
}

#[test]
fn failure_propagates_to_dependents_only() {
    let spec = spec(DIAMOND);
    let mut engine = engine(PolicyKind::Fcfs, 10, 0);
    engine.add_workflow("wf".into(), spec.clone(), None, Millis(0));
    let first = engine.dispatch(Millis(0));
    engine
        .on_finished(result(&first[0], AttemptOutcome::Succeeded, None), Millis(1))
        .unwrap();
    let second = engine.dispatch(Millis(1));
    engine
        .on_finished(
            result(&second[0], AttemptOutcome::Failed { retryable: true }, None),
            Millis(2),
        )
        .unwrap();
    assert_eq!(state(&engine, "b", &spec), TaskState::Failed);
    assert_eq!(state(&engine, "d", &spec), TaskState::UpstreamFailed);
    assert_eq!(
        state(&engine, "c", &spec),
        TaskState::Dispatched,
        "independent branch goes on"
    );
    assert_eq!(engine.workflow_state("wf"), Some(WorkflowState::Running));
    engine
        .on_finished(result(&second[1], AttemptOutcome::Succeeded, None), Millis(3))
        .unwrap();
    engine
        .on_finished(result(&first[1], AttemptOutcome::Succeeded, None), Millis(3))
        .unwrap();
    assert!(engine.dispatch(Millis(4)).is_empty(), "d never runs");
    assert_eq!(engine.workflow_state("wf"), Some(WorkflowState::Failed));
}

#[test]
fn retries_wait_for_their_backoff() {
    let spec =
        spec("name: r\ntasks:\n  - {id: flaky, handler: fail, retries: {max: 2, backoff: 1s, max_backoff: 10s}}\n");
    let mut engine = engine(PolicyKind::Fcfs, 1, 0);
    engine.add_workflow("wf".into(), spec.clone(), None, Millis(0));
    let mut now = Millis(1000);
    let mut delays = Vec::new();
    for attempt in 1..=3 {
        let dispatched = engine.dispatch(now);
        assert_eq!(dispatched.len(), 1, "attempt {attempt} dispatched");
        assert_eq!(dispatched[0].message.attempt, attempt);
        engine
            .on_finished(
                result(&dispatched[0], AttemptOutcome::Failed { retryable: true }, None),
                now,
            )
            .unwrap();
        if attempt == 3 {
            break;
        }
        assert_eq!(state(&engine, "flaky", &spec), TaskState::Retrying);
        let due = engine.next_timer().expect("a retry is scheduled");
        delays.push(due.0 - now.0);
        engine.on_timers(Millis(due.0 - 1));
        assert!(engine.dispatch(Millis(due.0 - 1)).is_empty(), "not before the backoff");
        engine.on_timers(due);
        now = due;
    }
    assert!((500..=1000).contains(&delays[0]), "first backoff {}ms", delays[0]);
    assert!((1000..=2000).contains(&delays[1]), "second backoff {}ms", delays[1]);
    assert_eq!(state(&engine, "flaky", &spec), TaskState::Failed);
    assert_eq!(engine.workflow_state("wf"), Some(WorkflowState::Failed));
}

#[test]
fn timeouts_retry_then_end_timed_out_and_permanent_failures_do_not_retry() {
    let spec = spec(
        "name: t\ntasks:\n  - {id: slow, handler: noop, retries: 1}\n  - {id: broken, handler: noop, retries: 5}\n",
    );
    let mut engine = engine(PolicyKind::Fcfs, 2, 0);
    engine.add_workflow("wf".into(), spec.clone(), None, Millis(0));
    let first = engine.dispatch(Millis(0));
    engine
        .on_finished(result(&first[0], AttemptOutcome::TimedOut, None), Millis(1))
        .unwrap();
    engine
        .on_finished(
            result(&first[1], AttemptOutcome::Failed { retryable: false }, None),
            Millis(1),
        )
        .unwrap();
    assert_eq!(state(&engine, "broken", &spec), TaskState::Failed);
    engine.on_timers(Millis(60_000));
    let second = engine.dispatch(Millis(60_000));
    assert_eq!(names(&second), "slow");
    engine
        .on_finished(result(&second[0], AttemptOutcome::TimedOut, None), Millis(60_001))
        .unwrap();
    assert_eq!(state(&engine, "slow", &spec), TaskState::TimedOut);
}

#[test]
fn late_results_of_old_attempts_are_ignored() {
    let spec = spec("name: f\ntasks:\n  - {id: a, handler: noop}\n");
    let mut engine = engine(PolicyKind::Fcfs, 1, 0);
    engine.add_workflow("wf".into(), spec.clone(), None, Millis(0));
    let first = engine.dispatch(Millis(0));
    // The scheduler restarts: the attempt that was out is given up and dispatched again.
    let records: Vec<TaskRecord> = vec![TaskRecord {
        task_idx: 0,
        state: TaskState::Dispatched,
        attempt: 1,
        n_failures: 0,
        retry_at: None,
        output: None,
    }];
    let mut restarted = engine_restarted(&spec, records);
    let second = restarted.dispatch(Millis(10));
    assert_eq!(second[0].message.attempt, 2);
    let stale = restarted.on_finished(result(&first[0], AttemptOutcome::Succeeded, None), Millis(11));
    assert_eq!(
        stale,
        Err(Ignored::StaleAttempt {
            got: 1,
            current: 2,
            state: TaskState::Dispatched
        })
    );
    restarted
        .on_finished(result(&second[0], AttemptOutcome::Succeeded, None), Millis(12))
        .unwrap();
    let again = restarted.on_finished(result(&second[0], AttemptOutcome::Succeeded, None), Millis(13));
    assert!(again.is_err(), "a duplicate result is recorded once");
    assert_eq!(restarted.workflow_state("wf"), Some(WorkflowState::Succeeded));
    let unknown = restarted.on_finished(
        TaskResult {
            workflow_id: "nope".into(),
            ..result(&second[0], AttemptOutcome::Succeeded, None)
        },
        Millis(14),
    );
    assert_eq!(unknown, Err(Ignored::UnknownWorkflow("nope".into())));
}

fn engine_restarted(spec: &Arc<WorkflowSpec>, records: Vec<TaskRecord>) -> Engine {
    let mut engine = engine(PolicyKind::Fcfs, 10, 0);
    engine.add_workflow("wf".into(), spec.clone(), Some(records), Millis(10));
    engine
}

#[test]
fn resume_keeps_finished_tasks_and_their_outputs() {
    let spec = spec(DIAMOND);
    let record = |task_idx, state, attempt, output: Option<&str>| TaskRecord {
        task_idx,
        state,
        attempt,
        n_failures: 0,
        retry_at: None,
        output: output.map(str::to_string),
    };
    let records = vec![
        record(0, TaskState::Succeeded, 1, Some("[1,2]")),
        record(1, TaskState::Running, 1, None),
        record(2, TaskState::Succeeded, 1, None),
        record(3, TaskState::Pending, 0, None),
        record(4, TaskState::Ready, 0, None),
    ];
    let mut engine = engine_restarted(&spec, records);
    let dispatched = engine.dispatch(Millis(20));
    assert_eq!(names(&dispatched), "b e");
    assert_eq!(dispatched[0].message.attempt, 2);
    assert_eq!(dispatched[0].message.inputs["a"].get(), "[1,2]");
    for dispatch in &dispatched {
        engine
            .on_finished(result(dispatch, AttemptOutcome::Succeeded, None), Millis(21))
            .unwrap();
    }
    assert_eq!(names(&engine.dispatch(Millis(22))), "d");
}

#[test]
fn admission_control_releases_only_what_the_fleet_can_take() {
    let tasks: String = (0..10)
        .map(|idx| format!("  - {{id: t{idx}, handler: noop}}\n"))
        .collect();
    let spec = spec(&format!("name: a\ntasks:\n{tasks}"));
    let mut engine = engine(PolicyKind::Fcfs, 2, 1);
    engine.add_workflow("wf".into(), spec, None, Millis(0));
    let first = engine.dispatch(Millis(0));
    assert_eq!(names(&first), "t0 t1 t2");
    assert!(engine.dispatch(Millis(0)).is_empty());
    engine
        .on_finished(result(&first[0], AttemptOutcome::Succeeded, None), Millis(1))
        .unwrap();
    assert_eq!(names(&engine.dispatch(Millis(1))), "t3");
    assert_eq!(engine.in_flight(), 3);
}

#[test]
fn priority_policy_sends_a_late_high_task_first() {
    let low: String = (0..5)
        .map(|idx| format!("  - {{id: low{idx}, handler: noop, priority: low}}\n"))
        .collect();
    let spec_low = spec(&format!("name: low\ntasks:\n{low}"));
    let spec_high = spec("name: high\ntasks:\n  - {id: urgent, handler: noop, priority: high}\n");
    let mut engine = engine(PolicyKind::Priority, 1, 0);
    engine.add_workflow("low".into(), spec_low, None, Millis(0));
    let first = engine.dispatch(Millis(0));
    assert_eq!(names(&first), "low0");
    engine.add_workflow("high".into(), spec_high, None, Millis(1));
    engine
        .on_finished(result(&first[0], AttemptOutcome::Succeeded, None), Millis(2))
        .unwrap();
    assert_eq!(names(&engine.dispatch(Millis(2))), "urgent");
}

#[test]
fn loads_count_ready_tasks_and_attempts_out_per_pool_and_class() {
    let spec = spec(
        "name: c\ntasks:\n  - {id: h, handler: noop, priority: high}\n  - {id: n1, handler: noop}\n  \
         - {id: n2, handler: noop}\n  - {id: after, deps: [h], handler: noop, priority: low}\n",
    );
    let mut engine = engine(PolicyKind::Priority, 1, 0);
    engine.add_workflow("wf".into(), spec, None, Millis(0));
    let loads = |engine: &Engine| -> Vec<(String, &'static str, usize, usize)> {
        (engine.class_loads().iter())
            .map(|load| (load.pool.to_string(), load.class.as_str(), load.ready, load.in_flight))
            .collect()
    };
    let pool = || "default".to_string();
    assert_eq!(loads(&engine), [(pool(), "high", 1, 0), (pool(), "normal", 2, 0)]);
    let first = engine.dispatch(Millis(0));
    assert_eq!(names(&first), "h");
    assert_eq!(loads(&engine), [(pool(), "high", 0, 1), (pool(), "normal", 2, 0)]);
    engine
        .on_finished(result(&first[0], AttemptOutcome::Succeeded, None), Millis(1))
        .unwrap();
    assert_eq!(loads(&engine), [(pool(), "normal", 2, 0), (pool(), "low", 1, 0)]);
}

#[test]
fn cancel_ends_waiting_tasks_and_reports_running_ones() {
    let spec = spec(DIAMOND);
    let mut engine = engine(PolicyKind::Fcfs, 1, 0);
    engine.add_workflow("wf".into(), spec.clone(), None, Millis(0));
    let first = engine.dispatch(Millis(0));
    let in_flight = engine.cancel_workflow("wf", Millis(1)).unwrap();
    assert_eq!(in_flight.len(), 1);
    assert_eq!(state(&engine, "e", &spec), TaskState::Cancelled);
    assert!(engine.dispatch(Millis(1)).is_empty());
    engine
        .on_finished(result(&first[0], AttemptOutcome::Cancelled, None), Millis(2))
        .unwrap();
    assert_eq!(engine.workflow_state("wf"), Some(WorkflowState::Cancelled));
}

#[test]
fn an_attempt_of_a_cancelled_workflow_that_starts_anyway_is_to_be_stopped() {
    let spec = spec(DIAMOND);
    let mut engine = engine(PolicyKind::Fcfs, 1, 0);
    engine.add_workflow("wf".into(), spec.clone(), None, Millis(0));
    let first = engine.dispatch(Millis(0));
    engine.cancel_workflow("wf", Millis(1)).unwrap();
    // Its worker had not heard of the cancel when it took the task.
    assert_eq!(engine.on_started(&started(&first[0], "w1")), Err(Ignored::Cancelled));
    let report = engine.on_running("w1", "wf", first[0].message.task_idx, first[0].message.attempt);
    assert_eq!(report, Ok(Report::Superseded), "every heartbeat repeats the cancel");
    engine
        .on_finished(result(&first[0], AttemptOutcome::Cancelled, None), Millis(2))
        .unwrap();
    assert_eq!(engine.workflow_state("wf"), Some(WorkflowState::Cancelled));
}

/// A random layered DAG of `n_tasks` tasks with up to three parents each, as JSON.
fn random_dag(n_tasks: usize, rng: &mut StdRng) -> serde_json::Value {
    let tasks: Vec<serde_json::Value> = (0..n_tasks)
        .map(|idx| {
            let n_deps = if idx == 0 { 0 } else { rng.gen_range(0..=3.min(idx)) };
            let deps: Vec<String> = (0..n_deps)
                .map(|_| format!("t{}", rng.gen_range(idx.saturating_sub(1000)..idx)))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            serde_json::json!({"id": format!("t{idx}"), "deps": deps, "handler": "noop"})
        })
        .collect();
    serde_json::json!({"name": "random", "tasks": tasks})
}

#[test]
fn resolves_a_random_100k_task_dag_in_dependency_order() {
    resolve_random_dag(PolicyKind::Fcfs, 100_000);
}

#[test]
fn every_policy_resolves_a_random_dag() {
    for policy in PolicyKind::ALL {
        resolve_random_dag(policy, 5_000);
    }
}

fn resolve_random_dag(policy: PolicyKind, n_tasks: usize) {
    let mut rng = StdRng::seed_from_u64(42);
    let spec = Arc::new(parse_workflow_value(random_dag(n_tasks, &mut rng), &ValidateOptions::default()).unwrap());
    let mut engine = engine(policy, 64, 0);
    engine.add_workflow("wf".into(), spec.clone(), None, Millis(0));
    let mut finished = vec![false; n_tasks];
    let mut n_done = 0;
    let mut in_flight = Vec::new();
    while n_done < n_tasks {
        for dispatch in engine.dispatch(Millis(n_done as u64)) {
            let idx = dispatch.task.task_idx;
            assert!(!finished[idx as usize], "task {idx} dispatched twice");
            for &parent in spec.dag.parents(idx) {
                assert!(
                    finished[parent as usize],
                    "task {idx} dispatched before its parent {parent}"
                );
            }
            in_flight.push(dispatch);
        }
        assert!(!in_flight.is_empty(), "stalled with {n_done} of {n_tasks} done");
        in_flight.shuffle(&mut rng);
        let n_finish = rng.gen_range(1..=in_flight.len());
        for dispatch in in_flight.drain(..n_finish) {
            finished[dispatch.task.task_idx as usize] = true;
            n_done += 1;
            engine
                .on_finished(
                    result(&dispatch, AttemptOutcome::Succeeded, None),
                    Millis(n_done as u64),
                )
                .unwrap();
        }
        engine.take_updates();
    }
    assert_eq!(engine.workflow_state("wf"), Some(WorkflowState::Succeeded));
    assert_eq!(
        engine.task_counts("wf").unwrap()[TaskState::Succeeded as usize],
        n_tasks
    );
}

#[test]
fn a_lost_worker_gives_up_its_attempts_and_their_late_results_are_ignored() {
    let spec = spec("name: l\ntasks:\n  - {id: a, handler: noop}\n  - {id: b, handler: noop}\n  - {id: c, deps: [a], handler: noop}\n");
    let mut engine = engine(PolicyKind::Fcfs, 2, 0);
    engine.add_workflow("wf".into(), spec.clone(), None, Millis(0));
    let first = engine.dispatch(Millis(0));
    let started = |dispatch: &Dispatch, worker: &str| AttemptStarted {
        v: WIRE_VERSION,
        workflow_id: "wf".into(),
        task_idx: dispatch.message.task_idx,
        attempt: dispatch.message.attempt,
        worker: worker.into(),
        at: Millis(1),
    };
    engine.on_started(&started(&first[0], "w1")).unwrap();
    engine.on_started(&started(&first[1], "w2")).unwrap();
    assert_eq!(engine.on_worker_lost("w1", Millis(5)), 1);
    assert_eq!(engine.on_worker_lost("w1", Millis(5)), 0, "nothing left on w1");
    assert_eq!(state(&engine, "a", &spec), TaskState::Ready);
    assert_eq!(
        state(&engine, "b", &spec),
        TaskState::Running,
        "w2's attempt keeps its lease"
    );
    let again = engine.dispatch(Millis(6));
    assert_eq!(names(&again), "a");
    assert_eq!(again[0].message.attempt, 2);
    let late = engine.on_finished(result(&first[0], AttemptOutcome::Succeeded, None), Millis(7));
    assert!(matches!(late, Err(Ignored::StaleAttempt { got: 1, current: 2, .. })));
    engine
        .on_finished(result(&again[0], AttemptOutcome::Succeeded, None), Millis(8))
        .unwrap();
    assert_eq!(names(&engine.dispatch(Millis(9))), "c");
}

fn started(dispatch: &Dispatch, worker: &str) -> AttemptStarted {
    AttemptStarted {
        v: WIRE_VERSION,
        workflow_id: dispatch.message.workflow_id.clone(),
        task_idx: dispatch.message.task_idx,
        attempt: dispatch.message.attempt,
        worker: worker.into(),
        at: Millis(1),
    }
}

#[test]
fn an_attempt_delivered_again_to_another_worker_takes_its_lease_there() {
    // w1 dies running the attempt; the broker hands its message to w2, which starts it.
    let spec = spec("name: m\ntasks:\n  - {id: a, handler: noop}\n");
    let mut engine = engine(PolicyKind::Fcfs, 2, 0);
    engine.add_workflow("wf".into(), spec.clone(), None, Millis(0));
    let first = engine.dispatch(Millis(0));
    engine.on_started(&started(&first[0], "w1")).unwrap();
    engine.on_started(&started(&first[0], "w2")).unwrap();
    assert_eq!(engine.on_worker_lost("w1", Millis(5)), 0, "the attempt moved to w2");
    assert_eq!(state(&engine, "a", &spec), TaskState::Running);
    assert!(engine.dispatch(Millis(6)).is_empty(), "no third copy is dispatched");
    assert_eq!(engine.on_running("w2", "wf", 0, 1), Ok(Report::Current));
    engine
        .on_finished(result(&first[0], AttemptOutcome::Succeeded, None), Millis(8))
        .unwrap();
    assert_eq!(engine.workflow_state("wf"), Some(WorkflowState::Succeeded));
}

#[test]
fn a_lost_attempt_still_running_is_taken_back_until_it_is_dispatched_again() {
    let spec = spec("name: m\ntasks:\n  - {id: a, handler: noop}\n  - {id: b, handler: noop}\n");
    let mut engine = engine(PolicyKind::Fcfs, 2, 0);
    engine.add_workflow("wf".into(), spec.clone(), None, Millis(0));
    let first = engine.dispatch(Millis(0));
    engine.on_started(&started(&first[0], "w1")).unwrap();
    engine.on_started(&started(&first[1], "w1")).unwrap();
    assert_eq!(engine.on_worker_lost("w1", Millis(5)), 2);
    // A heartbeat of w2 (which got a's message again) arrives before a is dispatched again.
    assert_eq!(engine.on_running("w2", "wf", 0, 1), Ok(Report::Adopted));
    assert_eq!(state(&engine, "a", &spec), TaskState::Running);
    let again = engine.dispatch(Millis(6));
    assert_eq!(names(&again), "b", "only the task nobody runs goes out again");
    assert_eq!(again[0].message.attempt, 2);
    // Now attempt 1 of b is superseded: a worker reporting it is told to stop, and its start
    // is not recorded.
    assert_eq!(engine.on_running("w3", "wf", 1, 1), Ok(Report::Superseded));
    assert!(matches!(
        engine.on_started(&started(&first[1], "w3")),
        Err(Ignored::StaleAttempt { got: 1, current: 2, .. })
    ));
    assert_eq!(engine.on_worker_lost("w3", Millis(7)), 0, "w3 holds nothing");
    // So is any attempt of a task that ended.
    engine
        .on_finished(result(&again[0], AttemptOutcome::Succeeded, None), Millis(8))
        .unwrap();
    assert_eq!(engine.on_running("w3", "wf", 1, 2), Ok(Report::Superseded));
    assert_eq!(
        engine.on_running("w3", "nope", 0, 1),
        Err(Ignored::UnknownWorkflow("nope".into()))
    );
}

#[test]
fn capacity_can_be_replaced_as_the_fleet_changes() {
    let tasks: String = (0..9)
        .map(|idx| format!("  - {{id: t{idx}, handler: noop}}\n"))
        .collect();
    let spec = spec(&format!("name: c\ntasks:\n{tasks}"));
    let mut engine = engine(PolicyKind::Fcfs, 0, 3);
    engine.add_workflow("wf".into(), spec, None, Millis(0));
    assert!(
        engine.dispatch(Millis(0)).is_empty(),
        "no workers, nothing dispatched, not even the margin"
    );
    engine.set_capacities(&std::collections::HashMap::from([("default".to_string(), 2)]));
    assert_eq!(
        engine.dispatch(Millis(1)).len(),
        4,
        "two slots, and a margin of three capped at the two slots"
    );
    engine.set_capacities(&std::collections::HashMap::from([("default".to_string(), 4)]));
    assert_eq!(
        engine.dispatch(Millis(2)).len(),
        3,
        "four slots and the whole margin of three: 7 in all"
    );
    engine.set_capacities(&std::collections::HashMap::new());
    assert!(engine.dispatch(Millis(3)).is_empty(), "the fleet left");
}

#[test]
fn finished_workflows_can_be_forgotten_and_new_ones_added() {
    let spec = spec("name: f\ntasks:\n  - {id: a, handler: noop}\n");
    let mut engine = engine(PolicyKind::Fcfs, 1, 0);
    engine.add_workflow("first".into(), spec.clone(), None, Millis(0));
    let first = engine.dispatch(Millis(0));
    engine
        .on_finished(result(&first[0], AttemptOutcome::Succeeded, None), Millis(1))
        .unwrap();
    engine.remove_workflow("first");
    assert_eq!(engine.workflow_state("first"), None);
    let late = engine.on_finished(result(&first[0], AttemptOutcome::Succeeded, None), Millis(2));
    assert_eq!(late, Err(Ignored::UnknownWorkflow("first".into())));
    engine.add_workflow("second".into(), spec, None, Millis(3));
    let second = engine.dispatch(Millis(3));
    assert_eq!(second[0].message.workflow_id, "second");
    engine
        .on_finished(result(&second[0], AttemptOutcome::Succeeded, None), Millis(4))
        .unwrap();
    assert_eq!(engine.workflow_state("second"), Some(WorkflowState::Succeeded));
}

#[test]
fn predictive_mode_orders_by_learned_runtimes() {
    let spec = spec(
        "name: p\ntasks:\n  - {id: declared-short, handler: sleep, args: {duration: 1s}, estimate: 1s}\n  - {id: declared-long, handler: noop, estimate: 10s}\n",
    );
    let mut learned = crate::predict::Predictor::new(Duration::from_secs(1));
    for _ in 0..50 {
        learned.observe("default|handler|sleep", Duration::from_secs(100));
        learned.observe("default|handler|noop", Duration::from_millis(5));
    }
    for (predictive, expected) in [(false, "declared-short"), (true, "declared-long")] {
        let mut engine = Engine::new(EngineConfig {
            policy: PolicyKind::Sjf,
            prefetch_margin: 0,
            predictive,
            ..EngineConfig::default()
        });
        engine.set_capacity("default", 1);
        engine.set_predictor(learned.clone());
        engine.add_workflow("wf".into(), spec.clone(), None, Millis(0));
        assert_eq!(names(&engine.dispatch(Millis(0))), expected, "predictive: {predictive}");
    }
}

#[test]
fn finished_attempts_teach_the_predictor_and_are_persisted() {
    let spec = spec("name: l\ntasks:\n  - {id: a, handler: noop}\n");
    let mut engine = engine(PolicyKind::Fcfs, 1, 0);
    engine.add_workflow("wf".into(), spec.clone(), None, Millis(0));
    let dispatched = engine.dispatch(Millis(0));
    let mut done = result(&dispatched[0], AttemptOutcome::Succeeded, None);
    done.started_at = Millis(1_000);
    done.finished_at = Millis(3_000);
    engine.take_updates();
    engine.on_finished(done, Millis(3_000)).unwrap();
    let stats: Vec<_> = engine
        .take_updates()
        .into_iter()
        .filter_map(|update| match update {
            StoreUpdate::RuntimeStats { signature, stats } => Some((signature, stats.n)),
            _ => None,
        })
        .collect();
    assert_eq!(stats, vec![("default|handler|noop".to_string(), 1)]);
    let predicted = engine.predictor().predict(&spec.tasks[0]);
    assert_eq!(predicted.p50, Duration::from_secs(2));
}

fn restarted_with_grace(spec: &Arc<WorkflowSpec>, records: Vec<TaskRecord>, grace: Duration) -> Engine {
    let mut engine = Engine::new(EngineConfig {
        policy: PolicyKind::Fcfs,
        prefetch_margin: 0,
        adoption_grace: grace,
        ..EngineConfig::default()
    });
    engine.set_capacity("default", 10);
    engine.add_workflow("wf".into(), spec.clone(), Some(records), Millis(1_000));
    engine
}

fn running_record(task_idx: u32, attempt: u32) -> TaskRecord {
    TaskRecord {
        task_idx,
        state: TaskState::Running,
        attempt,
        n_failures: 0,
        retry_at: None,
        output: None,
    }
}

#[test]
fn after_a_restart_an_attempt_still_running_is_adopted_not_run_again() {
    let spec = spec("name: a\ntasks:\n  - {id: long, handler: noop}\n  - {id: next, deps: [long], handler: noop}\n");
    let records = vec![
        running_record(0, 1),
        TaskRecord {
            state: TaskState::Pending,
            attempt: 0,
            ..running_record(1, 0)
        },
    ];
    let mut engine = restarted_with_grace(&spec, records, Duration::from_secs(10));
    assert!(
        engine.dispatch(Millis(1_000)).is_empty(),
        "the lost attempt waits for its worker"
    );
    assert!(!engine.adopt("w1", "wf", 0, 2), "another attempt number is not adopted");
    assert!(engine.adopt("w1", "wf", 0, 1));
    assert_eq!(engine.task_state("wf", 0), Some(TaskState::Running));
    engine.on_timers(Millis(20_000));
    assert!(
        engine.dispatch(Millis(20_000)).is_empty(),
        "an adopted attempt is not dispatched again"
    );
    let mut done = TaskResult {
        workflow_id: "wf".into(),
        task: "long".into(),
        task_idx: 0,
        attempt: 1,
        ..result_stub()
    };
    done.worker = "w1".into();
    engine.on_finished(done, Millis(21_000)).unwrap();
    assert_eq!(names(&engine.dispatch(Millis(21_000))), "next");
}

#[test]
fn an_adopted_attempt_is_under_its_workers_lease() {
    let spec = spec(
        "name: a
tasks:
  - {id: long, handler: noop}
",
    );
    let mut engine = restarted_with_grace(&spec, vec![running_record(0, 1)], Duration::from_secs(10));
    assert!(engine.adopt("w1", "wf", 0, 1));
    assert_eq!(engine.on_worker_lost("w1", Millis(2_000)), 1);
    assert_eq!(engine.dispatch(Millis(2_000))[0].message.attempt, 2);
}

#[test]
fn after_a_restart_an_attempt_nobody_reports_runs_again_after_the_grace() {
    let spec = spec("name: a\ntasks:\n  - {id: lost, handler: noop}\n");
    let mut engine = restarted_with_grace(&spec, vec![running_record(0, 3)], Duration::from_secs(10));
    assert!(engine.dispatch(Millis(5_000)).is_empty());
    assert_eq!(engine.next_timer(), Some(Millis(11_000)));
    engine.on_timers(Millis(11_000));
    let again = engine.dispatch(Millis(11_000));
    assert_eq!(again[0].message.attempt, 4);
    assert!(!engine.adopt("w1", "wf", 0, 3), "too late: the task runs again");
    // A result of the old attempt arriving now is stale.
    let late = engine.on_finished(
        TaskResult {
            workflow_id: "wf".into(),
            task_idx: 0,
            attempt: 3,
            ..result_stub()
        },
        Millis(12_000),
    );
    assert!(late.is_err());
}

#[test]
fn a_result_of_an_attempt_that_survived_the_restart_counts_even_before_any_heartbeat() {
    let spec = spec("name: a\ntasks:\n  - {id: quick, handler: noop}\n");
    let mut engine = restarted_with_grace(&spec, vec![running_record(0, 2)], Duration::from_secs(10));
    engine
        .on_finished(
            TaskResult {
                workflow_id: "wf".into(),
                task_idx: 0,
                attempt: 2,
                ..result_stub()
            },
            Millis(1_500),
        )
        .unwrap();
    assert_eq!(engine.workflow_state("wf"), Some(WorkflowState::Succeeded));
}

fn result_stub() -> TaskResult {
    TaskResult::succeeded("", "", 0, 0, "w1", Millis(0), Millis(0))
}

const FAN_OUT: &str = "name: fan\ntasks:\n  - {id: a, handler: noop, estimate: 4s}\n  - {id: b, handler: noop, estimate: 4s}\n  - {id: c, handler: noop, estimate: 4s, deps: [{task: a, transfer: 10s}]}\n";

fn placing_engine(policy: PolicyKind, workers: &[WorkerModel]) -> Engine {
    let mut engine = Engine::new(EngineConfig {
        policy,
        prefetch_margin: 0,
        ..EngineConfig::default()
    });
    let slots: u32 = workers.iter().map(|worker| worker.slots).sum();
    engine.set_capacity("default", slots as usize);
    engine.set_workers(workers, Millis(0));
    engine
}

fn sent_to(dispatches: &[Dispatch]) -> Vec<(String, String)> {
    dispatches
        .iter()
        .map(|dispatch| {
            let worker = dispatch.worker.as_deref().expect("placed tasks name a worker");
            (dispatch.message.task.clone(), worker.to_string())
        })
        .collect()
}

fn finished_on(dispatch: &Dispatch, worker: &str, at: u64) -> TaskResult {
    let message = &dispatch.message;
    TaskResult::succeeded(
        &message.workflow_id,
        &message.task,
        message.task_idx,
        message.attempt,
        worker,
        Millis(0),
        Millis(at),
    )
}

#[test]
fn mct_sends_each_task_where_it_completes_first_and_keeps_children_with_their_data() {
    let workers = [
        WorkerModel::new("fast", &["default"], 1, 4.0),
        WorkerModel::new("slow", &["default"], 1, 1.0),
    ];
    let mut engine = placing_engine(PolicyKind::Mct, &workers);
    engine.add_workflow("wf".into(), spec(FAN_OUT), None, Millis(0));
    let first = engine.dispatch(Millis(0));
    // `a` takes 1 s on `fast`; `b` then finishes at 2 s there (after `a`) rather than 4 s on
    // `slow`, so both queue on `fast`.
    assert_eq!(
        sent_to(&first),
        [("a".into(), "fast".into()), ("b".into(), "fast".into())]
    );
    engine
        .on_finished(finished_on(&first[0], "fast", 1000), Millis(1000))
        .unwrap();
    // `c` needs `a`'s output: on `fast` it waits for `b` (until 2 s) and ends at 3 s; on
    // `slow` the 10 s transfer alone is longer.
    let second = engine.dispatch(Millis(1000));
    assert_eq!(sent_to(&second), [("c".into(), "fast".into())]);
}

#[test]
fn heft_sends_tasks_to_their_planned_workers_and_replans_for_a_lost_one() {
    let workers = [
        WorkerModel::new("p1", &["default"], 1, 1.0),
        WorkerModel::new("p2", &["default"], 1, 1.0),
    ];
    let mut engine = placing_engine(PolicyKind::Heft, &workers);
    engine.add_workflow("wf".into(), spec(FAN_OUT), None, Millis(0));
    let first = engine.dispatch(Millis(0));
    // Upward ranks: a 4 + 10 + 4 = 18, b 4: `a` first, each root on its own worker.
    assert_eq!(sent_to(&first), [("a".into(), "p1".into()), ("b".into(), "p2".into())]);
    // p1 misses its lease before starting `a`: `a` goes to p2, the one worker left.
    assert_eq!(engine.on_worker_lost("p1", Millis(500)), 1);
    let again = engine.dispatch(Millis(500));
    assert_eq!(sent_to(&again), [("a".into(), "p2".into())]);
    assert_eq!(again[0].message.attempt, 2);
}

#[test]
fn planned_workflows_wait_for_workers_then_are_planned() {
    let mut engine = Engine::new(EngineConfig {
        policy: PolicyKind::Cpop,
        ..EngineConfig::default()
    });
    engine.set_capacity("default", 2);
    engine.add_workflow("wf".into(), spec(FAN_OUT), None, Millis(0));
    assert!(engine.dispatch(Millis(0)).is_empty());
    engine.set_workers(&[WorkerModel::new("late", &["default"], 2, 1.0)], Millis(100));
    let dispatched = engine.dispatch(Millis(100));
    assert_eq!(
        sent_to(&dispatched),
        [("a".into(), "late".into()), ("b".into(), "late".into())]
    );
}

#[test]
fn pools_served_by_the_same_workers_share_their_slots() {
    let mut engine = engine(PolicyKind::Fcfs, 0, 0);
    // One worker with two slots serves both pools: each pool sees 2 slots, but together
    // they have 2, not 4.
    engine.set_capacities(&HashMap::from([("a".to_string(), 2), ("b".to_string(), 2)]));
    engine.set_shared_slots(&[(vec!["a".to_string(), "b".to_string()], 2)]);
    let tasks: String = (0..3)
        .flat_map(|idx| {
            [
                format!("  - {{id: a{idx}, handler: noop, pool: a}}\n"),
                format!("  - {{id: b{idx}, handler: noop, pool: b}}\n"),
            ]
        })
        .collect();
    engine.add_workflow(
        "wf".into(),
        spec(&format!("name: two-pools\ntasks:\n{tasks}")),
        None,
        Millis(0),
    );
    let first = engine.dispatch(Millis(0));
    // The two pools take turns: one task each, not both from whichever comes first.
    assert_eq!(names(&first), "a0 b0");
    engine
        .on_finished(result(&first[0], AttemptOutcome::Succeeded, None), Millis(1))
        .unwrap();
    assert_eq!(engine.dispatch(Millis(1)).len(), 1);
    // Without the shared group each pool would take its own two.
    engine.set_capacities(&HashMap::from([("a".to_string(), 2), ("b".to_string(), 2)]));
    assert_eq!(engine.dispatch(Millis(2)).len(), 2);
}

#[test]
fn in_predictive_mode_priority_starts_the_critical_chain_first() {
    let yaml = "name: chain\ntasks:\n  - {id: short-1, handler: noop, estimate: 1s}\n  - {id: short-2, handler: noop, estimate: 1s}\n  - {id: head, handler: noop, estimate: 20s}\n  - {id: tail, handler: noop, estimate: 20s, deps: [head]}\n";
    let first_out = |predictive: bool| {
        let mut engine = Engine::new(EngineConfig {
            policy: PolicyKind::Priority,
            predictive,
            prefetch_margin: 0,
            ..EngineConfig::default()
        });
        engine.set_capacity("default", 1);
        engine.add_workflow("wf".into(), spec(yaml), None, Millis(0));
        names(&engine.dispatch(Millis(0)))
    };
    // Same class and weight: arrival order, unless criticality is known.
    assert_eq!(first_out(false), "short-1");
    assert_eq!(first_out(true), "head");
}

#[test]
fn planned_tasks_wait_in_the_engine_while_their_worker_is_full_and_move_if_it_leaves() {
    let workers = [
        WorkerModel::new("fast", &["default"], 1, 10.0),
        WorkerModel::new("slow", &["default"], 1, 1.0),
    ];
    let mut engine = placing_engine(PolicyKind::Heft, &workers);
    let tasks: String = (0..5)
        .map(|idx| format!("  - {{id: t{idx}, handler: noop, estimate: 1s}}\n"))
        .collect();
    engine.add_workflow(
        "wf".into(),
        spec(&format!("name: five\ntasks:\n{tasks}")),
        None,
        Millis(0),
    );
    // The plan puts all five on `fast` (0.1 s each there, 1 s on `slow`); it is sent two.
    let first = engine.dispatch(Millis(0));
    assert_eq!(
        sent_to(&first),
        [("t0".into(), "fast".into()), ("t1".into(), "fast".into())]
    );
    assert!(
        engine.dispatch(Millis(1)).is_empty(),
        "the rest wait for room on `fast`"
    );
    engine
        .on_finished(finished_on(&first[0], "fast", 100), Millis(100))
        .unwrap();
    assert_eq!(sent_to(&engine.dispatch(Millis(100))), [("t2".into(), "fast".into())]);
    // `fast` leaves: what waited for it goes where it completes first now, at once.
    engine.set_workers(&workers[1..], Millis(150));
    let moved = engine.dispatch(Millis(150));
    assert_eq!(
        sent_to(&moved),
        [("t3".into(), "slow".into()), ("t4".into(), "slow".into())]
    );
}

#[test]
fn a_restarted_heft_scheduler_adopts_running_attempts_and_plans_the_rest() {
    let spec = spec(
        "name: r\ntasks:\n  - {id: a, handler: noop, estimate: 1s}\n  - {id: b, handler: noop, estimate: 1s}\n  - {id: c, handler: noop, estimate: 1s, deps: [a, b]}\n",
    );
    let record = |task_idx, state, attempt| TaskRecord {
        task_idx,
        state,
        attempt,
        n_failures: 0,
        retry_at: None,
        output: None,
    };
    let records = vec![
        record(0, TaskState::Succeeded, 1),
        record(1, TaskState::Running, 1),
        record(2, TaskState::Pending, 0),
    ];
    let mut engine = Engine::new(EngineConfig {
        policy: PolicyKind::Heft,
        adoption_grace: Duration::from_secs(10),
        prefetch_margin: 0,
        ..EngineConfig::default()
    });
    engine.set_capacity("default", 2);
    engine.set_workers(
        &[
            WorkerModel::new("w1", &["default"], 1, 1.0),
            WorkerModel::new("w2", &["default"], 1, 1.0),
        ],
        Millis(0),
    );
    engine.add_workflow("wf".into(), spec.clone(), Some(records), Millis(0));
    // `b` waits to be adopted rather than being sent again.
    assert!(engine.dispatch(Millis(0)).is_empty());
    assert!(engine.adopt("w2", "wf", 1, 1));
    let result = TaskResult::succeeded("wf", "b", 1, 1, "w2", Millis(0), Millis(500));
    engine.on_finished(result, Millis(500)).unwrap();
    let next = engine.dispatch(Millis(500));
    assert_eq!(names(&next), "c");
    assert!(next[0].worker.is_some());
    engine
        .on_finished(finished_on(&next[0], "w1", 1500), Millis(1500))
        .unwrap();
    assert_eq!(engine.workflow_state("wf"), Some(WorkflowState::Succeeded));
}

#[test]
fn under_heft_a_failed_task_is_retried_on_its_worker() {
    let workers = [WorkerModel::new("w", &["default"], 1, 1.0)];
    let mut engine = placing_engine(PolicyKind::Heft, &workers);
    let yaml = "name: retry\ntasks:\n  - {id: a, handler: noop, retries: {max: 1, backoff: 1s}}\n  - {id: b, handler: noop, deps: [a]}\n";
    engine.add_workflow("wf".into(), spec(yaml), None, Millis(0));
    let first = engine.dispatch(Millis(0));
    assert_eq!(sent_to(&first), [("a".into(), "w".into())]);
    let failed = TaskResult {
        outcome: AttemptOutcome::Failed { retryable: true },
        ..finished_on(&first[0], "w", 10)
    };
    engine.on_finished(failed, Millis(10)).unwrap();
    assert!(engine.dispatch(Millis(20)).is_empty(), "backing off");
    engine.on_timers(Millis(5_000));
    let again = engine.dispatch(Millis(5_000));
    assert_eq!(sent_to(&again), [("a".into(), "w".into())]);
    assert_eq!(again[0].message.attempt, 2);
    engine
        .on_finished(finished_on(&again[0], "w", 5_100), Millis(5_100))
        .unwrap();
    assert_eq!(sent_to(&engine.dispatch(Millis(5_100))), [("b".into(), "w".into())]);
}

#[test]
fn a_planned_worker_moves_on_when_the_task_it_waits_for_is_cancelled() {
    let workers = [
        WorkerModel::new("w1", &["default"], 1, 1.0),
        WorkerModel::new("w2", &["default"], 1, 1.0),
    ];
    let mut engine = placing_engine(PolicyKind::Heft, &workers);
    let first = "name: first\ntasks:\n  - {id: p, handler: noop, estimate_by_worker: {w1: 100s, w2: 10s}}\n  - {id: q, handler: noop, deps: [p], estimate_by_worker: {w1: 1s, w2: 100s}}\n";
    let second = "name: second\ntasks:\n  - {id: r, handler: noop, estimate_by_worker: {w1: 1s, w2: 100s}}\n";
    engine.add_workflow("first".into(), spec(first), None, Millis(0));
    engine.add_workflow("second".into(), spec(second), None, Millis(0));
    // w1's plan: q (after p, from 10 s), then r (from 11 s). r is ready, but q comes first.
    assert_eq!(sent_to(&engine.dispatch(Millis(0))), [("p".into(), "w2".into())]);
    assert!(
        engine.dispatch(Millis(1)).is_empty(),
        "w1 waits for q, its next planned task"
    );
    engine.cancel_workflow("first", Millis(2)).unwrap();
    assert_eq!(sent_to(&engine.dispatch(Millis(2))), [("r".into(), "w1".into())]);
}
