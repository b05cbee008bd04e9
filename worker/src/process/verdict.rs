//! The verdict on an attempt's process: how it ended (exit code, signal, timeout, cancel, a
//! crossed limit), what it handed back, and what a failure to start it means.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::Signal;

use taskfleet_common::limits::Limit;
use taskfleet_common::state::AttemptOutcome;
use taskfleet_common::time::Millis;
use taskfleet_common::units::{format_bytes, format_duration};
use taskfleet_common::wire::{TaskMessage, MAX_OUTPUT_BYTES};

use super::Ending;
use crate::execution::{check_output, timed_out, timeout_of, too_large, Execution};
use crate::limits::cgroup::Accounting;

/// The verdict on a process that ended with `status`.
pub(super) struct Verdict {
    outcome: AttemptOutcome,
    output: Option<Box<serde_json::value::RawValue>>,
    error: Option<String>,
}

impl Verdict {
    pub(super) fn into_execution(self, started_at: Millis, status: ExitStatus) -> Execution {
        let mut execution = match self.error {
            Some(error) => Execution::ended(self.outcome, error, started_at),
            None => Execution::succeeded(self.output, started_at),
        };
        execution.exit_code = status.code();
        execution.signal = status.signal();
        execution
    }
}

pub(super) async fn judge(
    task: &TaskMessage,
    status: ExitStatus,
    ending: Ending,
    used: &Accounting,
    output: &Path,
) -> Verdict {
    let fail = |outcome, error: String| Verdict {
        outcome,
        output: None,
        error: Some(error),
    };
    let limit_fail = |limit: Limit, how: String| fail(AttemptOutcome::LimitExceeded(limit), how);
    let failed = ending != Ending::Exited || !status.success();
    match ending {
        Ending::Cancelled => return fail(AttemptOutcome::Cancelled, "cancelled".to_string()),
        Ending::CpuTimeUsed => return limit_fail(Limit::Cpu, cpu_time_used(task, used)),
        Ending::TimedOut | Ending::Exited => {}
    }
    // A limit the tree ran into explains its failure better than the signal or the timeout.
    if failed {
        match used.limit_hit() {
            Some(Limit::Memory) => return limit_fail(Limit::Memory, memory_used(task, used)),
            Some(Limit::Pids) => {
                let pids = task.limits.pids.unwrap_or_default();
                let how = format!("the task tried to run more than {pids} processes at once (its pids limit)");
                return limit_fail(Limit::Pids, how);
            }
            Some(Limit::Cpu) | None => {}
        }
        if status.signal() == Some(Signal::SIGXCPU as i32) && task.limits.cpu_time_ms.is_some() {
            return limit_fail(Limit::Cpu, cpu_time_used(task, used));
        }
    }
    if ending == Ending::TimedOut {
        let limit = timeout_of(task).unwrap_or_default();
        return fail(AttemptOutcome::TimedOut, timed_out(limit));
    }
    if let Some(code) = status.code() {
        if code != 0 {
            return fail(
                AttemptOutcome::Failed { retryable: true },
                format!("exited with code {code}"),
            );
        }
    } else if let Some(signal) = status.signal() {
        let error = format!("killed by signal {signal} ({})", signal_name(signal));
        return fail(AttemptOutcome::Failed { retryable: true }, error);
    }
    match read_output(output).await {
        Ok(output) => Verdict {
            outcome: AttemptOutcome::Succeeded,
            output,
            error: None,
        },
        Err(error) => fail(AttemptOutcome::Failed { retryable: false }, error),
    }
}

fn memory_used(task: &TaskMessage, used: &Accounting) -> String {
    let limit = format_bytes(task.limits.memory_bytes.unwrap_or_default());
    match used.peak_memory_bytes {
        Some(peak) => format!(
            "killed when it ran out of memory: its limit is {limit} (peak {})",
            format_bytes(peak)
        ),
        None => format!("killed when it ran out of memory: its limit is {limit}"),
    }
}

fn cpu_time_used(task: &TaskMessage, used: &Accounting) -> String {
    let limit = Duration::from_millis(task.limits.cpu_time_ms.unwrap_or_default());
    match used.cpu_time_ms {
        Some(ms) => format!(
            "stopped when it used its CPU time: its limit is {} (used {})",
            format_duration(limit),
            format_duration(Duration::from_millis(ms))
        ),
        None => format!(
            "stopped when it used its CPU time: its limit is {}",
            format_duration(limit)
        ),
    }
}

/// Reads and checks what the task wrote to `$TASKFLEET_OUTPUT`, if anything.
async fn read_output(path: &Path) -> Result<Option<Box<serde_json::value::RawValue>>, String> {
    let len = match tokio::fs::metadata(path).await {
        Ok(metadata) => metadata.len(),
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(format!("could not read the output file: {error}")),
    };
    if len > MAX_OUTPUT_BYTES as u64 {
        return Err(too_large(len));
    }
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|error| format!("could not read the output file: {error}"))?;
    let text = String::from_utf8(bytes).map_err(|error| format!("output is not valid UTF-8: {error}"))?;
    check_output(text)
}

pub(super) fn spawn_failure(
    program: &str,
    work_dir: Option<&Path>,
    error: &io::Error,
    started_at: Millis,
) -> Execution {
    match error.kind() {
        io::ErrorKind::NotFound => match work_dir {
            // Changing into a missing working directory fails the same way: blame the worker.
            Some(dir) if !dir.is_dir() => Execution::failed(
                true,
                format!("working directory `{}` does not exist", dir.display()),
                started_at,
            ),
            _ => Execution::failed(false, format!("program `{program}` not found"), started_at),
        },
        io::ErrorKind::PermissionDenied => Execution::failed(
            false,
            format!("program `{program}` cannot be run: permission denied"),
            started_at,
        ),
        _ if start_error_is_permanent(error) => {
            Execution::failed(false, format!("could not start `{program}`: {error}"), started_at)
        }
        _ => Execution::failed(true, format!("could not start `{program}`: {error}"), started_at),
    }
}

/// Whether starting the same command again would fail the same way: arguments the kernel
/// refuses (too long, a NUL byte), a file that is not a program. Running out of processes,
/// memory or file descriptors may pass, and is worth a retry.
fn start_error_is_permanent(error: &io::Error) -> bool {
    if error.kind() == io::ErrorKind::InvalidInput {
        // The standard library's own check: a NUL byte in a program, argument or variable.
        return true;
    }
    let Some(code) = error.raw_os_error() else {
        return false;
    };
    matches!(
        Errno::from_raw(code),
        Errno::E2BIG | Errno::ENOEXEC | Errno::ENAMETOOLONG | Errno::ENOTDIR | Errno::ELOOP | Errno::EISDIR
    )
}

fn signal_name(signal: i32) -> &'static str {
    Signal::try_from(signal).map(Signal::as_str).unwrap_or("unknown signal")
}
