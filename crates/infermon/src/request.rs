//! One inference request's lifecycle, as a typestate: `Queued` → `Prefilling` → `Decoding` → end.
//!
//! Each transition consumes the request and returns it in its next state:
//!
//! ```
//! # use infermon::request::*; use infermon::instruments::InferenceMetrics;
//! # fn f(metrics: &InferenceMetrics, params: RequestParams<'_>) {
//! let req = InferenceRequest::start(metrics, params, None);
//! let mut req = req.scheduled(0).first_token(0);
//! req.tokens(1);
//! req.finish("stop");
//! # }
//! ```
//!
//! so finishing twice or producing a first token before the request was scheduled does not
//! compile:
//!
//! ```compile_fail,E0599
//! # use infermon::request::*; use infermon::instruments::InferenceMetrics;
//! # fn f(metrics: &InferenceMetrics, params: RequestParams<'_>) {
//! let req = InferenceRequest::start(metrics, params, None);
//! req.first_token(0); // error: no `first_token` on InferenceRequest<Queued>
//! # }
//! ```
//!
//! ```compile_fail,E0382
//! # use infermon::request::*;
//! # fn f(req: InferenceRequest<Decoding>) {
//! req.finish("stop");
//! req.finish("stop"); // error: use of moved value
//! # }
//! ```
//!
//! What it emits (names from [`contract`](crate::contract)):
//!
//! * the SERVER span `{operation} {model}` — a `tracing` span, so `#[tracing::instrument]`
//!   code run inside it nests under it — with the `gen_ai.*` request and usage attributes, the
//!   `first_token` event (TTFT in seconds), `preempted`/`resumed` events, and on failure status
//!   ERROR plus `error.type`;
//! * child spans `queue`, `prefill`, `decode`, created directly through the OpenTelemetry API
//!   with the request span as explicit parent (the hot path skips `tracing`'s dispatch);
//! * the request metrics of [`InferenceMetrics`].
//!
//! The request span is an INFO-level `tracing` span with target `infermon::request`: a
//! subscriber filter that disables it turns the request's spans off (metrics stay on).
//!
//! Every transition has an `_at(SystemTime)` twin for engines that process a whole step at once
//! or run on a simulated clock: the spans, events and durations then use the given times.
//! Dropping a request that never ended records it as failed with `error.type` = `dropped`
//! rather than leaking an open span.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::SystemTime;

use opentelemetry::trace::TraceContextExt;
use opentelemetry::{Context, KeyValue, StringValue, Value};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::contract::{attr, span as names, value};
use crate::instruments::{ChildSpan, InferenceMetrics, Inner, Series};
use crate::telemetry::start_span_with;

/// What the request asked for, as received. Borrowed: nothing is copied unless recorded.
#[derive(Debug, Clone, Copy)]
pub struct RequestParams<'a> {
    /// `gen_ai.operation.name`, e.g. [`value::OPERATION_CHAT`].
    pub operation: &'a str,
    /// `gen_ai.request.model` as the client sent it (capped before use as a label).
    pub model: &'a str,
    /// `gen_ai.provider.name`, e.g. [`value::PROVIDER_SIMULATOR`].
    pub provider: &'a str,
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stream: bool,
    /// Prompt length in tokens.
    pub input_tokens: u64,
    /// `gen_ai.response.id`, when the server assigns one up front.
    pub response_id: Option<&'a str>,
}

/// Typestate: waiting to be scheduled.
#[derive(Debug)]
pub struct Queued;
/// Typestate: scheduled, prompt being processed, no output yet.
#[derive(Debug)]
pub struct Prefilling;
/// Typestate: producing output tokens.
#[derive(Debug)]
pub struct Decoding;

/// One request's telemetry. See the [module docs](self).
#[derive(Debug)]
pub struct InferenceRequest<S> {
    core: Core,
    _state: PhantomData<S>,
}

