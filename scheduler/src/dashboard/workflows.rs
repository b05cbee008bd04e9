//! The workflows page: filters by state, name and submission time, newest first, a page at a
//! time; the rows refresh every few seconds with each workflow's task counts.

use axum::extract::{Query, State};
use axum::Extension;
use maud::{html, Markup};
use taskfleet_common::state::TaskState;

use super::{badge, dag, gantt, segment, when, PageError, Section, Viewer};
use crate::api::auth::Scope;
use crate::api::listing::{list_page, ListQuery};
use crate::api::{ApiError, ApiState};
use crate::store::WorkflowRecord;

/// Workflows on one page of the dashboard.
const PAGE: u32 = 50;

/// The filters of the form; an empty field filters nothing.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub(super) struct Filters {
    #[serde(default)]
    state: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    submitted_after: String,
    #[serde(default)]
    cursor: String,
}

impl Filters {
    fn query(&self) -> ListQuery {
        let given = |text: &str| Some(text.trim().to_string()).filter(|text| !text.is_empty());
        ListQuery {
            state: given(&self.state),
            name: given(&self.name),
            submitted_after: given(&self.submitted_after),
            limit: Some(PAGE),
            cursor: given(&self.cursor),
        }
    }

    /// The query string of these filters from `cursor`.
    fn href(&self, cursor: Option<&str>) -> String {
        let mut pairs = vec![
            ("state", self.state.as_str()),
            ("name", self.name.as_str()),
            ("submitted_after", self.submitted_after.as_str()),
        ];
        pairs.extend(cursor.map(|cursor| ("cursor", cursor)));
        (pairs.iter())
            .filter(|(_, value)| !value.is_empty())
            .map(|(name, value)| format!("{name}={}", segment(value)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

pub(super) async fn page(
    State(state): State<ApiState>,
    scope: Option<Extension<Scope>>,
    Query(filters): Query<Filters>,
) -> Result<axum::response::Response, PageError> {
    use axum::response::IntoResponse as _;
    let viewer = Viewer::of(scope);
    // A workflow's id in the search box goes straight to it; anything else is a name.
    let searched = filters.name.trim();
    if !searched.is_empty() {
        let found = (state.store.workflow(searched).await).map_err(|error| ApiError::Internal(error.into()))?;
        if found.is_some() {
            let to = format!("/ui/workflows/{}", segment(searched));
            return Ok((axum::http::StatusCode::SEE_OTHER, [(axum::http::header::LOCATION, to)]).into_response());
        }
    }
    let rows = rows_of(&state, &filters).await?;
    let fleet = state.scheduler.fleet();
    let (used, slots) = (fleet.iter()).fold((0, 0), |(used, slots), worker| {
        (used + worker.in_use, slots + worker.slots)
    });
    let body = html! {
        div.heading {
            h1 { "Workflows" }
            p.muted { (fleet.len()) " workers · " (used) " of " (slots) " slots in use" }
        }
        form.filters method="get" action="/" {
            label { "State "
                select name="state" {
                    @for option in ["", "running", "succeeded", "failed", "cancelled"] {
                        option value=(option) selected[filters.state == option] { (if option.is_empty() { "any" } else { option }) }
                    }
                }
            }
            label { "Search " input type="search" name="name" value=(filters.name) placeholder="a workflow's id or name"; }
            label { "Submitted after " input type="text" name="submitted_after" value=(filters.submitted_after) placeholder="2026-12-01T00:00:00Z"; }
            button type="submit" { "Filter" }
        }
        table.workflows {
            thead { tr { th { "Workflow" } th { "Name" } th { "State" } th { "Tasks" } th { "Submitted" } th { "Took" } } }
            (rows)
        }
    };
    Ok(super::page("Workflows", Some(Section::Workflows), viewer, &state, body).into_response())
}

/// The rows alone, as the page refreshes them.
pub(super) async fn rows(State(state): State<ApiState>, Query(filters): Query<Filters>) -> Result<Markup, PageError> {
    rows_of(&state, &filters).await
}

async fn rows_of(state: &ApiState, filters: &Filters) -> Result<Markup, PageError> {
    let (records, next_cursor) = list_page(state, &filters.query()).await?;
    let mut counted = Vec::with_capacity(records.len());
    for record in &records {
        counted.push((record, counts(state, record).await?));
    }
    let refresh = format!("/ui/workflows?{}", filters.href(non_empty(&filters.cursor)));
    Ok(html! {
        tbody #rows hx-get=(refresh) hx-trigger="every 3s" hx-swap="outerHTML" {
            @if records.is_empty() {
                tr { td colspan="6" .muted { "No workflow matches." } }
            }
            @for (record, counts) in &counted {
                tr data-workflow=(record.id) {
                    td { a href={"/ui/workflows/" (segment(&record.id))} { code { (record.id) } } }
                    td { (record.name) }
                    td { (badge(record.state.as_str())) }
                    td { (tally(counts)) }
                    td { (when(record.submitted_at.0)) }
                    td { (took(record)) }
                }
            }
            @if let Some(cursor) = &next_cursor {
                tr { td colspan="6" { a href={"/?" (filters.href(Some(cursor)))} { "Older workflows →" } } }
            }
        }
    })
}

fn non_empty(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

/// A workflow's tasks by state: from the loop while it runs there, else from the store.
pub(super) async fn counts(state: &ApiState, record: &WorkflowRecord) -> Result<Vec<(TaskState, usize)>, ApiError> {
    if let Some(leader) = state.scheduler.leading() {
        if let Some(progress) = leader.progress().borrow().get(record.id.as_str()) {
            return Ok((TaskState::ALL.iter().zip(progress.counts))
                .filter(|(_, n)| *n > 0)
                .map(|(state, n)| (*state, n))
                .collect());
        }
    }
    let counted = (state.store.task_counts(&record.id).await).map_err(|error| ApiError::Internal(error.into()))?;
    Ok(dag::count(
        counted.iter().flat_map(|(state, n)| std::iter::repeat_n(*state, *n)),
    ))
}

/// Counts as a bar of states and how many ended.
pub(super) fn tally(counts: &[(TaskState, usize)]) -> Markup {
    let total: usize = counts.iter().map(|(_, n)| n).sum();
    let ended: usize = (counts.iter())
        .filter(|(state, _)| state.is_terminal())
        .map(|(_, n)| n)
        .sum();
    html! {
        span.tally title=(counts.iter().map(|(state, n)| format!("{n} {}", state.as_str())).collect::<Vec<_>>().join(", ")) {
            span.bar {
                @for (state, n) in counts {
                    span data-state=(state.as_str()) style={"flex-grow:" (n)} {}
                }
            }
            " " (ended) "/" (total)
        }
    }
}

fn took(record: &WorkflowRecord) -> String {
    match record.finished_at {
        Some(finished) => gantt::elapsed(finished.0.saturating_sub(record.submitted_at.0)),
        None => format!(
            "{} so far",
            gantt::elapsed(crate::service::now().0.saturating_sub(record.submitted_at.0))
        ),
    }
}
