//! One workflow's page: its state, counts and predicted end, the DAG with live task states,
//! the Gantt chart of its attempts, and its tasks a page at a time; cancel and retry.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::Extension;
use maud::{html, Markup};
use taskfleet_common::api::WorkflowStatus;
use taskfleet_common::state::TaskState;
use taskfleet_common::WorkflowSpec;

use super::{badge, dag, gantt, segment, when, PageError, Section, Viewer};
use crate::api::auth::Scope;
use crate::api::{workflow_status, ApiError, ApiState};
use crate::service::now;
use crate::status::TaskWindow;
use crate::store::{TaskRecord, WorkflowRecord};
use crate::submit::{parse_off_runtime, stored_workflow_options};

/// Tasks listed per page of the task table.
const TASK_PAGE: u32 = 200;

#[derive(serde::Deserialize)]
pub(super) struct TasksFrom {
    #[serde(default)]
    tasks_from: u32,
}

/// A stored workflow, its spec and its tasks' records.
pub(super) struct Loaded {
    pub(super) record: WorkflowRecord,
    pub(super) spec: Arc<WorkflowSpec>,
    pub(super) tasks: Vec<TaskRecord>,
}

fn internal(error: crate::store::StoreError) -> ApiError {
    ApiError::Internal(error.into())
}

pub(super) async fn load(state: &ApiState, id: &str) -> Result<Loaded, ApiError> {
    let record = (state.store.workflow(id).await)
        .map_err(internal)?
        .ok_or_else(|| ApiError::NotFound(format!("no workflow `{}`", taskfleet_common::text::printable(id))))?;
    let (_, spec) = parse_off_runtime(record.source.clone(), stored_workflow_options())
        .await
        .map_err(|error| ApiError::Internal(anyhow::anyhow!("workflow `{id}` no longer parses: {error}")))?;
    let tasks = state.store.tasks(id).await.map_err(internal)?;
    Ok(Loaded {
        record,
        spec: Arc::new(spec),
        tasks,
    })
}

pub(super) async fn page(
    State(state): State<ApiState>,
    scope: Option<Extension<Scope>>,
    Path(id): Path<String>,
    Query(from): Query<TasksFrom>,
) -> Result<Markup, PageError> {
    let viewer = Viewer::of(scope);
    let loaded = load(&state, &id).await?;
    let status = workflow_status(&state, &id, TaskWindow { from: 0, limit: 0 }).await?;
    let states: Vec<TaskState> = (0..loaded.spec.tasks.len())
        .map(|idx| loaded.tasks.get(idx).map_or(TaskState::Pending, |task| task.state))
        .collect();
    let parents: Vec<Vec<u32>> = (loaded.spec.tasks.iter())
        .map(|task| task.deps.iter().map(|dep| dep.task).collect())
        .collect();
    let layout = dag::Layout::new(&parents);
    let base = format!("/ui/workflows/{}", segment(&id));
    let running = !loaded.record.state.is_terminal();
    let n_tasks = states.len();
    let chart = gantt_of(&state, &id, &loaded).await?;
    let body = html! {
        div.workflow data-workflow-events=[running.then(|| format!("/v1/workflows/{}/events", segment(&id)))] {
            div.heading {
                h1 { (loaded.record.name) " " small { code { (id) } } }
            }
            div #summary hx-get={(base) "/summary"} hx-trigger="taskfleet:changed from:body, every 10s" {
                (summary_of(&status, viewer))
            }
            section {
                h2 { "Tasks and dependencies" }
                @if n_tasks > dag::MAX_DRAWN {
                    p.muted { (n_tasks) " tasks in " (layout.layers.len()) " layers: each layer counted by state (a DAG is drawn task by task up to " (dag::MAX_DRAWN) " tasks)." }
                    div #layers hx-get={(base) "?tasks_from=" (from.tasks_from)} hx-select="#layers" hx-swap="outerHTML" hx-trigger="taskfleet:changed from:body, every 10s" {
                        (dag::collapsed(&states, &layout))
                    }
                } @else {
                    div.scroll {
                        (dag::drawn(
                            &(loaded.spec.tasks.iter().zip(&states).zip(&parents))
                                .map(|((task, state), parents)| dag::Node { id: &task.id, state: *state, parents })
                                .collect::<Vec<_>>(),
                            &layout,
                            |task| format!("{base}/tasks/{}", segment(task)),
                        ))
                    }
                }
                (legend())
            }
            section {
                h2 { "Attempts over time" }
                div.scroll #gantt hx-get={(base) "/gantt"} hx-trigger="taskfleet:changed from:body, every 10s" {
                    (chart)
                }
            }
            section {
                h2 { "Tasks" }
                (task_table(&loaded, &states, &base, from.tasks_from))
            }
        }
    };
    Ok(super::page(
        &loaded.record.name,
        Some(Section::Workflows),
        viewer,
        &state,
        body,
    ))
}

