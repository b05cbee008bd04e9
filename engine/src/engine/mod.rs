//! The scheduling engine: event-driven dependency resolution, retries, failure propagation
//! and admission control over any number of workflows, as a pure state machine.
//!
//! The engine does no I/O and never reads the clock. The scheduler service feeds it events
//! (workflow added, attempt started or finished, time passed) and carries out what it asks
//! for: [`Engine::dispatch`] returns the task messages to publish, and
//! [`Engine::take_updates`] the store updates to persist before publishing them.
//!
//! Completing a task costs O(its out-degree): each task keeps a count of parents that have
//! not succeeded, and the graph is never rescanned.

mod config;
mod dispatch;
mod finish;
mod placed;
mod planning;
mod reports;
mod run;
mod state;

use std::cmp::Reverse;
use std::collections::HashMap;
use std::sync::Arc;

use taskfleet_common::state::{AttemptOutcome, TaskState};
use taskfleet_common::wire::TaskMessage;
use taskfleet_common::{Millis, WorkflowSpec};

use self::run::WorkflowRun;
use self::state::{wake_planned_worker, Admission, Leases, Plans, Timers, Updates, Workflows};
use crate::fleet::FleetView;
use crate::packing::{self, Bins};
use crate::placement::{Placer, WorkerModel};
use crate::policy::{Placement, Policy, ReadyTask, TaskRef};
use crate::predict::Predictor;
use crate::records::{StoreUpdate, TaskRecord, WorkflowState};
pub use config::EngineConfig;
pub use reports::{ClassLoad, Report};

/// Monte-Carlo samples behind a workflow's criticality in predictive mode.
const CRITICALITY_SAMPLES: usize = 32;

/// Under a placement-aware policy, how many tasks per slot a worker may hold (running or
/// queued at it) before the engine stops sending it more.
const ROOM_PER_SLOT: u32 = 2;

/// How many tasks that ask for resources a pool may pass over in one dispatch round, for want
/// of a worker with room for them, while looking for later tasks that fit (backfilling).
const BACKFILL_WINDOW: usize = 64;

/// Why a worker event was not recorded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Ignored {
    #[error("unknown workflow `{0}`")]
    UnknownWorkflow(String),
    #[error("workflow has no task number {0}")]
    UnknownTask(u32),
    #[error("attempt {got} is not the current attempt {current} (task is {state})")]
    StaleAttempt { got: u32, current: u32, state: TaskState },
    #[error("the workflow was cancelled")]
    Cancelled,
}

/// A task message to publish, with where it goes.
#[derive(Debug)]
pub struct Dispatch {
    pub task: TaskRef,
    pub message: TaskMessage,
    /// The worker chosen for it (placement-aware policies); `None`: any worker of its pool.
    pub worker: Option<Arc<str>>,
}

/// The scheduling engine. See the module documentation.
pub struct Engine {
    config: EngineConfig,
    workflows: Workflows,
    admission: Admission,
    timers: Timers,
    leases: Leases,
    /// The fleet model and plans of a placement-aware policy; `None` for the others.
    plans: Option<Plans>,
    /// What each worker offers and holds, for the tasks that ask for resources.
    bins: Bins,
    /// Runtimes learned from finished attempts.
    predictor: Predictor,
    updates: Updates,
    /// Attempts ended since the service last took them, for its metrics.
    ended: Vec<EndedAttempt>,
    jitter_state: u64,
    /// Reused buffer for newly ready children.
    scratch: Vec<u32>,
}

/// An attempt that ended, as metrics count it.
#[derive(Clone, Debug, PartialEq)]
pub struct EndedAttempt {
    pub pool: Arc<str>,
    pub outcome: AttemptOutcome,
    /// From its start on a worker to its end, when it reached one.
    pub run_ms: Option<u64>,
}

/// What admission control holds in one pool now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolLoad {
    pub pool: Arc<str>,
    /// Tasks ready and waiting for a slot.
    pub ready: usize,
    /// Slots taken by attempts out.
    pub in_flight: usize,
    /// Slots the fleet offers the pool.
    pub capacity: usize,
}

