//! Consuming in a group. One `consume_group` call shares one prefetch budget over its queues;
//! each consumer group among them (`super::group_of`) is one librdkafka consumer, polled by a
//! thread of its own that never stops polling (a consumer that stops for
//! `max.poll.interval.ms` silently leaves its group): work runs off that thread, in whoever
//! holds the deliveries.
//!
//! The thread buffers what it reads per queue; a [`KafkaConsumer`] takes from its queue's
//! buffer while the budget allows. A partition is paused while its buffer is full (a budget's
//! worth, at least [`MIN_BUFFER_PER_PARTITION`]), while a queue earlier in the call's order (a more urgent class) has messages
//! waiting, or while too many of its messages are unsettled; it is resumed when that passes.
//! Settling a delivery finishes its offset in the partition's [`Ledger`]; every
//! [`COMMIT_INTERVAL`] the thread commits, asynchronously, each partition's position (its
//! unbroken run of finished offsets). On a rebalance it commits what is finished and stops
//! taking from the partitions it loses; a partition that comes back with nobody having
//! committed it meanwhile keeps its ledger, so what this consumer still holds is not read
//! again. When the call's last consumer is dropped, the deliveries still unsettled go back to
//! their topics as redeliveries, the final positions are committed and the consumers leave
//! their groups.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use tokio::sync::Notify;
use tracing::{debug, warn};

use super::ledger::{Ledger, Read};
use super::{group_of, Inner, REDELIVERED_HEADER};
use crate::{Acker, Consumer, Delivery, TransportError};

/// How long one poll waits for a message before the thread looks after pauses and commits.
const POLL: Duration = Duration::from_millis(20);
/// How often finished offsets are committed.
const COMMIT_INTERVAL: Duration = Duration::from_millis(100);
/// Unsettled messages of one partition past which it is paused, so that one slow message
/// cannot make the ledger behind it grow without bound.
const MAX_OPEN_PER_PARTITION: usize = 10_000;
/// How long starting a consumer waits, once assigned, for its partitions' first fetch (what
/// is already there is then buffered, or each partition has reported that it is at its end).
const CATCH_UP_PATIENCE: Duration = Duration::from_secs(2);
/// The least a partition may buffer before it is paused (a budget's worth when larger): a
/// buffer that holds the more urgent classes' messages lets them be taken first.
const MIN_BUFFER_PER_PARTITION: usize = 256;

/// Starts consuming `queues` with one budget of `prefetch` unsettled deliveries; returns once
/// every consumer group among them has given this member its first assignment.
pub(super) async fn start(
    inner: Arc<Inner>,
    queues: &[String],
    prefetch: u16,
) -> Result<Vec<Box<dyn Consumer>>, TransportError> {
    let core = Arc::new(Core {
        queues: queues.to_vec(),
        index: queues
            .iter()
            .enumerate()
            .map(|(idx, queue)| (queue.clone(), idx))
            .collect(),
        state: Mutex::new(State {
            prefetch: usize::from(prefetch.max(1)),
            ready: vec![VecDeque::new(); queues.len()],
            open_consumers: queues.len(),
            ..State::default()
        }),
        changed: Notify::new(),
        runtime: tokio::runtime::Handle::current(),
        inner: inner.clone(),
    });
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (idx, queue) in queues.iter().enumerate() {
        groups.entry(group_of(&inner.names, queue)).or_default().push(idx);
    }
    let n_groups = groups.len();
    for (group, members) in groups {
        if let Err(error) = spawn_driver(&core, &group, members) {
            core.close();
            return Err(error);
        }
    }
    let deadline = Instant::now() + inner.config.request_timeout;
    loop {
        let changed = core.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if core.state().n_assigned >= n_groups {
            break;
        }
        if tokio::time::timeout_at(deadline.into(), changed).await.is_err() {
            core.close();
            return Err(TransportError::Unavailable {
                reason: format!(
                    "could not join the consumer groups of `{}` on {} within {:?}",
                    queues.join(", "),
                    inner.config.shown(),
                    inner.config.request_timeout
                ),
            });
        }
    }
    // What the queues hold already is read before the consumers are handed out, so that
    // "nothing arrives" means the queue is empty, not that the first fetch is still on its way.
    let caught_up_by = Instant::now() + CATCH_UP_PATIENCE;
    loop {
        let changed = core.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if core.state().parts.values().all(|part| !part.owned || part.caught_up) {
            break;
        }
        if tokio::time::timeout_at(caught_up_by.into(), changed).await.is_err() {
            break;
        }
    }
    Ok((0..queues.len())
        .map(|queue| {
            Box::new(KafkaConsumer {
                core: core.clone(),
                queue,
            }) as Box<dyn Consumer>
        })
        .collect())
}

