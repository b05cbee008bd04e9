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

mod placed;
mod reports;
mod run;

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use taskfleet_common::retry::{backoff_delay, retries_left};
use taskfleet_common::state::{transition, AttemptOutcome, TaskEvent, TaskState};
use taskfleet_common::wire::{TaskMessage, TaskResult, WireAction, WIRE_VERSION};
use taskfleet_common::{Millis, WorkflowSpec};

use crate::fleet::FleetView;
use crate::placement::{ParentAt, Placer, WorkerModel, NO_WORKER};
use crate::policy::{Placement, Policy, PolicyConfig, PolicyKind, ReadyTask, TaskRef};
use crate::predict::Predictor;
use crate::records::{AttemptRecord, StoreUpdate, TaskRecord, WorkflowState};
pub use reports::Report;
use run::WorkflowRun;

/// Monte-Carlo samples behind a workflow's criticality in predictive mode.
const CRITICALITY_SAMPLES: usize = 32;

/// Under a placement-aware policy, how many tasks per slot a worker may hold (running or
/// queued at it) before the engine stops sending it more.
const ROOM_PER_SLOT: u32 = 2;

/// How the engine behaves.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub policy: PolicyKind,
    /// The policy's knobs (runtime prior, aging, quantum).
    pub policy_config: PolicyConfig,
    /// Policies see runtimes predicted from history instead of declared estimates.
    pub predictive: bool,
    /// After a restart, how long attempts that were out wait for their worker to report them
    /// (and be adopted) before they are dispatched again; zero dispatches them at once.
    pub adoption_grace: Duration,
    /// Tasks dispatched beyond the fleet's free slots, so workers never wait for the scheduler.
    pub prefetch_margin: usize,
    /// The margin is at most the fleet's slots. Over a broker, tasks waiting in a queue
    /// cannot be overtaken by a later, more urgent one, so a small fleet must keep few of
    /// them; a transport that hands queued tasks out in class order (in memory) need not.
    pub margin_capped_by_slots: bool,
    /// Seed of the retry jitter.
    pub jitter_seed: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            policy: PolicyKind::Fcfs,
            policy_config: PolicyConfig::default(),
            predictive: false,
            adoption_grace: Duration::ZERO,
            prefetch_margin: 16,
            margin_capped_by_slots: true,
            jitter_seed: 0x5eed,
        }
    }
}

/// Why a worker event was not recorded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Ignored {
    #[error("unknown workflow `{0}`")]
    UnknownWorkflow(String),
    #[error("workflow has no task number {0}")]
    UnknownTask(u32),
    #[error("attempt {got} is not the current attempt {current} (task is {state})")]
    StaleAttempt { got: u32, current: u32, state: TaskState },
}

/// A task message to publish, with where it goes.
#[derive(Debug)]
pub struct Dispatch {
    pub task: TaskRef,
    pub message: TaskMessage,
    /// The worker chosen for it (placement-aware policies); `None`: any worker of its pool.
    pub worker: Option<Arc<str>>,
}

/// A worker pool's ready set and capacity.
struct Pool {
    policy: Box<dyn Policy>,
    /// Slots the fleet offers this pool.
    capacity: usize,
    /// Slots taken by dispatched attempts.
    in_flight: usize,
    /// The group of pools whose workers it shares (see [`Engine::set_shared_slots`]).
    group: Option<usize>,
}

