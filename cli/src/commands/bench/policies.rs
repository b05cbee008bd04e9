//! The policy benchmark: how many dispatch decisions per second each policy makes with a
//! large ready set, next to the baseline of a plain FIFO queue of the same tasks.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use taskfleet_common::workflow::{parse_workflow_value, ValidateOptions};
use taskfleet_common::{Millis, PriorityClass};
use taskfleet_engine::placement::{runtime_on, Choice, ParentAt, Placer, TaskShape, WorkerId, WorkerModel};
use taskfleet_engine::policy::{PolicyConfig, PolicyKind, ReadyTask, TaskRef};
use taskfleet_engine::sim::{FleetSpec, SimWorker, SimWorkflow, Simulator};

use super::layered_dag_json;

/// Pushes `n_ready` tasks from `n_workflows` workflows into each policy, then pops them all.
pub(super) fn bench_policies(n_ready: usize, n_workflows: usize) {
    println!("policies: {n_ready} ready tasks from {n_workflows} workflows, all popped");
    let tasks: Vec<ReadyTask> = (0..n_ready)
        .map(|idx| {
            let workflow = (idx % n_workflows) as u32;
            ReadyTask {
                task: TaskRef::new(workflow, idx as u32),
                workflow_seq: u64::from(workflow),
                ready_seq: idx as u64,
                ready_at: Millis(idx as u64 / 100),
                class: PriorityClass::ALL[idx % 3],
                weight: (idx % 7) as f64,
                estimate_ms: 100 + (idx as u64 * 7919) % 100_000,
                slots: 1,
                rank: (idx as u64 * 104_729 % 1_000_000) as f64,
                criticality: (idx % 10) as f64 / 10.0,
            }
        })
        .collect();
    let started = Instant::now();
    let mut fifo: VecDeque<TaskRef> = VecDeque::with_capacity(n_ready);
    for task in &tasks {
        fifo.push_back(task.task);
    }
    let mut n_popped = 0;
    while fifo.pop_front().is_some() {
        n_popped += 1;
    }
    let rate = n_popped as f64 / started.elapsed().as_secs_f64();
    println!("  baseline: FIFO queue            {rate:>12.0} decisions/s");
    let config = PolicyConfig::default();
    for kind in PolicyKind::ALL {
        let mut policy = kind.build(&config);
        let started = Instant::now();
        for workflow in 0..n_workflows as u32 {
            policy.on_workflow_added(workflow, u64::from(workflow), 1_000_000 + u64::from(workflow) * 1_000);
        }
        for task in &tasks {
            policy.push(*task);
        }
        let mut n_popped = 0;
        while policy.pop(Millis(1_000_000)).is_some() {
            n_popped += 1;
        }
        let rate = n_popped as f64 / started.elapsed().as_secs_f64();
        println!("  {:<31} {rate:>12.0} decisions/s (push and pop)", kind.as_str());
    }
}

