//! The PostgreSQL store shared by several schedulers ([`SharedStore`]): the leader's lease row
//! and its fence, and the requests standbys leave for the leader.
//!
//! The lease is the one row of `taskfleet_leader`, renewed on the database's clock by an
//! `UPDATE … WHERE holder = me OR expires_at < now() RETURNING epoch`. A leader's writes
//! take that row `FOR SHARE` first and check holder and epoch, so a takeover waits for a
//! write in progress and every later write of the deposed leader is refused. Advisory locks
//! would not do: a recycled connection or a transaction-mode pooler drops them silently.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::Transaction;
use futures_util::StreamExt as _;
use taskfleet_common::retry::Backoff;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::codec::classify;
use super::PostgresStore;
use crate::store::{Lease, Request, SharedStore, StoreError};

/// The holder and epoch this store writes under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Fence {
    pub holder: String,
    pub epoch: i64,
}

const CLAIM: &str = "UPDATE taskfleet_leader SET epoch = epoch + (holder <> $1)::int, holder = $1, \
     expires_at = now() + $2::bigint * interval '1 millisecond', renewed_at = now() \
     WHERE id = 1 AND (holder = $1 OR expires_at < now()) RETURNING epoch";
const RESIGN: &str = "UPDATE taskfleet_leader SET expires_at = '-infinity' WHERE id = 1 AND holder = $1";
const LEASE: &str = "SELECT holder, epoch, GREATEST(0, EXTRACT(EPOCH FROM expires_at - now()) * 1000)::bigint \
     FROM taskfleet_leader WHERE id = 1 AND epoch > 0";
pub(super) const CHECK_FENCE: &str =
    "SELECT 1 FROM taskfleet_leader WHERE id = 1 AND holder = $1 AND epoch = $2 FOR SHARE";
const REQUEST_CANCEL: &str =
    "UPDATE workflows SET cancel_requested = true WHERE id = $1 AND state = 'running' RETURNING id";
const ADD_REQUEST: &str = "INSERT INTO taskfleet_requests (kind, workflow_id) VALUES ($1, $2)";
const TAKE_REQUESTS: &str = "DELETE FROM taskfleet_requests RETURNING id, kind, workflow_id";
const CANCEL_REQUESTS: &str =
    "SELECT id FROM workflows WHERE state = 'running' AND cancel_requested ORDER BY submitted_at, id";

/// Checks, first thing in a write transaction, that `fence` still holds the lease; the row
/// stays locked until the transaction ends, so the lease cannot change hands meanwhile.
pub(super) async fn check_fence(tx: &Transaction<'_>, fence: Option<&Fence>) -> Result<(), StoreError> {
    let Some(fence) = fence else { return Ok(()) };
    let statement = tx
        .prepare_cached(CHECK_FENCE)
        .await
        .map_err(|error| classify(error, "check the leader's lease"))?;
    let held = tx
        .query_opt(&statement, &[&fence.holder, &fence.epoch])
        .await
        .map_err(|error| classify(error, "check the leader's lease"))?;
    match held {
        Some(_) => Ok(()),
        None => Err(fenced(fence)),
    }
}

/// The refusal of a write under `fence`, which no longer holds the lease.
pub(super) fn fenced(fence: &Fence) -> StoreError {
    StoreError::Fenced {
        reason: format!(
            "write refused: `{}` no longer leads (its epoch {} is over; another scheduler took over)",
            fence.holder, fence.epoch
        ),
    }
}

