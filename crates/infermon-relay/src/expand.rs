//! Rebuilding vLLM's request phases as child spans.
//!
//! vLLM 0.33.0 (`vllm/v1/engine/output_processor.py`, `OutputProcessor.do_tracing`, and
//! `vllm/v1/metrics/stats.py` of the released wheel) emits one SERVER span per finished request:
//! started at the request's arrival (frontend wall clock), ended when the frontend handled the
//! last output, with the phases only as float-seconds attributes. Two clocks are involved:
//!
//! - `time_to_first_token` (and `e2e`) are frontend times since arrival;
//! - `time_in_queue`, `time_in_model_prefill`, `time_in_model_decode` are differences of
//!   engine-core timestamps (QUEUED → first SCHEDULED → first token → last token).
//!
//! The frontend's first-token time is the one point both share (as closely as vLLM lets us), so
//! the phases are anchored there: the `first_token` event at arrival + TTFT; `prefill` ends at
//! the first token and lasts `time_in_model_prefill`; `queue` ends where prefill starts and lasts
//! `time_in_queue`; `decode` starts at the first token and lasts `time_in_model_decode`. What
//! lies between arrival and the queue (API server, tokenisation) and after decode
//! (detokenisation, output handling) stays a visible gap.
//!
//! Nothing is invented: a phase whose inputs are missing or inconsistent is left out, the span
//! still goes on (renamed and mapped), and the reason is counted.

use infermon_instrument::contract::relay::{reason, vllm};
use infermon_instrument::contract::{attr, span as span_names, value, INSTRUMENTATION_SCOPE};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

use crate::config::ModelNames;

/// Float seconds → nanoseconds can be off by rounding; a phase may overhang its parent by this
/// much and is then trimmed to it. Anything more is an inconsistency, not rounding.
const ROUNDING_TOLERANCE_NS: u64 = 1_000;

/// Why a vLLM request span could not be fully rebuilt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Incomplete {
    MissingAttribute,
    InvalidValue,
    NoFirstToken,
    ExceedsSpan,
}

impl Incomplete {
    pub const ALL: [Incomplete; 4] = [
        Incomplete::MissingAttribute,
        Incomplete::InvalidValue,
        Incomplete::NoFirstToken,
        Incomplete::ExceedsSpan,
    ];

    /// The `infermon.relay.reason` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Incomplete::MissingAttribute => reason::MISSING_ATTRIBUTE,
            Incomplete::InvalidValue => reason::INVALID_VALUE,
            Incomplete::NoFirstToken => reason::NO_FIRST_TOKEN,
            Incomplete::ExceedsSpan => reason::EXCEEDS_SPAN,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What one request's expansion did, for the relay's counters and latency histograms.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExpandReport {
    /// Spans received.
    pub received: u64,
    /// vLLM request spans that got at least one child span or the `first_token` event.
    pub expanded: u64,
    /// Spans passed through unchanged.
    pub passed: u64,
    /// vLLM request spans with something not rebuilt, by reason (a span counts once per
    /// reason it has).
    pub incomplete: [u64; 4],
    /// The latencies of each expanded vLLM request span, as far as they were rebuilt.
    pub latencies: Vec<RequestLatencies>,
}

/// One vLLM request's latencies, in seconds: exactly the phases the relay rebuilt (a phase left
/// out of the trace is left out here too), with the ids of its request span for exemplars.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestLatencies {
    pub model: String,
    pub operation: String,
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub time_to_first_token: Option<f64>,
    /// Decode time over the output tokens after the first (vLLM's `time_in_model_decode` over
    /// `completion_tokens - 1`), when there were at least two.
    pub time_per_output_token: Option<f64>,
    pub queue: Option<f64>,
    pub prefill: Option<f64>,
    pub decode: Option<f64>,
}

impl ExpandReport {
    pub fn incomplete(&self, why: Incomplete) -> u64 {
        self.incomplete[why.index()]
    }
}

/// Expands every vLLM request span in `request` in place; returns what it did. The child spans
/// go into a scope of their own (`infermon`) under the same resource.
pub fn expand_request(
    request: &mut ExportTraceServiceRequest,
    models: &ModelNames,
    default_operation: &str,
) -> ExpandReport {
    let mut report = ExpandReport::default();
    for resource_spans in &mut request.resource_spans {
        expand_resource(resource_spans, models, default_operation, &mut report);
    }
    report
}

