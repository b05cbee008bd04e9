//! How attempts end and what follows: results (fenced by attempt), undeliverable messages,
//! lost leases, retries coming due, and what a task's end does to its workflow (children
//! unlocked, failure propagated, outputs released, the workflow finished).

use std::cmp::Reverse;

use taskfleet_common::retry::{backoff_delay, retries_left};
use taskfleet_common::state::{transition, AttemptOutcome, TaskEvent, TaskState};
use taskfleet_common::wire::TaskResult;
use taskfleet_common::Millis;

use super::run::WorkflowRun;
use super::state::wake_planned_worker;
use super::{estimate_ms, EndedAttempt, Engine, Ignored};
use crate::policy::TaskRef;
use crate::records::{AttemptRecord, StoreUpdate};

impl Engine {
    /// Records how an attempt ended, if it is the task's current attempt (fencing): a late
    /// result of an attempt that was already given up on is ignored, so each task's outcome is
    /// recorded once even when it ran twice.
    pub fn on_finished(&mut self, result: TaskResult, now: Millis) -> Result<(), Ignored> {
        let task = self.workflows.locate(&result.workflow_id, result.task_idx)?;
        // The result of an attempt that survived a restart, before its worker's heartbeat.
        self.adopt(&result.worker, &result.workflow_id, result.task_idx, result.attempt);
        let jitter = self.next_jitter();
        let runtime = self.workflows.live(task.workflow_idx).tasks[task.task_idx as usize];
        if runtime.attempt != result.attempt || !runtime.state.is_in_flight() {
            return Err(Ignored::StaleAttempt {
                got: result.attempt,
                current: runtime.attempt,
                state: runtime.state,
            });
        }
        self.release_attempt(task, &result, now);
        if result.outcome == AttemptOutcome::Succeeded {
            self.learn_runtime(task, &result);
        }
        let next = self.judge(task, &result, jitter, now);
        self.record_attempt_end(task, next, result);
        self.follow_up(task, next, now);
        Ok(())
    }

    /// The message of a dispatched attempt cannot be delivered (too large for the transport,
    /// or refused by it): the attempt fails for good with `reason`, and the task with it (its
    /// dependents as upstream failures), as retrying would send the same message again.
    pub fn on_undeliverable(
        &mut self,
        task: TaskRef,
        attempt: u32,
        reason: String,
        now: Millis,
    ) -> Result<(), Ignored> {
        let run = self
            .workflows
            .get(task.workflow_idx)
            .ok_or_else(|| Ignored::UnknownWorkflow(format!("#{}", task.workflow_idx)))?;
        let spec_task = run
            .spec
            .tasks
            .get(task.task_idx as usize)
            .ok_or(Ignored::UnknownTask(task.task_idx))?;
        let mut result = TaskResult::succeeded(
            run.id.to_string(),
            spec_task.id.clone(),
            task.task_idx,
            attempt,
            "",
            now,
            now,
        );
        result.outcome = AttemptOutcome::Failed { retryable: false };
        result.error = Some(reason);
        self.on_finished(result, now)
    }

    /// The attempt of `task` ended: its lease, its slots and its place on a worker are free.
    fn release_attempt(&mut self, task: TaskRef, result: &TaskResult, now: Millis) {
        self.leases.end(task);
        self.bins.release(task);
        let run = self.workflows.live(task.workflow_idx);
        let idx = task.task_idx as usize;
        let spec_task = &run.spec.tasks[idx];
        let slots = spec_task.resources.slots;
        self.admission.release(&spec_task.pool, slots as usize);
        let (Some(plans), Some(placement)) = (self.plans.as_mut(), run.placement.as_mut()) else {
            return;
        };
        if let Some(worker) = placement.worker[idx] {
            plans.placer.release(worker, slots, placement.end[idx], now);
            // It has room again: its next planned task may go.
            plans.dirty.push(worker);
        }
        if let Some(actual) = plans.placer.find_named(&result.worker) {
            placement.worker[idx] = Some(actual);
        }
        placement.end[idx] = result.finished_at;
    }

    /// A succeeded attempt teaches the predictor how long such tasks take.
    fn learn_runtime(&mut self, task: TaskRef, result: &TaskResult) {
        let run = self.workflows.live(task.workflow_idx);
        let spec_task = &run.spec.tasks[task.task_idx as usize];
        let learned = self
            .predictor
            .observe_task(spec_task, result.finished_at.since(result.started_at));
        self.updates.push(StoreUpdate::RuntimeStats {
            signature: learned.signature,
            stats: learned.stats,
        });
        if let Some((key, model)) = learned.features {
            self.updates.push(StoreUpdate::FeatureModel { key, model });
        }
    }

