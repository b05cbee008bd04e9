//! API errors and how they answer: a status code and an [`ErrorBody`]. Internal errors are
//! logged and answered without their details.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use taskfleet_common::api::{ErrorBody, ProblemBody};
use taskfleet_common::workflow::InvalidWorkflow;
use tracing::error;

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Invalid(InvalidWorkflow),
    /// The request is well-formed but cannot be processed (e.g. an idempotency key reused).
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(anyhow::Error),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, error, problems) = match self {
            ApiError::BadRequest(message) => (StatusCode::BAD_REQUEST, message, vec![]),
            ApiError::Unauthorized(message) => (StatusCode::UNAUTHORIZED, message, vec![]),
            ApiError::Forbidden(message) => (StatusCode::FORBIDDEN, message, vec![]),
            ApiError::NotFound(message) => (StatusCode::NOT_FOUND, message, vec![]),
            ApiError::Conflict(message) => (StatusCode::CONFLICT, message, vec![]),
            ApiError::Invalid(invalid) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                invalid.to_string(),
                invalid.problems.iter().map(ProblemBody::from).collect(),
            ),
            ApiError::Unprocessable(message) => (StatusCode::UNPROCESSABLE_ENTITY, message, vec![]),
            ApiError::TooLarge(message) => (StatusCode::PAYLOAD_TOO_LARGE, message, vec![]),
            ApiError::Unavailable(message) => (StatusCode::SERVICE_UNAVAILABLE, message, vec![]),
            ApiError::Internal(cause) => {
                error!(error = %format!("{cause:#}"), "Request failed.");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error".to_string(), vec![])
            }
        };
        (code, Json(ErrorBody { error, problems })).into_response()
    }
}
