//! The worker loop: consumes the task queues of its pools, runs up to `concurrency` attempts at
//! once (high class before normal before low), reports `started` and `finished` events on the
//! results queue, and acks each delivery only once its result is safely published.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use tracing::{debug, info, instrument, warn};

use taskfleet_common::resources::ResourceSet;
use taskfleet_common::state::AttemptOutcome;
use taskfleet_common::wire::{
    decode_task, AttemptRef, AttemptStarted, TaskMessage, WorkerEvent, MAX_TASK_MESSAGE_BYTES, WIRE_VERSION,
};
use taskfleet_transport::queues::QueueNames;
use taskfleet_transport::{until_connected, Consumer, Delivery, Transport, TransportError};

use self::cancelled::Cancelled;
use self::gate::Gate;
use self::heartbeat::{control_loop, heartbeat_loop};
use self::queues::{connect, next_delivery, task_queues};
use self::results::{publish, publish_batches};
use crate::execution::{execute, now, Execution};
use crate::handler::HandlerRegistry;
use crate::limits::{Enforcer, RunAs};
use crate::process::ProcessConfig;

/// How long an attempt runs before the worker reports that it started.
const STARTED_EVENT_DELAY: Duration = Duration::from_millis(20);

/// How long an attempt whose event could not be published waits before it is requeued, so a
/// transport that accepts deliveries but refuses results does not make the worker spin.
const REQUEUE_DELAY: Duration = Duration::from_secs(1);

/// How a worker runs.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerConfig {
    /// The worker's name, reported with every event.
    pub name: String,
    /// Pools whose task queues the worker consumes.
    pub pools: Vec<String>,
    /// Attempts run at once.
    pub concurrency: usize,
    /// Relative speed announced in heartbeats, for placement-aware policies.
    pub speed: f64,
    pub queues: QueueNames,
    /// Time between SIGTERM and SIGKILL when a process is stopped.
    pub kill_grace: Duration,
    /// Bytes of standard output and of standard error kept per attempt (the last ones).
    pub tail_bytes: usize,
    /// Working directory of processes; `None` inherits the worker's.
    pub work_dir: Option<PathBuf>,
    /// How long running attempts may take to finish after shutdown before they are cancelled.
    pub drain_timeout: Duration,
    /// How often the worker broadcasts a heartbeat; `None` for workers in the scheduler's own
    /// process, whose capacity the scheduler already knows.
    pub heartbeat_interval: Option<Duration>,
    /// How tasks are put under their limits (see [`ProcessConfig::enforcer`]).
    pub enforcer: Option<Arc<Enforcer>>,
    /// The worker's environment variables tasks see.
    pub env_allow: Vec<String>,
    /// The user tasks run as (see [`ProcessConfig::run_as`]).
    pub run_as: Option<RunAs>,
    /// What the worker offers (announced in heartbeats with what its attempts asked for);
    /// `None` announces slots only.
    pub capacity: Option<ResourceSet>,
    /// Its labels, which tasks select (`arch: arm64`); a task whose selector they do not
    /// match is handed back for another worker.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Where it counts its attempts and slots (served by `taskfleet worker --metrics-listen`).
    pub metrics: Option<Arc<crate::WorkerMetrics>>,
}

impl WorkerConfig {
    /// A worker named `name` for the `default` pool, one attempt at a time.
    pub fn new(name: impl Into<String>) -> WorkerConfig {
        let process = ProcessConfig::default();
        WorkerConfig {
            name: name.into(),
            pools: vec!["default".to_string()],
            concurrency: 1,
            speed: 1.0,
            queues: QueueNames::default(),
            kill_grace: process.kill_grace,
            tail_bytes: process.tail_bytes,
            work_dir: process.work_dir,
            drain_timeout: Duration::from_secs(30),
            heartbeat_interval: Some(Duration::from_secs(1)),
            enforcer: process.enforcer,
            env_allow: process.env_allow,
            run_as: process.run_as,
            capacity: None,
            labels: Default::default(),
            metrics: None,
        }
    }

    /// How this worker runs child processes.
    pub fn process_config(&self) -> ProcessConfig {
        ProcessConfig {
            kill_grace: self.kill_grace,
            tail_bytes: self.tail_bytes,
            work_dir: self.work_dir.clone(),
            enforcer: self.enforcer.clone(),
            env_allow: self.env_allow.clone(),
            run_as: self.run_as.clone(),
            worker_name: self.name.clone(),
        }
    }
}

