//! The taskfleet domain model, shared by the scheduler, the worker and the CLI.
//!
//! Everything here is plain data and pure functions: workflow parsing and validation, the
//! dependency graph, the task state machine, retry backoff and the versioned wire messages.
//! Nothing in this crate does I/O or reads the clock; callers pass `now` in.

pub mod api;
pub mod dag;
pub mod document;
pub mod limits;
pub mod resources;
pub mod retry;
pub mod state;
pub mod text;
pub mod time;
pub mod units;
pub mod wire;
pub mod workflow;

pub use time::Millis;
pub use workflow::{Action, PriorityClass, Problem, TaskSpec, ValidateOptions, WorkflowSpec};
