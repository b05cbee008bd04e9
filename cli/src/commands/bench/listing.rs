//! The listing benchmark: `GET /v1/workflows` over HTTP on a store of many workflows, page
//! by page, next to the same pages read from the store alone (the baseline: no HTTP, no JSON).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use taskfleet_common::workflow::{parse_workflow, ValidateOptions};
use taskfleet_common::Millis;
use taskfleet_scheduler::api::{router, ApiState};
use taskfleet_scheduler::role::Instance;
use taskfleet_scheduler::service::{Capacity, Scheduler, SchedulerConfig};
use taskfleet_scheduler::store::{Store, WorkflowQuery, WorkflowRecord, WorkflowState};
use taskfleet_transport::queues::QueueNames;
use taskfleet_transport::MemoryTransport;
use tokio_util::sync::CancellationToken;

use super::embedded::millis;

/// Stores `n_workflows` finished one-task workflows in `store`, then pages through them all,
/// `page` at a time, through the API and from the store.
pub(super) async fn bench_listing(store: Arc<dyn Store>, store_name: &str, n_workflows: usize) -> anyhow::Result<()> {
    println!("listing: {n_workflows} workflows, {store_name}");
    let spec = parse_workflow(
        "name: listed\ntasks:\n  - {id: a, handler: noop}\n",
        &ValidateOptions::default(),
    )
    .map_err(|invalid| anyhow::anyhow!("{invalid}"))?;
    let started = Instant::now();
    let states = [
        WorkflowState::Succeeded,
        WorkflowState::Failed,
        WorkflowState::Cancelled,
    ];
    let prefix = format!("wf-bench-{:08x}", rand::random::<u32>());
    for idx in 0..n_workflows {
        let record = WorkflowRecord {
            state: states[idx % states.len()],
            finished_at: Some(Millis(1_000_000 + idx as u64 * 10 + 5)),
            ..WorkflowRecord::running(
                format!("{prefix}-{idx:06}"),
                "listed",
                Millis(1_000_000 + idx as u64 * 10),
            )
        };
        store.create_workflow(&record, &spec).await?;
    }
    println!("  stored in {}", millis(started.elapsed()));

    // A scheduler with no workers behind the API: the listing reads the store only.
    let transport = Arc::new(MemoryTransport::new(&QueueNames::default()));
    let config = SchedulerConfig {
        capacity: Capacity::Fixed(HashMap::new()),
        ..SchedulerConfig::default()
    };
    let (scheduler, handle) = Scheduler::new(config, store.clone(), transport);
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(scheduler.run(shutdown.clone()));
    let state = ApiState {
        store: store.clone(),
        scheduler: Instance::leader("bench", handle),
        validate: ValidateOptions::default(),
        max_body_bytes: 1 << 20,
        forecasts: Arc::default(),
        tokens: None,
        metrics: None,
        broker: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let server_shutdown = shutdown.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, router(state))
            .with_graceful_shutdown(async move { server_shutdown.cancelled().await })
            .await
    });
    let client = reqwest::Client::new();
    for (page, filter) in [(100, None), (1000, None), (100, Some("failed"))] {
        let from_store = pages_from_store(store.as_ref(), page, filter).await?;
        let over_http = pages_over_http(&client, address, page, filter).await?;
        let what = match filter {
            Some(state) => format!("pages of {page}, state={state}"),
            None => format!("pages of {page}"),
        };
        println!(
            "  {what:<24} API p50 {:>6.2} ms, p99 {:>6.2} ms ({} pages); baseline, the store alone: p50 {:.2} ms, p99 {:.2} ms",
            percentile_ms(&over_http, 50.0),
            percentile_ms(&over_http, 99.0),
            over_http.len(),
            percentile_ms(&from_store, 50.0),
            percentile_ms(&from_store, 99.0),
        );
    }
    shutdown.cancel();
    server.await??;
    running.await??;
    Ok(())
}

/// The time of each page read from the store, following the pages to the end.
async fn pages_from_store(store: &dyn Store, page: u32, state: Option<&str>) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::new();
    let mut before = None;
    loop {
        let query = WorkflowQuery {
            state: state.and_then(WorkflowState::parse),
            before: before.take(),
            limit: page + 1,
            ..WorkflowQuery::default()
        };
        let started = Instant::now();
        let mut records = store.list_workflows(&query).await?;
        times.push(started.elapsed());
        let more = records.len() > page as usize;
        records.truncate(page as usize);
        match records.last() {
            Some(last) if more => before = Some((last.submitted_at, last.id.clone())),
            _ => return Ok(times),
        }
    }
}

/// The time of each page through `GET /v1/workflows`, answer read and parsed, to the end.
async fn pages_over_http(
    client: &reqwest::Client,
    address: std::net::SocketAddr,
    page: u32,
    state: Option<&str>,
) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query = vec![("limit", page.to_string())];
        query.extend(state.map(|state| ("state", state.to_string())));
        query.extend(cursor.take().map(|cursor| ("cursor", cursor)));
        let started = Instant::now();
        let answer: serde_json::Value = client
            .get(format!("http://{address}/v1/workflows"))
            .query(&query)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        times.push(started.elapsed());
        match answer["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return Ok(times),
        }
    }
}

fn percentile_ms(times: &[Duration], percent: f64) -> f64 {
    let mut micros: Vec<u64> = times.iter().map(|time| time.as_micros() as u64).collect();
    micros.sort_unstable();
    super::fleet::percentile(&micros, percent) as f64 / 1000.0
}
