//! The training benchmark: what `--history` costs. Ten earlier runs of a 10,000-task workflow
//! (ten kinds, half of them driven by an input size) train the predictor through the updates
//! a finished attempt makes; the baseline is reading the same run files.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use taskfleet_common::workflow::{parse_workflow_value, ValidateOptions};
use taskfleet_engine::predict::Predictor;
use taskfleet_engine::sim::{parse_actual, train};

pub(super) fn bench_training(n_runs: usize, n_tasks: usize) -> anyhow::Result<()> {
    println!("training: {n_runs} earlier runs of a {n_tasks}-task workflow (ten kinds, five by input size)");
    let mut rng = StdRng::seed_from_u64(15);
    let tasks: Vec<serde_json::Value> = (0..n_tasks)
        .map(|idx| json!({"id": format!("t{idx}"), "kind": format!("k{}", idx % 10), "handler": "noop", "estimate": "5s"}))
        .collect();
    let options = ValidateOptions {
        max_tasks: n_tasks.max(1),
        ..ValidateOptions::default()
    };
    let spec = parse_workflow_value(json!({"name": "history", "tasks": tasks}), &options)
        .map_err(|invalid| anyhow::anyhow!("{invalid}"))?;
    let texts: Vec<String> = (0..n_runs)
        .map(|_| {
            let mut runtimes = serde_json::Map::new();
            let mut features = serde_json::Map::new();
            for idx in 0..n_tasks {
                let id = format!("t{idx}");
                let seconds = if idx % 10 < 5 {
                    let mb: f64 = rng.gen_range(1.0..1_000.0);
                    features.insert(id.clone(), json!({"mb": mb}));
                    0.1 * mb.powf(0.8) * rng.gen_range(0.8..1.25)
                } else {
                    (idx % 10) as f64 * rng.gen_range(0.8..1.25)
                };
                runtimes.insert(id, json!(seconds));
            }
            json!({"runtimes": runtimes, "features": features}).to_string()
        })
        .collect();
    let started = Instant::now();
    let runs = texts
        .iter()
        .map(|text| parse_actual(text).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let read = started.elapsed();
    println!("  baseline: read the run files     {:>9.1} ms", millis(read));
    let mut predictor = Predictor::new(Duration::from_secs(1));
    let started = Instant::now();
    let unmatched = train(&mut predictor, &spec, &runs);
    let trained = started.elapsed();
    let observations = n_runs * n_tasks - unmatched;
    println!(
        "  train the predictor              {:>9.1} ms ({:.0} observations/s)",
        millis(trained),
        observations as f64 / trained.as_secs_f64()
    );
    let kinds: BTreeMap<String, usize> = predictor
        .snapshot()
        .into_iter()
        .map(|(signature, stats)| (signature, stats.n as usize))
        .collect();
    println!("  signatures learned: {}", kinds.len());
    Ok(())
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
