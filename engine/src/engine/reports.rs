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

use super::{run_at, Engine, Ignored};
use crate::policy::TaskRef;
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
    /// Not the task's current attempt, or the task has ended: the worker should stop it.
    Superseded,
}

impl Engine {
    /// Records that a worker started an attempt. The current attempt starting on a second
    /// worker moves there (see the module documentation); any other attempt is ignored, and
    /// [`Engine::on_running`] says whether to stop it.
    pub fn on_started(&mut self, event: &AttemptStarted) -> Result<Report, Ignored> {
        let (workflow_idx, task_idx) = self.locate(&event.workflow_id, event.task_idx)?;
        let run = self.workflows[workflow_idx as usize].as_mut().expect("located");
        let task = run.tasks[task_idx as usize];
        let task_ref = TaskRef {
            workflow_idx: workflow_idx,
            task_idx,
        };
        let current = task.attempt == event.attempt;
        let report = match task.state {
            TaskState::Dispatched if current => {
                run.set_state(task_idx, TaskState::Running);
                self.updates.push(StoreUpdate::Task {
                    workflow_id: run.id.clone(),
                    record: run.record(task_idx),
                });
                self.run_on(task_ref, &event.worker);
                Report::Current
            }
            TaskState::Running | TaskState::Ready if current => {
                let report = self.on_running(&event.worker, &event.workflow_id, event.task_idx, event.attempt)?;
                if report == Report::Superseded {
                    return Err(Ignored::StaleAttempt {
                        got: event.attempt,
                        current: task.attempt,
                        state: task.state,
                    });
                }
                report
            }
            state => {
                return Err(Ignored::StaleAttempt {
                    got: event.attempt,
                    current: task.attempt,
                    state,
                })
            }
        };
        let workflow_id = self.workflows[workflow_idx as usize].as_ref().expect("located").id.clone();
        self.updates.push(StoreUpdate::AttemptStarted {
            workflow_id,
            task_idx,
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
        let (workflow_idx, task_idx) = self.locate(workflow_id, task_idx)?;
        let task = TaskRef {
            workflow_idx: workflow_idx,
            task_idx,
        };
        let runtime = self.workflows[workflow_idx as usize].as_ref().expect("located").tasks[task_idx as usize];
        if runtime.attempt != attempt {
            return Ok(Report::Superseded);
        }
        match runtime.state {
            // Its `started` event is on its way.
            TaskState::Dispatched => Ok(Report::Current),
            TaskState::Running => {
                if self.running_on.get(&task).is_some_and(|known| &**known == worker) {
                    return Ok(Report::Current);
                }
                self.run_on(task, worker);
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
        let Ok((workflow_idx, task_idx)) = self.locate(workflow_id, task_idx) else {
            return false;
        };
        let task = TaskRef {
            workflow_idx: workflow_idx,
            task_idx,
        };
        let Some(run) = run_at(&mut self.workflows, workflow_idx) else {
            return false;
        };
        let runtime = run.tasks[task_idx as usize];
        // Attempt numbers grow at dispatch: a ready task's number is the attempt it lost.
        if runtime.attempt != attempt || attempt == 0 {
            return false;
        }
        let Ok(next) = transition(runtime.state, TaskEvent::Adopted) else {
            return false;
        };
        self.adoptable.remove(&task);
        run.set_state(task_idx, next);
        self.updates.push(StoreUpdate::Task {
            workflow_id: run.id.clone(),
            record: run.record(task_idx),
        });
        let spec_task = &run.spec.tasks[task_idx as usize];
        let slots = spec_task.resources.slots as usize;
        let pool = spec_task.pool.clone();
        self.pool(&pool).in_flight += slots;
        self.run_on(task, worker);
        true
    }

    /// Records that `worker` runs `task` (and holds its lease), instead of any other worker.
    fn run_on(&mut self, task: TaskRef, worker: &str) {
        let worker: Arc<str> = match self.by_worker.get_key_value(worker) {
            Some((known, _)) => known.clone(),
            None => Arc::from(worker),
        };
        if let Some(previous) = self.running_on.insert(task, worker.clone()) {
            if let Some(tasks) = self.by_worker.get_mut(&previous) {
                tasks.remove(&task);
            }
        }
        self.by_worker.entry(worker).or_default().insert(task);
    }
}
