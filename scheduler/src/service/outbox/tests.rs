use async_trait::async_trait;
use bytes::Bytes;
use taskfleet_transport::queues::QueueNames;
use taskfleet_transport::{Consumer, MemoryTransport};

use super::*;

/// The memory transport, refusing every batch that holds a message saying "poison".
struct Picky {
    inner: MemoryTransport,
    n_publishes: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl Transport for Picky {
    async fn declare(&self, queues: &[String]) -> Result<(), TransportError> {
        self.inner.declare(queues).await
    }

    async fn publish(&self, messages: Vec<Outgoing>) -> Result<(), TransportError> {
        self.n_publishes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if messages.iter().any(|message| message.payload == "poison") {
            return Err(TransportError::Rejected {
                reason: "poison is refused".into(),
            });
        }
        self.inner.publish(messages).await
    }

    fn max_message_bytes(&self) -> usize {
        self.inner.max_message_bytes()
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Box<dyn Consumer>, TransportError> {
        self.inner.consume(queue, prefetch).await
    }

    async fn consume_group(&self, queues: &[String], prefetch: u16) -> Result<Vec<Box<dyn Consumer>>, TransportError> {
        self.inner.consume_group(queues, prefetch).await
    }

    async fn queue_len(&self, queue: &str) -> Result<usize, TransportError> {
        self.inner.queue_len(queue).await
    }

    async fn broadcast(&self, topic: &str, payload: Bytes) -> Result<(), TransportError> {
        self.inner.broadcast(topic, payload).await
    }

    async fn subscribe(&self, topic: &str) -> Result<Box<dyn Consumer>, TransportError> {
        self.inner.subscribe(topic).await
    }
}

fn task(task_idx: u32) -> TaskRef {
    TaskRef::new(0, task_idx)
}

#[tokio::test]
async fn refused_messages_are_set_aside_and_the_rest_published() {
    let names = QueueNames::new("outbox");
    let picky = Arc::new(Picky {
        inner: MemoryTransport::new(&names),
        n_publishes: Default::default(),
    });
    let transport: Arc<dyn Transport> = picky.clone();
    let queue = names.tasks("default", "normal");
    let mut outbox = Outbox::default();
    for idx in 0..64u32 {
        let payload = if idx == 5 || idx == 40 {
            "poison".to_string()
        } else {
            format!("m{idx}")
        };
        outbox.push(Outgoing::new(queue.clone(), payload), task(idx), 1);
    }
    outbox.start(&transport).await.expect("refusals are not errors");
    let refused: Vec<(u32, String)> = outbox
        .take_refused()
        .into_iter()
        .map(|(task, _, reason)| (task.task_idx, reason))
        .collect();
    assert_eq!(
        refused,
        [
            (5, "poison is refused".to_string()),
            (40, "poison is refused".to_string())
        ]
    );
    assert_eq!(outbox.n_waiting(), 0, "nothing is published again");
    assert_eq!(
        transport.queue_len(&queue).await.unwrap(),
        62,
        "every other message went out"
    );
    // Found by halving, not by one publish per message.
    let n_publishes = picky.n_publishes.load(std::sync::atomic::Ordering::SeqCst);
    assert!(n_publishes <= 30, "{n_publishes} publishes");
    // The next batch goes out normally.
    outbox.push(Outgoing::new(queue.clone(), "later"), task(99), 1);
    outbox.start(&transport).await.unwrap();
    assert!(outbox.take_refused().is_empty());
    assert_eq!(transport.queue_len(&queue).await.unwrap(), 63);
}
