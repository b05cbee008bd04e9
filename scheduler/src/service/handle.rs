//! [`SchedulerHandle`]: how the rest of the service (the API, the submit queue, the embedded
//! run) talks to a running scheduler loop, and what it hears back.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use taskfleet_common::api::{FleetEvent, WorkerStatus, WorkflowEvent};
use taskfleet_common::state::TaskState;
use taskfleet_common::WorkflowSpec;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc, watch};
use tracing::{debug, info, warn};

use super::{now, Scheduler};
use crate::store::{TaskRecord, WorkflowState};

/// The scheduler loop has stopped: nothing it was handed will run until it starts again
/// (what was persisted is restored then).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the scheduler has stopped")]
pub struct SchedulerStopped;

/// A workflow's progress, as the service last saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkflowProgress {
    pub state: WorkflowState,
    /// Tasks in each state, in `TaskState::ALL` order.
    pub counts: [usize; TaskState::ALL.len()],
    /// Tasks whose attempt runs on capacity reserved for others and lent to it, by index.
    pub lent: Vec<u32>,
    /// A few of the tasks running on workers (at most [`NAMED_RUNNING`], the first by index),
    /// for progress to name.
    pub running: Vec<u32>,
}

/// Running tasks a progress names.
pub const NAMED_RUNNING: usize = 3;

/// Progress of every workflow the service holds, by workflow id.
pub type Progress = HashMap<Arc<str>, WorkflowProgress>;

pub(super) enum Command {
    Add {
        id: Arc<str>,
        spec: Arc<WorkflowSpec>,
        stored: Option<Vec<TaskRecord>>,
    },
    Cancel {
        id: Arc<str>,
    },
}

/// The workflows handed to a loop and not yet forgotten, by id.
#[derive(Clone, Default)]
pub(super) struct Handed(Arc<Mutex<HashSet<Arc<str>>>>);

impl Handed {
    fn insert(&self, id: Arc<str>) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).insert(id);
    }

    fn contains(&self, id: &str) -> bool {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).contains(id)
    }

    pub(super) fn forget(&self, id: &str) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).remove(id);
    }
}

/// Talks to a running scheduler service.
#[derive(Clone)]
pub struct SchedulerHandle {
    pub(super) commands: mpsc::UnboundedSender<Command>,
    pub(super) progress: watch::Receiver<Progress>,
    pub(super) fleet: watch::Receiver<Vec<WorkerStatus>>,
    pub(super) connected: watch::Receiver<bool>,
    pub(super) store_available: watch::Receiver<bool>,
    pub(super) handed: Handed,
    pub(super) events: broadcast::Sender<FleetEvent>,
}

impl SchedulerHandle {
    /// Hands a workflow (already persisted) to the service; `stored` holds its task records
    /// when it is resumed.
    pub fn add_workflow(
        &self,
        id: Arc<str>,
        spec: Arc<WorkflowSpec>,
        stored: Option<Vec<TaskRecord>>,
    ) -> Result<(), SchedulerStopped> {
        self.handed.insert(id.clone());
        self.commands
            .send(Command::Add { id, spec, stored })
            .map_err(|_| SchedulerStopped)
    }

    /// Whether the workflow was handed to the loop and is not finished and forgotten.
    pub fn holds(&self, id: &str) -> bool {
        self.handed.contains(id)
    }

    /// Cancels a workflow: waiting tasks end at once, running ones are stopped on their workers.
    pub fn cancel(&self, id: Arc<str>) -> Result<(), SchedulerStopped> {
        self.commands.send(Command::Cancel { id }).map_err(|_| SchedulerStopped)
    }

    /// Progress updates, one per loop turn that changed something.
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }

    /// The live fleet, from heartbeats.
    pub fn fleet(&self) -> Vec<WorkerStatus> {
        self.fleet.borrow().clone()
    }

    /// Whether the service is connected to its transport.
    pub fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    /// Whether the service's last write to its store went through (it retries while not).
    pub fn is_store_available(&self) -> bool {
        *self.store_available.borrow()
    }

    /// Follows what the loop commits from now on: task state changes and workflows started
    /// and ended, each told once the store holds it.
    pub fn events(&self) -> EventFeed {
        EventFeed {
            receiver: self.events.subscribe(),
            commands: self.commands.clone(),
        }
    }
}

/// Events the loop commits, for one subscriber ([`SchedulerHandle::events`]).
pub struct EventFeed {
    receiver: broadcast::Receiver<FleetEvent>,
    /// Closed once the loop has stopped.
    commands: mpsc::UnboundedSender<Command>,
}

/// What a subscriber hears next.
#[derive(Clone, Debug, PartialEq)]
pub enum Heard {
    Event(FleetEvent),
    /// The subscriber fell behind and this many events were dropped for it.
    Lagged(u64),
}

impl EventFeed {
    /// The next event; `None` once the loop has stopped.
    pub async fn next(&mut self) -> Option<Heard> {
        tokio::select! {
            biased;
            heard = self.receiver.recv() => match heard {
                Ok(event) => Some(Heard::Event(event)),
                Err(RecvError::Lagged(missed)) => Some(Heard::Lagged(missed)),
                Err(RecvError::Closed) => None,
            },
            () = self.commands.closed() => None,
        }
    }
}

impl Scheduler {
    /// Carries out a command of the handle.
    pub(super) fn handle(&mut self, command: Command) {
        let now = now();
        match command {
            Command::Add { id, spec, stored } => {
                match self.engine.workflow_state(&id) {
                    // Handed over twice (by its submitter and by a request in the store).
                    Some(state) if !state.is_terminal() => {
                        debug!(workflow_id = %id, "Workflow already held.");
                        return;
                    }
                    // Retried before the loop forgot that it ended: it starts over from the store.
                    Some(_) => {
                        self.engine.remove_workflow(&id);
                        self.workflows.retain(|known| *known != id);
                    }
                    None => {}
                }
                info!(workflow_id = %id, n_tasks = spec.tasks.len(), resumed = stored.is_some(), "Workflow added.");
                let n_tasks = spec.tasks.len();
                self.engine.add_workflow(id.clone(), spec, stored, now);
                self.ready_on_add(&id, n_tasks, now);
                if self.events.receiver_count() > 0 {
                    self.told.push(FleetEvent::Workflow(WorkflowEvent {
                        workflow_id: id.to_string(),
                        state: WorkflowState::Running.as_str().to_string(),
                        at_ms: now.0,
                    }));
                }
                self.workflows.push(id);
                self.progress_changed = true;
            }
            Command::Cancel { id } => {
                match self.engine.cancel_workflow(&id, now) {
                    Some(in_flight) => {
                        info!(workflow_id = %id, n_running = in_flight.len(), "Cancelling workflow.");
                        for (task, attempt) in in_flight {
                            self.cancel_attempt(&id, task.task_idx, attempt);
                        }
                    }
                    None => warn!(workflow_id = %id, "Cannot cancel a workflow the scheduler does not hold."),
                }
                self.progress_changed = true;
            }
        }
    }
}
