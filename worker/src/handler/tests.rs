//! Tests of in-process handlers: the built-ins, custom handlers and their limits.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use taskfleet_common::state::AttemptOutcome;
use taskfleet_common::wire::{TaskMessage, WireAction, MAX_OUTPUT_BYTES, WIRE_VERSION};
use taskfleet_common::PriorityClass;

use super::*;

/// Longest any one execution may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(10);

fn task(name: &str, args: Value) -> TaskMessage {
    TaskMessage {
        v: WIRE_VERSION,
        workflow_id: "wf-3".into(),
        task: "load".into(),
        task_idx: 4,
        attempt: 1,
        pool: "default".into(),
        priority: PriorityClass::Normal,
        action: WireAction::Handler {
            name: name.into(),
            args,
            env: BTreeMap::new(),
        },
        timeout_ms: None,
        inputs: BTreeMap::new(),
        limits: Default::default(),
        resources: Default::default(),
        selector: Default::default(),
    }
}

async fn run_with(task: &TaskMessage, registry: &HandlerRegistry, cancel: &CancellationToken) -> Execution {
    tokio::time::timeout(PATIENCE, run_handler(task, registry, cancel))
        .await
        .expect("run_handler hung")
}

async fn run(task: &TaskMessage) -> Execution {
    run_with(task, &HandlerRegistry::with_builtins(), &CancellationToken::new()).await
}

#[test]
fn registries_list_their_names() {
    assert!(HandlerRegistry::new().names().is_empty());
    let mut registry = HandlerRegistry::with_builtins();
    registry.register_fn("zzz", |_ctx| async { Ok(Value::Null) });
    assert_eq!(registry.names(), ["fail", "noop", "sleep", "zzz"]);
}

#[tokio::test]
async fn noop_succeeds_without_output() {
    let execution = run(&task("noop", Value::Null)).await;
    assert_eq!(execution.outcome, AttemptOutcome::Succeeded);
    assert!(execution.output.is_none());
    assert!(execution.error.is_none());
}

#[tokio::test]
async fn sleep_takes_a_duration_or_seconds() {
    for args in [json!({"duration": "50ms"}), json!({"duration": 0.05})] {
        let start = Instant::now();
        let execution = run(&task("sleep", args)).await;
        assert_eq!(execution.outcome, AttemptOutcome::Succeeded, "{execution:?}");
        assert!(start.elapsed() >= Duration::from_millis(50));
    }
    let execution = run(&task("sleep", json!({"duration": "soon"}))).await;
    assert_eq!(execution.outcome, AttemptOutcome::Failed { retryable: false });
    assert!(execution.error.unwrap().contains("invalid duration `soon`"));
    let execution = run(&task("sleep", Value::Null)).await;
    assert_eq!(execution.outcome, AttemptOutcome::Failed { retryable: false });
}

#[tokio::test]
async fn sleep_honours_cancellation() {
    let cancel = CancellationToken::new();
    let canceller = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        canceller.cancel();
    });
    let start = Instant::now();
    let execution = run_with(
        &task("sleep", json!({"duration": "30s"})),
        &HandlerRegistry::with_builtins(),
        &cancel,
    )
    .await;
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(execution.outcome, AttemptOutcome::Cancelled);
    assert_eq!(execution.error.as_deref(), Some("cancelled"));
}

#[tokio::test]
async fn timeouts_stop_handlers() {
    let mut sleepy = task("sleep", json!({"duration": "30s"}));
    sleepy.timeout_ms = Some(50);
    let start = Instant::now();
    let execution = run(&sleepy).await;
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(execution.outcome, AttemptOutcome::TimedOut);
    assert_eq!(execution.error.as_deref(), Some("timed out after 50ms"));
}

