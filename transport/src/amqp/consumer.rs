//! Consuming: each [`AmqpConsumer`] has a channel of its own (prefetch is per channel, and
//! closing the channel hands its unacked deliveries back to the queue), and each delivery an
//! [`AmqpAcker`] that settles it on that channel.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::protocol::constants::REPLY_SUCCESS;
use lapin::types::FieldTable;
use lapin::Channel;

use super::error::from_lapin;
use super::Inner;
use crate::{Acker, Consumer, DeadLetter, Delivery, Outgoing, TransportError};

/// How long settling a delivery may take before the connection is taken for lost.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long closing the channel of a dropped consumer may take.
pub(super) const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Deliveries from one queue (or one subscription), on a channel of its own.
pub(super) struct AmqpConsumer {
    stream: lapin::Consumer,
    /// The consumer's own channel, closed when the consumer is dropped.
    channel: Channel,
    /// The queue (or topic) the deliveries come from, named in dead letters.
    source: String,
    closed: Arc<AtomicBool>,
    transport: Arc<Inner>,
}

impl AmqpConsumer {
    /// Starts consuming `queue` on `channel`, with at most `prefetch` unacked deliveries.
    pub(super) async fn start(
        channel: Channel,
        queue: &str,
        prefetch: u16,
        source: &str,
        transport: Arc<Inner>,
    ) -> Result<AmqpConsumer, TransportError> {
        channel
            .basic_qos(prefetch.max(1), BasicQosOptions::default())
            .await
            .map_err(|error| from_lapin(&error, format!("could not set the prefetch of `{source}`")))?;
        let options = BasicConsumeOptions {
            no_ack: false,
            ..BasicConsumeOptions::default()
        };
        let stream = channel
            .basic_consume(queue, "", options, FieldTable::default())
            .await
            .map_err(|error| from_lapin(&error, format!("could not consume `{source}`")))?;
        Ok(AmqpConsumer {
            stream,
            channel,
            source: source.to_string(),
            closed: Arc::new(AtomicBool::new(false)),
            transport,
        })
    }

    fn delivery(&self, next: Option<lapin::Result<lapin::message::Delivery>>) -> Result<Delivery, TransportError> {
        match next {
            Some(Ok(delivery)) => {
                let acker = AmqpAcker {
                    acker: delivery.acker,
                    source: self.source.clone(),
                    closed: self.closed.clone(),
                    transport: self.transport.clone(),
                };
                Ok(Delivery::new(
                    Bytes::from(delivery.data),
                    delivery.redelivered,
                    Box::new(acker),
                ))
            }
            Some(Err(error)) => Err(TransportError::Unavailable {
                reason: format!(
                    "the consumer of `{}` stopped: {}",
                    self.source,
                    super::error::describe(&error)
                ),
            }),
            None => Err(TransportError::Unavailable {
                reason: format!("the broker cancelled the consumer of `{}`", self.source),
            }),
        }
    }
}

#[async_trait]
impl Consumer for AmqpConsumer {
    async fn recv(&mut self) -> Result<Delivery, TransportError> {
        let next = self.stream.next().await;
        self.delivery(next)
    }

    fn try_recv(&mut self) -> Option<Result<Delivery, TransportError>> {
        let next = self.stream.next().now_or_never()?;
        Some(self.delivery(next))
    }
}

impl Drop for AmqpConsumer {
    /// Closes the channel, which hands its unacked deliveries back to the queue. The transport's
    /// next calls wait for the broker to confirm the close.
    fn drop(&mut self) {
        self.closed.store(true, Ordering::SeqCst);
        // Without a runtime, lapin still closes the channel once its last handle is dropped.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let channel = self.channel.clone();
        let pending = self.transport.pending_closes.start();
        runtime.spawn(async move {
            let closing = channel.close(REPLY_SUCCESS, "consumer dropped");
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, closing).await;
            drop(pending);
        });
    }
}

/// Settles one delivery on the channel of the consumer that received it.
struct AmqpAcker {
    acker: lapin::acker::Acker,
    source: String,
    /// Set when the consumer is gone: its deliveries were handed back and cannot be settled.
    closed: Arc<AtomicBool>,
    transport: Arc<Inner>,
}

impl AmqpAcker {
    async fn settle(
        &self,
        what: &str,
        settling: impl Future<Output = lapin::Result<()>>,
    ) -> Result<(), TransportError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(TransportError::Closed);
        }
        match tokio::time::timeout(SETTLE_TIMEOUT, settling).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) if self.closed.load(Ordering::SeqCst) => Err(TransportError::Closed),
            Ok(Err(error)) => Err(from_lapin(
                &error,
                format!("could not {what} a delivery from `{}`", self.source),
            )),
            Err(_) => Err(TransportError::Unavailable {
                reason: format!(
                    "could not {what} a delivery from `{}`: no answer within {SETTLE_TIMEOUT:?}",
                    self.source
                ),
            }),
        }
    }
}

#[async_trait]
impl Acker for AmqpAcker {
    async fn ack(&self) -> Result<(), TransportError> {
        self.settle("ack", self.acker.ack(BasicAckOptions::default())).await
    }

    async fn nack(&self, requeue: bool) -> Result<(), TransportError> {
        let options = BasicNackOptions {
            requeue,
            multiple: false,
        };
        self.settle("nack", self.acker.nack(options)).await
    }

    async fn dead_letter(&self, payload: Bytes, reason: &str) -> Result<(), TransportError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(TransportError::Closed);
        }
        let letter = DeadLetter {
            source_queue: self.source.clone(),
            reason: reason.to_string(),
            payload,
        };
        let queue = self.transport.topology.dead_letter_queue.clone();
        self.transport
            .publish(vec![Outgoing::new(queue, letter.encode())])
            .await?;
        self.ack().await
    }
}
