//! Export-path bookkeeping: a bounded span queue whose drops are counted exactly, exporters
//! that count failures, and one warning per outage instead of one log line per failed export.
//!
//! The SDK's batch span processor already bounds its queue, but keeps its drop count private.
//! [`BoundedSpanProcessor`] sits in front of it and admits a span only while fewer than
//! `capacity` spans are waiting (counted from admission until the exporter takes them), so the
//! SDK's own queue can never overflow and every drop happens, and is counted, here.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::trace::{SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::Resource;

/// Counters of the export path, readable at any time through
/// [`TelemetryGuard::stats`](super::TelemetryGuard::stats) and exported as the
/// `infermon.telemetry.*` self-metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TelemetryStats {
    /// Spans dropped because the export queue was full.
    pub spans_dropped: u64,
    /// Span export calls that failed (after the exporter's own retries).
    pub span_export_failures: u64,
    /// Metric export calls that failed (after the exporter's own retries).
    pub metric_export_failures: u64,
    /// Spans waiting for export right now.
    pub spans_queued: u64,
    /// The most spans ever waiting at once; never above `queue_capacity`.
    pub spans_queued_high_water: u64,
    /// The queue bound.
    pub queue_capacity: u64,
}

/// Shared between the processor, the exporters and the guard.
#[derive(Debug, Default)]
pub(crate) struct Health {
    spans_dropped: AtomicU64,
    span_failures: AtomicU64,
    metric_failures: AtomicU64,
    queued: AtomicU64,
    high_water: AtomicU64,
    capacity: u64,
    /// Set while spans are being dropped; cleared when an export succeeds again.
    dropping: AtomicBool,
    traces: Signal,
    metrics: Signal,
}

/// One signal's outage state: whether we already warned about the current outage.
#[derive(Debug, Default)]
struct Signal {
    failing: AtomicBool,
    failures_this_outage: AtomicU64,
}

