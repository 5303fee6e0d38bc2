//! [`OtelLayer`]: `tracing` spans and events to an OpenTelemetry API tracer (its rules are on
//! the type).

use std::borrow::Cow;
use std::cell::Cell;
use std::marker::PhantomData;
use std::time::SystemTime;

use opentelemetry::trace::{
    Span as _, SpanBuilder, SpanKind, Status, TraceContextExt as _, Tracer,
};
use opentelemetry::{Array, Context, Key, KeyValue, StringValue, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Dispatch, Event, Metadata, Subscriber};
use tracing_subscriber::layer;
use tracing_subscriber::registry::{LookupSpan, SpanRef};
use tracing_subscriber::Layer;

use super::fields::{attribute_int, from_unix_nanos, Now, Parent, Slot};
use crate::contract::{attr, field, span as names, value};
use crate::exemplars::TraceIds;
use crate::request::TARGET as TYPED_TARGET;

/// Bridges `tracing` spans and events to an OpenTelemetry API tracer (`T`).
///
/// Each `tracing` span becomes one OpenTelemetry span, started when the `tracing` span is
/// created and ended when it closes:
///
/// * name: the `otel.name` field, else the `tracing` name; kind: `otel.kind` (default
///   INTERNAL); status ERROR when `otel.status_code` is `error`, described by
///   `otel.status_description`;
/// * parent: the nearest exported `tracing` ancestor's span; for a root span, the OpenTelemetry
///   context current when it is created (attach a context extracted from `traceparent` around
///   the creation to join the caller's trace);
/// * start/end: `infermon.start_time_unix_nano` given at creation and
///   `infermon.end_time_unix_nano` recorded before close (u64, nanoseconds since the Unix epoch),
///   else the moments of creation and close;
/// * attributes: every other field, as recorded (`u64` as `i64`; `Debug` values formatted);
///   `gen_ai.response.finish_reasons`, recorded as one string, is exported as a one-element
///   string array as the semantic conventions define it;
/// * events: each `tracing` event inside a span becomes a span event named by its message,
///   at `infermon.time_unix_nano` if given, with its other fields as attributes.
///
/// What it leaves out, on purpose: code location, thread, target, busy/idle time (attributes
/// no operator needs, and the bulk of a bridged span's cost).
///
/// The typed path ([`request`](crate::request)) knows each of its spans' name, times, parent
/// and attributes as typed values before it creates the `tracing` span, so it hands them over
/// ready-made and the bridge does not visit that span's fields; a phase emitted whole (its end
/// time known at creation) is ended at once, never stored. The result is the span the rules
/// above would give (`crates/infermon/tests/two_paths.rs` compares them).
///
/// These rules are this crate's documented behaviour, pinned by tests
/// (`crates/infermon/tests/bridge.rs`, `two_paths.rs`), not an accident of a dependency.
pub struct OtelLayer<S, T: Tracer> {
    tracer: T,
    exports: fn(&Metadata<'_>) -> bool,
    get_context: WithContext,
    slot: Slot<OtelData<T::Span>>,
    _subscriber: PhantomData<fn(S)>,
}

impl<S, T: Tracer> std::fmt::Debug for OtelLayer<S, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtelLayer").finish_non_exhaustive()
    }
}

/// Reached through [`Dispatch::downcast_ref`] by [`context_of`]: reads a span's context out of
/// the subscriber the layer is part of.
struct WithContext(fn(&Dispatch, &Id) -> Option<Context>);

/// The OpenTelemetry context of `span` (its span context, to parent or
/// [`inject`](crate::propagation::inject_context) into downstream calls). An empty context when
/// the span is disabled or the current subscriber has no [`OtelLayer`].
pub fn context_of(span: &tracing::Span) -> Context {
    span.with_subscriber(|(id, dispatch)| {
        dispatch
            .downcast_ref::<WithContext>()
            .and_then(|get| (get.0)(dispatch, id))
    })
    .flatten()
    .unwrap_or_default()
}

