//! The task state machine.
//!
//! ```text
//! pending ──deps met──▶ ready ──dispatch──▶ dispatched(n) ──started──▶ running(n)
//!    │                    ▲                      │                        │
//!    │                    ├──── lease lost ──────┴────────────────────────┤
//!    │                    └──── retry due ◀── retrying ◀── retryable failure, retries left
//!    │                                                                    │
//!    └─ upstream failed ─▶ upstream_failed        succeeded | failed | timed_out | cancelled
//! ```
//!
//! [`transition`] is the only way states change; an event that makes no sense in the current
//! state is an error the caller logs and ignores (for example a late result of an old attempt).

use crate::limits::Limit;
use serde::{Deserialize, Serialize};

/// Where a task is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for dependencies.
    Pending,
    /// Every dependency succeeded; waiting for the policy to dispatch it.
    Ready,
    /// Published to a worker queue as an attempt.
    Dispatched,
    /// A worker has started the attempt.
    Running,
    /// An attempt failed and another one is due after a backoff.
    Retrying,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
    /// Will never run because a dependency ended without success.
    UpstreamFailed,
}

impl TaskState {
    /// Every state, in life order.
    pub const ALL: [TaskState; 10] = [
        TaskState::Pending,
        TaskState::Ready,
        TaskState::Dispatched,
        TaskState::Running,
        TaskState::Retrying,
        TaskState::Succeeded,
        TaskState::Failed,
        TaskState::TimedOut,
        TaskState::Cancelled,
        TaskState::UpstreamFailed,
    ];

    /// The state's name as stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Ready => "ready",
            TaskState::Dispatched => "dispatched",
            TaskState::Running => "running",
            TaskState::Retrying => "retrying",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::TimedOut => "timed_out",
            TaskState::Cancelled => "cancelled",
            TaskState::UpstreamFailed => "upstream_failed",
        }
    }

    /// Parses a name produced by [`TaskState::as_str`].
    pub fn parse(text: &str) -> Option<TaskState> {
        TaskState::ALL.into_iter().find(|state| state.as_str() == text)
    }

    /// Whether the task has ended for good.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded
                | TaskState::Failed
                | TaskState::TimedOut
                | TaskState::Cancelled
                | TaskState::UpstreamFailed
        )
    }

    /// Whether an attempt is out with a worker.
    pub fn is_in_flight(self) -> bool {
        matches!(self, TaskState::Dispatched | TaskState::Running)
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one attempt ended, as reported by a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Succeeded,
    /// The task failed; `retryable` is false when trying again cannot help (e.g. no such program).
    Failed {
        retryable: bool,
    },
    TimedOut,
    Cancelled,
    /// The worker stopped the attempt because it crossed one of its limits; retried like a
    /// failure.
    LimitExceeded(Limit),
}

impl AttemptOutcome {
    /// The outcome as stored and shown: `succeeded`, `failed`, `failed_permanent`, `timed_out`,
    /// `cancelled`, or the limit's reason (`memory_limit_exceeded`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Failed { retryable: true } => "failed",
            AttemptOutcome::Failed { retryable: false } => "failed_permanent",
            AttemptOutcome::TimedOut => "timed_out",
            AttemptOutcome::Cancelled => "cancelled",
            AttemptOutcome::LimitExceeded(limit) => limit.reason(),
        }
    }

    /// Reads an [`AttemptOutcome::as_str`] back.
    pub fn parse(text: &str) -> Option<AttemptOutcome> {
        Some(match text {
            "succeeded" => AttemptOutcome::Succeeded,
            "failed" => AttemptOutcome::Failed { retryable: true },
            "failed_permanent" => AttemptOutcome::Failed { retryable: false },
            "timed_out" => AttemptOutcome::TimedOut,
            "cancelled" => AttemptOutcome::Cancelled,
            other => AttemptOutcome::LimitExceeded(Limit::from_reason(other)?),
        })
    }

    /// Whether another attempt may end otherwise: failures that may pass, timeouts, limits.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            AttemptOutcome::Failed { retryable: true } | AttemptOutcome::TimedOut | AttemptOutcome::LimitExceeded(_)
        )
    }
}

/// Something that happens to a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskEvent {
    /// The last unfinished dependency succeeded.
    DepsMet,
    /// The scheduler published an attempt.
    Dispatch,
    /// A worker reported it started the current attempt.
    Started,
    /// The current attempt ended; `retries_left` says whether the retry policy allows another.
    Finished {
        outcome: AttemptOutcome,
        retries_left: bool,
    },
    /// A retry's backoff has passed.
    RetryDue,
    /// The attempt's worker was lost (lease expired, or the scheduler restarted).
    LeaseLost,
    /// After a scheduler restart, a worker reported that it still runs the task's latest
    /// attempt: the task takes that attempt back instead of running again.
    Adopted,
    /// A dependency ended without success.
    UpstreamFailed,
    /// The user cancelled the workflow.
    Cancel,
}

