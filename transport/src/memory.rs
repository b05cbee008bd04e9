//! The in-memory transport: queues inside one process, with the same delivery semantics as a
//! broker (prefetch, acks, requeue on nack or consumer loss, dead letters). It backs the
//! embedded mode (`taskfleet run`) and unit tests.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Notify;

use crate::queues::QueueNames;
use crate::{
    check_sizes, Acker, Consumer, DeadLetter, Delivery, Outgoing, Transport, TransportError, DEFAULT_MAX_MESSAGE_BYTES,
};

/// Queues in this process's memory. Cloning shares the queues.
#[derive(Clone)]
pub struct MemoryTransport {
    inner: Arc<Inner>,
}

struct Inner {
    max_message_bytes: usize,
    queues: Mutex<HashMap<String, Arc<Queue>>>,
    /// Each topic's subscribers, as the private queues their consumers read.
    topics: Mutex<HashMap<String, Vec<Weak<Queue>>>>,
    dead_letter_queue: String,
}

struct Queue {
    ready: Mutex<VecDeque<Message>>,
    /// Woken when a message is added.
    added: Notify,
}

struct Message {
    payload: Bytes,
    redelivered: bool,
}

impl MemoryTransport {
    /// A transport whose dead letters go to `names.dead_letters()` (declared here), carrying
    /// messages of up to [`DEFAULT_MAX_MESSAGE_BYTES`].
    pub fn new(names: &QueueNames) -> MemoryTransport {
        MemoryTransport::with_max_message_bytes(names, DEFAULT_MAX_MESSAGE_BYTES)
    }

    /// A transport carrying messages of up to `max_message_bytes`.
    pub fn with_max_message_bytes(names: &QueueNames, max_message_bytes: usize) -> MemoryTransport {
        let transport = MemoryTransport {
            inner: Arc::new(Inner {
                max_message_bytes,
                queues: Mutex::new(HashMap::new()),
                topics: Mutex::new(HashMap::new()),
                dead_letter_queue: names.dead_letters(),
            }),
        };
        transport.declare_one(&names.dead_letters());
        transport
    }

    fn declare_one(&self, name: &str) {
        let mut queues = self.inner.queues.lock().expect("queue map lock");
        queues.entry(name.to_string()).or_insert_with(|| {
            Arc::new(Queue {
                ready: Mutex::new(VecDeque::new()),
                added: Notify::new(),
            })
        });
    }

    fn queue(&self, name: &str) -> Result<Arc<Queue>, TransportError> {
        let queues = self.inner.queues.lock().expect("queue map lock");
        queues.get(name).cloned().ok_or_else(|| TransportError::Rejected {
            reason: format!("no queue named `{name}` has been declared"),
        })
    }
}

impl Inner {
    fn push(&self, queue_name: &str, payload: Bytes) -> Result<(), TransportError> {
        let queue = {
            let queues = self.queues.lock().expect("queue map lock");
            queues
                .get(queue_name)
                .cloned()
                .ok_or_else(|| TransportError::Rejected {
                    reason: format!("no queue named `{queue_name}` has been declared"),
                })?
        };
        queue.ready.lock().expect("queue lock").push_back(Message {
            payload,
            redelivered: false,
        });
        queue.added.notify_waiters();
        Ok(())
    }
}

#[async_trait]
impl Transport for MemoryTransport {
    async fn declare(&self, queues: &[String]) -> Result<(), TransportError> {
        for name in queues {
            self.declare_one(name);
        }
        Ok(())
    }

    async fn publish(&self, messages: Vec<Outgoing>) -> Result<(), TransportError> {
        check_sizes(&messages, self.inner.max_message_bytes)?;
        for message in &messages {
            // Refused whole, like a broker's mandatory publish to no queue.
            self.queue(&message.queue)?;
        }
        for message in messages {
            self.inner.push(&message.queue, message.payload)?;
        }
        Ok(())
    }

