//! The event streams through the router: what a subscriber hears of a workflow's life.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

use super::{wait_for_state, Api, WORKFLOW};

/// Reads server-sent events off a response body.
struct Events {
    body: Body,
    buffered: String,
}

impl Events {
    async fn open(api: &Api, uri: &str) -> Events {
        let response = api
            .router
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{uri}");
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Events {
            body: response.into_body(),
            buffered: String::new(),
        }
    }

    /// The next event's name and data; `None` once the stream has ended.
    async fn next(&mut self) -> Option<(String, serde_json::Value)> {
        loop {
            if let Some(end) = self.buffered.find("\n\n") {
                let block: String = self.buffered.drain(..end + 2).collect();
                let mut name = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event: ") {
                        name = value.to_string();
                    } else if let Some(value) = line.strip_prefix("data: ") {
                        data.push_str(value);
                    }
                }
                if name.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some((name, serde_json::from_str(&data).unwrap()));
            }
            let frame = tokio::time::timeout(std::time::Duration::from_secs(10), self.body.frame())
                .await
                .expect("an event within 10 s")?
                .unwrap();
            if let Ok(data) = frame.into_data() {
                self.buffered.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
    }

    /// Events until one matches `until` (included).
    async fn until(&mut self, until: impl Fn(&str, &serde_json::Value) -> bool) -> Vec<(String, serde_json::Value)> {
        let mut heard = Vec::new();
        while let Some((name, data)) = self.next().await {
            let done = until(&name, &data);
            heard.push((name, data));
            if done {
                return heard;
            }
        }
        panic!("the stream ended before the event waited for: {heard:?}");
    }
}

#[tokio::test]
async fn the_fleet_stream_tells_each_committed_change_of_every_workflow() {
    let api = Api::start().await;
    let mut fleet = Events::open(&api, "/v1/events").await;
    let (_, body) = api.call("POST", "/v1/workflows", WORKFLOW, None).await;
    let id = body["workflow_id"].as_str().unwrap().to_string();
    // Stored ready to run as it was submitted: its start is all there is to tell.
    let (name, data) = fleet.next().await.unwrap();
    assert_eq!(name, "workflow", "{data}");
    assert_eq!(data["workflow_id"], id.as_str());
    assert_eq!(data["state"], "running");

    api.call("POST", &format!("/v1/workflows/{id}/cancel"), "", None).await;
    let heard = fleet.until(|name, _| name == "workflow").await;
    assert_eq!(heard.last().unwrap().1["state"], "cancelled", "{heard:?}");
    let mut cancelled: Vec<(&str, u64, &str)> = (heard.iter())
        .filter(|(name, _)| name == "task")
        .map(|(_, data)| {
            (
                data["task"].as_str().unwrap(),
                data["task_idx"].as_u64().unwrap(),
                data["state"].as_str().unwrap(),
            )
        })
        .collect();
    cancelled.sort_unstable();
    assert_eq!(cancelled, [("a", 0, "cancelled"), ("b", 1, "cancelled")], "{heard:?}");
    // What the stream told is what the store holds.
    let status = wait_for_state(&api, &id, "cancelled").await;
    assert_eq!(status["tasks"][0]["state"], "cancelled");
}

#[tokio::test]
async fn a_workflow_stream_tells_only_its_workflow_and_ends_with_it() {
    let api = Api::start().await;
    let (_, first) = api.call("POST", "/v1/workflows", WORKFLOW, None).await;
    let first = first["workflow_id"].as_str().unwrap().to_string();
    let (_, other) = api.call("POST", "/v1/workflows", WORKFLOW, None).await;
    let other = other["workflow_id"].as_str().unwrap().to_string();
    wait_for_state(&api, &other, "running").await;

    let mut events = Events::open(&api, &format!("/v1/workflows/{first}/events")).await;
    api.call("POST", &format!("/v1/workflows/{other}/cancel"), "", None)
        .await;
    wait_for_state(&api, &other, "cancelled").await;
    api.call("POST", &format!("/v1/workflows/{first}/cancel"), "", None)
        .await;
    let mut heard = Vec::new();
    while let Some(event) = events.next().await {
        heard.push(event);
    }
    assert!(
        heard.iter().all(|(_, data)| data["workflow_id"] == first.as_str()),
        "{heard:?}"
    );
    let (name, last) = heard.last().expect("events of the cancellation");
    assert_eq!(
        (name.as_str(), &last["state"]),
        ("workflow", &serde_json::json!("cancelled"))
    );

    // Of a workflow that ended, only its end.
    let mut ended = Events::open(&api, &format!("/v1/workflows/{first}/events")).await;
    let (name, data) = ended.next().await.unwrap();
    assert_eq!(
        (name.as_str(), &data["state"]),
        ("workflow", &serde_json::json!("cancelled"))
    );
    assert!(data["at_ms"].as_u64().unwrap() > 0, "{data}");
    assert!(ended.next().await.is_none());

    let (code, body) = api.call("GET", "/v1/workflows/nope/events", "", None).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
}
