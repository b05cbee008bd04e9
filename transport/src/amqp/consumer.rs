//! Consuming: each [`AmqpConsumer`] reads on a channel of its own, or shares one with the
//! other consumers of its group (prefetch then counts the group's unacked deliveries
//! together). Closing a channel hands its unacked deliveries back to their queues; the channel
//! closes when its last consumer is dropped. Each delivery has an [`AmqpAcker`] that settles
//! it on that channel.

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
use tracing::error;

use crate::{Acker, Consumer, DeadLetter, Delivery, Outgoing, TransportError};

/// How long settling a delivery may take before the connection is taken for lost.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long closing the channel of a dropped consumer may take.
pub(super) const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Deliveries from one queue (or one subscription).
pub(super) struct AmqpConsumer {
    stream: lapin::Consumer,
    /// The channel it reads on, closed when its last consumer is dropped.
    channel: Arc<ConsumerChannel>,
    /// The queue (or topic) the deliveries come from, named in dead letters.
    source: String,
    transport: Arc<Inner>,
}

/// A channel one or more consumers read on.
pub(super) struct ConsumerChannel {
    channel: Channel,
    /// Set when the channel is closed: its deliveries were handed back and cannot be settled.
    closed: Arc<AtomicBool>,
    transport: Arc<Inner>,
}

impl ConsumerChannel {
    /// Limits the unacked deliveries of all the channel's consumers together to `prefetch`.
    pub(super) async fn open(
        channel: Channel,
        prefetch: u16,
        what: &str,
        transport: Arc<Inner>,
    ) -> Result<Arc<ConsumerChannel>, TransportError> {
        // RabbitMQ reads `global` as "shared by every consumer on the channel".
        let options = BasicQosOptions { global: true };
        channel
            .basic_qos(prefetch.max(1), options)
            .await
            .map_err(|error| from_lapin(&error, format!("could not set the prefetch of `{what}`")))?;
        Ok(Arc::new(ConsumerChannel {
            channel,
            closed: Arc::new(AtomicBool::new(false)),
            transport,
        }))
    }
}

impl AmqpConsumer {
    /// Starts consuming `queue` on a channel of its own, with at most `prefetch` unacked
    /// deliveries.
    pub(super) async fn start(
        channel: Channel,
        queue: &str,
        prefetch: u16,
        source: &str,
        transport: Arc<Inner>,
    ) -> Result<AmqpConsumer, TransportError> {
        let channel = ConsumerChannel::open(channel, prefetch, source, transport).await?;
        AmqpConsumer::start_on(channel, queue, source).await
    }

    /// Starts consuming `queue` on a channel it may share with other consumers.
    pub(super) async fn start_on(
        channel: Arc<ConsumerChannel>,
        queue: &str,
        source: &str,
    ) -> Result<AmqpConsumer, TransportError> {
        let options = BasicConsumeOptions {
            no_ack: false,
            ..BasicConsumeOptions::default()
        };
        let stream = channel
            .channel
            .basic_consume(queue, "", options, FieldTable::default())
            .await
            .map_err(|error| from_lapin(&error, format!("could not consume `{source}`")))?;
        let transport = channel.transport.clone();
        Ok(AmqpConsumer {
            stream,
            channel,
            source: source.to_string(),
            transport,
        })
    }

    fn delivery(&self, next: Option<lapin::Result<lapin::message::Delivery>>) -> Result<Delivery, TransportError> {
        match next {
            Some(Ok(delivery)) => {
                let acker = AmqpAcker {
                    acker: delivery.acker,
                    source: self.source.clone(),
                    closed: self.channel.closed.clone(),
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

impl Drop for ConsumerChannel {
    /// Closes the channel, which hands its unacked deliveries back to their queues. The
    /// transport's next calls wait for the broker to confirm the close.
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
        let letter = DeadLetter::new(self.source.clone(), reason, payload);
        let queue = self.transport.topology.dead_letter_queue.clone();
        let encoded = letter.encode_within(self.transport.config.max_message_bytes);
        match self.transport.publish(vec![Outgoing::new(queue, encoded)]).await {
            Ok(()) => {}
            // Never hold a message that cannot be dead-lettered: it would take its
            // consumer's prefetch slot forever, and come back after every restart.
            Err(TransportError::Rejected { reason: refusal }) => {
                let size = letter.payload.len();
                let sha256 = crate::hex_sha256(&letter.payload);
                error!(source = %self.source, size, %sha256, %reason, %refusal, "Dropping a message the dead-letter queue refused.");
            }
            Err(error) => return Err(error),
        }
        self.ack().await
    }
}
