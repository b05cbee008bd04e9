//! [`Instance`]: this scheduler process as the API sees it — the leader, with the loop's
//! [`SchedulerHandle`], or a standby, which serves reads from the store, stores submissions
//! and cancellation requests for the leader, and follows the fleet's heartbeats itself.

use std::sync::{Arc, Mutex, PoisonError};

use taskfleet_common::api::WorkerStatus;
use taskfleet_engine::fleet::Fleet;
use tokio::sync::watch;

use crate::service::{now, SchedulerHandle};

/// The role of a scheduler process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// It dispatches, records results and fires timers; `epoch` is its lease's (none when
    /// the store serves one scheduler only).
    Leader { epoch: Option<u64> },
    /// It serves the API while `leader` (if any is known) leads.
    Standby { leader: Option<String> },
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Leader { .. } => "leader",
            Role::Standby { .. } => "standby",
        }
    }
}

/// What a standby knows by itself.
#[derive(Clone)]
pub(crate) struct StandbyView {
    /// The fleet, from the heartbeats it reads.
    pub fleet: Arc<Mutex<Fleet>>,
    pub connected: watch::Receiver<bool>,
    /// Whether its last claim on the lease reached the store.
    pub store_available: watch::Receiver<bool>,
}

#[derive(Clone)]
pub(crate) enum Current {
    Leader {
        handle: SchedulerHandle,
        epoch: Option<u64>,
    },
    Standby {
        leader: Option<String>,
        view: StandbyView,
    },
}

/// See the module documentation. Clones follow the same process.
#[derive(Clone)]
pub struct Instance {
    name: Arc<str>,
    current: watch::Receiver<Current>,
}

impl Instance {
    /// A process that always leads (its store serves one scheduler).
    pub fn leader(name: &str, handle: SchedulerHandle) -> Instance {
        let (_, instance) = Instance::with(name, Current::Leader { handle, epoch: None });
        instance
    }

    pub(crate) fn with(name: &str, current: Current) -> (watch::Sender<Current>, Instance) {
        let (sender, current) = watch::channel(current);
        let instance = Instance {
            name: Arc::from(name),
            current,
        };
        (sender, instance)
    }

    /// This process's name (the holder of the lease while it leads).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn role(&self) -> Role {
        match &*self.current.borrow() {
            Current::Leader { epoch, .. } => Role::Leader { epoch: *epoch },
            Current::Standby { leader, .. } => Role::Standby { leader: leader.clone() },
        }
    }

    /// The scheduling loop, while this process leads.
    pub fn leading(&self) -> Option<SchedulerHandle> {
        match &*self.current.borrow() {
            Current::Leader { handle, .. } => Some(handle.clone()),
            Current::Standby { .. } => None,
        }
    }

    /// The live fleet, from heartbeats.
    pub fn fleet(&self) -> Vec<WorkerStatus> {
        match &*self.current.borrow() {
            Current::Leader { handle, .. } => handle.fleet(),
            Current::Standby { view, .. } => {
                let mut fleet = view.fleet.lock().unwrap_or_else(PoisonError::into_inner);
                fleet.expire(now());
                fleet.workers()
            }
        }
    }

    /// The tasks of `workflow_id` running on lent capacity, by index (known to the leader).
    pub fn lent(&self, workflow_id: &str) -> Vec<u32> {
        self.leading()
            .and_then(|handle| {
                handle
                    .progress()
                    .borrow()
                    .get(workflow_id)
                    .map(|progress| progress.lent.clone())
            })
            .unwrap_or_default()
    }

    /// Whether this process is connected to its transport.
    pub fn is_connected(&self) -> bool {
        match &*self.current.borrow() {
            Current::Leader { handle, .. } => handle.is_connected(),
            Current::Standby { view, .. } => *view.connected.borrow(),
        }
    }

    /// Whether its last write (or claim) reached the store.
    pub fn is_store_available(&self) -> bool {
        match &*self.current.borrow() {
            Current::Leader { handle, .. } => handle.is_store_available(),
            Current::Standby { view, .. } => *view.store_available.borrow(),
        }
    }
}
