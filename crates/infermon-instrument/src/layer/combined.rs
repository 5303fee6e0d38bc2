//! [`InfermonLayer`]: the bridge and the metrics layer in one `tracing` layer, optionally with a
//! log layer run inside it.

use opentelemetry::trace::Tracer;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Dispatch, Event, Metadata, Subscriber};
use tracing_subscriber::filter::Filtered;
use tracing_subscriber::layer::Context;
use tracing_subscriber::layer::Filter;
use tracing_subscriber::registry::{ExtensionsMut, LookupSpan};
use tracing_subscriber::Layer;

use super::bridge::OtelData;
use super::fields::{Now, Parent};
use super::metrics::{CountedPhase, SpanMetrics};
use super::{MetricsLayer, OtelLayer, RequestState};

/// [`OtelLayer`] and [`MetricsLayer`] as one layer: the same telemetry as the two stacked, with
/// one registry lookup per callback instead of two (each lookup is a few hundred instructions,
/// and a request makes about twenty callbacks; see docs/benchmarks.md). `telemetry::init`
/// installs this, with its fmt layer inside ([`with_log_layer`](Self::with_log_layer)).
pub struct InfermonLayer<S, T: Tracer> {
    bridge: OtelLayer<S, T>,
    metrics: MetricsLayer,
    log: Option<LogLayer<S>>,
}

/// Both layers' state of one span, kept as one extension: one insertion and one removal per
/// span instead of one each per layer (a boxed value and a type-map entry each; 1.1k of the
/// macros path's instructions; docs/benchmarks.md).
struct SpanState<Sp> {
    otel: Option<OtelData<Sp>>,
    metrics: Option<SpanMetrics>,
}

fn otel_slot<'e, Sp: 'static>(ext: &'e mut ExtensionsMut<'_>) -> Option<&'e mut OtelData<Sp>> {
    ext.get_mut::<SpanState<Sp>>()?.otel.as_mut()
}

fn request_slot<'e, Sp: 'static>(ext: &'e mut ExtensionsMut<'_>) -> Option<&'e mut RequestState> {
    match ext.get_mut::<SpanState<Sp>>()?.metrics.as_mut()? {
        SpanMetrics::Request(state) => Some(state),
        SpanMetrics::Phase(_) => None,
    }
}

fn phase_slot<'e, Sp: 'static>(ext: &'e mut ExtensionsMut<'_>) -> Option<&'e mut CountedPhase> {
    match ext.get_mut::<SpanState<Sp>>()?.metrics.as_mut()? {
        SpanMetrics::Phase(state) => Some(state),
        SpanMetrics::Request(_) => None,
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
            metrics: metrics.keeping_state_in(request_slot::<T::Span>, phase_slot::<T::Span>),
            log: None,
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
        self
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
}

impl<S, T> Layer<S> for InfermonLayer<S, T>
where
    S: Subscriber + for<'a> LookupSpan<'a> + 'static,
    T: Tracer + Send + Sync + 'static,
    T::Span: Send + Sync + 'static,
{
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

    /// The bridge and the metrics want every callsite; the log's filter records its own
    /// interest with the registry as it would stacked beside this layer.
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if let Some(log) = self.log() {
            log.register_callsite(metadata);
        }
        Interest::always()
    }

    fn enabled(&self, metadata: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
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
            let (parent, now) = (Parent::of(&span), Now::new());
            let otel = self.bridge.span_created(&parent, attrs, &now);
            let ids = otel.as_ref().and_then(OtelData::ids);
            let metrics = self.metrics.span_created(&parent, attrs, ids, &now);
            drop(parent);
            if otel.is_some() || metrics.is_some() {
                span.extensions_mut().insert(SpanState { otel, metrics });
            }
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(log) = self.log_for(span.metadata()) {
                log.on_record(id, values, ctx.clone());
            }
            self.bridge.span_recorded(&span, values);
            self.metrics.span_recorded(&span, values);
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
        if let Some(span) = ctx.event_span(event) {
            let now = Now::new();
            self.bridge.event_in(&span, event, &now);
            self.metrics.event_in(&span, event, &now);
        }
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(log) = self.log() {
            log.on_enter(id, ctx);
        }
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(log) = self.log() {
            log.on_exit(id, ctx);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(&id) {
            if let Some(log) = self.log_for(span.metadata()) {
                log.on_close(id.clone(), ctx.clone());
            }
            let state = span.extensions_mut().remove::<SpanState<T::Span>>();
            if let Some(SpanState { otel, metrics }) = state {
                let now = Now::new();
                if let Some(otel) = otel {
                    self.bridge.span_ended(otel, &now);
                }
                if let Some(metrics) = metrics {
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
