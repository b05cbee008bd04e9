//! What each policy is for, measured in the simulator on workloads made to show it: `sjf`
//! and `srpt` cut mean flow time when short and long work mix, `rr` is fairer when one huge
//! workflow shares the fleet with many small ones, and aging bounds how long `priority` keeps
//! low tasks waiting.

use std::time::Duration;

use taskfleet_common::Millis;

use super::{fleet, workflow};
use crate::policy::{PolicyConfig, PolicyKind};
use crate::sim::{SimReport, SimWorkflow, Simulator};

fn run(workflows: Vec<SimWorkflow>, slots: u32, policy: PolicyKind, config: PolicyConfig) -> SimReport {
    Simulator::new(fleet(&[("w", slots, 1.0)]), workflows, config)
        .unwrap()
        .run(policy)
        .unwrap()
}

/// `n` independent tasks of `seconds` each.
fn batch(name: &str, n: usize, seconds: u64) -> String {
    let tasks: String = (0..n)
        .map(|idx| format!("  - {{id: t{idx}, handler: noop, estimate: {seconds}s}}\n"))
        .collect();
    format!("name: {name}\ntasks:\n{tasks}")
}

/// Long workflows submitted first, then short ones: FCFS makes the short ones wait.
fn mixed() -> Vec<SimWorkflow> {
    let mut workflows = Vec::new();
    for idx in 0..3 {
        workflows.push(workflow(&batch(&format!("long-{idx}"), 4, 60), 0));
    }
    for idx in 0..6 {
        workflows.push(workflow(&batch(&format!("short-{idx}"), 2, 5), 1));
    }
    workflows
}

#[test]
fn sjf_and_srpt_beat_fcfs_on_mean_flow_time_when_short_and_long_work_mix() {
    let config = PolicyConfig::default();
    let fcfs = run(mixed(), 2, PolicyKind::Fcfs, config);
    let sjf = run(mixed(), 2, PolicyKind::Sjf, config);
    let srpt = run(mixed(), 2, PolicyKind::Srpt, config);
    assert!(
        sjf.mean_flow_time < 0.7 * fcfs.mean_flow_time,
        "sjf {} vs fcfs {}",
        sjf.mean_flow_time,
        fcfs.mean_flow_time
    );
    assert!(
        srpt.mean_flow_time < 0.7 * fcfs.mean_flow_time,
        "srpt {} vs fcfs {}",
        srpt.mean_flow_time,
        fcfs.mean_flow_time
    );
    // The same work is done either way.
    assert_eq!(sjf.makespan, fcfs.makespan);
}

#[test]
fn rr_is_fairer_than_fcfs_to_small_workflows_next_to_a_huge_one() {
    let config = PolicyConfig {
        quantum: Duration::from_secs(10),
        ..PolicyConfig::default()
    };
    let workflows = || {
        let mut workflows = vec![workflow(&batch("huge", 60, 10), 0)];
        for idx in 0..5 {
            workflows.push(workflow(&batch(&format!("small-{idx}"), 2, 10), 5));
        }
        workflows
    };
    let fcfs = run(workflows(), 2, PolicyKind::Fcfs, config);
    let rr = run(workflows(), 2, PolicyKind::Rr, config);
    assert!(
        rr.fairness > fcfs.fairness + 0.2,
        "rr {} vs fcfs {}",
        rr.fairness,
        fcfs.fairness
    );
    let worst_small = |report: &SimReport| {
        report
            .workflows
            .iter()
            .filter(|workflow| workflow.name.starts_with("small"))
            .map(|workflow| workflow.flow_time)
            .fold(0.0, f64::max)
    };
    assert!(
        worst_small(&rr) < worst_small(&fcfs) / 3.0,
        "rr {} vs fcfs {}",
        worst_small(&rr),
        worst_small(&fcfs)
    );
}

