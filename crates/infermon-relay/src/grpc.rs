//! The OTLP/gRPC receiver: vLLM's default protocol.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::forward::Refused;
use crate::relay::Intake;

struct Receiver {
    intake: Arc<Intake>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        match self.intake.accept(request.into_inner()) {
            Ok(()) => Ok(Response::new(ExportTraceServiceResponse::default())),
            // OTLP/gRPC throttling: RESOURCE_EXHAUSTED is retryable only with RetryInfo.
            Err(Refused::QueueFull) => Err(Status::with_error_details(
                Code::ResourceExhausted,
                "relay queue to the collector is full",
                ErrorDetails::with_retry_info(Some(self.intake.retry_after)),
            )),
            Err(Refused::ShuttingDown) => Err(Status::unavailable("relay is shutting down")),
        }
    }
}

/// Serves until `stop` turns true. Messages over `max_message_bytes` get tonic's
/// `OUT_OF_RANGE`; undecodable ones `INTERNAL` (tonic's decode error), as for any OTLP
/// receiver built on tonic.
pub(crate) async fn serve(
    listener: TcpListener,
    intake: Arc<Intake>,
    max_message_bytes: usize,
    mut stop: watch::Receiver<bool>,
) {
    let service =
        TraceServiceServer::new(Receiver { intake }).max_decoding_message_size(max_message_bytes);
    let result = tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
            let _ = stop.wait_for(|stop| *stop).await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "OTLP/gRPC receiver failed");
    }
}
