//! The pool of confirm-mode channels that publishes and declarations borrow (deadpool; a dead
//! channel is never handed out again), and pipelined publishing: every message of a batch is
//! sent, then every publisher confirm is awaited.

use std::sync::Arc;
use std::time::Duration;

use deadpool::managed::{Manager, Metrics, Object, Pool, PoolError, RecycleError, RecycleResult};
use deadpool::Runtime;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::publisher_confirm::Confirmation;
use lapin::{BasicProperties, Channel, Connection};
use tokio::sync::watch;

use super::error::from_lapin;
use crate::TransportError;

/// Creates confirm-mode channels on one connection, and refuses to recycle closed ones.
pub(super) struct AmqpChannelManager {
    connection: Arc<Connection>,
}

impl Manager for AmqpChannelManager {
    type Type = Channel;
    type Error = lapin::Error;

    async fn create(&self) -> Result<Channel, lapin::Error> {
        let channel = self.connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(channel)
    }

    async fn recycle(&self, channel: &mut Channel, _metrics: &Metrics) -> RecycleResult<lapin::Error> {
        if channel.status().connected() {
            Ok(())
        } else {
            Err(RecycleError::message("the channel is not connected"))
        }
    }
}

pub(super) type ChannelPool = Pool<AmqpChannelManager>;

/// A pool of at most `size` channels on `connection`; opening one may take `create_timeout`.
pub(super) fn channel_pool(
    connection: Arc<Connection>,
    size: usize,
    create_timeout: Duration,
) -> Result<ChannelPool, TransportError> {
    Pool::builder(AmqpChannelManager { connection })
        .max_size(size.max(1))
        .create_timeout(Some(create_timeout))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|error| TransportError::Rejected {
            reason: format!("could not build the channel pool: {error}"),
        })
}

/// A channel borrowed from the pool. If the borrower stops before settling what it started
/// (its future was dropped while confirms were pending), the channel is taken out of the pool
/// and closed, so that no late confirm or returned message reaches the next borrower.
pub(super) struct PooledChannel {
    channel: Option<Object<AmqpChannelManager>>,
    settled: bool,
}

impl PooledChannel {
    pub(super) async fn get(pool: &ChannelPool) -> Result<PooledChannel, TransportError> {
        let channel = pool.get().await.map_err(|error| match error {
            PoolError::Backend(error) => from_lapin(&error, "could not open a channel"),
            other => TransportError::Unavailable {
                reason: format!("could not get a channel: {other}"),
            },
        })?;
        Ok(PooledChannel {
            channel: Some(channel),
            settled: false,
        })
    }

    pub(super) fn channel(&self) -> &Channel {
        self.channel.as_deref().expect("the channel is only taken on drop")
    }

    /// Marks the channel as free of pending work: it goes back to the pool when dropped.
    pub(super) fn settle(mut self) {
        self.settled = true;
    }
}

impl Drop for PooledChannel {
    fn drop(&mut self) {
        if let (false, Some(channel)) = (self.settled, self.channel.take()) {
            drop(Object::take(channel));
        }
    }
}

/// Channels being closed in the background (those of dropped consumers). Later calls wait for
/// them, so that a dropped consumer is really gone, its unacked deliveries back in their queue,
/// before anything else happens: the broker could otherwise still hand new messages to it.
pub(super) struct PendingCloses {
    count: watch::Sender<usize>,
}

/// Counts one close as pending until dropped.
pub(super) struct PendingClose {
    count: watch::Sender<usize>,
}

impl PendingCloses {
    pub(super) fn new() -> PendingCloses {
        PendingCloses {
            count: watch::Sender::new(0),
        }
    }

    pub(super) fn start(&self) -> PendingClose {
        self.count.send_modify(|count| *count += 1);
        PendingClose {
            count: self.count.clone(),
        }
    }

    /// Waits until no close is pending, or `limit` has passed.
    pub(super) async fn wait(&self, limit: Duration) {
        let mut count = self.count.subscribe();
        let _ = tokio::time::timeout(limit, count.wait_for(|count| *count == 0)).await;
    }
}

impl Drop for PendingClose {
    fn drop(&mut self) {
        self.count.send_modify(|count| *count = count.saturating_sub(1));
    }
}

/// One message to publish: to `exchange` with `routing_key`.
pub(super) struct Publication<'a> {
    pub(super) exchange: &'a str,
    pub(super) routing_key: &'a str,
    pub(super) payload: &'a [u8],
}

/// How a batch is published.
#[derive(Clone, Copy)]
pub(super) struct PublishMode {
    /// Unroutable messages come back from the broker and fail the batch.
    pub(super) mandatory: bool,
    /// The broker writes the messages to disk (delivery mode 2).
    pub(super) persistent: bool,
}

/// Publishes every message on `channel`, then waits for all of their confirms. Every confirm
/// is awaited even after a failure, so the channel carries nothing over to its next borrower.
pub(super) async fn publish_confirmed(
    channel: &Channel,
    messages: &[Publication<'_>],
    mode: PublishMode,
) -> Result<(), TransportError> {
    let properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(if mode.persistent { 2 } else { 1 });
    let options = BasicPublishOptions {
        mandatory: mode.mandatory,
        immediate: false,
    };
    let mut confirms = Vec::new();
    let mut send_error = None;
    for message in messages {
        let sent = channel
            .basic_publish(
                message.exchange,
                message.routing_key,
                options,
                message.payload,
                properties.clone(),
            )
            .await;
        match sent {
            Ok(confirm) => confirms.push(confirm),
            Err(error) => {
                send_error = Some(from_lapin(&error, "could not publish"));
                break;
            }
        }
    }
    let n_messages = confirms.len();
    let mut n_nacked = 0;
    let mut unroutable = None;
    let mut confirm_error = None;
    for confirm in confirms {
        match confirm.await {
            Ok(Confirmation::Ack(None) | Confirmation::NotRequested) => {}
            Ok(Confirmation::Ack(Some(returned))) => {
                let queue = returned.delivery.routing_key.as_str().to_string();
                let why = returned.reply_text.as_str().to_lowercase();
                unroutable.get_or_insert((queue, why));
            }
            Ok(Confirmation::Nack(_)) => n_nacked += 1,
            Err(error) => {
                confirm_error.get_or_insert_with(|| from_lapin(&error, "could not publish"));
            }
        }
    }
    if let Some(error) = send_error.or(confirm_error) {
        return Err(error);
    }
    if let Some((queue, why)) = unroutable {
        return Err(TransportError::Rejected {
            reason: format!("no queue named `{queue}` has been declared (the broker returned the message: {why})"),
        });
    }
    if n_nacked > 0 {
        return Err(TransportError::Unavailable {
            reason: format!("the broker refused {n_nacked} of {n_messages} messages (nacked)"),
        });
    }
    Ok(())
}