/// The state shared by every typestate. Its `Drop` ends a request that was never ended.
#[derive(Debug)]
struct Core {
    metrics: InferenceMetrics,
    span: tracing::Span,
    /// The request span's OpenTelemetry context: parent of the child spans.
    cx: Context,
    /// False when the request span is disabled by the `tracing` filter, unsampled, or no
    /// OpenTelemetry layer is installed: then no child spans or events are built.
    recording: bool,
    /// The request's (capped) model and operation with their bound instruments.
    series: Arc<Series>,
    input_tokens: u64,
    cached_input_tokens: u64,
    output_tokens: u64,
    preemptions: u64,
    arrived: SystemTime,
    scheduled: Option<SystemTime>,
    first_token: Option<SystemTime>,
    phase: Option<ChildSpan>,
    ended: bool,
}

impl InferenceRequest<Queued> {
    /// A request arrives: starts the SERVER span `{operation} {model}` (child of `parent` if
    /// given, else of the current span) and its `queue` child span.
    pub fn start(
        metrics: &InferenceMetrics,
        params: RequestParams<'_>,
        parent: Option<&Context>,
    ) -> Self {
        Self::start_at(metrics, params, parent, SystemTime::now())
    }

    /// [`start`](Self::start) with an explicit arrival time.
    pub fn start_at(
        metrics: &InferenceMetrics,
        params: RequestParams<'_>,
        parent: Option<&Context>,
        at: SystemTime,
    ) -> Self {
        let inner = &metrics.inner;
        let series = inner.series(params.model, params.operation);
        let name = names::request_span_name(series.operation.as_str(), series.model.as_str());

        let span = tracing::info_span!(
            "inference_request",
            otel.name = name,
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
        );
        if let Some(parent) = parent {
            // Only fails when the span is disabled or already started; neither matters here.
            let _ = span.set_parent(parent.clone());
        }
        let (cx, recording) = if span.is_disabled() {
            (Context::new(), false)
        } else {
            // Starting the OpenTelemetry span now pins its start to `at` and hands it the
            // request attributes.
            let attributes = request_attributes(&params, &series);
            let (cx, unused) = start_span_with(at, attributes, || span.context());
            let recording = cx.span().is_recording();
            if recording && !unused.is_empty() {
                cx.span().set_attributes(unused);
            }
            (cx, recording)
        };

        let phase = recording.then(|| inner.tracer.start(names::QUEUE, at, Vec::new(), &cx));

        InferenceRequest {
            core: Core {
                metrics: metrics.clone(),
                span,
                cx,
                recording,
                series,
                input_tokens: params.input_tokens,
                cached_input_tokens: 0,
                output_tokens: 0,
                preemptions: 0,
                arrived: at,
                scheduled: None,
                first_token: None,
                phase,
                ended: false,
            },
            _state: PhantomData,
        }
    }

    /// The scheduler picked the request. `queue_position` is where it stood in the waiting queue
    /// on arrival (0 = head); it is recorded on the `queue` span.
    pub fn scheduled(self, queue_position: u64) -> InferenceRequest<Prefilling> {
        self.scheduled_at(queue_position, SystemTime::now())
    }

    /// [`scheduled`](Self::scheduled) at an explicit time.
    pub fn scheduled_at(
        mut self,
        queue_position: u64,
        at: SystemTime,
    ) -> InferenceRequest<Prefilling> {
        let c = &mut self.core;
        c.scheduled = Some(at);
        c.end_phase(
            at,
            vec![KeyValue::new(
                attr::LLM_QUEUE_POSITION,
                to_i64(queue_position),
            )],
        );
        let queued = seconds(c.arrived, at);
        c.series.queue_duration.record(queued);
        c.start_phase(names::PREFILL, at);
        self.into_state()
    }
}

impl InferenceRequest<Prefilling> {
    /// The first output token exists. `cached_input_tokens` prompt tokens came from the prefix
    /// cache (the rest were computed). Counts as one output token; later ones go to
    /// [`tokens`](InferenceRequest::tokens).
    pub fn first_token(self, cached_input_tokens: u64) -> InferenceRequest<Decoding> {
        self.first_token_at(cached_input_tokens, SystemTime::now())
    }

