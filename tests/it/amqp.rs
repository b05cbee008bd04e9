//! The RabbitMQ transport against a real broker (`AMQP_ADDR`, by default the local one): the
//! transport conformance suite, connection failures, unroutable messages, and getting the
//! connection back after it is cut (through the tests' TCP proxy on 127.0.0.1).
//! Each test works under a prefix of its own and deletes its queues and exchanges afterwards.

use std::future::Future;
use std::net::ToSocketAddrs;
use std::time::{Duration, Instant};

use taskfleet_tests::proxy::Proxy;
use taskfleet_transport::queues::QueueNames;
use taskfleet_transport::{
    conformance, AmqpConfig, AmqpTransport, Consumer, Delivery, Outgoing, Transport, TransportError, DEFAULT_AMQP_URL,
};

/// How long a delivery that must arrive may take.
const PATIENCE: Duration = Duration::from_secs(10);

fn broker_url() -> String {
    std::env::var("AMQP_ADDR").unwrap_or_else(|_| DEFAULT_AMQP_URL.to_string())
}

/// Names under a prefix no other run uses.
fn unique_names(test: &str) -> QueueNames {
    QueueNames::new(format!("tf-test-{test}-{:016x}", rand::random::<u64>()))
}

fn config(url: String) -> AmqpConfig {
    AmqpConfig {
        url,
        connect_timeout: Duration::from_secs(5),
        connection_name: "taskfleet-tests".to_string(),
        ..AmqpConfig::default()
    }
}

async fn connect(url: String, names: &QueueNames) -> AmqpTransport {
    AmqpTransport::connect(config(url), names)
        .await
        .unwrap_or_else(|error| panic!("connect to the broker at {}: {error}", broker_url()))
}

/// Runs `test`, then deletes what `cleaner` declared, whether `test` passed or panicked.
async fn cleaning_up<F>(cleaner: AmqpTransport, test: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let outcome = tokio::spawn(test).await;
    let deleted = cleaner.delete_topology().await;
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
    deleted.expect("delete the test's queues and exchanges");
}

async fn recv(consumer: &mut Box<dyn Consumer>, what: &str) -> Delivery {
    match tokio::time::timeout(PATIENCE, consumer.recv()).await {
        Ok(Ok(delivery)) => delivery,
        Ok(Err(error)) => panic!("{what}: receive failed: {error}"),
        Err(_) => panic!("{what}: nothing delivered within {PATIENCE:?}"),
    }
}

#[tokio::test]
async fn amqp_transport_passes_the_conformance_suite() {
    let names = unique_names("conformance");
    // A limit below the broker's own, so the size scenarios stay small.
    let config = AmqpConfig {
        max_message_bytes: 4 << 20,
        ..config(broker_url())
    };
    let transport = AmqpTransport::connect(config, &names).await.expect("connect");
    let suite = {
        let transport = transport.clone();
        async move { conformance::run_all(&transport, &names).await }
    };
    cleaning_up(transport, suite).await;
}

#[tokio::test]
async fn an_unreachable_broker_is_unavailable_at_once() {
    let names = unique_names("unreachable");
    let started = Instant::now();
    let error = AmqpTransport::connect(config("amqp://guest:secret@127.0.0.1:1/%2f".into()), &names)
        .await
        .expect_err("nothing listens on port 1");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    let TransportError::Unavailable { reason } = error else {
        panic!("expected Unavailable, got {error:?}");
    };
    assert!(reason.contains("127.0.0.1:1"), "the reason names the broker: {reason}");
    assert!(!reason.contains("secret"), "the reason shows the password: {reason}");
}