impl Health {
    pub(crate) fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            capacity: capacity as u64,
            ..Default::default()
        })
    }

    pub(crate) fn stats(&self) -> TelemetryStats {
        TelemetryStats {
            spans_dropped: self.spans_dropped.load(Ordering::Relaxed),
            span_export_failures: self.span_failures.load(Ordering::Relaxed),
            metric_export_failures: self.metric_failures.load(Ordering::Relaxed),
            spans_queued: self.queued.load(Ordering::Relaxed),
            spans_queued_high_water: self.high_water.load(Ordering::Relaxed),
            queue_capacity: self.capacity,
        }
    }

    /// Admits one span to the queue, or counts it dropped. Returns whether it was admitted.
    fn admit(&self) -> bool {
        let before = self.queued.fetch_add(1, Ordering::AcqRel);
        if before >= self.capacity {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            self.spans_dropped.fetch_add(1, Ordering::Relaxed);
            if !self.dropping.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    capacity = self.capacity,
                    "span export queue is full: new spans are being dropped until exports catch \
                     up (counted in infermon.telemetry.spans.dropped)"
                );
            }
            return false;
        }
        self.high_water.fetch_max(before + 1, Ordering::Relaxed);
        true
    }

    /// `n` spans left the queue for the exporter.
    fn taken(&self, n: usize) {
        // Saturating: spans ended before this processor existed can't be taken, but be safe.
        let _ = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                Some(q.saturating_sub(n as u64))
            });
    }

    fn export_result(&self, signal: SignalKind, endpoint: &str, result: &OTelSdkResult) {
        let (state, failures, name) = match signal {
            SignalKind::Traces => (&self.traces, &self.span_failures, "traces"),
            SignalKind::Metrics => (&self.metrics, &self.metric_failures, "metrics"),
        };
        match result {
            Ok(()) => {
                if state.failing.swap(false, Ordering::Relaxed) {
                    let failed = state.failures_this_outage.swap(0, Ordering::Relaxed);
                    tracing::info!(
                        signal = name,
                        endpoint,
                        failed_exports = failed,
                        "OTLP export recovered"
                    );
                }
                if signal == SignalKind::Traces {
                    self.dropping.store(false, Ordering::Relaxed);
                }
            }
            Err(err) => {
                failures.fetch_add(1, Ordering::Relaxed);
                state.failures_this_outage.fetch_add(1, Ordering::Relaxed);
                if !state.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        signal = name,
                        endpoint,
                        error = %err,
                        "OTLP export failed; the service keeps running, exports are retried with \
                         backoff, the queue stays bounded, and further failures are counted in \
                         infermon.telemetry.export.failures instead of logged"
                    );
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SignalKind {
    Traces,
    Metrics,
}

/// Admits spans to the wrapped (batch) processor only while the queue has room.
#[derive(Debug)]
pub(crate) struct BoundedSpanProcessor<P> {
    inner: P,
    health: Arc<Health>,
}

impl<P: SpanProcessor> BoundedSpanProcessor<P> {
    pub(crate) fn new(inner: P, health: Arc<Health>) -> Self {
        Self { inner, health }
    }
}

impl<P: SpanProcessor> SpanProcessor for BoundedSpanProcessor<P> {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.health.admit() {
            self.inner.on_end(span);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// A span exporter that releases queue slots and counts failed exports.
pub(crate) struct CountingSpanExporter<E> {
    inner: E,
    health: Arc<Health>,
    endpoint: String,
}

impl<E> CountingSpanExporter<E> {
    pub(crate) fn new(inner: E, health: Arc<Health>, endpoint: String) -> Self {
        Self {
            inner,
            health,
            endpoint,
        }
    }
}

impl<E> fmt::Debug for CountingSpanExporter<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CountingSpanExporter")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl<E: SpanExporter> SpanExporter for CountingSpanExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        // The spans have left the queue: their slots are free while this batch is in flight,
        // so memory is bounded by the queue plus one batch.
        self.health.taken(batch.len());
        let result = self.inner.export(batch).await;
        self.health
            .export_result(SignalKind::Traces, &self.endpoint, &result);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// A metric exporter that counts failed exports.
pub(crate) struct CountingMetricExporter<E> {
    inner: E,
    health: Arc<Health>,
    endpoint: String,
}

impl<E> CountingMetricExporter<E> {
    pub(crate) fn new(inner: E, health: Arc<Health>, endpoint: String) -> Self {
        Self {
            inner,
            health,
            endpoint,
        }
    }
}

impl<E> fmt::Debug for CountingMetricExporter<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CountingMetricExporter")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl<E: PushMetricExporter> PushMetricExporter for CountingMetricExporter<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        self.health
            .export_result(SignalKind::Metrics, &self.endpoint, &result);
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_sdk::error::OTelSdkError;

    #[test]
    fn queue_admits_up_to_capacity_then_counts_drops() {
        let h = Health::new(3);
        assert!((0..3).all(|_| h.admit()));
        assert!(!h.admit());
        assert!(!h.admit());
        let s = h.stats();
        assert_eq!(
            (s.spans_queued, s.spans_dropped, s.spans_queued_high_water),
            (3, 2, 3)
        );
        h.taken(2);
        assert!(h.admit());
        assert_eq!(h.stats().spans_queued, 2);
    }

    #[test]
    fn failures_are_counted_per_signal_and_outages_tracked() {
        let h = Health::new(1);
        let err: OTelSdkResult = Err(OTelSdkError::InternalFailure("down".into()));
        h.export_result(SignalKind::Traces, "e", &err);
        h.export_result(SignalKind::Traces, "e", &err);
        h.export_result(SignalKind::Metrics, "e", &err);
        let s = h.stats();
        assert_eq!((s.span_export_failures, s.metric_export_failures), (2, 1));
        assert!(h.traces.failing.load(Ordering::Relaxed));
        h.export_result(SignalKind::Traces, "e", &Ok(()));
        assert!(!h.traces.failing.load(Ordering::Relaxed));
        assert!(h.metrics.failing.load(Ordering::Relaxed));
    }
}
