//! The scheduler's async loop: joins the engine to a store and a transport.
//!
//! Each turn of the loop takes a batch of worker events from the results queue, feeds them to
//! the engine, lets the engine dispatch what the fleet has room for, persists every resulting
//! change in one store transaction, then publishes the dispatched tasks and acks the events.
//! Persisting before publishing and acking means a crash at any point loses nothing: the store
//! is the source of truth, and unacked events are delivered again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use taskfleet_common::state::TaskState;
use taskfleet_common::wire::{self, WorkerEvent};
use taskfleet_common::{Millis, WorkflowSpec};
use taskfleet_transport::queues::QueueNames;
use taskfleet_transport::{Delivery, Outgoing, Transport};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::engine::{Engine, EngineConfig};
use crate::store::{coalesce, Store, StoreUpdate, TaskRecord, WorkflowState};

/// The clock the service reads; the engine itself never does.
pub fn now() -> Millis {
    Millis(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as u64),
    )
}

/// How the scheduler service behaves.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    pub queues: QueueNames,
    pub engine: EngineConfig,
    /// Most worker events handled per store transaction.
    pub batch_size: usize,
    /// Worker slots per pool, as the fleet offers them.
    pub capacity: HashMap<String, usize>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            queues: QueueNames::default(),
            engine: EngineConfig::default(),
            batch_size: 4096,
            capacity: HashMap::new(),
        }
    }
}

/// A workflow's progress, as the service last saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkflowProgress {
    pub state: WorkflowState,
    /// Tasks in each state, in `TaskState::ALL` order.
    pub counts: [usize; TaskState::ALL.len()],
}

/// Progress of every workflow the service holds, by workflow id.
pub type Progress = HashMap<Arc<str>, WorkflowProgress>;

enum Command {
    Add {
        id: Arc<str>,
        spec: Arc<WorkflowSpec>,
        stored: Option<Vec<TaskRecord>>,
    },
    Cancel {
        id: Arc<str>,
    },
}

/// Talks to a running scheduler service.
#[derive(Clone)]
pub struct SchedulerHandle {
    commands: mpsc::UnboundedSender<Command>,
    progress: watch::Receiver<Progress>,
}

impl SchedulerHandle {
    /// Hands a workflow (already persisted) to the service; `stored` holds its task records
    /// when it is resumed.
    pub fn add_workflow(
        &self,
        id: Arc<str>,
        spec: Arc<WorkflowSpec>,
        stored: Option<Vec<TaskRecord>>,
    ) -> anyhow::Result<()> {
        self.commands
            .send(Command::Add { id, spec, stored })
            .map_err(|_| anyhow::anyhow!("scheduler has stopped"))
    }

    /// Cancels a workflow.
    pub fn cancel(&self, id: Arc<str>) -> anyhow::Result<()> {
        self.commands
            .send(Command::Cancel { id })
            .map_err(|_| anyhow::anyhow!("scheduler has stopped"))
    }

    /// Progress updates, one per loop turn that changed something.
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }
}

/// The scheduler service.
pub struct Scheduler {
    config: SchedulerConfig,
    engine: Engine,
    store: Arc<dyn Store>,
    transport: Arc<dyn Transport>,
    commands: mpsc::UnboundedReceiver<Command>,
    progress: watch::Sender<Progress>,
    workflows: Vec<Arc<str>>,
}

impl Scheduler {
    pub fn new(
        config: SchedulerConfig,
        store: Arc<dyn Store>,
        transport: Arc<dyn Transport>,
    ) -> (Scheduler, SchedulerHandle) {
        let mut engine = Engine::new(config.engine.clone());
        for (pool, &slots) in &config.capacity {
            engine.set_capacity(pool, slots);
        }
        let (command_tx, command_rx) = mpsc::unbounded_channel();
        let (progress_tx, progress_rx) = watch::channel(Progress::new());
        let scheduler = Scheduler {
            config,
            engine,
            store,
            transport,
            commands: command_rx,
            progress: progress_tx,
            workflows: Vec::new(),
        };
        (
            scheduler,
            SchedulerHandle {
                commands: command_tx,
                progress: progress_rx,
            },
        )
    }

