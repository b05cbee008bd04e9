//! `priority`: priority class first (high, normal, low), then weight (higher first), then
//! criticality (in predictive mode: how often the task decides its workflow's end), then
//! first come, first served — with aging: a task that has waited `aging` moves up one class,
//! and one more for each further `aging`, so a steady stream of urgent work cannot starve
//! the rest forever. One heap per class plus, per class, the tasks in arrival order for the
//! aging sweep; O(log n) amortized per push and pop.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::Duration;

use taskfleet_common::{Millis, PriorityClass};

use super::{Policy, ReadyTask, TaskRef};

/// Class, then weight, then FCFS, with aging across classes.
pub struct Priority {
    aging_ms: u64,
    by_class: [BinaryHeap<Reverse<Entry>>; 3],
    /// Per class, the tasks in the order they entered it, for the aging sweep.
    arrivals: [VecDeque<u64>; 3],
    /// Every held task by its ready sequence number, with the class it is in now.
    held: HashMap<u64, Held>,
}

struct Held {
    task: ReadyTask,
    class_rank: usize,
}

/// Heap entry; the smallest entry goes first.
struct Entry {
    /// Negated weight, so that higher weights sort first.
    neg_weight: f64,
    /// Negated criticality, so that more critical tasks sort first.
    neg_criticality: f64,
    workflow_seq: u64,
    ready_seq: u64,
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.neg_weight
            .total_cmp(&other.neg_weight)
            .then_with(|| self.neg_criticality.total_cmp(&other.neg_criticality))
            .then_with(|| (self.workflow_seq, self.ready_seq).cmp(&(other.workflow_seq, other.ready_seq)))
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

impl Default for Priority {
    fn default() -> Self {
        Priority::new(Duration::from_secs(60))
    }
}

impl Priority {
    /// A policy whose waiting tasks move up a class every `aging`.
    pub fn new(aging: Duration) -> Priority {
        Priority {
            aging_ms: (aging.as_millis() as u64).max(1),
            by_class: Default::default(),
            arrivals: Default::default(),
            held: HashMap::new(),
        }
    }

    fn insert(&mut self, ready_seq: u64, class_rank: usize) {
        let held = &self.held[&ready_seq];
        self.by_class[class_rank].push(Reverse(Entry {
            neg_weight: -held.task.weight,
            neg_criticality: -held.task.criticality,
            workflow_seq: held.task.workflow_seq,
            ready_seq,
        }));
        self.arrivals[class_rank].push_back(ready_seq);
    }

    /// Moves every task that has waited long enough up a class (or several).
    fn age(&mut self, now: Millis) {
        for class_rank in 1..PriorityClass::ALL.len() {
            while let Some(&ready_seq) = self.arrivals[class_rank].front() {
                let Some(held) = self.held.get(&ready_seq) else {
                    self.arrivals[class_rank].pop_front();
                    continue;
                };
                if held.class_rank != class_rank {
                    self.arrivals[class_rank].pop_front();
                    continue;
                }
                let waited = now.0.saturating_sub(held.task.ready_at.0);
                let promotions = (waited / self.aging_ms) as usize;
                let target = held.task.class.rank().saturating_sub(promotions);
                if target >= class_rank {
                    // Arrivals are in order, so nobody behind this one is due either.
                    break;
                }
                self.arrivals[class_rank].pop_front();
                self.held.get_mut(&ready_seq).expect("just read").class_rank = target;
                self.insert(ready_seq, target);
            }
        }
    }
}

impl Policy for Priority {
    fn name(&self) -> &'static str {
        "priority"
    }

    fn push(&mut self, task: ReadyTask) {
        let class_rank = task.class.rank();
        self.held.insert(task.ready_seq, Held { task, class_rank });
        self.insert(task.ready_seq, class_rank);
    }

    fn pop(&mut self, now: Millis) -> Option<TaskRef> {
        self.age(now);
        for class_rank in 0..PriorityClass::ALL.len() {
            while let Some(Reverse(entry)) = self.by_class[class_rank].pop() {
                // Entries of tasks that moved to a higher class are stale here.
                match self.held.get(&entry.ready_seq) {
                    Some(held) if held.class_rank == class_rank => {
                        let task = held.task.task;
                        self.held.remove(&entry.ready_seq);
                        return Some(task);
                    }
                    _ => continue,
                }
            }
        }
        None
    }

    fn len(&self) -> usize {
        self.held.len()
    }
}
