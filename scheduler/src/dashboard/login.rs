//! Signing in to the dashboard with an API token. The token is kept in a cookie the browser
//! sends back only to this scheduler (HttpOnly: no script reads it; SameSite=Strict: no other
//! site's page makes the browser send it), and the API accepts it as it accepts a bearer
//! token; a state-changing call with it must also come from the dashboard's own origin.

use axum::extract::{Query, State};
use axum::http::header::{COOKIE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use maud::html;

use super::{page, Viewer};
use crate::api::ApiState;

/// The cookie that holds the token.
pub(crate) const COOKIE_NAME: &str = "taskfleet_session";
/// How long a sign-in lasts, in seconds.
const SESSION_SECONDS: u32 = 12 * 3600;

/// The token of the request's session cookie, if any.
pub(crate) fn session_token(headers: &HeaderMap) -> Option<&str> {
    (headers.get_all(COOKIE).iter())
        .filter_map(|value| value.to_str().ok())
        .flat_map(|cookies| cookies.split(';'))
        .filter_map(|cookie| cookie.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

/// Where to go after signing in: a path of this site only (never another site).
pub(crate) fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(path) if path.starts_with('/') && !path.starts_with("//") && !path.contains('\\') => path.to_string(),
        _ => "/".to_string(),
    }
}

/// The answer that sends a browser to the sign-in page, back to `path` afterwards (htmx
/// follows `HX-Redirect` for a part of a page).
pub(crate) fn to_sign_in(path_and_query: &str, headers: &HeaderMap) -> Response {
    let target = format!("/ui/login?next={}", super::segment(path_and_query));
    if headers.contains_key("hx-request") {
        return (StatusCode::UNAUTHORIZED, [("hx-redirect", target)]).into_response();
    }
    (StatusCode::SEE_OTHER, [(LOCATION, target)]).into_response()
}

#[derive(serde::Deserialize)]
pub(super) struct NextQuery {
    next: Option<String>,
}

pub(super) async fn form(State(state): State<ApiState>, Query(query): Query<NextQuery>) -> Response {
    sign_in_page(&state, &safe_next(query.next.as_deref()), None, StatusCode::OK)
}

fn sign_in_page(state: &ApiState, next: &str, problem: Option<&str>, code: StatusCode) -> Response {
    let viewer = Viewer {
        scope: crate::api::auth::Scope::Read,
        signed_in: false,
    };
    let body = html! {
        section.signin {
            h1 { "Sign in" }
            @if state.tokens.is_none() {
                p { "This scheduler asks for no token: " a href="/" { "go to the workflows" } "." }
            } @else {
                p.muted { "With an API token (" code { "taskfleet token new --scope read|write" } "): " code { "read" } " to look, " code { "write" } " to cancel and retry." }
                @if let Some(problem) = problem { p.problem role="alert" { (problem) } }
                form method="post" action="/ui/login" {
                    input type="hidden" name="next" value=(next);
                    label for="token" { "Token" }
                    input #token type="password" name="token" autocomplete="current-password" required autofocus;
                    button type="submit" { "Sign in" }
                }
            }
        }
    };
    (code, page("Sign in", None, viewer, state, body)).into_response()
}

#[derive(serde::Deserialize)]
pub(super) struct SignIn {
    token: String,
    next: Option<String>,
}

pub(super) async fn sign_in(State(state): State<ApiState>, Form(form): Form<SignIn>) -> Response {
    let next = safe_next(form.next.as_deref());
    let token = form.token.trim();
    let Some(tokens) = &state.tokens else {
        return (StatusCode::SEE_OTHER, [(LOCATION, next)]).into_response();
    };
    // A token is visible ASCII; anything else cannot be one and must not reach a header.
    let plausible = !token.is_empty() && token.len() <= 256 && token.bytes().all(|byte| byte.is_ascii_graphic());
    if !plausible || tokens.scope_of(token).is_none() {
        return sign_in_page(
            &state,
            &next,
            Some("That token is not one this scheduler accepts."),
            StatusCode::UNAUTHORIZED,
        );
    }
    let cookie = format!("{COOKIE_NAME}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECONDS}");
    (StatusCode::SEE_OTHER, [(SET_COOKIE, cookie), (LOCATION, next)]).into_response()
}

pub(super) async fn sign_out() -> Response {
    let cookie = format!("{COOKIE_NAME}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    (
        StatusCode::SEE_OTHER,
        [(SET_COOKIE, cookie), (LOCATION, "/ui/login".to_string())],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_static("theme=dark; taskfleet_session=tf_abc ; x=1"),
        );
        assert_eq!(session_token(&headers), Some("tf_abc"));
        headers.insert(COOKIE, HeaderValue::from_static("taskfleet_session="));
        assert_eq!(session_token(&headers), None);
    }

    #[test]
    fn sign_in_sends_back_to_this_site_only() {
        assert_eq!(safe_next(Some("/ui/workers")), "/ui/workers");
        for elsewhere in ["https://evil.example/", "//evil.example/", "/\\evil.example", "ui"] {
            assert_eq!(safe_next(Some(elsewhere)), "/", "{elsewhere}");
        }
        assert_eq!(safe_next(None), "/");
    }
}
