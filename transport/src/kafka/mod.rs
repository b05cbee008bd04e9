//! The Kafka transport, [`KafkaTransport`]: queues as topics on Kafka-protocol brokers,
//! reached through librdkafka (the `rdkafka` crate).
//!
//! A queue is a topic of [`KafkaConfig::partitions`] partitions (a worker's own queue, read by
//! that worker alone in the order a plan sent it, has one), consumed by a consumer group
//! (`group_of`): the task queues of one pool (its three priority classes) share the pool's
//! group, so the workers of a pool are its members; every other queue has a group of its own
//! name. A broadcast topic has one partition, read from its end by a group-less consumer per
//! subscriber. The files split it by role: `config` (the URL), `topics` (creating topics and
//! reading their partitions and backlog), `produce` (idempotent, confirmed publishing),
//! `ledger` (how far a partition may be committed), `group` (consuming in a group: buffering,
//! priority, commits and rebalances), `subscription` (broadcast topics) and `logging`.

pub(crate) mod baseline;
mod config;
mod group;
mod ledger;
mod logging;
mod produce;
mod subscription;
mod topics;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

pub use self::config::{KafkaConfig, DEFAULT_KAFKA_URL};
use self::produce::{Producer, Record};
use self::topics::Topics;
use crate::queues::QueueNames;
use crate::{check_sizes, Consumer, Outgoing, Transport, TransportError};

/// The header naming why a message was dead-lettered.
pub const REASON_HEADER: &str = "taskfleet-reason";
/// The header naming the queue a dead letter came from.
pub const SOURCE_HEADER: &str = "taskfleet-source";
/// The header of a message handed back by a consumer (a nack with requeue, or a consumer
/// that closed holding it): it is a redelivery.
const REDELIVERED_HEADER: &str = "taskfleet-redelivered";

/// Queues as topics on Kafka-protocol brokers. Cloning shares the clients.
///
/// Publishing is idempotent with `acks=all`: a publish returns once every message's delivery
/// report arrived. Consumers commit offsets only up to the last contiguous settled message of
/// each partition, in batches, asynchronously; a consumer that dies uncommitted leaves its
/// messages to the group, which delivers them again. Messages are ordered within a partition
/// (the [`crate::Delivery::lane`]), not across a queue.
#[derive(Clone)]
pub struct KafkaTransport {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    config: KafkaConfig,
    names: QueueNames,
    topics: Topics,
    producer: Producer,
    /// The consumer threads still running, each holding a token until it has left its group.
    threads: tokio_util::task::TaskTracker,
}

/// How long [`Transport::finish`] waits for consumer threads to commit and leave.
const FINISH_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

impl KafkaTransport {
    /// Creates the clients of `config` and checks that a broker answers; `Unavailable` when
    /// none does within the request timeout, `Rejected` when librdkafka refuses the config.
    pub async fn connect(config: KafkaConfig, names: &QueueNames) -> Result<KafkaTransport, TransportError> {
        let transport = KafkaTransport::new(config, names)?;
        transport.inner.topics.reachable().await?;
        Ok(transport)
    }

    /// Creates the clients of `config` without waiting for a broker: calls fail with
    /// `Unavailable` until one answers (librdkafka reconnects by itself).
    pub fn new(config: KafkaConfig, names: &QueueNames) -> Result<KafkaTransport, TransportError> {
        let topics = Topics::new(&config)?;
        let producer = Producer::new(&config)?;
        Ok(KafkaTransport {
            inner: Arc::new(Inner {
                config,
                names: names.clone(),
                topics,
                producer,
                threads: tokio_util::task::TaskTracker::new(),
            }),
        })
    }

    /// Deletes every topic under the prefix. For tests and uninstalling.
    pub async fn delete_topics(&self) -> Result<(), TransportError> {
        self.inner.topics.delete_prefixed(self.inner.names.prefix()).await
    }
}

impl fmt::Debug for KafkaTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaTransport")
            .field("brokers", &self.inner.config.brokers)
            .field("prefix", &self.inner.names.prefix())
            .finish()
    }
}

/// The consumer group of `queue`: a pool's task queues (`<prefix>.tasks.<pool>.<class>`)
/// share `<prefix>.tasks.<pool>`; any other queue is a group of its own name.
pub(crate) fn group_of(names: &QueueNames, queue: &str) -> String {
    let tasks = format!("{}.tasks.", names.prefix());
    match queue.strip_prefix(&tasks).and_then(|rest| rest.rsplit_once('.')) {
        Some((pool, _class)) => format!("{tasks}{pool}"),
        None => queue.to_string(),
    }
}

impl Inner {
    /// Publishes `records`, each to a topic known to exist, and waits for every delivery
    /// report.
    async fn produce(&self, records: Vec<Record>) -> Result<(), TransportError> {
        let mut placed = Vec::with_capacity(records.len());
        for mut record in records {
            if record.partition.is_none() {
                record.partition = Some(self.topics.next_partition(&record.topic).await?);
            }
            placed.push(record);
        }
        self.producer.send_all(placed).await
    }