    fn max_message_bytes(&self) -> usize {
        self.inner.max_message_bytes
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Box<dyn Consumer>, TransportError> {
        let mut group = self.consume_group(&[queue.to_string()], prefetch).await?;
        Ok(group.remove(0))
    }

    async fn consume_group(&self, queues: &[String], prefetch: u16) -> Result<Vec<Box<dyn Consumer>>, TransportError> {
        let prefetch = usize::from(prefetch.max(1));
        let slots = Arc::new(Slots {
            unacked: Mutex::new(Unacked::default()),
            freed: Notify::new(),
        });
        let mut consumers: Vec<Box<dyn Consumer>> = Vec::with_capacity(queues.len());
        for queue_name in queues {
            let queue = self.queue(queue_name)?;
            slots.unacked.lock().expect("unacked lock").n_consumers += 1;
            consumers.push(Box::new(MemoryConsumer {
                queue,
                queue_name: queue_name.clone(),
                slots: slots.clone(),
                prefetch,
                transport: self.inner.clone(),
            }));
        }
        Ok(consumers)
    }

    async fn queue_len(&self, queue: &str) -> Result<usize, TransportError> {
        Ok(self.queue(queue)?.ready.lock().expect("queue lock").len())
    }

    async fn peek(&self, queue: &str, max: usize) -> Result<Vec<Bytes>, TransportError> {
        let queue = self.queue(queue)?;
        let ready = queue.ready.lock().expect("queue lock");
        Ok(ready.iter().take(max).map(|message| message.payload.clone()).collect())
    }

    async fn broadcast(&self, topic: &str, payload: Bytes) -> Result<(), TransportError> {
        check_sizes(&[Outgoing::new(topic, payload.clone())], self.inner.max_message_bytes)?;
        let subscribers: Vec<Arc<Queue>> = {
            let mut topics = self.inner.topics.lock().expect("topic map lock");
            let Some(subscribers) = topics.get_mut(topic) else {
                return Ok(());
            };
            subscribers.retain(|queue| queue.strong_count() > 0);
            subscribers.iter().filter_map(Weak::upgrade).collect()
        };
        for queue in subscribers {
            queue.ready.lock().expect("queue lock").push_back(Message {
                payload: payload.clone(),
                redelivered: false,
            });
            queue.added.notify_waiters();
        }
        Ok(())
    }

    async fn subscribe(&self, topic: &str) -> Result<Box<dyn Consumer>, TransportError> {
        let queue = Arc::new(Queue {
            ready: Mutex::new(VecDeque::new()),
            added: Notify::new(),
        });
        self.inner
            .topics
            .lock()
            .expect("topic map lock")
            .entry(topic.to_string())
            .or_default()
            .push(Arc::downgrade(&queue));
        let slots = Arc::new(Slots {
            unacked: Mutex::new(Unacked {
                n_consumers: 1,
                ..Unacked::default()
            }),
            freed: Notify::new(),
        });
        Ok(Box::new(MemoryConsumer {
            queue,
            queue_name: topic.to_string(),
            slots,
            prefetch: usize::from(u16::MAX),
            transport: self.inner.clone(),
        }))
    }
}

/// Deliveries a consumer (or a group of consumers sharing one prefetch) holds and has not
/// settled, with the queue each came from.
#[derive(Default)]
struct Unacked {
    by_tag: BTreeMap<u64, (Arc<Queue>, Bytes)>,
    next_tag: u64,
    /// Consumers sharing these slots that are still there.
    n_consumers: usize,
    /// Set when every consumer is gone: their deliveries were requeued and can no longer be
    /// settled.
    closed: bool,
}

struct Slots {
    unacked: Mutex<Unacked>,
    /// Woken when a delivery is settled.
    freed: Notify,
}

struct MemoryConsumer {
    queue: Arc<Queue>,
    queue_name: String,
    slots: Arc<Slots>,
    prefetch: usize,
    transport: Arc<Inner>,
}

impl MemoryConsumer {
    fn take(&self) -> Option<Delivery> {
        let mut unacked = self.slots.unacked.lock().expect("unacked lock");
        if unacked.by_tag.len() >= self.prefetch {
            return None;
        }
        let message = self.queue.ready.lock().expect("queue lock").pop_front()?;
        let tag = unacked.next_tag;
        unacked.next_tag += 1;
        unacked
            .by_tag
            .insert(tag, (self.queue.clone(), message.payload.clone()));
        let acker = MemoryAcker {
            tag,
            slots: self.slots.clone(),
            queue: self.queue.clone(),
            queue_name: self.queue_name.clone(),
            transport: self.transport.clone(),
        };
        Some(Delivery::new(message.payload, message.redelivered, Box::new(acker)))
    }
}

#[async_trait]
impl Consumer for MemoryConsumer {
    async fn recv(&mut self) -> Result<Delivery, TransportError> {
        loop {
            let added = self.queue.added.notified();
            let freed = self.slots.freed.notified();
            tokio::pin!(added, freed);
            added.as_mut().enable();
            freed.as_mut().enable();
            if let Some(delivery) = self.take() {
                return Ok(delivery);
            }
            tokio::select! {
                _ = added => {}
                _ = freed => {}
            }
        }
    }

