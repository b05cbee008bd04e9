//! ETA tests: exact cases, and coverage of the p90 against simulated reality.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use taskfleet_common::workflow::{parse_workflow, ValidateOptions};

use super::*;
use crate::predict::signature;

fn spec(yaml: &str) -> WorkflowSpec {
    parse_workflow(yaml, &ValidateOptions::default()).unwrap()
}

const DIAMOND: &str = "name: d\ntasks:\n  - {id: a, run: [prep]}\n  - {id: b, deps: [a], run: [slow]}\n  - {id: c, deps: [a], run: [fast]}\n  - {id: d, deps: [b, c], run: [join]}\n";

#[test]
fn list_scheduling_follows_dependencies_and_slots() {
    let spec = spec(DIAMOND);
    let waiting = vec![TaskProgress::Waiting; 4];
    let runtime = [1.0, 5.0, 2.0, 1.0];
    assert_eq!(
        list_schedule(&spec, &waiting, &runtime, &[(1.0, 2)]),
        (7.0, vec![3, 1, 0])
    );
    // One slot: everything in a row.
    assert_eq!(list_schedule(&spec, &waiting, &runtime, &[(1.0, 1)]).0, 9.0);
    // `a` is done and `b` has 1 s left: only b's rest, then d.
    let progress = [
        TaskProgress::Done,
        TaskProgress::Running {
            elapsed: Duration::from_secs(4),
            speed: 1.0,
        },
        TaskProgress::Waiting,
        TaskProgress::Waiting,
    ];
    assert_eq!(
        list_schedule(&spec, &progress, &[0.0, 1.0, 2.0, 1.0], &[(1.0, 2)]).0,
        3.0
    );
}

#[test]
fn faster_slots_finish_sooner_and_take_the_work_that_ends_first_there() {
    let spec = spec("name: three\ntasks:\n  - {id: a, run: [x]}\n  - {id: b, run: [x]}\n  - {id: c, run: [x]}\n");
    let waiting = vec![TaskProgress::Waiting; 3];
    let runtime = [4.0, 4.0, 4.0];
    // One slot at speed 2 and one at speed 1: a and b on the fast one (0-2, 2-4), c on the
    // slow one (0-4).
    assert_eq!(list_schedule(&spec, &waiting, &runtime, &[(2.0, 1), (1.0, 1)]).0, 4.0);
    assert_eq!(list_schedule(&spec, &waiting, &runtime, &[(1.0, 2)]).0, 8.0);
    assert_eq!(
        slots_by_speed([(1.0, 2), (2.0, 1), (1.0, 3), (f64::NAN, 1), (3.0, 0)]),
        [(2.0, 1), (1.0, 6)]
    );
    assert_eq!(slots_by_speed([]), [(1.0, 1)]);
}

#[test]
fn the_slow_branch_is_critical() {
    let spec = spec(DIAMOND);
    let mut predictor = Predictor::new(Duration::from_secs(1));
    for (idx, seconds) in [(0, 1.0), (1, 10.0), (2, 1.0), (3, 1.0)] {
        for _ in 0..100 {
            predictor.observe(&signature(&spec.tasks[idx]), Duration::from_secs_f64(seconds));
        }
    }
    let mut rng = StdRng::seed_from_u64(1);
    let eta = monte_carlo_eta(
        &spec,
        &[TaskProgress::Waiting; 4],
        &predictor,
        &[(1.0, 2)],
        300,
        &mut rng,
    );
    assert!(eta.criticality[1] > 0.95, "{:?}", eta.criticality);
    assert!(eta.criticality[2] < 0.05, "{:?}", eta.criticality);
    assert!(
        eta.p50 > Duration::from_secs(11) && eta.p50 < Duration::from_secs(14),
        "{:?}",
        eta.p50
    );
    assert!(eta.p90 >= eta.p50);
}

#[test]
fn p90_covers_the_real_completion_about_nine_times_in_ten() {
    // A fan-out of 12 tasks of unequal, noisy runtimes feeding one join, on 4 slots.
    let mut yaml = String::from("name: fan\ntasks:\n  - {id: start, run: [start]}\n");
    for idx in 0..12 {
        yaml.push_str(&format!("  - {{id: w{idx}, deps: [start], run: [work{}]}}\n", idx % 3));
    }
    yaml.push_str("  - {id: join, deps: [w0, w1, w2, w3, w4, w5, w6, w7, w8, w9, w10, w11], run: [join]}\n");
    let spec = spec(&yaml);
    // The truth: each signature log-normal around its own median.
    let medians = [
        ("start", 2.0),
        ("work0", 5.0),
        ("work1", 10.0),
        ("work2", 20.0),
        ("join", 3.0),
    ];
    let truth = |task: &taskfleet_common::TaskSpec| {
        let program = signature(task);
        let median = medians
            .iter()
            .find(|(name, _)| program.contains(&format!("|{name}|")))
            .unwrap()
            .1;
        let mut model = Predictor::new(Duration::from_secs(1));
        for factor in [0.7, 1.0, 1.0 / 0.7] {
            model.observe(&program, Duration::from_secs_f64(median * factor));
        }
        model
    };
    let mut rng = StdRng::seed_from_u64(5);
    // Learn from history drawn from the truth.
    let mut predictor = Predictor::new(Duration::from_secs(1));
    for task in &spec.tasks {
        let real = truth(task).predict(task);
        for _ in 0..200 {
            predictor.observe(&signature(task), real.sample(&mut rng));
        }
    }
    let waiting = vec![TaskProgress::Waiting; spec.tasks.len()];
    let eta = monte_carlo_eta(&spec, &waiting, &predictor, &[(1.0, 4)], 1000, &mut rng);
    // Reality: runs drawn from the truth.
    let n_trials = 1000;
    let mut n_covered = 0;
    for _ in 0..n_trials {
        let runtime: Vec<f64> = spec
            .tasks
            .iter()
            .map(|task| truth(task).predict(task).sample(&mut rng).as_secs_f64())
            .collect();
        if list_schedule(&spec, &waiting, &runtime, &[(1.0, 4)]).0 <= eta.p90.as_secs_f64() {
            n_covered += 1;
        }
    }
    let coverage = f64::from(n_covered) / f64::from(n_trials);
    assert!((0.85..=0.95).contains(&coverage), "p90 covered {coverage} of the runs");
}

#[test]
fn running_tasks_hold_their_slots() {
    // Two independent tasks on one slot: `a` runs with 3 s left, `b` waits behind it.
    let spec = spec("name: r\ntasks:\n  - {id: a, run: [a]}\n  - {id: b, run: [b]}\n");
    let progress = [
        TaskProgress::Running {
            elapsed: Duration::from_secs(1),
            speed: 1.0,
        },
        TaskProgress::Waiting,
    ];
    assert_eq!(list_schedule(&spec, &progress, &[3.0, 2.0], &[(1.0, 1)]).0, 5.0);
    assert_eq!(list_schedule(&spec, &progress, &[3.0, 2.0], &[(1.0, 2)]).0, 3.0);
}
