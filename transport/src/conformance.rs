//! The transport conformance suite: the delivery guarantees every [`Transport`] must keep,
//! written once and run against each implementation (in-memory here, real brokers in the
//! integration tests).
//!
//! Each scenario uses its own queues under the given prefix, so the suite can run against a
//! shared broker; the functions panic with a message naming the broken guarantee.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;

use crate::queues::QueueNames;
use crate::{hex_sha256, Consumer, DeadLetter, Delivery, Outgoing, Transport, TransportError, TRUNCATED_KEEP_BYTES};

/// How long a scenario waits for a delivery that must arrive.
const PATIENCE: Duration = Duration::from_secs(10);
/// How long a scenario waits to be sure that nothing arrives.
const QUIET: Duration = Duration::from_millis(200);

/// Runs every scenario.
pub async fn run_all(transport: &dyn Transport, names: &QueueNames) {
    publish_consume_ack_in_order(transport, names).await;
    nack_with_requeue_redelivers(transport, names).await;
    nack_without_requeue_drops(transport, names).await;
    unacked_deliveries_return_when_the_consumer_goes(transport, names).await;
    prefetch_bounds_unacked_deliveries(transport, names).await;
    competing_consumers_share_without_duplicates(transport, names).await;
    dead_letters_keep_payload_and_reason(transport, names).await;
    large_batches_arrive_complete_and_in_order(transport, names).await;
    broadcasts_reach_every_current_subscriber(transport, names).await;
    consumer_groups_share_one_prefetch(transport, names).await;
    worker_queues_declare_idempotently_and_dead_letter(transport, names).await;
    oversized_messages_are_refused_before_anything_is_sent(transport, names).await;
    a_message_too_large_to_dead_letter_whole_goes_truncated(transport, names).await;
}

async fn fresh_queue(transport: &dyn Transport, names: &QueueNames, scenario: &str) -> String {
    let queue = names.tasks(scenario, "normal");
    transport
        .declare(&[queue.clone(), names.dead_letters()])
        .await
        .expect("declare queues");
    // A broker keeps queues between runs: drain what an earlier run may have left.
    let mut consumer = transport.consume(&queue, 1000).await.expect("consume for draining");
    while let Ok(Ok(delivery)) = tokio::time::timeout(QUIET, consumer.recv()).await {
        delivery.ack().await.expect("ack while draining");
    }
    queue
}

async fn recv(consumer: &mut Box<dyn Consumer>, what: &str) -> Delivery {
    match tokio::time::timeout(PATIENCE, consumer.recv()).await {
        Ok(Ok(delivery)) => delivery,
        Ok(Err(error)) => panic!("{what}: receive failed: {error}"),
        Err(_) => panic!("{what}: nothing delivered within {PATIENCE:?}"),
    }
}

async fn assert_nothing_arrives(consumer: &mut Box<dyn Consumer>, what: &str) {
    if let Ok(Ok(delivery)) = tokio::time::timeout(QUIET, consumer.recv()).await {
        panic!(
            "{what}: unexpected delivery of {:?}",
            String::from_utf8_lossy(&delivery.payload)
        );
    }
}

async fn publish(transport: &dyn Transport, queue: &str, payloads: &[&str]) {
    let messages = payloads
        .iter()
        .map(|payload| Outgoing::new(queue, Bytes::copy_from_slice(payload.as_bytes())))
        .collect();
    transport.publish(messages).await.expect("publish");
}

/// Messages come out in the order they went in (within each lane of the queue), once each,
/// and an ack removes them.
pub async fn publish_consume_ack_in_order(transport: &dyn Transport, names: &QueueNames) {
    let queue = fresh_queue(transport, names, "fifo").await;
    publish(transport, &queue, &["one", "two", "three"]).await;
    let mut consumer = transport.consume(&queue, 10).await.expect("consume");
    let mut lanes = Lanes::default();
    for _ in 0..3 {
        let delivery = recv(&mut consumer, "fifo").await;
        assert!(!delivery.redelivered, "fifo: first delivery flagged as redelivered");
        lanes.push(&delivery);
        delivery.ack().await.expect("ack");
    }
    lanes.assert_in_order(&["one", "two", "three"], "fifo");
    drop(consumer);
    let mut consumer = transport.consume(&queue, 10).await.expect("consume again");
    assert_nothing_arrives(&mut consumer, "fifo: acked messages came back").await;
}

