//! Request-based placement: a task that asks for resources goes to a worker where all of its
//! request fits now.
//!
//! A task *asks* when it requests more than a slot and the default one CPU — memory, GPUs, a
//! custom resource, more CPUs — or when it selects or prefers worker labels ([`asks`]). The
//! engine places such a task on a worker of its pool that carries the selected labels and
//! whose free room (what it announces, less what the attempts placed on it hold) covers every
//! part of the request: slots, CPUs, memory, GPUs and each custom resource. The task goes to
//! that worker's own queue, and what it holds returns when the attempt ends. Among the workers
//! where it fits, those carrying more of its preferred labels come first, then the
//! [`Packing`] rule decides: first fit, best fit or spread.
//!
//! A task that asks for nothing is best effort: any free slot of its pool takes it from the
//! pool's queue, and it counts only its slots, on the worker that reports starting it.
//!
//! Capacity can also be reserved for a priority class or a tenant ([`Reservation`]).
//!
//! The live scheduler and `taskfleet simulate` place through the same [`Bins`].

mod reserve;
mod rules;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use taskfleet_common::resources::ResourceSet;
use taskfleet_common::workflow::Resources;
use taskfleet_common::{PriorityClass, TaskSpec};

use crate::placement::WorkerModel;
use crate::policy::TaskRef;
use reserve::Reserved;
pub use reserve::{Amount, Owner, Reservation};
pub use rules::{could_take, fits, BestFit, FirstFit, Packing, PackingKind, Room, Spread};

/// Rounding slack when fractional amounts are added up.
const EPSILON: f64 = 1e-9;

/// Whether `task` asks for resources or labels, and so is placed by the scheduler rather than
/// taken by any free slot of its pool.
pub fn asks(task: &TaskSpec) -> bool {
    let resources = &task.resources;
    resources.memory > 0
        || resources.gpu > 0
        || resources.cpu > 1.0 + EPSILON
        || !resources.custom.is_empty()
        || !task.selector.is_empty()
        || !task.prefer.is_empty()
}

/// A task to place, as packing sees it.
#[derive(Clone, Copy, Debug)]
pub struct Ask<'a> {
    pub pool: &'a str,
    pub resources: &'a Resources,
    pub selector: &'a BTreeMap<String, String>,
    pub prefer: &'a BTreeMap<String, String>,
    pub class: PriorityClass,
    pub tenant: Option<&'a str>,
}

impl<'a> Ask<'a> {
    /// `task` of a workflow run for `tenant`.
    pub fn of(task: &'a TaskSpec, tenant: Option<&'a str>) -> Ask<'a> {
        Ask {
            pool: &task.pool,
            resources: &task.resources,
            selector: &task.selector,
            prefer: &task.prefer,
            class: task.priority,
            tenant,
        }
    }
}

/// Why a task that asks was not placed now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unplaced {
    /// No worker of its pool with its labels has room for it now.
    NoRoom,
    /// Room there is, but it is reserved for others who are waiting for it.
    Reserved,
}

/// One worker: what it offers and what the attempts placed on it hold.
#[derive(Clone, Debug)]
struct Bin {
    model: WorkerModel,
    alive: bool,
    used_slots: u32,
    used: ResourceSet,
}

impl Bin {
    fn room<'a>(&'a self, request: &'a Resources) -> Room<'a> {
        Room {
            request,
            slots: self.model.slots,
            used_slots: self.used_slots,
            capacity: self.model.capacity.as_ref(),
            used: &self.used,
        }
    }

    fn fits_now(&self, request: &Resources) -> bool {
        self.used_slots.saturating_add(request.slots) <= self.model.slots
            && self
                .model
                .capacity
                .as_ref()
                .is_none_or(|capacity| fits(request, capacity, &self.used))
    }

    fn could_ever_fit(&self, request: &Resources) -> bool {
        request.slots <= self.model.slots
            && self
                .model
                .capacity
                .as_ref()
                .is_none_or(|capacity| fits(request, capacity, &ResourceSet::default()))
    }

