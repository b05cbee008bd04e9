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

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, ClientContext, TopicPartitionList};
use tokio::sync::Notify;
use tracing::{debug, warn};

mod core;

use self::core::{Core, State};
use super::{group_of, Inner};
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
    let joined = core.wait_until(inner.config.request_timeout, |state| state.n_assigned >= n_groups);
    if !joined.await {
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
    // What the queues hold already is read before the consumers are handed out, so that
    // "nothing arrives" means the queue is empty, not that the first fetch is still on its way.
    let caught_up = |state: &State| state.parts.values().all(|part| !part.owned || part.caught_up);
    core.wait_until(CATCH_UP_PATIENCE, caught_up).await;
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
    // Tells a new member when it has read what its partitions held (`Core::at_end`).
    client.set("enable.partition.eof", "true");
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
    /// The topic and payload of this delivery, while it is unsettled.
    fn handed(&self) -> Result<(String, Bytes), TransportError> {
        let state = self.core.state();
        match state.handed.get(&self.token) {
            Some(handed) => Ok((self.core.queues[handed.queue].clone(), handed.payload.clone())),
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
        let (topic, payload) = self.handed()?;
        if !requeue {
            return self.dead_letter(payload, "rejected by its consumer").await;
        }
        match self.core.inner.requeue(&topic, payload).await {
            Ok(()) => self.core.finish(self.token).map(|_| ()),
            Err(error) => {
                debug!(%topic, %error, "Requeueing in place: the topic could not take the message back.");
                self.core.put_back(self.token);
                Ok(())
            }
        }
    }

    async fn dead_letter(&self, payload: Bytes, reason: &str) -> Result<(), TransportError> {
        let (topic, _) = self.handed()?;
        match self.core.inner.dead_letter(&topic, payload, reason).await {
            Ok(()) => self.core.finish(self.token).map(|_| ()),
            Err(error) => {
                self.core.put_back(self.token);
                Err(error)
            }
        }
    }
}
