//! `taskfleet submit FILE`: sends a workflow to the scheduler; with `--wait`, follows it to
//! its end with the same progress display, report and exit codes as `taskfleet run`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use taskfleet_common::api::{AttemptStatus, FleetEvent, WorkflowStatus};
use taskfleet_common::state::TaskState;
use taskfleet_engine::records::WorkflowState;
use taskfleet_scheduler::service::WorkflowProgress;

use super::ServerArg;
use crate::client::{ApiClient, ClientError};
use crate::progress::{ProgressDisplay, RunningTasks};
use crate::{EXIT_FAILED, EXIT_INVALID};

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// Workflow file (YAML or JSON).
    pub file: PathBuf,
    #[command(flatten)]
    pub server: ServerArg,
    /// Makes resubmitting return the workflow the first submission created.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Follow the workflow to its end; exit 0 if it succeeded, 1 if not.
    #[arg(long)]
    pub wait: bool,
    /// With --wait, print a JSON report instead of the summary table.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let source = std::fs::read_to_string(&args.file)
        .map_err(|error| anyhow::anyhow!("cannot read {}: {error}", args.file.display()))?;
    let client = args.server.client();
    let answer = match client.submit(source, args.idempotency_key.as_deref()).await {
        Ok(answer) => answer,
        Err(ClientError::Invalid(body)) => {
            eprintln!(
                "{}: {}",
                args.file.display(),
                taskfleet_common::text::printable_lines(&body.error)
            );
            return Ok(ExitCode::from(EXIT_INVALID));
        }
        Err(error) => return Err(error.into()),
    };
    if !args.wait {
        super::write_stdout(&format!("{}\n", answer.workflow_id))?;
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("submitted workflow {}", answer.workflow_id);
    let Some(status) = follow(&client, &answer.workflow_id).await? else {
        let id = &answer.workflow_id;
        eprintln!(
            "interrupted: workflow {id} keeps running on the scheduler; follow it with \
             `taskfleet status {id}`, stop it with `taskfleet cancel {id}`"
        );
        return Ok(ExitCode::from(130));
    };
    let text = if args.json {
        serde_json::to_string_pretty(&status)? + "\n"
    } else {
        let failures = failures(&client, &status).await;
        crate::report::render_table(&status) + &crate::report::render_failures(Some(&status.workflow_id), &failures)
    };
    super::write_stdout(&text)?;
    Ok(if status.state == "succeeded" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    })
}

/// Failed tasks whose output `submit --wait` shows under its table.
const FAILURES_SHOWN: usize = 10;

/// The latest ended attempt of each failed task (the first few), as the API has them; a task
/// whose attempts cannot be read is left out.
async fn failures(client: &ApiClient, status: &WorkflowStatus) -> Vec<(String, AttemptStatus)> {
    let mut failures = Vec::new();
    for task in status
        .tasks
        .iter()
        .filter(|task| task.state == TaskState::Failed)
        .take(FAILURES_SHOWN)
    {
        let Ok(found) = client.attempts(&status.workflow_id, &task.id).await else {
            continue;
        };
        if let Some(latest) = found.attempts.into_iter().rfind(|attempt| attempt.outcome.is_some()) {
            failures.push((task.id.clone(), latest));
        }
    }
    failures
}

/// Polls the workflow until it ends, drawing progress on stderr (with the predicted end and
/// the tasks that decide it); `None` when Ctrl-C stopped the following (not the workflow).
pub(crate) async fn follow(client: &ApiClient, workflow_id: &str) -> anyhow::Result<Option<WorkflowStatus>> {
    let mut display: Option<ProgressDisplay> = None;
    let running = follow_running(client, workflow_id).await;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        // Counts are enough to draw progress; the tasks are read once, at the end.
        let status = client.status_page(workflow_id, 0, None).await?;
        let n_tasks = status.counts.values().sum();
        let display = display.get_or_insert_with(|| ProgressDisplay::new(n_tasks));
        let progress = progress_of(&status);
        let named = running.as_ref().map(Following::line).unwrap_or_default();
        let extra: Vec<String> = [named, eta_line(&status)]
            .into_iter()
            .filter(|part| !part.is_empty())
            .collect();
        display.update_with(&progress, &extra.join(" · "));
        if progress.state.is_terminal() {
            display.finish();
            return Ok(Some(client.status(workflow_id).await?));
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = &mut interrupted => {
                display.finish();
                return Ok(None);
            }
        }
    }
}

/// The tasks of the workflow running now, kept up to date from its event stream in the
/// background (the task ends with the stream); `None` when the scheduler streams no events
/// (a standby), and progress then shows counts only.
async fn follow_running(client: &ApiClient, workflow_id: &str) -> Option<Following> {
    // Subscribed first, then seeded: no start in between is missed.
    let mut stream = client.events(Some(workflow_id)).await.ok()?;
    let first = client
        .status_page(workflow_id, crate::client::STATUS_PAGE, None)
        .await
        .ok()?;
    let seeded = (first.tasks.iter().enumerate())
        .filter(|(_, task)| task.state == TaskState::Running)
        .map(|(idx, task)| (idx as u32, task.id.clone()));
    let running = Arc::new(Mutex::new(RunningTasks::with(seeded)));
    let shared = running.clone();
    let workflow_id = workflow_id.to_string();
    let task = tokio::spawn(async move {
        while let Ok(Some(event)) = stream.next().await {
            let mut running = shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match serde_json::from_str::<FleetEvent>(&event.data) {
                Ok(event) => running.apply(&workflow_id, &event),
                // Behind: what ended meanwhile is unknown; names come back as tasks start.
                Err(_) if event.name == "lagged" => running.clear(),
                Err(_) => {}
            }
        }
    });
    Some(Following { running, task })
}

/// The running tasks, followed until dropped.
struct Following {
    running: Arc<Mutex<RunningTasks>>,
    task: tokio::task::JoinHandle<()>,
}

impl Following {
    fn line(&self) -> String {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .line()
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `ETA 12s (p90 20s), critical: load, join`, when the scheduler predicts the end.
fn eta_line(status: &WorkflowStatus) -> String {
    let Some(eta) = &status.eta else {
        return String::new();
    };
    let seconds = |ms: u64| taskfleet_common::units::format_duration(Duration::from_secs(ms.div_ceil(1000)));
    let mut line = format!("ETA {} (p90 {})", seconds(eta.p50_in_ms), seconds(eta.p90_in_ms));
    let critical: Vec<&str> = eta
        .critical_tasks
        .iter()
        .take(3)
        .map(|(task, _)| task.as_str())
        .collect();
    if !critical.is_empty() {
        line.push_str(&format!(", critical: {}", critical.join(", ")));
    }
    line
}

/// The counts of a status, in the form the progress display takes.
fn progress_of(status: &WorkflowStatus) -> WorkflowProgress {
    let mut counts = [0; TaskState::ALL.len()];
    for state in TaskState::ALL {
        counts[state as usize] = status.counts.get(state.as_str()).copied().unwrap_or(0);
    }
    WorkflowProgress {
        state: WorkflowState::parse(&status.state).unwrap_or(WorkflowState::Running),
        counts,
        // The progress display shows counts only; running tasks come from the event stream.
        lent: Vec::new(),
        running: Vec::new(),
    }
}
