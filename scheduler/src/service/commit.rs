//! Group commit: one store transaction in flight at a time while the loop goes on handling
//! events. What a transaction implies (task messages, control messages, acks of the worker
//! events it records, the progress it shows) is held back with it and released only once it
//! has committed; whatever the loop does meanwhile gathers into the next transaction, which
//! starts as soon as the one before has committed. The store's commit and the loop's work
//! overlap, and the batches grow when the store is slow, instead of the loop waiting.

use std::sync::Arc;

use bytes::Bytes;
use taskfleet_common::api::FleetEvent;
use taskfleet_common::retry::Backoff;
use taskfleet_transport::Delivery;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::outbox::Outbox;
use super::{Deposed, LoopState, Next, Progress, Scheduler, Term};
use crate::store::{coalesce, Store, StoreError, StoreUpdate};

impl Scheduler {
    /// Starts the transaction of what is pending, or releases it at once when it changed
    /// nothing in the store (no transaction is on its way then, so the engine is what the
    /// store holds).
    pub(super) async fn start_commit(&mut self, state: &mut LoopState) -> Next {
        if state.pending.is_empty() {
            return Next::Go;
        }
        let Pending {
            updates,
            mut held,
            progress_changed,
        } = std::mem::take(&mut state.pending);
        if updates.is_empty() {
            held.progress = progress_changed.then(|| self.progress_now());
            return self.release(state, held).await;
        }
        held.finished = updates
            .iter()
            .filter_map(|update| match update {
                StoreUpdate::WorkflowFinished { workflow_id, .. } => Some(workflow_id.clone()),
                _ => None,
            })
            .collect();
        // The engine now is what this transaction persists.
        held.progress = Some(self.progress_now());
        let mut events = self.events_of(&updates);
        held.events.append(&mut events);
        let committer = Committer {
            store: self.store.clone(),
            store_available: self.store_available.clone(),
            term: self.config.term.clone(),
            shutdown: state.shutdown.clone(),
            metrics: self.config.metrics.clone(),
        };
        state.committing = Some(Commit {
            task: committer.start(updates),
            held,
        });
        Next::Go
    }

    /// The transaction on its way committed: releases what it held back and starts the next.
    pub(super) async fn committed(&mut self, state: &mut LoopState) -> Next {
        let Some(commit) = state.committing.take() else {
            return Next::Go;
        };
        match self.release(state, commit.held).await {
            Next::Go => self.start_commit(state).await,
            other => other,
        }
    }

    /// Publishes the messages of a committed transaction, tells its progress, acks its events
    /// and forgets the workflows it finished.
    async fn release(&mut self, state: &mut LoopState, mut held: Held) -> Next {
        state.outbox.append(&mut held.messages);
        state.control.append(&mut held.control);
        let sent = self.send(&mut state.outbox, &mut state.control).await;
        if let Some(progress) = held.progress {
            self.progress.send_replace(progress);
        }
        self.tell(std::mem::take(&mut held.events));
        if let Err(error) = sent {
            warn!(%error, n_messages = state.outbox.n_waiting(), "Failed to publish; reconnecting.");
            // Unacked, its events come again and are ignored as already recorded.
            return Next::Reconnect;
        }
        // Acks are sent together, not one round of the loop each.
        let acks = futures_util::future::join_all(held.acks.into_iter().map(Delivery::ack)).await;
        if let Some(Err(error)) = acks.into_iter().find(Result::is_err) {
            debug!(%error, "Failed to ack worker events; they will come again and be ignored.");
        }
        if self.config.forget_finished {
            // A workflow retried since it ended runs again and stays.
            let engine = &self.engine;
            let ended: Vec<Arc<str>> = (held.finished.into_iter())
                .filter(|id| engine.workflow_state(id).is_some_and(|state| state.is_terminal()))
                .collect();
            for id in ended {
                self.engine.remove_workflow(&id);
                self.workflows.retain(|known| *known != id);
                self.handed.forget(&id);
            }
        }
        Next::Go
    }
}

