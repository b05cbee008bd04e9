//! Small simulations whose every figure is computed by hand.

use super::{fleet, workflow};
use crate::packing::PackingKind;
use crate::policy::{PolicyConfig, PolicyKind};
use crate::sim::report::jain_index;
use crate::sim::{gantt, SimError, SimReport, SimWorkflow, Simulator, DEFAULT_SIGMA};

fn simulate(fleet_spec: crate::sim::FleetSpec, workflows: Vec<SimWorkflow>, policy: PolicyKind) -> SimReport {
    Simulator::new(fleet_spec, workflows, PolicyConfig::default())
        .unwrap()
        .run(policy)
        .unwrap()
}

/// (worker, start, end) of a task, by id.
fn placed(report: &SimReport, task: &str) -> (String, f64, f64) {
    let entry = report
        .schedule
        .iter()
        .find(|entry| entry.task == task)
        .unwrap_or_else(|| panic!("{task} not scheduled"));
    (entry.worker.clone(), entry.start, entry.end)
}

const CHAIN: &str = "name: chain\ntasks:\n  - {id: a, handler: noop, estimate: 1s}\n  - {id: b, handler: noop, estimate: 2s, deps: [a]}\n  - {id: c, handler: noop, estimate: 3s, deps: [b]}\n";

#[test]
fn a_chain_on_one_worker_sums_its_runtimes() {
    let report = simulate(fleet(&[("w", 1, 1.0)]), vec![workflow(CHAIN, 0)], PolicyKind::Fcfs);
    assert_eq!(report.makespan, 6.0);
    assert_eq!(placed(&report, "a"), ("w".to_string(), 0.0, 1.0));
    assert_eq!(placed(&report, "b"), ("w".to_string(), 1.0, 3.0));
    assert_eq!(placed(&report, "c"), ("w".to_string(), 3.0, 6.0));
    assert_eq!((report.utilization, report.fairness, report.mean_wait), (1.0, 1.0, 0.0));
    // Twice as fast, half the time.
    let report = simulate(fleet(&[("w", 1, 2.0)]), vec![workflow(CHAIN, 0)], PolicyKind::Fcfs);
    assert_eq!(report.makespan, 3.0);
}

#[test]
fn independent_tasks_go_to_the_worker_where_they_finish_first() {
    let yaml =
        "name: two\ntasks:\n  - {id: x, handler: noop, estimate: 4s}\n  - {id: y, handler: noop, estimate: 4s}\n";
    let report = simulate(
        fleet(&[("slow", 1, 1.0), ("fast", 1, 2.0)]),
        vec![workflow(yaml, 0)],
        PolicyKind::Fcfs,
    );
    assert_eq!(placed(&report, "x"), ("fast".to_string(), 0.0, 2.0));
    assert_eq!(placed(&report, "y"), ("slow".to_string(), 0.0, 4.0));
    assert_eq!(report.makespan, 4.0);
    assert_eq!(report.utilization, 6.0 / 8.0);
}

#[test]
fn estimate_by_worker_overrides_speed() {
    let yaml = "name: unrelated\ntasks:\n  - {id: x, handler: noop, estimate: 10s, estimate_by_worker: {slow: 1s}}\n";
    let report = simulate(
        fleet(&[("fast", 1, 2.0), ("slow", 1, 1.0)]),
        vec![workflow(yaml, 0)],
        PolicyKind::Fcfs,
    );
    assert_eq!(placed(&report, "x"), ("slow".to_string(), 0.0, 1.0));
}

#[test]
fn a_transfer_is_paid_only_between_workers() {
    let yaml = "name: fork\ntasks:\n  - {id: a, handler: noop, estimate: 1s}\n  - {id: b, handler: noop, estimate: 1s, deps: [{task: a, transfer: 5s}]}\n  - {id: c, handler: noop, estimate: 1s, deps: [{task: a, transfer: 5s}]}\n";
    let report = simulate(
        fleet(&[("w1", 1, 1.0), ("w2", 1, 1.0)]),
        vec![workflow(yaml, 0)],
        PolicyKind::Fcfs,
    );
    assert_eq!(placed(&report, "a"), ("w1".to_string(), 0.0, 1.0));
    // b runs where a ran, with no transfer; c finds w1 busy and waits for a's output on w2.
    assert_eq!(placed(&report, "b"), ("w1".to_string(), 1.0, 2.0));
    assert_eq!(placed(&report, "c"), ("w2".to_string(), 6.0, 7.0));
    assert_eq!(report.makespan, 7.0);
    // c was ready at 1s and started at 6s.
    assert_eq!(report.mean_wait, 5.0 / 3.0);
}

