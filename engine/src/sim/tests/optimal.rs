//! The exact solver: hand-checked optima, and never worse than any policy on random small
//! instances.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{fleet, workflow};
use crate::policy::{PolicyConfig, PolicyKind};
use crate::sim::{SimError, Simulator};

fn optimum(fleet_spec: crate::sim::FleetSpec, yaml: &str) -> (f64, f64) {
    let sim = Simulator::new(fleet_spec, vec![workflow(yaml, 0)], PolicyConfig::default()).unwrap();
    let heuristic = PolicyKind::ALL
        .iter()
        .map(|&policy| sim.run(policy).unwrap().makespan)
        .fold(f64::MAX, f64::min);
    let optimum = sim.optimal_makespan((heuristic * 1000.0) as u64, 10_000_000).unwrap();
    assert!(optimum.proven);
    (optimum.makespan, heuristic)
}

#[test]
fn a_chain_takes_the_sum_of_its_fastest_runtimes() {
    let chain = "name: c\ntasks:\n  - {id: a, handler: noop, estimate: 2s}\n  - {id: b, deps: [a], handler: noop, estimate: 4s}\n";
    assert_eq!(optimum(fleet(&[("slow", 1, 1.0), ("fast", 1, 2.0)]), chain).0, 3.0);
}

#[test]
fn work_is_split_where_it_finishes_first() {
    // Three 4 s tasks, a worker twice as fast and a slow one: two on the fast one, one on the
    // slow one, all done at 4 s (all three on the fast one would take 6 s).
    let three = "name: t\ntasks:\n  - {id: a, handler: noop, estimate: 4s}\n  - {id: b, handler: noop, estimate: 4s}\n  - {id: c, handler: noop, estimate: 4s}\n";
    assert_eq!(optimum(fleet(&[("slow", 1, 1.0), ("fast", 1, 2.0)]), three).0, 4.0);
}

#[test]
fn a_costly_transfer_keeps_parent_and_child_together() {
    let yaml = "name: t\ntasks:\n  - {id: a, handler: noop, estimate: 1s}\n  - {id: b, handler: noop, estimate: 1s, deps: [{task: a, transfer: 10s}]}\n  - {id: c, handler: noop, estimate: 1s, deps: [{task: a, transfer: 10s}]}\n";
    // Together on one worker: 3 s; spreading b or c to the other worker would cost 10 s more.
    assert_eq!(optimum(fleet(&[("w1", 1, 1.0), ("w2", 1, 1.0)]), yaml).0, 3.0);
}

#[test]
fn the_optimum_never_loses_to_a_policy_on_random_small_instances() {
    let mut rng = StdRng::seed_from_u64(17);
    for case in 0..40 {
        let n_tasks = rng.gen_range(3..=9);
        let mut yaml = String::from("name: r\ntasks:\n");
        for idx in 0..n_tasks {
            let estimate = rng.gen_range(1..=9);
            let mut deps: Vec<String> = Vec::new();
            for parent in 0..idx {
                if rng.gen_bool(0.3) {
                    deps.push(format!("{{task: t{parent}, transfer: {}s}}", rng.gen_range(0..3)));
                }
            }
            yaml.push_str(&format!(
                "  - {{id: t{idx}, handler: noop, estimate: {estimate}s, deps: [{}]}}\n",
                deps.join(", ")
            ));
        }
        let workers: Vec<(String, u32, f64)> = (0..rng.gen_range(1..=3))
            .map(|w| {
                (
                    format!("w{w}"),
                    rng.gen_range(1..=2),
                    [0.5, 1.0, 2.0][rng.gen_range(0..3)],
                )
            })
            .collect();
        let refs: Vec<(&str, u32, f64)> = workers
            .iter()
            .map(|(name, slots, speed)| (name.as_str(), *slots, *speed))
            .collect();
        let (optimal, heuristic) = optimum(fleet(&refs), &yaml);
        assert!(
            optimal <= heuristic + 1e-9,
            "case {case}: optimum {optimal} > policy {heuristic}\n{yaml}"
        );
        assert!(optimal > 0.0);
    }
}

