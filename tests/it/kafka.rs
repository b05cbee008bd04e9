//! The Kafka transport against a real Kafka-protocol broker (`KAFKA_BROKERS`, by default the
//! local one `scripts/test.sh` starts): the transport conformance suite, contiguous commits,
//! class priority, a member joining a busy group, dead letters with their reason header, and
//! an unreachable broker. Each test works under a prefix of its own and deletes its topics.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use taskfleet_tests::kafka::{brokers, config};
use taskfleet_transport::queues::QueueNames;
use taskfleet_transport::{
    conformance, Consumer, Delivery, KafkaConfig, KafkaTransport, Outgoing, Transport, TransportError, REASON_HEADER,
};

/// How long a delivery that must arrive may take.
const PATIENCE: Duration = Duration::from_secs(20);

fn unique_names(test: &str) -> QueueNames {
    QueueNames::new(format!("tf-test-{test}-{:016x}", rand::random::<u64>()))
}

async fn connect(names: &QueueNames) -> KafkaTransport {
    KafkaTransport::connect(config(), names)
        .await
        .unwrap_or_else(|error| panic!("connect to the Kafka broker at {}: {error}", brokers()))
}

/// Runs `test`, then deletes the topics under the prefix, whether `test` passed or panicked.
async fn cleaning_up<F>(cleaner: KafkaTransport, test: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let outcome = tokio::spawn(test).await;
    let deleted = cleaner.delete_topics().await;
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
    deleted.expect("delete the test's topics");
}

async fn recv(consumer: &mut Box<dyn Consumer>, what: &str) -> Delivery {
    match tokio::time::timeout(PATIENCE, consumer.recv()).await {
        Ok(Ok(delivery)) => delivery,
        Ok(Err(error)) => panic!("{what}: receive failed: {error}"),
        Err(_) => panic!("{what}: nothing delivered within {PATIENCE:?}"),
    }
}

