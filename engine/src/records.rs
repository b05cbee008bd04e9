//! What the engine tells the store: the state of each task and attempt as records, and every
//! change as a [`StoreUpdate`]. The engine emits them; the scheduler's store persists them,
//! one batch per transaction, and hands [`TaskRecord`]s back when a workflow is resumed.

use std::sync::Arc;

use taskfleet_common::state::{AttemptOutcome, TaskState};
use taskfleet_common::Millis;

use crate::predict::{FeatureModel, LogStats};

/// The life state of a whole workflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WorkflowState {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl WorkflowState {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowState::Running => "running",
            WorkflowState::Succeeded => "succeeded",
            WorkflowState::Failed => "failed",
            WorkflowState::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<WorkflowState> {
        [
            WorkflowState::Running,
            WorkflowState::Succeeded,
            WorkflowState::Failed,
            WorkflowState::Cancelled,
        ]
        .into_iter()
        .find(|state| state.as_str() == text)
    }

    pub fn is_terminal(self) -> bool {
        self != WorkflowState::Running
    }
}

/// The stored state of one task.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskRecord {
    pub task_idx: u32,
    pub state: TaskState,
    /// Number of the latest attempt (0 before the first dispatch).
    pub attempt: u32,
    /// Failed attempts so far (lost leases do not count).
    pub n_failures: u32,
    /// When a task in `retrying` becomes ready again.
    pub retry_at: Option<Millis>,
    /// The task's output (JSON text), once it succeeded.
    pub output: Option<String>,
}

/// The stored record of one attempt.
#[derive(Clone, Debug, PartialEq)]
pub struct AttemptRecord {
    pub task_idx: u32,
    pub attempt: u32,
    pub dispatched_at: Millis,
    pub worker: Option<String>,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub outcome: Option<AttemptOutcome>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub error: Option<String>,
    pub stdout_tail: String,
    pub stderr_tail: String,
    /// The most memory the attempt's processes used at once, in bytes, when measured.
    pub peak_memory_bytes: Option<u64>,
    /// CPU time the attempt's processes used, in milliseconds, when measured.
    pub cpu_time_ms: Option<u64>,
}

impl AttemptRecord {
    /// An attempt dispatched `at`, and nothing more known of it yet.
    pub fn dispatched(task_idx: u32, attempt: u32, at: Millis) -> AttemptRecord {
        AttemptRecord {
            task_idx,
            attempt,
            dispatched_at: at,
            worker: None,
            started_at: None,
            finished_at: None,
            outcome: None,
            exit_code: None,
            signal: None,
            error: None,
            stdout_tail: String::new(),
            stderr_tail: String::new(),
            peak_memory_bytes: None,
            cpu_time_ms: None,
        }
    }
}

/// One change to stored state. The scheduler applies a batch of them per transaction.
#[derive(Clone, Debug, PartialEq)]
pub enum StoreUpdate {
    /// A task's state and counters changed.
    Task { workflow_id: Arc<str>, record: TaskRecord },
    /// A new attempt was dispatched.
    AttemptDispatched {
        workflow_id: Arc<str>,
        task_idx: u32,
        attempt: u32,
        at: Millis,
    },
    /// A worker started an attempt.
    AttemptStarted {
        workflow_id: Arc<str>,
        task_idx: u32,
        attempt: u32,
        worker: String,
        at: Millis,
    },
    /// An attempt ended; `record` holds its final fields (its `dispatched_at` is used only
    /// when the attempt was never recorded as dispatched).
    AttemptFinished {
        workflow_id: Arc<str>,
        record: AttemptRecord,
    },
    /// The workflow ended.
    WorkflowFinished {
        workflow_id: Arc<str>,
        state: WorkflowState,
        at: Millis,
    },
    /// The runtime statistics learned for a task signature (replacing the stored ones).
    RuntimeStats { signature: String, stats: LogStats },
    /// The feature regression learned for a signature and feature set (replacing the stored
    /// one).
    FeatureModel { key: String, model: FeatureModel },
}
