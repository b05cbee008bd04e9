//! `taskfleet validate FILE`: every problem (exit 2), or the workflow's shape (exit 0).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use taskfleet_common::units::format_duration;
use taskfleet_common::workflow::{ValidateOptions, DEFAULT_MAX_TASKS};

use super::{load_workflow, LoadError};
use crate::EXIT_INVALID;

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Workflow file (YAML or JSON).
    pub file: PathBuf,
    /// Accept any handler name, not just the built-in ones (for fleets with custom handlers).
    #[arg(long)]
    pub any_handler: bool,
    /// Most tasks a workflow may have.
    #[arg(long, default_value_t = DEFAULT_MAX_TASKS)]
    pub max_tasks: usize,
}

pub fn run(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let options = if args.any_handler {
        ValidateOptions {
            max_tasks: args.max_tasks,
            known_handlers: None,
        }
    } else {
        super::builtin_options(args.max_tasks)
    };
    let spec = match load_workflow(&args.file, &options) {
        Ok((_, spec)) => spec,
        Err(LoadError::Invalid) => return Ok(ExitCode::from(EXIT_INVALID)),
        Err(LoadError::Unreadable(message)) => anyhow::bail!(message),
    };
    let summary = spec.summary();
    println!("workflow {}: valid", spec.name);
    println!("  tasks:          {}", summary.n_tasks);
    println!("  dependencies:   {}", summary.n_edges);
    println!("  roots:          {}", summary.n_roots);
    println!("  depth:          {}", summary.depth);
    let path = if summary.critical_path.len() > 12 {
        let head = summary.critical_path[..5].join(" -> ");
        let tail = summary.critical_path[summary.critical_path.len() - 5..].join(" -> ");
        format!("{head} -> … ({} more) … -> {tail}", summary.critical_path.len() - 10)
    } else {
        summary.critical_path.join(" -> ")
    };
    println!(
        "  critical path:  {} ({})",
        format_duration(summary.critical_path_length),
        path
    );
    if summary.n_without_estimate > 0 {
        println!(
            "                  ({} tasks without an estimate count as 0s)",
            summary.n_without_estimate
        );
    }
    Ok(ExitCode::SUCCESS)
}
