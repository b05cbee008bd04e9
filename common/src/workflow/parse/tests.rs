//! Validation tests: one workflow text in, every problem message out.

use std::time::Duration;

use super::*;
use crate::workflow::Dep;

#[track_caller]
fn check_ok(text: &str) -> WorkflowSpec {
    let options = ValidateOptions {
        known_handlers: Some(vec!["noop".into(), "sleep".into(), "fail".into()]),
        ..Default::default()
    };
    match parse_workflow(text, &options) {
        Ok(spec) => spec,
        Err(invalid) => panic!("expected a valid workflow, got {invalid}"),
    }
}

#[track_caller]
fn check_problems(text: &str, expected: &[&str]) {
    let options = ValidateOptions {
        known_handlers: Some(vec!["noop".into(), "sleep".into(), "fail".into()]),
        max_tasks: 5,
    };
    let invalid = parse_workflow(text, &options).expect_err("expected problems");
    let actual: Vec<String> = invalid.problems.iter().map(ToString::to_string).collect();
    assert_eq!(actual, expected);
}

#[test]
fn full_example_parses() {
    let spec = check_ok(
        r#"
name: nightly-etl
defaults: {priority: normal, retries: 2, timeout: 10m, pool: default}
tasks:
  - id: extract
    run: ["python3", "extract.py", "--day", "2026-11-23"]
    env: {MODE: full}
  - id: transform
    deps: [extract]
    run: ["./transform.sh"]
    priority: high
    weight: 10
    estimate: 45s
    resources: {cpu: 1.5, memory: 512Mi}
    timeout: 5m
    retries: {max: 3, backoff: 1s, max_backoff: 1m}
  - id: report
    deps: [{task: transform, transfer: 2s}]
    handler: sleep
    args: {duration: 2s}
"#,
    );
    assert_eq!(spec.name, "nightly-etl");
    let extract = &spec.tasks[0];
    assert_eq!(extract.retry.max_retries, 2);
    assert_eq!(extract.timeout, Some(Duration::from_secs(600)));
    assert_eq!(
        extract.action,
        Action::Run {
            argv: vec![
                "python3".into(),
                "extract.py".into(),
                "--day".into(),
                "2026-11-23".into()
            ],
            env: [("MODE".to_string(), "full".to_string())].into()
        }
    );
    let transform = &spec.tasks[1];
    assert_eq!(transform.priority, PriorityClass::High);
    assert_eq!(transform.weight, 10.0);
    assert_eq!(transform.estimate, Some(Duration::from_secs(45)));
    assert_eq!(
        transform.resources,
        Resources {
            cpu: 1.5,
            memory: 512 << 20,
            slots: 1,
            ..Resources::default()
        }
    );
    assert_eq!(transform.timeout, Some(Duration::from_secs(300)));
    assert_eq!(
        transform.retry,
        RetryPolicy {
            max_retries: 3,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60)
        }
    );
    assert_eq!(
        spec.tasks[2].deps,
        vec![Dep {
            task: 1,
            transfer_ms: 2000
        }]
    );
    assert_eq!(spec.dag.children(0), &[1]);
    let summary = spec.summary();
    assert_eq!(summary.depth, 3);
    assert_eq!(summary.critical_path, vec!["extract", "transform", "report"]);
    assert_eq!(summary.critical_path_length, Duration::from_secs(45));
}

#[test]
fn json_uses_the_same_schema() {
    let spec = check_ok(
        r#"{"name": "j", "tasks": [{"id": "a", "handler": "noop"}, {"id": "b", "deps": ["a"], "run": ["true"]}]}"#,
    );
    assert_eq!(spec.tasks.len(), 2);
    assert_eq!(spec.dag.parents(1), &[0]);
}

#[test]
fn cycle_is_reported_as_its_path() {
    check_problems(
        "name: w\ntasks:\n  - {id: a, deps: [c], handler: noop}\n  - {id: b, deps: [a], handler: noop}\n  - {id: c, deps: [b], handler: noop}\n",
        &["task `a`, field `deps`: dependency cycle: a -> b -> c -> a"],
    );
    check_problems(
        "name: w\ntasks:\n  - {id: a, deps: [a], handler: noop}\n",
        &["task `a`, field `deps`: dependency cycle: a -> a"],
    );
}