    /// Runs until `shutdown` is cancelled.
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let results_queue = self.config.queues.results();
        self.transport
            .declare(&[results_queue.clone(), self.config.queues.dead_letters()])
            .await
            .context("declaring the results queue")?;
        let prefetch = u16::try_from(self.config.batch_size).unwrap_or(u16::MAX);
        let mut results = self
            .transport
            .consume(&results_queue, prefetch)
            .await
            .context("consuming results")?;
        let mut declared: Vec<String> = Vec::new();
        let mut batch: Vec<Delivery> = Vec::with_capacity(self.config.batch_size);
        info!(policy = %self.config.engine.policy, "Scheduler started.");
        loop {
            let now = now();
            self.engine.on_timers(now);
            let dispatches = self.engine.dispatch(now);
            let updates = self.engine.take_updates();
            let changed = !updates.is_empty();
            self.persist(updates).await?;
            if !dispatches.is_empty() {
                let mut outgoing = Vec::with_capacity(dispatches.len());
                for dispatch in &dispatches {
                    let queue = self
                        .config
                        .queues
                        .tasks(&dispatch.message.pool, dispatch.message.priority.as_str());
                    if !declared.contains(&queue) {
                        self.transport
                            .declare(std::slice::from_ref(&queue))
                            .await
                            .context("declaring a task queue")?;
                        declared.push(queue.clone());
                    }
                    outgoing.push(Outgoing::new(queue, wire::encode(&dispatch.message)));
                }
                self.transport.publish(outgoing).await.context("publishing tasks")?;
            }
            for delivery in batch.drain(..) {
                if let Err(error) = delivery.ack().await {
                    warn!(%error, "Failed to ack a worker event.");
                }
            }
            if changed {
                self.publish_progress();
            }
            let timer = self
                .engine
                .next_timer()
                .map(|due| Duration::from_millis(due.0.saturating_sub(now.0)));
            tokio::select! {
                _ = shutdown.cancelled() => break,
                command = self.commands.recv() => match command {
                    Some(command) => self.handle(command),
                    None => break,
                },
                delivery = results.recv() => {
                    batch.push(delivery.context("receiving worker events")?);
                    while batch.len() < self.config.batch_size {
                        match results.try_recv() {
                            Some(delivery) => batch.push(delivery.context("receiving worker events")?),
                            None => break,
                        }
                    }
                    self.handle_events(&mut batch).await;
                }
                _ = tokio::time::sleep(timer.unwrap_or(Duration::from_secs(3600))), if timer.is_some() => {}
            }
            while let Ok(command) = self.commands.try_recv() {
                self.handle(command);
            }
        }
        info!("Scheduler stopped.");
        Ok(())
    }

    fn handle(&mut self, command: Command) {
        let now = now();
        match command {
            Command::Add { id, spec, stored } => {
                info!(workflow_id = %id, n_tasks = spec.tasks.len(), resumed = stored.is_some(), "Workflow added.");
                self.engine.add_workflow(id.clone(), spec, stored, now);
                self.workflows.push(id);
                self.publish_progress();
            }
            Command::Cancel { id } => {
                if self.engine.cancel_workflow(&id, now).is_none() {
                    warn!(workflow_id = %id, "Cannot cancel an unknown workflow.");
                }
                self.publish_progress();
            }
        }
    }

    /// Feeds a batch of worker events to the engine; unusable ones are dead-lettered and
    /// removed from the batch.
    async fn handle_events(&mut self, batch: &mut Vec<Delivery>) {
        let now = now();
        let mut kept = Vec::with_capacity(batch.len());
        for delivery in batch.drain(..) {
            let event = match wire::decode_worker_event(&delivery.payload) {
                Ok(event) => event,
                Err(error) => {
                    warn!(%error, "Dead-lettering an unusable worker event.");
                    if let Err(error) = delivery.dead_letter(&error.to_string()).await {
                        warn!(%error, "Failed to dead-letter a worker event.");
                    }
                    continue;
                }
            };
            let outcome = match event {
                WorkerEvent::Started(started) => self.engine.on_started(&started),
                WorkerEvent::Finished(result) => self.engine.on_finished(result, now),
            };
            if let Err(ignored) = outcome {
                debug!(%ignored, "Worker event ignored.");
            }
            kept.push(delivery);
        }
        *batch = kept;
    }

    async fn persist(&self, updates: Vec<StoreUpdate>) -> anyhow::Result<()> {
        if updates.is_empty() {
            return Ok(());
        }
        self.store
            .apply(coalesce(updates))
            .await
            .context("persisting scheduler state")
    }

    fn publish_progress(&self) {
        let progress: Progress = self
            .workflows
            .iter()
            .filter_map(|id| {
                let state = self.engine.workflow_state(id)?;
                let counts = self.engine.task_counts(id)?;
                Some((id.clone(), WorkflowProgress { state, counts }))
            })
            .collect();
        self.progress.send_replace(progress);
    }
}
