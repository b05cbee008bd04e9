//! A workflow's status as the API and the CLI show it, built from the store: the workflow,
//! its counts per state, and its tasks, a page at a time (a workflow may have a million).
//! [`Forecasts`] adds, for a running workflow, its predicted end and each task's expected
//! runtime.

mod forecast;

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::value::RawValue;
use taskfleet_common::api::{AttemptStatus, LeaseStatus, TaskStatus, WorkerStatus, WorkflowStatus};
use taskfleet_common::state::{AttemptOutcome, TaskState};
use taskfleet_common::Millis;

pub use self::forecast::Forecasts;
use crate::store::{AttemptRecord, Store, StoreError, TaskPage, WorkflowRecord};

/// Which tasks a status lists: those with index in `from..from + limit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskWindow {
    pub from: u32,
    pub limit: u32,
}

impl TaskWindow {
    /// Every task.
    pub const ALL: TaskWindow = TaskWindow {
        from: 0,
        limit: u32::MAX,
    };
}

/// The workflow's status with every task, or `None` if the store has no such workflow.
pub async fn workflow_status(store: &dyn Store, workflow_id: &str) -> Result<Option<WorkflowStatus>, StoreError> {
    Ok(workflow_status_page(store, workflow_id, TaskWindow::ALL)
        .await?
        .map(|(status, _)| status))
}

/// The workflow's status with the tasks of `window` (and the cursor of the next page), and
/// its stored record; `None` if the store has no such workflow.
pub async fn workflow_status_page(
    store: &dyn Store,
    workflow_id: &str,
    window: TaskWindow,
) -> Result<Option<(WorkflowStatus, WorkflowRecord)>, StoreError> {
    let Some(workflow) = store.workflow(workflow_id).await? else {
        return Ok(None);
    };
    let counts = store.task_counts(workflow_id).await?;
    let page = match window.limit {
        0 => TaskPage::default(),
        limit => store.task_page(workflow_id, window.from, limit).await?,
    };
    let n_tasks: usize = counts.iter().map(|(_, n)| n).sum();
    let mut status = status_of(&workflow, &page);
    status.counts = counts
        .iter()
        .map(|(state, n)| (state.as_str().to_string(), *n))
        .collect();
    let end = window.from as usize + page.records.len();
    if end < n_tasks && window.limit > 0 {
        status.next_cursor = Some(end.to_string());
    }
    Ok(Some((status, workflow)))
}

/// Adds to each running task of `status` the lease its worker holds, from the fleet's last
/// heartbeats.
pub fn add_leases(status: &mut WorkflowStatus, fleet: &[WorkerStatus]) {
    for task in &mut status.tasks {
        if !task.state.is_in_flight() {
            continue;
        }
        let Some(holder) = task.worker.as_deref() else { continue };
        if let Some(worker) = fleet.iter().find(|worker| worker.name == holder) {
            task.lease = Some(LeaseStatus {
                holder: worker.name.clone(),
                expires_at: format_time(Millis(worker.lease_expires_ms)),
            });
        }
    }
}

