//! The fleet benchmark: a scheduler and workers over RabbitMQ or Kafka, each with a connection
//! of its own, against raw client round trips measured in the same run with the same
//! durability: for RabbitMQ raw lapin (persistent messages, publisher confirms, acks after the
//! reply is confirmed), for Kafka raw rdkafka (idempotent `acks=all` produce, a consumer group,
//! offsets committed after the reply's delivery report).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use taskfleet_common::workflow::{parse_workflow, ValidateOptions};
use taskfleet_common::WorkflowSpec;
use taskfleet_engine::engine::EngineConfig;
use taskfleet_engine::policy::PolicyKind;
use taskfleet_scheduler::service::{now, Capacity, Scheduler, SchedulerConfig, SchedulerHandle};
use taskfleet_scheduler::store::{Store, WorkflowRecord, WorkflowState};
use taskfleet_scheduler::submit::new_workflow_id;
use taskfleet_transport::queues::QueueNames;
use taskfleet_transport::{
    amqp_raw_round_trips, kafka_raw_round_trips, AmqpConfig, AmqpTransport, KafkaConfig, KafkaTransport, Transport,
};
use taskfleet_worker::{HandlerRegistry, Worker, WorkerConfig};
use tokio_util::sync::CancellationToken;

use super::embedded::{bytes_of_a_task_message, layered_dag_json, millis};

/// What the fleet benchmark runs.
pub(super) struct FleetBench {
    /// The broker: RabbitMQ (`amqp://…`) or Kafka (`kafka://…`).
    pub(super) url: String,
    /// Tasks of the independent and the layered workflow.
    pub(super) n_tasks: usize,
    /// Worker processes' worth of workers, each `concurrency` slots.
    pub(super) n_workers: usize,
    pub(super) concurrency: usize,
    /// Single-task workflows timed one after another for the latency figures.
    pub(super) n_single: usize,
    /// The scheduler's policy (`mct`, `heft` and `cpop` send tasks to workers' own queues).
    pub(super) policy: PolicyKind,
}

