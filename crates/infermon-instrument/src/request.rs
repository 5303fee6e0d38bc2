//! One inference request's lifecycle, typed: it emits the contract's `tracing` spans and
//! events (the same a service writes by hand on the macros path, see `docs/instrumenting.md`),
//! and the layers turn them into telemetry.
//!
//! Two forms over the same core:
//!
//! * [`InferenceRequest<S>`], a typestate: `Queued` → `Prefilling` → `Decoding` → end. Each
//!   transition consumes the request and returns it in its next state, so a slip does not
//!   compile:
//!
//! ```
//! # use infermon_instrument::request::*; use infermon_instrument::instruments::InferenceMetrics;
//! # fn f(metrics: &InferenceMetrics, params: RequestParams<'_>) {
//! let req = InferenceRequest::start(metrics, params, None);
//! let mut req = req.scheduled(0).first_token(0);
//! req.tokens(1);
//! req.finish("stop");
//! # }
//! ```
//!
//! ```compile_fail,E0599
//! # use infermon_instrument::request::*; use infermon_instrument::instruments::InferenceMetrics;
//! # fn f(metrics: &InferenceMetrics, params: RequestParams<'_>) {
//! let req = InferenceRequest::start(metrics, params, None);
//! req.first_token(0); // error: no `first_token` on InferenceRequest<Queued>
//! # }
//! ```
//!
//! ```compile_fail,E0382
//! # use infermon_instrument::request::*;
//! # fn f(req: InferenceRequest<Decoding>) {
//! req.finish("stop");
//! req.finish("stop"); // error: use of moved value
//! # }
//! ```
//!
//! * [`TrackedRequest`], for an engine that keeps every request in one map whatever its
//!   phase (as continuous-batching engines do): `&mut self` transitions that apply to any phase
//!   where they make sense and are ignored where they do not (see each method), so the engine
//!   needs no state machine of its own. `InferenceRequest::into_tracked` converts.
//!
//! What it emits (names from [`contract`](crate::contract)):
//!
//! * the request span `inference_request` (exported as SERVER span `{operation} {model}`) —
//!   INFO, target `infermon::request` — with the `gen_ai.*` request and usage fields, status
//!   ERROR plus `error.type` on failure;
//! * child spans `queue`, `prefill`, `decode` (so `#[tracing::instrument]` code run inside
//!   [`phase_span`](InferenceRequest::phase_span) nests under the phase);
//! * events `first_token` (with TTFT in seconds), `preempted`, `resumed` on the request span.
//!
//! Every transition has an `_at(SystemTime)` twin for engines that process a whole step at once
//! or run on a simulated clock; the times travel in the contract's time fields. A subscriber
//! filter that disables the request span turns the whole request's telemetry off, metrics
//! included. The metrics are the ones [`MetricsLayer`](crate::layer::MetricsLayer) derives from
//! these spans, but recorded by the request itself into that layer's instruments (it knows every
//! value already; the layer leaves spans of [`TARGET`] to it) — see
//! [`layer::metrics`](crate::layer::MetricsLayer). Labels are capped once, by that layer's caps
//! when there is one (so span and points agree), else by the `InferenceMetrics` passed to
//! `start`. Likewise the spans and events reach infermon's bridge ready-made (see
//! [`OtelLayer`](crate::layer::OtelLayer)): the bridge does not visit their fields; other layers
//! see every field as usual.
//! Dropping a request that never ended ends it as failed with `error.type` = `dropped` rather
//! than leaking an open span.

use std::marker::PhantomData;
use std::sync::OnceLock;
use std::time::SystemTime;

use std::borrow::Cow;

use opentelemetry::trace::{SpanKind, TraceContextExt as _};
use opentelemetry::{Context, KeyValue, StringValue};
use tracing::field::{Empty, Value};

use crate::contract::{attr, field, span as names, value};
use crate::exemplars::TraceIds;
use crate::instruments::InferenceMetrics;
use crate::layer::{
    attribute_int, context_of, create_prepared, event_prepared, from_unix_nanos, seconds,
    string_value, unix_nanos, MetricPhase, PhaseState, PreparedEvent, PreparedSpan, RequestState,
    TypedMetrics,
};

/// The `tracing` target of the typed path's spans and events. The
/// [`MetricsLayer`](crate::layer::MetricsLayer) leaves spans and events of this target to the
/// typed path, which records their metrics itself: do not use it for hand-written spans.
pub const TARGET: &str = "infermon::request";

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

/// One request's telemetry, as a typestate. See the [module docs](self).
#[derive(Debug)]
pub struct InferenceRequest<S> {
    core: TrackedRequest,
    _state: PhantomData<S>,
}

/// Where a request is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Queued,
    Prefilling,
    Decoding,
    Ended,
}

