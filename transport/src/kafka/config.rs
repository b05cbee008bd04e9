//! How [`super::KafkaTransport`] reaches the brokers ([`KafkaConfig`]), read from a
//! `kafka://host:9092[,host2:9092][?option=value&…]` URL.

use std::time::Duration;

/// The broker URL used in examples and tests: one local broker.
pub const DEFAULT_KAFKA_URL: &str = "kafka://127.0.0.1:9092";

/// Where and how [`super::KafkaTransport`] connects, and how it creates topics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaConfig {
    /// `host:port[,host:port…]`: librdkafka's `bootstrap.servers`.
    pub brokers: String,
    /// Partitions of each queue topic created (tasks, worker, results, submit, dead letters):
    /// the most consumers of one queue that can work at once. Broadcast topics have one.
    pub partitions: i32,
    /// Replicas of each topic created.
    pub replication: i32,
    /// The largest message published, in bytes. Kafka brokers refuse messages over their
    /// `message.max.bytes` (about 1 MiB by default); raise both together.
    pub max_message_bytes: usize,
    /// How long a consumer may go unheard before the group gives its partitions to others
    /// (`session.timeout.ms`).
    pub session_timeout: Duration,
    /// How long a publish may wait for its delivery report (`message.timeout.ms`), and a
    /// metadata or admin request for its answer.
    pub request_timeout: Duration,
    /// The client id the brokers see.
    pub client_id: String,
    /// Further librdkafka properties, passed as they are (`?linger.ms=5&socket.keepalive.enable=true`);
    /// they override taskfleet's own choices.
    pub options: Vec<(String, String)>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".to_string(),
            partitions: 8,
            replication: 1,
            max_message_bytes: 900 * 1024,
            session_timeout: Duration::from_secs(6),
            request_timeout: Duration::from_secs(30),
            client_id: "taskfleet".to_string(),
            options: Vec::new(),
        }
    }
}

impl KafkaConfig {
    /// Reads `kafka://host:port[,host:port…][?key=value&…]`. The keys `partitions`,
    /// `replication`, `max_message_bytes` and `session_timeout_ms` are taskfleet's; any other
    /// key is a librdkafka property.
    pub fn from_url(url: &str) -> Result<KafkaConfig, String> {
        let rest = url
            .strip_prefix("kafka://")
            .ok_or_else(|| format!("`{url}` is not a kafka:// URL"))?;
        let (hosts, query) = rest.split_once('?').unwrap_or((rest, ""));
        let hosts = hosts.trim_end_matches('/');
        if hosts.is_empty() {
            return Err(format!("`{url}` names no broker: use kafka://host:9092[,host2:9092]"));
        }
        if let Some(host) = hosts.split(',').find(|host| !valid_host(host)) {
            return Err(format!(
                "`{host}` in `{url}` is not a broker address: use host:port, comma-separated"
            ));
        }
        let mut config = KafkaConfig {
            brokers: hosts.to_string(),
            ..KafkaConfig::default()
        };
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("`{pair}` in `{url}` is not key=value"))?;
            let number = || -> Result<u64, String> {
                value
                    .parse::<u64>()
                    .map_err(|_| format!("`{key}` in `{url}` must be a whole number, not `{value}`"))
            };
            match key {
                "partitions" => config.partitions = positive_i32(number()?, key)?,
                "replication" => config.replication = positive_i32(number()?, key)?,
                "max_message_bytes" => {
                    config.max_message_bytes =
                        usize::try_from(number()?).map_err(|_| format!("`{key}` is too large"))?
                }
                "session_timeout_ms" => config.session_timeout = Duration::from_millis(number()?),
                // Rebalances are handled eagerly: every partition is given up, then assigned.
                "partition.assignment.strategy" if value.contains("cooperative") => {
                    return Err(format!(
                        "`{key}={value}` in `{url}` is not supported: use range or roundrobin"
                    ))
                }
                _ => config.options.push((key.to_string(), value.to_string())),
            }
        }
        Ok(config)
    }

    /// librdkafka's properties for every client, then `options` over them.
    pub(super) fn client_properties(&self) -> Vec<(String, String)> {
        let mut properties = vec![
            ("bootstrap.servers".to_string(), self.brokers.clone()),
            ("client.id".to_string(), self.client_id.clone()),
            ("allow.auto.create.topics".to_string(), "false".to_string()),
            (
                "socket.timeout.ms".to_string(),
                self.request_timeout.as_millis().to_string(),
            ),
            ("log_level".to_string(), "3".to_string()),
        ];
        properties.extend(self.options.iter().cloned());
        properties
    }

    /// The properties of the one producer: idempotent, every replica acknowledging.
    pub(super) fn producer_properties(&self) -> Vec<(String, String)> {
        let mut properties = vec![
            ("enable.idempotence".to_string(), "true".to_string()),
            ("acks".to_string(), "all".to_string()),
            ("linger.ms".to_string(), "1".to_string()),
            (
                "message.timeout.ms".to_string(),
                self.request_timeout.as_millis().to_string(),
            ),
            (
                "message.max.bytes".to_string(),
                (self.max_message_bytes + 64 * 1024).to_string(),
            ),
        ];
        properties.extend(self.client_properties());
        properties
    }

    /// The properties of a group consumer: offsets committed by taskfleet only.
    pub(super) fn consumer_properties(&self, group: &str) -> Vec<(String, String)> {
        let mut properties = vec![
            ("group.id".to_string(), group.to_string()),
            ("enable.auto.commit".to_string(), "false".to_string()),
            ("enable.auto.offset.store".to_string(), "false".to_string()),
            ("auto.offset.reset".to_string(), "earliest".to_string()),
            (
                "session.timeout.ms".to_string(),
                self.session_timeout.as_millis().to_string(),
            ),
            (
                "heartbeat.interval.ms".to_string(),
                (self.session_timeout.as_millis() / 6).max(100).to_string(),
            ),
            ("partition.assignment.strategy".to_string(), "range".to_string()),
            // New work reaches an idle member within this even from a broker that answers a
            // fetch only when its wait is over (nisshi does; Apache Kafka answers as soon as
            // data arrives, so there `?fetch.wait.max.ms=500` saves idle fetches).
            ("fetch.wait.max.ms".to_string(), "10".to_string()),
            (
                "fetch.message.max.bytes".to_string(),
                (self.max_message_bytes + 64 * 1024).to_string(),
            ),
        ];
        properties.extend(self.client_properties());
        properties
    }

    /// The brokers, for logs and errors (no credentials are ever part of them).
    pub fn shown(&self) -> String {
        format!("kafka://{}", self.brokers)
    }
}