    /// [`first_token`](Self::first_token) at an explicit time.
    pub fn first_token_at(
        mut self,
        cached_input_tokens: u64,
        at: SystemTime,
    ) -> InferenceRequest<Decoding> {
        let c = &mut self.core;
        let cached = cached_input_tokens.min(c.input_tokens);
        c.cached_input_tokens = cached;
        c.first_token = Some(at);
        c.output_tokens = 1;
        c.end_phase(
            at,
            vec![
                KeyValue::new(
                    attr::LLM_PREFILL_COMPUTED_TOKENS,
                    to_i64(c.input_tokens - cached),
                ),
                KeyValue::new(attr::LLM_PREFILL_CACHED_TOKENS, to_i64(cached)),
            ],
        );

        let ttft = seconds(c.arrived, at);
        let m = &c.series;
        m.time_to_first_token.record(ttft);
        m.prefill_duration
            .record(seconds(c.scheduled.unwrap_or(c.arrived), at));
        m.input_tokens.add(c.input_tokens);
        m.prefix_cache_queries.add(c.input_tokens);
        m.prefix_cache_hits.add(cached);

        if c.recording {
            let root = c.cx.span();
            root.add_event_with_timestamp(
                names::EVENT_FIRST_TOKEN,
                at,
                vec![KeyValue::new(attr::LLM_TTFT, ttft)],
            );
            root.set_attribute(KeyValue::new(
                attr::GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK,
                ttft,
            ));
        }
        c.start_phase(names::DECODE, at);
        self.into_state()
    }
}

impl InferenceRequest<Decoding> {
    /// `n` more output tokens were produced (after the first).
    pub fn tokens(&mut self, n: u64) {
        self.core.output_tokens = self.core.output_tokens.saturating_add(n);
    }

    /// Output tokens so far, the first included.
    pub fn output_tokens(&self) -> u64 {
        self.core.output_tokens
    }

    /// The request completed normally; `finish_reason` is e.g. [`value::FINISH_STOP`] or
    /// [`value::FINISH_LENGTH`]. Usage comes from the counts given along the way.
    pub fn finish(self, finish_reason: &str) {
        self.finish_at(finish_reason, SystemTime::now())
    }

    /// [`finish`](Self::finish) at an explicit time.
    pub fn finish_at(mut self, finish_reason: &str, at: SystemTime) {
        let c = &mut self.core;
        let reason = c.metrics.inner.finish_reasons.get(finish_reason);
        let first = c.first_token.unwrap_or(c.arrived);
        let decode = seconds(first, at);
        let m = &c.series;
        m.decode_duration.record(decode);
        if c.output_tokens > 1 {
            m.time_per_output_token
                .record(decode / (c.output_tokens - 1) as f64);
        }
        m.request_input_tokens.record(c.input_tokens);
        m.request_output_tokens.record(c.output_tokens);
        c.end(at, Ending::Finished(reason));
    }
}

impl<S> InferenceRequest<S> {
    /// The request's `tracing` span: enter it or `.instrument()` futures with it so their spans
    /// nest under the request, or record declared fields on it.
    pub fn span(&self) -> &tracing::Span {
        &self.core.span
    }

    /// The request span's OpenTelemetry context, e.g. to
    /// [`inject`](crate::propagation::inject_context) into a downstream call.
    pub fn context(&self) -> Context {
        self.core.cx.clone()
    }

    /// The engine evicted the sequence from the running batch.
    pub fn preempted(&mut self) {
        self.preempted_at(SystemTime::now())
    }

    /// [`preempted`](Self::preempted) at an explicit time.
    pub fn preempted_at(&mut self, at: SystemTime) {
        let c = &mut self.core;
        c.preemptions += 1;
        c.event(names::EVENT_PREEMPTED, at);
    }

    /// A preempted sequence was scheduled again.
    pub fn resumed(&mut self) {
        self.resumed_at(SystemTime::now())
    }

    /// [`resumed`](Self::resumed) at an explicit time.
    pub fn resumed_at(&mut self, at: SystemTime) {
        self.core.event(names::EVENT_RESUMED, at);
    }

