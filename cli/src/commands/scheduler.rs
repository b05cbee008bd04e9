//! `taskfleet scheduler`: the scheduler service — the HTTP API, the scheduling loop over the
//! broker, and the store.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use taskfleet_common::units::HumanDuration;
use taskfleet_common::workflow::ValidateOptions;
use taskfleet_engine::engine::EngineConfig;
use taskfleet_engine::packing::{PackingKind, Reservation};
use taskfleet_engine::policy::{PolicyConfig, PolicyKind};
use taskfleet_scheduler::api::auth::Tokens;
use taskfleet_scheduler::server::{self, ServerConfig};
use taskfleet_transport::queues::QueueNames;
use tokio::net::TcpListener;

use super::{broker, open_store, shutdown_on_signal};
use crate::settings::{set, SchedulerSettings, ServiceArgs, StoreUrl};

#[derive(Debug, Args)]
pub struct SchedulerArgs {
    #[command(flatten)]
    pub service: ServiceArgs,
    /// Store: sqlite://PATH (or a path) on one machine, postgres://USER@HOST/DB for a
    /// database schedulers can share, or sqlite::memory:.
    #[arg(long, env = "TASKFLEET_DB")]
    pub db: Option<StoreUrl>,
    /// Address of the HTTP API (IP:port).
    #[arg(long, env = "TASKFLEET_LISTEN")]
    pub listen: Option<SocketAddr>,
    #[arg(long, env = "TASKFLEET_POLICY", help = super::policy_help())]
    pub policy: Option<PolicyKind>,
    /// A worker silent this long loses its running tasks, which run again elsewhere.
    #[arg(long, env = "TASKFLEET_LEASE_TIMEOUT")]
    pub lease_timeout: Option<HumanDuration>,
    /// Order tasks by runtimes learned from finished attempts instead of declared estimates.
    #[arg(long, env = "TASKFLEET_PREDICTIVE")]
    pub predictive: bool,
    /// With --predictive, planned policies follow each workflow's plan worker by worker instead
    /// of ranking by it and placing each task when it is dispatched.
    #[arg(long, env = "TASKFLEET_STATIC_PLANS")]
    pub static_plans: bool,
    /// Planned policies (heft, cpop, min-min, max-min, sufferage): how long a local search may
    /// improve each workflow's plan; 0s keeps the heuristic's plan.
    #[arg(long, env = "TASKFLEET_PLAN_SEARCH")]
    pub plan_search: Option<HumanDuration>,
    /// Tasks released beyond the fleet's free slots.
    #[arg(long, env = "TASKFLEET_PREFETCH_MARGIN")]
    pub prefetch_margin: Option<usize>,
    /// How a task that asks for resources chooses among the workers where it fits:
    /// first-fit, best-fit (the tightest) or spread (the emptiest).
    #[arg(long, env = "TASKFLEET_PACKING")]
    pub packing: Option<PackingKind>,
    /// Reserve capacity for a priority class or tenant, lent to others while idle:
    /// OWNER:RESOURCE=AMOUNT[@POOL], e.g. high:gpu=25% or tenant=acme:memory=64Gi@batch
    /// (repeatable).
    #[arg(long = "reserve", env = "TASKFLEET_RESERVE", value_delimiter = ',')]
    pub reserve: Vec<Reservation>,
    /// This scheduler's name in logs, /readyz and the leader's lease (default: the host
    /// name and process id).
    #[arg(long, env = "TASKFLEET_NAME")]
    pub name: Option<String>,
    /// With a PostgreSQL store shared by several schedulers: how long the leader's lease
    /// lasts unless renewed (every third of it); a standby takes over once it lapses.
    #[arg(long, env = "TASKFLEET_LEADER_LEASE")]
    pub leader_lease: Option<HumanDuration>,
    /// The API's bearer tokens: a file of `NAME SCOPE sha256:HEX` lines (from `taskfleet
    /// token new`), read again on SIGHUP or when it changes. Without one the API serves only
    /// on a loopback address.
    #[arg(long, env = "TASKFLEET_API_TOKENS_FILE")]
    pub api_tokens: Option<std::path::PathBuf>,
}

