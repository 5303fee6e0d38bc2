//! The simulator's use of the `infermon` instrumentation API: which handles it needs, and a
//! small state machine over the request typestate so the engine can keep every request in one
//! map whatever its phase.

use std::time::SystemTime;

use infermon::instruments::{EngineMetrics, InferenceMetrics};
use infermon::request::{Decoding, InferenceRequest, Prefilling, Queued};
use opentelemetry::metrics::Meter;
use opentelemetry_sdk::trace::SdkTracer;

/// Where the simulator's telemetry goes. Request spans are `tracing` spans (so whatever
/// subscriber the binary installed receives them, e.g. `infermon::telemetry::init`'s); their
/// child spans go through `tracer` when given, else the global tracer provider; metrics go to
/// `meter`.
#[derive(Clone, Debug)]
pub struct SimTelemetry {
    meter: Meter,
    tracer: Option<SdkTracer>,
}

impl SimTelemetry {
    pub fn new(meter: &Meter) -> Self {
        Self {
            meter: meter.clone(),
            tracer: None,
        }
    }

    /// Child spans through this SDK tracer (e.g. `TelemetryGuard::tracer()`, or an in-memory
    /// provider's tracer in tests) instead of the global provider.
    pub fn with_tracer(mut self, tracer: SdkTracer) -> Self {
        self.tracer = Some(tracer);
        self
    }

    /// No metrics are recorded (a no-op meter); spans still follow the `tracing` subscriber.
    pub fn disabled() -> Self {
        let meter = opentelemetry::metrics::MeterProvider::meter(
            &opentelemetry::metrics::noop::NoopMeterProvider::new(),
            "infermon-sim",
        );
        Self::new(&meter)
    }

    pub fn meter(&self) -> &Meter {
        &self.meter
    }

    pub(crate) fn request_metrics(&self) -> InferenceMetrics {
        let builder = InferenceMetrics::builder(&self.meter);
        match &self.tracer {
            Some(tracer) => builder.tracer(tracer.clone()).build(),
            None => builder.build(),
        }
    }

    pub(crate) fn engine_metrics(&self, model: &str) -> EngineMetrics {
        EngineMetrics::new(&self.meter, model)
    }
}

/// One request's telemetry in whichever phase it is. Transitions that do not apply to the
/// current phase are ignored (the engine never makes them; this keeps a logic slip from
/// panicking the engine).
#[derive(Debug)]
pub(crate) enum Lifecycle {
    Queued(InferenceRequest<Queued>),
    Prefilling(InferenceRequest<Prefilling>),
    Decoding(InferenceRequest<Decoding>),
    Ended,
}

impl Lifecycle {
    fn take(&mut self) -> Lifecycle {
        std::mem::replace(self, Lifecycle::Ended)
    }

    pub fn scheduled(&mut self, queue_position: u64, at: SystemTime) {
        *self = match self.take() {
            Lifecycle::Queued(r) => Lifecycle::Prefilling(r.scheduled_at(queue_position, at)),
            other => other,
        };
    }

    pub fn first_token(&mut self, cached_tokens: u64, at: SystemTime) {
        *self = match self.take() {
            Lifecycle::Prefilling(r) => Lifecycle::Decoding(r.first_token_at(cached_tokens, at)),
            other => other,
        };
    }

    pub fn token(&mut self) {
        if let Lifecycle::Decoding(r) = self {
            r.tokens(1);
        }
    }

    pub fn preempted(&mut self, at: SystemTime) {
        match self {
            Lifecycle::Queued(r) => r.preempted_at(at),
            Lifecycle::Prefilling(r) => r.preempted_at(at),
            Lifecycle::Decoding(r) => r.preempted_at(at),
            Lifecycle::Ended => {}
        }
    }

    pub fn resumed(&mut self, at: SystemTime) {
        match self {
            Lifecycle::Queued(r) => r.resumed_at(at),
            Lifecycle::Prefilling(r) => r.resumed_at(at),
            Lifecycle::Decoding(r) => r.resumed_at(at),
            Lifecycle::Ended => {}
        }
    }

    pub fn finish(&mut self, finish_reason: &str, at: SystemTime) {
        if let Lifecycle::Decoding(r) = self.take() {
            r.finish_at(finish_reason, at);
        }
    }

    pub fn fail(&mut self, error_type: &str, at: SystemTime) {
        match self.take() {
            Lifecycle::Queued(r) => r.fail_at(error_type, at),
            Lifecycle::Prefilling(r) => r.fail_at(error_type, at),
            Lifecycle::Decoding(r) => r.fail_at(error_type, at),
            Lifecycle::Ended => {}
        }
    }

    pub fn abort(&mut self, at: SystemTime) {
        match self.take() {
            Lifecycle::Queued(r) => r.abort_at(at),
            Lifecycle::Prefilling(r) => r.abort_at(at),
            Lifecycle::Decoding(r) => r.abort_at(at),
            Lifecycle::Ended => {}
        }
    }
}
