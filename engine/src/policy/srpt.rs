//! `srpt`: shortest remaining processing time, at workflow level (the design's MINREST). The
//! workflow with the least estimated work left (the sum of the estimates of its unfinished
//! tasks) goes first; within a workflow, tasks go in the order they became ready. A workflow
//! moves up as its tasks end. O(log w) per operation for w workflows with ready tasks.

use taskfleet_common::Millis;

use super::by_workflow::{ByWorkflow, Rank};
use super::{Policy, ReadyTask, TaskRef};

/// Least remaining work first.
#[derive(Default)]
pub struct ShortestRemainingWork {
    queues: ByWorkflow<TaskRef, WorkLeft>,
}

/// A workflow's estimated work left, in milliseconds: its rank.
struct WorkLeft(u64);

impl Rank for WorkLeft {
    fn rank(&self) -> u64 {
        self.0
    }
}

impl Policy for ShortestRemainingWork {
    fn name(&self) -> &'static str {
        "srpt"
    }

    fn push(&mut self, task: ReadyTask) {
        let workflow_seq = task.workflow_seq;
        self.queues
            .push(task.task.workflow_idx, task.task, || (workflow_seq, WorkLeft(0)));
    }

    fn pop(&mut self, _now: Millis) -> Option<TaskRef> {
        self.queues.pop().map(|(_, task)| task)
    }

    fn len(&self) -> usize {
        self.queues.len()
    }

    fn on_workflow_added(&mut self, workflow_idx: u32, workflow_seq: u64, remaining_work_ms: u64) {
        self.queues
            .upsert(workflow_idx, workflow_seq, WorkLeft(remaining_work_ms));
    }

    fn on_task_done(&mut self, task: TaskRef, estimate_ms: u64) {
        self.queues.update(task.workflow_idx, |queue| {
            queue.state.0 = queue.state.0.saturating_sub(estimate_ms);
        });
    }

    fn on_workflow_removed(&mut self, workflow_idx: u32) {
        self.queues.remove(workflow_idx);
    }
}
