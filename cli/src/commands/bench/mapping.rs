//! The mapping benchmark: how fast the batch heuristics decide on a large ready set (next to
//! `mct`'s one-task-at-a-time rate on the same fleet), and how good every mapping policy is on
//! ETC instances of the twelve classes of Braun et al. (2001), next to the literature's
//! Min-Min computed by exhaustive rescans.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use taskfleet_common::workflow::{parse_workflow_value, ValidateOptions};
use taskfleet_common::Millis;
use taskfleet_engine::placement::{plan, Batch, ParentAt, Placer, PlanKind, TaskShape};
use taskfleet_engine::policy::{PolicyConfig, PolicyKind};
use taskfleet_engine::sim::etc::{self, EtcClass};
use taskfleet_engine::sim::Simulator;

/// Decisions per second mapping `n_tasks` independent ready tasks onto `n_workers` workers of
/// four speeds and 1-4 slots: `mct` one task at a time in arrival order, then each batch
/// heuristic over the whole set.
pub(super) fn bench_batch_rate(n_tasks: usize, n_workers: usize) -> anyhow::Result<()> {
    println!("batch mapping: {n_tasks} ready tasks on {n_workers} workers of four speeds, 1-4 slots");
    let workers = super::policies::mixed_fleet(n_workers);
    let mut rng = StdRng::seed_from_u64(11);
    let estimates: Vec<u64> = (0..n_tasks).map(|_| rng.gen_range(100..100_000)).collect();
    let mut placer = Placer::with_workers(None, &workers);
    let started = Instant::now();
    for &estimate_ms in &estimates {
        let shape = TaskShape {
            fits: None,
            pool: "default",
            slots: 1,
            estimate_ms,
            by_worker: None,
        };
        let choice = placer
            .choose(Millis(0), shape, &[] as &[ParentAt])
            .expect("the fleet serves the pool");
        placer.reserve(choice, 1);
    }
    let rate = n_tasks as f64 / started.elapsed().as_secs_f64();
    println!("  baseline: mct, one at a time     {rate:>12.0} decisions/s");
    let tasks: Vec<serde_json::Value> = estimates
        .iter()
        .enumerate()
        .map(|(idx, ms)| json!({"id": format!("t{idx}"), "handler": "noop", "estimate": format!("{ms}ms")}))
        .collect();
    let options = ValidateOptions {
        max_tasks: n_tasks.max(1),
        ..ValidateOptions::default()
    };
    let spec = parse_workflow_value(json!({"name": "batch", "tasks": tasks}), &options)
        .map_err(|invalid| anyhow::anyhow!("{invalid}"))?;
    let done = vec![false; n_tasks];
    for (name, heuristic) in [
        ("min-min", Batch::MinMin),
        ("max-min", Batch::MaxMin),
        ("sufferage", Batch::Sufferage),
    ] {
        let mut placer = Placer::with_workers(None, &workers);
        let started = Instant::now();
        let planned = plan(
            &mut placer,
            Millis(0),
            &spec,
            &estimates,
            &done,
            PlanKind::Batch(heuristic),
        );
        let elapsed = started.elapsed();
        println!(
            "  {name:<32} {:>12.0} decisions/s (makespan {:.0} s)",
            n_tasks as f64 / elapsed.as_secs_f64(),
            planned.makespan.0 as f64 / 1000.0
        );
    }
    Ok(())
}

/// Every mapping policy on `seeds` ETC instances of each class (`n_tasks` × `n_machines`),
/// each makespan over the literature's Min-Min on the same instance (lower is better), with
/// the local search of planned policies given `search`.
pub(super) fn bench_etc(n_tasks: usize, n_machines: usize, seeds: u64, search: Duration) -> anyhow::Result<()> {
    let policies = [
        PolicyKind::MctBounded,
        PolicyKind::Mct,
        PolicyKind::Heft,
        PolicyKind::MinMin,
        PolicyKind::MaxMin,
        PolicyKind::Sufferage,
    ];
    println!(
        "ETC mapping: {n_tasks} tasks × {n_machines} machines, {seeds} instance(s) per class; makespan over \
         Min-Min's (baseline: Min-Min by rescans), planned policies without and with {} ms of search",
        search.as_millis()
    );
    let mut header = format!("  {:<8} {:>10}", "class", "min-min ms");
    for policy in policies {
        header += &format!(" {:>11}", policy.as_str());
        if matches!(policy.placement(), taskfleet_engine::policy::Placement::Planned(_)) {
            header += &format!(" {:>11}", format!("{}+ls", short(policy)));
        }
    }
    println!("{header}");
    let mut sums = vec![0.0f64; 2 * policies.len()];
    let mut reference_sum = 0.0f64;
    let mut rows = 0usize;
    for (at, class) in EtcClass::all().into_iter().enumerate() {
        for seed in 0..seeds {
            let matrix = etc::matrix(class, n_tasks, n_machines, 2001 + at as u64 + 100 * seed);
            let (reference, _) = etc::reference_min_min(&matrix);
            reference_sum += reference as f64;
            rows += 1;
            let mut line = format!("  {:<8} {reference:>10}", class.to_string());
            for (column, policy) in policies.iter().enumerate() {
                let planned = matches!(policy.placement(), taskfleet_engine::policy::Placement::Planned(_));
                let budgets: &[Duration] = if planned { &[Duration::ZERO, search] } else { &[search] };
                for (which, &budget) in budgets.iter().enumerate() {
                    let config = PolicyConfig {
                        plan_search: budget,
                        ..PolicyConfig::default()
                    };
                    let workflow = etc::workflow("etc", &matrix).map_err(anyhow::Error::msg)?;
                    let sim = Simulator::new(etc::fleet(n_machines), vec![workflow], config)?;
                    let makespan = sim.run(*policy)?.makespan * 1000.0;
                    sums[2 * column + which] += makespan;
                    line += &format!(" {:>11.3}", makespan / reference as f64);
                }
            }
            println!("{line}");
        }
    }
    let mut line = format!(
        "  {:<8} {:>10}",
        "mean",
        format!("{:.0}", reference_sum / rows.max(1) as f64)
    );
    for (column, policy) in policies.iter().enumerate() {
        let planned = matches!(policy.placement(), taskfleet_engine::policy::Placement::Planned(_));
        line += &format!(" {:>11.3}", sums[2 * column] / reference_sum);
        if planned {
            line += &format!(" {:>11.3}", sums[2 * column + 1] / reference_sum);
        }
    }
    println!("{line}  (mean makespan over Min-Min's)");
    Ok(())
}

/// A column label short enough for the table.
fn short(policy: PolicyKind) -> &'static str {
    match policy {
        PolicyKind::MinMin => "min-min",
        PolicyKind::MaxMin => "max-min",
        PolicyKind::Sufferage => "suff",
        other => other.as_str(),
    }
}
