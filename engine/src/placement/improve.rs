//! Plan improvement: a bounded local search on a finished plan, never worse than it.
//!
//! A plan is read as an assignment (task → worker) and an order (the planned starts). It is
//! evaluated by laying the tasks out in that order, each on its worker's earliest free
//! slots once its inputs are there, as the engine then runs it. The search looks at the
//! *critical chain* of the evaluated schedule (from the task that ends last, back through
//! the parent or the slot predecessor that decided each start) and tries, for each task on
//! it, every move to another worker that can run it and every swap with a task of another
//! worker. The first change that shortens the makespan (or keeps it and lowers the sum of the
//! tasks' ends, which frees the next critical worker) is kept, and the search starts over,
//! until no change helps or the time budget is spent. The improved plan replaces the original
//! only if its makespan is shorter.

use std::time::{Duration, Instant};

use taskfleet_common::{Millis, WorkflowSpec};

use super::{runtime_on, Placer, Plan, WorkerId};
use crate::packing;

/// What the search did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Improvement {
    /// Schedules evaluated.
    pub evaluations: u64,
    /// Changes kept.
    pub changes: u64,
    /// The makespan before and after, in milliseconds from the plan's start.
    pub before: Millis,
    pub after: Millis,
}

/// Improves `plan` (made on `before`, the fleet model as it was before planning) within
/// `budget`. When it finds a shorter plan, `placer` is reset to `before` with the new plan's
/// reservations and `plan` is rewritten; otherwise both are left as they are.
#[allow(clippy::too_many_arguments)]
pub(super) fn improve(
    placer: &mut Placer,
    before: &Placer,
    now: Millis,
    spec: &WorkflowSpec,
    estimates: &[u64],
    done: &[bool],
    plan: &mut Plan,
    budget: Duration,
) -> Improvement {
    let started = Instant::now();
    let n = spec.tasks.len();
    let mut order: Vec<u32> = (0..n as u32)
        .filter(|&task| !done[task as usize] && plan.worker[task as usize].is_some())
        .collect();
    let position = super::plan::topo_positions(spec);
    order.sort_by_key(|&task| (plan.start[task as usize], position[task as usize]));
    let mut improvement = Improvement {
        before: plan.makespan,
        after: plan.makespan,
        ..Improvement::default()
    };
    if order.len() < 2 || budget.is_zero() {
        return improvement;
    }
    // The workers each task may run on.
    let can_take = |idx: usize, id: WorkerId| {
        let task = &spec.tasks[idx];
        before.can_run(id, &task.pool, task.resources.slots)
            && (!packing::asks(task) || packing::could_take(before.worker(id), task))
    };
    // The workers of each pool, found when a task of the pool is first looked at.
    let mut pool_workers: std::collections::HashMap<&str, Vec<WorkerId>> = std::collections::HashMap::new();
    let mut layout = Layout::new(before, plan, spec, now);
    let mut assignment: Vec<Option<WorkerId>> = plan.worker.clone();
    let mut duration: Vec<u64> = (0..n)
        .map(|idx| assignment[idx].map_or(0, |worker| layout.runtime(spec, estimates, idx, worker)))
        .collect();
    // Per worker: the slot-time of its tasks. A worker cannot finish before its first slot is
    // free plus that work spread over its slots, which rules most changes out unevaluated.
    let slots_of = |idx: usize| u64::from(spec.tasks[idx].resources.slots.max(1));
    let mut work = vec![0u64; before.len()];
    for &task in &order {
        let idx = task as usize;
        work[assignment[idx].expect("planned").index()] += duration[idx] * slots_of(idx);
    }
    let first_free: Vec<(Millis, u64)> = (layout.initial.iter())
        .map(|lanes| (lanes.first().copied().unwrap_or(now), lanes.len().max(1) as u64))
        .collect();
    let floor = |work: u64, worker: WorkerId| {
        let (free, lanes) = first_free[worker.index()];
        free.max(now).plus_ms(work / lanes)
    };
    let mut current = layout.evaluate(spec, done, &order, &assignment, &duration);
    improvement.evaluations += 1;
    let mut best_plan = None;
    'search: loop {
        let chain = layout.critical_chain(&assignment);
        let mut found = false;
        'chain: for &task in &chain {
            if started.elapsed() > budget {
                break 'search;
            }
            let idx = task as usize;
            let from = assignment[idx].expect("planned");
            // Moves.
            let pool = &*spec.tasks[idx].pool;
            let workers = pool_workers
                .entry(pool)
                .or_insert_with(|| before.pool_workers(pool).collect());
            for &to in workers.iter() {
                if to == from || !can_take(idx, to) {
                    continue;
                }
                let moved = layout.runtime(spec, estimates, idx, to);
                if floor(work[to.index()] + moved * slots_of(idx), to) >= current.0 {
                    continue;
                }
                if started.elapsed() > budget {
                    break 'search;
                }
                let old = duration[idx];
                assignment[idx] = Some(to);
                duration[idx] = moved;
                let score = layout.evaluate(spec, done, &order, &assignment, &duration);
                improvement.evaluations += 1;
                if score < current {
                    current = score;
                    work[from.index()] -= old * slots_of(idx);
                    work[to.index()] += moved * slots_of(idx);
                    found = true;
                    break 'chain;
                }
                assignment[idx] = Some(from);
                duration[idx] = old;
            }
            // Swaps with a task of another worker that each can run on the other's.
            for (looked, &other) in order.iter().enumerate() {
                if looked % 1024 == 1023 && started.elapsed() > budget {
                    break 'search;
                }
                let other_idx = other as usize;
                let Some(there) = assignment[other_idx] else {
                    continue;
                };
                if there == from || !can_take(idx, there) || !can_take(other_idx, from) {
                    continue;
                }
                let (old_a, old_b) = (duration[idx], duration[other_idx]);
                let (new_a, new_b) = (
                    layout.runtime(spec, estimates, idx, there),
                    layout.runtime(spec, estimates, other_idx, from),
                );
                let work_there = work[there.index()] - old_b * slots_of(other_idx) + new_a * slots_of(idx);
                let work_from = work[from.index()] - old_a * slots_of(idx) + new_b * slots_of(other_idx);
                if floor(work_there, there) >= current.0 || floor(work_from, from) >= current.0 {
                    continue;
                }
                if started.elapsed() > budget {
                    break 'search;
                }
                assignment[idx] = Some(there);
                assignment[other_idx] = Some(from);
                duration[idx] = new_a;
                duration[other_idx] = new_b;
                let score = layout.evaluate(spec, done, &order, &assignment, &duration);
                improvement.evaluations += 1;
                if score < current {
                    current = score;
                    work[there.index()] = work_there;
                    work[from.index()] = work_from;
                    found = true;
                    break 'chain;
                }
                assignment[idx] = Some(from);
                assignment[other_idx] = Some(there);
                duration[idx] = old_a;
                duration[other_idx] = old_b;
            }
        }
        if !found {
            break;
        }
        // The layout is the improved schedule's: its chain is looked at next.
        improvement.changes += 1;
        if current.0 < plan.makespan {
            best_plan = Some((assignment.clone(), current));
        }
    }
    let Some((assignment, score)) = best_plan.filter(|(_, score)| score.0 < plan.makespan) else {
        return improvement;
    };
    let duration: Vec<u64> = (0..n)
        .map(|idx| assignment[idx].map_or(0, |worker| layout.runtime(spec, estimates, idx, worker)))
        .collect();
    layout.evaluate(spec, done, &order, &assignment, &duration);
    *placer = before.clone();
    for &task in &order {
        let idx = task as usize;
        let worker = assignment[idx].expect("planned");
        let choice = super::Choice {
            worker,
            start: layout.start[idx],
            end: layout.end[idx],
        };
        placer.reserve(choice, spec.tasks[idx].resources.slots);
        plan.worker[idx] = Some(worker);
        plan.start[idx] = layout.start[idx];
        plan.end[idx] = layout.end[idx];
    }
    plan.makespan = score.0;
    for idx in (0..n).filter(|&idx| !done[idx]) {
        plan.makespan = plan.makespan.max(plan.end[idx]);
    }
    improvement.after = plan.makespan;
    improvement
}

