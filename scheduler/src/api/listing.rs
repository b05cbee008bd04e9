//! Listing workflows (`GET /v1/workflows`) and one task's attempts
//! (`GET /v1/workflows/{id}/tasks/{task}/attempts`).

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use taskfleet_common::api::{ErrorBody, TaskAttempts, WorkflowList, WorkflowSummary};
use taskfleet_common::text::printable;
use taskfleet_common::Millis;

use super::{ApiError, ApiState};
use crate::status::{attempt_status, format_time};
use crate::store::{WorkflowQuery, WorkflowRecord, WorkflowState};

/// Workflows a list page holds unless asked otherwise, and at most.
pub const DEFAULT_LIST_PAGE: u32 = 100;
pub const MAX_LIST_PAGE: u32 = 1000;

/// `?state=S&name=N&submitted_after=T&limit=L&cursor=C`.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Only workflows in this state: `running`, `succeeded`, `failed` or `cancelled`.
    pub state: Option<String>,
    /// Only workflows of exactly this name.
    pub name: Option<String>,
    /// Only workflows submitted at or after this time (RFC 3339, `2026-12-01T00:00:00Z`).
    pub submitted_after: Option<String>,
    /// Workflows on the page (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the page before.
    pub cursor: Option<String>,
}

impl ListQuery {
    /// The store's query, or what is wrong with this one.
    pub(crate) fn to_store(&self) -> Result<WorkflowQuery, ApiError> {
        let state = match self.state.as_deref() {
            None => None,
            Some(state) => Some(WorkflowState::parse(state).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "`{}` is not a workflow state: use running, succeeded, failed or cancelled",
                    printable(state)
                ))
            })?),
        };
        let submitted_after = match self.submitted_after.as_deref() {
            None => None,
            Some(text) => Some(parse_instant(text).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "`submitted_after` must be an RFC 3339 time such as 2026-12-01T00:00:00Z, not `{}`",
                    printable(text)
                ))
            })?),
        };
        let limit = self.limit.unwrap_or(DEFAULT_LIST_PAGE);
        if limit == 0 || limit > MAX_LIST_PAGE {
            return Err(ApiError::BadRequest(format!(
                "`limit` is between 1 and {MAX_LIST_PAGE} (got {limit})"
            )));
        }
        let before = match self.cursor.as_deref() {
            None => None,
            Some(cursor) => Some(decode_cursor(cursor).ok_or_else(|| {
                ApiError::BadRequest(format!("`{}` is not a cursor this API gave", printable(cursor)))
            })?),
        };
        Ok(WorkflowQuery {
            state,
            name: self.name.clone(),
            submitted_after,
            before,
            limit,
        })
    }
}

fn parse_instant(text: &str) -> Option<Millis> {
    let at = humantime::parse_rfc3339_weak(text).ok()?;
    let since_epoch = at.duration_since(std::time::UNIX_EPOCH).ok()?;
    Some(Millis(u64::try_from(since_epoch.as_millis()).ok()?))
}

/// A page's cursor: the last workflow listed, as `<submitted_at ms>.<id>`.
fn encode_cursor(record: &WorkflowRecord) -> String {
    format!("{}.{}", record.submitted_at.0, record.id)
}

fn decode_cursor(cursor: &str) -> Option<(Millis, String)> {
    let (at, id) = cursor.split_once('.')?;
    (!id.is_empty()).then(|| Some((Millis(at.parse().ok()?), id.to_string())))?
}

#[utoipa::path(get, path = "/v1/workflows", tag = "workflows", params(ListQuery),
    responses(
        (status = 200, description = "A page of workflows, newest first", body = WorkflowList),
        (status = 400, description = "A bad filter, limit or cursor", body = ErrorBody),
    ))]
