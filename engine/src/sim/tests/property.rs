//! Random layered DAGs (up to 60 tasks, estimates per worker, transfer costs, several slots,
//! two pools, several workflows with offsets) on random fleets, under every policy: the
//! schedule is always valid, checked against a runtime model written out again here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use taskfleet_common::workflow::{parse_workflow_value, ValidateOptions};

use crate::policy::{PolicyConfig, PolicyKind};
use crate::sim::{FleetSpec, SimReport, SimWorker, SimWorkflow, Simulator};

const CASES: u64 = 200;
const BASES: [&str; 4] = ["a", "b", "c", "d"];

fn random_fleet(rng: &mut StdRng, two_pools: bool) -> FleetSpec {
    let n_entries = rng.gen_range(1..=4);
    let mut workers = Vec::new();
    for (entry, base) in BASES.iter().enumerate().take(n_entries) {
        // 1 to 6 workers in all.
        let room = 6 - workers.len() - (n_entries - entry - 1);
        let count = rng.gen_range(1..=room.min(2));
        let slots = rng.gen_range(1..=3);
        let speed = rng.gen_range(5..=30) as f64 / 10.0;
        let pools = match (two_pools, entry % 3) {
            (false, _) | (true, 0) => vec!["default".to_string()],
            (true, 1) => vec!["gpu".to_string()],
            (true, _) => vec!["default".to_string(), "gpu".to_string()],
        };
        for k in 1..=count {
            let name = if count == 1 {
                base.to_string()
            } else {
                format!("{base}-{k}")
            };
            workers.push(SimWorker {
                name,
                base: base.to_string(),
                pools: pools.clone(),
                ..SimWorker::new(base, slots, speed)
            });
        }
    }
    FleetSpec { workers }
}

fn random_workflow(rng: &mut StdRng, name: &str, fleet: &FleetSpec, pools: &[&str]) -> Value {
    let n_layers = rng.gen_range(1..=8);
    let mut layers: Vec<Vec<String>> = Vec::new();
    let mut tasks = Vec::new();
    'layers: for layer in 0..n_layers {
        let mut ids = Vec::new();
        for k in 0..rng.gen_range(1..=10) {
            if tasks.len() == 60 {
                break 'layers;
            }
            let id = format!("t{layer}-{k}");
            let pool = *pools.choose(rng).expect("pools");
            let max_slots = fleet
                .workers
                .iter()
                .filter(|worker| worker.pools.iter().any(|p| p == pool))
                .map(|worker| worker.slots)
                .max()
                .expect("every pool is served");
            let priority = ["high", "normal", "low"][rng.gen_range(0..3)];
            let weight = rng.gen_range(0..5);
            let mut task = json!({"id": id, "handler": "noop", "pool": pool, "priority": priority, "weight": weight});
            if rng.gen_bool(0.8) {
                task["estimate"] = json!(format!("{}ms", rng.gen_range(0..20_000)));
            }
            if rng.gen_bool(0.2) {
                let mut by_worker = BTreeMap::new();
                for base in BASES {
                    if rng.gen_bool(0.5) {
                        by_worker.insert(base, format!("{}ms", rng.gen_range(1..20_000)));
                    }
                }
                task["estimate_by_worker"] = json!(by_worker);
            }
            if rng.gen_bool(0.3) {
                task["resources"] = json!({"slots": rng.gen_range(1..=max_slots)});
            }
            let earlier: Vec<&String> = layers.iter().flatten().collect();
            if !earlier.is_empty() {
                let n_parents = rng.gen_range(1..=3.min(earlier.len()));
                let deps: Vec<Value> = earlier
                    .choose_multiple(rng, n_parents)
                    .map(|parent| match rng.gen_bool(0.5) {
                        true => json!({"task": parent, "transfer": format!("{}ms", rng.gen_range(0..5_000))}),
                        false => json!(parent),
                    })
                    .collect();
                task["deps"] = json!(deps);
            }
            tasks.push(task);
            ids.push(id);
        }
        layers.push(ids);
    }
    json!({"name": name, "tasks": tasks})
}

/// The runtime model, written out independently of `placement::runtime_ms`.
fn expected_runtime(task: &taskfleet_common::TaskSpec, worker: &SimWorker, prior: Duration) -> u64 {
    let by_worker = task.estimate_by_worker.as_ref().and_then(|map| map.get(&worker.base));
    match by_worker {
        Some(estimate) => estimate.as_millis() as u64,
        None => (task.estimate.unwrap_or(prior).as_millis() as f64 / worker.speed).round() as u64,
    }
}