/// A span of the typed path as the bridge would build it from its fields; see
/// [`create_prepared`].
pub(crate) struct PreparedSpan {
    pub name: Cow<'static, str>,
    pub kind: SpanKind,
    pub start: SystemTime,
    /// Known at creation: the span is ended at once (a phase emitted whole).
    pub end: Option<SystemTime>,
    pub attributes: Vec<KeyValue>,
    /// The parent's context when the caller has it (a phase: its request's), else the bridge
    /// finds it as for any span.
    pub parent: Option<Context>,
}

/// A typed event, as the bridge would export it; see [`event_prepared`].
pub(crate) struct PreparedEvent {
    pub name: &'static str,
    pub at: SystemTime,
    pub attributes: Vec<KeyValue>,
}

/// What the typed path hands over for the callback it is about to cause.
enum Prepared {
    Span(PreparedSpan),
    Event(PreparedEvent),
}

thread_local! {
    /// The typed path's span or event on its way to the bridge: set just before the
    /// `tracing` call, taken by the bridge in the callback (which runs synchronously inside the
    /// call, on this thread) for a span or event of the typed path's target.
    static PREPARED: Cell<Option<Prepared>> = const { Cell::new(None) };
    /// The context of the span the bridge just started from a [`PreparedSpan`] that stays open,
    /// for the typed path to keep (its phases' parent, exemplars, `context()`).
    static STARTED: Cell<Option<Context>> = const { Cell::new(None) };
}

/// Runs `emit` (one `tracing` call of the typed path) with `prepared` handed to the bridge;
/// whatever the bridge did not take (none installed, span disabled or not exported) is dropped.
fn handing_over<R>(prepared: Prepared, emit: impl FnOnce() -> R) -> R {
    PREPARED.with(|p| p.set(Some(prepared)));
    let r = emit();
    drop(PREPARED.with(Cell::take));
    r
}

/// What the typed path handed over, if `meta` is of its target.
fn take_prepared(meta: &Metadata<'_>) -> Option<Prepared> {
    if meta.target() == TYPED_TARGET {
        PREPARED.with(Cell::take)
    } else {
        None
    }
}

/// The span the typed path handed over, if `meta` is of its target.
fn take_prepared_span(meta: &Metadata<'_>) -> Option<PreparedSpan> {
    match take_prepared(meta)? {
        Prepared::Span(span) => Some(span),
        Prepared::Event(_) => None,
    }
}

/// Creates a span of the typed path (`create` must make one of [`TYPED_TARGET`]) with
/// `prepared` handed to the bridge, so it skips visiting the span's fields. Returns the span and,
/// when the bridge started it and it stays open, its OpenTelemetry context. Without a bridge
/// (or with the span disabled) the span is created as usual.
pub(crate) fn create_prepared(
    prepared: PreparedSpan,
    create: impl FnOnce() -> tracing::Span,
) -> (tracing::Span, Option<Context>) {
    let span = handing_over(Prepared::Span(prepared), create);
    (span, STARTED.with(Cell::take))
}

/// Emits a typed event (`emit` does) with `prepared` handed to the bridge.
pub(crate) fn event_prepared(prepared: PreparedEvent, emit: impl FnOnce()) {
    handing_over(Prepared::Event(prepared), emit);
}

/// What the layer keeps per span: the OpenTelemetry span until it ends.
pub(super) struct OtelData<Sp> {
    span: Sp,
    /// A context holding this span's span context, made on first use (children, `context_of`).
    cx: Option<Context>,
    end: Option<SystemTime>,
    status: Option<Status>,
}

impl<Sp: opentelemetry::trace::Span> OtelData<Sp> {
    /// The span's ids when it is sampled (for exemplars).
    pub(super) fn ids(&self) -> Option<TraceIds> {
        TraceIds::of_sampled(self.span.span_context())
    }

