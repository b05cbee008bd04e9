//! The live state of one workflow inside the engine: per-task state, attempt counters, the
//! count of unfinished parents, and outputs kept until every child has used them.

use std::collections::HashMap;
use std::sync::Arc;

use taskfleet_common::state::TaskState;
use taskfleet_common::workflow::PriorityClass;
use taskfleet_common::{Millis, WorkflowSpec};

use serde_json::value::RawValue;
use taskfleet_common::wire::{TaskMessage, WireAction, WIRE_VERSION};

use super::state::Updates;
use crate::placement::WorkerId;
use crate::records::{StoreUpdate, TaskRecord, WorkflowState};

/// Per-task runtime counters, kept small: a million tasks cost a few dozen MB.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TaskRuntime {
    pub(crate) state: TaskState,
    /// Latest attempt number (0 before the first dispatch).
    pub(crate) attempt: u32,
    /// Failed attempts so far.
    pub(crate) n_failures: u32,
    /// Parents that have not succeeded yet.
    pub(crate) waiting: u32,
    /// Children that have not ended yet; the output is dropped when this reaches zero.
    pub(crate) children_left: u32,
}

/// One workflow's live state.
pub(crate) struct WorkflowRun {
    pub(crate) id: Arc<str>,
    pub(crate) spec: Arc<WorkflowSpec>,
    /// Submit order across workflows.
    pub(crate) seq: u64,
    pub(crate) tasks: Vec<TaskRuntime>,
    /// Outputs (JSON text) of succeeded tasks whose children still need them.
    pub(crate) outputs: Vec<Option<Arc<str>>>,
    /// When each retrying task is due.
    pub(crate) retry_at: HashMap<u32, Millis>,
    /// Number of tasks in each state, indexed like `TaskState::ALL`.
    pub(crate) counts: [usize; TaskState::ALL.len()],
    /// Tasks ready (`[0]`) and out (`[1]`: dispatched or running), per pool and class.
    pub(crate) class_counts: HashMap<(Arc<str>, PriorityClass), [usize; 2]>,
    pub(crate) state: WorkflowState,
    pub(crate) cancelled: bool,
    /// Where its tasks go, under a placement-aware policy.
    pub(crate) placement: Option<Box<RunPlacement>>,
    /// In predictive mode, each task's criticality (see `ReadyTask::criticality`).
    pub(crate) criticality: Option<Box<[f32]>>,
}

/// Where a workflow's tasks are placed (placement-aware policies).
pub(crate) struct RunPlacement {
    /// The planned, chosen or actual worker of each task (`None`: none yet).
    pub(crate) worker: Vec<Option<WorkerId>>,
    /// When each task is planned to start (`heft`, `cpop`).
    pub(crate) start: Vec<Millis>,
    /// When each task is expected to end there, then when it ended.
    pub(crate) end: Vec<Millis>,
    /// Plan priorities (`heft`, `cpop`); zero otherwise.
    pub(crate) priority: Vec<f64>,
    /// The plan found no worker for some task: it is made again once workers are known.
    pub(crate) incomplete: bool,
}

impl WorkflowRun {
    /// A fresh run: roots ready, everything else pending.
    pub(crate) fn fresh(id: Arc<str>, spec: Arc<WorkflowSpec>, seq: u64) -> WorkflowRun {
        let dag = &spec.dag;
        let tasks: Vec<TaskRuntime> = (0..spec.tasks.len() as u32)
            .map(|idx| {
                let waiting = dag.parents(idx).len() as u32;
                TaskRuntime {
                    state: if waiting == 0 {
                        TaskState::Ready
                    } else {
                        TaskState::Pending
                    },
                    attempt: 0,
                    n_failures: 0,
                    waiting,
                    children_left: dag.children(idx).len() as u32,
                }
            })
            .collect();
        WorkflowRun::with_tasks(id, spec, seq, tasks, Vec::new(), HashMap::new())
    }

    /// A run rebuilt from stored task records (after a restart).
    pub(crate) fn restored(id: Arc<str>, spec: Arc<WorkflowSpec>, seq: u64, records: Vec<TaskRecord>) -> WorkflowRun {
        let dag = &spec.dag;
        let mut outputs = vec![None; spec.tasks.len()];
        let mut retry_at = HashMap::new();
        let mut tasks: Vec<TaskRuntime> = Vec::with_capacity(records.len());
        for record in records {
            if let (Some(output), TaskState::Succeeded) = (record.output, record.state) {
                outputs[record.task_idx as usize] = Some(Arc::from(output));
            }
            if record.state == TaskState::Retrying {
                retry_at.insert(record.task_idx, record.retry_at.unwrap_or_default());
            }
            tasks.push(TaskRuntime {
                state: record.state,
                attempt: record.attempt,
                n_failures: record.n_failures,
                waiting: 0,
                children_left: 0,
            });
        }
        for idx in 0..tasks.len() as u32 {
            let parents = dag.parents(idx);
            tasks[idx as usize].waiting = parents
                .iter()
                .filter(|&&parent| tasks[parent as usize].state != TaskState::Succeeded)
                .count() as u32;
            tasks[idx as usize].children_left = dag
                .children(idx)
                .iter()
                .filter(|&&child| !tasks[child as usize].state.is_terminal())
                .count() as u32;
        }
        for (output, task) in outputs.iter_mut().zip(&tasks) {
            if task.children_left == 0 {
                *output = None;
            }
        }
        WorkflowRun::with_tasks(id, spec, seq, tasks, outputs, retry_at)
    }

