//! What a simulation measured: makespan, flow times, waits, utilization, fairness, and the
//! schedule itself. Times are seconds from the start of the simulation.

use std::collections::HashMap;

use serde::Serialize;

use super::placement::runtime_ms;
use super::run::Trace;
use super::Simulator;

/// The outcome of one simulation.
#[derive(Clone, Debug, Serialize)]
pub struct SimReport {
    pub policy: String,
    /// When the last task ended.
    pub makespan: f64,
    /// Mean over workflows of end − submit.
    pub mean_flow_time: f64,
    pub max_flow_time: f64,
    /// Mean over tasks of start − ready, where ready is the latest of the workflow's submit
    /// and the parents' ends (a transfer counts as waiting).
    pub mean_wait: f64,
    /// A lower bound of the makespan: the longest of each workflow's submit plus its critical
    /// path (every task on its fastest worker, no transfers) and, per pool, its work over the
    /// pool's capacity (by the workers' speeds).
    pub lower_bound: f64,
    /// Busy slot-seconds over (all slots × makespan).
    pub utilization: f64,
    /// Jain's index of the workflows' speeds relative to running alone (1 / slowdown, where
    /// the slowdown is flow time over the time the workflow would take alone on the fleet):
    /// 1 when all progress alike, towards 1/n when one gets everything.
    pub fairness: f64,
    /// The spread over sampled runtimes, for stochastic runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stochastic: Option<Spread>,
    /// For a replay of actual runtimes: what could have been, and how wrong the beliefs were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scores: Option<super::actual::Scores>,
    pub workflows: Vec<WorkflowReport>,
    /// Every task, by start time.
    pub schedule: Vec<ScheduledTask>,
}

/// One workflow's times.
#[derive(Clone, Debug, Serialize)]
pub struct WorkflowReport {
    pub name: String,
    pub submit: f64,
    pub end: f64,
    pub flow_time: f64,
    /// Flow time over the time it would take alone on the fleet: the longer of its critical
    /// path on the fastest workers and its work spread over every slot (1 = as fast as possible).
    pub slowdown: f64,
}

/// Where and when one task ran.
#[derive(Clone, Debug, Serialize)]
pub struct ScheduledTask {
    pub workflow: String,
    pub task: String,
    pub worker: String,
    pub start: f64,
    pub end: f64,
    /// Index of the workflow among those simulated.
    #[serde(skip)]
    pub workflow_idx: usize,
    #[serde(skip)]
    pub task_idx: u32,
    /// Index of the worker in the fleet.
    #[serde(skip)]
    pub worker_idx: usize,
    #[serde(skip)]
    pub start_ms: u64,
    #[serde(skip)]
    pub end_ms: u64,
    /// Slots the task held.
    #[serde(skip)]
    pub slots: u32,
}

/// How a measure varied over stochastic runs.
#[derive(Clone, Debug, Serialize)]
pub struct Spread {
    pub runs: usize,
    pub seed: u64,
    pub sigma: f64,
    pub makespan: Quantiles,
    pub mean_flow_time: Quantiles,
}

/// Minimum, median, 90th percentile (nearest rank) and maximum.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Quantiles {
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub max: f64,
}

impl Quantiles {
    /// The quantiles of `values` (sorted in place); zeros when empty.
    pub fn of(values: &mut [f64]) -> Quantiles {
        values.sort_by(f64::total_cmp);
        let rank = |q: f64| {
            let n = values.len();
            let idx = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
            values[idx]
        };
        if values.is_empty() {
            return Quantiles {
                min: 0.0,
                p50: 0.0,
                p90: 0.0,
                max: 0.0,
            };
        }
        Quantiles {
            min: values[0],
            p50: rank(0.5),
            p90: rank(0.9),
            max: values[values.len() - 1],
        }
    }
}

/// Jain's fairness index of `values`: (Σx)² / (n·Σx²), 1 for no values or all zeros.
pub fn jain_index(values: &[f64]) -> f64 {
    let sum: f64 = values.iter().sum();
    let sum_sq: f64 = values.iter().map(|x| x * x).sum();
    if values.is_empty() || sum_sq == 0.0 {
        1.0
    } else {
        sum * sum / (values.len() as f64 * sum_sq)
    }
}

fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// The makespan and the mean flow time, in seconds, without building the schedule.
pub(super) fn makespan_and_mean_flow(sim: &Simulator, trace: &Trace) -> (f64, f64) {
    let makespan = trace.end.iter().copied().max().unwrap_or(0);
    let total_flow_ms: u64 = sim
        .workflows
        .iter()
        .zip(&trace.workflow_end)
        .map(|(workflow, &end)| end.saturating_sub(workflow.submit.as_millis() as u64))
        .sum();
    (secs(makespan), secs(total_flow_ms) / sim.workflows.len().max(1) as f64)
}

pub(super) fn build(sim: &Simulator, policy: &str, trace: &Trace) -> SimReport {
    let makespan = trace.end.iter().copied().max().unwrap_or(0);
    let mut schedule = Vec::with_capacity(sim.n_tasks);
    let mut busy_slot_ms = 0u128;
    let mut total_wait_ms = 0u128;
    for (workflow_idx, workflow) in sim.workflows.iter().enumerate() {
        let first = sim.first_task[workflow_idx];
        let submit = workflow.submit.as_millis() as u64;
        for (task_idx, task) in workflow.spec.tasks.iter().enumerate() {
            let global = first + task_idx;
            let (start, end) = (trace.start[global], trace.end[global]);
            let ready = task
                .deps
                .iter()
                .map(|dep| trace.end[first + dep.task as usize])
                .fold(submit, u64::max);
            total_wait_ms += u128::from(start.saturating_sub(ready));
            busy_slot_ms += u128::from(end - start) * u128::from(task.resources.slots);
            let worker_idx = trace.worker[global] as usize;
            schedule.push(ScheduledTask {
                workflow: sim.names[workflow_idx].clone(),
                task: task.id.clone(),
                worker: sim.fleet.workers[worker_idx].name.clone(),
                start: secs(start),
                end: secs(end),
                workflow_idx,
                task_idx: task_idx as u32,
                worker_idx,
                start_ms: start,
                end_ms: end,
                slots: task.resources.slots,
            });
        }
    }
    schedule.sort_by_key(|entry| (entry.start_ms, entry.worker_idx, entry.workflow_idx, entry.task_idx));
    let best = ideal_flow_times(sim);
    let lower_bound = sim
        .workflows
        .iter()
        .zip(&best)
        .map(|(workflow, &alone)| workflow.submit.as_millis() as u64 + alone)
        .fold(pool_work_bound(sim), u64::max);
    let workflows: Vec<WorkflowReport> = sim
        .workflows
        .iter()
        .enumerate()
        .map(|(idx, workflow)| {
            let submit = workflow.submit.as_millis() as u64;
            let flow_ms = trace.workflow_end[idx].saturating_sub(submit);
            WorkflowReport {
                name: sim.names[idx].clone(),
                submit: secs(submit),
                end: secs(trace.workflow_end[idx]),
                flow_time: secs(flow_ms),
                slowdown: if best[idx] == 0 {
                    1.0
                } else {
                    flow_ms as f64 / best[idx] as f64
                },
            }
        })
        .collect();
    let n_workflows = workflows.len().max(1) as f64;
    let relative_speeds: Vec<f64> = workflows
        .iter()
        .map(|workflow| 1.0 / workflow.slowdown.max(1e-9))
        .collect();
    let total_slots = sim.fleet.total_slots();
    SimReport {
        policy: policy.to_string(),
        makespan: secs(makespan),
        mean_flow_time: workflows.iter().map(|workflow| workflow.flow_time).sum::<f64>() / n_workflows,
        max_flow_time: workflows.iter().map(|workflow| workflow.flow_time).fold(0.0, f64::max),
        mean_wait: total_wait_ms as f64 / 1000.0 / sim.n_tasks.max(1) as f64,
        lower_bound: secs(lower_bound),
        utilization: if makespan == 0 || total_slots == 0 {
            0.0
        } else {
            busy_slot_ms as f64 / (total_slots as f64 * makespan as f64)
        },
        fairness: jain_index(&relative_speeds),
        stochastic: None,
        scores: None,
        workflows,
        schedule,
    }
}