    /// A context holding this span's span context (to parent children).
    pub(super) fn context(&mut self) -> &Context {
        let span = &self.span;
        self.cx.get_or_insert_with(|| {
            Context::new().with_remote_span_context(span.span_context().clone())
        })
    }

    /// Whether the span is recording (sampled): an unsampled span keeps no attributes or
    /// events, so there is nothing to gather for it.
    pub(super) fn is_recording(&self) -> bool {
        self.span.is_recording()
    }

    /// Records fields on the live span: `visit` passes the bridge's visitor over them (alone,
    /// or beside the metrics layer's in one visit). Each attribute goes straight onto the span,
    /// no vector in between.
    pub(super) fn record(&mut self, visit: impl FnOnce(&mut SpanVisitor<'_, Sp>)) {
        let (name, end, status, description) = {
            let mut v = SpanVisitor::new(AttributeSink::Span(&mut self.span));
            visit(&mut v);
            (
                v.name.take(),
                v.end,
                v.status(),
                v.status_description.take(),
            )
        };
        if let Some(name) = name {
            self.span.update_name(name);
        }
        if end.is_some() {
            self.end = end;
        }
        if let Some(status) = status {
            self.status = Some(status);
        } else if let Some(description) = description {
            // The description alone, after the code: keep the code, take the description.
            if let Some(Status::Error { .. }) = self.status {
                self.status = Some(Status::error(description));
            }
        }
    }

    /// Adds the event described by `meta` to the span: `visit` passes the bridge's visitor
    /// over its fields (alone, or beside the metrics layer's in one visit).
    pub(super) fn add_event(
        &mut self,
        meta: &'static Metadata<'static>,
        now: &Now,
        visit: impl FnOnce(&mut EventVisitor),
    ) {
        let mut v = EventVisitor {
            name: None,
            at: None,
            // Sized once: the message and time fields take no slot, so this is room to spare.
            attributes: Vec::with_capacity(meta.fields().len()),
        };
        visit(&mut v);
        let name = v.name.unwrap_or(Cow::Borrowed(meta.name()));
        self.span
            .add_event_with_timestamp(name, v.at.unwrap_or_else(|| now.get()), v.attributes);
    }
}

impl<S, T> OtelLayer<S, T>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    T: Tracer + Send + Sync + 'static,
    T::Span: Send + Sync + 'static,
{
    /// Spans and events go to `tracer`.
    pub fn new(tracer: T) -> Self {
        Self {
            tracer,
            exports: |_| true,
            get_context: WithContext(Self::get_context),
            slot: |ext| ext.get_mut::<OtelData<T::Span>>(),
            _subscriber: PhantomData,
        }
    }

    /// Keeps the layer's per-span state where `slot` finds it (see [`Slot`]); the caller
    /// inserts and removes it.
    pub(super) fn keeping_state_in(mut self, slot: Slot<OtelData<T::Span>>) -> Self {
        self.slot = slot;
        self
    }

    /// Exports only the spans and events for which `exports` is true; a span left out is
    /// skipped in the exported tree (its children hang under its nearest exported ancestor).
    ///
    /// Prefer this to wrapping the layer in a per-layer filter (`Layer::with_filter`): the
    /// decision is made once per span here, where a per-layer filter looks the span up again
    /// on every record, event and close — about a tenth of a request's cost.
    pub fn exporting_only(mut self, exports: fn(&Metadata<'_>) -> bool) -> Self {
        self.exports = exports;
        self
    }

    fn get_context(dispatch: &Dispatch, id: &Id) -> Option<Context> {
        let layer = dispatch.downcast_ref::<Self>()?;
        let subscriber = dispatch.downcast_ref::<S>()?;
        layer.context_in(&subscriber.span(id)?)
    }
}

/// The layer's work, on a span already looked up (so [`InfermonLayer`](super::InfermonLayer)
/// can share one lookup with the metrics layer).
impl<S, T> OtelLayer<S, T>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    T: Tracer + Send + Sync + 'static,
    T::Span: Send + Sync + 'static,
{
    /// The new span's state, for the caller to keep until [`span_ended`](Self::span_ended):
    /// `None` when it is not exported, or a typed span already ended. `parent`: the span's
    /// parent, looked up at most once for both layers.
    pub(super) fn span_created(
        &self,
        parent: &Parent<'_, '_, S>,
        attrs: &Attributes<'_>,
        now: &Now,
    ) -> Option<OtelData<T::Span>> {
        let meta = attrs.metadata();
        if !self.exports(meta) {
            return None;
        }
        if let Some(prepared) = take_prepared_span(meta) {
            return self.start_prepared(parent, prepared);
        }
        let mut v = Self::creation_visitor(attrs);
        attrs.record(&mut v);
        Some(self.start_visited(v, meta, &self.parent_context(parent), now))
    }

    /// Whether the span or event described by `meta` is exported.
    pub(super) fn exports(&self, meta: &Metadata<'_>) -> bool {
        (self.exports)(meta)
    }

    /// The visitor that gathers a new span's fields, for [`start_visited`](Self::start_visited).
    pub(super) fn creation_visitor(attrs: &Attributes<'_>) -> SpanVisitor<'static, T::Span> {
        SpanVisitor::new(AttributeSink::Vec(Vec::with_capacity(
            attrs.fields().len().min(MAX_INITIAL_ATTRIBUTES),
        )))
    }

    /// Starts the OpenTelemetry span of the new span described by `meta`, whose fields `v` has
    /// visited, under `parent_cx` (from [`parent_context`](Self::parent_context), or the
    /// parent's own when the caller already has it).
    pub(super) fn start_visited(
        &self,
        mut v: SpanVisitor<'_, T::Span>,
        meta: &'static Metadata<'static>,
        parent_cx: &Context,
        now: &Now,
    ) -> OtelData<T::Span> {
        let mut builder =
            SpanBuilder::from_name(v.name.take().unwrap_or(Cow::Borrowed(meta.name())));
        builder.span_kind = Some(v.kind.clone().unwrap_or(SpanKind::Internal));
        builder.start_time = Some(v.start.unwrap_or_else(|| now.get()));
        let status = v.status();
        if let AttributeSink::Vec(attributes) = v.attributes {
            builder.attributes = Some(attributes);
        }
        OtelData {
            span: self.tracer.build_with_context(builder, parent_cx),
            cx: None,
            end: v.end,
            status,
        }
    }

    /// The context of the nearest exported ancestor (from `parent` up), else (a root) the
    /// current OpenTelemetry context. Walked with `parent()` rather than `scope()`, which would
    /// look the new span itself up in the registry first.
    pub(super) fn parent_context(&self, parent: &Parent<'_, '_, S>) -> Context {
        let Some(first) = parent.get() else {
            return Context::current();
        };
        if let Some(cx) = self.context_in(first) {
            return cx;
        }
        let mut ancestor = first.parent();
        while let Some(a) = ancestor {
            if let Some(cx) = self.context_in(&a) {
                return cx;
            }
            ancestor = a.parent();
        }
        Context::current()
    }

    /// The context of `span` if it is exported.
    fn context_in(&self, span: &SpanRef<'_, S>) -> Option<Context> {
        (self.slot)(&mut span.extensions_mut()).map(|d| d.context().clone())
    }

    /// A typed span, from what the typed path prepared (see [`create_prepared`]). A span
    /// ended at creation is not kept; nothing can be its child.
    fn start_prepared(
        &self,
        parent: &Parent<'_, '_, S>,
        p: PreparedSpan,
    ) -> Option<OtelData<T::Span>> {
        let parent_cx = p.parent.unwrap_or_else(|| self.parent_context(parent));
        let mut builder = SpanBuilder::from_name(p.name);
        builder.span_kind = Some(p.kind);
        builder.start_time = Some(p.start);
        builder.attributes = Some(p.attributes);
        let mut otel_span = self.tracer.build_with_context(builder, &parent_cx);
        if let Some(end) = p.end {
            otel_span.end_with_timestamp(end);
            return None;
        }
        let cx = Context::new().with_remote_span_context(otel_span.span_context().clone());
        STARTED.with(|s| s.set(Some(cx.clone())));
        Some(OtelData {
            span: otel_span,
            cx: Some(cx),
            end: None,
            status: None,
        })
    }

    /// Fields recorded on a live span, for the layer on its own
    /// ([`InfermonLayer`](super::InfermonLayer) visits them once for both layers through
    /// [`OtelData::record`]).
    fn span_recorded(&self, span: &SpanRef<'_, S>, values: &Record<'_>) {
        self.if_recording(span, |data| data.record(|v| values.record(v)));
    }

    pub(super) fn event_in(&self, span: &SpanRef<'_, S>, event: &Event<'_>, now: &Now) {
        let meta = event.metadata();
        if !self.exports(meta) {
            return;
        }
        if let Some(Prepared::Event(p)) = take_prepared(meta) {
            return self.if_recording(span, |data| {
                data.span
                    .add_event_with_timestamp(Cow::Borrowed(p.name), p.at, p.attributes);
            });
        }
        self.if_recording(span, |data| data.add_event(meta, now, |v| event.record(v)));
    }

    /// Runs `f` on the span's OpenTelemetry data when it has some (it is exported) and its span
    /// is recording (see [`OtelData::is_recording`]).
    fn if_recording(&self, span: &SpanRef<'_, S>, f: impl FnOnce(&mut OtelData<T::Span>)) {
        let mut ext = span.extensions_mut();
        if let Some(data) = (self.slot)(&mut ext) {
            if data.is_recording() {
                f(data);
            }
        }
    }
    /// The span closed: ends its OpenTelemetry span.
    pub(super) fn span_ended(&self, data: &mut OtelData<T::Span>, now: &Now) {
        if let Some(status) = data.status.take() {
            data.span.set_status(status);
        }
        data.span
            .end_with_timestamp(data.end.unwrap_or_else(|| now.get()));
    }
}

impl<S, T> Layer<S> for OtelLayer<S, T>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    T: Tracer + Send + Sync + 'static,
    T::Span: Send + Sync + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: layer::Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(data) = self.span_created(&Parent::of(&span), attrs, &Now::new()) {
                span.extensions_mut().insert(data);
            }
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: layer::Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            self.span_recorded(&span, values);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: layer::Context<'_, S>) {
        if let Some(span) = ctx.event_span(event) {
            self.event_in(&span, event, &Now::new());
        }
    }

    fn on_close(&self, id: Id, ctx: layer::Context<'_, S>) {
        if let Some(span) = ctx.span(&id) {
            let data = span.extensions_mut().remove::<OtelData<T::Span>>();
            if let Some(mut data) = data {
                self.span_ended(&mut data, &Now::new());
            }
        }
    }

    /// Lets [`context_of`] find [`WithContext`] through the subscriber.
    unsafe fn downcast_raw(&self, id: std::any::TypeId) -> Option<*const ()> {
        if id == std::any::TypeId::of::<Self>() {
            Some(self as *const Self as *const ())
        } else if id == std::any::TypeId::of::<WithContext>() {
            Some(&self.get_context as *const WithContext as *const ())
        } else {
            None
        }
    }
}

/// Collects a span's fields: the `otel.*` and time fields steer the span, the rest become
/// attributes.
pub(super) struct SpanVisitor<'a, Sp> {
    name: Option<Cow<'static, str>>,
    kind: Option<SpanKind>,
    start: Option<SystemTime>,
    end: Option<SystemTime>,
    status_code: Option<bool>,
    status_description: Option<String>,
    attributes: AttributeSink<'a, Sp>,
}

