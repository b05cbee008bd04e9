//! Messages that cross a process boundary between scheduler and workers, as versioned JSON.
//!
//! Every message carries `v`, the wire version. A message that does not parse, or has a
//! version this build does not speak, is a [`WireError`]; consumers dead-letter it with the
//! error as the reason instead of crashing or retrying it forever.

mod dead_letter;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::limits::Limits;
use crate::resources::ResourceSet;
use crate::state::AttemptOutcome;
use crate::time::Millis;
use crate::workflow::{Action, PriorityClass};

pub use dead_letter::{hex_sha256, DeadLetter, Truncated, MAX_REASON_BYTES, TRUNCATED_KEEP_BYTES};

/// The wire version this build writes and reads.
pub const WIRE_VERSION: u32 = 1;

/// Largest task output accepted, in bytes of JSON.
pub const MAX_OUTPUT_BYTES: usize = 1024 * 1024;

/// Largest action a task may carry (its argv and environment, or its handler's name, args and
/// environment), in bytes of JSON once the workflow's aliases are expanded. Checked when a
/// workflow is submitted.
pub const MAX_ACTION_BYTES: usize = 1024 * 1024;

/// Largest task message the scheduler publishes, in bytes. A task whose message would be
/// larger (an action near its limit plus the inputs from many parents) fails alone, without
/// retries, with a reason that says so; RabbitMQ 4's default limit is this size, RabbitMQ 3's
/// is 128 MiB.
pub const MAX_TASK_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Largest results message the scheduler reads, in bytes: a worker packs events into messages
/// of about 1 MiB, and one event holds at most an output and two short tails. A larger message
/// on the results queue is not from a worker, and is dead-lettered unread.
pub const MAX_EVENTS_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// One attempt of one task, sent to a worker queue.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskMessage {
    pub v: u32,
    pub workflow_id: String,
    /// The task's id in its workflow.
    pub task: String,
    /// The task's index in its workflow.
    pub task_idx: u32,
    /// Attempt number, from 1; results are recorded only for the current attempt.
    pub attempt: u32,
    pub pool: String,
    pub priority: PriorityClass,
    pub action: WireAction,
    /// Wall-clock limit of this attempt, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// What the worker enforces on this attempt's process tree besides the timeout.
    #[serde(default, skip_serializing_if = "Limits::is_none")]
    pub limits: Limits,
    /// What the task asks its worker for (CPUs, memory, GPUs, custom resources).
    #[serde(default)]
    pub resources: ResourceSet,
    /// Labels the worker must carry to run it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    /// Outputs of the task's dependencies, by task id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, Box<RawValue>>,
}

/// What to execute, as carried on the wire.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WireAction {
    Run {
        argv: Vec<String>,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        env: BTreeMap<String, String>,
    },
    Handler {
        name: String,
        #[serde(default)]
        args: serde_json::Value,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        env: BTreeMap<String, String>,
    },
}

impl From<&Action> for WireAction {
    fn from(action: &Action) -> Self {
        match action {
            Action::Run { argv, env } => WireAction::Run {
                argv: argv.clone(),
                env: env.clone(),
            },
            Action::Handler { name, args, env } => WireAction::Handler {
                name: name.clone(),
                args: args.clone(),
                env: env.clone(),
            },
        }
    }
}

/// What workers tell the scheduler, on the results queue. Externally tagged
/// (`{"finished": {...}}`), so outputs pass through as raw JSON without being re-parsed.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerEvent {
    /// The worker started an attempt.
    Started(AttemptStarted),
    /// An attempt ended.
    Finished(TaskResult),
}

/// A worker started an attempt.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttemptStarted {
    pub v: u32,
    pub workflow_id: String,
    pub task_idx: u32,
    pub attempt: u32,
    pub worker: String,
    pub at: Millis,
}