    fn with_tasks(
        id: Arc<str>,
        spec: Arc<WorkflowSpec>,
        seq: u64,
        tasks: Vec<TaskRuntime>,
        mut outputs: Vec<Option<Arc<str>>>,
        retry_at: HashMap<u32, Millis>,
    ) -> WorkflowRun {
        outputs.resize(tasks.len(), None);
        let mut counts = [0; TaskState::ALL.len()];
        let mut class_counts: HashMap<(Arc<str>, PriorityClass), [usize; 2]> = HashMap::new();
        for (task, task_spec) in tasks.iter().zip(&spec.tasks) {
            counts[state_index(task.state)] += 1;
            if let Some(slot) = class_slot(task.state) {
                class_counts
                    .entry((task_spec.pool.clone(), task_spec.priority))
                    .or_default()[slot] += 1;
            }
        }
        WorkflowRun {
            id,
            spec,
            seq,
            tasks,
            outputs,
            retry_at,
            counts,
            class_counts,
            state: WorkflowState::Running,
            cancelled: false,
            placement: None,
            criticality: None,
        }
    }

    /// Moves a task to `next`, keeping the counts right.
    pub(crate) fn set_state(&mut self, task_idx: u32, next: TaskState) {
        let task = &mut self.tasks[task_idx as usize];
        let before = task.state;
        task.state = next;
        self.counts[state_index(before)] -= 1;
        self.counts[state_index(next)] += 1;
        let (was, now) = (class_slot(before), class_slot(next));
        if was != now {
            let spec = &self.spec.tasks[task_idx as usize];
            let counts = self.class_counts.entry((spec.pool.clone(), spec.priority)).or_default();
            if let Some(slot) = was {
                counts[slot] = counts[slot].saturating_sub(1);
            }
            if let Some(slot) = now {
                counts[slot] += 1;
            }
        }
    }

    /// The stored form of a task's current state.
    pub(crate) fn record(&self, task_idx: u32) -> TaskRecord {
        let task = &self.tasks[task_idx as usize];
        TaskRecord {
            task_idx,
            state: task.state,
            attempt: task.attempt,
            n_failures: task.n_failures,
            retry_at: self.retry_at.get(&task_idx).copied(),
            output: self.outputs[task_idx as usize].as_deref().map(str::to_string),
        }
    }

    /// Number of tasks in `state`.
    pub(crate) fn count(&self, state: TaskState) -> usize {
        self.counts[state_index(state)]
    }

    /// Number of tasks that have ended for good.
    pub(crate) fn n_terminal(&self) -> usize {
        TaskState::ALL
            .iter()
            .filter(|state| state.is_terminal())
            .map(|&state| self.count(state))
            .sum()
    }

    /// The workflow's end state once every task has ended, else `None`.
    pub(crate) fn outcome(&self) -> Option<WorkflowState> {
        if self.n_terminal() < self.tasks.len() {
            return None;
        }
        Some(if self.count(TaskState::Succeeded) == self.tasks.len() {
            WorkflowState::Succeeded
        } else if self.cancelled || self.count(TaskState::Failed) + self.count(TaskState::TimedOut) == 0 {
            // Nothing failed: what did not run was cancelled (also in a cancelled workflow
            // retried one task at a time, where the other cancelled tasks stay cancelled).
            WorkflowState::Cancelled
        } else {
            WorkflowState::Failed
        })
    }
}

/// Position of a state in `TaskState::ALL` (declaration order).
pub(crate) fn state_index(state: TaskState) -> usize {
    state as usize
}

/// Where a task in `state` counts in [`WorkflowRun::class_counts`]: 0 ready, 1 out.
fn class_slot(state: TaskState) -> Option<usize> {
    match state {
        TaskState::Ready => Some(0),
        TaskState::Dispatched | TaskState::Running => Some(1),
        _ => None,
    }
}
impl WorkflowRun {
    /// Makes the task's next attempt, records it, and returns its message.
    pub(crate) fn dispatch_attempt(&mut self, task_idx: u32, now: Millis, updates: &mut Updates) -> TaskMessage {
        let attempt = self.tasks[task_idx as usize].attempt + 1;
        self.tasks[task_idx as usize].attempt = attempt;
        self.set_state(task_idx, TaskState::Dispatched);
        updates.push(StoreUpdate::AttemptDispatched {
            workflow_id: self.id.clone(),
            task_idx,
            attempt,
            at: now,
        });
        updates.task(self, task_idx);
        task_message(self, task_idx)
    }
}

/// The message for the current attempt of a task, with its parents' outputs as inputs.
fn task_message(run: &WorkflowRun, task_idx: u32) -> TaskMessage {
    let spec = &run.spec.tasks[task_idx as usize];
    let mut inputs = std::collections::BTreeMap::new();
    for dep in &spec.deps {
        if let Some(output) = &run.outputs[dep.task as usize] {
            if let Ok(raw) = RawValue::from_string(output.to_string()) {
                inputs.insert(run.spec.tasks[dep.task as usize].id.clone(), raw);
            }
        }
    }
    TaskMessage {
        v: WIRE_VERSION,
        workflow_id: run.id.to_string(),
        task: spec.id.clone(),
        task_idx,
        attempt: run.tasks[task_idx as usize].attempt,
        pool: spec.pool.to_string(),
        priority: spec.priority,
        action: WireAction::from(&spec.action),
        timeout_ms: spec.timeout.map(|timeout| timeout.as_millis() as u64),
        inputs,
        limits: spec.limits,
        resources: spec.resources.request(),
        selector: spec.selector.clone(),
    }
}
