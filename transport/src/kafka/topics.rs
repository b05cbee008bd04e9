//! Topics on the brokers: created through the admin API when missing (never assumed), their
//! partition counts cached, and a queue's backlog read from its group's committed offsets.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::logging::Logging;
use super::KafkaConfig;
use crate::TransportError;

/// How long a broadcast topic keeps what was sent: subscribers read only what is new.
const BROADCAST_RETENTION_MS: &str = "600000";
/// How long to wait for a created topic to show its partitions in the metadata.
const CREATED_PATIENCE: Duration = Duration::from_secs(10);

pub(super) struct Topics {
    config: KafkaConfig,
    admin: AdminClient<Logging>,
    /// A group-less client for metadata and watermarks.
    metadata: Arc<BaseConsumer<Logging>>,
    known: Mutex<HashMap<String, Known>>,
    /// One client per group whose committed offsets were asked for.
    offset_readers: Mutex<HashMap<String, Arc<BaseConsumer<Logging>>>>,
}

struct Known {
    partitions: i32,
    /// The partition the next message without one goes to.
    next: usize,
}

impl Topics {
    pub(super) fn new(config: &KafkaConfig) -> Result<Topics, TransportError> {
        let admin = client(config, config.client_properties())?;
        let metadata = client(config, config.client_properties())?;
        Ok(Topics {
            config: config.clone(),
            admin,
            metadata: Arc::new(metadata),
            known: Mutex::new(HashMap::new()),
            offset_readers: Mutex::new(HashMap::new()),
        })
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<String, Known>> {
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Checks that a broker answers.
    pub(super) async fn reachable(&self) -> Result<(), TransportError> {
        let metadata = self.metadata.clone();
        let timeout = self.config.request_timeout;
        let shown = self.config.shown();
        blocking(move || metadata.fetch_metadata(None, timeout).map(|_| ()))
            .await
            .map_err(|error| TransportError::Unavailable {
                reason: format!("no Kafka broker answered at {shown}: {error}"),
            })
    }

    /// Creates the topics of `queues` that do not exist yet, with `partitions` each.
    pub(super) async fn create(&self, queues: &[String], partitions: i32) -> Result<(), TransportError> {
        let missing: Vec<&String> = {
            let known = self.known();
            queues.iter().filter(|queue| !known.contains_key(*queue)).collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let replication = self.config.replication;
        let new_topics: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|topic| NewTopic::new(topic, partitions, TopicReplication::Fixed(replication)))
            .collect();
        self.create_topics(&new_topics).await?;
        for topic in missing {
            self.wait_for(topic).await?;
        }
        Ok(())
    }

    /// Creates the one-partition topic of a broadcast if it does not exist yet.
    pub(super) async fn create_broadcast(&self, topic: &str) -> Result<(), TransportError> {
        if self.known().contains_key(topic) {
            return Ok(());
        }
        let replication = self.config.replication;
        let with_retention =
            NewTopic::new(topic, 1, TopicReplication::Fixed(replication)).set("retention.ms", BROADCAST_RETENTION_MS);
        if let Err(TransportError::Rejected { reason }) = self.create_topics(&[with_retention]).await {
            // A broker that does not take the setting still gets the topic, kept as it keeps any.
            tracing::debug!(%topic, %reason, "Creating a broadcast topic without its retention.");
            self.create_topics(&[NewTopic::new(topic, 1, TopicReplication::Fixed(replication))])
                .await?;
        }
        self.wait_for(topic).await
    }

    async fn create_topics(&self, topics: &[NewTopic<'_>]) -> Result<(), TransportError> {
        let options = AdminOptions::new().operation_timeout(Some(self.config.request_timeout));
        let results = self
            .admin
            .create_topics(topics, &options)
            .await
            .map_err(|error| self.unavailable("create topics", &error))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    let reason = format!(
                        "could not create the topic `{topic}` on {}: {code}",
                        self.config.shown()
                    );
                    return Err(match code {
                        RDKafkaErrorCode::InvalidTopic
                        | RDKafkaErrorCode::InvalidPartitions
                        | RDKafkaErrorCode::InvalidReplicationFactor
                        | RDKafkaErrorCode::InvalidConfig
                        | RDKafkaErrorCode::TopicAuthorizationFailed
                        | RDKafkaErrorCode::PolicyViolation => TransportError::Rejected { reason },
                        _ => TransportError::Unavailable { reason },
                    });
                }
            }
        }
        Ok(())
    }

    /// Waits until `topic` shows its partitions, and remembers how many.
    async fn wait_for(&self, topic: &str) -> Result<(), TransportError> {
        let started = Instant::now();
        loop {
            match self.lookup(topic).await? {
                Some(_) => return Ok(()),
                None if started.elapsed() < CREATED_PATIENCE => tokio::time::sleep(Duration::from_millis(20)).await,
                None => {
                    return Err(TransportError::Unavailable {
                        reason: format!(
                            "the topic `{topic}` was created on {} but shows no partitions",
                            self.config.shown()
                        ),
                    })
                }
            }
        }
    }

