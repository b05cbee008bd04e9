//! Accepting a workflow: validate it, refuse a task no worker of the fleet could ever run,
//! persist it (once per idempotency key), and hand it to the running scheduler. The HTTP API and the broker's submit queue both go through here.
//!
//! Parsing and validation run on the blocking pool, a few at a time ([`MAX_PARSING`]), never
//! on the async runtime: a large or hostile submission costs time proportional to its size
//! (see `taskfleet_common::document`), and health checks, the API and the scheduling loop
//! never wait for it.

use std::sync::{Arc, LazyLock};

use rand::Rng as _;
use taskfleet_common::api::SubmitResponse;
use taskfleet_common::text::printable;
use taskfleet_common::workflow::{parse_workflow, InvalidWorkflow, ValidateOptions};
use taskfleet_common::WorkflowSpec;
use taskfleet_engine::fleet::impossible_requests;
use tokio::sync::Semaphore;

use crate::role::Instance;
use crate::service::now;
use crate::store::{Store, StoreError, WorkflowRecord};

/// Longest idempotency key, in bytes (as Stripe's).
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 255;

/// Workflows parsed at once; the others wait their turn (and their request's timeout).
pub static MAX_PARSING: LazyLock<usize> =
    LazyLock::new(|| std::thread::available_parallelism().map_or(1, |cores| (cores.get() / 2).max(1)));

static PARSING: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(*MAX_PARSING));

/// Why a submission was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The workflow has problems; resubmitting it unchanged will fail again.
    #[error(transparent)]
    Invalid(#[from] InvalidWorkflow),
    /// The idempotency key is unusable (empty, too long, not text); fix the request.
    #[error("{0}")]
    BadKey(String),
    /// The idempotency key was used before with a different workflow: the request is not a
    /// repeat of the first one, and is refused rather than answered with the first's id.
    #[error(
        "idempotency key `{}` was used for a different workflow ({workflow_id}); use a new key for a new workflow",
        printable(key)
    )]
    KeyReused { key: String, workflow_id: String },
    /// The store failed; the submission may be retried.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The scheduler loop is gone; the workflow is stored and runs when it restarts.
    #[error("the scheduler has stopped")]
    Stopped,
    /// A defect of the scheduler, not of the request.
    #[error("{0}")]
    Internal(String),
}

/// A new workflow id: `wf-` and 16 hex digits.
pub fn new_workflow_id() -> String {
    format!("wf-{:016x}", rand::thread_rng().gen::<u64>())
}

/// Checks an idempotency key: 1 to [`MAX_IDEMPOTENCY_KEY_BYTES`] bytes of visible text.
pub fn check_idempotency_key(key: &str) -> Result<(), SubmitError> {
    if key.trim().is_empty() {
        return Err(SubmitError::BadKey("an idempotency key must not be empty".into()));
    }
    if key.len() > MAX_IDEMPOTENCY_KEY_BYTES {
        return Err(SubmitError::BadKey(format!(
            "an idempotency key is at most {MAX_IDEMPOTENCY_KEY_BYTES} bytes (got {})",
            key.len()
        )));
    }
    if key.chars().any(char::is_control) {
        return Err(SubmitError::BadKey(
            "an idempotency key must not hold control characters".into(),
        ));
    }
    Ok(())
}

/// Validates, persists and schedules a workflow given as YAML or JSON text (on a standby,
/// the store hands it to the leader). With an
/// idempotency key, a repeated submission (the same key and the same text) returns the
/// workflow the first one created; the same key with another text is [`SubmitError::KeyReused`].
pub async fn submit_workflow(
    store: &dyn Store,
    scheduler: &Instance,
    options: &ValidateOptions,
    source: String,
    idempotency_key: Option<String>,
) -> Result<SubmitResponse, SubmitError> {
    if let Some(key) = &idempotency_key {
        check_idempotency_key(key)?;
        if let Some(existing) = store.workflow_by_idempotency_key(key).await? {
            return repeat_of(existing, &source, key);
        }
    }
    let (source, spec) = parse_off_runtime(source, options.clone()).await?;
    // A task no worker could ever run is refused now rather than left waiting forever.
    let problems = impossible_requests(&spec, &scheduler.fleet());
    if !problems.is_empty() {
        return Err(InvalidWorkflow { problems }.into());
    }
    let record = WorkflowRecord {
        source,
        idempotency_key: idempotency_key.clone(),
        ..WorkflowRecord::running(new_workflow_id(), spec.name.clone(), now())
    };
    match store.create_workflow(&record, &spec).await {
        Ok(()) => {}
        Err(StoreError::Conflict { .. }) if idempotency_key.is_some() => {
            // Another submission with the same key won the race: answer as for a repeat.
            let key = idempotency_key.as_deref().unwrap_or_default();
            if let Some(existing) = store.workflow_by_idempotency_key(key).await? {
                return repeat_of(existing, &record.source, key);
            }
            return Err(StoreError::Conflict {
                reason: format!("idempotency key '{}' is taken", printable(key)),
            }
            .into());
        }
        Err(error) => return Err(error.into()),
    }
    if let Some(leader) = scheduler.leading() {
        leader
            .add_workflow(Arc::from(record.id.as_str()), Arc::new(spec), None)
            .map_err(|_| SubmitError::Stopped)?;
    }
    Ok(SubmitResponse {
        workflow_id: record.id,
        created: true,
    })
}

/// The answer to a submission whose key was seen: the first workflow if the text is the same.
fn repeat_of(existing: WorkflowRecord, source: &str, key: &str) -> Result<SubmitResponse, SubmitError> {
    if existing.source != source {
        return Err(SubmitError::KeyReused {
            key: key.to_string(),
            workflow_id: existing.id,
        });
    }
    Ok(SubmitResponse {
        workflow_id: existing.id,
        created: false,
    })
}

/// How a stored workflow is read back: it was validated when submitted, so no task limit
/// applies and its handlers need not be known to this scheduler.
pub fn stored_workflow_options() -> ValidateOptions {
    ValidateOptions {
        max_tasks: usize::MAX,
        known_handlers: None,
    }
}

/// Parses and validates `source` on the blocking pool, at most [`MAX_PARSING`] at once, and
/// hands the text back with the workflow.
pub async fn parse_off_runtime(
    source: String,
    options: ValidateOptions,
) -> Result<(String, WorkflowSpec), SubmitError> {
    let _permit = PARSING.acquire().await.map_err(|_| SubmitError::Stopped)?;
    let parsing = tokio::task::spawn_blocking(move || {
        let parsed = parse_workflow(&source, &options);
        parsed.map(|spec| (source, spec))
    });
    match parsing.await {
        Ok(parsed) => Ok(parsed?),
        Err(error) => Err(SubmitError::Internal(format!(
            "validating the workflow failed: {error}"
        ))),
    }
}