/// The workers among which `task` runs fastest: those of its pool its `estimate_by_worker`
/// names (each once, ascending) and, of the others (where its runtime follows speed), the
/// fastest; all with the slots it needs.
fn fastest_options(sim: &Simulator, task: &taskfleet_common::TaskSpec) -> (Vec<usize>, Option<usize>) {
    let workers = &sim.fleet.workers;
    let slots = task.resources.slots;
    let Some(pool) = sim.pool_workers.get(&task.pool) else {
        return (Vec::new(), None);
    };
    let mut named: Vec<usize> = sim
        .named_workers(task)
        .filter(|&w| workers[w].slots >= slots && pool.rank[w] != u32::MAX)
        .collect();
    named.sort_unstable();
    named.dedup();
    let unnamed = pool
        .by_speed
        .iter()
        .copied()
        .find(|&w| workers[w].slots >= slots && named.binary_search(&w).is_err());
    (named, unnamed)
}

/// A lower bound of each workflow's flow time were it alone on the fleet, in milliseconds: the
/// longer of its critical path (every task on the worker fastest for it, no transfers) and
/// its slot-time on those workers spread over all the fleet's slots.
fn ideal_flow_times(sim: &Simulator) -> Vec<u64> {
    let total_slots = sim.fleet.total_slots().max(1);
    let default_estimate = sim.policy_config.default_estimate;
    let workers = &sim.fleet.workers;
    let mut lengths = Vec::with_capacity(sim.workflows.len());
    for workflow in &sim.workflows {
        let mut weights = Vec::with_capacity(workflow.spec.tasks.len());
        for task in &workflow.spec.tasks {
            let (named, fastest) = fastest_options(sim, task);
            let base = named
                .iter()
                .copied()
                .chain(fastest)
                .map(|w| runtime_ms(task, &workers[w], default_estimate))
                .min();
            weights.push(base.unwrap_or(0));
        }
        let work: u64 = weights
            .iter()
            .zip(&workflow.spec.tasks)
            .map(|(ms, task)| ms * u64::from(task.resources.slots))
            .sum();
        lengths.push(workflow.spec.dag.critical_path(&weights).length.max(work / total_slots));
    }
    lengths
}

/// The longest, over pools, of the pool's work over its capacity, from the first submit, in
/// milliseconds. A worker `w` of speed `v` and `k` slots does at most `T·k·v` units of
/// speed-1 work in time `T`, and a task runs at best `min over w (runtime on w · v(w))`
/// such units (its estimate, unless its `estimate_by_worker` says less somewhere); counting
/// slot-time alone (each task at its fastest runtime over `Σ k`) gives a second bound.
fn pool_work_bound(sim: &Simulator) -> u64 {
    let workers = &sim.fleet.workers;
    let default_estimate = sim.policy_config.default_estimate;
    let first_submit = sim
        .workflows
        .iter()
        .map(|w| w.submit.as_millis() as u64)
        .min()
        .unwrap_or(0);
    let mut work: HashMap<&str, (f64, f64)> = HashMap::new();
    for workflow in &sim.workflows {
        for task in &workflow.spec.tasks {
            let slots = task.resources.slots;
            let (named, unnamed) = fastest_options(sim, task);
            let (mut speed_work, mut slot_time) = (f64::INFINITY, f64::INFINITY);
            for w in named.iter().copied().chain(unnamed) {
                let runtime = runtime_ms(task, &workers[w], default_estimate) as f64;
                slot_time = slot_time.min(runtime);
                speed_work = speed_work.min(runtime * workers[w].speed);
            }
            if unnamed.is_some() {
                // Every unnamed worker of the pool runs it in estimate / speed.
                let estimate = task.estimate.unwrap_or(default_estimate).as_millis() as f64;
                speed_work = speed_work.min(estimate);
            }
            if speed_work.is_finite() {
                let entry = work.entry(&*task.pool).or_default();
                entry.0 += speed_work * f64::from(slots);
                entry.1 += slot_time * f64::from(slots);
            }
        }
    }
    let mut bound = 0.0f64;
    for (pool, (speed_work, slot_time)) in work {
        let Some(pool) = sim.pool_workers.get(pool) else {
            continue;
        };
        let capacity: f64 = pool
            .by_speed
            .iter()
            .map(|&w| f64::from(workers[w].slots) * workers[w].speed)
            .sum();
        let slots: f64 = pool.by_speed.iter().map(|&w| f64::from(workers[w].slots)).sum();
        if capacity > 0.0 && slots > 0.0 {
            bound = bound.max(speed_work / capacity).max(slot_time / slots);
        }
    }
    first_submit + bound.floor() as u64
}
