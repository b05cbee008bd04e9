//! `POST /v1/workflows/{id}/retry[?task=T]`: an ended workflow runs again from its failures.

use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use taskfleet_common::api::{ErrorBody, RetryResponse};
use taskfleet_common::text::printable;
use taskfleet_engine::retry::{retry_records, RetryRefused, RetryScope};

use super::{bad_path, bad_query, ApiError, ApiState};
use crate::store::WorkflowState;
use crate::submit::{parse_off_runtime, stored_workflow_options};

/// What a retry runs again.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct RetryQuery {
    /// Retry this task only (and the tasks below it that did not run because of it); without
    /// it, every task that failed, timed out or was cancelled, and what they held up.
    task: Option<String>,
}

#[utoipa::path(post, path = "/v1/workflows/{id}/retry", tag = "workflows",
    params(("id" = String, Path, description = "The workflow's id"), RetryQuery),
    responses(
        (status = 202, description = "It runs again: the tasks listed go back to pending", body = RetryResponse),
        (status = 400, description = "A bad query", body = ErrorBody),
        (status = 404, description = "No such workflow", body = ErrorBody),
        (status = 409, description = "It is still running or succeeded, or the task cannot be retried: the message says why", body = ErrorBody),
        (status = 503, description = "The scheduler is stopping", body = ErrorBody),
    ))]
pub(super) async fn retry(
    State(state): State<ApiState>,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<RetryQuery>, QueryRejection>,
) -> Result<(StatusCode, Json<RetryResponse>), ApiError> {
    let Path(id) = id.map_err(bad_path)?;
    let Query(query) = query.map_err(bad_query)?;
    let internal = |error: crate::store::StoreError| ApiError::Internal(error.into());
    let record = state
        .store
        .workflow(&id)
        .await
        .map_err(internal)?
        .ok_or_else(|| ApiError::NotFound(format!("no workflow `{}`", printable(&id))))?;
    match record.state {
        WorkflowState::Failed | WorkflowState::Cancelled => {}
        WorkflowState::Running => {
            return Err(ApiError::Conflict(format!(
                "workflow `{id}` is still running; retry it once it has ended (or cancel it first)"
            )))
        }
        WorkflowState::Succeeded => {
            return Err(ApiError::Conflict(format!(
                "workflow `{id}` succeeded; nothing to retry"
            )))
        }
    }
    let (_, spec) = parse_off_runtime(record.source, stored_workflow_options())
        .await
        .map_err(|error| ApiError::Internal(anyhow::anyhow!("stored workflow `{id}` does not parse: {error}")))?;
    let mut tasks = state.store.tasks(&id).await.map_err(internal)?;
    let scope = match query.task.as_deref() {
        Some(task) => RetryScope::Task(task),
        None => RetryScope::Failures,
    };
    let reset = retry_records(&spec, &tasks, scope).map_err(|refused| match refused {
        RetryRefused::UnknownTask(task) => {
            ApiError::NotFound(format!("workflow `{id}` has no task `{}`", printable(&task)))
        }
        refused => ApiError::Conflict(format!("workflow `{id}`: {refused}")),
    })?;
    if !state.store.reopen_workflow(&id, &reset).await.map_err(internal)? {
        return Err(ApiError::Conflict(format!(
            "workflow `{id}` is running again already (retried by another request)"
        )));
    }
    let retried = reset
        .iter()
        .map(|record| spec.tasks[record.task_idx as usize].id.clone())
        .collect();
    // A shared store told the leader already; a scheduler of its own store leads.
    if state.store.shared().is_none() {
        if let Some(leader) = state.scheduler.leading() {
            // What the store now holds: the records read, with the reset ones in place.
            for record in &reset {
                tasks[record.task_idx as usize] = record.clone();
            }
            leader
                .add_workflow(Arc::from(id.as_str()), Arc::new(spec), Some(tasks))
                .map_err(|_| ApiError::Unavailable("the scheduler is stopping".into()))?;
        }
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(RetryResponse {
            workflow_id: id,
            state: WorkflowState::Running.as_str().to_string(),
            retried,
        }),
    ))
}
