//! `sjf`: shortest job first — the ready task with the smallest estimated runtime goes first,
//! ties in first-come-first-served order. O(log n) per push and pop.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use taskfleet_common::Millis;

use super::{Policy, ReadyTask, TaskRef};

/// Shortest estimated runtime first.
#[derive(Default)]
pub struct ShortestJobFirst {
    heap: BinaryHeap<Reverse<(u64, u64, u64, TaskRef)>>,
}

impl Policy for ShortestJobFirst {
    fn name(&self) -> &'static str {
        "sjf"
    }

    fn push(&mut self, task: ReadyTask) {
        self.heap.push(Reverse((
            task.estimate_ms,
            task.workflow_seq,
            task.ready_seq,
            task.task,
        )));
    }

    fn pop(&mut self, _now: Millis) -> Option<TaskRef> {
        self.heap.pop().map(|Reverse((_, _, _, task))| task)
    }

    fn len(&self) -> usize {
        self.heap.len()
    }
}
