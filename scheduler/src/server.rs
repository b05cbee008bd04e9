//! The scheduler as a service: restores unfinished workflows from the store, runs the
//! scheduling loop, serves the HTTP API, and accepts workflows published to the submit queue.
//! `taskfleet scheduler` calls [`run`]; tests call it in-process.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use taskfleet_common::workflow::{parse_workflow, ValidateOptions};
use taskfleet_transport::queues::QueueNames;
use taskfleet_transport::{consume_until, Delivery, Transport, TransportError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::api::{router, ApiState};
use crate::service::{Capacity, Scheduler, SchedulerConfig, SchedulerHandle};
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
}

/// Runs the service on `listener` until `shutdown` is cancelled.
pub async fn run(
    config: ServerConfig,
    store: Arc<dyn Store>,
    transport: Arc<dyn Transport>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let scheduler_config = SchedulerConfig {
        queues: config.queues.clone(),
        // Attempts that were out when the scheduler stopped wait one lease for their worker's
        // heartbeat before they run again.
        engine: EngineConfig {
            adoption_grace: config.lease_timeout,
            ..config.engine.clone()
        },
        capacity: Capacity::Heartbeats {
            lease_timeout: config.lease_timeout,
        },
        forget_finished: true,
        ..SchedulerConfig::default()
    };
    let (mut scheduler, handle) = Scheduler::new(scheduler_config, store.clone(), transport.clone());
    scheduler.restore_predictor(store.runtime_stats().await?, store.feature_models().await?);
    restore(store.as_ref(), &handle).await?;
    // If the scheduling loop ends for any reason (even a panic), the whole service stops, so
    // a supervisor restarts it instead of leaving an API in front of a dead loop.
    let loop_shutdown = shutdown.clone();
    let scheduler = tokio::spawn(async move {
        let _stop_everything = loop_shutdown.clone().drop_guard();
        scheduler.run(loop_shutdown).await
    });
    let submissions = tokio::spawn(submit_queue_loop(
        transport,
        store.clone(),
        handle.clone(),
        config.clone(),
        shutdown.clone(),
    ));

    let address: SocketAddr = listener.local_addr().context("reading the listening address")?;
    info!(%address, "Scheduler API listening.");
    let state = ApiState {
        store,
        scheduler: handle,
        validate: config.validate,
        max_body_bytes: config.max_body_bytes,
        forecasts: Arc::default(),
    };
    let serve_shutdown = shutdown.clone();
    let served = axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { serve_shutdown.cancelled().await })
        .await;
    // The API stopping on its own is an error: stop everything else too.
    shutdown.cancel();
    let scheduled = scheduler.await.context("the scheduler loop panicked")?;
    submissions.await.context("the submit queue loop panicked")?;
    served.context("serving the API")?;
    scheduled
}

/// Hands every unfinished workflow in the store back to the scheduler: finished tasks stay
/// finished, attempts that were out are dispatched again.
async fn restore(store: &dyn Store, handle: &SchedulerHandle) -> anyhow::Result<()> {
    let options = ValidateOptions {
        max_tasks: usize::MAX,
        known_handlers: None,
    };
    for record in store.running_workflows(None).await? {
        let spec = match parse_workflow(&record.source, &options) {
            Ok(spec) => spec,
            Err(invalid) => {
                error!(workflow_id = %record.id, %invalid, "A stored workflow no longer validates; leaving it alone.");
                continue;
            }
        };
        let tasks = store.tasks(&record.id).await?;
        info!(workflow_id = %record.id, n_tasks = tasks.len(), "Resuming workflow.");
        handle.add_workflow(Arc::from(record.id.as_str()), Arc::new(spec), Some(tasks))?;
    }
    Ok(())
}

/// Accepts workflows published straight onto the broker: each is acked only once stored; an
/// invalid one is dead-lettered with every problem as the reason.
async fn submit_queue_loop(
    transport: Arc<dyn Transport>,
    store: Arc<dyn Store>,
    handle: SchedulerHandle,
    config: ServerConfig,
    shutdown: CancellationToken,
) {
    let queue = config.queues.submit();
    let open = || async {
        transport
            .declare(&[queue.clone(), config.queues.dead_letters()])
            .await?;
        transport.consume(&queue, 16).await
    };
    let accept = |delivery| accept_submission(&store, &handle, &config, delivery);
    consume_until("consume the submit queue", &shutdown, open, accept).await;
}

/// Handles one submitted workflow; returns false when the scheduler has stopped.
async fn accept_submission(
    store: &Arc<dyn Store>,
    handle: &SchedulerHandle,
    config: &ServerConfig,
    delivery: Delivery,
) -> bool {
    let options = &config.validate;
    if let Some(reason) = delivery.oversized(config.max_body_bytes, "submitted workflow") {
        warn!(%reason, "Dead-lettering an oversized submission unread.");
        settle(delivery.dead_letter(&reason).await);
        return true;
    }
    let source = match std::str::from_utf8(&delivery.payload) {
        Ok(source) => source.to_string(),
        Err(error) => {
            warn!(%error, "Dead-lettering a submission that is not UTF-8 text.");
            settle(
                delivery
                    .dead_letter(&format!("submitted workflow is not UTF-8 text: {error}"))
                    .await,
            );
            return true;
        }
    };
    let (source, key) = unwrap_envelope(source);
    match submit_workflow(store.as_ref(), handle, options, source, key).await {
        Ok(answer) => {
            info!(workflow_id = %answer.workflow_id, "Workflow submitted through the broker.");
            settle(delivery.ack().await);
            true
        }
        Err(SubmitError::Invalid(invalid)) => {
            warn!(%invalid, "Dead-lettering an invalid submitted workflow.");
            settle(delivery.dead_letter(&invalid.to_string()).await);
            true
        }
        Err(error @ (SubmitError::BadKey(_) | SubmitError::KeyReused { .. } | SubmitError::Internal(_))) => {
            warn!(%error, "Dead-lettering a submission that cannot be accepted.");
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
