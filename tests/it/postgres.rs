//! The scheduler on the PostgreSQL store (`DATABASE_URL`, by default the local one), with
//! workers over the real RabbitMQ.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use taskfleet_tests::fleet::{amqp_url, Fleet};
use taskfleet_tests::postgres::Schema;
use taskfleet_tests::proxy::Proxy;
use taskfleet_tests::wait_for;

#[test]
fn a_fleet_on_postgres_runs_a_workflow_through_a_scheduler_restart_recording_each_outcome_once() {
    let schema = Schema::new("fleet");
    let db = schema.store_url();
    let mut fleet = Fleet::start(
        &amqp_url(),
        &["--db", &db, "--lease-timeout", "2s", "--leader-lease", "2s"],
    );
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
    assert_eq!(version, "4");
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
        said.contains("database schema version 42 is newer than this build knows (4): upgrade taskfleet to open it"),
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

/// Chains of short tasks: `n` tasks, each after the one `width` before it.
fn chains(n: usize, width: usize, seconds: &str) -> String {
    let tasks: String = (0..n)
        .map(|i| {
            let deps = if i >= width {
                format!(", deps: [t{}]", i - width)
            } else {
                String::new()
            };
            format!("  - {{id: t{i}, run: [sleep, '{seconds}']{deps}}}\n")
        })
        .collect();
    format!("name: chains\ntasks:\n{tasks}")
}

/// Two schedulers on one database: the first leads, `standby` stands by and knows the fleet.
fn leader_and_standby(schema: &Schema, workers: &[&str]) -> Fleet {
    let db = schema.store_url();
    let flags = ["--db", &db, "--lease-timeout", "2s", "--leader-lease", "2s"];
    let mut fleet = Fleet::start(&amqp_url(), &flags);
    // The first leads before the second starts.
    wait_for_role(&fleet, "scheduler", "leader", Duration::from_secs(20));
    fleet.add_scheduler("standby");
    for worker in workers {
        fleet.add_worker(worker, &["--concurrency", "2"]);
    }
    fleet.talk_to("standby");
    fleet.wait_for_workers(workers.len());
    let (code, ready) = fleet.readyz("standby");
    assert_eq!((code, ready["role"].as_str()), (200, Some("standby")), "{ready}");
    assert!(ready["leader"].is_string(), "a standby knows who leads: {ready}");
    fleet
}

fn wait_for_role(fleet: &Fleet, scheduler: &str, role: &str, timeout: Duration) -> serde_json::Value {
    let mut ready = serde_json::Value::Null;
    wait_for(&format!("{scheduler} to be the {role}"), timeout, || {
        let (code, body) = fleet.readyz(scheduler);
        ready = body;
        code == 200 && ready["role"] == role
    });
    ready
}

fn successes(schema: &Schema, id: &str) -> String {
    schema.psql(&format!(
        "SELECT count(*), count(DISTINCT task_idx) FROM attempts WHERE workflow_id = '{id}' AND outcome = 'succeeded'"
    ))
}

#[test]
fn the_standby_takes_over_from_a_killed_leader_and_each_outcome_is_recorded_once() {
    let schema = Schema::new("failover");
    let mut fleet = leader_and_standby(&schema, &["w1", "w2"]);
    // Submitted through the standby: the leader runs it.
    let workflow = fleet.workflow("chains.yaml", &chains(40, 8, "0.2"));
    let id = fleet.submit(&workflow);
    fleet.wait_until_running_on(&id, "w1");
    let done_before = schema.psql(&format!(
        "SELECT count(*) FROM tasks WHERE workflow_id = '{id}' AND state = 'succeeded'"
    ));
    let killed = Instant::now();
    fleet.signal_scheduler("scheduler", Signal::SIGKILL);
    let ready = wait_for_role(&fleet, "standby", "leader", Duration::from_secs(20));
    let took_over = killed.elapsed();
    assert_eq!(ready["epoch"], 2, "the lease changed hands once: {ready}");
    wait_for(
        "a task to succeed under the new leader",
        Duration::from_secs(20),
        || {
            schema.psql(&format!(
                "SELECT count(*) FROM tasks WHERE workflow_id = '{id}' AND state = 'succeeded'"
            )) != done_before
        },
    );
    eprintln!(
        "leader killed: the standby led after {took_over:?}, the work went on after {:?} (lease 2s)",
        killed.elapsed()
    );
    let status = fleet.wait_for_end(&id, Duration::from_secs(60));
    assert_eq!(status["state"], "succeeded", "{status:#}\n{}", fleet.log("standby"));
    assert_eq!(successes(&schema, &id), "40|40", "each task's success is recorded once");
}

#[test]
fn a_leader_paused_past_its_lease_is_fenced_off_and_stands_by_when_it_wakes() {
    let schema = Schema::new("paused");
    let mut fleet = leader_and_standby(&schema, &["w1"]);
    let workflow = fleet.workflow("chains.yaml", &chains(30, 4, "0.2"));
    let id = fleet.submit(&workflow);
    fleet.wait_until_running_on(&id, "w1");
    fleet.signal_scheduler("scheduler", Signal::SIGSTOP);
    wait_for_role(&fleet, "standby", "leader", Duration::from_secs(20));
    // Results keep coming while the old leader sleeps; then it wakes up.
    std::thread::sleep(Duration::from_secs(1));
    fleet.signal_scheduler("scheduler", Signal::SIGCONT);
    let ready = wait_for_role(&fleet, "scheduler", "standby", Duration::from_secs(20));
    assert_eq!(
        ready["leader"].as_str().map(|holder| holder.starts_with("standby#")),
        Some(true),
        "{ready}"
    );
    let said = fleet.log("scheduler");
    assert!(said.contains("Stepping down"), "{said}");
    let status = fleet.wait_for_end(&id, Duration::from_secs(60));
    assert_eq!(status["state"], "succeeded", "{status:#}\n{}", fleet.log("standby"));
    assert_eq!(successes(&schema, &id), "30|30", "each task's success is recorded once");
    let epoch = schema.psql("SELECT epoch FROM taskfleet_leader");
    assert_eq!(epoch, "2", "the woken leader did not take the lease back");
}

#[test]
fn a_standby_stores_submissions_and_cancellations_for_the_leader() {
    let schema = Schema::new("standby_api");
    let fleet = leader_and_standby(&schema, &["w1"]);
    let workflow = fleet.workflow(
        "long.yaml",
        "name: long\ntasks:\n  - {id: a, run: [sleep, '30']}\n  - {id: b, run: [sleep, '30'], deps: [a]}\n",
    );
    let id = fleet.submit(&workflow);
    fleet.wait_until_running_on(&id, "w1");
    let cancelled = fleet.cli(&["cancel", &id]);
    assert!(
        cancelled.status.success(),
        "{}",
        String::from_utf8_lossy(&cancelled.stderr)
    );
    let status = fleet.wait_for_end(&id, Duration::from_secs(20));
    assert_eq!(status["state"], "cancelled", "{status:#}\n{}", fleet.log("scheduler"));
    let asked = schema.psql(&format!("SELECT cancel_requested FROM workflows WHERE id = '{id}'"));
    assert_eq!(asked, "t");
}

#[test]
fn a_leader_cut_off_from_the_database_steps_down_and_the_standby_finishes_the_work_once() {
    let schema = Schema::new("cut_off");
    let mut proxy = Proxy::new(schema.address().parse().expect("the database's address"));
    proxy.start();
    let via_proxy = schema.store_url_via(&format!("127.0.0.1:{}", proxy.port()));
    let flags = ["--db", &via_proxy, "--lease-timeout", "2s", "--leader-lease", "2s"];
    let mut fleet = Fleet::start(&amqp_url(), &flags);
    wait_for_role(&fleet, "scheduler", "leader", Duration::from_secs(20));
    fleet.add_scheduler_on("standby", Some(&schema.store_url()));
    fleet.add_worker("w1", &["--concurrency", "2"]);
    fleet.talk_to("standby");
    fleet.wait_for_workers(1);
    let workflow = fleet.workflow("chains.yaml", &chains(30, 4, "0.2"));
    let id = fleet.submit(&workflow);
    fleet.wait_until_running_on(&id, "w1");
    // The leader loses the database (the broker and its workers it still has).
    proxy.stop();
    wait_for_role(&fleet, "standby", "leader", Duration::from_secs(20));
    wait_for("the cut-off leader to step down", Duration::from_secs(20), || {
        fleet.readyz("scheduler").1["role"] == "standby"
    });
    let (code, ready) = fleet.readyz("scheduler");
    assert_eq!(code, 503, "a standby that cannot reach the store is not ready: {ready}");
    let status = fleet.wait_for_end(&id, Duration::from_secs(60));
    assert_eq!(status["state"], "succeeded", "{status:#}\n{}", fleet.log("standby"));
    // Back in touch, it stands by behind the new leader.
    proxy.start();
    let ready = wait_for_role(&fleet, "scheduler", "standby", Duration::from_secs(20));
    assert_eq!(
        ready["leader"].as_str().map(|holder| holder.starts_with("standby#")),
        Some(true),
        "{ready}"
    );
    assert_eq!(successes(&schema, &id), "30|30", "each task's success is recorded once");
}
