//! The request lifecycle API emits exactly the contract: span tree, events, status, metrics.
//! Everything runs in-process against the SDK's in-memory exporters.

mod common;

use std::time::{Duration, SystemTime};

use common::params::full_chat as params;
use common::*;
use http::HeaderMap;
use infermon::contract::{attr, buckets, metric, span as names, value};
use infermon::instruments::{EngineMetrics, EngineSnapshot, InferenceMetrics};
use infermon::propagation::{extract_context, inject_context};
use infermon::request::InferenceRequest;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt as _};
use opentelemetry::{Array, Value};

const MODEL: &str = "llama-3-8b";

/// Fixed instants so every duration in the assertions is exact.
fn t(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_millis(ms)
}

/// Sum points that counted something: bound series exist (at zero) from their model's first
/// request, whether or not anything was counted in them.
fn counted(points: Vec<(Vec<String>, u64)>) -> Vec<(Vec<String>, u64)> {
    points.into_iter().filter(|(_, n)| *n > 0).collect()
}

fn secs(ms: u64) -> f64 {
    Duration::from_millis(ms).as_secs_f64()
}

/// Arrive at 0, scheduled at 50 ms, first token at 250 ms (40 of 100 prompt tokens cached),
/// preempted at 300 and resumed at 400 ms, 10 tokens in total, finish at 1250 ms.
fn full_lifecycle(metrics: &InferenceMetrics) {
    let req = InferenceRequest::start_at(metrics, params(MODEL), None, t(0));
    let req = req.scheduled_at(3, t(50));
    let mut req = req.first_token_at(40, t(250));
    req.preempted_at(t(300));
    req.resumed_at(t(400));
    req.tokens(9);
    req.finish_at(value::FINISH_STOP, t(1250));
}

#[test]
fn span_tree_is_server_root_with_queue_prefill_decode_children() {
    let h = Harness::new();
    let metrics = h.metrics();
    h.run(|| full_lifecycle(&metrics));

    let root = h.span(&names::request_span_name(value::OPERATION_CHAT, MODEL));
    assert_eq!(root.span_kind, SpanKind::Server);
    assert_eq!(root.status, Status::Unset);
    assert_eq!((root.start_time, root.end_time), (t(0), t(1250)));
    assert_eq!(
        root.parent_span_id,
        opentelemetry::trace::SpanId::INVALID,
        "no parent: a new trace"
    );

    for (name, start, end) in [
        (names::QUEUE, 0, 50),
        (names::PREFILL, 50, 250),
        (names::DECODE, 250, 1250),
    ] {
        let child = h.span(name);
        assert_eq!(child.span_kind, SpanKind::Internal, "{name}");
        assert_eq!(child.parent_span_id, root.span_context.span_id(), "{name}");
        assert_eq!(
            child.span_context.trace_id(),
            root.span_context.trace_id(),
            "{name}"
        );
        assert_eq!(
            (child.start_time, child.end_time),
            (t(start), t(end)),
            "{name}"
        );
    }
    assert_eq!(h.spans().len(), 4);

    let queue = h.span(names::QUEUE);
    assert_eq!(
        attr(&queue.attributes, attr::LLM_QUEUE_POSITION),
        Some(&Value::I64(3))
    );
    let prefill = h.span(names::PREFILL);
    assert_eq!(
        attr(&prefill.attributes, attr::LLM_PREFILL_COMPUTED_TOKENS),
        Some(&Value::I64(60))
    );
    assert_eq!(
        attr(&prefill.attributes, attr::LLM_PREFILL_CACHED_TOKENS),
        Some(&Value::I64(40))
    );
    let decode = h.span(names::DECODE);
    assert_eq!(
        attr(&decode.attributes, attr::LLM_DECODE_OUTPUT_TOKENS),
        Some(&Value::I64(10))
    );
    assert_eq!(
        attr(&decode.attributes, attr::LLM_DECODE_PREEMPTIONS),
        Some(&Value::I64(1))
    );
}

