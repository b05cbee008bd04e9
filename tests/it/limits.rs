//! Limits on real child processes, under this machine's cgroups (and its rlimits when the
//! worker may not use cgroups): memory, CPU time, processes, timeouts, whole-tree kills, the
//! sweep after a crash, and the environment a task sees.

use std::process::Output;
use std::time::{Duration, Instant};

use taskfleet_tests::{json_report, process_alive, run_taskfleet, task_report, taskfleet, wait_for, write_file};

/// Runs `workflow` (YAML text) with `taskfleet run --json` and `extra` arguments.
fn run(workflow: &str, extra: &[&str]) -> (Output, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "limits.yaml", workflow);
    let mut args = vec!["run", file.as_str(), "--json", "--workers", "4"];
    args.extend_from_slice(extra);
    let output = run_taskfleet(&args);
    let report = json_report(&output);
    (output, report)
}

/// The pids of running processes whose command line starts with `marker`.
fn processes_with(marker: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.starts_with(marker) && process_alive(pid) {
            pids.push(pid);
        }
    }
    pids
}

fn cgroups_usable() -> bool {
    let output = run_taskfleet(&["worker", "--check"]);
    String::from_utf8_lossy(&output.stdout).contains("limits: cgroups")
}

#[test]
fn a_memory_hog_is_killed_and_reported_with_its_peak() {
    assert!(
        cgroups_usable(),
        "these tests run where the worker may create cgroups (root)"
    );
    let (output, report) = run(
        r#"
name: hog
tasks:
  - id: hog
    run: ["python3", "-c", "x = bytearray(1024 * 1024 * 1024); print(len(x))"]
    resources: {memory: 64Mi}
"#,
        &[],
    );
    assert_eq!(output.status.code(), Some(1), "{report:#}");
    let hog = task_report(&report, "hog");
    assert_eq!(hog["state"], "failed", "{report:#}");
    assert_eq!(hog["reason"], "memory_limit_exceeded", "{report:#}");
    let peak = hog["peak_memory_bytes"].as_u64().expect("the peak is measured");
    assert!(
        (48 * 1024 * 1024..=64 * 1024 * 1024).contains(&peak),
        "peak {peak} is about the 64 MiB limit: {report:#}"
    );
    assert!(hog["error"].as_str().unwrap().contains("64 MiB"), "{report:#}");
}

#[test]
fn a_busy_loop_past_its_cpu_time_is_stopped() {
    let (_, report) = run(
        r#"
name: spin
tasks:
  - id: spin
    run: ["sh", "-c", "while :; do :; done"]
    limits: {cpu_time: 700ms}
    timeout: 30s
"#,
        &[],
    );
    let spin = task_report(&report, "spin");
    assert_eq!(spin["reason"], "cpu_limit_exceeded", "{report:#}");
    let used = spin["cpu_time_ms"].as_u64().expect("CPU time is measured");
    assert!((700..3_000).contains(&used), "used {used} ms: {report:#}");
    assert!(spin["duration_ms"].as_u64().unwrap() < 10_000, "{report:#}");
}

#[test]
fn a_fork_bomb_is_contained_and_its_tree_cleaned_up() {
    let (_, report) = run(
        r#"
name: bomb
tasks:
  - id: bomb
    run: ["sh", "-c", "for i in $(seq 300); do sleep 31340 & done; wait"]
    limits: {pids: 25}
    timeout: 20s
"#,
        &[],
    );
    let bomb = task_report(&report, "bomb");
    assert_eq!(bomb["reason"], "pids_limit_exceeded", "{report:#}");
    assert!(bomb["error"].as_str().unwrap().contains("25"), "{report:#}");
    assert_eq!(
        processes_with("sleep 31340"),
        Vec::<i32>::new(),
        "the bomb's children are gone"
    );
}

#[test]
fn a_sleeper_past_its_timeout_is_killed_within_a_second() {
    let (_, report) = run(
        r#"
name: sleeper
tasks:
  - id: sleeper
    run: ["sleep", "31341"]
    timeout: 1s
"#,
        &[],
    );
    let sleeper = task_report(&report, "sleeper");
    assert_eq!(sleeper["state"], "timed_out", "{report:#}");
    assert_eq!(sleeper["reason"], "timed_out", "{report:#}");
    let took = sleeper["duration_ms"].as_u64().unwrap();
    assert!((1_000..2_000).contains(&took), "took {took} ms: {report:#}");
    assert_eq!(processes_with("sleep 31341"), Vec::<i32>::new());
}

#[test]
fn a_task_that_ignores_sigterm_is_killed_at_the_hard_limit() {
    let started = Instant::now();
    let (_, report) = run(
        r#"
name: stubborn
tasks:
  - id: stubborn
    run: ["sh", "-c", "trap '' TERM; sleep 31342 & wait; wait"]
    timeout: 1s
"#,
        &[],
    );
    let stubborn = task_report(&report, "stubborn");
    assert_eq!(stubborn["state"], "timed_out", "{report:#}");
    // The timeout, then the 5 s grace of `taskfleet run`, then SIGKILL.
    let took = stubborn["duration_ms"].as_u64().unwrap();
    assert!((5_900..8_000).contains(&took), "took {took} ms: {report:#}");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(processes_with("sleep 31342"), Vec::<i32>::new());
}

