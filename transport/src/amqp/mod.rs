//! The RabbitMQ transport, [`AmqpTransport`]: queues on a broker, reached over one connection
//! with a pool of confirm-mode channels for publishing and a channel per consumer.
//!
//! The files split it by role: `config` (what to connect to), `connection` (connecting and
//! reconnecting), `channel` (the channel pool and pipelined, confirmed publishing), `topology`
//! (exchanges and queues on the broker), `consumer` (deliveries and settling them) and `error`
//! (lapin's errors as [`TransportError`]s).

pub(crate) mod baseline;
mod channel;
mod config;
mod connection;
mod consumer;
mod error;
mod topology;

use std::collections::BTreeSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use bytes::Bytes;
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;

use self::channel::{publish_confirmed, PendingCloses, PooledChannel, Publication, PublishMode};
use self::config::redact_url;
pub use self::config::{AmqpConfig, DEFAULT_AMQP_URL};
use self::connection::LinkState;
use self::consumer::{AmqpConsumer, ConsumerChannel};
use self::error::{from_lapin, is_not_found};
use self::topology::{declare_subscription, declare_topic, Topology};
use crate::queues::QueueNames;
use crate::{check_sizes, Consumer, Outgoing, Transport, TransportError};

/// Queues on a RabbitMQ broker. Cloning shares the connection.
///
/// On the broker, for the prefix `p` of the [`QueueNames`]: a durable direct exchange `p` to
/// which every declared queue is bound by its own name (messages are published through it as
/// `mandatory`, persistent and confirmed, so publishing to an undeclared queue is `Rejected`);
/// durable queues that dead-letter to the fanout exchange `p.dlx`, bound to the dead-letter
/// queue; and one durable fanout exchange per broadcast topic, to which each subscriber binds
/// an exclusive, auto-delete queue of its own.
///
/// When the connection is lost, calls fail with [`TransportError::Unavailable`] until one finds
/// the broker back, reconnects and declares again what was declared; consumers opened before
/// keep failing with `Unavailable` and are to be replaced.
#[derive(Clone)]
pub struct AmqpTransport {
    inner: Arc<Inner>,
}

struct Inner {
    config: AmqpConfig,
    redacted_url: String,
    topology: Topology,
    link: tokio::sync::Mutex<LinkState>,
    /// Connection attempts so far, to tell whether another call tried while one waited.
    n_attempts: AtomicU64,
    /// Set by [`AmqpTransport::close`]: calls fail with `Closed` instead of reconnecting.
    closed: AtomicBool,
    /// What to declare again after reconnecting.
    declared: Mutex<Declared>,
    pending_closes: PendingCloses,
}

#[derive(Default)]
struct Declared {
    queues: BTreeSet<String>,
    topics: BTreeSet<String>,
}

impl AmqpTransport {
    /// Connects to the broker of `config` and declares the exchanges and the dead-letter queue
    /// of `names`. Fails with `Unavailable` if the broker cannot be reached within
    /// `config.connect_timeout`, and with `Rejected` if the URL is invalid.
    pub async fn connect(config: AmqpConfig, names: &QueueNames) -> Result<AmqpTransport, TransportError> {
        let transport = AmqpTransport::new(config, names);
        transport.inner.first_link().await?;
        Ok(transport)
    }

    /// A transport that connects on first use, so a service can start while the broker is
    /// still unreachable: until it is reached, calls fail with `Unavailable` (and callers retry).
    pub fn new(config: AmqpConfig, names: &QueueNames) -> AmqpTransport {
        let inner = Arc::new(Inner {
            redacted_url: redact_url(&config.url),
            config,
            topology: Topology::new(names),
            link: tokio::sync::Mutex::new(LinkState::default()),
            n_attempts: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            declared: Mutex::new(Declared::default()),
            pending_closes: PendingCloses::new(),
        });
        AmqpTransport { inner }
    }

    /// Closes the connection to the broker; later calls fail with [`TransportError::Closed`],
    /// and consumers with `Unavailable`. Unacked deliveries go back to their queues.
    pub async fn close(&self) {
        self.inner.close().await;
    }

    /// Deletes from the broker the queues and topics declared through this transport, the
    /// dead-letter queue and both exchanges, with the messages they hold. For tests and
    /// uninstalling: other transports on the same prefix stop working.
    pub async fn delete_topology(&self) -> Result<(), TransportError> {
        let link = self.inner.link().await?;
        let channel = PooledChannel::get(&link.pool).await?;
        let (queues, topics) = self.inner.declared_names();
        self.inner.topology.delete(channel.channel(), &queues, &topics).await?;
        channel.settle();
        *self.inner.declared() = Declared::default();
        Ok(())
    }
}

impl fmt::Debug for AmqpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpTransport")
            .field("url", &self.inner.redacted_url)
            .field("exchange", &self.inner.topology.exchange)
            .finish()
    }
}

impl Inner {
    fn declared(&self) -> MutexGuard<'_, Declared> {
        self.declared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The queues and topics declared so far.
    fn declared_names(&self) -> (Vec<String>, Vec<String>) {
        let declared = self.declared();
        (
            declared.queues.iter().cloned().collect(),
            declared.topics.iter().cloned().collect(),
        )
    }

    /// A channel of its own on the current connection, to `what` (for errors).
    async fn open_channel(&self, what: &str) -> Result<lapin::Channel, TransportError> {
        let link = self.link().await?;
        link.connection
            .create_channel()
            .await
            .map_err(|error| from_lapin(&error, format!("could not open a channel to {what}")))
    }