    fn try_recv(&mut self) -> Option<Result<Delivery, TransportError>> {
        self.take().map(Ok)
    }
}

impl Drop for MemoryConsumer {
    /// Hands the deliveries this consumer took and did not settle back to its queue.
    fn drop(&mut self) {
        let mut unacked = self.slots.unacked.lock().expect("unacked lock");
        unacked.n_consumers = unacked.n_consumers.saturating_sub(1);
        unacked.closed = unacked.n_consumers == 0;
        let mine: Vec<u64> = unacked
            .by_tag
            .iter()
            .filter(|(_, (queue, _))| Arc::ptr_eq(queue, &self.queue))
            .map(|(&tag, _)| tag)
            .collect();
        let pending: Vec<Bytes> = mine
            .iter()
            .filter_map(|tag| unacked.by_tag.remove(tag))
            .map(|(_, payload)| payload)
            .collect();
        drop(unacked);
        self.slots.freed.notify_waiters();
        if pending.is_empty() {
            return;
        }
        let mut ready = self.queue.ready.lock().expect("queue lock");
        for payload in pending.into_iter().rev() {
            ready.push_front(Message {
                payload,
                redelivered: true,
            });
        }
        drop(ready);
        self.queue.added.notify_waiters();
    }
}

struct MemoryAcker {
    tag: u64,
    slots: Arc<Slots>,
    queue: Arc<Queue>,
    queue_name: String,
    transport: Arc<Inner>,
}

impl MemoryAcker {
    fn settle(&self) -> Result<Bytes, TransportError> {
        let mut unacked = self.slots.unacked.lock().expect("unacked lock");
        if unacked.closed {
            return Err(TransportError::Closed);
        }
        let (_, payload) = unacked
            .by_tag
            .remove(&self.tag)
            .ok_or_else(|| TransportError::Rejected {
                reason: format!("delivery {} was already settled", self.tag),
            })?;
        drop(unacked);
        self.slots.freed.notify_waiters();
        Ok(payload)
    }
}

#[async_trait]
impl Acker for MemoryAcker {
    async fn ack(&self) -> Result<(), TransportError> {
        self.settle().map(drop)
    }

    async fn nack(&self, requeue: bool) -> Result<(), TransportError> {
        let payload = self.settle()?;
        if requeue {
            self.queue.ready.lock().expect("queue lock").push_front(Message {
                payload,
                redelivered: true,
            });
            self.queue.added.notify_waiters();
        }
        Ok(())
    }

    async fn dead_letter(&self, payload: Bytes, reason: &str) -> Result<(), TransportError> {
        self.settle()?;
        let letter = DeadLetter::new(self.queue_name.clone(), reason, payload);
        let encoded = letter.encode_within(self.transport.max_message_bytes);
        self.transport.push(&self.transport.dead_letter_queue, encoded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance;

    #[tokio::test]
    async fn memory_transport_passes_the_conformance_suite() {
        let names = QueueNames::new("conformance");
        let transport = MemoryTransport::with_max_message_bytes(&names, 4 << 20);
        conformance::run_all(&transport, &names).await;
    }
}
