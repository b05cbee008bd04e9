//! Monte-Carlo ETA: when will a running workflow end, and which tasks decide it?
//!
//! Each sample draws a runtime for every unfinished task from the predictor's distribution
//! (a running task keeps what it has already run), then list-schedules the rest of the DAG on
//! the fleet's slots in topological order, each task on the slot where it would finish first
//! (a slot of a worker of speed `s` runs it in `runtime / s`). Over the samples this gives completion quantiles
//! (p50, p90) and, per task, its criticality: how often it lies on the chain that decided the
//! end. Pure: the clock and the random source are arguments.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use rand::Rng;
use taskfleet_common::state::TaskState;
use taskfleet_common::WorkflowSpec;

use crate::predict::Predictor;

/// Samples beyond which a large workflow is not worth more precision.
const MAX_TASK_SAMPLES: usize = 2_000_000;

/// What is known of each task now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TaskProgress {
    /// Ended (any outcome): costs nothing more.
    Done,
    /// Running for `elapsed` already, on a worker of relative `speed` (1 when unknown): its
    /// runtime there is the predicted one over the speed.
    Running { elapsed: Duration, speed: f64 },
    /// Not started.
    Waiting,
}

impl TaskProgress {
    /// The progress of a task in `state`, running for `elapsed` if it runs.
    pub fn of(state: TaskState, elapsed: Option<Duration>) -> TaskProgress {
        match state {
            state if state.is_terminal() => TaskProgress::Done,
            TaskState::Running | TaskState::Dispatched => TaskProgress::Running {
                elapsed: elapsed.unwrap_or_default(),
                speed: 1.0,
            },
            _ => TaskProgress::Waiting,
        }
    }
}

/// The predicted end of a workflow.
#[derive(Clone, Debug, PartialEq)]
pub struct Eta {
    /// Time from now until the workflow ends: median and 90th percentile.
    pub p50: Duration,
    pub p90: Duration,
    /// Per task, the share of samples in which it was on the deciding chain.
    pub criticality: Vec<f64>,
    pub n_samples: usize,
}

/// The slots of a fleet: groups of `(speed, number of slots)`.
pub type Slots = [(f64, usize)];

/// The slots of a fleet of workers given as `(speed, slots)`, grouped by speed, fastest
/// first; one slot of speed 1 if there is none.
pub fn slots_by_speed(workers: impl IntoIterator<Item = (f64, usize)>) -> Vec<(f64, usize)> {
    let mut groups: Vec<(f64, usize)> = Vec::new();
    for (speed, slots) in workers {
        let speed = if speed.is_finite() && speed > 0.0 { speed } else { 1.0 };
        match groups.iter_mut().find(|(known, _)| *known == speed) {
            Some(group) => group.1 += slots,
            None => groups.push((speed, slots)),
        }
    }
    groups.retain(|&(_, slots)| slots > 0);
    groups.sort_by(|a, b| b.0.total_cmp(&a.0));
    if groups.is_empty() {
        groups.push((1.0, 1));
    }
    groups
}

/// Runs `n_samples` simulations of the rest of the workflow on the fleet's `slots`.
pub fn monte_carlo_eta(
    spec: &WorkflowSpec,
    progress: &[TaskProgress],
    predictor: &Predictor,
    slots: &Slots,
    n_samples: usize,
    rng: &mut impl Rng,
) -> Eta {
    let n_tasks = spec.tasks.len();
    let n_open = progress
        .iter()
        .filter(|task| **task != TaskProgress::Done)
        .count()
        .max(1);
    let n_samples = n_samples.min(MAX_TASK_SAMPLES / n_open).max(1);
    let predictions: Vec<_> = spec.tasks.iter().map(|task| predictor.predict(task)).collect();
    // Where a task goes is decided by what the scheduler expects of it, not by the draw.
    let expected: Vec<f64> = predictions.iter().map(|p| p.mean.as_secs_f64()).collect();
    let mut ends = Vec::with_capacity(n_samples);
    let mut critical_counts = vec![0u32; n_tasks];
    let mut runtime = vec![0f64; n_tasks];
    for _ in 0..n_samples {
        for (idx, task) in progress.iter().enumerate() {
            runtime[idx] = match task {
                TaskProgress::Done => 0.0,
                TaskProgress::Waiting => predictions[idx].sample(rng).as_secs_f64(),
                TaskProgress::Running { elapsed, speed } => {
                    // What is left of a draw that is longer than what already ran, at the
                    // speed of its worker.
                    let speed = if *speed > 0.0 { *speed } else { 1.0 };
                    let mut draw = predictions[idx].sample(rng).as_secs_f64() / speed;
                    for _ in 0..8 {
                        if draw > elapsed.as_secs_f64() {
                            break;
                        }
                        draw = predictions[idx].sample(rng).as_secs_f64() / speed;
                    }
                    (draw - elapsed.as_secs_f64()).max(0.0)
                }
            };
        }
        let (end, chain) = list_schedule_deciding(spec, progress, &runtime, &expected, slots);
        ends.push(end);
        for task in chain {
            critical_counts[task as usize] += 1;
        }
    }
    ends.sort_by(f64::total_cmp);
    let quantile = |q: f64| Duration::from_secs_f64(ends[((ends.len() - 1) as f64 * q).round() as usize]);
    Eta {
        p50: quantile(0.5),
        p90: quantile(0.9),
        criticality: critical_counts
            .iter()
            .map(|&count| f64::from(count) / n_samples as f64)
            .collect(),
        n_samples,
    }
}