#[test]
fn request_span_carries_the_gen_ai_attributes() {
    let h = Harness::new();
    let metrics = h.metrics();
    h.run(|| full_lifecycle(&metrics));
    let root = h.span(&names::request_span_name(value::OPERATION_CHAT, MODEL));
    let a = |k| attr(&root.attributes, k).cloned();

    assert_eq!(
        a(attr::GEN_AI_OPERATION_NAME),
        Some(Value::from(value::OPERATION_CHAT))
    );
    assert_eq!(
        a(attr::GEN_AI_PROVIDER_NAME),
        Some(Value::from(value::PROVIDER_SIMULATOR))
    );
    assert_eq!(a(attr::GEN_AI_REQUEST_MODEL), Some(Value::from(MODEL)));
    assert_eq!(a(attr::GEN_AI_REQUEST_MAX_TOKENS), Some(Value::I64(128)));
    assert_eq!(a(attr::GEN_AI_REQUEST_TEMPERATURE), Some(Value::F64(0.7)));
    assert_eq!(a(attr::GEN_AI_REQUEST_TOP_P), Some(Value::F64(0.9)));
    assert_eq!(a(attr::GEN_AI_REQUEST_STREAM), Some(Value::Bool(true)));
    assert_eq!(a(attr::GEN_AI_RESPONSE_ID), Some(Value::from("chatcmpl-1")));
    assert_eq!(a(attr::GEN_AI_USAGE_INPUT_TOKENS), Some(Value::I64(100)));
    assert_eq!(a(attr::GEN_AI_USAGE_OUTPUT_TOKENS), Some(Value::I64(10)));
    assert_eq!(
        a(attr::GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS),
        Some(Value::I64(40))
    );
    assert_eq!(
        a(attr::GEN_AI_RESPONSE_FINISH_REASONS),
        Some(Value::Array(Array::String(vec![value::FINISH_STOP.into()])))
    );
    assert_eq!(
        a(attr::GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK),
        Some(Value::F64(secs(250)))
    );
    assert_eq!(a(attr::ERROR_TYPE), None);
    // Content is never recorded unless capture is enabled.
    assert_eq!(a(attr::GEN_AI_INPUT_MESSAGES), None);
}

#[test]
fn events_mark_first_token_with_ttft_and_preemptions() {
    let h = Harness::new();
    let metrics = h.metrics();
    h.run(|| full_lifecycle(&metrics));
    let root = h.span(&names::request_span_name(value::OPERATION_CHAT, MODEL));
    let events: Vec<_> = root.events.iter().collect();
    let summary: Vec<(&str, SystemTime)> = events
        .iter()
        .map(|e| (e.name.as_ref(), e.timestamp))
        .collect();
    assert_eq!(
        summary,
        vec![
            (names::EVENT_FIRST_TOKEN, t(250)),
            (names::EVENT_PREEMPTED, t(300)),
            (names::EVENT_RESUMED, t(400)),
        ]
    );
    assert_eq!(
        attr(&events[0].attributes, attr::LLM_TTFT),
        Some(&Value::F64(secs(250)))
    );
    assert_eq!(
        attr(&events[1].attributes, attr::LLM_PREEMPTION_COUNT),
        Some(&Value::I64(1))
    );
}