impl SchedulerArgs {
    /// The settings: defaults, then the file, then these flags and variables; checked.
    pub fn settings(self) -> anyhow::Result<SchedulerSettings> {
        let mut settings: SchedulerSettings = self.service.load()?;
        set(&mut settings.db, self.db);
        set(&mut settings.listen, self.listen);
        set(&mut settings.policy, self.policy);
        set(&mut settings.lease_timeout, self.lease_timeout);
        set(&mut settings.plan_search, self.plan_search);
        set(&mut settings.prefetch_margin, self.prefetch_margin);
        set(&mut settings.packing, self.packing);
        set(&mut settings.leader_lease, self.leader_lease);
        if self.name.is_some() {
            settings.name = self.name;
        }
        if self.api_tokens.is_some() {
            settings.api_tokens = self.api_tokens;
        }
        if !self.reserve.is_empty() {
            settings.reserve = self.reserve;
        }
        settings.predictive |= self.predictive;
        settings.static_plans |= self.static_plans;
        settings.check()?;
        Ok(settings)
    }
}

/// What the service runs with.
fn server_config(settings: &SchedulerSettings) -> ServerConfig {
    ServerConfig {
        queues: QueueNames::new(settings.prefix.0.clone()),
        engine: EngineConfig {
            policy: settings.policy,
            policy_config: PolicyConfig {
                aging: settings.aging.0,
                quantum: settings.quantum.0,
                default_estimate: settings.default_estimate.0,
                plan_search: settings.plan_search.0,
            },
            predictive: settings.predictive,
            dynamic_plans: settings.predictive && !settings.static_plans,
            prefetch_margin: settings.prefetch_margin,
            packing: settings.packing,
            reservations: settings.reserve.clone(),
            ..EngineConfig::default()
        },
        lease_timeout: settings.lease_timeout.0,
        validate: ValidateOptions {
            max_tasks: settings.max_tasks,
            known_handlers: None,
        },
        max_body_bytes: usize::try_from(settings.max_body.0).unwrap_or(usize::MAX),
        name: settings
            .name
            .clone()
            .unwrap_or_else(|| super::host_and_pid("scheduler")),
        leader_lease: settings.leader_lease.0,
        tokens: None,
        metrics: std::sync::Arc::default(),
    }
}

/// The API's tokens, read from the file the settings name; without a file, the API may only
/// listen on a loopback address.
fn api_tokens(settings: &SchedulerSettings) -> anyhow::Result<Option<std::sync::Arc<Tokens>>> {
    let Some(path) = &settings.api_tokens else {
        anyhow::ensure!(
            settings.listen.ip().is_loopback(),
            "refusing to serve the API on {} without tokens: give --api-tokens FILE (lines from \
             `taskfleet token new`), or listen on a loopback address such as 127.0.0.1",
            settings.listen
        );
        tracing::warn!(listen = %settings.listen, "The API has no tokens: anyone on this machine can use it.");
        return Ok(None);
    };
    let tokens = Tokens::load(path).map_err(anyhow::Error::msg)?;
    Ok(Some(std::sync::Arc::new(tokens)))
}

pub async fn run(args: SchedulerArgs) -> anyhow::Result<ExitCode> {
    let dump = args.service.dump_config;
    let Some(settings) = super::unless_dumped(dump, args.settings()?)? else {
        return Ok(ExitCode::SUCCESS);
    };
    let mut config = server_config(&settings);
    config.tokens = api_tokens(&settings)?;
    let store = open_store(&settings.db).await?;
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let address = listener.local_addr().context("reading the listening address")?;
    eprintln!("taskfleet scheduler: API on http://{address}");
    let transport = broker(&settings.broker, &config.queues)?;
    let ran = server::run(
        config,
        store,
        std::sync::Arc::clone(&transport),
        listener,
        shutdown_on_signal(),
    )
    .await;
    transport.finish().await;
    ran?;
    Ok(ExitCode::SUCCESS)
}
