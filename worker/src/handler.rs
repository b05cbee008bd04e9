//! In-process handlers: the [`Handler`] trait, the [`HandlerRegistry`] a worker looks names up
//! in (with the built-ins `noop`, `sleep` and `fail`), and the execution of a `handler` task
//! under its timeout and cancellation.

use std::collections::{BTreeMap, HashMap};
use std::future::{poll_fn, Future};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::task::Poll;

use async_trait::async_trait;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use taskfleet_common::state::AttemptOutcome;
use taskfleet_common::units::parse_duration;
use taskfleet_common::wire::{TaskMessage, WireAction};

use crate::execution::{check_output, now, timed_out, timeout_of, Execution};

/// Code a worker runs in its own process for tasks with a `handler` action.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Runs one attempt. `Value::Null` means the task has no output.
    async fn call(&self, ctx: HandlerContext) -> Result<Value, HandlerError>;
}

/// What a handler gets to work with for one attempt.
#[derive(Clone, Debug)]
pub struct HandlerContext {
    /// The `args` of the task's action.
    pub args: Value,
    /// Outputs of the task's dependencies, by task id.
    pub inputs: BTreeMap<String, Value>,
    /// The `env` of the task's action.
    pub env: BTreeMap<String, String>,
    pub workflow_id: String,
    pub task: String,
    pub attempt: u32,
    /// Cancelled when the attempt is cancelled or times out; long handlers should watch it.
    pub cancel: CancellationToken,
}

/// Why a handler failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// Trying again may help.
    #[error("{0}")]
    Retryable(String),
    /// Trying again cannot help.
    #[error("{0}")]
    Permanent(String),
}

/// Handlers by name.
#[derive(Clone, Default)]
pub struct HandlerRegistry {
    handlers: HashMap<String, Arc<dyn Handler>>,
}

impl std::fmt::Debug for HandlerRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerRegistry").field("names", &self.names()).finish()
    }
}

impl HandlerRegistry {
    /// A registry without handlers.
    pub fn new() -> HandlerRegistry {
        HandlerRegistry::default()
    }

    /// A registry with the built-in handlers `noop`, `sleep` and `fail`.
    pub fn with_builtins() -> HandlerRegistry {
        let mut registry = HandlerRegistry::new();
        registry
            .register_fn("noop", noop)
            .register_fn("sleep", sleep)
            .register_fn("fail", fail);
        registry
    }

    /// Registers `handler` under `name`, replacing any handler of that name.
    pub fn register(&mut self, name: impl Into<String>, handler: impl Handler) -> &mut HandlerRegistry {
        self.handlers.insert(name.into(), Arc::new(handler));
        self
    }

