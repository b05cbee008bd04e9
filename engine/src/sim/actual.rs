//! Belief against reality: a workflow replayed with the runtimes one of its real runs took,
//! while the scheduler and its policy see only the estimates (or predictions). A run is a JSON
//! object mapping each task id to its runtime in seconds, or
//! `{"runtimes": {TASK: SECONDS, ...}, "features": {TASK: {NAME: NUMBER, ...}, ...}}`, whose
//! features are the task's inputs as that run measured them (known before it runs, so the
//! scheduler sees them).
//!
//! An actual runtime is what the task takes on a worker of speed 1: a faster worker, or an
//! `estimate_by_worker`, scales it as it scales the estimate.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use taskfleet_common::WorkflowSpec;

use super::{report, run, SimError, SimReport, Simulator, MAX_LISTED};
use crate::policy::PolicyKind;
use crate::predict::Predictor;

/// The runtimes (and measured features) of one real run of a workflow.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ActualRun {
    pub runtimes: BTreeMap<String, Duration>,
    pub features: BTreeMap<String, BTreeMap<String, f64>>,
}

/// Reads a run's file; the error names what is wrong and where.
pub fn parse_actual(text: &str) -> Result<ActualRun, String> {
    let value: Value = serde_json::from_str(text).map_err(|error| format!("not JSON: {error}"))?;
    let Value::Object(object) = value else {
        return Err("expected an object of task id → seconds, or {\"runtimes\": ..., \"features\": ...}".into());
    };
    let nested = object.contains_key("runtimes");
    let (runtimes, features) = if nested {
        if let Some(unknown) = object
            .keys()
            .find(|key| !matches!(key.as_str(), "runtimes" | "features"))
        {
            return Err(format!("unknown field `{unknown}`: expected `runtimes` and `features`"));
        }
        (
            object.get("runtimes").cloned().unwrap_or_default(),
            object.get("features").cloned(),
        )
    } else {
        (Value::Object(object), None)
    };
    let Value::Object(runtimes) = runtimes else {
        return Err("`runtimes` must be an object of task id → seconds".into());
    };
    let mut run = ActualRun::default();
    for (task, seconds) in runtimes {
        let seconds = seconds
            .as_f64()
            .filter(|seconds| seconds.is_finite() && *seconds >= 0.0 && *seconds < 1e9)
            .ok_or_else(|| format!("task `{task}`: the runtime must be a number of seconds ≥ 0, not {seconds}"))?;
        run.runtimes.insert(task, Duration::from_secs_f64(seconds));
    }
    match features {
        None | Some(Value::Null) => {}
        Some(Value::Object(features)) => {
            for (task, named) in features {
                let Value::Object(named) = named else {
                    return Err(format!(
                        "features of task `{task}`: expected an object of name → number"
                    ));
                };
                let mut numbers = BTreeMap::new();
                for (name, number) in named {
                    let number = number
                        .as_f64()
                        .filter(|number| number.is_finite())
                        .ok_or_else(|| format!("feature `{name}` of task `{task}`: expected a number, not {number}"))?;
                    numbers.insert(name, number);
                }
                run.features.insert(task, numbers);
            }
        }
        Some(_) => return Err("`features` must be an object of task id → {name: number}".into()),
    }
    Ok(run)
}

impl ActualRun {
    /// `spec` with the features this run measured (added to, or replacing, the declared ones);
    /// every task the run names must be one of the workflow's.
    pub fn apply_features(&self, spec: &WorkflowSpec) -> Result<WorkflowSpec, SimError> {
        let mut spec = spec.clone();
        let mut unknown = Vec::new();
        let at: std::collections::HashMap<String, usize> = spec
            .tasks
            .iter()
            .enumerate()
            .map(|(idx, task)| (task.id.clone(), idx))
            .collect();
        for (task, features) in &self.features {
            match at.get(task).map(|&idx| &mut spec.tasks[idx]) {
                Some(known) => known
                    .features
                    .extend(features.iter().map(|(name, value)| (name.clone(), *value))),
                None => unknown.push(format!(
                    "features of `{task}`, which workflow `{}` does not have",
                    spec.name
                )),
            }
        }
        if unknown.is_empty() {
            Ok(spec)
        } else {
            Err(SimError::Actual(listed(unknown)))
        }
    }
}

