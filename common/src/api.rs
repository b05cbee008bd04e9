//! Bodies of the scheduler's HTTP API, shared by the server and its clients (the CLI).
//!
//! Times are RFC 3339 strings for people and `*_ms` fields for programs where useful.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use crate::resources::ResourceSet;
use crate::state::TaskState;
use crate::wire::AttemptRef;
use crate::workflow::Problem;

/// A workflow and the state of each of its tasks (`GET /v1/workflows/{id}`, and the report of
/// `taskfleet run --json`).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct WorkflowStatus {
    pub workflow_id: String,
    pub name: String,
    /// `running`, `succeeded`, `failed` or `cancelled`.
    pub state: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<u64>,
    /// Tasks per state.
    pub counts: BTreeMap<String, usize>,
    /// When a running workflow is predicted to end (Monte-Carlo over learned runtimes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta: Option<EtaStatus>,
    /// The tasks of this page, in file order (the API pages them: `?limit=N&cursor=C`).
    pub tasks: Vec<TaskStatus>,
    /// Where the next page starts (`?cursor=...`), when more tasks follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A running workflow's predicted end.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EtaStatus {
    /// Median and 90th percentile of the predicted end.
    pub p50_at: String,
    pub p90_at: String,
    /// The same, as milliseconds from when the prediction was made.
    pub p50_in_ms: u64,
    pub p90_in_ms: u64,
    /// The unfinished tasks most often on the chain that decides the end, most critical first,
    /// with the share of samples in which they were.
    pub critical_tasks: Vec<(String, f64)>,
}

/// One task's line of a [`WorkflowStatus`].
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct TaskStatus {
    pub id: String,
    pub state: TaskState,
    /// Attempts made so far: those that started or ended, and the one out now. An attempt
    /// lost before it reached a worker (a scheduler restart while it waited) does not count,
    /// so attempt numbers (`TASKFLEET_ATTEMPT`) may run ahead of it.
    pub attempts: u32,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<u64>,
    pub worker: Option<String>,
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How the latest attempt ended, when it did not succeed: `failed`, `failed_permanent`,
    /// `timed_out`, `cancelled`, `memory_limit_exceeded`, `cpu_limit_exceeded` or
    /// `pids_limit_exceeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The most memory the latest attempt's processes used at once, in bytes, when measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<u64>,
    /// CPU time the latest attempt's processes used, in milliseconds, when measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_time_ms: Option<u64>,
    /// Why a task that is out or ready cannot start: no worker of its pool offers what it asks
    /// for (the last big enough one left).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// The lease of a running attempt: the worker that holds it, and when it lapses unless
    /// the worker's heartbeats renew it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseStatus>,
    /// Its attempt runs on capacity reserved for others (a priority class or tenant), lent
    /// while they had nothing waiting: the first to make way when they need it back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lent: bool,
    /// The JSON the task produced, if it succeeded with an output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub output: Option<Box<RawValue>>,
    /// For a task of a running workflow that has not ended: how long it is expected to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<ExpectedRuntime>,
}

/// Who holds a running attempt, and until when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LeaseStatus {
    pub holder: String,
    pub expires_at: String,
}

/// A predicted runtime, and how sure the prediction is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ExpectedRuntime {
    pub mean_ms: u64,
    pub p50_ms: u64,
    pub p90_ms: u64,
    /// 0 (a guess) to 1 (many consistent runs).
    pub confidence: f64,
    /// Where it comes from: `learned` (past runs), `declared` (the task's `estimate`) or
    /// `prior` (nothing known).
    pub source: String,
}

/// The answer to a submission (`POST /v1/workflows`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SubmitResponse {
    pub workflow_id: String,
    /// False when an earlier submission with the same idempotency key created it.
    pub created: bool,
}

/// The answer to a cancellation (`POST /v1/workflows/{id}/cancel`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CancelResponse {
    pub workflow_id: String,
    pub state: String,
}

/// The answer to a retry (`POST /v1/workflows/{id}/retry`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RetryResponse {
    pub workflow_id: String,
    /// `running`: the workflow runs again.
    pub state: String,
    /// The tasks that run again, in task order; succeeded tasks are never among them.
    pub retried: Vec<String>,
}

/// One change the scheduler committed, as its event streams tell it (`GET /v1/events` for the
/// whole fleet, `GET /v1/workflows/{id}/events` for one workflow). Each is an SSE event named
/// by its `type`, with this JSON as its data; a stream that fell behind gets a `lagged` event
/// instead of what it missed, and should read the status again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FleetEvent {
    /// A task changed state.
    Task(TaskEvent),
    /// A workflow started, was retried, or ended.
    Workflow(WorkflowEvent),
}

