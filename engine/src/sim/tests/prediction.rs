//! Measuring prediction: a synthetic workflow run five times with seeded runtime noise
//! (log-normal per task kind, σ 0.2–0.5, one kind driven by its input size), trained on runs
//! 1–4 and replayed on run 5.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::fleet;
use crate::policy::{PolicyConfig, PolicyKind};
use crate::predict::Predictor;
use crate::sim::actual::ActualRun;
use crate::sim::{train, SimWorkflow, Simulator};

/// The kinds: (name, count, σ, median seconds when not driven by input).
const KINDS: [(&str, usize, f64, f64); 4] = [
    ("align", 24, 0.3, 0.0),
    ("sort", 8, 0.2, 12.0),
    ("index", 4, 0.5, 6.0),
    ("report", 1, 0.4, 3.0),
];

/// The workflow: 24 `align` tasks of different inputs, 8 `sort` tasks of three aligns each,
/// 4 `index` tasks of two sorts each and a `report` of all; every task declares 5 s.
fn workflow_yaml() -> String {
    let mut tasks = String::new();
    for i in 0..24 {
        tasks += &format!("  - {{id: align{i}, kind: align, handler: noop, estimate: 5s}}\n");
    }
    for i in 0..8 {
        let deps: Vec<String> = (0..3).map(|j| format!("align{}", i * 3 + j)).collect();
        tasks += &format!(
            "  - {{id: sort{i}, kind: sort, handler: noop, estimate: 5s, deps: [{}]}}\n",
            deps.join(", ")
        );
    }
    for i in 0..4 {
        tasks += &format!(
            "  - {{id: index{i}, kind: index, handler: noop, estimate: 5s, deps: [sort{}, sort{}]}}\n",
            2 * i,
            2 * i + 1
        );
    }
    tasks += "  - {id: report, kind: report, handler: noop, estimate: 5s, deps: [index0, index1, index2, index3]}\n";
    format!("name: pipeline\ntasks:\n{tasks}")
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = 1.0 - rng.gen::<f64>();
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// One run: each align task's input (50–2,000 MB, new each run) and every task's runtime.
fn run(seed: u64, number: u64) -> ActualRun {
    let mut rng = StdRng::seed_from_u64(seed * 1_000 + number);
    let mut run = ActualRun::default();
    for (kind, count, sigma, median) in KINDS {
        for i in 0..count {
            let id = if kind == "report" {
                "report".to_string()
            } else {
                format!("{kind}{i}")
            };
            let median = if kind == "align" {
                let mb: f64 = rng.gen_range(50.0..2_000.0);
                run.features
                    .insert(id.clone(), BTreeMap::from([("mb".to_string(), mb)]));
                2.0 * (mb / 100.0).powf(0.8)
            } else {
                median
            };
            let seconds = median * (sigma * normal(&mut rng)).exp();
            run.runtimes.insert(id, Duration::from_secs_f64(seconds));
        }
    }
    run
}

struct Replay {
    makespan: f64,
    oracle: f64,
    eta_checks: usize,
    p50_hits: f64,
    p90_hits: f64,
}

/// Replays run 5 under `policy`, predictive, after training on runs 1–4 (`history`) or none.
fn replay(seed: u64, policy: PolicyKind, history: bool) -> Replay {
    replay_as(seed, policy, history, crate::policy::DEFAULT_PLAN_SEARCH, false)
}

fn replay_as(seed: u64, policy: PolicyKind, history: bool, plan_search: Duration, static_plans: bool) -> Replay {
    let spec = taskfleet_common::workflow::parse_workflow(&workflow_yaml(), &Default::default()).unwrap();
    let fifth = run(seed, 5);
    let mut predictor = Predictor::new(Duration::from_secs(1));
    if history {
        let earlier: Vec<ActualRun> = (1..=4).map(|number| run(seed, number)).collect();
        assert_eq!(train(&mut predictor, &spec, &earlier), 0);
    }
    let spec = fifth.apply_features(&spec).unwrap();
    let workflow = SimWorkflow {
        spec: Arc::new(spec),
        submit: Duration::ZERO,
    };
    let fleet = fleet(&[("fast", 1, 3.0), ("mid", 1, 1.0), ("slow", 1, 0.3), ("slow2", 1, 0.3)]);
    let config = PolicyConfig {
        plan_search,
        ..PolicyConfig::default()
    };
    let sim = Simulator::new(fleet, vec![workflow], config)
        .unwrap()
        .predictive(predictor)
        .with_static_plans(static_plans);
    let report = sim.run_actual(policy, &[fifth]).unwrap();
    let scores = report.scores.expect("a replay is scored");
    let checks = scores.eta.checkpoints;
    Replay {
        makespan: report.makespan,
        oracle: scores.oracle_makespan,
        eta_checks: checks,
        p50_hits: scores.eta.p50_coverage * checks as f64,
        p90_hits: scores.eta.p90_coverage * checks as f64,
    }
}

#[test]
fn history_brings_predictive_policies_within_10_percent_of_the_oracle() {
    for policy in [PolicyKind::Heft, PolicyKind::Mct] {
        let (mut taught, mut untaught, mut oracle) = (0.0, 0.0, 0.0);
        for seed in 0..5 {
            let with = replay(seed, policy, true);
            let without = replay(seed, policy, false);
            taught += with.makespan;
            untaught += without.makespan;
            oracle += with.oracle;
        }
        eprintln!("{policy}: trained {taught:.1} s, untrained {untaught:.1} s, oracle {oracle:.1} s (5 seeds)");
        assert!(
            taught <= 1.10 * oracle,
            "{policy}: trained {taught:.1} s vs oracle {oracle:.1} s"
        );
        assert!(
            taught < untaught,
            "{policy}: trained {taught:.1} s vs untrained {untaught:.1} s"
        );
    }
}

#[test]
fn the_eta_p90_covers_the_actual_end_four_times_in_five_or_more() {
    let (mut checks, mut p50, mut p90) = (0usize, 0.0, 0.0);
    for seed in 0..20 {
        let replay = replay(seed, PolicyKind::Heft, true);
        checks += replay.eta_checks;
        p50 += replay.p50_hits;
        p90 += replay.p90_hits;
    }
    let (p50, p90) = (p50 / checks as f64, p90 / checks as f64);
    eprintln!("ETA over 20 seeds, {checks} checkpoints: p50 covers {p50:.2}, p90 covers {p90:.2}");
    assert!(checks >= 20 * 15, "{checks} checkpoints");
    assert!(
        (0.80..=0.97).contains(&p90),
        "the p90 covered the actual end {p90:.2} of the time"
    );
    assert!(
        (0.3..=0.8).contains(&p50),
        "the p50 covered the actual end {p50:.2} of the time"
    );
}

/// Planned on predictions that are wrong, a plan that binds each task to a worker suffers;
/// ranking by the plan and placing at dispatch (the default in predictive mode) adapts.
#[test]
fn dynamic_plans_beat_static_ones_on_predicted_runtimes() {
    for policy in [PolicyKind::Heft, PolicyKind::Cpop] {
        let (mut dynamic, mut fixed) = (0.0, 0.0);
        for seed in 0..10 {
            dynamic += replay_as(seed, policy, true, crate::policy::DEFAULT_PLAN_SEARCH, false).makespan;
            fixed += replay_as(seed, policy, true, crate::policy::DEFAULT_PLAN_SEARCH, true).makespan;
        }
        eprintln!("{policy}: placed at dispatch {dynamic:.1} s, following the plan {fixed:.1} s (10 seeds)");
        assert!(
            dynamic < fixed,
            "{policy}: dynamic {dynamic:.1} s vs static {fixed:.1} s"
        );
    }
}
