//! Mapping independent tasks on unrelated machines: the batch policies against the
//! literature's definitions, and every policy on ETC instances of the twelve classes of
//! Braun et al. (2001).

use std::time::Duration;

use crate::policy::{PolicyConfig, PolicyKind};
use crate::sim::etc::{self, EtcClass};
use crate::sim::{SimReport, Simulator};

fn simulator(matrix: &[Vec<u64>], plan_search: Duration) -> Simulator {
    let workflow = etc::workflow("etc", matrix).expect("a valid workflow");
    let config = PolicyConfig {
        plan_search,
        ..PolicyConfig::default()
    };
    Simulator::new(etc::fleet(matrix[0].len()), vec![workflow], config).expect("runnable")
}

/// The machine each task ran on (`m3` → 3), by task index.
fn machines(report: &SimReport) -> Vec<usize> {
    let mut machines = vec![usize::MAX; report.schedule.len()];
    for entry in &report.schedule {
        machines[entry.task_idx as usize] = entry.worker[1..].parse().expect("m<j>");
    }
    machines
}

fn makespan_ms(report: &SimReport) -> u64 {
    (report.makespan * 1000.0).round() as u64
}

#[test]
fn min_min_and_sufferage_follow_a_hand_worked_example() {
    // Three tasks on two machines:      m0  m1
    //                               t0:  4   6
    //                               t1:  3   5
    //                               t2:  8   2
    // Min-Min: best completions t0 4 (m0), t1 3 (m0), t2 2 (m1): t2 goes to m1 (ends 2).
    // Then t0 4 (m0) or 8 (m1): 4; t1 3 (m0): t1 goes to m0 (ends 3). Then t0: 7 (m0) or 8
    // (m1): m0, makespan 7.
    // Sufferage: gaps t0 6-4=2, t1 5-3=2, t2 8-2=6: t2 to m1. Then t0 4 vs 8: 4, t1 3 vs 7: 4:
    // t0 (lower) to m0. Then t1 7 (m0) vs 7 (m1): m0 (lower), makespan 7.
    let matrix = vec![vec![4_000, 6_000], vec![3_000, 5_000], vec![8_000, 2_000]];
    let sim = simulator(&matrix, Duration::ZERO);
    let min_min = sim.run(PolicyKind::MinMin).expect("simulated");
    assert_eq!(makespan_ms(&min_min), 7_000);
    assert_eq!(machines(&min_min), vec![0, 0, 1]);
    let sufferage = sim.run(PolicyKind::Sufferage).expect("simulated");
    assert_eq!(makespan_ms(&sufferage), 7_000);
    assert_eq!(machines(&sufferage), vec![0, 0, 1]);
    assert_eq!(etc::reference_min_min(&matrix), (7_000, vec![0, 0, 1]));
    assert_eq!(etc::reference_sufferage(&matrix), (7_000, vec![0, 0, 1]));
}

#[test]
fn batch_policies_map_as_the_literature_defines_them() {
    for (at, class) in EtcClass::all().into_iter().enumerate() {
        for seed in 0..3 {
            let matrix = etc::matrix(class, 40, 5, seed * 31 + at as u64);
            let sim = simulator(&matrix, Duration::ZERO);
            for (policy, reference) in [
                (PolicyKind::MinMin, etc::reference_min_min(&matrix)),
                (PolicyKind::MaxMin, etc::reference_max_min(&matrix)),
                (PolicyKind::Sufferage, etc::reference_sufferage(&matrix)),
            ] {
                let report = sim.run(policy).expect("simulated");
                assert_eq!(
                    (makespan_ms(&report), machines(&report)),
                    reference,
                    "{policy} on {class} seed {seed}"
                );
            }
        }
    }
}

#[test]
fn etc_classes_follow_their_consistency() {
    for class in EtcClass::all() {
        let matrix = etc::matrix(class, 50, 8, 7);
        let sorted = |row: &[u64]| row.windows(2).all(|pair| pair[0] <= pair[1]);
        let even: Vec<Vec<u64>> = matrix
            .iter()
            .map(|row| row.iter().step_by(2).copied().collect())
            .collect();
        match class.consistency {
            etc::Consistency::Consistent => assert!(matrix.iter().all(|row| sorted(row)), "{class}"),
            etc::Consistency::SemiConsistent => {
                assert!(even.iter().all(|row| sorted(row)), "{class}");
                assert!(!matrix.iter().all(|row| sorted(row)), "{class}");
            }
            etc::Consistency::Inconsistent => assert!(!even.iter().all(|row| sorted(row)), "{class}"),
        }
        let ratio = |row: &Vec<u64>| *row.iter().max().unwrap() as f64 / *row.iter().min().unwrap() as f64;
        let widest = matrix.iter().map(ratio).fold(0.0, f64::max);
        assert!(
            (class.high_machine && widest > 50.0) || (!class.high_machine && widest <= 10.5),
            "{class}: machine spread {widest}"
        );
    }
}

/// 512 tasks × 16 machines of each class, as the mapping literature measures. The policy with
/// the best mean makespan must average at most 0.97× Min-Min's and never end above it.
#[test]
fn the_best_policy_beats_min_min_on_every_class() {
    let policies = [
        PolicyKind::MinMin,
        PolicyKind::Sufferage,
        PolicyKind::Heft,
        PolicyKind::Mct,
    ];
    let mut makespans: Vec<Vec<u64>> = vec![Vec::new(); policies.len()];
    let mut references = Vec::new();
    let mut rows = Vec::new();
    for (at, class) in EtcClass::all().into_iter().enumerate() {
        let matrix = etc::matrix(class, 512, 16, 2001 + at as u64);
        let (min_min, _) = etc::reference_min_min(&matrix);
        references.push(min_min);
        let sim = simulator(&matrix, Duration::from_millis(300));
        let mut row = format!("{class}:");
        for (policy, makespans) in policies.iter().zip(&mut makespans) {
            let makespan = makespan_ms(&sim.run(*policy).expect("simulated"));
            row += &format!(" {policy} {:.3}", makespan as f64 / min_min as f64);
            makespans.push(makespan);
        }
        rows.push(row);
    }
    let total = |makespans: &[u64]| makespans.iter().sum::<u64>() as f64;
    let (best, best_makespans) = policies
        .iter()
        .zip(&makespans)
        .min_by(|a, b| total(a.1).total_cmp(&total(b.1)))
        .expect("policies");
    let ratio = total(best_makespans) / total(&references);
    let table = rows.join("\n");
    assert!(ratio <= 0.97, "{best}: mean makespan {ratio:.3}× Min-Min's\n{table}");
    for ((makespan, reference), class) in best_makespans.iter().zip(&references).zip(EtcClass::all()) {
        assert!(
            makespan <= reference,
            "{best} on {class}: {makespan} above Min-Min's {reference}\n{table}"
        );
    }
}
