//! `taskfleet run` and `taskfleet validate`, end to end through the real binary.

use std::time::{Duration, Instant};

use taskfleet_tests::{json_report, process_alive, run_taskfleet, task_report, wait_for, write_file};

#[test]
fn outputs_flow_to_dependents_and_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    let workflow = write_file(
        dir.path(),
        "flow.yaml",
        r#"
name: flow
tasks:
  - id: produce
    run: ["sh", "-c", "echo '{\"rows\": 3}' > \"$TASKFLEET_OUTPUT\""]
  - id: double
    deps: [produce]
    run: ["sh", "-c", "grep -q '\"produce\": *{\"rows\": 3}' \"$TASKFLEET_INPUTS\" && echo '{\"rows\": 6}' > \"$TASKFLEET_OUTPUT\""]
  - id: check
    deps: [double, produce]
    run: ["sh", "-c", "cat \"$TASKFLEET_INPUTS\"; grep -q '\"double\": *{\"rows\": 6}' \"$TASKFLEET_INPUTS\" && grep -q '\"produce\"' \"$TASKFLEET_INPUTS\""]
"#,
    );
    let db = dir.path().join("state.sqlite");
    let output = run_taskfleet(&["run", &workflow, "--json", "--db", db.to_str().unwrap()]);
    let report = json_report(&output);
    assert!(output.status.success(), "exit {:?}, report {report:#}", output.status);
    assert_eq!(report["state"], "succeeded");
    for id in ["produce", "double", "check"] {
        assert_eq!(task_report(&report, id)["state"], "succeeded", "{report:#}");
        assert_eq!(task_report(&report, id)["exit_code"], 0);
    }
    let connection = rusqlite::Connection::open(&db).unwrap();
    let stored: String = connection
        .query_row("SELECT output FROM tasks WHERE task_id = 'double'", [], |row| {
            row.get(0)
        })
        .unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&stored).unwrap(),
        serde_json::json!({"rows": 6})
    );
}

#[test]
fn failure_propagates_to_dependents_and_the_run_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let workflow = write_file(
        dir.path(),
        "fail.yaml",
        r#"
name: failing
tasks:
  - {id: root, handler: noop}
  - {id: broken, deps: [root], run: ["sh", "-c", "echo boom >&2; exit 3"]}
  - {id: child, deps: [broken], handler: noop}
  - {id: grandchild, deps: [child, root], handler: noop}
  - {id: sibling, deps: [root], handler: noop}
"#,
    );
    let output = run_taskfleet(&["run", &workflow, "--json"]);
    assert_eq!(output.status.code(), Some(1));
    let report = json_report(&output);
    assert_eq!(report["state"], "failed");
    let broken = task_report(&report, "broken");
    assert_eq!(broken["state"], "failed");
    assert_eq!(broken["exit_code"], 3);
    assert_eq!(broken["error"], "exited with code 3");
    assert_eq!(task_report(&report, "child")["state"], "upstream_failed");
    assert_eq!(task_report(&report, "grandchild")["state"], "upstream_failed");
    assert_eq!(task_report(&report, "grandchild")["attempts"], 0);
    assert_eq!(task_report(&report, "sibling")["state"], "succeeded");

    // As a table, the failed task's stderr follows, so the reason is not only an exit code.
    let output = run_taskfleet(&["run", &workflow]);
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8_lossy(&output.stdout);
    let under_table = text.rsplit('┘').next().unwrap_or_default();
    assert!(
        under_table.contains("task broken, attempt 1") && under_table.contains("exit code 3"),
        "{text}"
    );
    assert!(under_table.contains("  stderr:\n    boom\n"), "{text}");
}

