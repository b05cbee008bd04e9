//! `taskfleet list`: the workflows a scheduler knows, newest first, as a table or JSON.

use std::process::ExitCode;

use clap::Args;
use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::Table;
use taskfleet_common::text::printable;
use taskfleet_common::units::format_duration;

use super::ServerArg;

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only workflows in this state: running, succeeded, failed or cancelled.
    #[arg(long)]
    pub state: Option<String>,
    /// Only workflows of this name.
    #[arg(long)]
    pub name: Option<String>,
    /// Only workflows submitted at or after this time (RFC 3339, e.g. 2026-12-01T00:00:00Z).
    #[arg(long)]
    pub since: Option<String>,
    /// The most to list (the newest).
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    #[command(flatten)]
    pub server: ServerArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: ListArgs) -> anyhow::Result<ExitCode> {
    let client = args.server.client();
    let mut filters: Vec<(&str, String)> = Vec::new();
    filters.extend(args.state.clone().map(|state| ("state", state)));
    filters.extend(args.name.clone().map(|name| ("name", name)));
    filters.extend(args.since.clone().map(|since| ("submitted_after", since)));
    // Pages of the API's most, until the limit is reached or nothing follows.
    let mut workflows = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let left = args
            .limit
            .saturating_sub(u32::try_from(workflows.len()).unwrap_or(u32::MAX));
        if left == 0 {
            break;
        }
        let mut query = filters.clone();
        query.push(("limit", left.min(taskfleet_scheduler::api::MAX_LIST_PAGE).to_string()));
        query.extend(cursor.take().map(|cursor| ("cursor", cursor)));
        let page = client.list(&query).await?;
        workflows.extend(page.workflows);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    if args.json {
        super::write_stdout(&(serde_json::to_string_pretty(&workflows)? + "\n"))?;
        return Ok(ExitCode::SUCCESS);
    }
    if workflows.is_empty() {
        super::write_stdout("no workflows\n")?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY);
    table.set_header(["WORKFLOW", "NAME", "STATE", "SUBMITTED", "DURATION"]);
    for workflow in &workflows {
        table.add_row([
            workflow.workflow_id.clone(),
            printable(&workflow.name).into_owned(),
            workflow.state.clone(),
            workflow.submitted_at.clone(),
            workflow
                .duration_ms
                .map(|ms| format_duration(std::time::Duration::from_millis(ms)))
                .unwrap_or_else(|| "running".to_string()),
        ]);
    }
    super::write_stdout(&format!("{table}\n"))?;
    Ok(ExitCode::SUCCESS)
}
