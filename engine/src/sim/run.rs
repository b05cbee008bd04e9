//! The event loop: the engine dispatches, the simulator places, the clock jumps to the next
//! event (a task ending, a workflow's submit offset, an engine timer).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;

use taskfleet_common::wire::{AttemptStarted, TaskResult, WIRE_VERSION};
use taskfleet_common::Millis;

use super::placement::{place, runtime_ms, Room, Scratch};
use super::{SimError, Simulator};
use crate::engine::{Engine, EngineConfig};
use crate::fleet::FleetView;
use crate::placement::{runtime_on, ParentAt, WorkerId, WorkerModel};
use crate::policy::PolicyKind;

mod calibration;

pub(super) use calibration::EtaCheck;
use calibration::EtaWatch;

/// Marks a task that has not been placed.
pub(super) const UNPLACED: u32 = u32::MAX;

/// The fleet model's id of a worker of the trace (`None` for a task not placed yet).
fn placed_on(worker: u32) -> Option<WorkerId> {
    (worker != UNPLACED).then(|| WorkerId::new(worker as usize))
}

/// What happened to every task (by global index: a workflow's first task plus its index).
pub(super) struct Trace {
    pub worker: Vec<u32>,
    pub start: Vec<u64>,
    pub end: Vec<u64>,
    /// When each workflow's last task ended.
    pub workflow_end: Vec<u64>,
    /// The ETA forecasts made during the run, when asked for.
    pub eta: Vec<EtaCheck>,
}

/// A dispatched task waiting for a worker with enough free slots.
#[derive(Clone, Copy)]
struct Waiting {
    global: usize,
    attempt: u32,
}

struct State<'a> {
    sim: &'a Simulator,
    factors: Option<&'a [f64]>,
    engine: Engine,
    trace: Trace,
    attempt: Vec<u32>,
    free: Vec<u32>,
    free_total: u64,
    /// What is left of each worker's CPUs and memory (where the fleet file declares them).
    room: Vec<Room>,
    /// Task ends, earliest first (ties by global index).
    events: BinaryHeap<Reverse<(u64, usize)>>,
    waiting: Vec<Waiting>,
    /// Tasks the engine sent to a given worker (placement-aware policies), in arrival order.
    queues: Vec<VecDeque<Waiting>>,
    /// Workers whose queue may have a task that fits now.
    to_check: Vec<usize>,
    checking: Vec<bool>,
    /// Each worker's index by name.
    by_name: HashMap<&'a str, usize>,
    /// The simulated workflow at each of the engine's workflow indices (given in submit order).
    sim_workflow_at: Vec<usize>,
    left: Vec<usize>,
    scratch: Scratch,
    /// Forecasts the workflows' ends as they progress (replays that score the ETA).
    eta_watch: Option<EtaWatch>,
}

