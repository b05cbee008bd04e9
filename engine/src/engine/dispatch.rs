//! Dispatch under the policies that do not place tasks, and the engine's side of placement by
//! request: tasks that ask for resources go to a worker where they fit ([`crate::packing`]),
//! wait in their place when none has room, and hold what they take until their attempt ends.

use std::collections::HashMap;
use std::sync::Arc;

use taskfleet_common::{Millis, WorkflowSpec};

use super::{pop_ready, Dispatch, Engine, BACKFILL_WINDOW};
use crate::packing::{self, Ask};
use crate::policy::TaskRef;

impl Engine {
    /// Takes ready tasks in policy order while their pools have capacity (plus the prefetch
    /// margin), marks them dispatched as a new attempt, and returns their messages.
    ///
    /// Under a placement-aware policy each task also gets a worker (see [`Dispatch::worker`]):
    /// its planned one (`heft`, `cpop`) while that worker is alive, else the one where it would
    /// complete earliest (`mct`, and planned tasks whose worker left). A worker is sent no
    /// more than two tasks per slot; planned tasks wait in the engine for their worker
    /// meanwhile, and are placed anew if it leaves.
    pub fn dispatch(&mut self, now: Millis) -> Vec<Dispatch> {
        if self.plans.is_some() {
            return self.dispatch_placed(now);
        }
        let margin = self.config.prefetch_margin;
        let capped = self.config.margin_capped_by_slots;
        let margin_for = |slots: usize| if capped { margin.min(slots) } else { margin };
        let admission = &mut self.admission;
        let mut dispatches = Vec::new();
        let mut deferred = Vec::new();
        let mut passed_over: HashMap<Arc<str>, usize> = HashMap::new();
        let mut group_used = vec![0usize; admission.shared_slots.len()];
        for pool in admission.pools.values() {
            if let Some(group) = pool.group {
                group_used[group] += pool.in_flight;
            }
        }
        // Pools take turns, one task each, so that pools sharing slots share them fairly;
        // a pool leaves the round when it has no room or nothing ready.
        let mut open: Vec<Arc<str>> = admission.pools.keys().cloned().collect();
        open.sort_unstable();
        while !open.is_empty() {
            let mut at = 0;
            while at < open.len() {
                let pool = admission.pools.get_mut(&open[at]).expect("known pool");
                let shared_room = |group: usize| {
                    let slots = admission.shared_slots[group];
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
                // A task that asks for resources goes to a worker where they fit now, or waits.
                let mut worker = None;
                let run = self.workflows.live(task.workflow_idx);
                let asks = packing::asks(&run.spec.tasks[task.task_idx as usize]);
                if asks && self.bins.serves(&run.spec.tasks[task.task_idx as usize].pool) {
                    let spec = run.spec.clone();
                    let ask = Ask::of(&spec.tasks[task.task_idx as usize], spec.tenant.as_deref());
                    match self.bins.choose(&ask) {
                        Ok(placed) => {
                            self.bins.hold(task, &placed.worker, placed.lent, &ask);
                            self.leases.run_on(task, &placed.worker);
                            worker = Some(placed.worker);
                        }
                        Err(_) => {
                            deferred.push(task);
                            let passed = passed_over.entry(open[at].clone()).or_default();
                            *passed += 1;
                            if *passed >= BACKFILL_WINDOW {
                                open.remove(at);
                            }
                            continue;
                        }
                    }
                }
                if asks {
                    admission.asked_at.remove(&task);
                }
                let run = self.workflows.live(task.workflow_idx);
                let slots = run.spec.tasks[task.task_idx as usize].resources.slots as usize;
                pool.in_flight += slots;
                if let Some(group) = pool.group {
                    group_used[group] += slots;
                }
                dispatches.push(Dispatch {
                    task,
                    message: run.dispatch_attempt(task.task_idx, now, &mut self.updates),
                    worker,
                });
                at += 1;
            }
        }
        self.wait_for_room(deferred, now);
        dispatches
    }

    /// Tasks that ask for resources and found no worker with room go back to their pools'
    /// policies, in their old places; reservations hear which of their owners' tasks wait.
    pub(super) fn wait_for_room(&mut self, deferred: Vec<TaskRef>, now: Millis) {
        if self.bins.has_reservations() {
            let specs: Vec<(Arc<WorkflowSpec>, usize)> = deferred
                .iter()
                .filter_map(|task| {
                    Some((
                        self.workflows.get(task.workflow_idx)?.spec.clone(),
                        task.task_idx as usize,
                    ))
                })
                .collect();
            self.bins.set_waiting(
                specs
                    .iter()
                    .map(|(spec, idx)| Ask::of(&spec.tasks[*idx], spec.tenant.as_deref())),
            );
        }
        for task in deferred {
            self.push_ready(task, now);
        }
    }

    /// `worker` runs `task`: it holds the task's lease, and what the task takes there.
    pub(super) fn runs_on(&mut self, task: TaskRef, worker: &str) {
        self.leases.run_on(task, worker);
        if self.bins.holder(task) == Some(worker) {
            return;
        }
        self.bins.release(task);
        let Some(run) = self.workflows.get(task.workflow_idx) else {
            return;
        };
        let spec_task = &run.spec.tasks[task.task_idx as usize];
        if packing::asks(spec_task) {
            let ask = Ask::of(spec_task, run.spec.tenant.as_deref());
            self.bins.hold(task, worker, false, &ask);
        } else {
            self.bins.started(task, worker, spec_task.resources.slots);
        }
    }

    /// Up to `most` of each workflow's tasks running on a worker, the first by index, by
    /// workflow id: what progress names (one pass over what runs).
    pub fn running_tasks(&self, most: usize) -> HashMap<Arc<str>, Vec<u32>> {
        let mut by_workflow: HashMap<u32, Vec<u32>> = HashMap::new();
        for task in self.leases.running() {
            by_workflow.entry(task.workflow_idx).or_default().push(task.task_idx);
        }
        (by_workflow.into_iter())
            .filter_map(|(workflow_idx, mut tasks)| {
                let run = self.workflows.get(workflow_idx)?;
                tasks.sort_unstable();
                tasks.truncate(most);
                Some((run.id.clone(), tasks))
            })
            .collect()
    }

    /// The tasks of a workflow whose attempts run on capacity lent to them, by index.
    pub fn lent_tasks(&self, workflow_id: &str) -> Vec<u32> {
        match self.workflows.index_of(workflow_id) {
            Some(workflow_idx) => self.bins.lent_tasks(workflow_idx),
            None => Vec::new(),
        }
    }

    /// Whether the current attempt of a task runs on capacity reserved for others and lent
    /// to it (the first to make way when they need it).
    pub fn is_lent(&self, workflow_id: &str, task_idx: u32) -> bool {
        self.workflows
            .index_of(workflow_id)
            .is_some_and(|workflow_idx| self.bins.is_lent(TaskRef::new(workflow_idx, task_idx)))
    }

    /// What worker `name` has in use as placement counts it: slots, and the resources of the
    /// tasks that ask.
    pub fn worker_use(&self, name: &str) -> Option<(u32, taskfleet_common::resources::ResourceSet)> {
        self.bins.used(name).map(|(slots, used)| (slots, used.clone()))
    }

    /// Slots taken by dispatched attempts, over all pools.
    pub fn in_flight(&self) -> usize {
        self.admission.pools.values().map(|pool| pool.in_flight).sum()
    }
}
