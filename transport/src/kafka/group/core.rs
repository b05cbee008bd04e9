//! What the consumers of one `consume_group` call share ([`Core`]): the budget, each queue's
//! buffer, and each partition's ledger, changed by the polling threads (messages read,
//! rebalances) and by the deliveries' ackers.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::Notify;
use tracing::warn;

use super::super::ledger::{Ledger, Read};
use super::super::{Inner, REDELIVERED_HEADER};
use super::{KafkaAcker, MAX_OPEN_PER_PARTITION, MIN_BUFFER_PER_PARTITION};
use crate::{Delivery, TransportError};

/// What the consumers of one `consume_group` call share.
pub(super) struct Core {
    pub(super) queues: Vec<String>,
    pub(super) index: HashMap<String, usize>,
    pub(super) state: Mutex<State>,
    /// Woken when a message is buffered, a delivery settled, or the group assigned or closed.
    pub(super) changed: Notify,
    pub(super) runtime: tokio::runtime::Handle,
    pub(super) inner: Arc<Inner>,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) prefetch: usize,
    /// Deliveries handed out and not settled, by token.
    pub(super) handed: HashMap<u64, Handed>,
    pub(super) next_token: u64,
    /// Messages read and not handed out, per queue.
    pub(super) ready: Vec<VecDeque<Buffered>>,
    pub(super) parts: HashMap<(usize, i32), Part>,
    pub(super) next_generation: u64,
    pub(super) open_consumers: usize,
    /// Set when the last consumer is gone: the threads hand back, commit and leave.
    pub(super) closing: bool,
    /// Set once the unsettled deliveries were handed back: they can no longer be settled.
    pub(super) closed: bool,
    /// Consumer groups that have had their first assignment.
    pub(super) n_assigned: usize,
}

#[derive(Clone)]
pub(super) struct Buffered {
    pub(super) partition: i32,
    pub(super) offset: i64,
    pub(super) payload: Bytes,
    pub(super) redelivered: bool,
}

pub(super) struct Handed {
    pub(super) queue: usize,
    pub(super) partition: i32,
    pub(super) offset: i64,
    pub(super) generation: u64,
    pub(super) payload: Bytes,
}

/// One partition this member reads, or read and may get back.
pub(super) struct Part {
    pub(super) ledger: Ledger,
    pub(super) generation: u64,
    pub(super) owned: bool,
    pub(super) paused: bool,
    /// Messages of it in its queue's buffer.
    pub(super) buffered: usize,
    /// What was buffered when it was revoked, given back if it returns with its ledger.
    pub(super) parked: Vec<Buffered>,
    /// Whether a fetch came back since it was assigned (a message, or its end).
    pub(super) caught_up: bool,
}