fn spawn_driver(core: &Arc<Core>, group: &str, members: Vec<usize>) -> Result<(), TransportError> {
    let mut client = ClientConfig::new();
    for (key, value) in core.inner.config.consumer_properties(group) {
        client.set(key, value);
    }
    let context = GroupContext {
        core: core.clone(),
        members: members.clone(),
    };
    let consumer: BaseConsumer<GroupContext> =
        client
            .create_with_context(context)
            .map_err(|error| TransportError::Rejected {
                reason: format!("could not create a Kafka consumer of `{group}`: {error}"),
            })?;
    let topics: Vec<&str> = members.iter().map(|&idx| core.queues[idx].as_str()).collect();
    consumer.subscribe(&topics).map_err(|error| TransportError::Rejected {
        reason: format!("could not subscribe to `{}`: {error}", topics.join(", ")),
    })?;
    let driver_core = core.clone();
    let running = core.inner.threads.token();
    std::thread::Builder::new()
        .name(format!("kafka {group}"))
        .spawn(move || {
            drive(&consumer, &driver_core, &members);
            // Leaves the group before the thread counts as finished.
            drop(consumer);
            drop(running);
        })
        .map_err(|error| TransportError::Unavailable {
            reason: format!("could not start the consumer thread of `{group}`: {error}"),
        })?;
    Ok(())
}

/// What the consumers of one `consume_group` call share.
struct Core {
    queues: Vec<String>,
    index: HashMap<String, usize>,
    state: Mutex<State>,
    /// Woken when a message is buffered, a delivery settled, or the group assigned or closed.
    changed: Notify,
    runtime: tokio::runtime::Handle,
    inner: Arc<Inner>,
}

#[derive(Default)]
struct State {
    prefetch: usize,
    /// Deliveries handed out and not settled, by token.
    handed: HashMap<u64, Handed>,
    next_token: u64,
    /// Messages read and not handed out, per queue.
    ready: Vec<VecDeque<Buffered>>,
    parts: HashMap<(usize, i32), Part>,
    next_generation: u64,
    open_consumers: usize,
    /// Set when the last consumer is gone: the threads hand back, commit and leave.
    closing: bool,
    /// Set once the unsettled deliveries were handed back: they can no longer be settled.
    closed: bool,
    /// Consumer groups that have had their first assignment.
    n_assigned: usize,
}

#[derive(Clone)]
struct Buffered {
    partition: i32,
    offset: i64,
    payload: Bytes,
    redelivered: bool,
}

struct Handed {
    queue: usize,
    partition: i32,
    offset: i64,
    generation: u64,
    payload: Bytes,
}

/// One partition this member reads, or read and may get back.
struct Part {
    ledger: Ledger,
    generation: u64,
    owned: bool,
    paused: bool,
    /// Messages of it in its queue's buffer.
    buffered: usize,
    /// What was buffered when it was revoked, given back if it returns with its ledger.
    parked: Vec<Buffered>,
    /// Whether a fetch came back since it was assigned (a message, or its end).
    caught_up: bool,
}

impl Core {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn close(&self) {
        self.state().closing = true;
        self.changed.notify_waiters();
    }

