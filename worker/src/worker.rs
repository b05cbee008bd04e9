//! The worker loop: consumes the task queues of its pools, runs up to `concurrency` attempts at
//! once (high class before normal before low), reports `started` and `finished` events on the
//! results queue, and acks each delivery only once its result is safely published.

use std::collections::HashMap;
use std::future::poll_fn;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use anyhow::bail;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, instrument, warn};

use taskfleet_common::state::AttemptOutcome;
use taskfleet_common::wire::{
    decode_control, decode_task, encode, pack_worker_events, AttemptRef, AttemptStarted, ControlMessage, Heartbeat,
    TaskMessage, WorkerEvent, MAX_TASK_MESSAGE_BYTES, WIRE_VERSION,
};
use taskfleet_common::PriorityClass;
use taskfleet_transport::queues::QueueNames;
use taskfleet_transport::{Consumer, Delivery, Outgoing, Transport, TransportError};

use crate::execution::{execute, now};
use crate::handler::HandlerRegistry;
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
        }
    }

    /// How this worker runs child processes.
    pub fn process_config(&self) -> ProcessConfig {
        ProcessConfig {
            kill_grace: self.kill_grace,
            tail_bytes: self.tail_bytes,
            work_dir: self.work_dir.clone(),
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
    /// Events on their way to the results queue, published in batches by [`publish_batches`].
    events: mpsc::UnboundedSender<(Bytes, oneshot::Sender<Result<(), TransportError>>)>,
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
    /// closed on purpose stops it the same way; any other transport failure is an error,
    /// returned once running attempts were drained.
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
        // The worker's own queue (tasks a placement-aware policy sent to it) first, then the
        // pools' queues, most urgent class first, so scanning in order takes high before normal
        // before low.
        let task_queues: Vec<String> = std::iter::once(config.queues.worker(&config.name))
            .chain(PriorityClass::ALL.iter().flat_map(|class| {
                config
                    .pools
                    .iter()
                    .map(|pool| config.queues.tasks(pool, class.as_str()))
            }))
            .collect();
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
            events,
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

        let prefetch = u16::try_from(config.concurrency).unwrap_or(u16::MAX);
        let slots = Arc::new(Semaphore::new(config.concurrency));
        let tracker = TaskTracker::new();
        let mut consumers: Option<Vec<Box<dyn Consumer>>> = None;
        let mut delay = RECONNECT_FIRST;
        info!(worker = %config.name, pools = ?config.pools, concurrency = config.concurrency, "Worker started.");
        loop {
            let Some(current) = consumers.as_mut() else {
                match connect(&shared, &config, &task_queues, prefetch).await {
                    Ok(connected) => {
                        info!(worker = %config.name, "Worker consuming its task queues.");
                        consumers = Some(connected);
                        delay = RECONNECT_FIRST;
                    }
                    Err(TransportError::Closed) => break,
                    Err(error) => {
                        warn!(%error, retry_in = ?delay, "Cannot reach the transport; retrying.");
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(delay) => {}
                        }
                        delay = (delay * 2).min(RECONNECT_MAX);
                    }
                }
                continue;
            };
            let permit = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            };
            let delivery = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                delivery = next_delivery(current) => delivery,
            };
            match delivery {
                Ok(delivery) => {
                    tracker.spawn(handle_delivery(shared.clone(), delivery, permit));
                }
                Err(TransportError::Closed) => {
                    info!("The transport was closed; stopping.");
                    break;
                }
                Err(error) => {
                    warn!(%error, "Lost the task queues; reconnecting.");
                    consumers = None;
                }
            }
        }

        // Stop taking work; the consumers stay open so running attempts can still be settled.
        tracker.close();
        if !tracker.is_empty() {
            info!(running = tracker.len(), "Waiting for running tasks to finish.");
        }
        if tokio::time::timeout(config.drain_timeout, tracker.wait())
            .await
            .is_err()
        {
            warn!(running = tracker.len(), drain_timeout = ?config.drain_timeout, "Cancelling tasks still running after the drain timeout.");
            shared.abort.cancel();
            tracker.wait().await;
        }
        drop(consumers);
        stopped.cancel();
        background.close();
        background.wait().await;
        info!(worker = %config.name, "Worker stopped.");
        Ok(())
    }
}

