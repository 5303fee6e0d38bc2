//! [`MetricsLayer`]: the contract's request metrics, derived from `tracing` spans and events
//! (its rules are on the type).

use std::sync::Arc;
use std::time::SystemTime;

use opentelemetry::{KeyValue, StringValue};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::{LookupSpan, SpanRef};
use tracing_subscriber::Layer;

use super::fields::{debug_equals, from_unix_nanos, seconds, Now, Parent, Slot};
use crate::contract::{attr, field, span as names, value};
use crate::exemplars::TraceIds;
use crate::instruments::{InferenceMetrics, Inner, Series};
use crate::request::TARGET as TYPED_TARGET;

/// Derives the contract's request metrics from `tracing` spans and events.
///
/// What it reads (every name from [`contract`](crate::contract)):
///
/// | span / event | fields read | metrics recorded |
/// |---|---|---|
/// | request span `inference_request` | `gen_ai.request.model`, `gen_ai.operation.name` (at creation), `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens`, `gen_ai.response.finish_reasons`, `error.type`, `otel.status_code`, start/end time fields | at close: request duration, `llm.requests`, `llm.request.tokens` (successes), TPOT (successes with > 1 output token), output `llm.tokens` |
/// | `first_token` event (in the request span or below it) | its time field | TTFT, input `llm.tokens` |
/// | `queue` / `prefill` / `decode` span (child of the request span) | start/end time fields; on `prefill`: `llm.prefill.cached_tokens`, `llm.prefill.computed_tokens` | at close: the phase's duration; prefix-cache queries and hits |
///
/// A request span that closes with an `error.type` (or status ERROR) counts as outcome `error`;
/// finish reason `abort` as `aborted`; any other finish reason as `success`; neither as an error
/// of type `dropped`. Every other span, field and event is ignored (and still exported by the
/// bridge). Labels pass through the [`InferenceMetrics`] caps; instruments are bound per
/// (model, operation).
///
/// The typed path records its own metrics. [`InferenceRequest`](crate::request) knows every
/// value the layer would read back out of its spans, so it records the same points (same
/// instruments, same caps, same rules, the same functions) straight into this layer's bound
/// series, found through [`Dispatch::downcast_ref`](tracing::Dispatch::downcast_ref); the layer
/// leaves spans and events with the typed path's target
/// ([`request::TARGET`](crate::request::TARGET)) alone. That saves visiting every field of
/// four spans and an event a second time (with batching the request's end fields, a sixth of a
/// typed request's cost; see docs/benchmarks.md). Consequence: one `MetricsLayer` per
/// subscriber, and a per-layer filter on it does not filter typed requests (filter the request
/// span itself instead).
#[derive(Clone)]
pub struct MetricsLayer {
    metrics: InferenceMetrics,
    /// Where a request span's state is kept (see [`Slot`]): read for the events and phases of
    /// a request, also inside [`InfermonLayer`](super::InfermonLayer).
    request_slot: Slot<RequestState>,
}

impl std::fmt::Debug for MetricsLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsLayer")
            .field("metrics", &self.metrics)
            .finish_non_exhaustive()
    }
}

impl MetricsLayer {
    /// Records into `metrics` (its instruments, bucket sets and label caps).
    pub fn new(metrics: InferenceMetrics) -> Self {
        Self {
            metrics,
            request_slot: |ext| ext.get_mut::<RequestState>(),
        }
    }

    /// Keeps the request spans' state where `request_slot` finds it (see [`Slot`]); the caller
    /// puts it there and ends it.
    pub(super) fn keeping_state_in(mut self, request_slot: Slot<RequestState>) -> Self {
        self.request_slot = request_slot;
        self
    }

    pub(super) fn inner(&self) -> &Inner {
        &self.metrics.inner
    }
}

