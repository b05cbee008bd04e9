//! The embedded mode used as a library: a Rust program registers its own handler and runs a
//! workflow in-process.

use std::sync::Arc;

use serde_json::json;
use taskfleet_cli::embedded::{run_workflow, EmbeddedOptions};
use taskfleet_common::workflow::{parse_workflow, ValidateOptions};
use taskfleet_scheduler::store::WorkflowState;
use taskfleet_worker::{HandlerError, HandlerRegistry};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn registered_rust_handlers_receive_inputs_and_produce_outputs() {
    let source = r#"
name: custom
tasks:
  - {id: numbers, run: ["sh", "-c", "echo '[1, 2, 3, 4]' > \"$TASKFLEET_OUTPUT\""]}
  - {id: sum, deps: [numbers], handler: sum, args: {scale: 10}}
  - {id: reject, deps: [numbers], handler: sum, args: {scale: -1}}
  - {id: after-reject, deps: [reject], handler: noop}
"#;
    let mut handlers = HandlerRegistry::with_builtins();
    handlers.register_fn("sum", |context| async move {
        let scale = context.args["scale"].as_i64().unwrap_or(1);
        if scale < 0 {
            return Err(HandlerError::Permanent(format!(
                "scale must not be negative, got {scale}"
            )));
        }
        let numbers = context.inputs["numbers"].as_array().cloned().unwrap_or_default();
        let total: i64 = numbers.iter().filter_map(serde_json::Value::as_i64).sum();
        Ok(json!({ "total": total * scale }))
    });
    let spec = Arc::new(parse_workflow(source, &ValidateOptions::default()).unwrap());
    let options = EmbeddedOptions {
        handlers: Arc::new(handlers),
        workers: 2,
        ..EmbeddedOptions::default()
    };
    let outcome = run_workflow(source, spec, &options, |_, _| {}, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(outcome.state, WorkflowState::Failed);
    let report = serde_json::to_value(&outcome.report).unwrap();
    let task = |id: &str| {
        report["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|task| task["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(task("sum")["output"], json!({"total": 100}));
    assert_eq!(task("reject")["state"], "failed");
    assert_eq!(task("reject")["attempts"], 1, "a permanent failure is not retried");
    assert_eq!(task("reject")["error"], "scale must not be negative, got -1");
    assert_eq!(task("after-reject")["state"], "upstream_failed");
}
