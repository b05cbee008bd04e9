//! Batch-mode mapping: Min-Min, Max-Min and Sufferage (Maheswaran et al. 1999; Braun et al.
//! 2001), over the tasks whose parents are placed.
//!
//! Each round looks at every *candidate* (a task whose parents are all placed) and its best
//! worker, the one where it would complete earliest ([`Placer::choose`]), and places one:
//!
//! - `min-min`: the candidate with the earliest best completion (short tasks first, each where
//!   it ends soonest);
//! - `max-min`: the candidate with the latest best completion (long tasks first);
//! - `sufferage`: the candidate that would lose the most if denied its best worker: the
//!   largest gap between its second-best and best completion (a task only one worker can run
//!   suffers without bound and goes first).
//!
//! Ties go to the task earlier in topological order. Its children whose parents are now all
//! placed become candidates. On independent tasks this is the classic heuristic; on a DAG it is
//! its usual list-scheduling extension.
//!
//! Rescanning every candidate each round costs O(candidates · workers) per decision. Instead,
//! each candidate's evaluation is kept in a heap, with the version of the worker(s) it was
//! computed against: placing a task on a worker only makes that worker later, so only the
//! candidates whose best (or, for sufferage, second-best) worker it was can change.
//!
//! - Of the *plain* tasks (ready from the start, naming no worker, asking for no resources)
//!   of one pool and slot count, only the shortest (`min-min`) or longest (`max-min`) is a
//!   candidate at a time: it completes first (last) wherever the others would go.
//! - `min-min` is exact lazily: an evaluation is a lower bound of the candidate's completion,
//!   so the top of the heap, re-evaluated if its worker changed, is the minimum once it is
//!   current.
//! - `max-min` and `sufferage` re-evaluate at once the candidates of the worker that changed,
//!   up to [`EAGER_REFRESH`] of them per decision (exact then); beyond that, a candidate is
//!   re-evaluated when it reaches the top of the heap, which keeps a decision cheap on
//!   100,000 candidates that all prefer the same workers.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use taskfleet_common::{Millis, WorkflowSpec};

use super::plan::{open_parents, topo_positions};
use super::{Choice, ParentAt, Placer, Plan, TaskShape, WorkerId, WorkerModel};
use crate::packing;

/// Most candidates re-evaluated at once after a decision (`max-min`, `sufferage`).
pub const EAGER_REFRESH: usize = 4096;

/// Which batch heuristic maps the tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Batch {
    MinMin,
    MaxMin,
    Sufferage,
}

/// A candidate's evaluation.
#[derive(Clone, Copy, Debug)]
struct Evaluated {
    best: Choice,
    best_version: u64,
    second: Option<(WorkerId, Millis, u64)>,
}

struct Batcher<'a> {
    spec: &'a WorkflowSpec,
    estimates: &'a [u64],
    done: &'a [bool],
    now: Millis,
    heuristic: Batch,
    /// Per worker: bumped each time a task is placed there.
    version: Vec<u64>,
    evaluated: Vec<Option<Evaluated>>,
    /// Per task: bumped at each evaluation; heap entries of older ones are dropped.
    stamps: Vec<u32>,
    /// Per worker: candidates whose best or second-best worker it was (may hold stale ones).
    interested: Vec<Vec<u32>>,
    heap: BinaryHeap<(u64, Reverse<u32>, u32, u32)>,
    position: Vec<u32>,
    parents: Vec<ParentAt>,
}