/// Schedules the open tasks in topological order, each on the slot where it would finish
/// first (not before its parents end; `runtime` at speed 1); returns the end time and the
/// chain of tasks that decided it. Running tasks keep their remaining time and hold the slots
/// that free first.
pub fn list_schedule(
    spec: &WorkflowSpec,
    progress: &[TaskProgress],
    runtime: &[f64],
    slots: &Slots,
) -> (f64, Vec<u32>) {
    list_schedule_deciding(spec, progress, runtime, runtime, slots)
}

/// [`list_schedule`], choosing each task's slot by its `expected` runtime (what the scheduler
/// believes when it places it) while it takes `runtime`: a sample of the future is not known
/// when the tasks are placed, so a forecast that placed by it would be too hopeful.
pub fn list_schedule_deciding(
    spec: &WorkflowSpec,
    progress: &[TaskProgress],
    runtime: &[f64],
    expected: &[f64],
    slots: &Slots,
) -> (f64, Vec<u32>) {
    let n_tasks = spec.tasks.len();
    let mut finish = vec![0f64; n_tasks];
    // Why each task started when it did: the parent it waited for, if that was the reason.
    let mut waited_for = vec![u32::MAX; n_tasks];
    // Per speed, the slots by the time they free, in integer nanoseconds so the heap can
    // order them.
    let mut groups: Vec<(f64, BinaryHeap<Reverse<u64>>)> = slots
        .iter()
        .filter(|&&(_, count)| count > 0)
        .map(|&(speed, count)| (speed, (0..count).map(|_| Reverse(0)).collect()))
        .collect();
    if groups.is_empty() {
        groups.push((1.0, BinaryHeap::from([Reverse(0)])));
    }
    let mut last = (0f64, u32::MAX);
    // Running tasks hold their slots from now until they end.
    for (idx, task) in progress.iter().enumerate() {
        if let TaskProgress::Running { .. } = task {
            let group = (0..groups.len())
                .min_by_key(|&group| groups[group].1.peek().map_or(u64::MAX, |Reverse(free)| *free))
                .expect("at least one group");
            groups[group].1.pop();
            groups[group].1.push(Reverse((runtime[idx] * 1e9) as u64));
            finish[idx] = runtime[idx];
            if finish[idx] >= last.0 {
                last = (finish[idx], idx as u32);
            }
        }
    }
    for &task in spec.dag.topo_order() {
        let idx = task as usize;
        if progress[idx] != TaskProgress::Waiting {
            continue;
        }
        let (ready, parent) = spec
            .dag
            .parents(task)
            .iter()
            .map(|&parent| (finish[parent as usize], parent))
            .fold((0f64, u32::MAX), |best, next| if next.0 > best.0 { next } else { best });
        // The slot where the task finishes first: in each speed group, the one free first.
        let mut best = (f64::INFINITY, 0, 0f64);
        for (group, (speed, free_at)) in groups.iter().enumerate() {
            let slot_free = free_at.peek().map_or(0, |Reverse(free)| *free) as f64 / 1e9;
            let end = ready.max(slot_free) + expected[idx] / speed;
            if end < best.0 {
                best = (end, group, slot_free);
            }
        }
        let (_, group, slot_free) = best;
        let speed = groups[group].0;
        let end = ready.max(slot_free) + runtime[idx] / speed;
        groups[group].1.pop();
        groups[group].1.push(Reverse((end * 1e9) as u64));
        if ready >= slot_free {
            waited_for[idx] = parent;
        }
        finish[idx] = end;
        if finish[idx] >= last.0 {
            last = (finish[idx], task);
        }
    }
    let mut chain = Vec::new();
    let mut task = last.1;
    while task != u32::MAX {
        chain.push(task);
        task = waited_for[task as usize];
    }
    (last.0, chain)
}

#[cfg(test)]
mod tests;
