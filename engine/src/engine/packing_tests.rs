//! Request-based placement in the engine: tasks that ask for resources go to a worker where
//! they fit now, wait in their place when none has room, free what they hold when they end or
//! their worker is lost, and honour reservations.

use std::collections::BTreeMap;
use std::sync::Arc;

use taskfleet_common::resources::ResourceSet;
use taskfleet_common::wire::TaskResult;
use taskfleet_common::workflow::{parse_workflow, ValidateOptions};
use taskfleet_common::{Millis, WorkflowSpec};

use crate::packing::PackingKind;
use crate::policy::PolicyKind;

use super::*;

const GI: u64 = 1 << 30;

fn spec(yaml: &str) -> Arc<WorkflowSpec> {
    Arc::new(parse_workflow(yaml, &ValidateOptions::default()).unwrap_or_else(|invalid| panic!("{invalid}")))
}

fn worker(name: &str, slots: u32, speed: f64, cpu: f64, memory_gi: u64, gpu: u32) -> WorkerModel {
    WorkerModel::new(name, &["default"], slots, speed).with_capacity(ResourceSet {
        cpu,
        memory_bytes: memory_gi * GI,
        gpu,
        custom: BTreeMap::new(),
    })
}

fn engine_with(config: EngineConfig, workers: &[WorkerModel]) -> Engine {
    let mut engine = Engine::new(EngineConfig {
        prefetch_margin: 0,
        ..config
    });
    let slots: usize = workers.iter().map(|worker| worker.slots as usize).sum();
    let fleet = FleetView {
        capacity: HashMap::from([("default".to_string(), slots)]),
        shared_slots: Vec::new(),
        workers: workers.to_vec(),
    };
    engine.set_fleet(&fleet, Millis(0));
    engine
}

fn sent(dispatches: &[Dispatch]) -> Vec<(String, Option<String>)> {
    dispatches
        .iter()
        .map(|dispatch| {
            (
                dispatch.message.task.clone(),
                dispatch.worker.as_deref().map(str::to_string),
            )
        })
        .collect()
}

fn on(task: &str, worker: &str) -> (String, Option<String>) {
    (task.to_string(), Some(worker.to_string()))
}

fn finish(engine: &mut Engine, dispatch: &Dispatch, at: u64) {
    let message = &dispatch.message;
    let result = TaskResult::succeeded(
        &message.workflow_id,
        &message.task,
        message.task_idx,
        message.attempt,
        dispatch.worker.as_deref().unwrap_or("w"),
        Millis(0),
        Millis(at),
    );
    engine.on_finished(result, Millis(at)).unwrap();
}

fn tasks(tasks: &[(&str, &str)]) -> String {
    let mut yaml = "name: w\ntasks:\n".to_string();
    for (id, rest) in tasks {
        yaml.push_str(&format!("  - {{id: {id}, handler: noop{rest}}}\n"));
    }
    yaml
}

#[test]
fn tasks_that_ask_go_where_they_fit_and_wait_in_their_place_for_room() {
    let workers = [worker("big", 4, 1.0, 16.0, 64, 0), worker("small", 4, 1.0, 2.0, 4, 0)];
    let mut engine = engine_with(EngineConfig::default(), &workers);
    let yaml = tasks(&[
        ("huge1", ", resources: {memory: 40Gi}"),
        ("huge2", ", resources: {memory: 40Gi}"),
        ("little", ", resources: {memory: 1Gi}"),
        ("plain", ""),
    ]);
    engine.add_workflow("wf".into(), spec(&yaml), None, Millis(0));
    let first = engine.dispatch(Millis(0));
    // huge2 does not fit beside huge1; the tasks behind it go on (best fit puts `little`
    // beside huge1, where it leaves the least room free), and the plain one goes to the
    // pool's queue.
    assert_eq!(
        sent(&first),
        [on("huge1", "big"), on("little", "big"), ("plain".to_string(), None)]
    );
    assert_eq!(engine.worker_use("big").unwrap().1.memory_bytes, 41 * GI);
    assert!(engine.dispatch(Millis(1)).is_empty(), "huge2 waits for room");
    finish(&mut engine, &first[0], 10);
    assert_eq!(engine.worker_use("big").unwrap().1.memory_bytes, GI);
    assert_eq!(sent(&engine.dispatch(Millis(10))), [on("huge2", "big")]);
}

#[test]
fn a_waiting_task_keeps_its_turn_before_later_ones_that_ask_as_much() {
    let workers = [worker("w", 4, 1.0, 8.0, 8, 0)];
    let mut engine = engine_with(EngineConfig::default(), &workers);
    let yaml = tasks(&[
        ("first", ", resources: {memory: 8Gi}"),
        ("second", ", resources: {memory: 8Gi}"),
        ("third", ", resources: {memory: 8Gi}"),
    ]);
    engine.add_workflow("wf".into(), spec(&yaml), None, Millis(0));
    let mut done = Vec::new();
    for at in 1..=3 {
        let dispatched = engine.dispatch(Millis(at));
        assert_eq!(dispatched.len(), 1);
        done.push(dispatched[0].message.task.clone());
        // Each dispatch round passes over the waiting ones and puts them back in place.
        assert!(engine.dispatch(Millis(at)).is_empty());
        finish(&mut engine, &dispatched[0], at);
    }
    assert_eq!(done, ["first", "second", "third"]);
}