/// An event that does not apply to the task's current state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("event {event:?} does not apply to a task that is {state}")]
pub struct InvalidTransition {
    pub state: TaskState,
    pub event: TaskEvent,
}

/// The state after `event` happens to a task in `state`.
pub fn transition(state: TaskState, event: TaskEvent) -> Result<TaskState, InvalidTransition> {
    use TaskEvent as E;
    use TaskState as S;
    let next = match (state, event) {
        (S::Pending, E::DepsMet) => S::Ready,
        (S::Pending, E::UpstreamFailed) => S::UpstreamFailed,
        (S::Ready, E::Dispatch) => S::Dispatched,
        (S::Dispatched, E::Started) => S::Running,
        (S::Dispatched | S::Running, E::Finished { outcome, retries_left }) => match outcome {
            AttemptOutcome::Succeeded => S::Succeeded,
            AttemptOutcome::Cancelled => S::Cancelled,
            outcome if outcome.is_retryable() && retries_left => S::Retrying,
            AttemptOutcome::Failed { .. } | AttemptOutcome::LimitExceeded(_) => S::Failed,
            AttemptOutcome::TimedOut => S::TimedOut,
        },
        (S::Dispatched | S::Running, E::LeaseLost) => S::Ready,
        (S::Retrying, E::RetryDue) => S::Ready,
        (S::Ready, E::Adopted) => S::Running,
        (state, E::Cancel) if !state.is_terminal() => S::Cancelled,
        (state, event) => return Err(InvalidTransition { state, event }),
    };
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use AttemptOutcome as O;
    use TaskEvent as E;
    use TaskState as S;

    #[track_caller]
    fn check(path: &[TaskEvent], expected: &str) {
        let mut state = S::Pending;
        let mut seen = vec![state.as_str().to_string()];
        for &event in path {
            match transition(state, event) {
                Ok(next) => {
                    state = next;
                    seen.push(state.as_str().to_string());
                }
                Err(error) => {
                    seen.push(format!("error: {error}"));
                    break;
                }
            }
        }
        assert_eq!(seen.join(" > "), expected);
    }

    #[test]
    fn happy_path() {
        check(
            &[
                E::DepsMet,
                E::Dispatch,
                E::Started,
                E::Finished {
                    outcome: O::Succeeded,
                    retries_left: false,
                },
            ],
            "pending > ready > dispatched > running > succeeded",
        );
    }

    #[test]
    fn retry_then_give_up() {
        check(
            &[
                E::DepsMet,
                E::Dispatch,
                E::Started,
                E::Finished { outcome: O::Failed { retryable: true }, retries_left: true },
                E::RetryDue,
                E::Dispatch,
                E::Finished { outcome: O::TimedOut, retries_left: true },
                E::RetryDue,
                E::Dispatch,
                E::Started,
                E::Finished { outcome: O::TimedOut, retries_left: false },
            ],
            "pending > ready > dispatched > running > retrying > ready > dispatched > retrying > ready > dispatched > running > timed_out",
        );
    }

    #[test]
    fn permanent_failure_is_not_retried() {
        check(
            &[
                E::DepsMet,
                E::Dispatch,
                E::Finished {
                    outcome: O::Failed { retryable: false },
                    retries_left: true,
                },
            ],
            "pending > ready > dispatched > failed",
        );
    }

    #[test]
    fn an_attempt_that_survived_a_restart_is_adopted() {
        check(
            &[E::DepsMet, E::Dispatch, E::Started, E::LeaseLost, E::Adopted],
            "pending > ready > dispatched > running > ready > running",
        );
    }

    #[test]
    fn lost_lease_goes_back_to_ready() {
        check(
            &[E::DepsMet, E::Dispatch, E::Started, E::LeaseLost, E::Dispatch],
            "pending > ready > dispatched > running > ready > dispatched",
        );
    }

    #[test]
    fn upstream_failure_and_cancel() {
        check(&[E::UpstreamFailed], "pending > upstream_failed");
        check(&[E::DepsMet, E::Cancel], "pending > ready > cancelled");
        check(
            &[E::DepsMet, E::Cancel, E::Cancel],
            "pending > ready > cancelled > error: event Cancel does not apply to a task that is cancelled",
        );
    }

    #[test]
    fn nonsense_events_are_rejected() {
        check(
            &[E::Dispatch],
            "pending > error: event Dispatch does not apply to a task that is pending",
        );
        check(
            &[E::DepsMet, E::Started],
            "pending > ready > error: event Started does not apply to a task that is ready",
        );
        check(
            &[E::DepsMet, E::Dispatch, E::Finished { outcome: O::Succeeded, retries_left: false }, E::Finished { outcome: O::Succeeded, retries_left: false }],
            "pending > ready > dispatched > succeeded > error: event Finished { outcome: Succeeded, retries_left: false } does not apply to a task that is succeeded",
        );
    }

    #[test]
    fn names_round_trip() {
        for state in S::ALL {
            assert_eq!(S::parse(state.as_str()), Some(state));
        }
    }
}
