//! [`InfermonLayer`]: the bridge and the metrics layer in one `tracing` layer, optionally with a
//! log layer run inside it.

use opentelemetry::trace::Tracer;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Dispatch, Event, Metadata, Subscriber};
use tracing_subscriber::filter::{Filtered, LevelFilter};
use tracing_subscriber::layer::Context;
use tracing_subscriber::layer::Filter;
use tracing_subscriber::registry::{ExtensionsMut, LookupSpan};
use tracing_subscriber::Layer;

use super::bridge::OtelData;
use super::fields::{Now, Parent};
use super::metrics::{self, CountedSpan, SpanMetrics};
use super::{MetricsLayer, OtelLayer, RequestState};
use crate::request::TARGET as TYPED_TARGET;

/// [`OtelLayer`] and [`MetricsLayer`] as one layer: the same telemetry as the two stacked, with
/// one registry lookup per callback instead of two (each lookup is a few hundred instructions,
/// and a request makes about twenty callbacks; see docs/benchmarks.md), and per new span,
/// record and event one look at the state both layers keep and one visit of the fields feeding
/// both. `telemetry::init` installs this, with its fmt layer inside
/// ([`with_log_layer`](Self::with_log_layer)).
pub struct InfermonLayer<S, T: Tracer> {
    bridge: OtelLayer<S, T>,
    metrics: MetricsLayer,
    log: Option<LogLayer<S>>,
    /// Span enters and exits are passed to the log layer (see
    /// [`log_skips_enter_exit`](Self::log_skips_enter_exit)).
    log_enter_exit: bool,
    /// The most verbose level the bridge and the metrics layer use, when known (see
    /// [`with_max_level`](Self::with_max_level)).
    max_level: Option<LevelFilter>,
    /// The most verbose level any part of this layer uses (`max_level` and the log layer's
    /// hint), when both are known: more verbose callsites are disabled.
    hint: Option<LevelFilter>,
}

/// Both layers' state of one span, kept as one extension: one insertion per span instead of
/// one per layer (a boxed value and a type-map entry each; docs/benchmarks.md).
///
/// Filled where the extensions keep it, ended there when the span closes, and dropped with the
/// span's other extensions: the state is large (544 bytes with the SDK's span), and each move
/// of it is a copy (docs/benchmarks.md).
struct SpanState<Sp> {
    otel: Option<OtelData<Sp>>,
    metrics: Option<SpanMetrics>,
}

fn state<'e, Sp: 'static>(ext: &'e mut ExtensionsMut<'_>) -> Option<&'e mut SpanState<Sp>> {
    ext.get_mut::<SpanState<Sp>>()
}

/// Puts a new span's state into its extensions and returns it there, to be filled in place.
fn keep<'e, Sp: Send + Sync + 'static>(
    ext: &'e mut ExtensionsMut<'_>,
    metrics: Option<SpanMetrics>,
) -> Option<&'e mut SpanState<Sp>> {
    ext.insert(SpanState::<Sp> {
        otel: None,
        metrics,
    });
    state(ext)
}

fn otel_slot<'e, Sp: 'static>(ext: &'e mut ExtensionsMut<'_>) -> Option<&'e mut OtelData<Sp>> {
    state(ext)?.otel.as_mut()
}

fn request_slot<'e, Sp: 'static>(ext: &'e mut ExtensionsMut<'_>) -> Option<&'e mut RequestState> {
    match state::<Sp>(ext)?.metrics.as_mut()? {
        SpanMetrics::Request(state) => Some(state),
        SpanMetrics::Phase(_) => None,
    }
}

/// A per-layer-filtered layer run inside [`InfermonLayer`], and the spans its filter is known
/// to reject from their metadata alone.
struct LogLayer<S> {
    layer: Box<dyn Layer<S> + Send + Sync>,
    ignores: fn(&Metadata<'_>) -> bool,
}

impl<S, T: Tracer> std::fmt::Debug for InfermonLayer<S, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InfermonLayer")
            .field("bridge", &self.bridge)
            .field("metrics", &self.metrics)
            .field("log_layer", &self.log.is_some())
            .field("log_enter_exit", &self.log_enter_exit)
            .field("max_level", &self.max_level)
            .finish()
    }
}