#[test]
fn a_lost_worker_frees_what_its_attempts_held_and_they_go_elsewhere() {
    let workers = [worker("a", 2, 1.0, 8.0, 16, 0), worker("b", 2, 1.0, 8.0, 16, 0)];
    let mut engine = engine_with(
        EngineConfig {
            packing: PackingKind::FirstFit,
            ..EngineConfig::default()
        },
        &workers,
    );
    engine.add_workflow(
        "wf".into(),
        spec(&tasks(&[("t", ", resources: {memory: 10Gi}")])),
        None,
        Millis(0),
    );
    assert_eq!(sent(&engine.dispatch(Millis(0))), [on("t", "a")]);
    assert_eq!(
        engine.on_worker_lost("a", Millis(5)),
        1,
        "its lease goes with the worker"
    );
    assert_eq!(engine.worker_use("a").unwrap().1.memory_bytes, 0);
    let again = engine.dispatch(Millis(5));
    assert_eq!(sent(&again), [on("t", "b")]);
    assert_eq!(again[0].message.attempt, 2);
}

#[test]
fn a_best_effort_task_holds_its_slot_where_it_is_reported_started() {
    let workers = [worker("w", 1, 1.0, 8.0, 16, 0)];
    let mut engine = engine_with(EngineConfig::default(), &workers);
    let yaml = tasks(&[("plain", ""), ("asks", ", resources: {memory: 1Gi}")]);
    engine.add_workflow("wf".into(), spec(&yaml), None, Millis(0));
    let first = engine.dispatch(Millis(0));
    assert_eq!(sent(&first), [("plain".to_string(), None)]);
    let started = taskfleet_common::wire::AttemptStarted {
        v: taskfleet_common::wire::WIRE_VERSION,
        workflow_id: "wf".into(),
        task_idx: 0,
        attempt: 1,
        worker: "w".into(),
        at: Millis(1),
    };
    engine.on_started(&started).unwrap();
    assert_eq!(engine.worker_use("w").unwrap().0, 1);
    assert!(engine.dispatch(Millis(1)).is_empty(), "the one slot is taken");
    let mut done = TaskResult::succeeded("wf", "plain", 0, 1, "w", Millis(0), Millis(2));
    done.finished_at = Millis(2);
    engine.on_finished(done, Millis(2)).unwrap();
    assert_eq!(sent(&engine.dispatch(Millis(2))), [on("asks", "w")]);
}

#[test]
fn reserved_gpus_are_lent_while_idle_and_their_owner_goes_first_once_it_waits() {
    let workers = [worker("gpu", 8, 1.0, 32.0, 64, 2)];
    let config = EngineConfig {
        reservations: vec!["high:gpu=50%".parse().unwrap()],
        ..EngineConfig::default()
    };
    let mut engine = engine_with(config, &workers);
    let low = tasks(&[
        ("low1", ", priority: low, resources: {gpu: 1}"),
        ("low2", ", priority: low, resources: {gpu: 1}"),
        ("low3", ", priority: low, resources: {gpu: 1}"),
    ]);
    engine.add_workflow("lows".into(), spec(&low), None, Millis(0));
    let lows = engine.dispatch(Millis(0));
    assert_eq!(sent(&lows), [on("low1", "gpu"), on("low2", "gpu")]);
    // The second GPU is high's, lent while high has nothing waiting.
    assert!(!engine.is_lent("lows", 0));
    assert!(engine.is_lent("lows", 1));
    let high = tasks(&[("high1", ", priority: high, resources: {gpu: 1}")]);
    engine.add_workflow("highs".into(), spec(&high), None, Millis(1));
    assert!(engine.dispatch(Millis(1)).is_empty(), "both GPUs are taken");
    // low1 ends first: its GPU is unreserved, but high is waiting for its own.
    finish(&mut engine, &lows[0], 2);
    assert_eq!(sent(&engine.dispatch(Millis(2))), [on("high1", "gpu")]);
    finish(&mut engine, &lows[1], 3);
    assert_eq!(sent(&engine.dispatch(Millis(3))), [on("low3", "gpu")]);
}

#[test]
fn mct_places_a_task_that_asks_only_where_it_fits_even_if_slower() {
    let workers = [worker("fast", 2, 4.0, 4.0, 4, 0), worker("slow", 2, 1.0, 32.0, 64, 0)];
    let config = EngineConfig {
        policy: PolicyKind::Mct,
        ..EngineConfig::default()
    };
    let mut engine = engine_with(config, &workers);
    let yaml = tasks(&[
        ("big", ", estimate: 4s, resources: {memory: 32Gi}"),
        ("small", ", estimate: 4s, resources: {memory: 1Gi}"),
    ]);
    engine.add_workflow("wf".into(), spec(&yaml), None, Millis(0));
    assert_eq!(
        sent(&engine.dispatch(Millis(0))),
        [on("big", "slow"), on("small", "fast")]
    );
}

#[test]
fn heft_plans_a_task_that_asks_on_a_worker_that_can_hold_it() {
    let workers = [worker("fast", 2, 4.0, 4.0, 4, 0), worker("slow", 2, 1.0, 32.0, 64, 0)];
    let config = EngineConfig {
        policy: PolicyKind::Heft,
        ..EngineConfig::default()
    };
    let mut engine = engine_with(config, &workers);
    let yaml = tasks(&[
        ("big", ", estimate: 4s, resources: {memory: 32Gi}"),
        ("small", ", estimate: 4s"),
    ]);
    engine.add_workflow("wf".into(), spec(&yaml), None, Millis(0));
    let mut placed = sent(&engine.dispatch(Millis(0)));
    placed.sort();
    assert_eq!(placed, [on("big", "slow"), on("small", "fast")]);
}
