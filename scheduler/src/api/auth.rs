//! Bearer tokens for the API, with two scopes: `read`, and `write` (submit, cancel; includes
//! read). The scheduler keeps only a hash of each token, in a tokens file (one token per line:
//! `NAME SCOPE sha256:HEX`, `#` comments), re-read on SIGHUP or when it changes, so a token
//! is revoked by deleting its line. `/healthz` and `/readyz` need no token.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::ApiError;

/// What a token allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Read,
    Write,
}

impl Scope {
    pub fn parse(text: &str) -> Option<Scope> {
        match text {
            "read" => Some(Scope::Read),
            "write" => Some(Scope::Write),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
        }
    }
}

/// One line of a tokens file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenEntry {
    pub name: String,
    pub scope: Scope,
    /// The SHA-256 of the token, in hex.
    pub sha256: String,
}

/// The hash a tokens file keeps of `token`.
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// A new random token (`tf_` and 64 hex digits: 256 bits) and the tokens-file line for it.
pub fn new_token(name: &str, scope: Scope) -> Result<(String, String), String> {
    check_name(name)?;
    let bytes: [u8; 32] = rand::random();
    let token = format!(
        "tf_{}",
        bytes.iter().map(|byte| format!("{byte:02x}")).collect::<String>()
    );
    let line = format!("{name} {} sha256:{}", scope.as_str(), hash_token(&token));
    Ok((token, line))
}

fn check_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "a token name is 1 to 64 of A-Z a-z 0-9 . _ @ - (got `{}`)",
            taskfleet_common::text::printable(name)
        ))
    }
}

/// Reads a tokens file's text; an error names the line.
pub fn parse_tokens(text: &str) -> Result<Vec<TokenEntry>, String> {
    let mut entries = Vec::new();
    for (idx, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let problem = |what: &str| format!("line {}: {what}", idx + 1);
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [name, scope, hash] = fields[..] else {
            return Err(problem("expected `NAME SCOPE sha256:HEX`"));
        };
        check_name(name).map_err(|error| problem(&error))?;
        let scope = Scope::parse(scope).ok_or_else(|| problem("the scope is `read` or `write`"))?;
        let sha256 = hash
            .strip_prefix("sha256:")
            .filter(|hex| hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()))
            .ok_or_else(|| problem("the hash is `sha256:` and 64 hex digits"))?;
        entries.push(TokenEntry {
            name: name.to_string(),
            scope,
            sha256: sha256.to_ascii_lowercase(),
        });
    }
    Ok(entries)
}

/// The tokens the API accepts, from a file, kept current.
#[derive(Debug)]
pub struct Tokens {
    path: PathBuf,
    entries: RwLock<Vec<TokenEntry>>,
    /// When the file was last read, as the file system said.
    read_at: RwLock<Option<SystemTime>>,
}

impl Tokens {
    /// Reads the tokens file at `path`.
    pub fn load(path: &Path) -> Result<Tokens, String> {
        let tokens = Tokens {
            path: path.to_path_buf(),
            entries: RwLock::new(Vec::new()),
            read_at: RwLock::new(None),
        };
        tokens.reload()?;
        Ok(tokens)
    }

    /// Reads the file again; on an error the tokens stay as they were.
    pub fn reload(&self) -> Result<usize, String> {
        let shown = self.path.display();
        let modified = std::fs::metadata(&self.path).and_then(|meta| meta.modified()).ok();
        let text = std::fs::read_to_string(&self.path)
            .map_err(|error| format!("cannot read the tokens file {shown}: {error}"))?;
        let entries = parse_tokens(&text).map_err(|error| format!("the tokens file {shown}, {error}"))?;
        let n = entries.len();
        *self.entries.write().unwrap_or_else(std::sync::PoisonError::into_inner) = entries;
        *self.read_at.write().unwrap_or_else(std::sync::PoisonError::into_inner) = modified;
        Ok(n)
    }

    /// Reads the file again if it changed since it was last read.
    pub fn reload_if_changed(&self) {
        let modified = std::fs::metadata(&self.path).and_then(|meta| meta.modified()).ok();
        let read_at = *self.read_at.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        if modified.is_some() && modified != read_at {
            self.reload_logged("it changed");
        }
    }

    /// Reloads, logging the outcome.
    pub fn reload_logged(&self, why: &str) {
        match self.reload() {
            Ok(n) => info!(tokens = n, path = %self.path.display(), "API tokens read again: {why}."),
            Err(error) => warn!(%error, "Keeping the API tokens as they were."),
        }
    }

    /// The scope of `token`, if the file lists it.
    pub fn scope_of(&self, token: &str) -> Option<Scope> {
        let hash = hash_token(token);
        let entries = self.entries.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        entries
            .iter()
            .find(|entry| entry.sha256 == hash)
            .map(|entry| entry.scope)
    }

    /// Watches for SIGHUP and for the file changing (checked every two seconds) until
    /// `stopped`, reading the file again on either.
    pub async fn watch(self: Arc<Self>, stopped: tokio_util::sync::CancellationToken) {
        let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
        loop {
            let hangup = async {
                match hangups.as_mut() {
                    Some(hangups) => hangups.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stopped.cancelled() => return,
                _ = hangup => self.reload_logged("SIGHUP"),
                _ = tick.tick() => self.reload_if_changed(),
            }
        }
    }
}

/// What a request needs: nothing for the probes, the sign-in page and the dashboard's static
/// files, `write` for what changes state, `read` else.
fn needed(method: &Method, path: &str) -> Option<Scope> {
    if matches!(path, "/healthz" | "/readyz") || crate::dashboard::is_open(path) {
        return None;
    }
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        Some(Scope::Read)
    } else {
        Some(Scope::Write)
    }
}

