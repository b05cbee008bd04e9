//! The scheduler's HTTP API (JSON): submit, inspect and cancel workflows, list the fleet,
//! and health probes. [`router`] builds it, so tests call it without opening a socket.
//!
//! | method and path | answer |
//! |---|---|
//! | `POST /v1/workflows` (body: YAML or JSON; header `Idempotency-Key`) | 201 [`SubmitResponse`] (200 for a repeat: the same key and body), 422 with every problem, 422 for a key used with another body, 400 for a bad key, 413 over the size limit |
//! | `GET /v1/workflows?state=S&name=N&submitted_after=T&limit=L&cursor=C` | 200 [`WorkflowList`](taskfleet_common::api::WorkflowList): newest first, 100 by default (at most 1000), `next_cursor` for the next page; 400 for a bad filter or cursor |
//! | `GET /v1/workflows/{id}/tasks/{task}/attempts` | 200 [`TaskAttempts`](taskfleet_common::api::TaskAttempts): every attempt with its worker, timings, outcome, exit status, what it used and the tails of its stdout and stderr; 404 |
//! | `GET /v1/workflows/{id}?limit=N&cursor=C` | 200 [`WorkflowStatus`] with counts, a page of tasks (1000 by default, at most 10,000; `next_cursor` for the next; each with how its latest attempt ended, what it used, and the lease of a running one), and a predicted end while it runs; 404 |
//! | `POST /v1/workflows/{id}/cancel` | 202 [`CancelResponse`], 404, 409 when it already ended |
//! | `POST /v1/workflows/{id}/retry?task=T` | 202 [`RetryResponse`](taskfleet_common::api::RetryResponse): a failed or cancelled workflow runs again from its failures (only task `T` and what it held up, with `task`); succeeded tasks do not run again; 404, 409 while it runs, when it succeeded or the task cannot be retried |
//! | `GET /v1/events`, `GET /v1/workflows/{id}/events` | 200 server-sent events ([`FleetEvent`](taskfleet_common::api::FleetEvent)): committed task state changes and workflows started and ended, for the fleet or one workflow (ending with it); 404; 503 on a standby |
//! | `GET /v1/workers` | 200 list of [`WorkerStatus`], with the attempts each runs and when its lease on them lapses |
//! | `GET /healthz`, `GET /readyz` | 200 while alive; 200 only while connected to the broker and able to write to the store; both say the `role` (`leader` or `standby`) |
//!
//! Every scheduler sharing a store serves the whole API: a standby reads from the store and
//! stores submissions and cancellations, which the leader takes up.

pub mod auth;
mod error;
mod events;
pub(crate) mod listing;
mod openapi;
mod retry;
pub use openapi::ApiDoc;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::header::CONTENT_LENGTH;
use axum::http::StatusCode;
use axum::response::IntoResponse as _;
use axum::routing::{get, post};
use axum::{Json, Router};
use taskfleet_common::api::{CancelResponse, ErrorBody, HealthBody, SubmitResponse, WorkerStatus, WorkflowStatus};
use taskfleet_common::text::printable;
use taskfleet_common::workflow::ValidateOptions;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

pub use error::ApiError;
pub use listing::{DEFAULT_LIST_PAGE, MAX_LIST_PAGE};

use crate::role::{Instance, Role};
use crate::service::now;
use crate::status::{add_leases, workflow_status_page, Forecasts, TaskWindow};
use crate::store::Store;
use crate::submit::{submit_workflow, SubmitError};
use taskfleet_engine::eta::slots_by_speed;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<dyn Store>,
    /// This scheduler: the leader's loop, or a standby.
    pub scheduler: Instance,
    /// How submitted workflows are validated.
    pub validate: ValidateOptions,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Predicted ends and expected runtimes of running workflows, kept between requests.
    pub forecasts: Arc<Forecasts>,
    /// The bearer tokens accepted; `None` serves anyone who can reach the address (which the
    /// scheduler allows on a loopback address only).
    pub tokens: Option<Arc<auth::Tokens>>,
    /// What `/metrics` shows; `None` answers 404 there.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// The broker, for the dashboard's queues page.
    pub broker: Option<Broker>,
}