#[test]
fn unknown_dependency_names_the_closest_id() {
    check_problems(
        "name: w\ntasks:\n  - {id: extract, handler: noop}\n  - {id: load, deps: [extrct], handler: noop}\n",
        &["task `load`, field `deps`: unknown dependency `extrct` (did you mean `extract`?)"],
    );
    check_problems(
        "name: w\ntasks:\n  - {id: extract, handler: noop}\n  - {id: load, deps: [zzzzzzzzzzzz], handler: noop}\n",
        &["task `load`, field `deps`: unknown dependency `zzzzzzzzzzzz`"],
    );
}

#[test]
fn duplicate_ids_and_deps() {
    check_problems(
        "name: w\ntasks:\n  - {id: a, handler: noop}\n  - {id: a, handler: noop}\n  - {id: b, deps: [a, a], handler: noop}\n",
        &[
            "task `a`, field `id`: duplicate id: tasks #0 and #1 are both `a`",
            "task `b`, field `deps`: `a` is listed twice",
        ],
    );
}

#[test]
fn unknown_fields_list_the_expected_ones() {
    check_problems(
        "name: w\nschedule: daily\ntasks:\n  - {id: a, handler: noop, dep: [b]}\n",
        &[
            "field `schedule`: unknown field; expected one of: name, description, tenant, defaults, tasks",
            "task `a`, field `dep`: unknown field (did you mean `deps`?); expected one of: id, description, kind, deps, run, handler, args, env, priority, weight, estimate, estimate_by_worker, features, resources, limits, timeout, retries, pool, selector, prefer",
        ],
    );
}

#[test]
fn run_and_handler_are_exclusive() {
    check_problems(
        "name: w\ntasks:\n  - {id: both, run: [ls], handler: noop}\n  - {id: neither}\n  - {id: empty, run: []}\n  - {id: shell, run: 'ls -l'}\n",
        &[
            "task `both`, field `run`: a task has exactly one of `run` or `handler`, not both",
            "task `neither`, field `run`: a task needs one of `run` (a command) or `handler` (a built-in)",
            "task `empty`, field `run`: must not be empty: the first argument is the program to run",
            "task `shell`, field `run`: must be a list of arguments such as [\"python3\", \"job.py\"]; commands never go through a shell (use [\"sh\", \"-c\", \"...\"] for one)",
        ],
    );
}

#[test]
fn bad_units_and_values() {
    check_problems(
        "name: w\ntasks:\n  - id: a\n    handler: noop\n    timeout: 5x\n    resources: {memory: 12 parsecs, cpu: -1}\n    retries: {max: 2, backoff: 1m, max_backoff: 1s}\n    priority: urgent\n",
        &[
            "task `a`, field `priority`: must be one of high, normal, low (got \"urgent\")",
            "task `a`, field `resources.cpu`: must be a positive number of cores",
            "task `a`, field `resources.memory`: invalid size `12 parsecs`: unknown unit `parsecs` (use Ki, Mi, Gi, Ti, K, M, G, T or bytes)",
            "task `a`, field `timeout`: invalid duration `5x`: unknown unit `x` (use ms, s, m, h or d)",
            "task `a`, field `retries.max_backoff`: must not be shorter than `backoff`",
        ],
    );
}

#[test]
fn bad_ids_and_handlers() {
    check_problems(
        "name: w\ntasks:\n  - {id: 'has space', handler: noop}\n  - {handler: noop}\n  - {id: s, handler: sleep}\n  - {id: u, handler: frobnicate}\n",
        &[
            "task `#0`, field `id`: `has space` is not a valid id (1 to 128 of A-Z a-z 0-9 _ . -)",
            "task `#1`, field `id`: missing (every task needs an id)",
            "task `s`, field `args.duration`: the `sleep` handler needs a duration",
            "task `u`, field `handler`: unknown handler `frobnicate` (known: noop, sleep, fail)",
        ],
    );
}

