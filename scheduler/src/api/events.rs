//! Live event streams (server-sent events): every committed task state change and workflow
//! start and end, for the whole fleet (`GET /v1/events`) or one workflow
//! (`GET /v1/workflows/{id}/events`, which ends with the workflow). A client subscribes
//! first and reads the status after, so that it misses nothing in between; a `lagged` event
//! says that it fell behind and should read the status again.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use taskfleet_common::api::{ErrorBody, FleetEvent, WorkflowEvent};
use taskfleet_common::text::printable;

use super::{bad_path, ApiError, ApiState};
use crate::role::Role;
use crate::service::{EventFeed, Heard};

/// How often an idle stream sends a comment, so that proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[utoipa::path(get, path = "/v1/events", tag = "events",
    responses(
        (status = 200, description = "Server-sent events, each named by its `type` (`task`, `workflow`; `lagged` with `{\"missed\": N}` when the stream fell behind), until the scheduler stops", content_type = "text/event-stream", body = FleetEvent),
        (status = 503, description = "A standby: events stream from the leader", body = ErrorBody),
    ))]
pub(super) async fn fleet(
    State(state): State<ApiState>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let feed = subscribe(&state)?;
    Ok(sse(feed, None, None))
}

#[utoipa::path(get, path = "/v1/workflows/{id}/events", tag = "events",
    params(("id" = String, Path, description = "The workflow's id")),
    responses(
        (status = 200, description = "Server-sent events of this workflow (as for `/v1/events`), ending with the `workflow` event of its end; only that one for a workflow that already ended", content_type = "text/event-stream", body = FleetEvent),
        (status = 404, description = "No such workflow", body = ErrorBody),
        (status = 503, description = "A standby: events stream from the leader", body = ErrorBody),
    ))]
pub(super) async fn workflow(
    State(state): State<ApiState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let Path(id) = id.map_err(bad_path)?;
    // Subscribed before reading the workflow: an end committed in between is heard.
    let feed = subscribe(&state)?;
    let record = state
        .store
        .workflow(&id)
        .await
        .map_err(|error| ApiError::Internal(error.into()))?
        .ok_or_else(|| ApiError::NotFound(format!("no workflow `{}`", printable(&id))))?;
    let ended = record.state.is_terminal().then(|| {
        FleetEvent::Workflow(WorkflowEvent {
            workflow_id: record.id.clone(),
            state: record.state.as_str().to_string(),
            at_ms: record.finished_at.map_or(0, |at| at.0),
        })
    });
    Ok(sse(feed, Some(id), ended))
}

/// The leader's events; a standby has none to tell.
fn subscribe(state: &ApiState) -> Result<EventFeed, ApiError> {
    match state.scheduler.leading() {
        Some(leader) => Ok(leader.events()),
        None => Err(ApiError::Unavailable(match state.scheduler.role() {
            Role::Standby { leader: Some(leader) } => {
                format!("this scheduler is a standby: events stream from the leader, `{leader}`")
            }
            _ => "this scheduler is a standby: events stream from the leader".to_string(),
        })),
    }
}

/// The feed as SSE, only `workflow_id`'s events when given, ending after that workflow's end
/// (at once with `ended`, its end already known).
fn sse(
    feed: EventFeed,
    workflow_id: Option<String>,
    ended: Option<FleetEvent>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = futures_util::stream::unfold(Some((feed, ended)), move |state| {
        let only = workflow_id.clone();
        async move {
            let (mut feed, mut first) = state?;
            loop {
                let heard = match first.take() {
                    Some(event) => Heard::Event(event),
                    None => feed.next().await?,
                };
                let event = match heard {
                    Heard::Event(event) => event,
                    Heard::Lagged(missed) => {
                        let lagged = Event::default()
                            .event("lagged")
                            .data(format!("{{\"missed\":{missed}}}"));
                        return Some((Ok(lagged), Some((feed, None))));
                    }
                };
                if only.as_deref().is_some_and(|id| id != event.workflow_id()) {
                    continue;
                }
                let last = only.is_some() && matches!(&event, FleetEvent::Workflow(ended) if ended.state != "running");
                let data = serde_json::to_string(&event).unwrap_or_default();
                let told = Event::default().event(event.name()).data(data);
                return Some((Ok(told), (!last).then_some((feed, None))));
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}
