//! API tests through the router, without a socket, against a running scheduler loop over the
//! in-memory transport and an in-memory store.

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use taskfleet_transport::queues::QueueNames;
use taskfleet_transport::MemoryTransport;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use super::*;
use crate::service::{Capacity, Scheduler, SchedulerConfig};
use crate::store::SqliteStore;

const WORKFLOW: &str = "name: api\ntasks:\n  - {id: a, handler: noop}\n  - {id: b, deps: [a], handler: noop}\n";

struct Api {
    router: Router,
    store: Arc<dyn Store>,
    transport: Arc<MemoryTransport>,
    shutdown: CancellationToken,
}

impl Api {
    async fn start() -> Api {
        Api::start_with_body_limit(1 << 20).await
    }

    async fn start_with_body_limit(max_body_bytes: usize) -> Api {
        Api::start_with(max_body_bytes, None).await
    }

    async fn start_with(max_body_bytes: usize, tokens: Option<Arc<auth::Tokens>>) -> Api {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
        let transport = Arc::new(MemoryTransport::new(&QueueNames::default()));
        // No workers: nothing is dispatched, so workflows stay running while the tests look.
        let config = SchedulerConfig {
            capacity: Capacity::Fixed(HashMap::new()),
            ..SchedulerConfig::default()
        };
        let (scheduler, handle) = Scheduler::new(config, store.clone(), transport.clone());
        let shutdown = CancellationToken::new();
        tokio::spawn(scheduler.run(shutdown.clone()));
        let state = ApiState {
            store: store.clone(),
            scheduler: Instance::leader("api-test", handle),
            validate: ValidateOptions::default(),
            max_body_bytes,
            forecasts: Arc::default(),
            tokens,
            metrics: None,
            broker: Some(Broker {
                transport: transport.clone(),
                queues: QueueNames::default(),
            }),
        };
        Api {
            router: router(state),
            store,
            transport,
            shutdown,
        }
    }

    async fn call(&self, method: &str, uri: &str, body: &str, key: Option<&str>) -> (StatusCode, serde_json::Value) {
        let headers: Vec<(&str, &str)> = key.map(|key| ("idempotency-key", key)).into_iter().collect();
        self.call_with(method, uri, body, &headers).await.0
    }

