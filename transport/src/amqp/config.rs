//! How [`super::AmqpTransport`] reaches the broker ([`AmqpConfig`]), and the broker URL as it
//! may appear in logs and errors: without its password.

use std::fmt;
use std::time::Duration;

/// The broker URL used when none is given: a local RabbitMQ with its default account.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Where and how [`super::AmqpTransport`] connects. Queue and exchange names come from the
/// [`crate::queues::QueueNames`] given to [`super::AmqpTransport::connect`].
#[derive(Clone, PartialEq, Eq)]
pub struct AmqpConfig {
    /// `amqp://user:password@host:port/vhost`, where `%2f` is the default vhost `/`; URL
    /// parameters such as `?heartbeat=10` are passed to the client.
    pub url: String,
    /// How many confirm-mode channels publishes and declarations share. Each consumer has a
    /// channel of its own besides these.
    pub pool_size: usize,
    /// How long opening the connection (TCP and the AMQP handshake) may take.
    pub connect_timeout: Duration,
    /// The name the connection shows in the broker's management tools.
    pub connection_name: String,
    /// The largest message published, in bytes: the broker's `max_message_size` (128 MiB by
    /// default in RabbitMQ 3, 16 MiB in RabbitMQ 4). Larger ones are refused before they are
    /// sent, as the broker would close the channel on them.
    pub max_message_bytes: usize,
}

impl AmqpConfig {
    /// The defaults, with the broker at `url`.
    pub fn new(url: impl Into<String>) -> AmqpConfig {
        AmqpConfig {
            url: url.into(),
            ..AmqpConfig::default()
        }
    }

    /// The URL without its password, for logs and error messages.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

impl Default for AmqpConfig {
    fn default() -> Self {
        AmqpConfig {
            url: DEFAULT_AMQP_URL.to_string(),
            pool_size: 64,
            connect_timeout: Duration::from_secs(5),
            connection_name: "taskfleet".to_string(),
            max_message_bytes: crate::DEFAULT_MAX_MESSAGE_BYTES,
        }
    }
}

/// Shows the URL without its password, so a config can be logged.
impl fmt::Debug for AmqpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpConfig")
            .field("url", &self.redacted_url())
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("connection_name", &self.connection_name)
            .field("max_message_bytes", &self.max_message_bytes)
            .finish()
    }
}

/// `url` with the password of its user info removed: `amqp://user:secret@host/vhost` becomes
/// `amqp://user@host/vhost`. URLs without user info come back unchanged. A password that
/// breaks the URL syntax (an unescaped `/` or `@`) is removed all the same.
pub(crate) fn redact_url(url: &str) -> String {
    let authority_start = url.find("://").map_or(0, |idx| idx + 3);
    let rest = &url[authority_start..];
    let before_query = rest.find(['?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..before_query].rfind('@') else {
        return url.to_string();
    };
    let user = rest[..at].split(':').next().unwrap_or_default();
    format!("{}{user}@{}", &url[..authority_start], &rest[at + 1..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_removes_only_the_password() {
        for (url, expected) in [
            (
                "amqp://guest:guest@127.0.0.1:5672/%2f",
                "amqp://guest@127.0.0.1:5672/%2f",
            ),
            (
                "amqps://svc:p%40ss:w@rd@broker.internal/prod?heartbeat=10",
                "amqps://svc@broker.internal/prod?heartbeat=10",
            ),
            ("amqp://svc@host:5672", "amqp://svc@host:5672"),
            ("amqp://host:5672/%2f", "amqp://host:5672/%2f"),
            ("amqp://host/a@b", "amqp://host/a@b"),
            ("amqp://svc:pa/ss@host/%2f", "amqp://svc@host/%2f"),
            (
                "amqp://svc:secret@host/%2f?auth_mechanism=plain#x@y",
                "amqp://svc@host/%2f?auth_mechanism=plain#x@y",
            ),
            ("user:secret@host", "user@host"),
        ] {
            assert_eq!(redact_url(url), expected, "redacting {url}");
        }
    }

    #[test]
    fn debug_output_hides_the_password() {
        let config = AmqpConfig::new("amqp://guest:hunter2@127.0.0.1:5672/%2f");
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("127.0.0.1:5672"), "{shown}");
    }
}