/// Checks the request's token (a bearer token, or the dashboard's session cookie) against
/// the tokens file, when there is one, and hands the handlers its scope. A dashboard page
/// without a valid token sends the browser to the sign-in page instead of answering 401.
pub(super) async fn authorize(State(tokens): State<Option<Arc<Tokens>>>, mut request: Request, next: Next) -> Response {
    let Some(tokens) = tokens else {
        return next.run(request).await;
    };
    let Some(needed) = needed(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    let headers = request.headers();
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    let cookie = crate::dashboard::login::session_token(headers);
    let page = crate::dashboard::is_page(request.uri().path());
    let to_sign_in = || {
        let target = request.uri().path_and_query().map_or("/", |path| path.as_str());
        crate::dashboard::login::to_sign_in(target, request.headers())
    };
    let Some(presented) = bearer.or(cookie) else {
        if page {
            return to_sign_in();
        }
        return unauthorized(
            "this API needs a bearer token: `Authorization: Bearer TOKEN` (TASKFLEET_TOKEN for the CLI)",
        );
    };
    match tokens.scope_of(presented) {
        None if page => to_sign_in(),
        None => unauthorized("the bearer token is not one this scheduler accepts"),
        Some(scope) if scope < needed => ApiError::Forbidden(format!(
            "this token's scope is `{}`; {} {} needs `{}`",
            scope.as_str(),
            request.method(),
            request.uri().path(),
            needed.as_str()
        ))
        .into_response(),
        // A browser sends the cookie along with any page's request to this site: what
        // changes state must come from the dashboard's own pages.
        Some(_) if bearer.is_none() && needed == Scope::Write && !same_origin(headers) => {
            ApiError::Forbidden("a request signed in by cookie must come from the dashboard's own pages".into())
                .into_response()
        }
        Some(scope) => {
            request.extensions_mut().insert(scope);
            next.run(request).await
        }
    }
}

/// Whether the request's `Origin` (or, without one, its `Referer`) is this very host.
fn same_origin(headers: &axum::http::HeaderMap) -> bool {
    let Some(host) = headers
        .get(axum::http::header::HOST)
        .and_then(|value| value.to_str().ok())
    else {
        return false;
    };
    let from = (headers.get(axum::http::header::ORIGIN))
        .or_else(|| headers.get(axum::http::header::REFERER))
        .and_then(|value| value.to_str().ok());
    let Some(from) = from else {
        return false;
    };
    let authority = from
        .split_once("://")
        .map_or("", |(_, rest)| rest.split('/').next().unwrap_or(""));
    authority.eq_ignore_ascii_case(host)
}

fn unauthorized(message: &str) -> Response {
    let mut response = ApiError::Unauthorized(message.to_string()).into_response();
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"taskfleet\""));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_request_is_from_this_site_only_when_its_origin_is_this_host() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = axum::http::HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, HeaderValue::from_static(value));
            }
            map
        };
        assert!(same_origin(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080")
        ])));
        assert!(same_origin(&headers(&[
            ("host", "sched:80"),
            ("referer", "http://sched:80/ui/workflows/x")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://evil.example")
        ])));
        assert!(
            !same_origin(&headers(&[("host", "127.0.0.1:8080")])),
            "neither origin nor referer"
        );
    }

    #[test]
    fn a_new_token_checks_against_its_own_line_only() {
        let (token, line) = new_token("ci", Scope::Write).unwrap();
        assert!(token.starts_with("tf_") && token.len() == 67, "{token}");
        assert!(!line.contains(&token), "the line must not hold the token");
        let entries = parse_tokens(&format!("# tokens\n\n{line}\n")).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!((entries[0].name.as_str(), entries[0].scope), ("ci", Scope::Write));
        assert_eq!(entries[0].sha256, hash_token(&token));
        let (other, _) = new_token("ci", Scope::Write).unwrap();
        assert_ne!(hash_token(&other), entries[0].sha256);
    }

    #[test]
    fn a_bad_line_is_named() {
        let good = format!("ok read sha256:{}", "a".repeat(64));
        for (text, needle) in [
            ("just-a-name", "line 1: expected"),
            ("x admin sha256:00", "line 1: the scope"),
            ("x read md5:00", "the hash"),
            ("x read sha256:zz", "the hash"),
            ("bad/name read sha256:00", "a token name"),
        ] {
            let error = parse_tokens(&format!("{good}\n{text}\n")).unwrap_err();
            assert!(error.contains(&needle.replace("line 1", "line 2")), "{text}: {error}");
        }
        assert!(new_token("has space", Scope::Read).is_err());
    }

    #[test]
    fn probes_need_nothing_changes_need_write() {
        assert_eq!(needed(&Method::GET, "/healthz"), None);
        assert_eq!(needed(&Method::GET, "/readyz"), None);
        assert_eq!(needed(&Method::GET, "/v1/workflows"), Some(Scope::Read));
        assert_eq!(needed(&Method::GET, "/v1/openapi.json"), Some(Scope::Read));
        assert_eq!(needed(&Method::POST, "/v1/workflows"), Some(Scope::Write));
        assert_eq!(needed(&Method::POST, "/v1/workflows/x/cancel"), Some(Scope::Write));
        assert_eq!(needed(&Method::DELETE, "/v1/workflows"), Some(Scope::Write));
        assert!(Scope::Write > Scope::Read);
    }
}
