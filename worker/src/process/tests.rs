//! Tests of child process execution, with real processes.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use taskfleet_common::state::AttemptOutcome;
use taskfleet_common::wire::{TaskMessage, WireAction, WIRE_VERSION};
use taskfleet_common::PriorityClass;

use super::*;

/// Longest any one execution may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(20);

fn task(argv: &[&str]) -> TaskMessage {
    TaskMessage {
        v: WIRE_VERSION,
        workflow_id: "wf-7".into(),
        task: "extract".into(),
        task_idx: 0,
        attempt: 2,
        pool: "default".into(),
        priority: PriorityClass::Normal,
        action: WireAction::Run {
            argv: argv.iter().map(|arg| arg.to_string()).collect(),
            env: BTreeMap::new(),
        },
        timeout_ms: None,
        inputs: BTreeMap::new(),
        limits: Default::default(),
        resources: Default::default(),
        selector: Default::default(),
    }
}

fn sh(script: &str) -> TaskMessage {
    task(&["sh", "-c", script])
}

fn with_env(mut task: TaskMessage, key: &str, value: &str) -> TaskMessage {
    if let WireAction::Run { env, .. } = &mut task.action {
        env.insert(key.into(), value.into());
    }
    task
}

async fn run_with(task: &TaskMessage, config: &ProcessConfig, cancel: &CancellationToken) -> Execution {
    tokio::time::timeout(PATIENCE, run_process(task, config, cancel))
        .await
        .expect("run_process hung")
}

async fn run(task: &TaskMessage) -> Execution {
    run_with(task, &ProcessConfig::default(), &CancellationToken::new()).await
}

/// Reads the pid a test script wrote.
fn read_pid(path: &Path) -> i32 {
    let text = std::fs::read_to_string(path).expect("the script wrote its pid");
    text.trim().parse().expect("a pid")
}

/// Whether `pid` is a live process (a zombie waiting for a reaper is not).
fn is_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => !matches!(
            stat.rsplit(')')
                .next()
                .and_then(|rest| rest.trim_start().chars().next()),
            Some('Z' | 'X')
        ),
        Err(_) if Path::new("/proc/self").exists() => false,
        Err(_) => nix::sys::signal::kill(Pid::from_raw(pid), None).is_ok(),
    }
}

/// Whether `pid` is gone, allowing a moment for a signal sent just now to take effect.
async fn is_gone(pid: i32) -> bool {
    for _ in 0..200 {
        if !is_alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn inputs_flow_to_output() {
    let mut task = sh("cat \"$TASKFLEET_INPUTS\" > \"$TASKFLEET_OUTPUT\"");
    task.inputs
        .insert("up".into(), RawValue::from_string("{\"rows\":3}".into()).unwrap());
    let execution = run(&task).await;
    assert_eq!(execution.outcome, AttemptOutcome::Succeeded, "{execution:?}");
    assert_eq!(execution.exit_code, Some(0));
    assert_eq!(execution.output.expect("output").get(), "{\"up\":{\"rows\":3}}");
    assert!(execution.error.is_none());
    assert!(execution.started_at <= execution.finished_at);
}

#[tokio::test]
async fn inputs_default_to_an_empty_object_and_output_is_optional() {
    let execution = run(&sh("cat \"$TASKFLEET_INPUTS\"")).await;
    assert_eq!(execution.outcome, AttemptOutcome::Succeeded, "{execution:?}");
    assert_eq!(execution.stdout_tail, "{}");
    assert!(execution.output.is_none());

    let execution = run(&sh(": > \"$TASKFLEET_OUTPUT\"")).await;
    assert_eq!(execution.outcome, AttemptOutcome::Succeeded, "{execution:?}");
    assert!(execution.output.is_none());
}

#[tokio::test]
async fn env_vars_are_passed() {
    let script = "printf '%s|%s|%s|%s|%s|' \"$TASKFLEET_WORKFLOW_ID\" \"$TASKFLEET_TASK\" \"$TASKFLEET_ATTEMPT\" \"$TASKFLEET_WORKER\" \"$GREETING\"; \
                  basename \"$TASKFLEET_INPUTS\"; basename \"$TASKFLEET_OUTPUT\"; test -e \"$TASKFLEET_OUTPUT\" || echo absent";
    let config = ProcessConfig {
        worker_name: "gpu-3".to_string(),
        ..ProcessConfig::default()
    };
    let task = with_env(sh(script), "GREETING", "hello there");
    let execution = run_with(&task, &config, &CancellationToken::new()).await;
    assert_eq!(execution.outcome, AttemptOutcome::Succeeded, "{execution:?}");
    assert_eq!(
        execution.stdout_tail,
        "wf-7|extract|2|gpu-3|hello there|inputs.json\noutput.json\nabsent\n"
    );
}

#[tokio::test]
async fn work_dir_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let config = ProcessConfig {
        work_dir: Some(dir.path().to_path_buf()),
        ..ProcessConfig::default()
    };
    let execution = run_with(&task(&["pwd", "-P"]), &config, &CancellationToken::new()).await;
    assert_eq!(execution.outcome, AttemptOutcome::Succeeded, "{execution:?}");
    assert_eq!(
        execution.stdout_tail.trim_end(),
        dir.path().canonicalize().unwrap().to_str().unwrap()
    );
}

#[tokio::test]
async fn nonzero_exit_is_a_retryable_failure() {
    let execution = run(&sh("echo oops >&2; exit 3")).await;
    assert_eq!(execution.outcome, AttemptOutcome::Failed { retryable: true });
    assert_eq!(execution.exit_code, Some(3));
    assert_eq!(execution.signal, None);
    assert_eq!(execution.error.as_deref(), Some("exited with code 3"));
    assert_eq!(execution.stderr_tail, "oops\n");
}

#[tokio::test]
async fn death_by_signal_is_named() {
    let execution = run(&sh("kill -9 $$")).await;
    assert_eq!(execution.outcome, AttemptOutcome::Failed { retryable: true });
    assert_eq!(execution.exit_code, None);
    assert_eq!(execution.signal, Some(9));
    assert_eq!(execution.error.as_deref(), Some("killed by signal 9 (SIGKILL)"));
}

#[tokio::test]
async fn missing_program_is_a_permanent_failure() {
    let execution = run(&task(&["taskfleet-no-such-program-xyz", "--flag"])).await;
    assert_eq!(execution.outcome, AttemptOutcome::Failed { retryable: false });
    assert_eq!(
        execution.error.as_deref(),
        Some("program `taskfleet-no-such-program-xyz` not found")
    );

    let execution = run(&task(&[])).await;
    assert_eq!(execution.outcome, AttemptOutcome::Failed { retryable: false });
}

#[tokio::test]
async fn unexecutable_program_is_a_permanent_failure() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    let execution = run(&task(&[script.to_str().unwrap()])).await;
    assert_eq!(execution.outcome, AttemptOutcome::Failed { retryable: false });
    assert!(
        execution.error.as_deref().unwrap().contains("permission denied"),
        "{execution:?}"
    );
}

