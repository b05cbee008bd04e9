//! How taskfleet's scheduler and workers exchange messages: the [`Transport`] trait, its
//! implementations ([`MemoryTransport`] in-process, [`AmqpTransport`] on RabbitMQ), and the
//! conformance suite every implementation passes.
//!
//! Delivery is at-least-once. A publish returns once the transport has taken responsibility
//! for the message (for a broker: once the publisher confirm arrived). A delivery stays owned by
//! its consumer until it is acked, nacked or dead-lettered; if the consumer goes away first, the
//! message is delivered again, flagged `redelivered`.

mod amqp;
pub mod conformance;
mod memory;
pub mod queues;

use async_trait::async_trait;
use bytes::Bytes;

pub use amqp::baseline::raw_round_trips as amqp_raw_round_trips;
pub use amqp::{AmqpConfig, AmqpTransport, DEFAULT_AMQP_URL};
pub use memory::MemoryTransport;

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
    /// Confirms are awaited together, not one message at a time.
    async fn publish(&self, messages: Vec<Outgoing>) -> Result<(), TransportError>;

    /// Starts consuming `queue`, with at most `prefetch` unacknowledged deliveries at a time.
    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Box<dyn Consumer>, TransportError>;

    /// Starts consuming several queues with one prefetch budget: at most `prefetch`
    /// unacknowledged deliveries over all of them together (a worker's free slots). The
    /// consumers come back in the order of `queues`.
    async fn consume_group(&self, queues: &[String], prefetch: u16) -> Result<Vec<Box<dyn Consumer>>, TransportError>;

    /// Messages waiting in `queue` (not counting those delivered but unacked).
    async fn queue_len(&self, queue: &str) -> Result<usize, TransportError>;

    /// Sends `payload` to every current subscriber of `topic` (heartbeats, control messages).
    /// Nothing is kept for subscribers that come later; a topic without subscribers drops it.
    async fn broadcast(&self, topic: &str, payload: Bytes) -> Result<(), TransportError>;

    /// Subscribes to `topic`: the consumer receives what is broadcast from now on. Deliveries
    /// are acked like queue deliveries; the subscription ends when the consumer is dropped.
    async fn subscribe(&self, topic: &str) -> Result<Box<dyn Consumer>, TransportError>;
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
    acker: Box<dyn Acker>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("len", &self.payload.len())
            .field("redelivered", &self.redelivered)
            .finish()
    }
}

impl Delivery {
    /// Builds a delivery; for transport implementations.
    pub fn new(payload: Bytes, redelivered: bool, acker: Box<dyn Acker>) -> Delivery {
        Delivery {
            payload,
            redelivered,
            acker,
        }
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
    pub async fn dead_letter(self, reason: &str) -> Result<(), TransportError> {
        self.acker.dead_letter(self.payload.clone(), reason).await
    }
}

/// Settles one delivery; for transport implementations.
#[async_trait]
pub trait Acker: Send + Sync {
    async fn ack(&self) -> Result<(), TransportError>;
    async fn nack(&self, requeue: bool) -> Result<(), TransportError>;
    async fn dead_letter(&self, payload: Bytes, reason: &str) -> Result<(), TransportError>;
}

/// A message in the dead-letter queue, with why it is there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    pub source_queue: String,
    pub reason: String,
    pub payload: Bytes,
}

impl DeadLetter {
    /// Encodes the dead letter as the payload stored in the dead-letter queue: a JSON header
    /// line with the source queue and reason, then the original payload as it was.
    pub fn encode(&self) -> Bytes {
        let mut out = format!(
            "{{\"source_queue\":{},\"reason\":{}}}\n",
            json_string(&self.source_queue),
            json_string(&self.reason)
        )
        .into_bytes();
        out.extend_from_slice(&self.payload);
        out.into()
    }

    /// Decodes what [`DeadLetter::encode`] wrote.
    pub fn decode(bytes: &[u8]) -> Option<DeadLetter> {
        let newline = bytes.iter().position(|&b| b == b'\n')?;
        let header = std::str::from_utf8(&bytes[..newline]).ok()?;
        let source_queue = json_field(header, "source_queue")?;
        let reason = json_field(header, "reason")?;
        Some(DeadLetter {
            source_queue,
            reason,
            payload: Bytes::copy_from_slice(&bytes[newline + 1..]),
        })
    }
}

fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Reads a string field written by [`json_string`] back from a one-line header.
fn json_field(header: &str, key: &str) -> Option<String> {
    let start = header.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let mut out = String::new();
    let mut chars = header[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'u' => {
                    let code: String = chars.by_ref().take(4).collect();
                    out.push(char::from_u32(u32::from_str_radix(&code, 16).ok()?)?);
                }
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letters_round_trip() {
        let letter = DeadLetter {
            source_queue: "tf.tasks.default.high".into(),
            reason: "unparsable message: expected value at \"line 1\"\n\\".into(),
            payload: Bytes::from_static(b"\x00garbage\nwith newline"),
        };
        assert_eq!(DeadLetter::decode(&letter.encode()), Some(letter));
    }
}
