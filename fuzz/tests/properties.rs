//! The fuzz targets driven by proptest on stable: random bytes, text made of YAML's
//! punctuation, generated workflows, and valid wire messages with one byte changed. Each
//! test runs `PROPTEST_CASES` cases (proptest's default of 256 unless set).

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::json;
use taskfleet_common::state::AttemptOutcome;
use taskfleet_common::wire::{
    encode, pack_worker_events, AttemptRef, AttemptStarted, ControlMessage, DeadLetter, Heartbeat, TaskMessage,
    TaskResult, WireAction, WorkerEvent, WIRE_VERSION,
};
use taskfleet_common::{Millis, PriorityClass};
use taskfleet_fuzz as targets;

/// Text made mostly of what YAML and JSON give meaning to.
fn yamlish() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            8 => proptest::sample::select(vec![
                "{", "}", "[", "]", ",", ":", " ", "\n", "  ", "- ", "&a ", "*a", "!!str ", "! ", "#", "'", "\"",
                "|", ">", "~", ".nan", "1e9", "0x1f", "---", "...", "name", "tasks", "id", "deps", "handler",
                "noop", "run", "?", "\\", "\u{feff}", "\u{1b}",
            ])
            .prop_map(str::to_string),
            2 => "[a-z0-9]{1,6}",
            1 => any::<char>().prop_map(|c| c.to_string()),
        ],
        0..120,
    )
    .prop_map(|parts| parts.concat())
}

/// A workflow as JSON: tasks with random fields, some unknown, deps that may be missing or
/// form cycles.
fn workflow_value() -> impl Strategy<Value = serde_json::Value> {
    let task = (
        0u8..12,
        proptest::collection::vec(0u8..14, 0..4),
        prop_oneof![
            Just(json!({"handler": "noop"})),
            Just(json!({"run": ["true"]})),
            Just(json!({"run": "not a list"})),
            Just(json!({"handler": "sleep", "args": {"duration": "1ms"}})),
            Just(json!({"handler": "noop", "timeout": 0})),
            Just(json!({"handler": "noop", "retries": {"max": 2, "backoff": "1s", "max_backoff": "1ms"}})),
            Just(json!({"handler": "noop", "resources": {"cpu": -1, "memory": "lots"}})),
            Just(json!({"handler": "noop", "priority": "urgent", "weight": "heavy"})),
            Just(json!({"run": [], "handler": "noop", "unknown": true})),
        ],
    )
        .prop_map(|(id, deps, body)| {
            let mut task = body.as_object().cloned().unwrap_or_default();
            task.insert("id".into(), json!(format!("t{id}")));
            task.insert(
                "deps".into(),
                json!(deps.iter().map(|dep| format!("t{dep}")).collect::<Vec<_>>()),
            );
            serde_json::Value::Object(task)
        });
    (proptest::collection::vec(task, 0..12), any::<bool>()).prop_map(|(tasks, named)| match named {
        true => json!({"name": "generated", "tasks": tasks}),
        false => json!({"tasks": tasks}),
    })
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "[a-z0-9_.-]{1,20}"]
}

fn task_message() -> impl Strategy<Value = TaskMessage> {
    (
        text(),
        text(),
        any::<u32>(),
        any::<u32>(),
        proptest::collection::vec(text(), 0..4),
        any::<Option<u64>>(),
    )
        .prop_map(|(workflow_id, task, task_idx, attempt, argv, timeout_ms)| TaskMessage {
            v: WIRE_VERSION,
            workflow_id,
            task,
            task_idx,
            attempt,
            pool: "default".into(),
            priority: PriorityClass::High,
            action: WireAction::Run {
                argv,
                env: BTreeMap::new(),
            },
            timeout_ms,
            inputs: BTreeMap::new(),
            limits: Default::default(),
            resources: Default::default(),
            selector: Default::default(),
        })
}