/// How an attempt ended.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskResult {
    pub v: u32,
    pub workflow_id: String,
    pub task: String,
    pub task_idx: u32,
    pub attempt: u32,
    pub worker: String,
    pub outcome: AttemptOutcome,
    /// Exit code of the child process, when it exited normally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Signal that ended the child process, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// The JSON the task wrote to `$TASKFLEET_OUTPUT` (or its handler returned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Box<RawValue>>,
    /// Why the attempt failed, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Last bytes of standard output.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stdout_tail: String,
    /// Last bytes of standard error.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stderr_tail: String,
    /// The most memory the attempt's processes used at once, in bytes, when measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<u64>,
    /// CPU time the attempt's processes used, in milliseconds, when measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_time_ms: Option<u64>,
    pub started_at: Millis,
    pub finished_at: Millis,
}

/// A worker's periodic sign of life, broadcast on the heartbeats topic. It renews the lease
/// of every attempt the worker runs and tells the scheduler how many slots it offers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub v: u32,
    pub worker: String,
    pub pools: Vec<String>,
    /// Attempts the worker runs at once.
    pub slots: u32,
    /// Its relative speed (a task estimated at `e` should take `e / speed` here), used by
    /// placement-aware policies; 1 when absent.
    #[serde(default = "unit_speed")]
    pub speed: f64,
    /// The attempts it is running now.
    #[serde(default)]
    pub running: Vec<AttemptRef>,
    /// Set when the worker is shutting down: it takes no new tasks.
    #[serde(default)]
    pub draining: bool,
    /// Set on the last heartbeat of a worker that stopped cleanly.
    #[serde(default)]
    pub gone: bool,
    /// What the worker offers in all: detected from its machine, or as it was told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<ResourceSet>,
    /// What the attempts it runs asked for, together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_use: Option<ResourceSet>,
    /// Its labels, which tasks select (`arch: arm64`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    pub at: Millis,
}

fn unit_speed() -> f64 {
    1.0
}

/// One attempt of one task.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttemptRef {
    pub workflow_id: String,
    pub task_idx: u32,
    pub attempt: u32,
}

/// What the scheduler tells workers, on the control topic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlMessage {
    /// Stop this attempt if you run it; it ends `cancelled`.
    Cancel { v: u32, attempt: AttemptRef },
}

/// Decodes a heartbeat, checking its version.
pub fn decode_heartbeat(bytes: &[u8]) -> Result<Heartbeat, WireError> {
    let heartbeat: Heartbeat = decode(bytes)?;
    check_version(heartbeat.v)?;
    if !is_valid_worker_name(&heartbeat.worker) {
        return Err(WireError::Unparsable {
            reason: format!("unusable worker name {:?}: {WORKER_NAME_RULE}", heartbeat.worker),
        });
    }
    if heartbeat.slots > MAX_WORKER_SLOTS {
        return Err(WireError::Unparsable {
            reason: format!(
                "worker `{}` offers {} slots; a worker offers at most {MAX_WORKER_SLOTS}",
                heartbeat.worker, heartbeat.slots
            ),
        });
    }
    Ok(heartbeat)
}

/// Most slots (tasks at once) one worker may offer.
pub const MAX_WORKER_SLOTS: u32 = 100_000;

/// What a worker's name may be, for people.
pub const WORKER_NAME_RULE: &str = "a worker name is 1 to 128 of A-Z a-z 0-9 _ . -";

/// Whether `name` can name a worker: it also names the worker's own queue.
pub fn is_valid_worker_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Decodes a control message, checking its version.
pub fn decode_control(bytes: &[u8]) -> Result<ControlMessage, WireError> {
    let message: ControlMessage = decode(bytes)?;
    let ControlMessage::Cancel { v, .. } = &message;
    check_version(*v)?;
    Ok(message)
}

impl TaskResult {
    /// A successful attempt with no output and nothing captured: what the simulator reports
    /// for every task, and a starting point for tests.
    pub fn succeeded(
        workflow_id: impl Into<String>,
        task: impl Into<String>,
        task_idx: u32,
        attempt: u32,
        worker: impl Into<String>,
        started_at: Millis,
        finished_at: Millis,
    ) -> TaskResult {
        TaskResult {
            v: WIRE_VERSION,
            workflow_id: workflow_id.into(),
            task: task.into(),
            task_idx,
            attempt,
            worker: worker.into(),
            outcome: AttemptOutcome::Succeeded,
            exit_code: None,
            signal: None,
            output: None,
            error: None,
            stdout_tail: String::new(),
            stderr_tail: String::new(),
            peak_memory_bytes: None,
            cpu_time_ms: None,
            started_at,
            finished_at,
        }
    }
}