/// A worker: run it with [`Worker::run`].
pub struct Worker {
    config: WorkerConfig,
    transport: Arc<dyn Transport>,
    handlers: Arc<HandlerRegistry>,
}

/// What every attempt of a running worker shares.
struct Shared {
    name: String,
    transport: Arc<dyn Transport>,
    handlers: Arc<HandlerRegistry>,
    process: ProcessConfig,
    /// Cancelled when the drain timeout passed: running attempts stop and are requeued.
    abort: CancellationToken,
    /// The attempts running now, with the token that stops each (a cancellation).
    running: Mutex<HashMap<AttemptRef, CancellationToken>>,
    /// Attempts the scheduler cancelled, kept so that one still waiting in this worker's
    /// buffer (or delivered later) never starts.
    cancelled: Mutex<Cancelled>,
    /// What the running attempts asked for, together.
    in_use: Mutex<ResourceSet>,
    /// Admission by memory, GPUs and custom resources, when the worker announces a capacity.
    gate: Option<Arc<Gate>>,
    /// The worker's labels.
    labels: std::collections::BTreeMap<String, String>,
    /// Events on their way to the results queue, published in batches by [`publish_batches`].
    events: mpsc::UnboundedSender<(Bytes, oneshot::Sender<Result<(), TransportError>>)>,
    metrics: Option<Arc<crate::WorkerMetrics>>,
}

impl Worker {
    /// A worker that takes tasks from `transport` and runs handler tasks with `handlers`.
    pub fn new(config: WorkerConfig, transport: Arc<dyn Transport>, handlers: Arc<HandlerRegistry>) -> Worker {
        Worker {
            config,
            transport,
            handlers,
        }
    }

    /// Runs until `shutdown` is cancelled, then lets running attempts finish (for at most the
    /// drain timeout, after which they are cancelled and requeued) and returns. A transport
    /// closed on purpose stops it the same way.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Worker {
            config,
            transport,
            handlers,
        } = self;
        if config.concurrency == 0 {
            bail!("concurrency must be at least 1");
        }
        if config.pools.is_empty() {
            bail!("a worker needs at least one pool");
        }
        let (events, pending_events) = mpsc::unbounded_channel();
        tokio::spawn(publish_batches(
            transport.clone(),
            config.queues.results(),
            pending_events,
        ));
        let shared = Arc::new(Shared {
            name: config.name.clone(),
            transport,
            handlers,
            process: config.process_config(),
            abort: CancellationToken::new(),
            running: Mutex::new(HashMap::new()),
            cancelled: Mutex::new(Cancelled::default()),
            in_use: Mutex::new(ResourceSet::default()),
            gate: config.capacity.as_ref().map(|capacity| Arc::new(Gate::new(capacity))),
            labels: config.labels.clone(),
            events,
            metrics: config.metrics.clone(),
        });
        // Heartbeats and cancellations run beside the main loop until the drain is over.
        let stopped = CancellationToken::new();
        let background = TaskTracker::new();
        if let Some(interval) = config.heartbeat_interval {
            background.spawn(heartbeat_loop(
                shared.clone(),
                config.clone(),
                interval,
                shutdown.clone(),
                stopped.clone(),
            ));
            background.spawn(control_loop(shared.clone(), config.queues.control(), stopped.clone()));
        }
        info!(worker = %config.name, pools = ?config.pools, concurrency = config.concurrency, "Worker started.");
        let running = TaskTracker::new();
        // The consumers stay open while draining, so running attempts can still be settled.
        let consumers = take_work(&shared, &config, &running, &shutdown).await;
        drain(&shared, &running, config.drain_timeout).await;
        drop(consumers);
        stopped.cancel();
        background.close();
        background.wait().await;
        info!(worker = %config.name, "Worker stopped.");
        Ok(())
    }
}