/// Room for attributes reserved when a span is created: one per declared field, but at most
/// this many. A request span declares 23 fields, most of which stay empty or steer the span;
/// 16 attributes (under a kilobyte) cover a request's creation and end fields and keep the allocation
/// small enough for the allocator's fast path (glibc's per-thread cache serves up to 1,032
/// bytes): 0.75k instructions less per typed request (docs/benchmarks.md). A span with more
/// attributes grows its vector.
const MAX_INITIAL_ATTRIBUTES: usize = 16;

/// Where a visited field's attribute goes: the new span's builder, or (a record on a live span)
/// the span itself.
enum AttributeSink<'a, Sp> {
    Vec(Vec<KeyValue>),
    Span(&'a mut Sp),
}

impl<'a, Sp: opentelemetry::trace::Span> SpanVisitor<'a, Sp> {
    /// A visitor that has seen no field yet, sending attributes to `attributes`.
    fn new(attributes: AttributeSink<'a, Sp>) -> Self {
        Self {
            name: None,
            kind: None,
            start: None,
            end: None,
            status_code: None,
            status_description: None,
            attributes,
        }
    }

    /// The status the `otel.status_*` fields ask for, if any.
    fn status(&mut self) -> Option<Status> {
        match self.status_code? {
            true => Some(Status::error(
                self.status_description.take().unwrap_or_default(),
            )),
            false => Some(Status::Ok),
        }
    }