/// The broker and the names of taskfleet's queues on it.
#[derive(Clone)]
pub struct Broker {
    pub transport: Arc<dyn taskfleet_transport::Transport>,
    pub queues: taskfleet_transport::queues::QueueNames,
}

/// The API's routes over `state`.
pub fn router(state: ApiState) -> Router {
    let max_body_bytes = state.max_body_bytes;
    let tokens = state.tokens.clone();
    Router::new()
        .route("/v1/workflows", post(submit).get(listing::list))
        .route("/v1/workflows/{id}", get(status))
        .route("/v1/workflows/{id}/tasks/{task}/attempts", get(listing::attempts))
        .route("/v1/workflows/{id}/cancel", post(cancel))
        .route("/v1/workflows/{id}/retry", post(retry::retry))
        .route("/v1/workflows/{id}/events", get(events::workflow))
        .route("/v1/events", get(events::fleet))
        .route("/v1/workers", get(workers))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/openapi.json", get(openapi::spec))
        .route("/metrics", get(metrics))
        .merge(crate::dashboard::routes())
        .layer(axum::middleware::from_fn_with_state(tokens, auth::authorize))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(60),
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

#[utoipa::path(post, path = "/v1/workflows", tag = "workflows",
    request_body(content = String, content_type = "text/plain",
        description = "The workflow file as text, YAML or JSON (see docs/workflow.md)",
        example = json!("name: example\ntasks:\n  - {id: a, handler: noop}\n  - {id: b, deps: [a], handler: noop}\n")),
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = r"^[!-~]([ -~]*[!-~])?$",
        description = "Resubmitting with the same key and body returns the same workflow: 1 to 255 bytes of visible ASCII")),
    responses(
        (status = 201, description = "Stored; it runs", body = SubmitResponse, links(
            ("status" = (operation_id = "status", parameters(("id" = "$response.body#/workflow_id")))),
            ("cancel" = (operation_id = "cancel", parameters(("id" = "$response.body#/workflow_id")))),
            ("attempts" = (operation_id = "attempts",
                parameters(("id" = "$response.body#/workflow_id"), ("task" = "a")))),
        )),
        (status = 200, description = "A repeat of an earlier submission (same key and body)", body = SubmitResponse),
        (status = 400, description = "Not UTF-8, or a bad idempotency key", body = ErrorBody),
        (status = 413, description = "Over the size limit", body = ErrorBody),
        (status = 422, description = "Invalid: every problem is listed; or a key reused with another body", body = ErrorBody),
        (status = 503, description = "The scheduler is stopping", body = ErrorBody),
    ))]
async fn submit(
    State(state): State<ApiState>,
    request: Request,
) -> Result<(StatusCode, Json<SubmitResponse>), ApiError> {
    let (parts, body) = request.into_parts();
    let too_large = || {
        ApiError::TooLarge(format!(
            "a workflow is at most {} bytes; this one is larger",
            state.max_body_bytes
        ))
    };
    // A declared length over the limit is refused before a byte of the body is read.
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > state.max_body_bytes as u64) {
        return Err(too_large());
    }
    let key = match parts.headers.get("idempotency-key") {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| ApiError::BadRequest("the Idempotency-Key header must be printable text".into()))?
                .to_string(),
        ),
        None => None,
    };
    let bytes = axum::body::to_bytes(body, state.max_body_bytes)
        .await
        .map_err(|_| too_large())?;
    let body = String::from_utf8(bytes.into())
        .map_err(|error| ApiError::BadRequest(format!("the workflow is not UTF-8 text: {error}")))?;
    let answer = submit_workflow(state.store.as_ref(), &state.scheduler, &state.validate, body, key)
        .await
        .map_err(|error| match error {
            SubmitError::Invalid(invalid) => ApiError::Invalid(invalid),
            error @ SubmitError::BadKey(_) => ApiError::BadRequest(error.to_string()),
            error @ SubmitError::KeyReused { .. } => ApiError::Unprocessable(error.to_string()),
            SubmitError::Store(error) => ApiError::Internal(error.into()),
            SubmitError::Internal(reason) => ApiError::Internal(anyhow::anyhow!(reason)),
            SubmitError::Stopped => ApiError::Unavailable("the scheduler is stopping".into()),
        })?;
    let code = if answer.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, Json(answer)))
}