#[tokio::test]
async fn publishing_to_an_undeclared_queue_is_rejected() {
    let names = unique_names("unroutable");
    let transport = connect(broker_url(), &names).await;
    let test = {
        let transport = transport.clone();
        async move {
            let queue = names.tasks("unroutable", "normal");
            let undeclared = names.tasks("nobody", "normal");
            transport.declare(std::slice::from_ref(&queue)).await.expect("declare");
            let batch = vec![Outgoing::new(&queue, "routable"), Outgoing::new(&undeclared, "lost")];
            match transport.publish(batch).await {
                Err(TransportError::Rejected { reason }) => {
                    assert!(reason.contains(&undeclared), "the reason names the queue: {reason}")
                }
                other => panic!("expected Rejected, got {other:?}"),
            }
            // The rest of the batch went through, and the channel is still good.
            transport
                .publish(vec![Outgoing::new(&queue, "after")])
                .await
                .expect("publish after a rejected batch");
            assert_eq!(transport.queue_len(&queue).await.expect("queue length"), 2);
            let missing = transport.queue_len(&undeclared).await;
            assert!(matches!(missing, Err(TransportError::Rejected { .. })), "{missing:?}");
            let consumed = transport.consume(&undeclared, 1).await.map(drop);
            assert!(matches!(consumed, Err(TransportError::Rejected { .. })), "{consumed:?}");
        }
    };
    cleaning_up(transport, test).await;
}

#[tokio::test]
async fn a_message_at_the_brokers_own_limit_can_still_be_dead_lettered() {
    // RabbitMQ refuses messages over its `max_message_size` (128 MiB by default in RabbitMQ 3):
    // a message just under it cannot go to the dead-letter queue with a header added. It goes
    // truncated instead, so it never stays unacked, holding its consumer's slot.
    let names = unique_names("at-limit");
    let transport = connect(broker_url(), &names).await;
    let test = {
        let transport = transport.clone();
        async move {
            let queue = names.tasks("at-limit", "normal");
            transport.declare(std::slice::from_ref(&queue)).await.expect("declare");
            let payload = bytes::Bytes::from(vec![b'z'; transport.max_message_bytes() - 64]);
            transport
                .publish(vec![
                    Outgoing::new(&queue, payload.clone()),
                    Outgoing::new(&queue, "next"),
                ])
                .await
                .expect("publish a message just under the broker's limit");
            let mut consumer = transport.consume(&queue, 1).await.expect("consume");
            let delivery = recv(&mut consumer, "at the limit").await;
            assert_eq!(delivery.payload.len(), payload.len());
            delivery.dead_letter("cannot be used").await.expect("dead-letter it");
            let next = recv(&mut consumer, "the message after it").await;
            assert_eq!(next.payload, "next".as_bytes());
            next.ack().await.expect("ack");
            let mut dead = transport
                .consume(&names.dead_letters(), 1)
                .await
                .expect("consume dead letters");
            let letter = recv(&mut dead, "dead-letter queue").await;
            let decoded = taskfleet_transport::DeadLetter::decode(&letter.payload).expect("a dead letter");
            let truncated = decoded.truncated.expect("kept truncated, with size and digest");
            assert_eq!(truncated.size, payload.len());
            assert_eq!(truncated.sha256, taskfleet_transport::hex_sha256(&payload));
            letter.ack().await.expect("ack");
        }
    };
    cleaning_up(transport, test).await;
}

#[tokio::test]
async fn messages_nacked_without_requeue_are_kept_by_the_dead_letter_exchange() {
    let names = unique_names("nacked");
    let transport = connect(broker_url(), &names).await;
    let test = {
        let transport = transport.clone();
        async move {
            let queue = names.tasks("nacked", "normal");
            transport.declare(std::slice::from_ref(&queue)).await.expect("declare");
            transport
                .publish(vec![Outgoing::new(&queue, "give up")])
                .await
                .expect("publish");
            let mut consumer = transport.consume(&queue, 1).await.expect("consume");
            recv(&mut consumer, "nacked").await.nack(false).await.expect("nack");
            let mut dead = transport
                .consume(&names.dead_letters(), 1)
                .await
                .expect("consume dead letters");
            let letter = recv(&mut dead, "dead-letter queue").await;
            assert_eq!(
                letter.payload,
                "give up".as_bytes(),
                "the broker keeps the payload as it was"
            );
            letter.ack().await.expect("ack");
        }
    };
    cleaning_up(transport, test).await;
}

