//! The scheduler's async loop: joins the engine to a store and a transport.
//!
//! Each turn of the loop takes a batch of worker events from the results queue, feeds them to
//! the engine, lets the engine dispatch what the fleet has room for, and hands every resulting
//! change to the next store transaction; the dispatched tasks are published and the events
//! acked once it has committed. One transaction is on its way at a time while the loop goes
//! on, and what the loop does meanwhile goes into the next (`commit.rs`). Persisting before
//! publishing and acking means a crash at any point loses nothing: the store is the source of
//! truth, and unacked events are delivered again.
//!
//! With a fleet of remote workers, the loop also follows their heartbeats: the slots they
//! offer bound admission, and a worker silent past the lease timeout loses its attempts, which
//! are dispatched again. When the transport fails, the loop keeps its state, reconnects with
//! backoff, and publishes again what was not confirmed.

mod commit;
mod dispatch;
mod events;
mod handle;
mod outbox;
mod tell;
mod term;
mod waits;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use taskfleet_common::api::{FleetEvent, WorkerStatus};
use taskfleet_common::retry::Backoff;
use taskfleet_common::Millis;
use taskfleet_transport::queues::QueueNames;
use taskfleet_transport::{Consumer, Delivery, Transport, TransportError};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use self::commit::{Commit, Pending};
use self::handle::Command;
pub use self::handle::{
    EventFeed, Heard, Progress, SchedulerHandle, SchedulerStopped, WorkflowProgress, NAMED_RUNNING,
};
use self::outbox::Outbox;
pub use self::term::{Deposed, Term};
use crate::store::Store;
use taskfleet_engine::engine::{Engine, EngineConfig};
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
    /// The leader's term, when schedulers share the store: the loop stops with [`Deposed`]
    /// once it is over, or once the store refuses a write as fenced.
    pub term: Option<Term>,
    /// Where the loop counts what it decides (`/metrics`).
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
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
            term: None,
            metrics: None,
        }
    }
}

/// The consumers of one connection to the transport.
struct Link {
    results: Box<dyn Consumer>,
    heartbeats: Option<Box<dyn Consumer>>,
}

/// What the loop does after a step.
enum Next {
    Go,
    /// The transport failed: connect again (with backoff) before going on.
    Reconnect,
    Stop,
    /// Persisting failed for good (or the term is over): stop with this error.
    Fail(anyhow::Error),
}

/// The loop's own state between turns.
struct LoopState {
    /// The consumers of the current connection, if connected.
    link: Option<Link>,
    backoff: Backoff,
    outbox: Outbox,
    /// Worker events handled since the last turn.
    batch: Vec<Delivery>,
    /// What the loop did since the last transaction started.
    pending: Pending,
    /// The transaction on its way, if any.
    committing: Option<Commit>,
    /// Control messages whose transaction has committed, to broadcast.
    control: Vec<Bytes>,
    lease_ticks: tokio::time::Interval,
    /// Cancelled when the service is to stop (also ends a wait for the store).
    shutdown: CancellationToken,
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
    /// Whether the last write to the store went through.
    store_available: Arc<watch::Sender<bool>>,
    workflows: Vec<Arc<str>>,
    /// Control messages (cancellations) decided since the last turn.
    control: Vec<Bytes>,
    /// A command changed the progress since the last turn (it is told with the next
    /// transaction, never ahead of the store).
    progress_changed: bool,
    /// The workflows handed to the loop and not yet forgotten (shared with the handle).
    handed: handle::Handed,
    /// Where committed changes are told to the handle's subscribers.
    events: broadcast::Sender<FleetEvent>,
    /// Events of commands since the last turn (told with the next transaction).
    told: Vec<FleetEvent>,
    /// When the tasks waiting to start became ready (for metrics).
    waits: waits::QueueWaits,
}