    fn attribute(&mut self, f: &Field, value: Value) {
        let kv = KeyValue::new(Key::from_static_str(f.name()), value);
        match &mut self.attributes {
            AttributeSink::Vec(attributes) => attributes.push(kv),
            AttributeSink::Span(span) => span.set_attribute(kv),
        }
    }
}

/// Whether `name` may be a field that steers the span rather than an attribute: every such
/// field starts with `otel.` or `infermon.`. Checked first so that the attributes (nearly every
/// field) skip the comparisons with each control field's name.
fn is_control(name: &str) -> bool {
    name.starts_with("otel.") || name.starts_with("infermon.")
}

/// Contract values that arrive as span attributes on every request. Exported borrowed, as
/// `&'static str`, instead of copied into a new allocation each time.
const STATIC_VALUES: [&str; 8] = [
    value::OPERATION_CHAT,
    value::OPERATION_TEXT_COMPLETION,
    value::PROVIDER_SIMULATOR,
    value::PROVIDER_VLLM,
    value::FINISH_STOP,
    value::FINISH_LENGTH,
    value::FINISH_ABORT,
    value::FINISH_ERROR,
];

/// `v` as an attribute string: borrowed if it is one of [`STATIC_VALUES`], else copied.
pub(crate) fn string_value(v: &str) -> StringValue {
    match STATIC_VALUES.iter().find(|s| **s == v) {
        Some(s) => StringValue::from(*s),
        None => StringValue::from(v.to_owned()),
    }
}

