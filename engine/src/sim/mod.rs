//! A discrete-event simulator: the scheduler's own [`Engine`](crate::engine::Engine) and
//! policies, run against a simulated clock and a simulated fleet ([`fleet::FleetSpec`]).
//!
//! Time starts at `Millis(0)`; workflows are submitted at their offsets. The engine decides
//! which task goes next exactly as in the live scheduler (same policy code, admission control
//! with each pool's capacity the slots of the workers serving it, no prefetch margin). Under a
//! placement-aware policy (`mct`, `heft`, `cpop`) the engine also names the worker, from the
//! simulated fleet, and each worker runs what it was sent in arrival order; under the others
//! the simulator decides where a task runs ([`placement`]: the free worker where it would
//! finish earliest). The runtime model is [`placement::runtime_ms`], with transfer costs
//! between workers. Every task succeeds; timeouts and retries are not simulated.
//!
//! With [`Simulator::run_actual`], tasks take the runtimes of a real run ([`actual`]) while
//! the engine sees only the estimates.
//!
//! With [`Simulator::run_stochastic`], runtimes are multiplied by a log-normal factor per task
//! and run (median 1, so the estimate is the median runtime; σ = [`DEFAULT_SIGMA`]), drawn from
//! a seeded RNG, and the report gives the spread of the makespan over the runs.

pub mod actual;
pub mod etc;
pub mod fleet;
pub mod gantt;
pub mod optimal;
pub mod placement;
pub mod report;
mod run;

use crate::packing::{PackingKind, Reservation};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use taskfleet_common::{TaskSpec, WorkflowSpec};

use crate::policy::{PolicyConfig, PolicyKind};
pub use actual::{parse_actual, train, ActualRun};
pub use fleet::{parse_fleet, parse_fleet_value, FleetSpec, InvalidFleet, SimWorker};
use placement::PoolWorkers;
pub use report::{Quantiles, ScheduledTask, SimReport, Spread, WorkflowReport};

/// σ of the log-normal runtime noise of stochastic runs.
pub const DEFAULT_SIGMA: f64 = 0.3;
/// Most problems listed in a [`SimError`].
const MAX_LISTED: usize = 20;

/// A workflow to simulate and when it is submitted.
#[derive(Clone, Debug)]
pub struct SimWorkflow {
    pub spec: Arc<WorkflowSpec>,
    /// Offset from the start of the simulation.
    pub submit: Duration,
}

/// Why a simulation cannot run or did not finish.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// Some tasks can run on no worker of the fleet (checked before simulating).
    #[error("the workflows cannot run on this fleet:\n  - {}", .0.join("\n  - "))]
    Unrunnable(Vec<String>),
    /// Nothing could progress while tasks were left (a bug: [`Simulator::new`] rules it out).
    #[error("the simulation is stuck with tasks that never ran: {}", .0.join(", "))]
    Stuck(Vec<String>),
    /// The actual runtimes given do not match the workflows.
    #[error("the actual runtimes do not match the workflows:\n  - {}", .0.join("\n  - "))]
    Actual(Vec<String>),
    /// The engine refused a simulated event (a bug).
    #[error("the engine refused a simulated event: {0}")]
    Engine(String),
}

/// A fleet and workflows, checked and ready to be simulated under any policy.
pub struct Simulator {
    fleet: FleetSpec,
    workflows: Vec<SimWorkflow>,
    /// Unique names of the workflows (the spec's name, `name#2` for a second one, ...).
    names: Vec<String>,
    /// Global index of each workflow's first task.
    first_task: Vec<usize>,
    n_tasks: usize,
    policy_config: PolicyConfig,
    /// The workers serving each pool, fastest first.
    pool_workers: HashMap<Arc<str>, PoolWorkers>,
    /// The workers each name in `estimate_by_worker` can mean (a full name, or an entry's).
    by_name: HashMap<String, Vec<usize>>,
    /// How tasks that ask for resources are packed, and what is reserved, as in the scheduler.
    packing: PackingKind,
    reservations: Vec<Reservation>,
    /// In predictive mode, what the predictor knows when the simulation starts.
    predictor: Option<crate::predict::Predictor>,
    /// In predictive mode, planned policies follow their plans (as without it) rather than
    /// place each task when it is dispatched.
    static_plans: bool,
}

