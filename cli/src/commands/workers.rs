//! `taskfleet workers`: the live fleet, from the workers' heartbeats.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::Table;
use taskfleet_common::units::format_duration;
use taskfleet_scheduler::service::now;

use super::ServerArg;

#[derive(Debug, Args)]
pub struct WorkersArgs {
    #[command(flatten)]
    pub server: ServerArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: WorkersArgs) -> anyhow::Result<ExitCode> {
    let workers = args.server.client().workers().await?;
    if args.json {
        super::write_stdout(&(serde_json::to_string_pretty(&workers)? + "\n"))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY);
    table.set_header([
        "WORKER",
        "POOLS",
        "SLOTS IN USE",
        "SPEED",
        "LAST HEARTBEAT",
        "LEASE LAPSES IN",
        "OFFERS",
        "STATE",
    ]);
    let now = now().0;
    for worker in &workers {
        let ago = Duration::from_millis(now.saturating_sub(worker.last_heartbeat_ms));
        table.add_row([
            worker.name.clone(),
            worker.pools.join(","),
            format!("{}/{}", worker.in_use, worker.slots),
            format!("{}", worker.speed),
            format!("{} ago", format_duration(ago)),
            format_duration(Duration::from_millis(worker.lease_expires_ms.saturating_sub(now))),
            worker
                .capacity
                .as_ref()
                .map(|capacity| capacity.describe())
                .unwrap_or_default(),
            if worker.draining {
                "draining".to_string()
            } else {
                "serving".to_string()
            },
        ]);
    }
    super::write_stdout(&format!("{table}\n{} workers\n", workers.len()))?;
    Ok(ExitCode::SUCCESS)
}
