//! What workers say about the attempts they run (a `started` event, or the list in each
//! heartbeat), and what it means for the task: the lease of the current attempt follows the
//! worker that runs it, a lost attempt a worker turns out to run is taken back, and an attempt
//! that was superseded is to be stopped.
//!
//! A message is delivered again when its worker loses its connection (or dies) before acking
//! it, so the same attempt may start on a second worker while the scheduler still counts it on
//! the first. The second worker's report moves the attempt (and its lease) to it; the first
//! worker's lease then expires without the attempt being dispatched a third time. An attempt
//! reported after a newer one was dispatched (or after the task ended) is superseded: the
//! scheduler cancels it, so it never runs beside its successor.

use std::sync::Arc;

use taskfleet_common::state::{transition, TaskEvent, TaskState};
use taskfleet_common::wire::AttemptStarted;
use taskfleet_common::workflow::PriorityClass;

use super::{Engine, Ignored};
use crate::records::StoreUpdate;

/// What a worker's report that it runs an attempt meant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Report {
    /// The task's current attempt, on the worker already known to run it (or not started yet).
    Current,
    /// The current attempt, now on the reporting worker: its lease moved there.
    Moved,
    /// The current attempt, which the task had lost (a lapsed lease, or a scheduler restart)
    /// and had not dispatched again: the task takes it back instead of running it twice.
    Adopted,
    /// Not the task's current attempt, the task has ended, or its workflow was cancelled: the
    /// worker should stop it.
    Superseded,
}

impl Engine {
    /// Records that a worker started an attempt. The current attempt starting on a second
    /// worker moves there (see the module documentation); any other attempt is ignored, and
    /// [`Engine::on_running`] says whether to stop it.
    pub fn on_started(&mut self, event: &AttemptStarted) -> Result<Report, Ignored> {
        let task = self.workflows.locate(&event.workflow_id, event.task_idx)?;
        let run = self.workflows.live(task.workflow_idx);
        if run.cancelled {
            // Cancellation is final: an attempt that starts anyway (its worker had not heard
            // of the cancel) is stopped, and ends `cancelled` when it reports back.
            return Err(Ignored::Cancelled);
        }
        let runtime = run.tasks[task.task_idx as usize];
        let current = runtime.attempt == event.attempt;
        let report = match runtime.state {
            TaskState::Dispatched if current => {
                run.set_state(task.task_idx, TaskState::Running);
                self.updates.task(run, task.task_idx);
                self.runs_on(task, &event.worker);
                Report::Current
            }
            TaskState::Running | TaskState::Ready if current => {
                let report = self.on_running(&event.worker, &event.workflow_id, event.task_idx, event.attempt)?;
                if report == Report::Superseded {
                    return Err(Ignored::StaleAttempt {
                        got: event.attempt,
                        current: runtime.attempt,
                        state: runtime.state,
                    });
                }
                report
            }
            state => {
                return Err(Ignored::StaleAttempt {
                    got: event.attempt,
                    current: runtime.attempt,
                    state,
                })
            }
        };
        let workflow_id = self.workflows.live(task.workflow_idx).id.clone();
        self.updates.push(StoreUpdate::AttemptStarted {
            workflow_id,
            task_idx: task.task_idx,
            attempt: event.attempt,
            worker: event.worker.clone(),
            at: event.at,
        });
        Ok(report)
    }

    /// A worker reports that it runs `attempt` of a task (in a heartbeat, or a late `started`
    /// event): renews, moves or takes back the task's current attempt, or says it is
    /// superseded. An unknown workflow is an error; the caller decides what to do.
    pub fn on_running(
        &mut self,
        worker: &str,
        workflow_id: &str,
        task_idx: u32,
        attempt: u32,
    ) -> Result<Report, Ignored> {
        let task = self.workflows.locate(workflow_id, task_idx)?;
        let run = self.workflows.live(task.workflow_idx);
        let runtime = run.tasks[task.task_idx as usize];
        if runtime.attempt != attempt || run.cancelled {
            return Ok(Report::Superseded);
        }
        match runtime.state {
            // Its `started` event is on its way.
            TaskState::Dispatched => Ok(Report::Current),
            TaskState::Running if self.leases.runs(task, worker) => Ok(Report::Current),
            TaskState::Running => {
                self.runs_on(task, worker);
                Ok(Report::Moved)
            }
            TaskState::Ready if self.adopt(worker, workflow_id, task_idx, attempt) => Ok(Report::Adopted),
            _ => Ok(Report::Superseded),
        }
    }

    /// A worker reports that it runs `attempt` of a task that lost it (its worker's lease
    /// lapsed, or the scheduler restarted) and is waiting to run again: the task takes the
    /// attempt back, running on `worker` under its lease, instead of running twice. Returns
    /// whether it did.
    pub fn adopt(&mut self, worker: &str, workflow_id: &str, task_idx: u32, attempt: u32) -> bool {
        let Ok(task) = self.workflows.locate(workflow_id, task_idx) else {
            return false;
        };
        let run = self.workflows.live(task.workflow_idx);
        let runtime = run.tasks[task.task_idx as usize];
        // Attempt numbers grow at dispatch: a ready task's number is the attempt it lost.
        if runtime.attempt != attempt || attempt == 0 {
            return false;
        }
        let Ok(next) = transition(runtime.state, TaskEvent::Adopted) else {
            return false;
        };
        self.leases.adoptable.remove(&task);
        run.set_state(task.task_idx, next);
        self.updates.task(run, task.task_idx);
        let spec_task = &run.spec.tasks[task.task_idx as usize];
        let slots = spec_task.resources.slots as usize;
        let pool = spec_task.pool.clone();
        self.admission.pool(&pool, &self.config).in_flight += slots;
        self.runs_on(task, worker);
        true
    }
}

/// Tasks ready and attempts out in one pool and priority class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassLoad {
    pub pool: Arc<str>,
    pub class: PriorityClass,
    /// Tasks ready and waiting for a slot.
    pub ready: usize,
    /// Attempts dispatched or running.
    pub in_flight: usize,
}

impl Engine {
    /// Tasks ready and attempts out per pool and class, over the workflows held, sorted by
    /// pool and class; a pair with nothing counted is left out.
    pub fn class_loads(&self) -> Vec<ClassLoad> {
        let mut totals: std::collections::BTreeMap<(Arc<str>, PriorityClass), [usize; 2]> = Default::default();
        for run in self.workflows.iter() {
            for (key, counts) in &run.class_counts {
                let total = totals.entry(key.clone()).or_default();
                total[0] += counts[0];
                total[1] += counts[1];
            }
        }
        (totals.into_iter())
            .filter(|(_, [ready, in_flight])| ready + in_flight > 0)
            .map(|((pool, class), [ready, in_flight])| ClassLoad {
                pool,
                class,
                ready,
                in_flight,
            })
            .collect()
    }
}
