//! `srpt`: shortest remaining processing time, at workflow level (the design's MINREST). The
//! workflow with the least estimated work left (the sum of the estimates of its unfinished
//! tasks) goes first; within a workflow, tasks go in the order they became ready. A workflow
//! moves up as its tasks end. O(log w) per operation for w workflows with ready tasks.

use std::collections::{BTreeSet, HashMap, VecDeque};

use taskfleet_common::Millis;

use super::{Policy, ReadyTask, TaskRef};

/// Least remaining work first.
#[derive(Default)]
pub struct ShortestRemainingWork {
    workflows: HashMap<u32, Workflow>,
    /// Workflows with ready tasks, by (remaining work, submit order, workflow index).
    order: BTreeSet<(u64, u64, u32)>,
    n_ready: usize,
}

#[derive(Default)]
struct Workflow {
    seq: u64,
    remaining_ms: u64,
    ready: VecDeque<TaskRef>,
}

impl ShortestRemainingWork {
    fn key(workflow_idx: u32, workflow: &Workflow) -> (u64, u64, u32) {
        (workflow.remaining_ms, workflow.seq, workflow_idx)
    }
}

impl Policy for ShortestRemainingWork {
    fn name(&self) -> &'static str {
        "srpt"
    }

    fn push(&mut self, task: ReadyTask) {
        let workflow_idx = task.task.workflow_idx;
        let workflow = self.workflows.entry(workflow_idx).or_insert_with(|| Workflow {
            seq: task.workflow_seq,
            ..Workflow::default()
        });
        if workflow.ready.is_empty() {
            self.order.insert(Self::key(workflow_idx, workflow));
        }
        workflow.ready.push_back(task.task);
        self.n_ready += 1;
    }

    fn pop(&mut self, _now: Millis) -> Option<TaskRef> {
        let &(remaining, seq, workflow_idx) = self.order.first()?;
        let workflow = self
            .workflows
            .get_mut(&workflow_idx)
            .expect("ordered workflows are known");
        let task = workflow.ready.pop_front().expect("ordered workflows have ready tasks");
        if workflow.ready.is_empty() {
            self.order.remove(&(remaining, seq, workflow_idx));
        }
        self.n_ready -= 1;
        Some(task)
    }

    fn len(&self) -> usize {
        self.n_ready
    }

    fn on_workflow_added(&mut self, workflow_idx: u32, workflow_seq: u64, remaining_work_ms: u64) {
        let workflow = self.workflows.entry(workflow_idx).or_default();
        let was_ordered = !workflow.ready.is_empty();
        if was_ordered {
            self.order.remove(&Self::key(workflow_idx, workflow));
        }
        workflow.seq = workflow_seq;
        workflow.remaining_ms = remaining_work_ms;
        if was_ordered {
            self.order.insert(Self::key(workflow_idx, workflow));
        }
    }

    fn on_task_done(&mut self, task: TaskRef, estimate_ms: u64) {
        let Some(workflow) = self.workflows.get_mut(&task.workflow_idx) else {
            return;
        };
        let ordered = !workflow.ready.is_empty();
        if ordered {
            self.order.remove(&Self::key(task.workflow_idx, workflow));
        }
        workflow.remaining_ms = workflow.remaining_ms.saturating_sub(estimate_ms);
        if ordered {
            self.order.insert(Self::key(task.workflow_idx, workflow));
        }
    }

    fn on_workflow_removed(&mut self, workflow_idx: u32) {
        if let Some(workflow) = self.workflows.remove(&workflow_idx) {
            if !workflow.ready.is_empty() {
                self.order.remove(&Self::key(workflow_idx, &workflow));
                self.n_ready -= workflow.ready.len();
            }
        }
    }
}