/// What the layer keeps about a request span until it closes (and what the typed path hands
/// to [`TypedMetrics::request_ended`]).
pub(crate) struct RequestState {
    pub series: Option<Arc<Series>>,
    pub start: SystemTime,
    pub end: Option<SystemTime>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub first_token: Option<SystemTime>,
    pub finish_reason: Option<StringValue>,
    pub error_type: Option<StringValue>,
    pub status_error: bool,
    /// `llm.request.gpu_time`, seconds (0: not reported).
    pub gpu_time: f64,
    /// The request span's ids when it is sampled (from the bridge), for exemplars.
    pub ids: Option<TraceIds>,
}

impl RequestState {
    /// What a phase of this request records with: its series (`None` while its labels are not
    /// yet known) and ids.
    pub(super) fn link(&self) -> RequestLink {
        self.series.clone().map(|series| (series, self.ids))
    }
}

/// A request's series and ids, as its phases keep them (see [`RequestState::link`]).
pub(super) type RequestLink = Option<(Arc<Series>, Option<TraceIds>)>;

/// What the layer keeps about a phase span until it closes (and what the typed path hands to
/// [`TypedMetrics::phase_ended`]).
pub(crate) struct PhaseState {
    pub phase: Phase,
    pub start: SystemTime,
    pub end: Option<SystemTime>,
    pub cached: Option<u64>,
    pub computed: Option<u64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Queue,
    Prefill,
    Decode,
}

impl Phase {
    fn of(name: &str) -> Option<Self> {
        match name {
            names::QUEUE => Some(Phase::Queue),
            names::PREFILL => Some(Phase::Prefill),
            names::DECODE => Some(Phase::Decode),
            _ => None,
        }
    }
}

/// What the layer keeps about a phase span of the macros path: its state, and its request's
/// series and ids, taken when the phase starts (the parent is looked up then anyway), so its end
/// needs no second lookup of the request.
pub(super) struct CountedPhase {
    state: PhaseState,
    /// `None` while the request's labels are not yet known (recorded later): looked up at the
    /// end instead.
    request: RequestLink,
}

/// What the layer keeps about a span it counts, from its creation to its close.
pub(super) enum SpanMetrics {
    Request(RequestState),
    Phase(CountedPhase),
}

impl SpanMetrics {
    /// Reads the span's fields into this state (at creation and on each record).
    pub(super) fn reader<'a>(&'a mut self, inner: &'a Inner) -> Reader<'a> {
        match self {
            SpanMetrics::Request(state) => Reader::Request(RequestVisitor::new(state, inner)),
            SpanMetrics::Phase(phase) => Reader::Phase(PhaseVisitor(&mut phase.state)),
        }
    }
}

/// The spans the layer derives metrics from: a request span and its phase spans.
#[derive(Clone, Copy)]
pub(super) enum CountedSpan {
    Request,
    Phase(Phase),
}

impl CountedSpan {
    /// What the span described by `meta` counts as; `None` for any other span, and for the
    /// typed API's spans (the typed path records its own metrics).
    pub(super) fn of(meta: &Metadata<'_>) -> Option<Self> {
        if meta.target() == TYPED_TARGET {
            return None;
        }
        match meta.name() {
            names::REQUEST => Some(CountedSpan::Request),
            name => Phase::of(name).map(CountedSpan::Phase),
        }
    }
}

/// Reads the request span's fields.
pub(super) struct RequestVisitor<'a> {
    state: &'a mut RequestState,
    inner: &'a Inner,
    model: Option<StringValue>,
    operation: Option<StringValue>,
}

impl<'a> RequestVisitor<'a> {
    fn new(state: &'a mut RequestState, inner: &'a Inner) -> Self {
        Self {
            state,
            inner,
            model: None,
            operation: None,
        }
    }

    /// Binds the request to its (model, operation) series once both are known.
    fn resolve(self) {
        if self.state.series.is_none() {
            if let (Some(model), Some(op)) = (self.model, self.operation) {
                self.state.series = Some(self.inner.series(model, op));
            }
        }
    }
}

