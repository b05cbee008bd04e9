//! The exact solver behind `taskfleet simulate --optimal`: the shortest possible makespan of
//! small instances (up to [`MAX_TASKS`] tasks), by branch and bound, to measure how far each
//! policy's schedule is from the best one.
//!
//! Each worker slot is a processor. A schedule in which every task starts as soon as its
//! processor is free and its inputs have arrived (a semi-active schedule) can be built by
//! placing tasks one by one in order of start time, so the search branches on (ready task,
//! processor) with starts never decreasing; idle slots of one worker are interchangeable, so
//! only the first idle one is tried. A branch is cut when a lower bound — the longest
//! remaining chain of fastest runtimes from each task's earliest start, or the remaining
//! fastest work spread over every processor — cannot beat the best makespan found, which
//! starts as the best policy's.

use super::placement::runtime_ms;
use super::report::{self, SimReport};
use super::run::Trace;
use super::{SimError, Simulator};

/// Most tasks the solver takes.
pub const MAX_TASKS: usize = 20;

/// The solver's answer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Optimum {
    /// The best makespan found, in seconds.
    pub makespan: f64,
    /// Whether the search finished (the makespan is optimal) or hit the node limit.
    pub proven: bool,
    /// Search nodes visited.
    pub nodes: u64,
}

struct Problem {
    /// Per task, its runtime on each processor (`u64::MAX` where it cannot run).
    runtime: Vec<Vec<u64>>,
    parents: Vec<Vec<(usize, u64)>>,
    release: Vec<u64>,
    /// The worker each processor belongs to.
    worker_of: Vec<usize>,
    /// Per task: the fastest runtime over processors, and the longest chain of those from it.
    fastest: Vec<u64>,
    tail: Vec<u64>,
}

struct Search<'p> {
    problem: &'p Problem,
    finish: Vec<u64>,
    placed_on: Vec<usize>,
    free_at: Vec<u64>,
    best: u64,
    /// The processors and finish times of the best complete schedule found.
    best_schedule: Option<(Vec<usize>, Vec<u64>)>,
    nodes: u64,
    node_limit: u64,
}

impl Simulator {
    /// The optimal makespan of these workflows on this fleet, searching at most `node_limit`
    /// nodes; `upper_bound_ms` (a policy's makespan) seeds the search.
    pub fn optimal_makespan(&self, upper_bound_ms: u64, node_limit: u64) -> Result<Optimum, SimError> {
        self.optimal_schedule(upper_bound_ms, node_limit)
            .map(|(optimum, _)| optimum)
    }

    /// Like [`Simulator::optimal_makespan`], with the report of the best schedule the search
    /// found (under the policy name `optimal`), if it found one no longer than
    /// `upper_bound_ms`.
    pub fn optimal_schedule(
        &self,
        upper_bound_ms: u64,
        node_limit: u64,
    ) -> Result<(Optimum, Option<SimReport>), SimError> {
        let problem = self.problem()?;
        let n_tasks = problem.runtime.len();
        let mut search = Search {
            problem: &problem,
            finish: vec![u64::MAX; n_tasks],
            placed_on: vec![usize::MAX; n_tasks],
            free_at: vec![0; problem.worker_of.len()],
            best: upper_bound_ms.saturating_add(1),
            best_schedule: None,
            nodes: 0,
            node_limit,
        };
        search.branch(0, 0, 0);
        let proven = search.nodes < node_limit;
        let best = search.best.min(upper_bound_ms);
        let optimum = Optimum {
            makespan: best as f64 / 1000.0,
            proven,
            nodes: search.nodes,
        };
        let report = search.best_schedule.map(|(placed_on, finish)| {
            let mut trace = Trace {
                worker: placed_on.iter().map(|&p| problem.worker_of[p] as u32).collect(),
                start: (0..n_tasks)
                    .map(|task| finish[task] - problem.runtime[task][placed_on[task]])
                    .collect(),
                end: finish,
                workflow_end: vec![0; self.workflows.len()],
                eta: Vec::new(),
            };
            for (workflow, &first) in self.first_task.iter().enumerate() {
                let n = self.workflows[workflow].spec.tasks.len();
                let submit = self.workflows[workflow].submit.as_millis() as u64;
                trace.workflow_end[workflow] = trace.end[first..first + n].iter().copied().fold(submit, u64::max);
            }
            report::build(self, "optimal", &trace)
        });
        Ok((optimum, report))
    }

