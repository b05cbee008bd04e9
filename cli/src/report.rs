//! The end-of-run report: per task its final state, attempts, times, worker (marked `lent`
//! when it runs on capacity reserved for others), exit code, why it failed and what it used (and,
//! while a workflow runs, what its unfinished tasks are expected to take), as a table for
//! people (stdout); `--json` prints the [`WorkflowStatus`] itself.

use std::time::Duration;

use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::Table;
use taskfleet_common::api::WorkflowStatus;
use taskfleet_common::state::TaskState;
use taskfleet_common::text::printable;
use taskfleet_common::units::{format_bytes, format_duration};

/// Most task rows in the table; the JSON report always lists every task.
const MAX_TABLE_ROWS: usize = 50;

/// Lines of each output tail shown under a failed run's table.
const TAIL_LINES: usize = 10;

/// How each failed task's latest attempt ended, with the last lines it wrote to stderr and
/// stdout; with `logs_of`, a workflow on a scheduler, how to see every attempt's output.
pub fn render_failures(logs_of: Option<&str>, failures: &[(String, taskfleet_common::api::AttemptStatus)]) -> String {
    use std::fmt::Write as _;
    let mut text = String::new();
    for (task, attempt) in failures {
        let _ = writeln!(text, "\n{}", crate::commands::logs::heading(task, attempt));
        for (stream, tail) in [("stderr", &attempt.stderr_tail), ("stdout", &attempt.stdout_tail)] {
            let lines: Vec<&str> = tail.lines().collect();
            if lines.is_empty() {
                continue;
            }
            let shown = &lines[lines.len().saturating_sub(TAIL_LINES)..];
            let _ = writeln!(text, "  {stream}:");
            for line in shown {
                let _ = writeln!(text, "    {}", printable(line));
            }
        }
    }
    if let Some(workflow_id) = logs_of.filter(|_| !failures.is_empty()) {
        let _ = writeln!(text, "\nevery attempt's output: taskfleet logs {workflow_id} TASK");
    }
    text
}

/// The table printed at the end of `taskfleet run` and by `taskfleet status`.
pub fn render_table(status: &WorkflowStatus) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY);
    table.set_header([
        "TASK",
        "STATE",
        "ATTEMPTS",
        "STARTED",
        "DURATION",
        "PREDICTED",
        "WORKER",
        "EXIT",
        "REASON",
        "PEAK MEM",
        "CPU",
        "ERROR",
    ]);
    let now = std::time::SystemTime::now();
    let show_all = status.tasks.len() <= MAX_TABLE_ROWS;
    let shown = status
        .tasks
        .iter()
        .filter(|task| show_all || task.state != TaskState::Succeeded)
        .take(MAX_TABLE_ROWS);
    let mut n_shown = 0;
    for task in shown {
        n_shown += 1;
        table.add_row([
            task.id.clone(),
            task.state.to_string(),
            task.attempts.to_string(),
            task.started_at.clone().unwrap_or_default(),
            match (task.duration_ms, task.started_at.as_deref()) {
                (Some(ms), _) => format_duration(Duration::from_millis(ms)),
                // Running: how long so far.
                (None, Some(started)) => humantime::parse_rfc3339_weak(started)
                    .ok()
                    .and_then(|started| now.duration_since(started).ok())
                    .map(|elapsed| format!("{} so far", format_duration(Duration::from_secs(elapsed.as_secs()))))
                    .unwrap_or_default(),
                (None, None) => String::new(),
            },
            // Not ended yet: what it is expected to take, in all.
            match (&task.expected, task.duration_ms) {
                (Some(expected), None) => format!(
                    "~{} (p90 {})",
                    format_duration(Duration::from_millis(expected.p50_ms)),
                    format_duration(Duration::from_millis(expected.p90_ms))
                ),
                _ => String::new(),
            },
            {
                let worker = printable(task.worker.as_deref().unwrap_or_default()).into_owned();
                // On capacity reserved for others: the first to make way for them.
                if task.lent {
                    format!("{worker} (lent)")
                } else {
                    worker
                }
            },
            task.exit_code.map(|code| code.to_string()).unwrap_or_default(),
            task.reason.clone().unwrap_or_default(),
            task.peak_memory_bytes.map(format_bytes).unwrap_or_default(),
            task.cpu_time_ms
                .map(|ms| format_duration(Duration::from_millis(ms)))
                .unwrap_or_default(),
            task.error.as_deref().map(first_line).unwrap_or_default(),
        ]);
    }
    let mut out = table.to_string();
    if n_shown < status.tasks.len() {
        let n_hidden = status.tasks.len() - n_shown;
        out.push_str(&format!(
            "\n({n_hidden} more tasks not shown; use --json for all of them)"
        ));
    }
    // Why tasks cannot start (no live worker serves their pool, none could ever fit them),
    // once per reason.
    let mut waiting: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for task in &status.tasks {
        if let Some(why) = task.waiting.as_deref() {
            *waiting.entry(why).or_default() += 1;
        }
    }
    for (why, n) in waiting {
        let tasks = if n == 1 { "task" } else { "tasks" };
        out.push_str(&format!("\nwarning: {n} {tasks} cannot start: {}", printable(why)));
    }
    let counts: Vec<String> = status.counts.iter().map(|(state, n)| format!("{state} {n}")).collect();
    let took = status
        .duration_ms
        .map(|ms| format!(" in {}", format_duration(Duration::from_millis(ms))))
        .unwrap_or_default();
    if let Some(eta) = &status.eta {
        let critical: Vec<String> = eta
            .critical_tasks
            .iter()
            .map(|(task, share)| format!("{task} {:.0}%", share * 100.0))
            .collect();
        out.push_str(&format!(
            "\npredicted end: p50 in {}, p90 in {} (critical: {})",
            format_duration(Duration::from_millis(eta.p50_in_ms)),
            format_duration(Duration::from_millis(eta.p90_in_ms)),
            critical.join(", ")
        ));
    }
    out.push_str(&format!(
        "\nworkflow {} ({}) {}{took}: {}\n",
        printable(&status.name),
        status.workflow_id,
        status.state,
        counts.join(", ")
    ));
    out
}

/// The first line of a task's error, short, with control characters (a task's own output
/// may hold escapes) made visible.
fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    let line = printable(line);
    if line.chars().count() > 60 {
        format!("{}…", line.chars().take(59).collect::<String>())
    } else {
        line.to_string()
    }
}

#[cfg(test)]
mod tests {
    use taskfleet_common::api::TaskStatus;

    use super::*;

    #[test]
    fn a_task_on_lent_capacity_is_marked_beside_its_worker() {
        let task = |id: &str, lent: bool| {
            let mut task: TaskStatus = serde_json::from_value(serde_json::json!({
                "id": id, "state": "running", "attempts": 1, "worker": "gpu-1",
            }))
            .unwrap();
            task.lent = lent;
            task
        };
        let mut status: WorkflowStatus = serde_json::from_value(serde_json::json!({
            "workflow_id": "w", "name": "w", "state": "running", "started_at": null,
            "finished_at": null, "duration_ms": null, "counts": {}, "tasks": [],
        }))
        .unwrap();
        status.tasks = vec![task("borrower", true), task("owner", false)];
        let table = render_table(&status);
        let line = |id: &str| table.lines().find(|line| line.contains(id)).unwrap().to_string();
        assert!(line("borrower").contains("gpu-1 (lent)"), "{table}");
        assert!(!line("owner").contains("(lent)"), "{table}");
    }
}
