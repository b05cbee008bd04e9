//! The engine's state, grouped by concern: the workflows it holds, admission (pools and
//! their capacity), timers, leases (which worker runs what), the plans of placement-aware
//! policies, and the store updates waiting to be taken.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use taskfleet_common::state::TaskState;
use taskfleet_common::Millis;

use super::run::WorkflowRun;
use super::{EngineConfig, Ignored};
use crate::placement::{ParentAt, Placer, WorkerId};
use crate::policy::{Policy, TaskRef};
use crate::records::StoreUpdate;

/// The workflows the engine holds. A workflow's index is never reused, so a stale reference
/// (a retry timer, a late event) can never land on another workflow.
#[derive(Default)]
pub(super) struct Workflows {
    runs: Vec<Option<Box<WorkflowRun>>>,
    by_id: HashMap<Arc<str>, u32>,
    /// Submit order of the next workflow.
    pub(super) next_seq: u64,
}

impl Workflows {
    /// Adds a run; returns its index.
    pub(super) fn insert(&mut self, run: WorkflowRun) -> u32 {
        let workflow_idx = self.runs.len() as u32;
        self.by_id.insert(run.id.clone(), workflow_idx);
        self.runs.push(Some(Box::new(run)));
        workflow_idx
    }

    /// The index the next workflow gets.
    pub(super) fn next_idx(&self) -> u32 {
        self.runs.len() as u32
    }

    pub(super) fn get(&self, workflow_idx: u32) -> Option<&WorkflowRun> {
        self.runs.get(workflow_idx as usize)?.as_deref()
    }

    pub(super) fn get_mut(&mut self, workflow_idx: u32) -> Option<&mut WorkflowRun> {
        self.runs.get_mut(workflow_idx as usize)?.as_deref_mut()
    }

    /// The workflow at `workflow_idx`, which the caller knows is live.
    pub(super) fn live(&mut self, workflow_idx: u32) -> &mut WorkflowRun {
        self.get_mut(workflow_idx).expect("a live workflow")
    }

    /// Every workflow held.
    pub(super) fn iter(&self) -> impl Iterator<Item = &WorkflowRun> {
        self.by_id.values().filter_map(|&workflow_idx| self.get(workflow_idx))
    }

    pub(super) fn index_of(&self, workflow_id: &str) -> Option<u32> {
        self.by_id.get(workflow_id).copied()
    }

    pub(super) fn by_id(&self, workflow_id: &str) -> Option<&WorkflowRun> {
        self.get(self.index_of(workflow_id)?)
    }

    /// Forgets a workflow; returns its index if it was held.
    pub(super) fn remove(&mut self, workflow_id: &str) -> Option<u32> {
        let workflow_idx = self.by_id.remove(workflow_id)?;
        self.runs[workflow_idx as usize] = None;
        Some(workflow_idx)
    }

    /// The task a worker event names, if the workflow is held and has such a task.
    pub(super) fn locate(&self, workflow_id: &str, task_idx: u32) -> Result<TaskRef, Ignored> {
        let unknown = || Ignored::UnknownWorkflow(workflow_id.to_string());
        let workflow_idx = self.index_of(workflow_id).ok_or_else(unknown)?;
        let run = self.get(workflow_idx).ok_or_else(unknown)?;
        if task_idx as usize >= run.tasks.len() {
            return Err(Ignored::UnknownTask(task_idx));
        }
        Ok(TaskRef::new(workflow_idx, task_idx))
    }

    pub(super) fn task_state(&self, task: TaskRef) -> Option<TaskState> {
        let run = self.get(task.workflow_idx)?;
        run.tasks.get(task.task_idx as usize).map(|runtime| runtime.state)
    }

    /// Whether a task is ready to be dispatched.
    pub(super) fn is_ready(&self, task: TaskRef) -> bool {
        self.task_state(task) == Some(TaskState::Ready)
    }
}

