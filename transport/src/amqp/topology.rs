//! The broker objects behind the queue names, declared idempotently by whichever side starts
//! first:
//!
//! - a durable direct exchange named after the prefix, to which every queue is bound by its own
//!   name; everything is published through it with `mandatory`, so a message for a queue that
//!   was never declared comes back as an error instead of vanishing;
//! - durable queues whose rejected messages go to the dead-letter exchange `{prefix}.dlx`, a
//!   durable fanout bound to the dead-letter queue; a worker's own queue (`{prefix}.worker.ID`)
//!   is deleted by the broker after an hour without consumers or declarations
//!   ([`WORKER_QUEUE_EXPIRY_MS`]), so the queues of workers that left do not pile up (what they
//!   held was dispatched again when the worker's lease ran out);
//! - one durable fanout exchange per broadcast topic; each subscriber binds a server-named,
//!   exclusive, auto-delete queue to it.

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

use super::error::from_lapin;
use crate::queues::QueueNames;
use crate::TransportError;

/// How long a worker's own queue outlives its last consumer or declaration.
pub(super) const WORKER_QUEUE_EXPIRY_MS: u32 = 3_600_000;

/// The names of one installation's exchanges and dead-letter queue.
pub(super) struct Topology {
    /// The direct exchange every queue is bound to.
    pub(super) exchange: String,
    /// Where queues send the messages they dead-letter themselves.
    dead_letter_exchange: String,
    pub(super) dead_letter_queue: String,
    /// What the names of workers' own queues start with.
    worker_queues: String,
}

impl Topology {
    pub(super) fn new(names: &QueueNames) -> Topology {
        Topology {
            exchange: names.prefix().to_string(),
            dead_letter_exchange: format!("{}.dlx", names.prefix()),
            dead_letter_queue: names.dead_letters(),
            worker_queues: names.worker(""),
        }
    }

    /// Declares both exchanges and the dead-letter queue.
    pub(super) async fn declare_base(&self, channel: &Channel) -> Result<(), TransportError> {
        declare_exchange(channel, &self.exchange, ExchangeKind::Direct).await?;
        declare_exchange(channel, &self.dead_letter_exchange, ExchangeKind::Fanout).await?;
        self.declare_queue(channel, &self.dead_letter_queue).await?;
        channel
            .queue_bind(
                &self.dead_letter_queue,
                &self.dead_letter_exchange,
                "",
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|error| {
                let context = format!(
                    "could not bind queue `{}` to exchange `{}`",
                    self.dead_letter_queue, self.dead_letter_exchange
                );
                from_lapin(&error, context)
            })
    }

    /// Declares the durable queue `name` and binds it to the exchange by its name. Every queue
    /// but the dead-letter queue itself dead-letters to the dead-letter exchange.
    pub(super) async fn declare_queue(&self, channel: &Channel, name: &str) -> Result<(), TransportError> {
        let mut arguments = FieldTable::default();
        if name != self.dead_letter_queue {
            arguments.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(self.dead_letter_exchange.as_str().into()),
            );
        }
        if name.starts_with(&self.worker_queues) {
            arguments.insert("x-expires".into(), AMQPValue::LongUInt(WORKER_QUEUE_EXPIRY_MS));
        }
        let options = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(name, options, arguments)
            .await
            .map_err(|error| from_lapin(&error, format!("could not declare queue `{name}`")))?;
        channel
            .queue_bind(
                name,
                &self.exchange,
                name,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|error| {
                let context = format!("could not bind queue `{name}` to exchange `{}`", self.exchange);
                from_lapin(&error, context)
            })?;
        Ok(())
    }

    /// Deletes the given queues and topic exchanges, the dead-letter queue and both exchanges.
    pub(super) async fn delete(
        &self,
        channel: &Channel,
        queues: &[String],
        topics: &[String],
    ) -> Result<(), TransportError> {
        for queue in queues.iter().chain([&self.dead_letter_queue]) {
            channel
                .queue_delete(queue, QueueDeleteOptions::default())
                .await
                .map_err(|error| from_lapin(&error, format!("could not delete queue `{queue}`")))?;
        }
        for exchange in topics.iter().chain([&self.exchange, &self.dead_letter_exchange]) {
            channel
                .exchange_delete(exchange, ExchangeDeleteOptions::default())
                .await
                .map_err(|error| from_lapin(&error, format!("could not delete exchange `{exchange}`")))?;
        }
        Ok(())
    }
}

/// Declares the durable fanout exchange of a broadcast topic.
pub(super) async fn declare_topic(channel: &Channel, topic: &str) -> Result<(), TransportError> {
    declare_exchange(channel, topic, ExchangeKind::Fanout).await
}

/// Declares a private queue for one subscriber of `topic` and returns its server-given name.
pub(super) async fn declare_subscription(channel: &Channel, topic: &str) -> Result<String, TransportError> {
    let options = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..QueueDeclareOptions::default()
    };
    let queue = channel
        .queue_declare("", options, FieldTable::default())
        .await
        .map_err(|error| from_lapin(&error, format!("could not declare a queue to subscribe to `{topic}`")))?;
    let name = queue.name().as_str().to_string();
    channel
        .queue_bind(&name, topic, "", QueueBindOptions::default(), FieldTable::default())
        .await
        .map_err(|error| from_lapin(&error, format!("could not subscribe to `{topic}`")))?;
    Ok(name)
}

async fn declare_exchange(channel: &Channel, name: &str, kind: ExchangeKind) -> Result<(), TransportError> {
    let options = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(name, kind, options, FieldTable::default())
        .await
        .map_err(|error| from_lapin(&error, format!("could not declare exchange `{name}`")))
}
