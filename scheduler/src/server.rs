//! The scheduler as a service: serves the HTTP API and accepts workflows published to the
//! submit queue for as long as it runs, and leads or stands by. `taskfleet scheduler` calls
//! [`run`]; tests call it in-process.
//!
//! A store of one scheduler (SQLite) makes it the leader from the start. A store several
//! schedulers share (PostgreSQL) makes it claim the leader's lease: the holder leads
//! (`leader.rs`: restores unfinished workflows, runs the scheduling loop, renews the lease,
//! takes the requests standbys stored) until its term ends, and the others stand by
//! (`standby.rs`: follow the fleet, try the lease) until it lapses.

mod leader;
mod standby;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use taskfleet_common::workflow::ValidateOptions;
use taskfleet_transport::queues::QueueNames;
use taskfleet_transport::{consume_until, Delivery, Transport, TransportError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::{router, ApiState};
use crate::role::Instance;
use crate::store::Store;
use crate::submit::{submit_workflow, SubmitError};
use taskfleet_engine::engine::EngineConfig;

/// How the scheduler service runs.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub queues: QueueNames,
    pub engine: EngineConfig,
    /// A worker silent for this long loses its attempts.
    pub lease_timeout: Duration,
    /// How submitted workflows are validated.
    pub validate: ValidateOptions,
    /// Largest HTTP request body, in bytes.
    pub max_body_bytes: usize,
    /// This scheduler's name, in logs and as the holder of the leader's lease (made unique
    /// per process).
    pub name: String,
    /// How long the leader's lease lasts unless renewed (renewed every third of it); a
    /// standby takes over once it lapses.
    pub leader_lease: Duration,
    /// The API's bearer tokens (re-read on SIGHUP or change); `None` serves anyone who
    /// reaches the address.
    pub tokens: Option<Arc<crate::api::auth::Tokens>>,
    /// What `/metrics` shows, fed by whichever loop leads here.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// What the parts of the service share.
struct Service {
    config: ServerConfig,
    store: Arc<dyn Store>,
    transport: Arc<dyn Transport>,
    shutdown: CancellationToken,
    /// The holder of the leader's lease: the name and a suffix of this process alone, so two
    /// schedulers given the same name never both lead.
    holder: String,
}

/// Runs the service on `listener` until `shutdown` is cancelled.
pub async fn run(
    config: ServerConfig,
    store: Arc<dyn Store>,
    transport: Arc<dyn Transport>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let holder = format!("{}#{:06x}", config.name, rand::random::<u32>() & 0xff_ffff);
    let service = Arc::new(Service {
        config,
        store,
        transport,
        shutdown,
        holder,
    });
    // A store of one scheduler: it leads from the start, and the loop's handle exists
    // before the API serves. A shared store: it stands by until it holds the lease.
    let (first, current) = match service.store.shared() {
        None => {
            let leader = service.prepare(None).await?;
            let current = leader.current();
            (Some(leader), current)
        }
        Some(_) => (None, service.idle_standby()),
    };
    let (roles, instance) = Instance::with(&service.config.name, current);
    let submissions = tokio::spawn(submit_queue_loop(service.clone(), instance.clone()));

    let address: SocketAddr = listener.local_addr().context("reading the listening address")?;
    info!(%address, name = %service.config.name, "Scheduler API listening.");
    let state = ApiState {
        store: service.store.clone(),
        scheduler: instance,
        validate: service.config.validate.clone(),
        max_body_bytes: service.config.max_body_bytes,
        forecasts: Arc::default(),
        tokens: service.config.tokens.clone(),
        metrics: Some(service.config.metrics.clone()),
        broker: Some(crate::api::Broker {
            transport: service.transport.clone(),
            queues: service.config.queues.clone(),
        }),
    };
    if let Some(tokens) = &service.config.tokens {
        tokio::spawn(tokens.clone().watch(service.shutdown.clone()));
    }
    let serve_shutdown = service.shutdown.clone();
    let api = tokio::spawn(async move {
        axum::serve(listener, router(state))
            .with_graceful_shutdown(async move { serve_shutdown.cancelled().await })
            .await
    });
    let roles_ended = match first {
        Some(leader) => service.lead(leader, &roles).await,
        None => service.alternate(&roles).await,
    };
    // The API stopping, or leading failing, stops everything else too.
    service.shutdown.cancel();
    submissions.await.context("the submit queue loop panicked")?;
    api.await.context("the API panicked")?.context("serving the API")?;
    roles_ended
}

/// Accepts workflows published straight onto the broker: each is acked only once stored; an
/// invalid one is dead-lettered with every problem as the reason.
async fn submit_queue_loop(service: Arc<Service>, instance: Instance) {
    let queues = &service.config.queues;
    let queue = queues.submit();
    let open = || async {
        service
            .transport
            .declare(&[queue.clone(), queues.dead_letters()])
            .await?;
        service.transport.consume(&queue, 16).await
    };
    let accept = |delivery| accept_submission(&service.store, &instance, &service.config, delivery);
    consume_until("consume the submit queue", &service.shutdown, open, accept).await;
}

/// Handles one submitted workflow; returns false when the scheduler has stopped.
async fn accept_submission(
    store: &Arc<dyn Store>,
    instance: &Instance,
    config: &ServerConfig,
    delivery: Delivery,
) -> bool {
    let options = &config.validate;
    if let Some(reason) = delivery.oversized(config.max_body_bytes, "submitted workflow") {
        warn!(%reason, "Dead-lettering an oversized submission unread.");
        config.metrics.dead_lettered();
        settle(delivery.dead_letter(&reason).await);
        return true;
    }
    let source = match std::str::from_utf8(&delivery.payload) {
        Ok(source) => source.to_string(),
        Err(error) => {
            warn!(%error, "Dead-lettering a submission that is not UTF-8 text.");
            config.metrics.dead_lettered();
            settle(
                delivery
                    .dead_letter(&format!("submitted workflow is not UTF-8 text: {error}"))
                    .await,
            );
            return true;
        }
    };
    let (source, key) = unwrap_envelope(source);
    match submit_workflow(store.as_ref(), instance, options, source, key).await {
        Ok(answer) => {
            info!(workflow_id = %answer.workflow_id, "Workflow submitted through the broker.");
            settle(delivery.ack().await);
            true
        }
        Err(SubmitError::Invalid(invalid)) => {
            warn!(%invalid, "Dead-lettering an invalid submitted workflow.");
            config.metrics.dead_lettered();
            settle(delivery.dead_letter(&invalid.to_string()).await);
            true
        }
        Err(error @ (SubmitError::BadKey(_) | SubmitError::KeyReused { .. } | SubmitError::Internal(_))) => {
            warn!(%error, "Dead-lettering a submission that cannot be accepted.");
            config.metrics.dead_lettered();
            settle(delivery.dead_letter(&error.to_string()).await);
            true
        }
        Err(SubmitError::Store(error)) => {
            warn!(%error, "Cannot store a submitted workflow; it goes back to the queue.");
            tokio::time::sleep(Duration::from_secs(1)).await;
            settle(delivery.nack(true).await);
            true
        }
        Err(SubmitError::Stopped) => {
            settle(delivery.nack(true).await);
            false
        }
    }
}

/// A submission is the workflow itself (YAML or JSON), or an envelope
/// `{"idempotency_key": "...", "workflow": {...}}` that makes a redelivered submission return
/// the workflow it already created instead of creating a second one.
fn unwrap_envelope(source: String) -> (String, Option<String>) {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Envelope {
        idempotency_key: Option<String>,
        workflow: serde_json::Value,
    }
    if !source.trim_start().starts_with('{') {
        return (source, None);
    }
    match serde_json::from_str::<Envelope>(&source) {
        Ok(envelope) => (envelope.workflow.to_string(), envelope.idempotency_key),
        Err(_) => (source, None),
    }
}

fn settle(result: Result<(), TransportError>) {
    match result {
        Ok(()) => {}
        // Its consumer is gone: the broker hands it out again.
        Err(error @ (TransportError::Unavailable { .. } | TransportError::Closed)) => {
            warn!(%error, "Failed to settle a submit queue delivery; it will be delivered again.");
        }
        Err(error) => warn!(%error, "Failed to settle a submit queue delivery."),
    }
}

#[cfg(test)]
mod tests {
    use super::unwrap_envelope;

    #[test]
    fn envelopes_carry_an_idempotency_key() {
        let (source, key) =
            unwrap_envelope(r#"{"idempotency_key": "k1", "workflow": {"name": "w", "tasks": []}}"#.into());
        assert_eq!(key.as_deref(), Some("k1"));
        assert_eq!(source, r#"{"name":"w","tasks":[]}"#);
        let plain = r#"{"name": "w", "tasks": []}"#.to_string();
        assert_eq!(unwrap_envelope(plain.clone()), (plain, None));
        assert_eq!(unwrap_envelope("name: w\n".into()), ("name: w\n".to_string(), None));
    }
}
