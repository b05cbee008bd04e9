//! `fcfs`: first come, first served — by workflow submit order, then by the order in which
//! tasks became ready. O(log n) per push and pop.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use taskfleet_common::Millis;

use super::{Policy, ReadyTask, TaskRef};

/// First come, first served.
pub struct Fcfs {
    name: &'static str,
    heap: BinaryHeap<Reverse<(u64, u64, TaskRef)>>,
}

impl Default for Fcfs {
    fn default() -> Self {
        Fcfs::named("fcfs")
    }
}

impl Fcfs {
    /// First-come-first-served order reported under `name` (`mct` takes tasks in this order).
    pub fn named(name: &'static str) -> Fcfs {
        Fcfs {
            name,
            heap: BinaryHeap::new(),
        }
    }
}

impl Policy for Fcfs {
    fn name(&self) -> &'static str {
        self.name
    }

    fn push(&mut self, task: ReadyTask) {
        self.heap.push(Reverse((task.workflow_seq, task.ready_seq, task.task)));
    }

    fn pop(&mut self, _now: Millis) -> Option<TaskRef> {
        self.heap.pop().map(|Reverse((_, _, task))| task)
    }

    fn len(&self) -> usize {
        self.heap.len()
    }
}
