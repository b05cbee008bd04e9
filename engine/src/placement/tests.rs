use std::collections::BTreeMap;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use taskfleet_common::workflow::{parse_workflow, ValidateOptions};
use taskfleet_common::{Millis, WorkflowSpec};

use super::*;

const TOPCUOGLU: &str = include_str!("../../../examples/topcuoglu.yaml");

/// Worker `index` of the model.
fn w(index: usize) -> WorkerId {
    WorkerId::new(index)
}

fn spec(yaml: &str) -> WorkflowSpec {
    parse_workflow(yaml, &ValidateOptions::default()).unwrap_or_else(|invalid| panic!("{invalid}"))
}

fn three_processors() -> Placer {
    let workers: Vec<WorkerModel> = ["p1", "p2", "p3"]
        .iter()
        .map(|name| WorkerModel::new(name, &["default"], 1, 1.0))
        .collect();
    Placer::with_workers(None, &workers)
}

fn shape(estimate_ms: u64) -> TaskShape<'static> {
    TaskShape {
        pool: "default",
        fits: None,
        slots: 1,
        estimate_ms,
        by_worker: None,
    }
}

#[test]
fn heft_reproduces_the_papers_schedule() {
    let spec = spec(TOPCUOGLU);
    let mut placer = three_processors();
    let plan = plan(&mut placer, Millis(0), &spec, &[0; 10], &[false; 10], PlanKind::Heft);
    assert_eq!(plan.makespan, Millis(80_000));
    // Upward ranks of the paper's Table: n1 108, n2 77, n3 80, n4 80, n5 69, n6 63.333,
    // n7 42.667, n8 35.667, n9 44.333, n10 14.667.
    let expected = [108.0, 77.0, 80.0, 80.0, 69.0, 63.333, 42.667, 35.667, 44.333, 14.667];
    for (task, (&rank, want)) in plan.priority.iter().zip(expected).enumerate() {
        assert!((rank / 1000.0 - want).abs() < 0.001, "n{}: rank {rank}", task + 1);
    }
    // The paper's Fig. 4(a): (task, processor, start) in seconds.
    let schedule = [
        (0, 2, 0),
        (1, 0, 27),
        (2, 2, 9),
        (3, 1, 18),
        (4, 2, 28),
        (5, 1, 26),
        (6, 2, 38),
        (7, 0, 57),
        (8, 1, 56),
        (9, 1, 73),
    ];
    for (task, worker, start) in schedule {
        assert_eq!(
            (plan.worker[task], plan.start[task]),
            (Some(w(worker)), Millis(start * 1000)),
            "n{}",
            task + 1
        );
    }
}

#[test]
fn cpop_reproduces_the_papers_schedule_length() {
    let spec = spec(TOPCUOGLU);
    let mut placer = three_processors();
    let plan = plan(&mut placer, Millis(0), &spec, &[0; 10], &[false; 10], PlanKind::Cpop);
    // The critical path n1 -> n2 -> n9 -> n10 (priority 108) runs on p2, its fastest worker.
    assert_eq!(plan.critical_path, vec![0, 1, 8, 9]);
    for &task in &plan.critical_path {
        assert_eq!(plan.worker[task as usize], Some(w(1)));
    }
    assert_eq!(plan.makespan, Millis(86_000));
}

