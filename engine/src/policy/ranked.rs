//! `heft` and `cpop`: the order of a plan made when the workflow arrived
//! ([`crate::placement::plan`]). A ready task's rank is its plan priority (HEFT: upward rank;
//! CPOP: upward plus downward rank); the highest goes first, ties by workflow submit order and
//! then readiness. The plan also says where each task runs; the engine sends it there. O(log n)
//! per push and pop.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use taskfleet_common::Millis;

use super::{Policy, ReadyTask, TaskRef};

/// A rank's bit pattern, then (workflow submit order, readiness) smallest first.
type Entry = (u64, Reverse<(u64, u64)>, TaskRef);

/// Highest plan priority first.
pub struct Ranked {
    name: &'static str,
    heap: BinaryHeap<Entry>,
}

impl Ranked {
    /// A ranked order reported under `name`.
    pub fn new(name: &'static str) -> Ranked {
        Ranked {
            name,
            heap: BinaryHeap::new(),
        }
    }
}

impl Policy for Ranked {
    fn name(&self) -> &'static str {
        self.name
    }

    fn push(&mut self, task: ReadyTask) {
        // Ranks are non-negative, so their bit patterns order like the numbers.
        let rank = task.rank.max(0.0).to_bits();
        self.heap
            .push((rank, Reverse((task.workflow_seq, task.ready_seq)), task.task));
    }

    fn pop(&mut self, _now: Millis) -> Option<TaskRef> {
        self.heap.pop().map(|(_, _, task)| task)
    }

    fn len(&self) -> usize {
        self.heap.len()
    }
}
