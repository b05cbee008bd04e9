//! librdkafka's logs and errors as taskfleet logs them: reconnecting is librdkafka's own job,
//! so what it reports while retrying is a warning at most, and reaching the end of a partition
//! is not worth a line.

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::ClientContext;
use tracing::{debug, warn};

/// The context of taskfleet's librdkafka clients.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Logging;

impl ClientContext for Logging {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        report(&error, reason);
    }
}

impl ConsumerContext for Logging {}

/// Logs one librdkafka log line.
pub(super) fn log(level: RDKafkaLogLevel, facility: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error
        | RDKafkaLogLevel::Warning => warn!(target: "librdkafka", %facility, "{message}"),
        _ => debug!(target: "librdkafka", %facility, "{message}"),
    }
}

/// Logs an error librdkafka reports outside any call (it retries by itself).
pub(super) fn report(error: &KafkaError, reason: &str) {
    if matches!(
        error,
        KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
    ) {
        return;
    }
    warn!(target: "librdkafka", %error, "{reason}");
}
