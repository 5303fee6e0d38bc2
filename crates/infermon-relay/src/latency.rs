//! The latency histograms of the vLLM requests the relay expanded, with exemplars.
//!
//! vLLM's own latency histograms (scraped from its `/metrics`) carry no trace ids, so on the
//! vLLM path a latency panel could not open a trace. The relay sees each finished request's span
//! with its trace id and the phases it rebuilt, so it records those latencies itself, under
//! `infermon.relay.request.*` names (not the contract's: the scraped histograms already count
//! these requests, and requests vLLM emits no span for — client disconnects — would be missing
//! here). Each measurement may become an exemplar pointing at the request span it came from.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use infermon_instrument::cardinality::LabelCap;
use infermon_instrument::contract::relay::metric;
use infermon_instrument::contract::{attr, buckets, metric_spec};
use infermon_instrument::exemplars::{TraceIds, TracedHistogram};
use opentelemetry::metrics::{Histogram, Meter};
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry::KeyValue;

use crate::expand::RequestLatencies;

/// Distinct (model, operation) series; the models come from configuration, so this only guards
/// against an unexpected operation name.
const SERIES_CAP: usize = 64;

/// Records [`RequestLatencies`] into the relay's latency histograms; cheap to clone.
#[derive(Clone)]
pub struct LatencyMetrics(Arc<Inner>);

/// One (model, operation)'s five histograms, in `Inner::histograms` order.
type Series = Arc<[TracedHistogram; 5]>;

struct Inner {
    histograms: [(&'static str, Histogram<f64>); 5],
    labels: LabelCap,
    series: Mutex<HashMap<(String, String), Series>>,
}

impl std::fmt::Debug for LatencyMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyMetrics").finish_non_exhaustive()
    }
}

impl LatencyMetrics {
    /// The five histograms on `meter`, with the contract's units, descriptions and buckets.
    pub fn new(meter: &Meter) -> Self {
        let histogram = |name: &'static str| {
            let spec = metric_spec(name)
                .unwrap_or_else(|| unreachable!("{name} missing from contract::METRICS"));
            let bounds = buckets::of(name)
                .unwrap_or_else(|| unreachable!("{name} has no bucket set in the contract"));
            let h = meter
                .f64_histogram(spec.name)
                .with_unit(spec.unit)
                .with_description(spec.description)
                .with_boundaries(bounds.to_vec())
                .build();
            (name, h)
        };
        Self(Arc::new(Inner {
            histograms: [
                histogram(metric::REQUEST_TIME_TO_FIRST_TOKEN),
                histogram(metric::REQUEST_TIME_PER_OUTPUT_TOKEN),
                histogram(metric::REQUEST_QUEUE_DURATION),
                histogram(metric::REQUEST_PREFILL_DURATION),
                histogram(metric::REQUEST_DECODE_DURATION),
            ],
            labels: LabelCap::new(SERIES_CAP),
            series: Mutex::new(HashMap::new()),
        }))
    }

    /// Records each request's latencies; its request span becomes the exemplar's link.
    pub fn record(&self, requests: &[RequestLatencies]) {
        for r in requests {
            let ids = TraceIds {
                trace_id: TraceId::from_bytes(r.trace_id),
                span_id: SpanId::from_bytes(r.span_id),
            };
            let valid = ids.trace_id != TraceId::INVALID && ids.span_id != SpanId::INVALID;
            let exemplar = || valid.then_some(ids);
            let series = self.series(&r.model, &r.operation);
            let values = [
                r.time_to_first_token,
                r.time_per_output_token,
                r.queue,
                r.prefill,
                r.decode,
            ];
            for (histogram, value) in series.iter().zip(values) {
                if let Some(v) = value {
                    histogram.record(v, exemplar);
                }
            }
        }
    }

    fn series(&self, model: &str, operation: &str) -> Series {
        let inner = &self.0;
        let key = (
            inner.labels.get(model).as_str().to_owned(),
            inner.labels.get(operation).as_str().to_owned(),
        );
        let mut all = inner.series.lock().unwrap_or_else(|e| e.into_inner());
        all.entry(key)
            .or_insert_with_key(|(model, operation)| {
                let attributes = [
                    KeyValue::new(attr::GEN_AI_REQUEST_MODEL, model.clone()),
                    KeyValue::new(attr::GEN_AI_OPERATION_NAME, operation.clone()),
                ];
                Arc::new(inner.histograms.each_ref().map(|(name, h)| {
                    let bounds = buckets::of(name).unwrap_or_default();
                    TracedHistogram::bind(h, name, bounds, &attributes)
                }))
            })
            .clone()
    }
}