    /// Calls with `headers`; returns the status, the JSON body and the response headers.
    async fn call_with(
        &self,
        method: &str,
        uri: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> ((StatusCode, serde_json::Value), axum::http::HeaderMap) {
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = self
            .router
            .clone()
            .oneshot(request.body(Body::from(body.to_string())).unwrap())
            .await
            .unwrap();
        let code = response.status();
        let response_headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        ((code, json), response_headers)
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[tokio::test]
async fn submit_then_read_then_cancel() {
    let api = Api::start().await;
    let (code, body) = api.call("POST", "/v1/workflows", WORKFLOW, None).await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    assert_eq!(body["created"], true);
    let id = body["workflow_id"].as_str().unwrap().to_string();

    let (code, status) = api.call("GET", &format!("/v1/workflows/{id}"), "", None).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(status["name"], "api");
    assert_eq!(status["state"], "running");
    assert_eq!(status["tasks"][0]["id"], "a");
    assert_eq!(status["tasks"][0]["state"], "ready");
    assert_eq!(status["tasks"][1]["state"], "pending");
    // Two 1 s tasks (the prior) in a row: the predicted end is about 2 s away.
    let eta = &status["eta"];
    let (p50, p90) = (eta["p50_in_ms"].as_u64().unwrap(), eta["p90_in_ms"].as_u64().unwrap());
    assert!((1_000..4_000).contains(&p50) && p50 <= p90, "{eta}");
    let critical: Vec<&str> = eta["critical_tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| pair[0].as_str().unwrap())
        .collect();
    assert_eq!(critical.len(), 2, "both tasks of the chain decide the end: {eta}");
    // Each unfinished task says how long it is expected to take, and how sure that is.
    let expected = &status["tasks"][1]["expected"];
    assert_eq!(expected["p50_ms"], 1_000, "{expected}");
    assert_eq!(expected["source"], "prior", "{expected}");
    assert_eq!(expected["confidence"], 0.0, "{expected}");

    let (code, body) = api.call("POST", &format!("/v1/workflows/{id}/cancel"), "", None).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    let mut state = String::new();
    for _ in 0..100 {
        let (_, status) = api.call("GET", &format!("/v1/workflows/{id}"), "", None).await;
        state = status["state"].as_str().unwrap().to_string();
        if state == "cancelled" {
            assert_eq!(status["counts"]["cancelled"], 2);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(state, "cancelled");
    let (code, body) = api.call("POST", &format!("/v1/workflows/{id}/cancel"), "", None).await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert_eq!(body["error"], format!("workflow `{id}` already ended cancelled"));
}

#[tokio::test]
async fn an_idempotency_key_returns_the_first_workflow() {
    let api = Api::start().await;
    let (code, first) = api
        .call("POST", "/v1/workflows", WORKFLOW, Some("nightly-2026-11-23"))
        .await;
    assert_eq!(code, StatusCode::CREATED);
    let (code, again) = api
        .call("POST", "/v1/workflows", WORKFLOW, Some("nightly-2026-11-23"))
        .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(again["workflow_id"], first["workflow_id"]);
    assert_eq!(again["created"], false);
    let (_, other) = api
        .call("POST", "/v1/workflows", WORKFLOW, Some("nightly-2026-11-24"))
        .await;
    assert_ne!(other["workflow_id"], first["workflow_id"]);
}

#[tokio::test]
async fn an_idempotency_key_is_bound_to_its_body() {
    let api = Api::start().await;
    let (code, first) = api.call("POST", "/v1/workflows", WORKFLOW, Some("k1")).await;
    assert_eq!(code, StatusCode::CREATED, "{first}");
    let id = first["workflow_id"].as_str().unwrap();
    // Another workflow, or an invalid one, under a used key is not a repeat.
    let other = "name: other\ntasks:\n  - {id: a, handler: noop}\n";
    for body in [other, "not: [a workflow"] {
        let (code, answer) = api.call("POST", "/v1/workflows", body, Some("k1")).await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
        assert_eq!(
            answer["error"],
            format!("idempotency key `k1` was used for a different workflow ({id}); use a new key for a new workflow")
        );
    }
    let (code, answer) = api.call("POST", "/v1/workflows", WORKFLOW, Some("")).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(answer["error"], "an idempotency key must not be empty");
    let (code, answer) = api
        .call("POST", "/v1/workflows", WORKFLOW, Some(&"k".repeat(256)))
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(answer["error"], "an idempotency key is at most 255 bytes (got 256)");
    let (code, _) = api
        .call("POST", "/v1/workflows", WORKFLOW, Some(&"k".repeat(255)))
        .await;
    assert_eq!(code, StatusCode::CREATED);
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_refused_before_the_body() {
    let api = Api::start().await;
    // The body never comes: the answer must not wait for it.
    let body = Body::from_stream(futures_util::stream::pending::<Result<bytes::Bytes, std::io::Error>>());
    let request = Request::builder()
        .method("POST")
        .uri("/v1/workflows")
        .header("content-length", "1000000000000")
        .body(body)
        .unwrap();
    let response = api.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let answer: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        answer["error"],
        "a workflow is at most 1048576 bytes; this one is larger"
    );
}

#[tokio::test]
async fn health_checks_do_not_wait_for_a_submission_being_parsed() {
    // One thread for the whole runtime (`tokio::test`): a parse on it would hold every other
    // request until it ended.
    let api = Api::start_with_body_limit(64 << 20).await;
    let tasks: String = (0..60_000)
        .map(|idx| format!("  - {{id: t{idx}, handler: noop}}\n"))
        .collect();
    let big = format!("name: big\ntasks:\n{tasks}");
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let parsing = {
        let (big, order) = (big.clone(), order.clone());
        tokio::spawn(async move {
            let parsed = crate::submit::parse_off_runtime(big, ValidateOptions::default()).await;
            order.lock().unwrap().push("parsed");
            parsed.map(|(_, spec)| spec.tasks.len()).ok()
        })
    };
    // The parse starts (and, were it on this thread, would run to its end right here).
    tokio::task::yield_now().await;
    let (code, _) = api.call("GET", "/healthz", "", None).await;
    assert_eq!(code, StatusCode::OK);
    order.lock().unwrap().push("healthz");
    assert_eq!(parsing.await.unwrap(), Some(60_000));
    assert_eq!(*order.lock().unwrap(), ["healthz", "parsed"]);
    // The same workflow through the API is accepted.
    let (code, _) = api.call("POST", "/v1/workflows", &big, None).await;
    assert_eq!(code, StatusCode::CREATED);
}

#[tokio::test]
async fn invalid_workflows_get_422_with_every_problem() {
    let api = Api::start().await;
    let source = "name: bad\ntasks:\n  - {id: a, deps: [b], handler: noop}\n  - {id: b, deps: [a], handler: noop}\n  - {id: c, deps: [zz], run: []}\n";
    let (code, body) = api.call("POST", "/v1/workflows", source, None).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    let texts: Vec<&str> = body["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        [
            "task `c`, field `run`: must not be empty: the first argument is the program to run",
            "task `c`, field `deps`: unknown dependency `zz`",
            "task `a`, field `deps`: dependency cycle: a -> b -> a",
        ]
    );
    assert_eq!(body["problems"][0]["task"], "c");
    let (code, body) = api.call("POST", "/v1/workflows", "{not json", None).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body["error"].as_str().unwrap().contains("invalid JSON"), "{body}");
}

#[tokio::test]
async fn unknown_workflows_are_404_and_probes_answer() {
    let api = Api::start().await;
    let (code, body) = api.call("GET", "/v1/workflows/wf-nope", "", None).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "no workflow `wf-nope`");
    let (code, _) = api.call("POST", "/v1/workflows/wf-nope/cancel", "", None).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(api.call("GET", "/healthz", "", None).await.0, StatusCode::OK);
    let (code, workers) = api.call("GET", "/v1/workers", "", None).await;
    assert_eq!((code, workers), (StatusCode::OK, serde_json::json!([])));
    let mut ready = StatusCode::SERVICE_UNAVAILABLE;
    for _ in 0..100 {
        ready = api.call("GET", "/readyz", "", None).await.0;
        if ready == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(ready, StatusCode::OK, "ready once connected to the transport");
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let api = Api::start().await;
    let huge = format!(
        "name: big\ndescription: '{}'\ntasks:\n  - {{id: a, handler: noop}}\n",
        "x".repeat(2 << 20)
    );
    let (code, _) = api.call("POST", "/v1/workflows", &huge, None).await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn statuses_come_in_pages() {
    let api = Api::start().await;
    let source =
        "name: paged\ntasks:\n  - {id: a, handler: noop}\n  - {id: b, handler: noop}\n  - {id: c, handler: noop}\n";
    let (_, body) = api.call("POST", "/v1/workflows", source, None).await;
    let id = body["workflow_id"].as_str().unwrap().to_string();
    let (code, first) = api.call("GET", &format!("/v1/workflows/{id}?limit=2"), "", None).await;
    assert_eq!(code, StatusCode::OK, "{first}");
    let ids = |page: &serde_json::Value| -> Vec<String> {
        page["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|task| task["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&first), ["a", "b"]);
    assert_eq!(first["counts"]["ready"], 3, "counts cover every task: {first}");
    assert!(first["eta"].is_object(), "{first}");
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second) = api
        .call("GET", &format!("/v1/workflows/{id}?limit=2&cursor={cursor}"), "", None)
        .await;
    assert_eq!(ids(&second), ["c"]);
    assert!(second.get("next_cursor").is_none(), "{second}");
    assert!(second["tasks"][0]["expected"].is_object(), "{second}");
    let (_, counts) = api.call("GET", &format!("/v1/workflows/{id}?limit=0"), "", None).await;
    assert_eq!(ids(&counts), Vec::<String>::new());
    let (code, body) = api
        .call("GET", &format!("/v1/workflows/{id}?limit=10001"), "", None)
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "`limit` is at most 10000 (got 10001)");
    let (code, body) = api
        .call("GET", &format!("/v1/workflows/{id}?cursor=nope"), "", None)
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "`nope` is not a cursor this API gave");
}

#[tokio::test]
async fn workflows_list_newest_first_filtered_and_paged() {
    let api = Api::start().await;
    let mut ids = Vec::new();
    for name in ["first", "second", "third"] {
        let body = WORKFLOW.replace("name: api", &format!("name: {name}"));
        let (code, created) = api.call("POST", "/v1/workflows", &body, None).await;
        assert_eq!(code, StatusCode::CREATED, "{created}");
        ids.push(created["workflow_id"].as_str().unwrap().to_string());
        // Distinct submission instants, so the order is the order of submission.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let listed = |body: &serde_json::Value| -> Vec<String> {
        body["workflows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|workflow| workflow["workflow_id"].as_str().unwrap().to_string())
            .collect()
    };
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    let (code, all) = api.call("GET", "/v1/workflows", "", None).await;
    assert_eq!(code, StatusCode::OK, "{all}");
    assert_eq!(listed(&all), newest_first);
    assert_eq!(all["workflows"][0]["name"], "third");
    assert_eq!(all["workflows"][0]["state"], "running");
    assert!(all.get("next_cursor").is_none(), "{all}");

    let (_, named) = api.call("GET", "/v1/workflows?name=second", "", None).await;
    assert_eq!(listed(&named), [ids[1].clone()]);
    let (_, running) = api.call("GET", "/v1/workflows?state=running", "", None).await;
    assert_eq!(listed(&running).len(), 3);
    let (_, failed) = api.call("GET", "/v1/workflows?state=failed", "", None).await;
    assert_eq!(listed(&failed), Vec::<String>::new());
    let (_, later) = api
        .call("GET", "/v1/workflows?submitted_after=2999-01-01T00:00:00Z", "", None)
        .await;
    assert_eq!(listed(&later), Vec::<String>::new());

    let (_, page) = api.call("GET", "/v1/workflows?limit=2", "", None).await;
    assert_eq!(listed(&page), newest_first[..2]);
    let cursor = page["next_cursor"].as_str().expect("a second page follows").to_string();
    let (_, rest) = api
        .call("GET", &format!("/v1/workflows?limit=2&cursor={cursor}"), "", None)
        .await;
    assert_eq!(listed(&rest), newest_first[2..]);
    assert!(rest.get("next_cursor").is_none(), "{rest}");

    for (query, needle) in [
        ("state=bogus", "not a workflow state"),
        ("limit=0", "between 1 and"),
        ("limit=5000", "between 1 and"),
        ("cursor=garbage", "not a cursor"),
        ("submitted_after=yesterday", "RFC 3339"),
    ] {
        let (code, problem) = api.call("GET", &format!("/v1/workflows?{query}"), "", None).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{query}: {problem}");
        assert!(problem.to_string().contains(needle), "{query}: {problem}");
    }
}

#[tokio::test]
async fn a_tasks_attempts_show_how_each_ended_and_what_it_printed() {
    use taskfleet_common::state::AttemptOutcome;
    use taskfleet_common::Millis;
    use taskfleet_engine::records::{AttemptRecord, StoreUpdate};

    let api = Api::start().await;
    let (_, created) = api.call("POST", "/v1/workflows", WORKFLOW, None).await;
    let id = created["workflow_id"].as_str().unwrap().to_string();
    let (code, none) = api
        .call("GET", &format!("/v1/workflows/{id}/tasks/b/attempts"), "", None)
        .await;
    assert_eq!(code, StatusCode::OK, "{none}");
    assert_eq!(none["attempts"], serde_json::json!([]));
    assert_eq!(none["state"], "pending");

    let failed = AttemptRecord {
        worker: Some("w1".into()),
        started_at: Some(Millis(1_000)),
        finished_at: Some(Millis(1_250)),
        outcome: Some(AttemptOutcome::Failed { retryable: true }),
        exit_code: Some(3),
        error: Some("exited with code 3".into()),
        stdout_tail: "loading\n".into(),
        stderr_tail: "boom: no such table\n".into(),
        peak_memory_bytes: Some(1 << 20),
        cpu_time_ms: Some(40),
        ..AttemptRecord::dispatched(0, 1, Millis(900))
    };
    let workflow_id: Arc<str> = Arc::from(id.as_str());
    api.store
        .apply(Arc::from(vec![StoreUpdate::AttemptFinished {
            workflow_id,
            record: failed,
        }]))
        .await
        .unwrap();
    let (code, body) = api
        .call("GET", &format!("/v1/workflows/{id}/tasks/a/attempts"), "", None)
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let attempt = &body["attempts"][0];
    assert_eq!(attempt["attempt"], 1);
    assert_eq!(attempt["worker"], "w1");
    assert_eq!(attempt["outcome"], "failed");
    assert_eq!(attempt["exit_code"], 3);
    assert_eq!(attempt["duration_ms"], 250);
    assert_eq!(attempt["stderr_tail"], "boom: no such table\n");
    assert_eq!(attempt["stdout_tail"], "loading\n");
    assert_eq!(attempt["peak_memory_bytes"], 1 << 20);
    assert_eq!(attempt["dispatched_at"], "1970-01-01T00:00:00.900Z");

    let (code, _) = api
        .call("GET", &format!("/v1/workflows/{id}/tasks/nope/attempts"), "", None)
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, _) = api
        .call("GET", "/v1/workflows/wf-nobody/tasks/a/attempts", "", None)
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn with_a_tokens_file_every_call_but_the_probes_needs_a_token_of_its_scope() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens");
    let (reader, read_line) = auth::new_token("dashboard", auth::Scope::Read).unwrap();
    let (writer, write_line) = auth::new_token("ci", auth::Scope::Write).unwrap();
    std::fs::write(&path, format!("# API tokens\n{read_line}\n{write_line}\n")).unwrap();
    let tokens = Arc::new(auth::Tokens::load(&path).unwrap());
    let api = Api::start_with(1 << 20, Some(tokens.clone())).await;
    let bearer = |token: &str| format!("Bearer {token}");

    let ((code, body), headers) = api.call_with("GET", "/v1/workflows", "", &[]).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body["error"].as_str().unwrap().contains("bearer token"), "{body}");
    assert_eq!(headers["www-authenticate"], "Bearer realm=\"taskfleet\"");
    let wrong = bearer("tf_not-a-token");
    let ((code, _), _) = api
        .call_with("GET", "/v1/workflows", "", &[("authorization", &wrong)])
        .await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    for probe in ["/healthz", "/readyz"] {
        let ((code, _), _) = api.call_with("GET", probe, "", &[]).await;
        assert_ne!(code, StatusCode::UNAUTHORIZED, "{probe} needs no token");
    }

    let read = bearer(&reader);
    let ((code, _), _) = api
        .call_with("GET", "/v1/workflows", "", &[("authorization", &read)])
        .await;
    assert_eq!(code, StatusCode::OK);
    let ((code, _), _) = api
        .call_with("GET", "/v1/openapi.json", "", &[("authorization", &read)])
        .await;
    assert_eq!(code, StatusCode::OK);
    for stream in ["/v1/events", "/v1/workflows/nope/events"] {
        let ((code, _), _) = api.call_with("GET", stream, "", &[]).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED, "{stream} needs a token");
    }
    let ((code, body), _) = api
        .call_with("POST", "/v1/workflows", WORKFLOW, &[("authorization", &read)])
        .await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    assert!(body["error"].as_str().unwrap().contains("needs `write`"), "{body}");

