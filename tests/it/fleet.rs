//! The distributed fleet as users run it: a `taskfleet scheduler` and `taskfleet worker`
//! processes talking only through the real RabbitMQ (`AMQP_ADDR`, by default the local one).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use taskfleet_common::state::TaskState;
use taskfleet_tests::fleet::{amqp_url, connect_transport, Fleet};
use taskfleet_tests::proxy::Proxy;
use taskfleet_tests::{json_report, wait_for};
use taskfleet_transport::queues::QueueNames;
use taskfleet_transport::{DeadLetter, Outgoing};

/// A layered DAG of `n_tasks` noop tasks, each depending on up to 3 tasks of the layer before.
fn layered_dag(n_tasks: usize, width: usize) -> String {
    let mut text = String::from("name: layered\ntasks:\n");
    for idx in 0..n_tasks {
        text.push_str(&format!("  - {{id: t{idx}, handler: noop"));
        if idx >= width {
            let layer_start = (idx / width - 1) * width;
            let deps: HashSet<usize> = [idx * 7, idx * 13 + 1, idx * 31 + 2]
                .iter()
                .map(|k| layer_start + k % width)
                .collect();
            let deps: Vec<String> = deps.iter().map(|dep| format!("t{dep}")).collect();
            text.push_str(&format!(", deps: [{}]", deps.join(", ")));
        }
        text.push_str("}\n");
    }
    text
}

#[test]
fn a_scheduler_and_three_workers_run_a_1000_task_dag() {
    three_workers_run_a_1000_task_dag(&amqp_url());
}

pub(crate) fn three_workers_run_a_1000_task_dag(broker: &str) {
    let mut fleet = Fleet::start(broker, &[]);
    for name in ["w1", "w2", "w3"] {
        fleet.add_worker(name, &["--concurrency", "4"]);
    }
    fleet.wait_for_workers(3);
    let workflow = fleet.workflow("dag.yaml", &layered_dag(1000, 50));
    let output = fleet.cli(&["submit", workflow.to_str().unwrap(), "--wait", "--json"]);
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        fleet.log("scheduler")
    );
    let report = json_report(&output);
    assert_eq!(report["counts"]["succeeded"], 1000, "{}", report["counts"]);
    let workers: HashSet<&str> = report["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|task| task["worker"].as_str())
        .collect();
    assert_eq!(workers.len(), 3, "every worker took part: {workers:?}");
}

#[test]
fn a_high_priority_task_overtakes_queued_low_ones() {
    high_priority_overtakes_queued_low_ones(&amqp_url());
}

