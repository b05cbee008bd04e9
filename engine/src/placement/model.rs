//! The fleet model's vocabulary: a worker's id in the model and what placement knows of it
//! ([`WorkerModel`]), the one runtime rule ([`runtime_on`]), and where a task's parents are.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use taskfleet_common::resources::ResourceSet;
use taskfleet_common::Millis;

/// A worker of the fleet model: its place in the model, which never changes while the model
/// lives (a worker that leaves keeps its id, marked gone). `Option<WorkerId>` is a task's
/// worker, or none yet, in the space of a `u32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkerId(NonZeroU32);

impl WorkerId {
    /// The worker at `index` in the model.
    pub fn new(index: usize) -> WorkerId {
        let index = u32::try_from(index).ok().and_then(|index| index.checked_add(1));
        WorkerId(index.and_then(NonZeroU32::new).expect("fewer than 2^32 - 1 workers"))
    }

    /// Its place in the model.
    pub fn index(self) -> usize {
        (self.0.get() - 1) as usize
    }
}

/// A worker as placement sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerModel {
    /// Unique name (a live worker's id).
    pub name: Arc<str>,
    /// The name `estimate_by_worker` keys may use for a family of identical workers.
    pub base: Arc<str>,
    pub pools: Vec<Arc<str>>,
    pub slots: u32,
    /// Relative speed: a task with estimate `e` runs `e / speed` here.
    pub speed: f64,
    /// The CPUs, memory, GPUs and custom resources it offers, when it announces them; without
    /// them only its slots count.
    pub capacity: Option<ResourceSet>,
    /// Its labels (`arch: arm64`), which tasks select or prefer.
    pub labels: BTreeMap<String, String>,
}

impl WorkerModel {
    /// A worker whose base name is its name, announcing no capacity nor labels.
    pub fn new(name: &str, pools: &[&str], slots: u32, speed: f64) -> WorkerModel {
        WorkerModel {
            name: Arc::from(name),
            base: Arc::from(name),
            pools: pools.iter().map(|pool| Arc::from(*pool)).collect(),
            slots,
            speed,
            capacity: None,
            labels: BTreeMap::new(),
        }
    }

    /// The same worker, offering `capacity`.
    pub fn with_capacity(mut self, capacity: ResourceSet) -> WorkerModel {
        self.capacity = Some(capacity);
        self
    }

    /// The same worker, carrying `labels`.
    pub fn with_labels(mut self, labels: BTreeMap<String, String>) -> WorkerModel {
        self.labels = labels;
        self
    }
}

/// What a task's runtime on a worker depends on: the worker's names and speed. Implemented by
/// the live fleet's workers ([`WorkerModel`]) and the simulated ones, so both follow
/// [`runtime_on`].
pub trait Rated {
    /// The worker's own name.
    fn name(&self) -> &str;
    /// The name of its family of identical workers (its own name if it has none).
    fn base(&self) -> &str;
    /// Relative speed: a task with estimate `e` runs `e / speed` here.
    fn speed(&self) -> f64;
}

/// Implements [`Rated`] for a worker type with `name`, `base` and `speed` fields.
macro_rules! rated_by_fields {
    ($type:ty) => {
        impl $crate::placement::Rated for $type {
            fn name(&self) -> &str {
                &self.name
            }

            fn base(&self) -> &str {
                &self.base
            }

            fn speed(&self) -> f64 {
                self.speed
            }
        }
    };
}
pub(crate) use rated_by_fields;

rated_by_fields!(WorkerModel);

/// A task's runtime on `worker` in milliseconds: its `estimate_by_worker` entry for the worker
/// (by name, else by base name), else `estimate_ms / speed`, rounded to the millisecond. The
/// one runtime rule of the live scheduler, its plans and the simulator.
pub fn runtime_on(estimate_ms: u64, by_worker: Option<&BTreeMap<String, Duration>>, worker: &impl Rated) -> u64 {
    if let Some(by_worker) = by_worker {
        if let Some(estimate) = by_worker.get(worker.name()).or_else(|| by_worker.get(worker.base())) {
            return estimate.as_millis() as u64;
        }
    }
    (estimate_ms as f64 / worker.speed()).round() as u64
}

/// A parent of the task being placed: the worker it ran (or will run) on, when it ends there,
/// and the cost of moving its output to another worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParentAt {
    /// `None`: it ran nowhere the model knows, so its output arrives from elsewhere everywhere.
    pub worker: Option<WorkerId>,
    pub end: Millis,
    pub transfer_ms: u64,
}

/// What is being placed.
#[derive(Clone, Copy)]
pub struct TaskShape<'a> {
    pub pool: &'a str,
    pub slots: u32,
    /// Runtime at speed 1 (declared, predicted, or the prior).
    pub estimate_ms: u64,
    pub by_worker: Option<&'a BTreeMap<String, Duration>>,
    /// Only workers this accepts may take it (those where its request fits now, for a task
    /// that asks for resources); `None`: any.
    pub fits: Option<&'a dyn Fn(&WorkerModel) -> bool>,
}

impl std::fmt::Debug for TaskShape<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskShape")
            .field("pool", &self.pool)
            .field("slots", &self.slots)
            .field("estimate_ms", &self.estimate_ms)
            .field("by_worker", &self.by_worker)
            .field("fits", &self.fits.is_some())
            .finish()
    }
}

/// Where and when a task is expected to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Choice {
    pub worker: WorkerId,
    pub start: Millis,
    pub end: Millis,
}
