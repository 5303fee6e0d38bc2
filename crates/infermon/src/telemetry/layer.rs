//! The `tracing` → OpenTelemetry bridge as infermon configures it.
//!
//! Two things differ from `tracing_opentelemetry::layer()`'s defaults:
//!
//! * Code location, thread, target and busy/idle recording are off. Each costs attributes (and
//!   allocations) on every span — together ≈ 3 µs of a ≈ 8 µs request lifecycle in the
//!   measurements recorded in ARCHITECTURE.md — and says nothing an operator needs.
//! * The tracer is a [`StampingTracer`]: it lets [`InferenceRequest::start_at`] give the request
//!   span an explicit start time, which `tracing` itself has no way to express, and hand over the
//!   span's attributes at creation (one move, instead of one checked insert per attribute on the
//!   started span).
//!
//! [`InferenceRequest::start_at`]: crate::request::InferenceRequest::start_at

use std::cell::RefCell;
use std::time::SystemTime;

use opentelemetry::trace::{SpanBuilder, Tracer};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::SdkTracer;
use tracing_opentelemetry::OpenTelemetryLayer;
use tracing_subscriber::registry::LookupSpan;

/// What the next span built on this thread gets: its start time and extra attributes.
struct NextSpan {
    start: SystemTime,
    attributes: Vec<KeyValue>,
}

thread_local! {
    static NEXT_SPAN: RefCell<Option<NextSpan>> = const { RefCell::new(None) };
}

/// Runs `f` (which starts exactly one span, e.g. `tracing::Span::context()` on a fresh span)
/// so that span starts at `start` with `attributes` added.
///
/// Only a [`StampingTracer`] honours it. Under another tracer the span starts when `tracing`
/// created it (which differs from `start` only when the caller passes a time other than "now"),
/// and the attributes come back to the caller to set on the started span.
pub(crate) fn start_span_with<R>(
    start: SystemTime,
    attributes: Vec<KeyValue>,
    f: impl FnOnce() -> R,
) -> (R, Vec<KeyValue>) {
    NEXT_SPAN.with(|n| *n.borrow_mut() = Some(NextSpan { start, attributes }));
    let r = f();
    // If `f` started no span (disabled span, other tracer), don't leak this to the next one.
    let unused = NEXT_SPAN.with(|n| n.borrow_mut().take());
    (r, unused.map(|n| n.attributes).unwrap_or_default())
}

/// An SDK tracer that applies a start time requested through [`with_start_time`].
#[derive(Clone, Debug)]
pub struct StampingTracer(SdkTracer);

impl StampingTracer {
    pub fn new(tracer: SdkTracer) -> Self {
        Self(tracer)
    }

    /// The wrapped SDK tracer.
    pub fn inner(&self) -> &SdkTracer {
        &self.0
    }
}

impl Tracer for StampingTracer {
    type Span = opentelemetry_sdk::trace::Span;

    fn build_with_context(&self, mut builder: SpanBuilder, parent_cx: &Context) -> Self::Span {
        if let Some(next) = NEXT_SPAN.with(|n| n.borrow_mut().take()) {
            builder.start_time = Some(next.start);
            match &mut builder.attributes {
                // The usual case: no attributes from `tracing` fields; take ours (and their
                // spare capacity) as they are instead of copying them over.
                Some(existing) if existing.is_empty() => *existing = next.attributes,
                Some(existing) => existing.extend(next.attributes),
                None => builder.attributes = Some(next.attributes),
            }
        }
        self.0.build_with_context(builder, parent_cx)
    }
}

/// The `tracing-opentelemetry` layer infermon installs: spans go to `tracer`, with location,
/// thread, target and inactivity recording off. Use it when assembling your own subscriber
/// (tests, or a service that composes its own layers) instead of [`init`](super::init).
pub fn tracing_layer<S>(tracer: SdkTracer) -> OpenTelemetryLayer<S, StampingTracer>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    tracing_opentelemetry::layer()
        .with_tracer(StampingTracer::new(tracer))
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_tracked_inactivity(false)
}
