//! The simulator's OpenAI-style errors: the shared [`ApiError`] (infermon-http) and the
//! constructors only the simulator needs ([`SimErrors`]).

use axum::http::StatusCode;
pub use infermon_http::error::{ApiError, INVALID_REQUEST, RATE_LIMIT, SERVER_ERROR};

use crate::engine::Failure;
use crate::faults::ErrorKind;

/// The routes the simulator serves, named in its 404.
pub const ROUTES: &str = "POST /v1/chat/completions, POST /v1/completions, GET /v1/models, \
    GET /health, GET /ping, GET /version, POST /tokenize, POST /detokenize, GET /metrics";

/// The simulator's own errors (vLLM's quirks, injected faults, the engine's failures).
pub trait SimErrors: Sized {
    fn unsupported_media_type() -> Self;
    fn model_not_found(requested: &str, served: &str) -> Self;
    fn context_exceeded(param: &'static str, message: String) -> Self;
    fn queue_full(max_waiting: u32) -> Self;
    fn injected(kind: ErrorKind) -> Self;
    fn engine_failure(failure: Failure) -> Self;
    fn engine_stopped() -> Self;
}

impl SimErrors for ApiError {
    /// vLLM's answer to a body not sent as JSON: a 400 (its validation error handler), not 415.
    fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            INVALID_REQUEST,
            "Unsupported Media Type: Only 'application/json' is allowed",
        )
        .code("unsupported_media_type")
    }

    fn model_not_found(requested: &str, served: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            INVALID_REQUEST,
            format!("The model `{requested}` does not exist. This server serves `{served}`."),
        )
        .param("model")
        .code("model_not_found")
    }

    fn context_exceeded(param: &'static str, message: String) -> Self {
        Self::invalid(param, message).code("context_length_exceeded")
    }

    fn queue_full(max_waiting: u32) -> Self {
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
    fn injected(kind: ErrorKind) -> Self {
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
    fn engine_failure(failure: Failure) -> Self {
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

    fn engine_stopped() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            SERVER_ERROR,
            "The simulated engine is shutting down.",
        )
        .code(crate::engine::Failure::Shutdown.error_type())
    }
}
