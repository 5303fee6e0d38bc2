//! The macros path and the typed path produce identical telemetry: the same lifecycle driven
//! through each gives the same spans (names, kinds, parents, attributes, events, timestamps,
//! status), the same metric points and the same exemplars (each latency measurement linked to
//! its request span).

mod common;

use std::time::{Duration, SystemTime};

use common::params::full_chat;
use common::*;
use infermon::contract::value;
use infermon::layer::unix_nanos;
use infermon::request::InferenceRequest;
use opentelemetry::trace::SpanId;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::trace::SpanData;

const MODEL: &str = "llama-3-8b";

fn t(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_millis(ms)
}

fn ns(ms: u64) -> u64 {
    unix_nanos(t(ms))
}

/// Arrive at 0, scheduled at 50 ms (queue position 3), first token at 250 ms (40 of 100 prompt
/// tokens cached), preempted at 300 and resumed at 400 ms, 10 tokens, 0.25 s of engine time,
/// finish at 1250 ms.
fn typed() -> Telemetry {
    let h = Harness::new();
    let metrics = h.metrics();
    h.run(|| {
        let req = InferenceRequest::start_at(&metrics, full_chat(MODEL), None, t(0));
        let req = req.scheduled_at(3, t(50));
        let mut req = req.first_token_at(40, t(250));
        req.preempted_at(t(300));
        req.resumed_at(t(400));
        req.tokens(9);
        req.add_gpu_time(0.125);
        req.add_gpu_time(0.125);
        req.finish_at(value::FINISH_STOP, t(1250));
    });
    Telemetry::of(&h)
}

/// The request span as a service writes it with `tracing` macros only, arriving at 0, with the
/// fields either lifecycle records later left empty.
fn request_span() -> tracing::Span {
    tracing::info_span!(
        "inference_request",
        otel.name = "chat llama-3-8b",
        otel.kind = "server",
        infermon.start_time_unix_nano = ns(0),
        gen_ai.operation.name = "chat",
        gen_ai.provider.name = "infermon.simulator",
        gen_ai.request.model = MODEL,
        gen_ai.request.stream = true,
        gen_ai.usage.input_tokens = 100u64,
        gen_ai.request.max_tokens = 128u64,
        gen_ai.request.temperature = 0.7,
        gen_ai.request.top_p = 0.9,
        gen_ai.response.id = "chatcmpl-1",
        gen_ai.response.time_to_first_chunk = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
        gen_ai.usage.cache_read.input_tokens = tracing::field::Empty,
        gen_ai.response.finish_reasons = tracing::field::Empty,
        llm.request.gpu_time = tracing::field::Empty,
        error.type = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
        infermon.end_time_unix_nano = tracing::field::Empty,
    )
}

/// The `queue` phase, from 0 to 50 ms, emitted whole.
fn queue(request: &tracing::Span, position: u64) {
    tracing::info_span!(
        parent: request,
        "queue",
        infermon.start_time_unix_nano = ns(0),
        llm.queue.position = position,
        infermon.end_time_unix_nano = ns(50),
    )
    .in_scope(|| {});
}

/// The same lifecycle as a service writes it with `tracing` macros only: no infermon type, the
/// contract's names spelled out, explicit times in the contract's time fields.
fn macros() -> Telemetry {
    let h = Harness::new();
    h.run(|| {
        let request = request_span();
        queue(&request, 3);
        tracing::info_span!(
            parent: &request,
            "prefill",
            infermon.start_time_unix_nano = ns(50),
            llm.prefill.computed_tokens = 60u64,
            llm.prefill.cached_tokens = 40u64,
            infermon.end_time_unix_nano = ns(250),
        )
        .in_scope(|| {});
        tracing::info!(
            parent: &request,
            llm.time_to_first_token = 0.25,
            infermon.time_unix_nano = ns(250),
            "first_token"
        );
        request.record("gen_ai.response.time_to_first_chunk", 0.25);
        let decode = tracing::info_span!(
            parent: &request,
            "decode",
            infermon.start_time_unix_nano = ns(250),
            llm.decode.output_tokens = tracing::field::Empty,
            llm.decode.preemptions = tracing::field::Empty,
            infermon.end_time_unix_nano = tracing::field::Empty,
        );
        tracing::info!(parent: &request, llm.preemption.count = 1u64, infermon.time_unix_nano = ns(300), "preempted");
        tracing::info!(parent: &request, llm.preemption.count = 1u64, infermon.time_unix_nano = ns(400), "resumed");
        decode.record("llm.decode.output_tokens", 10u64);
        decode.record("llm.decode.preemptions", 1u64);
        decode.record("infermon.end_time_unix_nano", ns(1250));
        drop(decode);
        request.record("gen_ai.response.finish_reasons", "stop");
        request.record("gen_ai.usage.output_tokens", 10u64);
        request.record("gen_ai.usage.cache_read.input_tokens", 40u64);
        request.record("llm.request.gpu_time", 0.25);
        request.record("infermon.end_time_unix_nano", ns(1250));
    });
    Telemetry::of(&h)
}