    /// The request failed; `error_type` is a short, low-cardinality class such as `timeout` or
    /// `kv_cache_exhausted` (capped like every user-supplied label).
    pub fn fail(self, error_type: &str) {
        self.fail_at(error_type, SystemTime::now())
    }

    /// [`fail`](Self::fail) at an explicit time.
    pub fn fail_at(mut self, error_type: &str, at: SystemTime) {
        let error_type = self.core.metrics.inner.error_types.get(error_type);
        self.core.end(at, Ending::Failed(error_type));
    }

    /// The client went away before the request completed (finish reason `abort`; not an error
    /// of the server).
    pub fn abort(self) {
        self.abort_at(SystemTime::now())
    }

    /// [`abort`](Self::abort) at an explicit time.
    pub fn abort_at(mut self, at: SystemTime) {
        self.core.end(at, Ending::Aborted);
    }

    /// Records the prompt text on the request span — only if content capture was enabled with
    /// [`InferenceMetricsBuilder::capture_content`](crate::instruments::InferenceMetricsBuilder::capture_content).
    pub fn record_prompt(&self, text: &str) {
        self.core.capture(attr::GEN_AI_PROMPT, text);
    }

    /// Records the completion text on the request span — only if content capture was enabled.
    pub fn record_completion(&self, text: &str) {
        self.core.capture(attr::GEN_AI_COMPLETION, text);
    }

    fn into_state<T>(self) -> InferenceRequest<T> {
        InferenceRequest {
            core: self.core,
            _state: PhantomData,
        }
    }
}

/// How a request ended.
enum Ending {
    Finished(StringValue),
    Failed(StringValue),
    Aborted,
}

impl Core {
    fn inner(&self) -> &Inner {
        &self.metrics.inner
    }

    /// The metrics every ending records: duration, the request count, output tokens.
    /// Successes and aborts go to bound series; failures carry `error.type` and stay unbound.
    fn record_end_metrics(&self, at: SystemTime, ending: &Ending) {
        let (m, series) = (&self.metrics.inner, &self.series);
        let duration = seconds(self.arrived, at);
        match ending {
            Ending::Finished(reason) => {
                series.request_duration.record(duration);
                series.count_success(reason);
            }
            Ending::Aborted => {
                series.request_duration.record(duration);
                series.aborted.add(1);
            }
            Ending::Failed(error_type) => {
                let [model, op] = series.model_op();
                let error = KeyValue::new(attr::ERROR_TYPE, error_type.clone());
                m.request_duration
                    .record(duration, &[model.clone(), op.clone(), error.clone()]);
                m.requests.add(
                    1,
                    &[
                        model,
                        op,
                        KeyValue::new(attr::LLM_REQUEST_OUTCOME, value::OUTCOME_ERROR),
                        KeyValue::new(attr::GEN_AI_RESPONSE_FINISH_REASON, value::FINISH_ERROR),
                        error,
                    ],
                );
            }
        }
        if self.output_tokens > 0 {
            series.output_tokens.add(self.output_tokens);
        }
    }

    fn start_phase(&mut self, name: &'static str, at: SystemTime) {
        if self.recording {
            self.phase = Some(self.inner().tracer.start(name, at, Vec::new(), &self.cx));
        }
    }

    fn end_phase(&mut self, at: SystemTime, attributes: Vec<KeyValue>) {
        if let Some(phase) = self.phase.take() {
            phase.end(at, attributes);
        }
    }

    fn event(&self, name: &'static str, at: SystemTime) {
        if self.recording {
            self.cx.span().add_event_with_timestamp(
                name,
                at,
                vec![KeyValue::new(
                    attr::LLM_PREEMPTION_COUNT,
                    to_i64(self.preemptions),
                )],
            );
        }
    }

    fn capture(&self, key: &'static str, text: &str) {
        if self.recording && self.inner().capture_content {
            self.cx
                .span()
                .set_attribute(KeyValue::new(key, text.to_owned()));
        }
    }

