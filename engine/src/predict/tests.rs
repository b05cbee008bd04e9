//! Predictor tests on synthetic histories.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use taskfleet_common::workflow::{parse_workflow, ValidateOptions};

use super::*;

fn task(yaml_task: &str) -> TaskSpec {
    let spec = parse_workflow(
        &format!("name: p\ntasks:\n  - {yaml_task}\n"),
        &ValidateOptions::default(),
    )
    .unwrap();
    spec.tasks.into_iter().next().unwrap()
}

#[test]
fn signatures_group_by_pool_and_what_runs() {
    assert_eq!(
        signature(&task("{id: a, run: [/usr/bin/python3, jobs/extract.py, --day, '1']}")),
        "default|run|python3|extract.py"
    );
    assert_eq!(
        signature(&task("{id: b, run: [python3, extract.py, --day, '2']}")),
        "default|run|python3|extract.py"
    );
    assert_eq!(
        signature(&task("{id: c, run: [sleep, --help], pool: gpu}")),
        "gpu|run|sleep|"
    );
    assert_eq!(signature(&task("{id: d, handler: noop}")), "default|handler|noop");
}

#[test]
fn a_kind_is_learned_whatever_runs_it() {
    let first = task("{id: index-1, kind: bowtie2-build, run: [bowtie2-build, ref1.fa]}");
    let second = task("{id: index-2, kind: bowtie2-build, run: [/opt/bt2/bowtie2-build, --threads, '4']}");
    assert_eq!(signature(&first), "default|kind|bowtie2-build");
    assert_eq!(signature(&first), signature(&second));
    // A task of that kind never seen before gets what its kind has shown.
    let mut predictor = Predictor::new(Duration::from_secs(1));
    for _ in 0..20 {
        predictor.observe_task(&first, Duration::from_secs(60));
    }
    let predicted = predictor.predict(&task("{id: index-99, kind: bowtie2-build, run: [true]}"));
    assert_eq!(predicted.source, Source::Learned);
    assert!((predicted.mean.as_secs_f64() - 60.0).abs() < 1.0, "{predicted:?}");
    let problems = parse_workflow(
        "name: p\ntasks:\n  - {id: a, kind: 'two words', handler: noop}\n",
        &ValidateOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        problems.contains("kind") && problems.contains("must be a name"),
        "{problems}"
    );
}

#[test]
fn cold_start_uses_the_estimate_then_the_prior() {
    let predictor = Predictor::new(Duration::from_secs(7));
    let declared = predictor.predict(&task("{id: a, handler: noop, estimate: 20s}"));
    assert_eq!(
        (declared.source, declared.p50, declared.confidence),
        (Source::Declared, Duration::from_secs(20), 0.0)
    );
    assert!(declared.p90 > declared.p50);
    let prior = predictor.predict(&task("{id: a, handler: noop}"));
    assert_eq!((prior.source, prior.p50), (Source::Prior, Duration::from_secs(7)));
}

#[test]
fn converges_on_a_synthetic_history() {
    // True runtimes: log-normal with median 10 s and sigma 0.3.
    let truth = Prediction::from_log(10f64.ln(), 0.3, 1.0, Source::Learned);
    let mut rng = StdRng::seed_from_u64(3);
    let job = task("{id: job, run: [python3, train.py], estimate: 60s}");
    let mut predictor = Predictor::new(Duration::from_secs(1));
    let mut confidences = Vec::new();
    for n in 1..=2000 {
        predictor.observe(&signature(&job), truth.sample(&mut rng));
        if [1, 10, 2000].contains(&n) {
            confidences.push(predictor.predict(&job).confidence);
        }
    }
    let learned = predictor.predict(&job);
    assert_eq!(learned.source, Source::Learned);
    let close = |got: Duration, want: f64, tolerance: f64| (got.as_secs_f64() / want - 1.0).abs() < tolerance;
    assert!(close(learned.p50, 10.0, 0.05), "p50 {:?}", learned.p50);
    assert!(
        close(learned.p90, 10.0 * (Z_P90 * 0.3f64).exp(), 0.06),
        "p90 {:?}",
        learned.p90
    );
    assert!(
        close(learned.mean, 10.0 * (0.045f64).exp(), 0.05),
        "mean {:?}",
        learned.mean
    );
    assert!(
        confidences.windows(2).all(|pair| pair[0] < pair[1]),
        "confidence grows: {confidences:?}"
    );
    assert!(learned.confidence > 0.99);
}

