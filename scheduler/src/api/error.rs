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

impl ApiError {
    /// The status code it answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Invalid(_) | ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.status();
        let (error, problems) = match self {
            ApiError::BadRequest(message)
            | ApiError::Unauthorized(message)
            | ApiError::Forbidden(message)
            | ApiError::NotFound(message)
            | ApiError::Conflict(message)
            | ApiError::Unprocessable(message)
            | ApiError::TooLarge(message)
            | ApiError::Unavailable(message) => (message, vec![]),
            ApiError::Invalid(invalid) => (
                invalid.to_string(),
                invalid.problems.iter().map(ProblemBody::from).collect(),
            ),
            ApiError::Internal(cause) => {
                error!(error = %format!("{cause:#}"), "Request failed.");
                ("internal error".to_string(), vec![])
            }
        };
        (code, Json(ErrorBody { error, problems })).into_response()
    }
}
