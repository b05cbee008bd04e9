//! What arrives from the fleet: worker events on the results queue (applied to the engine,
//! unusable ones dead-lettered), heartbeats (the fleet's capacity, and attempts to adopt,
//! move or stop), and leases that lapse.

use bytes::Bytes;
use taskfleet_common::wire::{self, AttemptRef, ControlMessage, WorkerEvent, WIRE_VERSION};
use taskfleet_engine::Report;
use taskfleet_transport::Delivery;
use tracing::{debug, info, warn};

use super::{now, Scheduler};

impl Scheduler {
    fn count_dead_letter(&self) {
        if let Some(metrics) = &self.config.metrics {
            metrics.dead_lettered();
        }
    }

    /// Feeds a batch of worker events to the engine; unusable ones are dead-lettered and
    /// removed from the batch.
    pub(super) async fn handle_events(&mut self, batch: &mut Vec<Delivery>) {
        let now = now();
        let mut kept = Vec::with_capacity(batch.len());
        for delivery in batch.drain(..) {
            if let Some(reason) = delivery.oversized(wire::MAX_EVENTS_MESSAGE_BYTES, "results message") {
                warn!(%reason, "Dead-lettering an oversized results message unread.");
                self.count_dead_letter();
                if let Err(error) = delivery.dead_letter(&reason).await {
                    warn!(%error, "Failed to dead-letter a results message; it will be delivered again.");
                }
                continue;
            }
            let events = match wire::decode_worker_events(&delivery.payload) {
                Ok(events) => events,
                Err(error) => {
                    warn!(%error, "Dead-lettering an unusable worker event.");
                    self.count_dead_letter();
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
                            // after a newer attempt went out), or one of a cancelled workflow:
                            // it must not run.
                            info!(%ignored, worker = %started.worker, workflow_id = %started.workflow_id, task_idx = started.task_idx, attempt = started.attempt, "Stopping an attempt that must not run.");
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

    pub(super) async fn handle_heartbeat(&mut self, delivery: Delivery) {
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
    pub(super) fn cancel_attempt(&mut self, workflow_id: &str, task_idx: u32, attempt: u32) {
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

    pub(super) fn expire_leases(&mut self) {
        let Some(fleet) = self.fleet.as_mut() else { return };
        let now = now();
        let lost = fleet.expire(now);
        if lost.is_empty() {
            return;
        }
        for worker in &lost {
            let n_attempts = self.engine.on_worker_lost(worker, now);
            if n_attempts > 0 {
                if let Some(metrics) = &self.config.metrics {
                    metrics.lease_expired();
                }
                warn!(worker = %worker, n_attempts, "Worker lost its lease; its attempts will run again.");
            } else {
                debug!(worker = %worker, "Worker left the fleet.");
            }
        }
        self.engine.set_fleet(&fleet.view(), now);
        self.fleet_view.send_replace(fleet.workers());
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