/// A worker pool's ready set and capacity.
pub(super) struct Pool {
    pub(super) policy: Box<dyn Policy>,
    /// Slots the fleet offers this pool.
    pub(super) capacity: usize,
    /// Slots taken by dispatched attempts.
    pub(super) in_flight: usize,
    /// The group of pools whose workers it shares (see `Engine::set_shared_slots`).
    pub(super) group: Option<usize>,
}

/// Admission control: each pool's ready tasks (in its policy) and slots.
#[derive(Default)]
pub(super) struct Admission {
    pub(super) pools: HashMap<Arc<str>, Pool>,
    /// Slots of each group of pools served by common workers, counted once.
    pub(super) shared_slots: Vec<usize>,
    /// Order in which tasks became ready, for the policies' ties.
    pub(super) next_ready_seq: u64,
    /// Ready tasks that ask for resources: their place in the ready order and when they
    /// became ready, kept while they wait for a worker with room.
    pub(super) asked_at: HashMap<TaskRef, (u64, Millis)>,
}

impl Admission {
    /// The pool named `name`, made on first use.
    pub(super) fn pool(&mut self, name: &str, config: &EngineConfig) -> &mut Pool {
        if !self.pools.contains_key(name) {
            let policy = config.policy.build(&config.policy_config);
            self.pools.insert(
                Arc::from(name),
                Pool {
                    policy,
                    capacity: 0,
                    in_flight: 0,
                    group: None,
                },
            );
        }
        self.pools.get_mut(name).expect("just inserted")
    }

    /// `slots` of `pool` are free again.
    pub(super) fn release(&mut self, pool: &str, slots: usize) {
        if let Some(pool) = self.pools.get_mut(pool) {
            pool.in_flight = pool.in_flight.saturating_sub(slots);
        }
    }

    /// Every pool's policy hears that a task ended for good.
    pub(super) fn task_done(&mut self, task: TaskRef, estimate_ms: u64) {
        for pool in self.pools.values_mut() {
            pool.policy.on_task_done(task, estimate_ms);
        }
    }
}

/// What waits for a time: retries after their backoff, and attempts lost in a restart waiting
/// to be adopted.
#[derive(Default)]
pub(super) struct Timers {
    /// Retrying tasks by due time, with the attempt they are due after.
    pub(super) retries: BinaryHeap<Reverse<(Millis, TaskRef, u32)>>,
    pub(super) adoption_deadlines: BinaryHeap<Reverse<(Millis, TaskRef)>>,
}

impl Timers {
    /// When the next timer is due, if any.
    pub(super) fn next(&self) -> Option<Millis> {
        let retry = self.retries.peek().map(|Reverse((due, _, _))| *due);
        let adoption = self.adoption_deadlines.peek().map(|Reverse((due, _))| *due);
        retry.into_iter().chain(adoption).min()
    }
}

/// Which worker runs (and holds the lease of) each started attempt.
#[derive(Default)]
pub(super) struct Leases {
    running_on: HashMap<TaskRef, Arc<str>>,
    by_worker: HashMap<Arc<str>, HashSet<TaskRef>>,
    /// Attempts that were out when the scheduler restarted, waiting to be adopted; their
    /// tasks are `ready` but kept out of the policies meanwhile.
    pub(super) adoptable: HashMap<TaskRef, u32>,
}