#[tokio::test]
async fn the_transport_reconnects_after_the_connection_is_cut() {
    let names = unique_names("reconnect");
    let queue = names.tasks("reconnect", "normal");
    let cleaner = connect(broker_url(), &names).await;
    cleaner.declare(std::slice::from_ref(&queue)).await.expect("declare");
    let broker = match host_port(&broker_url()) {
        with_port if with_port.contains(':') => with_port.to_string(),
        host => format!("{host}:5672"),
    };
    let broker = broker
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .expect("the broker's address");
    let mut proxy = Proxy::new(broker);
    proxy.start();
    let proxied_url = broker_url().replacen(host_port(&broker_url()), &format!("127.0.0.1:{}", proxy.port()), 1);
    let proxied = AmqpConfig {
        connect_timeout: Duration::from_secs(2),
        ..config(proxied_url)
    };
    let transport = AmqpTransport::connect(proxied, &names)
        .await
        .expect("connect through the proxy");
    let test = async move {
        transport.declare(std::slice::from_ref(&queue)).await.expect("declare");
        transport
            .publish(vec![Outgoing::new(&queue, "before the cut")])
            .await
            .expect("publish");
        let mut consumer = transport.consume(&queue, 10).await.expect("consume");
        let unacked = recv(&mut consumer, "before the cut").await;
        assert!(!unacked.redelivered);

        proxy.stop();
        let lost = tokio::time::timeout(PATIENCE, consumer.recv()).await;
        assert!(
            matches!(lost, Ok(Err(TransportError::Unavailable { .. }))),
            "a consumer on the lost connection fails with Unavailable, got {lost:?}"
        );
        let settled = tokio::time::timeout(PATIENCE, unacked.ack()).await;
        assert!(
            matches!(settled, Ok(Err(TransportError::Unavailable { .. }))),
            "acking on the lost connection fails with Unavailable, got {settled:?}"
        );
        let started = Instant::now();
        let down = transport.publish(vec![Outgoing::new(&queue, "while down")]).await;
        assert!(
            matches!(down, Err(TransportError::Unavailable { .. })),
            "publishing while the broker is away fails with Unavailable, got {down:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );

        // While the connection is down, the exchanges disappear: reconnecting declares them again.
        let vandal = connect(broker_url(), &names).await;
        vandal.delete_topology().await.expect("delete the exchanges");
        proxy.start();
        let deadline = Instant::now() + PATIENCE;
        loop {
            match transport.publish(vec![Outgoing::new(&queue, "after the cut")]).await {
                Ok(()) => break,
                Err(TransportError::Unavailable { reason }) if Instant::now() < deadline => {
                    eprintln!("not reconnected yet: {reason}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => panic!("publish after the broker came back: {error}"),
            }
        }
        let mut consumer = transport.consume(&queue, 10).await.expect("consume after reconnecting");
        let again = recv(&mut consumer, "after the cut").await;
        assert_eq!(again.payload, "before the cut".as_bytes());
        assert!(again.redelivered, "the unacked message is flagged as redelivered");
        again.ack().await.expect("ack");
        let after = recv(&mut consumer, "after the cut").await;
        assert_eq!(after.payload, "after the cut".as_bytes());
        after.ack().await.expect("ack");
        assert_eq!(transport.queue_len(&queue).await.expect("queue length"), 0);

        transport.close().await;
        let closed = transport.publish(vec![Outgoing::new(&queue, "after closing")]).await;
        assert!(matches!(closed, Err(TransportError::Closed)), "{closed:?}");
    };
    cleaning_up(cleaner, test).await;
}

/// The `host:port` of an `amqp://user:password@host:port/vhost` URL.
fn host_port(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    authority.rsplit_once('@').map_or(authority, |(_, host_port)| host_port)
}
