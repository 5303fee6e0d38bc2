//! Requests turned away before they reach the engine (a bad body, an unknown model, a prompt
//! too long for the context, …) still become a trace: a SERVER request span marked as an error
//! and an `llm.requests` point with its `error.type`, like the requests the engine serves.
//!
//! Kept in one place on purpose: everything the simulator records for a rejection goes through
//! [`Rejection::respond`].

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use infermon::contract::{attr, field, span as names, value};
use infermon::propagation::extract_context;

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
    ///
    /// The request span alone, opened with its `error.type` and closed at once: a request that
    /// never reached the engine has no queue, prefill or decode phase, so it adds nothing to
    /// the phase-duration histograms; the subscriber's metrics layer counts it in
    /// `llm.requests` with outcome `error` (docs/instrumenting.md, "The request span").
    pub fn respond(self, sim: &SimHandle, headers: &HeaderMap, api: Api) -> Response {
        let operation = match api {
            Api::Chat => value::OPERATION_CHAT,
            Api::Completion => value::OPERATION_TEXT_COMPLETION,
        };
        // A body too broken to name its model is attributed to "other", so it neither
        // vanishes nor invents a model name; a named one goes through the model cap, as the
        // span name and the metric label both carry it.
        let model = sim
            .request_metrics
            .model_label(self.model.as_deref().unwrap_or(value::OVERFLOW));
        let error_type = error_type(&self.error);
        let caller = extract_context(headers).attach();
        // Not the typed path's target: that one the metrics layer leaves to the typed path,
        // which records its own metrics; this span is counted by the layer like any other.
        let _request = tracing::info_span!(
            names::REQUEST,
            { field::OTEL_NAME } = names::request_span_name(operation, model.as_str()).as_str(),
            { field::OTEL_KIND } = field::KIND_SERVER,
            { attr::GEN_AI_OPERATION_NAME } = operation,
            { attr::GEN_AI_PROVIDER_NAME } = value::PROVIDER_SIMULATOR,
            { attr::GEN_AI_REQUEST_MODEL } = model.as_str(),
            { attr::GEN_AI_REQUEST_STREAM } = self.stream,
            { attr::ERROR_TYPE } = error_type,
            { field::OTEL_STATUS_CODE } = field::STATUS_ERROR,
            { field::OTEL_STATUS_DESCRIPTION } = error_type,
        );
        drop(caller);
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
