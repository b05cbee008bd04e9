//! The connection to the broker and getting it back. The transport holds one [`Link`] (a
//! connection and its channel pool) at a time. A call that finds it dead opens a new one,
//! declares again everything declared so far, and goes on; while the broker stays away, calls
//! fail with `Unavailable` after a bounded wait (a growing delay between attempts, then at most
//! the connect timeout), so a caller retrying in a loop does not spin.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lapin::protocol::constants::REPLY_SUCCESS;
use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::channel::{channel_pool, ChannelPool, PooledChannel};
use super::consumer::CLOSE_TIMEOUT;
use super::error::describe;
use super::topology::declare_topic;
use super::Inner;
use crate::TransportError;

/// The delay before the first attempt after a failed one; it doubles up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);

/// One open connection and the channel pool on it.
#[derive(Clone)]
pub(super) struct Link {
    pub(super) connection: Arc<Connection>,
    pub(super) pool: ChannelPool,
    /// Set once the loss of this connection has been logged.
    lost: Arc<AtomicBool>,
}

/// The current link, and how connecting went lately.
#[derive(Default)]
pub(super) struct LinkState {
    current: Option<Link>,
    /// Failed attempts in a row.
    n_failures: u32,
    /// No attempt before this.
    retry_at: Option<Instant>,
    last_error: Option<String>,
}

impl Link {
    fn report_lost(&self, error: &dyn std::fmt::Display, redacted_url: &str) {
        if !self.lost.swap(true, Ordering::SeqCst) {
            warn!(%error, url = %redacted_url, "Lost the connection to the broker.");
        }
    }
}

impl Inner {
    /// The live link, reconnecting if the current one is dead. Waits first for the channels of
    /// dropped consumers to close.
    pub(super) async fn link(&self) -> Result<Link, TransportError> {
        self.pending_closes.wait(CLOSE_TIMEOUT).await;
        let seen_attempts = self.n_attempts.load(Ordering::SeqCst);
        let mut state = self.link.lock().await;
        if self.closed.load(Ordering::SeqCst) {
            return Err(TransportError::Closed);
        }
        if let Some(link) = &state.current {
            if link.connection.status().connected() {
                return Ok(link.clone());
            }
            let status = format!("{:?}", link.connection.status().state()).to_lowercase();
            link.report_lost(&format_args!("the connection is {status}"), &self.redacted_url);
            state.current = None;
        }
        if self.n_attempts.load(Ordering::SeqCst) != seen_attempts {
            // Another call tried to connect while this one waited for the lock, and failed.
            let reason = state.last_error.clone().unwrap_or_default();
            return Err(TransportError::Unavailable { reason });
        }
        if let Some(retry_at) = state.retry_at {
            tokio::time::sleep_until(retry_at).await;
        }
        self.n_attempts.fetch_add(1, Ordering::SeqCst);
        match self.open_link().await {
            Ok(link) => {
                let attempts = state.n_failures + 1;
                info!(url = %self.redacted_url, reconnected = true, attempts, "Connected to the broker.");
                *state = LinkState {
                    current: Some(link.clone()),
                    ..LinkState::default()
                };
                Ok(link)
            }
            Err(error) => {
                state.n_failures += 1;
                let delay = FIRST_RETRY_DELAY.saturating_mul(1 << state.n_failures.min(16)) / 2;
                state.retry_at = Some(Instant::now() + delay.min(MAX_RETRY_DELAY));
                state.last_error = Some(match &error {
                    TransportError::Unavailable { reason } | TransportError::Rejected { reason } => reason.clone(),
                    TransportError::Closed => error.to_string(),
                });
                Err(error)
            }
        }
    }

    /// Opens the first link; the transport does not exist before it succeeds.
    pub(super) async fn first_link(&self) -> Result<(), TransportError> {
        let link = self.open_link().await?;
        info!(url = %self.redacted_url, "Connected to the broker.");
        self.link.lock().await.current = Some(link);
        Ok(())
    }

    /// Closes the connection for good (see [`super::AmqpTransport::close`]).
    pub(super) async fn close(&self) {
        let mut state = self.link.lock().await;
        self.closed.store(true, Ordering::SeqCst);
        let Some(link) = state.current.take() else {
            return;
        };
        link.lost.store(true, Ordering::SeqCst);
        if let Err(error) = link.connection.close(REPLY_SUCCESS, "closed by taskfleet").await {
            debug!(%error, url = %self.redacted_url, "Failed to close the connection to the broker.");
        }
        link.pool.close();
        info!(url = %self.redacted_url, "Closed the connection to the broker.");
    }

    /// Connects, opens the channel pool and declares the topology.
    async fn open_link(&self) -> Result<Link, TransportError> {
        let uri = AMQPUri::from_str(&self.config.url).map_err(|error| TransportError::Rejected {
            reason: format!(
                "invalid broker url {}: {}",
                self.redacted_url,
                error.replace(&self.config.url, &self.redacted_url)
            ),
        })?;
        let where_to = format!(
            "could not connect to the broker at {}:{} ({})",
            uri.authority.host, uri.authority.port, self.redacted_url
        );
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| TransportError::Rejected {
            reason: "the amqp transport needs a tokio runtime".to_string(),
        })?;
        let properties = ConnectionProperties::default()
            .with_executor(tokio_executor_trait::Tokio::default().with_handle(runtime))
            .with_reactor(tokio_reactor_trait::Tokio)
            .with_connection_name(self.config.connection_name.as_str().into());
        let connecting = Connection::connect_uri(uri, properties);
        let connection = match tokio::time::timeout(self.config.connect_timeout, connecting).await {
            Ok(Ok(connection)) => Arc::new(connection),
            Ok(Err(error)) => {
                return Err(TransportError::Unavailable {
                    reason: format!("{where_to}: {}", describe(&error)),
                })
            }
            Err(_) => {
                return Err(TransportError::Unavailable {
                    reason: format!("{where_to}: no answer within {:?}", self.config.connect_timeout),
                })
            }
        };
        let lost = Arc::new(AtomicBool::new(false));
        connection.on_error({
            let lost = lost.clone();
            let redacted_url = self.redacted_url.clone();
            move |error| {
                if !lost.swap(true, Ordering::SeqCst) {
                    warn!(%error, url = %redacted_url, "Lost the connection to the broker.");
                }
            }
        });
        let pool = channel_pool(connection.clone(), self.config.pool_size, self.config.connect_timeout)?;
        let link = Link { connection, pool, lost };
        if let Err(error) = self.declare_everything(&link).await {
            // The connection closes when its last handle is dropped.
            link.lost.store(true, Ordering::SeqCst);
            return Err(error);
        }
        Ok(link)
    }

    /// Declares the base topology and every queue and topic declared through this transport.
    async fn declare_everything(&self, link: &Link) -> Result<(), TransportError> {
        let channel = PooledChannel::get(&link.pool).await?;
        self.topology.declare_base(channel.channel()).await?;
        let (queues, topics) = self.declared_names();
        for queue in &queues {
            self.topology.declare_queue(channel.channel(), queue).await?;
        }
        for topic in &topics {
            declare_topic(channel.channel(), topic).await?;
        }
        channel.settle();
        Ok(())
    }
}