#[test]
fn metrics_record_the_lifecycle_durations_and_counts() {
    let h = Harness::new();
    let metrics = h.metrics();
    h.run(|| full_lifecycle(&metrics));
    let rm = h.collect();
    let model_op = [
        (attr::GEN_AI_REQUEST_MODEL, MODEL),
        (attr::GEN_AI_OPERATION_NAME, value::OPERATION_CHAT),
    ];

    for (name, expected) in [
        (metric::REQUEST_DURATION, secs(1250)),
        (metric::TIME_TO_FIRST_TOKEN, secs(250)),
        (metric::QUEUE_DURATION, secs(50)),
        (metric::PREFILL_DURATION, secs(200)),
        (metric::DECODE_DURATION, secs(1000)),
        // 1000 ms of decode for the 9 tokens after the first.
        (metric::TIME_PER_OUTPUT_TOKEN, secs(1000) / 9.0),
    ] {
        let points = f64_histogram(&rm, name);
        assert_eq!(points.len(), 1, "{name}");
        let p = points[0];
        assert_eq!(p.count(), 1, "{name}");
        assert!(
            (p.sum() - expected).abs() < 1e-9,
            "{name}: {} != {expected}",
            p.sum()
        );
        assert!(has_attrs(&mut p.attributes(), &model_op), "{name}");
    }

    let tokens = u64_histogram(&rm, metric::REQUEST_TOKENS);
    let by_type = |ty: &str| {
        tokens
            .iter()
            .find(|p| p.attributes().any(|kv| kv.value.as_str() == ty))
            .map(|p| (p.count(), p.sum()))
    };
    assert_eq!(by_type(value::TOKEN_INPUT), Some((1, 100)));
    assert_eq!(by_type(value::TOKEN_OUTPUT), Some((1, 10)));

    let mc = format!("{}={MODEL}", attr::GEN_AI_REQUEST_MODEL);
    let op = format!("{}={}", attr::GEN_AI_OPERATION_NAME, value::OPERATION_CHAT);
    let kv = |k: &str, v: &str| format!("{k}={v}");
    let mut want_requests = vec![
        mc.clone(),
        op.clone(),
        kv(attr::GEN_AI_RESPONSE_FINISH_REASON, value::FINISH_STOP),
        kv(attr::LLM_REQUEST_OUTCOME, value::OUTCOME_SUCCESS),
    ];
    want_requests.sort();
    assert_eq!(
        counted(u64_points(&rm, metric::REQUESTS)),
        vec![(want_requests, 1)]
    );

    let mut tokens_in = vec![
        kv(attr::GEN_AI_TOKEN_TYPE, value::TOKEN_INPUT),
        mc.clone(),
        op.clone(),
    ];
    let mut tokens_out = vec![kv(attr::GEN_AI_TOKEN_TYPE, value::TOKEN_OUTPUT), mc, op];
    tokens_in.sort();
    tokens_out.sort();
    let mut want_tokens = vec![(tokens_in, 100), (tokens_out, 10)];
    want_tokens.sort();
    assert_eq!(counted(u64_points(&rm, metric::TOKENS)), want_tokens);

    // 100 prompt tokens looked up in the prefix cache, 40 found.
    let mut model_op_labels = vec![
        format!("{}={MODEL}", attr::GEN_AI_REQUEST_MODEL),
        format!("{}={}", attr::GEN_AI_OPERATION_NAME, value::OPERATION_CHAT),
    ];
    model_op_labels.sort();
    assert_eq!(
        counted(u64_points(&rm, metric::PREFIX_CACHE_QUERIES)),
        vec![(model_op_labels.clone(), 100)]
    );
    assert_eq!(
        counted(u64_points(&rm, metric::PREFIX_CACHE_HITS)),
        vec![(model_op_labels, 40)]
    );
}

#[test]
fn histograms_use_the_contract_boundaries() {
    let h = Harness::new();
    let metrics = h.metrics();
    h.run(|| full_lifecycle(&metrics));
    let rm = h.collect();
    for (name, bounds) in [
        (metric::REQUEST_DURATION, buckets::REQUEST_DURATION),
        (metric::TIME_TO_FIRST_TOKEN, buckets::TIME_TO_FIRST_TOKEN),
        (
            metric::TIME_PER_OUTPUT_TOKEN,
            buckets::TIME_PER_OUTPUT_TOKEN,
        ),
        (metric::QUEUE_DURATION, buckets::PHASE_DURATION),
        (metric::PREFILL_DURATION, buckets::PHASE_DURATION),
        (metric::DECODE_DURATION, buckets::PHASE_DURATION),
    ] {
        let got: Vec<f64> = f64_histogram(&rm, name)[0].bounds().collect();
        assert_eq!(got, bounds, "{name}");
    }
    let got: Vec<f64> = u64_histogram(&rm, metric::REQUEST_TOKENS)[0]
        .bounds()
        .collect();
    assert_eq!(got, buckets::TOKENS);
    // Units come from the contract too.
    for name in [
        metric::REQUEST_DURATION,
        metric::REQUEST_TOKENS,
        metric::REQUESTS,
    ] {
        let spec = infermon::contract::metric_spec(name).unwrap();
        assert_eq!(find_metric(&rm, name).unwrap().unit(), spec.unit, "{name}");
    }
}