/// What the loop did since the last transaction started: the updates to persist and what
/// waits for them.
#[derive(Default)]
pub(super) struct Pending {
    pub updates: Vec<StoreUpdate>,
    pub held: Held,
    /// A command changed the progress (a workflow added or cancelled).
    pub progress_changed: bool,
}

/// What a transaction holds back until it commits.
#[derive(Default)]
pub(super) struct Held {
    /// Task messages of the attempts it records.
    pub messages: Outbox,
    /// Control messages (cancellations) decided with it.
    pub control: Vec<Bytes>,
    /// The worker events whose effects it records.
    pub acks: Vec<Delivery>,
    /// The progress it shows, if it changed anything: the only way progress is told, so what
    /// the handle shows is always what the store holds.
    pub progress: Option<Progress>,
    /// The workflows it finishes.
    pub finished: Vec<Arc<str>>,
    /// What it changed, for the event streams.
    pub events: Vec<FleetEvent>,
}

impl Pending {
    pub(super) fn is_empty(&self) -> bool {
        self.updates.is_empty()
            && !self.progress_changed
            && self.held.messages.n_waiting() == 0
            && self.held.control.is_empty()
            && self.held.acks.is_empty()
            && self.held.events.is_empty()
    }
}

/// A transaction on its way, with what it holds back.
pub(super) struct Commit {
    pub task: JoinHandle<anyhow::Result<()>>,
    pub held: Held,
}

impl Commit {
    /// Waits until it has committed; its error otherwise (never resolves without one).
    pub(super) async fn wait(commit: &mut Option<Commit>) -> anyhow::Result<()> {
        let Some(commit) = commit.as_mut() else {
            return std::future::pending().await;
        };
        match (&mut commit.task).await {
            Ok(persisted) => persisted,
            Err(error) => Err(anyhow::anyhow!("persisting stopped: {error}")),
        }
    }
}

/// What a transaction needs besides its updates.
#[derive(Clone)]
pub(super) struct Committer {
    pub store: Arc<dyn Store>,
    /// Whether the last write went through.
    pub store_available: Arc<watch::Sender<bool>>,
    pub term: Option<Term>,
    pub shutdown: CancellationToken,
    /// Where store transaction latencies go.
    pub metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
}

impl Committer {
    /// Starts persisting `updates` in the background.
    pub(super) fn start(&self, updates: Vec<StoreUpdate>) -> JoinHandle<anyhow::Result<()>> {
        let updates: Arc<[StoreUpdate]> = coalesce(updates).into();
        tokio::spawn(self.clone().persist(updates))
    }

    /// Persists a batch. While the store is unavailable (a database restarting, a dropped
    /// connection) the same batch is tried again with backoff, and the service reports itself
    /// not ready; applying a batch twice (a commit whose answer was lost) changes nothing. A
    /// write refused as fenced is [`Deposed`]; other store errors stop the service.
    async fn persist(self, updates: Arc<[StoreUpdate]>) -> anyhow::Result<()> {
        let mut backoff = Backoff::new();
        loop {
            let begun = std::time::Instant::now();
            match self.store.apply(updates.clone()).await {
                Ok(()) => {
                    if let Some(metrics) = &self.metrics {
                        metrics.store_commit(begun.elapsed());
                    }
                    self.store_available
                        .send_if_modified(|available| !std::mem::replace(available, true));
                    return Ok(());
                }
                Err(error @ StoreError::Unavailable { .. }) => {
                    self.store_available.send_replace(false);
                    let delay = backoff.next_delay();
                    warn!(%error, retry_in = ?delay, "Cannot persist to the store; retrying.");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.shutdown.cancelled() => {
                            // A term that ended while the store was away is a step down, not
                            // a failure: the next leader persists what this one could not.
                            if let Some(term) = self.term.as_ref() {
                                if !term.is_current(std::time::Instant::now()) {
                                    return Err(term.deposed().into());
                                }
                            }
                            return Err(anyhow::Error::new(error).context("persisting scheduler state"));
                        }
                    }
                }
                Err(StoreError::Fenced { reason }) => return Err(Deposed { reason }.into()),
                Err(error) => return Err(anyhow::Error::new(error).context("persisting scheduler state")),
            }
        }
    }
}

#[cfg(test)]
mod tests;