#[test]
fn retries_wait_with_backoff_then_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let workflow = write_file(
        dir.path(),
        "retry.yaml",
        r#"
name: retry
tasks:
  - id: flaky
    run: ["sh", "-c", "[ \"$TASKFLEET_ATTEMPT\" -ge 3 ]"]
    retries: {max: 3, backoff: 400ms, max_backoff: 10s}
"#,
    );
    let db = dir.path().join("state.sqlite");
    let output = run_taskfleet(&["run", &workflow, "--json", "--db", db.to_str().unwrap()]);
    assert!(output.status.success());
    assert_eq!(task_report(&json_report(&output), "flaky")["attempts"], 3);
    let connection = rusqlite::Connection::open(&db).unwrap();
    let mut statement = connection
        .prepare("SELECT started_at, finished_at FROM attempts ORDER BY attempt")
        .unwrap();
    let attempts: Vec<(i64, i64)> = statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(attempts.len(), 3);
    // Backoff 400ms then 800ms, each with equal jitter: at least half of it is waited.
    let first_wait = attempts[1].0 - attempts[0].1;
    let second_wait = attempts[2].0 - attempts[1].1;
    assert!(first_wait >= 200, "waited {first_wait}ms before the first retry");
    assert!(second_wait >= 400, "waited {second_wait}ms before the second retry");
}

#[test]
fn a_timeout_kills_the_real_process() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let workflow = write_file(
        dir.path(),
        "timeout.yaml",
        &format!(
            "name: timeout\ntasks:\n  - id: hang\n    run: [\"sh\", \"-c\", \"echo $$ > {}; exec sleep 60\"]\n    timeout: 500ms\n",
            pid_file.display()
        ),
    );
    let started = Instant::now();
    let output = run_taskfleet(&["run", &workflow, "--json"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the run took {:?}",
        started.elapsed()
    );
    let report = json_report(&output);
    assert_eq!(task_report(&report, "hang")["state"], "timed_out");
    assert_eq!(task_report(&report, "hang")["error"], "timed out after 500ms");
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    wait_for("the timed-out process to be gone", Duration::from_secs(5), || {
        !process_alive(pid)
    });
}

#[test]
fn invalid_workflows_exit_2_and_name_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let workflow = write_file(
        dir.path(),
        "bad.yaml",
        "name: bad\ntasks:\n  - {id: a, deps: [c], handler: noop}\n  - {id: b, deps: [a], handler: noop}\n  - {id: c, deps: [b], handler: noop}\n  - {id: d, deps: [aa], run: []}\n",
    );
    for command in ["run", "validate"] {
        let output = run_taskfleet(&[command, &workflow]);
        assert_eq!(output.status.code(), Some(2), "{command}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("dependency cycle: a -> b -> c -> a"),
            "{command}: {stderr}"
        );
        assert!(
            stderr.contains("unknown dependency `aa` (did you mean `a`?)"),
            "{command}: {stderr}"
        );
        assert!(
            stderr.contains("task `d`, field `run`: must not be empty"),
            "{command}: {stderr}"
        );
        assert!(output.stdout.is_empty(), "{command}: nothing on stdout");
    }
    let output = run_taskfleet(&["run", "/nonexistent/workflow.yaml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read /nonexistent/workflow.yaml"));
    let output = run_taskfleet(&["run", &workflow, "--policy", "lottery"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown policy `lottery`"));
}

#[test]
fn control_characters_from_a_file_never_reach_the_terminal_raw() {
    let dir = tempfile::tempdir().unwrap();
    // An unknown field and a dependency whose names hold escape sequences (clear the screen).
    let workflow = write_file(
        dir.path(),
        "escapes.yaml",
        "name: w\ntasks:\n  - {id: a, handler: noop, \"bad\\e[2J\": 1, deps: [\"x\\e[31m\"]}\n",
    );
    for command in ["run", "validate"] {
        let output = run_taskfleet(&[command, &workflow]);
        assert_eq!(output.status.code(), Some(2), "{command}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !stderr.contains('\u{1b}'),
            "{command}: a raw escape was printed: {stderr:?}"
        );
        assert!(
            stderr.contains("field `bad\\u{1b}[2J`: unknown field"),
            "{command}: {stderr}"
        );
        assert!(
            stderr.contains("unknown dependency `x\\u{1b}[31m`"),
            "{command}: {stderr}"
        );
    }
}

#[test]
fn validate_prints_depth_and_critical_path() {
    let output = run_taskfleet(&["validate", &example("etl-fan-out.yaml")]);
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("tasks:          7"), "{stdout}");
    assert!(stdout.contains("depth:          4"), "{stdout}");
    assert!(stdout.contains("critical path:  7.0s (extract -> shard-"), "{stdout}");
    // Tasks with runtimes per worker count with their fastest.
    let output = run_taskfleet(&["validate", &example("topcuoglu.yaml")]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("critical path:  41.0s (n1 -> n2 -> n9 -> n10)"),
        "{stdout}"
    );
    assert!(!stdout.contains("without an estimate"), "{stdout}");
}