fn check(case: u64, policy: PolicyKind, sim: &Simulator, workflows: &[SimWorkflow], report: &SimReport) {
    let context = format!("case {case}, policy {policy}");
    let fleet = sim.fleet();
    let prior = PolicyConfig::default().default_estimate;
    let n_tasks: usize = workflows.iter().map(|workflow| workflow.spec.tasks.len()).sum();
    assert_eq!(report.schedule.len(), n_tasks, "{context}: every task scheduled");
    let mut at: Vec<Vec<Option<(usize, u64, u64)>>> =
        workflows.iter().map(|w| vec![None; w.spec.tasks.len()]).collect();
    for entry in &report.schedule {
        let slot = &mut at[entry.workflow_idx][entry.task_idx as usize];
        assert!(slot.is_none(), "{context}: task scheduled twice");
        *slot = Some((entry.worker_idx, entry.start_ms, entry.end_ms));
        assert_eq!(entry.worker, fleet.workers[entry.worker_idx].name);
    }
    let mut per_worker: Vec<Vec<(u64, i64)>> = vec![Vec::new(); fleet.workers.len()];
    for (w, workflow) in workflows.iter().enumerate() {
        let submit = workflow.submit.as_millis() as u64;
        for (t, task) in workflow.spec.tasks.iter().enumerate() {
            let (worker, start, end) = at[w][t].expect("checked above");
            let spec = &fleet.workers[worker];
            assert!(
                spec.pools.iter().any(|pool| **pool == *task.pool),
                "{context}: pool served"
            );
            assert!(start >= submit, "{context}: {} starts before its submit", task.id);
            assert_eq!(
                end - start,
                expected_runtime(task, spec, prior),
                "{context}: runtime of {}",
                task.id
            );
            for dep in &task.deps {
                let (parent_worker, _, parent_end) = at[w][dep.task as usize].expect("checked above");
                let transfer = if parent_worker == worker {
                    0
                } else {
                    u64::from(dep.transfer_ms)
                };
                assert!(
                    start >= parent_end + transfer,
                    "{context}: {} starts before its input",
                    task.id
                );
            }
            if end > start {
                per_worker[worker].push((start, i64::from(task.resources.slots)));
                per_worker[worker].push((end, -i64::from(task.resources.slots)));
            }
        }
        let end = report.workflows[w].end;
        let last = (0..workflow.spec.tasks.len())
            .map(|t| at[w][t].expect("checked").2)
            .max()
            .unwrap_or(0);
        assert_eq!(end, last as f64 / 1000.0, "{context}: workflow end");
    }
    for (worker, mut changes) in per_worker.into_iter().enumerate() {
        changes.sort(); // Ends (negative) before starts at the same instant.
        let mut running = 0;
        for (_, change) in changes {
            running += change;
            assert!(
                running <= i64::from(fleet.workers[worker].slots),
                "{context}: worker over its slots"
            );
        }
    }
    let last_end = report.schedule.iter().map(|entry| entry.end_ms).max().unwrap_or(0);
    assert_eq!(report.makespan, last_end as f64 / 1000.0, "{context}: makespan");
    assert!(
        report.utilization > 0.0 && report.utilization <= 1.0 + 1e-9 || last_end == 0,
        "{context}"
    );
    assert!(report.fairness > 0.0 && report.fairness <= 1.0 + 1e-9, "{context}");
}

#[test]
fn random_dags_on_random_fleets_get_valid_schedules_under_every_policy() {
    for case in 0..CASES {
        let mut rng = StdRng::seed_from_u64(case);
        let two_pools = rng.gen_bool(0.3);
        let mut fleet = random_fleet(&mut rng, two_pools);
        let pools: Vec<&str> = if two_pools && fleet.workers.len() > 1 {
            let served = |pool: &str| fleet.workers.iter().any(|w| w.pools.iter().any(|p| p == pool));
            ["default", "gpu"].into_iter().filter(|pool| served(pool)).collect()
        } else {
            for worker in &mut fleet.workers {
                worker.pools = vec!["default".to_string()];
            }
            vec!["default"]
        };
        let workflows: Vec<SimWorkflow> = (0..rng.gen_range(1..=3))
            .map(|k| {
                let value = random_workflow(&mut rng, &format!("wf{k}"), &fleet, &pools);
                let spec = parse_workflow_value(value, &ValidateOptions::default()).unwrap_or_else(|e| panic!("{e}"));
                let submit = if k == 0 { 0 } else { rng.gen_range(0..20_000) };
                SimWorkflow {
                    spec: Arc::new(spec),
                    submit: Duration::from_millis(submit),
                }
            })
            .collect();
        let sim = Simulator::new(fleet, workflows.clone(), PolicyConfig::default()).expect("runnable");
        for policy in PolicyKind::ALL {
            let report = sim
                .run(policy)
                .unwrap_or_else(|error| panic!("case {case}, {policy}: {error}"));
            check(case, policy, &sim, &workflows, &report);
        }
    }
}
