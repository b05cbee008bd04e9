//! The fuzz targets: one function per parser or decoder of outside input, each taking any
//! bytes and panicking only when a property is broken. libFuzzer drives them through the
//! binaries in `fuzz_targets/` (`cargo +nightly fuzz run workflow_parser --features
//! libfuzzer`); the property tests in `tests/` drive the same functions on stable, within the
//! test suite's time.
//!
//! Properties: nothing panics on any input; what decodes encodes back to what decodes the
//! same; a valid workflow's graph is acyclic and consistent; problems and documents respect
//! their bounds.

use taskfleet_common::document::{load_document, MAX_DEPTH};
use taskfleet_common::text::has_control;
use taskfleet_common::wire::{
    decode_control, decode_heartbeat, decode_task, decode_worker_events, encode, pack_worker_events, DeadLetter,
    WorkerEvent, MAX_REASON_BYTES,
};
use taskfleet_common::workflow::{parse_workflow, ValidateOptions};

/// Workflow files: loading and validation.
pub fn workflow_parser(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(value) = load_document(text) {
        assert!(
            depth(&value) <= MAX_DEPTH + 1,
            "a document deeper than the bound loaded"
        );
    }
    let options = ValidateOptions {
        max_tasks: 10_000,
        known_handlers: None,
    };
    match parse_workflow(text, &options) {
        Ok(spec) => {
            assert!(!spec.tasks.is_empty(), "a valid workflow has a task");
            assert_eq!(spec.dag.len(), spec.tasks.len());
            assert_eq!(
                spec.dag.topo_order().len(),
                spec.tasks.len(),
                "every task is in the order"
            );
            let mut position = vec![usize::MAX; spec.tasks.len()];
            for (at, &task) in spec.dag.topo_order().iter().enumerate() {
                position[task as usize] = at;
            }
            for (idx, task) in spec.tasks.iter().enumerate() {
                for dep in &task.deps {
                    assert!(
                        position[dep.task as usize] < position[idx],
                        "a parent comes after its child"
                    );
                }
            }
            assert!(!has_control(&spec.name), "a name with control characters was accepted");
            let _ = spec.summary();
        }
        Err(invalid) => {
            assert!(!invalid.problems.is_empty(), "an invalid workflow names a problem");
            for problem in &invalid.problems {
                assert!(
                    !has_control(&problem.to_string()),
                    "a problem prints a control character"
                );
            }
        }
    }
}

/// Task messages, as workers read them.
pub fn task_message(data: &[u8]) {
    if let Ok(message) = decode_task(data) {
        let encoded = encode(&message);
        let again = decode_task(&encoded).expect("an encoded task message decodes");
        assert_eq!(encode(&again), encoded, "a task message does not round-trip");
    }
}

/// Results messages, as the scheduler reads them.
pub fn worker_events(data: &[u8]) {
    if let Ok(events) = decode_worker_events(data) {
        let encoded: Vec<Vec<u8>> = events.iter().map(encode).collect();
        let packed = pack_worker_events(encoded.iter().map(Vec::as_slice));
        let again = decode_worker_events(&packed).expect("packed events decode");
        assert_eq!(again.len(), events.len());
        for (event, bytes) in again.iter().zip(&encoded) {
            assert_eq!(&encode(event), bytes, "a worker event does not round-trip");
            if let WorkerEvent::Finished(result) = event {
                assert!(result.output.as_ref().is_none_or(|output| !output.get().is_empty()));
            }
        }
    }
}

/// Heartbeats, as the scheduler reads them.
pub fn heartbeat(data: &[u8]) {
    if let Ok(heartbeat) = decode_heartbeat(data) {
        let again = decode_heartbeat(&encode(&heartbeat)).expect("an encoded heartbeat decodes");
        // NaN speeds cannot come through JSON, so equality holds.
        assert_eq!(again, heartbeat, "a heartbeat does not round-trip");
    }
}

/// Control messages, as workers read them.
pub fn control(data: &[u8]) {
    if let Ok(message) = decode_control(data) {
        let again = decode_control(&encode(&message)).expect("an encoded control message decodes");
        assert_eq!(again, message, "a control message does not round-trip");
    }
}

/// Dead letters, as tools read the dead-letter queue.
pub fn dead_letter(data: &[u8]) {
    let Some(letter) = DeadLetter::decode(data) else {
        return;
    };
    if letter.reason.len() <= MAX_REASON_BYTES {
        assert_eq!(
            DeadLetter::decode(&letter.encode()),
            Some(letter.clone()),
            "a dead letter does not round-trip"
        );
    }
    let room = letter.source_queue.len() + MAX_REASON_BYTES * 6 + 4096;
    for limit in [room, room + 100_000] {
        let encoded = letter.encode_within(limit);
        assert!(encoded.len() <= limit, "a dead letter is over its limit");
        let decoded = DeadLetter::decode(&encoded).expect("an encoded dead letter decodes");
        assert_eq!(decoded.source_queue, letter.source_queue);
    }
}

/// Levels of nesting of a value (a scalar is 1).
fn depth(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 1,
    }
}