impl<Sp: opentelemetry::trace::Span> Visit for SpanVisitor<'_, Sp> {
    fn record_str(&mut self, f: &Field, v: &str) {
        let name = f.name();
        if !is_control(name) {
            let value = if name == attr::GEN_AI_RESPONSE_FINISH_REASONS {
                Value::Array(Array::String(vec![string_value(v)]))
            } else {
                Value::String(string_value(v))
            };
            return self.attribute(f, value);
        }
        match name {
            field::OTEL_NAME => self.name = Some(Cow::Owned(v.to_owned())),
            field::OTEL_KIND => self.kind = span_kind(v),
            field::OTEL_STATUS_CODE => {
                self.status_code = match v.to_ascii_lowercase().as_str() {
                    "error" => Some(true),
                    "ok" => Some(false),
                    _ => None,
                };
            }
            field::OTEL_STATUS_DESCRIPTION => self.status_description = Some(v.to_owned()),
            _ => self.attribute(f, Value::String(string_value(v))),
        }
    }

    fn record_u64(&mut self, f: &Field, v: u64) {
        let name = f.name();
        if is_control(name) {
            match name {
                field::START_TIME => return self.start = Some(from_unix_nanos(v)),
                field::END_TIME => return self.end = Some(from_unix_nanos(v)),
                _ => {}
            }
        }
        self.attribute(f, Value::I64(attribute_int(v)));
    }

    fn record_i64(&mut self, f: &Field, v: i64) {
        self.attribute(f, Value::I64(v));
    }

    fn record_f64(&mut self, f: &Field, v: f64) {
        self.attribute(f, Value::F64(v));
    }

    fn record_bool(&mut self, f: &Field, v: bool) {
        self.attribute(f, Value::Bool(v));
    }

    fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
        match f.name() {
            field::OTEL_NAME
            | field::OTEL_KIND
            | field::OTEL_STATUS_CODE
            | field::OTEL_STATUS_DESCRIPTION => self.record_str(f, &format!("{v:?}")),
            _ => self.attribute(f, Value::from(format!("{v:?}"))),
        }
    }
}

