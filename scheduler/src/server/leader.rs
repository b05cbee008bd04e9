//! Leading: the scheduling loop over the restored workflows, the lease kept renewed, and the
//! requests other schedulers stored taken up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use taskfleet_common::workflow::parse_workflow;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::Service;
use crate::role::Current;
use crate::service::{Capacity, Deposed, Scheduler, SchedulerConfig, SchedulerHandle, Term};
use crate::store::{Request, Store, StoreError, WorkflowRecord, WorkflowState};
use crate::submit::stored_workflow_options;
use taskfleet_engine::engine::EngineConfig;

/// How often the leader looks for requests when no notification woke it.
const REQUEST_POLL: Duration = Duration::from_secs(1);

/// A leader ready to run: its loop built, with every unfinished workflow handed to it.
pub(super) struct Prepared {
    scheduler: Scheduler,
    handle: SchedulerHandle,
    term: Option<Term>,
}

impl Prepared {
    pub(super) fn current(&self) -> Current {
        Current::Leader {
            handle: self.handle.clone(),
            epoch: self.term.as_ref().map(Term::epoch),
        }
    }
}

impl Service {
    /// Builds the loop for a term (`None`: a store of one scheduler, which always leads) and
    /// restores every unfinished workflow into it, with the cancellations asked for.
    pub(super) async fn prepare(&self, term: Option<Term>) -> anyhow::Result<Prepared> {
        let config = &self.config;
        let scheduler_config = SchedulerConfig {
            queues: config.queues.clone(),
            // Attempts that were out when the last leader stopped wait one lease for their
            // worker's heartbeat before they run again.
            engine: EngineConfig {
                adoption_grace: config.lease_timeout,
                ..config.engine.clone()
            },
            capacity: Capacity::Heartbeats {
                lease_timeout: config.lease_timeout,
            },
            forget_finished: true,
            term: term.clone(),
            metrics: Some(config.metrics.clone()),
            ..SchedulerConfig::default()
        };
        let (mut scheduler, handle) = Scheduler::new(scheduler_config, self.store.clone(), self.transport.clone());
        scheduler.restore_predictor(self.store.runtime_stats().await?, self.store.feature_models().await?);
        for record in self.store.running_workflows(None).await? {
            resume(self.store.as_ref(), &handle, record).await?;
        }
        if let Some(shared) = self.store.shared() {
            for id in shared.cancel_requests().await? {
                info!(workflow_id = %id, "Cancelling a workflow as was asked before this scheduler led.");
                handle.cancel(Arc::from(id.as_str()))?;
            }
        }
        Ok(Prepared {
            scheduler,
            handle,
            term,
        })
    }

    /// Leads until the service stops or the term ends (the lease lost or lapsed, or a write
    /// refused as fenced). Other failures of the loop are errors.
    pub(super) async fn lead(
        self: &Arc<Self>,
        prepared: Prepared,
        roles: &watch::Sender<Current>,
    ) -> anyhow::Result<()> {
        roles.send_replace(prepared.current());
        let Prepared {
            scheduler,
            handle,
            term,
        } = prepared;
        let epoch = term.as_ref().map(Term::epoch);
        info!(name = %self.config.name, role = "leader", epoch, "Leading.");
        let stop = self.shutdown.child_token();
        let run = {
            let stop = stop.clone();
            // If the loop ends for any reason (even a panic), the term's tasks stop with it.
            tokio::spawn(async move {
                let _stop_the_term = stop.clone().drop_guard();
                scheduler.run(stop).await
            })
        };
        let keeper = term
            .clone()
            .map(|term| tokio::spawn(self.clone().keep_lease(term, stop.clone())));
        let requests = self
            .store
            .shared()
            .map(|_| tokio::spawn(self.clone().follow_requests(handle, stop.clone())));
        let ran = run.await;
        stop.cancel();
        if let Some(keeper) = keeper {
            keeper.await.context("the lease keeper panicked")?;
        }
        if let Some(requests) = requests {
            requests.await.context("the request follower panicked")?;
        }
        match ran.context("the scheduler loop panicked")? {
            Ok(()) => {}
            Err(error) if error.is::<Deposed>() => {
                warn!(%error, epoch, "Stepping down.");
                return Ok(());
            }
            Err(error) => return Err(error),
        }
        if let Some(term) = term.filter(|term| !term.is_current(Instant::now())) {
            warn!(epoch = term.epoch(), "Stepping down: the term is over.");
        }
        Ok(())
    }

