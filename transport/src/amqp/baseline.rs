//! The raw RabbitMQ baseline that taskfleet's fleet benchmark is measured against: lapin
//! alone, with the durability taskfleet uses, and none of taskfleet's work.
//!
//! A sender publishes persistent messages with publisher confirms (pipelined, about
//! `in_flight` messages outstanding) to a request queue; a responder consumes them, publishes
//! a persistent, confirmed reply for each, and acks the requests once the replies are
//! confirmed (in batches, `multiple`); the sender consumes and acks the replies.

use std::collections::VecDeque;
use std::str::FromStr;
use std::time::{Duration, Instant};

use futures_util::{FutureExt as _, StreamExt as _};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use super::error::from_lapin;
use crate::TransportError;

fn fail(error: lapin::Error) -> TransportError {
    from_lapin(&error, "raw round-trip baseline")
}

/// Replies acked together by the sender.
const ACK_BATCH: usize = 50;

/// Sends `n_messages` of `payload` through a request queue and back through a reply queue,
/// keeping about `in_flight` outstanding; returns the time until every reply was received.
pub async fn raw_round_trips(
    url: &str,
    n_messages: usize,
    in_flight: usize,
    payload: &[u8],
) -> Result<Duration, TransportError> {
    let uri = lapin::uri::AMQPUri::from_str(url).map_err(|reason| TransportError::Rejected { reason })?;
    let properties = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    let connection = Connection::connect_uri(uri, properties).await.map_err(fail)?;
    let suffix = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos())
    );
    let (requests, replies) = (
        format!("taskfleet-baseline-requests-{suffix}"),
        format!("taskfleet-baseline-replies-{suffix}"),
    );
    let sender = confirm_channel(&connection).await?;
    let responder = confirm_channel(&connection).await?;
    for queue in [&requests, &replies] {
        sender
            .queue_declare(
                queue,
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(fail)?;
    }
    let responder_task = tokio::spawn(respond(
        responder,
        requests.clone(),
        replies.clone(),
        n_messages,
        in_flight,
    ));
    let result = send_and_receive(&sender, &requests, &replies, n_messages, in_flight, payload).await;
    let responded = responder_task.await.map_err(|error| TransportError::Rejected {
        reason: error.to_string(),
    })?;
    for queue in [&requests, &replies] {
        let _ = sender.queue_delete(queue, QueueDeleteOptions::default()).await;
    }
    let _ = connection.close(200, "baseline done").await;
    responded?;
    result
}

async fn confirm_channel(connection: &Connection) -> Result<Channel, TransportError> {
    let channel = connection.create_channel().await.map_err(fail)?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(fail)?;
    Ok(channel)
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

/// Consumes `queue` on `channel` with at most `in_flight` unacked deliveries.
async fn consume(
    channel: &Channel,
    queue: &str,
    tag: &str,
    in_flight: usize,
) -> Result<lapin::Consumer, TransportError> {
    channel
        .basic_qos(in_flight.min(u16::MAX as usize) as u16, BasicQosOptions::default())
        .await
        .map_err(fail)?;
    channel
        .basic_consume(queue, tag, BasicConsumeOptions::default(), FieldTable::default())
        .await
        .map_err(fail)
}

async fn send_and_receive(
    channel: &Channel,
    requests: &str,
    replies: &str,
    n_messages: usize,
    in_flight: usize,
    payload: &[u8],
) -> Result<Duration, TransportError> {
    let mut incoming = consume(channel, replies, "baseline-sender", in_flight).await?;
    let started = Instant::now();
    let mut confirms = VecDeque::new();
    let (mut n_sent, mut n_received, mut n_unacked) = (0, 0, 0);
    while n_received < n_messages {
        while n_sent < n_messages && n_sent - n_received < in_flight {
            let confirm = channel
                .basic_publish("", requests, BasicPublishOptions::default(), payload, persistent())
                .await
                .map_err(fail)?;
            confirms.push_back(confirm);
            n_sent += 1;
        }
        // Confirms are collected as they come, never waited for one by one.
        while let Some(Some(confirmed)) = confirms.front_mut().map(|confirm| confirm.now_or_never()) {
            confirmed.map_err(fail)?;
            confirms.pop_front();
        }
        let delivery = incoming.next().await.ok_or(TransportError::Closed)?.map_err(fail)?;
        n_received += 1;
        n_unacked += 1;
        if n_unacked >= ACK_BATCH || n_received == n_messages {
            delivery.ack(BasicAckOptions { multiple: true }).await.map_err(fail)?;
            n_unacked = 0;
        }
    }
    let elapsed = started.elapsed();
    for confirm in confirms {
        confirm.await.map_err(fail)?;
    }
    Ok(elapsed)
}

async fn respond(
    channel: Channel,
    requests: String,
    replies: String,
    n_messages: usize,
    in_flight: usize,
) -> Result<(), TransportError> {
    let mut incoming = consume(&channel, &requests, "baseline-responder", in_flight).await?;
    let mut n_done = 0;
    while n_done < n_messages {
        let first = incoming.next().await.ok_or(TransportError::Closed)?.map_err(fail)?;
        let mut batch = vec![first];
        while let Some(Some(next)) = incoming.next().now_or_never() {
            batch.push(next.map_err(fail)?);
        }
        let mut confirms = Vec::with_capacity(batch.len());
        for delivery in &batch {
            let confirm = channel
                .basic_publish(
                    "",
                    &replies,
                    BasicPublishOptions::default(),
                    &delivery.data,
                    persistent(),
                )
                .await
                .map_err(fail)?;
            confirms.push(confirm);
        }
        for confirm in confirms {
            confirm.await.map_err(fail)?;
        }
        let last = batch.last().expect("a batch has a first delivery");
        last.ack(BasicAckOptions { multiple: true }).await.map_err(fail)?;
        n_done += batch.len();
    }
    Ok(())
}