async fn publish_numbered(transport: &KafkaTransport, queue: &str, range: std::ops::Range<usize>) {
    let messages = range.map(|idx| Outgoing::new(queue, format!("{idx}"))).collect();
    transport.publish(messages).await.expect("publish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_transport_passes_the_conformance_suite() {
    let names = unique_names("conformance");
    // A limit below the broker's own, so the size scenarios stay small.
    let config = KafkaConfig {
        max_message_bytes: 256 * 1024,
        ..config()
    };
    let transport = KafkaTransport::connect(config, &names).await.expect("connect");
    let suite = {
        let transport = transport.clone();
        async move { conformance::run_all(&transport, &names).await }
    };
    cleaning_up(transport, suite).await;
}

/// A consumer that dies holding a message commits nothing past it: whatever finished after it
/// is delivered again to the next member, the held message included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_never_pass_an_unsettled_message() {
    let names = unique_names("contiguous");
    let transport = connect(&names).await;
    let test = {
        let transport = transport.clone();
        async move {
            let queue = names.results();
            let single = KafkaConfig {
                partitions: 1,
                ..config()
            };
            let one_lane = KafkaTransport::connect(single, &names).await.expect("connect");
            one_lane.declare(std::slice::from_ref(&queue)).await.expect("declare");
            publish_numbered(&transport, &queue, 0..5).await;
            let mut consumer = one_lane.consume(&queue, 10).await.expect("consume");
            let mut held = Vec::new();
            for _ in 0..5 {
                held.push(recv(&mut consumer, "contiguous").await);
            }
            let first = held.remove(0);
            let second = held.remove(0);
            second.ack().await.expect("ack 1");
            for delivery in held {
                delivery.ack().await.expect("ack 2..4");
            }
            // Long enough for several commit rounds.
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert_eq!(
                transport.queue_len(&queue).await.expect("backlog"),
                5,
                "the offset was committed past message 0, which is still held"
            );
            first.ack().await.expect("ack 0");
            let deadline = Instant::now() + PATIENCE;
            while transport.queue_len(&queue).await.expect("backlog") != 0 {
                assert!(Instant::now() < deadline, "the commit never caught up once 0 finished");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    cleaning_up(transport, test).await;
}

/// With work waiting in both, a worker-like reader (most urgent queue first, one slot) takes
/// every high-class message before any low-class one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_most_urgent_class_is_taken_first() {
    let names = unique_names("priority");
    let transport = connect(&names).await;
    let test = {
        let transport = transport.clone();
        async move {
            let (high, low) = (names.tasks("p", "high"), names.tasks("p", "low"));
            transport.declare(&[high.clone(), low.clone()]).await.expect("declare");
            publish_numbered(&transport, &low, 0..30).await;
            publish_numbered(&transport, &high, 100..130).await;
            let group = transport
                .consume_group(&[high.clone(), low.clone()], 1)
                .await
                .expect("consume the pool's classes");
            let Ok::<[Box<dyn Consumer>; 2], _>([mut from_high, mut from_low]) = group.try_into() else {
                panic!("one consumer per queue");
            };
            // Let both classes arrive from the broker.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let mut order = Vec::new();
            while order.len() < 60 {
                let delivery = match from_high.try_recv() {
                    Some(delivery) => delivery.expect("receive high"),
                    None => tokio::select! {
                        biased;
                        delivery = recv(&mut from_high, "high") => delivery,
                        delivery = recv(&mut from_low, "low") => delivery,
                    },
                };
                order.push(
                    String::from_utf8_lossy(&delivery.payload)
                        .parse::<usize>()
                        .expect("a number"),
                );
                delivery.ack().await.expect("ack");
            }
            let first_low = order.iter().position(|idx| *idx < 100).expect("low messages came");
            assert!(
                order[first_low..].iter().all(|idx| *idx < 100),
                "a low-class message was taken while high-class ones waited: {order:?}"
            );
            assert_eq!(first_low, 30, "all 30 high-class messages come first: {order:?}");
        }
    };
    cleaning_up(transport, test).await;
}

/// A member joining a group that is busy consuming takes over partitions; no message is lost,
/// and none settled or merely buffered before the rebalance is delivered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_joining_a_busy_group_loses_and_repeats_nothing() {
    let names = unique_names("rebalance");
    let transport = connect(&names).await;
    let test = {
        let transport = transport.clone();
        async move {
            let queue = names.tasks("pool", "normal");
            transport.declare(std::slice::from_ref(&queue)).await.expect("declare");
            let n = 3000;
            publish_numbered(&transport, &queue, 0..n).await;
            let mut first = transport.consume(&queue, 8).await.expect("consume");
            let mut seen: BTreeMap<usize, usize> = BTreeMap::new();
            for _ in 0..500 {
                let delivery = recv(&mut first, "before the join").await;
                note(&mut seen, &delivery);
                delivery.ack().await.expect("ack");
            }
            let (mut second, mut from_first) = {
                let joining = transport.consume(&queue, 8);
                tokio::pin!(joining);
                let mut from_first = 0;
                // The first member keeps working while the second joins.
                loop {
                    tokio::select! {
                        joined = &mut joining => break (joined.expect("join"), from_first),
                        delivery = first.recv() => {
                            let delivery = delivery.expect("receive while the other joins");
                            note(&mut seen, &delivery);
                            from_first += 1;
                            work().await;
                            delivery.ack().await.expect("ack");
                        }
                    }
                }
            };
            let mut from_second = 0;
            while seen.len() < n {
                let (delivery, by_first) = tokio::select! {
                    delivery = recv(&mut first, "after the join") => (delivery, true),
                    delivery = recv(&mut second, "after the join") => (delivery, false),
                };
                note(&mut seen, &delivery);
                if by_first {
                    from_first += 1;
                } else {
                    from_second += 1;
                }
                work().await;
                delivery.ack().await.expect("ack");
            }
            // Only a message handed out and not yet acked at the instant of the rebalance can
            // come again (to its partition's new owner): at most a prefetch's worth.
            let repeated: Vec<(&usize, &usize)> = seen.iter().filter(|(_, count)| **count > 1).collect();
            assert!(repeated.len() <= 8, "delivered more than once: {repeated:?}");
            assert!(
                from_second > 0,
                "the joining member got no partition ({from_first} by the first)"
            );
            println!(
                "rebalance: {from_first} by the first member, {from_second} by the second, {} repeated",
                repeated.len()
            );
        }
    };
    cleaning_up(transport, test).await;
}

/// What handling one message takes in the rebalance test: long enough that the first member
/// is still busy once the second has joined.
async fn work() {
    tokio::time::sleep(Duration::from_millis(2)).await;
}

fn note(seen: &mut BTreeMap<usize, usize>, delivery: &Delivery) {
    let idx = String::from_utf8_lossy(&delivery.payload)
        .parse::<usize>()
        .expect("a number");
    *seen.entry(idx).or_default() += 1;
}

/// A dead letter carries its reason in a header too, for tools that read the topic raw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_carry_their_reason_in_a_header() {
    let names = unique_names("dead-header");
    let transport = connect(&names).await;
    let test = {
        let transport = transport.clone();
        async move {
            let queue = names.submit();
            transport
                .declare(&[queue.clone(), names.dead_letters()])
                .await
                .expect("declare");
            transport
                .publish(vec![Outgoing::new(&queue, "{not json")])
                .await
                .expect("publish");
            let mut consumer = transport.consume(&queue, 1).await.expect("consume");
            recv(&mut consumer, "garbage")
                .await
                .dead_letter("unparsable submission: expected value at line 1")
                .await
                .expect("dead-letter");
            let topic = names.dead_letters();
            let reason = tokio::task::spawn_blocking(move || first_header(&topic, REASON_HEADER))
                .await
                .expect("read the dead-letter topic");
            assert_eq!(reason, "unparsable submission: expected value at line 1");
        }
    };
    cleaning_up(transport, test).await;
}

