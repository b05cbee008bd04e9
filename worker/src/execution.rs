//! How one attempt ended, whether it ran as a child process or an in-process handler, and the
//! checks and wording both kinds share (output size limit, durations and sizes for people).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use taskfleet_common::state::AttemptOutcome;
use taskfleet_common::time::Millis;
use taskfleet_common::units::{format_bytes, format_duration};
use taskfleet_common::wire::{TaskMessage, TaskResult, WireAction, MAX_OUTPUT_BYTES, WIRE_VERSION};

use crate::handler::{run_handler, HandlerRegistry};
use crate::process::{run_process, ProcessConfig};

/// What executing one attempt produced.
#[derive(Clone, Debug)]
pub struct Execution {
    pub outcome: AttemptOutcome,
    /// Exit code of the child process, when it exited normally.
    pub exit_code: Option<i32>,
    /// Signal that ended the child process, if any.
    pub signal: Option<i32>,
    /// The task's JSON output, if it produced one.
    pub output: Option<Box<RawValue>>,
    /// Why the attempt did not succeed, for people.
    pub error: Option<String>,
    /// Last bytes of standard output (lossy UTF-8).
    pub stdout_tail: String,
    /// Last bytes of standard error (lossy UTF-8).
    pub stderr_tail: String,
    /// The most memory the attempt's processes used at once, when measured.
    pub peak_memory_bytes: Option<u64>,
    /// CPU time the attempt's processes used, in milliseconds, when measured.
    pub cpu_time_ms: Option<u64>,
    pub started_at: Millis,
    pub finished_at: Millis,
}

impl Execution {
    /// A successful execution with `output`.
    pub(crate) fn succeeded(output: Option<Box<RawValue>>, started_at: Millis) -> Execution {
        Execution {
            output,
            error: None,
            ..Execution::ended(AttemptOutcome::Succeeded, String::new(), started_at)
        }
    }

    /// An execution that ended with `outcome` because of `error`, nothing captured or measured.
    pub(crate) fn ended(outcome: AttemptOutcome, error: impl Into<String>, started_at: Millis) -> Execution {
        Execution {
            outcome,
            exit_code: None,
            signal: None,
            output: None,
            error: Some(error.into()),
            stdout_tail: String::new(),
            stderr_tail: String::new(),
            peak_memory_bytes: None,
            cpu_time_ms: None,
            started_at,
            finished_at: now(),
        }
    }

    /// A failed execution.
    pub(crate) fn failed(retryable: bool, error: impl Into<String>, started_at: Millis) -> Execution {
        Execution::ended(AttemptOutcome::Failed { retryable }, error, started_at)
    }

    /// The result message for the attempt `task`, executed by `worker`.
    pub fn into_result(self, task: &TaskMessage, worker: &str) -> TaskResult {
        TaskResult {
            v: WIRE_VERSION,
            workflow_id: task.workflow_id.clone(),
            task: task.task.clone(),
            task_idx: task.task_idx,
            attempt: task.attempt,
            worker: worker.to_string(),
            outcome: self.outcome,
            exit_code: self.exit_code,
            signal: self.signal,
            output: self.output,
            error: self.error,
            stdout_tail: self.stdout_tail,
            stderr_tail: self.stderr_tail,
            peak_memory_bytes: self.peak_memory_bytes,
            cpu_time_ms: self.cpu_time_ms,
            started_at: self.started_at,
            finished_at: self.finished_at,
        }
    }
}

/// Executes one attempt: a `run` action as a child process, a `handler` action with the
/// matching handler of `handlers`. Cancelling `cancel` stops it with outcome `Cancelled`.
pub async fn execute(
    task: &TaskMessage,
    handlers: &HandlerRegistry,
    config: &ProcessConfig,
    cancel: &CancellationToken,
) -> Execution {
    match &task.action {
        WireAction::Run { .. } => run_process(task, config, cancel).await,
        WireAction::Handler { .. } => run_handler(task, handlers, cancel).await,
    }
}

/// The wall clock now.
pub(crate) fn now() -> Millis {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    Millis(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
}

/// The attempt's wall-clock limit.
pub(crate) fn timeout_of(task: &TaskMessage) -> Option<Duration> {
    task.timeout_ms.map(Duration::from_millis)
}

/// Checks a task's output JSON text: empty means no output, otherwise it must be valid JSON
/// within [`MAX_OUTPUT_BYTES`]. The error is for people.
pub(crate) fn check_output(json: String) -> Result<Option<Box<RawValue>>, String> {
    if json.len() > MAX_OUTPUT_BYTES {
        return Err(too_large(json.len() as u64));
    }
    if json.trim().is_empty() {
        return Ok(None);
    }
    RawValue::from_string(json)
        .map(Some)
        .map_err(|error| format!("output is not valid JSON: {error}"))
}

/// The error for an output of `len` bytes, over the limit.
pub(crate) fn too_large(len: u64) -> String {
    format!(
        "output is {}, more than the {} limit",
        format_bytes(len),
        format_bytes(MAX_OUTPUT_BYTES as u64)
    )
}

/// The error of an attempt stopped by its timeout.
pub(crate) fn timed_out(limit: Duration) -> String {
    format!("timed out after {}", format_limit(limit))
}

/// A duration as people write limits: `2s`, `250ms`, `1.5s`, `4m05s`.
pub(crate) fn format_limit(duration: Duration) -> String {
    let ms = duration.as_millis();
    if (1000..60_000).contains(&ms) && ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format_duration(duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_limits_read_well() {
        assert_eq!(format_limit(Duration::from_secs(2)), "2s");
        assert_eq!(format_limit(Duration::from_millis(250)), "250ms");
        assert_eq!(format_limit(Duration::from_millis(1500)), "1.5s");
        assert_eq!(
            too_large(1024 * 1024 * 3 / 2),
            "output is 1.5 MiB, more than the 1 MiB limit"
        );
    }

    #[test]
    fn outputs_are_checked() {
        assert!(check_output(String::new()).unwrap().is_none());
        assert!(check_output(" \n".into()).unwrap().is_none());
        assert_eq!(
            check_output("{\"a\": 1}\n".into()).unwrap().unwrap().get(),
            "{\"a\": 1}"
        );
        assert!(check_output("{nope".into())
            .unwrap_err()
            .starts_with("output is not valid JSON: "));
        let big = format!("\"{}\"", "x".repeat(MAX_OUTPUT_BYTES));
        assert!(check_output(big).unwrap_err().contains("more than the 1 MiB limit"));
    }
}
