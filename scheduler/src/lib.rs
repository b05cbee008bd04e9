//! The taskfleet scheduler: accepts workflows, persists them, resolves dependencies, applies
//! a scheduling policy with admission control, and publishes ready tasks to worker queues.
//!
//! [`engine`] and [`policy`] are the sans-I/O core; [`store`] persists state; [`service`] is
//! the async loop that joins them to a transport.

pub mod api;
pub mod engine;
pub mod eta;
pub mod fleet;
pub mod placement;
pub mod policy;
pub mod predict;
pub mod server;
pub mod service;
pub mod sim;
pub mod status;
pub mod store;
pub mod submit;