fn span_kind(v: &str) -> Option<SpanKind> {
    Some(match v {
        "server" | "SERVER" => SpanKind::Server,
        "client" | "CLIENT" => SpanKind::Client,
        "producer" | "PRODUCER" => SpanKind::Producer,
        "consumer" | "CONSUMER" => SpanKind::Consumer,
        "internal" | "INTERNAL" => SpanKind::Internal,
        _ => return None,
    })
}

/// Collects an event's fields: the message names it, the time field dates it.
pub(super) struct EventVisitor {
    name: Option<Cow<'static, str>>,
    at: Option<SystemTime>,
    attributes: Vec<KeyValue>,
}

/// The contract's event names, so a contract event's name is borrowed, not formatted.
const KNOWN_EVENTS: [&str; 3] = [
    names::EVENT_FIRST_TOKEN,
    names::EVENT_PREEMPTED,
    names::EVENT_RESUMED,
];

impl Visit for EventVisitor {
    fn record_str(&mut self, f: &Field, v: &str) {
        if f.name() == "message" {
            self.name = Some(match KNOWN_EVENTS.iter().find(|k| **k == v) {
                Some(known) => Cow::Borrowed(*known),
                None => Cow::Owned(v.to_owned()),
            });
        } else {
            self.attributes
                .push(KeyValue::new(Key::from_static_str(f.name()), v.to_owned()));
        }
    }

    fn record_u64(&mut self, f: &Field, v: u64) {
        if f.name() == field::EVENT_TIME {
            self.at = Some(from_unix_nanos(v));
        } else {
            self.record_i64(f, attribute_int(v));
        }
    }

    fn record_i64(&mut self, f: &Field, v: i64) {
        self.attributes
            .push(KeyValue::new(Key::from_static_str(f.name()), v));
    }

    fn record_f64(&mut self, f: &Field, v: f64) {
        self.attributes
            .push(KeyValue::new(Key::from_static_str(f.name()), v));
    }

    fn record_bool(&mut self, f: &Field, v: bool) {
        self.attributes
            .push(KeyValue::new(Key::from_static_str(f.name()), v));
    }

    fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
        if f.name() == "message" {
            let known = KNOWN_EVENTS
                .iter()
                .find(|k| super::fields::debug_equals(v, k));
            self.name = Some(match known {
                Some(k) => Cow::Borrowed(*k),
                None => Cow::Owned(format!("{v:?}")),
            });
        } else {
            self.attributes.push(KeyValue::new(
                Key::from_static_str(f.name()),
                format!("{v:?}"),
            ));
        }
    }
}
