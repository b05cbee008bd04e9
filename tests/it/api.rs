//! The HTTP API against its own OpenAPI description, checked from outside by schemathesis
//! (installed by `scripts/test.sh`, or named by `TASKFLEET_SCHEMATHESIS`) on a live scheduler
//! with a worker and some workflows: no server errors, and no answer (status, content type,
//! headers, body) that contradicts the description.

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

#[test]
fn the_api_answers_as_its_openapi_description_says() {
    let mut fleet = Fleet::start(&amqp_url(), &[]);
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
        .args(["--max-examples", "60", "--seed", "20261201", "--no-color"])
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
}