    /// Buffers a message the thread read.
    fn buffer(&self, message: &BorrowedMessage<'_>) {
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
    fn take(self: &Arc<Self>, queue: usize) -> Option<Result<Delivery, TransportError>> {
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
    fn finish(&self, token: u64) -> Result<Handed, TransportError> {
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
    fn put_back(&self, token: u64) {
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
    fn assign(&self, assignment: &TopicPartitionList, committed: Option<&TopicPartitionList>) -> TopicPartitionList {
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
    fn revoke(&self, revoked: &TopicPartitionList) -> TopicPartitionList {
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
    fn at_end(&self, members: &[usize], partition: i32) {
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
    fn lose(&self, members: &[usize]) {
        let mut state = self.state();
        state.parts.retain(|(queue, _), _| !members.contains(queue));
        for &queue in members {
            state.ready[queue].clear();
        }
    }

    /// The partitions of `members` to pause and to resume now.
    fn flow(&self, members: &[usize]) -> (TopicPartitionList, TopicPartitionList) {
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
    fn commits(&self, members: &[usize]) -> TopicPartitionList {
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
    fn hand_back(&self, members: &[usize]) {
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

/// Polls one librdkafka consumer until the call's consumers are all gone.
fn drive(consumer: &BaseConsumer<GroupContext>, core: &Arc<Core>, members: &[usize]) {
    let mut last_commit = Instant::now();
    while !core.state().closing {
        match consumer.poll(POLL) {
            Some(Ok(message)) => core.buffer(&message),
            Some(Err(KafkaError::PartitionEOF(partition))) => core.at_end(members, partition),
            Some(Err(error)) => debug!(%error, "A Kafka consumer reported an error; librdkafka retries by itself."),
            None => {}
        }
        let (pause, resume) = core.flow(members);
        if pause.count() > 0 {
            if let Err(error) = consumer.pause(&pause) {
                debug!(%error, "Could not pause partitions.");
            }
        }
        if resume.count() > 0 {
            if let Err(error) = consumer.resume(&resume) {
                debug!(%error, "Could not resume partitions.");
            }
        }
        if last_commit.elapsed() >= COMMIT_INTERVAL {
            last_commit = Instant::now();
            let commits = core.commits(members);
            if commits.count() > 0 {
                if let Err(error) = consumer.commit(&commits, CommitMode::Async) {
                    debug!(%error, "Could not commit offsets; a later commit covers them.");
                }
            }
        }
    }
    core.hand_back(members);
    let commits = core.commits(members);
    if commits.count() > 0 {
        if let Err(error) = consumer.commit(&commits, CommitMode::Sync) {
            warn!(%error, "Could not commit the final offsets; the group will deliver those messages again.");
        }
    }
    let mut state = core.state();
    state.closed = true;
    drop(state);
    core.changed.notify_waiters();
    // Dropping the consumer leaves the group (after the revoke, which commits nothing more).
}

/// The callbacks of one librdkafka consumer.
struct GroupContext {
    core: Arc<Core>,
    /// The call's queues this consumer reads.
    members: Vec<usize>,
}

impl ClientContext for GroupContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        super::logging::log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        super::logging::report(&error, reason);
    }
}

impl ConsumerContext for GroupContext {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let timeout = self.core.inner.config.request_timeout;
                let committed = consumer.committed_offsets(tpl.clone(), timeout).ok();
                let starts = self.core.assign(tpl, committed.as_ref());
                if let Err(error) = consumer.assign(&starts) {
                    warn!(%error, "Could not take an assignment.");
                }
                // A partition paused before a revoke may come back paused: every assigned
                // partition starts resumed, as `Core::assign` records it.
                if let Err(error) = consumer.resume(&starts) {
                    debug!(%error, "Could not resume an assignment.");
                }
                debug!(partitions = starts.count(), "Assigned partitions.");
                self.core.state().n_assigned += 1;
                self.core.changed.notify_waiters();
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let commits = self.core.revoke(tpl);
                if commits.count() > 0 {
                    if let Err(error) = consumer.commit(&commits, CommitMode::Sync) {
                        debug!(%error, "Could not commit before a rebalance; those messages are delivered again.");
                    }
                }
                if let Err(error) = consumer.unassign() {
                    debug!(%error, "Could not give up an assignment.");
                }
            }
            other => {
                warn!(error = ?other, "A rebalance failed; dropping the assignment.");
                self.core.lose(&self.members);
                let _ = consumer.unassign();
            }
        }
    }
}

/// Deliveries of one queue of a `consume_group` call.
struct KafkaConsumer {
    core: Arc<Core>,
    queue: usize,
}

#[async_trait]
impl Consumer for KafkaConsumer {
    async fn recv(&mut self) -> Result<Delivery, TransportError> {
        loop {
            let changed = self.core.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(delivery) = self.core.take(self.queue) {
                return delivery;
            }
            changed.await;
        }
    }

    fn try_recv(&mut self) -> Option<Result<Delivery, TransportError>> {
        self.core.take(self.queue)
    }
}

impl Drop for KafkaConsumer {
    fn drop(&mut self) {
        let mut state = self.core.state();
        state.open_consumers = state.open_consumers.saturating_sub(1);
        if state.open_consumers == 0 {
            state.closing = true;
        }
    }
}

/// Settles one delivery of a group.
struct KafkaAcker {
    core: Arc<Core>,
    token: u64,
}

impl KafkaAcker {
    fn topic_and_check(&self) -> Result<String, TransportError> {
        let state = self.core.state();
        match state.handed.get(&self.token) {
            Some(handed) => Ok(self.core.queues[handed.queue].clone()),
            None if state.closed => Err(TransportError::Closed),
            None => Err(TransportError::Rejected {
                reason: format!("delivery {} was already settled", self.token),
            }),
        }
    }
}

#[async_trait]
impl Acker for KafkaAcker {
    async fn ack(&self) -> Result<(), TransportError> {
        self.core.finish(self.token).map(|_| ())
    }

    /// With `requeue`, the message goes back to its topic (perhaps to another member's
    /// partition) as a redelivery; when that cannot be published it goes back to the head of
    /// this consumer's buffer. Without, it is dead-lettered as rejected.
    async fn nack(&self, requeue: bool) -> Result<(), TransportError> {
        let topic = self.topic_and_check()?;
        if !requeue {
            let payload = self.payload();
            return self.dead_letter(payload, "rejected by its consumer").await;
        }
        match self.core.inner.requeue(&topic, self.payload()).await {
            Ok(()) => self.core.finish(self.token).map(|_| ()),
            Err(error) => {
                debug!(%topic, %error, "Requeueing in place: the topic could not take the message back.");
                self.core.put_back(self.token);
                Ok(())
            }
        }
    }

    async fn dead_letter(&self, payload: Bytes, reason: &str) -> Result<(), TransportError> {
        let topic = self.topic_and_check()?;
        match self.core.inner.dead_letter(&topic, payload, reason).await {
            Ok(()) => self.core.finish(self.token).map(|_| ()),
            Err(error) => {
                self.core.put_back(self.token);
                Err(error)
            }
        }
    }
}

impl KafkaAcker {
    fn payload(&self) -> Bytes {
        self.core
            .state()
            .handed
            .get(&self.token)
            .map(|handed| handed.payload.clone())
            .unwrap_or_default()
    }
}
