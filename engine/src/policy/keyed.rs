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

/// What a keyed policy orders ready tasks by: its key, smallest first. Each order is a type,
/// so the key is computed inline and takes only the room it needs in the heap.
pub trait Order: Send + Sync + 'static {
    type Key: Ord + Copy + Send + Sync;
    fn key(task: &ReadyTask) -> Self::Key;
}

/// First come, first served: workflow submit order, then readiness.
pub struct FirstCome;

impl Order for FirstCome {
    type Key = (u64, u64);
    fn key(task: &ReadyTask) -> Self::Key {
        (task.workflow_seq, task.ready_seq)
    }
}

/// Shortest estimated runtime first, ties first come first served.
pub struct ShortestFirst;

impl Order for ShortestFirst {
    type Key = (u64, u64, u64);
    fn key(task: &ReadyTask) -> Self::Key {
        (task.estimate_ms, task.workflow_seq, task.ready_seq)
    }
}

/// Highest plan rank first, ties first come first served.
pub struct HighestRank;

impl Order for HighestRank {
    type Key = (u64, u64, u64);
    fn key(task: &ReadyTask) -> Self::Key {
        // Ranks are non-negative, so their bit patterns order like the numbers.
        (
            u64::MAX - task.rank.max(0.0).to_bits(),
            task.workflow_seq,
            task.ready_seq,
        )
    }
}

/// A policy ordering ready tasks by the key of `O`. See the module documentation.
pub struct Keyed<O: Order> {
    name: &'static str,
    heap: BinaryHeap<Reverse<(O::Key, TaskRef)>>,
}

impl Keyed<FirstCome> {
    /// First come, first served, reported under `name` (`fcfs`, or `mct`).
    pub fn fcfs(name: &'static str) -> Self {
        Keyed::named(name)
    }
}

impl Keyed<ShortestFirst> {
    /// Shortest estimated runtime first.
    pub fn sjf() -> Self {
        Keyed::named("sjf")
    }
}

impl Keyed<HighestRank> {
    /// Highest plan rank first, reported under `name` (`heft`, `cpop`).
    pub fn ranked(name: &'static str) -> Self {
        Keyed::named(name)
    }
}

impl<O: Order> Keyed<O> {
    fn named(name: &'static str) -> Self {
        Keyed {
            name,
            heap: BinaryHeap::new(),
        }
    }
}

impl<O: Order> Policy for Keyed<O> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn push(&mut self, task: ReadyTask) {
        self.heap.push(Reverse((O::key(&task), task.task)));
    }

    fn pop(&mut self, _now: Millis) -> Option<TaskRef> {
        self.heap.pop().map(|Reverse((_, task))| task)
    }

    fn len(&self) -> usize {
        self.heap.len()
    }
}