impl Scheduler {
    pub fn new(
        config: SchedulerConfig,
        store: Arc<dyn Store>,
        transport: Arc<dyn Transport>,
    ) -> (Scheduler, SchedulerHandle) {
        let mut engine = Engine::new(EngineConfig {
            // Ended attempts are kept only for metrics to count them.
            record_ended: config.metrics.is_some(),
            ..config.engine.clone()
        });
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
        let (store_tx, store_rx) = watch::channel(true);
        let (events, _) = broadcast::channel(tell::EVENTS_BUFFERED);
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
            store_available: Arc::new(store_tx),
            workflows: Vec::new(),
            control: Vec::new(),
            progress_changed: false,
            handed: handle::Handed::default(),
            events: events.clone(),
            told: Vec::new(),
            waits: waits::QueueWaits::default(),
        };
        let handle = SchedulerHandle {
            commands: command_tx,
            progress: progress_rx,
            fleet: fleet_rx,
            connected: connected_rx,
            store_available: store_rx,
            handed: scheduler.handed.clone(),
            events,
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
        let lease_check = self
            .fleet
            .as_ref()
            .map_or(Duration::from_secs(3600), |fleet| fleet.lease_timeout() / 4);
        let mut state = LoopState {
            link: None,
            backoff: Backoff::new(),
            outbox: Outbox::default(),
            batch: Vec::with_capacity(self.config.batch_size),
            pending: Pending::default(),
            committing: None,
            control: Vec::new(),
            lease_ticks: tokio::time::interval(lease_check.max(Duration::from_millis(50))),
            shutdown: shutdown.clone(),
        };
        info!(policy = %self.config.engine.policy, "Scheduler started.");
        loop {
            let next = match state.link {
                None => self.reconnect(&mut state, &shutdown).await,
                Some(_) => {
                    let now = now();
                    match self.turn(&mut state, now).await? {
                        Next::Go => self.wait(&mut state, &shutdown, now).await,
                        other => other,
                    }
                }
            };
            match next {
                Next::Go => {}
                Next::Reconnect => state.link = None,
                Next::Stop => break,
                Next::Fail(error) => {
                    state.shutdown.cancel();
                    return Err(error);
                }
            }
        }
        // A transaction on its way ends (or gives up, the service stopping) before the loop.
        if let Some(commit) = state.committing.take() {
            let _ = commit.task.await;
        }
        info!("Scheduler stopped.");
        Ok(())
    }

    /// Connects to the transport, or waits out the backoff (still taking commands).
    async fn reconnect(&mut self, state: &mut LoopState, shutdown: &CancellationToken) -> Next {
        match self.connect().await {
            Ok(connected) => {
                info!("Scheduler connected to the transport.");
                state.link = Some(connected);
                state.outbox.reconnected();
                state.backoff.reset();
                self.connected.send_replace(true);
                Next::Go
            }
            Err(error) => {
                let delay = state.backoff.next_delay();
                warn!(%error, retry_in = ?delay, "Cannot reach the transport; retrying.");
                self.connected.send_replace(false);
                tokio::select! {
                    _ = shutdown.cancelled() => Next::Stop,
                    _ = tokio::time::sleep(delay) => Next::Go,
                    command = self.commands.recv() => match command {
                        Some(command) => {
                            self.handle(command);
                            Next::Go
                        }
                        None => Next::Stop,
                    },
                }
            }
        }
    }

    /// One turn: timers and dispatch, then what they and the events before them changed goes
    /// into the next transaction, held back with the messages and acks it implies (see
    /// `commit.rs`); it starts at once unless one is on its way. Every change is persisted
    /// before the messages it implies are published, and worker events are acked only once
    /// their effects are persisted.
    async fn turn(&mut self, state: &mut LoopState, now: Millis) -> anyhow::Result<Next> {
        // Commands first: workflows handed over at start-up are known before any heartbeat
        // speaks of their attempts.
        while let Ok(command) = self.commands.try_recv() {
            self.handle(command);
        }
        if let Some(term) = &self.config.term {
            if !term.is_current(std::time::Instant::now()) {
                return Err(term.deposed().into());
            }
        }
        self.engine.on_timers(now);
        let dispatches = self.engine.dispatch(now);
        self.enqueue(dispatches, &mut state.pending.held.messages, now);
        let updates = self.engine.take_updates();
        self.count_waits(&updates, now);
        state.pending.updates.extend(updates);
        let ended = self.engine.take_ended();
        let latencies = state.outbox.take_latencies();
        if let Some(metrics) = &self.config.metrics {
            metrics.ended(&ended);
            metrics.loads(self.engine.pool_loads(), self.engine.class_loads());
            for took in latencies {
                metrics.published(took);
            }
        }
        state.pending.held.acks.append(&mut state.batch);
        state.pending.held.control.append(&mut self.control);
        state.pending.held.events.append(&mut self.told);
        state.pending.progress_changed |= std::mem::take(&mut self.progress_changed);
        if state.committing.is_none() {
            if let next @ (Next::Reconnect | Next::Stop | Next::Fail(_)) = self.start_commit(state).await {
                return Ok(next);
            }
        }
        // Released messages wait for the batch before them to be confirmed.
        if let Err(error) = self.send(&mut state.outbox, &mut state.control).await {
            warn!(%error, n_messages = state.outbox.n_waiting(), "Failed to publish; reconnecting.");
            return Ok(Next::Reconnect);
        }
        Ok(Next::Go)
    }