    async fn publish(&self, messages: Vec<Outgoing>) -> Result<(), TransportError> {
        if messages.is_empty() {
            return Ok(());
        }
        // A message over the broker's limit would make it close the channel, failing the rest
        // of the batch with it: refuse it here, before anything is sent.
        check_sizes(&messages, self.config.max_message_bytes)?;
        let link = self.link().await?;
        let channel = PooledChannel::get(&link.pool).await?;
        let publications: Vec<Publication<'_>> = messages
            .iter()
            .map(|message| Publication {
                exchange: &self.topology.exchange,
                routing_key: &message.queue,
                payload: &message.payload,
            })
            .collect();
        let mode = PublishMode {
            mandatory: true,
            persistent: true,
        };
        let published = publish_confirmed(channel.channel(), &publications, mode).await;
        channel.settle();
        published
    }
}

#[async_trait]
impl Transport for AmqpTransport {
    async fn declare(&self, queues: &[String]) -> Result<(), TransportError> {
        let link = self.inner.link().await?;
        let channel = PooledChannel::get(&link.pool).await?;
        for queue in queues {
            self.inner.topology.declare_queue(channel.channel(), queue).await?;
            self.inner.declared().queues.insert(queue.clone());
        }
        channel.settle();
        Ok(())
    }

    async fn publish(&self, messages: Vec<Outgoing>) -> Result<(), TransportError> {
        self.inner.publish(messages).await
    }

    fn max_message_bytes(&self) -> usize {
        self.inner.config.max_message_bytes
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Box<dyn Consumer>, TransportError> {
        let channel = self.inner.open_channel(&format!("consume `{queue}`")).await?;
        let consumer = AmqpConsumer::start(channel, queue, prefetch, queue, self.inner.clone()).await?;
        Ok(Box::new(consumer))
    }

    async fn consume_group(&self, queues: &[String], prefetch: u16) -> Result<Vec<Box<dyn Consumer>>, TransportError> {
        let what = queues.join(", ");
        let channel = self.inner.open_channel(&format!("consume `{what}`")).await?;
        let channel = ConsumerChannel::open(channel, prefetch, &what, self.inner.clone()).await?;
        let mut consumers: Vec<Box<dyn Consumer>> = Vec::with_capacity(queues.len());
        for queue in queues {
            consumers.push(Box::new(AmqpConsumer::start_on(channel.clone(), queue, queue).await?));
        }
        Ok(consumers)
    }

    async fn queue_len(&self, queue: &str) -> Result<usize, TransportError> {
        let link = self.inner.link().await?;
        let channel = PooledChannel::get(&link.pool).await?;
        let options = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        match channel
            .channel()
            .queue_declare(queue, options, FieldTable::default())
            .await
        {
            Ok(declared) => {
                channel.settle();
                Ok(usize::try_from(declared.message_count()).unwrap_or(usize::MAX))
            }
            Err(error) if is_not_found(&error) => Err(TransportError::Rejected {
                reason: format!("no queue named `{queue}` has been declared"),
            }),
            Err(error) => Err(from_lapin(&error, format!("could not count the messages in `{queue}`"))),
        }
    }

    async fn peek(&self, queue: &str, max: usize) -> Result<Vec<Bytes>, TransportError> {
        // Taken without an ack on a channel of its own: closing it puts them all back, in
        // their places.
        let channel = self.inner.open_channel(&format!("read `{queue}`")).await?;
        let mut seen = Vec::new();
        let mut failed = None;
        while seen.len() < max {
            match channel.basic_get(queue, BasicGetOptions { no_ack: false }).await {
                Ok(Some(message)) => seen.push(Bytes::from(message.delivery.data)),
                Ok(None) => break,
                Err(error) if is_not_found(&error) => {
                    failed = Some(TransportError::Rejected {
                        reason: format!("no queue named `{queue}` has been declared"),
                    });
                    break;
                }
                Err(error) => {
                    failed = Some(from_lapin(&error, format!("could not read `{queue}`")));
                    break;
                }
            }
        }
        if channel.status().connected() {
            let _ = channel.close(200, "read without taking").await;
        }
        match failed {
            Some(error) => Err(error),
            None => Ok(seen),
        }
    }

    async fn broadcast(&self, topic: &str, payload: Bytes) -> Result<(), TransportError> {
        check_sizes(
            &[Outgoing::new(topic, payload.clone())],
            self.inner.config.max_message_bytes,
        )?;
        let link = self.inner.link().await?;
        let channel = PooledChannel::get(&link.pool).await?;
        if !self.inner.declared().topics.contains(topic) {
            declare_topic(channel.channel(), topic).await?;
            self.inner.declared().topics.insert(topic.to_string());
        }
        let publication = Publication {
            exchange: topic,
            routing_key: "",
            payload: &payload,
        };
        let mode = PublishMode {
            mandatory: false,
            persistent: false,
        };
        let published = publish_confirmed(channel.channel(), &[publication], mode).await;
        channel.settle();
        if published.is_err() {
            // Perhaps the exchange was deleted behind our back: declare it again next time.
            self.inner.declared().topics.remove(topic);
        }
        published
    }

    /// Closes the connection cleanly, so the broker hands back what was unacked at once and
    /// no I/O is cut by the runtime's end.
    async fn finish(&self) {
        self.close().await;
    }

    async fn subscribe(&self, topic: &str) -> Result<Box<dyn Consumer>, TransportError> {
        let channel = self.inner.open_channel(&format!("subscribe to `{topic}`")).await?;
        declare_topic(&channel, topic).await?;
        self.inner.declared().topics.insert(topic.to_string());
        let queue = declare_subscription(&channel, topic).await?;
        let consumer = AmqpConsumer::start(channel, &queue, u16::MAX, topic, self.inner.clone()).await?;
        Ok(Box::new(consumer))
    }
}