impl Simulator {
    /// Checks that every task can run on some worker: its pool is served and a worker of the
    /// pool has the slots it needs. `policy_config.default_estimate` is the runtime prior.
    pub fn new(
        fleet: FleetSpec,
        workflows: Vec<SimWorkflow>,
        policy_config: PolicyConfig,
    ) -> Result<Simulator, SimError> {
        if fleet.workers.is_empty() {
            return Err(SimError::Unrunnable(vec!["the fleet has no worker".to_string()]));
        }
        let mut pool_workers: HashMap<Arc<str>, PoolWorkers> = HashMap::new();
        for worker in &fleet.workers {
            for pool in &worker.pools {
                if !pool_workers.contains_key(pool.as_str()) {
                    let workers = PoolWorkers::new(&fleet.workers, pool);
                    pool_workers.insert(Arc::from(pool.as_str()), workers);
                }
            }
        }
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
        for (idx, worker) in fleet.workers.iter().enumerate() {
            by_name.entry(worker.name.clone()).or_default().push(idx);
            if worker.base != worker.name {
                by_name.entry(worker.base.clone()).or_default().push(idx);
            }
        }
        let max_slots: HashMap<&str, u32> = pool_workers
            .iter()
            .map(|(pool, workers)| {
                let max = workers
                    .by_speed
                    .iter()
                    .map(|&w| fleet.workers[w].slots)
                    .max()
                    .unwrap_or(0);
                (&**pool, max)
            })
            .collect();
        let names = unique_names(&workflows);
        let mut problems = Vec::new();
        let mut n_problems = 0;
        let mut first_task = Vec::with_capacity(workflows.len());
        let mut n_tasks = 0;
        for (workflow, name) in workflows.iter().zip(&names) {
            first_task.push(n_tasks);
            n_tasks += workflow.spec.tasks.len();
            for task in &workflow.spec.tasks {
                let problem = match max_slots.get(&*task.pool) {
                    None => format!("pool `{}` is served by no worker of the fleet", task.pool),
                    Some(&max) if max < task.resources.slots => format!(
                        "needs {} slots but the workers serving pool `{}` have at most {max}",
                        task.resources.slots, task.pool
                    ),
                    Some(_) if !fits_some_worker(&pool_workers, &fleet, task) => {
                        let asks = task.resources.request().describe();
                        let labels = if task.selector.is_empty() {
                            String::new()
                        } else {
                            let wanted: Vec<String> = task
                                .selector
                                .iter()
                                .map(|(label, value)| format!("{label}={value}"))
                                .collect();
                            format!(" with labels {}", wanted.join(", "))
                        };
                        format!(
                            "asks for {asks}{labels}, more than any worker serving pool `{}` has",
                            task.pool
                        )
                    }
                    Some(_) => continue,
                };
                n_problems += 1;
                if problems.len() < MAX_LISTED {
                    problems.push(format!("workflow `{name}`, task `{}`: {problem}", task.id));
                }
            }
        }
        if n_problems > problems.len() {
            problems.push(format!("... and {} more", n_problems - problems.len()));
        }
        if !problems.is_empty() {
            return Err(SimError::Unrunnable(problems));
        }
        Ok(Simulator {
            fleet,
            workflows,
            names,
            first_task,
            n_tasks,
            policy_config,
            pool_workers,
            by_name,
            packing: PackingKind::default(),
            reservations: Vec::new(),
            predictor: None,
            static_plans: false,
        })
    }

    /// Packs the tasks that ask for resources by `packing`, with `reservations` kept, as the
    /// scheduler started with the same settings would.
    pub fn with_packing(mut self, packing: PackingKind, reservations: Vec<Reservation>) -> Simulator {
        self.packing = packing;
        self.reservations = reservations;
        self
    }