fn example(name: &str) -> String {
    format!("{}/../examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_examples_run_as_documented() {
    let output = run_taskfleet(&["run", &example("etl-fan-out.yaml"), "--json"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(json_report(&output)["counts"]["succeeded"], 7);

    let output = run_taskfleet(&[
        "run",
        &example("param-sweep.yaml"),
        "--workers",
        "4",
        "--policy",
        "priority",
        "--json",
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(json_report(&output)["counts"]["succeeded"], 13);

    let output = run_taskfleet(&["run", &example("retries-and-failures.yaml"), "--json"]);
    assert_eq!(output.status.code(), Some(1));
    let report = json_report(&output);
    assert_eq!(task_report(&report, "flaky-download")["state"], "succeeded");
    assert_eq!(task_report(&report, "flaky-download")["attempts"], 3);
    assert_eq!(task_report(&report, "stuck-query")["state"], "timed_out");
    assert_eq!(task_report(&report, "stuck-query")["attempts"], 2);
    assert_eq!(task_report(&report, "load-warehouse")["state"], "upstream_failed");
    assert_eq!(task_report(&report, "publish")["state"], "upstream_failed");
    assert_eq!(task_report(&report, "archive")["state"], "succeeded");
}

#[test]
fn placement_aware_policies_run_embedded_on_the_local_workers() {
    for policy in ["mct", "heft", "cpop"] {
        let output = run_taskfleet(&[
            "run",
            &example("etl-fan-out.yaml"),
            "--workers",
            "3",
            "--policy",
            policy,
            "--json",
        ]);
        assert!(
            output.status.success(),
            "{policy}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let report = json_report(&output);
        assert_eq!(report["counts"]["succeeded"], 7, "{policy}: {report:#}");
        for task in report["tasks"].as_array().unwrap() {
            let worker = task["worker"].as_str().unwrap_or_default();
            assert!(worker.starts_with("local-"), "{policy}: {task:#}");
        }
    }
}

#[test]
fn the_summary_table_goes_to_stdout() {
    let output = run_taskfleet(&["run", &example("etl-fan-out.yaml"), "--workers", "1"]);
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("TASK") && stdout.contains("merge") && stdout.contains("succeeded 7"),
        "{stdout}"
    );
}

#[test]
fn service_settings_come_from_defaults_file_environment_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_file(
        dir.path(),
        "scheduler.toml",
        "listen = \"0.0.0.0:9000\"\npolicy = \"fcfs\"\nprefix = \"from-file\"\n",
    );
    let output = taskfleet_tests::taskfleet()
        .args([
            "scheduler",
            "--config",
            &config,
            "--prefix",
            "from-flag",
            "--dump-config",
        ])
        .env("TASKFLEET_LEASE_TIMEOUT", "42s")
        .env("TASKFLEET_POLICY", "priority")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let dumped = String::from_utf8_lossy(&output.stdout);
    for line in [
        "listen = \"0.0.0.0:9000\"",
        "prefix = \"from-flag\"",
        "lease-timeout = \"42s\"",
        "policy = \"priority\"",
        "db = \"sqlite://taskfleet.sqlite\"",
    ] {
        assert!(dumped.contains(line), "missing {line:?} in:\n{dumped}");
    }
    let output = taskfleet_tests::taskfleet()
        .args(["worker", "--dump-config"])
        .env("TASKFLEET_SPEED", "2.5")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).contains("speed = 2.5"));
    let output = run_taskfleet(&["worker", "--speed", "0", "--broker", "amqp://127.0.0.1:1"]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("speed must be a positive number, not 0"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = run_taskfleet(&["worker", "--name", "my worker", "--broker", "amqp://127.0.0.1:1"]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("invalid worker name \"my worker\""),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let bad = write_file(dir.path(), "bad.toml", "concurency = 3\n");
    let output = run_taskfleet(&["worker", "--config", &bad, "--dump-config"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("unknown field `concurency`"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