/// Trains `predictor` on earlier runs of `spec`, through the updates the scheduler makes when
/// an attempt ends: each runtime teaches its task's signature (its `kind`, or what it runs)
/// and, with the features that run measured, its feature regression. Returns how many
/// runtimes named no task of the workflow (and taught nothing).
pub fn train(predictor: &mut Predictor, spec: &WorkflowSpec, runs: &[ActualRun]) -> usize {
    let by_id: std::collections::HashMap<&str, &taskfleet_common::TaskSpec> =
        spec.tasks.iter().map(|task| (task.id.as_str(), task)).collect();
    let mut unmatched = 0;
    for run in runs {
        for (id, took) in &run.runtimes {
            let Some(&task) = by_id.get(id.as_str()) else {
                unmatched += 1;
                continue;
            };
            let mut task = task.clone();
            if let Some(features) = run.features.get(id) {
                task.features
                    .extend(features.iter().map(|(name, value)| (name.clone(), *value)));
            }
            predictor.observe_task(&task, *took);
        }
    }
    unmatched
}

/// How a replay went against what could have been, and how wrong the beliefs were.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Scores {
    /// The same policy knowing the actual runtimes (its estimates set to them).
    pub oracle_makespan: f64,
    /// FCFS on the actual runtimes.
    pub fcfs_makespan: f64,
    /// |believed − actual| / actual over the tasks that took any time, where the belief is
    /// what the policy saw as the replay began (the predicted mean in predictive mode, else
    /// the estimate): its median and 90th percentile.
    pub error_p50: f64,
    pub error_p90: f64,
    /// In predictive mode, the share of those tasks whose actual runtime fell within the
    /// predicted 10th–90th percentiles (0.8 when the predictions are calibrated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub within_p10_p90: Option<f64>,
    /// How well the ETA forecast each workflow's end along the replay.
    pub eta: EtaCalibration,
}

/// The ETA against the actual end: at every 5% of a workflow's tasks finished, the
/// Monte-Carlo forecast `taskfleet status` would have given (median and 90th percentile of
/// the end), and how often the actual end came no later than each (about 50% and 90% when
/// the forecasts are calibrated).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EtaCalibration {
    pub checkpoints: usize,
    pub p50_coverage: f64,
    pub p90_coverage: f64,
    /// The median of |forecast p50 − actual end| / (actual end − forecast time).
    pub p50_error: f64,
}

impl EtaCalibration {
    /// Sets `checks` against the workflows' actual ends.
    pub(super) fn of(checks: &[run::EtaCheck], workflow_end: &[u64]) -> EtaCalibration {
        let n = checks.len();
        let covered = |end_of: fn(&run::EtaCheck) -> u64| {
            let hits = checks.iter().filter(|c| workflow_end[c.workflow] <= end_of(c)).count();
            if n == 0 {
                0.0
            } else {
                hits as f64 / n as f64
            }
        };
        let mut errors: Vec<f64> = checks
            .iter()
            .map(|c| {
                let actual = workflow_end[c.workflow];
                let left = actual.saturating_sub(c.at).max(1) as f64;
                (c.p50_end as f64 - actual as f64).abs() / left
            })
            .collect();
        errors.sort_by(f64::total_cmp);
        EtaCalibration {
            checkpoints: n,
            p50_coverage: covered(|c| c.p50_end),
            p90_coverage: covered(|c| c.p90_end),
            p50_error: errors.get(n / 2).copied().unwrap_or(0.0),
        }
    }
}

impl Simulator {
    /// Simulates under `policy` with each workflow's tasks taking the runtimes of `actual` (one
    /// run per workflow, in order), while the engine sees the estimates (or predictions) as
    /// always; the report's `scores` set it beside the oracle and FCFS.
    pub fn run_actual(&self, policy: PolicyKind, actual: &[ActualRun]) -> Result<SimReport, SimError> {
        let factors = self.actual_factors(actual)?;
        let trace = run::simulate(self, policy, Some(&factors), true)?;
        let mut report = report::build(self, policy.as_str(), &trace);
        let eta = EtaCalibration::of(&trace.eta, &trace.workflow_end);
        let oracle = self.oracle(actual)?.replay(policy, actual)?;
        let fcfs = match policy {
            PolicyKind::Fcfs if self.predictor.is_none() => report.makespan,
            _ => self.blind().replay(PolicyKind::Fcfs, actual)?.makespan,
        };
        let (error_p50, error_p90, within_p10_p90) = self.belief_errors(actual);
        report.scores = Some(Scores {
            oracle_makespan: oracle.makespan,
            fcfs_makespan: fcfs,
            error_p50,
            error_p90,
            within_p10_p90,
            eta,
        });
        Ok(report)
    }

