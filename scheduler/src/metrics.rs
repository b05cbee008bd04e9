//! The scheduler's Prometheus metrics, in one explicit registry, served at `/metrics` in the
//! OpenMetrics text format. Base units (seconds), `_total` on counters, and no workflow or
//! task ids as labels: a label is a pool, an outcome or a state.
//!
//! The loop feeds what it decides (ended attempts, each pool's load, expired leases, store
//! and publish latencies, dead letters); what the fleet looks like is read when scraped.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use taskfleet_common::api::WorkerStatus;
use taskfleet_engine::engine::{ClassLoad, EndedAttempt, PoolLoad};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolOutcome {
    pool: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabel {
    pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolClass {
    pool: String,
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Seconds from a millisecond to about nine hours.
fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 25))
}

/// Seconds from 100 µs to about 3 s: store transactions and publisher confirms.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// Every metric of one scheduler.
pub struct Metrics {
    registry: Registry,
    attempts: Family<PoolOutcome, Counter>,
    run_seconds: Histograms<PoolLabel>,
    queue_wait_seconds: Histograms<PoolClass>,
    ready: Family<PoolClass, Gauge>,
    in_flight_attempts: Family<PoolClass, Gauge>,
    in_flight: Family<PoolLabel, Gauge>,
    pool_slots: Family<PoolLabel, Gauge>,
    desired_workers: Family<PoolLabel, Gauge>,
    workers: Family<StateLabel, Gauge>,
    worker_slots: Family<StateLabel, Gauge>,
    leases_expired: Counter,
    dead_lettered: Counter,
    store_commit_seconds: Histogram,
    publish_seconds: Histogram,
    /// Each pool's load at the loop's last turn, and each pool and class's.
    loads: std::sync::Mutex<(Vec<PoolLoad>, Vec<ClassLoad>)>,
    /// The pools and classes whose gauges were set: they read 0 once nothing is counted there.
    class_gauges: std::sync::Mutex<std::collections::HashSet<PoolClass>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("taskfleet");
        let metrics = Metrics {
            attempts: Family::default(),
            run_seconds: Family::new_with_constructor(seconds_histogram),
            queue_wait_seconds: Family::new_with_constructor(seconds_histogram),
            ready: Family::default(),
            in_flight_attempts: Family::default(),
            in_flight: Family::default(),
            pool_slots: Family::default(),
            desired_workers: Family::default(),
            workers: Family::default(),
            worker_slots: Family::default(),
            leases_expired: Counter::default(),
            dead_lettered: Counter::default(),
            store_commit_seconds: latency_histogram(),
            publish_seconds: latency_histogram(),
            loads: std::sync::Mutex::new((Vec::new(), Vec::new())),
            class_gauges: std::sync::Mutex::default(),
            registry: Registry::default(),
        };
        registry.register(
            "attempts",
            "Attempts ended, by pool and outcome (succeeded, failed, timed_out, ...)",
            metrics.attempts.clone(),
        );
        registry.register(
            "attempt_run_seconds",
            "How long attempts ran on their workers, by pool",
            metrics.run_seconds.clone(),
        );
        registry.register(
            "queue_wait_seconds",
            "How long attempts waited from their task being ready to their start on a worker, by pool and class",
            metrics.queue_wait_seconds.clone(),
        );
        registry.register(
            "ready_tasks",
            "Tasks ready and waiting for a slot, by pool and class",
            metrics.ready.clone(),
        );
        registry.register(
            "in_flight_attempts",
            "Attempts dispatched or running, by pool and class",
            metrics.in_flight_attempts.clone(),
        );
        registry.register(
            "in_flight_slots",
            "Slots taken by attempts out, by pool",
            metrics.in_flight.clone(),
        );
        registry.register(
            "pool_slots",
            "Slots the live workers offer, by pool",
            metrics.pool_slots.clone(),
        );
        registry.register(
            "desired_workers",
            "Workers a pool needs to run what is out and ready at once (for an autoscaler)",
            metrics.desired_workers.clone(),
        );
        registry.register(
            "workers",
            "Live workers, by state (serving, draining)",
            metrics.workers.clone(),
        );
        registry.register(
            "worker_slots",
            "Slots of the live workers, by state (used, free)",
            metrics.worker_slots.clone(),
        );
        registry.register(
            "leases_expired",
            "Workers whose lease lapsed with attempts on them",
            metrics.leases_expired.clone(),
        );
        registry.register(
            "messages_dead_lettered",
            "Messages the scheduler could not use and dead-lettered",
            metrics.dead_lettered.clone(),
        );
        registry.register(
            "store_commit_seconds",
            "How long a store transaction took",
            metrics.store_commit_seconds.clone(),
        );
        registry.register(
            "publish_seconds",
            "How long a batch of messages took to be confirmed by the broker",
            metrics.publish_seconds.clone(),
        );
        Metrics { registry, ..metrics }
    }

    /// Counts attempts that ended.
    pub fn ended(&self, ended: &[EndedAttempt]) {
        for attempt in ended {
            let labels = PoolOutcome {
                pool: attempt.pool.to_string(),
                outcome: attempt.outcome.as_str().to_string(),
            };
            self.attempts.get_or_create(&labels).inc();
            if let Some(ms) = attempt.run_ms {
                self.run_seconds
                    .get_or_create(&PoolLabel {
                        pool: attempt.pool.to_string(),
                    })
                    .observe(ms as f64 / 1000.0);
            }
        }
    }

    /// Keeps each pool's load, and each pool and class's, as the loop sees them now (turned
    /// into gauges when scraped).
    pub fn loads(&self, pools: Vec<PoolLoad>, classes: Vec<ClassLoad>) {
        self.set_class_gauges(&classes);
        *self.loads.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = (pools, classes);
    }

    /// Sets the gauges of each pool and class counted, and 0 on those no longer counted.
    fn set_class_gauges(&self, classes: &[ClassLoad]) {
        let mut set = self
            .class_gauges
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let labels = |load: &ClassLoad| PoolClass {
            pool: load.pool.to_string(),
            class: load.class.as_str().to_string(),
        };
        let counted: std::collections::HashSet<PoolClass> = classes.iter().map(labels).collect();
        for stale in set.difference(&counted) {
            self.ready.get_or_create(stale).set(0);
            self.in_flight_attempts.get_or_create(stale).set(0);
        }
        for load in classes {
            let labels = labels(load);
            self.ready.get_or_create(&labels).set(gauge_value(load.ready));
            self.in_flight_attempts
                .get_or_create(&labels)
                .set(gauge_value(load.in_flight));
        }
        set.extend(counted);
    }

    /// Each pool's load at the loop's last turn.
    pub fn pool_loads(&self) -> Vec<PoolLoad> {
        (self.loads.lock().unwrap_or_else(std::sync::PoisonError::into_inner).0).clone()
    }

    /// An attempt of a task of `pool` and `class` started `waited_ms` after the task was ready.
    pub fn queue_waited(&self, pool: &str, class: &str, waited_ms: u64) {
        let labels = PoolClass {
            pool: pool.to_string(),
            class: class.to_string(),
        };
        self.queue_wait_seconds
            .get_or_create(&labels)
            .observe(waited_ms as f64 / 1000.0);
    }

    /// Sets each pool's gauges from its last load, and the workers it would need: what is
    /// out and ready, over the slots of one of its live workers (on average), rounded up.
    fn set_pool_gauges(&self, fleet: &[WorkerStatus]) {
        let loads = self.loads.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (loads, _) = &*loads;
        for load in loads.iter() {
            let pool = PoolLabel {
                pool: load.pool.to_string(),
            };
            self.in_flight.get_or_create(&pool).set(gauge_value(load.in_flight));
            self.pool_slots.get_or_create(&pool).set(gauge_value(load.capacity));
            let (n_serving, serving_slots) = fleet
                .iter()
                .filter(|worker| !worker.draining && worker.pools.iter().any(|served| **served == *load.pool))
                .fold((0usize, 0usize), |(n, slots), worker| {
                    (n + 1, slots + worker.slots as usize)
                });
            // With no live worker, one slot each: the backlog itself.
            let per_worker = serving_slots.checked_div(n_serving).unwrap_or(1).max(1);
            let wanted = (load.ready + load.in_flight).div_ceil(per_worker);
            self.desired_workers.get_or_create(&pool).set(gauge_value(wanted));
        }
    }

    /// Counts workers whose lease lapsed.
    pub fn lease_expired(&self) {
        self.leases_expired.inc();
    }

    /// Counts a message dead-lettered.
    pub fn dead_lettered(&self) {
        self.dead_lettered.inc();
    }

    pub fn store_commit(&self, took: Duration) {
        self.store_commit_seconds.observe(took.as_secs_f64());
    }

    pub fn published(&self, took: Duration) {
        self.publish_seconds.observe(took.as_secs_f64());
    }

    /// The metrics as OpenMetrics text, with the fleet as it is now.
    pub fn encode(&self, fleet: &[WorkerStatus]) -> String {
        self.set_pool_gauges(fleet);
        for state in ["serving", "draining"] {
            let n = fleet
                .iter()
                .filter(|worker| worker.draining == (state == "draining"))
                .count();
            self.workers
                .get_or_create(&StateLabel { state: state.into() })
                .set(gauge_value(n));
        }
        let slots: u64 = fleet.iter().map(|worker| u64::from(worker.slots)).sum();
        let used: u64 = fleet.iter().map(|worker| u64::from(worker.in_use)).sum();
        self.worker_slots
            .get_or_create(&StateLabel { state: "used".into() })
            .set(i64::try_from(used).unwrap_or(i64::MAX));
        self.worker_slots
            .get_or_create(&StateLabel { state: "free".into() })
            .set(i64::try_from(slots.saturating_sub(used)).unwrap_or(i64::MAX));
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Metrics shared by the loop and the API.
pub type SharedMetrics = Arc<Metrics>;

#[cfg(test)]
mod tests {
    use taskfleet_common::state::AttemptOutcome;
    use taskfleet_common::workflow::PriorityClass;

    use super::*;

    #[test]
    fn counts_and_loads_read_back_in_the_text_format() {
        let metrics = Metrics::new();
        let ended = |outcome, run_ms| EndedAttempt {
            pool: Arc::from("gpu"),
            outcome,
            run_ms,
        };
        metrics.ended(&[
            ended(AttemptOutcome::Succeeded, Some(1500)),
            ended(AttemptOutcome::Succeeded, Some(500)),
            ended(AttemptOutcome::Failed { retryable: true }, None),
        ]);
        let load = PoolLoad {
            pool: Arc::from("gpu"),
            ready: 9,
            in_flight: 4,
            capacity: 4,
        };
        let worker = WorkerStatus {
            name: "w1".into(),
            pools: vec!["gpu".into()],
            slots: 4,
            in_use: 4,
            speed: 1.0,
            draining: false,
            first_seen_ms: 0,
            last_heartbeat_ms: 0,
            lease_expires_ms: 0,
            running: Vec::new(),
            capacity: None,
            resources_in_use: None,
            labels: Default::default(),
        };
        let class = |class, ready, in_flight| ClassLoad {
            pool: Arc::from("gpu"),
            class,
            ready,
            in_flight,
        };
        metrics.loads(
            vec![load.clone()],
            vec![class(PriorityClass::High, 2, 1), class(PriorityClass::Normal, 7, 3)],
        );
        metrics.queue_waited("gpu", "high", 250);
        metrics.lease_expired();
        let text = metrics.encode(&[worker]);
        for line in [
            "taskfleet_attempts_total{pool=\"gpu\",outcome=\"succeeded\"} 2",
            "taskfleet_attempts_total{pool=\"gpu\",outcome=\"failed\"} 1",
            "taskfleet_attempt_run_seconds_count{pool=\"gpu\"} 2",
            "taskfleet_attempt_run_seconds_sum{pool=\"gpu\"} 2.0",
            "taskfleet_ready_tasks{pool=\"gpu\",class=\"high\"} 2",
            "taskfleet_ready_tasks{pool=\"gpu\",class=\"normal\"} 7",
            "taskfleet_in_flight_attempts{pool=\"gpu\",class=\"normal\"} 3",
            "taskfleet_queue_wait_seconds_sum{pool=\"gpu\",class=\"high\"} 0.25",
            "taskfleet_in_flight_slots{pool=\"gpu\"} 4",
            "taskfleet_desired_workers{pool=\"gpu\"} 4",
            "taskfleet_workers{state=\"serving\"} 1",
            "taskfleet_worker_slots{state=\"used\"} 4",
            "taskfleet_worker_slots{state=\"free\"} 0",
            "taskfleet_leases_expired_total 1",
        ] {
            assert!(text.contains(line), "missing {line} in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        // Nothing counted in a class any more: its gauges read 0, not what they last read.
        metrics.loads(vec![load], vec![class(PriorityClass::High, 1, 0)]);
        let text = metrics.encode(&[]);
        assert!(
            text.contains("taskfleet_ready_tasks{pool=\"gpu\",class=\"normal\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("taskfleet_ready_tasks{pool=\"gpu\",class=\"high\"} 1"),
            "{text}"
        );
    }
}
