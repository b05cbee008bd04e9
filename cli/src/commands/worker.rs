//! `taskfleet worker`: a stateless worker of the fleet. It consumes the task queues of its
//! pools from the broker, runs tasks under their limits, and reports results. SIGTERM drains:
//! running tasks finish and are acked, nothing new is taken.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use taskfleet_common::units::HumanDuration;
use taskfleet_transport::queues::QueueNames;
use taskfleet_worker::{HandlerRegistry, Worker, WorkerConfig};

use super::{broker, shutdown_on_signal};
use crate::settings::{set, ServiceArgs, WorkerSettings};

#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub service: ServiceArgs,
    /// Pools to serve; repeat or separate with commas.
    #[arg(long = "pool", env = "TASKFLEET_POOLS", value_delimiter = ',')]
    pub pools: Vec<String>,
    /// Tasks run at once (the number of CPUs unless set).
    #[arg(long, env = "TASKFLEET_CONCURRENCY")]
    pub concurrency: Option<usize>,
    /// Relative speed, for placement-aware policies: a task estimated at 10s is expected to
    /// take 5s on a worker of speed 2.
    #[arg(long, env = "TASKFLEET_SPEED")]
    pub speed: Option<f64>,
    /// Name in heartbeats and results (`<hostname>-<pid>` unless set).
    #[arg(long, env = "TASKFLEET_WORKER_NAME")]
    pub name: Option<String>,
    /// How long running tasks may take to finish after SIGTERM.
    #[arg(long, env = "TASKFLEET_DRAIN_TIMEOUT")]
    pub drain_timeout: Option<HumanDuration>,
    /// Time between heartbeats.
    #[arg(long, env = "TASKFLEET_HEARTBEAT_INTERVAL")]
    pub heartbeat_interval: Option<HumanDuration>,
    /// Working directory of task processes (the worker's unless set).
    #[arg(long, env = "TASKFLEET_WORK_DIR")]
    pub work_dir: Option<String>,
}

impl WorkerArgs {
    /// The settings: defaults, then the file, then these flags and variables; checked.
    pub fn settings(self) -> anyhow::Result<WorkerSettings> {
        let mut settings: WorkerSettings = self.service.load()?;
        if !self.pools.is_empty() {
            settings.pools = self.pools;
        }
        set(&mut settings.concurrency, self.concurrency);
        set(&mut settings.speed, self.speed);
        set(&mut settings.name, self.name);
        set(&mut settings.drain_timeout, self.drain_timeout);
        set(&mut settings.heartbeat_interval, self.heartbeat_interval);
        set(&mut settings.work_dir, self.work_dir);
        if settings.name.is_empty() {
            let host = nix::unistd::gethostname()
                .ok()
                .and_then(|name| name.into_string().ok())
                .unwrap_or_else(|| "worker".into());
            settings.name = format!("{host}-{}", std::process::id());
        }
        settings.check()?;
        Ok(settings)
    }
}

/// What the worker runs with.
fn worker_config(settings: &WorkerSettings) -> WorkerConfig {
    WorkerConfig {
        pools: settings.pools.clone(),
        concurrency: settings.concurrency,
        speed: settings.speed,
        queues: QueueNames::new(settings.prefix.0.clone()),
        kill_grace: settings.kill_grace.0,
        drain_timeout: settings.drain_timeout.0,
        heartbeat_interval: Some(settings.heartbeat_interval.0),
        work_dir: (!settings.work_dir.is_empty()).then(|| PathBuf::from(&settings.work_dir)),
        ..WorkerConfig::new(settings.name.clone())
    }
}

pub async fn run(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let dump = args.service.dump_config;
    let Some(settings) = super::unless_dumped(dump, args.settings()?)? else {
        return Ok(ExitCode::SUCCESS);
    };
    let config = worker_config(&settings);
    let transport = broker(&settings.broker, &config.queues);
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