pub(crate) fn high_priority_overtakes_queued_low_ones(broker: &str) {
    let mut fleet = Fleet::start(broker, &["--policy", "priority"]);
    fleet.add_worker("solo", &["--concurrency", "1"]);
    fleet.wait_for_workers(1);
    let low: String = (0..20)
        .map(|idx| format!("  - {{id: low{idx}, run: [sleep, '0.1'], priority: low}}\n"))
        .collect();
    let backlog = fleet.workflow("backlog.yaml", &format!("name: backlog\ntasks:\n{low}"));
    let urgent = fleet.workflow(
        "urgent.yaml",
        "name: urgent\ntasks:\n  - {id: now, handler: noop, priority: high}\n",
    );
    let output = fleet.cli(&["submit", backlog.to_str().unwrap()]);
    assert!(output.status.success());
    let backlog_id = String::from_utf8_lossy(&output.stdout).trim().to_string();
    wait_for("the backlog to start", Duration::from_secs(20), || {
        let status = json_report(&fleet.cli(&["status", &backlog_id, "--json"]));
        status["counts"]["succeeded"].as_u64().unwrap_or(0) >= 1
    });
    let output = fleet.cli(&["submit", urgent.to_str().unwrap(), "--wait", "--json"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let urgent_started = json_report(&output)["tasks"][0]["started_at"]
        .as_str()
        .unwrap()
        .to_string();
    let output = fleet.cli(&["status", &backlog_id, "--json"]);
    let backlog_status = json_report(&output);
    let n_after = backlog_status["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|task| {
            task["started_at"]
                .as_str()
                .is_none_or(|started| started > urgent_started.as_str())
        })
        .count();
    assert!(
        n_after >= 15,
        "the high task started before {n_after} of the 20 low ones; status {backlog_status:#}"
    );
}

#[test]
fn a_worker_killed_mid_run_loses_nothing_and_each_task_is_recorded_once() {
    killed_worker_loses_nothing(&amqp_url());
}

pub(crate) fn killed_worker_loses_nothing(broker: &str) {
    let mut fleet = Fleet::start(broker, &["--lease-timeout", "2s"]);
    fleet.add_worker("doomed", &["--concurrency", "3"]);
    fleet.add_worker("survivor", &["--concurrency", "3"]);
    fleet.wait_for_workers(2);
    kill_mid_run(&mut fleet, "doomed", 30, "{run: [sleep, '0.3']}");
}

/// Submits `n_tasks` tasks (each `{id: ..., ` plus `task`), kills `victim` with SIGKILL while
/// it runs one, and checks that the workflow still succeeds with every task recorded once.
/// Returns the final status.
fn kill_mid_run(fleet: &mut Fleet, victim: &str, n_tasks: usize, task: &str) -> serde_json::Value {
    let body = task.trim_start_matches('{');
    let tasks: String = (0..n_tasks).map(|idx| format!("  - {{id: t{idx}, {body}\n")).collect();
    let workflow = fleet.workflow("sleepy.yaml", &format!("name: sleepy\ntasks:\n{tasks}"));
    let id = fleet.submit(&workflow);
    fleet.wait_until_running_on(&id, victim);
    fleet.kill_worker(victim);
    let status = fleet.wait_for_end(&id, Duration::from_secs(60));
    assert_eq!(status["state"], "succeeded", "{status:#}");
    assert_eq!(status["counts"]["succeeded"], n_tasks);
    let recorded = fleet.recorded_successes(&id);
    assert_eq!(recorded, n_tasks as i64, "each task's success is recorded exactly once");
    status
}

#[test]
fn a_worker_joining_mid_run_takes_work_and_nothing_is_lost_or_recorded_twice() {
    worker_joining_mid_run(&amqp_url());
}

pub(crate) fn worker_joining_mid_run(broker: &str) {
    let mut fleet = Fleet::start(broker, &[]);
    fleet.add_worker("first", &["--concurrency", "2"]);
    fleet.wait_for_workers(1);
    let n_tasks = 120;
    let tasks: String = (0..n_tasks)
        .map(|idx| format!("  - {{id: t{idx}, run: [sleep, '0.1']}}\n"))
        .collect();
    let workflow = fleet.workflow("steady.yaml", &format!("name: steady\ntasks:\n{tasks}"));
    let id = fleet.submit(&workflow);
    wait_for("the first tasks to finish", Duration::from_secs(30), || {
        fleet.status(&id)["counts"]["succeeded"].as_u64().unwrap_or(0) >= 5
    });
    fleet.add_worker("joiner", &["--concurrency", "2"]);
    let status = fleet.wait_for_end(&id, Duration::from_secs(90));
    assert_eq!(status["state"], "succeeded", "{status:#}");
    assert_eq!(status["counts"]["succeeded"], n_tasks);
    assert_eq!(
        fleet.recorded_successes(&id),
        n_tasks as i64,
        "each task's success is recorded exactly once"
    );
    let workers: HashSet<&str> = status["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|task| task["worker"].as_str())
        .collect();
    assert_eq!(workers.len(), 2, "the joining worker took part: {workers:?}");
}

#[test]
fn failed_tasks_show_their_output_and_workflows_list_newest_first() {
    let mut fleet = Fleet::start(&amqp_url(), &[]);
    fleet.add_worker("w1", &["--concurrency", "2"]);
    fleet.wait_for_workers(1);
    let fine = fleet.workflow("fine.yaml", "name: fine\ntasks:\n  - {id: a, handler: noop}\n");
    let fine_id = fleet.submit(&fine);
    fleet.wait_for_end(&fine_id, Duration::from_secs(30));
    let failing = fleet.workflow(
        "failing.yaml",
        "name: failing\ntasks:\n  - {id: load, retries: {max: 1, backoff: 10ms}, \
         run: [sh, -c, 'echo \"try $TASKFLEET_ATTEMPT\"; echo no such table >&2; exit 3']}\n",
    );
    let output = fleet.cli(&["submit", failing.to_str().unwrap(), "--wait"]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let shown = String::from_utf8_lossy(&output.stdout);
    let under_table = shown.rsplit('┘').next().unwrap_or_default().to_string();
    assert!(
        under_table.contains("task load, attempt 2 on w1: failed, exit code 3"),
        "{shown}"
    );
    assert!(under_table.contains("  stderr:\n    no such table\n"), "{shown}");
    assert!(under_table.contains("taskfleet logs wf-"), "{shown}");

    let output = fleet.cli(&["list", "--json"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let listed = json_report(&output);
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|workflow| workflow["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["failing", "fine"], "newest first");
    let failing_id = listed[0]["workflow_id"].as_str().unwrap().to_string();
    let output = fleet.cli(&["list", "--state", "failed", "--json"]);
    assert_eq!(json_report(&output).as_array().unwrap().len(), 1);
    let output = fleet.cli(&["list", "--state", "sideways"]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("not a workflow state"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Every attempt's output, the earlier failed one included.
    let output = fleet.cli(&["logs", &failing_id, "load"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let logs = String::from_utf8_lossy(&output.stdout);
    for attempt in ["1", "2"] {
        assert!(
            logs.contains(&format!("== task load, attempt {attempt} on w1: failed, exit code 3")),
            "{logs}"
        );
        assert!(logs.contains(&format!("try {attempt}\n")), "{logs}");
    }
    assert_eq!(logs.matches("no such table").count(), 2, "{logs}");
    let output = fleet.cli(&["logs", &failing_id, "load", "--attempt", "1", "--json"]);
    let first = json_report(&output);
    assert_eq!(first["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(first["attempts"][0]["exit_code"], 3);
    let output = fleet.cli(&["logs", &failing_id, "nope"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("has no task `nope`"));
}

#[test]
fn a_failed_workflow_retried_runs_its_failures_again_and_not_what_succeeded() {
    let mut fleet = Fleet::start(&amqp_url(), &[]);
    fleet.add_worker("w1", &["--concurrency", "2"]);
    fleet.wait_for_workers(1);
    let fixed = fleet.dir_path().join("fixed");
    let workflow = fleet.workflow(
        "flaky.yaml",
        &format!(
            "name: flaky\ntasks:\n  - {{id: extract, handler: noop}}\n  \
             - {{id: load, deps: [extract], run: [sh, -c, 'test -f {}']}}\n  \
             - {{id: report, deps: [load], handler: noop}}\n  - {{id: lint, handler: noop}}\n",
            fixed.display()
        ),
    );
    let id = fleet.submit(&workflow);
    let status = fleet.wait_for_end(&id, Duration::from_secs(30));
    assert_eq!(status["state"], "failed", "{status}");
    let output = fleet.cli(&["retry", &id, "--task", "report"]);
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains("did not run because `load` failed; retry `load`"),
        "{said}"
    );

    std::fs::write(&fixed, "").unwrap();
    let output = fleet.cli(&["retry", &id]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let said = String::from_utf8_lossy(&output.stdout);
    assert_eq!(said, format!("{id} running (retrying 2: load, report)\n"));
    let status = fleet.wait_for_end(&id, Duration::from_secs(30));
    assert_eq!(status["state"], "succeeded", "{status}");
    let attempts: Vec<(String, u64)> = status["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|task| {
            (
                task["id"].as_str().unwrap().to_string(),
                task["attempts"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected = [("extract", 1), ("load", 2), ("report", 1), ("lint", 1)].map(|(id, n)| (id.to_string(), n));
    assert_eq!(
        attempts, expected,
        "succeeded tasks ran once; load ran again as attempt 2"
    );
    let output = fleet.cli(&["retry", &id]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("succeeded; nothing to retry"));
}

#[test]
fn events_follow_a_workflow_as_it_runs_and_end_with_it() {
    let mut fleet = Fleet::start(&amqp_url(), &[]);
    fleet.add_worker("w1", &["--concurrency", "2"]);
    fleet.wait_for_workers(1);
    let workflow = fleet.workflow(
        "live.yaml",
        "name: live\ntasks:\n  - {id: slow, run: [sleep, '1']}\n  - {id: next, deps: [slow], run: [sleep, '0.5']}\n",
    );
    let id = fleet.submit(&workflow);
    // Follows the workflow over HTTP until it ends.
    let output = fleet.cli(&["events", &id, "--json"]);
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{said}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let events: Vec<serde_json::Value> = said.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert!(events.iter().all(|event| event["workflow_id"] == id.as_str()), "{said}");
    let last = events.last().unwrap();
    assert_eq!(
        (&last["type"], &last["state"]),
        (&"workflow".into(), &"succeeded".into()),
        "{said}"
    );
    let of = |task: &str| -> Vec<String> {
        (events.iter())
            .filter(|event| event["type"] == "task" && event["task"] == task)
            .map(|event| event["state"].as_str().unwrap().to_string())
            .collect()
    };
    // `next` became ready only after `slow` ran for a second: its life is told in order, each
    // state as committed (states passed within one transaction are told as the last).
    let life: Vec<usize> = (of("next").iter())
        .map(|state| TaskState::ALL.iter().position(|known| known.as_str() == state).unwrap())
        .collect();
    assert!(life.is_sorted(), "{said}");
    assert_eq!(of("next").first().map(String::as_str), Some("ready"), "{said}");
    assert!(of("next").iter().any(|state| state == "running"), "{said}");
    assert_eq!(of("next").last().map(String::as_str), Some("succeeded"), "{said}");
    assert_eq!(of("slow").last().map(String::as_str), Some("succeeded"), "{said}");
    let at = |task: &str, state: &str| {
        (events.iter())
            .position(|event| event["task"] == task && event["state"] == state)
            .unwrap()
    };
    assert!(at("slow", "succeeded") < at("next", "ready"), "{said}");
    // What the stream told is what the store holds.
    let status = fleet.status(&id);
    assert_eq!(status["state"], "succeeded", "{status}");

    // Of a workflow that ended, its end only, as text.
    let output = fleet.cli(&["events", &id]);
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    assert_eq!(said.lines().count(), 1, "{said}");
    assert!(
        said.trim_end().ends_with(&format!("  {id}  workflow succeeded")),
        "{said}"
    );
}

#[test]
fn submit_wait_off_a_terminal_prints_progress_lines_and_ctrl_c_leaves_the_workflow_running() {
    use std::io::{BufRead as _, BufReader};
    let mut fleet = Fleet::start(&amqp_url(), &[]);
    fleet.add_worker("w1", &["--concurrency", "1"]);
    fleet.wait_for_workers(1);
    let slow = fleet.workflow("slow.yaml", "name: slow\ntasks:\n  - {id: nap, run: [sleep, '30']}\n");
    let mut waiting = taskfleet_tests::taskfleet()
        .args(["submit", slow.to_str().unwrap(), "--wait"])
        .env("TASKFLEET_SERVER", format!("http://{}", fleet.api))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, seen) = std::sync::mpsc::channel();
    let stderr = waiting.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let mut said = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !said
        .iter()
        .any(|line: &String| line.contains("0/1 finished · running 1 · running: nap"))
    {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match seen.recv_timeout(left) {
            Ok(line) => said.push(line),
            Err(_) => panic!("no progress line off a terminal: {said:#?}"),
        }
    }
    let pid = nix::unistd::Pid::from_raw(waiting.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = waiting.wait().unwrap();
    reader.join().unwrap();
    said.extend(seen.try_iter());
    assert_eq!(status.code(), Some(130), "{said:#?}");
    let last = said.join("\n");
    assert!(
        last.contains("keeps running on the scheduler") && last.contains("taskfleet cancel wf-"),
        "{last}"
    );
    let id = said
        .iter()
        .find_map(|line| line.strip_prefix("submitted workflow "))
        .expect("the id was printed")
        .to_string();
    assert_eq!(
        fleet.status(&id)["state"],
        "running",
        "Ctrl-C stopped the following only"
    );
    fleet.cli(&["cancel", &id]);
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_on_the_queues_is_dead_lettered_while_work_goes_on() {
    garbage_is_dead_lettered_while_work_goes_on(&amqp_url()).await;
}

pub(crate) async fn garbage_is_dead_lettered_while_work_goes_on(broker: &str) {
    let mut fleet = Fleet::start(broker, &[]);
    fleet.add_worker("w1", &["--concurrency", "2"]);
    let names = QueueNames::new(fleet.prefix.clone());
    let transport = connect_transport(broker, &names).await.unwrap();
    let task_queue = names.tasks("default", "normal");
    transport
        .declare(&[task_queue.clone(), names.submit(), names.dead_letters()])
        .await
        .unwrap();
    let mut dead = transport.consume(&names.dead_letters(), 100).await.unwrap();
    let valid = r#"{"idempotency_key": "through-the-broker", "workflow": {"name": "via-broker", "tasks": [{"id": "a", "handler": "noop"}]}}"#;
    transport
        .publish(vec![
            Outgoing::new(task_queue.clone(), &b"\xff\xfe not json"[..]),
            Outgoing::new(task_queue.clone(), &br#"{"v": 99, "future": true}"#[..]),
            Outgoing::new(names.submit(), &b"name: [unclosed"[..]),
            Outgoing::new(names.submit(), &b"\xc3\x28"[..]),
            Outgoing::new(names.submit(), valid.as_bytes()),
        ])
        .await
        .unwrap();
    let mut reasons = Vec::new();
    while reasons.len() < 4 {
        let delivery = tokio::time::timeout(Duration::from_secs(20), dead.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {} dead letters: {reasons:?}\n{}",
                    reasons.len(),
                    fleet.log("scheduler")
                )
            })
            .unwrap();
        let letter = DeadLetter::decode(&delivery.payload).expect("a dead letter");
        reasons.push(format!("{}: {}", letter.source_queue, letter.reason));
        delivery.ack().await.unwrap();
    }
    reasons.sort();
    let expected_sources = [&names.submit(), &names.submit(), &task_queue, &task_queue];
    for (reason, source) in reasons.iter().zip(expected_sources) {
        assert!(reason.starts_with(source.as_str()), "{reasons:#?}");
    }
    assert!(
        reasons
            .iter()
            .any(|reason| reason.contains("unsupported wire version 99")),
        "{reasons:#?}"
    );
    assert!(
        reasons.iter().any(|reason| reason.contains("invalid YAML")),
        "{reasons:#?}"
    );
    assert!(
        reasons.iter().any(|reason| reason.contains("not UTF-8")),
        "{reasons:#?}"
    );
    let db = fleet.db_path();
    wait_for(
        "the workflow submitted through the broker to succeed",
        Duration::from_secs(30),
        || {
            rusqlite::Connection::open(&db)
                .and_then(|db| {
                    db.query_row("SELECT state FROM workflows WHERE name = 'via-broker'", [], |row| {
                        row.get::<_, String>(0)
                    })
                })
                .is_ok_and(|state| state == "succeeded")
        },
    );
}

#[test]
fn the_fleet_waits_for_a_broker_that_is_unreachable_at_start() {
    let broker: SocketAddr = "127.0.0.1:5672".parse().unwrap();
    let mut proxy = Proxy::new(broker);
    let url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port());
    let mut fleet = Fleet::start(&url, &[]);
    fleet.add_worker("patient", &["--concurrency", "2"]);
    std::thread::sleep(Duration::from_secs(2));
    let ready = fleet.cli(&["workers"]);
    assert!(ready.status.success(), "the API answers while the broker is away");
    proxy.start();
    fleet.wait_for_workers(1);
    let workflow = fleet.workflow(
        "hello.yaml",
        "name: hello\ntasks:\n  - {id: a, handler: noop}\n  - {id: b, deps: [a], run: [true]}\n",
    );
    let output = fleet.cli(&["submit", workflow.to_str().unwrap(), "--wait"]);
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        fleet.log("scheduler")
    );
    assert!(
        fleet.log("scheduler").contains("retrying"),
        "the scheduler said it was retrying"
    );
}

#[test]
fn cancelling_a_workflow_stops_its_running_processes() {
    let mut fleet = Fleet::start(&amqp_url(), &[]);
    fleet.add_worker("w1", &["--concurrency", "2"]);
    fleet.wait_for_workers(1);
    let dir = fleet.dir_path().to_path_buf();
    let workflow = fleet.workflow(
        "hang.yaml",
        &format!(
            "name: hang\ntasks:\n  - {{id: a, run: [sh, -c, 'echo $$ > {dir}/a.pid; exec sleep 60']}}\n  - {{id: b, run: [sh, -c, 'echo $$ > {dir}/b.pid; exec sleep 60']}}\n  - {{id: after, deps: [a, b], handler: noop}}\n",
            dir = dir.display()
        ),
    );
    let id = fleet.submit(&workflow);
    let pid_of = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .ok()
            .and_then(|text| text.trim().parse::<i32>().ok())
    };
    wait_for("both tasks to run", Duration::from_secs(20), || {
        pid_of("a.pid").is_some() && pid_of("b.pid").is_some()
    });
    // A running attempt shows its lease: the worker that holds it, renewed by its heartbeats.
    fleet.wait_until_running_on(&id, "w1");
    let status = fleet.status(&id);
    let lease = &taskfleet_tests::task_report(&status, "a")["lease"];
    assert_eq!(lease["holder"], "w1", "{status:#}");
    assert!(
        lease["expires_at"].as_str().is_some_and(|at| at.ends_with('Z')),
        "{status:#}"
    );
    let output = fleet.cli(&["cancel", &id]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let status = fleet.wait_for_end(&id, Duration::from_secs(20));
    assert_eq!(status["state"], "cancelled", "{status:#}");
    assert_eq!(status["counts"]["cancelled"], 3, "{status:#}");
    for pid in [pid_of("a.pid").unwrap(), pid_of("b.pid").unwrap()] {
        wait_for("the cancelled process to be gone", Duration::from_secs(10), || {
            !taskfleet_tests::process_alive(pid)
        });
    }
    let output = fleet.cli(&["cancel", &id]);
    assert_eq!(
        output.status.code(),
        Some(2),
        "a finished workflow cannot be cancelled again"
    );
}

#[test]
fn sigterm_lets_a_worker_finish_its_task_and_take_no_more() {
    let mut fleet = Fleet::start(&amqp_url(), &[]);
    fleet.add_worker("drainer", &["--concurrency", "1"]);
    fleet.wait_for_workers(1);
    let workflow = fleet.workflow(
        "two.yaml",
        "name: two\ntasks:\n  - {id: first, run: [sleep, '1']}\n  - {id: second, deps: [first], handler: noop}\n",
    );
    let id = fleet.submit(&workflow);
    wait_for("the first task to run", Duration::from_secs(20), || {
        fleet.status(&id)["tasks"][0]["state"] == "running"
    });
    let exit = fleet.terminate_worker("drainer", Duration::from_secs(20));
    assert!(exit.success(), "the worker exits cleanly after draining: {exit:?}");
    let status = fleet.status(&id);
    assert_eq!(
        status["tasks"][0]["state"], "succeeded",
        "the running task finished: {status:#}"
    );
    assert_eq!(status["tasks"][0]["attempts"], 1);
    assert_eq!(
        status["tasks"][1]["attempts"], 0,
        "the drained worker took nothing new: {status:#}"
    );
    assert!(
        fleet.log("drainer").contains("Draining: taking no new tasks"),
        "{}",
        fleet.log("drainer")
    );
    fleet.add_worker("successor", &["--concurrency", "1"]);
    wait_for("the successor to finish the workflow", Duration::from_secs(20), || {
        fleet.status(&id)["state"] == "succeeded"
    });

    // A clean stop says so at INFO, with no ERROR line (the broker's connection closing
    // included) and, in a log file, no colours.
    assert!(fleet.terminate_worker("successor", Duration::from_secs(20)).success());
    assert!(fleet
        .terminate_scheduler("scheduler", Duration::from_secs(20))
        .success());
    for (name, stopped) in [
        ("drainer", "Worker stopped."),
        ("successor", "Worker stopped."),
        ("scheduler", "Scheduler stopped."),
    ] {
        let log = fleet.log(name);
        let said = |level: &str, what: &str| log.lines().any(|line| line.contains(level) && line.contains(what));
        assert!(said(" INFO ", stopped), "{name}: {log}");
        assert!(!log.lines().any(|line| line.contains(" ERROR ")), "{name}: {log}");
        assert!(!log.contains('\u{1b}'), "{name} wrote colours to a file: {log}");
    }
}

#[test]
fn a_restarted_scheduler_picks_up_where_it_left_off() {
    let mut fleet = Fleet::start(&amqp_url(), &[]);
    fleet.add_worker("w1", &["--concurrency", "2"]);
    fleet.wait_for_workers(1);
    let chain: String = (0..8)
        .map(|idx| match idx {
            0 => "  - {id: c0, run: [sleep, '0.3']}\n".to_string(),
            _ => format!("  - {{id: c{idx}, deps: [c{}], run: [sleep, '0.3']}}\n", idx - 1),
        })
        .collect();
    let workflow = fleet.workflow("chain.yaml", &format!("name: chain\ntasks:\n{chain}"));
    let id = fleet.submit(&workflow);
    wait_for("two tasks to finish", Duration::from_secs(20), || {
        fleet.status(&id)["counts"]["succeeded"].as_u64().unwrap_or(0) >= 2
    });
    fleet.restart_scheduler();
    let status = fleet.wait_for_end(&id, Duration::from_secs(60));
    assert_eq!(status["state"], "succeeded", "{status:#}");
    assert_eq!(status["tasks"][0]["attempts"], 1, "finished tasks did not run again");
    assert_eq!(status["tasks"][1]["attempts"], 1, "finished tasks did not run again");
    let recorded = fleet.recorded_successes(&id);
    assert_eq!(recorded, 8, "each task's success is recorded once");
}

#[test]
fn the_fleet_survives_the_broker_going_away_mid_run() {
    let broker: SocketAddr = "127.0.0.1:5672".parse().unwrap();
    let mut proxy = Proxy::new(broker);
    proxy.start();
    let url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port());
    let mut fleet = Fleet::start(&url, &["--lease-timeout", "5s"]);
    fleet.add_worker("w1", &["--concurrency", "2"]);
    fleet.wait_for_workers(1);
    let tasks: String = (0..20)
        .map(|idx| format!("  - {{id: t{idx}, run: [sleep, '0.2']}}\n"))
        .collect();
    let workflow = fleet.workflow("steady.yaml", &format!("name: steady\ntasks:\n{tasks}"));
    let id = fleet.submit(&workflow);
    wait_for("a few tasks to finish", Duration::from_secs(20), || {
        fleet.status(&id)["counts"]["succeeded"].as_u64().unwrap_or(0) >= 3
    });
    proxy.stop();
    std::thread::sleep(Duration::from_secs(2));
    proxy.start();
    let status = fleet.wait_for_end(&id, Duration::from_secs(60));
    assert_eq!(status["state"], "succeeded", "{status:#}\n{}", fleet.log("scheduler"));
    assert!(
        fleet.log("scheduler").contains("reconnecting"),
        "{}",
        fleet.log("scheduler")
    );
    let recorded = fleet.recorded_successes(&id);
    assert_eq!(recorded, 20, "each task's success is recorded once");
}

#[test]
fn a_task_running_through_a_scheduler_restart_is_adopted_not_run_twice() {
    let mut fleet = Fleet::start(&amqp_url(), &["--lease-timeout", "5s"]);
    fleet.add_worker("steady", &["--concurrency", "1"]);
    fleet.wait_for_workers(1);
    let runs = fleet.dir_path().join("runs.log");
    let workflow = fleet.workflow(
        "long.yaml",
        &format!(
            "name: long\ntasks:\n  - {{id: long, run: [sh, -c, 'echo run >> {}; sleep 3']}}\n  - {{id: after, deps: [long], handler: noop}}\n",
            runs.display()
        ),
    );
    let id = fleet.submit(&workflow);
    wait_for("the long task to run", Duration::from_secs(20), || {
        fleet.status(&id)["tasks"][0]["state"] == "running"
    });
    fleet.restart_scheduler();
    let status = fleet.wait_for_end(&id, Duration::from_secs(60));
    assert_eq!(status["state"], "succeeded", "{status:#}");
    assert_eq!(
        status["tasks"][0]["attempts"], 1,
        "the running attempt was adopted: {status:#}"
    );
    assert_eq!(std::fs::read_to_string(&runs).unwrap(), "run\n", "the task ran once");
    let log = std::fs::read_to_string(fleet.dir_path().join("scheduler-2.log")).unwrap_or_default();
    assert!(log.contains("Adopted an attempt"), "{log}");
}

#[test]
fn heft_runs_a_chain_on_the_fast_worker_and_mct_moves_work_off_a_lost_one() {
    let mut fleet = Fleet::start(&amqp_url(), &["--policy", "heft", "--lease-timeout", "2s"]);
    fleet.add_worker("fast", &["--concurrency", "1", "--speed", "4"]);
    fleet.add_worker("slow", &["--concurrency", "1", "--speed", "1"]);
    fleet.wait_for_workers(2);
    // Each step takes 1 s on `fast` and 4 s on `slow`, and moving an output costs 10 s: the
    // plan keeps the whole chain on `fast`.
    let mut tasks = String::from("  - {id: s0, handler: noop, estimate: 4s}\n");
    for idx in 1..5 {
        tasks.push_str(&format!(
            "  - {{id: s{idx}, handler: noop, estimate: 4s, deps: [{{task: s{}, transfer: 10s}}]}}\n",
            idx - 1
        ));
    }
    let workflow = fleet.workflow("chain.yaml", &format!("name: chain\ntasks:\n{tasks}"));
    let id = fleet.submit(&workflow);
    let status = fleet.wait_for_end(&id, Duration::from_secs(30));
    assert_eq!(status["state"], "succeeded", "{status:#}");
    for task in status["tasks"].as_array().unwrap() {
        assert_eq!(task["worker"], "fast", "{task:#}");
    }
    drop(fleet);

    let mut fleet = Fleet::start(&amqp_url(), &["--policy", "mct", "--lease-timeout", "2s"]);
    fleet.add_worker("doomed", &["--concurrency", "2", "--speed", "4"]);
    fleet.add_worker("steady", &["--concurrency", "2", "--speed", "1"]);
    fleet.wait_for_workers(2);
    let status = kill_mid_run(&mut fleet, "doomed", 12, "{run: [sleep, '0.4'], estimate: 2s}");
    assert!(
        status["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|task| task["worker"] == "steady"),
        "{status:#}"
    );
}

#[test]
fn tasks_planned_on_a_worker_that_drains_run_elsewhere() {
    let mut fleet = Fleet::start(&amqp_url(), &["--policy", "heft", "--lease-timeout", "2s"]);
    fleet.add_worker("leaving", &["--concurrency", "1"]);
    fleet.add_worker("staying", &["--concurrency", "1"]);
    fleet.wait_for_workers(2);
    // The plan splits eight equal tasks between the two workers.
    let tasks: String = (0..8)
        .map(|idx| format!("  - {{id: t{idx}, run: [sleep, '0.5'], estimate: 1s}}\n"))
        .collect();
    let workflow = fleet.workflow("split.yaml", &format!("name: split\ntasks:\n{tasks}"));
    let id = fleet.submit(&workflow);
    fleet.wait_until_running_on(&id, "leaving");
    // It finishes what it runs and leaves; what was queued for it runs on `staying`.
    let exit = fleet.terminate_worker("leaving", Duration::from_secs(20));
    assert!(exit.success(), "{exit:?}");
    let status = fleet.wait_for_end(&id, Duration::from_secs(60));
    assert_eq!(status["state"], "succeeded", "{status:#}");
    assert_eq!(
        fleet.recorded_successes(&id),
        8,
        "each task's success is recorded exactly once"
    );
    let on_leaving = status["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|task| task["worker"] == "leaving")
        .count();
    assert!(on_leaving < 8, "{status:#}");
}

#[test]
fn a_fan_in_too_large_to_send_fails_alone_and_the_fleet_goes_on() {
    let mut fleet = Fleet::start(&amqp_url(), &[]);
    fleet.add_worker("w1", &["--concurrency", "4"]);
    fleet.wait_for_workers(1);
    // 20 parents with outputs just under the 1 MiB limit: the child's inputs are 20 MB, more
    // than a task message may carry.
    let script = fleet.workflow(
        "big_output.py",
        "import os\nopen(os.environ['TASKFLEET_OUTPUT'], 'w').write('\"' + 'x' * 1000000 + '\"')\n",
    );
    let mut text = String::from("name: huge-fan-in\ntasks:\n");
    for idx in 0..20 {
        text.push_str(&format!("  - {{id: p{idx}, run: [python3, '{}']}}\n", script.display()));
    }
    let parents: Vec<String> = (0..20).map(|idx| format!("p{idx}")).collect();
    text.push_str(&format!(
        "  - {{id: fan-in, deps: [{}], handler: noop}}\n",
        parents.join(", ")
    ));
    text.push_str("  - {id: after-fan-in, deps: [fan-in], handler: noop}\n");
    text.push_str("  - {id: unrelated, handler: noop}\n");
    let id = fleet.submit(&fleet.workflow("huge.yaml", &text));
    let status = fleet.wait_for_end(&id, Duration::from_secs(60));
    assert_eq!(status["state"], "failed", "{status:#}");
    let task = |id: &str| {
        status["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|task| task["id"] == id)
            .cloned()
            .unwrap()
    };
    let fan_in = task("fan-in");
    assert_eq!(fan_in["state"], "failed", "{fan_in:#}");
    assert_eq!(
        fan_in["attempts"], 1,
        "not retried: the same message would be refused again"
    );
    let error = fan_in["error"].as_str().unwrap();
    assert!(
        error.starts_with("the task's message would be 19.1 MiB (of which 19.1 MiB are the outputs of 20 parents), more than the 16 MiB"),
        "{error}"
    );
    assert_eq!(task("after-fan-in")["state"], "upstream_failed");
    assert_eq!(task("unrelated")["state"], "succeeded");
    assert_eq!(status["counts"]["succeeded"], 21);
    // The scheduler goes on dispatching.
    let next = fleet.submit(&fleet.workflow("next.yaml", "name: next\ntasks:\n  - {id: a, handler: noop}\n"));
    let status = fleet.wait_for_end(&next, Duration::from_secs(30));
    assert_eq!(status["state"], "succeeded", "{status:#}");
}

#[test]
fn a_task_delivered_again_after_its_worker_died_runs_under_the_new_workers_lease() {
    // The broker hands the message of a killed worker to another one, which starts the same
    // attempt; the attempt's lease moves to it, so no third copy is dispatched when the dead
    // worker's lease lapses. (The dead worker's own child is an orphan until execution limits
    // put tasks in cgroups.)
    let mut fleet = Fleet::start(&amqp_url(), &["--lease-timeout", "2s"]);
    fleet.add_worker("doomed", &["--concurrency", "1"]);
    fleet.wait_for_workers(1);
    let runs = fleet.dir_path().join("runs.log");
    let workflow = fleet.workflow(
        "long.yaml",
        &format!(
            "name: long\ntasks:\n  - {{id: long, run: [sh, -c, 'echo run >> {}; sleep 4']}}\n",
            runs.display()
        ),
    );
    let id = fleet.submit(&workflow);
    fleet.wait_until_running_on(&id, "doomed");
    fleet.add_worker("heir", &["--concurrency", "1"]);
    fleet.wait_for_workers(2);
    fleet.kill_worker("doomed");
    let status = fleet.wait_for_end(&id, Duration::from_secs(60));
    assert_eq!(status["state"], "succeeded", "{status:#}");
    let task = &status["tasks"][0];
    assert_eq!(task["worker"], "heir", "{status:#}");
    assert_eq!(
        task["attempts"], 1,
        "the attempt moved instead of being dispatched again: {status:#}"
    );
    // Let a lapsed lease have its say, then count the runs: the orphan and the heir's.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(std::fs::read_to_string(&runs).unwrap(), "run\nrun\n");
    assert!(
        fleet.log("scheduler").contains("its lease moved there"),
        "{}",
        fleet.log("scheduler")
    );
}

#[test]
fn a_second_scheduler_on_the_same_store_refuses_to_start() {
    let fleet = Fleet::start(&amqp_url(), &[]);
    let db = format!("sqlite://{}", fleet.db_path().display());
    let output = taskfleet_tests::taskfleet()
        .args([
            "scheduler",
            "--broker",
            &fleet.broker,
            "--db",
            &db,
            "--prefix",
            &fleet.prefix,
        ])
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .expect("run a second scheduler");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("is in use by process"), "{stderr}");
    assert!(stderr.contains("taskfleet scheduler"), "{stderr}");
}

#[test]
fn workers_announce_what_they_offer_and_an_impossible_request_is_refused_at_submit() {
    let mut fleet = Fleet::start(&amqp_url(), &[]);
    fleet.add_worker("small", &["--cpus", "2", "--memory", "1Gi", "--resource", "licenses=1"]);
    fleet.wait_for_workers(1);
    let output = fleet.cli(&["workers", "--json"]);
    let workers: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let capacity = &workers[0]["capacity"];
    assert_eq!(capacity["cpu"], 2.0, "{workers:#}");
    assert_eq!(capacity["memory_bytes"], 1u64 << 30, "{workers:#}");
    assert_eq!(capacity["custom"]["licenses"], 1.0, "{workers:#}");

    let too_big = fleet.workflow(
        "big.yaml",
        "name: big\ntasks:\n  - {id: fits, handler: noop, resources: {cpu: 2, memory: 512Mi, licenses: 1}}\n  - {id: huge, handler: noop, resources: {memory: 4Gi}}\n",
    );
    let output = fleet.cli(&["submit", too_big.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2), "refused as invalid");
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains("task `huge`, field `resources`: no worker of pool `default` could ever run it")
            && said.contains("memory: asks for 4 GiB, 3 GiB more than the 1 GiB offered"),
        "{said}"
    );
    assert!(!said.contains("`fits`"), "{said}");
    let fine = fleet.workflow(
        "fine.yaml",
        "name: fine\ntasks:\n  - {id: fits, handler: noop, resources: {cpu: 2, memory: 512Mi, licenses: 1}}\n",
    );
    let id = fleet.submit(&fine);
    assert_eq!(fleet.wait_for_end(&id, Duration::from_secs(20))["state"], "succeeded");
}

#[test]
fn a_task_left_without_a_big_enough_worker_says_why_it_waits() {
    let mut fleet = Fleet::start(&amqp_url(), &["--lease-timeout", "2s"]);
    fleet.add_worker("big", &["--memory", "4Gi"]);
    fleet.add_worker("small", &["--memory", "1Gi"]);
    fleet.wait_for_workers(2);
    let workflow = fleet.workflow(
        "large.yaml",
        "name: large\ntasks:\n  - {id: large, run: [sleep, '6'], resources: {memory: 2Gi}, retries: 3}\n",
    );
    let id = fleet.submit(&workflow);
    fleet.wait_until_running_on(&id, "big");
    fleet.kill_worker("big");
    let mut status = serde_json::Value::Null;
    wait_for("the task to say why it waits", Duration::from_secs(20), || {
        status = fleet.status(&id);
        taskfleet_tests::task_report(&status, "large")["waiting"]
            .as_str()
            .is_some_and(|why| why.contains("the closest, small, falls short: memory: asks for 2 GiB"))
    });
    let large = taskfleet_tests::task_report(&status, "large");
    assert_ne!(
        large["state"], "running",
        "it never runs on the small worker: {status:#}"
    );
}

#[test]
fn status_warns_of_ready_tasks_in_a_pool_no_live_worker_serves_and_shows_elapsed_apart_from_predicted() {
    let mut fleet = Fleet::start(&amqp_url(), &[]);
    fleet.add_worker("cpu", &["--concurrency", "1"]);
    fleet.wait_for_workers(1);
    let workflow = fleet.workflow(
        "pools.yaml",
        "name: pools\ntasks:\n  - {id: here, run: [sleep, '30'], estimate: 40s}\n  - {id: there, handler: noop, pool: gpu}\n",
    );
    let id = fleet.submit(&workflow);
    fleet.wait_until_running_on(&id, "cpu");
    let status = fleet.status(&id);
    assert_eq!(
        taskfleet_tests::task_report(&status, "there")["waiting"],
        "no live worker serves pool `gpu`",
        "{status:#}"
    );
    let output = fleet.cli(&["status", &id]);
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        table.contains("warning: 1 task cannot start: no live worker serves pool `gpu`"),
        "{table}"
    );
    let here = table
        .lines()
        .find(|line| line.contains(" here "))
        .expect("a row for `here`");
    assert!(here.contains("so far"), "the elapsed time of a running task: {here}");
    assert!(here.contains("~40.0s (p90"), "its predicted time, apart: {here}");
    fleet.cli(&["cancel", &id]);
}

#[test]
fn tasks_run_only_on_workers_with_the_labels_they_select() {
    let mut fleet = Fleet::start(&amqp_url(), &[]);
    fleet.add_worker("arm", &["--label", "arch=arm64", "--concurrency", "2"]);
    fleet.add_worker("x86", &["--label", "arch=x86_64", "--concurrency", "2"]);
    fleet.wait_for_workers(2);
    let tasks: String = (0..6)
        .map(|i| format!("  - {{id: t{i}, run: [sleep, '0.2'], selector: {{arch: arm64}}}}\n"))
        .collect();
    let workflow = fleet.workflow("arm.yaml", &format!("name: arm\ntasks:\n{tasks}"));
    let id = fleet.submit(&workflow);
    let status = fleet.wait_for_end(&id, Duration::from_secs(60));
    assert_eq!(status["state"], "succeeded", "{status:#}");
    for task in status["tasks"].as_array().unwrap() {
        assert_eq!(task["worker"], "arm", "{status:#}");
    }
    let nowhere = fleet.workflow(
        "riscv.yaml",
        "name: riscv\ntasks:\n  - {id: r, handler: noop, selector: {arch: riscv64}}\n",
    );
    let output = fleet.cli(&["submit", nowhere.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains("task `r`, field `selector`: no worker of pool `default` has the labels arch=riscv64 it selects"),
        "{said}"
    );
}
