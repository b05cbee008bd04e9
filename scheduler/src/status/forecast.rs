//! Forecasts for the status of a running workflow: its predicted end (a Monte-Carlo
//! simulation of the rest of the workflow over the runtimes learned so far) and each listed
//! task's expected runtime.
//!
//! A forecast costs time in proportion to the workflow's size (the whole workflow is read and
//! simulated), so [`Forecasts`] keeps what it computed: the parsed workflows (a few, bounded
//! by their task count), the predictor (for a few seconds), and each workflow's predicted end
//! (for a while proportional to what it cost, at least [`MIN_ETA_AGE`]). The simulation runs
//! on the blocking pool with fewer samples for larger workflows, so a status request on a
//! 100,000-task workflow neither stalls the runtime nor costs a second each time.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use taskfleet_common::api::{EtaStatus, ExpectedRuntime, WorkerStatus, WorkflowStatus};
use taskfleet_common::state::TaskState;
use taskfleet_common::{Millis, WorkflowSpec};

use super::format_time;
use crate::store::{AttemptRecord, Store, StoreError, TaskRecord, WorkflowRecord, WorkflowState};
use crate::submit::{parse_off_runtime, stored_workflow_options};
use taskfleet_engine::eta::{monte_carlo_eta, Slots, TaskProgress};
use taskfleet_engine::fleet::why_no_worker_fits;
use taskfleet_engine::policy::PolicyConfig;
use taskfleet_engine::predict::Predictor;

/// The shortest time a predicted end is reused.
const MIN_ETA_AGE: Duration = Duration::from_secs(2);
/// How long the learned runtimes are reused before they are read again.
const PREDICTOR_AGE: Duration = Duration::from_secs(5);
/// Most tasks of the parsed workflows kept, over all of them.
const MAX_CACHED_TASKS: usize = 2_000_000;
/// Task-samples of one simulation at most: samples times tasks.
const SAMPLE_BUDGET: usize = 4_000_000;
const MAX_SAMPLES: usize = 200;
const MIN_SAMPLES: usize = 16;

/// The forecasts of status answers, shared by the API's handlers.
#[derive(Default)]
pub struct Forecasts {
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    /// Parsed workflows, most recently used last.
    specs: VecDeque<(String, Arc<WorkflowSpec>)>,
    predictor: Option<(Millis, Arc<Predictor>)>,
    /// Each workflow's predicted end, when it was made, and how long it may be reused.
    etas: HashMap<String, (Millis, Duration, EtaStatus)>,
}

impl Forecasts {
    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds the predicted end and the listed tasks' expected runtimes to the status of a
    /// running workflow (`workflow`, whose listed tasks start at index `from`), on a fleet of
    /// `slots`, and why a task that is out or ready cannot start on the `fleet`. A workflow
    /// whose source no longer parses gets none.
    pub async fn add_to(
        &self,
        store: &dyn Store,
        workflow: &WorkflowRecord,
        status: &mut WorkflowStatus,
        from: u32,
        (slots, fleet): (&Slots, &[WorkerStatus]),
        now: Millis,
    ) -> Result<(), StoreError> {
        if workflow.state != WorkflowState::Running {
            return Ok(());
        }
        let Some(spec) = self.spec(workflow).await else {
            return Ok(());
        };
        let predictor = self.predictor(store, now).await?;
        let speeds: std::collections::HashMap<String, f64> =
            fleet.iter().map(|worker| (worker.name.clone(), worker.speed)).collect();
        status.eta = self
            .eta(store, workflow, &spec, &predictor, (slots, speeds), now)
            .await?;
        let listed = spec.tasks.iter().skip(from as usize);
        for (task, spec_task) in status.tasks.iter_mut().zip(listed) {
            if matches!(task.state, TaskState::Ready | TaskState::Dispatched) {
                let served = fleet
                    .iter()
                    .any(|worker| !worker.draining && worker.pools.iter().any(|pool| **pool == *spec_task.pool));
                task.waiting = if task.state == TaskState::Ready && !served {
                    Some(format!("no live worker serves pool `{}`", spec_task.pool))
                } else {
                    let request = spec_task.resources.request();
                    why_no_worker_fits(&spec_task.pool, &request, &spec_task.selector, fleet).map(|unmet| unmet.message)
                };
            }
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
        Ok(())
    }

    /// The workflow's spec, parsed off the runtime once and kept while there is room.
    async fn spec(&self, workflow: &WorkflowRecord) -> Option<Arc<WorkflowSpec>> {
        {
            let mut cache = self.cache();
            if let Some(at) = cache.specs.iter().position(|(id, _)| *id == workflow.id) {
                let entry = cache.specs.remove(at)?;
                let spec = entry.1.clone();
                cache.specs.push_back(entry);
                return Some(spec);
            }
        }
        let (_, spec) = parse_off_runtime(workflow.source.clone(), stored_workflow_options())
            .await
            .ok()?;
        let spec = Arc::new(spec);
        let mut cache = self.cache();
        cache.specs.push_back((workflow.id.clone(), spec.clone()));
        while cache.specs.len() > 1
            && cache.specs.iter().map(|(_, spec)| spec.tasks.len()).sum::<usize>() > MAX_CACHED_TASKS
        {
            cache.specs.pop_front();
        }
        Some(spec)
    }

    /// The runtimes learned so far, read again when older than [`PREDICTOR_AGE`].
    async fn predictor(&self, store: &dyn Store, now: Millis) -> Result<Arc<Predictor>, StoreError> {
        if let Some((at, predictor)) = &self.cache().predictor {
            if now.since(*at) < PREDICTOR_AGE {
                return Ok(predictor.clone());
            }
        }
        let predictor = Arc::new(
            Predictor::restore(PolicyConfig::default().default_estimate, store.runtime_stats().await?)
                .with_feature_models(store.feature_models().await?),
        );
        self.cache().predictor = Some((now, predictor.clone()));
        Ok(predictor)
    }

    /// The workflow's predicted end: the one made recently, or a new one.
    async fn eta(
        &self,
        store: &dyn Store,
        workflow: &WorkflowRecord,
        spec: &Arc<WorkflowSpec>,
        predictor: &Arc<Predictor>,
        (slots, speeds): (&Slots, std::collections::HashMap<String, f64>),
        now: Millis,
    ) -> Result<Option<EtaStatus>, StoreError> {
        if let Some((made, age, eta)) = self.cache().etas.get(&workflow.id) {
            let elapsed = now.since(*made);
            if elapsed < *age {
                return Ok(Some(aged(eta, elapsed)));
            }
        }
        let records = store.tasks(&workflow.id).await?;
        if records.len() != spec.tasks.len() {
            // The stored tasks no longer match the source: no prediction.
            return Ok(None);
        }
        let attempts = store.attempts(&workflow.id).await?;
        let (spec, predictor, slots, id) = (spec.clone(), predictor.clone(), slots.to_vec(), workflow.id.clone());
        let computing = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let eta = eta_of(&id, &records, &attempts, &spec, &predictor, (&slots, &speeds), now);
            (eta, started.elapsed())
        });
        let Ok((eta, cost)) = computing.await else {
            return Ok(None);
        };
        let age = (cost * 20).max(MIN_ETA_AGE);
        let mut cache = self.cache();
        cache
            .etas
            .retain(|_, (made, age, _)| now.since(*made) < *age + Duration::from_secs(60));
        cache.etas.insert(workflow.id.clone(), (now, age, eta.clone()));
        Ok(Some(eta))
    }
}

