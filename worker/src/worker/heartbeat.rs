//! What the worker says and hears beside its tasks: a heartbeat on the heartbeats topic (its
//! slots, speed, and the attempts it runs, which renews their leases), and cancellations on
//! the control topic.

use std::sync::Arc;
use std::time::Duration;

use taskfleet_common::wire::{decode_control, encode, AttemptRef, ControlMessage, Heartbeat, WIRE_VERSION};
use taskfleet_transport::{consume_until, Delivery};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Shared, WorkerConfig};
use crate::execution::now;

/// Broadcasts a heartbeat every `interval` (and at once when shutdown starts, flagged
/// draining) until `stopped`.
pub(super) async fn heartbeat_loop(
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
                    capacity: Default::default(),
                    in_use: Default::default(),
                    labels: Default::default(),
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
            capacity: config.capacity.clone(),
            in_use: config
                .capacity
                .is_some()
                .then(|| shared.in_use.lock().expect("in-use lock").clone()),
            labels: config.labels.clone(),
        };
        if let Err(error) = shared.transport.broadcast(&topic, encode(&heartbeat).into()).await {
            debug!(%error, "Failed to broadcast a heartbeat.");
        }
    }
}

/// Follows the control topic and stops attempts the scheduler cancels, until `stopped`.
pub(super) async fn control_loop(shared: Arc<Shared>, topic: String, stopped: CancellationToken) {
    let subscribe = || shared.transport.subscribe(&topic);
    let follow = |delivery: Delivery| async {
        match decode_control(&delivery.payload) {
            Ok(ControlMessage::Cancel { attempt, .. }) => {
                // Recorded first, so an attempt about to start sees it (see `run_attempt`).
                shared.cancelled.lock().expect("cancelled lock").insert(attempt.clone());
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
        true
    };
    consume_until("subscribe to control messages", &stopped, subscribe, follow).await;
}