    /// Dead-letters `payload`, from `source`, with `reason` (in the letter and a header).
    async fn dead_letter(&self, source: &str, payload: Bytes, reason: &str) -> Result<(), TransportError> {
        let letter = crate::DeadLetter::new(source, reason, payload);
        let encoded = letter.encode_within(self.config.max_message_bytes);
        let record = Record::new(self.names.dead_letters(), encoded)
            .header(REASON_HEADER, truncate(reason, crate::MAX_REASON_BYTES))
            .header(SOURCE_HEADER, source.as_bytes().to_vec());
        match self.produce(vec![record]).await {
            Err(TransportError::Rejected { reason: refusal }) => {
                let size = letter.payload.len();
                let sha256 = crate::hex_sha256(&letter.payload);
                tracing::error!(%source, size, %sha256, %reason, %refusal, "Dropping a message the dead-letter topic refused.");
                Ok(())
            }
            other => other,
        }
    }

    /// Hands `payload` back to `topic` as a redelivery.
    async fn requeue(&self, topic: &str, payload: Bytes) -> Result<(), TransportError> {
        let record = Record::new(topic.to_string(), payload).header(REDELIVERED_HEADER, b"1".to_vec());
        self.produce(vec![record]).await
    }
}

fn truncate(text: &str, max: usize) -> Vec<u8> {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.as_bytes()[..end].to_vec()
}

#[async_trait]
impl Transport for KafkaTransport {
    async fn declare(&self, queues: &[String]) -> Result<(), TransportError> {
        // A worker's own queue has one reader, and a plan's order: one partition keeps it.
        let own = self.inner.names.worker("");
        let (workers, shared): (Vec<String>, Vec<String>) =
            queues.iter().cloned().partition(|queue| queue.starts_with(&own));
        self.inner.topics.create(&workers, 1).await?;
        self.inner.topics.create(&shared, self.inner.config.partitions).await
    }

    async fn publish(&self, messages: Vec<Outgoing>) -> Result<(), TransportError> {
        if messages.is_empty() {
            return Ok(());
        }
        check_sizes(&messages, self.inner.config.max_message_bytes)?;
        // Refused whole when a queue was never declared; each queue looked up once.
        let queues: std::collections::BTreeSet<&str> = messages.iter().map(|message| message.queue.as_str()).collect();
        for queue in queues {
            self.inner.topics.partitions(queue).await?;
        }
        let records = messages
            .into_iter()
            .map(|message| Record::new(message.queue, message.payload))
            .collect();
        self.inner.produce(records).await
    }

    fn max_message_bytes(&self) -> usize {
        self.inner.config.max_message_bytes
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Box<dyn Consumer>, TransportError> {
        let mut group = self.consume_group(&[queue.to_string()], prefetch).await?;
        Ok(group.remove(0))
    }

    async fn consume_group(&self, queues: &[String], prefetch: u16) -> Result<Vec<Box<dyn Consumer>>, TransportError> {
        for queue in queues {
            self.inner.topics.partitions(queue).await?;
        }
        group::start(self.inner.clone(), queues, prefetch).await
    }

    async fn queue_len(&self, queue: &str) -> Result<usize, TransportError> {
        let group = group_of(&self.inner.names, queue);
        self.inner.topics.backlog(queue, &group).await
    }

    async fn broadcast(&self, topic: &str, payload: Bytes) -> Result<(), TransportError> {
        check_sizes(
            &[Outgoing::new(topic, payload.clone())],
            self.inner.config.max_message_bytes,
        )?;
        self.inner.topics.create_broadcast(topic).await?;
        let record = Record::new(topic.to_string(), payload).partition(0);
        self.inner.producer.send_all(vec![record]).await
    }

    async fn subscribe(&self, topic: &str) -> Result<Box<dyn Consumer>, TransportError> {
        self.inner.topics.create_broadcast(topic).await?;
        subscription::start(&self.inner.config, topic, self.inner.threads.token()).await
    }

    async fn finish(&self) {
        self.inner.threads.close();
        if tokio::time::timeout(FINISH_PATIENCE, self.inner.threads.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                running = self.inner.threads.len(),
                "Kafka consumers still open after {FINISH_PATIENCE:?}; their last offsets may be read again."
            );
        }
        // Whatever the producer still holds (nothing a publish still waits for).
        let _ = self.inner.producer.flush(FINISH_PATIENCE).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pools_classes_share_its_group() {
        let names = QueueNames::new("tf");
        for class in ["high", "normal", "low"] {
            assert_eq!(group_of(&names, &names.tasks("gpu.a100", class)), "tf.tasks.gpu.a100");
        }
        assert_eq!(group_of(&names, &names.results()), "tf.results");
        assert_eq!(group_of(&names, &names.worker("w-1")), "tf.worker.w-1");
        assert_eq!(group_of(&names, "other.tasks.p.high"), "other.tasks.p.high");
    }

    #[test]
    fn reasons_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("héllo", 2), b"h");
        assert_eq!(truncate("hello", 10), b"hello");
    }
}