/// First and longest wait between attempts to reach the transport.
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Declares the worker's queues and consumes its task queues, most urgent class first.
async fn connect(
    shared: &Shared,
    config: &WorkerConfig,
    task_queues: &[String],
    prefetch: u16,
) -> Result<Vec<Box<dyn Consumer>>, TransportError> {
    let mut declared = task_queues.to_vec();
    declared.push(config.queues.results());
    declared.push(config.queues.dead_letters());
    shared.transport.declare(&declared).await?;
    // One prefetch for all the task queues: the worker holds no more deliveries than it has
    // slots, whichever queues they come from.
    shared.transport.consume_group(task_queues, prefetch).await
}

/// Broadcasts a heartbeat every `interval` (and at once when shutdown starts, flagged
/// draining) until `stopped`.
async fn heartbeat_loop(
    shared: Arc<Shared>,
    config: WorkerConfig,
    interval: Duration,
    shutdown: CancellationToken,
    stopped: CancellationToken,
) {
    let topic = config.queues.heartbeats();
    let mut ticks = tokio::time::interval(interval);
    let mut announced_drain = false;
    loop {
        tokio::select! {
            _ = stopped.cancelled() => {
                // Say goodbye, so the scheduler stops counting this worker's slots at once.
                let goodbye = Heartbeat {
                    v: WIRE_VERSION,
                    worker: config.name.clone(),
                    pools: config.pools.clone(),
                    slots: 0,
                    speed: config.speed,
                    running: Vec::new(),
                    draining: true,
                    gone: true,
                    at: now(),
                };
                if let Err(error) = shared.transport.broadcast(&topic, encode(&goodbye).into()).await {
                    debug!(%error, "Failed to broadcast the last heartbeat.");
                }
                return;
            }
            _ = ticks.tick() => {}
            _ = shutdown.cancelled(), if !announced_drain => announced_drain = true,
        }
        let running: Vec<AttemptRef> = shared.running.lock().expect("running lock").keys().cloned().collect();
        let heartbeat = Heartbeat {
            v: WIRE_VERSION,
            worker: config.name.clone(),
            pools: config.pools.clone(),
            slots: u32::try_from(config.concurrency).unwrap_or(u32::MAX),
            speed: config.speed,
            running,
            draining: shutdown.is_cancelled(),
            gone: false,
            at: now(),
        };
        if let Err(error) = shared.transport.broadcast(&topic, encode(&heartbeat).into()).await {
            debug!(%error, "Failed to broadcast a heartbeat.");
        }
    }
}