    fn carries(&self, labels: &BTreeMap<String, String>) -> bool {
        labels
            .iter()
            .all(|(label, value)| self.model.labels.get(label) == Some(value))
    }

    fn preferred(&self, prefer: &BTreeMap<String, String>) -> usize {
        prefer
            .iter()
            .filter(|(label, value)| self.model.labels.get(*label) == Some(*value))
            .count()
    }

    fn serves(&self, pool: &str) -> bool {
        self.model.pools.iter().any(|served| &**served == pool)
    }
}

/// What an attempt holds on a worker.
#[derive(Clone, Debug)]
struct Hold {
    worker: usize,
    slots: u32,
    /// The resources of a task that asks (best-effort tasks hold only slots).
    resources: Option<Resources>,
    /// It was placed on capacity reserved for others, lent while they had nothing waiting.
    lent: bool,
    /// The reservations it counts in, and whether as their owner.
    counted: Vec<(usize, bool)>,
}

/// The fleet as request-based placement sees it. See the module documentation.
pub struct Bins {
    bins: Vec<Bin>,
    by_name: HashMap<Arc<str>, usize>,
    /// Indices of the bins in name order, for first fit and ties.
    order: Vec<usize>,
    holds: HashMap<TaskRef, Hold>,
    packing: Box<dyn Packing>,
    reserved: Vec<Reserved>,
}

impl Bins {
    pub fn new(packing: PackingKind, reservations: &[Reservation]) -> Bins {
        Bins {
            bins: Vec::new(),
            by_name: HashMap::new(),
            order: Vec::new(),
            holds: HashMap::new(),
            packing: packing.build(),
            reserved: reservations.iter().cloned().map(Reserved::new).collect(),
        }
    }

    /// Makes the fleet `workers`: known ones keep what they hold, the others are gone (what
    /// they held is released when their attempts end or their leases are lost).
    pub fn set_workers(&mut self, workers: &[WorkerModel]) {
        for bin in &mut self.bins {
            bin.alive = false;
        }
        for model in workers {
            match self.by_name.get(&model.name) {
                Some(&idx) => {
                    let bin = &mut self.bins[idx];
                    bin.model = model.clone();
                    bin.alive = true;
                }
                None => {
                    self.by_name.insert(model.name.clone(), self.bins.len());
                    self.bins.push(Bin {
                        model: model.clone(),
                        alive: true,
                        used_slots: 0,
                        used: ResourceSet::default(),
                    });
                }
            }
        }
        // Workers gone and holding nothing are forgotten.
        let held: Vec<bool> = {
            let mut held = vec![false; self.bins.len()];
            for hold in self.holds.values() {
                held[hold.worker] = true;
            }
            held
        };
        if self.bins.iter().enumerate().any(|(idx, bin)| !bin.alive && !held[idx]) {
            let mut renumber = vec![usize::MAX; self.bins.len()];
            let mut kept = Vec::with_capacity(self.bins.len());
            for (idx, bin) in std::mem::take(&mut self.bins).into_iter().enumerate() {
                if bin.alive || held[idx] {
                    renumber[idx] = kept.len();
                    kept.push(bin);
                }
            }
            self.bins = kept;
            for hold in self.holds.values_mut() {
                hold.worker = renumber[hold.worker];
            }
            self.by_name = self
                .bins
                .iter()
                .enumerate()
                .map(|(idx, bin)| (bin.model.name.clone(), idx))
                .collect();
        }
        self.order = (0..self.bins.len()).collect();
        let bins = &self.bins;
        self.order.sort_by(|&a, &b| bins[a].model.name.cmp(&bins[b].model.name));
        for reserved in &mut self.reserved {
            reserved.set_total(self.bins.iter().filter(|bin| bin.alive).map(|bin| &bin.model));
        }
    }

