//! Mapping on unrelated machines in a live fleet: a scheduler and three workers over RabbitMQ
//! run a small ETC workload (each task's runtime differs by worker) under the batch policy,
//! and end within 10% of the makespan `taskfleet simulate` plans for it.

use std::time::Duration;

use taskfleet_tests::fleet::{amqp_url, Fleet};
use taskfleet_tests::{json_report, run_taskfleet, write_file};

/// Seconds since the start of its day of an RFC 3339 timestamp (`2026-12-03T14:12:00.123Z`),
/// with its date.
fn clock(timestamp: &str) -> (String, f64) {
    let (date, time) = timestamp.split_once('T').expect("a timestamp");
    let time = time.trim_end_matches('Z');
    let parts: Vec<f64> = time.split(':').map(|part| part.parse().expect("a number")).collect();
    (date.to_string(), parts[0] * 3600.0 + parts[1] * 60.0 + parts[2])
}

/// The live makespan: from the first start to the last end, in seconds.
fn live_makespan(status: &serde_json::Value) -> f64 {
    let tasks = status["tasks"].as_array().expect("tasks");
    let starts: Vec<(String, f64)> = tasks.iter().map(|t| clock(t["started_at"].as_str().unwrap())).collect();
    let ends: Vec<(String, f64)> = tasks
        .iter()
        .map(|t| clock(t["finished_at"].as_str().unwrap()))
        .collect();
    let first = starts.iter().cloned().min_by(|a, b| a.partial_cmp(b).unwrap()).unwrap();
    let last = ends.iter().cloned().max_by(|a, b| a.partial_cmp(b).unwrap()).unwrap();
    let days = if first.0 == last.0 { 0.0 } else { 86_400.0 };
    last.1 + days - first.1
}

#[test]
fn a_live_fleet_of_unrelated_workers_ends_near_the_simulators_plan() {
    // Twelve tasks whose runtime on w0, w1 and w2 follows an inconsistent ETC matrix (no
    // worker is fastest for all): each sleeps its entry for the worker running it.
    let workers = ["w0", "w1", "w2"];
    let mut tasks = String::new();
    for i in 0..12u64 {
        let etc: Vec<u64> = (0..3u64).map(|j| 600 + ((i * 7 + j * 5 + i * j) % 9) * 300).collect();
        let cases: Vec<String> = (0..3)
            .map(|j| format!("{}) sleep {:.3};;", workers[j], etc[j] as f64 / 1000.0))
            .collect();
        let by_worker: Vec<String> = (0..3).map(|j| format!("{}: {}ms", workers[j], etc[j])).collect();
        tasks.push_str(&format!(
            "  - {{id: t{i}, run: [sh, -c, 'case \"$TASKFLEET_WORKER\" in {} esac'], estimate_by_worker: {{{}}}}}\n",
            cases.join(" "),
            by_worker.join(", ")
        ));
    }
    let text = format!("name: etc\ntasks:\n{tasks}");

    let mut fleet = Fleet::start(&amqp_url(), &["--policy", "min-min"]);
    for name in workers {
        fleet.add_worker(name, &["--concurrency", "1"]);
    }
    fleet.wait_for_workers(3);
    let workflow = fleet.workflow("etc.yaml", &text);
    let fleet_file = write_file(
        fleet.dir_path(),
        "fleet.yaml",
        "workers:\n  - {name: w0}\n  - {name: w1}\n  - {name: w2}\n",
    );
    let planned = run_taskfleet(&[
        "simulate",
        workflow.to_str().unwrap(),
        "--fleet",
        &fleet_file,
        "--policy",
        "min-min",
        "--json",
    ]);
    let planned = json_report(&planned);
    let planned_makespan = planned["makespan"].as_f64().expect("a makespan");

    let id = fleet.submit(&workflow);
    let status = fleet.wait_for_end(&id, Duration::from_secs(60));
    assert_eq!(status["state"], "succeeded", "{status:#}");
    // Each task ran where the plan put it.
    for task in status["tasks"].as_array().unwrap() {
        let planned_on = planned["schedule"]
            .as_array()
            .unwrap()
            .iter()
            .find(|entry| entry["task"] == task["id"])
            .expect("planned")["worker"]
            .clone();
        assert_eq!(task["worker"], planned_on, "{task:#}");
    }
    let live = live_makespan(&status);
    eprintln!("min-min on three unrelated workers: live {live:.2}s, planned {planned_makespan:.2}s");
    assert!(
        (live - planned_makespan).abs() <= 0.1 * planned_makespan,
        "live makespan {live:.2}s, planned {planned_makespan:.2}s\n{status:#}"
    );
}