#[test]
fn too_many_tasks() {
    let tasks: String = (0..6)
        .map(|idx| format!("  - {{id: t{idx}, handler: noop}}\n"))
        .collect();
    check_problems(
        &format!("name: w\ntasks:\n{tasks}"),
        &["field `tasks`: 6 tasks is more than the limit of 5"],
    );
}

#[test]
fn workflow_level_problems() {
    check_problems(
        "tasks: []\n",
        &[
            "field `name`: missing (every workflow needs a name)",
            "field `tasks`: a workflow needs at least one task",
        ],
    );
    check_problems("- a\n- b\n", &["a workflow must be a mapping with `name` and `tasks`"]);
    let invalid = parse_workflow("name: [unclosed\n", &ValidateOptions::default()).unwrap_err();
    assert!(invalid.problems[0].message.starts_with("invalid YAML"), "{invalid}");
    let invalid = parse_workflow("{\"name\": }", &ValidateOptions::default()).unwrap_err();
    assert!(
        invalid.problems[0]
            .message
            .starts_with("invalid JSON at line 1 column 10"),
        "{invalid}"
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let invalid = parse_workflow(
        "name: w\ntasks:\n  - {id: a, deps: [nope], run: []}\n  - {id: b, handler: noop, timeout: soon}\n  - {id: a, handler: noop}\n",
        &ValidateOptions::default(),
    )
    .unwrap_err();
    assert_eq!(invalid.problems.len(), 4, "{invalid}");
    assert!(invalid.to_string().starts_with("invalid workflow (4 problems)"));
}

#[test]
fn defaults_apply_and_tasks_override() {
    let spec = check_ok(
        "name: w\ndefaults: {priority: low, pool: gpu, env: {A: '1', B: '2'}, retries: 4}\ntasks:\n  - {id: a, run: [env], env: {B: three}, priority: high, retries: 0}\n  - {id: b, handler: noop}\n",
    );
    let Action::Run { env, .. } = &spec.tasks[0].action else {
        panic!("run task")
    };
    assert_eq!(env.get("A").map(String::as_str), Some("1"));
    assert_eq!(env.get("B").map(String::as_str), Some("three"));
    assert_eq!(spec.tasks[0].priority, PriorityClass::High);
    assert_eq!(spec.tasks[0].retry.max_retries, 0);
    assert_eq!(spec.tasks[1].priority, PriorityClass::Low);
    assert_eq!(spec.tasks[1].retry.max_retries, 4);
    assert_eq!(&*spec.tasks[1].pool, "gpu");
}

#[test]
fn closest_field_is_suggested_and_backoff_cap_follows_backoff() {
    check_problems(
        "name: w\ntasks:\n  - {id: a, rn: [ls], description: [not, text]}\n",
        &[
            "task `a`, field `run`: a task needs one of `run` (a command) or `handler` (a built-in)",
            "task `a`, field `description`: must be a string",
            "task `a`, field `rn`: unknown field (did you mean `run`?); expected one of: id, description, kind, deps, run, handler, args, env, priority, weight, estimate, estimate_by_worker, features, resources, limits, timeout, retries, pool, selector, prefer",
        ],
    );
    let spec = check_ok("name: w\ntasks:\n  - {id: a, handler: noop, retries: {max: 3, backoff: 10m}}\n");
    assert_eq!(spec.tasks[0].retry.max_backoff, Duration::from_secs(600));
}

#[test]
fn features_come_from_numeric_args_and_the_features_mapping() {
    let spec = check_ok(
        "name: f\ntasks:\n  - {id: a, handler: sleep, args: {duration: 1s, rows: 1200, scale: 0.5, tag: x}, features: {input_mb: 40}}\n",
    );
    let features: Vec<(&str, f64)> = spec.tasks[0].features.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(features, [("input_mb", 40.0), ("rows", 1200.0), ("scale", 0.5)]);
    check_problems(
        "name: f\ntasks:\n  - {id: a, handler: noop, features: {input_mb: big}}\n",
        &["task `a`, field `features.input_mb`: must be a number"],
    );
}

#[test]
fn hostile_text_gets_named_problems() {
    // A byte-order mark is not "more than one document".
    let spec = check_ok("\u{feff}name: w\ntasks:\n  - {id: a, handler: noop}\n");
    assert_eq!(spec.name, "w");
    check_problems(
        "name: w\ntasks:\n  - {id: a, handler: noop}\nname: x\n",
        &["invalid YAML at line 4 column 1: key `name` is given twice"],
    );
    check_problems(
        "name: w\ntasks:\n  - {id: a, handler: noop, timeout: .nan}\n",
        &["invalid YAML at line 3 column 37: `.nan` is not a finite number, which JSON (and so a task) cannot hold"],
    );
    check_problems(
        "name: \"evil\\e[2J\\0\"\ntasks:\n  - {id: a, handler: noop}\n",
        &["field `name`: `evil\\u{1b}[2J\\u{0}` holds control characters (escapes, NUL, line breaks), which a name must not"],
    );
}

#[test]
fn a_task_carries_at_most_one_mebibyte_to_run() {
    let big = "x".repeat(crate::wire::MAX_ACTION_BYTES);
    let text = format!("name: w\ntasks:\n  - {{id: a, handler: noop, args: {{blob: \"{big}\"}}}}\n  - {{id: b, run: [echo, \"{big}\"]}}\n");
    let options = ValidateOptions::default();
    let invalid = parse_workflow(&text, &options).unwrap_err();
    let messages: Vec<String> = invalid.problems.iter().map(ToString::to_string).collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(
        messages[0].starts_with("task `a`, field `args`: what the task runs takes 10486"),
        "{}",
        messages[0]
    );
    assert!(
        messages[1].starts_with("task `b`, field `run`: what the task runs takes"),
        "{}",
        messages[1]
    );
    // Aliases count expanded: 20 aliases of a 100 KB string are 2 MB.
    let aliases = vec!["*s"; 20].join(", ");
    let text = format!(
        "name: w\ntasks:\n  - id: a\n    handler: noop\n    args: {{s: &s \"{}\", l: [{aliases}]}}\n",
        "y".repeat(100_000)
    );
    let invalid = parse_workflow(&text, &options).unwrap_err();
    assert!(
        invalid
            .to_string()
            .contains("field `args`: what the task runs takes 21"),
        "{invalid}"
    );
}

#[test]
fn gpus_and_custom_resources_are_requested_and_typos_still_caught() {
    let spec =
        check_ok("name: r\ntasks:\n  - {id: a, handler: noop, resources: {gpu: 2, licenses: 3, scratch_gb: 0.5}}\n");
    let resources = &spec.tasks[0].resources;
    assert_eq!(resources.gpu, 2);
    assert_eq!(resources.custom.get("licenses"), Some(&3.0));
    assert_eq!(resources.request().custom.get("scratch_gb"), Some(&0.5));
    check_problems(
        "name: r\ntasks:\n  - {id: a, handler: noop, resources: {memroy: 1Gi, licenses: many, gpu: 1.5}}\n",
        &[
            "task `a`, field `resources.gpu`: must be a whole number of GPUs from 0 to 1024",
            "task `a`, field `resources.licenses`: a custom resource is a non-negative number (cpu, memory, gpu and slots are the others)",
            "task `a`, field `resources.memroy`: unknown field (did you mean `memory`?); expected one of: cpu, memory, gpu, slots",
        ],
    );
}

#[test]
fn a_selector_names_labels_and_their_values() {
    let spec = check_ok("name: s\ntasks:\n  - {id: a, handler: noop, selector: {arch: arm64, gen: 3}}\n");
    let selector = &spec.tasks[0].selector;
    assert_eq!(selector.get("arch").map(String::as_str), Some("arm64"));
    assert_eq!(selector.get("gen").map(String::as_str), Some("3"));
    check_problems(
        "name: s\ntasks:\n  - {id: a, handler: noop, selector: {'bad label': x, zone: ''}}\n",
        &[
            "task `a`, field `selector.bad label`: a label is named by 1 to 64 of A-Z a-z 0-9 _ . -",
            "task `a`, field `selector.zone`: must be a string, number or boolean of at most 256 characters",
        ],
    );
}
