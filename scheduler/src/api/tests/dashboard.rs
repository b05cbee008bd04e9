//! The dashboard through the router: its pages, signing in with a token, and what a session
//! cookie may do.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt as _;
use taskfleet_common::wire::DeadLetter;
use taskfleet_transport::{Outgoing, Transport as _};
use tower::ServiceExt as _;

use super::{wait_for_state, Api, WORKFLOW};
use crate::api::auth;

/// Calls the router; returns the status, the headers and the body as text.
async fn fetch(
    api: &Api,
    method: &str,
    uri: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, String) {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = (api.router.clone())
        .oneshot(request.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let code = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (code, headers, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn every_page_shows_what_the_store_and_the_fleet_hold() {
    let api = Api::start().await;
    let (_, created) = api.call("POST", "/v1/workflows", WORKFLOW, None).await;
    let id = created["workflow_id"].as_str().unwrap().to_string();
    wait_for_state(&api, &id, "running").await;

    let (code, headers, html) = fetch(&api, "GET", "/", "", &[]).await;
    assert_eq!(code, StatusCode::OK, "{html}");
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(html.contains(&format!(r#"data-workflow="{id}""#)), "{html}");
    assert!(html.contains("0/2"), "no task ended of two: {html}");
    let (_, _, filtered) = fetch(&api, "GET", "/?state=succeeded&name=", "", &[]).await;
    assert!(filtered.contains("No workflow matches."), "{filtered}");
    let (code, headers, _) = fetch(&api, "GET", &format!("/?name={id}"), "", &[]).await;
    assert_eq!(
        (code, headers["location"].to_str().unwrap()),
        (StatusCode::SEE_OTHER, format!("/ui/workflows/{id}").as_str()),
        "an id searched for"
    );
    let (_, _, by_name) = fetch(&api, "GET", "/?name=api", "", &[]).await;
    assert!(by_name.contains(&format!(r#"data-workflow="{id}""#)), "{by_name}");
    let (code, _, html) = fetch(&api, "GET", "/?state=bogus", "", &[]).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(html.contains("not a workflow state"), "{html}");

    let (code, _, html) = fetch(&api, "GET", &format!("/ui/workflows/{id}"), "", &[]).await;
    assert_eq!(code, StatusCode::OK, "{html}");
    assert!(
        html.contains(r#"<g class="node" data-task-idx="0" data-state="ready">"#),
        "{html}"
    );
    assert!(html.contains(r#"data-task-idx="1" data-state="pending""#), "{html}");
    assert!(
        html.contains(&format!(r#"data-workflow-events="/v1/workflows/{id}/events""#)),
        "{html}"
    );
    assert!(
        html.contains(&format!(r#"hx-post="/v1/workflows/{id}/cancel""#)),
        "{html}"
    );
    assert!(html.contains("No attempt has been sent yet."), "{html}");

    let (code, _, html) = fetch(&api, "GET", &format!("/ui/workflows/{id}/tasks/b"), "", &[]).await;
    assert_eq!(code, StatusCode::OK, "{html}");
    assert!(
        html.contains("handler noop") && html.contains(&format!(r#"href="/ui/workflows/{id}/tasks/a""#)),
        "{html}"
    );
    assert!(html.contains("Predicted runtime"), "{html}");
    let (code, _, _) = fetch(&api, "GET", &format!("/ui/workflows/{id}/tasks/zz"), "", &[]).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, _, html) = fetch(&api, "GET", "/ui/workflows/nope", "", &[]).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(html.contains("no workflow `nope`"), "{html}");

    let (code, _, html) = fetch(&api, "GET", "/ui/workers", "", &[]).await;
    assert_eq!(code, StatusCode::OK);
    assert!(html.contains("No worker has sent a heartbeat"), "{html}");

    let letter = DeadLetter::new(
        "taskfleet.results",
        "not a worker event: expected value at line 1",
        "garbage".into(),
    );
    api.transport
        .publish(vec![Outgoing::new("taskfleet.dead", letter.encode())])
        .await
        .unwrap();
    let (code, _, html) = fetch(&api, "GET", "/ui/queues", "", &[]).await;
    assert_eq!(code, StatusCode::OK, "{html}");
    assert!(
        html.contains("not a worker event: expected value at line 1") && html.contains("garbage"),
        "{html}"
    );
    assert_eq!(
        api.transport.queue_len("taskfleet.dead").await.unwrap(),
        1,
        "shown, not taken"
    );

    for (asset, kind) in [
        ("htmx.min.js", "text/javascript"),
        ("dashboard.js", "text/javascript"),
        ("dashboard.css", "text/css"),
    ] {
        let (code, headers, _) = fetch(&api, "GET", &format!("/assets/{asset}"), "", &[]).await;
        assert_eq!(code, StatusCode::OK, "{asset}");
        assert!(headers["content-type"].to_str().unwrap().starts_with(kind), "{asset}");
    }
}

#[tokio::test]
async fn a_large_workflow_is_drawn_as_layers_and_listed_a_page_at_a_time() {
    let api = Api::start().await;
    let mut text = String::from("name: wide\ntasks:\n  - {id: root, handler: noop}\n");
    for idx in 0..2500 {
        text.push_str(&format!("  - {{id: leaf{idx}, deps: [root], handler: noop}}\n"));
    }
    let (code, created) = api.call("POST", "/v1/workflows", &text, None).await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    let id = created["workflow_id"].as_str().unwrap().to_string();
    let (code, _, html) = fetch(&api, "GET", &format!("/ui/workflows/{id}"), "", &[]).await;
    assert_eq!(code, StatusCode::OK);
    assert!(!html.contains(r#"<g class="node""#), "not drawn task by task");
    assert!(
        html.contains("Layer 0 · 1 tasks") && html.contains("Layer 1 · 2500 tasks"),
        "{}",
        &html[..2000]
    );
    assert!(html.contains("2500 pending"), "counted by state");
    assert!(html.contains("Tasks 1–200 of 2501"), "paged");
    let (_, _, later) = fetch(&api, "GET", &format!("/ui/workflows/{id}?tasks_from=2400"), "", &[]).await;
    assert!(
        later.contains("Tasks 2401–2501 of 2501") && later.contains(">leaf2499<"),
        "the last page"
    );
}

#[tokio::test]
async fn a_browser_signs_in_with_a_token_and_its_cookie_does_what_the_token_may() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens");
    let (reader, read_line) = auth::new_token("viewer", auth::Scope::Read).unwrap();
    let (writer, write_line) = auth::new_token("operator", auth::Scope::Write).unwrap();
    std::fs::write(&path, format!("{read_line}\n{write_line}\n")).unwrap();
    let tokens = Arc::new(auth::Tokens::load(&path).unwrap());
    let api = Api::start_with(1 << 20, Some(tokens)).await;
    let bearer = format!("Bearer {writer}");
    let (_, created) = api
        .call_with("POST", "/v1/workflows", WORKFLOW, &[("authorization", &bearer)])
        .await
        .0;
    let id = created["workflow_id"].as_str().unwrap().to_string();

    // Not signed in: pages go to the sign-in page, parts of pages tell htmx to, the API says 401.
    let (code, headers, _) = fetch(&api, "GET", &format!("/ui/workflows/{id}"), "", &[]).await;
    assert_eq!(code, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], format!("/ui/login?next=%2Fui%2Fworkflows%2F{id}"));
    let (code, headers, _) = fetch(&api, "GET", "/ui/workers", "", &[("hx-request", "true")]).await;
    assert_eq!(
        (code, headers["hx-redirect"].to_str().unwrap()),
        (StatusCode::UNAUTHORIZED, "/ui/login?next=%2Fui%2Fworkers")
    );
    let (code, _, html) = fetch(&api, "GET", "/ui/login?next=/ui/workers", "", &[]).await;
    assert_eq!(code, StatusCode::OK);
    assert!(html.contains(r#"name="next" value="/ui/workers""#), "{html}");
    let (code, _, _) = fetch(&api, "GET", "/assets/dashboard.css", "", &[]).await;
    assert_eq!(code, StatusCode::OK, "static files need no token");

    let form = [("content-type", "application/x-www-form-urlencoded")];
    let (code, headers, html) = fetch(&api, "POST", "/ui/login", "token=tf_wrong&next=%2F", &form).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert!(headers.get("set-cookie").is_none());
    assert!(html.contains("not one this scheduler accepts"), "{html}");
    let (code, headers, _) = fetch(
        &api,
        "POST",
        "/ui/login",
        &format!("token={reader}&next=https://evil.example/"),
        &form,
    )
    .await;
    assert_eq!(code, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], "/", "never to another site");
    let cookie = headers["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let read_cookie = cookie.split(';').next().unwrap().to_string();

    // Read: every page, and the API's reads; no cancel button, and a cancel is refused.
    let (code, _, html) = fetch(
        &api,
        "GET",
        &format!("/ui/workflows/{id}"),
        "",
        &[("cookie", &read_cookie)],
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{html}");
    assert!(!html.contains("/cancel\""), "a read token cannot cancel: {html}");
    assert!(html.contains("Sign out"), "{html}");
    let (code, _, _) = fetch(&api, "GET", "/v1/workflows", "", &[("cookie", &read_cookie)]).await;
    assert_eq!(code, StatusCode::OK, "the API takes the cookie");
    let same_site = [
        ("cookie", read_cookie.as_str()),
        ("host", "127.0.0.1:8080"),
        ("origin", "http://127.0.0.1:8080"),
    ];
    let (code, _, _) = fetch(&api, "POST", &format!("/v1/workflows/{id}/cancel"), "", &same_site).await;
    assert_eq!(code, StatusCode::FORBIDDEN);

    // Write: cancels from the dashboard's own origin only.
    let write_cookie = format!("taskfleet_session={writer}");
    let (_, _, html) = fetch(
        &api,
        "GET",
        &format!("/ui/workflows/{id}"),
        "",
        &[("cookie", &write_cookie)],
    )
    .await;
    assert!(
        html.contains(&format!(r#"hx-post="/v1/workflows/{id}/cancel""#)),
        "{html}"
    );
    let cross_site = [
        ("cookie", write_cookie.as_str()),
        ("host", "127.0.0.1:8080"),
        ("origin", "http://evil.example"),
    ];
    let (code, _, body) = fetch(&api, "POST", &format!("/v1/workflows/{id}/cancel"), "", &cross_site).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("dashboard's own pages"), "{body}");
    let same_site = [
        ("cookie", write_cookie.as_str()),
        ("host", "127.0.0.1:8080"),
        ("origin", "http://127.0.0.1:8080"),
    ];
    let (code, _, body) = fetch(&api, "POST", &format!("/v1/workflows/{id}/cancel"), "", &same_site).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");

    let (code, headers, _) = fetch(
        &api,
        "POST",
        "/ui/logout",
        "",
        &[("cookie", &write_cookie), ("host", "h"), ("origin", "http://h")],
    )
    .await;
    assert_eq!(code, StatusCode::SEE_OTHER);
    assert!(headers["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
}
