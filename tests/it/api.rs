//! The HTTP API against its own OpenAPI description, checked from outside by schemathesis
//! (installed by `scripts/test.sh`, or named by `TASKFLEET_SCHEMATHESIS`) on a live scheduler
//! with a tokens file, a worker and some workflows: no server errors, and no answer (status,
//! content type, headers, body) that contradicts the description; calls without the token
//! must be refused (schemathesis' `ignored_auth`).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use taskfleet_tests::fleet::{amqp_url, Fleet};

/// The schemathesis command: `TASKFLEET_SCHEMATHESIS`, or the one `scripts/test.sh` installs.
fn schemathesis() -> PathBuf {
    if let Some(path) = std::env::var_os("TASKFLEET_SCHEMATHESIS") {
        return PathBuf::from(path);
    }
    let installed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/tools/venv/bin/schemathesis");
    assert!(
        installed.exists(),
        "schemathesis is missing at {}: run scripts/test.sh (it installs it) or set TASKFLEET_SCHEMATHESIS",
        installed.display()
    );
    installed
}

/// Writes a tokens file with a `write` token in `dir`; returns its path and the token.
pub(crate) fn tokens_file(dir: &std::path::Path) -> (String, String) {
    let (token, line) = new_token("write", "tests");
    let path = dir.join("api-tokens");
    std::fs::write(&path, format!("{line}\n")).unwrap();
    (path.to_str().unwrap().to_string(), token)
}

#[test]
fn the_api_answers_as_its_openapi_description_says() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, token) = tokens_file(dir.path());
    let mut fleet = Fleet::start(&amqp_url(), &["--api-tokens", &tokens]);
    fleet.token = Some(token.clone());
    fleet.add_worker("w1", &["--concurrency", "2"]);
    fleet.wait_for_workers(1);
    let done = fleet.workflow("done.yaml", "name: done\ntasks:\n  - {id: a, handler: noop}\n");
    let done_id = fleet.submit(&done);
    fleet.wait_for_end(&done_id, Duration::from_secs(30));
    let failing = fleet.workflow(
        "failing.yaml",
        "name: failing\ntasks:\n  - {id: a, run: [sh, -c, 'exit 3']}\n",
    );
    let failing_id = fleet.submit(&failing);
    fleet.wait_for_end(&failing_id, Duration::from_secs(30));

    let base = if fleet.api.starts_with("http") {
        fleet.api.clone()
    } else {
        format!("http://{}", fleet.api)
    };
    let spec = format!("{base}/v1/openapi.json");
    let output = Command::new(schemathesis())
        .current_dir(fleet.dir_path())
        .args(["run", &spec, "--checks", "all"])
        // A workflow's rules and a cursor's meaning are more than a schema can say: a 422 that
        // lists the problems, or a 400 for a cursor this API never gave, is the documented
        // answer to input that is valid for the schema only.
        .args(["--exclude-checks", "positive_data_acceptance"])
        // The event streams last as long as what they follow; the router tests read them.
        .args(["--exclude-path-regex", "/events$"])
        .args(["--max-examples", "60", "--seed", "20261201", "--no-color"])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .expect("schemathesis starts");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{report}\n{}\nscheduler log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        fleet.log("scheduler")
    );
    assert!(report.contains(" passed"), "{report}");
    // The token was used: the description's example workflow went in through the API.
    let listed = taskfleet_tests::json_report(&fleet.cli(&["list", "--name", "example", "--json"]));
    let all = taskfleet_tests::json_report(&fleet.cli(&["list", "--json"]));
    assert!(
        !listed.as_array().unwrap().is_empty(),
        "schemathesis never got past the token check:\n{report}\n{all:#}\n{}",
        fleet.log("scheduler")
    );
}