fn worker_event() -> impl Strategy<Value = WorkerEvent> {
    prop_oneof![
        (text(), any::<u32>(), any::<u32>(), text(), any::<u64>()).prop_map(
            |(workflow_id, task_idx, attempt, worker, at)| WorkerEvent::Started(AttemptStarted {
                v: WIRE_VERSION,
                workflow_id,
                task_idx,
                attempt,
                worker,
                at: Millis(at),
            })
        ),
        (text(), text(), any::<u32>(), text(), any::<Option<i32>>(), text()).prop_map(
            |(workflow_id, task, attempt, error, exit_code, tail)| {
                let mut result = TaskResult::succeeded(workflow_id, task, 3, attempt, "w1", Millis(1), Millis(2));
                result.outcome = AttemptOutcome::Failed { retryable: false };
                result.error = Some(error);
                result.exit_code = exit_code;
                result.stderr_tail = tail;
                WorkerEvent::Finished(result)
            }
        ),
    ]
}

fn heartbeat() -> impl Strategy<Value = Heartbeat> {
    ("[a-z0-9_.-]{1,20}", 0u32..1000, 0.001f64..1000.0, any::<bool>(), text()).prop_map(
        |(worker, slots, speed, draining, workflow_id)| Heartbeat {
            v: WIRE_VERSION,
            worker,
            pools: vec!["default".into()],
            slots,
            speed,
            running: vec![AttemptRef {
                workflow_id,
                task_idx: 1,
                attempt: 2,
            }],
            draining,
            gone: false,
            at: Millis(5),
            capacity: Default::default(),
            in_use: Default::default(),
            labels: Default::default(),
        },
    )
}

/// `bytes` with the byte at `at` (modulo the length) replaced by `with`.
fn mutate(mut bytes: Vec<u8>, at: usize, with: u8) -> Vec<u8> {
    if !bytes.is_empty() {
        let at = at % bytes.len();
        bytes[at] = with;
    }
    bytes
}

proptest! {
    #[test]
    fn any_bytes_are_safe_for_every_target(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        targets::workflow_parser(&data);
        targets::task_message(&data);
        targets::worker_events(&data);
        targets::heartbeat(&data);
        targets::control(&data);
        targets::dead_letter(&data);
    }

    #[test]
    fn yaml_punctuation_is_safe_for_the_parser(text in yamlish()) {
        targets::workflow_parser(text.as_bytes());
    }

    #[test]
    fn generated_workflows_validate_or_name_their_problems(value in workflow_value(), yaml in any::<bool>()) {
        let text = if yaml {
            // JSON is YAML; a leading comment keeps it from being read as JSON.
            format!("# generated\n{value}")
        } else {
            value.to_string()
        };
        targets::workflow_parser(text.as_bytes());
    }

    #[test]
    fn task_messages_round_trip_and_survive_a_changed_byte(message in task_message(), at in any::<usize>(), with in any::<u8>()) {
        let bytes = encode(&message);
        targets::task_message(&bytes);
        targets::task_message(&mutate(bytes, at, with));
    }

    #[test]
    fn worker_events_round_trip_and_survive_a_changed_byte(
        events in proptest::collection::vec(worker_event(), 1..4),
        at in any::<usize>(),
        with in any::<u8>(),
    ) {
        let encoded: Vec<Vec<u8>> = events.iter().map(encode).collect();
        let packed = pack_worker_events(encoded.iter().map(Vec::as_slice));
        targets::worker_events(&encoded[0]);
        targets::worker_events(&packed);
        targets::worker_events(&mutate(packed, at, with));
    }

    #[test]
    fn heartbeats_and_control_round_trip_and_survive_a_changed_byte(heartbeat in heartbeat(), at in any::<usize>(), with in any::<u8>()) {
        let bytes = encode(&heartbeat);
        targets::heartbeat(&bytes);
        targets::heartbeat(&mutate(bytes, at, with));
        let cancel = encode(&ControlMessage::Cancel { v: WIRE_VERSION, attempt: heartbeat.running[0].clone() });
        targets::control(&cancel);
        targets::control(&mutate(cancel, at, with));
    }

    #[test]
    fn dead_letters_round_trip_and_survive_a_changed_byte(
        queue in text(),
        reason in text(),
        payload in proptest::collection::vec(any::<u8>(), 0..300_000),
        at in any::<usize>(),
        with in any::<u8>(),
    ) {
        let letter = DeadLetter::new(queue, reason, payload.into());
        let whole = letter.encode();
        targets::dead_letter(&whole);
        targets::dead_letter(&letter.encode_within(100_000));
        targets::dead_letter(&mutate(whole.to_vec(), at, with));
    }
}
