//! Queue names, derived from a configurable prefix: one task queue per (pool, priority class),
//! one results queue, one dead-letter queue.

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

    /// Where workers publish started and finished events.
    pub fn results(&self) -> String {
        format!("{}.results", self.prefix)
    }

    /// Where unusable messages go, with a reason.
    pub fn dead_letters(&self) -> String {
        format!("{}.dead", self.prefix)
    }
}

impl Default for QueueNames {
    fn default() -> Self {
        QueueNames::new("taskfleet")
    }
}