/// One request's telemetry for engines that keep requests of every phase together. See the
/// [module docs](self). Its `Drop` ends a request that was never ended (as `dropped`).
#[derive(Debug)]
pub struct TrackedRequest {
    /// What the service passed: content capture settings, and the label caps when the
    /// subscriber has no metrics layer.
    metrics: InferenceMetrics,
    /// Where this request's metrics go: the subscriber's metrics layer (`None` without one,
    /// or when the request span is disabled).
    recorder: Option<TypedMetrics>,
    span: tracing::Span,
    /// The request span's OpenTelemetry context, as the bridge started it (`None` without a
    /// bridge, or when the span is not exported): its phases' parent, and its ids for
    /// exemplars, without a registry lookup.
    otel_cx: Option<Context>,
    /// The open phase's span, made when [`phase_span`](Self::phase_span) asks for it (so work
    /// can nest under it); otherwise the phase span is emitted whole when the phase ends, all
    /// its fields given at creation — the same span, without a dispatch per late field.
    phase_span: OnceLock<tracing::Span>,
    /// When the open phase started (ns since the epoch).
    phase_start: u64,
    phase: Phase,
    input_tokens: u64,
    cached_input_tokens: u64,
    output_tokens: u64,
    preemptions: u64,
    arrived: SystemTime,
    first_token: Option<SystemTime>,
    /// Seconds of engine step time attributed to this request so far.
    gpu_time: f64,
}

/// The request span; one macro so the contextual and explicit-root forms cannot drift apart.
macro_rules! request_span {
    ($($parent:tt)*) => {
        |name: &str, operation: &str, model: &str, p: &RequestParams<'_>, start: u64| {
            tracing::info_span!(
                target: TARGET,
                $($parent)*
                names::REQUEST,
                { field::OTEL_NAME } = name,
                { field::OTEL_KIND } = field::KIND_SERVER,
                { field::START_TIME } = start,
                { attr::GEN_AI_OPERATION_NAME } = operation,
                { attr::GEN_AI_PROVIDER_NAME } = p.provider,
                { attr::GEN_AI_REQUEST_MODEL } = model,
                { attr::GEN_AI_REQUEST_STREAM } = p.stream,
                { attr::GEN_AI_USAGE_INPUT_TOKENS } = p.input_tokens,
                { attr::GEN_AI_REQUEST_MAX_TOKENS } = p.max_tokens,
                { attr::GEN_AI_REQUEST_TEMPERATURE } = p.temperature,
                { attr::GEN_AI_REQUEST_TOP_P } = p.top_p,
                { attr::GEN_AI_RESPONSE_ID } = p.response_id,
                { attr::GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK } = Empty,
                { attr::GEN_AI_USAGE_OUTPUT_TOKENS } = Empty,
                { attr::GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS } = Empty,
                { attr::GEN_AI_RESPONSE_FINISH_REASONS } = Empty,
                { attr::LLM_REQUEST_GPU_TIME } = Empty,
                { attr::ERROR_TYPE } = Empty,
                { field::OTEL_STATUS_CODE } = Empty,
                { field::OTEL_STATUS_DESCRIPTION } = Empty,
                { attr::GEN_AI_INPUT_MESSAGES } = Empty,
                { attr::GEN_AI_OUTPUT_MESSAGES } = Empty,
                { field::END_TIME } = Empty,
            )
        }
    };
}

impl InferenceRequest<Queued> {
    /// A request arrives: starts the request span (child of `parent` if given — e.g. the
    /// context [`extract_context`](crate::propagation::extract_context) read from `traceparent`
    /// — else of the current span) and its `queue` child span.
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
        Self {
            core: TrackedRequest::start_at(metrics, params, parent, at),
            _state: PhantomData,
        }
    }

    /// The scheduler picked the request. `queue_position` is where it stood in the waiting queue
    /// on arrival (0 = head); it is recorded on the `queue` span.
    pub fn scheduled(mut self, queue_position: u64) -> InferenceRequest<Prefilling> {
        self.core.scheduled(queue_position);
        self.into_state()
    }

    /// [`scheduled`](Self::scheduled) at an explicit time.
    pub fn scheduled_at(
        mut self,
        queue_position: u64,
        at: SystemTime,
    ) -> InferenceRequest<Prefilling> {
        self.core.scheduled_at(queue_position, at);
        self.into_state()
    }
}

impl InferenceRequest<Prefilling> {
    /// The first output token exists. `cached_input_tokens` prompt tokens came from the prefix
    /// cache (the rest were computed). Counts as one output token; later ones go to
    /// [`tokens`](InferenceRequest::tokens).
    pub fn first_token(mut self, cached_input_tokens: u64) -> InferenceRequest<Decoding> {
        self.core.first_token(cached_input_tokens);
        self.into_state()
    }

    /// [`first_token`](Self::first_token) at an explicit time.
    pub fn first_token_at(
        mut self,
        cached_input_tokens: u64,
        at: SystemTime,
    ) -> InferenceRequest<Decoding> {
        self.core.first_token_at(cached_input_tokens, at);
        self.into_state()
    }
}