    /// The partitions of `topic` as the brokers say (and remembered), `None` when it does not
    /// exist.
    async fn lookup(&self, topic: &str) -> Result<Option<i32>, TransportError> {
        let metadata = self.metadata.clone();
        let timeout = self.config.request_timeout;
        let name = topic.to_string();
        let found = blocking(move || {
            let metadata = metadata.fetch_metadata(Some(&name), timeout)?;
            Ok(metadata
                .topics()
                .iter()
                .find(|entry| entry.name() == name && entry.error().is_none())
                .map(|entry| entry.partitions().len()))
        })
        .await
        .map_err(|error| self.unavailable(&format!("read the metadata of `{topic}`"), &error))?;
        let partitions = found
            .and_then(|count| i32::try_from(count).ok())
            .filter(|count| *count > 0);
        if let Some(partitions) = partitions {
            self.known()
                .entry(topic.to_string())
                .or_insert(Known { partitions, next: 0 })
                .partitions = partitions;
        }
        Ok(partitions)
    }

    /// The partitions of `topic`; `Rejected` when it was never created.
    pub(super) async fn partitions(&self, topic: &str) -> Result<i32, TransportError> {
        if let Some(known) = self.known().get(topic) {
            return Ok(known.partitions);
        }
        self.lookup(topic).await?.ok_or_else(|| TransportError::Rejected {
            reason: format!("no queue named `{topic}` has been declared"),
        })
    }

    /// The partition for the next message to `topic` that names none: round the partitions.
    pub(super) async fn next_partition(&self, topic: &str) -> Result<i32, TransportError> {
        loop {
            if let Some(entry) = self.known().get_mut(topic) {
                let partition = entry.next % usize::try_from(entry.partitions).unwrap_or(1);
                entry.next = entry.next.wrapping_add(1);
                return Ok(i32::try_from(partition).unwrap_or(0));
            }
            // Not known yet: looked up (and remembered), or `Rejected` if it does not exist.
            self.partitions(topic).await?;
        }
    }

    /// Messages of `queue` past what `group` committed, over all its partitions (those
    /// delivered and not yet settled count as waiting: Kafka knows no other state).
    pub(super) async fn backlog(&self, queue: &str, group: &str) -> Result<usize, TransportError> {
        let partitions = self.partitions(queue).await?;
        let reader = self.offset_reader(group)?;
        let timeout = self.config.request_timeout;
        let topic = queue.to_string();
        blocking(move || {
            let mut wanted = TopicPartitionList::new();
            for partition in 0..partitions {
                wanted.add_partition(&topic, partition);
            }
            let committed = reader.committed_offsets(wanted, timeout)?;
            let mut backlog = 0i64;
            for partition in 0..partitions {
                let (low, high) = reader.fetch_watermarks(&topic, partition, timeout)?;
                let from = match committed.find_partition(&topic, partition).map(|elem| elem.offset()) {
                    Some(Offset::Offset(offset)) => offset.max(low),
                    _ => low,
                };
                backlog += (high - from).max(0);
            }
            Ok(usize::try_from(backlog).unwrap_or(0))
        })
        .await
        .map_err(|error| self.unavailable(&format!("count the messages of `{queue}`"), &error))
    }

    fn offset_reader(&self, group: &str) -> Result<Arc<BaseConsumer<Logging>>, TransportError> {
        let mut readers = self.offset_readers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(reader) = readers.get(group) {
            return Ok(reader.clone());
        }
        let mut properties = self.config.client_properties();
        properties.push(("group.id".to_string(), group.to_string()));
        properties.push(("enable.auto.commit".to_string(), "false".to_string()));
        let reader: Arc<BaseConsumer<Logging>> = Arc::new(client(&self.config, properties)?);
        readers.insert(group.to_string(), reader.clone());
        Ok(reader)
    }

    /// Deletes every topic whose name starts with `prefix.`.
    pub(super) async fn delete_prefixed(&self, prefix: &str) -> Result<(), TransportError> {
        let metadata = self.metadata.clone();
        let timeout = self.config.request_timeout;
        let start = format!("{prefix}.");
        let names = blocking(move || {
            let metadata = metadata.fetch_metadata(None, timeout)?;
            Ok(metadata
                .topics()
                .iter()
                .map(|topic| topic.name().to_string())
                .filter(|name| name.starts_with(&start))
                .collect::<Vec<String>>())
        })
        .await
        .map_err(|error| self.unavailable("list topics", &error))?;
        if names.is_empty() {
            return Ok(());
        }
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let options = AdminOptions::new().operation_timeout(Some(self.config.request_timeout));
        self.admin
            .delete_topics(&refs, &options)
            .await
            .map_err(|error| self.unavailable("delete topics", &error))?;
        self.known().retain(|name, _| !names.contains(name));
        Ok(())
    }

    fn unavailable(&self, what: &str, error: &KafkaError) -> TransportError {
        TransportError::Unavailable {
            reason: format!("could not {what} on {}: {error}", self.config.shown()),
        }
    }
}

/// A librdkafka client of `properties`.
fn client<T: rdkafka::config::FromClientConfigAndContext<Logging>>(
    config: &KafkaConfig,
    properties: Vec<(String, String)>,
) -> Result<T, TransportError> {
    let mut client = ClientConfig::new();
    for (key, value) in properties {
        client.set(key, value);
    }
    client
        .create_with_context(Logging)
        .map_err(|error| TransportError::Rejected {
            reason: format!("could not create a Kafka client for {}: {error}", config.shown()),
        })
}

/// Runs a blocking librdkafka call off the runtime's threads.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, KafkaError> + Send + 'static,
) -> Result<T, KafkaError> {
    tokio::task::spawn_blocking(call)
        .await
        .unwrap_or(Err(KafkaError::Canceled))
}
