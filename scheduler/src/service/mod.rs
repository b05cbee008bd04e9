//! The scheduler's async loop: joins the engine to a store and a transport.
//!
//! Each turn of the loop takes a batch of worker events from the results queue, feeds them to
//! the engine, lets the engine dispatch what the fleet has room for, persists every resulting
//! change in one store transaction, then publishes the dispatched tasks and acks the events.
//! Persisting before publishing and acking means a crash at any point loses nothing: the store
//! is the source of truth, and unacked events are delivered again.
//!
//! With a fleet of remote workers, the loop also follows their heartbeats: the slots they
//! offer bound admission, and a worker silent past the lease timeout loses its attempts, which
//! are dispatched again. When the transport fails, the loop keeps its state, reconnects with
//! backoff, and publishes again what was not confirmed.

mod outbox;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use taskfleet_common::api::WorkerStatus;
use taskfleet_common::state::TaskState;
use taskfleet_common::units::format_bytes;
use taskfleet_common::wire::{self, AttemptRef, ControlMessage, TaskMessage, WorkerEvent, WIRE_VERSION};
use taskfleet_common::{Millis, WorkflowSpec};
use taskfleet_transport::queues::QueueNames;
use taskfleet_transport::{Consumer, Delivery, Outgoing, Transport, TransportError};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use self::outbox::Outbox;
use crate::store::{coalesce, Store, StoreUpdate, TaskRecord, WorkflowState};
use taskfleet_engine::engine::{Dispatch, Engine, EngineConfig, Report};
use taskfleet_engine::fleet::{Fleet, FleetView};
use taskfleet_engine::placement::WorkerModel;

/// The clock the service reads; the engine itself never does.
pub fn now() -> Millis {
    Millis(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as u64),
    )
}

/// Where the fleet's capacity comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Capacity {
    /// A fixed number of slots per pool (workers in the same process).
    Fixed(HashMap<String, usize>),
    /// Worker heartbeats; a worker silent for longer than `lease_timeout` is lost.
    Heartbeats { lease_timeout: Duration },
}

/// How the scheduler service behaves.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    pub queues: QueueNames,
    pub engine: EngineConfig,
    /// Most worker events handled per store transaction.
    pub batch_size: usize,
    pub capacity: Capacity,
    /// With [`Capacity::Fixed`], the workers in the same process, for placement-aware policies.
    pub local_workers: Vec<WorkerModel>,
    /// Drop finished workflows from memory (their state stays in the store).
    pub forget_finished: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            queues: QueueNames::default(),
            engine: EngineConfig::default(),
            batch_size: 4096,
            capacity: Capacity::Fixed(HashMap::new()),
            local_workers: Vec::new(),
            forget_finished: false,
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
    fleet: watch::Receiver<Vec<WorkerStatus>>,
    connected: watch::Receiver<bool>,
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

    /// Cancels a workflow: waiting tasks end at once, running ones are stopped on their workers.
    pub fn cancel(&self, id: Arc<str>) -> anyhow::Result<()> {
        self.commands
            .send(Command::Cancel { id })
            .map_err(|_| anyhow::anyhow!("scheduler has stopped"))
    }

    /// Progress updates, one per loop turn that changed something.
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }

    /// The live fleet, from heartbeats.
    pub fn fleet(&self) -> Vec<WorkerStatus> {
        self.fleet.borrow().clone()
    }

    /// Whether the service is connected to its transport.
    pub fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }
}

/// The consumers of one connection to the transport.
struct Link {
    results: Box<dyn Consumer>,
    heartbeats: Option<Box<dyn Consumer>>,
}

/// Reconnection delays: doubling from 100 ms up to 5 s.
struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    fn take(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Backoff::MAX);
        delay
    }

    fn reset(&mut self) {
        self.next = Backoff::FIRST;
    }
}

