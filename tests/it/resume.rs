//! Killing `taskfleet run` with SIGKILL mid-workflow and running it again resumes the run:
//! finished tasks are not run again, and the task that was running is dispatched again.

use std::time::Duration;

use taskfleet_tests::{json_report, process_alive, task_report, taskfleet, wait_for, write_file};

#[test]
fn a_killed_run_resumes_without_rerunning_finished_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("first-runs.log");
    let started = dir.path().join("second-started");
    let pid_file = dir.path().join("second.pid");
    let go = dir.path().join("go");
    let workflow = write_file(
        dir.path(),
        "resume.yaml",
        &format!(
            r#"
name: resumable
tasks:
  - id: first
    run: ["sh", "-c", "echo run >> {runs}; echo '{{\"n\": 1}}' > \"$TASKFLEET_OUTPUT\""]
  - id: second
    deps: [first]
    run: ["sh", "-c", "echo $$ > {pid}; touch {started}; while [ ! -e {go} ]; do sleep 0.05; done; cat \"$TASKFLEET_INPUTS\" > \"$TASKFLEET_OUTPUT\""]
  - id: third
    deps: [second]
    handler: noop
"#,
            runs = runs.display(),
            pid = pid_file.display(),
            started = started.display(),
            go = go.display()
        ),
    );
    let db = dir.path().join("state.sqlite");
    let db = db.to_str().unwrap();

    let mut child = taskfleet()
        .args(["run", &workflow, "--db", db, "--json"])
        .spawn()
        .unwrap();
    wait_for("the second task to start", Duration::from_secs(30), || started.exists());
    // Kill the run once the store knows the attempt started, so it counts as made.
    wait_for("the store to record the start", Duration::from_secs(30), || {
        let Ok(store) = rusqlite::Connection::open(db) else {
            return false;
        };
        store
            .query_row(
                "SELECT count(*) FROM attempts WHERE task_idx = 1 AND started_at IS NOT NULL",
                [],
                |row| row.get::<_, i64>(0),
            )
            .is_ok_and(|n| n == 1)
    });
    child.kill().unwrap();
    child.wait().unwrap();
    // SIGKILL gives the run no chance to stop its children: stop the orphan ourselves.
    let orphan: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(orphan), nix::sys::signal::Signal::SIGKILL).ok();
    wait_for("the orphaned task to exit", Duration::from_secs(5), || {
        !process_alive(orphan)
    });

    std::fs::write(&go, "").unwrap();
    let output = taskfleet()
        .args(["run", &workflow, "--db", db, "--json"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("resumed workflow"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = json_report(&output);
    assert_eq!(
        std::fs::read_to_string(&runs).unwrap(),
        "run\n",
        "the finished task ran once"
    );
    assert_eq!(task_report(&report, "first")["attempts"], 1);
    assert_eq!(
        task_report(&report, "second")["attempts"],
        2,
        "the interrupted attempt was dispatched again"
    );
    assert_eq!(task_report(&report, "third")["state"], "succeeded");

    // The run is finished: the same command now starts a fresh run.
    let output = taskfleet()
        .args(["run", &workflow, "--db", db, "--json"])
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_ne!(json_report(&output)["workflow_id"], report["workflow_id"]);
}

#[test]
fn a_second_run_on_the_same_store_refuses_at_once_naming_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("started");
    let go = dir.path().join("go");
    let workflow = write_file(
        dir.path(),
        "held.yaml",
        &format!(
            "name: held\ntasks:\n  - {{id: wait, run: [sh, -c, 'touch {started}; while [ ! -e {go} ]; do sleep 0.05; done']}}\n",
            started = started.display(),
            go = go.display()
        ),
    );
    let db = dir.path().join("state.sqlite");
    let db = db.to_str().unwrap();
    let mut first = taskfleet()
        .args(["run", &workflow, "--db", db, "--json"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the first run's task to start", Duration::from_secs(30), || {
        started.exists()
    });
    let second = taskfleet()
        .args(["run", &workflow, "--db", db, "--json"])
        .output()
        .unwrap();
    // Let the first run finish before anything can fail, so no run is left waiting.
    std::fs::write(&go, "").unwrap();
    let first_id = first.id();
    assert!(first.wait().unwrap().success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("is in use by process {first_id} (taskfleet run")),
        "{stderr}"
    );
    // Once the first run is gone, the store opens again.
    let again = taskfleet()
        .args(["run", &workflow, "--db", db, "--json"])
        .output()
        .unwrap();
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
}
