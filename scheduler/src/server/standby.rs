//! Standing by: follow the fleet's heartbeats (for the API), and claim the leader's lease
//! until it is this scheduler's; then lead, and stand by again if the term ends.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use taskfleet_common::wire;
use taskfleet_engine::fleet::Fleet;
use taskfleet_transport::consume_until;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::Service;
use crate::role::{Current, StandbyView};
use crate::service::{now, Term};
use crate::store::StoreError;

impl Service {
    /// Alternates between standing by and leading until the service stops; a clean stop
    /// gives the lease up so that a standby takes over at once.
    pub(super) async fn alternate(self: &Arc<Self>, roles: &watch::Sender<Current>) -> anyhow::Result<()> {
        let result = loop {
            let Some(term) = self.stand_by(roles).await else {
                break Ok(());
            };
            let led = match self.prepare(Some(term)).await {
                Ok(prepared) => self.lead(prepared, roles).await,
                // The store went away while restoring: give the term up and stand by again.
                Err(error) if is_unavailable(&error) => {
                    warn!(
                        error = format!("{error:#}"),
                        "Cannot take over as the leader; standing by again."
                    );
                    self.resign().await;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    Ok(())
                }
                Err(error) => Err(error.context("taking over as the leader")),
            };
            if led.is_err() || self.shutdown.is_cancelled() {
                break led;
            }
        };
        self.resign().await;
        result
    }

    /// Gives the lease up, if this scheduler holds it.
    async fn resign(&self) {
        if let Some(shared) = self.store.shared() {
            if let Err(error) = shared.resign(&self.holder).await {
                warn!(%error, "Cannot give up the leader's lease; it lapses by itself.");
            }
        }
    }

    /// The standby of a process that has not yet looked at anything.
    pub(super) fn idle_standby(&self) -> Current {
        let (_, connected) = watch::channel(false);
        let (_, store_available) = watch::channel(false);
        Current::Standby {
            leader: None,
            view: StandbyView {
                fleet: Arc::new(Mutex::new(Fleet::new(self.config.lease_timeout))),
                connected,
                store_available,
            },
        }
    }

    /// Stands by until this scheduler holds the lease (its term) or the service stops.
    async fn stand_by(&self, roles: &watch::Sender<Current>) -> Option<Term> {
        // Only a shared store has standbys (a store of one scheduler leads from the start).
        let shared = self.store.shared()?;
        let stop = self.shutdown.child_token();
        let _stop_following = stop.clone().drop_guard();
        let (view, store_available) = self.follow_fleet(stop.clone());
        let ttl = self.config.leader_lease;
        let every = (ttl / 10).clamp(Duration::from_millis(100), Duration::from_secs(1));
        // Announced once the leader is known (or the store cannot say), never as a standby of
        // nobody while a leader is there to be read.
        let mut announced: Option<Option<String>> = None;
        loop {
            let asked = Instant::now();
            // Who leads, when the store could say.
            let heard = match shared.claim(&self.holder, ttl).await {
                Ok(Some(epoch)) => return Some(Term::new(epoch, asked + ttl)),
                Ok(None) => match shared.lease().await {
                    Ok(lease) => Some(lease.map(|lease| lease.holder)),
                    Err(error) => {
                        warn!(%error, "Cannot read the leader's lease; retrying.");
                        None
                    }
                },
                Err(error) => {
                    warn!(%error, "Cannot reach the store to claim the leader's lease; retrying.");
                    None
                }
            };
            let reachable = heard.is_some();
            let leader = match (heard, &announced) {
                (Some(holder), _) => holder,
                (None, Some(said)) => said.clone(),
                (None, None) => None,
            };
            if announced.as_ref() != Some(&leader) {
                if let Some(holder) = &leader {
                    info!(name = %self.config.name, role = "standby", leader = %holder, "Standing by.");
                }
                roles.send_replace(Current::Standby {
                    leader: leader.clone(),
                    view: view.clone(),
                });
                announced = Some(leader);
            }
            // Ready only once the leader it names is the store's word.
            store_available.send_replace(reachable);
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.shutdown.cancelled() => return None,
            }
        }
    }

    /// Follows the fleet's heartbeats until `stop`, for the API of a standby; the sender
    /// tells whether the store answers.
    pub(super) fn follow_fleet(&self, stop: CancellationToken) -> (StandbyView, watch::Sender<bool>) {
        let fleet = Arc::new(Mutex::new(Fleet::new(self.config.lease_timeout)));
        let (connected_tx, connected) = watch::channel(false);
        let (store_tx, store_available) = watch::channel(false);
        let view = StandbyView {
            fleet: fleet.clone(),
            connected,
            store_available,
        };
        let transport = self.transport.clone();
        let topic = self.config.queues.heartbeats();
        tokio::spawn(async move {
            let open = || async {
                let subscribed = transport.subscribe(&topic).await;
                connected_tx.send_replace(subscribed.is_ok());
                subscribed
            };
            let heard = |delivery: taskfleet_transport::Delivery| {
                match wire::decode_heartbeat(&delivery.payload) {
                    Ok(heartbeat) => {
                        let mut fleet = fleet.lock().unwrap_or_else(PoisonError::into_inner);
                        fleet.on_heartbeat(&heartbeat, now());
                    }
                    Err(error) => debug!(%error, "Ignoring an unusable heartbeat."),
                }
                async move {
                    if let Err(error) = delivery.ack().await {
                        debug!(%error, "Failed to ack a heartbeat.");
                    }
                    true
                }
            };
            consume_until("follow the fleet's heartbeats", &stop, open, heard).await;
        });
        (view, store_tx)
    }
}

/// Whether `error` is the store being unreachable (worth waiting out), not a failure.
fn is_unavailable(error: &anyhow::Error) -> bool {
    error
        .chain()
        .any(|cause| matches!(cause.downcast_ref::<StoreError>(), Some(StoreError::Unavailable { .. })))
}