    /// Ends the current phase, the request span and records the end-of-request metrics.
    fn end(&mut self, at: SystemTime, ending: Ending) {
        self.ended = true;
        if self.phase.is_some() {
            // Only the decode span carries output tokens and preemptions; a request that ends
            // while queued or prefilling closes its phase span without them.
            let attrs = if self.first_token.is_some() {
                vec![
                    KeyValue::new(attr::LLM_DECODE_OUTPUT_TOKENS, to_i64(self.output_tokens)),
                    KeyValue::new(attr::LLM_DECODE_PREEMPTIONS, to_i64(self.preemptions)),
                ]
            } else {
                Vec::new()
            };
            self.end_phase(at, attrs);
        }

        self.record_end_metrics(at, &ending);

        if !self.recording {
            return;
        }
        let root = self.cx.span();
        let finish_reason = match &ending {
            Ending::Finished(reason) => reason.clone(),
            Ending::Failed(_) => StringValue::from(value::FINISH_ERROR),
            Ending::Aborted => StringValue::from(value::FINISH_ABORT),
        };
        let mut attrs = vec![
            KeyValue::new(
                attr::GEN_AI_RESPONSE_FINISH_REASONS,
                Value::Array(vec![finish_reason].into()),
            ),
            KeyValue::new(attr::GEN_AI_USAGE_OUTPUT_TOKENS, to_i64(self.output_tokens)),
        ];
        if self.first_token.is_some() {
            attrs.push(KeyValue::new(
                attr::GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
                to_i64(self.cached_input_tokens),
            ));
        }
        if let Ending::Failed(error_type) = &ending {
            attrs.push(KeyValue::new(attr::ERROR_TYPE, error_type.clone()));
        }
        root.set_attributes(attrs);
        if let Ending::Failed(error_type) = &ending {
            // Status ERROR through the `tracing` fields the tracing-opentelemetry layer reads,
            // with the error type as its description.
            self.span.record("otel.status_code", "error");
            self.span
                .record("otel.status_description", error_type.as_str());
        }
        // End the OpenTelemetry span at `at`; the layer's own end when the `tracing` span closes
        // is then a no-op.
        root.end_with_timestamp(at);
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        if !self.ended {
            let error_type = StringValue::from(value::ERROR_DROPPED);
            self.end(SystemTime::now(), Ending::Failed(error_type));
        }
    }
}

/// The request span's attributes known at arrival.
fn request_attributes(p: &RequestParams<'_>, series: &Series) -> Vec<KeyValue> {
    let (operation, model) = (&series.operation, &series.model);
    // Room for the attributes added later (TTFT, finish reasons, usage, error type) so the span
    // never reallocates them.
    let mut a = Vec::with_capacity(16);
    a.push(KeyValue::new(
        attr::GEN_AI_OPERATION_NAME,
        operation.clone(),
    ));
    a.push(KeyValue::new(
        attr::GEN_AI_PROVIDER_NAME,
        p.provider.to_owned(),
    ));
    a.push(KeyValue::new(attr::GEN_AI_REQUEST_MODEL, model.clone()));
    a.push(KeyValue::new(attr::GEN_AI_REQUEST_STREAM, p.stream));
    a.push(KeyValue::new(
        attr::GEN_AI_USAGE_INPUT_TOKENS,
        to_i64(p.input_tokens),
    ));
    if let Some(v) = p.max_tokens {
        a.push(KeyValue::new(attr::GEN_AI_REQUEST_MAX_TOKENS, to_i64(v)));
    }
    if let Some(v) = p.temperature {
        a.push(KeyValue::new(attr::GEN_AI_REQUEST_TEMPERATURE, v));
    }
    if let Some(v) = p.top_p {
        a.push(KeyValue::new(attr::GEN_AI_REQUEST_TOP_P, v));
    }
    if let Some(v) = p.response_id {
        a.push(KeyValue::new(attr::GEN_AI_RESPONSE_ID, v.to_owned()));
    }
    a
}

/// Seconds from `from` to `to`; 0 if the clock stepped backwards in between.
fn seconds(from: SystemTime, to: SystemTime) -> f64 {
    to.duration_since(from).map_or(0.0, |d| d.as_secs_f64())
}

/// OpenTelemetry integer attributes are i64; token counts never come near the limit, but
/// saturate rather than wrap if they did.
fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
