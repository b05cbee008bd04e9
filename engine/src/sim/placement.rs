//! The runtime model and the simulator's placement: which worker runs a dispatched task.
//!
//! A task's runtime on worker `W` is `estimate_by_worker[W]` when the task declares one for
//! `W` (by its full name, else by its entry's name: unrelated machines), else its `estimate`
//! (or the prior) divided by `W`'s speed, rounded to the millisecond. A dependency's transfer
//! cost is paid only when parent and child run on different workers.

use std::time::Duration;

use taskfleet_common::resources::ResourceSet;
use taskfleet_common::TaskSpec;

use super::fleet::SimWorker;
use crate::packing;
use crate::placement::{rated_by_fields, runtime_on, DataReady, ParentAt, WorkerId};

/// What a simulated worker offers and what the tasks that ask for resources hold of it, for
/// the fleet files that declare capacity. Best-effort tasks count only their slots, as in the
/// live scheduler ([`crate::packing`]).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Room {
    capacity: ResourceSet,
    used: ResourceSet,
}

impl Room {
    /// All of `worker`'s room.
    pub(super) fn of(worker: &SimWorker) -> Room {
        Room {
            capacity: worker.capacity(),
            used: ResourceSet::default(),
        }
    }

    /// Whether `task`'s request fits in what is left.
    pub(super) fn fits(&self, task: &TaskSpec) -> bool {
        !packing::asks(task) || packing::fits(&task.resources, &self.capacity, &self.used)
    }

    /// Whether `task`'s request would fit in all of it.
    pub(super) fn could_ever_fit(&self, task: &TaskSpec) -> bool {
        !packing::asks(task) || packing::fits(&task.resources, &self.capacity, &ResourceSet::default())
    }

    /// Takes (`sign` 1) or gives back (`sign` -1) what `task` asks for.
    pub(super) fn take(&mut self, task: &TaskSpec, sign: i8) {
        if !packing::asks(task) {
            return;
        }
        let request = task.resources.request();
        if sign > 0 {
            self.used.add(&request);
        } else {
            self.used.sub(&request);
        }
    }
}

/// A task's runtime on `worker` in milliseconds, before any stochastic noise: the live
/// scheduler's rule ([`runtime_on`]) with the task's estimate, or the prior.
pub fn runtime_ms(task: &TaskSpec, worker: &SimWorker, default_estimate: Duration) -> u64 {
    let estimate_ms = task.estimate.unwrap_or(default_estimate).as_millis() as u64;
    runtime_on(estimate_ms, task.estimate_by_worker.as_ref(), worker)
}

rated_by_fields!(SimWorker);

/// The workers serving a pool, fastest first (ties: fleet order), with each one's rank in
/// that order (`u32::MAX` for workers not serving the pool).
#[derive(Clone, Debug)]
pub(super) struct PoolWorkers {
    pub by_speed: Vec<usize>,
    pub rank: Vec<u32>,
}

impl PoolWorkers {
    pub(super) fn new(workers: &[SimWorker], pool: &str) -> PoolWorkers {
        let mut by_speed: Vec<usize> = (0..workers.len())
            .filter(|&w| workers[w].pools.iter().any(|p| p == pool))
            .collect();
        by_speed.sort_by(|&a, &b| workers[b].speed.total_cmp(&workers[a].speed).then(a.cmp(&b)));
        let mut rank = vec![u32::MAX; workers.len()];
        for (position, &worker) in by_speed.iter().enumerate() {
            rank[worker] = position as u32;
        }
        PoolWorkers { by_speed, rank }
    }
}

/// Where and when a task runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Placement {
    pub worker: usize,
    pub start: u64,
    pub end: u64,
}

/// Reusable buffers, so placing a task allocates nothing.
#[derive(Default)]
pub(super) struct Scratch {
    parents: Vec<ParentAt>,
    /// Workers the task's `estimate_by_worker` names.
    named: Vec<usize>,
    /// Workers evaluated one by one: those that ran a parent, and those named.
    special: Vec<usize>,
    /// Per worker: the stamp of the placement for which it is in `special`.
    special_mark: Vec<u64>,
    stamp: u64,
    data: DataReady,
}

impl Scratch {
    pub(super) fn new(n_workers: usize) -> Scratch {
        let mut data = DataReady::default();
        data.resize(n_workers);
        Scratch {
            special_mark: vec![0; n_workers],
            data,
            ..Scratch::default()
        }
    }

    /// The buffers the caller fills before calling [`place`]: the task's finished parents, and
    /// the workers on which its runtime may not follow speed (named in `estimate_by_worker`).
    pub(super) fn inputs(&mut self) -> (&mut Vec<ParentAt>, &mut Vec<usize>) {
        self.parents.clear();
        self.named.clear();
        (&mut self.parents, &mut self.named)
    }
}

/// The simulator's placement: among the workers of the task's pool with `slots` free now, the
/// one where the task would finish earliest, counting its runtime there (`runtime(worker)`)
/// and when its parents' outputs can be there (a parent on another worker costs the
/// dependency's transfer). Ties go to the faster worker, then to the one listed first. `None`
/// if no worker of the pool has the slots free.
///
/// The runtime must not grow with speed except on the workers the caller listed as named
/// (`Scratch::inputs`). Workers that ran a parent and named workers are evaluated one by one;
/// all the others are ready at the same time and the fastest free one is the best of them,
/// so the scan stops there: O(parents + named + workers skipped for want of free slots).
///
/// This stands in for "any free worker of the pool takes it" under the policies that do not
/// place tasks; placement-aware policies choose in the engine (`crate::placement`).
pub(super) fn place(
    now: u64,
    pool: &PoolWorkers,
    fits: impl Fn(usize) -> bool,
    scratch: &mut Scratch,
    runtime: impl Fn(usize) -> u64,
) -> Option<Placement> {
    let remote_ready = scratch.data.compute(&scratch.parents);
    scratch.stamp += 1;
    let stamp = scratch.stamp;
    scratch.special.clear();
    let parent_workers = scratch.data.parent_workers().iter().map(|&worker| worker.index());
    for worker in parent_workers.chain(scratch.named.iter().copied()) {
        if scratch.special_mark[worker] != stamp {
            scratch.special_mark[worker] = stamp;
            scratch.special.push(worker);
        }
    }
    let mut best: Option<(u64, u32, Placement)> = None;
    let mut consider = |worker: usize, ready: u64| {
        let start = now.max(ready);
        let end = start + runtime(worker);
        let key = (end, pool.rank[worker]);
        if best.is_none_or(|(end, rank, _)| key < (end, rank)) {
            best = Some((key.0, key.1, Placement { worker, start, end }));
        }
    };
    for &worker in &scratch.special {
        if pool.rank[worker] != u32::MAX && fits(worker) {
            let ready = scratch.data.local(WorkerId::new(worker)).unwrap_or(remote_ready);
            consider(worker, ready.0);
        }
    }
    let first_free = pool
        .by_speed
        .iter()
        .find(|&&worker| scratch.special_mark[worker] != stamp && fits(worker));
    if let Some(&worker) = first_free {
        consider(worker, remote_ready.0);
    }
    best.map(|(_, _, placement)| placement)
}