/// Maps `spec` by `heuristic` (see the module documentation), reserving the lanes it uses.
/// The plan's priority is how long before the plan's end a task starts.
pub(super) fn plan_batch(
    placer: &mut Placer,
    now: Millis,
    spec: &WorkflowSpec,
    estimates: &[u64],
    done: &[bool],
    heuristic: Batch,
) -> Plan {
    let n = spec.tasks.len();
    let dag = &spec.dag;
    let position = topo_positions(spec);
    let mut waiting = open_parents(spec, done);
    let mut result = Plan {
        worker: vec![None; n],
        start: vec![now; n],
        end: vec![now; n],
        priority: vec![0.0; n],
        critical_path: Vec::new(),
        makespan: now,
    };
    let mut batcher = Batcher {
        spec,
        estimates,
        done,
        now,
        heuristic,
        version: vec![0; placer.len()],
        evaluated: vec![None; n],
        stamps: vec![0; n],
        interested: vec![Vec::new(); placer.len()],
        heap: BinaryHeap::new(),
        position,
        parents: Vec::new(),
    };
    // Tasks no worker can run are set aside at once, so that their children still get a place.
    let mut unplaceable: Vec<u32> = Vec::new();
    let mut classes = Classes::default();
    for task in 0..n as u32 {
        if done[task as usize] || waiting[task as usize] > 0 {
            continue;
        }
        if !classes.admit(spec, estimates, &batcher.position, heuristic, task)
            && !batcher.evaluate(placer, &result, task)
        {
            unplaceable.push(task);
        }
    }
    for class in 0..classes.heads.len() {
        if let Some(head) = classes.next(class) {
            if !batcher.evaluate(placer, &result, head) {
                unplaceable.push(head);
            }
        }
    }
    loop {
        let placed = if let Some(task) = unplaceable.pop() {
            let idx = task as usize;
            let ready = batcher.ready_remote(&result, task);
            result.start[idx] = ready.max(now);
            result.end[idx] = result.start[idx].plus_ms(estimates[idx]);
            task
        } else {
            let Some((_, _, task, stamp)) = batcher.heap.pop() else {
                break;
            };
            let idx = task as usize;
            let Some(evaluated) = batcher.evaluated[idx].filter(|_| batcher.stamps[idx] == stamp) else {
                continue;
            };
            if batcher.is_stale(&evaluated) {
                if !batcher.evaluate(placer, &result, task) {
                    unplaceable.push(task);
                }
                continue;
            }
            let choice = evaluated.best;
            placer.reserve(choice, spec.tasks[idx].resources.slots);
            batcher.evaluated[idx] = None;
            result.worker[idx] = Some(choice.worker);
            result.start[idx] = choice.start;
            result.end[idx] = choice.end;
            batcher.version[choice.worker.index()] += 1;
            batcher.refresh(placer, &result, choice.worker, &mut unplaceable);
            task
        };
        result.makespan = result.makespan.max(result.end[placed as usize]);
        if let Some(next) = classes.after(placed) {
            if !batcher.evaluate(placer, &result, next) {
                unplaceable.push(next);
            }
        }
        for &child in dag.children(placed) {
            let left = &mut waiting[child as usize];
            *left -= 1;
            if *left == 0 && !done[child as usize] && !batcher.evaluate(placer, &result, child) {
                unplaceable.push(child);
            }
        }
    }
    for idx in (0..n).filter(|&idx| !done[idx]) {
        result.priority[idx] = result.makespan.0.saturating_sub(result.start[idx].0) as f64;
    }
    result
}

/// Min-Min and Max-Min over *plain* tasks: ready from the start, naming no worker and asking
/// for no resources. Two plain tasks of the same pool and slots see the same workers at the
/// same times, so the shorter one completes no later wherever it goes: the one with the
/// earliest best completion is the class's shortest (Min-Min), the one with the latest its
/// longest (Max-Min). Only each class's next task is a candidate, which keeps a decision
/// cheap when 100,000 tasks all prefer the same workers.
#[derive(Default)]
struct Classes {
    by_key: std::collections::HashMap<(std::sync::Arc<str>, u32), usize>,
    /// Per class: its tasks not yet candidates, next first.
    heads: Vec<BinaryHeap<(u64, Reverse<u32>, u32)>>,
    /// The class of each plain task that is a candidate.
    class_of: std::collections::HashMap<u32, usize>,
}

impl Classes {
    /// Takes `task` into its class if it is plain (and the heuristic orders by runtime).
    fn admit(&mut self, spec: &WorkflowSpec, estimates: &[u64], position: &[u32], heuristic: Batch, task: u32) -> bool {
        let spec_task = &spec.tasks[task as usize];
        let plain = spec_task.deps.is_empty() && spec_task.estimate_by_worker.is_none() && !packing::asks(spec_task);
        if !plain || heuristic == Batch::Sufferage {
            return false;
        }
        let key = (spec_task.pool.clone(), spec_task.resources.slots);
        let next = self.heads.len();
        let class = *self.by_key.entry(key).or_insert(next);
        if class == next {
            self.heads.push(BinaryHeap::new());
        }
        let estimate = estimates[task as usize];
        let order = if heuristic == Batch::MinMin {
            u64::MAX - estimate
        } else {
            estimate
        };
        self.heads[class].push((order, Reverse(position[task as usize]), task));
        true
    }

