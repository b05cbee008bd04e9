//! `taskfleet simulate WORKFLOW... --fleet FLEET`: run the scheduler's engine and policies on
//! a simulated clock and fleet, and report makespan, flow times, waits, utilization and
//! fairness (a table, or JSON), optionally comparing policies and drawing a Gantt chart.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use taskfleet_engine::packing::{PackingKind, Reservation};

use anyhow::Context as _;
use clap::Args;
use taskfleet_common::units::{format_duration, parse_duration};
use taskfleet_common::workflow::ValidateOptions;
use taskfleet_engine::policy::{PolicyConfig, PolicyKind};
use taskfleet_engine::predict::Predictor;
use taskfleet_engine::sim::{
    gantt, parse_actual, parse_fleet, train, ActualRun, SimError, SimReport, SimWorkflow, Simulator, DEFAULT_SIGMA,
};

use super::{load_workflow, write_stdout, LoadError};
use render::render_text;

mod render;
use crate::EXIT_INVALID;

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Workflow files (YAML or JSON), submitted in the order given.
    #[arg(required = true)]
    pub workflows: Vec<PathBuf>,
    /// Fleet file (YAML or JSON): the simulated workers, their pools, slots and speed.
    #[arg(long)]
    pub fleet: PathBuf,
    /// Scheduling policy, or `optimal` for the exact solver's schedule (up to 20 one-slot
    /// tasks).
    #[arg(long, default_value = "fcfs")]
    pub policy: SimPolicy,
    /// Compare policies side by side: a comma-separated list (`fcfs,heft,optimal`) or `all`
    /// (every policy; add `optimal` to it for small instances).
    #[arg(long, value_delimiter = ',', conflicts_with = "policy")]
    pub compare: Option<Vec<String>>,
    /// Submit offset of each workflow, in order (`0,30s,2m`); all at 0 by default.
    #[arg(long, value_delimiter = ',', value_parser = parse_duration)]
    pub offsets: Vec<Duration>,
    /// Print the full report (with the schedule) as JSON; an array with --compare.
    #[arg(long)]
    pub json: bool,
    /// Write a Gantt chart of the schedule as SVG (with --compare, one per policy:
    /// `out-fcfs.svg`, `out-priority.svg`, ...).
    #[arg(long, value_name = "FILE")]
    pub gantt: Option<PathBuf>,
    /// Also run N times with runtimes drawn around the estimates (log-normal, median the
    /// estimate, σ 0.3) and report the spread of the makespan.
    #[arg(long, value_name = "N")]
    pub stochastic: Option<usize>,
    /// Seed of the stochastic runs.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Runtime assumed for a task without an estimate.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub default_estimate: Duration,
    /// Planned policies: how long a local search may improve each workflow's plan, as the
    /// scheduler's --plan-search (0s: the heuristic's plan).
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    pub plan_search: Duration,
    /// Also find the optimal makespan (branch and bound; up to 20 one-slot tasks) and print
    /// each policy's gap to it.
    #[arg(long)]
    pub optimal: bool,
    /// How tasks that ask for resources choose among the workers where they fit, as the
    /// scheduler's --packing.
    #[arg(long, default_value = "best-fit")]
    pub packing: PackingKind,
    /// Capacity reserved for a class or tenant, as the scheduler's --reserve (repeatable).
    #[arg(long = "reserve", value_delimiter = ',')]
    pub reserve: Vec<Reservation>,
    /// The runtimes a real run took (JSON: task id → seconds, or {"runtimes": ..., "features":
    /// ...}), one file per workflow, in order: tasks take them while the policy sees only the
    /// estimates.
    #[arg(long, value_name = "RUN.json", conflicts_with_all = ["stochastic", "optimal"])]
    pub actual: Vec<PathBuf>,
    /// Schedule by predicted runtimes, as the scheduler's --predictive: the predictor learns
    /// from every task that ends.
    #[arg(long)]
    pub predictive: bool,
    /// In predictive mode, planned policies follow their plans worker by worker, as the
    /// scheduler's --static-plans (by default they rank by the plan and place at dispatch).
    #[arg(long)]
    pub static_plans: bool,
    /// Earlier runs of the workflows (in the --actual format): they train the predictor before
    /// the simulation starts, matching tasks by id (and learning per kind). Implies
    /// --predictive.
    #[arg(long, value_name = "RUN.json", num_args = 1..)]
    pub history: Vec<PathBuf>,
}

/// The runs of `paths` (the --actual format); `None` once a file's problem is printed.
fn read_runs(paths: &[PathBuf]) -> anyhow::Result<Option<Vec<ActualRun>>> {
    let mut runs = Vec::with_capacity(paths.len());
    for path in paths {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        match parse_actual(&text) {
            Ok(run) => runs.push(run),
            Err(problem) => {
                eprintln!("{}: {problem}", path.display());
                return Ok(None);
            }
        }
    }
    Ok(Some(runs))
}