/// A token line for `scope`, as `taskfleet token new` prints it: (token, line).
pub(crate) fn new_token(scope: &str, name: &str) -> (String, String) {
    let output = taskfleet_tests::run_taskfleet(&["token", "new", "--scope", scope, "--name", name]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed = String::from_utf8_lossy(&output.stdout).to_string();
    let mut lines = printed.lines();
    (lines.next().unwrap().to_string(), lines.next().unwrap().to_string())
}

#[test]
fn tokens_are_checked_by_scope_and_revoked_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let (reader, read_line) = new_token("read", "viewer");
    let (writer, write_line) = new_token("write", "ci");
    let path = dir.path().join("api-tokens");
    std::fs::write(&path, format!("{read_line}\n{write_line}\n")).unwrap();
    let mut fleet = Fleet::start(&amqp_url(), &["--api-tokens", path.to_str().unwrap()]);
    let workflow = fleet.workflow("one.yaml", "name: one\ntasks:\n  - {id: a, handler: noop}\n");
    let submit = |fleet: &Fleet| fleet.cli(&["submit", workflow.to_str().unwrap()]);

    let refused = submit(&fleet);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("bearer token") && said.contains("HTTP 401"), "{said}");

    fleet.token = Some(reader);
    let output = fleet.cli(&["list", "--json"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let refused = submit(&fleet);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("HTTP 403"));

    fleet.token = Some(writer);
    assert!(submit(&fleet).status.success(), "a write token submits");

    // Revoked: its line deleted, then SIGHUP (the file is also watched; SIGHUP is at once).
    std::fs::write(&path, format!("{read_line}\n")).unwrap();
    fleet.signal_scheduler("scheduler", nix::sys::signal::Signal::SIGHUP);
    taskfleet_tests::wait_for("the revoked token to be refused", Duration::from_secs(10), || {
        String::from_utf8_lossy(&submit(&fleet).stderr).contains("HTTP 401")
    });
    assert!(
        fleet.log("scheduler").contains("API tokens read again"),
        "{}",
        fleet.log("scheduler")
    );
}

#[test]
fn without_tokens_the_api_serves_only_on_loopback() {
    let output = taskfleet_tests::run_taskfleet(&[
        "scheduler",
        "--broker",
        &amqp_url(),
        "--db",
        "sqlite::memory:",
        "--listen",
        "0.0.0.0:0",
    ]);
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains("refusing to serve the API on 0.0.0.0:0 without tokens"),
        "{said}"
    );
}

/// The value of the sample `name{labels}` in an OpenMetrics text, if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

#[test]
fn metrics_count_what_ran() {
    let mut fleet = Fleet::start(&amqp_url(), &["--lease-timeout", "2s"]);
    fleet.add_worker("w1", &["--concurrency", "3", "--metrics-listen", "127.0.0.1:0"]);
    fleet.wait_for_workers(1);
    let tasks: String = (0..5)
        .map(|idx| format!("  - {{id: ok{idx}, handler: noop}}\n"))
        .chain(std::iter::once(
            "  - {id: broken, run: [sh, -c, 'exit 3']}\n".to_string(),
        ))
        .collect();
    let workflow = fleet.workflow("counted.yaml", &format!("name: counted\ntasks:\n{tasks}"));
    let id = fleet.submit(&workflow);
    assert_eq!(fleet.wait_for_end(&id, Duration::from_secs(30))["state"], "failed");
    let mut text = String::new();
    taskfleet_tests::wait_for("the counts to reach /metrics", Duration::from_secs(10), || {
        let (code, body) = taskfleet_tests::http_get_text(&fleet.api, "/metrics");
        text = body;
        // The worker's slots read free once its next heartbeat says so.
        code == 200
            && sample(&text, r#"taskfleet_attempts_total{pool="default",outcome="succeeded"}"#) == Some(5.0)
            && sample(&text, r#"taskfleet_worker_slots{state="used"}"#) == Some(0.0)
    });
    for (series, expected) in [
        (r#"taskfleet_attempts_total{pool="default",outcome="succeeded"}"#, 5.0),
        (r#"taskfleet_attempts_total{pool="default",outcome="failed"}"#, 1.0),
        (r#"taskfleet_attempt_run_seconds_count{pool="default"}"#, 6.0),
        (r#"taskfleet_workers{state="serving"}"#, 1.0),
        (r#"taskfleet_workers{state="draining"}"#, 0.0),
        (r#"taskfleet_worker_slots{state="used"}"#, 0.0),
        (r#"taskfleet_worker_slots{state="free"}"#, 3.0),
        (r#"taskfleet_ready_tasks{pool="default",class="normal"}"#, 0.0),
        (r#"taskfleet_in_flight_attempts{pool="default",class="normal"}"#, 0.0),
        (
            r#"taskfleet_queue_wait_seconds_count{pool="default",class="normal"}"#,
            6.0,
        ),
        (r#"taskfleet_in_flight_slots{pool="default"}"#, 0.0),
        (r#"taskfleet_desired_workers{pool="default"}"#, 0.0),
        ("taskfleet_leases_expired_total", 0.0),
        ("taskfleet_messages_dead_lettered_total", 0.0),
    ] {
        assert_eq!(sample(&text, series), Some(expected), "{series} in:\n{text}");
    }
    assert!(
        sample(&text, "taskfleet_store_commit_seconds_count").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        sample(&text, "taskfleet_publish_seconds_count").is_some_and(|n| n >= 1.0),
        "{text}"
    );
}
