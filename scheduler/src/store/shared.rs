//! [`SharedStore`]: what a store several schedulers share offers them so that exactly one
//! leads at a time and the others stand by.
//!
//! Leadership is a lease with an epoch (a fencing token). The leader renews it on the
//! database's clock; once [`SharedStore::claim`] has succeeded, every update batch the store
//! applies first checks that this holder still holds that epoch, so a leader deposed while it
//! was paused cannot write when it wakes up. A standby serves the API: it stores submissions
//! and cancellation requests, and the leader takes them as [`Request`]s (woken by
//! [`SharedStore::listen`], with polling as the fallback).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::StoreError;

/// Who holds the lease, as the database sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub holder: String,
    pub epoch: u64,
    /// How long it still runs; `None` once it has lapsed.
    pub remaining: Option<Duration>,
}

/// Something a scheduler asked of the leader through the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// A workflow was stored: run it.
    Submitted { workflow_id: String },
    /// Cancelling a workflow was asked (the request is also kept on the workflow, see
    /// [`SharedStore::cancel_requests`]).
    Cancel { workflow_id: String },
}

/// See the module documentation.
#[async_trait]
pub trait SharedStore: Send + Sync {
    /// Takes the lease for `holder`, or renews it, for `ttl` from now on the database's clock:
    /// the epoch it holds, or `None` while another holder's lease runs. The epoch grows by one
    /// each time the lease changes hands. From then on this store's writes are fenced by it.
    async fn claim(&self, holder: &str, ttl: Duration) -> Result<Option<u64>, StoreError>;

    /// Gives the lease up at once (a clean stop), so that a standby takes over without
    /// waiting for it to lapse, and stops writing as its holder.
    async fn resign(&self, holder: &str) -> Result<(), StoreError>;

    /// Who holds the lease, if anyone ever did.
    async fn lease(&self) -> Result<Option<Lease>, StoreError>;

    /// Records that cancelling the running workflow `workflow_id` was asked, and tells the
    /// leader. False if no such workflow is running.
    async fn request_cancel(&self, workflow_id: &str) -> Result<bool, StoreError>;

    /// The running workflows whose cancellation was asked.
    async fn cancel_requests(&self) -> Result<Vec<String>, StoreError>;

    /// Takes every request waiting for the leader, oldest first. Fenced like a write: a holder
    /// that no longer leads gets [`StoreError::Fenced`] and leaves them to the new leader.
    async fn take_requests(&self) -> Result<Vec<Request>, StoreError>;

    /// Wakes `wake` whenever a request arrives, until `shutdown`; reconnects when its
    /// connection is lost (which is silent, so the leader also polls).
    async fn listen(&self, wake: Arc<Notify>, shutdown: CancellationToken);
}