impl Core {
    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until `done` holds of the state, for at most `patience`; whether it did.
    pub(super) async fn wait_until(&self, patience: Duration, done: impl Fn(&State) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if done(&self.state()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return false;
            }
        }
    }

    pub(super) fn close(&self) {
        self.state().closing = true;
        self.changed.notify_waiters();
    }

    /// Buffers a message the thread read.
    pub(super) fn buffer(&self, message: &BorrowedMessage<'_>) {
        let Some(&queue) = self.index.get(message.topic()) else {
            return;
        };
        let partition = message.partition();
        let offset = message.offset();
        let redelivered = message
            .headers()
            .is_some_and(|headers| headers.iter().any(|header| header.key == REDELIVERED_HEADER));
        let payload = Bytes::copy_from_slice(message.payload().unwrap_or_default());
        let mut state = self.state();
        let Some(part) = state.parts.get_mut(&(queue, partition)) else {
            return;
        };
        part.caught_up = true;
        if !part.owned || part.ledger.read(offset) == Read::Known {
            return;
        }
        part.buffered += 1;
        state.ready[queue].push_back(Buffered {
            partition,
            offset,
            payload,
            redelivered,
        });
        drop(state);
        self.changed.notify_waiters();
    }

    /// The next delivery of `queue`, if the budget allows one and one is waiting.
    pub(super) fn take(self: &Arc<Self>, queue: usize) -> Option<Result<Delivery, TransportError>> {
        let mut state = self.state();
        if state.closing || state.closed {
            return Some(Err(TransportError::Closed));
        }
        if state.handed.len() >= state.prefetch {
            return None;
        }
        // A buffered message's partition is always known: buffers are emptied with it.
        let (message, generation) = loop {
            let message = state.ready[queue].pop_front()?;
            if let Some(part) = state.parts.get_mut(&(queue, message.partition)) {
                part.buffered = part.buffered.saturating_sub(1);
                break (message, part.generation);
            }
        };
        let token = state.next_token;
        state.next_token += 1;
        state.handed.insert(
            token,
            Handed {
                queue,
                partition: message.partition,
                offset: message.offset,
                generation,
                payload: message.payload.clone(),
            },
        );
        let acker = KafkaAcker {
            core: self.clone(),
            token,
        };
        let lane = u32::try_from(message.partition).unwrap_or(0);
        Some(Ok(
            Delivery::new(message.payload, message.redelivered, Box::new(acker)).with_lane(lane)
        ))
    }

    /// Settles a handed-out delivery as finished.
    pub(super) fn finish(&self, token: u64) -> Result<Handed, TransportError> {
        let mut state = self.state();
        let Some(handed) = state.handed.remove(&token) else {
            return Err(if state.closed {
                TransportError::Closed
            } else {
                TransportError::Rejected {
                    reason: format!("delivery {token} was already settled"),
                }
            });
        };
        if let Some(part) = state.parts.get_mut(&(handed.queue, handed.partition)) {
            if part.generation == handed.generation {
                part.ledger.finish(handed.offset);
            }
        }
        drop(state);
        self.changed.notify_waiters();
        Ok(handed)
    }

    /// Puts a handed-out delivery back at the head of its queue's buffer, as a redelivery.
    pub(super) fn put_back(&self, token: u64) {
        let mut state = self.state();
        let Some(handed) = state.handed.remove(&token) else {
            return;
        };
        let current = state
            .parts
            .get_mut(&(handed.queue, handed.partition))
            .filter(|part| part.owned && part.generation == handed.generation);
        // A partition lost meanwhile is read again by its new owner.
        if let Some(part) = current {
            part.buffered += 1;
            state.ready[handed.queue].push_front(Buffered {
                partition: handed.partition,
                offset: handed.offset,
                payload: handed.payload,
                redelivered: true,
            });
        }
        drop(state);
        self.changed.notify_waiters();
    }

    /// Takes over the partitions of `assignment`: a partition whose ledger is still good (its
    /// committed offset is where this member left it) resumes after what it read; any other
    /// starts from its committed offset. Returns the assignment with those starts.
    pub(super) fn assign(
        &self,
        assignment: &TopicPartitionList,
        committed: Option<&TopicPartitionList>,
    ) -> TopicPartitionList {
        let mut starts = TopicPartitionList::new();
        let mut state = self.state();
        let state = &mut *state;
        for elem in assignment.elements() {
            let (topic, partition) = (elem.topic(), elem.partition());
            let Some(&queue) = self.index.get(topic) else {
                continue;
            };
            let on_broker = committed
                .and_then(|committed| committed.find_partition(topic, partition))
                .and_then(|elem| match elem.offset() {
                    Offset::Offset(offset) => Some(offset),
                    _ => None,
                });
            let kept = state
                .parts
                .get(&(queue, partition))
                .is_some_and(|part| committed.is_some() && part.ledger.committed() == on_broker);
            let mut start = Offset::Invalid;
            if kept {
                let part = state.parts.get_mut(&(queue, partition)).expect("checked above");
                part.owned = true;
                part.paused = false;
                part.caught_up = false;
                part.buffered = part.parked.len();
                state.ready[queue].extend(part.parked.drain(..));
                if let Some(next) = part.ledger.next_read() {
                    start = Offset::Offset(next);
                }
            } else {
                state.next_generation += 1;
                let ledger = on_broker.map(Ledger::at).unwrap_or_default();
                state.parts.insert(
                    (queue, partition),
                    Part {
                        ledger,
                        generation: state.next_generation,
                        owned: true,
                        paused: false,
                        buffered: 0,
                        parked: Vec::new(),
                        caught_up: false,
                    },
                );
            }
            let _ = starts.add_partition_offset(topic, partition, start);
        }
        starts
    }

    /// Gives up the partitions of `revoked`; returns the positions to commit for them.
    pub(super) fn revoke(&self, revoked: &TopicPartitionList) -> TopicPartitionList {
        let mut commits = TopicPartitionList::new();
        let mut state = self.state();
        let state = &mut *state;
        for elem in revoked.elements() {
            let (topic, partition) = (elem.topic(), elem.partition());
            let Some(&queue) = self.index.get(topic) else {
                continue;
            };
            let Some(part) = state.parts.get_mut(&(queue, partition)) else {
                continue;
            };
            part.owned = false;
            part.buffered = 0;
            let ready = &mut state.ready[queue];
            let (parked, kept): (Vec<Buffered>, Vec<Buffered>) =
                ready.drain(..).partition(|message| message.partition == partition);
            *ready = kept.into();
            part.parked = parked;
            if let Some(position) = part.ledger.take_commit() {
                let _ = commits.add_partition_offset(topic, partition, Offset::Offset(position));
            }
        }
        commits
    }

    /// Notes that `partition` of `members`' topics was read to its end (librdkafka names only
    /// the partition).
    pub(super) fn at_end(&self, members: &[usize], partition: i32) {
        let mut state = self.state();
        for &queue in members {
            if let Some(part) = state.parts.get_mut(&(queue, partition)) {
                part.caught_up = true;
            }
        }
        drop(state);
        self.changed.notify_waiters();
    }

    /// Forgets the partitions of `members` (an assignment lost without a revoke).
    pub(super) fn lose(&self, members: &[usize]) {
        let mut state = self.state();
        state.parts.retain(|(queue, _), _| !members.contains(queue));
        for &queue in members {
            state.ready[queue].clear();
        }
    }

    /// The partitions of `members` to pause and to resume now.
    pub(super) fn flow(&self, members: &[usize]) -> (TopicPartitionList, TopicPartitionList) {
        let (mut pause, mut resume) = (TopicPartitionList::new(), TopicPartitionList::new());
        let mut state = self.state();
        let state = &mut *state;
        let cap = state.prefetch.max(MIN_BUFFER_PER_PARTITION);
        let first_waiting = state.ready.iter().position(|ready| !ready.is_empty());
        for (&(queue, partition), part) in state.parts.iter_mut() {
            if !part.owned || !members.contains(&queue) {
                continue;
            }
            let urgent_waiting = first_waiting.is_some_and(|first| first < queue);
            let hold = part.buffered >= cap || part.ledger.open() >= MAX_OPEN_PER_PARTITION || urgent_waiting;
            if hold != part.paused {
                part.paused = hold;
                let list = if hold { &mut pause } else { &mut resume };
                list.add_partition(&self.queues[queue], partition);
            }
        }
        (pause, resume)
    }

    /// The positions of `members`' partitions that moved since their last commit.
    pub(super) fn commits(&self, members: &[usize]) -> TopicPartitionList {
        let mut commits = TopicPartitionList::new();
        let mut state = self.state();
        for (&(queue, partition), part) in state.parts.iter_mut() {
            if !part.owned || !members.contains(&queue) {
                continue;
            }
            if let Some(position) = part.ledger.take_commit() {
                let _ = commits.add_partition_offset(&self.queues[queue], partition, Offset::Offset(position));
            }
        }
        commits
    }

    /// Hands the unsettled deliveries of `members` back to their topics and finishes them;
    /// one that cannot be handed back stays uncommitted, for the group to deliver again.
    pub(super) fn hand_back(&self, members: &[usize]) {
        let unsettled: Vec<(u64, usize, Bytes)> = self
            .state()
            .handed
            .iter()
            .filter(|(_, handed)| members.contains(&handed.queue))
            .map(|(&token, handed)| (token, handed.queue, handed.payload.clone()))
            .collect();
        for (token, queue, payload) in unsettled {
            let topic = &self.queues[queue];
            match self.runtime.block_on(self.inner.requeue(topic, payload)) {
                Ok(()) => {
                    let _ = self.finish(token);
                }
                Err(error) => {
                    warn!(%topic, %error, "Could not hand an unsettled message back; the group will deliver it again.")
                }
            }
        }
    }
}
