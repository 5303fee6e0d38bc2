//! Spans/s and latency through the relay, against the collector alone, on the same input in
//! one run (docs/benchmarks.md):
//!
//! ```text
//! scripts/start-stack.sh otelcol jaeger prometheus     # or any OTLP/gRPC collector
//! cargo run --release -p infermon-relay --example throughput -- http://127.0.0.1:4317 [batches] [spans/batch] [clients]
//! ```
//!
//! Phase 1 sends every batch straight to the collector; phase 2 sends the same batches to an
//! in-process relay forwarding to that collector. Each phase reports the export acknowledgement
//! latency (p50/p99) and spans/s; for the relay, spans/s counts until the relay has delivered
//! everything (its queue is empty), so it is the rate end to end, not just intake.

use std::sync::Arc;
use std::time::{Duration, Instant};

use infermon_instrument::contract::relay::vllm;
use infermon_relay::{ModelNames, Relay, RelayConfig};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// A batch of vLLM request spans like vLLM 0.33.0 sends them.
fn batch(index: u64, spans: u64) -> ExportTraceServiceRequest {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let spans = (0..spans)
        .map(|i| {
            let n = index * spans + i + 1;
            Span {
                trace_id: [n.to_be_bytes(), 0x5eedu64.to_be_bytes()].concat(),
                span_id: n.to_be_bytes().to_vec(),
                name: vllm::SPAN_NAME.to_owned(),
                kind: 2,
                start_time_unix_nano: now - 2_000_000_000,
                end_time_unix_nano: now,
                attributes: vec![
                    kv(
                        vllm::LATENCY_TIME_TO_FIRST_TOKEN,
                        any_value::Value::DoubleValue(0.25),
                    ),
                    kv(vllm::LATENCY_E2E, any_value::Value::DoubleValue(1.99)),
                    kv(
                        vllm::LATENCY_TIME_IN_QUEUE,
                        any_value::Value::DoubleValue(0.05),
                    ),
                    kv(vllm::USAGE_PROMPT_TOKENS, any_value::Value::IntValue(512)),
                    kv(
                        vllm::USAGE_COMPLETION_TOKENS,
                        any_value::Value::IntValue(128),
                    ),
                    kv(
                        vllm::LATENCY_TIME_IN_MODEL_PREFILL,
                        any_value::Value::DoubleValue(0.15),
                    ),
                    kv(
                        vllm::LATENCY_TIME_IN_MODEL_DECODE,
                        any_value::Value::DoubleValue(1.7),
                    ),
                    kv(
                        vllm::LATENCY_TIME_IN_MODEL_INFERENCE,
                        any_value::Value::DoubleValue(1.85),
                    ),
                    kv(
                        vllm::REQUEST_ID,
                        any_value::Value::StringValue(format!("chatcmpl-{n}")),
                    ),
                    kv(vllm::REQUEST_MAX_TOKENS, any_value::Value::IntValue(128)),
                ],
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv(
                    "service.name",
                    any_value::Value::StringValue("vllm-bench".to_owned()),
                )],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: vllm::SCOPE.to_owned(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

struct Phase {
    latencies: Vec<Duration>,
    elapsed: Duration,
    refused: usize,
}

/// Sends the batches from `clients` concurrent clients; returns ack latencies.
async fn send_all(
    target: String,
    batches: Arc<Vec<ExportTraceServiceRequest>>,
    clients: usize,
) -> Phase {
    let start = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (target, batches, next) = (target.clone(), batches.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = TraceServiceClient::connect(target).await.unwrap();
            let (mut latencies, mut refused) = (Vec::new(), 0);
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(batch) = batches.get(i) else { break };
                loop {
                    let sent = Instant::now();
                    match client.export(batch.clone()).await {
                        Ok(_) => {
                            latencies.push(sent.elapsed());
                            break;
                        }
                        // Back-pressure: wait as told and resend (what an OTLP exporter does).
                        Err(_) => {
                            refused += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            }
            (latencies, refused)
        }));
    }
    let mut phase = Phase {
        latencies: Vec::new(),
        elapsed: Duration::ZERO,
        refused: 0,
    };
    for t in tasks {
        let (l, r) = t.await.unwrap();
        phase.latencies.extend(l);
        phase.refused += r;
    }
    phase.elapsed = start.elapsed();
    phase
}

fn report(name: &str, phase: &mut Phase, spans: u64, until_delivered: Duration) {
    phase.latencies.sort();
    let pct = |p: f64| phase.latencies[((phase.latencies.len() - 1) as f64 * p) as usize];
    println!(
        "{name}: {spans} spans, ack p50 {:.2} ms, p99 {:.2} ms, {:.0} spans/s acknowledged, {:.0} spans/s delivered, {} refusals",
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        spans as f64 / phase.elapsed.as_secs_f64(),
        spans as f64 / until_delivered.as_secs_f64(),
        phase.refused,
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let collector = args
        .get(1)
        .cloned()
        .unwrap_or("http://127.0.0.1:4317".into());
    let n: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(500);
    let per: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(100);
    let clients: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(4);
    let batches = Arc::new((0..n).map(|i| batch(i, per)).collect::<Vec<_>>());
    let spans = n * per;

    // Warm-up, then the collector alone.
    send_all(
        collector.clone(),
        Arc::new(batches[..10.min(batches.len())].to_vec()),
        1,
    )
    .await;
    let mut direct = send_all(collector.clone(), batches.clone(), clients).await;
    let direct_elapsed = direct.elapsed;
    report("collector alone", &mut direct, spans, direct_elapsed);

    let mut config = RelayConfig::new(collector);
    config.grpc_listen = "127.0.0.1:0".parse().unwrap();
    config.http_listen = "127.0.0.1:0".parse().unwrap();
    config.models = ModelNames::new("llama-3-8b");
    let relay = Relay::start(config, &opentelemetry::global::meter("bench"))
        .await
        .unwrap();
    let start = Instant::now();
    let mut via = send_all(format!("http://{}", relay.grpc_addr()), batches, clients).await;
    while relay.stats().snapshot().queued > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let delivered = start.elapsed();
    let s = relay.stats().snapshot();
    report("relay -> collector", &mut via, spans, delivered);
    println!(
        "relay: received {} expanded {} (4 spans out per span in), export failures {}, dropped {:?}",
        s.received, s.expanded, s.export_failures, s.dropped
    );
    relay.shutdown(Duration::from_secs(5)).await;
}