    fn problem(&self) -> Result<Problem, SimError> {
        let default_estimate = self.policy_config.default_estimate;
        let workers = &self.fleet.workers;
        let mut worker_of = Vec::new();
        for (worker_idx, worker) in workers.iter().enumerate() {
            worker_of.extend(std::iter::repeat_n(worker_idx, worker.slots as usize));
        }
        let mut runtime = Vec::new();
        let mut parents = Vec::new();
        let mut release = Vec::new();
        let mut problems = Vec::new();
        for workflow in &self.workflows {
            let first = runtime.len();
            for task in &workflow.spec.tasks {
                if task.resources.slots > 1 {
                    problems.push(format!(
                        "task `{}` takes {} slots; the exact solver handles one-slot tasks",
                        task.id, task.resources.slots
                    ));
                }
                runtime.push(
                    worker_of
                        .iter()
                        .map(|&w| {
                            let worker = &workers[w];
                            if worker.pools.iter().any(|pool| **pool == *task.pool) {
                                runtime_ms(task, worker, default_estimate)
                            } else {
                                u64::MAX
                            }
                        })
                        .collect::<Vec<u64>>(),
                );
                parents.push(
                    task.deps
                        .iter()
                        .map(|dep| (first + dep.task as usize, u64::from(dep.transfer_ms)))
                        .collect(),
                );
                release.push(workflow.submit.as_millis() as u64);
            }
        }
        if runtime.len() > MAX_TASKS {
            problems.push(format!(
                "{} tasks; the exact solver handles up to {MAX_TASKS}",
                runtime.len()
            ));
        }
        if !problems.is_empty() {
            return Err(SimError::Unrunnable(problems));
        }
        let fastest: Vec<u64> = runtime
            .iter()
            .map(|row| row.iter().copied().min().unwrap_or(0))
            .collect();
        // Longest chain of fastest runtimes from each task to the end of its workflow,
        // children before parents.
        let mut tail = fastest.clone();
        let mut first = 0;
        for workflow in &self.workflows {
            let dag = &workflow.spec.dag;
            for &task in dag.topo_order().iter().rev() {
                let longest_child = dag
                    .children(task)
                    .iter()
                    .map(|&child| tail[first + child as usize])
                    .max();
                tail[first + task as usize] = fastest[first + task as usize] + longest_child.unwrap_or(0);
            }
            first += dag.len();
        }
        Ok(Problem {
            runtime,
            parents,
            release,
            worker_of,
            fastest,
            tail,
        })
    }
}

impl Search<'_> {
    /// Places the remaining tasks, none starting before `min_start`; `makespan` so far.
    fn branch(&mut self, n_placed: usize, min_start: u64, makespan: u64) {
        let problem = self.problem;
        let n_tasks = problem.runtime.len();
        if n_placed == n_tasks {
            if makespan < self.best {
                self.best = makespan;
                self.best_schedule = Some((self.placed_on.clone(), self.finish.clone()));
            }
            return;
        }
        self.nodes += 1;
        if self.nodes >= self.node_limit || self.lower_bound(makespan) >= self.best {
            return;
        }
        for task in 0..n_tasks {
            if self.finish[task] != u64::MAX
                || problem.parents[task]
                    .iter()
                    .any(|&(parent, _)| self.finish[parent] == u64::MAX)
            {
                continue;
            }
            let mut tried_idle = Vec::new();
            for processor in 0..problem.worker_of.len() {
                let runtime = problem.runtime[task][processor];
                if runtime == u64::MAX {
                    continue;
                }
                let worker = problem.worker_of[processor];
                // Idle slots of one worker are interchangeable.
                if self.free_at[processor] <= min_start {
                    if tried_idle.contains(&worker) {
                        continue;
                    }
                    tried_idle.push(worker);
                }
                let inputs = problem.parents[task]
                    .iter()
                    .map(|&(parent, transfer)| {
                        let same_worker = problem.worker_of[self.placed_on[parent]] == worker;
                        self.finish[parent] + if same_worker { 0 } else { transfer }
                    })
                    .max()
                    .unwrap_or(0);
                let start = self.free_at[processor].max(inputs).max(problem.release[task]);
                if start < min_start {
                    continue;
                }
                let end = start + runtime;
                if end.max(makespan) >= self.best {
                    continue;
                }
                let free_before = self.free_at[processor];
                self.finish[task] = end;
                self.placed_on[task] = processor;
                self.free_at[processor] = end;
                self.branch(n_placed + 1, start, makespan.max(end));
                self.free_at[processor] = free_before;
                self.finish[task] = u64::MAX;
                self.placed_on[task] = usize::MAX;
                if self.nodes >= self.node_limit {
                    return;
                }
            }
        }
    }

    /// A makespan no completion of the current partial schedule can beat.
    fn lower_bound(&self, makespan: u64) -> u64 {
        let problem = self.problem;
        let earliest_free = self.free_at.iter().copied().min().unwrap_or(0);
        let mut chain = makespan;
        let mut work = 0u64;
        for task in 0..problem.runtime.len() {
            if self.finish[task] != u64::MAX {
                continue;
            }
            let inputs = problem.parents[task]
                .iter()
                .filter(|&&(parent, _)| self.finish[parent] != u64::MAX)
                .map(|&(parent, _)| self.finish[parent])
                .max()
                .unwrap_or(0);
            let start = inputs.max(problem.release[task]).max(earliest_free);
            chain = chain.max(start + problem.tail[task]);
            work += problem.fastest[task];
        }
        let busy: u64 = self.free_at.iter().sum();
        let spread = (busy + work).div_ceil(problem.worker_of.len().max(1) as u64);
        chain.max(spread)
    }
}