impl<S, T> InfermonLayer<S, T>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    T: Tracer + Send + Sync + 'static,
    T::Span: Send + Sync + 'static,
{
    pub fn new(bridge: OtelLayer<S, T>, metrics: MetricsLayer) -> Self {
        Self {
            bridge: bridge.keeping_state_in(otel_slot::<T::Span>),
            metrics: metrics.keeping_state_in(request_slot::<T::Span>),
            log: None,
            log_enter_exit: true,
            max_level: None,
            hint: None,
        }
    }
}

impl<S, T> InfermonLayer<S, T>
where
    S: Subscriber + for<'a> LookupSpan<'a> + 'static,
    T: Tracer,
{
    /// Runs `log` (a layer with its own filter, such as a filtered fmt layer) inside this one,
    /// exactly as if it were stacked beside it, except that it is not called for spans for which
    /// `ignores` is true. `ignores` must only name spans that `log`'s filter rejects by their
    /// metadata (the contract's request spans, for a log that leaves them out).
    ///
    /// Why: a per-layer filter looks the span up in the registry again on every record and close
    /// to learn whether it enabled it. Here the span has already been looked up once for the
    /// bridge and the metrics, so the spans the log leaves out cost it no lookup (1.0k
    /// instructions of a typed request's 30.7k, 1.4k of the macros path's 34.6k;
    /// docs/benchmarks.md).
    ///
    /// What `log` answers to [`Dispatch::downcast_ref`] is not passed on.
    pub fn with_log_layer<L, F>(
        mut self,
        log: Filtered<L, F, S>,
        ignores: fn(&Metadata<'_>) -> bool,
    ) -> Self
    where
        L: Layer<S> + Send + Sync + 'static,
        F: Filter<S> + Send + Sync + 'static,
    {
        self.log = Some(LogLayer {
            layer: Box::new(log),
            ignores,
        });
        self.hint = self.combined_hint();
        self
    }

    /// Stops passing span enters and exits to the log layer (see
    /// [`with_log_layer`](Self::with_log_layer)), for a log layer that does nothing on them: a
    /// fmt layer without span events (`FmtSpan::NONE`, its default) under a filter without
    /// span-scoped directives (an `EnvFilter` directive with `[...]` must see entered spans).
    ///
    /// Why: an instrumented future enters and exits its span on every poll, and passing each on
    /// costs the log's per-layer filter a registry lookup (and an `EnvFilter` a lock) even when
    /// it does nothing: 0.33k instructions per poll of a phase span, 0.49k of a service's own
    /// span, where the registry and this layer need 0.21k (docs/benchmarks.md).
    pub fn log_skips_enter_exit(mut self) -> Self {
        self.log_enter_exit = false;
        self
    }

    /// Declares that neither the bridge nor the metrics layer uses a span or event more verbose
    /// than `level` (the contract's spans and events are INFO; `init`'s bridge exports INFO and
    /// above). The layer then hints `tracing` at the more verbose of `level` and the log
    /// layer's own hint, and `tracing` skips every more verbose callsite inside the macro, at
    /// the cost of one atomic load. Without it (the default) the layer gives no hint and every
    /// `debug!` and `trace!` is dispatched: under an `info` log, 420 instructions per
    /// `debug!` and 1,634 per `debug_span!` entered once, for nothing (docs/benchmarks.md).
    ///
    /// The hint is global: a layer stacked beside this one sees nothing more verbose either, so
    /// set it where this layer's subscriber is the whole subscriber, as `init`'s is. (Where
    /// several subscribers are live, as in tests with scoped defaults, `tracing` takes the most
    /// verbose hint of all; the layer then disables the more verbose callsites itself.) A log
    /// layer without a hint of its own (a filter that cannot bound its levels) leaves the layer
    /// without one.
    pub fn with_max_level(mut self, level: LevelFilter) -> Self {
        self.max_level = Some(level);
        self.hint = self.combined_hint();
        self
    }

    /// The more verbose of `max_level` and the log layer's hint, when both are known.
    fn combined_hint(&self) -> Option<LevelFilter> {
        let own = self.max_level?;
        match &self.log {
            Some(log) => Some(own.max(log.layer.max_level_hint()?)),
            None => Some(own),
        }
    }

    /// Whether the callsite described by `meta` is more verbose than anything this layer uses.
    fn too_verbose(&self, meta: &Metadata<'_>) -> bool {
        self.hint.is_some_and(|hint| *meta.level() > hint)
    }

    /// The log layer, unless it is known to ignore `span`.
    fn log_for(&self, span: &Metadata<'_>) -> Option<&(dyn Layer<S> + Send + Sync)> {
        self.log
            .as_ref()
            .filter(|log| !(log.ignores)(span))
            .map(|log| &*log.layer)
    }

    /// The log layer, for callbacks where this layer has not looked the span up.
    fn log(&self) -> Option<&(dyn Layer<S> + Send + Sync)> {
        self.log.as_ref().map(|log| &*log.layer)
    }

    /// The log layer, unless it has no use for span enters and exits.
    fn log_entering(&self) -> Option<&(dyn Layer<S> + Send + Sync)> {
        self.log
            .as_ref()
            .filter(|_| self.log_enter_exit)
            .map(|log| &*log.layer)
    }
}

impl<S, T> InfermonLayer<S, T>
where
    S: Subscriber + for<'a> LookupSpan<'a> + 'static,
    T: Tracer + Send + Sync + 'static,
    T::Span: Send + Sync + 'static,
{
    /// Both layers' state of a new span, kept in `ext` (its extensions) unless neither layer
    /// keeps any: the parent's state looked up once, the fields visited once for both, and the
    /// state filled where it stays (each move of it is a copy of 544 bytes).
    fn keep_new_state(
        &self,
        parent: &Parent<'_, '_, S>,
        attrs: &Attributes<'_>,
        now: &Now,
        ext: &mut ExtensionsMut<'_>,
    ) {
        let meta = attrs.metadata();
        if meta.target() == TYPED_TARGET {
            // Handed over ready-made; the typed path records its own metrics.
            if let Some(otel) = self.bridge.span_created(parent, attrs, now) {
                if let Some(state) = keep(ext, None) {
                    state.otel = Some(otel);
                }
            }
            return;
        }
        let exported = self.bridge.exports(meta);
        let counted = CountedSpan::of(meta);
        if !exported && counted.is_none() {
            return;
        }
        let (parent_cx, request) = self.parent_state(parent, exported);
        let metrics = counted.and_then(|c| MetricsLayer::new_state(c, || request, now));
        if !exported && metrics.is_none() {
            return;
        }
        let Some(state) = keep(ext, metrics) else {
            return;
        };
        let mut otel_visitor = exported.then(|| OtelLayer::<S, T>::creation_visitor(attrs));
        let mut reader = state
            .metrics
            .as_mut()
            .map(|m| m.reader(self.metrics.inner()));
        attrs.record(&mut Both(otel_visitor.as_mut(), reader.as_mut()));
        if let Some(reader) = reader {
            reader.finish();
        }
        if let Some(v) = otel_visitor {
            // The parent's context, or (a root, or a parent left out of the export) the
            // bridge's search from the parent up.
            let cx = parent_cx.unwrap_or_else(|| self.bridge.parent_context(parent));
            let otel = state
                .otel
                .insert(self.bridge.start_visited(v, meta, &cx, now));
            if let Some(SpanMetrics::Request(request)) = &mut state.metrics {
                request.ids = otel.ids();
            }
        }
    }

    /// What a new span needs from its parent's state, read in one lookup: the parent's
    /// context (when the new span is exported and the parent is), and the parent's link if it
    /// is a request span (for a phase).
    fn parent_state(
        &self,
        parent: &Parent<'_, '_, S>,
        exported: bool,
    ) -> (Option<opentelemetry::Context>, Option<metrics::RequestLink>) {
        let Some(parent) = parent.get() else {
            return (None, None);
        };
        let mut ext = parent.extensions_mut();
        let Some(SpanState { otel, metrics }) = state::<T::Span>(&mut ext) else {
            return (None, None);
        };
        let cx = otel
            .as_mut()
            .filter(|_| exported)
            .map(|data| data.context().clone());
        let request = match metrics {
            Some(SpanMetrics::Request(request)) => Some(request.link()),
            _ => None,
        };
        (cx, request)
    }
}

/// Two visitors fed by one visit of the fields: one pass over the values, and one dynamic
/// call per field, instead of one each per layer.
struct Both<'v, A, B>(Option<&'v mut A>, Option<&'v mut B>);

impl<A: Visit, B: Visit> Visit for Both<'_, A, B> {
    fn record_f64(&mut self, f: &Field, v: f64) {
        if let Some(a) = &mut self.0 {
            a.record_f64(f, v);
        }
        if let Some(b) = &mut self.1 {
            b.record_f64(f, v);
        }
    }

    fn record_i64(&mut self, f: &Field, v: i64) {
        if let Some(a) = &mut self.0 {
            a.record_i64(f, v);
        }
        if let Some(b) = &mut self.1 {
            b.record_i64(f, v);
        }
    }

    fn record_u64(&mut self, f: &Field, v: u64) {
        if let Some(a) = &mut self.0 {
            a.record_u64(f, v);
        }
        if let Some(b) = &mut self.1 {
            b.record_u64(f, v);
        }
    }

    fn record_bool(&mut self, f: &Field, v: bool) {
        if let Some(a) = &mut self.0 {
            a.record_bool(f, v);
        }
        if let Some(b) = &mut self.1 {
            b.record_bool(f, v);
        }
    }

    fn record_str(&mut self, f: &Field, v: &str) {
        if let Some(a) = &mut self.0 {
            a.record_str(f, v);
        }
        if let Some(b) = &mut self.1 {
            b.record_str(f, v);
        }
    }

    fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
        if let Some(a) = &mut self.0 {
            a.record_debug(f, v);
        }
        if let Some(b) = &mut self.1 {
            b.record_debug(f, v);
        }
    }
}

