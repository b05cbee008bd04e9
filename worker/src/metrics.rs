//! A worker's Prometheus metrics, in one registry of its own, served on a port of its own
//! (`taskfleet worker --metrics-listen`): attempts by outcome, their run time, and its slots.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use taskfleet_common::state::AttemptOutcome;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

/// Every metric of one worker.
pub struct WorkerMetrics {
    registry: Registry,
    attempts: Family<OutcomeLabel, Counter>,
    run_seconds: Histogram,
    slots: Family<StateLabel, Gauge<i64, std::sync::atomic::AtomicI64>>,
    requeued: Counter<u64, AtomicU64>,
}

impl std::fmt::Debug for WorkerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerMetrics").finish_non_exhaustive()
    }
}

/// Metrics are the same when they are the same registry.
impl PartialEq for WorkerMetrics {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl WorkerMetrics {
    /// The metrics of a worker with `slots` slots.
    pub fn new(slots: usize) -> WorkerMetrics {
        let mut registry = Registry::with_prefix("taskfleet_worker");
        let attempts = Family::<OutcomeLabel, Counter>::default();
        let run_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 25));
        let slot_gauges = Family::<StateLabel, Gauge<i64, std::sync::atomic::AtomicI64>>::default();
        let requeued = Counter::default();
        registry.register("attempts", "Attempts this worker ended, by outcome", attempts.clone());
        registry.register("attempt_run_seconds", "How long its attempts ran", run_seconds.clone());
        registry.register("slots", "Its slots, by state (used, free)", slot_gauges.clone());
        registry.register(
            "requeued",
            "Task messages it handed back for another worker (labels or resources it lacks, a result it could not publish)",
            requeued.clone(),
        );
        slot_gauges
            .get_or_create(&StateLabel { state: "free".into() })
            .set(i64::try_from(slots).unwrap_or(i64::MAX));
        slot_gauges.get_or_create(&StateLabel { state: "used".into() }).set(0);
        WorkerMetrics {
            registry,
            attempts,
            run_seconds,
            slots: slot_gauges,
            requeued,
        }
    }

    /// An attempt took a slot.
    pub(crate) fn started(&self) {
        self.slots.get_or_create(&StateLabel { state: "used".into() }).inc();
        self.slots.get_or_create(&StateLabel { state: "free".into() }).dec();
    }

    /// An attempt gave its slot back.
    pub(crate) fn stopped(&self) {
        self.slots.get_or_create(&StateLabel { state: "used".into() }).dec();
        self.slots.get_or_create(&StateLabel { state: "free".into() }).inc();
    }

    /// An attempt ended with `outcome` after `run_ms` milliseconds.
    pub(crate) fn ended(&self, outcome: AttemptOutcome, run_ms: u64) {
        self.attempts
            .get_or_create(&OutcomeLabel {
                outcome: outcome.as_str().to_string(),
            })
            .inc();
        self.run_seconds.observe(run_ms as f64 / 1000.0);
    }

    pub(crate) fn requeued(&self) {
        self.requeued.inc();
    }

    /// The metrics as OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_and_outcomes_read_back() {
        let metrics = WorkerMetrics::new(4);
        metrics.started();
        metrics.started();
        metrics.stopped();
        metrics.ended(AttemptOutcome::Succeeded, 250);
        metrics.requeued();
        let text = metrics.encode();
        for line in [
            "taskfleet_worker_slots{state=\"used\"} 1",
            "taskfleet_worker_slots{state=\"free\"} 3",
            "taskfleet_worker_attempts_total{outcome=\"succeeded\"} 1",
            "taskfleet_worker_attempt_run_seconds_count 1",
            "taskfleet_worker_requeued_total 1",
        ] {
            assert!(text.contains(line), "missing {line} in:\n{text}");
        }
    }
}
