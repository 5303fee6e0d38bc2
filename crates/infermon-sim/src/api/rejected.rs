//! Requests turned away before they reach the engine (a bad body, an unknown model, a prompt
//! too long for the context, …) still become a trace: a SERVER request span marked as an error
//! and an `llm.requests` point with its `error.type`, like the requests the engine serves.
//!
//! Kept in one place on purpose: everything the simulator records for a rejection goes through
//! [`Rejection::respond`].

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use infermon::contract::value;
use infermon::propagation::extract_context;
use infermon::request::{InferenceRequest, RequestParams};

use crate::api::error::ApiError;
use crate::api::stream::Api;
use crate::SimHandle;

/// A request rejected before admission, with what is known of it for the telemetry.
pub struct Rejection {
    pub error: ApiError,
    /// The model the client asked for, when the body got far enough to say.
    pub model: Option<String>,
    pub stream: bool,
}

impl From<ApiError> for Rejection {
    fn from(error: ApiError) -> Self {
        Self {
            error,
            model: None,
            stream: false,
        }
    }
}

impl Rejection {
    pub fn new(error: ApiError, model: &str, stream: bool) -> Self {
        Self {
            error,
            model: Some(model.to_owned()),
            stream,
        }
    }

    /// Records the request span and metric point, then answers with the error.
    pub fn respond(self, sim: &SimHandle, headers: &HeaderMap, api: Api) -> Response {
        let parent = extract_context(headers);
        let operation = match api {
            Api::Chat => value::OPERATION_CHAT,
            Api::Completion => value::OPERATION_TEXT_COMPLETION,
        };
        // A body too broken to name its model is attributed to the served one's label slot
        // for "other", so it neither vanishes nor invents a model name.
        let model = self.model.as_deref().unwrap_or(value::OVERFLOW);
        let request = InferenceRequest::start(
            &sim.request_metrics,
            RequestParams {
                operation,
                model,
                provider: value::PROVIDER_SIMULATOR,
                max_tokens: None,
                temperature: None,
                top_p: None,
                stream: self.stream,
                input_tokens: 0,
                response_id: None,
            },
            Some(&parent),
        );
        request.fail(error_type(&self.error));
        self.error.into_response()
    }
}

/// The contract's `error.type` for an error answered before admission.
pub fn error_type(error: &ApiError) -> &'static str {
    match (error.status, error.code) {
        (_, Some("context_length_exceeded")) => value::ERROR_CONTEXT_LENGTH,
        (_, Some("model_not_found")) => value::ERROR_MODEL_NOT_FOUND,
        (_, Some("unsupported_media_type")) => value::ERROR_UNSUPPORTED_MEDIA_TYPE,
        (StatusCode::PAYLOAD_TOO_LARGE, _) => value::ERROR_REQUEST_TOO_LARGE,
        (StatusCode::SERVICE_UNAVAILABLE, _) => value::ERROR_SHUTDOWN,
        (status, _) if status.is_server_error() => value::ERROR_SERVER,
        _ => value::ERROR_INVALID_REQUEST,
    }
}
