//! Accepting a workflow: validate it, persist it (once per idempotency key), and hand it to
//! the running scheduler. The HTTP API and the broker's submit queue both go through here.

use std::sync::Arc;

use rand::Rng as _;
use taskfleet_common::api::SubmitResponse;
use taskfleet_common::workflow::{parse_workflow, InvalidWorkflow, ValidateOptions};

use crate::service::{now, SchedulerHandle};
use crate::store::{Store, StoreError, WorkflowRecord};

/// Why a submission was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The workflow has problems; resubmitting it unchanged will fail again.
    #[error(transparent)]
    Invalid(#[from] InvalidWorkflow),
    /// The store failed; the submission may be retried.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The scheduler loop is gone; the workflow is stored and runs when it restarts.
    #[error("the scheduler has stopped")]
    Stopped,
}

/// A new workflow id: `wf-` and 16 hex digits.
pub fn new_workflow_id() -> String {
    format!("wf-{:016x}", rand::thread_rng().gen::<u64>())
}

/// Validates, persists and schedules a workflow given as YAML or JSON text. With an
/// idempotency key, a repeated submission returns the workflow the first one created.
pub async fn submit_workflow(
    store: &dyn Store,
    scheduler: &SchedulerHandle,
    options: &ValidateOptions,
    source: String,
    idempotency_key: Option<String>,
) -> Result<SubmitResponse, SubmitError> {
    if let Some(key) = &idempotency_key {
        if let Some(existing) = store.workflow_by_idempotency_key(key).await? {
            return Ok(SubmitResponse {
                workflow_id: existing.id,
                created: false,
            });
        }
    }
    let spec = parse_workflow(&source, options)?;
    let record = WorkflowRecord {
        source,
        idempotency_key: idempotency_key.clone(),
        ..WorkflowRecord::running(new_workflow_id(), spec.name.clone(), now())
    };
    match store.create_workflow(&record, &spec).await {
        Ok(()) => {}
        Err(StoreError::Conflict { .. }) if idempotency_key.is_some() => {
            // Another submission with the same key won the race: answer with its workflow.
            let key = idempotency_key.as_deref().unwrap_or_default();
            if let Some(existing) = store.workflow_by_idempotency_key(key).await? {
                return Ok(SubmitResponse {
                    workflow_id: existing.id,
                    created: false,
                });
            }
            return Err(StoreError::Conflict {
                reason: format!("idempotency key '{key}' is taken"),
            }
            .into());
        }
        Err(error) => return Err(error.into()),
    }
    scheduler
        .add_workflow(Arc::from(record.id.as_str()), Arc::new(spec), None)
        .map_err(|_| SubmitError::Stopped)?;
    Ok(SubmitResponse {
        workflow_id: record.id,
        created: true,
    })
}
