//! The worker loop: consumes the task queues of its pools, runs up to `concurrency` attempts at
//! once (high class before normal before low), reports `started` and `finished` events on the
//! results queue, and acks each delivery only once its result is safely published.

use std::future::poll_fn;
use std::path::PathBuf;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, instrument, warn};

use taskfleet_common::state::AttemptOutcome;
use taskfleet_common::wire::{decode_task, encode, AttemptStarted, TaskMessage, WorkerEvent, WIRE_VERSION};
use taskfleet_common::PriorityClass;
use taskfleet_transport::queues::QueueNames;
use taskfleet_transport::{Consumer, Delivery, Outgoing, Transport, TransportError};

use crate::execution::{execute, now};
use crate::handler::HandlerRegistry;
use crate::process::ProcessConfig;

/// How long an attempt whose event could not be published waits before it is requeued, so a
/// transport that accepts deliveries but refuses results does not make the worker spin.
const REQUEUE_DELAY: Duration = Duration::from_secs(1);

/// How a worker runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerConfig {
    /// The worker's name, reported with every event.
    pub name: String,
    /// Pools whose task queues the worker consumes.
    pub pools: Vec<String>,
    /// Attempts run at once.
    pub concurrency: usize,
    pub queues: QueueNames,
    /// Time between SIGTERM and SIGKILL when a process is stopped.
    pub kill_grace: Duration,
    /// Bytes of standard output and of standard error kept per attempt (the last ones).
    pub tail_bytes: usize,
    /// Working directory of processes; `None` inherits the worker's.
    pub work_dir: Option<PathBuf>,
    /// How long running attempts may take to finish after shutdown before they are cancelled.
    pub drain_timeout: Duration,
}

impl WorkerConfig {
    /// A worker named `name` for the `default` pool, one attempt at a time.
    pub fn new(name: impl Into<String>) -> WorkerConfig {
        let process = ProcessConfig::default();
        WorkerConfig {
            name: name.into(),
            pools: vec!["default".to_string()],
            concurrency: 1,
            queues: QueueNames::default(),
            kill_grace: process.kill_grace,
            tail_bytes: process.tail_bytes,
            work_dir: process.work_dir,
            drain_timeout: Duration::from_secs(30),
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
    results_queue: String,
    transport: Arc<dyn Transport>,
    handlers: Arc<HandlerRegistry>,
    process: ProcessConfig,
    /// Cancelled when the drain timeout passed: running attempts stop and are requeued.
    abort: CancellationToken,
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
        // Most urgent class first, so scanning in order takes high before normal before low.
        let task_queues: Vec<String> = PriorityClass::ALL
            .iter()
            .flat_map(|class| {
                config
                    .pools
                    .iter()
                    .map(|pool| config.queues.tasks(pool, class.as_str()))
            })
            .collect();
        let mut declared = task_queues.clone();
        declared.push(config.queues.results());
        declared.push(config.queues.dead_letters());
        transport
            .declare(&declared)
            .await
            .context("could not declare the worker's queues")?;
        let prefetch = u16::try_from(config.concurrency).unwrap_or(u16::MAX);
        let mut consumers = Vec::with_capacity(task_queues.len());
        for queue in &task_queues {
            let consumer = transport
                .consume(queue, prefetch)
                .await
                .with_context(|| format!("could not consume `{queue}`"))?;
            consumers.push(consumer);
        }
        info!(worker = %config.name, pools = ?config.pools, concurrency = config.concurrency, "Worker started.");

        let shared = Arc::new(Shared {
            name: config.name.clone(),
            results_queue: config.queues.results(),
            transport,
            handlers,
            process: config.process_config(),
            abort: CancellationToken::new(),
        });
        let slots = Arc::new(Semaphore::new(config.concurrency));
        let tracker = TaskTracker::new();
        let ended = loop {
            let permit = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break Ok(()),
                permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            };
            let delivery = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break Ok(()),
                delivery = next_delivery(&mut consumers) => delivery,
            };
            match delivery {
                Ok(delivery) => {
                    tracker.spawn(handle_delivery(shared.clone(), delivery, permit));
                }
                Err(TransportError::Closed) => {
                    info!("The transport was closed; stopping.");
                    break Ok(());
                }
                Err(error) => break Err(error),
            }
        };

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
        info!(worker = %config.name, "Worker stopped.");
        ended.context("could not receive tasks")
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
    match decode_task(&delivery.payload) {
        Ok(task) => run_attempt(&shared, task, delivery).await,
        Err(error) => {
            warn!(%error, redelivered = delivery.redelivered, "Dead-lettering an unusable task message.");
            if let Err(error) = delivery.dead_letter(&error.to_string()).await {
                warn!(%error, "Failed to dead-letter a task message.");
            }
        }
    }
}

#[instrument(name = "task", skip_all, fields(workflow_id = %task.workflow_id, task = %task.task, attempt = task.attempt))]
async fn run_attempt(shared: &Shared, task: TaskMessage, delivery: Delivery) {
    let started = WorkerEvent::Started(AttemptStarted {
        v: WIRE_VERSION,
        workflow_id: task.workflow_id.clone(),
        task_idx: task.task_idx,
        attempt: task.attempt,
        worker: shared.name.clone(),
        at: now(),
    });
    if let Err(error) = publish(shared, &started).await {
        // The transport is in trouble: leave the attempt to whoever gets it next.
        warn!(%error, "Failed to publish that the task started; requeueing it.");
        requeue_later(shared, delivery).await;
        return;
    }

    let execution = execute(&task, &shared.handlers, &shared.process, &shared.abort).await;
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

async fn publish(shared: &Shared, event: &WorkerEvent) -> Result<(), TransportError> {
    let message = Outgoing::new(shared.results_queue.clone(), encode(event));
    shared.transport.publish(vec![message]).await
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
