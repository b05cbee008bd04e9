//! One task's page: what it runs and waits for, its inputs, its output, its predicted
//! runtime next to how long its attempts took, and every attempt with its output tails.

use axum::extract::{Path, State};
use axum::Extension;
use maud::{html, Markup};
use taskfleet_common::api::AttemptStatus;
use taskfleet_common::text::printable;
use taskfleet_common::workflow::Action;

use super::workflow::load;
use super::{badge, gantt, segment, PageError, Section, Viewer};
use crate::api::auth::Scope;
use crate::api::{workflow_status, ApiError, ApiState};
use crate::status::{attempt_status, TaskWindow};

pub(super) async fn page(
    State(state): State<ApiState>,
    scope: Option<Extension<Scope>>,
    Path((id, task_id)): Path<(String, String)>,
) -> Result<Markup, PageError> {
    let viewer = Viewer::of(scope);
    let loaded = load(&state, &id).await?;
    let idx = (loaded.spec.tasks.iter().position(|task| task.id == task_id)).ok_or_else(|| {
        ApiError::NotFound(format!(
            "workflow `{}` has no task `{}`",
            printable(&id),
            printable(&task_id)
        ))
    })?;
    let spec = &loaded.spec.tasks[idx];
    let status = workflow_status(
        &state,
        &id,
        TaskWindow {
            from: idx as u32,
            limit: 1,
        },
    )
    .await?;
    let task = status
        .tasks
        .first()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("task `{task_id}` of `{id}` has no row")))?;
    let page_of =
        (state.store.task_page(&id, idx as u32, 1).await).map_err(|error| ApiError::Internal(error.into()))?;
    let attempts: Vec<AttemptStatus> = (page_of.attempts.iter())
        .filter(|attempt| attempt.task_idx == idx as u32)
        .map(attempt_status)
        .collect();
    let base = format!("/ui/workflows/{}", segment(&id));
    let link = |idx: usize| {
        let other = &loaded.spec.tasks[idx].id;
        html! { a href={(base) "/tasks/" (segment(other))} { (other) } " " }
    };
    let dependents: Vec<usize> = (loaded.spec.tasks.iter().enumerate())
        .filter(|(_, other)| other.deps.iter().any(|dep| dep.task as usize == idx))
        .map(|(at, _)| at)
        .collect();
    let took: Vec<u64> = attempts.iter().filter_map(|attempt| attempt.duration_ms).collect();
    let body = html! {
        div.heading {
            h1 { (spec.id) " " (badge(task.state.as_str())) }
            p { "of " a href=(base) { (loaded.record.name) " " code { (id) } } }
        }
        section.facts {
            dl {
                dt { "Runs" }
                dd { code { (action(&spec.action)) } }
                dt { "Pool · class" } dd { (spec.pool) " · " (spec.priority.as_str()) }
                dt { "Waits for" } dd { @for dep in &spec.deps { (link(dep.task as usize)) } @if spec.deps.is_empty() { span.muted { "nothing" } } }
                dt { "Needed by" } dd { @for at in &dependents { (link(*at)) } @if dependents.is_empty() { span.muted { "nothing" } } }
                @if !spec.features.is_empty() {
                    dt { "Inputs" } dd { (spec.features.iter().map(|(name, value)| format!("{name} = {value}")).collect::<Vec<_>>().join(", ")) }
                }
                dt { "Predicted runtime" }
                dd {
                    @if let Some(expected) = &task.expected {
                        (gantt::elapsed(expected.p50_ms)) " (mean " (gantt::elapsed(expected.mean_ms)) ", 90%: " (gantt::elapsed(expected.p90_ms)) "; " (expected.source) ", confidence " (format!("{:.2}", expected.confidence)) ")"
                    } @else if let Some(estimate) = spec.declared_estimate() {
                        (gantt::elapsed(estimate.as_millis() as u64)) " (declared)"
                    } @else {
                        span.muted { "not predicted once the workflow ended" }
                    }
                }
                dt { "Actual runtime" }
                dd {
                    @if took.is_empty() { span.muted { "no attempt has ended" } }
                    @else { (took.iter().map(|ms| gantt::elapsed(*ms)).collect::<Vec<_>>().join(", ")) }
                }
                @if let Some(waiting) = &task.waiting { dt { "Waiting" } dd { (waiting) } }
                @if let Some(lease) = &task.lease { dt { "Lease" } dd { (lease.holder) " until " (lease.expires_at) } }
            }
        }
        @if let Some(output) = &task.output {
            section { h2 { "Output" } pre.output { (pretty(output.get())) } }
        }
        section {
            h2 { "Attempts" }
            @if attempts.is_empty() { p.muted { "None yet." } }
            @for attempt in attempts.iter().rev() {
                (attempt_block(attempt))
            }
        }
    };
    Ok(super::page(&spec.id, Some(Section::Workflows), viewer, &state, body))
}

fn attempt_block(attempt: &AttemptStatus) -> Markup {
    let outcome = attempt.outcome.as_deref().unwrap_or(if attempt.started_at.is_some() {
        "running"
    } else {
        "dispatched"
    });
    html! {
        article.attempt data-outcome=(outcome) {
            h3 { "Attempt " (attempt.attempt) " " (badge(outcome)) }
            p.muted {
                @if let Some(worker) = &attempt.worker { "on " (worker) " · " }
                "sent " (attempt.dispatched_at)
                @if let Some(started) = &attempt.started_at { " · started " (started) }
                @if let Some(took) = attempt.duration_ms { " · took " (gantt::elapsed(took)) }
                @if let Some(code) = attempt.exit_code { " · exit code " (code) }
                @if let Some(signal) = attempt.signal { " · signal " (signal) }
                @if let Some(bytes) = attempt.peak_memory_bytes { " · peak memory " (format!("{:.1} MiB", bytes as f64 / 1_048_576.0)) }
                @if let Some(cpu) = attempt.cpu_time_ms { " · CPU " (gantt::elapsed(cpu)) }
            }
            @if let Some(error) = &attempt.error { p.problem { (error) } }
            @if !attempt.stdout_tail.is_empty() { details open[outcome != "succeeded"] { summary { "stdout (tail)" } pre { (attempt.stdout_tail) } } }
            @if !attempt.stderr_tail.is_empty() { details open[outcome != "succeeded"] { summary { "stderr (tail)" } pre { (attempt.stderr_tail) } } }
        }
    }
}

/// What a task runs, as a command line or a handler call.
fn action(action: &Action) -> String {
    match action {
        Action::Run { argv, .. } => argv.iter().map(|arg| shell_word(arg)).collect::<Vec<_>>().join(" "),
        Action::Handler { name, args, .. } => match args {
            serde_json::Value::Null => format!("handler {name}"),
            args => format!("handler {name} {args}"),
        },
    }
}

fn shell_word(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
    {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

fn pretty(json: &str) -> String {
    serde_json::from_str::<serde_json::Value>(json)
        .and_then(|value| serde_json::to_string_pretty(&value))
        .unwrap_or_else(|_| json.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_read_as_command_lines() {
        let run = Action::Run {
            argv: vec!["sh".into(), "-c".into(), "echo 'hi'".into()],
            env: Default::default(),
        };
        assert_eq!(action(&run), r"sh -c 'echo '\''hi'\'''");
        let handler = Action::Handler {
            name: "sleep".into(),
            args: serde_json::json!({"ms": 5}),
            env: Default::default(),
        };
        assert_eq!(action(&handler), r#"handler sleep {"ms":5}"#);
    }
}