/// Follows the control topic and stops attempts the scheduler cancels, until `stopped`.
async fn control_loop(shared: Arc<Shared>, topic: String, stopped: CancellationToken) {
    let mut delay = RECONNECT_FIRST;
    while !stopped.is_cancelled() {
        let mut consumer = match shared.transport.subscribe(&topic).await {
            Ok(consumer) => consumer,
            Err(error) => {
                debug!(%error, "Cannot subscribe to control messages; retrying.");
                tokio::select! {
                    _ = stopped.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(RECONNECT_MAX);
                continue;
            }
        };
        delay = RECONNECT_FIRST;
        loop {
            let delivery = tokio::select! {
                _ = stopped.cancelled() => return,
                delivery = consumer.recv() => delivery,
            };
            let Ok(delivery) = delivery else { break };
            match decode_control(&delivery.payload) {
                Ok(ControlMessage::Cancel { attempt, .. }) => {
                    if let Some(token) = shared.running.lock().expect("running lock").get(&attempt) {
                        info!(workflow_id = %attempt.workflow_id, task_idx = attempt.task_idx, attempt = attempt.attempt, "Cancelling a running task.");
                        token.cancel();
                    }
                }
                Err(error) => warn!(%error, "Ignoring an unusable control message."),
            }
            if let Err(error) = delivery.ack().await {
                debug!(%error, "Failed to ack a control message.");
            }
        }
    }
}

/// The next delivery, taking the first consumer's (the most urgent class) when several have
/// one ready. Cancellation-safe as long as the consumers' `recv` is.
async fn next_delivery(consumers: &mut [Box<dyn Consumer>]) -> Result<Delivery, TransportError> {
    for consumer in consumers.iter_mut() {
        if let Some(delivery) = consumer.try_recv() {
            return delivery;
        }
    }
    let mut receiving: Vec<_> = consumers.iter_mut().map(|consumer| consumer.recv()).collect();
    poll_fn(|cx| {
        for recv in receiving.iter_mut() {
            if let Poll::Ready(delivery) = recv.as_mut().poll(cx) {
                return Poll::Ready(delivery);
            }
        }
        Poll::Pending
    })
    .await
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
    let execution = execute(&task, &shared.handlers, &shared.process, &cancel);
    tokio::pin!(execution);
    // A task that ends quickly reports only its result (which carries its start); a longer one
    // reports that it started too, so the scheduler shows it running and ties it to this
    // worker's lease. Most short tasks thus cost one confirmed publish instead of two.
    let execution = tokio::select! {
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
    shared.running.lock().expect("running lock").remove(&attempt);
    if execution.outcome == AttemptOutcome::Cancelled && shared.abort.is_cancelled() {
        // Stopped by this worker's shutdown, not by anyone's decision about the task.
        info!("Requeueing a task stopped by the shutdown.");
        requeue(delivery).await;
        return;
    }
    debug!(outcome = ?execution.outcome, error = execution.error.as_deref(), "Task finished.");

    let finished = WorkerEvent::Finished(execution.into_result(&task, &shared.name));
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

/// Publishes an event to the results queue and waits for its confirm. Events of all running
/// attempts go out together: while one batch is being confirmed the next one gathers.
async fn publish(shared: &Shared, event: &WorkerEvent) -> Result<(), TransportError> {
    let (confirmed, confirmation) = oneshot::channel();
    shared
        .events
        .send((Bytes::from(encode(event)), confirmed))
        .map_err(|_| TransportError::Closed)?;
    confirmation.await.unwrap_or(Err(TransportError::Closed))
}

/// Most events published in one batch.
const MAX_EVENT_BATCH: usize = 256;
/// Most bytes of events packed into one results message (a single larger event goes alone).
const MAX_PACKED_BYTES: usize = 1 << 20;

/// Publishes queued events in batches until every sender is gone, telling each event's
/// attempt how its publish went.
async fn publish_batches(
    transport: Arc<dyn Transport>,
    queue: String,
    mut pending: mpsc::UnboundedReceiver<(Bytes, oneshot::Sender<Result<(), TransportError>>)>,
) {
    while let Some(first) = pending.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_EVENT_BATCH {
            match pending.try_recv() {
                Ok(event) => batch.push(event),
                Err(_) => break,
            }
        }
        // The events go together, packed into as few messages as their size allows.
        let mut messages = Vec::new();
        let mut start = 0;
        while start < batch.len() {
            let mut end = start + 1;
            let mut size = batch[start].0.len();
            while end < batch.len() && size + batch[end].0.len() < MAX_PACKED_BYTES {
                size += batch[end].0.len();
                end += 1;
            }
            let payload = match end - start {
                1 => batch[start].0.clone(),
                _ => Bytes::from(pack_worker_events(
                    batch[start..end].iter().map(|(payload, _)| &payload[..]),
                )),
            };
            messages.push(Outgoing::new(queue.clone(), payload));
            start = end;
        }
        let outcome = transport.publish(messages).await;
        for (_, confirmed) in batch {
            let result = match &outcome {
                Ok(()) => Ok(()),
                Err(TransportError::Closed) => Err(TransportError::Closed),
                Err(TransportError::Rejected { reason }) => Err(TransportError::Rejected { reason: reason.clone() }),
                Err(TransportError::Unavailable { reason }) => {
                    Err(TransportError::Unavailable { reason: reason.clone() })
                }
            };
            let _ = confirmed.send(result);
        }
    }
}

/// Requeues `delivery` after [`REQUEUE_DELAY`], or at once when the worker is aborting.
async fn requeue_later(shared: &Shared, delivery: Delivery) {
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

#[cfg(test)]
mod tests;