impl Leases {
    /// Every task running on a worker.
    pub(super) fn running(&self) -> impl Iterator<Item = TaskRef> + '_ {
        self.running_on.keys().copied()
    }

    /// `worker` runs `task` (and holds its lease), instead of any other worker.
    pub(super) fn run_on(&mut self, task: TaskRef, worker: &str) {
        let worker: Arc<str> = match self.by_worker.get_key_value(worker) {
            Some((known, _)) => known.clone(),
            None => Arc::from(worker),
        };
        if let Some(previous) = self.running_on.insert(task, worker.clone()) {
            if let Some(tasks) = self.by_worker.get_mut(&previous) {
                tasks.remove(&task);
            }
        }
        self.by_worker.entry(worker).or_default().insert(task);
    }

    /// Whether `worker` is known to run `task`.
    pub(super) fn runs(&self, task: TaskRef, worker: &str) -> bool {
        self.running_on.get(&task).is_some_and(|known| &**known == worker)
    }

    /// The attempt of `task` ended: no worker holds it any more.
    pub(super) fn end(&mut self, task: TaskRef) {
        if let Some(worker) = self.running_on.remove(&task) {
            if let Some(tasks) = self.by_worker.get_mut(&worker) {
                tasks.remove(&task);
            }
        }
    }

    /// Every task `worker` held, which it holds no more.
    pub(super) fn lose_worker(&mut self, worker: &str) -> HashSet<TaskRef> {
        let tasks = self.by_worker.remove(worker).unwrap_or_default();
        for task in &tasks {
            self.running_on.remove(task);
        }
        tasks
    }

    /// Forgets the leases of a workflow's tasks.
    pub(super) fn forget_workflow(&mut self, workflow_idx: u32) {
        self.running_on.retain(|task, _| task.workflow_idx != workflow_idx);
        for tasks in self.by_worker.values_mut() {
            tasks.retain(|task| task.workflow_idx != workflow_idx);
        }
    }
}

/// The fleet model and plans of placement-aware policies.
pub(super) struct Plans {
    pub(super) placer: Placer,
    /// Workflows whose plan found no worker for some task (planned again when workers come),
    /// and the fleet model's generation when they were last planned.
    pub(super) incomplete: Vec<u32>,
    pub(super) incomplete_generation: u64,
    /// Per worker, the planned tasks not yet sent to it, by planned start (`heft`, `cpop`):
    /// the worker takes them in this order.
    pub(super) order: HashMap<WorkerId, BTreeSet<(Millis, TaskRef)>>,
    /// Workers whose plan may move on (a task of theirs ended or became ready), and the fleet
    /// model's generation when every plan was last looked at.
    pub(super) dirty: Vec<WorkerId>,
    pub(super) generation: u64,
    /// Per worker, planned tasks that already had their turn and are ready again (retries),
    /// waiting for room there, highest plan priority first.
    pub(super) parked: HashMap<WorkerId, BinaryHeap<(u64, Reverse<TaskRef>)>>,
    /// Reused buffer for a task's parents.
    pub(super) parents: Vec<ParentAt>,
}

impl Plans {
    pub(super) fn new(placer: Placer) -> Plans {
        Plans {
            placer,
            incomplete: Vec::new(),
            incomplete_generation: 0,
            order: HashMap::new(),
            dirty: Vec::new(),
            generation: 0,
            parked: HashMap::new(),
            parents: Vec::new(),
        }
    }
}

/// Tells the worker a task is placed on (if any) that its plan may move on: the task ended,
/// became ready, or will never run.
pub(super) fn wake_planned_worker(plans: &mut Option<Plans>, run: &WorkflowRun, task_idx: u32) {
    let (Some(plans), Some(placement)) = (plans.as_mut(), run.placement.as_ref()) else {
        return;
    };
    if let Some(worker) = placement.worker[task_idx as usize] {
        plans.dirty.push(worker);
    }
}

/// Store updates produced since they were last taken, in the order they happened.
#[derive(Default)]
pub(super) struct Updates(Vec<StoreUpdate>);

impl Updates {
    pub(super) fn push(&mut self, update: StoreUpdate) {
        self.0.push(update);
    }

    /// Records the state of task `task_idx` of `run`.
    pub(super) fn task(&mut self, run: &WorkflowRun, task_idx: u32) {
        self.0.push(StoreUpdate::Task {
            workflow_id: run.id.clone(),
            record: run.record(task_idx),
        });
    }

    pub(super) fn take(&mut self) -> Vec<StoreUpdate> {
        std::mem::take(&mut self.0)
    }
}
