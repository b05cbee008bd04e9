//! The sans-I/O core of taskfleet: everything that decides, and nothing that waits.
//!
//! - [`engine`]: the scheduling state machine (dependency resolution, retries, failure
//!   propagation, fencing, leases, admission control), fed events and `now`, emitting
//!   [`Dispatch`]es and [`records::StoreUpdate`]s.
//! - [`policy`], [`placement`]: what runs next, and where.
//! - [`predict`], [`eta`]: runtimes learned from history; Monte-Carlo ETAs and criticality.
//! - [`fleet`]: the workers known from heartbeats, and their leases.
//! - [`retry`]: which tasks of an ended workflow run again when it is retried.
//! - [`sim`]: the discrete-event simulator that drives the very same [`Engine`].
//!
//! This crate's manifest names no async runtime, database or HTTP crate, and nothing here
//! reads the clock: callers pass the time in.

pub mod engine;
pub mod eta;
pub mod fleet;
pub mod packing;
pub mod placement;
pub mod policy;
pub mod predict;
pub mod records;
pub mod retry;
pub mod sim;

pub use engine::{Dispatch, Engine, EngineConfig, Ignored, Report};