    /// Registers an async function or closure under `name`, replacing any handler of that name.
    pub fn register_fn<F, Fut>(&mut self, name: impl Into<String>, function: F) -> &mut HandlerRegistry
    where
        F: Fn(HandlerContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, HandlerError>> + Send + 'static,
    {
        self.register(name, FnHandler(function))
    }

    /// The handler registered under `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Handler>> {
        self.handlers.get(name)
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.handlers.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

/// A function registered as a handler.
struct FnHandler<F>(F);

#[async_trait]
impl<F, Fut> Handler for FnHandler<F>
where
    F: Fn(HandlerContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, HandlerError>> + Send + 'static,
{
    async fn call(&self, ctx: HandlerContext) -> Result<Value, HandlerError> {
        (self.0)(ctx).await
    }
}

async fn noop(_ctx: HandlerContext) -> Result<Value, HandlerError> {
    Ok(Value::Null)
}

/// Sleeps for `args.duration` (`"2s"` or a number of seconds), or until cancelled.
async fn sleep(ctx: HandlerContext) -> Result<Value, HandlerError> {
    let duration = match ctx.args.get("duration") {
        Some(Value::String(text)) => parse_duration(text).map_err(|error| error.to_string()),
        Some(Value::Number(number)) => parse_duration(&number.to_string()).map_err(|error| error.to_string()),
        _ => Err("sleep needs `args.duration`, such as \"2s\" or a number of seconds".to_string()),
    }
    .map_err(HandlerError::Permanent)?;
    tokio::select! {
        _ = tokio::time::sleep(duration) => Ok(Value::Null),
        _ = ctx.cancel.cancelled() => Err(HandlerError::Retryable("cancelled".to_string())),
    }
}

/// Fails, retryably, with `args.message`.
async fn fail(ctx: HandlerContext) -> Result<Value, HandlerError> {
    let message = ctx
        .args
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("failed on purpose");
    Err(HandlerError::Retryable(message.to_string()))
}

/// Runs the `handler` action of `task` with the matching handler of `handlers`, under the
/// task's timeout; cancelling `cancel` stops it with outcome `Cancelled`.
pub async fn run_handler(task: &TaskMessage, handlers: &HandlerRegistry, cancel: &CancellationToken) -> Execution {
    let started_at = now();
    let (name, args, env) = match &task.action {
        WireAction::Handler { name, args, env } => (name, args, env),
        WireAction::Run { .. } => {
            return Execution::failed(false, "task runs a program, not a handler", started_at);
        }
    };
    let Some(handler) = handlers.get(name) else {
        return Execution::failed(false, format!("unknown handler `{name}`"), started_at);
    };
    let mut inputs = BTreeMap::new();
    for (task_id, raw) in &task.inputs {
        match serde_json::from_str(raw.get()) {
            Ok(value) => inputs.insert(task_id.clone(), value),
            Err(error) => {
                return Execution::failed(
                    false,
                    format!("input `{task_id}` is not valid JSON: {error}"),
                    started_at,
                );
            }
        };
    }
    // A child token: the handler's own cancellation (on timeout) must not reach other tasks.
    let handler_cancel = cancel.child_token();
    let ctx = HandlerContext {
        args: args.clone(),
        inputs,
        env: env.clone(),
        workflow_id: task.workflow_id.clone(),
        task: task.task.clone(),
        attempt: task.attempt,
        cancel: handler_cancel.clone(),
    };
    let mut call = handler.call(ctx);
    // A panicking handler fails its task instead of taking the worker's task loop with it.
    let guarded = poll_fn(|cx| match catch_unwind(AssertUnwindSafe(|| call.as_mut().poll(cx))) {
        Ok(Poll::Ready(result)) => Poll::Ready(Ok(result)),
        Ok(Poll::Pending) => Poll::Pending,
        Err(panic) => Poll::Ready(Err(panic_message(&*panic))),
    });
    let deadline = async {
        match timeout_of(task) {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        biased;
        _ = cancel.cancelled() => {
            handler_cancel.cancel();
            return Execution::ended(AttemptOutcome::Cancelled, "cancelled", started_at);
        }
        result = guarded => result,
        _ = deadline => {
            handler_cancel.cancel();
            let limit = timeout_of(task).unwrap_or_default();
            return Execution::ended(AttemptOutcome::TimedOut, timed_out(limit), started_at);
        }
    };
    match result {
        Ok(Ok(Value::Null)) => Execution::succeeded(None, started_at),
        Ok(Ok(value)) => match serde_json::to_string(&value)
            .map_err(|error| error.to_string())
            .and_then(check_output)
        {
            Ok(output) => Execution::succeeded(output, started_at),
            Err(error) => Execution::failed(false, error, started_at),
        },
        Ok(Err(HandlerError::Retryable(error))) => Execution::failed(true, error, started_at),
        Ok(Err(HandlerError::Permanent(error))) => Execution::failed(false, error, started_at),
        Err(panic) => Execution::failed(false, format!("handler `{name}` panicked: {panic}"), started_at),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        text.to_string()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "unknown panic".to_string()
    }
}

#[cfg(test)]
mod tests;
