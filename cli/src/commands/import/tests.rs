use serde_json::json;

use super::*;

/// A 1.6 instance written from the format's documentation: a split, two analyses of its
/// chunks and a merge, run on one node.
const SPLIT_ANALYZE_MERGE: &str = r#"{
  "name": "split-analyze",
  "schemaVersion": "1.6",
  "workflow": {
    "specification": {
      "tasks": [
        {"name": "split_ID0000001", "id": "ID0000001", "parents": [], "children": ["ID0000002", "ID0000003"],
         "inputFiles": ["input.txt"], "outputFiles": ["c1.txt", "c2.txt"]},
        {"name": "analyze_ID0000002", "id": "ID0000002", "parents": ["ID0000001"], "children": ["ID0000004"],
         "inputFiles": ["c1.txt"], "outputFiles": ["r1.txt"]},
        {"name": "analyze_ID0000003", "id": "ID0000003", "parents": ["ID0000001"], "children": ["ID0000004"],
         "inputFiles": ["c2.txt"], "outputFiles": ["r2.txt"]},
        {"name": "merge", "id": "ID0000004", "parents": ["ID0000002", "ID0000003"], "children": [],
         "inputFiles": ["r1.txt", "r2.txt"], "outputFiles": ["result.txt"]}
      ],
      "files": [
        {"id": "input.txt", "sizeInBytes": 4096}, {"id": "c1.txt", "sizeInBytes": 3000},
        {"id": "c2.txt", "sizeInBytes": 1000}, {"id": "r1.txt", "sizeInBytes": 10},
        {"id": "r2.txt", "sizeInBytes": 30}, {"id": "result.txt", "sizeInBytes": 40}
      ]
    },
    "execution": {
      "makespanInSeconds": 21.5,
      "executedAt": "2026-08-04T15:20:00-08:00",
      "tasks": [
        {"id": "ID0000001", "runtimeInSeconds": 4.2},
        {"id": "ID0000002", "runtimeInSeconds": 12.0, "machines": ["node01"]},
        {"id": "ID0000003", "runtimeInSeconds": 5.5},
        {"id": "ID0000004", "runtimeInSeconds": 1.25}
      ],
      "machines": [{"nodeName": "node01"}]
    }
  }
}"#;

#[test]
fn a_split_instance_becomes_a_workflow_and_its_runtimes() {
    let imported = convert_wfformat(SPLIT_ANALYZE_MERGE).unwrap();
    assert_eq!((imported.n_tasks, imported.n_dependencies, imported.kinds), (4, 4, 3));
    assert_eq!(imported.without_runtime, 0);
    let tasks = imported.workflow["tasks"].as_array().unwrap();
    assert_eq!(
        tasks[0],
        json!({"id": "ID0000001", "handler": "noop", "kind": "split", "features": {"input_bytes": 4096.0}})
    );
    assert_eq!(tasks[3]["deps"], json!(["ID0000002", "ID0000003"]));
    assert_eq!(tasks[3]["kind"], "merge");
    assert_eq!(tasks[3]["features"], json!({"input_bytes": 40.0}));
    assert_eq!(imported.actual["runtimes"]["ID0000002"], 12.0);
    assert_eq!(imported.actual["runtimes"]["ID0000004"], 1.25);
    assert_eq!(imported.actual["features"]["ID0000003"], json!({"input_bytes": 1000.0}));
    // Both files are what taskfleet reads.
    let text = serde_json::to_string(&imported.workflow).unwrap();
    let spec = taskfleet_common::workflow::parse_workflow(&text, &Default::default()).expect("a valid workflow");
    assert_eq!(spec.tasks.len(), 4);
    assert_eq!(spec.tasks[1].kind.as_deref(), Some("analyze"));
    let run = taskfleet_engine::sim::actual::parse_actual(&serde_json::to_string(&imported.actual).unwrap())
        .expect("a valid run");
    assert_eq!(run.runtimes.len(), 4);
}

#[test]
fn a_1_4_instance_with_inline_runtimes_and_parents_by_name_is_read() {
    let instance = r#"{
      "name": "montage 1.4", "schemaVersion": "1.4",
      "workflow": {"makespanInSeconds": 9, "tasks": [
        {"name": "mProject_ID0000001", "type": "compute", "runtimeInSeconds": 3.5, "parents": [],
         "files": [{"link": "input", "name": "a.fits", "sizeInBytes": 100}, {"link": "output", "name": "p.fits", "sizeInBytes": 7}]},
        {"name": "mProject_ID0000002", "type": "compute", "runtimeInSeconds": 2.5, "parents": [],
         "files": [{"link": "input", "name": "b.fits", "sizeInBytes": 300}]},
        {"name": "mAdd#final", "category": "mAdd", "runtimeInSeconds": 3, "parents": ["mProject_ID0000001", "mProject_ID0000002"]}
      ]}
    }"#;
    let imported = convert_wfformat(instance).unwrap();
    let tasks = imported.workflow["tasks"].as_array().unwrap();
    assert_eq!(imported.workflow["name"], "montage_1.4");
    assert_eq!(tasks[0]["kind"], "mProject");
    assert_eq!(tasks[1]["features"], json!({"input_bytes": 300.0}));
    // The id's `#` is not allowed in taskfleet ids; the category names the kind.
    assert_eq!(tasks[2]["id"], "mAdd_final");
    assert_eq!(tasks[2]["kind"], "mAdd");
    assert_eq!(tasks[2]["deps"], json!(["mProject_ID0000001", "mProject_ID0000002"]));
    assert!(tasks[2].get("features").is_none());
    assert_eq!(imported.actual["runtimes"]["mAdd_final"], 3.0);
}

#[test]
fn bad_instances_are_refused_with_the_reason() {
    assert!(convert_wfformat("{").unwrap_err().starts_with("not JSON"));
    assert!(convert_wfformat(r#"{"name": "x"}"#)
        .unwrap_err()
        .contains("no `workflow` object"));
    let unknown_parent = r#"{"name": "x", "workflow": {"specification": {"tasks": [
        {"name": "a", "id": "a", "parents": ["ghost"], "children": []}]}}}"#;
    assert_eq!(
        convert_wfformat(unknown_parent).unwrap_err(),
        "task `a` names parent `ghost`, which is no task"
    );
    let twice = r#"{"name": "x", "workflow": {"specification": {"tasks": [
        {"name": "a", "id": "a", "parents": [], "children": []},
        {"name": "b", "id": "a", "parents": [], "children": []}]}}}"#;
    assert_eq!(convert_wfformat(twice).unwrap_err(), "task id `a` appears twice");
    let empty = r#"{"name": "x", "workflow": {"specification": {"tasks": []}}}"#;
    assert_eq!(convert_wfformat(empty).unwrap_err(), "the instance has no tasks");
    // Without an execution section the runtimes are unknown and counted.
    let no_execution = r#"{"name": "x", "workflow": {"specification": {"tasks": [
        {"name": "a", "id": "a", "parents": [], "children": []}]}}}"#;
    assert_eq!(convert_wfformat(no_execution).unwrap().without_runtime, 1);
}

#[test]
fn kinds_drop_the_instance_number() {
    assert_eq!(kind_of("individuals_ID0000001"), "individuals");
    assert_eq!(kind_of("split_fasta_00000012"), "split_fasta");
    assert_eq!(kind_of("bowtie2-build"), "bowtie2-build");
    assert_eq!(kind_of("12345"), "12345");
    assert_eq!(sanitize("a b/c#d"), "a_b_c_d");
}