/// A worker's own queue (which a broker may expire once its worker is gone) can be declared
/// by both sides any number of times, carries messages, and dead-letters like the others.
pub async fn worker_queues_declare_idempotently_and_dead_letter(transport: &dyn Transport, names: &QueueNames) {
    let queue = names.worker("conformance-worker");
    for _ in 0..2 {
        transport
            .declare(&[queue.clone(), names.dead_letters()])
            .await
            .expect("declare a worker queue");
    }
    let mut consumer = transport.consume(&queue, 10).await.expect("consume a worker queue");
    while let Ok(Ok(delivery)) = tokio::time::timeout(QUIET, consumer.recv()).await {
        delivery.ack().await.expect("ack while draining");
    }
    publish(transport, &queue, &["for-you", "garbage"]).await;
    let first = recv(&mut consumer, "worker queue").await;
    assert_eq!(first.payload, "for-you".as_bytes());
    first.ack().await.expect("ack");
    let second = recv(&mut consumer, "worker queue").await;
    second.dead_letter("not a task").await.expect("dead-letter");
    let mut dead = transport
        .consume(&names.dead_letters(), 100)
        .await
        .expect("consume dead letters");
    let mut found = false;
    while let Ok(Ok(delivery)) = tokio::time::timeout(PATIENCE, dead.recv()).await {
        let letter = crate::DeadLetter::decode(&delivery.payload);
        delivery.ack().await.expect("ack a dead letter");
        if letter.is_some_and(|letter| letter.source_queue == queue && letter.payload == "garbage".as_bytes()) {
            found = true;
            break;
        }
    }
    assert!(
        found,
        "worker queue: the dead letter did not arrive with its queue and payload"
    );
}

/// A nacked message with requeue comes back, flagged as redelivered.
pub async fn nack_with_requeue_redelivers(transport: &dyn Transport, names: &QueueNames) {
    let queue = fresh_queue(transport, names, "requeue").await;
    publish(transport, &queue, &["retry-me"]).await;
    let mut consumer = transport.consume(&queue, 10).await.expect("consume");
    recv(&mut consumer, "requeue").await.nack(true).await.expect("nack");
    let again = recv(&mut consumer, "requeue: nacked message").await;
    assert_eq!(again.payload, "retry-me".as_bytes());
    assert!(again.redelivered, "requeue: redelivery not flagged");
    again.ack().await.expect("ack");
}

/// A nacked message without requeue is gone.
pub async fn nack_without_requeue_drops(transport: &dyn Transport, names: &QueueNames) {
    let queue = fresh_queue(transport, names, "drop").await;
    publish(transport, &queue, &["drop-me"]).await;
    let mut consumer = transport.consume(&queue, 10).await.expect("consume");
    recv(&mut consumer, "drop").await.nack(false).await.expect("nack");
    assert_nothing_arrives(&mut consumer, "drop: rejected message came back").await;
}

/// Deliveries a consumer never settled are delivered again once it is gone.
pub async fn unacked_deliveries_return_when_the_consumer_goes(transport: &dyn Transport, names: &QueueNames) {
    let queue = fresh_queue(transport, names, "lost").await;
    publish(transport, &queue, &["a", "b"]).await;
    let mut consumer = transport.consume(&queue, 10).await.expect("consume");
    let first = recv(&mut consumer, "lost").await;
    let second = recv(&mut consumer, "lost").await;
    drop((first, second));
    drop(consumer);
    let mut consumer = transport.consume(&queue, 10).await.expect("consume again");
    let mut seen = Vec::new();
    for _ in 0..2 {
        let delivery = recv(&mut consumer, "lost: unacked messages").await;
        assert!(delivery.redelivered, "lost: redelivery not flagged");
        seen.push(String::from_utf8_lossy(&delivery.payload).into_owned());
        delivery.ack().await.expect("ack");
    }
    seen.sort();
    assert_eq!(seen, ["a", "b"]);
}