#[tokio::test]
async fn fail_fails_retryably() {
    let execution = run(&task("fail", Value::Null)).await;
    assert_eq!(execution.outcome, AttemptOutcome::Failed { retryable: true });
    assert_eq!(execution.error.as_deref(), Some("failed on purpose"));
    let execution = run(&task("fail", json!({"message": "disk on fire"}))).await;
    assert_eq!(execution.error.as_deref(), Some("disk on fire"));
}

#[tokio::test]
async fn unknown_handlers_fail_permanently() {
    let execution = run(&task("frobnicate", Value::Null)).await;
    assert_eq!(execution.outcome, AttemptOutcome::Failed { retryable: false });
    assert_eq!(execution.error.as_deref(), Some("unknown handler `frobnicate`"));
}

#[tokio::test]
async fn custom_functions_see_their_context() {
    let mut registry = HandlerRegistry::new();
    registry.register_fn("sum", |ctx: HandlerContext| async move {
        let rows = ctx
            .inputs
            .get("extract")
            .and_then(|input| input["rows"].as_u64())
            .unwrap_or(0);
        let extra = ctx.args["extra"].as_u64().unwrap_or(0);
        Ok(json!({
            "total": rows + extra,
            "who": format!("{}/{}#{}", ctx.workflow_id, ctx.task, ctx.attempt),
            "region": ctx.env.get("REGION"),
        }))
    });
    let mut sum = task("sum", json!({"extra": 2}));
    sum.inputs.insert(
        "extract".into(),
        RawValue::from_string("{\"rows\": 40}".into()).unwrap(),
    );
    if let WireAction::Handler { env, .. } = &mut sum.action {
        env.insert("REGION".into(), "eu".into());
    }
    let execution = run_with(&sum, &registry, &CancellationToken::new()).await;
    assert_eq!(execution.outcome, AttemptOutcome::Succeeded, "{execution:?}");
    assert_eq!(
        execution.output.unwrap().get(),
        r#"{"region":"eu","total":42,"who":"wf-3/load#1"}"#
    );
}

struct Refuser;

#[async_trait]
impl Handler for Refuser {
    async fn call(&self, ctx: HandlerContext) -> Result<Value, HandlerError> {
        Err(HandlerError::Permanent(format!("will not do {}", ctx.task)))
    }
}

#[tokio::test]
async fn custom_handlers_fail_permanently_or_retryably() {
    let mut registry = HandlerRegistry::new();
    registry.register("refuse", Refuser);
    registry.register_fn("flaky", |_ctx| async {
        Err(HandlerError::Retryable("try later".into()))
    });
    let execution = run_with(&task("refuse", Value::Null), &registry, &CancellationToken::new()).await;
    assert_eq!(execution.outcome, AttemptOutcome::Failed { retryable: false });
    assert_eq!(execution.error.as_deref(), Some("will not do load"));
    let execution = run_with(&task("flaky", Value::Null), &registry, &CancellationToken::new()).await;
    assert_eq!(execution.outcome, AttemptOutcome::Failed { retryable: true });
}

#[tokio::test]
async fn oversized_handler_output_fails_permanently() {
    let mut registry = HandlerRegistry::new();
    registry.register_fn("big", |_ctx| async { Ok(Value::String("x".repeat(MAX_OUTPUT_BYTES))) });
    let execution = run_with(&task("big", Value::Null), &registry, &CancellationToken::new()).await;
    assert_eq!(execution.outcome, AttemptOutcome::Failed { retryable: false });
    assert!(execution.error.unwrap().ends_with("more than the 1 MiB limit"));
}

#[tokio::test]
async fn panicking_handlers_fail_their_task() {
    let mut registry = HandlerRegistry::new();
    registry.register_fn("boom", |_ctx| async { panic!("kaboom") });
    let execution = run_with(&task("boom", Value::Null), &registry, &CancellationToken::new()).await;
    assert_eq!(execution.outcome, AttemptOutcome::Failed { retryable: false });
    assert_eq!(execution.error.as_deref(), Some("handler `boom` panicked: kaboom"));
}
