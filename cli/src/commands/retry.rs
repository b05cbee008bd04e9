//! `taskfleet retry ID [--task T]`: runs a failed or cancelled workflow again from its
//! failures (or one task and what it held up); succeeded tasks do not run again.

use std::process::ExitCode;

use clap::Args;
use taskfleet_common::text::printable;

use super::ServerArg;

#[derive(Debug, Args)]
pub struct RetryArgs {
    /// Workflow id.
    pub id: String,
    /// Retry only this task, with the tasks below it that did not run because of it.
    #[arg(long, value_name = "TASK")]
    pub task: Option<String>,
    #[command(flatten)]
    pub server: ServerArg,
}

pub async fn run(args: RetryArgs) -> anyhow::Result<ExitCode> {
    let answer = args.server.client().retry(&args.id, args.task.as_deref()).await?;
    let tasks: Vec<String> = answer.retried.iter().map(|task| printable(task).into_owned()).collect();
    super::write_stdout(&format!(
        "{} {} (retrying {}: {})\n",
        answer.workflow_id,
        answer.state,
        tasks.len(),
        tasks.join(", ")
    ))?;
    Ok(ExitCode::SUCCESS)
}