/// The value of `header` on the first message of `topic`, read with rdkafka alone.
fn first_header(topic: &str, header: &str) -> String {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", format!("{topic}.reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("a raw consumer");
    let partitions = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata")
        .topics()[0]
        .partitions()
        .len();
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        let partition = i32::try_from(partition).expect("few partitions");
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .expect("assign");
    }
    consumer.assign(&assignment).expect("assign");
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            let headers = message.headers().expect("a dead letter has headers");
            let value = headers
                .iter()
                .find(|found| found.key == header)
                .and_then(|found| found.value)
                .unwrap_or_else(|| panic!("no {header} header"));
            return String::from_utf8_lossy(value).into_owned();
        }
    }
    panic!("nothing on {topic} within {PATIENCE:?}");
}

#[tokio::test]
async fn an_unreachable_broker_is_unavailable() {
    let names = unique_names("unreachable");
    let config = KafkaConfig {
        request_timeout: Duration::from_secs(2),
        ..KafkaConfig::from_url("kafka://127.0.0.1:1").expect("a broker URL")
    };
    let started = Instant::now();
    let error = KafkaTransport::connect(config, &names)
        .await
        .expect_err("nothing listens on port 1");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    let TransportError::Unavailable { reason } = error else {
        panic!("expected Unavailable, got {error:?}");
    };
    assert!(reason.contains("127.0.0.1:1"), "the reason names the broker: {reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_to_an_undeclared_queue_is_rejected_and_creates_nothing() {
    let names = unique_names("undeclared");
    let transport = connect(&names).await;
    let test = {
        let transport = transport.clone();
        async move {
            let undeclared = names.tasks("nobody", "normal");
            match transport.publish(vec![Outgoing::new(&undeclared, "lost")]).await {
                Err(TransportError::Rejected { reason }) => {
                    assert!(reason.contains(&undeclared), "the reason names the queue: {reason}")
                }
                other => panic!("expected Rejected, got {other:?}"),
            }
            let missing = transport.queue_len(&undeclared).await;
            assert!(matches!(missing, Err(TransportError::Rejected { .. })), "{missing:?}");
            let consumed = transport.consume(&undeclared, 1).await.map(drop);
            assert!(matches!(consumed, Err(TransportError::Rejected { .. })), "{consumed:?}");
        }
    };
    cleaning_up(transport, test).await;
}
