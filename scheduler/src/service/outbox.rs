//! The [`Outbox`]: task messages on their way to the broker, published one batch at a time in
//! the background while the scheduler loop goes on.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use taskfleet_transport::{Outgoing, Transport, TransportError};

use taskfleet_engine::policy::TaskRef;

/// A message waiting to be published, with the attempt it carries.
#[derive(Clone)]
struct Queued {
    message: Outgoing,
    task: TaskRef,
    attempt: u32,
}

/// What publishing a batch came to: the positions (in the batch) of the messages the
/// transport refused for good, with its reasons.
type Refusals = Vec<(usize, String)>;

/// A batch being published and confirmed in the background.
type Publishing = tokio::task::JoinHandle<Result<Refusals, TransportError>>;

/// Task messages on their way to the broker. One batch at a time is published and confirmed
/// in the background while the loop goes on handling events; the next batch gathers
/// meanwhile, so the order of messages is kept and confirms never stall the loop. A batch
/// that fails goes back to the head of the waiting messages, to be published again.
///
/// A batch the transport refuses (`Rejected`: retrying it unchanged cannot help) is published
/// again one message at a time, and the messages refused alone are set aside with the reason
/// ([`Outbox::take_refused`]), for their attempts to fail: one unpublishable message never
/// holds up the others.
#[derive(Default)]
pub(super) struct Outbox {
    waiting: Vec<Queued>,
    /// The batch being published, kept to publish again if it fails.
    sending: Option<(Vec<Queued>, Publishing)>,
    /// Queues declared on the current connection.
    declared: HashSet<String>,
    /// Attempts whose message was refused, with the reason.
    refused: Vec<(TaskRef, u32, String)>,
    /// When the batch on its way was handed to the transport.
    sending_since: Option<std::time::Instant>,
    /// How long each batch confirmed since the last call to [`Outbox::take_latencies`] took.
    latencies: Vec<std::time::Duration>,
}

impl Outbox {
    /// Queues the message of `attempt` of `task`.
    pub(super) fn push(&mut self, message: Outgoing, task: TaskRef, attempt: u32) {
        self.waiting.push(Queued { message, task, attempt });
    }

    /// Queues every message `other` holds behind this one's (emptying it).
    pub(super) fn append(&mut self, other: &mut Outbox) {
        self.waiting.append(&mut other.waiting);
    }

    /// Messages not yet on their way.
    pub(super) fn n_waiting(&self) -> usize {
        self.waiting.len()
    }

    /// The attempts whose messages the transport refused since the last call.
    pub(super) fn take_refused(&mut self) -> Vec<(TaskRef, u32, String)> {
        std::mem::take(&mut self.refused)
    }

    /// Publishes the waiting messages in the background, unless a batch is already on its way.
    pub(super) async fn start(&mut self, transport: &Arc<dyn Transport>) -> Result<(), TransportError> {
        if self.sending.is_some() || self.waiting.is_empty() {
            return Ok(());
        }
        let new_queues: Vec<String> = self
            .waiting
            .iter()
            .map(|queued| queued.message.queue.clone())
            .filter(|queue| !self.declared.contains(queue))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if !new_queues.is_empty() {
            transport.declare(&new_queues).await?;
            self.declared.extend(new_queues);
        }
        let batch = std::mem::take(&mut self.waiting);
        let transport = transport.clone();
        let messages: Vec<Outgoing> = batch.iter().map(|queued| queued.message.clone()).collect();
        let begun = std::time::Instant::now();
        let mut publishing: Pin<Box<dyn Future<Output = Result<Refusals, TransportError>> + Send>> =
            Box::pin(publish_isolating_refusals(transport, messages));
        // A transport that takes messages at once (in memory) is done here; a broker's
        // confirms are awaited in the background.
        match std::future::poll_fn(|cx| Poll::Ready(publishing.as_mut().poll(cx))).await {
            Poll::Ready(outcome) => {
                self.settle(batch, outcome)?;
                self.latencies.push(begun.elapsed());
            }
            Poll::Pending => {
                self.sending = Some((batch, tokio::spawn(publishing)));
                self.sending_since = Some(begun);
            }
        }
        Ok(())
    }

    /// How long each batch confirmed since the last call took, from handing it over.
    pub(super) fn take_latencies(&mut self) -> Vec<std::time::Duration> {
        std::mem::take(&mut self.latencies)
    }

    /// Waits until the batch on its way is confirmed (never resolves when there is none).
    pub(super) async fn confirmed(&mut self) -> Result<(), TransportError> {
        let Some((_, publishing)) = self.sending.as_mut() else {
            return std::future::pending().await;
        };
        let outcome = match publishing.await {
            Ok(outcome) => outcome,
            Err(error) => Err(TransportError::Unavailable {
                reason: format!("publishing stopped: {error}"),
            }),
        };
        let Some((batch, _)) = self.sending.take() else {
            return outcome.map(drop);
        };
        let since = self.sending_since.take();
        self.settle(batch, outcome)?;
        self.latencies.extend(since.map(|since| since.elapsed()));
        Ok(())
    }

    /// Records how publishing `batch` went: refused messages are set aside, and a batch that
    /// failed goes back to the head of the queue.
    fn settle(&mut self, batch: Vec<Queued>, outcome: Result<Refusals, TransportError>) -> Result<(), TransportError> {
        match outcome {
            Ok(refusals) => {
                for (position, reason) in refusals {
                    let queued = &batch[position];
                    self.refused.push((queued.task, queued.attempt, reason));
                }
                Ok(())
            }
            Err(error) => {
                self.waiting.splice(0..0, batch);
                Err(error)
            }
        }
    }

    /// A new connection: queues must be declared again, and a batch on its way over the old
    /// one is published again.
    pub(super) fn reconnected(&mut self) {
        self.declared.clear();
        if let Some((batch, publishing)) = self.sending.take() {
            publishing.abort();
            self.waiting.splice(0..0, batch);
        }
    }
}

/// Publishes `messages` as one batch; if the transport refuses it, publishes its halves, and
/// their halves, until the messages it refuses alone are found (a few rounds, not one publish
/// per message), and returns their positions and reasons. Messages of a refused batch that went
/// through anyway may be published twice: delivery is at least once, results are fenced.
async fn publish_isolating_refusals(
    transport: Arc<dyn Transport>,
    messages: Vec<Outgoing>,
) -> Result<Refusals, TransportError> {
    let mut refusals = Vec::new();
    // Ranges still to publish, the next one last.
    let mut ranges = vec![(0, messages.len())];
    while let Some((start, end)) = ranges.pop() {
        match transport.publish(messages[start..end].to_vec()).await {
            Ok(()) => {}
            Err(TransportError::Rejected { reason }) if end - start == 1 => refusals.push((start, reason)),
            Err(TransportError::Rejected { .. }) => {
                let middle = start + (end - start) / 2;
                ranges.push((middle, end));
                ranges.push((start, middle));
            }
            Err(error) => return Err(error),
        }
    }
    Ok(refusals)
}

#[cfg(test)]
mod tests;