#[test]
fn a_plan_respects_dependencies_transfers_and_lanes() {
    let mut rng = StdRng::seed_from_u64(7);
    for round in 0..40 {
        let n = rng.gen_range(1..30);
        let mut tasks = Vec::new();
        for task in 0..n {
            let mut deps = Vec::new();
            for parent in 0..task {
                if rng.gen_bool(0.2) {
                    deps.push(format!("{{task: t{parent}, transfer: {}ms}}", rng.gen_range(0..500)));
                }
            }
            tasks.push(format!(
                "  - {{id: t{task}, handler: noop, estimate: {}ms, deps: [{}]}}",
                rng.gen_range(1..2000),
                deps.join(", ")
            ));
        }
        let spec = spec(&format!("name: r{round}\ntasks:\n{}\n", tasks.join("\n")));
        let workers: Vec<WorkerModel> = (0..rng.gen_range(1..5))
            .map(|w| {
                WorkerModel::new(
                    &format!("w{w}"),
                    &["default"],
                    rng.gen_range(1..3),
                    rng.gen_range(0.5..3.0),
                )
            })
            .collect();
        let estimates: Vec<u64> = spec
            .tasks
            .iter()
            .map(|task| task.estimate.unwrap().as_millis() as u64)
            .collect();
        let kinds = [
            PlanKind::Heft,
            PlanKind::Cpop,
            PlanKind::Batch(Batch::MinMin),
            PlanKind::Batch(Batch::MaxMin),
            PlanKind::Batch(Batch::Sufferage),
        ];
        for (kind, improved) in kinds.into_iter().flat_map(|kind| [(kind, false), (kind, true)]) {
            let mut placer = Placer::with_workers(None, &workers);
            let done = vec![false; n];
            let plan = if improved {
                let mut fresh = Placer::with_workers(None, &workers);
                let constructive = plan(&mut fresh, Millis(100), &spec, &estimates, &done, kind);
                let search = Duration::from_secs(1);
                let (plan, improvement) =
                    plan_improved(&mut placer, Millis(100), &spec, &estimates, &done, kind, search);
                // Never worse than the plan the heuristic made.
                assert!(plan.makespan <= constructive.makespan, "{kind:?} round {round}");
                assert_eq!(improvement.before, constructive.makespan);
                assert_eq!(improvement.after, plan.makespan);
                // The model's lanes are the improved plan's.
                for (index, model) in workers.iter().enumerate() {
                    let last = (0..n)
                        .filter(|&idx| plan.worker[idx] == Some(w(index)))
                        .map(|idx| plan.end[idx])
                        .max()
                        .unwrap_or(Millis(0));
                    let lanes = placer.lane_frees(w(index));
                    assert_eq!(lanes.len(), model.slots as usize);
                    assert_eq!(
                        *lanes.iter().max().unwrap(),
                        last,
                        "{kind:?} round {round} worker {index}"
                    );
                }
                plan
            } else {
                plan(&mut placer, Millis(100), &spec, &estimates, &done, kind)
            };
            let latest = (0..n).map(|idx| plan.end[idx]).max().unwrap_or(Millis(100));
            assert_eq!(plan.makespan, latest.max(Millis(100)), "{kind:?} improved {improved}");
            for (idx, task) in spec.tasks.iter().enumerate() {
                let worker = plan.worker[idx];
                assert!(plan.start[idx] >= Millis(100));
                let on = worker.expect("every task is planned").index();
                let runtime = runtime_on(estimates[idx], None, &workers[on]);
                assert_eq!(plan.end[idx].0 - plan.start[idx].0, runtime, "{kind:?} task {idx}");
                for dep in &task.deps {
                    let parent = dep.task as usize;
                    let transfer = if plan.worker[parent] == worker {
                        0
                    } else {
                        u64::from(dep.transfer_ms)
                    };
                    assert!(
                        plan.start[idx] >= plan.end[parent].plus_ms(transfer),
                        "{kind:?} task {idx}"
                    );
                }
            }
            // No worker runs more tasks at once than it has slots.
            for (index, model) in workers.iter().enumerate() {
                let mut points: Vec<(Millis, i64)> = Vec::new();
                for idx in 0..n {
                    if plan.worker[idx] == Some(w(index)) && plan.end[idx] > plan.start[idx] {
                        points.push((plan.start[idx], 1));
                        points.push((plan.end[idx], -1));
                    }
                }
                points.sort();
                let mut running = 0;
                for (_, delta) in points {
                    running += delta;
                    assert!(
                        running <= i64::from(model.slots),
                        "{kind:?}: worker {index} over its slots"
                    );
                }
            }
        }
    }
}