/// Takes deliveries while a slot is free and runs each as an attempt on `running`, until
/// shutdown or until the transport is closed on purpose; reconnects with backoff when it is
/// lost. Returns the consumers it ends with.
async fn take_work(
    shared: &Arc<Shared>,
    config: &WorkerConfig,
    running: &TaskTracker,
    shutdown: &CancellationToken,
) -> Option<Vec<Box<dyn Consumer>>> {
    let task_queues = task_queues(config);
    let prefetch = u16::try_from(config.concurrency).unwrap_or(u16::MAX);
    let slots = Arc::new(Semaphore::new(config.concurrency));
    let mut consumers: Option<Vec<Box<dyn Consumer>>> = None;
    loop {
        let Some(current) = consumers.as_mut() else {
            let reach = || connect(shared, config, &task_queues, prefetch);
            consumers = Some(until_connected("reach the transport", shutdown, reach).await?);
            info!(worker = %config.name, "Worker consuming its task queues.");
            continue;
        };
        let permit = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return consumers,
            permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let delivery = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return consumers,
            delivery = next_delivery(current) => delivery,
        };
        match delivery {
            Ok(delivery) => {
                running.spawn(handle_delivery(shared.clone(), delivery, permit));
            }
            Err(TransportError::Closed) => {
                info!("The transport was closed; stopping.");
                return consumers;
            }
            Err(error) => {
                warn!(%error, "Lost the task queues; reconnecting.");
                consumers = None;
            }
        }
    }
}

/// Lets the running attempts finish, for at most `timeout`; then cancels them (they are
/// requeued, as stopped by the shutdown) and waits for them to settle.
async fn drain(shared: &Shared, running: &TaskTracker, timeout: Duration) {
    running.close();
    info!(
        running = running.len(),
        "Draining: taking no new tasks, waiting for the running ones to finish."
    );
    if tokio::time::timeout(timeout, running.wait()).await.is_err() {
        warn!(running = running.len(), drain_timeout = ?timeout, "Cancelling tasks still running after the drain timeout.");
        shared.abort.cancel();
        running.wait().await;
    }
}

/// Handles one delivery, holding `_permit` (a concurrency slot) until it is settled.
async fn handle_delivery(shared: Arc<Shared>, delivery: Delivery, _permit: OwnedSemaphorePermit) {
    if let Some(reason) = delivery.oversized(MAX_TASK_MESSAGE_BYTES, "task message") {
        warn!(%reason, "Dead-lettering an oversized task message unread.");
        if let Err(error) = delivery.dead_letter(&reason).await {
            warn!(%error, "Failed to dead-letter a task message; it will be delivered again.");
        }
        return;
    }
    match decode_task(&delivery.payload) {
        Ok(task) => run_attempt(&shared, task, delivery).await,
        Err(error) => {
            warn!(%error, redelivered = delivery.redelivered, "Dead-lettering an unusable task message.");
            if let Err(error) = delivery.dead_letter(&error.to_string()).await {
                warn!(%error, "Failed to dead-letter a task message; it will be delivered again.");
            }
        }
    }
}

