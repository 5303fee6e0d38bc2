//! OpenAI-style error responses, `{"error":{"message","type","param","code"}}` with the right
//! status and `Retry-After` where retrying later can help — the shape OpenAI's clients parse,
//! shared by every infermon server (each adds its own constructors).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// OpenAI's `error.type` values.
pub const INVALID_REQUEST: &str = "invalid_request_error";
pub const SERVER_ERROR: &str = "server_error";
pub const RATE_LIMIT: &str = "rate_limit_error";
pub const AUTHENTICATION: &str = "authentication_error";

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
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after: None,
        }
    }

    pub fn param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    pub fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// 400 for a bad field.
    pub fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, INVALID_REQUEST, message).param(param)
    }

    /// 400 for a body that is not the JSON expected.
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

    pub fn unreadable_body(detail: String) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            INVALID_REQUEST,
            format!("Could not read the request body: {detail}"),
        )
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

    /// 404 naming the routes that exist (`routes`: e.g. `POST /v1/chat/completions, …`).
    pub fn not_found(method: &str, path: &str, routes: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            INVALID_REQUEST,
            format!("Unknown route {method} {path}. Routes: {routes}."),
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
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }
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