#[test]
fn failure_sets_error_status_and_error_type_everywhere() {
    let h = Harness::new();
    let metrics = h.metrics();
    h.run(|| {
        let req = InferenceRequest::start_at(&metrics, params(MODEL), None, t(0));
        let req = req.scheduled_at(0, t(10));
        req.fail_at("kv_cache_exhausted", t(30));
    });

    let root = h.span(&names::request_span_name(value::OPERATION_CHAT, MODEL));
    assert_eq!(root.status, Status::error("kv_cache_exhausted"));
    assert_eq!(
        attr(&root.attributes, attr::ERROR_TYPE),
        Some(&Value::from("kv_cache_exhausted"))
    );
    assert_eq!(root.end_time, t(30));
    // The open phase span is closed at the failure time; no decode span was started.
    assert_eq!(h.span(names::PREFILL).end_time, t(30));
    assert!(h.spans().iter().all(|s| s.name != names::DECODE));

    let rm = h.collect();
    // The model's success series exists (bound on first use) but counts nothing.
    let duration: Vec<_> = f64_histogram(&rm, metric::REQUEST_DURATION)
        .into_iter()
        .filter(|p| p.count() > 0)
        .collect();
    assert_eq!(duration.len(), 1);
    assert!(
        duration[0]
            .attributes()
            .any(|kv| kv.key.as_str() == attr::ERROR_TYPE
                && kv.value.as_str() == "kv_cache_exhausted")
    );
    let requests = counted(u64_points(&rm, metric::REQUESTS));
    assert_eq!(requests.len(), 1);
    let labels = &requests[0].0;
    for want in [
        format!("{}={}", attr::LLM_REQUEST_OUTCOME, value::OUTCOME_ERROR),
        format!(
            "{}={}",
            attr::GEN_AI_RESPONSE_FINISH_REASON,
            value::FINISH_ERROR
        ),
        format!("{}=kv_cache_exhausted", attr::ERROR_TYPE),
    ] {
        assert!(labels.contains(&want), "{want} not in {labels:?}");
    }
    // No TTFT for a request that never produced a token.
    assert!(f64_histogram(&rm, metric::TIME_TO_FIRST_TOKEN)
        .iter()
        .all(|p| p.count() == 0));
}

#[test]
fn abort_is_recorded_as_aborted_without_error_status() {
    let h = Harness::new();
    let metrics = h.metrics();
    h.run(|| {
        let req = InferenceRequest::start_at(&metrics, params(MODEL), None, t(0));
        let req = req.scheduled_at(0, t(10)).first_token_at(0, t(20));
        req.abort_at(t(40));
    });
    let root = h.span(&names::request_span_name(value::OPERATION_CHAT, MODEL));
    assert_eq!(root.status, Status::Unset);
    assert_eq!(
        attr(&root.attributes, attr::GEN_AI_RESPONSE_FINISH_REASONS),
        Some(&Value::Array(Array::String(vec![
            value::FINISH_ABORT.into()
        ])))
    );
    let rm = h.collect();
    let labels = &counted(u64_points(&rm, metric::REQUESTS))[0].0;
    assert!(labels.contains(&format!(
        "{}={}",
        attr::LLM_REQUEST_OUTCOME,
        value::OUTCOME_ABORTED
    )));
    assert!(!labels.iter().any(|l| l.starts_with(attr::ERROR_TYPE)));
}

#[test]
fn dropping_an_unfinished_request_ends_it_as_dropped() {
    let h = Harness::new();
    let metrics = h.metrics();
    h.run(|| {
        let req = InferenceRequest::start(&metrics, params(MODEL), None);
        drop(req.scheduled(0));
    });
    let root = h.span(&names::request_span_name(value::OPERATION_CHAT, MODEL));
    assert!(matches!(root.status, Status::Error { .. }));
    assert_eq!(
        attr(&root.attributes, attr::ERROR_TYPE),
        Some(&Value::from(value::ERROR_DROPPED))
    );
    assert_eq!(h.spans().len(), 3, "root, queue and prefill all ended");
}