    /// The task's next state after its attempt ended: a failure counts, a retry is scheduled
    /// after its backoff, and an output children need is kept.
    fn judge(&mut self, task: TaskRef, result: &TaskResult, jitter: f64, now: Millis) -> TaskState {
        let run = self.workflows.live(task.workflow_idx);
        let idx = task.task_idx as usize;
        let retry_policy = run.spec.tasks[idx].retry;
        let runtime = run.tasks[idx];
        let failed = matches!(
            result.outcome,
            AttemptOutcome::Failed { .. } | AttemptOutcome::TimedOut | AttemptOutcome::LimitExceeded(_)
        );
        let n_failures = runtime.n_failures + u32::from(failed);
        run.tasks[idx].n_failures = n_failures;
        let event = TaskEvent::Finished {
            outcome: result.outcome,
            retries_left: !run.cancelled && retries_left(&retry_policy, n_failures),
        };
        let next = transition(runtime.state, event).expect("an in-flight task accepts a result");
        run.set_state(task.task_idx, next);
        if next == TaskState::Succeeded && run.tasks[idx].children_left > 0 {
            run.outputs[idx] = result.output.as_ref().map(|output| std::sync::Arc::from(output.get()));
        }
        if next == TaskState::Retrying {
            let due = now.plus(backoff_delay(&retry_policy, n_failures, jitter));
            run.retry_at.insert(task.task_idx, due);
            self.timers.retries.push(Reverse((due, task, result.attempt)));
        }
        next
    }

    /// Records the attempt's end and the task's new state.
    fn record_attempt_end(&mut self, task: TaskRef, next: TaskState, result: TaskResult) {
        let run = self.workflows.live(task.workflow_idx);
        let mut task_record = run.record(task.task_idx);
        if next == TaskState::Succeeded {
            task_record.output = result.output.as_ref().map(|output| output.get().to_string());
        }
        // A result without a worker is the scheduler's own: the attempt never reached one.
        let reached_worker = !result.worker.is_empty();
        if self.config.record_ended {
            self.ended.push(EndedAttempt {
                pool: run.spec.tasks[task.task_idx as usize].pool.clone(),
                outcome: result.outcome,
                run_ms: reached_worker.then(|| result.finished_at.0.saturating_sub(result.started_at.0)),
            });
        }
        self.updates.push(StoreUpdate::AttemptFinished {
            workflow_id: run.id.clone(),
            record: AttemptRecord {
                task_idx: task.task_idx,
                attempt: result.attempt,
                dispatched_at: Millis(0),
                worker: reached_worker.then_some(result.worker),
                started_at: reached_worker.then_some(result.started_at),
                finished_at: Some(result.finished_at),
                outcome: Some(result.outcome),
                exit_code: result.exit_code,
                signal: result.signal,
                error: result.error,
                stdout_tail: result.stdout_tail,
                stderr_tail: result.stderr_tail,
                peak_memory_bytes: result.peak_memory_bytes,
                cpu_time_ms: result.cpu_time_ms,
            },
        });
        self.updates.push(StoreUpdate::Task {
            workflow_id: run.id.clone(),
            record: task_record,
        });
    }

    /// What a task's new state does to the rest of its workflow.
    fn follow_up(&mut self, task: TaskRef, next: TaskState, now: Millis) {
        match next {
            TaskState::Succeeded => self.unlock_children(task.workflow_idx, task.task_idx, now),
            TaskState::Failed | TaskState::TimedOut | TaskState::Cancelled => {
                self.propagate_failure(task.workflow_idx, task.task_idx);
            }
            _ => {}
        }
        if next.is_terminal() {
            release_outputs_of_parents(self.workflows.live(task.workflow_idx), task.task_idx);
            self.task_done(task);
        }
        self.check_finished(task.workflow_idx, now);
    }

    /// A worker missed its lease: every attempt it had started is given up and its task is
    /// ready again (the next dispatch is a new attempt; a late result of the old one is
    /// ignored). Returns how many attempts were given up.
    pub fn on_worker_lost(&mut self, worker: &str, now: Millis) -> usize {
        if let Some(plans) = self.plans.as_mut() {
            plans.placer.worker_gone(worker);
        }
        self.bins.worker_gone(worker);
        let mut n_lost = 0;
        for task in self.leases.lose_worker(worker) {
            self.bins.release(task);
            let Some(run) = self.workflows.get_mut(task.workflow_idx) else {
                continue;
            };
            let state = run.tasks[task.task_idx as usize].state;
            if !state.is_in_flight() {
                continue;
            }
            let next = transition(state, TaskEvent::LeaseLost).expect("an in-flight task can lose its lease");
            run.set_state(task.task_idx, next);
            let spec_task = &run.spec.tasks[task.task_idx as usize];
            self.admission
                .release(&spec_task.pool, spec_task.resources.slots as usize);
            self.updates.task(run, task.task_idx);
            self.push_ready(task, now);
            n_lost += 1;
        }
        n_lost
    }