/// A consumer never holds more unacked deliveries than its prefetch.
pub async fn prefetch_bounds_unacked_deliveries(transport: &dyn Transport, names: &QueueNames) {
    let queue = fresh_queue(transport, names, "prefetch").await;
    publish(transport, &queue, &["1", "2", "3", "4", "5"]).await;
    let mut consumer = transport.consume(&queue, 2).await.expect("consume");
    let first = recv(&mut consumer, "prefetch").await;
    let second = recv(&mut consumer, "prefetch").await;
    assert_nothing_arrives(&mut consumer, "prefetch: more than 2 unacked deliveries").await;
    let mut lanes = Lanes::default();
    lanes.push(&first);
    lanes.push(&second);
    first.ack().await.expect("ack");
    let third = recv(&mut consumer, "prefetch: after an ack").await;
    lanes.push(&third);
    lanes.assert_in_order_so_far(&["1", "2", "3", "4", "5"], "prefetch: after an ack");
}

/// Two consumers of one queue share its messages; none is delivered to both.
pub async fn competing_consumers_share_without_duplicates(transport: &dyn Transport, names: &QueueNames) {
    let queue = fresh_queue(transport, names, "compete").await;
    let payloads: Vec<String> = (0..200).map(|idx| format!("m{idx}")).collect();
    let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
    publish(transport, &queue, &refs).await;
    let mut left = transport.consume(&queue, 5).await.expect("consume");
    let mut right = transport.consume(&queue, 5).await.expect("consume");
    let mut seen = BTreeSet::new();
    let mut n_left = 0;
    while seen.len() < payloads.len() {
        let (delivery, from_left) = tokio::select! {
            delivery = recv(&mut left, "compete") => (delivery, true),
            delivery = recv(&mut right, "compete") => (delivery, false),
        };
        n_left += usize::from(from_left);
        let payload = String::from_utf8_lossy(&delivery.payload).into_owned();
        assert!(seen.insert(payload.clone()), "compete: {payload} delivered twice");
        delivery.ack().await.expect("ack");
    }
    assert!(
        n_left > 0 && n_left < payloads.len(),
        "compete: one consumer got every message"
    );
}

/// A dead-lettered delivery lands in the dead-letter queue with its payload and reason.
pub async fn dead_letters_keep_payload_and_reason(transport: &dyn Transport, names: &QueueNames) {
    let queue = fresh_queue(transport, names, "poison").await;
    let mut dead = transport
        .consume(&names.dead_letters(), 100)
        .await
        .expect("consume dead letters");
    while let Ok(Ok(delivery)) = tokio::time::timeout(QUIET, dead.recv()).await {
        delivery.ack().await.expect("ack old dead letter");
    }
    publish(transport, &queue, &["\u{0}garbage{"]).await;
    let mut consumer = transport.consume(&queue, 10).await.expect("consume");
    recv(&mut consumer, "poison")
        .await
        .dead_letter("unparsable message: garbage")
        .await
        .expect("dead letter");
    assert_nothing_arrives(&mut consumer, "poison: dead letter came back").await;
    let letter = recv(&mut dead, "poison: dead-letter queue").await;
    let decoded = DeadLetter::decode(&letter.payload).expect("dead letter decodes");
    assert_eq!(decoded.reason, "unparsable message: garbage");
    assert_eq!(decoded.source_queue, queue);
    assert_eq!(decoded.payload, "\u{0}garbage{".as_bytes());
    letter.ack().await.expect("ack dead letter");
}

/// Thousands of messages published as one batch all arrive, in order within each lane.
pub async fn large_batches_arrive_complete_and_in_order(transport: &dyn Transport, names: &QueueNames) {
    let queue = fresh_queue(transport, names, "batch").await;
    let n_messages = 5000;
    let messages = (0..n_messages)
        .map(|idx| Outgoing::new(queue.clone(), format!("{idx}").into_bytes()))
        .collect();
    transport.publish(messages).await.expect("publish batch");
    let mut consumer = transport.consume(&queue, 100).await.expect("consume");
    let mut lanes = Lanes::default();
    for _ in 0..n_messages {
        let delivery = recv(&mut consumer, "batch").await;
        lanes.push(&delivery);
        delivery.ack().await.expect("ack");
    }
    let expected: Vec<String> = (0..n_messages).map(|idx| format!("{idx}")).collect();
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    lanes.assert_in_order(&expected, "batch");
}

/// What came out of each lane of a queue, in the order it came.
#[derive(Default)]
struct Lanes {
    by_lane: std::collections::BTreeMap<u32, Vec<String>>,
}

