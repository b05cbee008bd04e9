//! The whole-process benchmark of `taskfleet bench`: what a user times with
//! `time taskfleet run FILE --workers N --json`, start-up, parse, run, report and exit
//! included. The baseline, measured in the same run, is `taskfleet validate FILE`: the same
//! start-up and parse without running anything.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::embedded::{layered_dag_json, millis};

pub(super) fn bench_process(n_tasks: usize, workers: usize, scratch: &Path) -> anyhow::Result<()> {
    println!(
        "process: taskfleet run on {n_tasks} noop tasks in layers of 1000, 3 dependencies each, {workers} workers"
    );
    let file = scratch.join("process.json");
    std::fs::write(&file, layered_dag_json(n_tasks, 2)).context("writing the benchmark workflow")?;
    let exe = std::env::current_exe().context("finding this executable")?;
    let file = file.to_string_lossy().into_owned();

    let validate = time_command(&exe, &["validate", &file])?;
    println!("  baseline: taskfleet validate         {:>10}", millis(validate));
    let workers = workers.to_string();
    let run = time_command(&exe, &["run", &file, "--workers", &workers, "--json"])?;
    println!(
        "  taskfleet run --json, whole process  {:>10.0} tasks/s ({} in {})",
        n_tasks as f64 / run.as_secs_f64(),
        n_tasks,
        millis(run)
    );
    Ok(())
}

/// Runs `exe args…` with its output discarded and returns how long it took; a failure is an
/// error naming the command and its exit status.
fn time_command(exe: &Path, args: &[&str]) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let status = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("starting {} {}", exe.display(), args.join(" ")))?;
    let elapsed = started.elapsed();
    anyhow::ensure!(
        status.success(),
        "{} {} ended with {status}",
        exe.display(),
        args.join(" ")
    );
    Ok(elapsed)
}
