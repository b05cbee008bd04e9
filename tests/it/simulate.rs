//! `taskfleet simulate` through the real binary: JSON report, policy comparison, Gantt chart,
//! and a bad fleet file.

use std::path::PathBuf;

use taskfleet_tests::{run_taskfleet, write_file};

fn example(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name);
    path.to_str().expect("utf-8 path").to_string()
}

fn stdout(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}, stderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("utf-8 output")
}

#[test]
fn the_json_report_schedules_every_task_of_the_example() {
    let output = run_taskfleet(&[
        "simulate",
        &example("etl-fan-out.yaml"),
        "--fleet",
        &example("fleet-mixed.yaml"),
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("JSON report");
    assert_eq!(report["policy"], "fcfs");
    assert!(report["makespan"].as_f64().unwrap() > 0.0, "{report:#}");
    let schedule = report["schedule"].as_array().unwrap();
    let mut tasks: Vec<&str> = schedule.iter().map(|entry| entry["task"].as_str().unwrap()).collect();
    tasks.sort_unstable();
    assert_eq!(
        tasks,
        ["extract", "merge", "report", "shard-0", "shard-1", "shard-2", "shard-3"]
    );
    let last_end = schedule
        .iter()
        .map(|entry| entry["end"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert_eq!(report["makespan"].as_f64().unwrap(), last_end);
    assert_eq!(report["workflows"][0]["name"], "nightly-etl");
}

#[test]
fn compare_prints_a_row_per_policy() {
    let output = run_taskfleet(&[
        "simulate",
        &example("etl-fan-out.yaml"),
        &example("param-sweep.yaml"),
        "--offsets",
        "0,2s",
        "--fleet",
        &example("fleet-mixed.yaml"),
        "--compare",
        "fcfs,priority",
    ]);
    let text = stdout(&output);
    assert!(text.contains("MAKESPAN"), "{text}");
    let rows: Vec<&str> = text
        .lines()
        .filter(|line| line.contains(" fcfs ") || line.contains(" priority "))
        .collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert!(
        text.contains("FLOW (priority)"),
        "a flow time per workflow and policy: {text}"
    );

    let output = run_taskfleet(&[
        "simulate",
        &example("etl-fan-out.yaml"),
        "--fleet",
        &example("fleet-mixed.yaml"),
        "--compare",
        "fcfs,priority",
        "--json",
    ]);
    let reports: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("JSON array");
    let policies: Vec<&str> = reports
        .as_array()
        .unwrap()
        .iter()
        .map(|report| report["policy"].as_str().unwrap())
        .collect();
    assert_eq!(policies, ["fcfs", "priority"]);
}

#[test]
fn gantt_writes_an_svg_chart() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("etl.svg");
    let output = run_taskfleet(&[
        "simulate",
        &example("etl-fan-out.yaml"),
        "--fleet",
        &example("fleet-mixed.yaml"),
        "--gantt",
        svg.to_str().unwrap(),
    ]);
    stdout(&output);
    let chart = std::fs::read_to_string(&svg).expect("the chart was written");
    assert!(chart.starts_with("<svg"), "{chart}");
    assert!(chart.contains("shard-0"));
}

#[test]
fn a_bad_fleet_exits_2_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = write_file(
        dir.path(),
        "fleet.yaml",
        "workers:\n  - {name: a, speed: -2}\n  - {name: b, slots: 0}\n",
    );
    let output = run_taskfleet(&["simulate", &example("etl-fan-out.yaml"), "--fleet", &fleet]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("field `workers[0].speed`: must be a positive number"),
        "{stderr}"
    );
    assert!(stderr.contains("field `workers[1].slots`"), "{stderr}");

    // A fleet that cannot run the workflow: its pool is served by nobody.
    let fleet = write_file(dir.path(), "gpu.yaml", "workers:\n  - {name: g, pools: [gpu]}\n");
    let output = run_taskfleet(&["simulate", &example("etl-fan-out.yaml"), "--fleet", &fleet]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("pool `default` is served by no worker"), "{stderr}");
}

#[test]
fn the_optimal_makespan_and_each_policys_gap_are_printed() {
    let dir = tempfile::tempdir().unwrap();
    // On two slots FCFS starts the two short tasks first and the chain's head only after
    // them (6 s); the optimum starts the head at once (5 s).
    let workflow = taskfleet_tests::write_file(
        dir.path(),
        "gap.yaml",
        "name: gap\ntasks:\n  - {id: short-1, handler: noop, estimate: 1s}\n  - {id: short-2, handler: noop, estimate: 1s}\n  - {id: head, handler: noop, estimate: 1s}\n  - {id: tail, deps: [head], handler: noop, estimate: 4s}\n",
    );
    let fleet = taskfleet_tests::write_file(dir.path(), "fleet.yaml", "workers:\n  - {name: w, slots: 2}\n");
    let output = taskfleet_tests::run_taskfleet(&[
        "simulate",
        &workflow,
        "--fleet",
        &fleet,
        "--compare",
        "fcfs",
        "--optimal",
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("optimal makespan: 5.0s"), "{stdout}");
    assert!(stdout.contains("gap: fcfs +20.0%"), "{stdout}");
}

#[test]
fn the_heft_paper_sample_dag_and_its_optimal_schedule() {
    let output = run_taskfleet(&[
        "simulate",
        &example("topcuoglu.yaml"),
        "--fleet",
        &example("topcuoglu-fleet.yaml"),
        "--compare",
        "heft,cpop,optimal",
        "--json",
    ]);
    let reports: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("JSON reports");
    let makespans: Vec<(&str, f64)> = reports
        .as_array()
        .unwrap()
        .iter()
        .map(|report| (report["policy"].as_str().unwrap(), report["makespan"].as_f64().unwrap()))
        .collect();
    // The local search improves HEFT's plan of 80 (the paper's) to 76.
    assert_eq!(makespans, [("heft", 76.0), ("cpop", 86.0), ("optimal", 73.0)]);
    let constructive = run_taskfleet(&[
        "simulate",
        &example("topcuoglu.yaml"),
        "--fleet",
        &example("topcuoglu-fleet.yaml"),
        "--policy",
        "heft",
        "--plan-search",
        "0s",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&stdout(&constructive)).expect("a JSON report");
    assert_eq!(report["makespan"], 80.0, "the paper's schedule length");
    // The optimal schedule is a real schedule: every task once, on a worker of the fleet,
    // each after its parents.
    let optimal = &reports[2]["schedule"];
    let entries = optimal.as_array().unwrap();
    assert_eq!(entries.len(), 10);
    let end_of = |task: &str| {
        entries.iter().find(|entry| entry["task"] == task).unwrap()["end"]
            .as_f64()
            .unwrap()
    };
    let start_of = |task: &str| {
        entries.iter().find(|entry| entry["task"] == task).unwrap()["start"]
            .as_f64()
            .unwrap()
    };
    for (parent, child) in [("n1", "n2"), ("n2", "n8"), ("n9", "n10"), ("n7", "n10")] {
        assert!(start_of(child) >= end_of(parent), "{child} starts before {parent} ends");
    }
}

#[test]
fn actual_runtimes_replay_a_real_run_while_the_policy_sees_estimates() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let workflow = write_file(
        dir,
        "belief.yaml",
        "name: belief\ntasks:\n  - {id: short, handler: noop, estimate: 1s}\n  - {id: long, handler: noop, estimate: 5s}\n",
    );
    let fleet = write_file(dir, "fleet.yaml", "workers:\n  - {name: w, slots: 1, speed: 1}\n");
    let run = write_file(
        dir,
        "run.json",
        r#"{"runtimes": {"short": 10, "long": 1}, "features": {"long": {"bytes": 1024}}}"#,
    );
    let simulate = |extra: &[&str]| {
        let mut args = vec![
            "simulate",
            workflow.as_str(),
            "--fleet",
            fleet.as_str(),
            "--policy",
            "sjf",
            "--json",
        ];
        args.extend_from_slice(extra);
        run_taskfleet(&args)
    };
    let believed: serde_json::Value = serde_json::from_str(&stdout(&simulate(&[]))).unwrap();
    assert_eq!(believed["makespan"], 6.0);
    let replayed: serde_json::Value = serde_json::from_str(&stdout(&simulate(&["--actual", &run]))).unwrap();
    assert_eq!(replayed["makespan"], 11.0, "{replayed:#}");
    let first = &replayed["schedule"][0];
    assert_eq!(
        (&first["task"], &first["end"]),
        (&"short".into(), &10.0.into()),
        "sjf still believes `short` is short"
    );

    let wrong = write_file(dir, "wrong.json", r#"{"short": 1, "lnog": 2}"#);
    let output = simulate(&["--actual", &wrong]);
    assert_eq!(output.status.code(), Some(2));
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains("no runtime for task `long`") && said.contains("has no task `lnog`"),
        "{said}"
    );
    let output = simulate(&["--actual", &run, "--stochastic", "3"]);
    assert!(!output.status.success(), "actual runtimes and drawn ones do not mix");
}

#[test]
fn history_trains_the_predictor_before_the_replay() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let workflow = write_file(
        dir,
        "kinds.yaml",
        "name: kinds\ntasks:\n  - {id: short, kind: index, handler: noop, estimate: 1s}\n  - {id: long, kind: lookup, handler: noop, estimate: 5s}\n",
    );
    let fleet = write_file(dir, "fleet.yaml", "workers:\n  - {name: w, slots: 1, speed: 1}\n");
    let run = write_file(dir, "run.json", r#"{"short": 10, "long": 1}"#);
    let first_task = |extra: &[&str]| {
        let mut args = vec![
            "simulate",
            workflow.as_str(),
            "--fleet",
            fleet.as_str(),
            "--policy",
            "sjf",
            "--json",
            "--actual",
            run.as_str(),
        ];
        args.extend_from_slice(extra);
        let report: serde_json::Value = serde_json::from_str(&stdout(&run_taskfleet(&args))).unwrap();
        report["schedule"][0]["task"].as_str().unwrap().to_string()
    };
    assert_eq!(first_task(&[]), "short");
    assert_eq!(first_task(&["--predictive"]), "short", "nothing learned yet");
    let history = [run.as_str(); 6];
    let mut extra = vec!["--history"];
    extra.extend_from_slice(&history);
    assert_eq!(first_task(&extra), "long", "six earlier runs say which is short");
}

#[test]
fn an_imported_wfformat_instance_replays_its_runtimes() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    // A 1.5 instance written from the format's schema: a fan-out of three `blast` tasks
    // between a `split` and a `merge`.
    let instance = write_file(
        dir,
        "blast.json",
        r#"{"name": "blast", "schemaVersion": "1.5", "workflow": {
          "specification": {
            "tasks": [
              {"name": "split_ID01", "id": "ID01", "parents": [], "children": ["ID02", "ID03", "ID04"], "inputFiles": ["db"]},
              {"name": "blast_ID02", "id": "ID02", "parents": ["ID01"], "children": ["ID05"], "inputFiles": ["q1"]},
              {"name": "blast_ID03", "id": "ID03", "parents": ["ID01"], "children": ["ID05"], "inputFiles": ["q2"]},
              {"name": "blast_ID04", "id": "ID04", "parents": ["ID01"], "children": ["ID05"], "inputFiles": ["q3"]},
              {"name": "merge_ID05", "id": "ID05", "parents": ["ID02", "ID03", "ID04"], "children": []}
            ],
            "files": [{"id": "db", "sizeInBytes": 1000000}, {"id": "q1", "sizeInBytes": 10},
                      {"id": "q2", "sizeInBytes": 20}, {"id": "q3", "sizeInBytes": 30}]
          },
          "execution": {"makespanInSeconds": 26, "executedAt": "2026-11-01T10:00:00Z", "tasks": [
            {"id": "ID01", "runtimeInSeconds": 2}, {"id": "ID02", "runtimeInSeconds": 20},
            {"id": "ID03", "runtimeInSeconds": 8}, {"id": "ID04", "runtimeInSeconds": 9},
            {"id": "ID05", "runtimeInSeconds": 4}]}
        }}"#,
    );
    let prefix = dir.join("blast").to_string_lossy().into_owned();
    let output = run_taskfleet(&["import", "wfformat", &instance, "--output", &prefix]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let said = stdout(&output);
    assert!(said.contains("imported 5 tasks (6 dependencies, 3 kinds)"), "{said}");
    let fleet = write_file(dir, "fleet.yaml", "workers:\n  - {name: w, slots: 2, speed: 1}\n");
    let workflow = format!("{prefix}.workflow.json");
    let actual = format!("{prefix}.actual.json");
    let output = run_taskfleet(&[
        "simulate", &workflow, "--fleet", &fleet, "--policy", "fcfs", "--actual", &actual, "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("a JSON report");
    // Two slots: split 2 s, then blast 20 s beside 8 s + 9 s, then merge 4 s.
    assert_eq!(report["makespan"], 26.0, "{report:#}");
    // The ETA was forecast after each of the first four tasks ended (each 5% of five tasks).
    assert_eq!(report["scores"]["eta"]["checkpoints"], 4, "{report:#}");
    assert!(report["scores"]["eta"]["p90_coverage"].as_f64().is_some(), "{report:#}");
    // A broken instance is refused with the reason, exit code 2.
    let broken = write_file(dir, "broken.json", r#"{"name": "x", "workflow": {"tasks": "no"}}"#);
    let output = run_taskfleet(&["import", "wfformat", &broken, "--output", &prefix]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("neither `workflow.specification.tasks` nor `workflow.tasks` is a list"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
