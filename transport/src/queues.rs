//! Queue and topic names, derived from a configurable prefix: one task queue per (pool,
//! priority class), a results queue, a submit queue, a dead-letter queue, and the broadcast
//! topics for heartbeats and control messages.

/// The names of the queues one taskfleet installation uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueNames {
    prefix: String,
}

impl QueueNames {
    /// Names under `prefix` (e.g. `taskfleet`).
    pub fn new(prefix: impl Into<String>) -> QueueNames {
        QueueNames { prefix: prefix.into() }
    }

    /// The task queue of `pool` for priority class `class` (`high`, `normal` or `low`).
    pub fn tasks(&self, pool: &str, class: &str) -> String {
        format!("{}.tasks.{pool}.{class}", self.prefix)
    }

    /// The queue of tasks sent to one worker by a placement-aware policy (`mct`, `heft`).
    pub fn worker(&self, worker: &str) -> String {
        format!("{}.worker.{worker}", self.prefix)
    }

    /// Where workers publish started and finished events.
    pub fn results(&self) -> String {
        format!("{}.results", self.prefix)
    }

    /// Where unusable messages go, with a reason.
    pub fn dead_letters(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    /// Where services publish workflows straight onto the broker.
    pub fn submit(&self) -> String {
        format!("{}.submit", self.prefix)
    }

    /// Broadcast topic of worker heartbeats.
    pub fn heartbeats(&self) -> String {
        format!("{}.heartbeats", self.prefix)
    }

    /// Broadcast topic of scheduler-to-worker control messages (cancellations).
    pub fn control(&self) -> String {
        format!("{}.control", self.prefix)
    }

    /// The prefix every name starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

impl Default for QueueNames {
    fn default() -> Self {
        QueueNames::new("taskfleet")
    }
}
