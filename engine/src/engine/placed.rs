//! The engine's side of placement-aware policies (`mct`, `heft`, `cpop`, the batch mappers)
//! and of predictive mode: choosing each task's worker at dispatch, keeping planned tasks
//! while their worker is full, and sampling criticality (planning itself: `planning.rs`).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::SeedableRng;
use taskfleet_common::state::TaskState;
use taskfleet_common::Millis;

use super::state::Plans;
use super::{believed_runtime, pop_ready, Dispatch, Engine, BACKFILL_WINDOW, CRITICALITY_SAMPLES, ROOM_PER_SLOT};
use crate::eta::{monte_carlo_eta, slots_by_speed, TaskProgress};
use crate::packing::{self, Ask};
use crate::placement::{ParentAt, TaskShape, WorkerId, WorkerModel};
use crate::policy::{Placement, TaskRef};

/// What became of a task the engine tried to place.
enum PlaceOutcome {
    Sent(Box<Dispatch>),
    /// Kept for its planned worker: until its turn in that worker's plan, or until the worker
    /// holds less than it may.
    Waiting,
    /// No worker of its pool can take it now.
    NoWorker,
    /// Its best worker (`mct`) holds all it may: it waits for it. Until the end of the
    /// dispatch round, the worker's lanes count it (so that the tasks after it see the queue
    /// it makes); `lanes` are what they were before.
    BestIsFull {
        worker: WorkerId,
        lanes: Vec<Millis>,
    },
}

impl Engine {
    /// [`Engine::dispatch`] under a placement-aware policy.
    pub(super) fn dispatch_placed(&mut self, now: Millis) -> Vec<Dispatch> {
        self.plan_incomplete(now);
        let online = matches!(self.config.policy.placement(), Placement::Online { .. });
        let mut dispatches = Vec::new();
        let mut deferred = Vec::new();
        let mut waited_for: Vec<(WorkerId, Vec<Millis>)> = Vec::new();
        let pool_names: Vec<Arc<str>> = self.admission.pools.keys().cloned().collect();
        for pool_name in pool_names {
            let mut passed_over = 0;
            loop {
                let placer = &self.plans.as_ref().expect("placement-aware policy").placer;
                let pool = self.admission.pools.get_mut(&pool_name).expect("known pool");
                if pool.capacity == 0 || (online && !placer.has_room(&pool_name)) {
                    break;
                }
                let Some(task) = pop_ready(pool.policy.as_mut(), &self.workflows, now) else {
                    break;
                };
                match self.place_task(task, online, now) {
                    PlaceOutcome::Sent(dispatch) => dispatches.push(*dispatch),
                    PlaceOutcome::Waiting => {}
                    PlaceOutcome::NoWorker => {
                        // No worker of the pool can take it now: it waits for one. Later
                        // tasks may still fit where one that asks for resources did not.
                        deferred.push(task);
                        passed_over += 1;
                        if !self.asks(task) || passed_over >= BACKFILL_WINDOW {
                            break;
                        }
                    }
                    PlaceOutcome::BestIsFull { worker, lanes } => {
                        // It waits for its worker; later tasks may be best elsewhere.
                        waited_for.push((worker, lanes));
                        deferred.push(task);
                        passed_over += 1;
                        if passed_over >= BACKFILL_WINDOW {
                            break;
                        }
                    }
                }
            }
        }
        // The queues of waiting tasks were only for this round's decisions.
        let placer = &mut plans_of(&mut self.plans).placer;
        for (worker, lanes) in waited_for.into_iter().rev() {
            placer.restore_lanes(worker, lanes);
        }
        if !online {
            self.follow_plans(now, &mut dispatches, &mut deferred);
        }
        self.wait_for_room(deferred, now);
        dispatches
    }

    /// Whether `task` asks for resources.
    fn asks(&self, task: TaskRef) -> bool {
        self.workflows
            .get(task.workflow_idx)
            .is_some_and(|run| packing::asks(&run.spec.tasks[task.task_idx as usize]))
    }