pub(super) async fn list(
    State(state): State<ApiState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<WorkflowList>, ApiError> {
    let Query(query) = query.map_err(super::bad_query)?;
    let (records, next_cursor) = list_page(&state, &query).await?;
    let workflows = records.iter().map(summary).collect();
    Ok(Json(WorkflowList { workflows, next_cursor }))
}

/// The page of workflows `query` asks for, and the cursor of the next page if there is one.
pub(crate) async fn list_page(
    state: &ApiState,
    query: &ListQuery,
) -> Result<(Vec<WorkflowRecord>, Option<String>), ApiError> {
    let mut store_query = query.to_store()?;
    let limit = store_query.limit;
    // One more than the page, to know whether another follows.
    store_query.limit += 1;
    let mut records = state
        .store
        .list_workflows(&store_query)
        .await
        .map_err(|error| ApiError::Internal(error.into()))?;
    let more = records.len() > limit as usize;
    records.truncate(limit as usize);
    let next_cursor = more.then(|| records.last().map(encode_cursor)).flatten();
    Ok((records, next_cursor))
}

fn summary(record: &WorkflowRecord) -> WorkflowSummary {
    WorkflowSummary {
        workflow_id: record.id.clone(),
        name: record.name.clone(),
        state: record.state.as_str().to_string(),
        submitted_at: format_time(record.submitted_at),
        finished_at: record.finished_at.map(format_time),
        duration_ms: record
            .finished_at
            .map(|finished| finished.0.saturating_sub(record.submitted_at.0)),
    }
}

#[utoipa::path(get, path = "/v1/workflows/{id}/tasks/{task}/attempts", tag = "workflows",
    params(("id" = String, Path, description = "The workflow's id"),
        ("task" = String, Path, description = "The task's id in the workflow file")),
    responses(
        (status = 200, description = "Every attempt: worker, timings, outcome, exit status, use, output tails", body = TaskAttempts),
        (status = 404, description = "No such workflow or task", body = ErrorBody),
    ))]
pub(super) async fn attempts(
    State(state): State<ApiState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<TaskAttempts>, ApiError> {
    let Path((id, task)) = path.map_err(super::bad_path)?;
    let internal = |error: crate::store::StoreError| ApiError::Internal(error.into());
    let no_workflow = || ApiError::NotFound(format!("no workflow `{}`", printable(&id)));
    state
        .store
        .workflow(&id)
        .await
        .map_err(internal)?
        .ok_or_else(no_workflow)?;
    let ids = state.store.task_ids(&id).await.map_err(internal)?;
    let task_idx = ids.iter().position(|known| *known == task).ok_or_else(|| {
        ApiError::NotFound(format!(
            "workflow `{}` has no task `{}`",
            printable(&id),
            printable(&task)
        ))
    })?;
    let task_idx = u32::try_from(task_idx).map_err(|_| ApiError::Internal(anyhow::anyhow!("task index overflow")))?;
    let page = state.store.task_page(&id, task_idx, 1).await.map_err(internal)?;
    let record = page
        .records
        .first()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("task `{task}` of `{id}` has no row")))?;
    let attempts = page
        .attempts
        .iter()
        .filter(|attempt| attempt.task_idx == task_idx)
        .map(attempt_status)
        .collect();
    Ok(Json(TaskAttempts {
        workflow_id: id.clone(),
        task: task.clone(),
        state: record.state,
        attempts,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let record = WorkflowRecord::running("wf-00ab", "etl", Millis(1_733_000_000_123));
        let cursor = encode_cursor(&record);
        assert_eq!(
            decode_cursor(&cursor),
            Some((Millis(1_733_000_000_123), "wf-00ab".to_string()))
        );
        for garbage in ["", "12", "x.wf", "12.", ".wf", "-1.wf"] {
            assert_eq!(decode_cursor(garbage), None, "{garbage:?}");
        }
    }

    #[test]
    fn instants_are_rfc3339() {
        assert_eq!(parse_instant("1970-01-01T00:00:01Z"), Some(Millis(1000)));
        assert_eq!(parse_instant("1970-01-01T00:00:01.5Z"), Some(Millis(1500)));
        assert_eq!(parse_instant("yesterday"), None);
    }
}