#[test]
fn choose_waits_for_a_fast_busy_worker_when_that_finishes_first() {
    let workers = [
        WorkerModel::new("fast", &["default"], 1, 4.0),
        WorkerModel::new("slow", &["default"], 1, 1.0),
    ];
    let mut placer = Placer::with_workers(Some(2), &workers);
    let busy = placer.choose(Millis(0), shape(4000), &[]).unwrap();
    assert_eq!((busy.worker, busy.end), (w(0), Millis(1000)));
    placer.reserve(busy, 1);
    placer.hold(busy.worker);
    // 8 s of work: 1 s wait + 2 s on `fast` beats 8 s on `slow`.
    let next = placer.choose(Millis(0), shape(8000), &[]).unwrap();
    assert_eq!(
        next,
        Choice {
            worker: w(0),
            start: Millis(1000),
            end: Millis(3000)
        }
    );
    // 1 s of work: 1 s on `slow` now beats 1 s + 0.25 s on `fast`.
    let small = placer.choose(Millis(0), shape(1000), &[]).unwrap();
    assert_eq!(small.worker, w(1));
}

#[test]
fn workers_without_room_are_skipped_until_a_task_ends() {
    let workers = [WorkerModel::new("only", &["default"], 1, 1.0)];
    let mut placer = Placer::with_workers(Some(2), &workers);
    for expected_start in [Millis(0), Millis(1000)] {
        let choice = placer.choose(Millis(0), shape(1000), &[]).unwrap();
        assert_eq!(choice.start, expected_start);
        placer.reserve(choice, 1);
        placer.hold(choice.worker);
    }
    assert!(placer.choose(Millis(0), shape(1000), &[]).is_none());
    assert!(!placer.has_room("default"));
    // The first task ends early, at 500: the second (reserved until 2000) still holds the lane.
    placer.release(w(0), 1, Millis(1000), Millis(500));
    let choice = placer.choose(Millis(600), shape(1000), &[]).unwrap();
    assert_eq!(choice.start, Millis(2000));
    placer.release(w(0), 1, Millis(2000), Millis(700));
    assert_eq!(placer.choose(Millis(800), shape(1000), &[]).unwrap().start, Millis(800));
}

#[test]
fn gone_workers_are_not_chosen_and_come_back_fresh() {
    let workers = [
        WorkerModel::new("a", &["default"], 1, 2.0),
        WorkerModel::new("b", &["default"], 1, 1.0),
    ];
    let mut placer = Placer::with_workers(Some(2), &workers);
    placer.worker_gone("a");
    assert_eq!(placer.choose(Millis(0), shape(1000), &[]).unwrap().worker, w(1));
    placer.set_workers(&workers, Millis(5000));
    assert_eq!(
        placer.choose(Millis(5000), shape(1000), &[]).unwrap(),
        Choice {
            worker: w(0),
            start: Millis(5000),
            end: Millis(5500)
        }
    );
    placer.set_workers(&workers[1..], Millis(6000));
    assert_eq!(placer.choose(Millis(6000), shape(1000), &[]).unwrap().worker, w(1));
    assert!(!placer.can_run(w(0), "default", 1));
}

/// Every worker's completion time, computed the slow way.
fn brute_force(placer: &Placer, lanes: &[Vec<u64>], now: u64, task: TaskShape<'_>, parents: &[ParentAt]) -> u64 {
    let mut best = u64::MAX;
    for index in 0..placer.len() {
        let id = w(index);
        let model = placer.worker(id);
        if model.slots < task.slots {
            continue;
        }
        let mut ready = now;
        for parent in parents {
            let transfer = if parent.worker == Some(id) {
                0
            } else {
                parent.transfer_ms
            };
            ready = ready.max(parent.end.0 + transfer);
        }
        let mut sorted = lanes[index].clone();
        sorted.sort_unstable();
        let start = ready.max(sorted[task.slots as usize - 1]);
        best = best.min(start + runtime_on(task.estimate_ms, task.by_worker, model));
    }
    best
}