    /// Whether `task`, if it asks for resources, fits on `worker` now.
    fn fits_now_on(&self, task: TaskRef, worker: WorkerId) -> bool {
        let (Some(run), Some(plans)) = (self.workflows.get(task.workflow_idx), self.plans.as_ref()) else {
            return false;
        };
        let spec_task = &run.spec.tasks[task.task_idx as usize];
        !packing::asks(spec_task)
            || self
                .bins
                .fits_on(
                    &plans.placer.worker(worker).name,
                    &Ask::of(spec_task, run.spec.tenant.as_deref()),
                )
                .is_some()
    }

    /// Each worker takes its planned tasks in planned order, each once it is ready, while the
    /// worker holds less than [`ROOM_PER_SLOT`] tasks per slot; a task whose turn has come but
    /// whose inputs are not there yet holds the worker's later tasks back, as in the plan.
    /// Tasks planned for a worker that left are placed anew (now if ready, else when they
    /// become ready).
    ///
    /// Only workers whose plan may have moved are looked at: one of their tasks ended or became
    /// ready, or tasks were planned on them; every one when the fleet changed.
    fn follow_plans(&mut self, now: Millis, dispatches: &mut Vec<Dispatch>, deferred: &mut Vec<TaskRef>) {
        let plans = plans_of(&mut self.plans);
        let mut workers = std::mem::take(&mut plans.dirty);
        let generation = plans.placer.generation();
        if generation != plans.generation {
            plans.generation = generation;
            workers.extend(plans.order.keys().chain(plans.parked.keys()).copied());
        }
        workers.sort_unstable();
        workers.dedup();
        for worker in workers {
            let plans = plans_of(&mut self.plans);
            if !plans.placer.is_alive(worker) {
                let planned = plans.order.remove(&worker).unwrap_or_default();
                let parked = plans.parked.remove(&worker).unwrap_or_default();
                let orphans = planned.into_iter().map(|(_, task)| task);
                let orphans: Vec<TaskRef> = orphans
                    .chain(parked.into_iter().map(|(_, Reverse(task))| task))
                    .collect();
                for task in orphans {
                    if let Some(placement) = self
                        .workflows
                        .get_mut(task.workflow_idx)
                        .and_then(|run| run.placement.as_mut())
                    {
                        placement.worker[task.task_idx as usize] = None;
                    }
                    if self.sendable(task) {
                        match self.place_task(task, false, now) {
                            PlaceOutcome::Sent(dispatch) => dispatches.push(*dispatch),
                            PlaceOutcome::Waiting => {}
                            PlaceOutcome::NoWorker => deferred.push(task),
                            PlaceOutcome::BestIsFull { worker, lanes } => {
                                plans_of(&mut self.plans).placer.restore_lanes(worker, lanes);
                                deferred.push(task);
                            }
                        }
                    }
                }
                continue;
            }
            // Tasks of the plan that were sent once and came back (retries) go first.
            while self.has_room(worker) {
                let parked = plans_of(&mut self.plans).parked.get_mut(&worker);
                let Some(&(_, Reverse(task))) = parked.as_ref().and_then(|parked| parked.peek()) else {
                    break;
                };
                if self.sendable(task) && !self.fits_now_on(task, worker) {
                    break; // Its request waits for room there.
                }
                plans_of(&mut self.plans).parked.get_mut(&worker).map(BinaryHeap::pop);
                if self.sendable(task) {
                    dispatches.push(self.send_planned(task, worker, now));
                }
            }
            while self.has_room(worker) {
                let order = plans_of(&mut self.plans).order.get(&worker);
                let Some(&(start, task)) = order.and_then(|order| order.first()) else {
                    break;
                };
                match self.workflows.task_state(task) {
                    Some(TaskState::Pending | TaskState::Retrying) => break,
                    Some(TaskState::Ready) if self.leases.adoptable.contains_key(&task) => break,
                    Some(TaskState::Ready) if !self.fits_now_on(task, worker) => break,
                    Some(TaskState::Ready) => {
                        self.unplan(worker, start, task);
                        dispatches.push(self.send_planned(task, worker, now));
                    }
                    // Ended, out already, or forgotten: not this worker's to run any more.
                    _ => self.unplan(worker, start, task),
                }
            }
            let plans = plans_of(&mut self.plans);
            if plans.parked.get(&worker).is_some_and(BinaryHeap::is_empty) {
                plans.parked.remove(&worker);
            }
        }
    }