#[test]
fn aging_bounds_how_long_priority_keeps_low_tasks_waiting() {
    // One low task, then a steady stream of high tasks arriving faster than they run.
    let mut workflows = vec![workflow(
        "name: low\ntasks:\n  - {id: background, handler: noop, estimate: 1s, priority: low}\n",
        0,
    )];
    for idx in 0..40 {
        workflows.push(workflow(
            &format!("name: urgent-{idx}\ntasks:\n  - {{id: u, handler: noop, estimate: 2s, priority: high}}\n"),
            idx,
        ));
    }
    let low_start = |report: &SimReport| {
        report
            .schedule
            .iter()
            .find(|task| task.workflow == "low")
            .map(|task| task.start)
            .unwrap()
    };
    // Without aging in reach (a very long period), the low task waits for the whole stream.
    let patient = PolicyConfig {
        aging: Duration::from_secs(3_600),
        ..PolicyConfig::default()
    };
    let starved = run(workflows.clone(), 1, PolicyKind::Priority, patient);
    assert!(
        low_start(&starved) >= 78.0,
        "starved low task started at {}",
        low_start(&starved)
    );
    // With 10 s aging it competes as high after 20 s, and runs soon after.
    let aging = PolicyConfig {
        aging: Duration::from_secs(10),
        ..PolicyConfig::default()
    };
    let aged = run(workflows, 1, PolicyKind::Priority, aging);
    assert!(
        low_start(&aged) <= 24.0,
        "aged low task started at {}",
        low_start(&aged)
    );
}

#[test]
fn topcuoglu_sample_dag_runs_to_the_papers_schedule_lengths() {
    let fleet = crate::sim::parse_fleet(include_str!("../../../../examples/topcuoglu-fleet.yaml")).unwrap();
    let dag = workflow(include_str!("../../../../examples/topcuoglu.yaml"), 0);
    let constructive = PolicyConfig {
        plan_search: std::time::Duration::ZERO,
        ..PolicyConfig::default()
    };
    let sim = Simulator::new(fleet.clone(), vec![dag.clone()], constructive).unwrap();
    assert_eq!(sim.run(PolicyKind::Heft).unwrap().makespan, 80.0);
    assert_eq!(sim.run(PolicyKind::Cpop).unwrap().makespan, 86.0);
    // The local search improves HEFT's plan (the optimum is 73) and cannot improve CPOP's.
    let sim = Simulator::new(fleet, vec![dag], PolicyConfig::default()).unwrap();
    assert_eq!(sim.run(PolicyKind::Heft).unwrap().makespan, 76.0);
    assert_eq!(sim.run(PolicyKind::Cpop).unwrap().makespan, 86.0);
}

/// A layered DAG: `layers` layers of `width` tasks, each with two or three parents in the
/// layer before, runtimes of 1-30 s and transfers of 0-4 s.
fn layered(seed: u64, layers: usize, width: usize) -> String {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = |bound: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % bound
    };
    let mut tasks = String::new();
    for layer in 0..layers {
        for k in 0..width {
            let mut deps = Vec::new();
            if layer > 0 {
                for _ in 0..2 + next(2) {
                    let parent = next(width as u64);
                    let dep = format!("{{task: t{}-{parent}, transfer: {}ms}}", layer - 1, next(4000));
                    if !deps
                        .iter()
                        .any(|d: &String| d.starts_with(&format!("{{task: t{}-{parent},", layer - 1)))
                    {
                        deps.push(dep);
                    }
                }
            }
            let estimate = 1000 + next(29_000);
            tasks.push_str(&format!(
                "  - {{id: t{layer}-{k}, handler: noop, estimate: {estimate}ms, deps: [{}]}}\n",
                deps.join(", ")
            ));
        }
    }
    format!("name: layered-{seed}\ntasks:\n{tasks}")
}

#[test]
fn heft_and_mct_beat_fcfs_on_makespan_with_heterogeneous_workers() {
    let workers = [
        ("fast", 1, 4.0),
        ("mid", 1, 2.0),
        ("mid2", 1, 2.0),
        ("slow", 1, 1.0),
        ("slow2", 1, 1.0),
    ];
    let mut totals = [0.0f64; 4];
    let policies = [PolicyKind::Fcfs, PolicyKind::Mct, PolicyKind::Heft, PolicyKind::Cpop];
    let mut heft_wins = 0;
    let n_seeds = 20;
    for seed in 0..n_seeds {
        let sim = Simulator::new(
            fleet(&workers),
            vec![workflow(&layered(seed, 6, 8), 0)],
            PolicyConfig::default(),
        )
        .unwrap();
        let makespans: Vec<f64> = policies.iter().map(|&p| sim.run(p).unwrap().makespan).collect();
        for (total, makespan) in totals.iter_mut().zip(&makespans) {
            *total += makespan;
        }
        heft_wins += usize::from(makespans[2] < makespans[0]);
    }
    let [fcfs, mct, heft, cpop] = totals.map(|total| total / n_seeds as f64);
    eprintln!("mean makespan: fcfs {fcfs:.1} s, mct {mct:.1} s, heft {heft:.1} s, cpop {cpop:.1} s");
    assert!(heft < 0.8 * fcfs, "heft {heft} vs fcfs {fcfs}");
    assert!(mct < 0.95 * fcfs, "mct {mct} vs fcfs {fcfs}");
    assert!(heft_wins >= 18, "heft beat fcfs on {heft_wins} of {n_seeds} DAGs");
}