impl InferenceRequest<Decoding> {
    /// `n` more output tokens were produced (after the first). A counter update; nothing is
    /// emitted until the request ends.
    pub fn tokens(&mut self, n: u64) {
        self.core.tokens(n);
    }

    /// Output tokens so far, the first included.
    pub fn output_tokens(&self) -> u64 {
        self.core.output_tokens
    }

    /// The request completed normally; `finish_reason` is e.g. [`value::FINISH_STOP`] or
    /// [`value::FINISH_LENGTH`]. Usage comes from the counts given along the way.
    pub fn finish(mut self, finish_reason: &str) {
        self.core.finish(finish_reason);
    }

    /// [`finish`](Self::finish) at an explicit time.
    pub fn finish_at(mut self, finish_reason: &str, at: SystemTime) {
        self.core.finish_at(finish_reason, at);
    }
}

impl<S> InferenceRequest<S> {
    /// The request's `tracing` span: enter it or `.instrument()` futures with it so their spans
    /// nest under the request, or record declared fields on it.
    pub fn span(&self) -> &tracing::Span {
        &self.core.span
    }

    /// The current phase's `tracing` span (`queue`, `prefill` or `decode`): run work that
    /// belongs to the phase inside it so its spans nest under the phase.
    pub fn phase_span(&self) -> &tracing::Span {
        self.core.phase_span()
    }

    /// The request span's OpenTelemetry context, e.g. to
    /// [`inject`](crate::propagation::inject_context) into a downstream call.
    pub fn context(&self) -> Context {
        self.core.context()
    }

    /// `seconds` more of the engine's step time belong to this request; see
    /// [`TrackedRequest::add_gpu_time`].
    pub fn add_gpu_time(&mut self, seconds: f64) {
        self.core.add_gpu_time(seconds);
    }

    /// The engine evicted the sequence from the running batch.
    pub fn preempted(&mut self) {
        self.preempted_at(SystemTime::now())
    }

    /// [`preempted`](Self::preempted) at an explicit time.
    pub fn preempted_at(&mut self, at: SystemTime) {
        self.core.preempted_at(at);
    }

    /// A preempted sequence was scheduled again.
    pub fn resumed(&mut self) {
        self.resumed_at(SystemTime::now())
    }

    /// [`resumed`](Self::resumed) at an explicit time.
    pub fn resumed_at(&mut self, at: SystemTime) {
        self.core.resumed_at(at);
    }

    /// The request failed; `error_type` is a short, low-cardinality class such as `timeout` or
    /// `kv_cache_exhausted` (capped like every user-supplied label).
    pub fn fail(mut self, error_type: &str) {
        self.core.fail(error_type);
    }

    /// [`fail`](Self::fail) at an explicit time.
    pub fn fail_at(mut self, error_type: &str, at: SystemTime) {
        self.core.fail_at(error_type, at);
    }

    /// The client went away before the request completed (finish reason `abort`; not an error
    /// of the server).
    pub fn abort(mut self) {
        self.core.abort();
    }

    /// [`abort`](Self::abort) at an explicit time.
    pub fn abort_at(mut self, at: SystemTime) {
        self.core.abort_at(at);
    }

    /// Records the input messages (JSON, as the GenAI conventions' `gen_ai.input.messages`)
    /// on the request span — only if content capture was enabled with
    /// [`InferenceMetricsBuilder::capture_content`](crate::instruments::InferenceMetricsBuilder::capture_content),
    /// and cut to its length cap.
    pub fn record_input_messages(&self, json: &str) {
        self.core.record_input_messages(json);
    }

    /// Records the output messages (`gen_ai.output.messages`) — only if content capture was
    /// enabled, and cut to its length cap.
    pub fn record_output_messages(&self, json: &str) {
        self.core.record_output_messages(json);
    }

    /// The same request as a [`TrackedRequest`], for code that keeps requests of all phases
    /// together.
    pub fn into_tracked(self) -> TrackedRequest {
        self.core
    }

    fn into_state<T>(self) -> InferenceRequest<T> {
        InferenceRequest {
            core: self.core,
            _state: PhantomData,
        }
    }
}

impl<S> From<InferenceRequest<S>> for TrackedRequest {
    fn from(r: InferenceRequest<S>) -> Self {
        r.into_tracked()
    }
}

