//! `priority`: priority class first (high, normal, low), then weight (higher first), then
//! first come, first served. One heap per class; O(log n) per push and pop.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use taskfleet_common::{Millis, PriorityClass};

use super::{Policy, ReadyTask, TaskRef};

/// Class, then weight, then FCFS.
#[derive(Default)]
pub struct Priority {
    by_class: [BinaryHeap<Reverse<Entry>>; 3],
}

/// Heap entry; the smallest entry goes first.
struct Entry {
    /// Negated weight, so that higher weights sort first.
    neg_weight: f64,
    workflow_seq: u64,
    ready_seq: u64,
    task: TaskRef,
}

impl Entry {
    fn key(&self) -> (u64, u64) {
        (self.workflow_seq, self.ready_seq)
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.neg_weight
            .total_cmp(&other.neg_weight)
            .then_with(|| self.key().cmp(&other.key()))
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Entry {}

impl Policy for Priority {
    fn name(&self) -> &'static str {
        "priority"
    }

    fn push(&mut self, task: ReadyTask) {
        self.by_class[task.class.rank()].push(Reverse(Entry {
            neg_weight: -task.weight,
            workflow_seq: task.workflow_seq,
            ready_seq: task.ready_seq,
            task: task.task,
        }));
    }

    fn pop(&mut self, _now: Millis) -> Option<TaskRef> {
        PriorityClass::ALL
            .iter()
            .find_map(|class| self.by_class[class.rank()].pop())
            .map(|Reverse(entry)| entry.task)
    }

    fn len(&self) -> usize {
        self.by_class.iter().map(BinaryHeap::len).sum()
    }
}