/// Runs the simulation; `factors` (one per task) scale the runtimes of a stochastic run or a
/// replay; with `forecast`, the ETA is forecast along the way ([`Trace::eta`]).
pub(super) fn simulate(
    sim: &Simulator,
    policy: PolicyKind,
    factors: Option<&[f64]>,
    forecast: bool,
) -> Result<Trace, SimError> {
    let config = EngineConfig {
        policy,
        policy_config: sim.policy_config,
        prefetch_margin: 0,
        packing: sim.packing,
        reservations: sim.reservations.clone(),
        predictive: sim.predictor.is_some(),
        dynamic_plans: sim.predictor.is_some() && !sim.static_plans,
        ..EngineConfig::default()
    };
    let mut engine = Engine::new(config);
    if let Some(predictor) = &sim.predictor {
        engine.set_predictor(predictor.clone());
    }
    let mut capacity: HashMap<String, usize> = HashMap::new();
    for (pool, workers) in &sim.pool_workers {
        let slots = workers
            .by_speed
            .iter()
            .map(|&w| sim.fleet.workers[w].slots as usize)
            .sum();
        capacity.insert(pool.to_string(), slots);
    }
    // The simulated fleet runs each worker's tasks itself, so pools need not share slots in
    // the engine.
    let mut fleet = FleetView {
        capacity,
        ..FleetView::default()
    };
    fleet.workers = sim
        .fleet
        .workers
        .iter()
        .map(|worker| WorkerModel {
            name: Arc::from(worker.name.as_str()),
            base: Arc::from(worker.base.as_str()),
            pools: worker.pools.iter().map(|pool| Arc::from(pool.as_str())).collect(),
            slots: worker.slots,
            speed: worker.speed,
            capacity: Some(worker.capacity()),
            labels: worker.labels.clone(),
        })
        .collect();
    engine.set_fleet(&fleet, Millis(0));
    let n_workers = sim.fleet.workers.len();
    let mut state = State {
        sim,
        factors,
        engine,
        trace: Trace {
            worker: vec![UNPLACED; sim.n_tasks],
            start: vec![0; sim.n_tasks],
            end: vec![0; sim.n_tasks],
            workflow_end: vec![0; sim.workflows.len()],
            eta: Vec::new(),
        },
        attempt: vec![0; sim.n_tasks],
        free: sim.fleet.workers.iter().map(|worker| worker.slots).collect(),
        free_total: sim.fleet.total_slots(),
        room: sim.fleet.workers.iter().map(Room::of).collect(),
        events: BinaryHeap::new(),
        waiting: Vec::new(),
        queues: vec![VecDeque::new(); n_workers],
        to_check: Vec::new(),
        checking: vec![false; n_workers],
        by_name: sim
            .fleet
            .workers
            .iter()
            .enumerate()
            .map(|(idx, worker)| (worker.name.as_str(), idx))
            .collect(),
        sim_workflow_at: Vec::with_capacity(sim.workflows.len()),
        left: sim.workflows.iter().map(|workflow| workflow.spec.tasks.len()).collect(),
        scratch: Scratch::new(n_workers),
        eta_watch: None,
    };
    if forecast {
        state.eta_watch = Some(EtaWatch::new(&state));
    }
    let mut order: Vec<usize> = (0..sim.workflows.len()).collect();
    order.sort_by_key(|&w| sim.workflows[w].submit);
    let submit_at = |w: usize| sim.workflows[w].submit.as_millis() as u64;
    let mut next_submit = 0;
    let mut now = 0u64;
    loop {
        while next_submit < order.len() && submit_at(order[next_submit]) <= now {
            state.submit(order[next_submit], now);
            next_submit += 1;
        }
        while let Some(&Reverse((end, global))) = state.events.peek() {
            if end > now {
                break;
            }
            state.events.pop();
            state.finish(global, now)?;
        }
        state.engine.on_timers(Millis(now));
        let mut dispatches = state.engine.dispatch(Millis(now));
        // The engine visits pools in hash order; a stable sort keeps each pool's policy order
        // and makes runs repeatable.
        dispatches.sort_by(|a, b| a.message.pool.cmp(&b.message.pool));
        for dispatch in dispatches {
            let workflow = state.sim_workflow_at[dispatch.task.workflow_idx as usize];
            let item = Waiting {
                global: sim.first_task[workflow] + dispatch.task.task_idx as usize,
                attempt: dispatch.message.attempt,
            };
            match dispatch.worker.as_deref().and_then(|name| state.by_name.get(name)) {
                Some(&worker) => {
                    state.queues[worker].push_back(item);
                    state.check(worker);
                }
                None => state.waiting.push(item),
            }
        }
        state.place_waiting(now);
        state.run_queues(now);
        state.engine.take_updates();
        let next = [
            state.events.peek().map(|Reverse((end, _))| *end),
            order.get(next_submit).map(|&w| submit_at(w)),
            state.engine.next_timer().map(|due| due.0),
        ]
        .into_iter()
        .flatten()
        .min();
        match next {
            Some(next) => now = next.max(now),
            None => break,
        }
    }
    if state.left.iter().any(|&left| left > 0) {
        return Err(SimError::Stuck(state.unplaced()));
    }
    if let Some(watch) = state.eta_watch.take() {
        state.trace.eta = watch.checks;
    }
    Ok(state.trace)
}

