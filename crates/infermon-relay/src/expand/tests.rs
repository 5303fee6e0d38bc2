//! Golden-style tests: a vLLM 0.33.0 `llm_request` span in, the exact spans out.

use super::*;
use opentelemetry_proto::tonic::resource::v1::Resource;

const TRACE_ID: [u8; 16] = [0xAB; 16];
const PARENT_ID: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];
const REMOTE_PARENT: [u8; 8] = [9; 8];
/// Arrival, as vLLM sets the span's start (`int(arrival_time * 1e9)`).
const ARRIVAL: u64 = 1_764_633_600_000_000_000;
const MS: u64 = 1_000_000;

fn double(key: &str, v: f64) -> KeyValue {
    double_kv(key, v)
}

/// The attributes `do_tracing` sets, for a request with these phase lengths (seconds).
fn vllm_attributes(ttft: f64, queue: f64, prefill: f64, decode: f64) -> Vec<KeyValue> {
    vec![
        double(vllm::LATENCY_TIME_TO_FIRST_TOKEN, ttft),
        double(vllm::LATENCY_E2E, 2.49),
        double(vllm::LATENCY_TIME_IN_QUEUE, queue),
        int_kv(vllm::USAGE_PROMPT_TOKENS, 512),
        int_kv(vllm::USAGE_COMPLETION_TOKENS, 64),
        double(vllm::LATENCY_TIME_IN_MODEL_PREFILL, prefill),
        double(vllm::LATENCY_TIME_IN_MODEL_DECODE, decode),
        double(vllm::LATENCY_TIME_IN_MODEL_INFERENCE, prefill + decode),
        string_kv(vllm::REQUEST_ID, "chatcmpl-abc123".to_owned()),
        double(vllm::REQUEST_TOP_P, 0.9),
        int_kv(vllm::REQUEST_MAX_TOKENS, 64),
    ]
}

fn vllm_span(attributes: Vec<KeyValue>) -> Span {
    Span {
        trace_id: TRACE_ID.to_vec(),
        span_id: PARENT_ID.to_vec(),
        parent_span_id: REMOTE_PARENT.to_vec(),
        trace_state: "vendor=1".to_owned(),
        flags: 0x301, // sampled; parent known to be remote
        name: vllm::SPAN_NAME.to_owned(),
        kind: SpanKind::Server as i32,
        start_time_unix_nano: ARRIVAL,
        end_time_unix_nano: ARRIVAL + 2_500 * MS,
        attributes,
        ..Default::default()
    }
}

fn request_with(service: &str, scope: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![string_kv(attr::SERVICE_NAME, service.to_owned())],
                ..Default::default()
            }),
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

fn models() -> ModelNames {
    ModelNames::new("default-model").with_service("vllm-a", "llama-3-8b")
}

fn expand(request: &mut ExportTraceServiceRequest) -> ExpandReport {
    expand_request(request, &models(), value::OPERATION_CHAT)
}

/// The expanded parent: renamed, contract attributes appended, `first_token` event.
fn expected_parent(original: &Span, first_token_at: Option<u64>) -> Span {
    let mut parent = original.clone();
    parent.name = "chat llama-3-8b".to_owned();
    parent.attributes.extend([
        string_kv(attr::GEN_AI_OPERATION_NAME, "chat".to_owned()),
        string_kv(attr::GEN_AI_PROVIDER_NAME, "vllm".to_owned()),
        string_kv(attr::GEN_AI_REQUEST_MODEL, "llama-3-8b".to_owned()),
        string_kv(attr::GEN_AI_RESPONSE_ID, "chatcmpl-abc123".to_owned()),
        int_kv(attr::GEN_AI_USAGE_INPUT_TOKENS, 512),
        int_kv(attr::GEN_AI_USAGE_OUTPUT_TOKENS, 64),
    ]);
    if let Some(at) = first_token_at {
        let ttft = (at - ARRIVAL) as f64 / 1e9;
        parent
            .attributes
            .push(double_kv(attr::GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, ttft));
        parent.events.push(Event {
            time_unix_nano: at,
            name: "first_token".to_owned(),
            attributes: vec![double_kv(attr::LLM_TTFT, ttft)],
            dropped_attributes_count: 0,
        });
    }
    parent
}

