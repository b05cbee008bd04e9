//! [`Term`]: a leader's time in office, as the leader itself measures it.
//!
//! The lease in the store runs on the database's clock; a leader also keeps its own monotonic
//! deadline, measured from before each renewal was asked for, and stops acting once it passes
//! even if it could not hear that another scheduler took over (a paused process, a lost
//! network). The store's fencing refuses its writes in any case; the deadline keeps it from
//! dispatching from a stale view until then.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

/// See the module documentation. Clones share one term.
#[derive(Clone, Debug)]
pub struct Term {
    epoch: u64,
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    deadline: Mutex<Instant>,
    ended: AtomicBool,
}

/// This scheduler no longer leads: its term ended or the store refused its write.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("this scheduler no longer leads: {reason}")]
pub struct Deposed {
    pub reason: String,
}

impl Term {
    /// A term of `epoch` that lasts until `deadline` unless extended.
    pub fn new(epoch: u64, deadline: Instant) -> Term {
        Term {
            epoch,
            inner: Arc::new(Inner {
                deadline: Mutex::new(deadline),
                ended: AtomicBool::new(false),
            }),
        }
    }

    /// The lease's epoch: the fencing token of this term.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// A renewal asked for at some instant went through: the term lasts until `deadline`.
    pub fn extend(&self, deadline: Instant) {
        let mut current = self.inner.deadline.lock().unwrap_or_else(PoisonError::into_inner);
        *current = (*current).max(deadline);
    }

    /// When the term ends unless renewed.
    pub fn deadline(&self) -> Instant {
        *self.inner.deadline.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ends the term now (the lease was lost or given up).
    pub fn end(&self) {
        self.inner.ended.store(true, Ordering::SeqCst);
    }

    /// Whether this scheduler may still act as the leader at `now`.
    pub fn is_current(&self, now: Instant) -> bool {
        !self.inner.ended.load(Ordering::SeqCst) && now < self.deadline()
    }

    /// The error of acting past this term.
    pub fn deposed(&self) -> Deposed {
        Deposed {
            reason: format!("its term (epoch {}) is over", self.epoch),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_term_lasts_until_its_deadline_or_its_end() {
        let start = Instant::now();
        let term = Term::new(3, start + Duration::from_secs(10));
        assert_eq!(term.epoch(), 3);
        assert!(term.is_current(start));
        assert!(
            !term.is_current(start + Duration::from_secs(10)),
            "the deadline is exclusive"
        );
        term.extend(start + Duration::from_secs(20));
        assert!(term.is_current(start + Duration::from_secs(15)));
        term.extend(start + Duration::from_secs(5));
        assert_eq!(
            term.deadline(),
            start + Duration::from_secs(20),
            "a late answer never shortens it"
        );
        let clone = term.clone();
        clone.end();
        assert!(!term.is_current(start), "clones share the term");
        assert!(term.deposed().to_string().contains("epoch 3"));
    }
}