/// Leaves a request for the leader in `tx` and wakes it when `tx` commits.
pub(super) async fn add_request(
    tx: &Transaction<'_>,
    channel: &str,
    kind: &str,
    workflow_id: &str,
) -> Result<(), StoreError> {
    let context = "leave a request for the leader";
    tx.execute(ADD_REQUEST, &[&kind, &workflow_id])
        .await
        .map_err(|error| classify(error, context))?;
    tx.execute("SELECT pg_notify($1, '')", &[&channel])
        .await
        .map_err(|error| classify(error, context))?;
    Ok(())
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[async_trait]
impl SharedStore for PostgresStore {
    async fn claim(&self, holder: &str, ttl: Duration) -> Result<Option<u64>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(CLAIM, &[&holder, &millis(ttl)])
            .await
            .map_err(|error| classify(error, "claim the leader's lease"))?;
        let Some(row) = row else { return Ok(None) };
        let epoch: i64 = row.get(0);
        *self.fence_mut() = Some(Fence {
            holder: holder.to_string(),
            epoch,
        });
        Ok(Some(u64::try_from(epoch).unwrap_or(0)))
    }

    async fn resign(&self, holder: &str) -> Result<(), StoreError> {
        *self.fence_mut() = None;
        let client = self.client().await?;
        client
            .execute(RESIGN, &[&holder])
            .await
            .map_err(|error| classify(error, "give up the leader's lease"))?;
        Ok(())
    }

    async fn lease(&self) -> Result<Option<Lease>, StoreError> {
        let decode = |row: &tokio_postgres::Row| {
            let remaining: i64 = row.get(2);
            Ok(Lease {
                holder: row.get(0),
                epoch: u64::try_from(row.get::<_, i64>(1)).unwrap_or(0),
                remaining: (remaining > 0).then(|| Duration::from_millis(remaining as u64)),
            })
        };
        let found = self.query_all(LEASE, &[], "read the leader's lease", decode).await?;
        Ok(found.into_iter().next())
    }

    async fn request_cancel(&self, workflow_id: &str) -> Result<bool, StoreError> {
        let context = format!("ask to cancel workflow '{workflow_id}'");
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|error| classify(error, &context))?;
        let running = tx
            .query_opt(REQUEST_CANCEL, &[&workflow_id])
            .await
            .map_err(|error| classify(error, &context))?;
        if running.is_none() {
            return Ok(false);
        }
        add_request(&tx, &self.channel, "cancel", workflow_id).await?;
        tx.commit().await.map_err(|error| classify(error, &context))?;
        Ok(true)
    }

    async fn cancel_requests(&self) -> Result<Vec<String>, StoreError> {
        let decode = |row: &tokio_postgres::Row| Ok(row.get(0));
        self.query_all(CANCEL_REQUESTS, &[], "list cancellation requests", decode)
            .await
    }

    async fn take_requests(&self) -> Result<Vec<Request>, StoreError> {
        let context = "take the requests for the leader";
        let fence = self.fence();
        if fence.is_none() {
            return Err(StoreError::Fenced {
                reason: "only the leader takes requests, and this scheduler does not lead".into(),
            });
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|error| classify(error, context))?;
        check_fence(&tx, fence.as_ref()).await?;
        let rows = tx
            .query(TAKE_REQUESTS, &[])
            .await
            .map_err(|error| classify(error, context))?;
        tx.commit().await.map_err(|error| classify(error, context))?;
        let mut taken: Vec<(i64, Request)> = Vec::with_capacity(rows.len());
        for row in &rows {
            let workflow_id: String = row.get(2);
            let request = match row.get::<_, &str>(1) {
                "submit" => Request::Submitted { workflow_id },
                "cancel" => Request::Cancel { workflow_id },
                other => {
                    warn!(kind = other, %workflow_id, "Ignoring a request of a kind this build does not know.");
                    continue;
                }
            };
            taken.push((row.get(0), request));
        }
        taken.sort_by_key(|(id, _)| *id);
        Ok(taken.into_iter().map(|(_, request)| request).collect())
    }

    async fn listen(&self, wake: Arc<Notify>, shutdown: CancellationToken) {
        let mut backoff = Backoff::new();
        while !shutdown.is_cancelled() {
            match self.listen_once(&wake, &shutdown).await {
                Ok(()) => backoff.reset(),
                Err(error) => {
                    let delay = backoff.next_delay();
                    debug!(%error, retry_in = ?delay, "Lost the connection that listens for requests; polling meanwhile.");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
            }
        }
    }
}

impl PostgresStore {
    /// Listens on a connection of its own until it is lost or `shutdown`.
    async fn listen_once(&self, wake: &Arc<Notify>, shutdown: &CancellationToken) -> Result<(), StoreError> {
        let (client, mut connection) = self
            .config
            .connect(NoTls)
            .await
            .map_err(|error| classify(error, "connect to listen for requests"))?;
        let notified = wake.clone();
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        let driver = tokio::spawn(async move {
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(_)) => notified.notify_one(),
                    Ok(_) => {}
                    Err(error) => return Err(classify(error, "listen for requests")),
                }
            }
            Ok(())
        });
        let listen = format!("LISTEN \"{}\"", self.channel.replace('"', "\"\""));
        let listening = client
            .batch_execute(&listen)
            .await
            .map_err(|error| classify(error, "listen for requests"));
        if let Err(error) = listening {
            driver.abort();
            return Err(error);
        }
        // Anything that arrived before listening is found by the first poll.
        wake.notify_one();
        let mut driver = driver;
        let ended = tokio::select! {
            ended = &mut driver => ended,
            _ = shutdown.cancelled() => {
                driver.abort();
                return Ok(());
            }
        };
        drop(client);
        match ended {
            Ok(result) => result.and(Err(StoreError::Unavailable {
                reason: "the connection listening for requests closed".into(),
            })),
            Err(error) => Err(StoreError::Unavailable {
                reason: format!("the listener stopped: {error}"),
            }),
        }
    }
}
