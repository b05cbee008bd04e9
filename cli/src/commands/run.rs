//! `taskfleet run FILE`: runs a workflow on this machine with live progress, then prints a
//! summary table (or, with `--json`, a machine-readable report).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use taskfleet_common::workflow::DEFAULT_MAX_TASKS;
use taskfleet_engine::policy::PolicyKind;
use taskfleet_engine::records::WorkflowState;
use tokio_util::sync::CancellationToken;

use super::{load_workflow, LoadError};
use crate::embedded::{run_workflow, EmbeddedOptions};
use crate::progress::ProgressDisplay;
use crate::settings::{LimitsMode, DEFAULT_CGROUP_ROOT};
use crate::{EXIT_FAILED, EXIT_INVALID};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Workflow file (YAML or JSON).
    pub file: PathBuf,
    /// Local workers, one task at a time each [default: number of CPUs].
    #[arg(long, short = 'w', value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,
    #[arg(long, default_value_t = PolicyKind::Fcfs, help = super::policy_help())]
    pub policy: PolicyKind,
    /// SQLite database keeping the run's state; running the same file again resumes it.
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Order tasks by runtimes learned from earlier runs in the same --db, not by estimates.
    #[arg(long)]
    pub predictive: bool,
    /// Print a JSON report on stdout instead of the summary table.
    #[arg(long)]
    pub json: bool,
    /// Most tasks a workflow may have.
    #[arg(long, default_value_t = DEFAULT_MAX_TASKS)]
    pub max_tasks: usize,
    /// How task limits are enforced: auto (cgroups where allowed, else rlimits), rlimit or off.
    #[arg(long, env = "TASKFLEET_LIMITS", default_value_t = LimitsMode::Auto)]
    pub limits: LimitsMode,
    /// Where the cgroup hierarchies are mounted.
    #[arg(long, env = "TASKFLEET_CGROUP_ROOT", default_value = DEFAULT_CGROUP_ROOT)]
    pub cgroup_root: String,
    /// Run tasks as this unprivileged user (when run as root).
    #[arg(long, env = "TASKFLEET_RUN_AS")]
    pub run_as: Option<String>,
}

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let (source, spec) = match load_workflow(&args.file, &super::builtin_options(args.max_tasks)) {
        Ok(loaded) => loaded,
        Err(LoadError::Invalid) => return Ok(ExitCode::from(EXIT_INVALID)),
        Err(LoadError::Unreadable(message)) => anyhow::bail!(message),
    };
    let mut options = EmbeddedOptions {
        policy: args.policy,
        db: args.db.clone(),
        predictive: args.predictive,
        enforcer: Some(super::worker::enforcer(args.limits, &args.cgroup_root)?),
        run_as: super::worker::run_as(args.run_as.as_deref().unwrap_or_default())?,
        ..EmbeddedOptions::default()
    };
    if let Some(workers) = args.workers {
        options.workers = usize::from(workers);
    }
    options.work_dir = args
        .file
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(PathBuf::from);
    let interrupt = CancellationToken::new();
    let on_signal = interrupt.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.cancel();
        }
    });

    let display = ProgressDisplay::new(spec.tasks.len());
    let spec = Arc::new(spec);
    let outcome = run_workflow(
        &source,
        spec,
        &options,
        |progress, running| display.update_with(progress, &running.line()),
        interrupt.clone(),
    )
    .await;
    display.finish();
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(error) => {
            eprintln!(
                "error: {}",
                taskfleet_common::text::printable_lines(&format!("{error:#}"))
            );
            return Ok(ExitCode::from(EXIT_FAILED));
        }
    };
    if let Some(n_done) = outcome.resumed_with {
        eprintln!(
            "resumed workflow {} with {n_done} of {} tasks already finished",
            outcome.workflow_id,
            outcome.report.tasks.len()
        );
    }
    let text = if args.json {
        serde_json::to_string_pretty(&outcome.report)? + "\n"
    } else {
        crate::report::render_table(&outcome.report) + &crate::report::render_failures(None, &outcome.failures)
    };
    super::write_stdout(&text)?;
    if interrupt.is_cancelled() && !outcome.state.is_terminal() {
        match &args.db {
            Some(db) => eprintln!(
                "interrupted: run the same command again to resume from {}",
                db.display()
            ),
            None => eprintln!("interrupted: use --db FILE to make a run resumable"),
        }
        return Ok(ExitCode::from(130));
    }
    Ok(match outcome.state {
        WorkflowState::Succeeded => ExitCode::SUCCESS,
        _ => ExitCode::from(EXIT_FAILED),
    })
}