fn expand_resource(
    resource_spans: &mut ResourceSpans,
    models: &ModelNames,
    default_operation: &str,
    report: &mut ExpandReport,
) {
    let service = resource_spans
        .resource
        .as_ref()
        .and_then(|r| string_attr(&r.attributes, attr::SERVICE_NAME));
    let model = models.for_service(service).to_owned();
    let mut children = Vec::new();
    for scope_spans in &mut resource_spans.scope_spans {
        let is_vllm_scope = scope_spans
            .scope
            .as_ref()
            .is_some_and(|s| s.name == vllm::SCOPE);
        for span in &mut scope_spans.spans {
            report.received += 1;
            if !(is_vllm_scope && is_vllm_request(span)) {
                report.passed += 1;
                continue;
            }
            let rebuilt = expand_span(span, &model, default_operation);
            if !rebuilt.children.is_empty() || rebuilt.first_token {
                report.expanded += 1;
                if let Some(latencies) = request_latencies(span, &model, &rebuilt) {
                    report.latencies.push(latencies);
                }
            }
            for why in rebuilt.incomplete {
                report.incomplete[why.index()] += 1;
            }
            children.extend(rebuilt.children);
        }
    }
    if !children.is_empty() {
        resource_spans.scope_spans.push(ScopeSpans {
            scope: Some(InstrumentationScope {
                name: INSTRUMENTATION_SCOPE.to_owned(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                ..Default::default()
            }),
            spans: children,
            schema_url: String::new(),
        });
    }
}

/// The latencies of a rebuilt span: its first token and each child's duration.
fn request_latencies(span: &Span, model: &str, rebuilt: &Rebuilt) -> Option<RequestLatencies> {
    let trace_id = <[u8; 16]>::try_from(span.trace_id.as_slice()).ok()?;
    let span_id = <[u8; 8]>::try_from(span.span_id.as_slice()).ok()?;
    let phase = |name: &str| {
        rebuilt
            .children
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.end_time_unix_nano.saturating_sub(c.start_time_unix_nano) as f64 / 1e9)
    };
    let decode = phase(span_names::DECODE);
    let output_tokens = int_attr(&span.attributes, vllm::USAGE_COMPLETION_TOKENS);
    Some(RequestLatencies {
        model: model.to_owned(),
        operation: string_attr(&span.attributes, attr::GEN_AI_OPERATION_NAME)
            .unwrap_or_default()
            .to_owned(),
        trace_id,
        span_id,
        time_to_first_token: rebuilt.ttft_ns.map(|ns| ns as f64 / 1e9),
        time_per_output_token: match (decode, output_tokens) {
            (Some(d), Some(n)) if n > 1 => Some(d / (n - 1) as f64),
            _ => None,
        },
        queue: phase(span_names::QUEUE),
        prefill: phase(span_names::PREFILL),
        decode,
    })
}

/// vLLM's request span: its name, and the request id or a latency attribute `do_tracing`
/// always sets (the scope is checked by the caller).
pub fn is_vllm_request(span: &Span) -> bool {
    span.name == vllm::SPAN_NAME
        && span.attributes.iter().any(|kv| {
            kv.key == vllm::REQUEST_ID
                || kv.key == vllm::LATENCY_TIME_TO_FIRST_TOKEN
                || kv.key == vllm::LATENCY_E2E
        })
}

/// The result of expanding one span.
#[derive(Debug, Default)]
struct Rebuilt {
    children: Vec<Span>,
    first_token: bool,
    /// The time to first token the `first_token` event was placed by.
    ttft_ns: Option<u64>,
    incomplete: Vec<Incomplete>,
}

impl Rebuilt {
    fn note(&mut self, why: Incomplete) {
        if !self.incomplete.contains(&why) {
            self.incomplete.push(why);
        }
    }
}

/// The phases, as `[start, end]` in Unix nanoseconds, relative to the parent's bounds.
struct Bounds {
    start: u64,
    end: u64,
}

impl Bounds {
    /// `[from, to]` inside the parent, trimmed by at most the rounding tolerance; `None` if it
    /// sticks out further.
    fn fit(&self, from: i128, to: i128) -> Option<(u64, u64)> {
        let tol = i128::from(ROUNDING_TOLERANCE_NS);
        let (start, end) = (i128::from(self.start), i128::from(self.end));
        if from < start - tol || to > end + tol || from > to {
            return None;
        }
        Some((from.max(start) as u64, to.min(end) as u64))
    }
}