    /// The class's next task, now a candidate.
    fn next(&mut self, class: usize) -> Option<u32> {
        let (_, _, task) = self.heads[class].pop()?;
        self.class_of.insert(task, class);
        Some(task)
    }

    /// `placed` left the candidates: the next task of its class, if it had one.
    fn after(&mut self, placed: u32) -> Option<u32> {
        let class = self.class_of.remove(&placed)?;
        self.next(class)
    }
}

impl Batcher<'_> {
    /// Evaluates candidate `task` and queues it; `false` if no worker can run it.
    fn evaluate(&mut self, placer: &mut Placer, result: &Plan, task: u32) -> bool {
        let idx = task as usize;
        let spec_task = &self.spec.tasks[idx];
        super::plan::parents_in_plan(spec_task, result, self.done, &mut self.parents);
        let asks = packing::asks(spec_task);
        let could_take = |worker: &WorkerModel| packing::could_take(worker, spec_task);
        let shape = TaskShape {
            pool: &spec_task.pool,
            fits: asks.then_some(&could_take as &dyn Fn(&WorkerModel) -> bool),
            slots: spec_task.resources.slots,
            estimate_ms: self.estimates[idx],
            by_worker: spec_task.estimate_by_worker.as_ref(),
        };
        let sufferage = self.heuristic == Batch::Sufferage;
        let Some((best, second)) = placer.choose_two(self.now, shape, &self.parents, None, sufferage, false) else {
            self.evaluated[idx] = None;
            return false;
        };
        self.stamps[idx] = self.stamps[idx].wrapping_add(1);
        let evaluated = Evaluated {
            best,
            best_version: self.version[best.worker.index()],
            second: second.map(|(worker, end)| (worker, end, self.version[worker.index()])),
        };
        self.evaluated[idx] = Some(evaluated);
        let key = match self.heuristic {
            Batch::MinMin => u64::MAX - best.end.0,
            Batch::MaxMin => best.end.0,
            Batch::Sufferage => second.map_or(u64::MAX, |(_, end)| end.0.saturating_sub(best.end.0)),
        };
        self.heap
            .push((key, Reverse(self.position[idx]), task, self.stamps[idx]));
        if self.heuristic != Batch::MinMin {
            self.interested[best.worker.index()].push(task);
            if let Some((worker, _)) = second {
                self.interested[worker.index()].push(task);
            }
        }
        true
    }

    /// Whether a worker the evaluation rests on has changed since.
    fn is_stale(&self, evaluated: &Evaluated) -> bool {
        self.version[evaluated.best.worker.index()] != evaluated.best_version
            || (self.heuristic == Batch::Sufferage
                && evaluated
                    .second
                    .is_some_and(|(worker, _, version)| self.version[worker.index()] != version))
    }

    /// After a task was placed on `worker`: re-evaluates the candidates that rested on it
    /// (`max-min`, `sufferage`), up to [`EAGER_REFRESH`] of them.
    fn refresh(&mut self, placer: &mut Placer, result: &Plan, worker: WorkerId, unplaceable: &mut Vec<u32>) {
        if self.heuristic == Batch::MinMin {
            return;
        }
        let mut interested = std::mem::take(&mut self.interested[worker.index()]);
        interested.sort_unstable();
        interested.dedup();
        if interested.len() > EAGER_REFRESH {
            return; // Re-evaluated when they reach the top of the heap.
        }
        for task in interested {
            let stale = self.evaluated[task as usize].is_some_and(|evaluated| self.is_stale(&evaluated));
            if stale && !self.evaluate(placer, result, task) {
                unplaceable.push(task);
            }
        }
    }

    /// When a task's inputs are on a worker that ran none of its parents.
    fn ready_remote(&self, result: &Plan, task: u32) -> Millis {
        self.spec.tasks[task as usize]
            .deps
            .iter()
            .filter(|dep| !self.done[dep.task as usize])
            .map(|dep| result.end[dep.task as usize].plus_ms(u64::from(dep.transfer_ms)))
            .max()
            .unwrap_or(self.now)
    }
}
