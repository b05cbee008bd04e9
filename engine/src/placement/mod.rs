//! Where tasks run: the fleet model of the placement-aware policies (`mct`, `heft`, `cpop`).
//!
//! Most policies only decide which ready task goes next and let any free worker of its pool
//! take it. Placement-aware policies also decide *where* it goes, from a model of the fleet:
//! each worker's pools, slots and relative speed, and for each slot (a *lane*) the time at
//! which it is expected to be free, given what was placed on it. The engine sends such a task
//! to its worker's own queue.
//!
//! A task's runtime on worker `W` is its `estimate_by_worker` entry for `W` (by the worker's
//! name, else by its base name) when it has one, else its estimate divided by `W`'s speed. A
//! dependency's transfer cost is paid when parent and child run on different workers.
//!
//! [`Placer::choose`] finds the worker where a task would complete earliest (minimum
//! completion time): `max(now, lane free, parents' data there) + runtime there`. Workers are
//! kept per pool in groups of equal speed, ordered by their earliest free lane, so a decision
//! costs O(parents + named workers + speed groups · log workers) rather than a scan of the
//! fleet: within a group, every worker that ran no parent sees the same data-ready time and
//! the same runtime, so the one free earliest is the best of them.
//!
//! [`plan`] lays out a whole workflow ahead of time (HEFT, CPOP, or a batch heuristic:
//! Min-Min, Max-Min, Sufferage) with the same rule, and [`plan_improved`] improves such a plan
//! by a bounded local search.

mod batch;
mod choose;
mod data;
mod improve;
mod model;
mod plan;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use taskfleet_common::Millis;

pub use batch::{Batch, EAGER_REFRESH};
pub(crate) use data::DataReady;
pub use improve::Improvement;
pub(crate) use model::rated_by_fields;
pub use model::{runtime_on, Choice, ParentAt, Rated, TaskShape, WorkerId, WorkerModel};
pub use plan::{plan, plan_improved, Plan, PlanKind, INSERTION_MAX_WORKERS};

/// One worker of the model. Workers are never removed (their ids stay valid); a worker that
/// left is marked gone and is no longer chosen.
#[derive(Clone, Debug)]
struct PlacedWorker {
    model: WorkerModel,
    alive: bool,
    /// When each slot is expected to be free, ascending.
    lanes: Vec<Millis>,
    /// Tasks sent to the worker and not finished.
    held: u32,
}

impl PlacedWorker {
    /// The time at which `slots` lanes are free.
    fn free_at(&self, slots: u32) -> Millis {
        self.lanes[slots as usize - 1]
    }

    fn has_room(&self, room_per_slot: Option<u32>) -> bool {
        room_per_slot.is_none_or(|room| self.held < self.model.slots * room)
    }
}

/// A pool's workers, grouped by speed (fastest first); within a group, alive workers (only
/// those with room, unless full workers are chosen too) are ordered by their earliest free lane.
#[derive(Clone, Debug, Default)]
struct PoolGroups {
    groups: Vec<SpeedGroup>,
    /// Alive workers with room.
    roomy: usize,
}

#[derive(Clone, Debug)]
struct SpeedGroup {
    speed: f64,
    by_free: BTreeSet<(Millis, WorkerId)>,
}

/// The fleet model. See the module documentation.
#[derive(Clone, Debug)]
pub struct Placer {
    workers: Vec<PlacedWorker>,
    by_name: HashMap<Arc<str>, Vec<WorkerId>>,
    pools: HashMap<Arc<str>, PoolGroups>,
    /// How many tasks per slot a worker may hold (running and queued) before it is full;
    /// `None`: no limit (planned placement decides ahead of time).
    room_per_slot: Option<u32>,
    /// Full workers are still chosen (a task may then wait for its worker to have room);
    /// otherwise they are skipped.
    choose_full: bool,
    scratch: Scratch,
    /// Counts the changes of the fleet (workers coming, going or changing).
    generation: u64,
}

/// Reusable buffers, so a decision allocates nothing.
#[derive(Clone, Debug, Default)]
struct Scratch {
    data: DataReady,
    /// Per worker: the stamp of the decision for which it is evaluated on its own.
    special_mark: Vec<u64>,
    special: Vec<WorkerId>,
    stamp: u64,
}

impl Placer {
    /// An empty model; `room_per_slot` bounds what a worker holds (see [`Placer`]).
    pub fn new(room_per_slot: Option<u32>) -> Placer {
        Placer {
            workers: Vec::new(),
            by_name: HashMap::new(),
            pools: HashMap::new(),
            room_per_slot,
            choose_full: false,
            scratch: Scratch::default(),
            generation: 0,
        }
    }

    /// The same model, choosing full workers too: completion time decides, and a task whose
    /// best worker is full waits for it ([`Placer::has_room_on`] tells).
    pub fn choosing_full_workers(mut self) -> Placer {
        self.choose_full = true;
        self.rebuild_groups();
        self
    }

    /// A model of `workers`, all free at time 0.
    pub fn with_workers(room_per_slot: Option<u32>, workers: &[WorkerModel]) -> Placer {
        let mut placer = Placer::new(room_per_slot);
        placer.set_workers(workers, Millis(0));
        placer
    }

