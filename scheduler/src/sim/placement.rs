//! The runtime model and the simulator's placement: which worker runs a dispatched task.
//!
//! A task's runtime on worker `W` is `estimate_by_worker[W]` when the task declares one for
//! `W` (by its full name, else by its entry's name: unrelated machines), else its `estimate`
//! (or the prior) divided by `W`'s speed, rounded to the millisecond. A dependency's transfer
//! cost is paid only when parent and child run on different workers.

use std::time::Duration;

use taskfleet_common::TaskSpec;

use super::fleet::SimWorker;

/// A task's runtime on `worker` in milliseconds, before any stochastic noise.
pub fn runtime_ms(task: &TaskSpec, worker: &SimWorker, default_estimate: Duration) -> u64 {
    if let Some(by_worker) = &task.estimate_by_worker {
        if let Some(estimate) = by_worker.get(&worker.name).or_else(|| by_worker.get(&worker.base)) {
            return estimate.as_millis() as u64;
        }
    }
    let estimate = task.estimate.unwrap_or(default_estimate).as_millis() as u64;
    (estimate as f64 / worker.speed).round() as u64
}

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

/// A finished parent of the task being placed: where it ran, when it ended, and the cost of
/// moving its output elsewhere.
#[derive(Clone, Copy, Debug)]
pub(super) struct ParentDone {
    pub worker: usize,
    pub end: u64,
    pub transfer_ms: u64,
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
    parents: Vec<ParentDone>,
    /// The distinct workers the parents ran on.
    parent_list: Vec<usize>,
    /// Workers the task's `estimate_by_worker` names.
    named: Vec<usize>,
    /// Workers evaluated one by one: those that ran a parent, and those named.
    special: Vec<usize>,
    /// Per worker: the stamp of the placement for which `ready_at` holds (it ran a parent).
    mark: Vec<u64>,
    ready_at: Vec<u64>,
    /// Per worker: the stamp of the placement for which it is in `special`.
    special_mark: Vec<u64>,
    stamp: u64,
}

impl Scratch {
    pub(super) fn new(n_workers: usize) -> Scratch {
        Scratch {
            mark: vec![0; n_workers],
            ready_at: vec![0; n_workers],
            special_mark: vec![0; n_workers],
            ..Scratch::default()
        }
    }

    /// The buffers the caller fills before calling [`place`]: the task's finished parents, and
    /// the workers on which its runtime may not follow speed (named in `estimate_by_worker`).
    pub(super) fn inputs(&mut self) -> (&mut Vec<ParentDone>, &mut Vec<usize>) {
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
/// This is the one place where a worker is chosen: placement-aware policies (minimum
/// completion time, HEFT) plug in here, while the engine keeps deciding which task goes next.
pub(super) fn place(
    now: u64,
    pool: &PoolWorkers,
    free: &[u32],
    slots: u32,
    scratch: &mut Scratch,
    runtime: impl Fn(usize) -> u64,
) -> Option<Placement> {
    let remote_ready = data_ready(scratch);
    let stamp = scratch.stamp;
    scratch.special.clear();
    for &worker in scratch.parent_list.iter().chain(&scratch.named) {
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
        if pool.rank[worker] != u32::MAX && free[worker] >= slots {
            let own = scratch.mark[worker] == stamp;
            consider(worker, if own { scratch.ready_at[worker] } else { remote_ready });
        }
    }
    let first_free = pool
        .by_speed
        .iter()
        .find(|&&worker| free[worker] >= slots && scratch.special_mark[worker] != stamp);
    if let Some(&worker) = first_free {
        consider(worker, remote_ready);
    }
    best.map(|(_, _, placement)| placement)
}

/// When the parents' outputs are on each worker: returns the time for a worker that ran none
/// of them (every parent's end plus its transfer) and leaves, for each worker that ran some
/// (listed in `scratch.parent_list`), its own time in `scratch.ready_at`, marked with the
/// current stamp. O(parents log parents).
fn data_ready(scratch: &mut Scratch) -> u64 {
    scratch.stamp += 1;
    scratch.parent_list.clear();
    let parents = &mut scratch.parents;
    parents.sort_unstable_by_key(|parent| parent.worker);
    // Per group of parents on one worker: the latest end there, and the latest arrival
    // elsewhere. A worker's time is its own latest end and the latest arrival of the others.
    let mut best_remote = (0u64, usize::MAX);
    let mut second_remote = 0u64;
    let mut start = 0;
    while start < parents.len() {
        let worker = parents[start].worker;
        let mut local = 0;
        let mut remote = 0;
        let mut end = start;
        while end < parents.len() && parents[end].worker == worker {
            local = local.max(parents[end].end);
            remote = remote.max(parents[end].end + parents[end].transfer_ms);
            end += 1;
        }
        scratch.parent_list.push(worker);
        scratch.mark[worker] = scratch.stamp;
        scratch.ready_at[worker] = local;
        if remote > best_remote.0 {
            second_remote = best_remote.0;
            best_remote = (remote, worker);
        } else {
            second_remote = second_remote.max(remote);
        }
        start = end;
    }
    for &worker in &scratch.parent_list {
        let others = if best_remote.1 == worker {
            second_remote
        } else {
            best_remote.0
        };
        scratch.ready_at[worker] = scratch.ready_at[worker].max(others);
    }
    best_remote.0
}
