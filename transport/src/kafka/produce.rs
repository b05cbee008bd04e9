//! Publishing: one idempotent producer with `acks=all`; a batch is handed to librdkafka whole
//! and counts as sent once every message's delivery report is in.

use std::time::Duration;

use bytes::Bytes;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use super::logging::Logging;
use super::KafkaConfig;
use crate::TransportError;

/// How long to let librdkafka's queue drain when it is full before handing it more.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(2);

/// One message to produce.
pub(super) struct Record {
    pub(super) topic: String,
    /// The partition; `None` lets the transport pick the next one round the topic.
    pub(super) partition: Option<i32>,
    payload: Bytes,
    headers: Vec<(&'static str, Vec<u8>)>,
}

impl Record {
    pub(super) fn new(topic: String, payload: Bytes) -> Record {
        Record {
            topic,
            partition: None,
            payload,
            headers: Vec::new(),
        }
    }

    pub(super) fn partition(mut self, partition: i32) -> Record {
        self.partition = Some(partition);
        self
    }

    pub(super) fn header(mut self, key: &'static str, value: Vec<u8>) -> Record {
        self.headers.push((key, value));
        self
    }

    fn owned_headers(&self) -> Option<OwnedHeaders> {
        if self.headers.is_empty() {
            return None;
        }
        let mut headers = OwnedHeaders::new_with_capacity(self.headers.len());
        for (key, value) in &self.headers {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_slice()),
            });
        }
        Some(headers)
    }
}

/// The transport's producer.
pub(super) struct Producer {
    producer: FutureProducer<Logging>,
    brokers: String,
}

impl Producer {
    pub(super) fn new(config: &KafkaConfig) -> Result<Producer, TransportError> {
        let mut client = ClientConfig::new();
        for (key, value) in config.producer_properties() {
            client.set(key, value);
        }
        let producer = client
            .create_with_context(Logging)
            .map_err(|error| TransportError::Rejected {
                reason: format!("could not create a Kafka producer for {}: {error}", config.shown()),
            })?;
        Ok(Producer {
            producer,
            brokers: config.shown(),
        })
    }

    /// Produces every record and waits for all their delivery reports; the first failure
    /// is the batch's.
    pub(super) async fn send_all(&self, records: Vec<Record>) -> Result<(), TransportError> {
        let mut pending: Vec<DeliveryFuture> = Vec::with_capacity(records.len());
        for record in &records {
            let headers = record.owned_headers();
            let mut future_record: FutureRecord<'_, (), [u8]> =
                FutureRecord::to(&record.topic).payload(record.payload.as_ref());
            if let Some(partition) = record.partition {
                future_record = future_record.partition(partition);
            }
            if let Some(headers) = headers {
                future_record = future_record.headers(headers);
            }
            loop {
                match self.producer.send_result(future_record) {
                    Ok(delivery) => {
                        pending.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                        future_record = returned;
                        tokio::time::sleep(QUEUE_FULL_PAUSE).await;
                    }
                    Err((error, _)) => return Err(self.failure(&record.topic, &error)),
                }
            }
        }
        let mut first_failure = None;
        for (delivery, record) in pending.into_iter().zip(&records) {
            let failure = match delivery.await {
                Ok(Ok(_)) => continue,
                Ok(Err((error, _))) => self.failure(&record.topic, &error),
                Err(_) => TransportError::Unavailable {
                    reason: format!("the producer for {} went away", self.brokers),
                },
            };
            first_failure.get_or_insert(failure);
        }
        first_failure.map_or(Ok(()), Err)
    }

    /// Waits for the messages librdkafka still holds to be delivered.
    pub(super) async fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || rdkafka::producer::Producer::flush(&producer, timeout))
            .await
            .unwrap_or(Err(KafkaError::Canceled))
    }

    fn failure(&self, topic: &str, error: &KafkaError) -> TransportError {
        let reason = format!("could not publish to `{topic}` on {}: {error}", self.brokers);
        match error.rdkafka_error_code() {
            Some(
                RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::UnknownPartition
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidRecord,
            ) => TransportError::Rejected { reason },
            _ => TransportError::Unavailable { reason },
        }
    }
}
