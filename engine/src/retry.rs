//! Retrying a workflow that ended failed or cancelled: which stored tasks go back to
//! `pending`, so that the engine resumes the workflow from its failures. Succeeded tasks are
//! never run again; their outputs stay stored for the children that run again.

use taskfleet_common::state::TaskState;
use taskfleet_common::WorkflowSpec;

use crate::records::TaskRecord;

/// What a retry runs again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryScope<'a> {
    /// Every task that failed, timed out, was cancelled or did not run for a failure upstream.
    Failures,
    /// One task that failed, timed out or was cancelled, and the tasks below it that did not
    /// run because of it.
    Task(&'a str),
}

/// Why a retry was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RetryRefused {
    #[error("the workflow has no task `{0}`")]
    UnknownTask(String),
    #[error("task `{task}` {state}; only a task that failed, timed out or was cancelled is retried")]
    NotRetryable { task: String, state: TaskState },
    #[error("task `{task}` did not run because `{failed}` failed; retry `{failed}`")]
    Upstream { task: String, failed: String },
    #[error("no task of the workflow failed or was cancelled")]
    NothingToRetry,
}

/// Whether a task in `state` ended without succeeding, and so may run again.
fn ended_unsuccessfully(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::Failed | TaskState::TimedOut | TaskState::Cancelled | TaskState::UpstreamFailed
    )
}

/// The task records to store for a retry of an ended workflow (`records` in task order, as
/// stored): each task that runs again, back to `pending` with its failures forgotten and its
/// attempt number kept (its next attempt gets the next number, so reports of earlier attempts
/// are still recognised as stale).
pub fn retry_records(
    spec: &WorkflowSpec,
    records: &[TaskRecord],
    scope: RetryScope<'_>,
) -> Result<Vec<TaskRecord>, RetryRefused> {
    let state_of = |idx: u32| {
        records
            .get(idx as usize)
            .map_or(TaskState::Pending, |record| record.state)
    };
    let chosen: Vec<u32> = match scope {
        RetryScope::Failures => (0..records.len() as u32)
            .filter(|&idx| ended_unsuccessfully(state_of(idx)))
            .collect(),
        RetryScope::Task(id) => {
            let idx = spec
                .task_index(id)
                .ok_or_else(|| RetryRefused::UnknownTask(id.to_string()))? as u32;
            match state_of(idx) {
                TaskState::Failed | TaskState::TimedOut | TaskState::Cancelled => {}
                TaskState::UpstreamFailed => {
                    let failed = failed_ancestor(spec, &state_of, idx).unwrap_or(idx);
                    return Err(RetryRefused::Upstream {
                        task: id.to_string(),
                        failed: spec.tasks[failed as usize].id.clone(),
                    });
                }
                state => {
                    return Err(RetryRefused::NotRetryable {
                        task: id.to_string(),
                        state,
                    })
                }
            }
            below(spec, &state_of, idx)
        }
    };
    if chosen.is_empty() {
        return Err(RetryRefused::NothingToRetry);
    }
    Ok(chosen
        .into_iter()
        .map(|idx| {
            let attempt = records.get(idx as usize).map_or(0, |record| record.attempt);
            TaskRecord {
                task_idx: idx,
                state: TaskState::Pending,
                attempt,
                n_failures: 0,
                retry_at: None,
                output: None,
            }
        })
        .collect())
}

/// `idx` and every task below it that did not run (upstream failed or cancelled), reached
/// through such tasks only.
fn below(spec: &WorkflowSpec, state_of: &impl Fn(u32) -> TaskState, idx: u32) -> Vec<u32> {
    let mut seen = vec![false; spec.tasks.len()];
    seen[idx as usize] = true;
    let mut stack = vec![idx];
    let mut found = Vec::new();
    while let Some(task) = stack.pop() {
        found.push(task);
        for &child in spec.dag.children(task) {
            let skipped = matches!(state_of(child), TaskState::UpstreamFailed | TaskState::Cancelled);
            if skipped && !seen[child as usize] {
                seen[child as usize] = true;
                stack.push(child);
            }
        }
    }
    found.sort_unstable();
    found
}

