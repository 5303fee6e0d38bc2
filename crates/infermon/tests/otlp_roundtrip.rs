//! `telemetry::init` sends real OTLP/gRPC to a tonic receiver in the test, and what arrives is
//! the contract: resource, span tree, metrics with the contract's buckets.
//!
//! One test per file: `init` installs process-global state (subscriber, providers).

mod common;

use std::time::Duration;

use common::params::plain_chat;
use common::receiver::{string_attr, wait_until, Receiver};
use common::LATENCY_HISTOGRAMS;
use infermon::contract::{attr, buckets, metric, span as names, value, INSTRUMENTATION_SCOPE};
use infermon::instruments::{EngineMetrics, EngineSnapshot, InferenceMetrics};
use infermon::request::{InferenceRequest, RequestParams};
use infermon::telemetry::{self, TelemetryConfig};
use opentelemetry::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

const MODEL: &str = "llama-3-8b";
const LIVENESS: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_exports_the_contract_over_grpc() {
    let receiver = Receiver::start().await;
    let guard = telemetry::init(
        TelemetryConfig::new("roundtrip-test")
            .with_endpoint(receiver.endpoint())
            .with_service_version("9.9.9")
            .with_resource_attribute(KeyValue::new("deployment.environment.name", "test"))
            .with_export_interval(Duration::from_millis(200))
            .with_scheduled_delay(Duration::from_millis(50))
            .with_fmt_layer(false),
    )
    .expect("init");

    // Default construction: child spans through the global provider `init` installed.
    let metrics = InferenceMetrics::new(&guard.meter(INSTRUMENTATION_SCOPE));
    let engine = EngineMetrics::new(&guard.meter(INSTRUMENTATION_SCOPE), MODEL);
    engine.record_step(&EngineSnapshot {
        running: 1,
        kv_blocks_used: 5,
        kv_blocks_total: 10,
        iterations: 1,
        ..Default::default()
    });
    let params = RequestParams {
        max_tokens: Some(16),
        ..plain_chat(MODEL, 12)
    };
    let req = InferenceRequest::start(&metrics, params, None);
    let mut req = req.scheduled(0).first_token(4);
    req.tokens(3);
    req.finish(value::FINISH_STOP);

    let received = receiver.received.clone();
    let root_name = names::request_span_name(value::OPERATION_CHAT, MODEL);
    assert!(
        wait_until(LIVENESS, || received.spans().len() >= 4
            && received
                .metric_names()
                .contains(&metric::REQUEST_DURATION.to_string()))
        .await,
        "receiver got spans {:?} and metrics {:?}",
        received.spans().iter().map(|s| &s.name).collect::<Vec<_>>(),
        received.metric_names()
    );
    assert_eq!(guard.stats().span_export_failures, 0);
    guard
        .shutdown()
        .expect("clean shutdown with the collector up");

    // Resource.
    let traces = received.traces.lock().unwrap().clone();
    let resource = traces[0].resource_spans[0].resource.clone().unwrap();
    let r = |k| string_attr(&resource.attributes, k);
    assert_eq!(r(attr::SERVICE_NAME).as_deref(), Some("roundtrip-test"));
    assert_eq!(r(attr::SERVICE_VERSION).as_deref(), Some("9.9.9"));
    assert_eq!(
        r(attr::SERVICE_INSTANCE_ID).as_deref(),
        Some(telemetry::instance_id())
    );
    assert!(r(attr::HOST_NAME).is_some_and(|h| !h.is_empty()));
    assert_eq!(r("deployment.environment.name").as_deref(), Some("test"));

    // Span tree.
    let spans = received.spans();
    let root = spans
        .iter()
        .find(|s| s.name == root_name)
        .expect("request span");
    assert_eq!(root.kind, SpanKind::Server as i32);
    assert_eq!(
        string_attr(&root.attributes, attr::GEN_AI_REQUEST_MODEL).as_deref(),
        Some(MODEL)
    );
    for child in [names::QUEUE, names::PREFILL, names::DECODE] {
        let s = spans.iter().find(|s| s.name == child).expect(child);
        assert_eq!(s.parent_span_id, root.span_id, "{child}");
        assert_eq!(s.trace_id, root.trace_id, "{child}");
        assert_eq!(s.kind, SpanKind::Internal as i32, "{child}");
    }
    assert!(root
        .events
        .iter()
        .any(|e| e.name == names::EVENT_FIRST_TOKEN));

    // Metrics: every request and engine instrument arrived, histograms with contract buckets.
    let got = received.metric_names();
    for name in LATENCY_HISTOGRAMS.into_iter().chain([
        metric::REQUEST_TOKENS,
        metric::REQUESTS,
        metric::TOKENS,
        metric::PREFIX_CACHE_QUERIES,
        metric::PREFIX_CACHE_HITS,
        metric::SCHEDULER_REQUESTS,
        metric::SCHEDULER_ITERATIONS,
        metric::KV_CACHE_USAGE,
        metric::KV_CACHE_BLOCKS,
        metric::TELEMETRY_SPANS_DROPPED,
        metric::TELEMETRY_EXPORT_FAILURES,
    ]) {
        assert!(
            got.contains(&name.to_string()),
            "{name} missing from {got:?}"
        );
    }
    let exported = received.metrics();
    let ttft = exported
        .iter()
        .find(|m| m.name == metric::TIME_TO_FIRST_TOKEN)
        .unwrap();
    assert_eq!(ttft.unit, "s");
    match &ttft.data {
        Some(Data::Histogram(h)) => {
            assert_eq!(
                h.data_points[0].explicit_bounds,
                buckets::TIME_TO_FIRST_TOKEN
            );
            assert_eq!(h.data_points[0].count, 1);
        }
        other => panic!("time_to_first_token is not a histogram: {other:?}"),
    }

    // Exemplars (which the SDK does not record; infermon's exporter attaches them): every
    // latency histogram links its measurement to the request span.
    for name in LATENCY_HISTOGRAMS {
        let exemplars: Vec<_> = exported
            .iter()
            .filter(|m| m.name == name)
            .filter_map(|m| match &m.data {
                Some(Data::Histogram(h)) => Some(h),
                _ => None,
            })
            .flat_map(|h| &h.data_points)
            .flat_map(|p| &p.exemplars)
            .collect();
        assert_eq!(exemplars.len(), 1, "{name}: one exemplar, sent once");
        assert_eq!(exemplars[0].trace_id, root.trace_id, "{name}");
        assert_eq!(exemplars[0].span_id, root.span_id, "{name}");
    }
    receiver.stop().await;
}