impl Engine {
    pub fn new(config: EngineConfig) -> Engine {
        let plans = match config.policy.placement() {
            Placement::Pool => None,
            Placement::Online { wait_for_best: false } => Some(Plans::new(Placer::new(Some(ROOM_PER_SLOT)))),
            Placement::Online { wait_for_best: true } => {
                Some(Plans::new(Placer::new(Some(ROOM_PER_SLOT)).choosing_full_workers()))
            }
            Placement::Planned(_) => Some(Plans::new(Placer::new(None))),
        };
        Engine {
            bins: Bins::new(config.packing, &config.reservations),
            jitter_state: config.jitter_seed,
            predictor: Predictor::new(config.policy_config.default_estimate),
            config,
            workflows: Workflows::default(),
            admission: Admission::default(),
            timers: Timers::default(),
            leases: Leases::default(),
            plans,
            updates: Updates::default(),
            ended: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// Tells the engine what the fleet offers now (from heartbeats, the workers of this
    /// process, or the simulated fleet): each pool's slots, the pools sharing workers, and
    /// the workers, which placement-aware policies place tasks on.
    pub fn set_fleet(&mut self, fleet: &FleetView, now: Millis) {
        self.set_capacities(&fleet.capacity);
        self.set_shared_slots(&fleet.shared_slots);
        self.set_workers(&fleet.workers, now);
    }

    /// Tells placement which workers there are.
    fn set_workers(&mut self, workers: &[WorkerModel], now: Millis) {
        self.bins.set_workers(workers);
        if let Some(plans) = self.plans.as_mut() {
            plans.placer.set_workers(workers, now);
        }
    }

    /// Whether the policy chooses workers (dispatches then name one).
    pub fn places_tasks(&self) -> bool {
        self.plans.is_some()
    }

    /// Replaces what the engine has learned about runtimes (restored from the store).
    pub fn set_predictor(&mut self, predictor: Predictor) {
        self.predictor = predictor;
    }

    /// What the engine has learned about runtimes.
    pub fn predictor(&self) -> &Predictor {
        &self.predictor
    }

    /// Sets how many slots the fleet offers `pool`.
    pub(crate) fn set_capacity(&mut self, pool: &str, slots: usize) {
        self.admission.pool(pool, &self.config).capacity = slots;
    }

    /// Sets the slots of every pool at once; pools not named get none. Pools share no slots
    /// until [`Engine::set_shared_slots`] says so.
    fn set_capacities(&mut self, capacity: &HashMap<String, usize>) {
        self.admission.shared_slots.clear();
        for pool in self.admission.pools.values_mut() {
            pool.capacity = 0;
            pool.group = None;
        }
        for (pool, &slots) in capacity {
            self.set_capacity(pool, slots);
        }
    }

    /// Declares pools that draw on the same workers: each group lists pools and the slots of
    /// the workers serving any of them, each worker counted once. Dispatches to a group's pools
    /// together stay within those slots (plus the prefetch margin), so a worker serving two
    /// pools is not counted twice. Call after [`Engine::set_capacities`].
    fn set_shared_slots(&mut self, groups: &[(Vec<String>, usize)]) {
        for (pools, slots) in groups.iter().filter(|(pools, _)| pools.len() > 1) {
            let group = self.admission.shared_slots.len();
            self.admission.shared_slots.push(*slots);
            for pool in pools {
                self.admission.pool(pool, &self.config).group = Some(group);
            }
        }
    }

    /// Adds a workflow: fresh (`stored` is `None`) or rebuilt from its stored tasks, in which
    /// case attempts that were out when the scheduler stopped are dispatched again.
    pub fn add_workflow(
        &mut self,
        id: Arc<str>,
        spec: Arc<WorkflowSpec>,
        stored: Option<Vec<TaskRecord>>,
        now: Millis,
    ) {
        let seq = self.workflows.next_seq;
        self.workflows.next_seq += 1;
        let workflow_idx = self.workflows.next_idx();
        let mut run = match stored {
            None => WorkflowRun::fresh(id, spec, seq),
            Some(records) => WorkflowRun::restored(id, spec, seq, records),
        };
        // Attempts that were out are lost with the old scheduler; failures not yet
        // propagated (a crash between the two writes) are propagated now.
        let mut failed = Vec::new();
        let mut waiting_for_adoption = Vec::new();
        for task_idx in 0..run.tasks.len() as u32 {
            let task = run.tasks[task_idx as usize];
            let lost = task.state.is_in_flight();
            if lost && !self.config.adoption_grace.is_zero() {
                waiting_for_adoption.push((task_idx, task.attempt));
            }
            let unblocked = task.state == TaskState::Pending && task.waiting == 0;
            if lost || unblocked {
                run.set_state(task_idx, TaskState::Ready);
                self.updates.task(&run, task_idx);
            } else if matches!(
                task.state,
                TaskState::Failed | TaskState::TimedOut | TaskState::Cancelled | TaskState::UpstreamFailed
            ) {
                failed.push(task_idx);
            }
        }
        for (&task_idx, &due) in &run.retry_at {
            let attempt = run.tasks[task_idx as usize].attempt;
            let task = TaskRef::new(workflow_idx, task_idx);
            self.timers.retries.push(Reverse((due, task, attempt)));
        }
        self.workflows.insert(run);
        self.place_workflow(workflow_idx, now);
        self.assess_criticality(workflow_idx);
        for task_idx in failed {
            self.propagate_failure(workflow_idx, task_idx);
        }
        self.announce_workflow(workflow_idx);
        let deadline = now.plus(self.config.adoption_grace);
        for &(task_idx, attempt) in &waiting_for_adoption {
            let task = TaskRef::new(workflow_idx, task_idx);
            self.leases.adoptable.insert(task, attempt);
            self.timers.adoption_deadlines.push(Reverse((deadline, task)));
        }
        let run = self.workflows.live(workflow_idx);
        let adoptable = &self.leases.adoptable;
        let ready: Vec<TaskRef> = (0..run.tasks.len() as u32)
            .filter(|&idx| run.tasks[idx as usize].state == TaskState::Ready)
            .map(|idx| TaskRef::new(workflow_idx, idx))
            .filter(|task| !adoptable.contains_key(task))
            .collect();
        for task in ready {
            self.push_ready(task, now);
        }
        self.check_finished(workflow_idx, now);
    }

    /// Cancels a workflow: tasks not yet out end `cancelled` now; attempts that are out are
    /// returned, to be stopped on their workers (they end `cancelled` when they report back).
    pub fn cancel_workflow(&mut self, workflow_id: &str, now: Millis) -> Option<Vec<(TaskRef, u32)>> {
        let workflow_idx = self.workflows.index_of(workflow_id)?;
        let run = self.workflows.get_mut(workflow_idx)?;
        run.cancelled = true;
        let mut in_flight = Vec::new();
        for task_idx in 0..run.tasks.len() as u32 {
            let task = run.tasks[task_idx as usize];
            if task.state.is_in_flight() {
                in_flight.push((TaskRef::new(workflow_idx, task_idx), task.attempt));
            } else if !task.state.is_terminal() {
                run.retry_at.remove(&task_idx);
                run.set_state(task_idx, TaskState::Cancelled);
                self.updates.task(run, task_idx);
                wake_planned_worker(&mut self.plans, run, task_idx);
            }
        }
        self.check_finished(workflow_idx, now);
        Some(in_flight)
    }

    /// Store updates produced since the last call, in the order they happened.
    pub fn take_updates(&mut self) -> Vec<StoreUpdate> {
        self.updates.take()
    }

    /// Attempts ended since the last call.
    pub fn take_ended(&mut self) -> Vec<EndedAttempt> {
        std::mem::take(&mut self.ended)
    }

    /// Each pool's ready tasks, slots out and slots offered, in no particular order.
    pub fn pool_loads(&self) -> Vec<PoolLoad> {
        self.admission
            .pools
            .iter()
            .map(|(name, pool)| PoolLoad {
                pool: name.clone(),
                ready: pool.policy.len(),
                in_flight: pool.in_flight,
                capacity: pool.capacity,
            })
            .collect()
    }

    /// The workflow's state, while the engine holds it.
    pub fn workflow_state(&self, workflow_id: &str) -> Option<WorkflowState> {
        self.workflows.by_id(workflow_id).map(|run| run.state)
    }

    /// How many tasks of the workflow are in each state, in `TaskState::ALL` order.
    pub fn task_counts(&self, workflow_id: &str) -> Option<[usize; TaskState::ALL.len()]> {
        self.workflows.by_id(workflow_id).map(|run| run.counts)
    }

    /// The state of one task.
    pub fn task_state(&self, workflow_id: &str, task_idx: u32) -> Option<TaskState> {
        self.workflows
            .by_id(workflow_id)?
            .tasks
            .get(task_idx as usize)
            .map(|task| task.state)
    }

    /// One task's spec, while the engine holds its workflow.
    pub fn task_spec(&self, workflow_id: &str, task_idx: u32) -> Option<&taskfleet_common::workflow::TaskSpec> {
        self.workflows.by_id(workflow_id)?.spec.tasks.get(task_idx as usize)
    }

    /// Forgets a workflow, freeing its memory.
    pub fn remove_workflow(&mut self, workflow_id: &str) {
        if let Some(workflow_idx) = self.workflows.remove(workflow_id) {
            for pool in self.admission.pools.values_mut() {
                pool.policy.on_workflow_removed(workflow_idx);
            }
            self.leases.forget_workflow(workflow_idx);
            self.bins.forget_workflow(workflow_idx);
            self.admission
                .asked_at
                .retain(|task, _| task.workflow_idx != workflow_idx);
        }
    }

    /// A task became ready: its pool's policy holds it until it is dispatched.
    fn push_ready(&mut self, task: TaskRef, now: Millis) {
        let run = self
            .workflows
            .get(task.workflow_idx)
            .expect("a ready task has a workflow");
        let spec = &run.spec.tasks[task.task_idx as usize];
        // A task that asks for resources keeps its place while it waits for room.
        let (ready_seq, ready_at) = match self.admission.asked_at.get(&task) {
            Some(&kept) => kept,
            None => {
                let seq = self.admission.next_ready_seq;
                self.admission.next_ready_seq += 1;
                if packing::asks(spec) {
                    self.admission.asked_at.insert(task, (seq, now));
                }
                (seq, now)
            }
        };
        let ready = ReadyTask {
            task,
            workflow_seq: run.seq,
            ready_seq,
            ready_at,
            class: spec.priority,
            weight: spec.weight,
            estimate_ms: estimate_ms(spec, &self.config, &self.predictor),
            slots: spec.resources.slots,
            rank: run
                .placement
                .as_ref()
                .map_or(0.0, |placement| placement.priority[task.task_idx as usize]),
            criticality: run
                .criticality
                .as_ref()
                .map_or(0.0, |criticality| f64::from(criticality[task.task_idx as usize])),
        };
        // Its planned worker may be waiting for it.
        wake_planned_worker(&mut self.plans, run, task.task_idx);
        let pool = spec.pool.clone();
        self.admission.pool(&pool, &self.config).policy.push(ready);
    }

    /// Tells every pool's policy about a workflow and the estimated work it has left.
    fn announce_workflow(&mut self, workflow_idx: u32) {
        let run = self.workflows.get(workflow_idx).expect("a live workflow");
        let spec = run.spec.clone();
        let mut remaining_ms = 0u64;
        for (task, runtime) in spec.tasks.iter().zip(&run.tasks) {
            if !runtime.state.is_terminal() {
                remaining_ms += estimate_ms(task, &self.config, &self.predictor);
            }
        }
        let seq = run.seq;
        let mut pools: Vec<&Arc<str>> = spec.tasks.iter().map(|task| &task.pool).collect();
        pools.sort_unstable();
        pools.dedup();
        for pool in pools {
            self.admission.pool(pool, &self.config);
        }
        for pool in self.admission.pools.values_mut() {
            pool.policy.on_workflow_added(workflow_idx, seq, remaining_ms);
        }
    }
}

/// The runtime a policy assumes for a task: the predicted mean in predictive mode, else its
/// declared estimate, or the configured prior.
fn estimate_ms(task: &taskfleet_common::TaskSpec, config: &EngineConfig, predictor: &Predictor) -> u64 {
    believed_runtime(task, config, predictor).0
}

/// The runtime a policy assumes for a task, in milliseconds, and whether it is known: declared
/// (`estimate`, `estimate_by_worker`) or, in predictive mode, learned; not merely the prior.
fn believed_runtime(task: &taskfleet_common::TaskSpec, config: &EngineConfig, predictor: &Predictor) -> (u64, bool) {
    let (estimate, known) = if config.predictive {
        let prediction = predictor.predict(task);
        (prediction.mean, prediction.source != crate::predict::Source::Prior)
    } else {
        (
            task.estimate.unwrap_or(config.policy_config.default_estimate),
            task.estimate.is_some(),
        )
    };
    (estimate.as_millis() as u64, known || task.estimate_by_worker.is_some())
}

/// The next task of `policy` that is still ready (tasks cancelled or re-queued since they were
/// pushed are dropped).
fn pop_ready(policy: &mut dyn Policy, workflows: &Workflows, now: Millis) -> Option<TaskRef> {
    while let Some(task) = policy.pop(now) {
        if workflows.is_ready(task) {
            return Some(task);
        }
    }
    None
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod packing_tests;
