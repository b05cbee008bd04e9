//! The attempts the scheduler cancelled lately, so that one still waiting in the worker's
//! buffer (or delivered later) never starts.

use std::collections::{HashSet, VecDeque};

use taskfleet_common::wire::AttemptRef;

/// The attempts cancelled lately, the oldest forgotten first.
#[derive(Default)]
pub(super) struct Cancelled {
    set: HashSet<AttemptRef>,
    order: VecDeque<AttemptRef>,
}

impl Cancelled {
    /// Cancels kept: far more than a worker holds in its buffer.
    const CAPACITY: usize = 10_000;

    pub(super) fn insert(&mut self, attempt: AttemptRef) {
        if self.set.insert(attempt.clone()) {
            self.order.push_back(attempt);
        }
        while self.order.len() > Self::CAPACITY {
            if let Some(oldest) = self.order.pop_front() {
                self.set.remove(&oldest);
            }
        }
    }

    pub(super) fn contains(&self, attempt: &AttemptRef) -> bool {
        self.set.contains(attempt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(n: u32) -> AttemptRef {
        AttemptRef {
            workflow_id: "wf".into(),
            task_idx: n,
            attempt: 1,
        }
    }

    #[test]
    fn the_oldest_cancels_are_forgotten_first() {
        let mut cancelled = Cancelled::default();
        for n in 0..=Cancelled::CAPACITY as u32 {
            cancelled.insert(attempt(n));
        }
        assert!(
            !cancelled.contains(&attempt(0)),
            "past the capacity, the first one goes"
        );
        assert!(cancelled.contains(&attempt(1)));
        assert!(cancelled.contains(&attempt(Cancelled::CAPACITY as u32)));
        cancelled.insert(attempt(1));
        assert!(cancelled.contains(&attempt(1)), "inserting twice keeps one entry");
    }
}