    /// Whether a task is ready to be sent (and not waiting to be adopted).
    fn sendable(&self, task: TaskRef) -> bool {
        self.workflows.is_ready(task) && !self.leases.adoptable.contains_key(&task)
    }

    /// Whether worker `worker` holds less than it may.
    fn has_room(&self, worker: WorkerId) -> bool {
        self.plans
            .as_ref()
            .is_some_and(|plans| plans.placer.has_room_on(worker, ROOM_PER_SLOT))
    }

    /// Removes a task from its worker's plan.
    fn unplan(&mut self, worker: WorkerId, start: Millis, task: TaskRef) {
        let plans = plans_of(&mut self.plans);
        if let Some(order) = plans.order.get_mut(&worker) {
            order.remove(&(start, task));
            if order.is_empty() {
                plans.order.remove(&worker);
            }
        }
    }

    /// Sends a ready task to the worker it is planned on.
    fn send_planned(&mut self, task: TaskRef, worker: WorkerId, now: Millis) -> Dispatch {
        let end = self
            .workflows
            .get(task.workflow_idx)
            .and_then(|run| run.placement.as_ref())
            .map_or(now, |placement| placement.end[task.task_idx as usize]);
        self.send(task, worker, end, now)
    }

    /// Chooses where a ready task goes: its planned worker (`heft`, `cpop`) while that one is
    /// alive — in its turn there, or, for a task that already had its turn (a retry), once the
    /// worker has room — else the worker where it would complete earliest, at once.
    fn place_task(&mut self, task: TaskRef, online: bool, now: Millis) -> PlaceOutcome {
        let plans = plans_of(&mut self.plans);
        let run = self.workflows.live(task.workflow_idx);
        let idx = task.task_idx as usize;
        let spec = run.spec.clone();
        let spec_task = &spec.tasks[idx];
        let slots = spec_task.resources.slots;
        let placement = run.placement.as_mut().expect("placed workflows have a placement");
        let asks = packing::asks(spec_task);
        let ask = Ask::of(spec_task, spec.tenant.as_deref());
        let bins = &self.bins;
        let planned = placement.worker[idx].filter(|&planned| {
            plans.placer.can_run(planned, &spec_task.pool, slots)
                && (!asks || bins.could_fit_on(&plans.placer.worker(planned).name, &ask))
        });
        if let (false, Some(planned)) = (online, planned) {
            let in_plan = plans
                .order
                .get(&planned)
                .is_some_and(|order| order.contains(&(placement.start[idx], task)));
            if !in_plan {
                let rank = placement.priority[idx].max(0.0).to_bits();
                plans.parked.entry(planned).or_default().push((rank, Reverse(task)));
            }
            // `follow_plans` sends it in its turn.
            return PlaceOutcome::Waiting;
        }
        let mut parents = std::mem::take(&mut plans.parents);
        parents.clear();
        parents.extend(spec_task.deps.iter().map(|dep| ParentAt {
            worker: placement.worker[dep.task as usize],
            end: placement.end[dep.task as usize],
            transfer_ms: u64::from(dep.transfer_ms),
        }));
        // A task that asks for resources goes only where they fit now.
        let fits_now = |worker: &WorkerModel| bins.fits_on(&worker.name, &ask).is_some();
        let (estimate_ms, known) = believed_runtime(spec_task, &self.config, &self.predictor);
        let shape = TaskShape {
            pool: &spec_task.pool,
            fits: asks.then_some(&fits_now as &dyn Fn(&WorkerModel) -> bool),
            slots,
            estimate_ms,
            by_worker: spec_task.estimate_by_worker.as_ref(),
        };
        // Completion time decides where the runtime is known; a task of unknown runtime goes
        // to the best worker with room rather than wait (the bound guards against hoarding).
        let choice = if known {
            plans.placer.choose(now, shape, &parents)
        } else {
            plans.placer.choose_with_room(now, shape, &parents)
        };
        plans.parents = parents;
        let Some(choice) = choice else {
            return PlaceOutcome::NoWorker;
        };
        if !plans.placer.has_room_on(choice.worker, ROOM_PER_SLOT) {
            let lanes = plans.placer.lane_frees(choice.worker);
            plans.placer.reserve(choice, slots);
            return PlaceOutcome::BestIsFull {
                worker: choice.worker,
                lanes,
            };
        }
        plans.placer.reserve(choice, slots);
        PlaceOutcome::Sent(Box::new(self.send(task, choice.worker, choice.end, now)))
    }

