//! Request-based placement and reservations in the distributed fleet: the scheduler sends a
//! task that asks for resources only to a worker where they fit now, and keeps reserved
//! capacity for its owner, over the real RabbitMQ.

use std::time::Duration;

use taskfleet_tests::fleet::{amqp_url, Fleet};
use taskfleet_tests::{task_report, wait_for};

/// The most tasks among `tasks` that ran at once, from their start and end times.
fn most_at_once(status: &serde_json::Value, tasks: &[String]) -> usize {
    let mut events: Vec<(String, i32)> = Vec::new();
    for task in tasks {
        let report = task_report(status, task);
        events.push((report["finished_at"].as_str().unwrap().to_string(), -1));
        events.push((report["started_at"].as_str().unwrap().to_string(), 1));
    }
    // At equal times an end comes before a start (the sort puts -1 first).
    events.sort();
    let (mut now, mut most) = (0, 0);
    for (_, change) in events {
        now += change;
        most = most.max(now);
    }
    most as usize
}

#[test]
fn big_tasks_go_only_where_they_fit_and_never_more_than_fit_at_once() {
    let mut fleet = Fleet::start(&amqp_url(), &[]);
    fleet.add_worker("big", &["--memory", "4Gi", "--cpus", "8", "--concurrency", "4"]);
    fleet.add_worker("small", &["--memory", "1Gi", "--cpus", "8", "--concurrency", "4"]);
    fleet.wait_for_workers(2);
    let large: Vec<String> = (0..4).map(|i| format!("large{i}")).collect();
    let mut text = String::from("name: mixed\ntasks:\n");
    for id in &large {
        text.push_str(&format!(
            "  - {{id: {id}, run: [sleep, '0.6'], resources: {{memory: 2Gi}}}}\n"
        ));
    }
    for i in 0..6 {
        text.push_str(&format!(
            "  - {{id: little{i}, run: [sleep, '0.2'], resources: {{memory: 256Mi}}}}\n"
        ));
    }
    let workflow = fleet.workflow("mixed.yaml", &text);
    let id = fleet.submit(&workflow);
    let status = fleet.wait_for_end(&id, Duration::from_secs(60));
    assert_eq!(status["state"], "succeeded", "{status:#}");
    for id in &large {
        assert_eq!(task_report(&status, id)["worker"], "big", "{status:#}");
    }
    // 4 GiB hold two 2 GiB tasks at a time, never three.
    assert!(most_at_once(&status, &large) <= 2, "{status:#}");
    // The scheduler placed them: no worker was handed a task it had to give back.
    for worker in ["big", "small"] {
        let log = fleet.log(worker);
        assert!(!log.contains("handing it back"), "{worker}: {log}");
    }
}

#[test]
fn reserved_capacity_is_lent_while_idle_and_its_owner_goes_first_once_it_waits() {
    let mut fleet = Fleet::start(&amqp_url(), &["--policy", "fcfs", "--reserve", "high:licenses=1"]);
    fleet.add_worker("w", &["--resource", "licenses=2", "--concurrency", "4"]);
    fleet.wait_for_workers(1);
    let low = fleet.workflow(
        "low.yaml",
        "name: low\ntasks:\n  - {id: l1, run: [sleep, '2'], priority: low, resources: {licenses: 1}}\n  - {id: l2, run: [sleep, '6'], priority: low, resources: {licenses: 1}}\n  - {id: l3, run: [sleep, '0.2'], priority: low, resources: {licenses: 1}}\n",
    );
    let low_id = fleet.submit(&low);
    // l2 runs on the license kept for `high`, lent while high has nothing waiting.
    let mut status = serde_json::Value::Null;
    wait_for("l1 and l2 to run", Duration::from_secs(20), || {
        status = fleet.status(&low_id);
        ["l1", "l2"]
            .iter()
            .all(|task| task_report(&status, task)["state"] == "running")
    });
    assert_eq!(task_report(&status, "l2")["lent"], true, "{status:#}");
    assert!(task_report(&status, "l1").get("lent").is_none(), "{status:#}");
    let high = fleet.workflow(
        "high.yaml",
        "name: high\ntasks:\n  - {id: h, run: [sleep, '0.2'], priority: high, resources: {licenses: 1}}\n",
    );
    let high_id = fleet.submit(&high);
    let high_status = fleet.wait_for_end(&high_id, Duration::from_secs(30));
    let low_status = fleet.wait_for_end(&low_id, Duration::from_secs(30));
    assert_eq!(low_status["state"], "succeeded", "{low_status:#}");
    // When l1 ends, its license goes to the waiting high task, not to l3 (first come).
    let h_started = task_report(&high_status, "h")["started_at"]
        .as_str()
        .unwrap()
        .to_string();
    let l3_started = task_report(&low_status, "l3")["started_at"]
        .as_str()
        .unwrap()
        .to_string();
    let l1_finished = task_report(&low_status, "l1")["finished_at"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(h_started >= l1_finished, "h waited for a license: {high_status:#}");
    assert!(h_started < l3_started, "h {h_started} went before l3 {l3_started}");
}

/// The processes whose command line is exactly `argv`.
fn processes_running(argv: &[&str]) -> usize {
    let wanted: Vec<u8> = argv.iter().flat_map(|arg| arg.bytes().chain([0])).collect();
    std::fs::read_dir("/proc")
        .expect("list /proc")
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter(|entry| std::fs::read(entry.path().join("cmdline")).is_ok_and(|cmdline| cmdline == wanted))
        .count()
}

#[test]
fn a_worker_silent_past_its_lease_loses_the_task_and_stops_the_stale_process_when_it_wakes() {
    use nix::sys::signal::Signal;
    let mut fleet = Fleet::start(&amqp_url(), &["--lease-timeout", "2s"]);
    fleet.add_worker("paused", &["--memory", "2Gi"]);
    fleet.wait_for_workers(1);
    // A duration no other test uses, to find the task's processes by their command line.
    let argv = ["sleep", "9.137"];
    let workflow = fleet.workflow(
        "long.yaml",
        &format!(
            "name: long\ntasks:\n  - {{id: long, run: [{}, '{}'], resources: {{memory: 1Gi}}, retries: 2}}\n",
            argv[0], argv[1]
        ),
    );
    let id = fleet.submit(&workflow);
    fleet.wait_until_running_on(&id, "paused");
    fleet.signal_worker("paused", Signal::SIGSTOP);
    fleet.add_worker("other", &["--memory", "2Gi"]);
    // The lease lapses: the task runs again on the other worker, beside the stale process.
    fleet.wait_until_running_on(&id, "other");
    assert_eq!(processes_running(&argv), 2);
    fleet.signal_worker("paused", Signal::SIGCONT);
    // Its next heartbeat tells it the attempt is no longer its own: it stops it at once.
    wait_for("the stale process to stop", Duration::from_secs(10), || {
        processes_running(&argv) == 1
    });
    let status = fleet.wait_for_end(&id, Duration::from_secs(30));
    assert_eq!(status["state"], "succeeded", "{status:#}");
    assert_eq!(task_report(&status, "long")["worker"], "other", "{status:#}");
    assert_eq!(fleet.recorded_successes(&id), 1);
}
