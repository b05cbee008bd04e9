//! [`SchedulerHandle`]: how the rest of the service (the API, the submit queue, the embedded
//! run) talks to a running scheduler loop, and what it hears back.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use taskfleet_common::api::WorkerStatus;
use taskfleet_common::state::TaskState;
use taskfleet_common::WorkflowSpec;
use tokio::sync::{mpsc, watch};

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
}

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
}
