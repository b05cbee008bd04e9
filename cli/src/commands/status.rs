//! `taskfleet status ID`: a workflow's state and its tasks, as a table or JSON.

use std::process::ExitCode;

use clap::Args;

use super::ServerArg;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Workflow id, as `submit` printed it.
    pub id: String,
    #[command(flatten)]
    pub server: ServerArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let status = args.server.client().status(&args.id).await?;
    let text = if args.json {
        serde_json::to_string_pretty(&status)? + "\n"
    } else {
        crate::report::render_table(&status)
    };
    super::write_stdout(&text)?;
    Ok(ExitCode::SUCCESS)
}