#[test]
fn a_setsid_daemon_dies_with_its_task() {
    let (output, report) = run(
        r#"
name: daemon
tasks:
  - id: daemon
    run: ["sh", "-c", "setsid sleep 31343 > /dev/null 2>&1 & echo started"]
"#,
        &[],
    );
    assert!(output.status.success(), "{report:#}");
    assert_eq!(task_report(&report, "daemon")["state"], "succeeded");
    assert_eq!(
        processes_with("sleep 31343"),
        Vec::<i32>::new(),
        "no orphan outlives its task"
    );
}

#[test]
fn a_task_sees_only_allowed_variables_of_the_worker() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(
        dir.path(),
        "env.yaml",
        r#"
name: env
tasks:
  - id: env
    run: ["sh", "-c", "test -z \"$BROKER_PASSWORD\" && test -n \"$PATH\" && test \"$MINE\" = yes && test -n \"$TASKFLEET_TASK\""]
    env: {MINE: "yes"}
"#,
    );
    let output = taskfleet()
        .args(["run", &file, "--json"])
        .env("BROKER_PASSWORD", "hunter2")
        .output()
        .unwrap();
    let report = json_report(&output);
    assert!(output.status.success(), "{report:#}");
}

#[test]
fn without_cgroups_rlimits_still_stop_cpu_hogs() {
    let check = run_taskfleet(&["worker", "--check", "--cgroup-root", "/nonexistent"]);
    let said = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(said.contains("limits: rlimits"), "{said}");
    assert!(said.contains("RLIMIT_CPU"), "{said}");
    let (_, report) = run(
        r#"
name: rlimits
tasks:
  - id: spin
    run: ["sh", "-c", "while :; do :; done"]
    limits: {cpu_time: 1s}
    timeout: 30s
  - id: hog
    run: ["python3", "-c", "x = bytearray(1024 * 1024 * 1024); print(len(x))"]
    limits: {memory: 256Mi}
"#,
        &["--cgroup-root", "/nonexistent"],
    );
    let spin = task_report(&report, "spin");
    assert_eq!(spin["reason"], "cpu_limit_exceeded", "{report:#}");
    assert!(spin["duration_ms"].as_u64().unwrap() < 10_000, "{report:#}");
    // The address-space limit makes the allocation fail inside the program.
    let hog = task_report(&report, "hog");
    assert_eq!(hog["state"], "failed", "{report:#}");
    assert!(
        hog["peak_memory_bytes"].is_null(),
        "nothing measures the peak without cgroups"
    );
}

#[test]
fn limits_off_refuses_a_task_that_asks_for_one() {
    let (_, report) = run(
        r#"
name: off
tasks:
  - {id: limited, run: ["true"], limits: {pids: 10}, retries: 0}
  - {id: free, run: ["true"]}
"#,
        &["--limits", "off"],
    );
    let limited = task_report(&report, "limited");
    assert_eq!(limited["state"], "failed", "{report:#}");
    assert!(limited["error"].as_str().unwrap().contains("limits off"), "{report:#}");
    assert_eq!(task_report(&report, "free")["state"], "succeeded", "{report:#}");
}

#[test]
fn the_tasks_of_a_killed_run_are_swept_by_the_next_worker() {
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("started");
    let workflow = write_file(
        dir.path(),
        "crash.yaml",
        &format!(
            r#"
name: crash
tasks:
  - id: long
    run: ["sh", "-c", "touch {started}; setsid sleep 41344 & sleep 41345"]
"#,
            started = started.display()
        ),
    );
    let mut child = taskfleet().args(["run", &workflow, "--json"]).spawn().unwrap();
    wait_for("the task to start", Duration::from_secs(30), || started.exists());
    wait_for("both sleeps to run", Duration::from_secs(5), || {
        processes_with("sleep 4134").len() == 2
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(processes_with("sleep 4134").len(), 2, "SIGKILL leaves the task running");
    // Any worker that starts on this machine sweeps what a dead one left in its cgroups.
    let check = run_taskfleet(&["worker", "--check"]);
    assert!(check.status.success());
    wait_for("the orphans to be killed", Duration::from_secs(5), || {
        processes_with("sleep 4134").is_empty()
    });
}

#[test]
fn a_root_worker_runs_tasks_as_an_unprivileged_user_without_its_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(
        dir.path(),
        "user.yaml",
        r#"
name: user
tasks:
  - id: whoami
    run: ["sh", "-c", "test -z \"$BROKER_PASSWORD\" && echo \"{\\\"uid\\\": $(id -u)}\" > \"$TASKFLEET_OUTPUT\""]
    limits: {pids: 50, memory: 256Mi}
"#,
    );
    for mode in ["auto", "rlimit"] {
        let output = taskfleet()
            .args(["run", &file, "--json", "--run-as", "nobody", "--limits", mode])
            .env("BROKER_PASSWORD", "hunter2")
            .output()
            .unwrap();
        let report = json_report(&output);
        assert!(output.status.success(), "{mode}: {report:#}");
        let uid = &task_report(&report, "whoami")["output"]["uid"];
        assert_eq!(uid, 65534, "{mode}: the task ran as nobody: {report:#}");
    }
}