    let write = bearer(&writer);
    let ((code, created), _) = api
        .call_with("POST", "/v1/workflows", WORKFLOW, &[("authorization", &write)])
        .await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    let id = created["workflow_id"].as_str().unwrap();
    let ((code, _), _) = api
        .call_with("GET", &format!("/v1/workflows/{id}"), "", &[("authorization", &write)])
        .await;
    assert_eq!(code, StatusCode::OK, "write includes read");

    // Revoked by deleting its line: the file is read again.
    std::fs::write(&path, format!("{read_line}\n")).unwrap();
    tokens.reload().unwrap();
    let ((code, _), _) = api
        .call_with("GET", "/v1/workflows", "", &[("authorization", &write)])
        .await;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "a revoked token");
    let ((code, _), _) = api
        .call_with("GET", "/v1/workflows", "", &[("authorization", &read)])
        .await;
    assert_eq!(code, StatusCode::OK);
    // A broken file keeps the tokens as they were.
    std::fs::write(&path, "garbage\n").unwrap();
    assert!(tokens.reload().unwrap_err().contains("line 1"));
    let ((code, _), _) = api
        .call_with("GET", "/v1/workflows", "", &[("authorization", &read)])
        .await;
    assert_eq!(code, StatusCode::OK);
}

/// Polls the workflow until it is in `want`, and returns its status.
async fn wait_for_state(api: &Api, id: &str, want: &str) -> serde_json::Value {
    let mut status = serde_json::Value::Null;
    for _ in 0..200 {
        status = api.call("GET", &format!("/v1/workflows/{id}"), "", None).await.1;
        if status["state"] == want {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("workflow {id} never became {want}: {status}");
}

#[tokio::test]
async fn an_ended_workflow_is_retried_from_its_failures_and_only_then() {
    let api = Api::start().await;
    let (_, body) = api.call("POST", "/v1/workflows", WORKFLOW, None).await;
    let id = body["workflow_id"].as_str().unwrap().to_string();
    let retry = format!("/v1/workflows/{id}/retry");

    let (code, body) = api.call("POST", &retry, "", None).await;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
    assert!(body["error"].as_str().unwrap().contains("still running"), "{body}");

    api.call("POST", &format!("/v1/workflows/{id}/cancel"), "", None).await;
    wait_for_state(&api, &id, "cancelled").await;
    let (code, body) = api.call("POST", &format!("{retry}?task=zz"), "", None).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"], format!("workflow `{id}` has no task `zz`"));

    let (code, body) = api.call("POST", &retry, "", None).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["state"], "running");
    assert_eq!(body["retried"], serde_json::json!(["a", "b"]));
    let status = wait_for_state(&api, &id, "running").await;
    assert_eq!(status["tasks"][0]["state"], "ready", "{status}");
    assert_eq!(status["tasks"][1]["state"], "pending", "{status}");
    assert!(status["finished_at"].is_null(), "{status}");
    let (code, _) = api.call("POST", &retry, "", None).await;
    assert_eq!(
        code,
        StatusCode::CONFLICT,
        "a workflow running again is not retried twice"
    );

    // The loop holds it again: it can be cancelled, and retried one task at a time.
    let (code, body) = api.call("POST", &format!("/v1/workflows/{id}/cancel"), "", None).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    wait_for_state(&api, &id, "cancelled").await;
    let (code, body) = api.call("POST", &format!("{retry}?task=b"), "", None).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["retried"], serde_json::json!(["b"]));
    // b waits for a, which stays cancelled: the workflow ends cancelled again at once.
    let status = wait_for_state(&api, &id, "cancelled").await;
    assert_eq!(status["tasks"][1]["state"], "upstream_failed", "{status}");
    let (code, body) = api.call("POST", &format!("{retry}?task=b"), "", None).await;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
    assert_eq!(
        body["error"],
        format!("workflow `{id}`: task `b` did not run because `a` failed; retry `a`")
    );
}

mod dashboard;
mod events;