/// The scheduling engine. See the module documentation.
pub struct Engine {
    config: EngineConfig,
    workflows: Vec<Option<Box<WorkflowRun>>>,
    workflow_by_id: HashMap<Arc<str>, u32>,
    pools: HashMap<Arc<str>, Pool>,
    /// Retrying tasks by due time, with the attempt they are due after.
    retries: BinaryHeap<Reverse<(Millis, TaskRef, u32)>>,
    next_workflow_seq: u64,
    next_ready_seq: u64,
    jitter_state: u64,
    updates: Vec<StoreUpdate>,
    /// Reused buffer for newly ready children.
    scratch: Vec<u32>,
    /// Runtimes learned from finished attempts.
    predictor: Predictor,
    /// Attempts that were out when the scheduler restarted, by the time they stop waiting to
    /// be adopted; their tasks are `ready` but kept out of the policies meanwhile.
    adoptable: HashMap<TaskRef, u32>,
    adoption_deadlines: BinaryHeap<Reverse<(Millis, TaskRef)>>,
    /// The worker running each started attempt, and the attempts each worker runs.
    running_on: HashMap<TaskRef, Arc<str>>,
    by_worker: HashMap<Arc<str>, HashSet<TaskRef>>,
    /// The fleet model of placement-aware policies.
    placer: Option<Placer>,
    /// Workflows whose plan found no worker for some task (planned again when workers come).
    incomplete_plans: Vec<u32>,
    /// The fleet model's generation when they were last planned.
    incomplete_generation: u64,
    /// Reused buffer for a task's parents.
    parents: Vec<ParentAt>,
    /// Slots of each group of pools served by common workers, counted once.
    shared_slots: Vec<usize>,
    /// Per worker, the planned tasks not yet sent to it, by planned start (`heft`, `cpop`):
    /// the worker takes them in this order.
    plan_order: HashMap<u32, BTreeSet<(u64, TaskRef)>>,
    /// Workers whose plan may move on (a task of theirs ended or became ready), and the fleet
    /// model's generation when every plan was last looked at.
    plan_dirty: Vec<u32>,
    plan_generation: u64,
    /// Per worker, planned tasks that already had their turn and are ready again (retries),
    /// waiting for room there, highest plan priority first.
    parked: HashMap<u32, BinaryHeap<(u64, Reverse<TaskRef>)>>,
}