/// A request that fails during prefill: arrive at 0, scheduled at 50 ms (queue position 0),
/// the prefill span asked for while it runs (a live phase span, with work nested under it), and
/// failed at 120 ms with `kv_cache_exhausted`.
fn typed_failure() -> Telemetry {
    let h = Harness::new();
    let metrics = h.metrics();
    h.run(|| {
        let req = InferenceRequest::start_at(&metrics, full_chat(MODEL), None, t(0));
        let req = req.scheduled_at(0, t(50));
        req.phase_span().in_scope(|| {
            allocate_blocks();
        });
        req.fail_at("kv_cache_exhausted", t(120));
    });
    Telemetry::of(&h)
}

/// A service's own work inside the prefill phase (explicit times, so both runs compare).
fn allocate_blocks() {
    tracing::info_span!(
        "allocate_blocks",
        infermon.start_time_unix_nano = ns(60),
        infermon.end_time_unix_nano = ns(70),
    )
    .in_scope(|| {});
}

/// [`typed_failure`] with macros only.
fn macros_failure() -> Telemetry {
    let h = Harness::new();
    h.run(|| {
        let request = request_span();
        queue(&request, 0);
        let prefill = tracing::info_span!(
            parent: &request,
            "prefill",
            infermon.start_time_unix_nano = ns(50),
            infermon.end_time_unix_nano = tracing::field::Empty,
        );
        prefill.in_scope(|| {
            allocate_blocks();
        });
        prefill.record("infermon.end_time_unix_nano", ns(120));
        drop(prefill);
        request.record("gen_ai.response.finish_reasons", "error");
        request.record("gen_ai.usage.output_tokens", 0u64);
        request.record("error.type", "kv_cache_exhausted");
        request.record("otel.status_code", "error");
        request.record("otel.status_description", "kv_cache_exhausted");
        request.record("infermon.end_time_unix_nano", ns(120));
    });
    Telemetry::of(&h)
}

/// What one path produced, in comparable form.
struct Telemetry {
    spans: Vec<String>,
    points: Vec<String>,
    exemplars: Vec<String>,
}

impl Telemetry {
    fn of(h: &Harness) -> Self {
        let spans = h.spans();
        Self {
            exemplars: canonical_exemplars(&spans),
            spans: canonical_spans(&spans),
            points: canonical_points(&h.collect()),
        }
    }
}

/// The exemplars kept since the last drain (this test is alone in its process, so they are this
/// path's), each as `metric attributes value -> span`, naming the span whose trace and span ids
/// it carries.
fn canonical_exemplars(spans: &[SpanData]) -> Vec<String> {
    let mut out: Vec<String> = infermon::exemplars::registry()
        .drain()
        .into_iter()
        .flat_map(|((metric, attrs), exemplars)| {
            exemplars.into_iter().map(move |e| {
                let span = spans
                    .iter()
                    .find(|s| {
                        s.span_context.trace_id() == e.ids.trace_id
                            && s.span_context.span_id() == e.ids.span_id
                    })
                    .map_or("<no such span>", |s| s.name.as_ref());
                format!("{metric} {attrs:?} {} -> {span}", e.value)
            })
        })
        .collect();
    out.sort();
    out
}

/// An attribute as `key=Type(value)`. By value: how a string is stored (borrowed, owned or
/// shared) is not telemetry, and the two paths may hold the same text differently.
fn attribute(kv: &opentelemetry::KeyValue) -> String {
    use opentelemetry::{Array, Value};
    let strings = |v: &[opentelemetry::StringValue]| {
        v.iter().map(|s| s.as_str().to_owned()).collect::<Vec<_>>()
    };
    let value = match &kv.value {
        Value::String(s) => format!("String({:?})", s.as_str()),
        Value::Array(Array::String(v)) => format!("Array(String({:?}))", strings(v)),
        other => format!("{other:?}"),
    };
    format!("{}={value}", kv.key)
}

