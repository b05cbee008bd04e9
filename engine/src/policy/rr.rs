//! `rr`: round robin across workflows by a quantum of slot-time (the design's time slice),
//! so one huge workflow cannot hold the fleet while small ones wait. Each workflow is charged
//! the estimated slot-time of every task it dispatches; workflows take turns in order of the
//! quanta they have used (ties: submit order), which is deficit round robin with equal
//! weights. A workflow that arrives late starts level with the least served one, not at zero,
//! so it gets its fair share without starving the others. O(log w) per operation.

use std::time::Duration;

use taskfleet_common::Millis;

use super::by_workflow::{ByWorkflow, Rank};
use super::{Policy, ReadyTask, TaskRef};

/// Weighted round robin by quantum, all weights equal.
pub struct RoundRobin {
    quantum_ms: u64,
    /// Ready tasks with their charge (estimate × slots), per workflow.
    queues: ByWorkflow<(TaskRef, u64), Used>,
}

/// The slot-time a workflow has used; it ranks by the quanta that makes.
struct Used {
    used_ms: u64,
    quantum_ms: u64,
}

impl Rank for Used {
    fn rank(&self) -> u64 {
        self.used_ms / self.quantum_ms
    }
}

impl RoundRobin {
    pub fn new(quantum: Duration) -> RoundRobin {
        RoundRobin {
            quantum_ms: (quantum.as_millis() as u64).max(1),
            queues: ByWorkflow::default(),
        }
    }

    /// What a workflow not known yet starts with: level with the least served one holding
    /// ready tasks.
    fn newcomer(&self) -> Used {
        let used_ms = self.queues.first().map_or(0, |least| least.state.used_ms);
        let quantum_ms = self.quantum_ms;
        Used { used_ms, quantum_ms }
    }
}

impl Policy for RoundRobin {
    fn name(&self) -> &'static str {
        "rr"
    }

    fn push(&mut self, task: ReadyTask) {
        let workflow_idx = task.task.workflow_idx;
        // As cheap to work out as to ask whether the workflow is new.
        let newcomer = self.newcomer();
        let charge = task.estimate_ms.max(1) * u64::from(task.slots.max(1));
        let workflow_seq = task.workflow_seq;
        self.queues
            .push(workflow_idx, (task.task, charge), || (workflow_seq, newcomer));
    }

    fn pop(&mut self, _now: Millis) -> Option<TaskRef> {
        let (workflow_idx, (task, charge)) = self.queues.pop()?;
        self.queues.update(workflow_idx, |queue| queue.state.used_ms += charge);
        Some(task)
    }

    fn len(&self) -> usize {
        self.queues.len()
    }

    fn on_workflow_added(&mut self, workflow_idx: u32, workflow_seq: u64, _remaining_work_ms: u64) {
        if !self.queues.contains(workflow_idx) {
            let newcomer = self.newcomer();
            self.queues.upsert(workflow_idx, workflow_seq, newcomer);
        }
    }

    fn on_workflow_removed(&mut self, workflow_idx: u32) {
        self.queues.remove(workflow_idx);
    }
}