#[test]
fn a_few_observations_are_blended_with_the_estimate() {
    let job = task("{id: job, handler: sleep, args: {duration: 1s}, estimate: 100s}");
    let mut predictor = Predictor::new(Duration::from_secs(1));
    predictor.observe(&signature(&job), Duration::from_secs(10));
    let blended = predictor.predict(&job);
    assert!(
        blended.p50 > Duration::from_secs(10) && blended.p50 < Duration::from_secs(100),
        "{:?}",
        blended.p50
    );
    assert_eq!(blended.confidence, 0.25);
}

#[test]
fn p90_covers_about_ninety_percent_of_new_runs() {
    let truth = Prediction::from_log(5f64.ln(), 0.4, 1.0, Source::Learned);
    let mut rng = StdRng::seed_from_u64(11);
    let job = task("{id: job, handler: noop}");
    let mut predictor = Predictor::new(Duration::from_secs(1));
    for _ in 0..500 {
        predictor.observe(&signature(&job), truth.sample(&mut rng));
    }
    let p90 = predictor.predict(&job).p90;
    let n_trials = 5000;
    let n_covered = (0..n_trials).filter(|_| truth.sample(&mut rng) <= p90).count();
    let coverage = n_covered as f64 / n_trials as f64;
    assert!((0.87..=0.93).contains(&coverage), "coverage {coverage}");
}

#[test]
fn snapshots_restore_the_same_predictions() {
    let job = task("{id: job, handler: noop}");
    let mut predictor = Predictor::new(Duration::from_secs(2));
    for seconds in [3, 4, 5] {
        predictor.observe(&signature(&job), Duration::from_secs(seconds));
    }
    let restored = Predictor::restore(Duration::from_secs(2), predictor.snapshot());
    assert_eq!(restored, predictor);
    assert_eq!(restored.predict(&job), predictor.predict(&job));
}

#[test]
fn learns_how_runtime_grows_with_a_declared_feature() {
    // True runtimes: 0.2 s × input_mb^0.8, log-normal noise with sigma 0.1.
    let truth = |input_mb: f64| 0.2 * input_mb.powf(0.8);
    let mut rng = StdRng::seed_from_u64(9);
    let mut predictor = Predictor::new(Duration::from_secs(1));
    for _ in 0..400 {
        let input_mb = rng.gen_range(1.0..500.0f64).round();
        let job = task(&format!(
            "{{id: job, run: [python3, load.py], features: {{input_mb: {input_mb}}}}}"
        ));
        let noise = Prediction::from_log(0.0, 0.1, 1.0, Source::Learned)
            .sample(&mut rng)
            .as_secs_f64();
        let learned = predictor.observe_task(&job, Duration::from_secs_f64(truth(input_mb) * noise));
        assert!(learned.features.is_some());
    }
    for input_mb in [5.0, 50.0, 400.0, 2000.0] {
        let job = task(&format!(
            "{{id: job, run: [python3, load.py], features: {{input_mb: {input_mb}}}}}"
        ));
        let prediction = predictor.predict(&job);
        let want = truth(input_mb);
        let got = prediction.p50.as_secs_f64();
        assert!(
            (got / want - 1.0).abs() < 0.15,
            "input {input_mb} MB: predicted {got:.2} s, truth {want:.2} s"
        );
        assert_eq!(prediction.source, Source::Learned);
        assert!(prediction.confidence > 0.9);
    }
    // The same program without features gets the signature's overall log-normal model,
    // which cannot tell a small input from a large one.
    let plain = predictor.predict(&task("{id: job, run: [python3, load.py]}"));
    assert_eq!(plain.source, Source::Learned);

    // The regression survives a restart through its persisted statistics.
    let restored = Predictor::restore(Duration::from_secs(1), predictor.snapshot())
        .with_feature_models(predictor.feature_snapshot());
    let job = task("{id: job, run: [python3, load.py], features: {input_mb: 100}}");
    assert_eq!(restored.predict(&job), predictor.predict(&job));
}

#[test]
fn a_feature_model_needs_more_observations_than_coefficients() {
    let mut predictor = Predictor::new(Duration::from_secs(1));
    let job = task("{id: job, handler: noop, estimate: 8s, args: {rows: 10, cols: 3}}");
    for _ in 0..3 {
        predictor.observe_task(&job, Duration::from_secs(2));
    }
    // Three coefficients, three observations: the signature model answers (blended with 8 s).
    let early = predictor.predict(&job);
    assert!(early.p50 > Duration::from_secs(2) && early.p50 < Duration::from_secs(8));
}