    /// Renews the lease every third of its length until `stop`; ends the term and stops it
    /// once another scheduler holds the lease or the term's own deadline passes unrenewed.
    async fn keep_lease(self: Arc<Self>, term: Term, stop: CancellationToken) {
        let Some(shared) = self.store.shared() else { return };
        let ttl = self.config.leader_lease;
        let every = ttl / 3;
        let mut wait = every;
        loop {
            let deadline = tokio::time::Instant::from_std(term.deadline());
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(deadline) => {
                    warn!(epoch = term.epoch(), "The leader's lease lapsed before it could be renewed.");
                    break;
                }
                _ = tokio::time::sleep(wait) => {}
            }
            // The new deadline counts from before the request: the database's lease, counted
            // from when it runs the statement, lasts at least as long.
            let asked = Instant::now();
            let left = term.deadline().saturating_duration_since(asked);
            match tokio::time::timeout(left, shared.claim(&self.holder, ttl)).await {
                Ok(Ok(Some(epoch))) if epoch == term.epoch() => {
                    term.extend(asked + ttl);
                    wait = every;
                }
                Ok(Ok(_)) => {
                    warn!(epoch = term.epoch(), "Another scheduler holds the leader's lease.");
                    break;
                }
                Ok(Err(error)) => {
                    warn!(%error, "Cannot renew the leader's lease; retrying.");
                    wait = (every / 4).max(Duration::from_millis(50));
                }
                // The deadline came first: the next round says so.
                Err(_) => wait = Duration::ZERO,
            }
        }
        term.end();
        stop.cancel();
    }

    /// Takes the requests other schedulers stored (submissions, cancellations) and hands
    /// them to the loop, when notified and every [`REQUEST_POLL`], until `stop`. A request
    /// that cannot be handled yet is kept and tried again.
    async fn follow_requests(self: Arc<Self>, handle: SchedulerHandle, stop: CancellationToken) {
        let Some(shared) = self.store.shared() else { return };
        let wake = Arc::new(Notify::new());
        let listening = {
            let (service, wake, stop) = (self.clone(), wake.clone(), stop.clone());
            tokio::spawn(async move {
                if let Some(shared) = service.store.shared() {
                    shared.listen(wake, stop).await;
                }
            })
        };
        let mut pending: Vec<Request> = Vec::new();
        loop {
            match shared.take_requests().await {
                Ok(taken) => pending.extend(taken),
                // The term is over; the loop and the keeper learn it too.
                Err(StoreError::Fenced { .. }) => break,
                Err(error) => warn!(%error, "Cannot take the requests for the leader; retrying."),
            }
            let mut kept = Vec::new();
            for request in pending.drain(..) {
                if let Err(error) = self.on_request(&handle, &request).await {
                    warn!(%error, ?request, "Cannot handle a request yet; retrying.");
                    kept.push(request);
                }
            }
            pending = kept;
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(REQUEST_POLL) => {}
                _ = stop.cancelled() => break,
            }
        }
        stop.cancelled().await;
        let _ = listening.await;
    }

    async fn on_request(&self, handle: &SchedulerHandle, request: &Request) -> Result<(), StoreError> {
        match request {
            Request::Submitted { workflow_id } => {
                if handle.holds(workflow_id) {
                    return Ok(());
                }
                match self.store.workflow(workflow_id).await? {
                    Some(record) if record.state == WorkflowState::Running => {
                        resume(self.store.as_ref(), handle, record).await
                    }
                    _ => Ok(()),
                }
            }
            Request::Cancel { workflow_id } => {
                info!(%workflow_id, "Cancelling a workflow as another scheduler was asked.");
                // A stopped loop means the term is over; the next leader cancels it.
                let _ = handle.cancel(Arc::from(workflow_id.as_str()));
                Ok(())
            }
        }
    }
}

/// Hands a stored unfinished workflow back to the loop: finished tasks stay finished,
/// attempts that were out are dispatched again (or adopted).
async fn resume(store: &dyn Store, handle: &SchedulerHandle, record: WorkflowRecord) -> Result<(), StoreError> {
    let spec = match parse_workflow(&record.source, &stored_workflow_options()) {
        Ok(spec) => spec,
        Err(invalid) => {
            error!(workflow_id = %record.id, %invalid, "A stored workflow no longer validates; leaving it alone.");
            return Ok(());
        }
    };
    let tasks = store.tasks(&record.id).await?;
    info!(workflow_id = %record.id, n_tasks = tasks.len(), "Resuming workflow.");
    // A stopped loop: the workflow stays stored and is resumed by the next one.
    let _ = handle.add_workflow(Arc::from(record.id.as_str()), Arc::new(spec), Some(tasks));
    Ok(())
}
