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
        for (task, features) in &self.features {
            match spec.tasks.iter_mut().find(|known| known.id == *task) {
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
    let mut unmatched = 0;
    for run in runs {
        for (id, took) in &run.runtimes {
            let Some(task) = spec.tasks.iter().find(|task| task.id == *id) else {
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

impl Simulator {
    /// Simulates under `policy` with each workflow's tasks taking the runtimes of `actual` (one
    /// run per workflow, in order), while the engine sees the estimates as always.
    pub fn run_actual(&self, policy: PolicyKind, actual: &[ActualRun]) -> Result<SimReport, SimError> {
        let factors = self.actual_factors(actual)?;
        let trace = run::simulate(self, policy, Some(&factors))?;
        Ok(report::build(self, policy.as_str(), &trace))
    }

    /// Per task, its actual runtime over the runtime the model gives it on a speed-1 worker.
    fn actual_factors(&self, actual: &[ActualRun]) -> Result<Vec<f64>, SimError> {
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
