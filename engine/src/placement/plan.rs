//! Planning a whole workflow ahead of time: HEFT and CPOP (Topcuoglu, Hariri and Wu, 2002).
//!
//! Both rank every task with the mean of its runtime over the workers of its pool (`w̄`) and
//! the transfer costs of its dependencies (`c`):
//!
//! - upward rank: `rank_u(i) = w̄(i) + max over children j of (c(i, j) + rank_u(j))`, the
//!   length of the longest path from `i` to an exit;
//! - downward rank (CPOP): `rank_d(i) = max over parents p of (rank_d(p) + w̄(p) + c(p, i))`.
//!
//! Tasks are then placed one at a time, highest priority first among those whose parents are
//! placed, each on the worker where it finishes earliest given what is already placed there
//! and where its parents' outputs are ([`Placer::choose`]). HEFT's priority is `rank_u`.
//! CPOP's is `rank_u + rank_d`; the tasks on the critical path (those whose priority equals the
//! entry's) all go to the one worker that runs the whole path fastest.
//!
//! On pools of up to [`INSERTION_MAX_WORKERS`] workers, placement is insertion-based as in the
//! paper: a one-slot task may take an idle gap that an earlier placement of the same plan left
//! on a slot (while that slot waited for inputs), if it fits before the next planned task;
//! every worker of the pool is evaluated. On larger pools (and for multi-slot tasks) it
//! appends to a worker's slots, which keeps a decision at O(parents + speed groups ·
//! log workers) on fleets of thousands of workers. Planning a workflow of `n` tasks and `e`
//! dependencies costs O((n + e) log n) plus the decisions.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use taskfleet_common::Millis;
use taskfleet_common::{TaskSpec, WorkflowSpec};

use super::batch::{plan_batch, Batch};
use super::improve::{improve, Improvement};
use super::{runtime_on, Choice, DataReady, ParentAt, Placer, TaskShape, WorkerId, WorkerModel};
use crate::packing;

/// Pools with more workers than this are planned by appending rather than by insertion.
pub const INSERTION_MAX_WORKERS: usize = 64;

/// Which list-scheduling heuristic plans the workflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanKind {
    /// Heterogeneous earliest finish time: upward rank, earliest finish.
    Heft,
    /// Critical path on a processor: the critical path on its fastest worker, the rest by
    /// earliest finish, in order of upward plus downward rank.
    Cpop,
    /// A batch heuristic over the tasks whose parents are placed ([`super::batch`]).
    Batch(Batch),
}

/// Where and when each task of a workflow is planned to run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// The planned worker (`None`: the task was done already, or no worker can run it).
    pub worker: Vec<Option<WorkerId>>,
    pub start: Vec<Millis>,
    pub end: Vec<Millis>,
    /// The priority the tasks were placed by, in milliseconds (higher first).
    pub priority: Vec<f64>,
    /// The tasks of the critical path (CPOP), in path order.
    pub critical_path: Vec<u32>,
    /// When the last planned task ends.
    pub makespan: Millis,
}

/// Plans `spec` as [`plan`] does, then improves the plan by local search for at most
/// `search` ([`super::improve`]); the result is never worse than the constructive plan.
pub fn plan_improved(
    placer: &mut Placer,
    now: Millis,
    spec: &WorkflowSpec,
    estimates: &[u64],
    done: &[bool],
    kind: PlanKind,
    search: std::time::Duration,
) -> (Plan, Improvement) {
    if search.is_zero() {
        let plan = plan(placer, now, spec, estimates, done, kind);
        let improvement = Improvement {
            before: plan.makespan,
            after: plan.makespan,
            ..Improvement::default()
        };
        return (plan, improvement);
    }
    let before = placer.clone();
    let mut plan = plan(placer, now, spec, estimates, done, kind);
    let improvement = improve(placer, &before, now, spec, estimates, done, &mut plan, search);
    (plan, improvement)
}