    /// Schedules in predictive mode, as the scheduler's `--predictive`: policies see the
    /// predicted runtimes of `predictor` (trained on earlier runs, or new), which learns from
    /// every task that ends during the simulation.
    pub fn predictive(mut self, predictor: crate::predict::Predictor) -> Simulator {
        self.predictor = Some(predictor);
        self
    }

    /// In predictive mode, makes planned policies follow their plans, as the scheduler's
    /// `--static-plans` (by default they rank by the plan and place at dispatch).
    pub fn with_static_plans(mut self, static_plans: bool) -> Simulator {
        self.static_plans = static_plans;
        self
    }

    /// Simulates the workflows under `policy` with the declared runtimes.
    pub fn run(&self, policy: PolicyKind) -> Result<SimReport, SimError> {
        let trace = run::simulate(self, policy, None, false)?;
        Ok(report::build(self, policy.as_str(), &trace))
    }

    /// Simulates with the declared runtimes, then `runs` more times with runtimes drawn around
    /// them (log-normal, median the declared runtime, σ `sigma`; seeded by `seed`). The report
    /// is the declared one with the spread of the sampled runs in `stochastic`.
    pub fn run_stochastic(
        &self,
        policy: PolicyKind,
        runs: usize,
        seed: u64,
        sigma: f64,
    ) -> Result<SimReport, SimError> {
        let mut report = self.run(policy)?;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut makespans = Vec::with_capacity(runs);
        let mut flow_times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let factors: Vec<f64> = (0..self.n_tasks).map(|_| lognormal(&mut rng, sigma)).collect();
            let trace = run::simulate(self, policy, Some(&factors), false)?;
            let (makespan, mean_flow_time) = report::makespan_and_mean_flow(self, &trace);
            makespans.push(makespan);
            flow_times.push(mean_flow_time);
        }
        report.stochastic = Some(Spread {
            runs,
            seed,
            sigma,
            makespan: Quantiles::of(&mut makespans),
            mean_flow_time: Quantiles::of(&mut flow_times),
        });
        Ok(report)
    }

    /// The workers of the simulated fleet.
    pub fn fleet(&self) -> &FleetSpec {
        &self.fleet
    }

    /// The unique names the workflows are reported under.
    pub fn workflow_names(&self) -> &[String] {
        &self.names
    }

    /// The workers `task`'s `estimate_by_worker` names (maybe twice): on all the others its
    /// runtime follows speed.
    fn named_workers<'a>(&'a self, task: &'a TaskSpec) -> impl Iterator<Item = usize> + 'a {
        task.estimate_by_worker
            .iter()
            .flat_map(|by_worker| by_worker.keys())
            .filter_map(|name| self.by_name.get(name))
            .flatten()
            .copied()
    }
}

/// A log-normal factor with median 1: `exp(σ·z)` for a standard normal `z` (Box–Muller).
fn lognormal(rng: &mut StdRng, sigma: f64) -> f64 {
    let u1: f64 = 1.0 - rng.gen::<f64>();
    let u2: f64 = rng.gen();
    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    (sigma * z).exp()
}

/// The workflows' names, with `#2`, `#3`, ... appended to repeats.
fn unique_names(workflows: &[SimWorkflow]) -> Vec<String> {
    let mut used = std::collections::HashSet::new();
    workflows
        .iter()
        .map(|workflow| {
            let mut name = workflow.spec.name.clone();
            let mut count = 1;
            while !used.insert(name.clone()) {
                count += 1;
                name = format!("{}#{count}", workflow.spec.name);
            }
            name
        })
        .collect()
}

#[cfg(test)]
mod tests;

/// Whether one worker of `task`'s pool carries the labels `task` selects and has the
/// resources it asks for, when idle.
fn fits_some_worker(pool_workers: &HashMap<Arc<str>, PoolWorkers>, fleet: &FleetSpec, task: &TaskSpec) -> bool {
    pool_workers.get(&*task.pool).is_some_and(|pool| {
        pool.by_speed.iter().any(|&worker| {
            let worker = &fleet.workers[worker];
            let labelled = task
                .selector
                .iter()
                .all(|(label, value)| worker.labels.get(label) == Some(value));
            labelled && placement::Room::of(worker).could_ever_fit(task)
        })
    })
}
