//! The scheduler on the PostgreSQL store (`DATABASE_URL`, by default the local one), with
//! workers over the real RabbitMQ.

use std::time::Duration;

use taskfleet_tests::fleet::{amqp_url, Fleet};
use taskfleet_tests::postgres::Schema;

#[test]
fn a_fleet_on_postgres_runs_a_workflow_through_a_scheduler_restart_recording_each_outcome_once() {
    let schema = Schema::new("fleet");
    let db = schema.store_url();
    let mut fleet = Fleet::start(&amqp_url(), &["--db", &db, "--lease-timeout", "2s"]);
    fleet.add_worker("w1", &["--concurrency", "4"]);
    fleet.wait_for_workers(1);
    let tasks: String = (0..40)
        .map(|i| {
            let deps = if i >= 10 {
                format!(", deps: [t{}]", i - 10)
            } else {
                String::new()
            };
            format!("  - {{id: t{i}, run: [sleep, '0.1']{deps}}}\n")
        })
        .collect();
    let workflow = fleet.workflow("chains.yaml", &format!("name: chains\ntasks:\n{tasks}"));
    let id = fleet.submit(&workflow);
    fleet.wait_until_running_on(&id, "w1");
    // A second scheduler on the same database is refused while the first runs.
    let second = taskfleet_tests::taskfleet()
        .args([
            "scheduler",
            "--db",
            &db,
            "--listen",
            "127.0.0.1:0",
            "--broker",
            &amqp_url(),
        ])
        .output()
        .expect("run a second scheduler");
    assert!(!second.status.success());
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(
        said.contains("another taskfleet scheduler uses this database"),
        "{said}"
    );
    // SIGKILL mid-run: the next scheduler rebuilds from PostgreSQL and adopts what still runs.
    fleet.restart_scheduler();
    let status = fleet.wait_for_end(&id, Duration::from_secs(60));
    assert_eq!(status["state"], "succeeded", "{status:#}\n{}", fleet.log("scheduler-2"));
    assert_eq!(status["counts"]["succeeded"], 40, "{status:#}");
    let recorded = schema.psql(&format!(
        "SELECT count(*), count(DISTINCT task_idx) FROM attempts WHERE workflow_id = '{id}' AND outcome = 'succeeded'"
    ));
    assert_eq!(recorded, "40|40", "each task's success is recorded once");
    let version = schema.psql("SELECT version FROM taskfleet_schema");
    assert_eq!(version, "1");
}

#[test]
fn a_scheduler_refuses_a_postgres_database_of_a_newer_schema() {
    let schema = Schema::new("newer");
    schema.psql("CREATE TABLE taskfleet_schema (version BIGINT NOT NULL); INSERT INTO taskfleet_schema VALUES (42)");
    let output = taskfleet_tests::taskfleet()
        .args(["scheduler", "--db", &schema.store_url(), "--listen", "127.0.0.1:0"])
        .output()
        .expect("run the scheduler");
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains("database schema version 42 is newer than this build knows (1): upgrade taskfleet to open it"),
        "{said}"
    );
}

#[test]
fn the_scheduler_keeps_its_work_when_postgres_drops_its_connections_mid_run() {
    let schema = Schema::new("dropped");
    let db = schema.store_url();
    let mut fleet = Fleet::start(&amqp_url(), &["--db", &db]);
    fleet.add_worker("w1", &["--concurrency", "4"]);
    fleet.wait_for_workers(1);
    let tasks: String = (0..40)
        .map(|i| {
            let deps = if i >= 4 {
                format!(", deps: [t{}]", i - 4)
            } else {
                String::new()
            };
            format!("  - {{id: t{i}, run: [sleep, '0.1']{deps}}}\n")
        })
        .collect();
    let workflow = fleet.workflow("steps.yaml", &format!("name: steps\ntasks:\n{tasks}"));
    let id = fleet.submit(&workflow);
    fleet.wait_until_running_on(&id, "w1");
    for _ in 0..3 {
        schema.psql(&format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = '{}'",
            schema.name
        ));
        std::thread::sleep(Duration::from_millis(300));
    }
    let status = fleet.wait_for_end(&id, Duration::from_secs(60));
    assert_eq!(status["state"], "succeeded", "{status:#}\n{}", fleet.log("scheduler"));
    let recorded = schema.psql(&format!(
        "SELECT count(*), count(DISTINCT task_idx) FROM attempts WHERE workflow_id = '{id}' AND outcome = 'succeeded'"
    ));
    assert_eq!(recorded, "40|40", "each task's success is recorded once");
}
