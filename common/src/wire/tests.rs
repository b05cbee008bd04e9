use super::*;

fn task() -> TaskMessage {
    TaskMessage {
        v: WIRE_VERSION,
        workflow_id: "wf1".into(),
        task: "extract".into(),
        task_idx: 0,
        attempt: 2,
        pool: "default".into(),
        priority: PriorityClass::High,
        action: WireAction::Run {
            argv: vec!["true".into()],
            env: BTreeMap::new(),
        },
        timeout_ms: Some(1000),
        inputs: [("up".to_string(), RawValue::from_string("{\"rows\":3}".into()).unwrap())].into(),
        limits: Default::default(),
        resources: Default::default(),
        selector: Default::default(),
    }
}

#[test]
fn task_round_trip() {
    let bytes = encode(&task());
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(text.contains("\"inputs\":{\"up\":{\"rows\":3}}"), "{text}");
    let back = decode_task(&bytes).unwrap();
    assert_eq!(back.attempt, 2);
    assert_eq!(back.action, task().action);
}

#[test]
fn garbage_and_unknown_versions_are_named() {
    assert!(matches!(
        decode_task(b"\x00\xffnot json"),
        Err(WireError::Unparsable { .. })
    ));
    assert!(matches!(decode_task(b"{\"v\":1}"), Err(WireError::Unparsable { .. })));
    assert_eq!(
        decode_task(b"{\"v\":7,\"shape\":\"new\"}").unwrap_err(),
        WireError::UnknownVersion { found: 7 }
    );
    let mut future = task();
    future.v = 2;
    assert_eq!(
        decode_task(&encode(&future)).unwrap_err().to_string(),
        "unsupported wire version 2 (this build speaks version 1)"
    );
}

#[test]
fn heartbeats_and_control_round_trip() {
    let heartbeat = Heartbeat {
        v: WIRE_VERSION,
        worker: "w1".into(),
        pools: vec!["default".into()],
        slots: 4,
        speed: 1.5,
        running: vec![AttemptRef {
            workflow_id: "wf".into(),
            task_idx: 2,
            attempt: 1,
        }],
        draining: false,
        gone: false,
        at: Millis(9),
        capacity: Default::default(),
        in_use: Default::default(),
        labels: Default::default(),
    };
    assert_eq!(decode_heartbeat(&encode(&heartbeat)).unwrap(), heartbeat);
    let mut odd = heartbeat.clone();
    odd.worker = "a worker/with spaces".into();
    let error = decode_heartbeat(&encode(&odd)).unwrap_err().to_string();
    assert!(error.contains("unusable worker name"), "{error}");
    odd.worker = "x".repeat(129);
    assert!(decode_heartbeat(&encode(&odd)).is_err());
    let mut greedy = heartbeat.clone();
    greedy.slots = u32::MAX;
    let error = decode_heartbeat(&encode(&greedy)).unwrap_err().to_string();
    assert!(error.contains("a worker offers at most 100000"), "{error}");
    let cancel = ControlMessage::Cancel {
        v: WIRE_VERSION,
        attempt: heartbeat.running[0].clone(),
    };
    assert_eq!(decode_control(&encode(&cancel)).unwrap(), cancel);
    assert!(decode_control(b"{\"cancel\":{\"v\":3}}").is_err());
}

#[test]
fn packed_worker_events_decode_whole_or_not_at_all() {
    let started = |task_idx| {
        encode(&WorkerEvent::Started(AttemptStarted {
            v: WIRE_VERSION,
            workflow_id: "wf1".into(),
            task_idx,
            attempt: 1,
            worker: "w1".into(),
            at: Millis(5),
        }))
    };
    let events = [started(1), started(2), started(3)];
    let packed = pack_worker_events(events.iter().map(Vec::as_slice));
    let decoded = decode_worker_events(&packed).unwrap();
    let indices: Vec<u32> = decoded
        .iter()
        .map(|event| match event {
            WorkerEvent::Started(started) => started.task_idx,
            WorkerEvent::Finished(result) => result.task_idx,
        })
        .collect();
    assert_eq!(indices, [1, 2, 3]);
    // A single event (not packed) still decodes.
    assert_eq!(decode_worker_events(&events[0]).unwrap().len(), 1);
    // One bad event spoils the message, and the error says which.
    let bad = pack_worker_events([events[0].as_slice(), b"{\"exploded\":{}}"]);
    let error = decode_worker_events(&bad).unwrap_err().to_string();
    assert!(error.starts_with("unparsable message: event 1 of the batch"), "{error}");
    let newer = pack_worker_events([b"{\"started\":{\"v\":99}}".as_slice()]);
    assert_eq!(
        decode_worker_events(&newer).unwrap_err(),
        WireError::UnknownVersion { found: 99 }
    );
    assert!(decode_worker_events(b"[1, 2").is_err());
}

#[test]
fn worker_events_round_trip() {
    let event = WorkerEvent::Started(AttemptStarted {
        v: WIRE_VERSION,
        workflow_id: "wf1".into(),
        task_idx: 3,
        attempt: 1,
        worker: "w1".into(),
        at: Millis(5),
    });
    let back = decode_worker_event(&encode(&event)).unwrap();
    assert!(matches!(back, WorkerEvent::Started(AttemptStarted { task_idx: 3, .. })));

    let event = WorkerEvent::Finished(TaskResult {
        v: WIRE_VERSION,
        workflow_id: "wf1".into(),
        task: "extract".into(),
        task_idx: 0,
        attempt: 1,
        worker: "w1".into(),
        outcome: AttemptOutcome::Succeeded,
        exit_code: Some(0),
        signal: None,
        output: Some(RawValue::from_string("{\"rows\":3}".into()).unwrap()),
        error: None,
        stdout_tail: String::new(),
        stderr_tail: String::new(),
        started_at: Millis(5),
        finished_at: Millis(9),
        cpu_time_ms: None,
        peak_memory_bytes: None,
    });
    let WorkerEvent::Finished(back) = decode_worker_event(&encode(&event)).unwrap() else {
        panic!("not finished")
    };
    assert_eq!(back.output.unwrap().get(), "{\"rows\":3}");
    assert!(matches!(
        decode_worker_event(b"{\"type\":\"exploded\",\"v\":1}"),
        Err(WireError::Unparsable { .. })
    ));
}