    fn replay(&self, policy: PolicyKind, actual: &[ActualRun]) -> Result<SimReport, SimError> {
        let factors = self.actual_factors(actual)?;
        let trace = run::simulate(self, policy, Some(&factors), false)?;
        Ok(report::build(self, policy.as_str(), &trace))
    }

    /// The same simulator, scheduling by the estimates (no predictor).
    fn blind(&self) -> Simulator {
        Simulator {
            fleet: self.fleet.clone(),
            workflows: self.workflows.clone(),
            names: self.names.clone(),
            first_task: self.first_task.clone(),
            n_tasks: self.n_tasks,
            policy_config: self.policy_config,
            pool_workers: self.pool_workers.clone(),
            by_name: self.by_name.clone(),
            packing: self.packing,
            reservations: self.reservations.clone(),
            predictor: None,
            static_plans: self.static_plans,
        }
    }

    /// The same simulator with every estimate the task's actual runtime (per-worker estimates
    /// scaled alike), scheduling by them.
    fn oracle(&self, actual: &[ActualRun]) -> Result<Simulator, SimError> {
        let factors = self.actual_factors(actual)?;
        let mut oracle = self.blind();
        for (workflow, first) in oracle.workflows.iter_mut().zip(&self.first_task) {
            let mut spec = (*workflow.spec).clone();
            for (idx, task) in spec.tasks.iter_mut().enumerate() {
                let factor = factors[first + idx];
                let believed = task.estimate.unwrap_or(self.policy_config.default_estimate);
                task.estimate = Some(believed.mul_f64(factor));
                if let Some(by_worker) = &mut task.estimate_by_worker {
                    by_worker
                        .values_mut()
                        .for_each(|runtime| *runtime = runtime.mul_f64(factor));
                }
            }
            workflow.spec = std::sync::Arc::new(spec);
        }
        Ok(oracle)
    }

