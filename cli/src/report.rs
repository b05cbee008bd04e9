//! The end-of-run report: per task its final state, attempts, times, worker and exit code,
//! as a table for people (stdout) or as JSON for programs (`--json`).

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::Table;
use serde::Serialize;
use serde_json::value::RawValue;
use taskfleet_common::state::TaskState;
use taskfleet_common::units::format_duration;
use taskfleet_common::{Millis, WorkflowSpec};
use taskfleet_scheduler::store::{Store, StoreError};

/// Most task rows in the table; the JSON report always lists every task.
const MAX_TABLE_ROWS: usize = 50;

/// A finished (or interrupted) run.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub workflow_id: String,
    pub name: String,
    pub state: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<u64>,
    /// Tasks per final state.
    pub counts: BTreeMap<String, usize>,
    pub tasks: Vec<TaskReport>,
}

/// One task's line of the report.
#[derive(Clone, Debug, Serialize)]
pub struct TaskReport {
    pub id: String,
    pub state: TaskState,
    pub attempts: u32,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<u64>,
    pub worker: Option<String>,
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The JSON the task produced, if it succeeded with an output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Box<RawValue>>,
    #[serde(skip)]
    started: Option<Millis>,
    #[serde(skip)]
    finished: Option<Millis>,
}

impl RunReport {
    /// Builds the report from the store.
    pub async fn load(store: &dyn Store, workflow_id: &str, spec: &WorkflowSpec) -> Result<RunReport, StoreError> {
        let workflow = store.workflow(workflow_id).await?;
        let records = store.tasks(workflow_id).await?;
        let attempts = store.attempts(workflow_id).await?;
        let mut tasks: Vec<TaskReport> = records
            .iter()
            .map(|record| TaskReport {
                id: spec
                    .tasks
                    .get(record.task_idx as usize)
                    .map_or_else(|| format!("#{}", record.task_idx), |task| task.id.clone()),
                state: record.state,
                attempts: record.attempt,
                started_at: None,
                finished_at: None,
                duration_ms: None,
                worker: None,
                exit_code: None,
                error: None,
                output: record
                    .output
                    .as_ref()
                    .and_then(|text| RawValue::from_string(text.clone()).ok()),
                started: None,
                finished: None,
            })
            .collect();
        for attempt in attempts {
            let Some(task) = tasks.get_mut(attempt.task_idx as usize) else {
                continue;
            };
            if task.started.is_none() {
                task.started = attempt.started_at;
            }
            if attempt.finished_at.is_some() {
                task.finished = attempt.finished_at;
            }
            task.worker = attempt.worker.or(task.worker.take());
            task.exit_code = attempt.exit_code;
            task.error = attempt.error;
        }
        let mut counts = BTreeMap::new();
        for task in &mut tasks {
            task.started_at = task.started.map(format_time);
            task.finished_at = task.finished.map(format_time);
            task.duration_ms = match (task.started, task.finished) {
                (Some(start), Some(end)) => Some(end.0.saturating_sub(start.0)),
                _ => None,
            };
            *counts.entry(task.state.as_str().to_string()).or_insert(0) += 1;
        }
        let first_start = tasks.iter().filter_map(|task| task.started).min();
        let (state, submitted, finished) = match &workflow {
            Some(record) => (
                record.state.as_str().to_string(),
                Some(record.submitted_at),
                record.finished_at,
            ),
            None => ("unknown".to_string(), None, None),
        };
        let started = submitted.or(first_start);
        Ok(RunReport {
            workflow_id: workflow_id.to_string(),
            name: spec.name.clone(),
            state,
            started_at: started.map(format_time),
            finished_at: finished.map(format_time),
            duration_ms: match (started, finished) {
                (Some(start), Some(end)) => Some(end.0.saturating_sub(start.0)),
                _ => None,
            },
            counts,
            tasks,
        })
    }

    /// The table printed at the end of `taskfleet run`.
    pub fn table(&self) -> String {
        let mut table = Table::new();
        table.load_preset(UTF8_BORDERS_ONLY);
        table.set_header([
            "TASK", "STATE", "ATTEMPTS", "STARTED", "DURATION", "WORKER", "EXIT", "ERROR",
        ]);
        let show_all = self.tasks.len() <= MAX_TABLE_ROWS;
        let shown = self
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
                task.duration_ms
                    .map(|ms| format_duration(Duration::from_millis(ms)))
                    .unwrap_or_default(),
                task.worker.clone().unwrap_or_default(),
                task.exit_code.map(|code| code.to_string()).unwrap_or_default(),
                task.error.as_deref().map(first_line).unwrap_or_default(),
            ]);
        }
        let mut out = table.to_string();
        if n_shown < self.tasks.len() {
            out.push_str(&format!(
                "\n({} more tasks not shown; use --json for all of them)",
                self.tasks.len() - n_shown
            ));
        }
        let counts: Vec<String> = self.counts.iter().map(|(state, n)| format!("{state} {n}")).collect();
        let took = self
            .duration_ms
            .map(|ms| format!(" in {}", format_duration(Duration::from_millis(ms))))
            .unwrap_or_default();
        out.push_str(&format!(
            "\nworkflow {} ({}) {}{took}: {}\n",
            self.name,
            self.workflow_id,
            self.state,
            counts.join(", ")
        ));
        out
    }
}

fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() > 60 {
        format!("{}…", line.chars().take(59).collect::<String>())
    } else {
        line.to_string()
    }
}

fn format_time(at: Millis) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(at.0)).to_string()
}