impl Lanes {
    fn push(&mut self, delivery: &Delivery) {
        let payload = String::from_utf8_lossy(&delivery.payload).into_owned();
        self.by_lane.entry(delivery.lane).or_default().push(payload);
    }

    /// Every one of `published` came out once, and each lane in the order of `published`.
    fn assert_in_order(&self, published: &[&str], what: &str) {
        let n_distinct = self.assert_in_order_so_far(published, what);
        let n_out: usize = self.by_lane.values().map(Vec::len).sum();
        assert!(
            n_distinct == published.len() && n_out == published.len(),
            "{what}: {n_out} deliveries of {n_distinct} distinct messages, for {} published",
            published.len()
        );
    }

    /// What came out so far was published, came once, and each lane in the order of
    /// `published`. Returns how many distinct messages came out.
    fn assert_in_order_so_far(&self, published: &[&str], what: &str) -> usize {
        let position: std::collections::HashMap<&str, usize> = published
            .iter()
            .enumerate()
            .map(|(idx, payload)| (*payload, idx))
            .collect();
        let mut seen = BTreeSet::new();
        for (lane, payloads) in &self.by_lane {
            let positions: Vec<usize> = payloads
                .iter()
                .map(|payload| match position.get(payload.as_str()) {
                    Some(&idx) => idx,
                    None => panic!("{what}: {payload:?} was never published"),
                })
                .collect();
            assert!(
                positions.windows(2).all(|pair| pair[0] < pair[1]),
                "{what}: messages out of order in lane {lane}"
            );
            seen.extend(positions);
        }
        let n_out: usize = self.by_lane.values().map(Vec::len).sum();
        assert_eq!(seen.len(), n_out, "{what}: a message came out twice");
        seen.len()
    }
}

/// A broadcast reaches every subscriber present when it is sent, and nobody else.
pub async fn broadcasts_reach_every_current_subscriber(transport: &dyn Transport, names: &QueueNames) {
    let topic = names.control();
    let mut first = transport.subscribe(&topic).await.expect("subscribe");
    let mut second = transport.subscribe(&topic).await.expect("subscribe");
    transport
        .broadcast(&topic, Bytes::from_static(b"cancel wf-1"))
        .await
        .expect("broadcast");
    for consumer in [&mut first, &mut second] {
        let delivery = recv(consumer, "broadcast").await;
        assert_eq!(delivery.payload, "cancel wf-1".as_bytes(), "broadcast: wrong payload");
        delivery.ack().await.expect("ack broadcast");
    }
    drop(second);
    let mut late = transport.subscribe(&topic).await.expect("subscribe late");
    assert_nothing_arrives(&mut late, "broadcast: a late subscriber got an old message").await;
    transport
        .broadcast(&topic, Bytes::from_static(b"second"))
        .await
        .expect("broadcast after a subscriber left");
    assert_eq!(recv(&mut first, "broadcast").await.payload, "second".as_bytes());
    assert_eq!(recv(&mut late, "broadcast").await.payload, "second".as_bytes());
    transport
        .broadcast(&names.heartbeats(), Bytes::from_static(b"nobody listens"))
        .await
        .expect("broadcast to no one");
}

/// Consumers started as a group never hold more unacked deliveries together than the
/// group's prefetch, and an ack frees room for a delivery from any of their queues.
pub async fn consumer_groups_share_one_prefetch(transport: &dyn Transport, names: &QueueNames) {
    let first = fresh_queue(transport, names, "group-a").await;
    let second = fresh_queue(transport, names, "group-b").await;
    publish(transport, &first, &["a1", "a2", "a3"]).await;
    publish(transport, &second, &["b1", "b2", "b3"]).await;
    let group = transport
        .consume_group(&[first.clone(), second.clone()], 2)
        .await
        .expect("consume a group");
    let Ok::<[Box<dyn Consumer>; 2], _>([mut left, mut right]) = group.try_into() else {
        panic!("group: one consumer per queue");
    };
    let mut held = Vec::new();
    for _ in 0..2 {
        let delivery = tokio::select! {
            delivery = recv(&mut left, "group") => delivery,
            delivery = recv(&mut right, "group") => delivery,
        };
        held.push(delivery);
    }
    assert_nothing_arrives(&mut left, "group: more than 2 unacked deliveries over the group").await;
    assert_nothing_arrives(&mut right, "group: more than 2 unacked deliveries over the group").await;
    held.pop().expect("two held").ack().await.expect("ack");
    let next = tokio::select! {
        delivery = recv(&mut left, "group: after an ack") => delivery,
        delivery = recv(&mut right, "group: after an ack") => delivery,
    };
    next.ack().await.expect("ack");
    for delivery in held {
        delivery.ack().await.expect("ack");
    }
    drop((left, right));
    // Drain what is left so a shared broker starts clean next time.
    for queue in [first, second] {
        let mut consumer = transport.consume(&queue, 100).await.expect("consume to drain");
        while let Ok(Ok(delivery)) = tokio::time::timeout(QUIET, consumer.recv()).await {
            delivery.ack().await.expect("ack while draining");
        }
    }
}

