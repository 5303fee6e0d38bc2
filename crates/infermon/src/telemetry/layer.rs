//! The layers `init` installs, for services that assemble their own subscriber.

use opentelemetry::metrics::Meter;
use opentelemetry_sdk::trace::SdkTracer;
use tracing::Metadata;
use tracing_subscriber::registry::LookupSpan;

use crate::contract::{attr, span as names};
use crate::instruments::InferenceMetrics;
use crate::layer::{MetricsLayer, OtelLayer};
use crate::request::TARGET as REQUEST_TARGET;

/// The bridge `init` installs: `tracing` spans and events to `tracer` (see
/// [`OtelLayer`](crate::layer::OtelLayer) for the rules). Use it when assembling your own
/// subscriber (tests, or a service that composes its own layers) instead of
/// [`init`](super::init); add [`metrics_layer`] beside it for the contract's metrics.
pub fn tracing_layer<S>(tracer: SdkTracer) -> OtelLayer<S, SdkTracer>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    OtelLayer::new(tracer)
}

/// The metrics layer `init` installs: the contract's request metrics on `meter`, derived from
/// the request spans (see [`MetricsLayer`](crate::layer::MetricsLayer)).
pub fn metrics_layer(meter: &Meter) -> MetricsLayer {
    MetricsLayer::new(InferenceMetrics::new(meter))
}

/// Whether the fmt layer should skip `meta`: the contract's request and phase spans, the typed
/// path's events, and the contract's events written with macros (recognised by their
/// `llm.time_to_first_token` / `llm.preemption.count` fields) are telemetry, not logs, and
/// formatting them costs a fifth of a request's instrumentation (see docs/benchmarks.md).
pub(crate) fn is_request_telemetry(meta: &Metadata<'_>) -> bool {
    if meta.is_span() {
        // The typed path's spans carry the same names.
        return names::is_contract_span(meta.name());
    }
    if meta.target() == REQUEST_TARGET {
        return true;
    }
    let fields = meta.fields();
    fields.field(attr::LLM_TTFT).is_some() || fields.field(attr::LLM_PREEMPTION_COUNT).is_some()
}