/// A message that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("unparsable message: {reason}")]
    Unparsable { reason: String },
    #[error("unsupported wire version {found} (this build speaks version {WIRE_VERSION})")]
    UnknownVersion { found: u32 },
}

/// Encodes any wire message.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    serde_json::to_vec(message).expect("wire messages always serialize")
}

/// Decodes a task message, checking its version.
pub fn decode_task(bytes: &[u8]) -> Result<TaskMessage, WireError> {
    let message: TaskMessage = decode(bytes)?;
    check_version(message.v)?;
    Ok(message)
}

/// Decodes a worker event, checking its version.
pub fn decode_worker_event(bytes: &[u8]) -> Result<WorkerEvent, WireError> {
    let event: WorkerEvent = decode(bytes).map_err(|error| {
        // Events are tagged (`{"finished": {"v": 2, ...}}`): look for the version inside.
        #[derive(Deserialize)]
        struct VersionOnly {
            v: u32,
        }
        match serde_json::from_slice::<BTreeMap<String, VersionOnly>>(bytes) {
            Ok(tagged) => match tagged.values().next() {
                Some(VersionOnly { v }) if *v != WIRE_VERSION => WireError::UnknownVersion { found: *v },
                _ => error,
            },
            Err(_) => error,
        }
    })?;
    let v = match &event {
        WorkerEvent::Started(started) => started.v,
        WorkerEvent::Finished(result) => result.v,
    };
    check_version(v)?;
    Ok(event)
}

/// Packs encoded worker events into one results message: a JSON array of them. A worker
/// sends the events it has ready together, so the broker carries one message for many tasks.
pub fn pack_worker_events<'a>(events: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut packed = vec![b'['];
    for (idx, event) in events.into_iter().enumerate() {
        if idx > 0 {
            packed.push(b',');
        }
        packed.extend_from_slice(event);
    }
    packed.push(b']');
    packed
}

/// Decodes a results message: one worker event, or an array of them (see
/// [`pack_worker_events`]), each version-checked. All of them or an error naming the first
/// unusable one, so a message is applied whole or dead-lettered whole.
pub fn decode_worker_events(bytes: &[u8]) -> Result<Vec<WorkerEvent>, WireError> {
    if bytes.iter().find(|byte| !byte.is_ascii_whitespace()) != Some(&b'[') {
        return Ok(vec![decode_worker_event(bytes)?]);
    }
    let events: Vec<&RawValue> = serde_json::from_slice(bytes).map_err(|error| WireError::Unparsable {
        reason: error.to_string(),
    })?;
    events
        .iter()
        .enumerate()
        .map(|(idx, event)| {
            decode_worker_event(event.get().as_bytes()).map_err(|error| match error {
                WireError::Unparsable { reason } => WireError::Unparsable {
                    reason: format!("event {idx} of the batch: {reason}"),
                },
                other => other,
            })
        })
        .collect()
}

fn decode<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, WireError> {
    serde_json::from_slice(bytes).map_err(|error| {
        // A message from a newer build may fail to parse because of its new shape: say so.
        #[derive(Deserialize)]
        struct VersionOnly {
            v: u32,
        }
        match serde_json::from_slice::<VersionOnly>(bytes) {
            Ok(VersionOnly { v }) if v != WIRE_VERSION => WireError::UnknownVersion { found: v },
            _ => WireError::Unparsable {
                reason: error.to_string(),
            },
        }
    })
}

fn check_version(v: u32) -> Result<(), WireError> {
    if v == WIRE_VERSION {
        Ok(())
    } else {
        Err(WireError::UnknownVersion { found: v })
    }
}

#[cfg(test)]
mod tests;
