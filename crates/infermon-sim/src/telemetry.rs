//! The simulator's use of the `infermon` instrumentation API: which handles it needs, and the
//! per-request telemetry the engine keeps in its one map of requests.

use std::time::SystemTime;

use infermon::instruments::{EngineMetrics, InferenceMetrics};
use infermon::request::{InferenceRequest, Queued, TrackedRequest};
use opentelemetry::metrics::Meter;

/// Where the simulator's telemetry goes. Request spans and their phases are `tracing` spans, so
/// whatever subscriber the binary installed receives them (e.g. `infermon::telemetry::init`'s,
/// whose bridge exports them and whose metrics layer derives the request metrics from them);
/// engine-state metrics go to `meter`.
#[derive(Clone, Debug)]
pub struct SimTelemetry {
    meter: Meter,
}

impl SimTelemetry {
    pub fn new(meter: &Meter) -> Self {
        Self {
            meter: meter.clone(),
        }
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

    /// `llm.kv_transfer.duration` and `llm.kv_transfer.bytes` (disaggregated decode).
    pub(crate) fn kv_transfer_metrics(&self) -> KvTransferMetrics {
        use infermon::contract::{buckets, metric, metric_spec};
        let spec = |n| metric_spec(n).unwrap_or_else(|| unreachable!("{n} is in the contract"));
        let d = spec(metric::KV_TRANSFER_DURATION);
        let b = spec(metric::KV_TRANSFER_BYTES);
        KvTransferMetrics {
            duration: self
                .meter
                .f64_histogram(d.name)
                .with_unit(d.unit)
                .with_description(d.description)
                .with_boundaries(buckets::PHASE_DURATION.to_vec())
                .build(),
            bytes: self
                .meter
                .u64_counter(b.name)
                .with_unit(b.unit)
                .with_description(b.description)
                .build(),
        }
    }

    /// The label caps the request spans' names go through (the metrics themselves are
    /// derived from the spans by the subscriber's metrics layer).
    pub(crate) fn request_metrics(&self) -> InferenceMetrics {
        InferenceMetrics::new(&self.meter)
    }

    pub(crate) fn engine_metrics(&self, model: &str) -> EngineMetrics {
        EngineMetrics::new(&self.meter, model)
    }
}

/// One request's telemetry in whichever phase it is: the engine's map holds this, and every
/// transition goes to infermon's [`TrackedRequest`], which applies it where it makes sense for
/// the current phase and ignores it where not (a `finish` before the first token ends the
/// request normally instead of recording a spurious `dropped` error).
#[derive(Debug)]
pub(crate) enum Lifecycle {
    /// As admitted (the engine builds this from the handler's typed request).
    Queued(InferenceRequest<Queued>),
    Tracked(TrackedRequest),
    /// Only while converting from `Queued` to `Tracked`.
    Converting,
}

impl Lifecycle {
    fn tracked(&mut self) -> Option<&mut TrackedRequest> {
        if let Lifecycle::Queued(_) = self {
            if let Lifecycle::Queued(r) = std::mem::replace(self, Lifecycle::Converting) {
                *self = Lifecycle::Tracked(r.into_tracked());
            }
        }
        match self {
            Lifecycle::Tracked(r) => Some(r),
            _ => None,
        }
    }

    pub fn scheduled(&mut self, queue_position: u64, at: SystemTime) {
        if let Some(r) = self.tracked() {
            r.scheduled_at(queue_position, at);
        }
    }

    pub fn first_token(&mut self, cached_tokens: u64, at: SystemTime) {
        if let Some(r) = self.tracked() {
            r.first_token_at(cached_tokens, at);
        }
    }

    /// This step's share of engine time for the request.
    pub fn gpu_time(&mut self, seconds: f64) {
        if let Some(r) = self.tracked() {
            r.add_gpu_time(seconds);
        }
    }

    pub fn token(&mut self) {
        if let Some(r) = self.tracked() {
            r.tokens(1);
        }
    }

    pub fn preempted(&mut self, at: SystemTime) {
        if let Some(r) = self.tracked() {
            r.preempted_at(at);
        }
    }

    pub fn resumed(&mut self, at: SystemTime) {
        if let Some(r) = self.tracked() {
            r.resumed_at(at);
        }
    }

    pub fn finish(&mut self, finish_reason: &str, at: SystemTime) {
        if let Some(r) = self.tracked() {
            r.finish_at(finish_reason, at);
        }
    }

    pub fn fail(&mut self, error_type: &str, at: SystemTime) {
        if let Some(r) = self.tracked() {
            r.fail_at(error_type, at);
        }
    }

    pub fn abort(&mut self, at: SystemTime) {
        if let Some(r) = self.tracked() {
            r.abort_at(at);
        }
    }
}

/// The decode side's KV pulls.
#[derive(Clone, Debug)]
pub(crate) struct KvTransferMetrics {
    pub duration: opentelemetry::metrics::Histogram<f64>,
    pub bytes: opentelemetry::metrics::Counter<u64>,
}
