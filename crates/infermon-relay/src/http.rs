//! The OTLP/HTTP receiver: `POST /v1/traces` with a binary protobuf body (vLLM's
//! `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=http/protobuf`). Errors answer as OTLP/HTTP specifies: a
//! protobuf `google.rpc.Status` body; 400 for an undecodable body, 413 over the size limit, 415
//! for another content type or a compressed body, 429 (queue full) and 503 (shutting down) with
//! `Retry-After`.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::forward::Refused;
use crate::relay::Intake;

/// The OTLP/HTTP path for traces.
pub const TRACES_PATH: &str = "/v1/traces";
const PROTOBUF: &str = "application/x-protobuf";

#[derive(Clone)]
struct AppState {
    intake: Arc<Intake>,
    max_message_bytes: usize,
}

/// Serves until `stop` turns true, through infermon's HTTP server (header-read and idle
/// timeouts, a connection cap, a bounded drain: the same as the simulator's and the gateway's).
pub(crate) async fn serve(
    listener: TcpListener,
    intake: Arc<Intake>,
    max_message_bytes: usize,
    options: infermon_http::ServeOptions,
    mut stop: watch::Receiver<bool>,
) {
    let app = Router::new()
        .route(TRACES_PATH, post(export))
        // The body limit is enforced in the handler, so the answer is OTLP's.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(AppState {
            intake,
            max_message_bytes,
        });
    let shutdown = async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    infermon_http::serve(app, listener, options, (), shutdown).await;
}

async fn export(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.split(';').next().map(str::trim) != Some(PROTOBUF) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!("content type must be {PROTOBUF} (got `{content_type}`)"),
        );
    }
    if let Some(encoding) = headers.get(header::CONTENT_ENCODING) {
        if encoding.as_bytes() != b"identity" {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "compressed bodies are not supported; send uncompressed protobuf",
            );
        }
    }
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("body over {} bytes", state.max_message_bytes),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > state.max_message_bytes) {
        return too_large();
    }
    let bytes: Bytes = match axum::body::to_bytes(body, state.max_message_bytes).await {
        Ok(bytes) => bytes,
        Err(_) => return too_large(),
    };
    let request = match ExportTraceServiceRequest::decode(bytes) {
        Ok(request) => request,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("not an ExportTraceServiceRequest: {e}"),
            )
        }
    };
    match state.intake.accept(request) {
        Ok(()) => protobuf(StatusCode::OK, ExportTraceServiceResponse::default()),
        Err(refused) => {
            let (status, message) = match refused {
                Refused::QueueFull => (
                    StatusCode::TOO_MANY_REQUESTS,
                    "relay queue to the collector is full",
                ),
                Refused::ShuttingDown => {
                    (StatusCode::SERVICE_UNAVAILABLE, "relay is shutting down")
                }
            };
            let mut response = error(status, message);
            let seconds = state.intake.retry_after.as_secs_f64().ceil().max(1.0) as u64;
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            response
        }
    }
}

fn protobuf(status: StatusCode, message: impl Message) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(PROTOBUF))],
        message.encode_to_vec(),
    )
        .into_response()
}

/// An OTLP/HTTP error: a protobuf `google.rpc.Status` with the matching gRPC code.
fn error(status: StatusCode, message: &str) -> Response {
    let code = match status {
        StatusCode::BAD_REQUEST => tonic::Code::InvalidArgument,
        StatusCode::PAYLOAD_TOO_LARGE => tonic::Code::OutOfRange,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => tonic::Code::InvalidArgument,
        StatusCode::TOO_MANY_REQUESTS => tonic::Code::ResourceExhausted,
        _ => tonic::Code::Unavailable,
    };
    protobuf(
        status,
        tonic_types::pb::Status {
            code: code as i32,
            message: message.to_owned(),
            details: Vec::new(),
        },
    )
}
