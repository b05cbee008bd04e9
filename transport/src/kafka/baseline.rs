//! The raw Kafka baseline that taskfleet's fleet benchmark over Kafka is measured against:
//! rdkafka alone, with the durability taskfleet uses, and none of taskfleet's work.
//!
//! A sender produces requests (idempotent, `acks=all`, about `in_flight` outstanding) to a
//! request topic; a responder in a consumer group reads them, produces a reply for each (as
//! pipelined) and commits, asynchronously every [`COMMIT_EVERY`] messages, the offsets of the
//! requests whose replies were delivered; the sender reads the replies in a group of its own.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::logging::Logging;
use super::KafkaConfig;
use crate::TransportError;

/// Messages between two offset commits of the responder.
const COMMIT_EVERY: usize = 100;

fn fail(error: impl std::fmt::Display) -> TransportError {
    TransportError::Unavailable {
        reason: format!("raw Kafka round-trip baseline: {error}"),
    }
}

fn client<T: rdkafka::config::FromClientConfigAndContext<Logging>>(
    properties: Vec<(String, String)>,
) -> Result<T, TransportError> {
    let mut client = ClientConfig::new();
    for (key, value) in properties {
        client.set(key, value);
    }
    client.create_with_context(Logging).map_err(fail)
}

/// Sends `n_messages` of `payload` through a request topic and back through a reply topic,
/// keeping about `in_flight` outstanding; returns the time until every reply was received.
pub async fn raw_round_trips(
    config: &KafkaConfig,
    n_messages: usize,
    in_flight: usize,
    payload: &[u8],
) -> Result<Duration, TransportError> {
    let suffix = format!("{}-{:08x}", std::process::id(), rand_suffix());
    let (requests, replies) = (
        format!("taskfleet-baseline-requests-{suffix}"),
        format!("taskfleet-baseline-replies-{suffix}"),
    );
    let admin: AdminClient<Logging> = client(config.client_properties())?;
    let replication = config.replication;
    let topics = [
        NewTopic::new(&requests, config.partitions, TopicReplication::Fixed(replication)),
        NewTopic::new(&replies, config.partitions, TopicReplication::Fixed(replication)),
    ];
    admin.create_topics(&topics, &AdminOptions::new()).await.map_err(fail)?;
    let producer: FutureProducer<Logging> = client(config.producer_properties())?;
    let responder: StreamConsumer<Logging> = client(config.consumer_properties(&format!("{requests}.group")))?;
    let reader: StreamConsumer<Logging> = client(config.consumer_properties(&format!("{replies}.group")))?;
    responder.subscribe(&[&requests]).map_err(fail)?;
    reader.subscribe(&[&replies]).map_err(fail)?;

    let respond = async {
        // Replies are pipelined like the requests; a request's offset is committed once its
        // reply's delivery report is in.
        let mut pending = std::collections::VecDeque::with_capacity(in_flight);
        let mut done = TopicPartitionList::new();
        let mut since_commit = 0;
        for idx in 0..n_messages {
            let message = responder.recv().await.map_err(fail)?;
            let record: FutureRecord<'_, (), [u8]> =
                FutureRecord::to(&replies).payload(message.payload().unwrap_or_default());
            let delivery = producer.send_result(record).map_err(|(error, _)| fail(error))?;
            pending.push_back((delivery, message.partition(), message.offset()));
            while pending.len() >= in_flight || (idx + 1 == n_messages && !pending.is_empty()) {
                let (delivery, partition, offset) = pending.pop_front().expect("in flight");
                delivery.await.map_err(fail)?.map_err(|(error, _)| fail(error))?;
                done.add_partition_offset(&requests, partition, Offset::Offset(offset + 1))
                    .map_err(fail)?;
                since_commit += 1;
                if since_commit >= COMMIT_EVERY {
                    since_commit = 0;
                    responder.commit(&done, CommitMode::Async).map_err(fail)?;
                }
            }
        }
        Ok::<(), TransportError>(())
    };
    let started = Instant::now();
    let send = async {
        let mut pending = std::collections::VecDeque::with_capacity(in_flight);
        for idx in 0..n_messages {
            let record: FutureRecord<'_, (), [u8]> = FutureRecord::to(&requests)
                .payload(payload)
                .partition(partition_of(idx, config.partitions));
            let delivery = producer.send_result(record).map_err(|(error, _)| fail(error))?;
            pending.push_back(delivery);
            if pending.len() >= in_flight {
                let delivery = pending.pop_front().expect("in flight");
                delivery.await.map_err(fail)?.map_err(|(error, _)| fail(error))?;
            }
        }
        for delivery in pending {
            delivery.await.map_err(fail)?.map_err(|(error, _)| fail(error))?;
        }
        Ok::<(), TransportError>(())
    };
    let read = async {
        for _ in 0..n_messages {
            reader.recv().await.map_err(fail)?;
        }
        Ok::<(), TransportError>(())
    };
    let (sent, responded, received) = tokio::join!(send, respond, read);
    sent?;
    responded?;
    received?;
    let elapsed = started.elapsed();
    let names = [requests.as_str(), replies.as_str()];
    let _ = admin.delete_topics(&names, &AdminOptions::new()).await;
    Ok(elapsed)
}

fn partition_of(idx: usize, partitions: i32) -> i32 {
    i32::try_from(idx % usize::try_from(partitions.max(1)).unwrap_or(1)).unwrap_or(0)
}

fn rand_suffix() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    nanos ^ std::process::id().rotate_left(16)
}