#[test]
fn offsets_flow_times_utilization_and_fairness() {
    let long = workflow("name: long\ntasks:\n  - {id: l, handler: noop, estimate: 10s}\n", 0);
    let short = workflow("name: short\ntasks:\n  - {id: s, handler: noop, estimate: 5s}\n", 2);
    let report = simulate(fleet(&[("w", 1, 1.0)]), vec![long, short], PolicyKind::Fcfs);
    assert_eq!(placed(&report, "l"), ("w".to_string(), 0.0, 10.0));
    assert_eq!(placed(&report, "s"), ("w".to_string(), 10.0, 15.0));
    let flows: Vec<(&str, f64, f64, f64)> = report
        .workflows
        .iter()
        .map(|w| (w.name.as_str(), w.submit, w.end, w.flow_time))
        .collect();
    assert_eq!(flows, [("long", 0.0, 10.0, 10.0), ("short", 2.0, 15.0, 13.0)]);
    assert_eq!((report.mean_flow_time, report.max_flow_time), (11.5, 13.0));
    assert_eq!(report.mean_wait, 4.0);
    assert_eq!(report.utilization, 1.0);
    // Slowdowns 10/10 and 13/5: (1 + 2.6)² / (2 · (1 + 2.6²)).
    assert_eq!(report.workflows[1].slowdown, 2.6);
    assert!((report.fairness - 12.96 / 15.52).abs() < 1e-12, "{}", report.fairness);
    assert_eq!(jain_index(&[3.0, 3.0, 3.0]), 1.0);
    assert_eq!(jain_index(&[1.0, 0.0, 0.0, 0.0]), 0.25);
}

