//! API errors: a status and the JSON body `{"error", "detail"}`. A user's mistake says what is
//! wrong and where; an internal failure is logged once with its cause and answered with a
//! generic detail — internals never reach the client.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An API error.
#[derive(Debug)]
pub struct ApiError {
    pub(super) status: StatusCode,
    pub(super) error: &'static str,
    pub(super) detail: String,
}

/// A handler's result.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// An error with its status, code and detail.
    pub fn new(status: StatusCode, error: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            error,
            detail: detail.into(),
        }
    }

    /// 400: a bad parameter.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", detail)
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    /// 500: logged here with its causes; the client gets a generic detail.
    pub fn internal(cause: impl std::error::Error + 'static) -> Self {
        tracing::error!(cause = %crate::error::Report(&cause), "HTTP request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server could not answer this request; the cause is in its log",
        )
    }

    /// The body, as the stream sends it.
    pub fn body(&self) -> String {
        json!({ "error": self.error, "detail": self.detail }).to_string()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({ "error": self.error, "detail": self.detail })),
        )
            .into_response()
    }
}

/// A library error at the HTTP boundary: 503 when trying again works, 500 otherwise (logged;
/// internals never reach the client).
impl From<crate::Error> for ApiError {
    fn from(e: crate::Error) -> Self {
        match e {
            crate::Error::Busy(detail) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "busy", detail)
            }
            e => Self::internal(e),
        }
    }
}