pub(super) async fn bench_fleet(options: &FleetBench, store: Arc<dyn Store>, store_name: &str) -> anyhow::Result<()> {
    let FleetBench {
        url,
        n_tasks,
        n_workers,
        concurrency,
        n_single,
        policy,
    } = options;
    let broker = Broker::of(url)?;
    println!(
        "fleet: {}, scheduler ({policy}) and {n_workers} workers x {concurrency} slots, {store_name}",
        broker.name()
    );
    let in_flight = 100;
    let raw = broker.raw_round_trips(*n_tasks, in_flight).await?;
    let raw_rate = *n_tasks as f64 / raw.as_secs_f64();
    println!(
        "  baseline: raw {} round trips ({in_flight} in flight)   {raw_rate:>8.0} msg/s",
        broker.client()
    );

    let names = QueueNames::new(format!("taskfleet-bench-{:08x}", rand::random::<u32>()));
    let shutdown = CancellationToken::new();
    let scheduler_transport = broker.connect("bench-scheduler", &names).await?;
    let config = SchedulerConfig {
        queues: names.clone(),
        engine: EngineConfig {
            policy: *policy,
            prefetch_margin: 16,
            ..EngineConfig::default()
        },
        capacity: Capacity::Heartbeats {
            lease_timeout: Duration::from_secs(30),
        },
        ..SchedulerConfig::default()
    };
    // On a shared store the scheduler leads as the live one does: every write checks its lease.
    let holder = format!("taskfleet-bench-{:08x}", rand::random::<u32>());
    if let Some(shared) = store.shared() {
        let epoch = shared.claim(&holder, Duration::from_secs(3600)).await?;
        anyhow::ensure!(
            epoch.is_some(),
            "a scheduler leads this database: benchmark against a database of its own"
        );
    }
    let (scheduler, handle) = Scheduler::new(config, store.clone(), scheduler_transport.shared());
    let scheduler = tokio::spawn(scheduler.run(shutdown.clone()));
    let mut workers = Vec::new();
    let mut worker_transports = Vec::new();
    for worker_idx in 0..*n_workers {
        let transport = broker.connect(&format!("bench-worker-{worker_idx}"), &names).await?;
        let shared = transport.shared();
        worker_transports.push(transport);
        let mut config = WorkerConfig::new(format!("bench-worker-{worker_idx}"));
        config.concurrency = *concurrency;
        config.queues = names.clone();
        config.heartbeat_interval = Some(Duration::from_millis(100));
        let worker = Worker::new(config, shared, Arc::new(HandlerRegistry::with_builtins()));
        workers.push(tokio::spawn(worker.run(shutdown.clone())));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while handle.fleet().len() < *n_workers {
        anyhow::ensure!(Instant::now() < deadline, "the workers did not register within 30s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let independent = noop_workflow(*n_tasks);
    let (elapsed, latencies) = run_one(&handle, store.as_ref(), independent).await?;
    let independent_rate = report("independent noop tasks", *n_tasks, elapsed, raw_rate, &latencies);
    let layered = parse_workflow(&layered_dag_json(*n_tasks, 2), &ValidateOptions::default())
        .map_err(|invalid| anyhow::anyhow!("{invalid}"))?;
    let (elapsed, latencies) = run_one(&handle, store.as_ref(), layered).await?;
    let layered_rate = report("layered DAG (3 deps/task)", *n_tasks, elapsed, raw_rate, &latencies);

    let mut single = Vec::with_capacity(*n_single);
    for _ in 0..*n_single {
        let (elapsed, _) = run_one(&handle, store.as_ref(), noop_workflow(1)).await?;
        single.push(elapsed.as_micros() as u64);
    }
    single.sort_unstable();
    println!(
        "  single task, nothing else queued (submit to result, {n_single} runs): p50 {:.2} ms, p99 {:.2} ms",
        percentile(&single, 50.0) as f64 / 1000.0,
        percentile(&single, 99.0) as f64 / 1000.0
    );

    shutdown.cancel();
    scheduler.await.context("scheduler panicked")??;
    for worker in workers {
        worker.await.context("worker panicked")??;
    }
    // Closed before the runtime ends, so no connection is cut under its feet.
    for transport in worker_transports {
        transport.close().await;
    }
    delete_topology(&scheduler_transport, &names, *n_workers).await;
    if let Some(shared) = store.shared() {
        shared.resign(&holder).await?;
    }
    // The broker's speed drifts on a busy machine: measured again, the ratios against the mean
    // of both baselines bracket the ones above.
    let raw_after = broker.raw_round_trips(*n_tasks, in_flight).await?;
    let after_rate = *n_tasks as f64 / raw_after.as_secs_f64();
    let mean = (raw_rate + after_rate) / 2.0;
    println!(
        "  baseline again, after the runs: {after_rate:.0} msg/s; against the mean of both ({mean:.0}): \
         independent {:.2}x, layered {:.2}x",
        independent_rate / mean,
        layered_rate / mean
    );
    Ok(())
}

fn noop_workflow(n_tasks: usize) -> WorkflowSpec {
    let tasks: Vec<serde_json::Value> = (0..n_tasks)
        .map(|idx| serde_json::json!({"id": format!("n{idx}"), "handler": "noop"}))
        .collect();
    taskfleet_common::workflow::parse_workflow_value(
        serde_json::json!({"name": "noop", "tasks": tasks}),
        &ValidateOptions::default(),
    )
    .expect("a generated workflow is valid")
}

/// Runs one workflow through the live scheduler; returns the time from handing it over to
/// its end, and each attempt's dispatch-to-result latency in milliseconds.
async fn run_one(
    handle: &SchedulerHandle,
    store: &dyn Store,
    spec: WorkflowSpec,
) -> anyhow::Result<(Duration, Vec<u64>)> {
    let id = new_workflow_id();
    let record = WorkflowRecord::running(id.clone(), spec.name.clone(), now());
    store.create_workflow(&record, &spec).await?;
    let mut progress = handle.progress();
    let key: Arc<str> = Arc::from(id.as_str());
    let started = Instant::now();
    handle.add_workflow(key.clone(), Arc::new(spec), None)?;
    loop {
        progress.changed().await.context("the scheduler stopped")?;
        let state = progress.borrow_and_update().get(&key).map(|current| current.state);
        match state {
            Some(WorkflowState::Succeeded) => break,
            Some(WorkflowState::Running) | None => {}
            Some(other) => anyhow::bail!("the benchmark workflow ended {other:?}"),
        }
    }
    let elapsed = started.elapsed();
    let latencies = store
        .attempts(&id)
        .await?
        .iter()
        .filter_map(|attempt| Some(attempt.finished_at?.0.saturating_sub(attempt.dispatched_at.0)))
        .collect();
    Ok((elapsed, latencies))
}

/// Prints a run's figures; returns its rate in tasks per second.
fn report(what: &str, n_tasks: usize, elapsed: Duration, raw_rate: f64, latencies: &[u64]) -> f64 {
    let rate = n_tasks as f64 / elapsed.as_secs_f64();
    let mut sorted = latencies.to_vec();
    sorted.sort_unstable();
    println!(
        "  taskfleet, {what:<26} {rate:>8.0} tasks/s ({:.2}x raw, {n_tasks} in {}), dispatch to result p50 {} ms, p99 {} ms",
        rate / raw_rate,
        millis(elapsed),
        percentile(&sorted, 50.0),
        percentile(&sorted, 99.0)
    );
    rate
}

/// The `percent` percentile of `sorted` (nearest rank), 0 for none.
pub(super) fn percentile(sorted: &[u64], percent: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((percent / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// The broker of a fleet benchmark.
enum Broker {
    Amqp(String),
    Kafka(KafkaConfig),
}

/// A connected transport of either broker.
enum Connected {
    Amqp(AmqpTransport),
    Kafka(KafkaTransport),
}

impl Broker {
    fn of(url: &str) -> anyhow::Result<Broker> {
        if url.starts_with("kafka://") {
            return Ok(Broker::Kafka(KafkaConfig::from_url(url).map_err(anyhow::Error::msg)?));
        }
        Ok(Broker::Amqp(url.to_string()))
    }

    fn name(&self) -> &'static str {
        match self {
            Broker::Amqp(_) => "RabbitMQ",
            Broker::Kafka(_) => "Kafka",
        }
    }

    fn client(&self) -> &'static str {
        match self {
            Broker::Amqp(_) => "lapin",
            Broker::Kafka(_) => "rdkafka",
        }
    }

    async fn raw_round_trips(&self, n_messages: usize, in_flight: usize) -> anyhow::Result<Duration> {
        let payload = bytes_of_a_task_message();
        Ok(match self {
            Broker::Amqp(url) => amqp_raw_round_trips(url, n_messages, in_flight, &payload).await?,
            Broker::Kafka(config) => kafka_raw_round_trips(config, n_messages, in_flight, &payload).await?,
        })
    }

    async fn connect(&self, name: &str, names: &QueueNames) -> anyhow::Result<Connected> {
        Ok(match self {
            Broker::Amqp(url) => {
                let config = AmqpConfig {
                    connection_name: name.to_string(),
                    ..AmqpConfig::new(url.clone())
                };
                Connected::Amqp(AmqpTransport::connect(config, names).await?)
            }
            Broker::Kafka(config) => {
                let config = KafkaConfig {
                    client_id: name.to_string(),
                    ..config.clone()
                };
                Connected::Kafka(KafkaTransport::connect(config, names).await?)
            }
        })
    }
}

impl Connected {
    fn shared(&self) -> Arc<dyn Transport> {
        match self {
            Connected::Amqp(transport) => Arc::new(transport.clone()),
            Connected::Kafka(transport) => Arc::new(transport.clone()),
        }
    }

    async fn close(self) {
        if let Connected::Amqp(transport) = self {
            transport.close().await;
        }
    }
}

/// Removes the benchmark's queues and exchanges (or topics) from the broker.
async fn delete_topology(transport: &Connected, names: &QueueNames, n_workers: usize) {
    let transport = match transport {
        Connected::Kafka(transport) => {
            let _ = transport.delete_topics().await;
            return;
        }
        Connected::Amqp(transport) => transport,
    };
    let mut queues = vec![names.results(), names.submit(), names.dead_letters()];
    queues.extend(["high", "normal", "low"].map(|class| names.tasks("default", class)));
    queues.extend((0..n_workers).map(|worker_idx| names.worker(&format!("bench-worker-{worker_idx}"))));
    let _ = transport.declare(&queues).await;
    for topic in [names.heartbeats(), names.control()] {
        let _ = transport.subscribe(&topic).await;
    }
    let _ = transport.delete_topology().await;
    transport.close().await;
}