impl Visit for RequestVisitor<'_> {
    fn record_str(&mut self, f: &Field, v: &str) {
        match f.name() {
            attr::GEN_AI_RESPONSE_FINISH_REASONS => {
                self.state.finish_reason = Some(self.inner.finish_reasons.get(v));
            }
            attr::ERROR_TYPE => self.state.error_type = Some(self.inner.error_types.get(v)),
            field::OTEL_STATUS_CODE => {
                self.state.status_error = v.eq_ignore_ascii_case(field::STATUS_ERROR);
            }
            attr::GEN_AI_REQUEST_MODEL => self.model = Some(self.inner.models.get(v)),
            attr::GEN_AI_OPERATION_NAME => self.operation = Some(self.inner.operations.get(v)),
            _ => {}
        }
    }

    fn record_f64(&mut self, f: &Field, v: f64) {
        if f.name() == attr::LLM_REQUEST_GPU_TIME && v.is_finite() && v > 0.0 {
            self.state.gpu_time = v;
        }
    }

    fn record_u64(&mut self, f: &Field, v: u64) {
        match f.name() {
            attr::GEN_AI_USAGE_INPUT_TOKENS => self.state.input_tokens = v,
            attr::GEN_AI_USAGE_OUTPUT_TOKENS => self.state.output_tokens = v,
            field::START_TIME => self.state.start = from_unix_nanos(v),
            field::END_TIME => self.state.end = Some(from_unix_nanos(v)),
            _ => {}
        }
    }

    fn record_i64(&mut self, f: &Field, v: i64) {
        if let Ok(v) = u64::try_from(v) {
            self.record_u64(f, v);
        }
    }

    /// Label fields recorded with `%` or `?` instead of as `&str`: formatted, then read as
    /// strings (every other field is ignored without formatting).
    fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
        if matches!(
            f.name(),
            attr::GEN_AI_REQUEST_MODEL
                | attr::GEN_AI_OPERATION_NAME
                | attr::GEN_AI_RESPONSE_FINISH_REASONS
                | attr::ERROR_TYPE
                | field::OTEL_STATUS_CODE
        ) {
            self.record_str(f, format!("{v:?}").trim_matches('"'));
        }
    }
}

/// Reads a counted span's fields into its state; [`finish`](Self::finish) when all are read.
pub(super) enum Reader<'a> {
    Request(RequestVisitor<'a>),
    Phase(PhaseVisitor<'a>),
}

impl Reader<'_> {
    pub(super) fn finish(self) {
        if let Reader::Request(v) = self {
            v.resolve();
        }
    }
}

impl Visit for Reader<'_> {
    fn record_str(&mut self, f: &Field, v: &str) {
        match self {
            Reader::Request(r) => r.record_str(f, v),
            Reader::Phase(p) => p.record_str(f, v),
        }
    }

    fn record_u64(&mut self, f: &Field, v: u64) {
        match self {
            Reader::Request(r) => r.record_u64(f, v),
            Reader::Phase(p) => p.record_u64(f, v),
        }
    }

    fn record_i64(&mut self, f: &Field, v: i64) {
        match self {
            Reader::Request(r) => r.record_i64(f, v),
            Reader::Phase(p) => p.record_i64(f, v),
        }
    }

    fn record_f64(&mut self, f: &Field, v: f64) {
        match self {
            Reader::Request(r) => r.record_f64(f, v),
            Reader::Phase(p) => p.record_f64(f, v),
        }
    }

    fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
        match self {
            Reader::Request(r) => r.record_debug(f, v),
            Reader::Phase(p) => p.record_debug(f, v),
        }
    }
}

/// Reads a phase span's fields.
pub(super) struct PhaseVisitor<'a>(&'a mut PhaseState);

impl Visit for PhaseVisitor<'_> {
    fn record_u64(&mut self, f: &Field, v: u64) {
        match f.name() {
            field::START_TIME => self.0.start = from_unix_nanos(v),
            field::END_TIME => self.0.end = Some(from_unix_nanos(v)),
            attr::LLM_PREFILL_CACHED_TOKENS => self.0.cached = Some(v),
            attr::LLM_PREFILL_COMPUTED_TOKENS => self.0.computed = Some(v),
            _ => {}
        }
    }

    fn record_i64(&mut self, f: &Field, v: i64) {
        if let Ok(v) = u64::try_from(v) {
            self.record_u64(f, v);
        }
    }

    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
}