fn status_of(workflow: &WorkflowRecord, page: &TaskPage) -> WorkflowStatus {
    let TaskPage { records, ids, attempts } = page;
    let first_idx = records.first().map_or(0, |record| record.task_idx);
    let position = |task_idx: u32| task_idx.checked_sub(first_idx).map(|offset| offset as usize);
    // (first start, last finish) per task.
    let mut times: Vec<(Option<Millis>, Option<Millis>)> = vec![(None, None); records.len()];
    let mut tasks: Vec<TaskStatus> = records
        .iter()
        .zip(ids)
        .map(|(record, id)| TaskStatus {
            id: id.clone(),
            state: record.state,
            attempts: 0,
            started_at: None,
            finished_at: None,
            duration_ms: None,
            worker: None,
            exit_code: None,
            error: None,
            reason: None,
            peak_memory_bytes: None,
            cpu_time_ms: None,
            lease: None,
            lent: false,
            waiting: None,
            output: record
                .output
                .as_ref()
                .and_then(|text| RawValue::from_string(text.clone()).ok()),
            expected: None,
        })
        .collect();
    for attempt in attempts {
        let Some(at) = position(attempt.task_idx) else {
            continue;
        };
        let (Some(task), Some(time), Some(record)) = (tasks.get_mut(at), times.get_mut(at), records.get(at)) else {
            continue;
        };
        let made = attempt.started_at.is_some()
            || attempt.outcome.is_some()
            || (attempt.attempt == record.attempt && record.state.is_in_flight());
        if made {
            task.attempts += 1;
        }
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
        task.reason = attempt
            .outcome
            .filter(|outcome| *outcome != AttemptOutcome::Succeeded)
            .map(|outcome| outcome.as_str().to_string());
        task.peak_memory_bytes = attempt.peak_memory_bytes;
        task.cpu_time_ms = attempt.cpu_time_ms;
    }
    for (task, &(started, finished)) in tasks.iter_mut().zip(&times) {
        task.started_at = started.map(format_time);
        task.finished_at = finished.map(format_time);
        task.duration_ms = duration_ms(started, finished);
    }
    WorkflowStatus {
        workflow_id: workflow.id.clone(),
        name: workflow.name.clone(),
        state: workflow.state.as_str().to_string(),
        started_at: Some(format_time(workflow.submitted_at)),
        finished_at: workflow.finished_at.map(format_time),
        duration_ms: duration_ms(Some(workflow.submitted_at), workflow.finished_at),
        counts: BTreeMap::new(),
        eta: None,
        tasks,
        next_cursor: None,
    }
}

fn duration_ms(start: Option<Millis>, end: Option<Millis>) -> Option<u64> {
    Some(end?.0.saturating_sub(start?.0))
}

/// One attempt as the API shows it.
pub fn attempt_status(attempt: &AttemptRecord) -> AttemptStatus {
    AttemptStatus {
        attempt: attempt.attempt,
        worker: attempt.worker.clone(),
        dispatched_at: format_time(attempt.dispatched_at),
        started_at: attempt.started_at.map(format_time),
        finished_at: attempt.finished_at.map(format_time),
        duration_ms: attempt
            .started_at
            .zip(attempt.finished_at)
            .map(|(start, end)| end.0.saturating_sub(start.0)),
        outcome: attempt.outcome.map(|outcome| outcome.as_str().to_string()),
        exit_code: attempt.exit_code,
        signal: attempt.signal,
        error: attempt.error.clone(),
        peak_memory_bytes: attempt.peak_memory_bytes,
        cpu_time_ms: attempt.cpu_time_ms,
        stdout_tail: attempt.stdout_tail.clone(),
        stderr_tail: attempt.stderr_tail.clone(),
    }
}

/// The latest attempt of each failed task of `workflow_id`, in task order, at most `limit`: what
/// a failed run shows under its summary.
pub async fn failed_attempts(
    store: &dyn Store,
    workflow_id: &str,
    limit: usize,
) -> Result<Vec<(String, AttemptStatus)>, StoreError> {
    let tasks = store.tasks(workflow_id).await?;
    let failed: Vec<u32> = tasks
        .iter()
        .enumerate()
        .filter(|(_, task)| task.state == TaskState::Failed)
        .filter_map(|(idx, _)| u32::try_from(idx).ok())
        .take(limit)
        .collect();
    if failed.is_empty() {
        return Ok(Vec::new());
    }
    let ids = store.task_ids(workflow_id).await?;
    let attempts = store.attempts(workflow_id).await?;
    Ok(failed
        .into_iter()
        .filter_map(|task_idx| {
            let latest = attempts
                .iter()
                .filter(|attempt| attempt.task_idx == task_idx && attempt.outcome.is_some())
                .max_by_key(|attempt| attempt.attempt)?;
            Some((ids.get(task_idx as usize)?.clone(), attempt_status(latest)))
        })
        .collect())
}

/// An instant as RFC 3339 with milliseconds, in UTC.
pub fn format_time(at: Millis) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(at.0)).to_string()
}

#[cfg(test)]
mod tests;