fn expand_span(span: &mut Span, model: &str, default_operation: &str) -> Rebuilt {
    let mut rebuilt = Rebuilt::default();
    map_attributes(span, model, default_operation);
    let Ok(parent_id) = <[u8; 8]>::try_from(span.span_id.as_slice()) else {
        // Not a valid span id: children could not point at it.
        rebuilt.note(Incomplete::InvalidValue);
        return rebuilt;
    };
    let bounds = Bounds {
        start: span.start_time_unix_nano,
        end: span.end_time_unix_nano,
    };
    let ttft = match seconds(&span.attributes, vllm::LATENCY_TIME_TO_FIRST_TOKEN) {
        Ok(0) => Err(Incomplete::NoFirstToken),
        other => other,
    };
    let first_token = match ttft {
        Ok(ttft) => i128::from(bounds.start) + i128::from(ttft),
        Err(why) => {
            rebuilt.note(why);
            return rebuilt;
        }
    };
    let Some((first_token, _)) = bounds.fit(first_token, first_token) else {
        rebuilt.note(Incomplete::ExceedsSpan);
        return rebuilt;
    };
    let first_token = i128::from(first_token);
    let ttft = ttft.unwrap_or_default();
    add_first_token_event(span, first_token as u64, ttft);
    rebuilt.first_token = true;
    rebuilt.ttft_ns = Some(ttft);

    let output_tokens = int_attr(&span.attributes, vllm::USAGE_COMPLETION_TOKENS);
    let child = |phase: Phase, (start, end): (u64, u64)| {
        let mut attributes = Vec::new();
        if let (Phase::Decode, Some(tokens)) = (phase, output_tokens) {
            attributes.push(int_kv(attr::LLM_DECODE_OUTPUT_TOKENS, tokens));
        }
        child_span(span, parent_id, phase, start, end, attributes)
    };

    // prefill, then queue before it.
    match seconds(&span.attributes, vllm::LATENCY_TIME_IN_MODEL_PREFILL) {
        Err(why) => rebuilt.note(why),
        Ok(prefill) => match bounds.fit(first_token - i128::from(prefill), first_token) {
            None => rebuilt.note(Incomplete::ExceedsSpan),
            Some(prefill_at) => {
                rebuilt.children.push(child(Phase::Prefill, prefill_at));
                let queue_end = i128::from(prefill_at.0);
                match seconds(&span.attributes, vllm::LATENCY_TIME_IN_QUEUE) {
                    Err(why) => rebuilt.note(why),
                    Ok(queue) => match bounds.fit(queue_end - i128::from(queue), queue_end) {
                        None => rebuilt.note(Incomplete::ExceedsSpan),
                        Some(queue_at) => rebuilt.children.push(child(Phase::Queue, queue_at)),
                    },
                }
            }
        },
    }
    match seconds(&span.attributes, vllm::LATENCY_TIME_IN_MODEL_DECODE) {
        Err(why) => rebuilt.note(why),
        Ok(decode) => match bounds.fit(first_token, first_token + i128::from(decode)) {
            None => rebuilt.note(Incomplete::ExceedsSpan),
            Some(decode_at) => rebuilt.children.push(child(Phase::Decode, decode_at)),
        },
    }
    // Children in time order, for readers of the raw batch.
    rebuilt.children.sort_by_key(|c| c.start_time_unix_nano);
    rebuilt
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Queue,
    Prefill,
    Decode,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Queue => span_names::QUEUE,
            Phase::Prefill => span_names::PREFILL,
            Phase::Decode => span_names::DECODE,
        }
    }
}

/// A phase's span id, derived from the parent's so a re-delivered batch yields the same ids:
/// SplitMix64's finaliser over the parent id mixed with the phase (a bijection, so the three
/// phases of one parent never collide with one another).
pub fn child_span_id(parent: [u8; 8], phase_index: u8) -> [u8; 8] {
    let mut z = u64::from_be_bytes(parent)
        ^ 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(u64::from(phase_index) + 1);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    if z == 0 {
        // The all-zero id is invalid; any fixed non-zero value keeps determinism.
        z = 1;
    }
    z.to_be_bytes()
}

/// W3C trace flags are the low 8 bits of `Span.flags`; bit 8 says whether the "parent is
/// remote" bit (9) is known. A child's parent is the request span: known, not remote.
const FLAGS_TRACE_FLAGS_MASK: u32 = 0xFF;
const FLAGS_CONTEXT_HAS_IS_REMOTE: u32 = 0x100;