/// Each span as one line: name, kind, parent's name, times, status, sorted attributes, events.
fn canonical_spans(spans: &[SpanData]) -> Vec<String> {
    let name_of = |id: SpanId| {
        spans
            .iter()
            .find(|s| s.span_context.span_id() == id)
            .map_or("-".to_owned(), |s| s.name.to_string())
    };
    let mut out: Vec<String> = spans
        .iter()
        .map(|s| {
            let mut attrs: Vec<String> =
                s.attributes.iter().map(attribute).collect();
            attrs.sort();
            let events: Vec<String> = s
                .events
                .iter()
                .map(|e| {
                    let mut a: Vec<String> =
                        e.attributes.iter().map(attribute).collect();
                    a.sort();
                    format!("{}@{:?}{a:?}", e.name, e.timestamp)
                })
                .collect();
            format!(
                "{} kind={:?} parent={} start={:?} end={:?} status={:?} attrs={attrs:?} events={events:?}",
                s.name,
                s.span_kind,
                name_of(s.parent_span_id),
                s.start_time,
                s.end_time,
                s.status,
            )
        })
        .collect();
    out.sort();
    out
}

/// Each metric point as one line: name, unit, sorted attributes, value (histograms: count, sum,
/// bounds and bucket counts).
fn canonical_points(rm: &ResourceMetrics) -> Vec<String> {
    fn attrs<'a>(it: impl Iterator<Item = &'a opentelemetry::KeyValue>) -> Vec<String> {
        let mut v: Vec<String> = it.map(|kv| format!("{}={}", kv.key, kv.value)).collect();
        v.sort();
        v
    }
    let mut out = Vec::new();
    for m in rm.scope_metrics().flat_map(|s| s.metrics()) {
        let head = format!("{} [{}]", m.name(), m.unit());
        match m.data() {
            AggregatedMetrics::F64(MetricData::Histogram(h)) => {
                out.extend(h.data_points().map(|p| {
                    format!(
                        "{head} {:?} count={} sum={:.9} bounds={:?} buckets={:?}",
                        attrs(p.attributes()),
                        p.count(),
                        p.sum(),
                        p.bounds().collect::<Vec<_>>(),
                        p.bucket_counts().collect::<Vec<_>>()
                    )
                }))
            }
            AggregatedMetrics::U64(MetricData::Histogram(h)) => {
                out.extend(h.data_points().map(|p| {
                    format!(
                        "{head} {:?} count={} sum={} bounds={:?} buckets={:?}",
                        attrs(p.attributes()),
                        p.count(),
                        p.sum(),
                        p.bounds().collect::<Vec<_>>(),
                        p.bucket_counts().collect::<Vec<_>>()
                    )
                }))
            }
            AggregatedMetrics::U64(MetricData::Sum(s)) => out.extend(
                s.data_points()
                    .map(|p| format!("{head} {:?} value={}", attrs(p.attributes()), p.value())),
            ),
            other => panic!("{}: unexpected data {other:?}", m.name()),
        }
    }
    out.sort();
    out
}

/// The exemplar registry is process-wide and each test here drains it: they run one at a time.
static EXEMPLARS: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn macros_and_typed_paths_produce_identical_spans_and_metrics() {
    let _one_at_a_time = EXEMPLARS.lock().unwrap_or_else(|e| e.into_inner());
    let (typed, macros) = (typed(), macros());
    assert_eq!(typed.spans.len(), 4, "{:#?}", typed.spans);
    assert_eq!(typed.points.len(), 15, "{:#?}", typed.points);
    assert_eq!(typed.spans, macros.spans);
    assert_eq!(typed.points, macros.points);
    // One exemplar per latency histogram (request duration, TTFT, TPOT, queue, prefill,
    // decode), each pointing at the request span.
    assert_eq!(typed.exemplars.len(), 6, "{:#?}", typed.exemplars);
    assert!(
        typed
            .exemplars
            .iter()
            .all(|e| e.ends_with("-> chat llama-3-8b")),
        "{:#?}",
        typed.exemplars
    );
    assert_eq!(typed.exemplars, macros.exemplars);
}

#[test]
fn a_failure_is_identical_on_both_paths_with_work_nested_in_a_live_phase() {
    let _one_at_a_time = EXEMPLARS.lock().unwrap_or_else(|e| e.into_inner());
    let (typed, macros) = (typed_failure(), macros_failure());
    // Request, queue, prefill and the work nested under prefill.
    assert_eq!(typed.spans.len(), 4, "{:#?}", typed.spans);
    assert!(
        typed
            .spans
            .iter()
            .any(|s| s.starts_with("allocate_blocks kind=Internal parent=prefill ")),
        "{:#?}",
        typed.spans
    );
    assert!(
        typed.spans.iter().any(|s| s.starts_with("chat llama-3-8b ")
            && s.contains("status=Error { description: \"kv_cache_exhausted\" }")
            && s.contains("error.type=String(")),
        "{:#?}",
        typed.spans
    );
    assert_eq!(typed.spans, macros.spans);
    assert_eq!(typed.points, macros.points);
    assert_eq!(typed.exemplars, macros.exemplars);
}