#[test]
fn model_names_past_the_cap_become_other() {
    let h = Harness::with(|b| b.model_cap(2));
    let metrics = h.metrics();
    h.run(|| {
        for model in ["a", "b", "c", "d", "a"] {
            let req = InferenceRequest::start_at(&metrics, params(model), None, t(0));
            req.fail_at("timeout", t(5));
        }
    });
    let mut span_names: Vec<String> = h.spans().iter().map(|s| s.name.to_string()).collect();
    span_names.retain(|n| n != names::QUEUE);
    span_names.sort();
    let mut want: Vec<String> = ["a", "a", "b", value::OVERFLOW, value::OVERFLOW]
        .iter()
        .map(|m| names::request_span_name(value::OPERATION_CHAT, m))
        .collect();
    want.sort();
    assert_eq!(span_names, want);

    let rm = h.collect();
    let mut models: Vec<(String, u64)> = counted(u64_points(&rm, metric::REQUESTS))
        .into_iter()
        .map(|(labels, n)| {
            let model = labels
                .iter()
                .find_map(|l| l.strip_prefix(&format!("{}=", attr::GEN_AI_REQUEST_MODEL)))
                .unwrap()
                .to_owned();
            (model, n)
        })
        .collect();
    models.sort();
    assert_eq!(
        models,
        vec![
            ("a".into(), 2),
            ("b".into(), 1),
            (value::OVERFLOW.into(), 2)
        ]
    );
}