fn expected_child(name: &str, phase: u8, start: u64, end: u64, attrs: Vec<KeyValue>) -> Span {
    Span {
        trace_id: TRACE_ID.to_vec(),
        span_id: child_span_id(PARENT_ID, phase).to_vec(),
        trace_state: "vendor=1".to_owned(),
        parent_span_id: PARENT_ID.to_vec(),
        flags: 0x101,
        name: name.to_owned(),
        kind: SpanKind::Internal as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes: attrs,
        ..Default::default()
    }
}

fn queue(start: u64, end: u64) -> Span {
    expected_child("queue", 0, start, end, vec![])
}
fn prefill(start: u64, end: u64) -> Span {
    expected_child("prefill", 1, start, end, vec![])
}
fn decode(start: u64, end: u64) -> Span {
    expected_child(
        "decode",
        2,
        start,
        end,
        vec![int_kv(attr::LLM_DECODE_OUTPUT_TOKENS, 64)],
    )
}

/// The spans of the relay's own scope after expansion (empty if none was added).
fn children(request: &ExportTraceServiceRequest) -> Vec<Span> {
    let scopes = &request.resource_spans[0].scope_spans;
    match scopes.get(1) {
        Some(s) => {
            assert_eq!(s.scope.as_ref().unwrap().name, INSTRUMENTATION_SCOPE);
            s.spans.clone()
        }
        None => Vec::new(),
    }
}

fn parent(request: &ExportTraceServiceRequest) -> &Span {
    &request.resource_spans[0].scope_spans[0].spans[0]
}

fn incomplete(report: &ExpandReport) -> Vec<Incomplete> {
    Incomplete::ALL
        .into_iter()
        .filter(|w| report.incomplete(*w) > 0)
        .collect()
}

#[test]
fn a_complete_vllm_span_gets_queue_prefill_decode_and_first_token() {
    let original = vllm_span(vllm_attributes(0.5, 0.1, 0.35, 1.8));
    let mut request = request_with("vllm-a", vllm::SCOPE, vec![original.clone()]);
    let report = expand(&mut request);

    // first token at arrival + 0.5 s; prefill 0.35 s before it; queue 0.1 s before that; the
    // 50 ms between arrival and the queue (API server, tokenisation) stays a gap; decode 1.8 s
    // from the first token, ending 200 ms before the span (output handling).
    assert_eq!(
        parent(&request),
        &expected_parent(&original, Some(ARRIVAL + 500 * MS))
    );
    assert_eq!(
        children(&request),
        vec![
            queue(ARRIVAL + 50 * MS, ARRIVAL + 150 * MS),
            prefill(ARRIVAL + 150 * MS, ARRIVAL + 500 * MS),
            decode(ARRIVAL + 500 * MS, ARRIVAL + 2_300 * MS),
        ]
    );
    assert_eq!(
        report,
        ExpandReport {
            received: 1,
            expanded: 1,
            passed: 0,
            incomplete: [0; 4],
            latencies: vec![RequestLatencies {
                model: "llama-3-8b".to_owned(),
                operation: value::OPERATION_CHAT.to_owned(),
                trace_id: TRACE_ID,
                span_id: PARENT_ID,
                time_to_first_token: Some(0.5),
                // 1.8 s of decode over the 63 tokens after the first.
                time_per_output_token: Some(1.8 / 63.0),
                queue: Some(0.1),
                prefill: Some(0.35),
                decode: Some(1.8),
            }],
        }
    );
}

#[test]
fn re_delivery_produces_the_same_spans() {
    let batch = request_with(
        "vllm-a",
        vllm::SCOPE,
        vec![vllm_span(vllm_attributes(0.5, 0.1, 0.35, 1.8))],
    );
    let (mut first, mut second) = (batch.clone(), batch);
    expand(&mut first);
    expand(&mut second);
    assert_eq!(first, second);
}