    /// Sends a ready task to `worker`, where it is expected to end at `end`.
    fn send(&mut self, task: TaskRef, worker: WorkerId, end: Millis, now: Millis) -> Dispatch {
        let placer = &mut plans_of(&mut self.plans).placer;
        let run = self.workflows.live(task.workflow_idx);
        let idx = task.task_idx as usize;
        placer.hold(worker);
        let placement = run.placement.as_mut().expect("placed workflows have a placement");
        placement.worker[idx] = Some(worker);
        placement.end[idx] = end;
        let spec_task = &run.spec.tasks[idx];
        if let Some(pool) = self.admission.pools.get_mut(&spec_task.pool) {
            pool.in_flight += spec_task.resources.slots as usize;
        }
        let asks = packing::asks(spec_task);
        if asks {
            let ask = Ask::of(spec_task, run.spec.tenant.as_deref());
            let name = &placer.worker(worker).name;
            let lent = self.bins.fits_on(name, &ask).unwrap_or(false);
            self.bins.hold(task, name, lent, &ask);
            self.admission.asked_at.remove(&task);
        }
        let message = run.dispatch_attempt(task.task_idx, now, &mut self.updates);
        let name = placer.worker(worker).name.clone();
        self.leases.run_on(task, &name);
        Dispatch {
            task,
            message,
            worker: Some(name),
        }
    }

    /// In predictive mode, samples the new workflow's runtimes from the predictor and notes
    /// how often each task lies on the chain that decides its end, for the policies
    /// ([`crate::policy::ReadyTask::criticality`]). At most [`CRITICALITY_SAMPLES`] samples, fewer for large
    /// workflows (the sampling is bounded like the ETA's), seeded for repeatable runs.
    pub(super) fn assess_criticality(&mut self, workflow_idx: u32) {
        if !self.config.predictive {
            return;
        }
        let run = self.workflows.live(workflow_idx);
        let progress: Vec<TaskProgress> = run
            .tasks
            .iter()
            .map(|task| TaskProgress::of(task.state, None))
            .map(|progress| match progress {
                TaskProgress::Running { .. } => TaskProgress::Waiting,
                other => other,
            })
            .collect();
        // The fleet's slots: with their speeds where placement knows them, else the
        // capacity offered (or, before any worker is known, a slot per task).
        let capacity: usize = self.admission.pools.values().map(|pool| pool.capacity).sum();
        let slots = match self
            .plans
            .as_ref()
            .map(|plans| &plans.placer)
            .filter(|placer| placer.alive_slots().next().is_some())
        {
            Some(placer) => slots_by_speed(placer.alive_slots()),
            None => vec![(
                1.0,
                if capacity == 0 {
                    run.tasks.len().max(1)
                } else {
                    capacity
                },
            )],
        };
        let mut rng = StdRng::seed_from_u64(self.config.jitter_seed ^ run.seq);
        let eta = monte_carlo_eta(
            &run.spec,
            &progress,
            &self.predictor,
            &slots,
            CRITICALITY_SAMPLES,
            &mut rng,
        );
        run.criticality = Some(eta.criticality.iter().map(|&share| share as f32).collect());
    }
}

/// The plans of a placement-aware policy, which the caller knows is in use.
fn plans_of(plans: &mut Option<Plans>) -> &mut Plans {
    plans.as_mut().expect("a placement-aware policy")
}