/// The summary alone, as the page refreshes it.
pub(super) async fn summary(
    State(state): State<ApiState>,
    scope: Option<Extension<Scope>>,
    Path(id): Path<String>,
) -> Result<Markup, PageError> {
    let status = workflow_status(&state, &id, TaskWindow { from: 0, limit: 0 }).await?;
    Ok(summary_of(&status, Viewer::of(scope)))
}

/// The Gantt chart alone, as the page refreshes it.
pub(super) async fn gantt(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Markup, PageError> {
    let loaded = load(&state, &id).await?;
    Ok(gantt_of(&state, &id, &loaded).await?)
}

async fn gantt_of(state: &ApiState, id: &str, loaded: &Loaded) -> Result<Markup, ApiError> {
    let attempts = state.store.attempts(id).await.map_err(internal)?;
    let ids: Vec<String> = loaded.spec.tasks.iter().map(|task| task.id.clone()).collect();
    let end = loaded.record.finished_at.unwrap_or_else(now);
    Ok(gantt::chart(&attempts, &ids, loaded.record.submitted_at, end))
}

fn summary_of(status: &WorkflowStatus, viewer: Viewer) -> Markup {
    let counts: Vec<(TaskState, usize)> = (TaskState::ALL.iter())
        .filter_map(|state| status.counts.get(state.as_str()).map(|n| (*state, *n)))
        .filter(|(_, n)| *n > 0)
        .collect();
    let api = format!("/v1/workflows/{}", segment(&status.workflow_id));
    let running = status.state == "running";
    html! {
        div.summary data-state=(status.state) {
            (badge(&status.state))
            (super::workflows::tally(&counts))
            span.muted {
                @if let Some(started) = &status.started_at { " · submitted " (started) }
                @if let Some(took) = status.duration_ms { " · took " (gantt::elapsed(took)) }
            }
            @if let Some(eta) = &status.eta {
                span.eta { " · predicted end in " (gantt::elapsed(eta.p50_in_ms)) " (90%: " (gantt::elapsed(eta.p90_in_ms)) ")" }
            }
            span.actions {
                @if viewer.can_write() && running {
                    button.danger data-action="cancel" hx-post={(api) "/cancel"} hx-swap="none"
                        hx-confirm={"Cancel workflow " (status.workflow_id) "? Its running tasks are stopped."} { "Cancel" }
                }
                @if viewer.can_write() && matches!(status.state.as_str(), "failed" | "cancelled") {
                    button data-action="retry" hx-post={(api) "/retry"} hx-swap="none" { "Retry failures" }
                }
                span #action-result role="status" {}
            }
        }
        div.counts {
            @for (state, n) in &counts {
                span.count data-state=(state.as_str()) { (n) " " (state.as_str()) }
            }
        }
    }
}

fn legend() -> Markup {
    html! {
        p.legend {
            @for state in TaskState::ALL {
                span.count data-state=(state.as_str()) { (state.as_str()) }
            }
        }
    }
}

fn task_table(loaded: &Loaded, states: &[TaskState], base: &str, from: u32) -> Markup {
    let n = loaded.spec.tasks.len() as u32;
    let from = from.min(n.saturating_sub(1));
    let to = (from + TASK_PAGE).min(n);
    html! {
        @if n > TASK_PAGE {
            p.pager {
                "Tasks " (from + 1) "–" (to) " of " (n) " "
                @if from > 0 { a href={(base) "?tasks_from=" (from.saturating_sub(TASK_PAGE))} { "← earlier" } " " }
                @if to < n { a href={(base) "?tasks_from=" (to)} { "later →" } }
            }
        }
        table.tasks {
            thead { tr { th { "Task" } th { "State" } th { "Attempts" } th { "Pool" } th { "Waits for" } } }
            tbody {
                @for idx in from..to {
                    @let task = &loaded.spec.tasks[idx as usize];
                    @let record = loaded.tasks.get(idx as usize);
                    tr.node data-task-idx=(idx) data-state=(states[idx as usize].as_str()) {
                        td { a href={(base) "/tasks/" (segment(&task.id))} { (task.id) } }
                        td { span.badge.state-name data-state=(states[idx as usize].as_str()) { (states[idx as usize].as_str()) } }
                        td { (record.map_or(0, |record| record.attempt)) }
                        td { (task.pool) }
                        td.muted { (task.deps.iter().filter_map(|dep| loaded.spec.tasks.get(dep.task as usize)).map(|parent| parent.id.as_str()).collect::<Vec<_>>().join(", ")) }
                    }
                }
            }
        }
        @if let Some(finished) = loaded.record.finished_at {
            p.muted { "Ended " (when(finished.0)) "." }
        }
    }
}