#[test]
fn the_policy_decides_the_order() {
    let yaml = "name: mixed\ntasks:\n  - {id: first, handler: noop, estimate: 3s, priority: low}\n  - {id: second, handler: noop, estimate: 2s}\n  - {id: third, handler: noop, estimate: 1s, priority: high}\n";
    let order = |policy| {
        let report = simulate(fleet(&[("w", 1, 1.0)]), vec![workflow(yaml, 0)], policy);
        report
            .schedule
            .iter()
            .map(|entry| entry.task.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(order(PolicyKind::Fcfs), ["first", "second", "third"]);
    assert_eq!(order(PolicyKind::Priority), ["third", "second", "first"]);
    assert_eq!(order(PolicyKind::Sjf), ["third", "second", "first"]);
}

#[test]
fn duplicate_workflow_names_are_told_apart() {
    let yaml = "name: same\ntasks:\n  - {id: t, handler: noop}\n";
    let report = simulate(
        fleet(&[("w", 2, 1.0)]),
        vec![workflow(yaml, 0), workflow(yaml, 0)],
        PolicyKind::Fcfs,
    );
    let names: Vec<&str> = report.workflows.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["same", "same#2"]);
    // No estimate: the 1s prior.
    assert_eq!(report.makespan, 1.0);
}

#[test]
fn tasks_no_worker_can_run_are_refused_upfront() {
    let yaml = "name: picky\ntasks:\n  - {id: gpu-job, handler: noop, pool: gpu}\n  - {id: wide, handler: noop, resources: {slots: 4}}\n";
    let error = Simulator::new(
        fleet(&[("w", 2, 1.0)]),
        vec![workflow(yaml, 0)],
        PolicyConfig::default(),
    )
    .err()
    .unwrap();
    assert_eq!(
        error,
        SimError::Unrunnable(vec![
            "workflow `picky`, task `gpu-job`: pool `gpu` is served by no worker of the fleet".to_string(),
            "workflow `picky`, task `wide`: needs 4 slots but the workers serving pool `default` have at most 2"
                .to_string(),
        ])
    );
}

#[test]
fn stochastic_runs_spread_around_the_estimates_repeatably() {
    let yaml = "name: fan\ntasks:\n  - {id: a, handler: noop, estimate: 10s}\n  - {id: b, handler: noop, estimate: 10s, deps: [a]}\n  - {id: c, handler: noop, estimate: 10s, deps: [a]}\n";
    let sim = Simulator::new(
        fleet(&[("w", 2, 1.0)]),
        vec![workflow(yaml, 0)],
        PolicyConfig::default(),
    )
    .unwrap();
    let report = sim.run_stochastic(PolicyKind::Fcfs, 50, 7, DEFAULT_SIGMA).unwrap();
    assert_eq!(report.makespan, 20.0, "the report itself uses the estimates");
    let spread = report.stochastic.as_ref().unwrap();
    let makespan = spread.makespan;
    assert!(makespan.min <= makespan.p50 && makespan.p50 <= makespan.p90 && makespan.p90 <= makespan.max);
    assert!(makespan.min < 20.0 && makespan.max > 20.0, "{makespan:?}");
    // The max of two log-normal branches after a log-normal head: median above 20s.
    assert!(makespan.p50 > 18.0 && makespan.p50 < 30.0, "{makespan:?}");
    let again = sim.run_stochastic(PolicyKind::Fcfs, 50, 7, DEFAULT_SIGMA).unwrap();
    assert_eq!(again.stochastic.unwrap().makespan, makespan);
}

#[test]
fn the_gantt_chart_is_svg_with_a_row_per_worker_and_labels() {
    let report = simulate(
        fleet(&[("w1", 2, 1.0), ("w<2>", 1, 1.0)]),
        vec![workflow(CHAIN, 0)],
        PolicyKind::Fcfs,
    );
    let svg = gantt::render(&report, &fleet(&[("w1", 2, 1.0), ("w<2>", 1, 1.0)]));
    assert!(svg.starts_with("<svg"));
    assert!(svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains(">w&lt;2&gt;</text>"), "names are escaped");
    assert!(svg.contains("<title>chain / c on w1: 3.000s – 6.000s</title>"));
    assert!(svg.contains(">c</text>"), "a 3s bar has room for its label");
    assert_eq!(
        svg.matches("<rect").count(),
        1 + 2 + 3 + 1,
        "background, rows, bars, legend"
    );
}

#[test]
fn a_worker_runs_no_more_than_its_cpus_and_memory_hold() {
    let fleet_spec = crate::sim::parse_fleet(
        "workers:\n  - {name: w, slots: 4, cpu: 2, memory: 8Gi}\n  - {name: roomy, pools: [big], slots: 1, cpu: 16, memory: 64Gi}\n",
    )
    .unwrap();
    // Four tasks of 1 s asking for one CPU and 1 GiB each: four slots, but two CPUs, so two
    // at a time.
    let task =
        |id: &str| format!("  - {{id: {id}, handler: noop, estimate: 1s, resources: {{cpu: 1, memory: 1Gi}}}}\n");
    let yaml = format!(
        "name: cpus\ntasks:\n{}{}{}{}",
        task("a"),
        task("b"),
        task("c"),
        task("d")
    );
    let report = simulate(fleet_spec.clone(), vec![workflow(&yaml, 0)], PolicyKind::Fcfs);
    assert_eq!(report.makespan, 2.0);
    // Tasks that ask for nothing are best effort: they count only their slots.
    let yaml = "name: slots\ntasks:\n  - {id: a, handler: noop, estimate: 1s}\n  - {id: b, handler: noop, estimate: 1s}\n  - {id: c, handler: noop, estimate: 1s}\n  - {id: d, handler: noop, estimate: 1s}\n";
    let report = simulate(fleet_spec.clone(), vec![workflow(yaml, 0)], PolicyKind::Fcfs);
    assert_eq!(report.makespan, 1.0);
    // Memory counts the same way: two 3 GiB tasks at a time in 8 GiB, a 6 GiB one alone.
    let yaml = "name: memory\ntasks:\n  - {id: a, handler: noop, estimate: 1s, resources: {cpu: 0.5, memory: 3Gi}}\n  - {id: b, handler: noop, estimate: 1s, resources: {cpu: 0.5, memory: 3Gi}}\n  - {id: c, handler: noop, estimate: 1s, resources: {cpu: 0.5, memory: 6Gi}}\n";
    let report = simulate(fleet_spec.clone(), vec![workflow(yaml, 0)], PolicyKind::Fcfs);
    assert_eq!(report.makespan, 2.0);
    assert_eq!(placed(&report, "c").1, 1.0, "c waits for the memory of a and b");
    // A task larger than every worker of its pool is refused up front.
    let yaml = "name: huge\ntasks:\n  - {id: huge, handler: noop, resources: {cpu: 4}}\n  - {id: fine, handler: noop, pool: big, resources: {cpu: 4}}\n";
    let error = Simulator::new(fleet_spec, vec![workflow(yaml, 0)], PolicyConfig::default())
        .err()
        .unwrap();
    assert_eq!(
        error,
        SimError::Unrunnable(vec![
            "workflow `huge`, task `huge`: asks for 4 CPUs, more than any worker serving pool `default` has"
                .to_string()
        ])
    );
}

#[test]
fn gpus_custom_resources_and_labels_of_the_fleet_file_place_tasks_as_the_scheduler_does() {
    let fleet_spec = crate::sim::parse_fleet(
        "workers:\n  - {name: cpu, slots: 4}\n  - {name: gpu, slots: 4, gpu: 1, resources: {licenses: 1}, labels: {zone: b}}\n",
    )
    .unwrap();
    let yaml = "name: g\ntasks:\n  - {id: train1, handler: noop, estimate: 1s, resources: {gpu: 1}}\n  - {id: train2, handler: noop, estimate: 1s, resources: {gpu: 1}}\n  - {id: zoned, handler: noop, estimate: 1s, selector: {zone: b}}\n  - {id: licensed, handler: noop, estimate: 1s, resources: {licenses: 1}}\n";
    let report = simulate(fleet_spec.clone(), vec![workflow(yaml, 0)], PolicyKind::Fcfs);
    // One GPU: the two training tasks run one after the other, both on `gpu`.
    assert_eq!(placed(&report, "train1"), ("gpu".to_string(), 0.0, 1.0));
    assert_eq!(placed(&report, "train2"), ("gpu".to_string(), 1.0, 2.0));
    assert_eq!(placed(&report, "zoned").0, "gpu");
    assert_eq!(placed(&report, "licensed"), ("gpu".to_string(), 0.0, 1.0));
    // A selector no worker meets is refused up front.
    let yaml = "name: arm\ntasks:\n  - {id: a, handler: noop, selector: {arch: arm64}}\n";
    let error = Simulator::new(fleet_spec, vec![workflow(yaml, 0)], PolicyConfig::default())
        .err()
        .unwrap();
    assert_eq!(
        error,
        SimError::Unrunnable(vec![
            "workflow `arm`, task `a`: asks for 1 CPUs with labels arch=arm64, more than any worker serving pool `default` has"
                .to_string()
        ])
    );
}

#[test]
fn a_simulated_reservation_keeps_capacity_for_its_owner() {
    let fleet_spec = crate::sim::parse_fleet("workers:\n  - {name: gpu, slots: 4, gpu: 2}\n").unwrap();
    let low = "name: low\ntasks:\n  - {id: l1, handler: noop, estimate: 4s, priority: low, resources: {gpu: 1}}\n  - {id: l2, handler: noop, estimate: 8s, priority: low, resources: {gpu: 1}}\n  - {id: l3, handler: noop, estimate: 4s, priority: low, resources: {gpu: 1}}\n";
    let high = "name: high\ntasks:\n  - {id: h, handler: noop, estimate: 1s, priority: high, resources: {gpu: 1}}\n";
    let workflows = vec![workflow(low, 0), workflow(high, 1)];
    let simulator = Simulator::new(fleet_spec, workflows, PolicyConfig::default()).unwrap();
    // Without a reservation, the GPU l1 frees at 4 s goes to l3, first come; h waits for l2.
    let report = simulator.run(PolicyKind::Fcfs).unwrap();
    assert_eq!((placed(&report, "l3").1, placed(&report, "h").1), (4.0, 8.0));
    // With one GPU kept for `high`, l2 borrows it while high has nothing waiting; once h
    // waits, the next GPU to come back is its own.
    let reserved = simulator.with_packing(PackingKind::BestFit, vec!["high:gpu=1".parse().unwrap()]);
    let report = reserved.run(PolicyKind::Fcfs).unwrap();
    assert_eq!(placed(&report, "l2").1, 0.0);
    assert_eq!((placed(&report, "h").1, placed(&report, "l3").1), (4.0, 5.0));
}

const BELIEF: &str =
    "name: belief\ntasks:\n  - {id: short, handler: noop, estimate: 1s}\n  - {id: long, handler: noop, estimate: 5s}\n";

#[test]
fn tasks_take_their_actual_runtimes_while_the_policy_sees_the_estimates() {
    let simulator = |speed| {
        Simulator::new(
            fleet(&[("w", 1, speed)]),
            vec![workflow(BELIEF, 0)],
            PolicyConfig::default(),
        )
        .unwrap()
    };
    // SJF believes `short` is short; it is not.
    let run = crate::sim::parse_actual(r#"{"short": 10, "long": 1}"#).unwrap();
    let report = simulator(1.0)
        .run_actual(PolicyKind::Sjf, std::slice::from_ref(&run))
        .unwrap();
    assert_eq!(placed(&report, "short"), ("w".to_string(), 0.0, 10.0));
    assert_eq!(placed(&report, "long"), ("w".to_string(), 10.0, 11.0));
    assert_eq!(report.makespan, 11.0);
    // An actual runtime is on a speed-1 worker: twice as fast, half the time.
    let fast = simulator(2.0)
        .run_actual(PolicyKind::Sjf, std::slice::from_ref(&run))
        .unwrap();
    assert_eq!(fast.makespan, 5.5);
    // Without it, the estimates.
    assert_eq!(simulator(1.0).run(PolicyKind::Sjf).unwrap().makespan, 6.0);
}

#[test]
fn actual_runtimes_must_name_every_task_and_only_them() {
    let simulator = Simulator::new(
        fleet(&[("w", 1, 1.0)]),
        vec![workflow(BELIEF, 0)],
        PolicyConfig::default(),
    )
    .unwrap();
    let run = crate::sim::parse_actual(r#"{"short": 1, "typo": 2}"#).unwrap();
    let error = simulator.run_actual(PolicyKind::Fcfs, &[run]).unwrap_err();
    assert_eq!(
        error.to_string(),
        "the actual runtimes do not match the workflows:\n  - workflow `belief`: no runtime for task `long`\n  - workflow `belief` has no task `typo`"
    );
    let error = simulator.run_actual(PolicyKind::Fcfs, &[]).unwrap_err();
    assert!(error.to_string().contains("0 runs for 1 workflows"), "{error}");
    let features =
        crate::sim::parse_actual(r#"{"runtimes": {"short": 1, "long": 1}, "features": {"nope": {"x": 1}}}"#).unwrap();
    let spec = &workflow(BELIEF, 0).spec;
    assert!(features
        .apply_features(spec)
        .unwrap_err()
        .to_string()
        .contains("features of `nope`"));
    let measured = crate::sim::parse_actual(r#"{"runtimes": {}, "features": {"long": {"bytes": 5}}}"#).unwrap();
    assert_eq!(measured.apply_features(spec).unwrap().tasks[1].features["bytes"], 5.0);
}

#[test]
fn earlier_runs_teach_the_predictor_what_the_estimates_get_wrong() {
    let yaml = "name: kinds\ntasks:\n  - {id: short, kind: index, handler: noop, estimate: 1s}\n  - {id: long, kind: lookup, handler: noop, estimate: 5s}\n";
    let run = crate::sim::parse_actual(r#"{"short": 10, "long": 1}"#).unwrap();
    let simulator = || {
        Simulator::new(
            fleet(&[("w", 1, 1.0)]),
            vec![workflow(yaml, 0)],
            PolicyConfig::default(),
        )
        .unwrap()
    };
    let order = |report: &SimReport| {
        report
            .schedule
            .iter()
            .map(|entry| entry.task.clone())
            .collect::<Vec<_>>()
    };
    let blind = simulator()
        .run_actual(PolicyKind::Sjf, std::slice::from_ref(&run))
        .unwrap();
    assert_eq!(order(&blind), ["short", "long"]);
    // Predictive with nothing learned yet starts from the same estimates.
    let fresh = crate::predict::Predictor::new(std::time::Duration::from_secs(1));
    let cold = simulator()
        .predictive(fresh.clone())
        .run_actual(PolicyKind::Sjf, std::slice::from_ref(&run))
        .unwrap();
    assert_eq!(order(&cold), ["short", "long"]);

    let mut taught = fresh;
    let other = crate::sim::parse_actual(r#"{"gone": 3}"#).unwrap();
    let mut history = vec![run.clone(); 6];
    history.push(other);
    assert_eq!(
        crate::sim::train(&mut taught, &workflow(yaml, 0).spec, &history),
        1,
        "one runtime named no task"
    );
    let report = simulator()
        .predictive(taught)
        .run_actual(PolicyKind::Sjf, std::slice::from_ref(&run))
        .unwrap();
    assert_eq!(order(&report), ["long", "short"], "the history says which is short");
    assert_eq!(report.makespan, 11.0);
    assert_eq!(
        placed(&report, "long"),
        ("w".to_string(), 0.0, 1.0),
        "the short one is done at once"
    );
}

#[test]
fn a_replay_is_scored_against_the_oracle_fcfs_and_its_beliefs() {
    let simulator = Simulator::new(
        fleet(&[("w", 1, 1.0)]),
        vec![workflow(BELIEF, 0)],
        PolicyConfig::default(),
    )
    .unwrap();
    let run = crate::sim::parse_actual(r#"{"short": 10, "long": 1}"#).unwrap();
    let report = simulator
        .run_actual(PolicyKind::Sjf, std::slice::from_ref(&run))
        .unwrap();
    let scores = report.scores.clone().unwrap();
    // One worker: whatever the order, 11 s; the oracle runs `long` first.
    assert_eq!(
        (report.makespan, scores.oracle_makespan, scores.fcfs_makespan),
        (11.0, 11.0, 11.0)
    );
    // Believed 1 s for 10 s (0.9 off) and 5 s for 1 s (4 off).
    assert_eq!(
        (scores.error_p50, scores.error_p90, scores.within_p10_p90),
        (0.9, 4.0, None)
    );

    // Two workers, one twice as fast: SJF sends the task it believes short to the fast one.
    let two = Simulator::new(
        fleet(&[("fast", 1, 2.0), ("slow", 1, 1.0)]),
        vec![workflow(BELIEF, 0)],
        PolicyConfig::default(),
    )
    .unwrap();
    let report = two.run_actual(PolicyKind::Sjf, std::slice::from_ref(&run)).unwrap();
    assert_eq!(placed(&report, "short"), ("fast".to_string(), 0.0, 5.0));
    let scores = report.scores.unwrap();
    // Knowing better, SJF sends `long` (1 s) to the fast worker first and `short` (10 s)
    // to the slow one: 10 s. FCFS goes in file order, as the believing SJF did: 5 s.
    assert_eq!(
        (report.makespan, scores.oracle_makespan, scores.fcfs_makespan),
        (5.0, 10.0, 5.0)
    );

    // With a predictor trained on earlier runs (which varied by ±25%), the beliefs are the
    // predictions, and the actual runtimes fall within their p10–p90.
    let yaml = "name: kinds\ntasks:\n  - {id: short, kind: index, handler: noop}\n  - {id: long, kind: lookup, handler: noop}\n";
    let history: Vec<_> = [0.8, 0.9, 1.0, 1.1, 1.25]
        .iter()
        .cycle()
        .take(20)
        .map(|f| crate::sim::parse_actual(&format!(r#"{{"short": {}, "long": {f}}}"#, 10.0 * f)).unwrap())
        .collect();
    let mut predictor = crate::predict::Predictor::new(std::time::Duration::from_secs(1));
    crate::sim::train(&mut predictor, &workflow(yaml, 0).spec, &history);
    let taught = Simulator::new(
        fleet(&[("w", 1, 1.0)]),
        vec![workflow(yaml, 0)],
        PolicyConfig::default(),
    )
    .unwrap()
    .predictive(predictor);
    let scores = taught
        .run_actual(PolicyKind::Sjf, std::slice::from_ref(&run))
        .unwrap()
        .scores
        .unwrap();
    assert!(scores.error_p90 < 0.2, "{scores:?}");
    assert_eq!(scores.within_p10_p90, Some(1.0), "{scores:?}");
}
