//! A workflow's status as the API and the CLI show it, built from the store.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::value::RawValue;
use taskfleet_common::api::{EtaStatus, ExpectedRuntime, TaskStatus, WorkflowStatus};
use taskfleet_common::workflow::{parse_workflow, ValidateOptions};
use taskfleet_common::{Millis, WorkflowSpec};

use crate::eta::{monte_carlo_eta, Slots, TaskProgress};
use crate::policy::PolicyConfig;
use crate::predict::Predictor;
use crate::store::{AttemptRecord, Store, StoreError, TaskRecord, WorkflowRecord, WorkflowState};

/// What the store holds about one workflow, read once.
struct Stored {
    workflow: WorkflowRecord,
    records: Vec<TaskRecord>,
    ids: Vec<String>,
    attempts: Vec<AttemptRecord>,
}

async fn load(store: &dyn Store, workflow_id: &str) -> Result<Option<Stored>, StoreError> {
    let Some(workflow) = store.workflow(workflow_id).await? else {
        return Ok(None);
    };
    Ok(Some(Stored {
        workflow,
        records: store.tasks(workflow_id).await?,
        ids: store.task_ids(workflow_id).await?,
        attempts: store.attempts(workflow_id).await?,
    }))
}

/// The workflow's status, or `None` if the store has no such workflow.
pub async fn workflow_status(store: &dyn Store, workflow_id: &str) -> Result<Option<WorkflowStatus>, StoreError> {
    Ok(load(store, workflow_id).await?.map(|stored| status_of(&stored)))
}

fn status_of(stored: &Stored) -> WorkflowStatus {
    let Stored {
        workflow,
        records,
        ids,
        attempts,
    } = stored;
    // (first start, last finish) per task.
    let mut times: Vec<(Option<Millis>, Option<Millis>)> = vec![(None, None); records.len()];
    let mut tasks: Vec<TaskStatus> = records
        .iter()
        .map(|record| TaskStatus {
            id: ids
                .get(record.task_idx as usize)
                .cloned()
                .unwrap_or_else(|| format!("#{}", record.task_idx)),
            state: record.state,
            attempts: record.attempt,
            started_at: None,
            finished_at: None,
            duration_ms: None,
            worker: None,
            exit_code: None,
            error: None,
            output: record
                .output
                .as_ref()
                .and_then(|text| RawValue::from_string(text.clone()).ok()),
            expected: None,
        })
        .collect();
    for attempt in attempts {
        let idx = attempt.task_idx as usize;
        let (Some(task), Some(time)) = (tasks.get_mut(idx), times.get_mut(idx)) else {
            continue;
        };
        if time.0.is_none() {
            time.0 = attempt.started_at;
        }
        if attempt.finished_at.is_some() {
            time.1 = attempt.finished_at;
        }
        if attempt.worker.is_some() {
            task.worker.clone_from(&attempt.worker);
        }
        task.exit_code = attempt.exit_code;
        task.error.clone_from(&attempt.error);
    }
    let mut counts = BTreeMap::new();
    for (task, &(started, finished)) in tasks.iter_mut().zip(&times) {
        task.started_at = started.map(format_time);
        task.finished_at = finished.map(format_time);
        task.duration_ms = duration_ms(started, finished);
        *counts.entry(task.state.as_str().to_string()).or_insert(0) += 1;
    }
    WorkflowStatus {
        workflow_id: workflow.id.clone(),
        name: workflow.name.clone(),
        state: workflow.state.as_str().to_string(),
        started_at: Some(format_time(workflow.submitted_at)),
        finished_at: workflow.finished_at.map(format_time),
        duration_ms: duration_ms(Some(workflow.submitted_at), workflow.finished_at),
        counts,
        eta: None,
        tasks,
    }
}

/// The workflow's status with, while it runs, its predicted end on a fleet of `slots` (see
/// [`crate::eta::slots_by_speed`]): a Monte-Carlo simulation of the rest of the workflow over
/// the runtimes learned so far.
pub async fn workflow_status_with_eta(
    store: &dyn Store,
    workflow_id: &str,
    slots: &Slots,
    now: Millis,
) -> Result<Option<WorkflowStatus>, StoreError> {
    let Some(stored) = load(store, workflow_id).await? else {
        return Ok(None);
    };
    let mut status = status_of(&stored);
    if stored.workflow.state != WorkflowState::Running {
        return Ok(Some(status));
    }
    let options = ValidateOptions {
        max_tasks: usize::MAX,
        known_handlers: None,
    };
    // A source that no longer parses (or no longer matches its tasks) gets no prediction.
    let Some(spec) = parse_workflow(&stored.workflow.source, &options)
        .ok()
        .filter(|spec| spec.tasks.len() == stored.records.len())
    else {
        return Ok(Some(status));
    };
    let predictor = Predictor::restore(PolicyConfig::default().default_estimate, store.runtime_stats().await?)
        .with_feature_models(store.feature_models().await?);
    status.eta = Some(eta_of(&stored, &spec, &predictor, slots, now));
    for (task, spec_task) in status.tasks.iter_mut().zip(&spec.tasks) {
        if !task.state.is_terminal() {
            let prediction = predictor.predict(spec_task);
            task.expected = Some(ExpectedRuntime {
                mean_ms: prediction.mean.as_millis() as u64,
                p50_ms: prediction.p50.as_millis() as u64,
                p90_ms: prediction.p90.as_millis() as u64,
                confidence: prediction.confidence,
                source: prediction.source.as_str().to_string(),
            });
        }
    }
    Ok(Some(status))
}

/// The predicted end of a running workflow whose tasks `spec` describes.
fn eta_of(stored: &Stored, spec: &WorkflowSpec, predictor: &Predictor, slots: &Slots, now: Millis) -> EtaStatus {
    let records = &stored.records;
    // When each task's current attempt started, if it did.
    let mut started: Vec<Option<Millis>> = vec![None; records.len()];
    for attempt in &stored.attempts {
        if records
            .get(attempt.task_idx as usize)
            .is_some_and(|task| task.attempt == attempt.attempt)
        {
            started[attempt.task_idx as usize] = attempt.started_at;
        }
    }
    let progress: Vec<TaskProgress> = records
        .iter()
        .map(|task| TaskProgress::of(task.state, started[task.task_idx as usize].map(|at| now.since(at))))
        .collect();
    let seed = stored
        .workflow
        .id
        .bytes()
        .fold(0u64, |hash, byte| hash.wrapping_mul(31).wrapping_add(u64::from(byte)));
    let eta = monte_carlo_eta(spec, &progress, predictor, slots, 200, &mut StdRng::seed_from_u64(seed));
    let mut critical: Vec<(String, f64)> = eta
        .criticality
        .iter()
        .enumerate()
        .filter(|&(idx, &share)| share > 0.0 && progress[idx] != TaskProgress::Done)
        .map(|(idx, &share)| (spec.tasks[idx].id.clone(), share))
        .collect();
    critical.sort_by(|a, b| b.1.total_cmp(&a.1));
    critical.truncate(5);
    EtaStatus {
        p50_at: format_time(now.plus(eta.p50)),
        p90_at: format_time(now.plus(eta.p90)),
        p50_in_ms: eta.p50.as_millis() as u64,
        p90_in_ms: eta.p90.as_millis() as u64,
        critical_tasks: critical,
    }
}

fn duration_ms(start: Option<Millis>, end: Option<Millis>) -> Option<u64> {
    Some(end?.0.saturating_sub(start?.0))
}

/// An instant as RFC 3339 with milliseconds, in UTC.
pub fn format_time(at: Millis) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(at.0)).to_string()
}
