//! [`ByWorkflow`]: ready tasks queued per workflow, the workflows ordered by a rank. `srpt`
//! (rank: estimated work left) and `rr` (rank: quanta of slot-time used) are this structure
//! with their own rank; within a workflow, tasks go in the order they became ready.
//! O(log w) per operation for w workflows with ready tasks.

use std::collections::{BTreeSet, HashMap, VecDeque};

/// One workflow's ready tasks and what ranks it.
pub(super) struct Queue<T, S> {
    /// Submit order: breaks ties of rank.
    pub(super) seq: u64,
    pub(super) state: S,
    ready: VecDeque<T>,
}

/// What orders workflows: smallest rank first.
pub(super) trait Rank {
    fn rank(&self) -> u64;
}

/// Ready items (`T`) per workflow, the workflows holding some ordered by (rank, submit order,
/// workflow index).
pub(super) struct ByWorkflow<T, S> {
    workflows: HashMap<u32, Queue<T, S>>,
    order: BTreeSet<(u64, u64, u32)>,
    n_ready: usize,
}

impl<T, S: Rank> Default for ByWorkflow<T, S> {
    fn default() -> Self {
        ByWorkflow {
            workflows: HashMap::new(),
            order: BTreeSet::new(),
            n_ready: 0,
        }
    }
}

impl<T, S: Rank> ByWorkflow<T, S> {
    fn key(workflow_idx: u32, queue: &Queue<T, S>) -> (u64, u64, u32) {
        (queue.state.rank(), queue.seq, workflow_idx)
    }

    pub(super) fn len(&self) -> usize {
        self.n_ready
    }

    pub(super) fn contains(&self, workflow_idx: u32) -> bool {
        self.workflows.contains_key(&workflow_idx)
    }

    /// The first workflow in order, if any holds ready tasks.
    pub(super) fn first(&self) -> Option<&Queue<T, S>> {
        let &(_, _, workflow_idx) = self.order.first()?;
        self.workflows.get(&workflow_idx)
    }

    /// Adds a workflow, or changes what ranks a known one (keeping it in order).
    pub(super) fn upsert(&mut self, workflow_idx: u32, seq: u64, state: S) {
        if self.contains(workflow_idx) {
            self.update(workflow_idx, |known| {
                known.seq = seq;
                known.state = state;
            });
        } else {
            let ready = VecDeque::new();
            self.workflows.insert(workflow_idx, Queue { seq, state, ready });
        }
    }

    /// Changes a known workflow's rank (or its submit order), keeping it in order.
    pub(super) fn update(&mut self, workflow_idx: u32, change: impl FnOnce(&mut Queue<T, S>)) {
        let Some(queue) = self.workflows.get_mut(&workflow_idx) else {
            return;
        };
        let ordered = !queue.ready.is_empty();
        if ordered {
            self.order.remove(&Self::key(workflow_idx, queue));
        }
        change(queue);
        if ordered {
            self.order.insert(Self::key(workflow_idx, queue));
        }
    }

    /// Queues an item of a workflow; a workflow not known yet is added as `new` makes it
    /// (submit order and state).
    pub(super) fn push(&mut self, workflow_idx: u32, item: T, new: impl FnOnce() -> (u64, S)) {
        let queue = self.workflows.entry(workflow_idx).or_insert_with(|| {
            let (seq, state) = new();
            let ready = VecDeque::new();
            Queue { seq, state, ready }
        });
        if queue.ready.is_empty() {
            self.order.insert(Self::key(workflow_idx, queue));
        }
        queue.ready.push_back(item);
        self.n_ready += 1;
    }

    /// Takes the next item of the first workflow in order, with that workflow's index.
    pub(super) fn pop(&mut self) -> Option<(u32, T)> {
        let &(rank, seq, workflow_idx) = self.order.first()?;
        let queue = self.workflows.get_mut(&workflow_idx)?;
        let item = queue.ready.pop_front()?;
        if queue.ready.is_empty() {
            self.order.remove(&(rank, seq, workflow_idx));
        }
        self.n_ready -= 1;
        Some((workflow_idx, item))
    }

    /// Forgets a workflow and its ready items.
    pub(super) fn remove(&mut self, workflow_idx: u32) {
        if let Some(queue) = self.workflows.remove(&workflow_idx) {
            if !queue.ready.is_empty() {
                self.order.remove(&Self::key(workflow_idx, &queue));
                self.n_ready -= queue.ready.len();
            }
        }
    }
}