#[test]
fn heft_runs_never_end_later_than_their_plans() {
    use crate::placement::{plan, Placer, PlanKind, WorkerModel};
    let workers = [("fast", 2, 3.0), ("mid", 1, 2.0), ("slow", 1, 1.0), ("slow2", 2, 1.0)];
    for seed in 0..20 {
        let dag = workflow(&layered(seed, 5, 7), 0);
        let fleet = fleet(&workers);
        let models: Vec<WorkerModel> = fleet
            .workers
            .iter()
            .map(|worker| WorkerModel::new(&worker.name, &["default"], worker.slots, worker.speed))
            .collect();
        let estimates: Vec<u64> = dag
            .spec
            .tasks
            .iter()
            .map(|task| task.estimate.unwrap().as_millis() as u64)
            .collect();
        for (kind, policy) in [(PlanKind::Heft, PolicyKind::Heft), (PlanKind::Cpop, PolicyKind::Cpop)] {
            let mut placer = Placer::with_workers(None, &models);
            let planned = plan(
                &mut placer,
                Millis(0),
                &dag.spec,
                &estimates,
                &vec![false; estimates.len()],
                kind,
            );
            let sim = Simulator::new(fleet.clone(), vec![dag.clone()], PolicyConfig::default()).unwrap();
            let report = sim.run(policy).unwrap();
            // Each worker takes its tasks in planned order as soon as they are ready: with
            // the declared runtimes, no task starts later than planned.
            assert!(
                report.makespan * 1000.0 <= planned.makespan.0 as f64,
                "seed {seed}, {policy}: ran {} s, planned {} ms",
                report.makespan,
                planned.makespan.0
            );
        }
    }
}

#[test]
fn local_search_shortens_heft_plans_towards_the_optimum() {
    let constructive = PolicyConfig {
        plan_search: std::time::Duration::ZERO,
        ..PolicyConfig::default()
    };
    let searched = PolicyConfig {
        plan_search: std::time::Duration::from_secs(1),
        ..PolicyConfig::default()
    };
    // Layered DAGs on heterogeneous workers.
    let workers = [
        ("fast", 1, 4.0),
        ("mid", 1, 2.0),
        ("mid2", 1, 2.0),
        ("slow", 1, 1.0),
        ("slow2", 1, 1.0),
    ];
    let (mut before, mut after) = (0.0, 0.0);
    for seed in 0..20 {
        let dag = vec![workflow(&layered(seed, 6, 8), 0)];
        before += run_with(&workers, dag.clone(), constructive, PolicyKind::Heft);
        after += run_with(&workers, dag, searched, PolicyKind::Heft);
    }
    eprintln!(
        "layered DAGs, mean makespan: heft {:.1} s, heft with search {:.1} s",
        before / 20.0,
        after / 20.0
    );
    assert!(after < before, "the search did not help: {after} vs {before}");
    // Small DAGs, against the exact solver's optimum.
    let small = [("a", 1, 2.0), ("b", 1, 1.0), ("c", 1, 1.0)];
    let (mut gap_before, mut gap_after) = (0.0, 0.0);
    for seed in 0..20 {
        let dag = vec![workflow(&layered(100 + seed, 3, 3), 0)];
        let plain = run_with(&small, dag.clone(), constructive, PolicyKind::Heft);
        let improved = run_with(&small, dag.clone(), searched, PolicyKind::Heft);
        let sim = Simulator::new(fleet(&small), dag, constructive).unwrap();
        let optimum = sim
            .optimal_makespan((plain.min(improved) * 1000.0) as u64, 20_000_000)
            .unwrap();
        assert!(optimum.proven);
        gap_before += plain / optimum.makespan - 1.0;
        gap_after += improved / optimum.makespan - 1.0;
    }
    eprintln!(
        "9-task DAGs, mean gap to the optimum: heft {:.1}%, heft with search {:.1}%",
        gap_before * 5.0,
        gap_after * 5.0
    );
    assert!(gap_after <= gap_before);
}

fn run_with(workers: &[(&str, u32, f64)], dags: Vec<SimWorkflow>, config: PolicyConfig, policy: PolicyKind) -> f64 {
    Simulator::new(fleet(workers), dags, config)
        .unwrap()
        .run(policy)
        .unwrap()
        .makespan
}
