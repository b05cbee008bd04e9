//! Fleet files: defaults, `count` expansion, and an error naming the field for each mistake.

use super::*;

fn problems(text: &str) -> Vec<String> {
    match parse_fleet(text) {
        Ok(fleet) => panic!("expected problems, got {fleet:?}"),
        Err(invalid) => invalid.problems,
    }
}

#[test]
fn defaults_and_count_expansion() {
    let fleet = parse_fleet(
        "workers:\n  - {name: big, pools: [default, gpu], slots: 2, speed: 2.0, cpu: 16, memory: 64Gi}\n  - {name: small, count: 3}\n",
    )
    .unwrap();
    let names: Vec<&str> = fleet.workers.iter().map(|worker| worker.name.as_str()).collect();
    assert_eq!(names, ["big", "small-1", "small-2", "small-3"]);
    let big = &fleet.workers[0];
    assert_eq!(big.pools, ["default", "gpu"]);
    assert_eq!((big.slots, big.speed, big.cpu), (2, 2.0, Some(16.0)));
    assert_eq!(big.memory, Some(64 * 1024 * 1024 * 1024));
    let small = &fleet.workers[2];
    assert_eq!(small.base, "small");
    assert_eq!(small.pools, ["default"]);
    assert_eq!(
        (small.slots, small.speed, small.cpu, small.memory),
        (1, 1.0, None, None)
    );
    assert_eq!(fleet.total_slots(), 5);
}

#[test]
fn json_is_accepted() {
    let fleet = parse_fleet(r#"{"workers": [{"name": "a", "speed": 0.5}]}"#).unwrap();
    assert_eq!(fleet.workers, [SimWorker::new("a", 1, 0.5)]);
}

#[test]
fn each_mistake_names_its_field() {
    let cases: &[(&str, &str)] = &[
        ("workers: []", "field `workers`: a fleet needs at least one worker"),
        ("{}", "field `workers`: missing (a fleet is a list of workers)"),
        ("workers: 3", "field `workers`: must be a list of workers"),
        (
            "workers: [{name: a, speed: 0}]",
            "field `workers[0].speed`: must be a positive number (got 0)",
        ),
        (
            "workers: [{name: a, speed: -1.5}]",
            "field `workers[0].speed`: must be a positive number (got -1.5)",
        ),
        (
            "workers: [{name: a}, {name: b, slots: 0}]",
            "field `workers[1].slots`: must be a whole number from 1 to 100000 (got 0)",
        ),
        (
            "workers: [{name: a, count: 1.5}]",
            "field `workers[0].count`: must be a whole number from 1 to 100000 (got 1.5)",
        ),
        (
            "workers: [{name: a, sped: 2}]",
            "field `workers[0].sped`: unknown field; expected one of: name, pools, slots, speed, cpu, memory, gpu, resources, labels, count",
        ),
        (
            "workers: [{name: a}, {name: a}]",
            "field `workers[1].name`: duplicate worker name `a`",
        ),
        (
            "workers: [{name: a-2}, {name: a, count: 2}]",
            "field `workers[1].name`: duplicate worker name `a-2`",
        ),
        (
            "workers: [{slots: 2}]",
            "field `workers[0].name`: missing (every worker needs a name)",
        ),
        (
            "workers: [{name: 'a b'}]",
            "field `workers[0].name`: must be a name (1 to 128 of A-Z a-z 0-9 _ . -)",
        ),
        (
            "workers: [{name: a, pools: []}]",
            "field `workers[0].pools`: must be a non-empty list of pool names",
        ),
        (
            "workers: [{name: a, pools: [1]}]",
            "field `workers[0].pools[0]`: must be a pool name",
        ),
        (
            "workers: [{name: a, memory: lots}]",
            "field `workers[0].memory`: invalid size `lots`: expected a number such as 512Mi",
        ),
        (
            "workers: [{name: a, cpu: x}]",
            "field `workers[0].cpu`: must be a positive number (got \"x\")",
        ),
        (
            "workers: [7]",
            "field `workers[0]`: a worker must be a mapping with a `name`",
        ),
        (
            "workers: [{name: a}]\nowner: me",
            "field `owner`: unknown field; expected one of: name, description, workers",
        ),
        ("- a", "a fleet must be a mapping with `workers`"),
    ];
    for (text, expected) in cases {
        assert_eq!(problems(text), [expected.to_string()], "for {text:?}");
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let invalid =
        parse_fleet("workers:\n  - {name: a, speed: 0, slots: -1}\n  - {name: b, colour: red}\n").unwrap_err();
    assert_eq!(invalid.problems.len(), 3, "{invalid}");
    assert!(invalid
        .to_string()
        .starts_with("invalid fleet (3 problems)\n  - field `workers[0].slots`"));
}

#[test]
fn syntax_errors_say_where() {
    let problems = problems("{\"workers\": [}");
    assert!(
        problems[0].starts_with("invalid JSON at line 1 column 14"),
        "{problems:?}"
    );
    let problems = self::problems("workers: [{name: a}\n");
    assert!(
        problems[0].starts_with("invalid YAML at line 2 column 1: "),
        "{problems:?}"
    );
}