    /// The relative errors of what the policy believed when the replay began: median, 90th
    /// percentile, and (with a predictor) the share within the predicted p10–p90.
    fn belief_errors(&self, actual: &[ActualRun]) -> (f64, f64, Option<f64>) {
        let mut errors = Vec::new();
        let mut within = 0usize;
        for (workflow, run) in self.workflows.iter().zip(actual) {
            for task in &workflow.spec.tasks {
                let Some(took) = run
                    .runtimes
                    .get(&task.id)
                    .map(Duration::as_secs_f64)
                    .filter(|took| *took > 0.0)
                else {
                    continue;
                };
                let believed = match &self.predictor {
                    Some(predictor) => {
                        let predicted = predictor.predict(task);
                        within +=
                            usize::from((predicted.p10().as_secs_f64()..=predicted.p90.as_secs_f64()).contains(&took));
                        predicted.mean.as_secs_f64()
                    }
                    None => task
                        .estimate
                        .unwrap_or(self.policy_config.default_estimate)
                        .as_secs_f64(),
                };
                errors.push((believed - took).abs() / took);
            }
        }
        let n = errors.len();
        errors.sort_by(f64::total_cmp);
        let at = |q: f64| {
            errors
                .get(((n as f64 * q).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or(0.0)
        };
        let within = (self.predictor.is_some() && n > 0).then(|| within as f64 / n as f64);
        (at(0.5), at(0.9), within)
    }

    /// Per task, its actual runtime over the runtime the model gives it on a speed-1 worker.
    pub(super) fn actual_factors(&self, actual: &[ActualRun]) -> Result<Vec<f64>, SimError> {
        if actual.len() != self.workflows.len() {
            return Err(SimError::Actual(vec![format!(
                "{} runs for {} workflows: give one per workflow, in order",
                actual.len(),
                self.workflows.len()
            )]));
        }
        let mut factors = Vec::with_capacity(self.n_tasks);
        let mut problems = Vec::new();
        for ((workflow, run), name) in self.workflows.iter().zip(actual).zip(&self.names) {
            for task in &workflow.spec.tasks {
                let Some(took) = run.runtimes.get(&task.id) else {
                    problems.push(format!("workflow `{name}`: no runtime for task `{}`", task.id));
                    factors.push(1.0);
                    continue;
                };
                let believed = task
                    .estimate
                    .unwrap_or(self.policy_config.default_estimate)
                    .as_secs_f64();
                factors.push(match believed {
                    // Nothing to scale: an instant task stays one.
                    0.0 => 0.0,
                    believed => took.as_secs_f64() / believed,
                });
            }
            for task in run.runtimes.keys() {
                if !workflow.spec.tasks.iter().any(|known| known.id == *task) {
                    problems.push(format!("workflow `{name}` has no task `{task}`"));
                }
            }
        }
        if problems.is_empty() {
            Ok(factors)
        } else {
            Err(SimError::Actual(listed(problems)))
        }
    }
}

/// At most [`MAX_LISTED`] problems, and how many more.
fn listed(mut problems: Vec<String>) -> Vec<String> {
    if problems.len() > MAX_LISTED {
        let more = problems.len() - MAX_LISTED;
        problems.truncate(MAX_LISTED);
        problems.push(format!("... and {more} more"));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eta_calibration_counts_the_forecasts_the_actual_end_kept() {
        let check = |workflow, at, p50_end, p90_end| run::EtaCheck {
            workflow,
            at,
            p50_end,
            p90_end,
        };
        // Workflow 0 ends at 12 s, workflow 1 at 30 s.
        let checks = [
            check(0, 0, 10_000, 20_000),      // median early (2 s of 12 s left off), p90 kept
            check(0, 5_000, 12_000, 13_000),  // both kept, median exact
            check(1, 10_000, 25_000, 28_000), // both missed: 5 s off of 20 s left
            check(1, 20_000, 31_000, 35_000), // both kept: 1 s off of 10 s left
        ];
        let calibration = EtaCalibration::of(&checks, &[12_000, 30_000]);
        assert_eq!(calibration.checkpoints, 4);
        assert_eq!(calibration.p50_coverage, 0.5);
        assert_eq!(calibration.p90_coverage, 0.75);
        // Relative errors 2/12, 0, 5/20, 1/10: the median (upper) is 1/6.
        assert!((calibration.p50_error - 2.0 / 12.0).abs() < 1e-12, "{calibration:?}");
        assert_eq!(EtaCalibration::of(&[], &[]).checkpoints, 0);
    }

    #[test]
    fn a_run_is_seconds_by_task_or_runtimes_and_features() {
        let flat = parse_actual(r#"{"a": 1.5, "b": 0}"#).unwrap();
        assert_eq!(flat.runtimes["a"], Duration::from_millis(1500));
        assert_eq!(flat.runtimes["b"], Duration::ZERO);
        let nested = parse_actual(r#"{"runtimes": {"a": 2}, "features": {"a": {"bytes": 1e6}}}"#).unwrap();
        assert_eq!(nested.runtimes["a"], Duration::from_secs(2));
        assert_eq!(nested.features["a"]["bytes"], 1e6);
    }

    #[test]
    fn a_bad_run_says_what_is_wrong() {
        for (text, said) in [
            ("[1]", "expected an object"),
            (
                r#"{"a": -1}"#,
                "task `a`: the runtime must be a number of seconds ≥ 0, not -1",
            ),
            (r#"{"a": "fast"}"#, "task `a`"),
            (r#"{"runtimes": {}, "extra": 1}"#, "unknown field `extra`"),
            (
                r#"{"runtimes": {"a": 1}, "features": {"a": {"x": "big"}}}"#,
                "feature `x` of task `a`",
            ),
            ("{", "not JSON"),
        ] {
            let error = parse_actual(text).unwrap_err();
            assert!(error.contains(said), "{text}: {error}");
        }
    }
}