fn child_span(
    parent: &Span,
    parent_id: [u8; 8],
    phase: Phase,
    start: u64,
    end: u64,
    attributes: Vec<KeyValue>,
) -> Span {
    Span {
        trace_id: parent.trace_id.clone(),
        span_id: child_span_id(parent_id, phase as u8).to_vec(),
        trace_state: parent.trace_state.clone(),
        parent_span_id: parent_id.to_vec(),
        flags: (parent.flags & FLAGS_TRACE_FLAGS_MASK) | FLAGS_CONTEXT_HAS_IS_REMOTE,
        name: phase.name().to_owned(),
        kind: SpanKind::Internal as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes,
        ..Default::default()
    }
}

fn add_first_token_event(span: &mut Span, at: u64, ttft_ns: u64) {
    span.events.push(Event {
        time_unix_nano: at,
        name: span_names::EVENT_FIRST_TOKEN.to_owned(),
        attributes: vec![double_kv(attr::LLM_TTFT, ttft_ns as f64 / 1e9)],
        dropped_attributes_count: 0,
    });
}

/// Renames the span as the contract does and adds the contract's attributes beside vLLM's
/// (which stay, so queries written against vLLM's names keep working).
fn map_attributes(span: &mut Span, model: &str, default_operation: &str) {
    let request_id = string_attr(&span.attributes, vllm::REQUEST_ID).map(str::to_owned);
    let operation = match request_id.as_deref() {
        Some(id) if id.starts_with(vllm::CHAT_REQUEST_ID_PREFIX) => value::OPERATION_CHAT,
        Some(id) if id.starts_with(vllm::COMPLETION_REQUEST_ID_PREFIX) => {
            value::OPERATION_TEXT_COMPLETION
        }
        _ => default_operation,
    }
    .to_owned();
    span.name = span_names::request_span_name(&operation, model);

    let mut added = vec![
        string_kv(attr::GEN_AI_OPERATION_NAME, operation),
        string_kv(attr::GEN_AI_PROVIDER_NAME, value::PROVIDER_VLLM.to_owned()),
        string_kv(attr::GEN_AI_REQUEST_MODEL, model.to_owned()),
    ];
    if let Some(id) = request_id {
        added.push(string_kv(attr::GEN_AI_RESPONSE_ID, id));
    }
    for (from, to) in [
        (vllm::USAGE_PROMPT_TOKENS, attr::GEN_AI_USAGE_INPUT_TOKENS),
        (
            vllm::USAGE_COMPLETION_TOKENS,
            attr::GEN_AI_USAGE_OUTPUT_TOKENS,
        ),
    ] {
        if let Some(n) = int_attr(&span.attributes, from) {
            added.push(int_kv(to, n));
        }
    }
    if let Some(AnyValue {
        value: Some(any_value::Value::DoubleValue(ttft)),
    }) = find(&span.attributes, vllm::LATENCY_TIME_TO_FIRST_TOKEN)
    {
        if ttft.is_finite() && *ttft > 0.0 {
            added.push(double_kv(attr::GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, *ttft));
        }
    }
    for kv in added {
        if find(&span.attributes, &kv.key).is_none() {
            span.attributes.push(kv);
        }
    }
}

/// A latency attribute in whole nanoseconds.
fn seconds(attributes: &[KeyValue], key: &str) -> Result<u64, Incomplete> {
    let secs = match find(attributes, key).and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::DoubleValue(v)) => *v,
        Some(any_value::Value::IntValue(v)) => *v as f64,
        _ => return Err(Incomplete::MissingAttribute),
    };
    if !secs.is_finite() || secs < 0.0 || secs * 1e9 >= u64::MAX as f64 {
        return Err(Incomplete::InvalidValue);
    }
    Ok((secs * 1e9).round() as u64)
}

fn find<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

fn string_attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match find(attributes, key)?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s),
        _ => None,
    }
}

fn int_attr(attributes: &[KeyValue], key: &str) -> Option<i64> {
    match find(attributes, key)?.value.as_ref()? {
        any_value::Value::IntValue(n) => Some(*n),
        _ => None,
    }
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn string_kv(key: &str, value: String) -> KeyValue {
    kv(key, any_value::Value::StringValue(value))
}

fn int_kv(key: &str, value: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(value))
}

fn double_kv(key: &str, value: f64) -> KeyValue {
    kv(key, any_value::Value::DoubleValue(value))
}

#[cfg(test)]
mod tests;
