//! `taskfleet logs WF TASK`: the stdout and stderr tails of every attempt of a task, earlier
//! failed attempts included, with how each ended.

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::Args;
use taskfleet_common::api::{AttemptStatus, TaskAttempts};
use taskfleet_common::text::{printable, printable_lines};
use taskfleet_common::units::format_duration;

use super::ServerArg;

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Workflow id, as `submit` printed it.
    pub workflow: String,
    /// Task id, as in the workflow file.
    pub task: String,
    /// Only this attempt (1 for the first).
    #[arg(long)]
    pub attempt: Option<u32>,
    #[command(flatten)]
    pub server: ServerArg,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: LogsArgs) -> anyhow::Result<ExitCode> {
    let mut found = args.server.client().attempts(&args.workflow, &args.task).await?;
    if let Some(wanted) = args.attempt {
        found.attempts.retain(|attempt| attempt.attempt == wanted);
        anyhow::ensure!(
            !found.attempts.is_empty(),
            "task `{}` has no attempt {wanted}",
            printable(&args.task)
        );
    }
    let text = if args.json {
        serde_json::to_string_pretty(&found)? + "\n"
    } else {
        render(&found)
    };
    super::write_stdout(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// Each attempt's heading, then its stdout and stderr tails.
pub(crate) fn render(found: &TaskAttempts) -> String {
    let mut text = String::new();
    if found.attempts.is_empty() {
        let _ = writeln!(
            text,
            "task {} is {} and has not run yet",
            printable(&found.task),
            found.state.as_str()
        );
        return text;
    }
    for attempt in &found.attempts {
        let _ = writeln!(text, "== {} ==", heading(&found.task, attempt));
        for (stream, tail) in [("stdout", &attempt.stdout_tail), ("stderr", &attempt.stderr_tail)] {
            if tail.is_empty() {
                continue;
            }
            let _ = writeln!(text, "-- {stream} (last lines) --");
            text.push_str(&printable_lines(tail));
            if !tail.ends_with('\n') {
                text.push('\n');
            }
        }
    }
    text
}

/// `task load, attempt 2 on w1: failed, exit code 3, after 1.2s (started 2026-...)`.
pub(crate) fn heading(task: &str, attempt: &AttemptStatus) -> String {
    let mut heading = format!("task {}, attempt {}", printable(task), attempt.attempt);
    if let Some(worker) = &attempt.worker {
        let _ = write!(heading, " on {}", printable(worker));
    }
    let ended = match (&attempt.outcome, attempt.exit_code, attempt.signal) {
        (None, _, _) if attempt.started_at.is_some() => "running".to_string(),
        (None, _, _) => "not started".to_string(),
        (Some(outcome), Some(code), _) => format!("{outcome}, exit code {code}"),
        (Some(outcome), None, Some(signal)) => format!("{outcome}, killed by signal {signal}"),
        (Some(outcome), None, None) => outcome.clone(),
    };
    let _ = write!(heading, ": {ended}");
    if let Some(ms) = attempt.duration_ms {
        let _ = write!(
            heading,
            ", after {}",
            format_duration(std::time::Duration::from_millis(ms))
        );
    }
    if let Some(error) = attempt.error.as_deref().filter(|error| !error.is_empty()) {
        let _ = write!(heading, " ({})", printable(error));
    }
    heading
}

#[cfg(test)]
mod tests {
    use taskfleet_common::state::TaskState;

    use super::*;

    fn attempt(n: u32) -> AttemptStatus {
        AttemptStatus {
            attempt: n,
            worker: Some("w1".into()),
            dispatched_at: "2026-12-01T00:00:00.000Z".into(),
            started_at: Some("2026-12-01T00:00:00.100Z".into()),
            finished_at: Some("2026-12-01T00:00:01.300Z".into()),
            duration_ms: Some(1200),
            outcome: Some("failed".into()),
            exit_code: Some(3),
            signal: None,
            error: Some("exited with code 3".into()),
            peak_memory_bytes: None,
            cpu_time_ms: None,
            stdout_tail: "loading rows\n".into(),
            stderr_tail: "boom\x1b[31m\n".into(),
        }
    }

    #[test]
    fn every_attempt_shows_how_it_ended_and_its_tails() {
        let found = TaskAttempts {
            workflow_id: "wf-1".into(),
            task: "load".into(),
            state: TaskState::Failed,
            attempts: vec![attempt(1), attempt(2)],
        };
        let text = render(&found);
        assert!(
            text.contains("== task load, attempt 1 on w1: failed, exit code 3, after 1.2s (exited with code 3) =="),
            "{text}"
        );
        assert!(text.contains("attempt 2"), "{text}");
        assert!(text.contains("-- stdout (last lines) --\nloading rows\n"), "{text}");
        assert!(!text.contains('\x1b'), "control characters are escaped: {text}");
    }

    #[test]
    fn a_task_that_never_ran_says_so() {
        let found = TaskAttempts {
            workflow_id: "wf-1".into(),
            task: "load".into(),
            state: TaskState::Pending,
            attempts: vec![],
        };
        assert_eq!(render(&found), "task load is pending and has not run yet\n");
    }
}
