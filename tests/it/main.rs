//! taskfleet's integration tests, one binary: each module drives real processes or services.
//!
//! - `run`: `taskfleet run` and `taskfleet validate` as a user runs them (real child
//!   processes, real SQLite files), including the examples.
//! - `resume`: killing `taskfleet run` with SIGKILL and running it again.
//! - `embedded`: the embedded mode as a library, with handlers registered from Rust.
//! - `limits`: memory, CPU-time, process and time limits on real processes under this
//!   machine's cgroups (and rlimits without them), whole-tree kills and the sweep after a crash.
//! - `fleet`: `taskfleet scheduler` and `taskfleet worker` processes over the real RabbitMQ.
//! - `mapping`: a live fleet of unrelated workers against the simulator's plan.
//! - `packing`: request-based placement, reservations and lapsed leases in that fleet.
//! - `postgres`: the scheduler on the real PostgreSQL store, through a restart.
//! - `api`: the HTTP API against its OpenAPI description, checked by schemathesis.
//! - `dashboard`: the web dashboard in a real browser (chromium over WebDriver).
//! - `amqp`: the RabbitMQ transport against a real broker (`AMQP_ADDR`), cut and reconnected.
//! - `kafka`: the Kafka transport against a real Kafka-protocol broker (`KAFKA_BROKERS`).
//! - `kafka_fleet`: the fleet tests again, with the services on Kafka.
//! - `settings`: secrets from files, `--dump-config` without passwords, JSON logs.
//! - `simulate`: `taskfleet simulate` on the examples: JSON report, `--compare`, `--gantt`.

mod amqp;
mod api;
mod dashboard;
mod embedded;
mod fleet;
mod kafka;
mod kafka_fleet;
mod limits;
mod mapping;
mod packing;
mod postgres;
mod resume;
mod run;
mod settings;
mod simulate;
