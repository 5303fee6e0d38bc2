//! What the relay's tests send and where it forwards to: OTLP trace batches built by hand and
//! a fake collector that records what it accepts. `infermon-cli`'s relay test includes this
//! file too (by path), so it names no crate beyond those both test suites have:
//! opentelemetry-proto, tonic, tokio and tokio-stream.
#![allow(dead_code)] // each test binary uses a different part

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use tokio::sync::mpsc;

/// A collector that answers with the queued errors first, optionally after a delay, and hands
/// every request it accepts to the test.
#[derive(Clone)]
struct FakeCollector {
    errors: Arc<Mutex<VecDeque<tonic::Status>>>,
    delay: Duration,
    accepted: mpsc::UnboundedSender<ExportTraceServiceRequest>,
}

#[tonic::async_trait]
impl TraceService for FakeCollector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        tokio::time::sleep(self.delay).await;
        if let Some(error) = self.errors.lock().unwrap().pop_front() {
            return Err(error);
        }
        let _ = self.accepted.send(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Starts a [`FakeCollector`] on a loopback port: its address and what it accepts.
pub async fn start_collector(
    errors: Vec<tonic::Status>,
    delay: Duration,
) -> (
    SocketAddr,
    mpsc::UnboundedReceiver<ExportTraceServiceRequest>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let collector = FakeCollector {
        errors: Arc::new(Mutex::new(errors.into())),
        delay,
        accepted: tx,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (addr, rx)
}

pub fn double(key: &str, v: f64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::DoubleValue(v)),
        }),
        ..Default::default()
    }
}

/// One batch of `spans` from one instrumentation scope (vLLM's, in these tests).
pub fn batch(
    resource: Option<Resource>,
    scope: &str,
    spans: Vec<Span>,
) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource,
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: scope.to_owned(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// The names of every span in `request`, in order.
pub fn span_names(request: &ExportTraceServiceRequest) -> Vec<String> {
    request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .map(|s| s.name.clone())
        .collect()
}

/// The next batch the collector accepts, waiting at most 10 s for it.
pub async fn next(
    rx: &mut mpsc::UnboundedReceiver<ExportTraceServiceRequest>,
) -> ExportTraceServiceRequest {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the collector got nothing within 10 s")
        .expect("collector gone")
}
