//! [`DataReady`]: when a task's inputs are on each worker, given where its parents ran and
//! what moving their outputs costs. Shared by the placer and the simulator's placement.

use taskfleet_common::Millis;

use super::{ParentAt, WorkerId};

/// When a task's inputs are on each worker, for one task at a time; reused, so that it
/// allocates nothing once warm. Shared by [`Placer`] and the simulator's placement.
#[derive(Clone, Debug, Default)]
pub(crate) struct DataReady {
    parents: Vec<ParentAt>,
    /// Per worker: the stamp of the computation for which `ready_at` holds.
    mark: Vec<u64>,
    ready_at: Vec<Millis>,
    /// The workers holding some parent's output, as of the last computation.
    parent_workers: Vec<WorkerId>,
    stamp: u64,
}

impl DataReady {
    /// Room for workers `0..n_workers`.
    pub(crate) fn resize(&mut self, n_workers: usize) {
        self.mark.resize(n_workers, 0);
        self.ready_at.resize(n_workers, Millis(0));
    }

    /// Computes when the parents' outputs are on each worker: returns the time for a worker
    /// that ran none of them (every parent's end plus its transfer) and keeps, for each worker
    /// that ran some ([`DataReady::parent_workers`]), its own time ([`DataReady::local`]).
    /// Parents on workers beyond [`DataReady::resize`]'s range arrive from elsewhere
    /// everywhere. O(parents log parents).
    pub(crate) fn compute(&mut self, parents: &[ParentAt]) -> Millis {
        self.stamp += 1;
        self.parent_workers.clear();
        self.parents.clear();
        let mut outside = Millis(0);
        for parent in parents {
            match parent.worker {
                Some(worker) if worker.index() < self.mark.len() => self.parents.push(*parent),
                _ => outside = outside.max(parent.end.plus_ms(parent.transfer_ms)),
            }
        }
        self.parents.sort_unstable_by_key(|parent| parent.worker);
        // Per group of parents on one worker: the latest end there, and the latest arrival
        // elsewhere. A worker's time is its own latest end and the latest arrival of others.
        let mut best_remote: (Millis, Option<WorkerId>) = (Millis(0), None);
        let mut second_remote = Millis(0);
        let mut start = 0;
        while start < self.parents.len() {
            let worker = self.parents[start]
                .worker
                .expect("parents kept here ran on a known worker");
            let mut local = Millis(0);
            let mut remote = Millis(0);
            let mut end = start;
            while end < self.parents.len() && self.parents[end].worker == Some(worker) {
                local = local.max(self.parents[end].end);
                remote = remote.max(self.parents[end].end.plus_ms(self.parents[end].transfer_ms));
                end += 1;
            }
            self.parent_workers.push(worker);
            self.mark[worker.index()] = self.stamp;
            self.ready_at[worker.index()] = local;
            if remote > best_remote.0 {
                second_remote = best_remote.0;
                best_remote = (remote, Some(worker));
            } else {
                second_remote = second_remote.max(remote);
            }
            start = end;
        }
        for &worker in &self.parent_workers {
            let others = if best_remote.1 == Some(worker) {
                second_remote
            } else {
                best_remote.0
            };
            let own = &mut self.ready_at[worker.index()];
            *own = (*own).max(others).max(outside);
        }
        best_remote.0.max(outside)
    }

    /// The workers holding some parent's output, as of the last computation.
    pub(crate) fn parent_workers(&self) -> &[WorkerId] {
        &self.parent_workers
    }

    /// When the inputs are on `worker`, if it holds some of them (as of the last computation).
    pub(crate) fn local(&self, worker: WorkerId) -> Option<Millis> {
        (self.mark.get(worker.index()) == Some(&self.stamp)).then(|| self.ready_at[worker.index()])
    }
}