    /// A worker was lost: it is no longer chosen.
    pub fn worker_gone(&mut self, name: &str) {
        if let Some(&idx) = self.by_name.get(name) {
            self.bins[idx].alive = false;
            for reserved in &mut self.reserved {
                reserved.set_total(self.bins.iter().filter(|bin| bin.alive).map(|bin| &bin.model));
            }
        }
    }

    /// Whether some worker of `pool` is known, so that the tasks that ask can be placed.
    pub fn serves(&self, pool: &str) -> bool {
        self.bins.iter().any(|bin| bin.alive && bin.serves(pool))
    }

    /// The worker where `ask` goes now, or why it waits. Nothing is taken yet: see
    /// [`Bins::hold`].
    pub fn choose(&self, ask: &Ask<'_>) -> Result<Placed, Unplaced> {
        let lent = self.reservations_allow(ask);
        // (more preferred labels, lower score), the worker, first in name order on ties.
        let mut best: Option<(usize, f64, usize)> = None;
        for &idx in &self.order {
            let bin = &self.bins[idx];
            if !bin.alive || !bin.serves(ask.pool) || !bin.carries(ask.selector) || !bin.fits_now(ask.resources) {
                continue;
            }
            if lent.is_none() {
                // It would fit, but not within what the reservations leave it.
                return Err(Unplaced::Reserved);
            }
            let preferred = bin.preferred(ask.prefer);
            let score = self.packing.score(&bin.room(ask.resources));
            let better = best.is_none_or(|(best_preferred, best_score, _)| {
                preferred > best_preferred || (preferred == best_preferred && score < best_score - EPSILON)
            });
            if better {
                best = Some((preferred, score, idx));
            }
        }
        match (best, lent) {
            (Some((_, _, idx)), Some(lent)) => Ok(Placed {
                worker: self.bins[idx].model.name.clone(),
                lent,
            }),
            _ => Err(Unplaced::NoRoom),
        }
    }

    /// Whether `ask` fits on worker `name` now (labels, room and reservations): `Some(lent)`
    /// if it does, `lent` when only on capacity reserved for others.
    pub fn fits_on(&self, name: &str, ask: &Ask<'_>) -> Option<bool> {
        let bin = &self.bins[*self.by_name.get(name)?];
        if bin.alive && bin.serves(ask.pool) && bin.carries(ask.selector) && bin.fits_now(ask.resources) {
            self.reservations_allow(ask)
        } else {
            None
        }
    }

    /// The worker on which `task` holds what it takes, if any.
    pub fn holder(&self, task: TaskRef) -> Option<&str> {
        self.holds.get(&task).map(|hold| &*self.bins[hold.worker].model.name)
    }

    /// Whether any capacity is reserved.
    pub fn has_reservations(&self) -> bool {
        !self.reserved.is_empty()
    }

    /// Whether `ask` could ever fit on worker `name`, were it empty.
    pub fn could_fit_on(&self, name: &str, ask: &Ask<'_>) -> bool {
        self.by_name.get(name).is_some_and(|&idx| {
            let bin = &self.bins[idx];
            bin.carries(ask.selector) && bin.could_ever_fit(ask.resources)
        })
    }

    /// Whether the reservations let `ask` take what it asks for; `Some(true)` when only by
    /// borrowing capacity reserved for others.
    fn reservations_allow(&self, ask: &Ask<'_>) -> Option<bool> {
        let mut lent = false;
        for reserved in &self.reserved {
            match reserved.allows(ask) {
                reserve::Verdict::Free => {}
                reserve::Verdict::Lent => lent = true,
                reserve::Verdict::Refused => return None,
            }
        }
        Some(lent)
    }