impl<S, T> Layer<S> for InfermonLayer<S, T>
where
    S: Subscriber + for<'a> LookupSpan<'a> + 'static,
    T: Tracer + Send + Sync + 'static,
    T::Span: Send + Sync + 'static,
{
    /// See [`with_max_level`](InfermonLayer::with_max_level).
    fn max_level_hint(&self) -> Option<LevelFilter> {
        self.hint
    }

    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        if let Some(log) = self.log() {
            log.on_register_dispatch(subscriber);
        }
    }

    fn on_layer(&mut self, subscriber: &mut S) {
        // The log's per-layer filter registers its id with the registry here.
        if let Some(log) = &mut self.log {
            log.layer.on_layer(subscriber);
        }
    }

    /// The bridge and the metrics want every callsite up to their level (all of them unless
    /// [`with_max_level`](InfermonLayer::with_max_level) says); the log's filter records its own
    /// interest with the registry as it would stacked beside this layer. A callsite more
    /// verbose than the hint is nobody's: the log is not asked, so its filter records nothing.
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if self.too_verbose(metadata) {
            return Interest::never();
        }
        if let Some(log) = self.log() {
            log.register_callsite(metadata);
        }
        Interest::always()
    }

    fn enabled(&self, metadata: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        if self.too_verbose(metadata) {
            return false;
        }
        // A per-layer filter records its decision and never disables globally.
        if let Some(log) = self.log() {
            log.enabled(metadata, ctx);
        }
        true
    }

    fn event_enabled(&self, event: &Event<'_>, ctx: Context<'_, S>) -> bool {
        if let Some(log) = self.log() {
            log.event_enabled(event, ctx);
        }
        true
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if let Some(log) = self.log() {
            log.on_new_span(attrs, id, ctx.clone());
        }
        if let Some(span) = ctx.span(id) {
            let mut ext = span.extensions_mut();
            self.keep_new_state(&Parent::of(&span), attrs, &Now::new(), &mut ext);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        if let Some(log) = self.log_for(span.metadata()) {
            log.on_record(id, values, ctx.clone());
        }
        let mut ext = span.extensions_mut();
        let Some(SpanState { otel, metrics }) = state::<T::Span>(&mut ext) else {
            return;
        };
        // One visit of the values for both layers.
        let mut reader = metrics.as_mut().map(|m| m.reader(self.metrics.inner()));
        match otel.as_mut().filter(|data| data.is_recording()) {
            Some(data) => data.record(|v| values.record(&mut Both(Some(v), reader.as_mut()))),
            None => {
                if let Some(reader) = reader.as_mut() {
                    values.record(reader);
                }
            }
        }
        if let Some(reader) = reader {
            reader.finish();
        }
    }

    fn on_follows_from(&self, span: &Id, follows: &Id, ctx: Context<'_, S>) {
        if let Some(log) = self.log() {
            log.on_follows_from(span, follows, ctx);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if let Some(log) = self.log() {
            log.on_event(event, ctx.clone());
        }
        let Some(span) = ctx.event_span(event) else {
            return;
        };
        let (meta, now) = (event.metadata(), Now::new());
        if meta.target() == TYPED_TARGET {
            // Handed over ready-made; the typed path records its own metrics.
            return self.bridge.event_in(&span, event, &now);
        }
        let exported = self.bridge.exports(meta);
        let mut ext = span.extensions_mut();
        let mut read_in_span = false;
        if let Some(SpanState { otel, metrics }) = state::<T::Span>(&mut ext) {
            let otel = otel.as_mut().filter(|data| exported && data.is_recording());
            if let Some(SpanMetrics::Request(request)) = metrics {
                // An event of the request span itself (the usual `first_token`): one visit of
                // its fields for both layers.
                let mut seen = metrics::EventVisitor::default();
                match otel {
                    Some(data) => data.add_event(meta, &now, |v| {
                        event.record(&mut Both(Some(v), Some(&mut seen)));
                    }),
                    None => event.record(&mut seen),
                }
                MetricsLayer::event_read(request, &seen, &now);
                read_in_span = true;
            } else if let Some(data) = otel {
                data.add_event(meta, &now, |v| event.record(v));
            }
        }
        drop(ext);
        if !read_in_span {
            // An event deeper down (in a phase, or in a service's own span): the metrics layer
            // looks for its request further up.
            self.metrics.event_in(&span, event, &now);
        }
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(log) = self.log_entering() {
            log.on_enter(id, ctx);
        }
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(log) = self.log_entering() {
            log.on_exit(id, ctx);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(&id) {
            if let Some(log) = self.log_for(span.metadata()) {
                log.on_close(id.clone(), ctx.clone());
            }
            let mut ext = span.extensions_mut();
            if let Some(state) = state::<T::Span>(&mut ext) {
                let now = Now::new();
                if let Some(otel) = &mut state.otel {
                    self.bridge.span_ended(otel, &now);
                }
                if let Some(metrics) = &mut state.metrics {
                    self.metrics.span_ended(&span, metrics, &now);
                }
            }
        }
    }

    fn on_id_change(&self, old: &Id, new: &Id, ctx: Context<'_, S>) {
        if let Some(log) = self.log() {
            log.on_id_change(old, new, ctx);
        }
    }

    /// Answers for the metrics layer, and forwards to the bridge so `context_of` finds span
    /// contexts through this layer too (the bridge reads them through its slot in
    /// [`SpanState`]).
    unsafe fn downcast_raw(&self, id: std::any::TypeId) -> Option<*const ()> {
        if id == std::any::TypeId::of::<Self>() {
            Some(self as *const Self as *const ())
        } else if id == std::any::TypeId::of::<MetricsLayer>() {
            // The typed path finds the metrics layer to record into (see `layer::metrics`).
            Some(&self.metrics as *const MetricsLayer as *const ())
        } else {
            // SAFETY: the bridge upholds `downcast_raw`'s contract for the types it answers.
            unsafe { self.bridge.downcast_raw(id) }
        }
    }
}
