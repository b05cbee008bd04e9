//! The policies that take the ready task with the smallest key first, in O(log n) per push
//! and pop; they differ only in the key.
//!
//! - `fcfs`: first come, first served — by workflow submit order, then by the order in which
//!   tasks became ready (`mct` takes tasks in this order and chooses where they go).
//! - `sjf`: shortest job first — the smallest estimated runtime, ties first come first served.
//! - `heft` and `cpop`: the order of a plan made when the workflow arrived
//!   ([`crate::placement::plan`]). A ready task's rank is its plan priority (HEFT: upward rank;
//!   CPOP: upward plus downward rank); the highest goes first, ties by workflow submit order
//!   and then readiness. The plan also says where each task runs; the engine sends it there.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use taskfleet_common::Millis;

use super::{Policy, ReadyTask, TaskRef};

/// What a keyed policy orders ready tasks by: smallest first.
type Key = (u64, u64, u64);

/// A policy ordering ready tasks by a key. See the module documentation.
pub struct Keyed {
    name: &'static str,
    key: fn(&ReadyTask) -> Key,
    heap: BinaryHeap<Reverse<(Key, TaskRef)>>,
}

impl Keyed {
    /// First come, first served, reported under `name` (`fcfs`, or `mct`).
    pub fn fcfs(name: &'static str) -> Keyed {
        Keyed::by(name, |task| (task.workflow_seq, task.ready_seq, 0))
    }

    /// Shortest estimated runtime first.
    pub fn sjf() -> Keyed {
        Keyed::by("sjf", |task| (task.estimate_ms, task.workflow_seq, task.ready_seq))
    }

    /// Highest plan rank first, reported under `name` (`heft`, `cpop`).
    pub fn ranked(name: &'static str) -> Keyed {
        // Ranks are non-negative, so their bit patterns order like the numbers.
        Keyed::by(name, |task| {
            (
                u64::MAX - task.rank.max(0.0).to_bits(),
                task.workflow_seq,
                task.ready_seq,
            )
        })
    }

    fn by(name: &'static str, key: fn(&ReadyTask) -> Key) -> Keyed {
        Keyed {
            name,
            key,
            heap: BinaryHeap::new(),
        }
    }
}

impl Policy for Keyed {
    fn name(&self) -> &'static str {
        self.name
    }

    fn push(&mut self, task: ReadyTask) {
        self.heap.push(Reverse(((self.key)(&task), task.task)));
    }

    fn pop(&mut self, _now: Millis) -> Option<TaskRef> {
        self.heap.pop().map(|Reverse((_, task))| task)
    }

    fn len(&self) -> usize {
        self.heap.len()
    }
}
