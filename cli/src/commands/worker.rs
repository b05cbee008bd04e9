//! `taskfleet worker`: a stateless worker of the fleet. It consumes the task queues of its
//! pools from the broker, runs tasks under their limits, and reports results. SIGTERM drains:
//! running tasks finish and are acked, nothing new is taken.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use taskfleet_common::resources::ResourceSet;
use taskfleet_common::units::{ByteSize, HumanDuration};
use taskfleet_transport::queues::QueueNames;
use taskfleet_worker::limits::{Enforcer, RunAs};
use taskfleet_worker::{HandlerRegistry, Worker, WorkerConfig};

use super::{broker, shutdown_on_signal};
use crate::settings::{set, LimitsMode, ServiceArgs, WorkerSettings};

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
    /// Serve this worker's Prometheus metrics at `/metrics` on this address (IP:port).
    #[arg(long, env = "TASKFLEET_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// How long running tasks may take to finish after SIGTERM.
    #[arg(long, env = "TASKFLEET_DRAIN_TIMEOUT")]
    pub drain_timeout: Option<HumanDuration>,
    /// Time between heartbeats.
    #[arg(long, env = "TASKFLEET_HEARTBEAT_INTERVAL")]
    pub heartbeat_interval: Option<HumanDuration>,
    /// Working directory of task processes (the worker's unless set).
    #[arg(long, env = "TASKFLEET_WORK_DIR")]
    pub work_dir: Option<String>,
    /// How task limits are enforced: auto (cgroups where allowed, else rlimits), rlimit or off.
    #[arg(long, env = "TASKFLEET_LIMITS")]
    pub limits: Option<LimitsMode>,
    /// Where the cgroup hierarchies are mounted.
    #[arg(long, env = "TASKFLEET_CGROUP_ROOT")]
    pub cgroup_root: Option<String>,
    /// The worker's environment variables tasks see; repeat or separate with commas.
    #[arg(long = "env-allow", env = "TASKFLEET_ENV_ALLOW", value_delimiter = ',')]
    pub env_allow: Vec<String>,
    /// Run tasks as this unprivileged user (the worker must run as root), each in a fresh
    /// working directory unless --work-dir is set.
    #[arg(long, env = "TASKFLEET_RUN_AS")]
    pub run_as: Option<String>,
    /// CPUs offered to tasks (what the machine has unless set).
    #[arg(long, env = "TASKFLEET_CPUS")]
    pub cpus: Option<f64>,
    /// Memory offered to tasks, e.g. 16Gi (what the machine or the worker's cgroup has unless set).
    #[arg(long, env = "TASKFLEET_MEMORY")]
    pub memory: Option<ByteSize>,
    /// GPUs offered to tasks (what nvidia-smi reports unless set).
    #[arg(long, env = "TASKFLEET_GPUS")]
    pub gpus: Option<u32>,
    /// A label tasks may select, NAME=VALUE (e.g. arch=arm64); repeat for more.
    #[arg(long = "label", value_name = "NAME=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// A custom resource offered to tasks, NAME=AMOUNT (e.g. licenses=2); repeat for more.
    #[arg(long = "resource", value_name = "NAME=AMOUNT", value_parser = parse_resource)]
    pub resources: Vec<(String, f64)>,
    /// Print what this worker can enforce on tasks (memory, CPU, processes) and how, then exit.
    #[arg(long)]
    pub check: bool,
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
        if self.metrics_listen.is_some() {
            settings.metrics_listen = self.metrics_listen;
        }
        set(&mut settings.drain_timeout, self.drain_timeout);
        set(&mut settings.heartbeat_interval, self.heartbeat_interval);
        set(&mut settings.work_dir, self.work_dir);
        set(&mut settings.limits, self.limits);
        set(&mut settings.cgroup_root, self.cgroup_root);
        if !self.env_allow.is_empty() {
            settings.env_allow = self.env_allow;
        }
        set(&mut settings.run_as, self.run_as);
        set(&mut settings.cpus, self.cpus);
        set(&mut settings.memory, self.memory);
        if self.gpus.is_some() {
            settings.gpus = self.gpus;
        }
        settings.resources.extend(self.resources);
        settings.labels.extend(self.labels);
        if settings.name.is_empty() {
            settings.name = super::host_and_pid("worker");
        }
        settings.check()?;
        Ok(settings)
    }
}

/// How the worker puts tasks under their limits (found once, at start-up).
pub(crate) fn enforcer(mode: LimitsMode, cgroup_root: &str) -> anyhow::Result<Arc<Enforcer>> {
    let enforcer = Enforcer::for_this_binary(mode, Path::new(cgroup_root))
        .context("cannot find the taskfleet binary, which starts tasks under their limits")?;
    Ok(Arc::new(enforcer))
}

