//! [`InfermonLayer`]: the bridge and the metrics layer in one `tracing` layer.

use opentelemetry::trace::Tracer;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use super::{MetricsLayer, OtelLayer};

/// [`OtelLayer`] and [`MetricsLayer`] as one layer: the same telemetry as the two stacked, with
/// one registry lookup per callback instead of two (each lookup is a few hundred instructions,
/// and a request makes about twenty callbacks; see docs/benchmarks.md). `telemetry::init`
/// installs this.
#[derive(Debug)]
pub struct InfermonLayer<S, T> {
    bridge: OtelLayer<S, T>,
    metrics: MetricsLayer,
}

impl<S, T> InfermonLayer<S, T> {
    pub fn new(bridge: OtelLayer<S, T>, metrics: MetricsLayer) -> Self {
        Self { bridge, metrics }
    }
}

impl<S, T> Layer<S> for InfermonLayer<S, T>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    T: Tracer + Send + Sync + 'static,
    T::Span: Send + Sync + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let ids = self.bridge.span_created(&span, attrs);
            self.metrics.span_created(&span, attrs, ids);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            self.bridge.span_recorded(&span, values);
            self.metrics.span_recorded(&span, values);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.event_span(event) {
            self.bridge.event_in(&span, event);
            self.metrics.event_in(&span, event);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(&id) {
            self.bridge.span_closed(&span);
            self.metrics.span_closed(&span);
        }
    }

    /// Answers for the metrics layer, and forwards to the bridge so `context_of` finds span
    /// contexts through this layer too.
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
