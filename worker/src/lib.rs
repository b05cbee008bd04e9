//! The taskfleet worker library: consumes task queues, executes attempts as child processes
//! (with limits) or in-process handlers, and publishes their results.
//!
//! [`Worker`] is the loop; [`run_process`] and [`run_handler`] (joined by [`execute`]) execute
//! one attempt each and can be used on their own.

pub mod capacity;
mod execution;
mod handler;
pub mod limits;
pub mod metrics;
mod process;
mod worker;

pub use execution::{execute, Execution};
pub use handler::{run_handler, Handler, HandlerContext, HandlerError, HandlerRegistry};
pub use metrics::WorkerMetrics;
pub use process::{run_process, ProcessConfig, DEFAULT_ENV_ALLOW};
pub use worker::{Worker, WorkerConfig};
