//! The handlers every worker has built in, and the rules for their arguments, checked when a
//! workflow is validated so that a task with bad arguments never reaches a worker. The worker
//! crate implements them (`taskfleet_worker::handler`).

use serde_json::Value;

use crate::units::parse_duration;

/// Handlers every worker has built in.
pub const BUILTIN_HANDLERS: &[&str] = &["noop", "sleep", "fail"];

/// What is wrong with the arguments of built-in handler `name`, as (field, message) pairs;
/// nothing for other handlers, whose workers check their own.
pub fn args_problems(name: &str, args: &Value) -> Vec<(&'static str, String)> {
    match name {
        "sleep" => match args.get("duration") {
            Some(Value::String(text)) => duration_problem(text),
            Some(Value::Number(number)) => duration_problem(&number.to_string()),
            Some(other) => vec![(
                "args.duration",
                format!("must be a duration such as 45s or 1h30m (got {other})"),
            )],
            None => vec![("args.duration", "the `sleep` handler needs a duration".to_string())],
        },
        "fail" if args.get("message").is_some_and(|message| !message.is_string()) => {
            vec![("args.message", "must be a string".to_string())]
        }
        _ => Vec::new(),
    }
}

fn duration_problem(text: &str) -> Vec<(&'static str, String)> {
    match parse_duration(text) {
        Ok(_) => Vec::new(),
        Err(error) => vec![("args.duration", error.to_string())],
    }
}