    /// `task`, which asks, was sent to `worker` (on lent capacity, if `lent`): it holds its
    /// request there until [`Bins::release`].
    pub fn hold(&mut self, task: TaskRef, worker: &str, lent: bool, ask: &Ask<'_>) {
        let Some(&worker) = self.by_name.get(worker) else {
            return;
        };
        self.release(task);
        let bin = &mut self.bins[worker];
        bin.used_slots = bin.used_slots.saturating_add(ask.resources.slots);
        bin.used.add(&ask.resources.request());
        let mut counted = Vec::new();
        for (idx, reserved) in self.reserved.iter_mut().enumerate() {
            if let Some(owner) = reserved.take(ask) {
                counted.push((idx, owner));
            }
        }
        self.holds.insert(
            task,
            Hold {
                worker,
                slots: ask.resources.slots,
                resources: Some(ask.resources.clone()),
                lent,
                counted,
            },
        );
    }

    /// `task`, best effort, was reported started on worker `name`: it holds its slots there
    /// (a task already held keeps its hold).
    pub fn started(&mut self, task: TaskRef, name: &str, slots: u32) {
        if self.holds.contains_key(&task) {
            return;
        }
        let Some(&worker) = self.by_name.get(name) else {
            return;
        };
        let bin = &mut self.bins[worker];
        bin.used_slots = bin.used_slots.saturating_add(slots);
        self.holds.insert(
            task,
            Hold {
                worker,
                slots,
                resources: None,
                lent: false,
                counted: Vec::new(),
            },
        );
    }

    /// The attempt of `task` ended: what it held is free.
    pub fn release(&mut self, task: TaskRef) {
        let Some(hold) = self.holds.remove(&task) else {
            return;
        };
        let bin = &mut self.bins[hold.worker];
        bin.used_slots = bin.used_slots.saturating_sub(hold.slots);
        if let Some(resources) = &hold.resources {
            bin.used.sub(&resources.request());
            for (idx, owner) in hold.counted {
                self.reserved[idx].give_back(resources, owner);
            }
        }
    }

    /// Whether `task` runs on capacity lent to it by a reservation's owner (the first to make
    /// way when the owner needs it back).
    pub fn is_lent(&self, task: TaskRef) -> bool {
        self.holds.get(&task).is_some_and(|hold| hold.lent)
    }

    /// The tasks of a workflow on lent capacity, by index, in order.
    pub fn lent_tasks(&self, workflow_idx: u32) -> Vec<u32> {
        if self.reserved.is_empty() {
            return Vec::new();
        }
        let mut tasks: Vec<u32> = self
            .holds
            .iter()
            .filter(|(task, hold)| hold.lent && task.workflow_idx == workflow_idx)
            .map(|(task, _)| task.task_idx)
            .collect();
        tasks.sort_unstable();
        tasks
    }

    /// Tells the reservations how many of their owners' tasks wait for room now (from the
    /// tasks that could not be placed in the last round): while some do, others may not
    /// borrow reserved capacity.
    pub fn set_waiting<'a>(&mut self, waiting: impl IntoIterator<Item = Ask<'a>>) {
        for reserved in &mut self.reserved {
            reserved.waiting = 0;
        }
        for ask in waiting {
            for reserved in &mut self.reserved {
                if reserved.owns(&ask) && reserved.applies(&ask) {
                    reserved.waiting += 1;
                }
            }
        }
    }

    /// What worker `name` has in use, as far as placement knows.
    pub fn used(&self, name: &str) -> Option<(u32, &ResourceSet)> {
        let bin = &self.bins[*self.by_name.get(name)?];
        Some((bin.used_slots, &bin.used))
    }

    /// Forgets the holds of a workflow's tasks.
    pub fn forget_workflow(&mut self, workflow_idx: u32) {
        let tasks: Vec<TaskRef> = self
            .holds
            .keys()
            .filter(|task| task.workflow_idx == workflow_idx)
            .copied()
            .collect();
        for task in tasks {
            self.release(task);
        }
    }
}

/// Where a task that asks goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    pub worker: Arc<str>,
    /// Only on capacity reserved for others (lent while they have nothing waiting).
    pub lent: bool,
}

#[cfg(test)]
mod tests;
