//! Export-path bookkeeping: a bounded span queue whose drops are counted exactly, exporters
//! that count failures, a bounded retry buffer that carries spans over a collector outage, and
//! one warning per outage instead of one log line per failed export.
//!
//! The SDK's batch span processor already bounds its queue, but keeps its drop count private.
//! [`BoundedSpanProcessor`] sits in front of it and admits a span only while fewer than
//! `capacity` spans are waiting (counted from admission until the exporter takes them), so the
//! SDK's own queue can never overflow and every drop happens, and is counted, here.
//!
//! The SDK gives a batch up once the exporter's own retries (about 3 s) fail, so a collector
//! restart would lose every span of the restart. [`CountingSpanExporter`] keeps, while exports
//! fail, up to `capacity` more spans for up to [`RETAIN_FOR`] and sends them, oldest first,
//! once the collector answers again. It copies a batch only while an outage is on: in normal
//! operation a batch goes out as it is, so the batch that meets the start of an outage is the
//! one that is lost (counted), not the ones after it.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// Spans that will never be delivered: the export queue was full, the export that met
    /// the start of an outage failed, or an outage outlasted the retry buffer.
    pub spans_dropped: u64,
    /// Spans kept for a resend while the collector is unreachable, right now.
    pub spans_retained: u64,
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
    retained: AtomicU64,
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
            spans_retained: self.retained.load(Ordering::Relaxed),
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

    /// `n` spans will not be delivered (their export failed, or they aged out of the retry
    /// buffer).
    fn lost(&self, n: usize) {
        self.spans_dropped.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn traces_failing(&self) -> bool {
        self.traces.failing.load(Ordering::Relaxed)
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

/// How long spans wait in the retry buffer for the collector to come back.
pub(crate) const RETAIN_FOR: Duration = Duration::from_secs(60);

/// A span exporter that releases queue slots, counts failed exports and lost spans, and keeps
/// the batches of an outage for a resend.
pub(crate) struct CountingSpanExporter<E> {
    inner: E,
    health: Arc<Health>,
    endpoint: String,
    /// Batches whose export failed during an outage, oldest first. The batch processor calls
    /// `export` one batch at a time, so the buffer is taken out for the length of a call.
    retained: Mutex<RetryBuffer>,
}

/// Failed batches waiting for a resend, bounded in spans and in age.
#[derive(Debug)]
struct RetryBuffer {
    batches: VecDeque<(Instant, Vec<SpanData>)>,
    spans: usize,
    capacity: usize,
}

impl RetryBuffer {
    /// Adds `batch`, then gives up (and returns the count of) the oldest spans past the
    /// capacity or older than [`RETAIN_FOR`].
    fn push(&mut self, batch: Vec<SpanData>, now: Instant) -> usize {
        self.spans += batch.len();
        self.batches.push_back((now, batch));
        let mut lost = 0;
        while let Some((since, front)) = self.batches.front() {
            let too_old = now.duration_since(*since) > RETAIN_FOR;
            // The newest batch stays even if it alone exceeds the capacity: it is what the
            // next resend tries first once the collector is back.
            let too_many = self.spans > self.capacity && self.batches.len() > 1;
            if !(too_old || too_many) {
                break;
            }
            lost += front.len();
            self.spans -= front.len();
            self.batches.pop_front();
        }
        lost
    }

    fn pop_front(&mut self) {
        if let Some((_, b)) = self.batches.pop_front() {
            self.spans -= b.len();
        }
    }
}

impl<E> CountingSpanExporter<E> {
    /// `capacity`: spans the retry buffer holds at most (on top of the queue's own).
    pub(crate) fn new(inner: E, health: Arc<Health>, endpoint: String, capacity: usize) -> Self {
        Self {
            inner,
            health,
            endpoint,
            retained: Mutex::new(RetryBuffer {
                batches: VecDeque::new(),
                spans: 0,
                capacity,
            }),
        }
    }

    fn take_buffer(&self) -> RetryBuffer {
        let mut guard = self.retained.lock().unwrap_or_else(|e| e.into_inner());
        RetryBuffer {
            batches: std::mem::take(&mut guard.batches),
            spans: std::mem::take(&mut guard.spans),
            capacity: guard.capacity,
        }
    }

    fn put_buffer(&self, buffer: RetryBuffer) {
        self.health
            .retained
            .store(buffer.spans as u64, Ordering::Relaxed);
        *self.retained.lock().unwrap_or_else(|e| e.into_inner()) = buffer;
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
        // so memory is bounded by the queue, the retry buffer and one batch.
        self.health.taken(batch.len());
        let mut buffer = self.take_buffer();
        if buffer.batches.is_empty() && !self.health.traces_failing() {
            // Normal operation: no copy. If this is the export that finds the collector gone,
            // its batch is lost; the next ones are kept.
            let n = batch.len();
            let result = self.inner.export(batch).await;
            if result.is_err() {
                self.health.lost(n);
            }
            self.health
                .export_result(SignalKind::Traces, &self.endpoint, &result);
            self.put_buffer(buffer);
            return result;
        }
        // An outage is on (or just over): keep a copy of everything until it is delivered,
        // oldest first, and stop at the first failure rather than wait on every batch.
        self.health.lost(buffer.push(batch, Instant::now()));
        let mut result = Ok(());
        while let Some((_, front)) = buffer.batches.front() {
            let attempt = self.inner.export(front.clone()).await;
            self.health
                .export_result(SignalKind::Traces, &self.endpoint, &attempt);
            if attempt.is_err() {
                result = attempt;
                break;
            }
            buffer.pop_front();
        }
        self.put_buffer(buffer);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        // The batch processor has made its last export call: what is still retained is lost.
        let buffer = self.take_buffer();
        self.health.lost(buffer.spans);
        self.put_buffer(RetryBuffer {
            batches: VecDeque::new(),
            spans: 0,
            capacity: buffer.capacity,
        });
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

    /// An exporter whose collector can be taken down and brought back.
    #[derive(Debug, Clone, Default)]
    struct Collector {
        down: Arc<AtomicBool>,
        delivered: Arc<Mutex<Vec<String>>>,
    }

    impl SpanExporter for Collector {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            if self.down.load(Ordering::Relaxed) {
                return Err(OTelSdkError::InternalFailure("unavailable".into()));
            }
            let names = batch.iter().map(|s| s.name.to_string());
            self.delivered.lock().unwrap().extend(names);
            Ok(())
        }
    }

    /// `n` finished spans named `{prefix}{i}`, as the SDK hands them to an exporter.
    fn spans(prefix: &str, n: usize) -> Vec<SpanData> {
        use opentelemetry::trace::{Tracer as _, TracerProvider as _};
        let memory = opentelemetry_sdk::trace::InMemorySpanExporter::default();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_simple_exporter(memory.clone())
            .build();
        let tracer = provider.tracer("test");
        for i in 0..n {
            drop(tracer.start(format!("{prefix}{i}")));
        }
        memory.get_finished_spans().unwrap()
    }

    fn exporter(capacity: usize) -> (CountingSpanExporter<Collector>, Collector, Arc<Health>) {
        let collector = Collector::default();
        let health = Health::new(capacity);
        let e = CountingSpanExporter::new(collector.clone(), health.clone(), "e".into(), capacity);
        (e, collector, health)
    }

    #[tokio::test]
    async fn an_outage_costs_only_the_batch_that_met_it() {
        let (exporter, collector, health) = exporter(100);
        exporter.export(spans("a", 2)).await.unwrap();
        collector.down.store(true, Ordering::Relaxed);
        assert!(exporter.export(spans("b", 2)).await.is_err());
        assert!(exporter.export(spans("c", 3)).await.is_err());
        assert!(exporter.export(spans("d", 1)).await.is_err());
        let s = health.stats();
        assert_eq!((s.spans_dropped, s.spans_retained), (2, 4));

        collector.down.store(false, Ordering::Relaxed);
        exporter.export(spans("e", 1)).await.unwrap();
        let delivered = collector.delivered.lock().unwrap().clone();
        assert_eq!(delivered, ["a0", "a1", "c0", "c1", "c2", "d0", "e0"]);
        let s = health.stats();
        assert_eq!((s.spans_dropped, s.spans_retained), (2, 0));
        assert!(!health.traces_failing());
        // Back to normal: no copies kept.
        exporter.export(spans("f", 1)).await.unwrap();
        assert_eq!(health.stats().spans_retained, 0);
    }

    #[tokio::test]
    async fn the_retry_buffer_gives_up_its_oldest_spans_past_its_capacity() {
        let (exporter, collector, health) = exporter(4);
        collector.down.store(true, Ordering::Relaxed);
        assert!(exporter.export(spans("lost", 1)).await.is_err());
        for prefix in ["a", "b", "c"] {
            assert!(exporter.export(spans(prefix, 3)).await.is_err());
        }
        // a and b were given up for c (4 spans fit; the newest batch always stays).
        let s = health.stats();
        assert_eq!((s.spans_dropped, s.spans_retained), (1 + 6, 3));
        collector.down.store(false, Ordering::Relaxed);
        exporter.export(spans("d", 1)).await.unwrap();
        assert_eq!(
            *collector.delivered.lock().unwrap(),
            ["c0", "c1", "c2", "d0"]
        );
    }

    #[tokio::test]
    async fn spans_still_retained_at_shutdown_are_counted_lost() {
        let (exporter, collector, health) = exporter(100);
        collector.down.store(true, Ordering::Relaxed);
        let _ = exporter.export(spans("a", 1)).await;
        let _ = exporter.export(spans("b", 2)).await;
        exporter
            .shutdown_with_timeout(Duration::from_secs(1))
            .unwrap();
        let s = health.stats();
        assert_eq!((s.spans_dropped, s.spans_retained), (3, 0));
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
