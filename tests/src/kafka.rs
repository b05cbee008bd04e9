//! The Kafka-protocol broker of the tests: `KAFKA_BROKERS` (`host:port[,host:port]`), by
//! default the local one `scripts/test.sh` starts on 127.0.0.1:9092.

use std::time::Duration;

use taskfleet_transport::KafkaConfig;

/// The brokers the tests use.
pub fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_string())
}

/// The `--broker` URL of the tests' brokers.
pub fn url() -> String {
    format!("kafka://{}", brokers())
}

/// The transport configuration of the tests: their brokers, four partitions per topic (more
/// than the consumers of any test, fewer than a production default), and a session timeout
/// short enough that a killed member's partitions move within seconds.
pub fn config() -> KafkaConfig {
    KafkaConfig {
        brokers: brokers(),
        partitions: 4,
        session_timeout: Duration::from_secs(6),
        request_timeout: Duration::from_secs(20),
        client_id: "taskfleet-tests".to_string(),
        ..KafkaConfig::default()
    }
}