/// Plans `spec` from `now` on the placer's fleet, reserving the lanes it uses. `estimates`
/// gives each task's runtime at speed 1 in milliseconds; tasks with `done[i]` are not placed
/// and their outputs count as available everywhere.
pub fn plan(
    placer: &mut Placer,
    now: Millis,
    spec: &WorkflowSpec,
    estimates: &[u64],
    done: &[bool],
    kind: PlanKind,
) -> Plan {
    if let PlanKind::Batch(heuristic) = kind {
        return plan_batch(placer, now, spec, estimates, done, heuristic);
    }
    let n = spec.tasks.len();
    let dag = &spec.dag;
    let mean = mean_costs(placer, spec, estimates);
    let mut rank_up = vec![0.0f64; n];
    let mut child_best = vec![0.0f64; n];
    for &task in dag.topo_order().iter().rev() {
        let task = task as usize;
        rank_up[task] = mean[task] + child_best[task];
        for dep in &spec.tasks[task].deps {
            let through = f64::from(dep.transfer_ms) + rank_up[task];
            let parent = &mut child_best[dep.task as usize];
            *parent = parent.max(through);
        }
    }
    let priority: Vec<f64> = match kind {
        PlanKind::Heft | PlanKind::Batch(_) => rank_up.iter().map(|&rank| round(rank)).collect(),
        PlanKind::Cpop => {
            let mut rank_down = vec![0.0f64; n];
            for &task in dag.topo_order() {
                let task = task as usize;
                for dep in &spec.tasks[task].deps {
                    let parent = dep.task as usize;
                    let through = rank_down[parent] + mean[parent] + f64::from(dep.transfer_ms);
                    rank_down[task] = rank_down[task].max(through);
                }
            }
            rank_up
                .iter()
                .zip(&rank_down)
                .map(|(up, down)| round(up + down))
                .collect()
        }
    };
    let critical_path = match kind {
        PlanKind::Heft | PlanKind::Batch(_) => Vec::new(),
        PlanKind::Cpop => critical_path(spec, &priority),
    };
    let cp_worker = path_worker(placer, spec, estimates, &critical_path);
    let mut on_path = vec![false; n];
    for &task in &critical_path {
        on_path[task as usize] = true;
    }

    let position = topo_positions(spec);
    let mut waiting = open_parents(spec, done);
    let mut heap: BinaryHeap<(u64, Reverse<u32>, u32)> = BinaryHeap::new();
    for task in 0..n as u32 {
        if !done[task as usize] && waiting[task as usize] == 0 {
            heap.push((
                priority[task as usize].to_bits(),
                Reverse(position[task as usize]),
                task,
            ));
        }
    }
    let mut result = Plan {
        worker: vec![None; n],
        start: vec![now; n],
        end: vec![now; n],
        priority,
        critical_path,
        makespan: now,
    };
    let mut parents: Vec<ParentAt> = Vec::new();
    let mut gaps = Gaps::new(placer.len());
    while let Some((_, _, task)) = heap.pop() {
        let idx = task as usize;
        let spec_task = &spec.tasks[idx];
        parents_in_plan(spec_task, &result, done, &mut parents);
        // A task that asks for resources is planned only on workers that could ever hold them.
        let asks = packing::asks(spec_task);
        let could_take = |worker: &WorkerModel| packing::could_take(worker, spec_task);
        let shape = TaskShape {
            pool: &spec_task.pool,
            fits: asks.then_some(&could_take as &dyn Fn(&WorkerModel) -> bool),
            slots: spec_task.resources.slots,
            estimate_ms: estimates[idx],
            by_worker: spec_task.estimate_by_worker.as_ref(),
        };
        let only = cp_worker.filter(|&worker| {
            on_path[idx]
                && placer.can_run(worker, &spec_task.pool, spec_task.resources.slots)
                && (!asks || could_take(placer.worker(worker)))
        });
        let inserted = (spec_task.resources.slots == 1 && !asks)
            .then(|| gaps.insert(placer, now, spec_task, estimates[idx], &parents, only))
            .flatten();
        let chosen = match inserted {
            Some(choice) => Some(choice),
            None => {
                let choice = placer.choose_among(now, shape, &parents, only);
                if let Some(choice) = choice {
                    placer.reserve(choice, spec_task.resources.slots);
                    gaps.appended(choice, spec_task.resources.slots);
                }
                choice
            }
        };
        match chosen {
            Some(choice) => {
                result.worker[idx] = Some(choice.worker);
                result.start[idx] = choice.start;
                result.end[idx] = choice.end;
            }
            None => {
                // No worker can run it: it is placed when it is dispatched, if one appears.
                let ready = parents
                    .iter()
                    .map(|p| p.end.plus_ms(p.transfer_ms))
                    .max()
                    .unwrap_or(now);
                result.start[idx] = ready.max(now);
                result.end[idx] = result.start[idx].plus_ms(estimates[idx]);
            }
        }
        result.makespan = result.makespan.max(result.end[idx]);
        for &child in dag.children(task) {
            let left = &mut waiting[child as usize];
            *left -= 1;
            if *left == 0 && !done[child as usize] {
                heap.push((
                    result.priority[child as usize].to_bits(),
                    Reverse(position[child as usize]),
                    child,
                ));
            }
        }
    }
    result
}

