//! `taskfleet scheduler`: the scheduler service — the HTTP API, the scheduling loop over the
//! broker, and the store.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use taskfleet_common::units::{parse_duration, parse_size};
use taskfleet_common::workflow::ValidateOptions;
use taskfleet_engine::engine::EngineConfig;
use taskfleet_engine::policy::{PolicyConfig, PolicyKind};
use taskfleet_scheduler::server::{self, ServerConfig};
use taskfleet_transport::queues::QueueNames;
use tokio::net::TcpListener;

use super::{broker, open_store, shutdown_on_signal};
use crate::settings::{self, set, SchedulerSettings};

#[derive(Debug, Args)]
pub struct SchedulerArgs {
    /// Broker URL [default: amqp://guest:guest@127.0.0.1:5672/%2f].
    #[arg(long, env = "TASKFLEET_BROKER")]
    pub broker: Option<String>,
    /// Store: sqlite://PATH (or a path) [default: sqlite://taskfleet.sqlite].
    #[arg(long, env = "TASKFLEET_DB")]
    pub db: Option<String>,
    /// Address of the HTTP API [default: 127.0.0.1:8080].
    #[arg(long, env = "TASKFLEET_LISTEN")]
    pub listen: Option<String>,
    /// Prefix of queue and exchange names [default: taskfleet].
    #[arg(long, env = "TASKFLEET_PREFIX")]
    pub prefix: Option<String>,
    /// Scheduling policy: fcfs, priority, sjf, srpt, rr, mct, heft or cpop [default: priority].
    #[arg(long, env = "TASKFLEET_POLICY")]
    pub policy: Option<String>,
    /// A worker silent this long loses its running tasks, which run again elsewhere [default: 10s].
    #[arg(long, env = "TASKFLEET_LEASE_TIMEOUT")]
    pub lease_timeout: Option<String>,
    /// Order tasks by runtimes learned from finished attempts instead of declared estimates.
    #[arg(long, env = "TASKFLEET_PREDICTIVE")]
    pub predictive: bool,
    /// Tasks released beyond the fleet's free slots [default: 16].
    #[arg(long, env = "TASKFLEET_PREFETCH_MARGIN")]
    pub prefetch_margin: Option<usize>,
    /// TOML file with any of these settings (kebab-case keys).
    #[arg(long, env = "TASKFLEET_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration and exit.
    #[arg(long)]
    pub dump_config: bool,
}

pub async fn run(args: SchedulerArgs) -> anyhow::Result<ExitCode> {
    let mut settings: SchedulerSettings = settings::load(args.config.as_deref())?;
    set(&mut settings.broker, args.broker);
    set(&mut settings.db, args.db);
    set(&mut settings.listen, args.listen);
    set(&mut settings.prefix, args.prefix);
    set(&mut settings.policy, args.policy);
    set(&mut settings.lease_timeout, args.lease_timeout);
    set(&mut settings.prefetch_margin, args.prefetch_margin);
    if args.predictive {
        settings.predictive = true;
    }
    if args.dump_config {
        super::write_stdout(&settings::dump(&settings)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let policy: PolicyKind = settings
        .policy
        .parse()
        .map_err(anyhow::Error::msg)
        .context("invalid policy")?;
    let lease_timeout = parse_duration(&settings.lease_timeout)
        .map_err(anyhow::Error::msg)
        .context("invalid lease-timeout")?;
    let max_body = parse_size(&settings.max_body)
        .map_err(anyhow::Error::msg)
        .context("invalid max-body")?;
    let duration = |text: &str, what: &str| {
        parse_duration(text)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("invalid {what}"))
    };
    let policy_config = PolicyConfig {
        aging: duration(&settings.aging, "aging")?,
        quantum: duration(&settings.quantum, "quantum")?,
        default_estimate: duration(&settings.default_estimate, "default-estimate")?,
    };
    let config = ServerConfig {
        queues: QueueNames::new(settings.prefix.clone()),
        engine: EngineConfig {
            policy,
            policy_config,
            predictive: settings.predictive,
            prefetch_margin: settings.prefetch_margin,
            ..EngineConfig::default()
        },
        lease_timeout,
        validate: ValidateOptions {
            max_tasks: settings.max_tasks,
            known_handlers: None,
        },
        max_body_bytes: usize::try_from(max_body).unwrap_or(usize::MAX),
    };
    let store = open_store(&settings.db)?;
    let listener = TcpListener::bind(&settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let address = listener.local_addr().context("reading the listening address")?;
    eprintln!("taskfleet scheduler: API on http://{address}");
    let transport = broker(&settings.broker, &config.queues)?;
    server::run(config, store, transport, listener, shutdown_on_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
