//! `rr`: round robin across workflows by a quantum of slot-time (the design's time slice),
//! so one huge workflow cannot hold the fleet while small ones wait. Each workflow is charged
//! the estimated slot-time of every task it dispatches; workflows take turns in order of the
//! quanta they have used (ties: submit order), which is deficit round robin with equal
//! weights. A workflow that arrives late starts level with the least served one, not at zero,
//! so it gets its fair share without starving the others. O(log w) per operation.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use taskfleet_common::Millis;

use super::{Policy, ReadyTask, TaskRef};

/// Weighted round robin by quantum, all weights equal.
pub struct RoundRobin {
    quantum_ms: u64,
    workflows: HashMap<u32, Workflow>,
    /// Workflows with ready tasks, by (quanta used, submit order, workflow index).
    order: BTreeSet<(u64, u64, u32)>,
    n_ready: usize,
}

#[derive(Default)]
struct Workflow {
    seq: u64,
    used_ms: u64,
    /// Ready tasks with their charge (estimate × slots).
    ready: VecDeque<(TaskRef, u64)>,
}

impl RoundRobin {
    pub fn new(quantum: Duration) -> RoundRobin {
        RoundRobin {
            quantum_ms: (quantum.as_millis() as u64).max(1),
            workflows: HashMap::new(),
            order: BTreeSet::new(),
            n_ready: 0,
        }
    }

    fn key(&self, workflow_idx: u32, workflow: &Workflow) -> (u64, u64, u32) {
        (workflow.used_ms / self.quantum_ms, workflow.seq, workflow_idx)
    }

    /// The slot-time used by the least served workflow still holding ready tasks.
    fn least_used(&self) -> u64 {
        self.order
            .first()
            .and_then(|(_, _, workflow_idx)| self.workflows.get(workflow_idx))
            .map_or(0, |workflow| workflow.used_ms)
    }
}

impl Policy for RoundRobin {
    fn name(&self) -> &'static str {
        "rr"
    }

    fn push(&mut self, task: ReadyTask) {
        let workflow_idx = task.task.workflow_idx;
        if !self.workflows.contains_key(&workflow_idx) {
            let used_ms = self.least_used();
            self.workflows.insert(
                workflow_idx,
                Workflow {
                    seq: task.workflow_seq,
                    used_ms,
                    ready: VecDeque::new(),
                },
            );
        }
        let charge = task.estimate_ms.max(1) * u64::from(task.slots.max(1));
        let workflow = self.workflows.get_mut(&workflow_idx).expect("just ensured");
        let newly_ready = workflow.ready.is_empty();
        workflow.ready.push_back((task.task, charge));
        if newly_ready {
            let key = self.key(workflow_idx, &self.workflows[&workflow_idx]);
            self.order.insert(key);
        }
        self.n_ready += 1;
    }

    fn pop(&mut self, _now: Millis) -> Option<TaskRef> {
        let key = *self.order.first()?;
        self.order.remove(&key);
        let workflow_idx = key.2;
        let workflow = self
            .workflows
            .get_mut(&workflow_idx)
            .expect("ordered workflows are known");
        let (task, charge) = workflow.ready.pop_front().expect("ordered workflows have ready tasks");
        workflow.used_ms += charge;
        if !workflow.ready.is_empty() {
            let key = self.key(workflow_idx, &self.workflows[&workflow_idx]);
            self.order.insert(key);
        }
        self.n_ready -= 1;
        Some(task)
    }

    fn len(&self) -> usize {
        self.n_ready
    }

    fn on_workflow_added(&mut self, workflow_idx: u32, workflow_seq: u64, _remaining_work_ms: u64) {
        if !self.workflows.contains_key(&workflow_idx) {
            let used_ms = self.least_used();
            self.workflows.insert(
                workflow_idx,
                Workflow {
                    seq: workflow_seq,
                    used_ms,
                    ready: VecDeque::new(),
                },
            );
        }
    }

    fn on_workflow_removed(&mut self, workflow_idx: u32) {
        if let Some(workflow) = self.workflows.remove(&workflow_idx) {
            if !workflow.ready.is_empty() {
                let key = self.key(workflow_idx, &workflow);
                self.order.remove(&key);
                self.n_ready -= workflow.ready.len();
            }
        }
    }
}
