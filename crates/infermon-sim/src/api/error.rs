//! OpenAI-style error responses: `{"error":{"message","type","param","code"}}` with the right
//! status, plus `Retry-After` where retrying later can help.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::engine::Failure;
use crate::faults::ErrorKind;

/// OpenAI's `error.type` values.
const INVALID_REQUEST: &str = "invalid_request_error";
const SERVER_ERROR: &str = "server_error";
const RATE_LIMIT: &str = "rate_limit_error";

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<&'static str>,
    pub code: Option<&'static str>,
    /// Seconds for `Retry-After`.
    pub retry_after: Option<u32>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after: None,
        }
    }

    fn param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// 400 for a bad field.
    pub fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, INVALID_REQUEST, message).param(param)
    }

    /// 400 for a body that is not the JSON we expect.
    pub fn bad_json(error: &serde_json::Error) -> Self {
        use serde_json::error::Category;
        let message = match error.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                format!("The request body is not valid JSON: {error}")
            }
            Category::Data => format!("The request body does not match the API schema: {error}"),
        };
        Self::new(StatusCode::BAD_REQUEST, INVALID_REQUEST, message)
    }

    pub fn body_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            INVALID_REQUEST,
            format!("The request body is larger than the limit of {limit} bytes."),
        )
        .code("request_too_large")
    }

    /// vLLM's answer to a body not sent as JSON: a 400 (its validation error handler), not 415.
    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            INVALID_REQUEST,
            "Unsupported Media Type: Only 'application/json' is allowed",
        )
        .code("unsupported_media_type")
    }

    pub fn unreadable_body(detail: String) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            INVALID_REQUEST,
            format!("Could not read the request body: {detail}"),
        )
    }

    pub fn model_not_found(requested: &str, served: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            INVALID_REQUEST,
            format!("The model `{requested}` does not exist. This server serves `{served}`."),
        )
        .param("model")
        .code("model_not_found")
    }

    pub fn context_exceeded(param: &'static str, message: String) -> Self {
        Self::invalid(param, message).code("context_length_exceeded")
    }

    pub fn queue_full(max_waiting: u32) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            SERVER_ERROR,
            format!(
                "The server is overloaded: {max_waiting} requests are already waiting. \
                 Retry after the time in the Retry-After header."
            ),
        )
        .code("queue_full")
        .retry_after(1)
    }

    /// An injected arrival fault.
    pub fn injected(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::ServerError | ErrorKind::MidStream => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                SERVER_ERROR,
                "The simulated engine failed this request (injected fault).",
            )
            .code(kind.as_str()),
            ErrorKind::Overloaded => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                SERVER_ERROR,
                "The simulated engine is overloaded (injected fault).",
            )
            .code(kind.as_str())
            .retry_after(1),
            ErrorKind::RateLimited => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                RATE_LIMIT,
                "Rate limit reached (injected fault).",
            )
            .code(kind.as_str())
            .retry_after(1),
        }
    }

    /// The engine failed a request it had accepted.
    pub fn engine_failure(failure: Failure) -> Self {
        match failure {
            Failure::MidStream => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                SERVER_ERROR,
                "The simulated engine failed while generating (injected fault).",
            )
            .code(failure.error_type()),
            Failure::Shutdown => Self::engine_stopped(),
        }
    }

    /// A connection over the server's cap (answered before any request is read).
    pub fn too_many_connections(max_connections: usize) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            SERVER_ERROR,
            format!(
                "The server already has {max_connections} open connections (its limit); \
                 retry later or reuse a kept-alive connection."
            ),
        )
        .code("too_many_connections")
        .retry_after(1)
    }

    pub fn engine_stopped() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            SERVER_ERROR,
            "The simulated engine is shutting down.",
        )
        .code(crate::engine::Failure::Shutdown.error_type())
    }

    pub fn not_found(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            INVALID_REQUEST,
            format!("Unknown route {method} {path}. Routes: POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /health, GET /ping, GET /version, POST /tokenize, POST /detokenize, GET /metrics."),
        )
    }

    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            INVALID_REQUEST,
            format!("{path} does not accept {method}."),
        )
    }

    /// The JSON body, also sent as an SSE `data:` event when a stream fails part-way.
    pub fn body(&self) -> ErrorBody<'_> {
        ErrorBody {
            error: ErrorDetail {
                message: &self.message,
                kind: self.kind,
                param: self.param,
                code: self.code,
            },
        }
    }
}

#[derive(Serialize)]
pub struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
