//! `taskfleet cancel ID`: cancels a workflow; its running tasks are stopped on their workers.

use std::process::ExitCode;

use clap::Args;

use super::ServerArg;

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// Workflow id.
    pub id: String,
    #[command(flatten)]
    pub server: ServerArg,
}

pub async fn run(args: CancelArgs) -> anyhow::Result<ExitCode> {
    let answer = args.server.client().cancel(&args.id).await?;
    super::write_stdout(&format!("{} {}\n", answer.workflow_id, answer.state))?;
    Ok(ExitCode::SUCCESS)
}