#[tokio::test]
async fn start_errors_that_would_repeat_are_permanent() {
    // More argument bytes than the kernel takes (E2BIG).
    let huge = "x".repeat(4 << 20);
    let execution = run(&task(&["echo", &huge])).await;
    assert_eq!(
        execution.outcome,
        AttemptOutcome::Failed { retryable: false },
        "{execution:?}"
    );
    assert!(
        execution
            .error
            .as_deref()
            .unwrap()
            .starts_with("could not start `echo`: "),
        "{execution:?}"
    );
    // A NUL byte in an argument.
    let execution = run(&task(&["echo", "a\0b"])).await;
    assert_eq!(
        execution.outcome,
        AttemptOutcome::Failed { retryable: false },
        "{execution:?}"
    );
    // A file that is not a program (no interpreter line, not an executable format).
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.bin");
    std::fs::write(&data, [0u8, 1, 2, 3, 4, 5, 6, 7]).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let execution = run(&task(&[data.to_str().unwrap()])).await;
    assert_eq!(
        execution.outcome,
        AttemptOutcome::Failed { retryable: false },
        "{execution:?}"
    );
}

#[tokio::test]
async fn timeout_kills_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let mut task = with_env(
        sh("echo $$ > \"$PID_FILE\"; sleep 30"),
        "PID_FILE",
        pid_file.to_str().unwrap(),
    );
    task.timeout_ms = Some(300);
    let start = Instant::now();
    let execution = run(&task).await;
    // SIGTERM alone ends `sleep`: the default 5 s grace must not be waited out.
    assert!(start.elapsed() < Duration::from_secs(3), "took {:?}", start.elapsed());
    assert_eq!(execution.outcome, AttemptOutcome::TimedOut);
    assert_eq!(execution.error.as_deref(), Some("timed out after 300ms"));
    assert_eq!(execution.signal, Some(15));
    assert!(is_gone(read_pid(&pid_file)).await, "the timed out process still runs");
}

#[tokio::test]
async fn a_process_ignoring_sigterm_is_killed_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let script = "trap '' TERM; echo $$ > \"$PID_FILE\"; sleep 30";
    let mut task = with_env(sh(script), "PID_FILE", pid_file.to_str().unwrap());
    task.timeout_ms = Some(500);
    let config = ProcessConfig {
        kill_grace: Duration::from_millis(300),
        ..ProcessConfig::default()
    };
    let start = Instant::now();
    let execution = run_with(&task, &config, &CancellationToken::new()).await;
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(800),
        "killed before the grace passed: {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(4), "took {elapsed:?}");
    assert_eq!(execution.outcome, AttemptOutcome::TimedOut);
    assert_eq!(execution.signal, Some(9), "{execution:?}");
    assert!(
        is_gone(read_pid(&pid_file)).await,
        "the process ignoring SIGTERM still runs"
    );
}