    /// Makes the model's fleet `workers`: new ones are free from `now`, known ones keep their
    /// lanes (unless their slots changed), and the others are gone. Cheap when nothing changed.
    pub fn set_workers(&mut self, workers: &[WorkerModel], now: Millis) {
        let mut seen = vec![false; self.workers.len()];
        let mut changed = false;
        for model in workers {
            match self.find_named(&model.name) {
                Some(id) if self.workers[id.index()].model == *model => {
                    seen[id.index()] = true;
                    if !self.workers[id.index()].alive {
                        self.workers[id.index()].alive = true;
                        self.workers[id.index()].lanes = vec![now; model.slots.max(1) as usize];
                        self.workers[id.index()].held = 0;
                        changed = true;
                    }
                }
                Some(id) => {
                    seen[id.index()] = true;
                    let placed = &mut self.workers[id.index()];
                    placed.model = model.clone();
                    placed.alive = true;
                    placed.lanes = vec![now; model.slots.max(1) as usize];
                    changed = true;
                }
                None => {
                    let id = WorkerId::new(self.workers.len());
                    self.workers.push(PlacedWorker {
                        model: model.clone(),
                        alive: true,
                        lanes: vec![now; model.slots.max(1) as usize],
                        held: 0,
                    });
                    seen.push(true);
                    self.by_name.entry(model.name.clone()).or_default().push(id);
                    if model.base != model.name {
                        self.by_name.entry(model.base.clone()).or_default().push(id);
                    }
                    changed = true;
                }
            }
        }
        for (id, seen) in seen.into_iter().enumerate() {
            if !seen && self.workers[id].alive {
                self.workers[id].alive = false;
                changed = true;
            }
        }
        if changed {
            self.rebuild_groups();
        }
    }

    /// Marks a worker gone (it missed its lease); it is no longer chosen.
    pub fn worker_gone(&mut self, name: &str) {
        if let Some(id) = self.find_named(name) {
            if self.workers[id.index()].alive {
                self.workers[id.index()].alive = false;
                self.rebuild_groups();
            }
        }
    }

    /// The id of the worker named exactly `name`.
    pub fn find_named(&self, name: &str) -> Option<WorkerId> {
        self.by_name
            .get(name)?
            .iter()
            .copied()
            .find(|&id| &*self.workers[id.index()].model.name == name)
    }

    /// The worker with id `id`.
    pub fn worker(&self, id: WorkerId) -> &WorkerModel {
        &self.workers[id.index()].model
    }

    /// When each lane of worker `id` is expected to be free, earliest first.
    pub fn lane_frees(&self, id: WorkerId) -> Vec<Millis> {
        self.workers[id.index()].lanes.clone()
    }

    /// Sets worker `id`'s lanes back to `lanes` (from [`Placer::lane_frees`]).
    pub(crate) fn restore_lanes(&mut self, id: WorkerId, lanes: Vec<Millis>) {
        self.update_lanes(id, |placed| placed.lanes = lanes);
    }

    /// A lane of worker `id` that was to be free at `from` is now busy until `to`.
    pub(crate) fn extend_lane(&mut self, id: WorkerId, from: Millis, to: Millis) {
        self.update_lanes(id, |placed| {
            if let Some(lane) = placed.lanes.iter_mut().find(|lane| **lane == from) {
                *lane = to;
            }
        });
    }

    /// When `slots` lanes of worker `id` are expected to be free.
    pub fn lane_free(&self, id: WorkerId, slots: u32) -> Millis {
        self.workers[id.index()].free_at(slots)
    }

    /// Whether worker `id` is alive.
    pub fn is_alive(&self, id: WorkerId) -> bool {
        self.workers[id.index()].alive
    }

    /// Whether worker `id` holds fewer than `room_per_slot` tasks per slot.
    pub fn has_room_on(&self, id: WorkerId, room_per_slot: u32) -> bool {
        self.workers[id.index()].has_room(Some(room_per_slot))
    }

    /// Whether worker `id` is alive and can run a task of `pool` needing `slots`.
    pub fn can_run(&self, id: WorkerId, pool: &str, slots: u32) -> bool {
        let placed = &self.workers[id.index()];
        placed.alive && placed.model.slots >= slots && placed.model.pools.iter().any(|p| &**p == pool)
    }

    /// Number of workers known (alive or gone).
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// A number that changes whenever the fleet does (0 before any worker is known).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether no worker was ever known.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// The alive workers serving `pool`, by id.
    pub(crate) fn pool_workers<'a>(&'a self, pool: &'a str) -> impl Iterator<Item = WorkerId> + 'a {
        self.workers
            .iter()
            .enumerate()
            .filter(move |(_, placed)| placed.alive && placed.model.pools.iter().any(|p| &**p == pool))
            .map(|(id, _)| WorkerId::new(id))
    }

