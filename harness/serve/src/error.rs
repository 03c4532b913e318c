//! The crate's error type and OpenAI-style error responses.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fuselab_http::protocol::{ErrorBody, ErrorDetail};

/// What can stop the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The engine could not start.
    #[error(transparent)]
    Engine(#[from] fuselab_harness::HarnessError),
    /// Listening or serving failed.
    #[error("serving: {0}")]
    Io(#[source] std::io::Error),
}

/// A request the server refuses, answered with an OpenAI-style body.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub param: Option<&'static str>,
    pub code: Option<&'static str>,
    pub message: String,
}

impl ApiError {
    /// 400 `invalid_request_error` about `param`.
    pub fn invalid(param: Option<&'static str>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            param,
            code: None,
            message: message.into(),
        }
    }

    pub fn with(mut self, status: StatusCode, kind: &'static str, code: &'static str) -> Self {
        self.status = status;
        self.kind = kind;
        self.code = Some(code);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                message: self.message,
                kind: self.kind.into(),
                param: self.param.map(Into::into),
                code: Some(
                    self.code
                        .map_or_else(|| self.status.as_u16().to_string(), Into::into),
                ),
            },
        };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        (
            self.status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            json,
        )
            .into_response()
    }
}