impl FleetEvent {
    /// The workflow the event is about.
    pub fn workflow_id(&self) -> &str {
        match self {
            FleetEvent::Task(task) => &task.workflow_id,
            FleetEvent::Workflow(workflow) => &workflow.workflow_id,
        }
    }

    /// The SSE event name: `task` or `workflow`.
    pub fn name(&self) -> &'static str {
        match self {
            FleetEvent::Task(_) => "task",
            FleetEvent::Workflow(_) => "workflow",
        }
    }
}

/// A task's new state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskEvent {
    pub workflow_id: String,
    /// The task's id.
    pub task: String,
    /// Its place in the workflow file (0 for the first task).
    pub task_idx: u32,
    pub state: TaskState,
    /// Its latest attempt (0 before the first).
    pub attempt: u32,
    /// When the change was committed (Unix milliseconds).
    pub at_ms: u64,
}

/// A workflow's new state: `running` (added, resumed or retried), `succeeded`, `failed` or
/// `cancelled`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowEvent {
    pub workflow_id: String,
    pub state: String,
    /// When the change was committed (Unix milliseconds).
    pub at_ms: u64,
}

/// A worker of the live fleet (`GET /v1/workers`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerStatus {
    pub name: String,
    pub pools: Vec<String>,
    /// Attempts it runs at once.
    pub slots: u32,
    /// Attempts it was running at its last heartbeat.
    pub in_use: u32,
    /// Relative speed, as it declares it.
    #[serde(default = "unit_speed")]
    pub speed: f64,
    /// Whether it is shutting down (it takes no new tasks).
    pub draining: bool,
    pub first_seen_ms: u64,
    pub last_heartbeat_ms: u64,
    /// When the lease on its attempts lapses unless another heartbeat renews it: its attempts
    /// are then taken back and run elsewhere.
    #[serde(default)]
    pub lease_expires_ms: u64,
    /// The attempts it runs, whose leases it holds.
    #[serde(default)]
    pub running: Vec<AttemptRef>,
    /// What it offers in all, and what its attempts asked for, when it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<ResourceSet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources_in_use: Option<ResourceSet>,
    /// Its labels, which tasks select.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

fn unit_speed() -> f64 {
    1.0
}

/// The body of every error answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
    /// For an invalid workflow, every problem found.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<ProblemBody>,
}

/// One validation problem.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProblemBody {
    pub task: Option<String>,
    pub field: String,
    pub message: String,
    /// The problem as `taskfleet validate` prints it.
    pub text: String,
}

impl From<&Problem> for ProblemBody {
    fn from(problem: &Problem) -> Self {
        ProblemBody {
            task: problem.task.clone(),
            field: problem.field.clone(),
            message: problem.message.clone(),
            text: problem.to_string(),
        }
    }
}

/// One workflow of a [`WorkflowList`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowSummary {
    pub workflow_id: String,
    pub name: String,
    /// `running`, `succeeded`, `failed` or `cancelled`.
    pub state: String,
    pub submitted_at: String,
    pub finished_at: Option<String>,
    pub duration_ms: Option<u64>,
}

/// A page of workflows, newest first (`GET /v1/workflows`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WorkflowList {
    pub workflows: Vec<WorkflowSummary>,
    /// Where the next page starts (`?cursor=...`), when more workflows follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Every attempt of one task (`GET /v1/workflows/{id}/tasks/{task}/attempts`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TaskAttempts {
    pub workflow_id: String,
    pub task: String,
    pub state: TaskState,
    /// Oldest first.
    pub attempts: Vec<AttemptStatus>,
}

/// One attempt of a task: where and when it ran, how it ended, what it used and printed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AttemptStatus {
    pub attempt: u32,
    pub worker: Option<String>,
    pub dispatched_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<u64>,
    /// How it ended (`succeeded`, `failed`, `timed_out`, ...); none while it runs or when it
    /// was lost with its worker.
    pub outcome: Option<String>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub error: Option<String>,
    /// The most memory its processes used at once, in bytes, when measured.
    pub peak_memory_bytes: Option<u64>,
    /// CPU time its processes used, in milliseconds, when measured.
    pub cpu_time_ms: Option<u64>,
    /// The end of what it wrote to stdout and stderr.
    pub stdout_tail: String,
    pub stderr_tail: String,
}

/// What `/healthz` and `/readyz` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HealthBody {
    /// `ok` (`/healthz`), `ready`, or why it is not ready (`/readyz`).
    pub status: String,
    /// This scheduler's name.
    pub name: String,
    /// `leader` or `standby`.
    pub role: String,
    /// The leader's epoch (its fencing token), on a shared store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// The leader a standby knows of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
}