/// A predicted end made `elapsed` ago, as seen now.
fn aged(eta: &EtaStatus, elapsed: Duration) -> EtaStatus {
    let elapsed_ms = elapsed.as_millis() as u64;
    EtaStatus {
        p50_in_ms: eta.p50_in_ms.saturating_sub(elapsed_ms),
        p90_in_ms: eta.p90_in_ms.saturating_sub(elapsed_ms),
        ..eta.clone()
    }
}

/// Samples for a workflow of `n_tasks`: within [`SAMPLE_BUDGET`], between the bounds.
fn samples_for(n_tasks: usize) -> usize {
    (SAMPLE_BUDGET / n_tasks.max(1)).clamp(MIN_SAMPLES, MAX_SAMPLES)
}

/// The predicted end of a running workflow whose tasks `spec` describes.
fn eta_of(
    workflow_id: &str,
    records: &[TaskRecord],
    attempts: &[AttemptRecord],
    spec: &WorkflowSpec,
    predictor: &Predictor,
    (slots, speeds): (&Slots, &std::collections::HashMap<String, f64>),
    now: Millis,
) -> EtaStatus {
    // When each task's current attempt started, if it did, and the speed of its worker.
    let mut started: Vec<Option<(Millis, f64)>> = vec![None; records.len()];
    for attempt in attempts {
        if records
            .get(attempt.task_idx as usize)
            .is_some_and(|task| task.attempt == attempt.attempt)
        {
            let speed = attempt.worker.as_ref().and_then(|worker| speeds.get(worker)).copied();
            started[attempt.task_idx as usize] = attempt.started_at.map(|at| (at, speed.unwrap_or(1.0)));
        }
    }
    let progress: Vec<TaskProgress> = records
        .iter()
        .map(|task| {
            let running = started[task.task_idx as usize];
            match TaskProgress::of(task.state, running.map(|(at, _)| now.since(at))) {
                TaskProgress::Running { elapsed, .. } => TaskProgress::Running {
                    elapsed,
                    speed: running.map_or(1.0, |(_, speed)| speed),
                },
                other => other,
            }
        })
        .collect();
    let seed = workflow_id
        .bytes()
        .fold(0u64, |hash, byte| hash.wrapping_mul(31).wrapping_add(u64::from(byte)));
    let samples = samples_for(spec.tasks.len());
    let eta = monte_carlo_eta(
        spec,
        &progress,
        predictor,
        slots,
        samples,
        &mut StdRng::seed_from_u64(seed),
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn larger_workflows_get_fewer_samples() {
        assert_eq!(samples_for(10), MAX_SAMPLES);
        assert_eq!(samples_for(100_000), 40);
        assert_eq!(samples_for(10_000_000), MIN_SAMPLES);
    }

    #[test]
    fn a_reused_prediction_counts_down() {
        let eta = EtaStatus {
            p50_at: "t50".into(),
            p90_at: "t90".into(),
            p50_in_ms: 5_000,
            p90_in_ms: 9_000,
            critical_tasks: vec![],
        };
        let later = aged(&eta, Duration::from_millis(1_500));
        assert_eq!((later.p50_in_ms, later.p90_in_ms), (3_500, 7_500));
        assert_eq!(later.p50_at, "t50");
        assert_eq!(aged(&eta, Duration::from_secs(60)).p50_in_ms, 0);
    }
}