#[tokio::test]
async fn background_grandchildren_are_killed_with_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let task = with_env(
        sh("sleep 30 & echo $! > \"$PID_FILE\"; echo started"),
        "PID_FILE",
        pid_file.to_str().unwrap(),
    );
    let start = Instant::now();
    let execution = run(&task).await;
    assert!(start.elapsed() < Duration::from_secs(3), "took {:?}", start.elapsed());
    assert_eq!(execution.outcome, AttemptOutcome::Succeeded, "{execution:?}");
    assert_eq!(execution.stdout_tail, "started\n");
    assert!(
        is_gone(read_pid(&pid_file)).await,
        "the background grandchild still runs"
    );
}

#[tokio::test]
async fn cancellation_stops_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let task = with_env(
        sh("echo $$ > \"$PID_FILE\"; sleep 30"),
        "PID_FILE",
        pid_file.to_str().unwrap(),
    );
    let cancel = CancellationToken::new();
    let canceller = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        canceller.cancel();
    });
    let start = Instant::now();
    let execution = run_with(&task, &ProcessConfig::default(), &cancel).await;
    assert!(start.elapsed() < Duration::from_secs(3), "took {:?}", start.elapsed());
    assert_eq!(execution.outcome, AttemptOutcome::Cancelled);
    assert_eq!(execution.error.as_deref(), Some("cancelled"));
    assert!(is_gone(read_pid(&pid_file)).await, "the cancelled process still runs");
}

#[tokio::test]
async fn oversized_output_is_a_permanent_failure() {
    let execution = run(&sh("head -c 1572864 /dev/zero | tr '\\0' 7 > \"$TASKFLEET_OUTPUT\"")).await;
    assert_eq!(execution.outcome, AttemptOutcome::Failed { retryable: false });
    assert_eq!(
        execution.error.as_deref(),
        Some("output is 1.5 MiB, more than the 1 MiB limit")
    );
    assert!(execution.output.is_none());
}

#[tokio::test]
async fn invalid_json_output_is_a_permanent_failure() {
    let execution = run(&sh("echo '{not json' > \"$TASKFLEET_OUTPUT\"")).await;
    assert_eq!(execution.outcome, AttemptOutcome::Failed { retryable: false });
    let error = execution.error.unwrap();
    assert!(error.starts_with("output is not valid JSON: "), "{error}");
}

#[tokio::test]
async fn output_tails_are_bounded() {
    let script = "head -c 100000 /dev/zero | tr '\\0' x; echo; echo last line; \
                  head -c 100000 /dev/zero | tr '\\0' y >&2; echo >&2; echo last error >&2";
    let execution = run(&sh(script)).await;
    assert_eq!(execution.outcome, AttemptOutcome::Succeeded, "{:?}", execution.error);
    let limit = ProcessConfig::default().tail_bytes;
    assert!(execution.stdout_tail.len() <= limit, "{}", execution.stdout_tail.len());
    assert!(
        execution.stdout_tail.len() > limit - 100,
        "{}",
        execution.stdout_tail.len()
    );
    assert!(execution.stdout_tail.ends_with("xxx\nlast line\n"));
    assert!(execution.stderr_tail.len() <= limit, "{}", execution.stderr_tail.len());
    assert!(execution.stderr_tail.ends_with("yyy\nlast error\n"));
}

#[test]
fn tails_keep_the_last_bytes_and_whole_characters() {
    let mut tail = Tail::new(5);
    for chunk in [&b"hello "[..], b"wor", b"ld!"] {
        tail.push(chunk);
    }
    assert_eq!(tail.into_string(), "orld!");

    // "é" is two bytes: a cut through it drops its second half instead of garbling it.
    let mut tail = Tail::new(4);
    tail.push("aébc".as_bytes());
    assert_eq!(tail.into_string(), "ébc");
    let mut tail = Tail::new(3);
    tail.push("aébc".as_bytes());
    assert_eq!(tail.into_string(), "bc");

    // Invalid bytes become replacement characters, still within the limit.
    let mut tail = Tail::new(4);
    tail.push(b"\xff\xfe\xfd\xfc");
    assert!(tail.into_string().len() <= 4);

    let mut tail = Tail::new(0);
    tail.push(b"anything");
    assert_eq!(tail.into_string(), "");
}

#[tokio::test]
async fn a_task_run_as_another_user_gets_a_fresh_directory_of_its_own() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "running a task as another user needs a root worker: run the tests as root (as scripts/test.sh does here)"
    );
    let user = crate::limits::RunAs::lookup("nobody").expect("the nobody user");
    let config = ProcessConfig {
        run_as: Some(user.clone()),
        ..ProcessConfig::default()
    };
    let script = r#"test "$(id -u)" != 0 && test "$(stat -c %u .)" = "$(id -u)" && touch made-here && test "$HOME" = "$(pwd)" && echo "{\"uid\": $(id -u)}" > "$TASKFLEET_OUTPUT""#;
    let execution = tokio::time::timeout(PATIENCE, run_process(&sh(script), &config, &CancellationToken::new()))
        .await
        .expect("in time");
    assert_eq!(execution.outcome, AttemptOutcome::Succeeded, "{execution:?}");
    let output: serde_json::Value = serde_json::from_str(execution.output.unwrap().get()).unwrap();
    assert_eq!(output["uid"], user.uid);
}
