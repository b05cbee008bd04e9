//! `taskfleet bench`: measures this machine, each figure next to a baseline measured in the
//! same run. The embedded and whole-process benchmarks always run; the fleet benchmark runs
//! with `--broker`.

mod embedded;
mod fleet;
mod listing;
mod mapping;
mod policies;
mod process;
mod spawn;
mod training;

use std::sync::Arc;

use std::process::ExitCode;
use taskfleet_scheduler::store::{PostgresStore, SqliteStore};

use anyhow::Context as _;
use clap::Args;

pub use embedded::layered_dag_json;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Tasks in the layered DAG of the load benchmark (0 skips it).
    #[arg(long, default_value_t = 1_000_000)]
    pub load_tasks: usize,
    /// Independent `noop` tasks in the embedded throughput benchmark (0 skips it).
    #[arg(long, default_value_t = 100_000)]
    pub noop_tasks: usize,
    /// Local workers for the embedded throughput benchmark [default: number of CPUs].
    #[arg(long)]
    pub workers: Option<usize>,
    /// Tasks in the layered DAG that `taskfleet run` runs as a whole process (0 skips it).
    #[arg(long, default_value_t = 100_000)]
    pub process_tasks: usize,
    /// Local workers of the whole-process benchmark.
    #[arg(long, default_value_t = 4)]
    pub process_workers: usize,
    /// Broker URL: also benchmark the fleet (scheduler and workers over RabbitMQ, `amqp://…`,
    /// or Kafka, `kafka://…`).
    #[arg(long)]
    pub broker: Option<String>,
    /// Tasks per run of the fleet benchmark.
    #[arg(long, default_value_t = 20_000)]
    pub fleet_tasks: usize,
    /// Workers of the fleet benchmark.
    #[arg(long, default_value_t = 2)]
    pub fleet_workers: usize,
    /// Slots per worker in the fleet benchmark.
    #[arg(long, default_value_t = 50)]
    pub fleet_concurrency: usize,
    /// The scheduler's policy in the fleet benchmark.
    #[arg(long, default_value = "fcfs")]
    pub fleet_policy: taskfleet_engine::policy::PolicyKind,
    /// Single-task workflows timed one after the other for the idle latency.
    #[arg(long, default_value_t = 200)]
    pub single_task_runs: usize,
    /// Ready tasks in the policy benchmark (0 skips it).
    #[arg(long, default_value_t = 100_000)]
    pub policy_tasks: usize,
    /// Tasks in the placement benchmark: decisions, and a layered DAG simulated (0 skips it).
    #[arg(long, default_value_t = 100_000)]
    pub placement_tasks: usize,
    /// Workers in the placement benchmark.
    #[arg(long, default_value_t = 1_000)]
    pub placement_workers: usize,
    /// Ready tasks the batch heuristics map onto the placement benchmark's workers (0 skips it).
    #[arg(long, default_value_t = 100_000)]
    pub batch_tasks: usize,
    /// Earlier runs the training benchmark feeds the predictor (0 skips it).
    #[arg(long, default_value_t = 10)]
    pub train_runs: usize,
    /// Tasks of the workflow of the training benchmark.
    #[arg(long, default_value_t = 10_000)]
    pub train_tasks: usize,
    /// Tasks of each ETC instance in the mapping-quality benchmark (0 skips it).
    #[arg(long, default_value_t = 512)]
    pub etc_tasks: usize,
    /// Machines of each ETC instance.
    #[arg(long, default_value_t = 16)]
    pub etc_machines: usize,
    /// ETC instances per class.
    #[arg(long, default_value_t = 1)]
    pub etc_seeds: u64,
    /// Local-search budget of the planned policies in the mapping-quality benchmark.
    #[arg(long, default_value = "200ms", value_parser = taskfleet_common::units::parse_duration)]
    pub etc_search: std::time::Duration,
    /// A PostgreSQL database (postgres://USER@HOST/DB): also load the workflow into it and
    /// run the fleet benchmark on it, beside SQLite. Its rows are deleted afterwards.
    #[arg(long)]
    pub postgres: Option<String>,
    /// Attempts of `true` in the worker-overhead benchmark, limits on and off (0 skips it).
    #[arg(long, default_value_t = 500)]
    pub spawn_tasks: usize,
    /// Workflows listed, page by page, through `GET /v1/workflows` (0 skips it).
    #[arg(long, default_value_t = 10_000)]
    pub list_workflows: usize,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    if args.load_tasks > 0 {
        embedded::bench_load(
            args.load_tasks,
            &scratch.path().join("load.sqlite"),
            args.postgres.as_deref(),
        )
        .await?;
    }
    if args.noop_tasks > 0 {
        let workers = args
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from));
        embedded::bench_throughput(args.noop_tasks, workers, &scratch.path().join("noop.sqlite")).await?;
    }
    if args.process_tasks > 0 {
        process::bench_process(args.process_tasks, args.process_workers, scratch.path())?;
    }
    if args.spawn_tasks > 0 {
        spawn::bench_spawn(
            args.spawn_tasks,
            std::path::Path::new(crate::settings::DEFAULT_CGROUP_ROOT),
        )
        .await?;
    }
    if args.policy_tasks > 0 {
        policies::bench_policies(args.policy_tasks, 100);
    }
    if args.placement_tasks > 0 {
        policies::bench_placement(args.placement_tasks, args.placement_workers)?;
    }
    if args.batch_tasks > 0 {
        mapping::bench_batch_rate(args.batch_tasks, args.placement_workers)?;
    }
    if args.train_runs > 0 && args.train_tasks > 0 {
        training::bench_training(args.train_runs, args.train_tasks)?;
    }
    if args.etc_tasks > 0 {
        mapping::bench_etc(args.etc_tasks, args.etc_machines, args.etc_seeds, args.etc_search)?;
    }
    if args.list_workflows > 0 {
        let sqlite = SqliteStore::open(&scratch.path().join("listing.sqlite"))?;
        listing::bench_listing(Arc::new(sqlite), "SQLite store on a file", args.list_workflows).await?;
        if let Some(url) = &args.postgres {
            let postgres = PostgresStore::connect(url).await?;
            listing::bench_listing(Arc::new(postgres), "PostgreSQL store", args.list_workflows).await?;
        }
    }
    if let Some(broker) = &args.broker {
        let options = fleet::FleetBench {
            url: broker.clone(),
            n_tasks: args.fleet_tasks,
            n_workers: args.fleet_workers,
            concurrency: args.fleet_concurrency,
            n_single: args.single_task_runs,
            policy: args.fleet_policy,
        };
        let sqlite = SqliteStore::open(&scratch.path().join("fleet.sqlite"))?;
        fleet::bench_fleet(&options, Arc::new(sqlite), "SQLite store on a file").await?;
        if let Some(url) = &args.postgres {
            let postgres = PostgresStore::connect(url).await?;
            fleet::bench_fleet(&options, Arc::new(postgres), "PostgreSQL store").await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
