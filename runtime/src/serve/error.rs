//! Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}` with an HTTP
//! status. Every refusal of the server goes through [`ApiError`], so clients always get JSON.

use serde_json::{json, Value};

/// One error response. `status` is the HTTP status code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    /// OpenAI's `type`: `invalid_request_error`, `not_found_error`, `overloaded_error`, `server_error`.
    pub kind: &'static str,
    /// The request field at fault, if one is.
    pub param: Option<String>,
    /// A stable machine-readable code (documented in the README's error table).
    pub code: &'static str,
}

impl ApiError {
    fn new(
        status: u16,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code,
        }
    }

    /// 400 about one request field.
    pub fn invalid(param: &str, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            param: Some(param.to_string()),
            ..Self::new(400, "invalid_request_error", code, message)
        }
    }

    /// 400 about the body as a whole.
    pub fn bad_body(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(400, "invalid_request_error", code, message)
    }

    pub fn body_too_large(limit: usize) -> Self {
        Self::new(
            413,
            "invalid_request_error",
            "body_too_large",
            format!(
                "the request body is larger than the limit of {limit} bytes (--max-body-bytes)"
            ),
        )
    }

    pub fn not_found(path: &str) -> Self {
        Self::new(
            404,
            "not_found_error",
            "unknown_route",
            format!("no route for {path}"),
        )
    }

    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(
            405,
            "invalid_request_error",
            "method_not_allowed",
            format!("method {method} is not allowed on {path}"),
        )
    }

    pub fn queue_full(limit: usize) -> Self {
        Self::new(
            503,
            "overloaded_error",
            "queue_full",
            format!(
                "the server is busy: {limit} requests are already queued or running; retry later"
            ),
        )
    }

    /// 401: no `Authorization: Bearer KEY` header, or the wrong key (`--api-key`).
    pub fn invalid_api_key(given: bool) -> Self {
        let message = if given {
            "incorrect API key provided (--api-key / QWEN_API_KEY)"
        } else {
            "no API key provided: send the header `Authorization: Bearer KEY`"
        };
        Self::new(401, "invalid_request_error", "invalid_api_key", message)
    }

    /// 503 while the server drains before it stops (SIGTERM / SIGINT).
    pub fn shutting_down() -> Self {
        Self::new(
            503,
            "overloaded_error",
            "shutting_down",
            "the server is shutting down and takes no new requests; retry on another replica",
        )
    }

    /// 408: the body did not arrive within `--body-timeout-seconds`.
    pub fn body_timeout(seconds: f64) -> Self {
        Self::new(
            408,
            "invalid_request_error",
            "body_timeout",
            format!("the request body did not arrive within {seconds} s (--body-timeout-seconds)"),
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "server_error", "internal_error", message)
    }

    /// The JSON body.
    pub fn to_json(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl axum::response::IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        let status = axum::http::StatusCode::from_u16(self.status)
            .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        let body = self.to_json().to_string();
        (
            status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }
}