/// The scheduler service.
pub struct Scheduler {
    config: SchedulerConfig,
    engine: Engine,
    fleet: Option<Fleet>,
    store: Arc<dyn Store>,
    transport: Arc<dyn Transport>,
    commands: mpsc::UnboundedReceiver<Command>,
    progress: watch::Sender<Progress>,
    fleet_view: watch::Sender<Vec<WorkerStatus>>,
    connected: watch::Sender<bool>,
    workflows: Vec<Arc<str>>,
    /// Control messages (cancellations) waiting to be broadcast.
    control: Vec<Bytes>,
}

impl Scheduler {
    pub fn new(
        config: SchedulerConfig,
        store: Arc<dyn Store>,
        transport: Arc<dyn Transport>,
    ) -> (Scheduler, SchedulerHandle) {
        let mut engine = Engine::new(config.engine.clone());
        let fleet = match &config.capacity {
            Capacity::Fixed(slots) => {
                engine.set_fleet(&FleetView::fixed(slots.clone(), config.local_workers.clone()), now());
                None
            }
            Capacity::Heartbeats { lease_timeout } => Some(Fleet::new(*lease_timeout)),
        };
        let (command_tx, command_rx) = mpsc::unbounded_channel();
        let (progress_tx, progress_rx) = watch::channel(Progress::new());
        let (fleet_tx, fleet_rx) = watch::channel(Vec::new());
        let (connected_tx, connected_rx) = watch::channel(false);
        let scheduler = Scheduler {
            config,
            engine,
            fleet,
            store,
            transport,
            commands: command_rx,
            progress: progress_tx,
            fleet_view: fleet_tx,
            connected: connected_tx,
            workflows: Vec::new(),
            control: Vec::new(),
        };
        let handle = SchedulerHandle {
            commands: command_tx,
            progress: progress_rx,
            fleet: fleet_rx,
            connected: connected_rx,
        };
        (scheduler, handle)
    }

    /// Resumes learning from runtime statistics and feature regressions persisted by an
    /// earlier run.
    pub fn restore_predictor(
        &mut self,
        stats: Vec<(String, taskfleet_engine::predict::LogStats)>,
        feature_models: Vec<(String, taskfleet_engine::predict::FeatureModel)>,
    ) {
        let prior = self.config.engine.policy_config.default_estimate;
        let predictor = taskfleet_engine::predict::Predictor::restore(prior, stats).with_feature_models(feature_models);
        self.engine.set_predictor(predictor);
    }

