//! The worker-overhead benchmark of `taskfleet bench`: attempts of `run: ["true"]` executed
//! one after another by the worker's own process runner, with limits on (the launcher and a
//! cgroup per attempt, or rlimits) and off, next to a plain `std::process::Command` loop
//! measured in the same run.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use taskfleet_common::limits::Limits;
use taskfleet_common::wire::{TaskMessage, WireAction, WIRE_VERSION};
use taskfleet_common::PriorityClass;
use taskfleet_worker::limits::{Enforcer, Mode};
use taskfleet_worker::{run_process, ProcessConfig};
use tokio_util::sync::CancellationToken;

pub(super) async fn bench_spawn(n: usize, cgroup_root: &Path) -> anyhow::Result<()> {
    println!("spawn: {n} attempts of `true`, one at a time");
    let plain = time_each(n, || async {
        let status = Command::new("true")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .status()
            .context("running true")?;
        anyhow::ensure!(status.success(), "true failed");
        Ok(())
    })
    .await?;
    report("baseline: std::process::Command", &plain, &[]);

    let exe = std::env::current_exe().context("finding this executable")?;
    let runs = [
        ("limits off (direct spawn)", Mode::Off, Limits::default()),
        ("limits on: rlimits (launcher)", Mode::Rlimit, memory_and_pids()),
        ("limits on: cgroups", Mode::Auto, memory_and_pids()),
    ];
    let mut off = Vec::new();
    for (label, mode, limits) in runs {
        let enforcer = Arc::new(Enforcer::new(mode, exe.clone(), cgroup_root));
        if label.ends_with("cgroups") && enforcer.cgroups().is_none() {
            println!("  {label:<36} skipped: no cgroup this process may create");
            continue;
        }
        let config = ProcessConfig {
            enforcer: Some(enforcer),
            ..ProcessConfig::default()
        };
        let task = task(limits);
        let times = time_each(n, || async {
            let execution = run_process(&task, &config, &CancellationToken::new()).await;
            anyhow::ensure!(execution.error.is_none(), "`true` failed: {:?}", execution.error);
            Ok(())
        })
        .await?;
        if mode == Mode::Off {
            report(label, &times, &[("the baseline", &plain)]);
            off = times;
        } else {
            report(label, &times, &[("the baseline", &plain), ("limits off", &off)]);
        }
    }
    Ok(())
}

fn memory_and_pids() -> Limits {
    Limits {
        memory_bytes: Some(256 * 1024 * 1024),
        pids: Some(64),
        ..Limits::default()
    }
}

fn task(limits: Limits) -> TaskMessage {
    TaskMessage {
        v: WIRE_VERSION,
        workflow_id: "bench".to_string(),
        task: "true".to_string(),
        task_idx: 0,
        attempt: 1,
        pool: "default".to_string(),
        priority: PriorityClass::Normal,
        action: WireAction::Run {
            argv: vec!["true".to_string()],
            env: Default::default(),
        },
        timeout_ms: None,
        limits,
        inputs: Default::default(),
        resources: Default::default(),
        selector: Default::default(),
    }
}

/// Times `n` sequential runs of `step`, sorted.
async fn time_each<F, Fut>(n: usize, mut step: F) -> anyhow::Result<Vec<Duration>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        step().await?;
        times.push(started.elapsed());
    }
    times.sort();
    Ok(times)
}

fn report(label: &str, times: &[Duration], baselines: &[(&str, &[Duration])]) {
    let total: Duration = times.iter().sum();
    let rate = times.len() as f64 / total.as_secs_f64();
    let p50 = times[times.len() / 2];
    let p99 = times[(times.len() * 99 / 100).min(times.len() - 1)];
    let ratios: Vec<String> = baselines
        .iter()
        .map(|(name, baseline)| {
            let base: Duration = baseline.iter().sum();
            format!(
                "{:+.0}% vs {name}",
                (total.as_secs_f64() / base.as_secs_f64() - 1.0) * 100.0
            )
        })
        .collect();
    let ratios = if ratios.is_empty() {
        String::new()
    } else {
        format!(" ({})", ratios.join(", "))
    };
    println!(
        "  {label:<32} {rate:>6.0} tasks/s  p50 {:>5.2} ms  p99 {:>5.2} ms{ratios}",
        p50.as_secs_f64() * 1000.0,
        p99.as_secs_f64() * 1000.0
    );
}