/// Each task's place in the workflow's topological order.
pub(super) fn topo_positions(spec: &WorkflowSpec) -> Vec<u32> {
    let mut position = vec![0u32; spec.tasks.len()];
    for (at, &task) in spec.dag.topo_order().iter().enumerate() {
        position[task as usize] = at as u32;
    }
    position
}

/// Each task's parents that are not done.
pub(super) fn open_parents(spec: &WorkflowSpec, done: &[bool]) -> Vec<u32> {
    (0..spec.tasks.len() as u32)
        .map(|task| spec.dag.parents(task).iter().filter(|&&p| !done[p as usize]).count() as u32)
        .collect()
}

/// Where `task`'s parents not yet done are in `plan`, into `parents`.
pub(super) fn parents_in_plan(task: &TaskSpec, plan: &Plan, done: &[bool], parents: &mut Vec<ParentAt>) {
    parents.clear();
    for dep in task.deps.iter().filter(|dep| !done[dep.task as usize]) {
        parents.push(ParentAt {
            worker: plan.worker[dep.task as usize],
            end: plan.end[dep.task as usize],
            transfer_ms: u64::from(dep.transfer_ms),
        });
    }
}

/// What one plan has put on the slots of the workers it inserted into: per worker, per slot,
/// the planned intervals in start order, above a first block up to the time the slot was
/// free when planning began.
struct Gaps {
    lanes: HashMap<WorkerId, Vec<Vec<(Millis, Millis)>>>,
    /// The alive workers of each pool, or `None` for a pool too large for insertion.
    pools: HashMap<String, Option<Vec<WorkerId>>>,
    data: DataReady,
}

impl Gaps {
    fn new(n_workers: usize) -> Gaps {
        let mut data = DataReady::default();
        data.resize(n_workers);
        Gaps {
            lanes: HashMap::new(),
            pools: HashMap::new(),
            data,
        }
    }

    /// Places a one-slot task by insertion, if its pool is small enough: the worker (among
    /// all of the pool, or `only`) and slot where it finishes earliest, gaps included. Ties go
    /// to the faster worker, then the lower id. Reserves what it chose.
    fn insert(
        &mut self,
        placer: &mut Placer,
        now: Millis,
        task: &TaskSpec,
        estimate_ms: u64,
        parents: &[ParentAt],
        only: Option<WorkerId>,
    ) -> Option<Choice> {
        let pool = &*task.pool;
        if !self.pools.contains_key(pool) {
            let workers: Vec<WorkerId> = placer.pool_workers(pool).collect();
            let small = workers.len() <= INSERTION_MAX_WORKERS;
            self.pools.insert(pool.to_string(), small.then_some(workers));
        }
        let candidates: Vec<WorkerId> = match (only, &self.pools[pool]) {
            (_, None) => return None,
            (Some(worker), Some(_)) => vec![worker],
            (None, Some(workers)) => workers.clone(),
        };
        let remote = self.data.compute(parents);
        let mut best: Option<(Millis, f64, WorkerId, Millis, usize)> = None;
        for worker in candidates {
            let model = placer.worker(worker);
            let runtime = runtime_on(estimate_ms, task.estimate_by_worker.as_ref(), model);
            let ready = self.data.local(worker).unwrap_or(remote).max(now);
            let speed = model.speed;
            let lanes = self.lanes.entry(worker).or_insert_with(|| {
                placer
                    .lane_frees(worker)
                    .into_iter()
                    .map(|free| vec![(Millis(0), free)])
                    .collect()
            });
            let (start, lane) = earliest_gap(lanes, ready, runtime);
            let end = start.plus_ms(runtime);
            if best.is_none_or(|(best_end, best_speed, best_id, _, _)| {
                (end, -speed, worker) < (best_end, -best_speed, best_id)
            }) {
                best = Some((end, speed, worker, start, lane));
            }
        }
        let (end, _, worker, start, lane) = best?;
        let intervals = self.lanes.get_mut(&worker).expect("evaluated");
        let lane = &mut intervals[lane];
        let last_end = lane.last().map_or(Millis(0), |&(_, end)| end);
        let at = lane.partition_point(|&(s, _)| s <= start);
        lane.insert(at, (start, end));
        if end > last_end {
            // Appended at the end of the slot: the model's slot is busy until then too.
            placer.extend_lane(worker, last_end, end);
        }
        Some(Choice { worker, start, end })
    }