    /// Runs until `shutdown` is cancelled. Transport failures are retried forever with
    /// backoff; a store failure stops the service with an error (restarting it rebuilds
    /// everything from the store).
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut link: Option<Link> = None;
        let mut backoff = Backoff { next: Backoff::FIRST };
        let mut outbox = Outbox::default();
        let mut batch: Vec<Delivery> = Vec::with_capacity(self.config.batch_size);
        let lease_check = self
            .fleet
            .as_ref()
            .map_or(Duration::from_secs(3600), |fleet| fleet.lease_timeout() / 4);
        let mut lease_ticks = tokio::time::interval(lease_check.max(Duration::from_millis(50)));
        info!(policy = %self.config.engine.policy, "Scheduler started.");
        loop {
            if link.is_none() {
                match self.connect().await {
                    Ok(connected) => {
                        info!("Scheduler connected to the transport.");
                        link = Some(connected);
                        outbox.reconnected();
                        backoff.reset();
                        self.connected.send_replace(true);
                    }
                    Err(error) => {
                        let delay = backoff.take();
                        warn!(%error, retry_in = ?delay, "Cannot reach the transport; retrying.");
                        self.connected.send_replace(false);
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(delay) => {}
                            command = self.commands.recv() => match command {
                                Some(command) => self.handle(command),
                                None => break,
                            },
                        }
                        continue;
                    }
                }
            }
            // Commands first: workflows handed over at start-up are known before any heartbeat
            // speaks of their attempts.
            while let Ok(command) = self.commands.try_recv() {
                self.handle(command);
            }
            let now = now();
            self.engine.on_timers(now);
            let dispatches = self.engine.dispatch(now);
            self.enqueue(dispatches, &mut outbox, now);
            let updates = self.engine.take_updates();
            let changed = !updates.is_empty();
            let finished: Vec<Arc<str>> = updates
                .iter()
                .filter_map(|update| match update {
                    StoreUpdate::WorkflowFinished { workflow_id, .. } => Some(workflow_id.clone()),
                    _ => None,
                })
                .collect();
            self.persist(updates).await?;
            if let Err(error) = self.send(&mut outbox).await {
                warn!(%error, n_messages = outbox.n_waiting(), "Failed to publish; reconnecting.");
                link = None;
                continue;
            }
            // What is persisted can be told at once; the acks follow.
            if changed {
                self.publish_progress();
            }
            // Acks are sent together, not one round of the loop each.
            let acks = futures_util::future::join_all(batch.drain(..).map(Delivery::ack)).await;
            if let Some(Err(error)) = acks.into_iter().find(Result::is_err) {
                debug!(%error, "Failed to ack worker events; they will come again and be ignored.");
            }
            if self.config.forget_finished {
                for id in finished {
                    self.engine.remove_workflow(&id);
                    self.workflows.retain(|known| *known != id);
                }
            }
            let Some(current) = link.as_mut() else { continue };
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
                delivery = current.results.recv() => match delivery {
                    Ok(delivery) => {
                        batch.push(delivery);
                        while batch.len() < self.config.batch_size {
                            match current.results.try_recv() {
                                Some(Ok(delivery)) => batch.push(delivery),
                                _ => break,
                            }
                        }
                        self.handle_events(&mut batch).await;
                    }
                    Err(error) => {
                        warn!(%error, "Lost the results queue; reconnecting.");
                        link = None;
                    }
                },
                sent = outbox.confirmed() => match sent {
                    Ok(()) => self.fail_refused(&mut outbox),
                    Err(error) => {
                        warn!(%error, n_messages = outbox.n_waiting(), "Failed to publish tasks; reconnecting.");
                        link = None;
                    }
                },
                heartbeat = recv_optional(&mut current.heartbeats) => match heartbeat {
                    Ok(delivery) => self.handle_heartbeat(delivery).await,
                    Err(error) => {
                        warn!(%error, "Lost the heartbeats topic; reconnecting.");
                        link = None;
                    }
                },
                _ = lease_ticks.tick(), if self.fleet.is_some() => self.expire_leases(),
                _ = tokio::time::sleep(timer.unwrap_or(Duration::from_secs(3600))), if timer.is_some() => {}
            }
            while let Ok(command) = self.commands.try_recv() {
                self.handle(command);
            }
        }
        info!("Scheduler stopped.");
        Ok(())
    }

    /// Encodes the dispatched tasks into the outbox. A message too large for the transport
    /// is never queued: its attempt fails at once with the reason, so one task with huge
    /// inputs cannot hold up the messages behind it.
    fn enqueue(&mut self, dispatches: Vec<Dispatch>, outbox: &mut Outbox, now: Millis) {
        let limit = self.transport.max_message_bytes().min(wire::MAX_TASK_MESSAGE_BYTES);
        for dispatch in dispatches {
            let payload = wire::encode(&dispatch.message);
            if payload.len() > limit {
                let reason = too_large(&dispatch.message, payload.len(), limit);
                warn!(workflow_id = %dispatch.message.workflow_id, task = %dispatch.message.task, attempt = dispatch.message.attempt, %reason, "Failing a task whose message is too large to send.");
                if let Err(ignored) = self
                    .engine
                    .on_undeliverable(dispatch.task, dispatch.message.attempt, reason, now)
                {
                    debug!(%ignored, "Undeliverable attempt ignored.");
                }
                continue;
            }
            let queue = match &dispatch.worker {
                Some(worker) => self.config.queues.worker(worker),
                None => self
                    .config
                    .queues
                    .tasks(&dispatch.message.pool, dispatch.message.priority.as_str()),
            };
            outbox.push(Outgoing::new(queue, payload), dispatch.task, dispatch.message.attempt);
        }
    }

    /// Fails the attempts whose messages the transport refused (see [`Outbox`]).
    fn fail_refused(&mut self, outbox: &mut Outbox) {
        let now = now();
        for (task, attempt, reason) in outbox.take_refused() {
            warn!(task_idx = task.task_idx, attempt, %reason, "The transport refused a task message; failing the task.");
            let reason = format!("the task's message could not be sent: {reason}");
            if let Err(ignored) = self.engine.on_undeliverable(task, attempt, reason, now) {
                debug!(%ignored, "Refused attempt ignored.");
            }
        }
    }

    async fn connect(&self) -> Result<Link, TransportError> {
        let queues = &self.config.queues;
        self.transport
            .declare(&[queues.results(), queues.dead_letters()])
            .await?;
        let prefetch = u16::try_from(self.config.batch_size).unwrap_or(u16::MAX);
        let results = self.transport.consume(&queues.results(), prefetch).await?;
        let heartbeats = match self.fleet {
            Some(_) => Some(self.transport.subscribe(&queues.heartbeats()).await?),
            None => None,
        };
        Ok(Link { results, heartbeats })
    }

    /// Starts publishing the waiting tasks if no batch is on its way, and broadcasts waiting
    /// control messages; on failure everything stays queued for the next connection.
    async fn send(&mut self, outbox: &mut Outbox) -> Result<(), TransportError> {
        outbox.start(&self.transport).await?;
        self.fail_refused(outbox);
        while let Some(message) = self.control.first() {
            self.transport
                .broadcast(&self.config.queues.control(), message.clone())
                .await?;
            self.control.remove(0);
        }
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
                match self.engine.cancel_workflow(&id, now) {
                    Some(in_flight) => {
                        info!(workflow_id = %id, n_running = in_flight.len(), "Cancelling workflow.");
                        for (task, attempt) in in_flight {
                            self.cancel_attempt(&id, task.task_idx, attempt);
                        }
                    }
                    None => warn!(workflow_id = %id, "Cannot cancel a workflow the scheduler does not hold."),
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
            if let Some(reason) = delivery.oversized(wire::MAX_EVENTS_MESSAGE_BYTES, "results message") {
                warn!(%reason, "Dead-lettering an oversized results message unread.");
                if let Err(error) = delivery.dead_letter(&reason).await {
                    warn!(%error, "Failed to dead-letter a results message; it will be delivered again.");
                }
                continue;
            }
            let events = match wire::decode_worker_events(&delivery.payload) {
                Ok(events) => events,
                Err(error) => {
                    warn!(%error, "Dead-lettering an unusable worker event.");
                    if let Err(error) = delivery.dead_letter(&error.to_string()).await {
                        warn!(%error, "Failed to dead-letter a worker event; it will be delivered again.");
                    }
                    continue;
                }
            };
            for event in events {
                match event {
                    WorkerEvent::Started(started) => match self.engine.on_started(&started) {
                        Ok(report) => log_report(
                            report,
                            &started.worker,
                            &started.workflow_id,
                            started.task_idx,
                            started.attempt,
                        ),
                        Err(ignored) => {
                            // A superseded attempt started (its message was delivered again
                            // after a newer attempt went out): it must not run beside it.
                            info!(%ignored, worker = %started.worker, workflow_id = %started.workflow_id, task_idx = started.task_idx, attempt = started.attempt, "Stopping an attempt that started after it was superseded.");
                            self.cancel_attempt(&started.workflow_id, started.task_idx, started.attempt);
                        }
                    },
                    WorkerEvent::Finished(result) => {
                        if let Err(ignored) = self.engine.on_finished(result, now) {
                            debug!(%ignored, "Worker event ignored.");
                        }
                    }
                }
            }
            kept.push(delivery);
        }
        *batch = kept;
    }

    async fn handle_heartbeat(&mut self, delivery: Delivery) {
        match wire::decode_heartbeat(&delivery.payload) {
            Ok(heartbeat) => {
                for attempt in &heartbeat.running {
                    let report = self.engine.on_running(
                        &heartbeat.worker,
                        &attempt.workflow_id,
                        attempt.task_idx,
                        attempt.attempt,
                    );
                    let (workflow_id, task_idx, attempt) = (&attempt.workflow_id, attempt.task_idx, attempt.attempt);
                    match report {
                        Ok(Report::Superseded) | Err(_) => {
                            info!(worker = %heartbeat.worker, %workflow_id, task_idx, attempt, "Stopping an attempt that was superseded.");
                            self.cancel_attempt(workflow_id, task_idx, attempt);
                        }
                        Ok(report) => log_report(report, &heartbeat.worker, workflow_id, task_idx, attempt),
                    }
                }
                if let Some(fleet) = self.fleet.as_mut() {
                    if fleet.on_heartbeat(&heartbeat, now()) {
                        info!(worker = %heartbeat.worker, slots = heartbeat.slots, draining = heartbeat.draining, "Fleet changed.");
                        self.engine.set_fleet(&fleet.view(), now());
                    }
                    self.fleet_view.send_replace(fleet.workers());
                }
            }
            Err(error) => warn!(%error, "Ignoring an unusable heartbeat."),
        }
        if let Err(error) = delivery.ack().await {
            debug!(%error, "Failed to ack a heartbeat.");
        }
    }

    /// Tells the workers to stop an attempt, if one of them runs it.
    fn cancel_attempt(&mut self, workflow_id: &str, task_idx: u32, attempt: u32) {
        let message = ControlMessage::Cancel {
            v: WIRE_VERSION,
            attempt: AttemptRef {
                workflow_id: workflow_id.to_string(),
                task_idx,
                attempt,
            },
        };
        self.control.push(Bytes::from(wire::encode(&message)));
    }

    fn expire_leases(&mut self) {
        let Some(fleet) = self.fleet.as_mut() else { return };
        let now = now();
        let lost = fleet.expire(now);
        if lost.is_empty() {
            return;
        }
        for worker in &lost {
            let n_attempts = self.engine.on_worker_lost(worker, now);
            if n_attempts > 0 {
                warn!(worker = %worker, n_attempts, "Worker lost its lease; its attempts will run again.");
            } else {
                debug!(worker = %worker, "Worker left the fleet.");
            }
        }
        self.engine.set_fleet(&fleet.view(), now);
        self.fleet_view.send_replace(fleet.workers());
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

/// Logs what a worker's report of a running attempt changed.
fn log_report(report: Report, worker: &str, workflow_id: &str, task_idx: u32, attempt: u32) {
    match report {
        Report::Current | Report::Superseded => {}
        Report::Adopted => {
            info!(%worker, %workflow_id, task_idx, attempt, "Adopted an attempt that survived the loss of its lease or a restart.");
        }
        Report::Moved => {
            info!(%worker, %workflow_id, task_idx, attempt, "An attempt delivered again runs on another worker; its lease moved there.");
        }
    }
}

/// Why a task message of `size` bytes cannot be sent, for the task's error.
fn too_large(message: &TaskMessage, size: usize, limit: usize) -> String {
    let inputs: usize = message.inputs.values().map(|input| input.get().len()).sum();
    let format = |bytes: usize| format_bytes(bytes as u64);
    format!(
        "the task's message would be {} (of which {} are the outputs of {} parents), more than the {} a task message may be; \
         pass large data between tasks through files or storage, and keep outputs small",
        format(size),
        format(inputs),
        message.inputs.len(),
        format(limit)
    )
}

/// Receives from the consumer if there is one; never resolves otherwise.
async fn recv_optional(consumer: &mut Option<Box<dyn Consumer>>) -> Result<Delivery, TransportError> {
    match consumer {
        Some(consumer) => consumer.recv().await,
        None => std::future::pending().await,
    }
}
