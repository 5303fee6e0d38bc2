//! The relay's counters reach OpenTelemetry under the contract's names, with reasons.

mod common;

use std::time::Duration;

use common::double;

use infermon_instrument::contract::metric_spec;
use infermon_instrument::contract::relay::{metric, reason, vllm, ATTR_REASON};
use infermon_relay::{Relay, RelayConfig};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};

fn batch() -> ExportTraceServiceRequest {
    let span = |name: &str, attributes| Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        name: name.to_owned(),
        start_time_unix_nano: 1_000_000_000,
        end_time_unix_nano: 3_000_000_000,
        attributes,
        ..Default::default()
    };
    // A vLLM span without its decode time, and an unrelated span.
    let ttft = double(vllm::LATENCY_TIME_TO_FIRST_TOKEN, 0.5);
    common::batch(
        None,
        vllm::SCOPE,
        vec![span(vllm::SPAN_NAME, vec![ttft]), span("other", vec![])],
    )
}

#[tokio::test]
async fn counters_are_exported_under_the_contract_names() {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    // Nothing listens upstream: the batch stays queued, which the depth gauge shows.
    let mut config = RelayConfig::new("http://127.0.0.1:9");
    config.grpc_listen = "127.0.0.1:0".parse().unwrap();
    config.http_listen = "127.0.0.1:0".parse().unwrap();
    let relay = Relay::start(config, &provider.meter("relay"))
        .await
        .unwrap();
    TraceServiceClient::connect(format!("http://{}", relay.grpc_addr()))
        .await
        .unwrap()
        .export(batch())
        .await
        .unwrap();
    provider.force_flush().unwrap();
    let metrics = exporter.get_finished_metrics().unwrap();
    let last = metrics.last().expect("one export");
    let value = |name: &str, reason: Option<&str>| -> u64 {
        let m = last
            .scope_metrics()
            .flat_map(|s| s.metrics())
            .find(|m| m.name() == name)
            .unwrap_or_else(|| panic!("{name} not exported"));
        assert!(metric_spec(name).is_some(), "{name} is not in the contract");
        let reason_of = |attrs: Vec<&opentelemetry::KeyValue>| {
            attrs
                .into_iter()
                .find(|kv| kv.key.as_str() == ATTR_REASON)
                .map(|kv| kv.value.to_string())
        };
        let points: Vec<(u64, Option<String>)> = match m.data() {
            AggregatedMetrics::U64(MetricData::Sum(s)) => s
                .data_points()
                .map(|p| (p.value(), reason_of(p.attributes().collect())))
                .collect(),
            AggregatedMetrics::U64(MetricData::Gauge(g)) => g
                .data_points()
                .map(|p| (p.value(), reason_of(p.attributes().collect())))
                .collect(),
            other => panic!("{name}: {other:?}"),
        };
        points
            .into_iter()
            .filter(|(_, r)| r.as_deref() == reason)
            .map(|(v, _)| v)
            .sum()
    };
    assert_eq!(value(metric::SPANS_RECEIVED, None), 2);
    assert_eq!(value(metric::SPANS_EXPANDED, None), 1);
    assert_eq!(value(metric::SPANS_PASSED, None), 1);
    assert_eq!(
        value(metric::SPANS_INCOMPLETE, Some(reason::MISSING_ATTRIBUTE)),
        1
    );
    assert_eq!(value(metric::SPANS_DROPPED, Some(reason::QUEUE_FULL)), 0);
    // No phase could be rebuilt (each needs its own attribute), so the two spans as received
    // wait in the queue.
    assert_eq!(value(metric::QUEUE_DEPTH, None), 2);
    relay.shutdown(Duration::from_millis(50)).await;
}