/// Which tasks a status lists: `?limit=N` (default 1000, at most 10,000; 0 for counts only)
/// from `?cursor=C` (the `next_cursor` of the page before).
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct PageQuery {
    /// Tasks on the page (default 1000, at most 10,000; 0 for counts only).
    #[param(maximum = 10_000)]
    limit: Option<u32>,
    /// The `next_cursor` of the page before.
    cursor: Option<String>,
}

/// Tasks a status page lists unless asked otherwise, and at most.
pub const DEFAULT_PAGE: u32 = 1000;
pub const MAX_PAGE: u32 = 10_000;

#[utoipa::path(get, path = "/v1/workflows/{id}", tag = "workflows",
    params(("id" = String, Path, description = "The workflow's id"), PageQuery),
    responses(
        (status = 200, description = "Counts, a page of tasks, and a predicted end while it runs", body = WorkflowStatus),
        (status = 400, description = "A bad limit or cursor", body = ErrorBody),
        (status = 404, description = "No such workflow", body = ErrorBody),
    ))]
async fn status(
    State(state): State<ApiState>,
    id: Result<Path<String>, PathRejection>,
    page: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<WorkflowStatus>, ApiError> {
    let Path(id) = id.map_err(bad_path)?;
    let Query(page) = page.map_err(bad_query)?;
    let limit = page.limit.unwrap_or(DEFAULT_PAGE);
    if limit > MAX_PAGE {
        return Err(ApiError::BadRequest(format!(
            "`limit` is at most {MAX_PAGE} (got {limit})"
        )));
    }
    let from = match page.cursor.as_deref() {
        None => 0,
        Some(cursor) => cursor
            .parse::<u32>()
            .map_err(|_| ApiError::BadRequest(format!("`{}` is not a cursor this API gave", printable(cursor))))?,
    };
    let window = TaskWindow { from, limit };
    Ok(Json(workflow_status(&state, &id, window).await?))
}

/// A workflow's status with the tasks of `window`: counts, leases, lent capacity, and a
/// predicted end while it runs.
pub(crate) async fn workflow_status(
    state: &ApiState,
    id: &str,
    window: TaskWindow,
) -> Result<WorkflowStatus, ApiError> {
    let from = window.from;
    let (mut status, workflow) = match workflow_status_page(state.store.as_ref(), id, window).await {
        Ok(Some(found)) => found,
        Ok(None) => return Err(ApiError::NotFound(format!("no workflow `{}`", printable(id)))),
        Err(error) => return Err(ApiError::Internal(error.into())),
    };
    let fleet = state.scheduler.fleet();
    add_leases(&mut status, &fleet);
    for task_idx in state.scheduler.lent(id) {
        if let Some(task) = task_idx
            .checked_sub(from)
            .and_then(|offset| status.tasks.get_mut(offset as usize))
        {
            task.lent = task.state.is_in_flight();
        }
    }
    let slots = slots_by_speed(
        fleet
            .iter()
            .filter(|worker| !worker.draining)
            .map(|worker| (worker.speed, worker.slots as usize)),
    );
    state
        .forecasts
        .add_to(
            state.store.as_ref(),
            &workflow,
            &mut status,
            from,
            (&slots, &fleet),
            now(),
        )
        .await
        .map_err(|error| ApiError::Internal(error.into()))?;
    Ok(status)
}

#[utoipa::path(post, path = "/v1/workflows/{id}/cancel", tag = "workflows",
    params(("id" = String, Path, description = "The workflow's id")),
    responses(
        (status = 202, description = "Cancelling: its running tasks are stopped", body = CancelResponse),
        (status = 404, description = "No such workflow", body = ErrorBody),
        (status = 409, description = "It already ended", body = ErrorBody),
        (status = 503, description = "The scheduler is stopping", body = ErrorBody),
    ))]