/// Evaluates assignments: lays the tasks out and remembers what decided each start.
struct Layout<'a> {
    before: &'a Placer,
    now: Millis,
    /// Per worker: its slots' free times when planning began, ascending.
    initial: Vec<Vec<Millis>>,
    /// Per worker: its slots during an evaluation, (free at, task that frees it) ascending.
    lanes: Vec<Vec<(Millis, Option<u32>)>>,
    start: Vec<Millis>,
    end: Vec<Millis>,
    /// What decided each task's start: a parent, or the task before it on its slot.
    decided_by: Vec<Option<u32>>,
    /// Tasks planned on no worker keep the plan's times.
    fixed_start: Vec<Millis>,
    fixed_end: Vec<Millis>,
    /// The planned task that ended last in the latest evaluation.
    last: Option<u32>,
}

impl<'a> Layout<'a> {
    fn new(before: &'a Placer, plan: &Plan, spec: &WorkflowSpec, now: Millis) -> Layout<'a> {
        let n = spec.tasks.len();
        let initial = (0..before.len())
            .map(|id| before.lane_frees(WorkerId::new(id)))
            .collect::<Vec<_>>();
        let lanes = initial.iter().map(|lanes| Vec::with_capacity(lanes.len())).collect();
        Layout {
            before,
            now,
            initial,
            lanes,
            start: plan.start.clone(),
            end: plan.end.clone(),
            decided_by: vec![None; n],
            fixed_start: plan.start.clone(),
            fixed_end: plan.end.clone(),
            last: None,
        }
    }

    fn runtime(&self, spec: &WorkflowSpec, estimates: &[u64], idx: usize, worker: WorkerId) -> u64 {
        runtime_on(
            estimates[idx],
            spec.tasks[idx].estimate_by_worker.as_ref(),
            self.before.worker(worker),
        )
    }

    /// Lays out `order` on `assignment`; returns (makespan, sum of ends).
    fn evaluate(
        &mut self,
        spec: &WorkflowSpec,
        done: &[bool],
        order: &[u32],
        assignment: &[Option<WorkerId>],
        duration: &[u64],
    ) -> (Millis, u64) {
        for (lanes, initial) in self.lanes.iter_mut().zip(&self.initial) {
            lanes.clear();
            lanes.extend(initial.iter().map(|&free| (free, None)));
        }
        let mut makespan = self.now;
        let mut sum = 0u64;
        self.last = None;
        let mut last_end = Millis(0);
        for (idx, fixed) in self.fixed_end.iter().enumerate() {
            if assignment[idx].is_none() && !done[idx] {
                makespan = makespan.max(*fixed);
                self.start[idx] = self.fixed_start[idx];
                self.end[idx] = *fixed;
            }
        }
        for &task in order {
            let idx = task as usize;
            let worker = assignment[idx].expect("planned");
            let slots = spec.tasks[idx].resources.slots.max(1) as usize;
            let mut ready = self.now;
            let mut decided_by = None;
            for dep in &spec.tasks[idx].deps {
                let parent = dep.task as usize;
                if done[parent] {
                    continue;
                }
                let transfer = if assignment[parent] == Some(worker) {
                    0
                } else {
                    u64::from(dep.transfer_ms)
                };
                let at = self.end[parent].plus_ms(transfer);
                if at > ready {
                    ready = at;
                    decided_by = Some(dep.task);
                }
            }
            let lanes = &mut self.lanes[worker.index()];
            let (free, holder) = lanes[slots.min(lanes.len()) - 1];
            if free > ready {
                ready = free;
                decided_by = holder;
            }
            let end = ready.plus_ms(duration[idx]);
            for lane in lanes.iter_mut().take(slots) {
                *lane = (end, Some(task));
            }
            lanes.sort_unstable_by_key(|&(free, _)| free);
            self.start[idx] = ready;
            self.end[idx] = end;
            self.decided_by[idx] = decided_by;
            makespan = makespan.max(end);
            sum += end.0;
            if self.last.is_none() || end > last_end {
                self.last = Some(task);
                last_end = end;
            }
        }
        (makespan, sum)
    }

    /// The planned tasks that decided the last end, from the last back to the first.
    fn critical_chain(&self, assignment: &[Option<WorkerId>]) -> Vec<u32> {
        let mut chain = Vec::new();
        let mut at = self.last;
        while let Some(task) = at {
            if chain.len() > self.end.len() || assignment[task as usize].is_none() {
                break;
            }
            chain.push(task);
            at = self.decided_by[task as usize];
        }
        chain
    }
}
