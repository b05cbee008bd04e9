//! Planning under the planned policies (`heft`, `cpop`, `min-min`, `max-min`, `sufferage`):
//! each workflow's plan when it arrives (improved by the local search, or, with dynamic plans,
//! only its ranks), and planning again the workflows that had tasks no worker could run once
//! workers appear.

use taskfleet_common::Millis;

use super::run::{RunPlacement, WorkflowRun};
use super::{estimate_ms, Engine, EngineConfig};
use crate::placement;
use crate::policy::{Placement, TaskRef};
use crate::predict::Predictor;

impl Engine {
    /// Under a placement-aware policy, gives a new workflow its placement record and, under a
    /// planned one, its plan over the current fleet.
    pub(super) fn place_workflow(&mut self, workflow_idx: u32, now: Millis) {
        let Some(plans) = self.plans.as_mut() else {
            return;
        };
        let run = self.workflows.live(workflow_idx);
        let n = run.tasks.len();
        let mut placement = RunPlacement {
            worker: vec![None; n],
            start: vec![now; n],
            end: vec![now; n],
            priority: vec![0.0; n],
            incomplete: false,
        };
        if let (Placement::Planned(kind), true) = (self.config.policy.placement(), self.config.dynamic_plans) {
            // Ranked by a plan on a copy of the model; placed when dispatched.
            let (estimates, done) = plan_inputs(run, &self.config, &self.predictor);
            let mut scratch = plans.placer.clone();
            placement.priority = placement::plan(&mut scratch, now, &run.spec, &estimates, &done, kind).priority;
        } else if let Placement::Planned(kind) = self.config.policy.placement() {
            let (estimates, done) = plan_inputs(run, &self.config, &self.predictor);
            let search = self.config.policy_config.plan_search;
            let (plan, _) =
                placement::plan_improved(&mut plans.placer, now, &run.spec, &estimates, &done, kind, search);
            placement.incomplete = plan
                .worker
                .iter()
                .zip(&done)
                .any(|(worker, &done)| worker.is_none() && !done);
            for (idx, _) in done.iter().enumerate().filter(|(_, &done)| !done) {
                if let Some(worker) = plan.worker[idx] {
                    let task = TaskRef::new(workflow_idx, idx as u32);
                    plans.order.entry(worker).or_default().insert((plan.start[idx], task));
                    plans.dirty.push(worker);
                }
            }
            placement.worker = plan.worker;
            placement.start = plan.start;
            placement.end = plan.end;
            placement.priority = plan.priority;
            if placement.incomplete {
                plans.incomplete.push(workflow_idx);
            }
        }
        run.placement = Some(Box::new(placement));
    }

    /// Plans again, for the tasks not yet dispatched, the workflows planned when no worker
    /// could run some of their tasks, once workers are known.
    pub(super) fn plan_incomplete(&mut self, now: Millis) {
        let Placement::Planned(kind) = self.config.policy.placement() else {
            return;
        };
        let Some(plans) = self.plans.as_mut() else {
            return;
        };
        // Planning again only helps once the fleet has changed since the last try.
        if plans.incomplete.is_empty() || plans.placer.generation() == plans.incomplete_generation {
            return;
        }
        plans.incomplete_generation = plans.placer.generation();
        let incomplete = std::mem::take(&mut plans.incomplete);
        for workflow_idx in incomplete {
            let Some(run) = self.workflows.get_mut(workflow_idx) else {
                continue;
            };
            let (estimates, done) = plan_inputs(run, &self.config, &self.predictor);
            let plan = placement::plan(&mut plans.placer, now, &run.spec, &estimates, &done, kind);
            let placement = run.placement.as_mut().expect("placed workflows have a placement");
            placement.incomplete = false;
            for (idx, _) in done.iter().enumerate().filter(|(_, &done)| !done) {
                let task = TaskRef::new(workflow_idx, idx as u32);
                // Out of the old plan, into the new one.
                if let Some(order) = placement.worker[idx].and_then(|worker| plans.order.get_mut(&worker)) {
                    order.remove(&(placement.start[idx], task));
                }
                if let Some(worker) = plan.worker[idx] {
                    plans.order.entry(worker).or_default().insert((plan.start[idx], task));
                    plans.dirty.push(worker);
                }
                placement.worker[idx] = plan.worker[idx];
                placement.start[idx] = plan.start[idx];
                placement.end[idx] = plan.end[idx];
                placement.priority[idx] = plan.priority[idx];
                placement.incomplete |= plan.worker[idx].is_none();
            }
            if placement.incomplete {
                plans.incomplete.push(workflow_idx);
            }
        }
    }
}

/// What planning a workflow needs: each task's runtime at speed 1, and which tasks need no
/// place (ended, or already sent out).
fn plan_inputs(run: &WorkflowRun, config: &EngineConfig, predictor: &Predictor) -> (Vec<u64>, Vec<bool>) {
    let estimates = run
        .spec
        .tasks
        .iter()
        .map(|task| estimate_ms(task, config, predictor))
        .collect();
    let done = run
        .tasks
        .iter()
        .map(|task| task.state.is_terminal() || task.state.is_in_flight())
        .collect();
    (estimates, done)
}
