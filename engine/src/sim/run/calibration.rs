//! The ETA's calibration during a replay: at every 5% of a workflow's tasks finished, the
//! Monte-Carlo forecast of its end that `taskfleet status` would give then (the same
//! [`monte_carlo_eta`] on the engine's predictor and the fleet's slots), kept to be set against
//! the workflow's actual end once the replay is over.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::{State, UNPLACED};
use crate::eta::{monte_carlo_eta, slots_by_speed, TaskProgress};

/// Samples per forecast, as the status endpoint takes for a small workflow.
const ETA_SAMPLES: usize = 200;

/// Forecasts per workflow: one at each twentieth of its tasks finished.
const CHECKPOINTS: usize = 20;

/// One forecast: when it was made and the predicted end (median, 90th percentile), in
/// milliseconds of simulated time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::sim) struct EtaCheck {
    pub workflow: usize,
    pub at: u64,
    pub p50_end: u64,
    pub p90_end: u64,
}

/// What the watch keeps between task ends.
pub(super) struct EtaWatch {
    finished: Vec<bool>,
    /// Per workflow: tasks finished, and the next checkpoint's count.
    done: Vec<usize>,
    next: Vec<usize>,
    slots: Vec<(f64, usize)>,
    pub(super) checks: Vec<EtaCheck>,
}

impl EtaWatch {
    pub(super) fn new(state: &State<'_>) -> EtaWatch {
        let sim = state.sim;
        EtaWatch {
            finished: vec![false; sim.n_tasks],
            done: vec![0; sim.workflows.len()],
            next: sim
                .workflows
                .iter()
                .map(|w| checkpoint(w.spec.tasks.len(), 1))
                .collect(),
            slots: slots_by_speed(sim.fleet.workers.iter().map(|w| (w.speed, w.slots as usize))),
            checks: Vec::new(),
        }
    }
}

/// The count of finished tasks at checkpoint `k` of a workflow of `n` tasks.
fn checkpoint(n: usize, k: usize) -> usize {
    (k * n).div_ceil(CHECKPOINTS).max(1)
}

impl State<'_> {
    /// Task `global` of `workflow` ended at `now`: forecasts the workflow's end if a
    /// checkpoint is reached and tasks are left.
    pub(super) fn watch_eta(&mut self, workflow: usize, global: usize, now: u64) {
        let Some(watch) = self.eta_watch.as_mut() else {
            return;
        };
        watch.finished[global] = true;
        watch.done[workflow] += 1;
        let n = self.sim.workflows[workflow].spec.tasks.len();
        if watch.done[workflow] < watch.next[workflow] || watch.done[workflow] >= n {
            return;
        }
        let mut k = 1;
        while checkpoint(n, k) <= watch.done[workflow] {
            k += 1;
        }
        watch.next[workflow] = checkpoint(n, k);
        let first = self.sim.first_task[workflow];
        let progress: Vec<TaskProgress> = (first..first + n)
            .map(|global| {
                if watch.finished[global] {
                    TaskProgress::Done
                } else if self.trace.worker[global] != UNPLACED && self.trace.start[global] <= now {
                    TaskProgress::Running {
                        elapsed: Duration::from_millis(now - self.trace.start[global]),
                        speed: self.sim.fleet.workers[self.trace.worker[global] as usize].speed,
                    }
                } else {
                    TaskProgress::Waiting
                }
            })
            .collect();
        let spec = &self.sim.workflows[workflow].spec;
        let mut rng = StdRng::seed_from_u64((workflow as u64) << 32 | watch.done[workflow] as u64);
        let eta = monte_carlo_eta(
            spec,
            &progress,
            self.engine.predictor(),
            &watch.slots,
            ETA_SAMPLES,
            &mut rng,
        );
        watch.checks.push(EtaCheck {
            workflow,
            at: now,
            p50_end: now + eta.p50.as_millis() as u64,
            p90_end: now + eta.p90.as_millis() as u64,
        });
    }
}
