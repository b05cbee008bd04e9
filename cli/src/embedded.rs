//! The embedded mode: a scheduler, an in-memory transport, a SQLite store and N workers in
//! one process, running one workflow to its end. `taskfleet run` and the benchmarks use it.
//!
//! Running the same workflow file against the same database resumes its unfinished run:
//! finished tasks are not run again, and attempts that were out when the process died are
//! dispatched again.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use taskfleet_common::api::WorkflowStatus;
use taskfleet_common::state::TaskState;
use taskfleet_common::WorkflowSpec;
use taskfleet_engine::engine::EngineConfig;
use taskfleet_engine::placement::WorkerModel;
use taskfleet_engine::policy::PolicyKind;
use taskfleet_scheduler::service::{now, Capacity, Scheduler, SchedulerConfig, WorkflowProgress};
use taskfleet_scheduler::status::workflow_status;
use taskfleet_scheduler::store::{MemoryStore, SqliteStore, Store, WorkflowRecord, WorkflowState};
use taskfleet_transport::queues::QueueNames;
use taskfleet_transport::{MemoryTransport, Transport};
use taskfleet_worker::limits::{Enforcer, RunAs};
use taskfleet_worker::{HandlerRegistry, Worker, WorkerConfig};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::progress::RunningTasks;

/// How to run a workflow in one process.
#[derive(Clone)]
pub struct EmbeddedOptions {
    /// Local workers, one task slot each.
    pub workers: usize,
    pub policy: PolicyKind,
    /// SQLite database file; `None` keeps state in memory (no resume).
    pub db: Option<PathBuf>,
    /// Directory `run` commands start in (the workflow file's directory for `taskfleet run`).
    pub work_dir: Option<PathBuf>,
    /// Handlers the workers know.
    pub handlers: Arc<HandlerRegistry>,
    /// Tasks dispatched beyond the free slots.
    pub prefetch_margin: usize,
    /// Grace between SIGTERM and SIGKILL for timed-out tasks.
    pub kill_grace: Duration,
    /// Policies use runtimes learned from earlier runs (in the database) instead of estimates.
    pub predictive: bool,
    /// How tasks are put under their limits; `None` starts programs directly (and a task that
    /// asks for a limit fails).
    pub enforcer: Option<Arc<Enforcer>>,
    /// The user tasks run as, if not the process's own.
    pub run_as: Option<RunAs>,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            workers: std::thread::available_parallelism().map_or(2, usize::from),
            policy: PolicyKind::Fcfs,
            db: None,
            work_dir: None,
            handlers: Arc::new(HandlerRegistry::with_builtins()),
            prefetch_margin: 64,
            kill_grace: Duration::from_secs(5),
            predictive: false,
            enforcer: None,
            run_as: None,
        }
    }
}

/// What a run ended with.
pub struct RunOutcome {
    pub workflow_id: String,
    pub state: WorkflowState,
    /// Tasks already finished when the run started, if it resumed an earlier one.
    pub resumed_with: Option<usize>,
    pub report: WorkflowStatus,
    /// The latest attempt of each failed task (the first few), with its output tails.
    pub failures: Vec<(String, taskfleet_common::api::AttemptStatus)>,
}

/// Failed tasks whose output a run shows under its table.
const FAILURES_SHOWN: usize = 10;

/// A hash of the workflow's source; the same file resumes the same unfinished run.
pub fn spec_hash(source: &str) -> String {
    let digest = Sha256::digest(source.as_bytes());
    digest.iter().take(16).map(|byte| format!("{byte:02x}")).collect()
}