impl TrackedRequest {
    /// A request arrives; see [`InferenceRequest::start`].
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
        // Labels are capped once, by the subscriber's metrics layer when there is one (the caps
        // its metric points use), else by `metrics`.
        let layer_metrics = TypedMetrics::layer_metrics();
        let inner = &layer_metrics.as_ref().unwrap_or(metrics).inner;
        let operation = inner.operations.get(params.operation);
        let model = inner.models.get(params.model);
        let name = names::request_span_name(operation.as_str(), model.as_str());
        let start = unix_nanos(at);
        // What the bridge would make of the span's fields, handed to it ready-made.
        let prepared = PreparedSpan {
            name: Cow::Owned(name.clone()),
            kind: SpanKind::Server,
            start: from_unix_nanos(start),
            end: None,
            attributes: request_attributes(&params, &operation, &model),
            parent: None,
        };
        let (span, otel_cx) = create_prepared(prepared, || match parent {
            // An explicit parent: a root `tracing` span created while that context is current,
            // which the bridge takes as its parent.
            Some(cx) => {
                let _parent = cx.clone().attach();
                request_span!(parent: None,)(
                    &name,
                    operation.as_str(),
                    model.as_str(),
                    &params,
                    start,
                )
            }
            None => request_span!()(&name, operation.as_str(), model.as_str(), &params, start),
        });
        // A disabled request span turns the request's metrics off too, as on the macros path.
        let recorder = layer_metrics
            .filter(|_| !span.is_disabled())
            .map(|m| TypedMetrics::new(m, &model, &operation));
        Self {
            metrics: metrics.clone(),
            recorder,
            span,
            otel_cx,
            phase_span: OnceLock::new(),
            phase_start: start,
            phase: Phase::Queued,
            input_tokens: params.input_tokens,
            cached_input_tokens: 0,
            output_tokens: 0,
            preemptions: 0,
            arrived: at,
            first_token: None,
            gpu_time: 0.0,
        }
    }

    /// The caps the request's labels go through: the metrics layer's when it records the
    /// request's metrics, else the request's own.
    fn caps(&self) -> &crate::instruments::Inner {
        match &self.recorder {
            Some(recorder) => &recorder.metrics().inner,
            None => &self.metrics.inner,
        }
    }

    /// Where the request is.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The request's `tracing` span.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// The current phase's `tracing` span (disabled once ended).
    pub fn phase_span(&self) -> &tracing::Span {
        self.phase_span.get_or_init(|| {
            if self.span.is_disabled() {
                return tracing::Span::none();
            }
            self.emit_phase(self.phase_start, None, None)
                .unwrap_or_else(tracing::Span::none)
        })
    }

    /// The request span's OpenTelemetry context.
    pub fn context(&self) -> Context {
        match &self.otel_cx {
            Some(cx) => cx.clone(),
            None => context_of(&self.span),
        }
    }

    /// Output tokens so far, the first included.
    pub fn output_tokens(&self) -> u64 {
        self.output_tokens
    }

    /// [`scheduled_at`](Self::scheduled_at) now.
    pub fn scheduled(&mut self, queue_position: u64) {
        self.schedule(queue_position, When::now());
    }

    /// [`first_token_at`](Self::first_token_at) now.
    pub fn first_token(&mut self, cached_input_tokens: u64) {
        self.produce_first_token(cached_input_tokens, When::now());
    }

    /// [`preempted_at`](Self::preempted_at) now.
    pub fn preempted(&mut self) {
        self.preempted_at(SystemTime::now());
    }

    /// [`resumed_at`](Self::resumed_at) now.
    pub fn resumed(&mut self) {
        self.resumed_at(SystemTime::now());
    }

    /// [`finish_at`](Self::finish_at) now.
    pub fn finish(&mut self, finish_reason: &str) {
        let reason = self.caps().finish_reasons.get(finish_reason);
        self.end(When::now(), Ending::Finished(reason));
    }

    /// [`fail_at`](Self::fail_at) now.
    pub fn fail(&mut self, error_type: &str) {
        let error_type = self.caps().error_types.get(error_type);
        self.end(When::now(), Ending::Failed(error_type));
    }

    /// [`abort_at`](Self::abort_at) now.
    pub fn abort(&mut self) {
        self.end(When::now(), Ending::Aborted);
    }

    /// Queued → prefilling. Ignored in any other phase.
    pub fn scheduled_at(&mut self, queue_position: u64, at: SystemTime) {
        self.schedule(queue_position, When::At(at));
    }

    fn schedule(&mut self, queue_position: u64, when: When) {
        if self.phase != Phase::Queued {
            return;
        }
        self.close_phase(PhaseEnd::Queue { queue_position }, when);
        self.phase = Phase::Prefilling;
    }

    /// Prefilling → decoding (a queued request is scheduled at the same instant first).
    /// Ignored once decoding or ended.
    pub fn first_token_at(&mut self, cached_input_tokens: u64, at: SystemTime) {
        self.produce_first_token(cached_input_tokens, When::At(at));
    }

    fn produce_first_token(&mut self, cached_input_tokens: u64, when: When) {
        let at = when.time();
        if self.phase == Phase::Queued {
            self.schedule(0, when);
        }
        if self.phase != Phase::Prefilling {
            return;
        }
        let cached = cached_input_tokens.min(self.input_tokens);
        self.cached_input_tokens = cached;
        self.first_token = Some(at);
        self.output_tokens = self.output_tokens.max(1);
        let end = unix_nanos(at);
        let ttft = seconds(self.arrived, at);
        self.close_phase(
            PhaseEnd::Prefill {
                computed: self.input_tokens - cached,
                cached,
            },
            when,
        );
        self.phase = Phase::Decoding;
        let prepared = PreparedEvent {
            name: names::EVENT_FIRST_TOKEN,
            at: from_unix_nanos(end),
            attributes: vec![KeyValue::new(attr::LLM_TTFT, ttft)],
        };
        event_prepared(prepared, || {
            tracing::info!(
                target: TARGET,
                parent: &self.span,
                message = names::EVENT_FIRST_TOKEN,
                { attr::LLM_TTFT } = ttft,
                { field::EVENT_TIME } = end,
            );
        });
        if let Some(recorder) = &self.recorder {
            recorder.first_token(ttft, self.input_tokens, &|| self.trace_ids());
        }
    }

    /// `n` more output tokens. Counted in any phase before the end.
    pub fn tokens(&mut self, n: u64) {
        self.output_tokens = self.output_tokens.saturating_add(n);
    }

    /// `seconds` more of the engine's step time belong to this request (its share of a step,
    /// e.g. the step's duration × its tokens ÷ the step's tokens). Summed; reported at the end as
    /// `llm.request.gpu_time` and the `llm.request.gpu_time` histogram. Ignored once ended.
    pub fn add_gpu_time(&mut self, seconds: f64) {
        if self.phase != Phase::Ended && seconds.is_finite() && seconds > 0.0 {
            self.gpu_time += seconds;
        }
    }

    /// The sequence was evicted from the running batch. Ignored once ended.
    pub fn preempted_at(&mut self, at: SystemTime) {
        if self.phase == Phase::Ended {
            return;
        }
        self.preemptions += 1;
        self.event(names::EVENT_PREEMPTED, at);
    }

    /// A preempted sequence was scheduled again. Ignored once ended.
    pub fn resumed_at(&mut self, at: SystemTime) {
        if self.phase != Phase::Ended {
            self.event(names::EVENT_RESUMED, at);
        }
    }

    /// The request completed normally, in whatever phase it is (a request that ends before
    /// its first token simply has no decode phase). Ignored once ended.
    pub fn finish_at(&mut self, finish_reason: &str, at: SystemTime) {
        let reason = self.caps().finish_reasons.get(finish_reason);
        self.end(When::At(at), Ending::Finished(reason));
    }

    /// The request failed. Ignored once ended.
    pub fn fail_at(&mut self, error_type: &str, at: SystemTime) {
        let error_type = self.caps().error_types.get(error_type);
        self.end(When::At(at), Ending::Failed(error_type));
    }

    /// The client went away. Ignored once ended.
    pub fn abort_at(&mut self, at: SystemTime) {
        self.end(When::At(at), Ending::Aborted);
    }

    /// See [`InferenceRequest::record_input_messages`].
    pub fn record_input_messages(&self, json: &str) {
        self.capture(attr::GEN_AI_INPUT_MESSAGES, json);
    }

    /// See [`InferenceRequest::record_output_messages`].
    pub fn record_output_messages(&self, json: &str) {
        self.capture(attr::GEN_AI_OUTPUT_MESSAGES, json);
    }

    fn capture(&self, key: &'static str, text: &str) {
        let inner = &self.metrics.inner;
        if !inner.capture_content || self.phase == Phase::Ended {
            return;
        }
        self.span
            .record(key, capped(text, inner.max_content_len).as_ref());
    }

    /// Ends the open phase with its closing attributes: records them on the live span if
    /// there is one, else emits the whole span now. The next phase starts at the same instant.
    fn close_phase(&mut self, end: PhaseEnd, when: When) {
        let live = self.phase_span.take();
        let at = unix_nanos(when.time());
        let start = std::mem::replace(&mut self.phase_start, at);
        if self.span.is_disabled() {
            return;
        }
        self.record_phase(&end, start, when.time());
        match live {
            Some(span) => {
                match end {
                    PhaseEnd::Queue { queue_position } => {
                        span.record(attr::LLM_QUEUE_POSITION, queue_position);
                    }
                    PhaseEnd::Prefill { computed, cached } => {
                        span.record(attr::LLM_PREFILL_COMPUTED_TOKENS, computed);
                        span.record(attr::LLM_PREFILL_CACHED_TOKENS, cached);
                    }
                    PhaseEnd::Decode {
                        output_tokens,
                        preemptions,
                    } => {
                        span.record(attr::LLM_DECODE_OUTPUT_TOKENS, output_tokens);
                        span.record(attr::LLM_DECODE_PREEMPTIONS, preemptions);
                    }
                    PhaseEnd::Cut => {}
                }
                // Without an explicit time the span ends when it closes, right here.
                if let When::At(_) = when {
                    span.record(field::END_TIME, at);
                }
            }
            None => drop(self.emit_phase(start, Some(end), Some(at))),
        }
    }

    /// The metrics the layer would record when the open phase's span closes.
    fn record_phase(&self, end: &PhaseEnd, start: u64, at: SystemTime) {
        let Some(recorder) = &self.recorder else {
            return;
        };
        let phase = match self.phase {
            Phase::Queued => MetricPhase::Queue,
            Phase::Prefilling => MetricPhase::Prefill,
            Phase::Decoding => MetricPhase::Decode,
            Phase::Ended => return,
        };
        let (cached, computed) = match *end {
            PhaseEnd::Prefill { computed, cached } => (Some(cached), Some(computed)),
            _ => (None, None),
        };
        recorder.phase_ended(
            &PhaseState {
                phase,
                start: from_unix_nanos(start),
                end: Some(at),
                cached,
                computed,
            },
            &|| self.trace_ids(),
        );
    }

    /// The request span's ids if it is sampled: asked only when a measurement becomes an
    /// exemplar (a span lookup), so not on every request.
    fn trace_ids(&self) -> Option<TraceIds> {
        match &self.otel_cx {
            Some(cx) => TraceIds::of_sampled(cx.span().span_context()),
            None => TraceIds::of_sampled(context_of(&self.span).span().span_context()),
        }
    }

    /// The open phase's span, from `start`; see [`phase_span`]. Handed to the bridge
    /// ready-made, parented by the request's context.
    fn emit_phase(
        &self,
        start: u64,
        end: Option<PhaseEnd>,
        end_time: Option<u64>,
    ) -> Option<tracing::Span> {
        let name = match self.phase {
            Phase::Queued => names::QUEUE,
            Phase::Prefilling => names::PREFILL,
            Phase::Decoding => names::DECODE,
            Phase::Ended => return None,
        };
        let prepared = PreparedSpan {
            name: Cow::Borrowed(name),
            kind: SpanKind::Internal,
            start: from_unix_nanos(start),
            end: end_time.map(from_unix_nanos),
            attributes: end.as_ref().map(PhaseEnd::attributes).unwrap_or_default(),
            parent: self.otel_cx.clone(),
        };
        let (span, _) = create_prepared(prepared, || {
            phase_span(self.phase, &self.span, start, end, end_time)
                .unwrap_or_else(tracing::Span::none)
        });
        Some(span)
    }

    fn event(&self, name: &'static str, at: SystemTime) {
        let at = unix_nanos(at);
        let prepared = PreparedEvent {
            name,
            at: from_unix_nanos(at),
            attributes: vec![KeyValue::new(
                attr::LLM_PREEMPTION_COUNT,
                attribute_int(self.preemptions),
            )],
        };
        event_prepared(prepared, || {
            tracing::info!(
                target: TARGET,
                parent: &self.span,
                message = name,
                { attr::LLM_PREEMPTION_COUNT } = self.preemptions,
                { field::EVENT_TIME } = at,
            );
        });
    }

    /// Ends the open phase and the request span: usage, finish reason, error type and status,
    /// end times, and the request's metrics. The spans close when dropped here (or when the last
    /// clone of them is).
    fn end(&mut self, when: When, ending: Ending) {
        if self.phase == Phase::Ended {
            return;
        }
        // Only the decode span carries output tokens and preemptions.
        let phase_end = if self.phase == Phase::Decoding {
            PhaseEnd::Decode {
                output_tokens: self.output_tokens,
                preemptions: self.preemptions,
            }
        } else {
            PhaseEnd::Cut
        };
        self.close_phase(phase_end, when);
        self.phase = Phase::Ended;
        let end = match when {
            When::At(at) => Some(unix_nanos(at)),
            When::Now(_) => None,
        };

        let (reason, error_type) = match &ending {
            Ending::Finished(reason) => (reason.as_str(), None),
            Ending::Aborted => (value::FINISH_ABORT, None),
            Ending::Failed(error_type) => (value::FINISH_ERROR, Some(error_type.as_str())),
        };
        // TTFT and cached tokens are recorded with the rest at the end: one dispatch fewer on
        // the first token.
        let ttft = self.first_token.map(|first| seconds(self.arrived, first));
        let cached = self.first_token.map(|_| self.cached_input_tokens);
        let gpu_time = (self.gpu_time > 0.0).then_some(self.gpu_time);
        record_fields(
            &self.span,
            [
                (
                    attr::GEN_AI_RESPONSE_FINISH_REASONS,
                    Some(&reason as &dyn Value),
                ),
                (attr::GEN_AI_USAGE_OUTPUT_TOKENS, Some(&self.output_tokens)),
                (
                    attr::GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK,
                    ttft.as_ref().map(|v| v as &dyn Value),
                ),
                (
                    attr::GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
                    cached.as_ref().map(|v| v as &dyn Value),
                ),
                (
                    attr::LLM_REQUEST_GPU_TIME,
                    gpu_time.as_ref().map(|v| v as &dyn Value),
                ),
                (
                    attr::ERROR_TYPE,
                    error_type.as_ref().map(|v| v as &dyn Value),
                ),
                (
                    field::OTEL_STATUS_CODE,
                    error_type.map(|_| &field::STATUS_ERROR as &dyn Value),
                ),
                (
                    field::OTEL_STATUS_DESCRIPTION,
                    error_type.as_ref().map(|v| v as &dyn Value),
                ),
                (field::END_TIME, end.as_ref().map(|v| v as &dyn Value)),
            ],
        );
        if let Some(recorder) = &self.recorder {
            // The finish reason and error type were capped by the recorder's caps already
            // (`caps()`); the fixed ones go through them as the layer would label the span.
            let caps = &recorder.metrics().inner;
            let (finish_reason, error_type) = match &ending {
                Ending::Finished(reason) => (reason.clone(), None),
                Ending::Aborted => (caps.finish_reasons.get(value::FINISH_ABORT), None),
                Ending::Failed(error_type) => (
                    caps.finish_reasons.get(value::FINISH_ERROR),
                    Some(error_type.clone()),
                ),
            };
            recorder.request_ended(
                RequestState {
                    series: None,
                    start: self.arrived,
                    end: Some(when.time()),
                    input_tokens: self.input_tokens,
                    output_tokens: self.output_tokens,
                    first_token: self.first_token,
                    finish_reason: Some(finish_reason),
                    status_error: error_type.is_some(),
                    error_type,
                    gpu_time: self.gpu_time,
                    ids: None,
                },
                &|| self.trace_ids(),
            );
        }
        self.span = tracing::Span::none();
    }
}

