//! The embedded benchmarks of `taskfleet bench`, each figure next to a baseline measured in
//! the same run.
//!
//! - load: generate a layered DAG (about 3 dependencies per task), then time JSON parsing
//!   alone (the baseline), full validation, persisting every task in SQLite, and building the
//!   engine's state; report peak memory.
//! - throughput: raw in-memory transport round trips (publish, consume, ack, reply) as the
//!   baseline, then `noop` tasks end to end through scheduler, store and workers, once with
//!   the SQLite store (`--db`) and once with the memory store (a run that keeps nothing).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use taskfleet_common::workflow::{parse_workflow, ValidateOptions};
use taskfleet_engine::engine::{Engine, EngineConfig};
use taskfleet_scheduler::service::now;
use taskfleet_scheduler::store::{PostgresStore, SqliteStore, Store, WorkflowRecord, WorkflowState};
use taskfleet_transport::queues::QueueNames;
use taskfleet_transport::{MemoryTransport, Outgoing, Transport};
use tokio_util::sync::CancellationToken;

use crate::embedded::{run_workflow, EmbeddedOptions};

/// A layered DAG as JSON: layers of 1,000 tasks, each task depending on three tasks of the
/// layer before.
pub fn layered_dag_json(n_tasks: usize, seed: u64) -> String {
    let width = 1000.min(n_tasks.max(1));
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = String::with_capacity(n_tasks * 64);
    out.push_str("{\"name\":\"layered\",\"tasks\":[\n");
    for idx in 0..n_tasks {
        if idx > 0 {
            out.push_str(",\n");
        }
        let _ = write!(out, "{{\"id\":\"t{idx}\",\"handler\":\"noop\"");
        if idx >= width {
            let layer_start = (idx / width - 1) * width;
            let mut deps = [0usize; 3];
            for slot in 0..3 {
                loop {
                    let candidate = layer_start + rng.gen_range(0..width);
                    if !deps[..slot].contains(&candidate) {
                        deps[slot] = candidate;
                        break;
                    }
                }
            }
            let _ = write!(out, ",\"deps\":[\"t{}\",\"t{}\",\"t{}\"]", deps[0], deps[1], deps[2]);
        }
        out.push('}');
    }
    out.push_str("\n]}\n");
    out
}

pub(super) async fn bench_load(n_tasks: usize, db: &std::path::Path, postgres: Option<&str>) -> anyhow::Result<()> {
    println!("load: {n_tasks} tasks in layers of 1000, 3 dependencies each");
    let source = layered_dag_json(n_tasks, 1);
    println!(
        "  workflow file            {:>10.1} MiB",
        source.len() as f64 / (1024.0 * 1024.0)
    );
    let started = Instant::now();
    let value: serde_json::Value = serde_json::from_str(&source)?;
    let parse_only = started.elapsed();
    drop(value);
    println!("  baseline: JSON parse     {:>10}", millis(parse_only));

    let started = Instant::now();
    let options = ValidateOptions {
        max_tasks: n_tasks.max(1_000_000),
        known_handlers: None,
    };
    let spec = Arc::new(parse_workflow(&source, &options).map_err(|invalid| anyhow::anyhow!("{invalid}"))?);
    let validate = started.elapsed();
    println!("  parse + validate         {:>10}", millis(validate));

    let started = Instant::now();
    let store = SqliteStore::open(db)?;
    let record = WorkflowRecord::running("bench-load", spec.name.clone(), now());
    store.create_workflow(&record, &spec).await?;
    let persist = started.elapsed();
    println!("  persist (SQLite)         {:>10}", millis(persist));
    if let Some(url) = postgres {
        bench_load_postgres(url, &spec).await?;
    }

    let started = Instant::now();
    let mut engine = Engine::new(EngineConfig::default());
    engine.add_workflow(Arc::from("bench-load"), spec.clone(), None, now());
    let build = started.elapsed();
    println!("  engine state             {:>10}", millis(build));
    println!("  total                    {:>10}", millis(validate + persist + build));
    match peak_memory_bytes() {
        Some(bytes) => println!(
            "  peak memory (VmHWM)      {:>10.0} MiB",
            bytes as f64 / (1024.0 * 1024.0)
        ),
        None => println!("  peak memory              unavailable on this platform"),
    }
    drop(engine);
    Ok(())
}

