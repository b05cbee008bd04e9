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
        let (code, body) = match self {
            ApiError::BadRequest(message) => (
                StatusCode::BAD_REQUEST,
                ErrorBody {
                    error: message,
                    problems: vec![],
                },
            ),
            ApiError::NotFound(message) => (
                StatusCode::NOT_FOUND,
                ErrorBody {
                    error: message,
                    problems: vec![],
                },
            ),
            ApiError::Conflict(message) => (
                StatusCode::CONFLICT,
                ErrorBody {
                    error: message,
                    problems: vec![],
                },
            ),
            ApiError::Invalid(invalid) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorBody {
                    error: invalid.to_string(),
                    problems: invalid.problems.iter().map(ProblemBody::from).collect(),
                },
            ),
            ApiError::Unprocessable(message) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorBody {
                    error: message,
                    problems: vec![],
                },
            ),
            ApiError::TooLarge(message) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorBody {
                    error: message,
                    problems: vec![],
                },
            ),
            ApiError::Unavailable(message) => (
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorBody {
                    error: message,
                    problems: vec![],
                },
            ),
            ApiError::Internal(cause) => {
                error!(error = %format!("{cause:#}"), "Request failed.");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorBody {
                        error: "internal error".into(),
                        problems: vec![],
                    },
                )
            }
        };
        (code, Json(body)).into_response()
    }
}
