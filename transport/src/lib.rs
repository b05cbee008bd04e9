//! How taskfleet's scheduler and workers exchange messages: the [`Transport`] trait, its
//! implementations ([`MemoryTransport`] in-process, [`AmqpTransport`] on RabbitMQ,
//! [`KafkaTransport`] on Kafka-protocol brokers), and the
//! conformance suite every implementation passes.
//!
//! Delivery is at-least-once. A publish returns once the transport has taken responsibility
//! for the message (for a broker: once the publisher confirm arrived). A delivery stays owned by
//! its consumer until it is acked, nacked or dead-lettered; if the consumer goes away first, the
//! message is delivered again, flagged `redelivered`.

mod amqp;
pub mod conformance;
mod kafka;
mod memory;
pub mod queues;
mod reconnect;

use async_trait::async_trait;
use bytes::Bytes;

pub use amqp::baseline::raw_round_trips as amqp_raw_round_trips;
pub use amqp::{AmqpConfig, AmqpTransport, DEFAULT_AMQP_URL};
pub use kafka::baseline::raw_round_trips as kafka_raw_round_trips;
pub use kafka::{KafkaConfig, KafkaTransport, DEFAULT_KAFKA_URL, REASON_HEADER, SOURCE_HEADER};
pub use memory::MemoryTransport;
pub use reconnect::{consume_until, until_connected};
pub use taskfleet_common::wire::{hex_sha256, DeadLetter, Truncated, MAX_REASON_BYTES, TRUNCATED_KEEP_BYTES};

/// The largest message a transport carries unless configured otherwise: 128 MiB, RabbitMQ 3's
/// default `max_message_size` (RabbitMQ 4's is 16 MiB; set `AmqpConfig::max_message_bytes`).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 128 * 1024 * 1024;

/// Errors of a transport, named by what the caller should do about them.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The connection is gone or not there yet: reconnect (with backoff) and try again.
    #[error("transport unavailable: {reason}")]
    Unavailable { reason: String },
    /// The transport refused the request; retrying the same request will not help.
    #[error("transport rejected the request: {reason}")]
    Rejected { reason: String },
    /// The consumer or transport was closed on purpose.
    #[error("transport closed")]
    Closed,
}

/// A message queue transport.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Declares the queues (idempotently); publishing to an undeclared queue is an error.
    async fn declare(&self, queues: &[String]) -> Result<(), TransportError>;

    /// Publishes messages and returns once every one is safely taken (confirmed).
    /// Confirms are awaited together, not one message at a time. A batch holding a message
    /// larger than [`Transport::max_message_bytes`] is `Rejected` before anything is sent.
    async fn publish(&self, messages: Vec<Outgoing>) -> Result<(), TransportError>;

    /// The largest payload this transport carries, in bytes.
    fn max_message_bytes(&self) -> usize;

    /// Starts consuming `queue`, with at most `prefetch` unacknowledged deliveries at a time.
    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Box<dyn Consumer>, TransportError>;

    /// Starts consuming several queues with one prefetch budget: at most `prefetch`
    /// unacknowledged deliveries over all of them together (a worker's free slots). The
    /// consumers come back in the order of `queues`.
    async fn consume_group(&self, queues: &[String], prefetch: u16) -> Result<Vec<Box<dyn Consumer>>, TransportError>;

    /// Messages waiting in `queue` (not counting those delivered but unacked).
    async fn queue_len(&self, queue: &str) -> Result<usize, TransportError>;

    /// Up to `max` of the messages waiting in `queue`, oldest first, left where they are (to
    /// show the dead letters). A transport that cannot read a queue without taking from it
    /// says so as `Rejected`.
    async fn peek(&self, queue: &str, max: usize) -> Result<Vec<Bytes>, TransportError> {
        let _ = max;
        Err(TransportError::Rejected {
            reason: format!("this transport cannot show what waits in `{queue}` without taking it"),
        })
    }

    /// Sends `payload` to every current subscriber of `topic` (heartbeats, control messages).
    /// Nothing is kept for subscribers that come later; a topic without subscribers drops it.
    /// A payload over [`Transport::max_message_bytes`] is `Rejected`.
    async fn broadcast(&self, topic: &str, payload: Bytes) -> Result<(), TransportError>;

    /// Subscribes to `topic`: the consumer receives what is broadcast from now on. Deliveries
    /// are acked like queue deliveries; the subscription ends when the consumer is dropped.
    async fn subscribe(&self, topic: &str) -> Result<Box<dyn Consumer>, TransportError>;

    /// Lets consumers already dropped finish what they owe the broker (for Kafka: the final
    /// offset commits, leaving the group), for at most a few seconds; for a service about to
    /// exit. Nothing to do by default.
    async fn finish(&self) {}
}