impl State<'_> {
    fn submit(&mut self, workflow: usize, now: u64) {
        self.sim_workflow_at.push(workflow);
        let id: Arc<str> = Arc::from(self.sim.names[workflow].as_str());
        let spec = self.sim.workflows[workflow].spec.clone();
        self.engine.add_workflow(id, spec, None, Millis(now));
        if self.left[workflow] == 0 {
            self.trace.workflow_end[workflow] = now;
        }
    }

    /// A task ended: its slots are free and the engine hears of its success.
    fn finish(&mut self, global: usize, now: u64) -> Result<(), SimError> {
        let (workflow, task_idx) = self.locate(global);
        let worker = self.trace.worker[global] as usize;
        let task = &self.sim.workflows[workflow].spec.tasks[task_idx];
        self.free[worker] += task.resources.slots;
        self.free_total += u64::from(task.resources.slots);
        self.room[worker].take(task, -1);
        self.check(worker);
        let result = TaskResult::succeeded(
            self.sim.names[workflow].clone(),
            task.id.clone(),
            task_idx as u32,
            self.attempt[global],
            self.sim.fleet.workers[worker].name.clone(),
            Millis(self.trace.start[global]),
            Millis(now),
        );
        self.engine
            .on_finished(result, Millis(now))
            .map_err(|ignored| SimError::Engine(ignored.to_string()))?;
        self.watch_eta(workflow, global, now);
        self.left[workflow] -= 1;
        if self.left[workflow] == 0 {
            self.trace.workflow_end[workflow] = now;
            self.engine.remove_workflow(&self.sim.names[workflow]);
        }
        Ok(())
    }

    /// Notes that worker `worker`'s queue may have a task that fits.
    fn check(&mut self, worker: usize) {
        if !self.queues[worker].is_empty() && !self.checking[worker] {
            self.checking[worker] = true;
            self.to_check.push(worker);
        }
    }

    /// Starts the tasks queued at workers, in each worker's arrival order, while they fit.
    fn run_queues(&mut self, now: u64) {
        while let Some(worker) = self.to_check.pop() {
            self.checking[worker] = false;
            while let Some(&item) = self.queues[worker].front() {
                let (workflow, task_idx) = self.locate(item.global);
                let task = &self.sim.workflows[workflow].spec.tasks[task_idx];
                if self.free[worker] < task.resources.slots || !self.room[worker].fits(task) {
                    break;
                }
                self.queues[worker].pop_front();
                let first = self.sim.first_task[workflow];
                let mut ready = now;
                for dep in &task.deps {
                    let parent = first + dep.task as usize;
                    let transfer = if self.trace.worker[parent] as usize == worker {
                        0
                    } else {
                        u64::from(dep.transfer_ms)
                    };
                    ready = ready.max(self.trace.end[parent] + transfer);
                }
                let runtime = runtime_ms(
                    task,
                    &self.sim.fleet.workers[worker],
                    self.sim.policy_config.default_estimate,
                );
                let runtime = match self.factors {
                    Some(factors) => (runtime as f64 * factors[item.global]).round() as u64,
                    None => runtime,
                };
                self.start(item, worker, ready, ready + runtime);
            }
        }
    }

    /// Places the dispatched tasks that fit, in dispatch order; the others keep waiting.
    fn place_waiting(&mut self, now: u64) {
        let waiting = std::mem::take(&mut self.waiting);
        let mut kept = Vec::new();
        for item in waiting {
            if self.free_total == 0 || !self.try_place(item, now) {
                kept.push(item);
            }
        }
        self.waiting = kept;
    }

    fn try_place(&mut self, item: Waiting, now: u64) -> bool {
        let (workflow, task_idx) = self.locate(item.global);
        let first = self.sim.first_task[workflow];
        let task = &self.sim.workflows[workflow].spec.tasks[task_idx];
        let (parents, named) = self.scratch.inputs();
        named.extend(self.sim.named_workers(task));
        for dep in &task.deps {
            let parent = first + dep.task as usize;
            parents.push(ParentAt {
                worker: placed_on(self.trace.worker[parent]),
                end: Millis(self.trace.end[parent]),
                transfer_ms: u64::from(dep.transfer_ms),
            });
        }
        let Some(pool) = self.sim.pool_workers.get(&task.pool) else {
            return false;
        };
        let workers = &self.sim.fleet.workers;
        let default_estimate = self.sim.policy_config.default_estimate;
        let factor = self.factors.map(|factors| factors[item.global]);
        // The runtime rule, with the estimate read once rather than per worker, and no worker
        // names looked up when no worker of the fleet is named by the task.
        let by_worker = if named.is_empty() {
            None
        } else {
            task.estimate_by_worker.as_ref()
        };
        let estimate_ms = task.estimate.unwrap_or(default_estimate).as_millis() as u64;
        let runtime = |worker: usize| {
            let base = runtime_on(estimate_ms, by_worker, &workers[worker]);
            match factor {
                Some(factor) => (base as f64 * factor).round() as u64,
                None => base,
            }
        };
        let slots = task.resources.slots;
        let (free, room) = (&self.free, &self.room);
        let fits = |worker: usize| free[worker] >= slots && room[worker].fits(task);
        let Some(placement) = place(now, pool, fits, &mut self.scratch, runtime) else {
            return false;
        };
        self.start(item, placement.worker, placement.start, placement.end);
        true
    }

    /// Runs a dispatched task on `worker` from `start` to `end` (its slots are taken now).
    fn start(&mut self, item: Waiting, worker: usize, start: u64, end: u64) {
        let (workflow, task_idx) = self.locate(item.global);
        let task = &self.sim.workflows[workflow].spec.tasks[task_idx];
        let slots = task.resources.slots;
        self.free[worker] -= slots;
        self.free_total -= u64::from(slots);
        self.room[worker].take(task, 1);
        self.trace.worker[item.global] = worker as u32;
        self.trace.start[item.global] = start;
        self.trace.end[item.global] = end;
        self.attempt[item.global] = item.attempt;
        self.events.push(Reverse((end, item.global)));
        let started = AttemptStarted {
            v: WIRE_VERSION,
            workflow_id: self.sim.names[workflow].clone(),
            task_idx: task_idx as u32,
            attempt: item.attempt,
            worker: self.sim.fleet.workers[worker].name.clone(),
            at: Millis(start),
        };
        // The engine only notes which worker runs the attempt; it cannot refuse a fresh one.
        let _ = self.engine.on_started(&started);
    }

    /// The workflow and task index of a global task index.
    fn locate(&self, global: usize) -> (usize, usize) {
        let workflow = self.sim.first_task.partition_point(|&first| first <= global) - 1;
        (workflow, global - self.sim.first_task[workflow])
    }

    /// Tasks that never ran, for the error (a few of them).
    fn unplaced(&self) -> Vec<String> {
        let mut tasks = Vec::new();
        for (global, &worker) in self.trace.worker.iter().enumerate() {
            if worker == UNPLACED {
                let (workflow, task_idx) = self.locate(global);
                let name = &self.sim.names[workflow];
                tasks.push(format!(
                    "{name}/{}",
                    self.sim.workflows[workflow].spec.tasks[task_idx].id
                ));
                if tasks.len() == 10 {
                    tasks.push("...".to_string());
                    break;
                }
            }
        }
        tasks
    }
}