pub(super) async fn bench_throughput(n_tasks: usize, workers: usize, db: &std::path::Path) -> anyhow::Result<()> {
    println!("throughput: {n_tasks} independent noop tasks, {workers} workers");
    let baseline = raw_round_trips(n_tasks, workers).await?;
    println!(
        "  baseline: raw in-memory round trips  {:>10.0} msg/s",
        n_tasks as f64 / baseline.as_secs_f64()
    );

    let mut source = String::from("{\"name\":\"noop\",\"tasks\":[");
    for idx in 0..n_tasks {
        if idx > 0 {
            source.push(',');
        }
        let _ = write!(source, "{{\"id\":\"n{idx}\",\"handler\":\"noop\"}}");
    }
    source.push_str("]}");
    let spec =
        Arc::new(parse_workflow(&source, &ValidateOptions::default()).map_err(|invalid| anyhow::anyhow!("{invalid}"))?);
    for (store, db) in [("SQLite store on", Some(db.to_path_buf())), ("memory store", None)] {
        let options = EmbeddedOptions {
            workers,
            db,
            ..EmbeddedOptions::default()
        };
        let started = Instant::now();
        let outcome = run_workflow(&source, spec.clone(), &options, |_, _| {}, CancellationToken::new()).await?;
        let elapsed = started.elapsed();
        anyhow::ensure!(
            outcome.state == WorkflowState::Succeeded,
            "the benchmark workflow ended {:?}",
            outcome.state
        );
        println!(
            "  taskfleet run, {store:<21} {:>10.0} tasks/s ({} in {})",
            n_tasks as f64 / elapsed.as_secs_f64(),
            n_tasks,
            millis(elapsed)
        );
    }
    Ok(())
}

/// Publishes `n_messages` task-sized messages; `n_consumers` consumers ack each and publish a
/// reply; returns the time until every reply was received and acked.
async fn raw_round_trips(n_messages: usize, n_consumers: usize) -> anyhow::Result<Duration> {
    let names = QueueNames::new("bench");
    let transport = Arc::new(MemoryTransport::new(&names));
    let (requests, replies) = (names.tasks("default", "normal"), names.results());
    transport.declare(&[requests.clone(), replies.clone()]).await?;
    let payload = bytes_of_a_task_message();
    let started = Instant::now();
    let mut consumers = Vec::new();
    for _ in 0..n_consumers {
        let transport = transport.clone();
        let (requests, replies) = (requests.clone(), replies.clone());
        consumers.push(tokio::spawn(async move {
            let mut consumer = transport.consume(&requests, 1).await?;
            loop {
                let delivery = consumer.recv().await?;
                if delivery.payload.is_empty() {
                    delivery.ack().await?;
                    return anyhow::Ok(());
                }
                transport
                    .publish(vec![Outgoing::new(replies.clone(), delivery.payload.clone())])
                    .await?;
                delivery.ack().await?;
            }
        }));
    }
    let batch: Vec<Outgoing> = (0..n_messages)
        .map(|_| Outgoing::new(requests.clone(), payload.clone()))
        .collect();
    transport.publish(batch).await?;
    let mut results = transport.consume(&replies, 4096).await?;
    for _ in 0..n_messages {
        results.recv().await?.ack().await?;
    }
    let elapsed = started.elapsed();
    transport
        .publish(
            (0..n_consumers)
                .map(|_| Outgoing::new(requests.clone(), Vec::new()))
                .collect(),
        )
        .await?;
    for consumer in consumers {
        consumer.await??;
    }
    Ok(elapsed)
}

pub(super) fn bytes_of_a_task_message() -> bytes::Bytes {
    bytes::Bytes::from_static(
        br#"{"v":1,"workflow_id":"wf-0123456789abcdef","task":"n12345","task_idx":12345,"attempt":1,"pool":"default","priority":"normal","action":{"kind":"handler","name":"noop","args":{}}}"#,
    )
}

pub(super) fn millis(duration: Duration) -> String {
    format!("{:.0} ms", duration.as_secs_f64() * 1000.0)
}

/// Peak resident memory of this process (Linux `VmHWM`).
fn peak_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The load benchmark's persist step on PostgreSQL, after a baseline of single-row INSERTs in
/// one transaction on the same server; the workflow is deleted afterwards.
async fn bench_load_postgres(url: &str, spec: &taskfleet_common::WorkflowSpec) -> anyhow::Result<()> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    client
        .batch_execute(
            "CREATE TEMPORARY TABLE bench_rows (workflow_id TEXT, task_idx BIGINT, task_id TEXT, state TEXT)",
        )
        .await?;
    let n_rows = 20_000i64;
    let insert = client
        .prepare("INSERT INTO bench_rows VALUES ('bench', $1, $2, 'pending')")
        .await?;
    let started = Instant::now();
    client.batch_execute("BEGIN").await?;
    for idx in 0..n_rows {
        let task_id = format!("t{idx}");
        client.execute(&insert, &[&idx, &task_id]).await?;
    }
    client.batch_execute("COMMIT").await?;
    let rate = n_rows as f64 / started.elapsed().as_secs_f64();
    println!("  baseline: single-row INSERTs (PostgreSQL) {rate:>8.0} rows/s");
    let store = PostgresStore::connect(url).await?;
    let id = format!("bench-load-{:08x}", rand::random::<u32>());
    let record = WorkflowRecord::running(id.clone(), spec.name.clone(), now());
    let started = Instant::now();
    store.create_workflow(&record, spec).await?;
    let persist = started.elapsed();
    println!(
        "  persist (PostgreSQL)     {:>10} ({:.0} rows/s, {:.0}x the single-row baseline)",
        millis(persist),
        spec.tasks.len() as f64 / persist.as_secs_f64(),
        spec.tasks.len() as f64 / persist.as_secs_f64() / rate
    );
    client.execute("DELETE FROM workflows WHERE id = $1", &[&id]).await?;
    Ok(())
}
