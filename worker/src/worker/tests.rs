//! Tests of the worker loop, end to end over the in-memory transport.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use taskfleet_common::wire::{decode_heartbeat, decode_worker_events, encode, ControlMessage, TaskResult, WireAction};
use taskfleet_transport::{DeadLetter, MemoryTransport, Outgoing};

use super::*;
use taskfleet_common::PriorityClass;

/// Longest a test waits for anything that must happen.
const PATIENCE: Duration = Duration::from_secs(10);
/// How long a test waits to be sure that nothing happens.
const QUIET: Duration = Duration::from_millis(200);

fn task(id: &str, priority: PriorityClass, action: WireAction) -> TaskMessage {
    TaskMessage {
        v: WIRE_VERSION,
        workflow_id: "wf-1".into(),
        task: id.into(),
        task_idx: id.len() as u32,
        attempt: 1,
        pool: "default".into(),
        priority,
        action,
        timeout_ms: None,
        inputs: BTreeMap::new(),
        limits: Default::default(),
        resources: Default::default(),
        selector: Default::default(),
    }
}

fn handler(name: &str, args: Value) -> WireAction {
    WireAction::Handler {
        name: name.into(),
        args,
        env: BTreeMap::new(),
    }
}

/// A running worker and the transport around it.
struct Harness {
    transport: MemoryTransport,
    names: QueueNames,
    results: Box<dyn Consumer>,
    /// Events of a packed message not yet looked at.
    unread: std::collections::VecDeque<WorkerEvent>,
    shutdown: CancellationToken,
    worker: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Harness {
    /// The transport with the results queue already being consumed; the worker not started.
    async fn new() -> Harness {
        let names = QueueNames::new("test");
        let transport = MemoryTransport::new(&names);
        transport.declare(&[names.results()]).await.unwrap();
        let results = transport.consume(&names.results(), 1000).await.unwrap();
        Harness {
            transport,
            names,
            results,
            unread: std::collections::VecDeque::new(),
            shutdown: CancellationToken::new(),
            worker: None,
        }
    }

    fn config(&self) -> WorkerConfig {
        WorkerConfig {
            queues: self.names.clone(),
            ..WorkerConfig::new("w-test")
        }
    }

    fn start(&mut self, config: WorkerConfig) {
        self.start_on(config, Arc::new(self.transport.clone()));
    }

    fn start_on(&mut self, config: WorkerConfig, transport: Arc<dyn Transport>) {
        let worker = Worker::new(config, transport, Arc::new(HandlerRegistry::with_builtins()));
        self.worker = Some(tokio::spawn(worker.run(self.shutdown.clone())));
    }

    async fn publish(&self, task: &TaskMessage) {
        let queue = self.names.tasks(&task.pool, task.priority.as_str());
        self.publish_raw(&queue, encode(task)).await;
    }

    async fn publish_raw(&self, queue: &str, payload: impl Into<bytes::Bytes>) {
        self.transport.declare(&[queue.to_string()]).await.unwrap();
        self.transport
            .publish(vec![Outgoing::new(queue, payload)])
            .await
            .unwrap();
    }

    async fn next_event(&mut self) -> WorkerEvent {
        if let Some(event) = self.unread.pop_front() {
            return event;
        }
        let delivery = tokio::time::timeout(PATIENCE, self.results.recv())
            .await
            .expect("no worker event arrived in time")
            .expect("receive a worker event");
        let events = decode_worker_events(&delivery.payload).expect("valid worker events");
        delivery.ack().await.unwrap();
        self.unread.extend(events);
        self.unread.pop_front().expect("a results message holds an event")
    }

    async fn started(&mut self) -> AttemptStarted {
        match self.next_event().await {
            WorkerEvent::Started(started) => started,
            WorkerEvent::Finished(result) => panic!("expected a started event, got {result:?}"),
        }
    }

    async fn finished(&mut self) -> TaskResult {
        match self.next_event().await {
            WorkerEvent::Finished(result) => result,
            WorkerEvent::Started(started) => panic!("expected a finished event, got {started:?}"),
        }
    }

    async fn assert_no_event(&mut self) {
        if let Ok(Ok(delivery)) = tokio::time::timeout(QUIET, self.results.recv()).await {
            panic!("unexpected event {}", String::from_utf8_lossy(&delivery.payload));
        }
    }

    /// Shuts the worker down and waits for it to return.
    async fn stop(&mut self) {
        self.shutdown.cancel();
        let worker = self.worker.take().expect("the worker was started");
        tokio::time::timeout(PATIENCE, worker)
            .await
            .expect("the worker did not stop")
            .unwrap()
            .unwrap();
    }

    async fn queue_len(&self, class: PriorityClass) -> usize {
        self.transport
            .queue_len(&self.names.tasks("default", class.as_str()))
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn tasks_run_end_to_end() {
    let mut harness = Harness::new().await;
    harness.start(harness.config());
    let mut copy = task(
        "copy",
        PriorityClass::Normal,
        WireAction::Run {
            argv: vec![
                "sh".into(),
                "-c".into(),
                "cat \"$TASKFLEET_INPUTS\" > \"$TASKFLEET_OUTPUT\"".into(),
            ],
            env: BTreeMap::new(),
        },
    );
    copy.attempt = 3;
    copy.inputs
        .insert("up".into(), RawValue::from_string("[1,2]".into()).unwrap());
    harness.publish(&copy).await;

    // A quick task reports its result only; the result carries when it started. (On a busy
    // machine even `cat` may outlast the Started delay: its Started event must then agree.)
    let result = match harness.next_event().await {
        WorkerEvent::Finished(result) => result,
        WorkerEvent::Started(started) => {
            let result = harness.finished().await;
            assert_eq!((started.task_idx, started.attempt), (result.task_idx, result.attempt));
            assert_eq!(started.at, result.started_at, "both events carry the same start");
            result
        }
    };
    assert_eq!(result.outcome, AttemptOutcome::Succeeded, "{result:?}");
    assert_eq!((result.task.as_str(), result.task_idx, result.attempt), ("copy", 4, 3));
    assert_eq!(result.worker, "w-test");
    assert_eq!(result.exit_code, Some(0));
    assert_eq!(result.output.unwrap().get(), "{\"up\":[1,2]}");
    assert!(result.started_at <= result.finished_at);

    // A task that runs for a while reports that it started, then its result.
    harness
        .publish(&task(
            "slow",
            PriorityClass::Normal,
            handler("sleep", json!({"duration": "100ms"})),
        ))
        .await;
    let started = harness.started().await;
    assert_eq!(
        (started.workflow_id.as_str(), started.task_idx, started.attempt),
        ("wf-1", 4, 1)
    );
    assert_eq!(started.worker, "w-test");
    let result = harness.finished().await;
    assert_eq!(result.outcome, AttemptOutcome::Succeeded);
    assert_eq!(result.started_at, started.at, "both events carry the same start");

    harness
        .publish(&task("fails", PriorityClass::Normal, handler("fail", Value::Null)))
        .await;
    let result = harness.finished().await;
    assert_eq!(result.outcome, AttemptOutcome::Failed { retryable: true });
    assert_eq!(result.error.as_deref(), Some("failed on purpose"));

    harness.stop().await;
    // Acked: nothing comes back when the worker's consumers are gone.
    assert_eq!(harness.queue_len(PriorityClass::Normal).await, 0);
}

#[tokio::test]
async fn garbage_is_dead_lettered_and_the_next_task_still_runs() {
    let mut harness = Harness::new().await;
    let queue = harness.names.tasks("default", "normal");
    harness.publish_raw(&queue, &b"\x00\xffnot a task"[..]).await;
    harness
        .publish(&task("after", PriorityClass::Normal, handler("noop", Value::Null)))
        .await;
    let mut dead = harness
        .transport
        .consume(&harness.names.dead_letters(), 10)
        .await
        .unwrap();
    harness.start(harness.config());

    let delivery = tokio::time::timeout(PATIENCE, dead.recv())
        .await
        .expect("nothing was dead-lettered")
        .unwrap();
    let letter = DeadLetter::decode(&delivery.payload).expect("a dead letter");
    assert_eq!(letter.source_queue, queue);
    assert!(letter.reason.starts_with("unparsable message: "), "{}", letter.reason);
    assert_eq!(letter.payload, &b"\x00\xffnot a task"[..]);

    let result = harness.finished().await;
    assert_eq!(
        (result.task.as_str(), result.outcome),
        ("after", AttemptOutcome::Succeeded)
    );
    harness.stop().await;
    assert_eq!(harness.queue_len(PriorityClass::Normal).await, 0);
}

#[tokio::test]
async fn oversized_task_messages_are_dead_lettered_unread_and_free_their_slot() {
    // One slot: a held oversized message would stop everything behind it.
    let mut harness = Harness::new().await;
    let queue = harness.names.tasks("default", "normal");
    let huge = vec![b' '; MAX_TASK_MESSAGE_BYTES + 1];
    harness.publish_raw(&queue, huge.clone()).await;
    harness
        .publish(&task("after", PriorityClass::Normal, handler("noop", Value::Null)))
        .await;
    let mut dead = harness
        .transport
        .consume(&harness.names.dead_letters(), 10)
        .await
        .unwrap();
    harness.start(harness.config());
    let delivery = tokio::time::timeout(PATIENCE, dead.recv())
        .await
        .expect("nothing was dead-lettered")
        .unwrap();
    let letter = DeadLetter::decode(&delivery.payload).expect("a dead letter");
    assert_eq!(
        letter.reason,
        format!(
            "a task message of {} bytes is over the limit of {MAX_TASK_MESSAGE_BYTES} bytes",
            huge.len()
        )
    );
    let result = harness.finished().await;
    assert_eq!(
        (result.task.as_str(), result.outcome),
        ("after", AttemptOutcome::Succeeded)
    );
    harness.stop().await;
}

#[tokio::test]
async fn higher_classes_are_taken_first() {
    let mut harness = Harness::new().await;
    for (id, class) in [
        ("low-1", PriorityClass::Low),
        ("normal-1", PriorityClass::Normal),
        ("low-2", PriorityClass::Low),
        ("high-1", PriorityClass::High),
        ("normal-2", PriorityClass::Normal),
        ("high-2", PriorityClass::High),
    ] {
        harness.publish(&task(id, class, handler("noop", Value::Null))).await;
    }
    harness.start(harness.config());
    let mut order = Vec::new();
    for _ in 0..6 {
        order.push(harness.finished().await.task);
    }
    assert_eq!(order, ["high-1", "high-2", "normal-1", "normal-2", "low-1", "low-2"]);
    harness.stop().await;
}

#[tokio::test]
async fn up_to_concurrency_tasks_run_at_once() {
    let mut harness = Harness::new().await;
    for id in ["a", "b", "c"] {
        harness
            .publish(&task(
                id,
                PriorityClass::Normal,
                handler("sleep", json!({"duration": "300ms"})),
            ))
            .await;
    }
    harness.start(WorkerConfig {
        concurrency: 2,
        ..harness.config()
    });
    let mut events = Vec::new();
    for _ in 0..6 {
        events.push(match harness.next_event().await {
            WorkerEvent::Started(_) => "started",
            WorkerEvent::Finished(_) => "finished",
        });
    }
    assert_eq!(&events[..3], ["started", "started", "finished"], "{events:?}");
    harness.stop().await;
}

#[tokio::test]
async fn shutdown_drains_running_tasks_and_takes_no_more() {
    let mut harness = Harness::new().await;
    harness
        .publish(&task(
            "slow",
            PriorityClass::Normal,
            handler("sleep", json!({"duration": "300ms"})),
        ))
        .await;
    harness
        .publish(&task("next", PriorityClass::Normal, handler("noop", Value::Null)))
        .await;
    harness.start(harness.config());
    assert_eq!(harness.started().await.task_idx, 4);
    harness.stop().await;

    let result = harness.finished().await;
    assert_eq!(
        (result.task.as_str(), result.outcome),
        ("slow", AttemptOutcome::Succeeded)
    );
    harness.assert_no_event().await;
    // `slow` was acked; `next` was never taken.
    assert_eq!(harness.queue_len(PriorityClass::Normal).await, 1);
}

#[tokio::test]
async fn tasks_still_running_after_the_drain_timeout_are_requeued() {
    let mut harness = Harness::new().await;
    harness
        .publish(&task(
            "endless",
            PriorityClass::Normal,
            handler("sleep", json!({"duration": "30s"})),
        ))
        .await;
    harness.start(WorkerConfig {
        drain_timeout: Duration::from_millis(100),
        ..harness.config()
    });
    harness.started().await;
    let start = Instant::now();
    harness.stop().await;
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
    harness.assert_no_event().await;

    let queue = harness.names.tasks("default", "normal");
    let mut consumer = harness.transport.consume(&queue, 1).await.unwrap();
    let delivery = consumer.try_recv().expect("the task was requeued").unwrap();
    assert!(delivery.redelivered);
    assert_eq!(decode_task(&delivery.payload).unwrap().task, "endless");
}

/// The memory transport, failing the first `failures` publishes of finished events.
struct FailingResults {
    inner: MemoryTransport,
    failures: AtomicUsize,
}

#[async_trait]
impl Transport for FailingResults {
    async fn declare(&self, queues: &[String]) -> Result<(), TransportError> {
        self.inner.declare(queues).await
    }

    fn max_message_bytes(&self) -> usize {
        self.inner.max_message_bytes()
    }

    async fn publish(&self, messages: Vec<Outgoing>) -> Result<(), TransportError> {
        let finished = messages
            .iter()
            .filter_map(|message| decode_worker_events(&message.payload).ok())
            .flatten()
            .any(|event| matches!(event, WorkerEvent::Finished(_)));
        let fail = finished
            && self
                .failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if fail {
            return Err(TransportError::Unavailable {
                reason: "broker is down".into(),
            });
        }
        self.inner.publish(messages).await
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Box<dyn Consumer>, TransportError> {
        self.inner.consume(queue, prefetch).await
    }

    async fn consume_group(&self, queues: &[String], prefetch: u16) -> Result<Vec<Box<dyn Consumer>>, TransportError> {
        self.inner.consume_group(queues, prefetch).await
    }

    async fn queue_len(&self, queue: &str) -> Result<usize, TransportError> {
        self.inner.queue_len(queue).await
    }

    async fn broadcast(&self, topic: &str, payload: Bytes) -> Result<(), TransportError> {
        self.inner.broadcast(topic, payload).await
    }

    async fn subscribe(&self, topic: &str) -> Result<Box<dyn Consumer>, TransportError> {
        self.inner.subscribe(topic).await
    }
}

#[tokio::test]
async fn a_result_that_cannot_be_published_is_requeued_not_acked() {
    let mut harness = Harness::new().await;
    harness
        .publish(&task("once", PriorityClass::Normal, handler("noop", Value::Null)))
        .await;
    let failing = FailingResults {
        inner: harness.transport.clone(),
        failures: AtomicUsize::new(1),
    };
    harness.start_on(harness.config(), Arc::new(failing));

    // The first attempt's result is lost, so the delivery comes back and runs again.
    let result = harness.finished().await;
    assert_eq!(
        (result.task.as_str(), result.outcome),
        ("once", AttemptOutcome::Succeeded)
    );
    harness.stop().await;
    assert_eq!(harness.queue_len(PriorityClass::Normal).await, 0);
}

#[tokio::test]
async fn many_quick_tasks_all_complete() {
    const TASKS: usize = 2000;
    let mut harness = Harness::new().await;
    let queue = harness.names.tasks("default", "normal");
    let noop = task("quick", PriorityClass::Normal, handler("noop", Value::Null));
    let messages = (0..TASKS)
        .map(|_| Outgoing::new(queue.clone(), encode(&noop)))
        .collect();
    harness.transport.declare(&[queue]).await.unwrap();
    harness.transport.publish(messages).await.unwrap();
    harness.start(WorkerConfig {
        concurrency: 16,
        ..harness.config()
    });
    let mut finished = 0;
    while finished < TASKS {
        if let WorkerEvent::Finished(result) = harness.next_event().await {
            assert_eq!(result.outcome, AttemptOutcome::Succeeded);
            finished += 1;
        }
    }
    harness.stop().await;
    assert_eq!(harness.queue_len(PriorityClass::Normal).await, 0);
}

#[tokio::test]
async fn bad_configurations_are_refused() {
    let harness = Harness::new().await;
    let transport: Arc<dyn Transport> = Arc::new(harness.transport.clone());
    let handlers = Arc::new(HandlerRegistry::new());
    let none = WorkerConfig {
        concurrency: 0,
        ..harness.config()
    };
    let error = Worker::new(none, transport.clone(), handlers.clone())
        .run(CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "concurrency must be at least 1");
    let nowhere = WorkerConfig {
        pools: Vec::new(),
        ..harness.config()
    };
    let error = Worker::new(nowhere, transport, handlers)
        .run(CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "a worker needs at least one pool");
}

#[tokio::test]
async fn heartbeats_announce_slots_running_attempts_and_the_drain() {
    let mut harness = Harness::new().await;
    let mut heartbeats = harness.transport.subscribe(&harness.names.heartbeats()).await.unwrap();
    let config = WorkerConfig {
        heartbeat_interval: Some(Duration::from_millis(50)),
        concurrency: 3,
        pools: vec!["default".into(), "gpu".into()],
        ..harness.config()
    };
    harness.start(config);
    harness
        .publish(&task(
            "long",
            PriorityClass::Normal,
            handler("sleep", json!({"duration": "600ms"})),
        ))
        .await;
    harness.started().await;
    let mut saw_running = false;
    for _ in 0..20 {
        let delivery = tokio::time::timeout(PATIENCE, heartbeats.recv())
            .await
            .unwrap()
            .unwrap();
        let heartbeat = decode_heartbeat(&delivery.payload).unwrap();
        delivery.ack().await.unwrap();
        assert_eq!((heartbeat.worker.as_str(), heartbeat.slots), ("w-test", 3));
        assert_eq!(heartbeat.pools, ["default", "gpu"]);
        if heartbeat
            .running
            .iter()
            .any(|attempt| attempt.task_idx == 4 && attempt.attempt == 1)
        {
            saw_running = true;
            break;
        }
    }
    assert!(saw_running, "a heartbeat lists the running attempt");
    harness.shutdown.cancel();
    let draining = loop {
        let delivery = tokio::time::timeout(PATIENCE, heartbeats.recv())
            .await
            .unwrap()
            .unwrap();
        let heartbeat = decode_heartbeat(&delivery.payload).unwrap();
        if heartbeat.draining {
            break heartbeat;
        }
    };
    assert_eq!(
        draining.running.len(),
        1,
        "the drain announces the attempt still running"
    );
    harness.finished().await;
    harness.stop().await;
}

#[tokio::test]
async fn a_cancel_from_the_scheduler_stops_the_running_attempt() {
    let mut harness = Harness::new().await;
    let config = WorkerConfig {
        heartbeat_interval: Some(Duration::from_millis(50)),
        ..harness.config()
    };
    harness.start(config);
    let long = task(
        "sleeper",
        PriorityClass::Normal,
        handler("sleep", json!({"duration": "30s"})),
    );
    harness.publish(&long).await;
    harness.started().await;
    // The control subscription starts with the worker; give it a moment to be in place.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let other = AttemptRef {
        workflow_id: long.workflow_id.clone(),
        task_idx: long.task_idx,
        attempt: 2,
    };
    let this = AttemptRef {
        attempt: 1,
        ..other.clone()
    };
    let started = Instant::now();
    for attempt in [other, this] {
        let message = ControlMessage::Cancel {
            v: WIRE_VERSION,
            attempt,
        };
        harness
            .transport
            .broadcast(&harness.names.control(), encode(&message).into())
            .await
            .unwrap();
    }
    let result = harness.finished().await;
    assert_eq!(result.outcome, AttemptOutcome::Cancelled);
    assert!(started.elapsed() < Duration::from_secs(5), "cancelled promptly");
    harness.stop().await;
    assert_eq!(
        harness.queue_len(PriorityClass::Normal).await,
        0,
        "a cancelled task is acked, not requeued"
    );
}

#[tokio::test]
async fn a_task_cancelled_while_it_waits_in_the_worker_never_starts() {
    let mut harness = Harness::new().await;
    let config = WorkerConfig {
        heartbeat_interval: Some(Duration::from_millis(50)),
        concurrency: 1,
        ..harness.config()
    };
    harness.start(config);
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let blocker = task(
        "blocker",
        PriorityClass::Normal,
        handler("sleep", json!({"duration": "400ms"})),
    );
    let mut waiting = task(
        "waiting",
        PriorityClass::Normal,
        WireAction::Run {
            argv: vec!["touch".into(), marker.to_string_lossy().into_owned()],
            env: BTreeMap::new(),
        },
    );
    waiting.task_idx = 1;
    harness.publish(&blocker).await;
    harness.started().await;
    // The second task is delivered while the only slot is busy; then it is cancelled.
    harness.publish(&waiting).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let message = ControlMessage::Cancel {
        v: WIRE_VERSION,
        attempt: AttemptRef {
            workflow_id: waiting.workflow_id.clone(),
            task_idx: waiting.task_idx,
            attempt: waiting.attempt,
        },
    };
    harness
        .transport
        .broadcast(&harness.names.control(), encode(&message).into())
        .await
        .unwrap();
    assert_eq!(harness.finished().await.task, "blocker");
    let result = harness.finished().await;
    assert_eq!(result.task, "waiting");
    assert_eq!(result.outcome, AttemptOutcome::Cancelled);
    assert_eq!(result.error.as_deref(), Some("cancelled before it started"));
    assert!(!marker.exists(), "a cancelled task never starts");
    harness.stop().await;
    assert_eq!(harness.queue_len(PriorityClass::Normal).await, 0, "it is acked");
}

#[tokio::test]
async fn tasks_share_the_workers_memory_and_one_too_large_is_handed_back() {
    let mut harness = Harness::new().await;
    let config = WorkerConfig {
        concurrency: 3,
        capacity: Some(ResourceSet {
            cpu: 2.0,
            memory_bytes: 1 << 30,
            ..ResourceSet::default()
        }),
        ..harness.config()
    };
    harness.start(config);
    let with_memory = |id: &str, idx: u32, mib: u64| {
        let mut task = task(
            id,
            PriorityClass::Normal,
            handler("sleep", json!({"duration": "300ms"})),
        );
        task.task_idx = idx;
        task.resources.memory_bytes = mib << 20;
        task
    };
    // Two tasks of 768 MiB in 1 GiB: one after the other, although slots are free.
    let started = Instant::now();
    harness.publish(&with_memory("first", 0, 768)).await;
    harness.publish(&with_memory("second", 1, 768)).await;
    let mut ends = Vec::new();
    while ends.len() < 2 {
        if let WorkerEvent::Finished(result) = harness.next_event().await {
            assert_eq!(result.outcome, AttemptOutcome::Succeeded);
            ends.push((result.task.clone(), result.started_at, result.finished_at));
        }
    }
    let (first, second) = (&ends[0], &ends[1]);
    assert!(second.1 >= first.2, "the second started once the first ended: {ends:?}");
    assert!(started.elapsed() >= Duration::from_millis(600));
    // More memory than the worker has in all: it never runs here, and goes back to the queue.
    harness.publish(&with_memory("huge", 2, 2048)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    harness.stop().await;
    assert_eq!(
        harness.queue_len(PriorityClass::Normal).await,
        1,
        "handed back, not run"
    );
}