/// How a request ended; labels already capped by the request's own caps.
enum Ending {
    Finished(StringValue),
    Aborted,
    Failed(StringValue),
}

/// Records `values` on `span` in one dispatch. `Span::record` dispatches once per field, and
/// every dispatch costs each layer a registry lookup; the end of a request records up to eight
/// fields. `None` values are left unrecorded, as are names the span does not declare.
///
/// `FieldSet::value_set` is hidden from tracing-core's docs but is what every `tracing` macro
/// expands to; were it to change, this would stop compiling rather than misbehave.
fn record_fields<const N: usize>(
    span: &tracing::Span,
    values: [(&'static str, Option<&dyn Value>); N],
) {
    let Some(meta) = span.metadata() else {
        return;
    };
    let fields = meta.fields();
    // Only the fields with a value are looked up (each lookup compares names); an entry
    // without a value repeats any field of the set with `None`, which records nothing.
    let found = values.map(|(name, value)| (value.and_then(|_| fields.field(name)), value));
    let Some(any) = found.iter().find_map(|(f, _)| f.clone()) else {
        return;
    };
    let pairs: [(&tracing::field::Field, Option<&dyn Value>); N] =
        std::array::from_fn(|i| match &found[i] {
            (Some(f), value) => (f, *value),
            (None, _) => (&any, None),
        });
    let value_set = fields.value_set(&pairs);
    span.with_subscriber(|(id, dispatch)| {
        dispatch.record(id, &tracing::span::Record::new(&value_set));
    });
}

impl Drop for TrackedRequest {
    fn drop(&mut self) {
        if self.phase != Phase::Ended {
            self.fail(value::ERROR_DROPPED);
        }
    }
}

/// What a phase span gets when it ends.
enum PhaseEnd {
    Queue {
        queue_position: u64,
    },
    Prefill {
        computed: u64,
        cached: u64,
    },
    Decode {
        output_tokens: u64,
        preemptions: u64,
    },
    /// The request ended during the phase: no closing attributes.
    Cut,
}

impl PhaseEnd {
    /// The closing attributes as the bridge exports them (see [`phase_span`]'s fields).
    fn attributes(&self) -> Vec<KeyValue> {
        match *self {
            PhaseEnd::Queue { queue_position } => {
                vec![KeyValue::new(
                    attr::LLM_QUEUE_POSITION,
                    attribute_int(queue_position),
                )]
            }
            PhaseEnd::Prefill { computed, cached } => vec![
                KeyValue::new(attr::LLM_PREFILL_COMPUTED_TOKENS, attribute_int(computed)),
                KeyValue::new(attr::LLM_PREFILL_CACHED_TOKENS, attribute_int(cached)),
            ],
            PhaseEnd::Decode {
                output_tokens,
                preemptions,
            } => vec![
                KeyValue::new(attr::LLM_DECODE_OUTPUT_TOKENS, attribute_int(output_tokens)),
                KeyValue::new(attr::LLM_DECODE_PREEMPTIONS, attribute_int(preemptions)),
            ],
            PhaseEnd::Cut => Vec::new(),
        }
    }
}

/// The request span's attributes at creation as the bridge exports its fields (see
/// `request_span!`): the label values already capped.
fn request_attributes(
    p: &RequestParams<'_>,
    operation: &StringValue,
    model: &StringValue,
) -> Vec<KeyValue> {
    // Room for the end fields too (usage, finish reason, TTFT, ...): no growth later.
    let mut a = Vec::with_capacity(16);
    a.push(KeyValue::new(
        attr::GEN_AI_OPERATION_NAME,
        operation.clone(),
    ));
    a.push(KeyValue::new(
        attr::GEN_AI_PROVIDER_NAME,
        string_value(p.provider),
    ));
    a.push(KeyValue::new(attr::GEN_AI_REQUEST_MODEL, model.clone()));
    a.push(KeyValue::new(attr::GEN_AI_REQUEST_STREAM, p.stream));
    a.push(KeyValue::new(
        attr::GEN_AI_USAGE_INPUT_TOKENS,
        attribute_int(p.input_tokens),
    ));
    if let Some(v) = p.max_tokens {
        a.push(KeyValue::new(
            attr::GEN_AI_REQUEST_MAX_TOKENS,
            attribute_int(v),
        ));
    }
    if let Some(v) = p.temperature {
        a.push(KeyValue::new(attr::GEN_AI_REQUEST_TEMPERATURE, v));
    }
    if let Some(v) = p.top_p {
        a.push(KeyValue::new(attr::GEN_AI_REQUEST_TOP_P, v));
    }
    if let Some(v) = p.response_id {
        a.push(KeyValue::new(attr::GEN_AI_RESPONSE_ID, string_value(v)));
    }
    a
}

/// The span of `phase`, child of `request`, from `start`; with its closing attributes and end
/// time when given (a phase emitted whole), else with those fields left to record. `None` once
/// ended.
fn phase_span(
    phase: Phase,
    request: &tracing::Span,
    start: u64,
    end: Option<PhaseEnd>,
    end_time: Option<u64>,
) -> Option<tracing::Span> {
    let (mut position, mut computed, mut cached, mut output, mut preemptions) =
        (None, None, None, None, None);
    match end {
        Some(PhaseEnd::Queue { queue_position }) => position = Some(queue_position),
        Some(PhaseEnd::Prefill {
            computed: c,
            cached: h,
        }) => (computed, cached) = (Some(c), Some(h)),
        Some(PhaseEnd::Decode {
            output_tokens,
            preemptions: p,
        }) => (output, preemptions) = (Some(output_tokens), Some(p)),
        Some(PhaseEnd::Cut) | None => {}
    }
    Some(match phase {
        Phase::Queued => tracing::info_span!(
            target: TARGET,
            parent: request,
            names::QUEUE,
            { field::START_TIME } = start,
            { attr::LLM_QUEUE_POSITION } = position,
            { field::END_TIME } = end_time,
        ),
        Phase::Prefilling => tracing::info_span!(
            target: TARGET,
            parent: request,
            names::PREFILL,
            { field::START_TIME } = start,
            { attr::LLM_PREFILL_COMPUTED_TOKENS } = computed,
            { attr::LLM_PREFILL_CACHED_TOKENS } = cached,
            { field::END_TIME } = end_time,
        ),
        Phase::Decoding => tracing::info_span!(
            target: TARGET,
            parent: request,
            names::DECODE,
            { field::START_TIME } = start,
            { attr::LLM_DECODE_OUTPUT_TOKENS } = output,
            { attr::LLM_DECODE_PREEMPTIONS } = preemptions,
            { field::END_TIME } = end_time,
        ),
        Phase::Ended => return None,
    })
}

/// When a transition happened: at an explicit time (recorded in the time fields), or now (the
/// spans then end when they close, a moment later, without the extra dispatch of recording a
/// time).
#[derive(Clone, Copy)]
enum When {
    At(SystemTime),
    Now(SystemTime),
}

impl When {
    fn now() -> Self {
        When::Now(SystemTime::now())
    }

    fn time(self) -> SystemTime {
        match self {
            When::At(t) | When::Now(t) => t,
        }
    }
}

/// `text`, or its first `max` bytes (cut at a character boundary) followed by `…`.
fn capped(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &text[..cut]).into()
}

#[cfg(test)]
mod tests {
    use super::capped;

    #[test]
    fn captured_content_is_cut_at_a_character_boundary() {
        assert_eq!(capped("short", 10), "short");
        assert_eq!(capped("abcdef", 3), "abc…");
        // 'é' is two bytes: a cut inside it backs off to before it.
        assert_eq!(capped("aé", 2), "a…");
    }
}
