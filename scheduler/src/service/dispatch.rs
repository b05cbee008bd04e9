//! From the engine's dispatches to the broker: encoding task messages into the outbox (a
//! message too large to send fails its attempt instead), publishing them with the control
//! messages, and failing the attempts whose messages the transport refused.

use bytes::Bytes;
use taskfleet_common::units::format_bytes;
use taskfleet_common::wire::{self, TaskMessage};
use taskfleet_common::Millis;
use taskfleet_engine::Dispatch;
use taskfleet_transport::{Outgoing, TransportError};
use tracing::{debug, warn};

use super::outbox::Outbox;
use super::{now, Scheduler};

impl Scheduler {
    /// Encodes the dispatched tasks into the outbox. A message too large for the transport
    /// is never queued: its attempt fails at once with the reason, so one task with huge
    /// inputs cannot hold up the messages behind it.
    pub(super) fn enqueue(&mut self, dispatches: Vec<Dispatch>, outbox: &mut Outbox, now: Millis) {
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
    pub(super) fn fail_refused(&mut self, outbox: &mut Outbox) {
        let now = now();
        for (task, attempt, reason) in outbox.take_refused() {
            warn!(task_idx = task.task_idx, attempt, %reason, "The transport refused a task message; failing the task.");
            let reason = format!("the task's message could not be sent: {reason}");
            if let Err(ignored) = self.engine.on_undeliverable(task, attempt, reason, now) {
                debug!(%ignored, "Refused attempt ignored.");
            }
        }
    }

    /// Starts publishing the waiting tasks if no batch is on its way, and broadcasts the
    /// waiting control messages; on failure everything stays queued for the next connection.
    pub(super) async fn send(&mut self, outbox: &mut Outbox, control: &mut Vec<Bytes>) -> Result<(), TransportError> {
        outbox.start(&self.transport).await?;
        self.fail_refused(outbox);
        while let Some(message) = control.first() {
            self.transport
                .broadcast(&self.config.queues.control(), message.clone())
                .await?;
            control.remove(0);
        }
        Ok(())
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