    /// `(speed, slots)` of every alive worker.
    pub fn alive_slots(&self) -> impl Iterator<Item = (f64, usize)> + '_ {
        self.workers
            .iter()
            .filter(|placed| placed.alive)
            .map(|placed| (placed.model.speed, placed.model.slots as usize))
    }

    /// The mean of `1 / speed` over the alive workers of `pool` (`None` if there are none).
    pub(crate) fn mean_inverse_speed(&self, pool: &str) -> Option<f64> {
        let mut sum = 0.0;
        let mut n = 0usize;
        for id in self.pool_workers(pool) {
            sum += 1.0 / self.workers[id.index()].model.speed;
            n += 1;
        }
        (n > 0).then(|| sum / n as f64)
    }

    /// Whether some alive worker of `pool` has room for another task.
    pub fn has_room(&self, pool: &str) -> bool {
        self.pools.get(pool).is_some_and(|groups| groups.roomy > 0)
    }

    /// The worker where a task would complete earliest, and when it would start and end there,
    /// among the alive workers of its pool with `slots` slots and room. Ties go to the faster
    /// worker, then to the lower id. `parents` are where the task's inputs are. `None` if no
    /// such worker exists.
    pub fn choose(&mut self, now: Millis, task: TaskShape<'_>, parents: &[ParentAt]) -> Option<Choice> {
        self.choose_among(now, task, parents, None)
    }

    /// Like [`Placer::choose`], among the workers with room only, also when full workers are
    /// chosen otherwise (for a task whose runtime is not known, which should not wait).
    pub fn choose_with_room(&mut self, now: Millis, task: TaskShape<'_>, parents: &[ParentAt]) -> Option<Choice> {
        self.choose_two(now, task, parents, None, false, true)
            .map(|(best, _)| best)
    }

    /// Reserves `slots` lanes of the chosen worker until the choice's end.
    pub fn reserve(&mut self, choice: Choice, slots: u32) {
        self.update_lanes(choice.worker, |placed| {
            for lane in placed.lanes.iter_mut().take(slots as usize) {
                *lane = choice.end;
            }
        });
    }

    /// A task was sent to worker `id` (counts against its room).
    pub fn hold(&mut self, id: WorkerId) {
        self.update_lanes(id, |placed| placed.held += 1);
    }

    /// A task sent to worker `id` ended at `now`. Lanes it reserved until `expected_end` and
    /// that nothing else was reserved on since are free from `now`.
    pub fn release(&mut self, id: WorkerId, slots: u32, expected_end: Millis, now: Millis) {
        self.update_lanes(id, |placed| {
            placed.held = placed.held.saturating_sub(1);
            let lanes = &mut placed.lanes;
            let mut left = slots;
            for lane in lanes.iter_mut() {
                if left > 0 && *lane == expected_end {
                    *lane = now;
                    left -= 1;
                }
            }
        });
    }

    /// Changes a worker's lanes or load and keeps its place in its groups.
    fn update_lanes(&mut self, id: WorkerId, change: impl FnOnce(&mut PlacedWorker)) {
        self.rebuild_worker(id, true);
        let placed = &mut self.workers[id.index()];
        change(placed);
        placed.lanes.sort_unstable();
        self.rebuild_worker(id, false);
    }

    /// Removes worker `id` from its groups (`remove`), or puts it back if it is alive and has
    /// room.
    fn rebuild_worker(&mut self, id: WorkerId, remove: bool) {
        let placed = &self.workers[id.index()];
        let key = (placed.lanes[0], id);
        let roomy = placed.alive && placed.has_room(self.room_per_slot);
        let listed = placed.alive && (roomy || self.choose_full);
        for pool in &placed.model.pools {
            let Some(groups) = self.pools.get_mut(pool) else {
                continue;
            };
            if roomy {
                if remove {
                    groups.roomy -= 1;
                } else {
                    groups.roomy += 1;
                }
            }
            let Some(group) = groups.groups.iter_mut().find(|group| group.speed == placed.model.speed) else {
                continue;
            };
            if remove {
                group.by_free.remove(&key);
            } else if listed {
                group.by_free.insert(key);
            }
        }
    }

    fn rebuild_groups(&mut self) {
        self.generation += 1;
        self.pools.clear();
        let n = self.workers.len();
        self.scratch.data.resize(n);
        self.scratch.special_mark.resize(n, 0);
        for (id, placed) in self.workers.iter().enumerate() {
            if !placed.alive {
                continue;
            }
            for pool in &placed.model.pools {
                let groups = self.pools.entry(pool.clone()).or_default();
                let position = groups.groups.iter().position(|group| group.speed == placed.model.speed);
                let group = match position {
                    Some(position) => &mut groups.groups[position],
                    None => {
                        groups.groups.push(SpeedGroup {
                            speed: placed.model.speed,
                            by_free: BTreeSet::new(),
                        });
                        groups.groups.last_mut().expect("just pushed")
                    }
                };
                let roomy = placed.has_room(self.room_per_slot);
                if roomy || self.choose_full {
                    group.by_free.insert((placed.lanes[0], WorkerId::new(id)));
                }
                if roomy {
                    groups.roomy += 1;
                }
            }
        }
        for groups in self.pools.values_mut() {
            groups.groups.sort_by(|a, b| b.speed.total_cmp(&a.speed));
        }
    }
}

#[cfg(test)]
mod tests;