/// Reads an event: whether it is `first_token`, and its time.
#[derive(Default)]
pub(super) struct EventVisitor {
    first_token: bool,
    at: Option<SystemTime>,
}

impl Visit for EventVisitor {
    fn record_str(&mut self, f: &Field, v: &str) {
        if f.name() == "message" && v == names::EVENT_FIRST_TOKEN {
            self.first_token = true;
        }
    }

    fn record_u64(&mut self, f: &Field, v: u64) {
        if f.name() == field::EVENT_TIME {
            self.at = Some(from_unix_nanos(v));
        }
    }

    fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
        if f.name() == "message" && debug_equals(v, names::EVENT_FIRST_TOKEN) {
            self.first_token = true;
        }
    }
}

/// The layer's work, on spans already looked up (so [`InfermonLayer`](super::InfermonLayer) can
/// share one lookup with the bridge).
impl MetricsLayer {
    /// The new span's state, for the caller to keep until [`span_ended`](Self::span_ended);
    /// `None` for a span the layer does not count. For the layer on its own:
    /// [`InfermonLayer`](super::InfermonLayer) reads the fields once for both layers
    /// ([`new_state`](Self::new_state), [`SpanMetrics::reader`]).
    fn span_created<S>(
        &self,
        parent: &Parent<'_, '_, S>,
        attrs: &Attributes<'_>,
        now: &Now,
    ) -> Option<SpanMetrics>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let counted = CountedSpan::of(attrs.metadata())?;
        let request = || {
            let mut ext = parent.get()?.extensions_mut();
            (self.request_slot)(&mut ext).map(|request| request.link())
        };
        let mut state = Self::new_state(counted, request, now)?;
        let mut reader = state.reader(self.inner());
        attrs.record(&mut reader);
        reader.finish();
        Some(state)
    }

    /// The state of a new counted span before its fields are read ([`SpanMetrics::reader`]).
    /// `request`: for a phase, its parent's link if the parent is a request span (only phases
    /// of a request count).
    pub(super) fn new_state(
        counted: CountedSpan,
        request: impl FnOnce() -> Option<RequestLink>,
        now: &Now,
    ) -> Option<SpanMetrics> {
        Some(match counted {
            CountedSpan::Request => SpanMetrics::Request(RequestState {
                series: None,
                start: now.get(),
                end: None,
                input_tokens: 0,
                output_tokens: 0,
                first_token: None,
                finish_reason: None,
                error_type: None,
                status_error: false,
                gpu_time: 0.0,
                ids: None,
            }),
            CountedSpan::Phase(phase) => SpanMetrics::Phase(CountedPhase {
                request: request()?,
                state: PhaseState {
                    phase,
                    start: now.get(),
                    end: None,
                    cached: None,
                    computed: None,
                },
            }),
        })
    }

    /// Fields recorded on a live span, for the layer on its own (see
    /// [`span_created`](Self::span_created)).
    fn span_recorded<S>(&self, span: &SpanRef<'_, S>, values: &Record<'_>)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let mut ext = span.extensions_mut();
        let reader = match CountedSpan::of(span.metadata()) {
            Some(CountedSpan::Request) => (self.request_slot)(&mut ext)
                .map(|state| Reader::Request(RequestVisitor::new(state, self.inner()))),
            Some(CountedSpan::Phase(_)) => ext
                .get_mut::<CountedPhase>()
                .map(|phase| Reader::Phase(PhaseVisitor(&mut phase.state))),
            None => None,
        };
        if let Some(mut reader) = reader {
            values.record(&mut reader);
            reader.finish();
        }
    }

    /// An event inside `span` (or below it): the `first_token` of the request it belongs to.
    pub(super) fn event_in<S>(&self, span: &SpanRef<'_, S>, event: &Event<'_>, now: &Now)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        if event.metadata().target() == TYPED_TARGET {
            return;
        }
        for span in span.scope() {
            if span.metadata().name() != names::REQUEST {
                continue;
            }
            let mut ext = span.extensions_mut();
            if let Some(state) = (self.request_slot)(&mut ext) {
                let mut v = EventVisitor::default();
                event.record(&mut v);
                Self::event_read(state, &v, now);
            }
            return;
        }
    }

    /// An event of the request whose state is `state` has been read into `v`: records the
    /// time to first token if it is the first `first_token`.
    pub(super) fn event_read(state: &mut RequestState, v: &EventVisitor, now: &Now) {
        if v.first_token && state.first_token.is_none() {
            let at = v.at.unwrap_or_else(|| now.get());
            state.first_token = Some(at);
            if let Some(series) = &state.series {
                let ids = state.ids;
                series
                    .time_to_first_token
                    .record(seconds(state.start, at), || ids);
                series.input_tokens.add(state.input_tokens);
            }
        }
    }

    /// `span` closed: records what its state says.
    pub(super) fn span_ended<S>(&self, span: &SpanRef<'_, S>, state: &mut SpanMetrics, now: &Now)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        match state {
            SpanMetrics::Request(state) => {
                state.end.get_or_insert_with(|| now.get());
                let ids = state.ids;
                end_request(self.inner(), state, &|| ids);
            }
            SpanMetrics::Phase(CountedPhase { state, request }) => {
                state.end.get_or_insert_with(|| now.get());
                if let Some((series, ids)) = request {
                    let ids = *ids;
                    return end_phase(series, state, &|| ids);
                }
                // The request's labels came after the phase started: look it up now.
                let Some(parent) = span.parent() else { return };
                let mut ext = parent.extensions_mut();
                let Some(request) = (self.request_slot)(&mut ext) else {
                    return;
                };
                let Some(series) = &request.series else {
                    return;
                };
                let ids = request.ids;
                end_phase(series, state, &|| ids);
            }
        }
    }
}

