//! Broadcast topics: each subscriber is a group-less consumer of the topic's one partition,
//! assigned at the end it had when subscribing (so it reads only what is sent from then on),
//! polled by a thread of its own into a bounded channel. Settling is a no-op: nothing is
//! committed, and a subscription that ends forgets its place.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::mpsc;

use super::logging::Logging;
use super::KafkaConfig;
use crate::{Acker, Consumer, Delivery, TransportError};

/// Messages a subscriber may have read and not taken before its thread waits.
const BUFFERED: usize = 4096;
/// How long one poll waits, so the thread notices a subscriber gone.
const POLL: std::time::Duration = std::time::Duration::from_millis(100);

static SUBSCRIBERS: AtomicU64 = AtomicU64::new(0);

pub(super) async fn start(
    config: &KafkaConfig,
    topic: &str,
    running: tokio_util::task::task_tracker::TaskTrackerToken,
) -> Result<Box<dyn Consumer>, TransportError> {
    let mut client = ClientConfig::new();
    // A group id is only a name here: the consumer is assigned, never joins, never commits.
    let n = SUBSCRIBERS.fetch_add(1, Ordering::Relaxed);
    let group = format!("{topic}.subscriber.{}.{n}", std::process::id());
    for (key, value) in config.consumer_properties(&group) {
        client.set(key, value);
    }
    let consumer: BaseConsumer<Logging> =
        client
            .create_with_context(Logging)
            .map_err(|error| TransportError::Rejected {
                reason: format!("could not create a subscriber of `{topic}`: {error}"),
            })?;
    let timeout = config.request_timeout;
    let name = topic.to_string();
    let consumer = tokio::task::spawn_blocking(move || {
        let (_, high) = consumer.fetch_watermarks(&name, 0, timeout)?;
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(&name, 0, Offset::Offset(high))?;
        consumer.assign(&assignment)?;
        Ok::<BaseConsumer<Logging>, rdkafka::error::KafkaError>(consumer)
    })
    .await
    .map_err(|_| TransportError::Closed)?
    .map_err(|error| TransportError::Unavailable {
        reason: format!("could not subscribe to `{topic}` on {}: {error}", config.shown()),
    })?;
    let (sender, receiver) = mpsc::channel(BUFFERED);
    let thread_topic = topic.to_string();
    std::thread::Builder::new()
        .name(format!("kafka {topic}"))
        .spawn(move || {
            let _running = running;
            while !sender.is_closed() {
                let Some(Ok(message)) = consumer.poll(POLL) else {
                    continue;
                };
                let payload = Bytes::copy_from_slice(message.payload().unwrap_or_default());
                if sender.blocking_send(payload).is_err() {
                    break;
                }
            }
            tracing::trace!(topic = %thread_topic, "Subscription ended.");
            drop(consumer);
        })
        .map_err(|error| TransportError::Unavailable {
            reason: format!("could not start the subscriber thread of `{topic}`: {error}"),
        })?;
    Ok(Box::new(Subscription { receiver }))
}

struct Subscription {
    receiver: mpsc::Receiver<Bytes>,
}

fn delivery(payload: Bytes) -> Delivery {
    Delivery::new(payload, false, Box::new(Unsettled))
}

#[async_trait]
impl Consumer for Subscription {
    async fn recv(&mut self) -> Result<Delivery, TransportError> {
        self.receiver.recv().await.map(delivery).ok_or(TransportError::Closed)
    }

    fn try_recv(&mut self) -> Option<Result<Delivery, TransportError>> {
        match self.receiver.try_recv() {
            Ok(payload) => Some(Ok(delivery(payload))),
            Err(mpsc::error::TryRecvError::Empty) => None,
            Err(mpsc::error::TryRecvError::Disconnected) => Some(Err(TransportError::Closed)),
        }
    }
}

/// Broadcast deliveries need no settling.
struct Unsettled;

#[async_trait]
impl Acker for Unsettled {
    async fn ack(&self) -> Result<(), TransportError> {
        Ok(())
    }

    async fn nack(&self, _requeue: bool) -> Result<(), TransportError> {
        Ok(())
    }

    async fn dead_letter(&self, _payload: Bytes, _reason: &str) -> Result<(), TransportError> {
        Ok(())
    }
}