/// Placement: minimum-completion-time decisions on a fleet of `n_workers` (next to a full
/// scan of the fleet per decision), and simulating an `n_tasks`-task layered DAG on that fleet
/// under each placement-aware policy (next to `fcfs`).
pub(super) fn bench_placement(n_tasks: usize, n_workers: usize) -> anyhow::Result<()> {
    println!("placement: {n_tasks} tasks on {n_workers} workers of four speeds, 1-4 slots");
    let workers = mixed_fleet(n_workers);
    let mut rng = StdRng::seed_from_u64(5);
    let tasks: Vec<(u64, [usize; 2])> = (0..n_tasks)
        .map(|idx| {
            let parents = [rng.gen_range(0..idx.max(1)), rng.gen_range(0..idx.max(1))];
            (rng.gen_range(100..100_000), parents)
        })
        .collect();
    let decide = |scan: bool| {
        let mut placer = Placer::with_workers(None, &workers);
        let mut at: Vec<(WorkerId, Millis)> = Vec::with_capacity(n_tasks);
        let started = Instant::now();
        for (idx, &(estimate_ms, parents)) in tasks.iter().enumerate() {
            let parents: Vec<ParentAt> = parents
                .iter()
                .filter(|&&parent| parent < idx)
                .map(|&parent| ParentAt {
                    worker: Some(at[parent].0),
                    end: at[parent].1,
                    transfer_ms: 500,
                })
                .collect();
            let now = Millis(idx as u64 * 10);
            let shape = TaskShape {
                fits: None,
                pool: "default",
                slots: 1,
                estimate_ms,
                by_worker: None,
            };
            let choice = if scan {
                full_scan(&workers, &placer, now, shape, &parents)
            } else {
                placer.choose(now, shape, &parents).expect("the fleet serves the pool")
            };
            placer.reserve(choice, 1);
            at.push((choice.worker, choice.end));
        }
        n_tasks as f64 / started.elapsed().as_secs_f64()
    };
    let scan_rate = decide(true);
    println!("  baseline: full scan of the fleet {scan_rate:>12.0} decisions/s");
    let rate = decide(false);
    println!("  mct (speed groups)              {rate:>12.0} decisions/s");

    let text = layered_dag_json(n_tasks, 9);
    let mut value: serde_json::Value = serde_json::from_str(&text)?;
    for (idx, task) in value["tasks"].as_array_mut().expect("tasks").iter_mut().enumerate() {
        task["estimate"] = serde_json::json!(format!("{}ms", 1_000 + (idx * 7919) % 60_000));
    }
    let spec =
        parse_workflow_value(value, &ValidateOptions::default()).map_err(|invalid| anyhow::anyhow!("{invalid}"))?;
    let fleet = FleetSpec {
        workers: workers
            .iter()
            .map(|worker| SimWorker::new(&worker.name, worker.slots, worker.speed))
            .collect(),
    };
    let workflow = SimWorkflow {
        spec: Arc::new(spec),
        submit: Duration::ZERO,
    };
    let sim = Simulator::new(fleet, vec![workflow], PolicyConfig::default())?;
    for policy in [PolicyKind::Fcfs, PolicyKind::Mct, PolicyKind::Heft, PolicyKind::Cpop] {
        let started = Instant::now();
        let report = sim.run(policy)?;
        let label = if policy == PolicyKind::Fcfs {
            "baseline: simulate with fcfs".to_string()
        } else {
            format!("simulate with {policy}")
        };
        println!(
            "  {label:<31} {:>9.0} ms (makespan {:.0} s)",
            started.elapsed().as_secs_f64() * 1000.0,
            report.makespan
        );
    }
    Ok(())
}

/// `n_workers` workers `w0`, `w1`, ... of pool `default`, of speeds 0.5, 1, 1.5 and 2 in turn
/// with 1 to 4 slots.
pub(super) fn mixed_fleet(n_workers: usize) -> Vec<WorkerModel> {
    (0..n_workers)
        .map(|w| {
            let speed = [0.5, 1.0, 1.5, 2.0][w % 4];
            WorkerModel::new(&format!("w{w}"), &["default"], 1 + (w % 4) as u32, speed)
        })
        .collect()
}

/// The earliest completion over every worker, computed worker by worker.
fn full_scan(
    workers: &[WorkerModel],
    placer: &Placer,
    now: Millis,
    task: TaskShape<'_>,
    parents: &[ParentAt],
) -> Choice {
    let mut best: Option<Choice> = None;
    for (index, worker) in workers.iter().enumerate() {
        let id = WorkerId::new(index);
        let mut ready = now;
        for parent in parents {
            let transfer = if parent.worker == Some(id) {
                0
            } else {
                parent.transfer_ms
            };
            ready = ready.max(parent.end.plus_ms(transfer));
        }
        let start = ready.max(placer.lane_free(id, task.slots));
        let end = start.plus_ms(runtime_on(task.estimate_ms, None, worker));
        if best.is_none_or(|best| end < best.end) {
            best = Some(Choice { worker: id, start, end });
        }
    }
    best.expect("a fleet")
}