#[test]
fn choose_finds_the_earliest_completion_of_a_full_scan() {
    let mut rng = StdRng::seed_from_u64(11);
    for _ in 0..300 {
        let n = rng.gen_range(1..12);
        let workers: Vec<WorkerModel> = (0..n)
            .map(|w| {
                let speed = [0.5, 1.0, 2.0][rng.gen_range(0..3)];
                WorkerModel::new(&format!("w{w}"), &["default"], rng.gen_range(1..4), speed)
            })
            .collect();
        let mut placer = Placer::with_workers(None, &workers);
        let mut lanes: Vec<Vec<u64>> = workers.iter().map(|w| vec![0; w.slots as usize]).collect();
        for _ in 0..rng.gen_range(0..20) {
            let slots = rng.gen_range(1..3);
            let task = TaskShape {
                slots,
                fits: None,
                ..shape(rng.gen_range(1..3000))
            };
            if let Some(choice) = placer.choose(Millis(rng.gen_range(0..500)), task, &[]) {
                placer.reserve(choice, slots);
                let worker_lanes = &mut lanes[choice.worker.index()];
                worker_lanes.sort_unstable();
                for lane in worker_lanes.iter_mut().take(slots as usize) {
                    *lane = choice.end.0;
                }
            }
        }
        let mut by_worker = BTreeMap::new();
        if rng.gen_bool(0.3) {
            by_worker.insert(
                format!("w{}", rng.gen_range(0..n)),
                Duration::from_millis(rng.gen_range(1..500)),
            );
        }
        let parents: Vec<ParentAt> = (0..rng.gen_range(0..4))
            .map(|_| ParentAt {
                worker: Some(w(rng.gen_range(0..n))),
                end: Millis(rng.gen_range(0..3000)),
                transfer_ms: rng.gen_range(0..2000),
            })
            .collect();
        let slots = rng.gen_range(1..3);
        let task = TaskShape {
            slots,
            fits: None,
            by_worker: (!by_worker.is_empty()).then_some(&by_worker),
            ..shape(rng.gen_range(1..3000))
        };
        let now = rng.gen_range(0..1000);
        let expected = brute_force(&placer, &lanes, now, task, &parents);
        let got = placer.choose(Millis(now), task, &parents).map(|choice| choice.end.0);
        assert_eq!(got, (expected != u64::MAX).then_some(expected));
    }
}

#[test]
fn heft_inserts_into_an_idle_gap_before_a_later_planned_task() {
    // `t3` runs fast only on p2 and waits there for `t1`'s output (5 s transfer): p2 idles
    // from 0 to 6. `t4`, placed after `t3` (lower rank), fits into that gap.
    let spec = spec(
        "name: gap\ntasks:\n  - {id: t1, handler: noop, estimate: 1s}\n  - {id: t3, handler: noop, deps: [{task: t1, transfer: 5s}], estimate_by_worker: {p1: 100s, p2: 1s}}\n  - {id: t4, handler: noop, estimate: 3s}\n",
    );
    let workers: Vec<WorkerModel> = ["p1", "p2"]
        .iter()
        .map(|name| WorkerModel::new(name, &["default"], 1, 1.0))
        .collect();
    let mut placer = Placer::with_workers(None, &workers);
    let estimates = [1000, 1000, 3000];
    let plan = plan(&mut placer, Millis(0), &spec, &estimates, &[false; 3], PlanKind::Heft);
    let at = |task: usize| (plan.worker[task], plan.start[task], plan.end[task]);
    assert_eq!(at(0), (Some(w(0)), Millis(0), Millis(1000)));
    assert_eq!(at(1), (Some(w(1)), Millis(6000), Millis(7000)));
    assert_eq!(
        at(2),
        (Some(w(1)), Millis(0), Millis(3000)),
        "t4 goes into p2's gap, before t3"
    );
    assert_eq!(plan.makespan, Millis(7000));
    // The model still sees p2 busy until 7 s (its last planned task), p1 until 1 s.
    assert_eq!(placer.lane_frees(w(1)), vec![Millis(7000)]);
    assert_eq!(placer.lane_frees(w(0)), vec![Millis(1000)]);
}