    /// Makes retrying tasks whose backoff has passed ready again, and dispatches attempts
    /// that waited long enough to be adopted.
    pub fn on_timers(&mut self, now: Millis) {
        while let Some(&Reverse((due, task))) = self.timers.adoption_deadlines.peek() {
            if due > now {
                break;
            }
            self.timers.adoption_deadlines.pop();
            if self.leases.adoptable.remove(&task).is_some() && self.workflows.is_ready(task) {
                self.push_ready(task, now);
            }
        }
        while let Some(&Reverse((due, task, attempt))) = self.timers.retries.peek() {
            if due > now {
                break;
            }
            self.timers.retries.pop();
            let Some(run) = self.workflows.get_mut(task.workflow_idx) else {
                continue;
            };
            let runtime = run.tasks[task.task_idx as usize];
            if runtime.state != TaskState::Retrying || runtime.attempt != attempt {
                continue;
            }
            run.retry_at.remove(&task.task_idx);
            run.set_state(task.task_idx, TaskState::Ready);
            self.updates.task(run, task.task_idx);
            self.push_ready(task, now);
        }
    }

    /// When the next retry or adoption deadline is due, if any.
    pub fn next_timer(&self) -> Option<Millis> {
        self.timers.next()
    }

    /// A task succeeded: children whose last parent this was become ready.
    pub(super) fn unlock_children(&mut self, workflow_idx: u32, task_idx: u32, now: Millis) {
        let run = self.workflows.live(workflow_idx);
        let spec = run.spec.clone();
        let mut newly_ready = std::mem::take(&mut self.scratch);
        for &child in spec.dag.children(task_idx) {
            let child_task = &mut run.tasks[child as usize];
            child_task.waiting -= 1;
            if child_task.waiting == 0 && child_task.state == TaskState::Pending {
                run.set_state(child, TaskState::Ready);
                self.updates.task(run, child);
                newly_ready.push(child);
            }
        }
        for &child in &newly_ready {
            self.push_ready(TaskRef::new(workflow_idx, child), now);
        }
        newly_ready.clear();
        self.scratch = newly_ready;
    }

    /// A task ended without success: every pending descendant becomes `upstream_failed`.
    /// Each descendant is visited once; independent branches are untouched.
    pub(super) fn propagate_failure(&mut self, workflow_idx: u32, task_idx: u32) {
        let run = self.workflows.live(workflow_idx);
        let spec = run.spec.clone();
        let mut stack: Vec<u32> = spec.dag.children(task_idx).to_vec();
        while let Some(child) = stack.pop() {
            if run.tasks[child as usize].state != TaskState::Pending {
                continue;
            }
            run.set_state(child, TaskState::UpstreamFailed);
            self.updates.task(run, child);
            // A planned worker waiting for this task moves on to its next one.
            wake_planned_worker(&mut self.plans, run, child);
            stack.extend_from_slice(spec.dag.children(child));
            release_outputs_of_parents(run, child);
            let estimate = estimate_ms(&spec.tasks[child as usize], &self.config, &self.predictor);
            self.admission.task_done(TaskRef::new(workflow_idx, child), estimate);
        }
    }

    /// Tells every pool's policy that a task ended for good.
    fn task_done(&mut self, task: TaskRef) {
        let run = self.workflows.live(task.workflow_idx);
        let estimate = estimate_ms(&run.spec.tasks[task.task_idx as usize], &self.config, &self.predictor);
        self.admission.task_done(task, estimate);
    }

    /// Marks the workflow ended once every task has.
    pub(super) fn check_finished(&mut self, workflow_idx: u32, now: Millis) {
        let run = self.workflows.live(workflow_idx);
        if run.state.is_terminal() {
            return;
        }
        if let Some(outcome) = run.outcome() {
            run.state = outcome;
            self.updates.push(StoreUpdate::WorkflowFinished {
                workflow_id: run.id.clone(),
                state: outcome,
                at: now,
            });
        }
    }

    /// A uniform sample in `[0, 1)` (splitmix64), for retry jitter.
    fn next_jitter(&mut self) -> f64 {
        self.jitter_state = self.jitter_state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.jitter_state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A task ended: parents whose children have all ended drop their outputs.
fn release_outputs_of_parents(run: &mut WorkflowRun, task_idx: u32) {
    let spec = run.spec.clone();
    for &parent in spec.dag.parents(task_idx) {
        let parent_task = &mut run.tasks[parent as usize];
        parent_task.children_left = parent_task.children_left.saturating_sub(1);
        if parent_task.children_left == 0 {
            run.outputs[parent as usize] = None;
        }
    }
}
