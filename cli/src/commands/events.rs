//! `taskfleet events [WORKFLOW] [--json]`: follows task state changes and workflows starting
//! and ending as the scheduler commits them, for one workflow (until it ends; the exit code
//! says whether it succeeded) or for the whole fleet (until interrupted).

use std::process::ExitCode;

use clap::Args;
use taskfleet_common::api::FleetEvent;
use taskfleet_common::text::printable;
use taskfleet_common::Millis;
use taskfleet_scheduler::status::format_time;

use super::ServerArg;
use crate::client::StreamEvent;

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Follow only this workflow, until it ends.
    pub id: Option<String>,
    /// One JSON object per line (with its `type`) instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArg,
}

pub async fn run(args: EventsArgs) -> anyhow::Result<ExitCode> {
    let mut stream = args.server.client().events(args.id.as_deref()).await?;
    let mut ended = None;
    while let Some(event) = stream.next().await? {
        let parsed: Option<FleetEvent> = serde_json::from_str(&event.data).ok();
        if let Some(FleetEvent::Workflow(workflow)) = &parsed {
            ended = (workflow.state != "running").then(|| workflow.state.clone());
        }
        let line = if args.json {
            json_line(&event)
        } else {
            text_line(&event, parsed.as_ref())
        };
        super::write_stdout(&format!("{line}\n"))?;
    }
    // Followed to its end: as `submit --wait`, success only for a workflow that succeeded.
    Ok(match (&args.id, ended.as_deref()) {
        (Some(_), Some(state)) if state != "succeeded" => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    })
}

/// The event's data with its name as `type` (a `lagged` event's data has none).
fn json_line(event: &StreamEvent) -> String {
    match serde_json::from_str::<serde_json::Value>(&event.data) {
        Ok(serde_json::Value::Object(mut object)) => {
            object
                .entry("type")
                .or_insert_with(|| serde_json::Value::String(event.name.clone()));
            serde_json::Value::Object(object).to_string()
        }
        _ => serde_json::json!({"type": event.name, "data": event.data}).to_string(),
    }
}

/// `<time> <workflow> <task> <state> (attempt N)`, `<time> <workflow> workflow <state>`, or
/// what a `lagged` event means.
fn text_line(event: &StreamEvent, parsed: Option<&FleetEvent>) -> String {
    match parsed {
        Some(FleetEvent::Task(task)) => {
            let attempt = match task.attempt {
                0 => String::new(),
                n => format!(" (attempt {n})"),
            };
            format!(
                "{}  {}  {}  {}{attempt}",
                format_time(Millis(task.at_ms)),
                printable(&task.workflow_id),
                printable(&task.task),
                task.state.as_str()
            )
        }
        Some(FleetEvent::Workflow(workflow)) => format!(
            "{}  {}  workflow {}",
            format_time(Millis(workflow.at_ms)),
            printable(&workflow.workflow_id),
            printable(&workflow.state)
        ),
        None if event.name == "lagged" => format!(
            "fell behind and missed events ({}); `taskfleet status` shows where things are",
            printable(&event.data)
        ),
        None => format!("{}: {}", printable(&event.name), printable(&event.data)),
    }
}

#[cfg(test)]
mod tests {
    use taskfleet_common::api::{FleetEvent, TaskEvent};
    use taskfleet_common::state::TaskState;

    use super::*;

    #[test]
    fn events_read_as_lines_of_text_or_json() {
        let task = FleetEvent::Task(TaskEvent {
            workflow_id: "wf-1".into(),
            task: "load".into(),
            task_idx: 2,
            state: TaskState::Running,
            attempt: 1,
            at_ms: 0,
        });
        let event = StreamEvent {
            name: "task".into(),
            data: serde_json::to_string(&task).unwrap(),
        };
        assert_eq!(
            text_line(&event, Some(&task)),
            "1970-01-01T00:00:00.000Z  wf-1  load  running (attempt 1)"
        );
        let json: serde_json::Value = serde_json::from_str(&json_line(&event)).unwrap();
        assert_eq!(
            (json["type"].as_str(), json["task"].as_str()),
            (Some("task"), Some("load"))
        );
        let lagged = StreamEvent {
            name: "lagged".into(),
            data: "{\"missed\":7}".into(),
        };
        assert_eq!(json_line(&lagged), "{\"missed\":7,\"type\":\"lagged\"}");
        assert!(text_line(&lagged, None).contains("missed events ({\"missed\":7})"));
    }
}