/// A batch holding a message over the transport's limit is refused whole, before anything
/// is sent, and the transport keeps working; so is an oversized broadcast.
pub async fn oversized_messages_are_refused_before_anything_is_sent(transport: &dyn Transport, names: &QueueNames) {
    let queue = fresh_queue(transport, names, "oversized").await;
    let limit = transport.max_message_bytes();
    let huge = Bytes::from(vec![b'x'; limit + 1]);
    let batch = vec![
        Outgoing::new(queue.clone(), "before"),
        Outgoing::new(queue.clone(), huge.clone()),
        Outgoing::new(queue.clone(), "after"),
    ];
    match transport.publish(batch).await {
        Err(TransportError::Rejected { reason }) => assert!(
            reason.contains(&format!("{} bytes", limit + 1)) && reason.contains(&queue),
            "oversized: the refusal does not name the message: {reason}"
        ),
        other => panic!("oversized: a message over the limit was not rejected: {other:?}"),
    }
    assert!(
        matches!(
            transport.broadcast(&names.control(), huge).await,
            Err(TransportError::Rejected { .. })
        ),
        "oversized: a broadcast over the limit was not rejected"
    );
    let waiting = transport.queue_len(&queue).await.expect("queue length");
    assert_eq!(waiting, 0, "oversized: part of a refused batch was published");
    publish(transport, &queue, &["still works"]).await;
    let mut consumer = transport.consume(&queue, 10).await.expect("consume");
    let delivery = recv(&mut consumer, "oversized: after a refusal").await;
    assert_eq!(
        delivery.payload,
        "still works".as_bytes(),
        "oversized: part of a refused batch was delivered"
    );
    delivery.ack().await.expect("ack");
}

/// Dead-lettering a message that fits the transport but not with a dead letter's header
/// stores it truncated, with its size and digest, and frees its consumer's slot.
pub async fn a_message_too_large_to_dead_letter_whole_goes_truncated(transport: &dyn Transport, names: &QueueNames) {
    let queue = fresh_queue(transport, names, "big-poison").await;
    let mut dead = transport
        .consume(&names.dead_letters(), 100)
        .await
        .expect("consume dead letters");
    while let Ok(Ok(delivery)) = tokio::time::timeout(QUIET, dead.recv()).await {
        delivery.ack().await.expect("ack old dead letter");
    }
    let payload = Bytes::from(vec![b'p'; transport.max_message_bytes() - 16]);
    transport
        .publish(vec![Outgoing::new(queue.clone(), payload.clone())])
        .await
        .expect("publish a message just under the limit");
    let mut consumer = transport.consume(&queue, 1).await.expect("consume");
    recv(&mut consumer, "big poison")
        .await
        .dead_letter("too large to use")
        .await
        .expect("dead-letter a message near the limit");
    // Published only now, so that it comes next whatever lane it takes.
    publish(transport, &queue, &["next"]).await;
    let next = recv(&mut consumer, "big poison: the slot was not freed").await;
    assert_eq!(next.payload, "next".as_bytes());
    next.ack().await.expect("ack");
    let letter = recv(&mut dead, "big poison: dead-letter queue").await;
    let decoded = DeadLetter::decode(&letter.payload).expect("dead letter decodes");
    assert_eq!(decoded.reason, "too large to use");
    assert_eq!(decoded.payload.len(), TRUNCATED_KEEP_BYTES, "big poison: not truncated");
    let truncated = decoded.truncated.expect("big poison: no size and digest");
    assert_eq!(
        (truncated.size, truncated.sha256),
        (payload.len(), hex_sha256(&payload))
    );
    letter.ack().await.expect("ack dead letter");
}