#[instrument(name = "task", skip_all, fields(workflow_id = %task.workflow_id, task = %task.task, attempt = task.attempt))]
async fn run_attempt(shared: &Shared, task: TaskMessage, delivery: Delivery) {
    let started_at = now();
    let attempt = AttemptRef {
        workflow_id: task.workflow_id.clone(),
        task_idx: task.task_idx,
        attempt: task.attempt,
    };
    let cancel = shared.abort.child_token();
    shared
        .running
        .lock()
        .expect("running lock")
        .insert(attempt.clone(), cancel.clone());
    // Checked after the attempt is listed as running: a cancel arriving meanwhile either finds
    // it there or is found here (the control loop records a cancel before it looks).
    if shared.cancelled.lock().expect("cancelled lock").contains(&attempt) {
        shared.running.lock().expect("running lock").remove(&attempt);
        info!("Not starting a task that was cancelled while it waited.");
        let execution = Execution::ended(AttemptOutcome::Cancelled, "cancelled before it started", started_at);
        settle(shared, &task, execution, delivery).await;
        return;
    }
    // A task for workers with other labels goes back for one of them.
    if let Some((label, wanted)) = task
        .selector
        .iter()
        .find(|(label, wanted)| shared.labels.get(*label) != Some(*wanted))
    {
        shared.running.lock().expect("running lock").remove(&attempt);
        warn!(%label, %wanted, "The task selects workers with a label this one lacks; handing it back for another.");
        requeue_later(shared, delivery).await;
        return;
    }
    // Memory, GPUs and custom resources must fit what the running attempts leave.
    let admitted = match &shared.gate {
        None => None,
        Some(gate) => {
            let admitted = tokio::select! {
                admitted = gate.admit(&task.resources) => admitted,
                _ = cancel.cancelled() => {
                    shared.running.lock().expect("running lock").remove(&attempt);
                    if shared.abort.is_cancelled() {
                        requeue(delivery).await;
                    } else {
                        let execution = Execution::ended(AttemptOutcome::Cancelled, "cancelled before it started", started_at);
                        settle(shared, &task, execution, delivery).await;
                    }
                    return;
                }
            };
            match admitted {
                Ok(admitted) => Some(admitted),
                Err(shortfall) => {
                    shared.running.lock().expect("running lock").remove(&attempt);
                    warn!(%shortfall, "This worker can never run the task; handing it back for another.");
                    requeue_later(shared, delivery).await;
                    return;
                }
            }
        }
    };
    shared.in_use.lock().expect("in-use lock").add(&task.resources);
    if let Some(metrics) = &shared.metrics {
        metrics.started();
    }
    // The attempt's start, once admitted: the one both its events carry.
    let started_at = now();
    let execution = execute(&task, &shared.handlers, &shared.process, &cancel);
    tokio::pin!(execution);
    // A task that ends quickly reports only its result (which carries its start); a longer one
    // reports that it started too, so the scheduler shows it running and ties it to this
    // worker's lease. Most short tasks thus cost one confirmed publish instead of two.
    let mut execution = tokio::select! {
        biased;
        execution = &mut execution => execution,
        _ = tokio::time::sleep(STARTED_EVENT_DELAY) => {
            let started = WorkerEvent::Started(AttemptStarted {
                v: WIRE_VERSION,
                workflow_id: task.workflow_id.clone(),
                task_idx: task.task_idx,
                attempt: task.attempt,
                worker: shared.name.clone(),
                at: started_at,
            });
            if let Err(error) = publish(shared, &started).await {
                // The result will say it all, if it can be published.
                warn!(%error, "Failed to publish that the task started.");
            }
            execution.await
        }
    };
    execution.started_at = started_at;
    shared.running.lock().expect("running lock").remove(&attempt);
    shared.in_use.lock().expect("in-use lock").sub(&task.resources);
    if let Some(metrics) = &shared.metrics {
        metrics.stopped();
    }
    drop(admitted);
    if execution.outcome == AttemptOutcome::Cancelled && shared.abort.is_cancelled() {
        // Stopped by this worker's shutdown, not by anyone's decision about the task.
        info!("Requeueing a task stopped by the shutdown.");
        requeue(delivery).await;
        return;
    }
    debug!(outcome = ?execution.outcome, error = execution.error.as_deref(), "Task finished.");
    settle(shared, &task, execution, delivery).await;
}

/// Publishes how the attempt ended, then acks its delivery (or requeues it, later, when the
/// result cannot be published).
async fn settle(shared: &Shared, task: &TaskMessage, execution: Execution, delivery: Delivery) {
    let finished = WorkerEvent::Finished(execution.into_result(task, &shared.name));
    if let (Some(metrics), WorkerEvent::Finished(result)) = (&shared.metrics, &finished) {
        metrics.ended(result.outcome, result.finished_at.0.saturating_sub(result.started_at.0));
    }
    match publish(shared, &finished).await {
        Ok(()) => {
            if let Err(error) = delivery.ack().await {
                warn!(%error, "Failed to ack a finished task.");
            }
        }
        Err(error) => {
            warn!(%error, task = %task.task, attempt = task.attempt, "Failed to publish result.");
            requeue_later(shared, delivery).await;
        }
    }
}

/// Requeues `delivery` after [`REQUEUE_DELAY`], or at once when the worker is aborting.
async fn requeue_later(shared: &Shared, delivery: Delivery) {
    if let Some(metrics) = &shared.metrics {
        metrics.requeued();
    }
    tokio::select! {
        _ = tokio::time::sleep(REQUEUE_DELAY) => {}
        _ = shared.abort.cancelled() => {}
    }
    requeue(delivery).await;
}

async fn requeue(delivery: Delivery) {
    if let Err(error) = delivery.nack(true).await {
        warn!(%error, "Failed to requeue a task.");
    }
}

mod cancelled;
mod gate;
mod heartbeat;
mod queues;
mod results;
#[cfg(test)]
mod tests;
