//! The `tracing` → OpenTelemetry bridge as infermon configures it.
//!
//! Two things differ from `tracing_opentelemetry::layer()`'s defaults:
//!
//! * Code location, thread, target and busy/idle recording are off. Each costs attributes (and
//!   allocations) on every span; on the request path they took the per-request cost from
//!   ≈ 5 µs to ≈ 8 µs (see `docs/benchmarks.md`) and say nothing an operator needs.
//! * The tracer is a [`StampingTracer`]: it lets [`InferenceRequest::start_at`] give the request
//!   span an explicit start time, which `tracing` itself has no way to express.
//!
//! [`InferenceRequest::start_at`]: crate::request::InferenceRequest::start_at

use std::cell::Cell;
use std::time::SystemTime;

use opentelemetry::trace::{SpanBuilder, Tracer};
use opentelemetry::Context;
use opentelemetry_sdk::trace::SdkTracer;
use tracing_opentelemetry::OpenTelemetryLayer;
use tracing_subscriber::registry::LookupSpan;

thread_local! {
    /// Start time for the next span this thread's [`StampingTracer`] builds.
    static NEXT_START: Cell<Option<SystemTime>> = const { Cell::new(None) };
}

/// Runs `f` (which starts exactly one span, e.g. `tracing::Span::context()` on a fresh span)
/// with that span's start time set to `at`.
///
/// Only a [`StampingTracer`] honours it; under another tracer the span starts when `tracing`
/// created it, which differs from `at` only when the caller passes a time other than "now".
pub(crate) fn with_start_time<R>(at: SystemTime, f: impl FnOnce() -> R) -> R {
    NEXT_START.with(|c| c.set(Some(at)));
    let r = f();
    // If `f` started no span (disabled span, other tracer), don't leak the stamp to the next.
    NEXT_START.with(|c| c.set(None));
    r
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
        if let Some(at) = NEXT_START.with(Cell::take) {
            builder.start_time = Some(at);
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