#[test]
fn child_ids_are_distinct_non_zero_and_stable() {
    let ids: Vec<[u8; 8]> = (0..3).map(|p| child_span_id(PARENT_ID, p)).collect();
    assert!(ids.iter().all(|id| *id != [0; 8] && *id != PARENT_ID));
    assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);
    // Pinned: a relay upgraded between a delivery and its re-delivery must give the same ids.
    assert_eq!(
        child_span_id([0; 8], 0),
        0x9E37_79B9_7F4A_7C15u64
            .wrapping_mul(1)
            .pipe(splitmix_finaliser)
            .to_be_bytes()
    );
}

/// SplitMix64's finaliser, written out independently of `child_span_id`.
fn splitmix_finaliser(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

trait Pipe: Sized {
    fn pipe<T>(self, f: impl FnOnce(Self) -> T) -> T {
        f(self)
    }
}
impl Pipe for u64 {}

#[test]
fn missing_decode_keeps_the_other_phases() {
    let mut attrs = vllm_attributes(0.5, 0.1, 0.35, 1.8);
    attrs.retain(|kv| kv.key != vllm::LATENCY_TIME_IN_MODEL_DECODE);
    let original = vllm_span(attrs);
    let mut request = request_with("vllm-a", vllm::SCOPE, vec![original.clone()]);
    let report = expand(&mut request);
    assert_eq!(
        parent(&request),
        &expected_parent(&original, Some(ARRIVAL + 500 * MS))
    );
    assert_eq!(
        children(&request),
        vec![
            queue(ARRIVAL + 50 * MS, ARRIVAL + 150 * MS),
            prefill(ARRIVAL + 150 * MS, ARRIVAL + 500 * MS),
        ]
    );
    assert_eq!(incomplete(&report), [Incomplete::MissingAttribute]);
    assert_eq!(report.expanded, 1);
    // The latencies are those of the trace: no decode, so no decode time and no TPOT.
    let l = &report.latencies[0];
    assert_eq!(
        (
            l.time_to_first_token,
            l.queue,
            l.prefill,
            l.decode,
            l.time_per_output_token
        ),
        (Some(0.5), Some(0.1), Some(0.35), None, None)
    );
}

#[test]
fn a_string_where_a_number_belongs_counts_as_missing() {
    let mut attrs = vllm_attributes(0.5, 0.1, 0.35, 1.8);
    for kv in &mut attrs {
        if kv.key == vllm::LATENCY_TIME_IN_QUEUE {
            *kv = string_kv(vllm::LATENCY_TIME_IN_QUEUE, "0.1".to_owned());
        }
    }
    let mut request = request_with("vllm-a", vllm::SCOPE, vec![vllm_span(attrs)]);
    let report = expand(&mut request);
    assert_eq!(
        children(&request),
        vec![
            prefill(ARRIVAL + 150 * MS, ARRIVAL + 500 * MS),
            decode(ARRIVAL + 500 * MS, ARRIVAL + 2_300 * MS),
        ]
    );
    assert_eq!(incomplete(&report), [Incomplete::MissingAttribute]);
}

/// vLLM computes `scheduled_ts - queued_ts`; a request aborted before it was scheduled has
/// `scheduled_ts` 0, so a negative queue time.
#[test]
fn negative_queue_time_leaves_the_queue_out() {
    let original = vllm_span(vllm_attributes(0.5, -812.25, 0.35, 1.8));
    let mut request = request_with("vllm-a", vllm::SCOPE, vec![original]);
    let report = expand(&mut request);
    assert_eq!(
        children(&request),
        vec![
            prefill(ARRIVAL + 150 * MS, ARRIVAL + 500 * MS),
            decode(ARRIVAL + 500 * MS, ARRIVAL + 2_300 * MS),
        ]
    );
    assert_eq!(incomplete(&report), [Incomplete::InvalidValue]);
}

#[test]
fn non_finite_values_are_invalid() {
    let original = vllm_span(vllm_attributes(0.5, 0.1, f64::NAN, f64::INFINITY));
    let mut request = request_with("vllm-a", vllm::SCOPE, vec![original]);
    let report = expand(&mut request);
    assert_eq!(children(&request), vec![]);
    assert_eq!(incomplete(&report), [Incomplete::InvalidValue]);
    // The first token is still known, so the request still counts as expanded.
    assert_eq!(parent(&request).events.len(), 1);
    assert_eq!(report.expanded, 1);
}

/// vLLM's `first_token_latency` stays 0.0 when no token was produced (an engine abort before
/// the first token): no phase can be anchored, but the span goes on, renamed and mapped.
#[test]
fn no_first_token_passes_the_span_on_without_phases() {
    let original = vllm_span(vllm_attributes(0.0, 0.1, 0.0, 0.0));
    let mut request = request_with("vllm-a", vllm::SCOPE, vec![original.clone()]);
    let report = expand(&mut request);
    assert_eq!(parent(&request), &expected_parent(&original, None));
    assert_eq!(children(&request), vec![]);
    assert_eq!(incomplete(&report), [Incomplete::NoFirstToken]);
    assert_eq!((report.expanded, report.passed), (0, 0));
    assert!(
        report.latencies.is_empty(),
        "nothing rebuilt, nothing measured"
    );
}

#[test]
fn missing_time_to_first_token_passes_the_span_on_without_phases() {
    let mut attrs = vllm_attributes(0.5, 0.1, 0.35, 1.8);
    attrs.retain(|kv| kv.key != vllm::LATENCY_TIME_TO_FIRST_TOKEN);
    let mut request = request_with("vllm-a", vllm::SCOPE, vec![vllm_span(attrs)]);
    let report = expand(&mut request);
    assert_eq!(children(&request), vec![]);
    assert!(parent(&request).events.is_empty());
    assert_eq!(parent(&request).name, "chat llama-3-8b");
    assert_eq!(incomplete(&report), [Incomplete::MissingAttribute]);
}

/// An engine abort's meaningless prefill (`first_token_ts - scheduled_ts` with an unset
/// scheduling time): longer than the time to first token, so it would start before arrival.
#[test]
fn a_prefill_longer_than_the_time_to_first_token_is_left_out_with_its_queue() {
    let original = vllm_span(vllm_attributes(0.5, 0.1, 90_000.0, 1.8));
    let mut request = request_with("vllm-a", vllm::SCOPE, vec![original]);
    let report = expand(&mut request);
    assert_eq!(
        children(&request),
        vec![decode(ARRIVAL + 500 * MS, ARRIVAL + 2_300 * MS)]
    );
    assert_eq!(incomplete(&report), [Incomplete::ExceedsSpan]);
}

#[test]
fn phases_past_the_span_end_are_left_out() {
    // Decode would end at 0.5 + 2.2 = 2.7 s, after the span's 2.5 s; the first token at 3 s
    // would be past it too.
    let mut request = request_with(
        "vllm-a",
        vllm::SCOPE,
        vec![vllm_span(vllm_attributes(0.5, 0.1, 0.35, 2.2))],
    );
    let report = expand(&mut request);
    assert_eq!(
        children(&request),
        vec![
            queue(ARRIVAL + 50 * MS, ARRIVAL + 150 * MS),
            prefill(ARRIVAL + 150 * MS, ARRIVAL + 500 * MS),
        ]
    );
    assert_eq!(incomplete(&report), [Incomplete::ExceedsSpan]);

    let mut late = request_with(
        "vllm-a",
        vllm::SCOPE,
        vec![vllm_span(vllm_attributes(3.0, 0.1, 0.35, 0.1))],
    );
    let report = expand(&mut late);
    assert_eq!(children(&late), vec![]);
    assert!(parent(&late).events.is_empty());
    assert_eq!(incomplete(&report), [Incomplete::ExceedsSpan]);
}

#[test]
fn sub_microsecond_overhang_from_rounding_is_trimmed() {
    // Queue + prefill = TTFT + 0.4 µs: the queue starts 0.4 µs before arrival.
    let mut request = request_with(
        "vllm-a",
        vllm::SCOPE,
        vec![vllm_span(vllm_attributes(0.5, 0.150_000_4, 0.35, 1.8))],
    );
    let report = expand(&mut request);
    assert_eq!(children(&request)[0], queue(ARRIVAL, ARRIVAL + 150 * MS));
    assert_eq!(incomplete(&report), []);
}

#[test]
fn other_spans_pass_through_unchanged() {
    let vllm_like = vllm_span(vllm_attributes(0.5, 0.1, 0.35, 1.8));
    let mut other_name = vllm_like.clone();
    other_name.name = "chat llama".to_owned();
    let mut no_vllm_attributes = vllm_like.clone();
    no_vllm_attributes.attributes.clear();

    let other_scope = request_with("vllm-a", "my.app", vec![vllm_like]);
    let same_scope = request_with("vllm-a", vllm::SCOPE, vec![other_name, no_vllm_attributes]);
    for original in [other_scope, same_scope] {
        let mut request = original.clone();
        let report = expand(&mut request);
        assert_eq!(request, original);
        let n = original.resource_spans[0].scope_spans[0].spans.len() as u64;
        assert_eq!((report.received, report.passed, report.expanded), (n, n, 0));
    }
}

#[test]
fn model_comes_from_the_service_and_operation_from_the_request_id() {
    let mut attrs = vllm_attributes(0.5, 0.1, 0.35, 1.8);
    for kv in &mut attrs {
        if kv.key == vllm::REQUEST_ID {
            *kv = string_kv(vllm::REQUEST_ID, "cmpl-77".to_owned());
        }
    }
    let mut request = request_with("unmapped-service", vllm::SCOPE, vec![vllm_span(attrs)]);
    expand(&mut request);
    let span = parent(&request);
    assert_eq!(span.name, "text_completion default-model");
    assert_eq!(
        string_attr(&span.attributes, attr::GEN_AI_OPERATION_NAME),
        Some("text_completion")
    );
    // vLLM's originals stay.
    assert_eq!(
        string_attr(&span.attributes, vllm::REQUEST_ID),
        Some("cmpl-77")
    );
}

mod fuzz {
    //! Property-based stand-in for a fuzz target (no nightly toolchain here): any attribute
    //! values, any span bounds — the expansion never panics, never drops or duplicates a span,
    //! and never produces a child outside its parent.
    use super::*;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = Option<any_value::Value>> {
        prop_oneof![
            Just(None),
            any::<f64>().prop_map(|v| Some(any_value::Value::DoubleValue(v))),
            (-1e3f64..1e3).prop_map(|v| Some(any_value::Value::DoubleValue(v))),
            any::<i64>().prop_map(|v| Some(any_value::Value::IntValue(v))),
            ".{0,8}".prop_map(|s| Some(any_value::Value::StringValue(s))),
        ]
    }

    proptest! {
        #[test]
        fn expansion_is_total_and_bounded(
            ttft in value(), queue in value(), prefill in value(), decode in value(),
            start in any::<u64>(), len in any::<u64>(), id_len in 0usize..10,
        ) {
            let mut attributes = Vec::new();
            for (key, v) in [
                (vllm::LATENCY_TIME_TO_FIRST_TOKEN, ttft),
                (vllm::LATENCY_TIME_IN_QUEUE, queue),
                (vllm::LATENCY_TIME_IN_MODEL_PREFILL, prefill),
                (vllm::LATENCY_TIME_IN_MODEL_DECODE, decode),
            ] {
                if let Some(v) = v {
                    attributes.push(kv(key, v));
                }
            }
            attributes.push(string_kv(vllm::REQUEST_ID, "x".to_owned()));
            let mut span = vllm_span(attributes);
            span.span_id = vec![7; id_len];
            span.start_time_unix_nano = start;
            span.end_time_unix_nano = start.saturating_add(len);
            let mut request = request_with("vllm-a", vllm::SCOPE, vec![span.clone()]);
            let report = expand(&mut request);
            prop_assert_eq!(report.received, 1);
            prop_assert_eq!(parent(&request).span_id.clone(), span.span_id.clone());
            for child in children(&request) {
                prop_assert!(child.start_time_unix_nano >= span.start_time_unix_nano);
                prop_assert!(child.end_time_unix_nano <= span.end_time_unix_nano);
                prop_assert!(child.start_time_unix_nano <= child.end_time_unix_nano);
            }
        }
    }
}