    /// `placer` appended `choice` to the `slots` slots of its worker that were free first.
    fn appended(&mut self, choice: Choice, slots: u32) {
        if let Some(lanes) = self.lanes.get_mut(&choice.worker) {
            lanes.sort_by_key(|lane| lane.last().map_or(Millis(0), |&(_, end)| end));
            for lane in lanes.iter_mut().take(slots as usize) {
                lane.push((choice.start, choice.end));
            }
        }
    }
}

/// The earliest start at or after `ready` at which a slot is idle for `duration`, and which
/// slot: the first gap that fits on each slot, the earliest over slots (lowest slot on ties).
fn earliest_gap(lanes: &[Vec<(Millis, Millis)>], ready: Millis, duration: u64) -> (Millis, usize) {
    let mut best = (Millis(u64::MAX), 0);
    for (idx, intervals) in lanes.iter().enumerate() {
        let mut cursor = ready;
        for &(start, end) in intervals {
            if cursor.plus_ms(duration) <= start {
                break;
            }
            cursor = cursor.max(end);
        }
        if cursor < best.0 {
            best = (cursor, idx);
        }
    }
    best
}

/// Each task's mean runtime over the alive workers of its pool (its estimate if none).
fn mean_costs(placer: &Placer, spec: &WorkflowSpec, estimates: &[u64]) -> Vec<f64> {
    let mut inverse_speed: Vec<(&str, Option<f64>)> = Vec::new();
    spec.tasks
        .iter()
        .zip(estimates)
        .map(|(task, &estimate)| {
            if let Some(by_worker) = &task.estimate_by_worker {
                let mut sum = 0.0;
                let mut count = 0usize;
                for id in placer.pool_workers(&task.pool) {
                    sum += super::runtime_on(estimate, Some(by_worker), placer.worker(id)) as f64;
                    count += 1;
                }
                if count > 0 {
                    return sum / count as f64;
                }
                return estimate as f64;
            }
            let known = inverse_speed.iter().find(|(pool, _)| *pool == &*task.pool);
            let mean = match known {
                Some(&(_, mean)) => mean,
                None => {
                    let mean = placer.mean_inverse_speed(&task.pool);
                    inverse_speed.push((&task.pool, mean));
                    mean
                }
            };
            estimate as f64 * mean.unwrap_or(1.0)
        })
        .collect()
}

/// Rounds a priority to a microsecond, so that paths of equal length tie exactly.
fn round(priority_ms: f64) -> f64 {
    (priority_ms * 1000.0).round() / 1000.0
}

/// CPOP's critical path: from the entry task of highest priority, each time the child whose
/// priority is that same highest value (the tasks on a longest path all share it).
fn critical_path(spec: &WorkflowSpec, priority: &[f64]) -> Vec<u32> {
    let dag = &spec.dag;
    let Some(entry) = dag
        .roots()
        .max_by(|&a, &b| priority[a as usize].total_cmp(&priority[b as usize]).then(b.cmp(&a)))
    else {
        return Vec::new();
    };
    let length = priority[entry as usize];
    let mut path = vec![entry];
    let mut at = entry;
    while let Some(&next) = dag
        .children(at)
        .iter()
        .find(|&&child| (priority[child as usize] - length).abs() < 1e-6)
    {
        path.push(next);
        at = next;
    }
    path
}

/// The worker that runs the whole critical path fastest (it must serve every pool on the path
/// with enough slots); ties go to the faster worker, then the lower id.
fn path_worker(placer: &Placer, spec: &WorkflowSpec, estimates: &[u64], path: &[u32]) -> Option<WorkerId> {
    let first = spec.tasks.get(*path.first()? as usize)?;
    let mut best: Option<(u64, f64, WorkerId)> = None;
    for id in placer.pool_workers(&first.pool) {
        let mut total = 0u64;
        let mut fits = true;
        for &task in path {
            let task_spec = &spec.tasks[task as usize];
            if !placer.can_run(id, &task_spec.pool, task_spec.resources.slots) {
                fits = false;
                break;
            }
            let by_worker = task_spec.estimate_by_worker.as_ref();
            total += super::runtime_on(estimates[task as usize], by_worker, placer.worker(id));
        }
        let speed = placer.worker(id).speed;
        let better = best
            .is_none_or(|(best_total, best_speed, best_id)| (total, -speed, id) < (best_total, -best_speed, best_id));
        if fits && better {
            best = Some((total, speed, id));
        }
    }
    best.map(|(_, _, id)| id)
}