/// Runs `spec` (parsed from `source`) to its end. `on_progress` sees every progress change
/// and the tasks running then;
/// cancelling `interrupt` stops the run early with the workflow left resumable.
pub async fn run_workflow(
    source: &str,
    spec: Arc<WorkflowSpec>,
    options: &EmbeddedOptions,
    mut on_progress: impl FnMut(&WorkflowProgress, &RunningTasks),
    interrupt: CancellationToken,
) -> anyhow::Result<RunOutcome> {
    let store: Arc<dyn Store> = match &options.db {
        Some(path) => {
            Arc::new(SqliteStore::open(path).with_context(|| format!("opening database {}", path.display()))?)
        }
        None => Arc::new(MemoryStore::new()),
    };
    let hash = spec_hash(source);
    let (workflow_id, stored) = match store.running_workflows(Some(&hash)).await?.pop() {
        Some(record) => {
            let tasks = store.tasks(&record.id).await?;
            (record.id, Some(tasks))
        }
        None => {
            let record = WorkflowRecord {
                spec_hash: hash,
                source: source.to_string(),
                ..WorkflowRecord::running(new_workflow_id(), spec.name.clone(), now())
            };
            store.create_workflow(&record, &spec).await?;
            (record.id, None)
        }
    };
    let resumed_with = stored
        .as_ref()
        .map(|tasks| tasks.iter().filter(|task| task.state.is_terminal()).count());
    if let Some(n_done) = resumed_with {
        info!(%workflow_id, n_done, "Resuming workflow.");
    }

    let queues = QueueNames::default();
    let transport: Arc<dyn Transport> = Arc::new(MemoryTransport::new(&queues));
    let mut pools: Vec<String> = spec.tasks.iter().map(|task| task.pool.to_string()).collect();
    pools.sort();
    pools.dedup();
    let shutdown = CancellationToken::new();
    let mut workers = Vec::new();
    for worker_idx in 1..=options.workers.max(1) {
        let mut config = WorkerConfig::new(format!("local-{worker_idx}"));
        config.pools = pools.clone();
        config.concurrency = 1;
        config.queues = queues.clone();
        config.work_dir = options.work_dir.clone();
        config.kill_grace = options.kill_grace;
        config.heartbeat_interval = None;
        config.enforcer = options.enforcer.clone();
        config.run_as = options.run_as.clone();
        let worker = Worker::new(config, transport.clone(), options.handlers.clone());
        workers.push(tokio::spawn(worker.run(shutdown.clone())));
    }
    let config = SchedulerConfig {
        queues,
        engine: EngineConfig {
            policy: options.policy,
            prefetch_margin: options.prefetch_margin,
            // The in-memory transport hands queued tasks out in class order.
            margin_capped_by_slots: false,
            predictive: options.predictive,
            dynamic_plans: options.predictive,
            ..EngineConfig::default()
        },
        capacity: Capacity::Fixed(
            pools
                .iter()
                .map(|pool| (pool.clone(), options.workers.max(1)))
                .collect(),
        ),
        local_workers: (1..=options.workers.max(1))
            .map(|worker_idx| {
                let pools: Vec<&str> = pools.iter().map(String::as_str).collect();
                WorkerModel::new(&format!("local-{worker_idx}"), &pools, 1, 1.0)
            })
            .collect(),
        ..SchedulerConfig::default()
    };
    let (mut scheduler, handle) = Scheduler::new(config, store.clone(), transport);
    scheduler.restore_predictor(store.runtime_stats().await?, store.feature_models().await?);
    let mut progress = handle.progress();
    let scheduler = tokio::spawn(scheduler.run(shutdown.clone()));
    let id: Arc<str> = Arc::from(workflow_id.as_str());
    handle.add_workflow(id.clone(), spec.clone(), stored)?;

    let mut state = WorkflowState::Running;
    loop {
        tokio::select! {
            changed = progress.changed() => {
                if changed.is_err() {
                    break;
                }
                if let Some(current) = progress.borrow_and_update().get(&id) {
                    let named = (current.running.iter())
                        .filter_map(|&idx| Some((idx, spec.tasks.get(idx as usize)?.id.clone())));
                    let total = current.counts[TaskState::Running as usize];
                    on_progress(current, &RunningTasks::sampled(named, total));
                    state = current.state;
                }
                if state.is_terminal() {
                    break;
                }
            }
            _ = interrupt.cancelled() => break,
        }
    }
    shutdown.cancel();
    let scheduler_result = scheduler.await.context("scheduler task panicked")?;
    for worker in workers {
        worker.await.context("worker task panicked")??;
    }
    scheduler_result?;
    let report = workflow_status(store.as_ref(), &workflow_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("workflow {workflow_id} vanished from the store"))?;
    let failures = taskfleet_scheduler::status::failed_attempts(store.as_ref(), &workflow_id, FAILURES_SHOWN).await?;
    Ok(RunOutcome {
        workflow_id,
        state,
        resumed_with,
        report,
        failures,
    })
}

fn new_workflow_id() -> String {
    format!("wf-{:016x}", rand::random::<u64>())
}