impl<S> Layer<S> for MetricsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if CountedSpan::of(attrs.metadata()).is_none() {
            return;
        }
        if let Some(span) = ctx.span(id) {
            // Stacked beside a separate bridge, the layer does not see span ids: no exemplars
            // (`InfermonLayer`, what `init` installs, passes them on).
            match self.span_created(&Parent::of(&span), attrs, &Now::new()) {
                Some(SpanMetrics::Request(state)) => span.extensions_mut().insert(state),
                Some(SpanMetrics::Phase(state)) => span.extensions_mut().insert(state),
                None => {}
            }
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            self.span_recorded(&span, values);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.event_span(event) {
            self.event_in(&span, event, &Now::new());
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let state = match CountedSpan::of(span.metadata()) {
            Some(CountedSpan::Request) => span
                .extensions_mut()
                .remove::<RequestState>()
                .map(SpanMetrics::Request),
            Some(CountedSpan::Phase(_)) => span
                .extensions_mut()
                .remove::<CountedPhase>()
                .map(SpanMetrics::Phase),
            None => None,
        };
        if let Some(mut state) = state {
            self.span_ended(&span, &mut state, &Now::new());
        }
    }
}

/// A request span has closed: its duration, outcome count, token histograms, TPOT and output
/// tokens, from `state`. `ids` gives the request span's ids, asked only for an exemplar.
fn end_request(m: &Inner, state: &RequestState, ids: &dyn Fn() -> Option<TraceIds>) {
    let Some(series) = &state.series else { return };
    let end = state.end.unwrap_or_else(SystemTime::now);
    let duration = seconds(state.start, end);
    let failed = state.error_type.clone().or_else(|| {
        let no_ending = state.finish_reason.is_none();
        (state.status_error || no_ending).then(|| {
            StringValue::from(if state.status_error {
                value::ERROR_OTHER
            } else {
                value::ERROR_DROPPED
            })
        })
    });
    match (failed, &state.finish_reason) {
        (Some(error_type), _) => {
            let [model, op] = series.model_op();
            let error = KeyValue::new(attr::ERROR_TYPE, error_type);
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
        (None, Some(reason)) if reason.as_str() == value::FINISH_ABORT => {
            series.request_duration.record(duration, ids);
            series.aborted.add(1);
        }
        (None, Some(reason)) => {
            series.request_duration.record(duration, ids);
            series.count_success(reason);
            if let Some(first) = state.first_token {
                if state.output_tokens > 1 {
                    let decode = seconds(first, end);
                    series
                        .time_per_output_token
                        .record(decode / (state.output_tokens - 1) as f64, ids);
                }
            }
            series.request_input_tokens.record(state.input_tokens);
            series.request_output_tokens.record(state.output_tokens);
        }
        (None, None) => unreachable!("a request without an ending counts as dropped"),
    }
    if state.output_tokens > 0 {
        series.output_tokens.add(state.output_tokens);
    }
    if state.gpu_time > 0.0 {
        series.gpu_time.record(state.gpu_time);
    }
}

/// A phase span has closed: its duration, and for `prefill` the prefix-cache counts. `ids`
/// gives the request span's ids (exemplars link to the request; its trace shows the phase).
fn end_phase(series: &Series, state: &PhaseState, ids: &dyn Fn() -> Option<TraceIds>) {
    let duration = seconds(state.start, state.end.unwrap_or_else(SystemTime::now));
    match state.phase {
        Phase::Queue => series.queue_duration.record(duration, ids),
        Phase::Prefill => {
            series.prefill_duration.record(duration, ids);
            if let (Some(cached), Some(computed)) = (state.cached, state.computed) {
                series
                    .prefix_cache_queries
                    .add(cached.saturating_add(computed));
                series.prefix_cache_hits.add(cached);
            }
        }
        Phase::Decode => series.decode_duration.record(duration, ids),
    }
}

/// A typed request's metrics, recorded by the typed path itself into the subscriber's
/// [`MetricsLayer`] (see its docs): the same points the layer would derive from
/// the typed path's spans, through the same functions.
#[derive(Debug)]
pub(crate) struct TypedMetrics {
    /// The layer's instruments and caps.
    metrics: InferenceMetrics,
    series: Arc<Series>,
}

impl TypedMetrics {
    /// The instruments and caps of the current subscriber's [`MetricsLayer`], if it has one:
    /// the typed path caps its labels with these (so a request's span and its metric points
    /// carry the same labels, capped once) and records into them.
    pub(crate) fn layer_metrics() -> Option<InferenceMetrics> {
        tracing::dispatcher::get_default(|dispatch| {
            dispatch
                .downcast_ref::<MetricsLayer>()
                .map(|layer| layer.metrics.clone())
        })
    }

    /// The recorder for a typed request labelled `model` and `operation`, both already capped
    /// by `metrics` (from [`layer_metrics`](Self::layer_metrics)).
    pub(crate) fn new(
        metrics: InferenceMetrics,
        model: &StringValue,
        operation: &StringValue,
    ) -> Self {
        let series = metrics.inner.series(model.clone(), operation.clone());
        Self { metrics, series }
    }

    /// The instruments and caps this records into.
    pub(crate) fn metrics(&self) -> &InferenceMetrics {
        &self.metrics
    }

    /// What the layer records when the `first_token` event arrives.
    pub(crate) fn first_token(
        &self,
        ttft: f64,
        input_tokens: u64,
        ids: &dyn Fn() -> Option<TraceIds>,
    ) {
        self.series.time_to_first_token.record(ttft, ids);
        self.series.input_tokens.add(input_tokens);
    }

    /// What the layer records when a phase span closes.
    pub(crate) fn phase_ended(&self, state: &PhaseState, ids: &dyn Fn() -> Option<TraceIds>) {
        end_phase(&self.series, state, ids);
    }

    /// What the layer records when the request span closes (`state.series` is filled in here).
    pub(crate) fn request_ended(
        &self,
        mut state: RequestState,
        ids: &dyn Fn() -> Option<TraceIds>,
    ) {
        state.series = Some(self.series.clone());
        end_request(&self.metrics.inner, &state, ids);
    }
}
