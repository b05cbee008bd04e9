//! The taskfleet scheduler service: accepts workflows, persists them, runs the engine of
//! `taskfleet-engine` against a store and a transport, and serves the HTTP API.
//!
//! [`store`] persists state; [`service`] is the async loop that joins the engine to a store
//! and a transport; [`server`] is the whole service (API, submit queue, restore);
//! [`submit`] and [`status`] are what the API and the submit queue share.

pub mod api;
mod dashboard;
pub mod metrics;
pub mod role;
pub mod server;
pub mod service;
pub mod status;
pub mod store;
pub mod submit;