    /// Waits for the next thing to do: a command, worker events, a confirmed batch, a
    /// heartbeat, a lease check or a timer.
    async fn wait(&mut self, state: &mut LoopState, shutdown: &CancellationToken, now: Millis) -> Next {
        let LoopState {
            link,
            outbox,
            batch,
            lease_ticks,
            committing,
            ..
        } = state;
        let Some(current) = link.as_mut() else {
            return Next::Reconnect;
        };
        let timer = self
            .engine
            .next_timer()
            .map(|due| Duration::from_millis(due.0.saturating_sub(now.0)));
        let mut commit_done = None;
        let next = tokio::select! {
            _ = shutdown.cancelled() => Next::Stop,
            persisted = Commit::wait(committing) => {
                commit_done = Some(persisted);
                Next::Go
            }
            command = self.commands.recv() => match command {
                Some(command) => {
                    self.handle(command);
                    Next::Go
                }
                None => Next::Stop,
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
                    self.handle_events(batch).await;
                    Next::Go
                }
                Err(error) => {
                    warn!(%error, "Lost the results queue; reconnecting.");
                    Next::Reconnect
                }
            },
            sent = outbox.confirmed() => match sent {
                Ok(()) => {
                    self.fail_refused(outbox);
                    Next::Go
                }
                Err(error) => {
                    warn!(%error, n_messages = outbox.n_waiting(), "Failed to publish tasks; reconnecting.");
                    Next::Reconnect
                }
            },
            heartbeat = recv_optional(&mut current.heartbeats) => match heartbeat {
                Ok(delivery) => {
                    self.handle_heartbeat(delivery).await;
                    Next::Go
                }
                Err(error) => {
                    warn!(%error, "Lost the heartbeats topic; reconnecting.");
                    Next::Reconnect
                }
            },
            _ = lease_ticks.tick(), if self.fleet.is_some() => {
                self.expire_leases();
                Next::Go
            }
            _ = tokio::time::sleep(timer.unwrap_or(Duration::from_secs(3600))), if timer.is_some() => Next::Go,
        };
        while let Ok(command) = self.commands.try_recv() {
            self.handle(command);
        }
        match commit_done {
            Some(Ok(())) => self.committed(state).await,
            Some(Err(error)) => Next::Fail(error),
            None => next,
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

    /// Every workflow's progress in the engine now.
    fn progress_now(&self) -> Progress {
        let mut running = self.engine.running_tasks(handle::NAMED_RUNNING);
        self.workflows
            .iter()
            .filter_map(|id| {
                let state = self.engine.workflow_state(id)?;
                let counts = self.engine.task_counts(id)?;
                let lent = self.engine.lent_tasks(id);
                let running = running.remove(id).unwrap_or_default();
                let progress = WorkflowProgress {
                    state,
                    counts,
                    lent,
                    running,
                };
                Some((id.clone(), progress))
            })
            .collect()
    }
}

/// Receives from the consumer if there is one; never resolves otherwise.
async fn recv_optional(consumer: &mut Option<Box<dyn Consumer>>) -> Result<Delivery, TransportError> {
    match consumer {
        Some(consumer) => consumer.recv().await,
        None => std::future::pending().await,
    }
}