/// A message to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub queue: String,
    pub payload: Bytes,
}

impl Outgoing {
    pub fn new(queue: impl Into<String>, payload: impl Into<Bytes>) -> Outgoing {
        Outgoing {
            queue: queue.into(),
            payload: payload.into(),
        }
    }
}

/// A stream of deliveries from one queue.
#[async_trait]
pub trait Consumer: Send {
    /// Waits for the next delivery.
    async fn recv(&mut self) -> Result<Delivery, TransportError>;

    /// The next delivery if one is ready now, without waiting.
    fn try_recv(&mut self) -> Option<Result<Delivery, TransportError>>;
}

/// One delivered message. Settle it with [`Delivery::ack`], [`Delivery::nack`] or
/// [`Delivery::dead_letter`]; dropping it unsettled leaves it to be delivered again when its
/// consumer closes.
pub struct Delivery {
    pub payload: Bytes,
    /// Whether this message was delivered before and not acked.
    pub redelivered: bool,
    /// The ordered lane of its queue the message came through. Messages of one lane come out
    /// in the order they went in; a queue with one lane (RabbitMQ, in memory) is wholly
    /// ordered, one split into partitions (Kafka) only within each partition.
    pub lane: u32,
    acker: Box<dyn Acker>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("len", &self.payload.len())
            .field("redelivered", &self.redelivered)
            .field("lane", &self.lane)
            .finish()
    }
}

impl Delivery {
    /// Builds a delivery; for transport implementations.
    pub fn new(payload: Bytes, redelivered: bool, acker: Box<dyn Acker>) -> Delivery {
        Delivery {
            payload,
            redelivered,
            lane: 0,
            acker,
        }
    }

    /// The same delivery, from `lane` of its queue.
    pub fn with_lane(mut self, lane: u32) -> Delivery {
        self.lane = lane;
        self
    }

    /// The message is done with; it will not be delivered again.
    pub async fn ack(self) -> Result<(), TransportError> {
        self.acker.ack().await
    }

    /// The message was not handled; with `requeue` it goes back to the head of its queue.
    pub async fn nack(self, requeue: bool) -> Result<(), TransportError> {
        self.acker.nack(requeue).await
    }

    /// The message can never be handled: it moves to the dead-letter queue with `reason`.
    /// A message too large to go there whole goes truncated, with its size and digest (see
    /// [`DeadLetter::encode_within`]); one the dead-letter queue refuses even so is acked and
    /// logged, never left to block its consumer. An `Unavailable` error leaves it unsettled,
    /// to be delivered again.
    pub async fn dead_letter(self, reason: &str) -> Result<(), TransportError> {
        self.acker.dead_letter(self.payload.clone(), reason).await
    }

    /// A reason to dead-letter this delivery if it is larger than `limit`, the most its
    /// consumer accepts (`what` names the queue's messages, e.g. "task message").
    pub fn oversized(&self, limit: usize, what: &str) -> Option<String> {
        (self.payload.len() > limit).then(|| {
            format!(
                "a {what} of {} bytes is over the limit of {limit} bytes",
                self.payload.len()
            )
        })
    }
}

/// Checks that every message fits in `limit` bytes: `Rejected`, naming the first that does
/// not, otherwise. For transport implementations, before they send anything of a batch.
pub fn check_sizes(messages: &[Outgoing], limit: usize) -> Result<(), TransportError> {
    match messages.iter().find(|message| message.payload.len() > limit) {
        None => Ok(()),
        Some(message) => Err(TransportError::Rejected {
            reason: format!(
                "a message of {} bytes to `{}` is over the transport's limit of {limit} bytes",
                message.payload.len(),
                message.queue
            ),
        }),
    }
}

/// Settles one delivery; for transport implementations.
#[async_trait]
pub trait Acker: Send + Sync {
    async fn ack(&self) -> Result<(), TransportError>;
    async fn nack(&self, requeue: bool) -> Result<(), TransportError>;
    async fn dead_letter(&self, payload: Bytes, reason: &str) -> Result<(), TransportError>;
}