#[test]
fn incoming_trace_context_becomes_the_request_span_parent() {
    let h = Harness::new();
    let metrics = h.metrics();
    let mut headers = HeaderMap::new();
    headers.insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    let mut outgoing = HeaderMap::new();
    h.run(|| {
        let parent = extract_context(&headers);
        let req = InferenceRequest::start(&metrics, params(MODEL), Some(&parent));
        inject_context(&req.context(), &mut outgoing);
        req.fail("test");
    });
    let root = h.span(&names::request_span_name(value::OPERATION_CHAT, MODEL));
    assert_eq!(
        root.span_context.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(root.parent_span_id.to_string(), "00f067aa0ba902b7");
    assert!(root.parent_span_is_remote);
    // The request's own context propagates onwards as the request span.
    let onward = extract_context(&outgoing);
    assert_eq!(
        onward.span().span_context().span_id(),
        root.span_context.span_id()
    );
}

#[tracing::instrument(skip(prompt_len), fields(tokenizer = "bpe", prompt_tokens = prompt_len))]
fn tokenize(prompt_len: i64) -> i64 {
    prompt_len / 4
}

#[test]
fn instrumented_user_code_nests_under_the_request_span() {
    let h = Harness::new();
    let metrics = h.metrics();
    h.run(|| {
        let req = InferenceRequest::start(&metrics, params(MODEL), None);
        req.span().in_scope(|| tokenize(400));
        req.fail("test");
    });
    let root = h.span(&names::request_span_name(value::OPERATION_CHAT, MODEL));
    let user = h.span("tokenize");
    assert_eq!(user.parent_span_id, root.span_context.span_id());
    assert_eq!(
        attr(&user.attributes, "tokenizer"),
        Some(&Value::from("bpe"))
    );
    assert_eq!(
        attr(&user.attributes, "prompt_tokens"),
        Some(&Value::I64(400))
    );
}

#[test]
fn instrumented_user_code_nests_under_the_phase_it_runs_in() {
    let h = Harness::new();
    let metrics = h.metrics();
    h.run(|| {
        let req = InferenceRequest::start(&metrics, params(MODEL), None).scheduled(0);
        req.phase_span().in_scope(|| tokenize(400));
        req.fail("test");
    });
    let prefill = h.span(names::PREFILL);
    let user = h.span("tokenize");
    assert_eq!(user.parent_span_id, prefill.span_context.span_id());
    assert_eq!(
        user.span_context.trace_id(),
        prefill.span_context.trace_id()
    );
}

#[test]
fn content_is_captured_only_when_enabled_and_capped() {
    for enabled in [false, true] {
        let h = Harness::with(|b| b.capture_content(enabled).max_content_len(20));
        let metrics = h.metrics();
        let long_answer = format!(
            r#"[{{"role":"assistant","content":"{}"}}]"#,
            "x".repeat(100)
        );
        h.run(|| {
            let req = InferenceRequest::start(&metrics, params(MODEL), None);
            req.record_input_messages(r#"[{"role":"user"}]"#);
            let mut req = req.scheduled(0).first_token(0);
            req.record_output_messages(&long_answer);
            req.tokens(1);
            req.finish(value::FINISH_STOP);
        });
        let root = h.span(&names::request_span_name(value::OPERATION_CHAT, MODEL));
        let input = attr(&root.attributes, attr::GEN_AI_INPUT_MESSAGES);
        let output = attr(&root.attributes, attr::GEN_AI_OUTPUT_MESSAGES);
        if enabled {
            assert_eq!(input, Some(&Value::from(r#"[{"role":"user"}]"#)));
            let want = format!("{}…", &long_answer[..20]);
            assert_eq!(output, Some(&Value::from(want)));
        } else {
            assert_eq!((input, output), (None, None));
        }
        // The deprecated attributes are gone.
        assert!(attr(&root.attributes, "gen_ai.prompt").is_none());
        assert!(attr(&root.attributes, "gen_ai.completion").is_none());
    }
}

#[test]
fn without_the_bridge_metrics_are_still_recorded() {
    let h = Harness::new();
    let metrics = h.metrics();
    tracing::dispatcher::with_default(&h.metrics_only_dispatch(), || {
        let req = InferenceRequest::start_at(&metrics, params(MODEL), None, t(0));
        req.scheduled_at(0, t(5))
            .first_token_at(0, t(10))
            .finish_at(value::FINISH_LENGTH, t(20));
    });
    assert!(h.spans().is_empty());
    let rm = h.collect();
    assert_eq!(f64_histogram(&rm, metric::REQUEST_DURATION)[0].count(), 1);
}

#[test]
fn typed_requests_record_into_the_subscribers_metrics_layer_once() {
    // The caller's own instruments (on another meter) are not recorded into: the typed path
    // records its points into the metrics layer of its span's subscriber, and the layer does
    // not count the typed spans a second time.
    let h = Harness::new();
    let callers = InferenceMetrics::new(&opentelemetry::metrics::MeterProvider::meter(
        &h.meter_provider,
        "caller",
    ));
    h.run(|| full_lifecycle(&callers));
    let rm = h.collect();
    let scopes_with_points: Vec<&str> = rm
        .scope_metrics()
        .filter(|sm| sm.metrics().next().is_some())
        .map(|sm| sm.scope().name())
        .collect();
    assert_eq!(scopes_with_points, ["test"]);
    for name in [
        metric::REQUEST_DURATION,
        metric::TIME_TO_FIRST_TOKEN,
        metric::QUEUE_DURATION,
        metric::PREFILL_DURATION,
        metric::DECODE_DURATION,
    ] {
        let points = f64_histogram(&rm, name);
        assert_eq!(points.len(), 1, "{name}");
        assert_eq!(points[0].count(), 1, "{name}");
    }
}

#[test]
fn a_typed_requests_span_and_points_carry_the_labels_the_metrics_layer_caps() {
    // The caller's caps would put every model in `other`; the subscriber's metrics layer admits
    // the model. Span and metric points agree, with the layer's caps (capped once).
    let h = Harness::new();
    let callers = InferenceMetrics::with_model_cap(
        &opentelemetry::metrics::MeterProvider::meter(&h.meter_provider, "caller"),
        0,
    );
    h.run(|| full_lifecycle(&callers));
    let span = h.span(&format!("chat {MODEL}"));
    assert_eq!(
        attr(&span.attributes, attr::GEN_AI_REQUEST_MODEL).map(|v| v.as_str().into_owned()),
        Some(MODEL.to_owned())
    );
    let rm = h.collect();
    let points = f64_histogram(&rm, metric::REQUEST_DURATION);
    let model = points[0]
        .attributes()
        .find(|kv| kv.key.as_str() == attr::GEN_AI_REQUEST_MODEL)
        .map(|kv| kv.value.as_str().into_owned());
    assert_eq!(model.as_deref(), Some(MODEL));

    // Without a metrics layer, the caller's caps label the span.
    let h = Harness::new();
    let callers = InferenceMetrics::with_model_cap(
        &opentelemetry::metrics::MeterProvider::meter(&h.meter_provider, "caller"),
        0,
    );
    let bridge_only = {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::layer::SubscriberExt as _;
        tracing_subscriber::registry().with(infermon::telemetry::tracing_layer(
            h.tracer_provider.tracer("test"),
        ))
    };
    tracing::subscriber::with_default(bridge_only, || full_lifecycle(&callers));
    let span = h.span(&format!("chat {}", value::OVERFLOW));
    assert_eq!(
        attr(&span.attributes, attr::GEN_AI_REQUEST_MODEL).map(|v| v.as_str().into_owned()),
        Some(value::OVERFLOW.to_owned())
    );
}

/// A macros-path chat request for `MODEL` with 100 input tokens, started at `start` (else when
/// created); its finish reason is recorded later.
fn macros_request(start: Option<SystemTime>) -> tracing::Span {
    tracing::info_span!(
        "inference_request",
        gen_ai.operation.name = "chat",
        gen_ai.request.model = MODEL,
        gen_ai.usage.input_tokens = 100u64,
        gen_ai.response.finish_reasons = tracing::field::Empty,
        infermon.start_time_unix_nano = start.map(infermon::layer::unix_nanos),
    )
}

#[test]
fn an_undated_phase_exports_the_duration_its_metric_records() {
    // No explicit times: the bridge and the metrics layer take the phase's start and end from
    // one clock read each, so the exported span and the histogram agree to the nanosecond.
    let h = Harness::new();
    h.run(|| {
        let request = macros_request(None);
        tracing::info_span!(parent: &request, "queue")
            .in_scope(|| std::thread::sleep(Duration::from_millis(2)));
        request.record("gen_ai.response.finish_reasons", "stop");
    });
    let queue = h.span("queue");
    let exported = queue
        .end_time
        .duration_since(queue.start_time)
        .unwrap()
        .as_secs_f64();
    let rm = h.collect();
    let recorded = f64_histogram(&rm, metric::QUEUE_DURATION)[0].sum();
    assert!(exported >= 0.002, "{exported}");
    assert_eq!(exported, recorded);
}

#[test]
fn without_a_subscriber_nothing_is_recorded() {
    let h = Harness::new();
    let metrics = h.metrics();
    // No `h.run`: no layer sees the spans; nothing is recorded and nothing panics.
    let req = InferenceRequest::start_at(&metrics, params(MODEL), None, t(0));
    req.scheduled_at(0, t(5))
        .first_token_at(0, t(10))
        .finish_at(value::FINISH_LENGTH, t(20));
    assert!(h.spans().is_empty());
    assert!(h.try_collect().is_none());
}

#[test]
fn engine_metrics_report_the_latest_state_and_running_totals() {
    let h = Harness::new();
    let engine = EngineMetrics::new(&h.meter(), MODEL);
    engine.record_step(&EngineSnapshot {
        running: 4,
        waiting: 9,
        swapped: 0,
        kv_blocks_used: 10,
        kv_blocks_total: 100,
        iterations: 1,
        preemptions: 2,
    });
    engine.record_step(&EngineSnapshot {
        running: 5,
        waiting: 7,
        swapped: 1,
        kv_blocks_used: 25,
        kv_blocks_total: 100,
        iterations: 1,
        preemptions: 1,
    });
    let rm = h.collect();
    let model = format!("{}={MODEL}", attr::GEN_AI_REQUEST_MODEL);
    let st = |s: &str| vec![model.clone(), format!("{}={s}", attr::LLM_REQUEST_STATE)];
    let mut want = vec![
        (st(value::STATE_RUNNING), 5),
        (st(value::STATE_SWAPPED), 1),
        (st(value::STATE_WAITING), 7),
    ];
    want.sort();
    assert_eq!(u64_points(&rm, metric::SCHEDULER_REQUESTS), want);
    assert_eq!(
        u64_points(&rm, metric::SCHEDULER_ITERATIONS),
        vec![(vec![model.clone()], 2)]
    );
    assert_eq!(
        u64_points(&rm, metric::SCHEDULER_PREEMPTIONS),
        vec![(vec![model.clone()], 3)]
    );
    assert_eq!(f64_gauge(&rm, metric::KV_CACHE_USAGE), vec![0.25]);
    let blk = |s: &str| {
        vec![
            model.clone(),
            format!("{}={s}", attr::LLM_KV_CACHE_BLOCK_STATE),
        ]
    };
    let mut want = vec![(blk(value::BLOCK_FREE), 75), (blk(value::BLOCK_USED), 25)];
    want.sort();
    assert_eq!(u64_points(&rm, metric::KV_CACHE_BLOCKS), want);

    // Once the engine's handle is gone its series stop being reported.
    drop(engine);
    if let Some(rm) = h.try_collect() {
        assert!(find_metric(&rm, metric::KV_CACHE_USAGE).is_none());
    }
}

/// An engine keeping requests of every phase in one map: transitions that do not fit the
/// phase are ignored or completed sensibly, never recorded as a spurious `dropped` error.
#[test]
fn tracked_request_finishing_before_its_first_token_is_a_success_not_dropped() {
    let h = Harness::new();
    let metrics = h.metrics();
    h.run(|| {
        let mut req =
            InferenceRequest::start_at(&metrics, params(MODEL), None, t(0)).into_tracked();
        req.first_token_at(0, t(1)); // a queued request is scheduled at the same instant first
        req.scheduled_at(9, t(2)); // ignored: already past the queue
        req.finish_at(value::FINISH_LENGTH, t(3));
        req.finish_at(value::FINISH_STOP, t(4)); // ignored: already ended
        req.fail_at("late", t(5)); // ignored too

        let mut early =
            InferenceRequest::start_at(&metrics, params(MODEL), None, t(0)).into_tracked();
        early.scheduled_at(0, t(1));
        early.finish_at(value::FINISH_STOP, t(2)); // before any token: no decode phase
    });
    let rm = h.collect();
    let requests = counted(u64_points(&rm, metric::REQUESTS));
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert!(requests.iter().all(|(labels, _)| labels.contains(&format!(
        "{}={}",
        attr::LLM_REQUEST_OUTCOME,
        value::OUTCOME_SUCCESS
    ))));
    let names: Vec<String> = h.spans().iter().map(|s| s.name.to_string()).collect();
    assert_eq!(
        names.iter().filter(|n| *n == names::DECODE).count(),
        1,
        "{names:?}"
    );
    assert!(h
        .spans()
        .iter()
        .all(|s| attr(&s.attributes, attr::ERROR_TYPE).is_none()));
}

#[test]
fn a_first_token_event_inside_a_phase_counts_for_its_request_and_stays_on_the_phase() {
    // Macros path, the event emitted inside the prefill span rather than on the request: the
    // bridge attaches it to the span it is in, the metrics layer finds its request further up.
    let h = Harness::new();
    h.run(|| {
        let request = macros_request(Some(t(0)));
        tracing::info_span!(parent: &request, "prefill").in_scope(|| {
            tracing::info!(
                llm.time_to_first_token = 0.25,
                infermon.time_unix_nano = infermon::layer::unix_nanos(t(250)),
                "first_token"
            );
        });
        request.record("gen_ai.response.finish_reasons", "stop");
    });
    let prefill = h.span(names::PREFILL);
    let events: Vec<_> = prefill
        .events
        .iter()
        .map(|e| (e.name.as_ref(), e.timestamp))
        .collect();
    assert_eq!(events, vec![(names::EVENT_FIRST_TOKEN, t(250))]);
    assert!(h.span("inference_request").events.is_empty());

    let rm = h.collect();
    let ttft = f64_histogram(&rm, metric::TIME_TO_FIRST_TOKEN);
    assert_eq!(ttft.len(), 1);
    assert_eq!((ttft[0].count(), ttft[0].sum()), (1, secs(250)));
    let input = vec![
        "gen_ai.operation.name=chat".to_owned(),
        format!("gen_ai.request.model={MODEL}"),
        "gen_ai.token.type=input".to_owned(),
    ];
    let tokens = u64_points(&rm, metric::TOKENS);
    assert!(tokens.contains(&(input, 100)), "{tokens:?}");
}