/// The nearest ancestor of `idx` that failed, timed out or was cancelled itself.
fn failed_ancestor(spec: &WorkflowSpec, state_of: &impl Fn(u32) -> TaskState, idx: u32) -> Option<u32> {
    let mut seen = vec![false; spec.tasks.len()];
    let mut queue = std::collections::VecDeque::from([idx]);
    while let Some(task) = queue.pop_front() {
        for &parent in spec.dag.parents(task) {
            if std::mem::replace(&mut seen[parent as usize], true) {
                continue;
            }
            match state_of(parent) {
                TaskState::Failed | TaskState::TimedOut | TaskState::Cancelled => return Some(parent),
                _ => queue.push_back(parent),
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use taskfleet_common::workflow::{parse_workflow, ValidateOptions};

    /// a → b → c, a → d; e alone.
    fn spec() -> WorkflowSpec {
        let text = "name: r\ntasks:\n  - {id: a, handler: noop}\n  - {id: b, deps: [a], handler: noop}\n  \
                    - {id: c, deps: [b], handler: noop}\n  - {id: d, deps: [a], handler: noop}\n  \
                    - {id: e, handler: noop}\n";
        parse_workflow(text, &ValidateOptions::default()).unwrap_or_else(|invalid| panic!("{invalid}"))
    }

    fn records(states: &[TaskState]) -> Vec<TaskRecord> {
        states
            .iter()
            .enumerate()
            .map(|(idx, &state)| TaskRecord {
                task_idx: idx as u32,
                state,
                attempt: if state == TaskState::UpstreamFailed { 0 } else { 3 },
                n_failures: 3,
                retry_at: None,
                output: (state == TaskState::Succeeded).then(|| "1".to_string()),
            })
            .collect()
    }

    fn indices(reset: &[TaskRecord]) -> Vec<u32> {
        reset.iter().map(|record| record.task_idx).collect()
    }

    use TaskState::{Cancelled, Failed, Succeeded, TimedOut, UpstreamFailed};

    #[test]
    fn a_failed_workflow_runs_its_failures_and_what_they_held_up_again() {
        let stored = records(&[Succeeded, Failed, UpstreamFailed, Succeeded, TimedOut]);
        let reset = retry_records(&spec(), &stored, RetryScope::Failures).unwrap();
        assert_eq!(indices(&reset), [1, 2, 4]);
        for record in &reset {
            assert_eq!(record.state, TaskState::Pending);
            assert_eq!(record.n_failures, 0, "a retry has its whole retry budget");
            assert_eq!(record.attempt, stored[record.task_idx as usize].attempt);
        }
    }

    #[test]
    fn one_task_runs_again_with_the_tasks_it_held_up_only() {
        // b failed (c did not run); e failed too but is left alone.
        let stored = records(&[Succeeded, Failed, UpstreamFailed, Succeeded, Failed]);
        let reset = retry_records(&spec(), &stored, RetryScope::Task("b")).unwrap();
        assert_eq!(indices(&reset), [1, 2]);
    }

    #[test]
    fn a_cancelled_workflow_runs_what_was_cancelled() {
        let stored = records(&[Cancelled, Cancelled, Cancelled, Cancelled, Succeeded]);
        assert_eq!(
            indices(&retry_records(&spec(), &stored, RetryScope::Failures).unwrap()),
            [0, 1, 2, 3]
        );
        assert_eq!(
            indices(&retry_records(&spec(), &stored, RetryScope::Task("a")).unwrap()),
            [0, 1, 2, 3]
        );
    }

    #[test]
    fn refusals_name_the_task_and_what_to_do() {
        let stored = records(&[Failed, UpstreamFailed, UpstreamFailed, UpstreamFailed, Succeeded]);
        assert_eq!(
            retry_records(&spec(), &stored, RetryScope::Task("c")),
            Err(RetryRefused::Upstream {
                task: "c".into(),
                failed: "a".into()
            })
        );
        assert_eq!(
            retry_records(&spec(), &stored, RetryScope::Task("e")),
            Err(RetryRefused::NotRetryable {
                task: "e".into(),
                state: Succeeded
            })
        );
        assert_eq!(
            retry_records(&spec(), &stored, RetryScope::Task("zz")),
            Err(RetryRefused::UnknownTask("zz".into()))
        );
        let all_good = records(&[Succeeded; 5]);
        assert_eq!(
            retry_records(&spec(), &all_good, RetryScope::Failures),
            Err(RetryRefused::NothingToRetry)
        );
    }
}
