//! `taskfleet worker`: a stateless worker of the fleet. It consumes the task queues of its
//! pools from the broker, runs tasks under their limits, and reports results. SIGTERM drains:
//! running tasks finish and are acked, nothing new is taken.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use taskfleet_common::units::parse_duration;
use taskfleet_common::wire::{is_valid_worker_name, MAX_WORKER_SLOTS, WORKER_NAME_RULE};
use taskfleet_engine::fleet::{MAX_SPEED, MIN_SPEED};
use taskfleet_transport::queues::QueueNames;
use taskfleet_worker::{HandlerRegistry, Worker, WorkerConfig};

use super::{broker, shutdown_on_signal};
use crate::settings::{self, set, WorkerSettings};

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Broker URL [default: amqp://guest:guest@127.0.0.1:5672/%2f].
    #[arg(long, env = "TASKFLEET_BROKER")]
    pub broker: Option<String>,
    /// Prefix of queue and exchange names [default: taskfleet].
    #[arg(long, env = "TASKFLEET_PREFIX")]
    pub prefix: Option<String>,
    /// Pools to serve; repeat or separate with commas [default: default].
    #[arg(long = "pool", env = "TASKFLEET_POOLS", value_delimiter = ',')]
    pub pools: Vec<String>,
    /// Tasks run at once [default: number of CPUs].
    #[arg(long, env = "TASKFLEET_CONCURRENCY")]
    pub concurrency: Option<usize>,
    /// Relative speed, for placement-aware policies: a task estimated at 10s is expected to
    /// take 5s on a worker of speed 2 [default: 1].
    #[arg(long, env = "TASKFLEET_SPEED")]
    pub speed: Option<f64>,
    /// Name in heartbeats and results [default: <hostname>-<pid>].
    #[arg(long, env = "TASKFLEET_WORKER_NAME")]
    pub name: Option<String>,
    /// How long running tasks may take to finish after SIGTERM [default: 30s].
    #[arg(long, env = "TASKFLEET_DRAIN_TIMEOUT")]
    pub drain_timeout: Option<String>,
    /// Time between heartbeats [default: 1s].
    #[arg(long, env = "TASKFLEET_HEARTBEAT_INTERVAL")]
    pub heartbeat_interval: Option<String>,
    /// Working directory of task processes [default: the worker's].
    #[arg(long, env = "TASKFLEET_WORK_DIR")]
    pub work_dir: Option<String>,
    /// TOML file with any of these settings (kebab-case keys).
    #[arg(long, env = "TASKFLEET_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration and exit.
    #[arg(long)]
    pub dump_config: bool,
}

pub async fn run(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let mut settings: WorkerSettings = settings::load(args.config.as_deref())?;
    set(&mut settings.broker, args.broker);
    set(&mut settings.prefix, args.prefix);
    if !args.pools.is_empty() {
        settings.pools = args.pools;
    }
    set(&mut settings.concurrency, args.concurrency);
    set(&mut settings.speed, args.speed);
    set(&mut settings.name, args.name);
    set(&mut settings.drain_timeout, args.drain_timeout);
    set(&mut settings.heartbeat_interval, args.heartbeat_interval);
    set(&mut settings.work_dir, args.work_dir);
    if settings.name.is_empty() {
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|name| name.into_string().ok())
            .unwrap_or_else(|| "worker".into());
        settings.name = format!("{host}-{}", std::process::id());
    }
    if args.dump_config {
        super::write_stdout(&settings::dump(&settings)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let duration = |text: &str, what: &str| {
        parse_duration(text)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("invalid {what}"))
    };
    let queues = QueueNames::new(settings.prefix.clone());
    let mut config = WorkerConfig::new(settings.name.clone());
    config.pools = settings.pools.clone();
    config.concurrency = settings.concurrency;
    config.speed = settings.speed;
    config.queues = queues.clone();
    config.kill_grace = duration(&settings.kill_grace, "kill-grace")?;
    config.drain_timeout = duration(&settings.drain_timeout, "drain-timeout")?;
    config.heartbeat_interval = Some(duration(&settings.heartbeat_interval, "heartbeat-interval")?);
    config.work_dir = (!settings.work_dir.is_empty()).then(|| PathBuf::from(&settings.work_dir));
    anyhow::ensure!(
        (1..=MAX_WORKER_SLOTS as usize).contains(&config.concurrency),
        "concurrency must be from 1 to {MAX_WORKER_SLOTS}, not {}",
        config.concurrency
    );
    anyhow::ensure!(
        is_valid_worker_name(&config.name),
        "invalid worker name {:?}: {WORKER_NAME_RULE}",
        config.name
    );
    anyhow::ensure!(
        config.speed.is_finite() && config.speed > 0.0,
        "speed must be a positive number, not {}",
        config.speed
    );
    anyhow::ensure!(
        (MIN_SPEED..=MAX_SPEED).contains(&config.speed),
        "speed must be from {MIN_SPEED} to {MAX_SPEED}, not {}",
        config.speed
    );

    let transport = broker(&settings.broker, &queues)?;
    eprintln!(
        "taskfleet worker {}: serving pools {} with {} slots",
        config.name,
        config.pools.join(","),
        config.concurrency
    );
    let worker = Worker::new(
        config,
        Arc::clone(&transport),
        Arc::new(HandlerRegistry::with_builtins()),
    );
    worker.run(shutdown_on_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
