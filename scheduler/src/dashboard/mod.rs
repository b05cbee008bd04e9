//! The web dashboard, served by the scheduler next to its API and through the same tokens:
//! workflows (filters, live counts), one workflow as a DAG with live task states and as a
//! Gantt chart of its attempts, a task (attempts, output tails, output, inputs, predicted
//! against actual runtime), the workers, and the queues. Pages are rendered on the server
//! (maud); htmx (vendored under `scheduler/assets`) refreshes parts of them, and a workflow's
//! page follows its event stream. Cancel and retry call the API.
//!
//! With a tokens file, a browser signs in at `/ui/login` with a token, kept in an HttpOnly,
//! SameSite=Strict cookie that the API accepts in place of a bearer token (`auth.rs`).

mod dag;
mod fleet;
mod gantt;
pub(crate) mod login;
mod task;
mod workflow;
mod workflows;

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup, DOCTYPE};
use taskfleet_common::text::url_segment as segment;

use crate::api::auth::Scope;
use crate::api::{ApiError, ApiState};

/// The dashboard's routes.
pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/", get(workflows::page))
        .route("/ui/workflows", get(workflows::rows))
        .route("/ui/workflows/{id}", get(workflow::page))
        .route("/ui/workflows/{id}/summary", get(workflow::summary))
        .route("/ui/workflows/{id}/gantt", get(workflow::gantt))
        .route("/ui/workflows/{id}/tasks/{task}", get(task::page))
        .route("/ui/workers", get(fleet::workers))
        .route("/ui/queues", get(fleet::queues))
        .route("/ui/login", get(login::form).post(login::sign_in))
        .route("/ui/logout", post(login::sign_out))
        .route("/assets/{file}", get(asset))
}

/// Whether `path` is a page of the dashboard (answered with a sign-in page, not a 401).
pub(crate) fn is_page(path: &str) -> bool {
    path == "/" || path.starts_with("/ui/")
}

/// Whether `path` is open to anyone: the sign-in page and the static files.
pub(crate) fn is_open(path: &str) -> bool {
    path == "/ui/login" || path.starts_with("/assets/")
}

/// Who is looking: what the token they signed in with allows (everything without tokens),
/// and whether they signed in (and can sign out).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Viewer {
    pub scope: Scope,
    pub signed_in: bool,
}

impl Viewer {
    /// The viewer of a request: the scope the API's authorization found, if any.
    pub(crate) fn of(scope: Option<axum::Extension<Scope>>) -> Viewer {
        match scope {
            Some(axum::Extension(scope)) => Viewer { scope, signed_in: true },
            None => Viewer {
                scope: Scope::Write,
                signed_in: false,
            },
        }
    }

    pub(crate) fn can_write(self) -> bool {
        self.scope >= Scope::Write
    }
}

/// Which part of the dashboard a page belongs to, for the navigation.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Workflows,
    Workers,
    Queues,
}

/// A whole page: the navigation, `body`, and who serves it.
fn page(title: &str, section: Option<Section>, viewer: Viewer, state: &ApiState, body: Markup) -> Markup {
    let role = state.scheduler.role();
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · taskfleet" }
                link rel="stylesheet" href="/assets/dashboard.css";
                script src="/assets/htmx.min.js" defer {}
                script src="/assets/dashboard.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/" { "taskfleet" }
                    nav {
                        @for (name, href, this) in [("Workflows", "/", Section::Workflows), ("Workers", "/ui/workers", Section::Workers), ("Queues", "/ui/queues", Section::Queues)] {
                            a href=(href) aria-current=[(section == Some(this)).then_some("page")] { (name) }
                        }
                    }
                    span.who {
                        (state.scheduler.name()) " · " (role.as_str())
                        @if viewer.signed_in {
                            " · " (viewer.scope.as_str())
                            form.inline method="post" action="/ui/logout" { button.link type="submit" { "Sign out" } }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// Why a page cannot be shown, as a page.
#[derive(Debug)]
pub(crate) struct PageError(ApiError);

impl From<ApiError> for PageError {
    fn from(error: ApiError) -> Self {
        PageError(error)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        // The API's answer decides the status; the page says it for people.
        let code = self.0.status();
        let message = match &self.0 {
            ApiError::Internal(_) => "Something went wrong on the scheduler; its log says what.".to_string(),
            other => other.to_string(),
        };
        if let ApiError::Internal(error) = &self.0 {
            tracing::error!(error = format!("{error:#}"), "A dashboard page failed.");
        }
        let body = html! {
            (DOCTYPE)
            html lang="en" {
                head { meta charset="utf-8"; title { "taskfleet" } link rel="stylesheet" href="/assets/dashboard.css"; }
                body { main { h1 { (code.as_u16()) " " (code.canonical_reason().unwrap_or("")) } p.problem { (message) } p { a href="/" { "All workflows" } } } }
            }
        };
        (code, body).into_response()
    }
}

/// A static file of the dashboard.
async fn asset(Path(file): Path<String>) -> Response {
    let (content_type, text) = match file.as_str() {
        "htmx.min.js" => (
            "text/javascript; charset=utf-8",
            include_str!("../../assets/htmx.min.js"),
        ),
        "dashboard.js" => (
            "text/javascript; charset=utf-8",
            include_str!("../../assets/dashboard.js"),
        ),
        "dashboard.css" => ("text/css; charset=utf-8", include_str!("../../assets/dashboard.css")),
        _ => return (StatusCode::NOT_FOUND, "no such file").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        text,
    )
        .into_response()
}

/// A state as a coloured badge.
fn badge(state: &str) -> Markup {
    html! { span.badge data-state=(state) { (state) } }
}

/// A time in milliseconds since the epoch, as RFC 3339 to the second.
fn when(at_ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(at_ms)).to_string()
}