async fn cancel(
    State(state): State<ApiState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<(StatusCode, Json<CancelResponse>), ApiError> {
    let Path(id) = id.map_err(bad_path)?;
    let record = state
        .store
        .workflow(&id)
        .await
        .map_err(|error| ApiError::Internal(error.into()))?
        .ok_or_else(|| ApiError::NotFound(format!("no workflow `{id}`")))?;
    if record.state.is_terminal() {
        return Err(ApiError::Conflict(format!(
            "workflow `{id}` already ended {}",
            record.state.as_str()
        )));
    }
    // Kept in a shared store first, so that the request outlives this scheduler and reaches
    // the leader from a standby.
    if let Some(shared) = state.store.shared() {
        let running = shared
            .request_cancel(&id)
            .await
            .map_err(|error| ApiError::Internal(error.into()))?;
        if !running {
            return Err(ApiError::Conflict(format!("workflow `{id}` already ended")));
        }
    }
    if let Some(leader) = state.scheduler.leading() {
        leader
            .cancel(Arc::from(id.as_str()))
            .map_err(|_| ApiError::Unavailable("the scheduler is stopping".into()))?;
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(CancelResponse {
            workflow_id: id,
            state: "cancelling".into(),
        }),
    ))
}

#[utoipa::path(get, path = "/v1/workers", tag = "fleet",
    responses((status = 200, description = "The live workers, with the attempts each runs", body = Vec<WorkerStatus>)))]
async fn workers(State(state): State<ApiState>) -> Json<Vec<WorkerStatus>> {
    Json(state.scheduler.fleet())
}

#[utoipa::path(get, path = "/healthz", tag = "health", security(()),
    responses((status = 200, description = "The scheduler is alive", body = HealthBody)))]
async fn healthz(State(state): State<ApiState>) -> Json<HealthBody> {
    Json(health("ok", &state.scheduler))
}

#[utoipa::path(get, path = "/readyz", tag = "health", security(()), responses(
    (status = 200, description = "Connected to the broker and able to write to the store", body = HealthBody),
    (status = 503, description = "Not ready: the status says why", body = HealthBody),
))]
async fn readyz(State(state): State<ApiState>) -> (StatusCode, Json<HealthBody>) {
    let (code, status) = if !state.scheduler.is_connected() {
        (StatusCode::SERVICE_UNAVAILABLE, "not connected to the broker")
    } else if !state.scheduler.is_store_available() {
        (StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable; retrying")
    } else {
        (StatusCode::OK, "ready")
    };
    (code, Json(health(status, &state.scheduler)))
}

/// `status`, with who this scheduler is: `name`, `role`, and the leader's `epoch` or the
/// `leader` a standby knows of.
fn health(status: &str, scheduler: &Instance) -> HealthBody {
    let role = scheduler.role();
    let (epoch, leader) = match &role {
        Role::Leader { epoch } => (*epoch, None),
        Role::Standby { leader } => (None, leader.clone()),
    };
    HealthBody {
        status: status.to_string(),
        name: scheduler.name().to_string(),
        role: role.as_str().to_string(),
        epoch,
        leader,
    }
}

/// The scheduler's metrics, in the OpenMetrics text format (Prometheus scrapes it).
#[utoipa::path(get, path = "/metrics", tag = "meta", responses(
    (status = 200, description = "Prometheus metrics (OpenMetrics text)", content_type = "application/openmetrics-text"),
    (status = 404, description = "This scheduler keeps no metrics", body = ErrorBody),
))]
async fn metrics(State(state): State<ApiState>) -> Result<axum::response::Response, ApiError> {
    let metrics = state
        .metrics
        .as_ref()
        .ok_or_else(|| ApiError::NotFound("this scheduler keeps no metrics".into()))?;
    let text = metrics.encode(&state.scheduler.fleet());
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// A path that does not decode, as the API's own 400.
fn bad_path(rejection: PathRejection) -> ApiError {
    ApiError::BadRequest(rejection.body_text())
}

/// A query string that does not decode, as the API's own 400.
fn bad_query(rejection: QueryRejection) -> ApiError {
    ApiError::BadRequest(rejection.body_text())
}

#[cfg(test)]
mod tests;
