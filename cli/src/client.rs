//! A typed client of the scheduler's HTTP API, for `submit`, `status`, `cancel`, `retry`,
//! `workers`, `list`, `logs` and `events`.

use std::time::Duration;

use taskfleet_common::text::url_segment as path_segment;

use taskfleet_common::api::{
    CancelResponse, ErrorBody, RetryResponse, SubmitResponse, TaskAttempts, WorkerStatus, WorkflowList, WorkflowStatus,
};

/// Errors of an API call, by what the user should do.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The scheduler could not be reached.
    #[error("cannot reach the scheduler at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The workflow is invalid; every problem is listed.
    #[error("{}", .0.error)]
    Invalid(ErrorBody),
    /// The scheduler refused the request.
    #[error("{message} (HTTP {status})")]
    Refused { status: u16, message: String },
}

/// Tasks asked for per status page (the API's most).
pub(crate) const STATUS_PAGE: u32 = 10_000;

/// The scheduler's API at one base URL.
pub struct ApiClient {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

impl ApiClient {
    pub fn new(base: &str) -> ApiClient {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120))
            .build()
            .expect("a client without TLS always builds");
        ApiClient {
            base: base.trim_end_matches('/').to_string(),
            http,
            token: None,
        }
    }

    /// Submits a workflow (YAML or JSON text).
    pub async fn submit(&self, source: String, idempotency_key: Option<&str>) -> Result<SubmitResponse, ClientError> {
        let mut request = self.http.post(self.url("/v1/workflows")).body(source);
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        self.send(request).await
    }

    /// The workflow's status with every task: the API's pages, joined.
    pub async fn status(&self, workflow_id: &str) -> Result<WorkflowStatus, ClientError> {
        let mut status = self.status_page(workflow_id, STATUS_PAGE, None).await?;
        while let Some(cursor) = status.next_cursor.take() {
            let page = self.status_page(workflow_id, STATUS_PAGE, Some(&cursor)).await?;
            status.tasks.extend(page.tasks);
            status.next_cursor = page.next_cursor;
        }
        Ok(status)
    }

    /// The workflow's status with at most `limit` tasks from `cursor` (0 for counts only).
    pub async fn status_page(
        &self,
        workflow_id: &str,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<WorkflowStatus, ClientError> {
        let mut query = vec![("limit", limit.to_string())];
        query.extend(cursor.map(|cursor| ("cursor", cursor.to_string())));
        let url = self.url(&format!("/v1/workflows/{workflow_id}"));
        self.send(self.http.get(url).query(&query)).await
    }

    pub async fn cancel(&self, workflow_id: &str) -> Result<CancelResponse, ClientError> {
        self.send(self.http.post(self.url(&format!("/v1/workflows/{workflow_id}/cancel"))))
            .await
    }

    /// Runs an ended workflow again from its failures, or only `task` and what it held up.
    pub async fn retry(&self, workflow_id: &str, task: Option<&str>) -> Result<RetryResponse, ClientError> {
        let url = self.url(&format!("/v1/workflows/{}/retry", path_segment(workflow_id)));
        let query: Vec<(&str, &str)> = task.map(|task| ("task", task)).into_iter().collect();
        self.send(self.http.post(url).query(&query)).await
    }

    pub async fn workers(&self) -> Result<Vec<WorkerStatus>, ClientError> {
        self.send(self.http.get(self.url("/v1/workers"))).await
    }

    /// A page of workflows, newest first: `filters` are the API's query parameters (`state`,
    /// `name`, `submitted_after`, `limit`, `cursor`).
    pub async fn list(&self, filters: &[(&str, String)]) -> Result<WorkflowList, ClientError> {
        self.send(self.http.get(self.url("/v1/workflows")).query(filters)).await
    }

    /// Every attempt of one task.
    pub async fn attempts(&self, workflow_id: &str, task: &str) -> Result<TaskAttempts, ClientError> {
        let url = self.url(&format!(
            "/v1/workflows/{}/tasks/{}/attempts",
            path_segment(workflow_id),
            path_segment(task)
        ));
        self.send(self.http.get(url)).await
    }

    /// Follows the event stream of one workflow (it ends with the workflow) or, without one,
    /// of the whole fleet.
    pub async fn events(&self, workflow_id: Option<&str>) -> Result<EventStream, ClientError> {
        let path = match workflow_id {
            Some(id) => format!("/v1/workflows/{}/events", path_segment(id)),
            None => "/v1/events".to_string(),
        };
        let unreachable = |error: reqwest::Error| ClientError::Unreachable {
            url: self.base.clone(),
            reason: error.to_string(),
        };
        // No overall timeout: a stream lasts as long as what it follows. The server sends a
        // keep-alive every 15 s, so a minute of silence is a lost server.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(Duration::from_secs(60))
            .build()
            .expect("a client without TLS always builds");
        let mut request = http.get(self.url(&path)).header("accept", "text/event-stream");
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        if !status.is_success() {
            let bytes = response.bytes().await.map_err(unreachable)?;
            return Err(refused(status.as_u16(), &bytes));
        }
        Ok(EventStream {
            response,
            buffered: Vec::new(),
            base: self.base.clone(),
        })
    }

    /// The same client, sending `token` as its bearer token.
    pub fn with_token(mut self, token: Option<&str>) -> ApiClient {
        self.token = token
            .map(|token| token.trim().to_string())
            .filter(|token| !token.is_empty());
        self
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send<T: serde::de::DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<T, ClientError> {
        let unreachable = |error: reqwest::Error| ClientError::Unreachable {
            url: self.base.clone(),
            reason: error.to_string(),
        };
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(unreachable)?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|error| ClientError::Refused {
                status: status.as_u16(),
                message: format!("unexpected answer from the scheduler: {error}"),
            });
        }
        Err(refused(status.as_u16(), &bytes))
    }
}

