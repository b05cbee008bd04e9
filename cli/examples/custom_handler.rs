//! A Rust program with its own task handler: registers `word-count` next to the built-in
//! handlers and runs a workflow that uses it, embedded in this process.
//!
//! ```sh
//! cargo run --example custom_handler
//! ```

use std::sync::Arc;

use serde_json::json;
use taskfleet_cli::embedded::{run_workflow, EmbeddedOptions};
use taskfleet_common::workflow::{parse_workflow, ValidateOptions};
use taskfleet_worker::{HandlerContext, HandlerError, HandlerRegistry};
use tokio_util::sync::CancellationToken;

const WORKFLOW: &str = r#"
name: words
tasks:
  - id: fetch
    run: ["sh", "-c", "echo '{\"text\": \"the quick brown fox jumps over the lazy dog\"}' > \"$TASKFLEET_OUTPUT\""]
  - id: count
    deps: [fetch]
    handler: word-count
    args: {field: text}
"#;

/// Counts the words of a text field of the upstream `fetch` task's output.
async fn word_count(context: HandlerContext) -> Result<serde_json::Value, HandlerError> {
    let field = context.args["field"].as_str().unwrap_or("text");
    let text = context.inputs["fetch"][field]
        .as_str()
        .ok_or_else(|| HandlerError::Permanent(format!("input `fetch` has no text field `{field}`")))?;
    Ok(json!({ "words": text.split_whitespace().count() }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut handlers = HandlerRegistry::with_builtins();
    handlers.register_fn("word-count", word_count);
    let spec = parse_workflow(WORKFLOW, &ValidateOptions::default()).map_err(|invalid| anyhow::anyhow!("{invalid}"))?;
    let options = EmbeddedOptions {
        handlers: Arc::new(handlers),
        ..EmbeddedOptions::default()
    };
    let outcome = run_workflow(WORKFLOW, Arc::new(spec), &options, |_, _| {}, CancellationToken::new()).await?;
    print!("{}", taskfleet_cli::report::render_table(&outcome.report));
    Ok(())
}