/// What `taskfleet simulate` can run: a policy, or the exact solver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimPolicy {
    Policy(PolicyKind),
    /// The optimal schedule of a small instance (branch and bound).
    Optimal,
}

impl std::str::FromStr for SimPolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "optimal" => Ok(SimPolicy::Optimal),
            _ => text
                .parse::<PolicyKind>()
                .map(SimPolicy::Policy)
                .map_err(|error| format!("{error}, or optimal")),
        }
    }
}

pub fn run(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    let policies = match &args.compare {
        Some(names) => compare_list(names)?,
        None => vec![args.policy],
    };
    if args.stochastic == Some(0) {
        anyhow::bail!("--stochastic needs at least one run");
    }
    let wants_optimal = policies.contains(&SimPolicy::Optimal);
    if wants_optimal && !args.actual.is_empty() {
        anyhow::bail!("the optimal schedule is found for the declared runtimes only; drop --actual or `optimal`");
    }
    if !args.actual.is_empty() && args.actual.len() != args.workflows.len() {
        let n = args.workflows.len();
        anyhow::bail!(
            "--actual gives {} runs for {n} workflow{} (give one per workflow, in order)",
            args.actual.len(),
            if n == 1 { "" } else { "s" }
        );
    }
    let Some(actual) = read_runs(&args.actual)? else {
        return Ok(ExitCode::from(EXIT_INVALID));
    };
    let Some(history) = read_runs(&args.history)? else {
        return Ok(ExitCode::from(EXIT_INVALID));
    };
    if wants_optimal && args.stochastic.is_some() {
        anyhow::bail!("the optimal schedule is found for the declared runtimes only; drop --stochastic or `optimal`");
    }
    if !args.offsets.is_empty() && args.offsets.len() != args.workflows.len() {
        let n = args.workflows.len();
        anyhow::bail!(
            "--offsets gives {} offsets for {n} workflow{} (give one per workflow)",
            args.offsets.len(),
            if n == 1 { "" } else { "s" }
        );
    }
    let options = ValidateOptions {
        known_handlers: None,
        ..ValidateOptions::default()
    };
    let mut workflows = Vec::with_capacity(args.workflows.len());
    for (idx, path) in args.workflows.iter().enumerate() {
        let spec = match load_workflow(path, &options) {
            Ok((_, spec)) => spec,
            Err(LoadError::Invalid) => return Ok(ExitCode::from(EXIT_INVALID)),
            Err(LoadError::Unreadable(message)) => anyhow::bail!(message),
        };
        // The inputs a real run measured are known before it runs: the policy sees them.
        let spec = match actual.get(idx).map(|run| run.apply_features(&spec)) {
            None => spec,
            Some(Ok(measured)) => measured,
            Some(Err(error)) => {
                eprintln!("{}: {error}", args.actual[idx].display());
                return Ok(ExitCode::from(EXIT_INVALID));
            }
        };
        workflows.push(SimWorkflow {
            spec: spec.into(),
            submit: args.offsets.get(idx).copied().unwrap_or_default(),
        });
    }
    let text = std::fs::read_to_string(&args.fleet).with_context(|| format!("cannot read {}", args.fleet.display()))?;
    let fleet = match parse_fleet(&text) {
        Ok(fleet) => fleet,
        Err(invalid) => {
            eprintln!("{}: {invalid}", args.fleet.display());
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    let policy_config = PolicyConfig {
        default_estimate: args.default_estimate,
        plan_search: args.plan_search,
        ..PolicyConfig::default()
    };
    let predictor = (args.predictive || !history.is_empty()).then(|| {
        let mut predictor = Predictor::new(args.default_estimate);
        let unmatched = (workflows.iter())
            .map(|workflow| train(&mut predictor, &workflow.spec, &history))
            .min()
            .unwrap_or(0);
        if unmatched > 0 {
            eprintln!("note: {unmatched} runtimes of the history name no task of the workflows and taught nothing");
        }
        predictor
    });
    let simulator = match Simulator::new(fleet, workflows, policy_config) {
        Ok(simulator) => simulator.with_packing(args.packing, args.reserve.clone()),
        Err(error) => {
            eprintln!("error: {error}");
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    let simulator = match predictor {
        Some(predictor) => simulator.predictive(predictor).with_static_plans(args.static_plans),
        None => simulator,
    };
    let heuristics: Vec<PolicyKind> = policies
        .iter()
        .filter_map(|policy| match policy {
            SimPolicy::Policy(kind) => Some(*kind),
            SimPolicy::Optimal => None,
        })
        .collect();
    // The exact solver starts from the best heuristic's makespan (every policy's, if none
    // was asked for).
    let seeds = if heuristics.is_empty() {
        PolicyKind::ALL.to_vec()
    } else {
        heuristics.clone()
    };
    let mut reports = Vec::with_capacity(policies.len());
    for &policy in &seeds {
        let started = std::time::Instant::now();
        let report = match args.stochastic {
            Some(runs) => simulator.run_stochastic(policy, runs, args.seed, DEFAULT_SIGMA),
            None if !actual.is_empty() => match simulator.run_actual(policy, &actual) {
                Err(error @ SimError::Actual(_)) => {
                    eprintln!("error: {error}");
                    return Ok(ExitCode::from(EXIT_INVALID));
                }
                other => other,
            },
            None => simulator.run(policy),
        };
        let elapsed_ms = started.elapsed().as_millis() as u64;
        tracing::info!(%policy, elapsed_ms, "Simulated.");
        reports.push(report.with_context(|| format!("simulating with policy {policy}"))?);
    }
    let optimum = if args.optimal || wants_optimal {
        let best_ms = reports
            .iter()
            .map(|report| (report.makespan * 1000.0).round() as u64)
            .min()
            .unwrap_or(0);
        let (optimum, schedule) = simulator
            .optimal_schedule(best_ms, OPTIMAL_NODE_LIMIT)
            .context("finding the optimal makespan")?;
        if wants_optimal {
            if !optimum.proven {
                eprintln!(
                    "note: the search stopped at its node limit ({OPTIMAL_NODE_LIMIT} nodes); `optimal` is the best schedule found"
                );
            }
            // A heuristic may already be optimal; then the solver finds no shorter schedule
            // and the best heuristic's stands for it.
            let report = match schedule {
                Some(report) => report,
                None => {
                    let best = reports
                        .iter()
                        .min_by(|a, b| a.makespan.total_cmp(&b.makespan))
                        .expect("at least one policy ran");
                    SimReport {
                        policy: "optimal".to_string(),
                        ..best.clone()
                    }
                }
            };
            if heuristics.is_empty() {
                reports.clear();
            }
            let at = policies
                .iter()
                .position(|policy| *policy == SimPolicy::Optimal)
                .expect("optimal was asked for");
            reports.insert(at.min(reports.len()), report);
        }
        Some(optimum)
    } else {
        None
    };
    let policies: Vec<String> = reports.iter().map(|report| report.policy.clone()).collect();
    if let Some(path) = &args.gantt {
        for report in &reports {
            let path = if policies.len() > 1 {
                suffixed(path, &report.policy)
            } else {
                path.clone()
            };
            std::fs::write(&path, gantt::render(report, simulator.fleet()))
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("gantt chart written to {}", path.display());
        }
    }
    let output = if args.json {
        let json = match (&args.compare, reports.as_slice()) {
            (None, [report]) => serde_json::to_string_pretty(report),
            _ => serde_json::to_string_pretty(&reports),
        };
        json.context("encoding the report")? + "\n"
    } else {
        render_text(&simulator, &reports)
    };
    write_stdout(&output)?;
    if let Some(optimum) = optimum {
        let gaps: Vec<String> = reports
            .iter()
            .map(|report| {
                format!(
                    "{} +{:.1}%",
                    report.policy,
                    (report.makespan / optimum.makespan.max(1e-9) - 1.0) * 100.0
                )
            })
            .collect();
        let how = if optimum.proven {
            "optimal"
        } else {
            "best found (search stopped at its node limit)"
        };
        let text = format!(
            "{how} makespan: {} after {} search nodes; gap: {}\n",
            seconds(optimum.makespan),
            optimum.nodes,
            gaps.join(", ")
        );
        if args.json {
            eprint!("{text}");
        } else {
            write_stdout(&text)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Search nodes the exact solver may visit.
const OPTIMAL_NODE_LIMIT: u64 = 50_000_000;

/// The policies named by `--compare`, in order; `all` stands for every policy.
fn compare_list(names: &[String]) -> anyhow::Result<Vec<SimPolicy>> {
    let mut policies = Vec::new();
    for name in names.iter().map(|name| name.trim()) {
        let named = match name {
            "all" => PolicyKind::ALL.into_iter().map(SimPolicy::Policy).collect(),
            _ => vec![name.parse::<SimPolicy>().map_err(anyhow::Error::msg)?],
        };
        for policy in named {
            if !policies.contains(&policy) {
                policies.push(policy);
            }
        }
    }
    Ok(policies)
}

/// `out.svg` with `-fcfs` before the extension.
fn suffixed(path: &Path, policy: &str) -> PathBuf {
    let stem = path
        .file_stem()
        .map_or_else(String::new, |stem| stem.to_string_lossy().into_owned());
    let name = match path.extension() {
        Some(extension) => format!("{stem}-{policy}.{}", extension.to_string_lossy()),
        None => format!("{stem}-{policy}"),
    };
    path.with_file_name(name)
}

pub(super) fn seconds(value: f64) -> String {
    format_duration(Duration::from_secs_f64(value.max(0.0)))
}