/// The error an unsuccessful answer stands for, from its body.
fn refused(status: u16, bytes: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(bytes).ok() {
        Some(body) if status == 422 => ClientError::Invalid(body),
        Some(body) => ClientError::Refused {
            status,
            message: body.error,
        },
        None => ClientError::Refused {
            status,
            message: String::from_utf8_lossy(bytes).chars().take(200).collect(),
        },
    }
}

/// One server-sent event: its name (`task`, `workflow` or `lagged`) and its data (JSON).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamEvent {
    pub name: String,
    pub data: String,
}

/// An event stream being read ([`ApiClient::events`]).
pub struct EventStream {
    response: reqwest::Response,
    buffered: Vec<u8>,
    base: String,
}

impl EventStream {
    /// The next event; `None` once the stream has ended.
    pub async fn next(&mut self) -> Result<Option<StreamEvent>, ClientError> {
        loop {
            if let Some(end) = self.buffered.windows(2).position(|pair| pair == b"\n\n") {
                let block: Vec<u8> = self.buffered.drain(..end + 2).collect();
                match parse_event(&String::from_utf8_lossy(&block)) {
                    Some(event) => return Ok(Some(event)),
                    None => continue,
                }
            }
            let chunk = self.response.chunk().await.map_err(|error| ClientError::Unreachable {
                url: self.base.clone(),
                reason: format!("the event stream broke off: {error}"),
            })?;
            match chunk {
                Some(bytes) => self.buffered.extend_from_slice(&bytes),
                None => return Ok(None),
            }
        }
    }
}

/// The event of one block of a stream; `None` for a comment (a keep-alive).
fn parse_event(block: &str) -> Option<StreamEvent> {
    let mut name = None;
    let mut data: Vec<&str> = Vec::new();
    for line in block.lines() {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => name = Some(value.to_string()),
            "data" => data.push(value),
            _ => {}
        }
    }
    if name.is_none() && data.is_empty() {
        return None;
    }
    Some(StreamEvent {
        name: name.unwrap_or_else(|| "message".to_string()),
        data: data.join("\n"),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn stream_blocks_are_events_and_comments_are_not() {
        let event = super::parse_event("event: task\ndata: {\"a\":1}\n\n").unwrap();
        assert_eq!((event.name.as_str(), event.data.as_str()), ("task", "{\"a\":1}"));
        assert_eq!(super::parse_event(":\n\n"), None);
        let unnamed = super::parse_event("data:x\ndata: y\n").unwrap();
        assert_eq!((unnamed.name.as_str(), unnamed.data.as_str()), ("message", "x\ny"));
    }

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(super::path_segment("load-2.csv"), "load-2.csv");
        assert_eq!(super::path_segment("a/b c?"), "a%2Fb%20c%3F");
    }
}