impl Engine {
    pub fn new(config: EngineConfig) -> Engine {
        let jitter_state = config.jitter_seed;
        let prior = config.policy_config.default_estimate;
        let placer = match config.policy.placement() {
            Placement::Pool => None,
            Placement::Online => Some(Placer::new(Some(ROOM_PER_SLOT))),
            Placement::Planned(_) => Some(Placer::new(None)),
        };
        Engine {
            config,
            workflows: Vec::new(),
            workflow_by_id: HashMap::new(),
            pools: HashMap::new(),
            retries: BinaryHeap::new(),
            next_workflow_seq: 0,
            next_ready_seq: 0,
            jitter_state,
            updates: Vec::new(),
            scratch: Vec::new(),
            predictor: Predictor::new(prior),
            adoptable: HashMap::new(),
            adoption_deadlines: BinaryHeap::new(),
            running_on: HashMap::new(),
            by_worker: HashMap::new(),
            placer,
            incomplete_plans: Vec::new(),
            incomplete_generation: 0,
            parents: Vec::new(),
            shared_slots: Vec::new(),
            plan_order: HashMap::new(),
            plan_dirty: Vec::new(),
            plan_generation: 0,
            parked: HashMap::new(),
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

    /// Tells placement-aware policies which workers there are; other policies ignore it.
    fn set_workers(&mut self, workers: &[WorkerModel], now: Millis) {
        if let Some(placer) = self.placer.as_mut() {
            placer.set_workers(workers, now.0);
        }
    }

    /// Whether the policy chooses workers (dispatches then name one).
    pub fn places_tasks(&self) -> bool {
        self.placer.is_some()
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
        self.pool(pool).capacity = slots;
    }

    /// Sets the slots of every pool at once; pools not named get none. Pools share no slots
    /// until [`Engine::set_shared_slots`] says so.
    fn set_capacities(&mut self, capacity: &HashMap<String, usize>) {
        self.shared_slots.clear();
        for pool in self.pools.values_mut() {
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
            let group = self.shared_slots.len();
            self.shared_slots.push(*slots);
            for pool in pools {
                self.pool(pool).group = Some(group);
            }
        }
    }

    /// A worker missed its lease: every attempt it had started is given up and its task is
    /// ready again (the next dispatch is a new attempt; a late result of the old one is
    /// ignored). Returns how many attempts were given up.
    pub fn on_worker_lost(&mut self, worker: &str, now: Millis) -> usize {
        if let Some(placer) = self.placer.as_mut() {
            placer.worker_gone(worker);
        }
        let Some(tasks) = self.by_worker.remove(worker) else {
            return 0;
        };
        let mut n_lost = 0;
        for task in tasks {
            self.running_on.remove(&task);
            let Some(run) = run_at(&mut self.workflows, task.workflow_idx) else {
                continue;
            };
            let state = run.tasks[task.task_idx as usize].state;
            if !state.is_in_flight() {
                continue;
            }
            let next = transition(state, TaskEvent::LeaseLost).expect("an in-flight task can lose its lease");
            run.set_state(task.task_idx, next);
            let spec_task = &run.spec.tasks[task.task_idx as usize];
            let slots = spec_task.resources.slots as usize;
            if let Some(pool) = self.pools.get_mut(&spec_task.pool) {
                pool.in_flight = pool.in_flight.saturating_sub(slots);
            }
            self.updates.push(StoreUpdate::Task {
                workflow_id: run.id.clone(),
                record: run.record(task.task_idx),
            });
            self.push_ready(task, now);
            n_lost += 1;
        }
        n_lost
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
        let seq = self.next_workflow_seq;
        self.next_workflow_seq += 1;
        // Slots are never reused, so a stale reference (a retry timer, a late event) can never
        // land on another workflow.
        let workflow_idx = self.workflows.len() as u32;
        let mut run = match stored {
            None => WorkflowRun::fresh(id.clone(), spec, seq),
            Some(records) => WorkflowRun::restored(id.clone(), spec, seq, records),
        };
        // Attempts that were out are lost with the old scheduler; failures not yet
        // propagated (a crash between the two writes) are propagated now.
        let mut failed = Vec::new();
        let mut waiting_for_adoption = Vec::new();
        for task_idx in 0..run.tasks.len() as u32 {
            let state = run.tasks[task_idx as usize].state;
            let lost = state.is_in_flight();
            if lost && !self.config.adoption_grace.is_zero() {
                waiting_for_adoption.push((task_idx, run.tasks[task_idx as usize].attempt));
            }
            let unblocked = state == TaskState::Pending && run.tasks[task_idx as usize].waiting == 0;
            if lost || unblocked {
                run.set_state(task_idx, TaskState::Ready);
                self.updates.push(StoreUpdate::Task {
                    workflow_id: id.clone(),
                    record: run.record(task_idx),
                });
            } else if matches!(
                state,
                TaskState::Failed | TaskState::TimedOut | TaskState::Cancelled | TaskState::UpstreamFailed
            ) {
                failed.push(task_idx);
            }
        }
        for (&task_idx, &due) in &run.retry_at {
            let attempt = run.tasks[task_idx as usize].attempt;
            self.retries.push(Reverse((
                due,
                TaskRef {
                    workflow_idx: workflow_idx,
                    task_idx,
                },
                attempt,
            )));
        }
        self.workflows.push(Some(Box::new(run)));
        self.workflow_by_id.insert(id, workflow_idx);
        self.place_workflow(workflow_idx, now);
        self.assess_criticality(workflow_idx);
        for task_idx in failed {
            self.propagate_failure(workflow_idx, task_idx);
        }
        self.announce_workflow(workflow_idx);
        let deadline = now.plus(self.config.adoption_grace);
        for &(task_idx, attempt) in &waiting_for_adoption {
            let task = TaskRef {
                workflow_idx: workflow_idx,
                task_idx,
            };
            self.adoptable.insert(task, attempt);
            self.adoption_deadlines.push(Reverse((deadline, task)));
        }
        let run = self.workflows[workflow_idx as usize].as_ref().expect("just added");
        let adoptable = &self.adoptable;
        let ready: Vec<u32> = (0..run.tasks.len() as u32)
            .filter(|&idx| run.tasks[idx as usize].state == TaskState::Ready)
            .filter(|&idx| {
                !adoptable.contains_key(&TaskRef {
                    workflow_idx: workflow_idx,
                    task_idx: idx,
                })
            })
            .collect();
        for task_idx in ready {
            self.push_ready(
                TaskRef {
                    workflow_idx: workflow_idx,
                    task_idx,
                },
                now,
            );
        }
        self.check_finished(workflow_idx, now);
    }

    /// Records how an attempt ended, if it is the task's current attempt (fencing): a late
    /// result of an attempt that was already given up on is ignored, so each task's outcome is
    /// recorded once even when it ran twice.
    pub fn on_finished(&mut self, result: TaskResult, now: Millis) -> Result<(), Ignored> {
        let (workflow_idx, task_idx) = self.locate(&result.workflow_id, result.task_idx)?;
        // The result of an attempt that survived a restart, before its worker's heartbeat.
        self.adopt(&result.worker, &result.workflow_id, result.task_idx, result.attempt);
        let jitter = self.next_jitter();
        let run = self.workflows[workflow_idx as usize].as_mut().expect("located");
        let task = run.tasks[task_idx as usize];
        if task.attempt != result.attempt || !task.state.is_in_flight() {
            return Err(Ignored::StaleAttempt {
                got: result.attempt,
                current: task.attempt,
                state: task.state,
            });
        }
        let spec_task = &run.spec.tasks[task_idx as usize];
        let slots = spec_task.resources.slots as usize;
        let retry_policy = spec_task.retry;
        let task_ref = TaskRef {
            workflow_idx: workflow_idx,
            task_idx,
        };
        if let Some(worker) = self.running_on.remove(&task_ref) {
            if let Some(tasks) = self.by_worker.get_mut(&worker) {
                tasks.remove(&task_ref);
            }
        }
        if let Some(pool) = self.pools.get_mut(&spec_task.pool) {
            pool.in_flight = pool.in_flight.saturating_sub(slots);
        }
        if let (Some(placer), Some(placement)) = (self.placer.as_mut(), run.placement.as_mut()) {
            let idx = task_idx as usize;
            if placement.worker[idx] != NO_WORKER {
                placer.release(placement.worker[idx], slots as u32, placement.end[idx], now.0);
                // It has room again: its next planned task may go.
                self.plan_dirty.push(placement.worker[idx]);
            }
            if let Some(actual) = placer.find_named(&result.worker) {
                placement.worker[idx] = actual;
            }
            placement.end[idx] = result.finished_at.0;
        }
        if result.outcome == AttemptOutcome::Succeeded {
            let learned = self
                .predictor
                .observe_task(spec_task, result.finished_at.since(result.started_at));
            self.updates.push(StoreUpdate::RuntimeStats {
                signature: learned.signature,
                stats: learned.stats,
            });
            if let Some((key, model)) = learned.features {
                self.updates.push(StoreUpdate::FeatureModel { key, model });
            }
        }
        let failed = matches!(result.outcome, AttemptOutcome::Failed { .. } | AttemptOutcome::TimedOut);
        let n_failures = task.n_failures + u32::from(failed);
        run.tasks[task_idx as usize].n_failures = n_failures;
        let event = TaskEvent::Finished {
            outcome: result.outcome,
            retries_left: !run.cancelled && retries_left(&retry_policy, n_failures),
        };
        let next = transition(task.state, event).expect("an in-flight task accepts a result");
        run.set_state(task_idx, next);
        if next == TaskState::Succeeded && run.tasks[task_idx as usize].children_left > 0 {
            run.outputs[task_idx as usize] = result.output.as_ref().map(|output| Arc::from(output.get()));
        }
        if next == TaskState::Retrying {
            let due = now.plus(backoff_delay(&retry_policy, n_failures, jitter));
            run.retry_at.insert(task_idx, due);
            self.retries.push(Reverse((
                due,
                TaskRef {
                    workflow_idx: workflow_idx,
                    task_idx,
                },
                result.attempt,
            )));
        }
        let workflow_id = run.id.clone();
        let mut task_record = run.record(task_idx);
        if next == TaskState::Succeeded {
            task_record.output = result.output.as_ref().map(|output| output.get().to_string());
        }
        // A result without a worker is the scheduler's own: the attempt never reached one.
        let reached_worker = !result.worker.is_empty();
        self.updates.push(StoreUpdate::AttemptFinished {
            workflow_id: workflow_id.clone(),
            record: AttemptRecord {
                task_idx,
                attempt: result.attempt,
                dispatched_at: Millis(0),
                worker: reached_worker.then_some(result.worker),
                started_at: reached_worker.then_some(result.started_at),
                finished_at: Some(result.finished_at),
                outcome: Some(result.outcome),
                exit_code: result.exit_code,
                signal: result.signal,
                error: result.error,
                stdout_tail: result.stdout_tail,
                stderr_tail: result.stderr_tail,
            },
        });
        self.updates.push(StoreUpdate::Task {
            workflow_id,
            record: task_record,
        });
        match next {
            TaskState::Succeeded => self.unlock_children(workflow_idx, task_idx, now),
            TaskState::Failed | TaskState::TimedOut | TaskState::Cancelled => self.propagate_failure(workflow_idx, task_idx),
            _ => {}
        }
        if next.is_terminal() {
            self.release_parent_outputs(workflow_idx, task_idx);
            self.task_done(workflow_idx, task_idx);
        }
        self.check_finished(workflow_idx, now);
        Ok(())
    }

    /// The message of a dispatched attempt cannot be delivered (too large for the transport,
    /// or refused by it): the attempt fails for good with `reason`, and the task with it (its
    /// dependents as upstream failures), as retrying would send the same message again.
    pub fn on_undeliverable(
        &mut self,
        task: TaskRef,
        attempt: u32,
        reason: String,
        now: Millis,
    ) -> Result<(), Ignored> {
        let run = run_at(&mut self.workflows, task.workflow_idx)
            .ok_or_else(|| Ignored::UnknownWorkflow(format!("#{}", task.workflow_idx)))?;
        let spec_task = run
            .spec
            .tasks
            .get(task.task_idx as usize)
            .ok_or(Ignored::UnknownTask(task.task_idx))?;
        let mut result = TaskResult::succeeded(
            run.id.to_string(),
            spec_task.id.clone(),
            task.task_idx,
            attempt,
            "",
            now,
            now,
        );
        result.outcome = AttemptOutcome::Failed { retryable: false };
        result.error = Some(reason);
        self.on_finished(result, now)
    }

    /// Makes retrying tasks whose backoff has passed ready again.
    pub fn on_timers(&mut self, now: Millis) {
        while let Some(&Reverse((due, task))) = self.adoption_deadlines.peek() {
            if due > now {
                break;
            }
            self.adoption_deadlines.pop();
            if self.adoptable.remove(&task).is_some() && self.task_state_at(task) == Some(TaskState::Ready) {
                self.push_ready(task, now);
            }
        }
        while let Some(&Reverse((due, task, attempt))) = self.retries.peek() {
            if due > now {
                break;
            }
            self.retries.pop();
            let Some(run) = run_at(&mut self.workflows, task.workflow_idx) else {
                continue;
            };
            let runtime = run.tasks[task.task_idx as usize];
            if runtime.state != TaskState::Retrying || runtime.attempt != attempt {
                continue;
            }
            run.retry_at.remove(&task.task_idx);
            run.set_state(task.task_idx, TaskState::Ready);
            self.updates.push(StoreUpdate::Task {
                workflow_id: run.id.clone(),
                record: run.record(task.task_idx),
            });
            self.push_ready(task, now);
        }
    }

    /// When the next retry or adoption deadline is due, if any.
    pub fn next_timer(&self) -> Option<Millis> {
        let retry = self.retries.peek().map(|Reverse((due, _, _))| *due);
        let adoption = self.adoption_deadlines.peek().map(|Reverse((due, _))| *due);
        retry.into_iter().chain(adoption).min()
    }

    pub(super) fn task_state_at(&self, task: TaskRef) -> Option<TaskState> {
        let run = self.workflows.get(task.workflow_idx as usize)?.as_ref()?;
        run.tasks.get(task.task_idx as usize).map(|runtime| runtime.state)
    }

    /// Takes ready tasks in policy order while their pools have capacity (plus the prefetch
    /// margin), marks them dispatched as a new attempt, and returns their messages.
    ///
    /// Under a placement-aware policy each task also gets a worker (see [`Dispatch::worker`]):
    /// its planned one (`heft`, `cpop`) while that worker is alive, else the one where it would
    /// complete earliest (`mct`, and planned tasks whose worker left). A worker is sent no
    /// more than two tasks per slot; planned tasks wait in the engine for their worker
    /// meanwhile, and are placed anew if it leaves.
    pub fn dispatch(&mut self, now: Millis) -> Vec<Dispatch> {
        if self.placer.is_some() {
            return self.dispatch_placed(now);
        }
        let margin = self.config.prefetch_margin;
        let mut dispatches = Vec::new();
        let mut group_used = vec![0usize; self.shared_slots.len()];
        for pool in self.pools.values() {
            if let Some(group) = pool.group {
                group_used[group] += pool.in_flight;
            }
        }
        // Pools take turns, one task each, so that pools sharing slots share them fairly;
        // a pool leaves the round when it has no room or nothing ready.
        let mut open: Vec<Arc<str>> = self.pools.keys().cloned().collect();
        open.sort_unstable();
        while !open.is_empty() {
            let mut at = 0;
            while at < open.len() {
                let pool = self.pools.get_mut(&open[at]).expect("known pool");
                let capped = self.config.margin_capped_by_slots;
                let margin_for = |slots: usize| if capped { margin.min(slots) } else { margin };
                let shared_room = |group: usize| {
                    let slots = self.shared_slots[group];
                    group_used[group] < slots + margin_for(slots)
                };
                // A pool no worker serves gets nothing, not even the prefetch margin.
                let has_room = pool.capacity > 0
                    && pool.in_flight < pool.capacity + margin_for(pool.capacity)
                    && pool.group.is_none_or(shared_room);
                let next = if has_room {
                    pop_ready(pool.policy.as_mut(), &self.workflows, now)
                } else {
                    None
                };
                let Some(task) = next else {
                    open.remove(at);
                    continue;
                };
                let run = run_at(&mut self.workflows, task.workflow_idx).expect("a ready task's workflow");
                let slots = run.spec.tasks[task.task_idx as usize].resources.slots as usize;
                pool.in_flight += slots;
                if let Some(group) = pool.group {
                    group_used[group] += slots;
                }
                dispatches.push(Dispatch {
                    task,
                    message: mark_dispatched(run, task.task_idx, now, &mut self.updates),
                    worker: None,
                });
                at += 1;
            }
        }
        dispatches
    }

    /// Cancels a workflow: tasks not yet out end `cancelled` now; attempts that are out are
    /// returned, to be stopped on their workers (they end `cancelled` when they report back).
    pub fn cancel_workflow(&mut self, workflow_id: &str, now: Millis) -> Option<Vec<(TaskRef, u32)>> {
        let workflow_idx = *self.workflow_by_id.get(workflow_id)?;
        let run = self.workflows[workflow_idx as usize].as_mut()?;
        run.cancelled = true;
        let mut in_flight = Vec::new();
        for task_idx in 0..run.tasks.len() as u32 {
            let task = run.tasks[task_idx as usize];
            if task.state.is_in_flight() {
                in_flight.push((
                    TaskRef {
                        workflow_idx: workflow_idx,
                        task_idx,
                    },
                    task.attempt,
                ));
            } else if !task.state.is_terminal() {
                run.retry_at.remove(&task_idx);
                run.set_state(task_idx, TaskState::Cancelled);
                self.updates.push(StoreUpdate::Task {
                    workflow_id: run.id.clone(),
                    record: run.record(task_idx),
                });
                // A planned worker waiting for this task moves on to its next one.
                if let Some(placement) = &run.placement {
                    if placement.worker[task_idx as usize] != NO_WORKER {
                        self.plan_dirty.push(placement.worker[task_idx as usize]);
                    }
                }
            }
        }
        self.check_finished(workflow_idx, now);
        Some(in_flight)
    }

    /// Store updates produced since the last call, in the order they happened.
    pub fn take_updates(&mut self) -> Vec<StoreUpdate> {
        std::mem::take(&mut self.updates)
    }

    /// The workflow's state, while the engine holds it.
    pub fn workflow_state(&self, workflow_id: &str) -> Option<WorkflowState> {
        self.run(workflow_id).map(|run| run.state)
    }

    /// How many tasks of the workflow are in each state, in `TaskState::ALL` order.
    pub fn task_counts(&self, workflow_id: &str) -> Option<[usize; TaskState::ALL.len()]> {
        self.run(workflow_id).map(|run| run.counts)
    }

    /// The state of one task.
    pub fn task_state(&self, workflow_id: &str, task_idx: u32) -> Option<TaskState> {
        self.run(workflow_id)?
            .tasks
            .get(task_idx as usize)
            .map(|task| task.state)
    }

    /// Forgets a workflow, freeing its memory.
    pub fn remove_workflow(&mut self, workflow_id: &str) {
        if let Some(workflow_idx) = self.workflow_by_id.remove(workflow_id) {
            self.workflows[workflow_idx as usize] = None;
            for pool in self.pools.values_mut() {
                pool.policy.on_workflow_removed(workflow_idx);
            }
            self.running_on.retain(|task, _| task.workflow_idx != workflow_idx);
            for tasks in self.by_worker.values_mut() {
                tasks.retain(|task| task.workflow_idx != workflow_idx);
            }
        }
    }

    /// Slots taken by dispatched attempts, over all pools.
    pub fn in_flight(&self) -> usize {
        self.pools.values().map(|pool| pool.in_flight).sum()
    }

    fn run(&self, workflow_id: &str) -> Option<&WorkflowRun> {
        let workflow_idx = *self.workflow_by_id.get(workflow_id)?;
        self.workflows[workflow_idx as usize].as_deref()
    }

    fn locate(&self, workflow_id: &str, task_idx: u32) -> Result<(u32, u32), Ignored> {
        let workflow_idx = *self
            .workflow_by_id
            .get(workflow_id)
            .ok_or_else(|| Ignored::UnknownWorkflow(workflow_id.to_string()))?;
        let run = self.workflows[workflow_idx as usize]
            .as_ref()
            .ok_or_else(|| Ignored::UnknownWorkflow(workflow_id.to_string()))?;
        if task_idx as usize >= run.tasks.len() {
            return Err(Ignored::UnknownTask(task_idx));
        }
        Ok((workflow_idx, task_idx))
    }

    fn pool(&mut self, name: &str) -> &mut Pool {
        if !self.pools.contains_key(name) {
            let policy = self.config.policy.build(&self.config.policy_config);
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

    fn push_ready(&mut self, task: TaskRef, now: Millis) {
        let ready_seq = self.next_ready_seq;
        self.next_ready_seq += 1;
        let run = self.workflows[task.workflow_idx as usize]
            .as_ref()
            .expect("ready task has a workflow");
        let spec = &run.spec.tasks[task.task_idx as usize];
        let ready = ReadyTask {
            task,
            workflow_seq: run.seq,
            ready_seq,
            ready_at: now,
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
        if let Some(placement) = &run.placement {
            let worker = placement.worker[task.task_idx as usize];
            if worker != NO_WORKER {
                // Its planned worker may be waiting for it.
                self.plan_dirty.push(worker);
            }
        }
        let pool = spec.pool.clone();
        self.pool(&pool).policy.push(ready);
    }

    /// A task succeeded: children whose last parent this was become ready.
    fn unlock_children(&mut self, workflow_idx: u32, task_idx: u32, now: Millis) {
        let run = self.workflows[workflow_idx as usize].as_mut().expect("live workflow");
        let spec = run.spec.clone();
        let mut newly_ready = std::mem::take(&mut self.scratch);
        for &child in spec.dag.children(task_idx) {
            let child_task = &mut run.tasks[child as usize];
            child_task.waiting -= 1;
            if child_task.waiting == 0 && child_task.state == TaskState::Pending {
                run.set_state(child, TaskState::Ready);
                self.updates.push(StoreUpdate::Task {
                    workflow_id: run.id.clone(),
                    record: run.record(child),
                });
                newly_ready.push(child);
            }
        }
        for &child in &newly_ready {
            self.push_ready(
                TaskRef {
                    workflow_idx: workflow_idx,
                    task_idx: child,
                },
                now,
            );
        }
        newly_ready.clear();
        self.scratch = newly_ready;
    }

    /// A task ended without success: every pending descendant becomes `upstream_failed`.
    /// Each descendant is visited once; independent branches are untouched.
    fn propagate_failure(&mut self, workflow_idx: u32, task_idx: u32) {
        let run = self.workflows[workflow_idx as usize].as_mut().expect("live workflow");
        let spec = run.spec.clone();
        let mut stack: Vec<u32> = spec.dag.children(task_idx).to_vec();
        while let Some(child) = stack.pop() {
            if run.tasks[child as usize].state != TaskState::Pending {
                continue;
            }
            run.set_state(child, TaskState::UpstreamFailed);
            self.updates.push(StoreUpdate::Task {
                workflow_id: run.id.clone(),
                record: run.record(child),
            });
            // A planned worker waiting for this task moves on to its next one.
            if let Some(placement) = &run.placement {
                if placement.worker[child as usize] != NO_WORKER {
                    self.plan_dirty.push(placement.worker[child as usize]);
                }
            }
            stack.extend_from_slice(spec.dag.children(child));
            release_outputs_of_parents(run, child);
            let estimate = estimate_ms(&spec.tasks[child as usize], &self.config, &self.predictor);
            for pool in self.pools.values_mut() {
                pool.policy.on_task_done(
                    TaskRef {
                        workflow_idx: workflow_idx,
                        task_idx: child,
                    },
                    estimate,
                );
            }
        }
    }

    /// Tells every pool's policy about a workflow and the estimated work it has left.
    fn announce_workflow(&mut self, workflow_idx: u32) {
        let run = self.workflows[workflow_idx as usize].as_ref().expect("live workflow");
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
            self.pool(pool);
        }
        for pool in self.pools.values_mut() {
            pool.policy.on_workflow_added(workflow_idx, seq, remaining_ms);
        }
    }

    /// Tells every pool's policy that a task ended for good.
    fn task_done(&mut self, workflow_idx: u32, task_idx: u32) {
        let run = self.workflows[workflow_idx as usize].as_ref().expect("live workflow");
        let estimate = estimate_ms(&run.spec.tasks[task_idx as usize], &self.config, &self.predictor);
        for pool in self.pools.values_mut() {
            pool.policy.on_task_done(
                TaskRef {
                    workflow_idx: workflow_idx,
                    task_idx,
                },
                estimate,
            );
        }
    }

    /// A task ended: parents whose children have all ended drop their outputs.
    fn release_parent_outputs(&mut self, workflow_idx: u32, task_idx: u32) {
        let run = self.workflows[workflow_idx as usize].as_mut().expect("live workflow");
        release_outputs_of_parents(run, task_idx);
    }

    fn check_finished(&mut self, workflow_idx: u32, now: Millis) {
        let run = self.workflows[workflow_idx as usize].as_mut().expect("live workflow");
        if run.state.is_terminal() {
            return;
        }
        if let Some(outcome) = run.outcome() {
            run.state = outcome;
            self.updates.push(StoreUpdate::WorkflowFinished {
                workflow_id: run.id.clone(),
                state: outcome,
                at: now,
            });
        }
    }

    /// A uniform sample in `[0, 1)` (splitmix64), for retry jitter.
    fn next_jitter(&mut self) -> f64 {
        self.jitter_state = self.jitter_state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.jitter_state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The runtime a policy assumes for a task: the predicted mean in predictive mode, else its
/// declared estimate, or the configured prior.
fn estimate_ms(task: &taskfleet_common::TaskSpec, config: &EngineConfig, predictor: &Predictor) -> u64 {
    let estimate = if config.predictive {
        predictor.predict(task).mean
    } else {
        task.estimate.unwrap_or(config.policy_config.default_estimate)
    };
    estimate.as_millis() as u64
}

/// The live workflow at `workflow_idx`, borrowing only the workflows (not the whole engine).
fn run_at(workflows: &mut [Option<Box<WorkflowRun>>], workflow_idx: u32) -> Option<&mut WorkflowRun> {
    workflows.get_mut(workflow_idx as usize).and_then(Option::as_deref_mut)
}

fn release_outputs_of_parents(run: &mut WorkflowRun, task_idx: u32) {
    let spec = run.spec.clone();
    for &parent in spec.dag.parents(task_idx) {
        let parent_task = &mut run.tasks[parent as usize];
        parent_task.children_left = parent_task.children_left.saturating_sub(1);
        if parent_task.children_left == 0 {
            run.outputs[parent as usize] = None;
        }
    }
}

/// The next task of `policy` that is still ready (tasks cancelled or re-queued since they were
/// pushed are dropped).
fn pop_ready(policy: &mut dyn Policy, workflows: &[Option<Box<WorkflowRun>>], now: Millis) -> Option<TaskRef> {
    while let Some(task) = policy.pop(now) {
        let ready = workflows
            .get(task.workflow_idx as usize)
            .and_then(Option::as_deref)
            .is_some_and(|run| run.tasks[task.task_idx as usize].state == TaskState::Ready);
        if ready {
            return Some(task);
        }
    }
    None
}

/// Makes the task's next attempt, records it, and returns its message.
fn mark_dispatched(run: &mut WorkflowRun, task_idx: u32, now: Millis, updates: &mut Vec<StoreUpdate>) -> TaskMessage {
    let attempt = run.tasks[task_idx as usize].attempt + 1;
    run.tasks[task_idx as usize].attempt = attempt;
    run.set_state(task_idx, TaskState::Dispatched);
    updates.push(StoreUpdate::AttemptDispatched {
        workflow_id: run.id.clone(),
        task_idx,
        attempt,
        at: now,
    });
    updates.push(StoreUpdate::Task {
        workflow_id: run.id.clone(),
        record: run.record(task_idx),
    });
    task_message(run, task_idx)
}

/// The message for the current attempt of a task, with its parents' outputs as inputs.
fn task_message(run: &WorkflowRun, task_idx: u32) -> TaskMessage {
    let spec = &run.spec.tasks[task_idx as usize];
    let mut inputs = std::collections::BTreeMap::new();
    for dep in &spec.deps {
        if let Some(output) = &run.outputs[dep.task as usize] {
            if let Ok(raw) = RawValue::from_string(output.to_string()) {
                inputs.insert(run.spec.tasks[dep.task as usize].id.clone(), raw);
            }
        }
    }
    TaskMessage {
        v: WIRE_VERSION,
        workflow_id: run.id.to_string(),
        task: spec.id.clone(),
        task_idx,
        attempt: run.tasks[task_idx as usize].attempt,
        pool: spec.pool.to_string(),
        priority: spec.priority,
        action: WireAction::from(&spec.action),
        timeout_ms: spec.timeout.map(|timeout| timeout.as_millis() as u64),
        inputs,
    }
}

#[cfg(test)]
mod tests;