fn positive_i32(value: u64, key: &str) -> Result<i32, String> {
    i32::try_from(value)
        .ok()
        .filter(|value| *value > 0)
        .ok_or_else(|| format!("`{key}` must be between 1 and {}", i32::MAX))
}

fn valid_host(host: &str) -> bool {
    let Some((name, port)) = host.rsplit_once(':') else {
        return false;
    };
    !name.is_empty() && port.parse::<u16>().is_ok_and(|port| port > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_brokers_and_options() {
        let config = KafkaConfig::from_url("kafka://k1:9092,k2:9093?partitions=16&replication=3&linger.ms=5").unwrap();
        assert_eq!(config.brokers, "k1:9092,k2:9093");
        assert_eq!((config.partitions, config.replication), (16, 3));
        assert_eq!(config.options, [("linger.ms".to_string(), "5".to_string())]);
        let properties = config.producer_properties();
        let linger: Vec<&str> = properties
            .iter()
            .filter(|(key, _)| key == "linger.ms")
            .map(|(_, value)| value.as_str())
            .collect();
        assert_eq!(linger, ["1", "5"], "the user's value comes last, so it wins");
    }

    #[test]
    fn refuses_what_is_not_a_broker_list() {
        for (url, needle) in [
            ("amqp://host:5672", "not a kafka:// URL"),
            ("kafka://", "names no broker"),
            ("kafka://host", "not a broker address"),
            ("kafka://host:0", "not a broker address"),
            ("kafka://host:9092?partitions=0", "between 1 and"),
            ("kafka://host:9092?partitions=many", "whole number"),
            ("kafka://host:9092?linger.ms", "not key=value"),
            (
                "kafka://host:9092?partition.assignment.strategy=cooperative-sticky",
                "not supported",
            ),
        ] {
            let error = KafkaConfig::from_url(url).unwrap_err();
            assert!(error.contains(needle), "{url}: {error}");
        }
        assert_eq!(
            KafkaConfig::from_url(DEFAULT_KAFKA_URL).unwrap().brokers,
            "127.0.0.1:9092"
        );
    }
}