#[test]
fn large_or_multi_slot_instances_are_refused() {
    let tasks: String = (0..21)
        .map(|idx| format!("  - {{id: t{idx}, handler: noop}}\n"))
        .collect();
    let sim = Simulator::new(
        fleet(&[("w", 1, 1.0)]),
        vec![workflow(&format!("name: big\ntasks:\n{tasks}"), 0)],
        PolicyConfig::default(),
    )
    .unwrap();
    assert!(
        matches!(sim.optimal_makespan(100_000, 1_000), Err(SimError::Unrunnable(problems)) if problems[0].contains("up to 20"))
    );
}

/// The optimum of a tiny instance by trying every order and every placement.
fn brute_force(runtime: &[Vec<u64>], parents: &[Vec<(usize, u64)>], worker_of: &[usize]) -> u64 {
    fn orders(n: usize) -> Vec<Vec<usize>> {
        if n == 0 {
            return vec![vec![]];
        }
        let mut all = Vec::new();
        for rest in orders(n - 1) {
            for position in 0..=rest.len() {
                let mut order = rest.clone();
                order.insert(position, n - 1);
                all.push(order);
            }
        }
        all
    }
    let (n_tasks, n_procs) = (runtime.len(), worker_of.len());
    let mut best = u64::MAX;
    for order in orders(n_tasks) {
        for code in 0..n_procs.pow(n_tasks as u32) {
            let placement: Vec<usize> = (0..n_tasks)
                .map(|task| code / n_procs.pow(task as u32) % n_procs)
                .collect();
            let mut finish = vec![u64::MAX; n_tasks];
            let mut free = vec![0u64; n_procs];
            let mut valid = true;
            for &task in &order {
                let processor = placement[task];
                if parents[task].iter().any(|&(parent, _)| finish[parent] == u64::MAX) {
                    valid = false;
                    break;
                }
                let inputs = parents[task]
                    .iter()
                    .map(|&(parent, transfer)| {
                        finish[parent]
                            + if worker_of[placement[parent]] == worker_of[processor] {
                                0
                            } else {
                                transfer
                            }
                    })
                    .max()
                    .unwrap_or(0);
                let start = free[processor].max(inputs);
                finish[task] = start + runtime[task][processor];
                free[processor] = finish[task];
            }
            if valid {
                best = best.min(finish.iter().copied().max().unwrap_or(0));
            }
        }
    }
    best
}

#[test]
fn the_optimum_matches_an_exhaustive_search_on_tiny_instances() {
    let mut rng = StdRng::seed_from_u64(23);
    for case in 0..30 {
        let n_tasks = rng.gen_range(2..=5);
        let speeds: Vec<f64> = (0..rng.gen_range(1..=2))
            .map(|_| [1.0, 2.0][rng.gen_range(0..2)])
            .collect();
        let mut yaml = String::from("name: tiny\ntasks:\n");
        let mut estimates = Vec::new();
        let mut parents = Vec::new();
        for idx in 0..n_tasks {
            let estimate = rng.gen_range(1..=6) * 1000;
            let mut deps = Vec::new();
            let mut my_parents = Vec::new();
            for parent in 0..idx {
                if rng.gen_bool(0.4) {
                    let transfer = rng.gen_range(0..3) * 1000;
                    deps.push(format!("{{task: t{parent}, transfer: {}ms}}", transfer));
                    my_parents.push((parent, transfer));
                }
            }
            yaml.push_str(&format!(
                "  - {{id: t{idx}, handler: noop, estimate: {estimate}ms, deps: [{}]}}\n",
                deps.join(", ")
            ));
            estimates.push(estimate);
            parents.push(my_parents);
        }
        let workers: Vec<(String, u32, f64)> = speeds
            .iter()
            .enumerate()
            .map(|(w, &speed)| (format!("w{w}"), 1, speed))
            .collect();
        let refs: Vec<(&str, u32, f64)> = workers
            .iter()
            .map(|(name, slots, speed)| (name.as_str(), *slots, *speed))
            .collect();
        let runtime: Vec<Vec<u64>> = estimates
            .iter()
            .map(|&e| speeds.iter().map(|&speed| (e as f64 / speed).round() as u64).collect())
            .collect();
        let worker_of: Vec<usize> = (0..speeds.len()).collect();
        let expected = brute_force(&runtime, &parents, &worker_of) as f64 / 1000.0;
        let (optimal, _) = optimum(fleet(&refs), &yaml);
        assert_eq!(optimal, expected, "case {case}\n{yaml}");
    }
}