/// `NAME=VALUE`, a label of the worker.
fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() && !value.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("`{text}` is not NAME=VALUE (e.g. arch=arm64)")),
    }
}

/// `NAME=AMOUNT`, a custom resource a worker offers.
fn parse_resource(text: &str) -> Result<(String, f64), String> {
    let (name, amount) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not NAME=AMOUNT (e.g. licenses=2)"))?;
    let amount: f64 = amount
        .parse()
        .map_err(|_| format!("`{amount}` is not an amount (in `{text}`)"))?;
    if name.is_empty() || !amount.is_finite() || amount < 0.0 {
        return Err(format!("`{text}` needs a name and a non-negative amount"));
    }
    Ok((name.to_string(), amount))
}

/// What the worker offers: the machine's resources unless the settings say otherwise.
fn capacity(settings: &WorkerSettings) -> ResourceSet {
    let detected = taskfleet_worker::capacity::detect();
    ResourceSet {
        cpu: if settings.cpus > 0.0 {
            settings.cpus
        } else {
            detected.cpu
        },
        memory_bytes: if settings.memory.0 > 0 {
            settings.memory.0
        } else {
            detected.memory_bytes
        },
        gpu: settings.gpus.unwrap_or(detected.gpu),
        custom: settings.resources.clone(),
    }
}

/// The user tasks run as, when one is named.
pub(crate) fn run_as(name: &str) -> anyhow::Result<Option<RunAs>> {
    if name.is_empty() {
        return Ok(None);
    }
    RunAs::lookup(name).map(Some).map_err(anyhow::Error::msg)
}

/// What the worker runs with.
fn worker_config(settings: &WorkerSettings, enforcer: Arc<Enforcer>) -> anyhow::Result<WorkerConfig> {
    Ok(WorkerConfig {
        pools: settings.pools.clone(),
        concurrency: settings.concurrency,
        speed: settings.speed,
        queues: QueueNames::new(settings.prefix.0.clone()),
        kill_grace: settings.kill_grace.0,
        drain_timeout: settings.drain_timeout.0,
        heartbeat_interval: Some(settings.heartbeat_interval.0),
        work_dir: (!settings.work_dir.is_empty()).then(|| PathBuf::from(&settings.work_dir)),
        enforcer: Some(enforcer),
        env_allow: settings.env_allow.clone(),
        run_as: run_as(&settings.run_as)?,
        capacity: Some(capacity(settings)),
        labels: settings.labels.clone(),
        ..WorkerConfig::new(settings.name.clone())
    })
}

/// Serves `metrics` at `GET /metrics` on `address`, in the background.
async fn serve_metrics(
    address: std::net::SocketAddr,
    metrics: Arc<taskfleet_worker::WorkerMetrics>,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot serve metrics on {address}"))?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.encode(),
                )
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::warn!(%error, "The metrics server stopped.");
        }
    });
    eprintln!("taskfleet worker: metrics on http://{bound}/metrics");
    Ok(())
}

pub async fn run(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let (dump, check) = (args.service.dump_config, args.check);
    let Some(settings) = super::unless_dumped(dump, args.settings()?)? else {
        return Ok(ExitCode::SUCCESS);
    };
    let enforcer = enforcer(settings.limits, &settings.cgroup_root)?;
    let report = enforcer.report();
    if check {
        super::write_stdout(&report.to_string())?;
        return Ok(ExitCode::SUCCESS);
    }
    tracing::info!(mechanism = %report.mechanism, "Task limits.");
    let mut config = worker_config(&settings, enforcer)?;
    if let Some(address) = settings.metrics_listen {
        let metrics = Arc::new(taskfleet_worker::WorkerMetrics::new(config.concurrency));
        serve_metrics(address, metrics.clone()).await?;
        config.metrics = Some(metrics);
    }
    let transport = broker(&settings.broker, &config.queues)?;
    eprintln!(
        "taskfleet worker {}: serving pools {} with {} slots, offering {}",
        config.name,
        config.pools.join(","),
        config.concurrency,
        config.capacity.as_ref().map(ResourceSet::describe).unwrap_or_default()
    );
    let worker = Worker::new(
        config,
        Arc::clone(&transport),
        Arc::new(HandlerRegistry::with_builtins()),
    );
    let ran = worker.run(shutdown_on_signal()).await;
    transport.finish().await;
    ran?;
    Ok(ExitCode::SUCCESS)
}
