//! In-memory telemetry pipeline for tests: spans and metrics land in SDK in-memory exporters.
#![allow(dead_code)] // each test binary uses a different part

pub mod params;
pub mod receiver;

use std::io::Write;
use std::sync::{Arc, Mutex};

use infermon::instruments::{InferenceMetrics, InferenceMetricsBuilder};
use infermon::layer::{InfermonLayer, MetricsLayer};
use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{Key, KeyValue, Value};
use opentelemetry_sdk::metrics::data::{
    AggregatedMetrics, HistogramDataPoint, MetricData, ResourceMetrics,
};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing::Dispatch;
use tracing_subscriber::layer::SubscriberExt as _;

/// The latency histograms of one request (the whole and each phase): the instruments that
/// every finished request records once and that carry its exemplar.
pub const LATENCY_HISTOGRAMS: [&str; 6] = [
    infermon::contract::metric::REQUEST_DURATION,
    infermon::contract::metric::TIME_TO_FIRST_TOKEN,
    infermon::contract::metric::TIME_PER_OUTPUT_TOKEN,
    infermon::contract::metric::QUEUE_DURATION,
    infermon::contract::metric::PREFILL_DURATION,
    infermon::contract::metric::DECODE_DURATION,
];

pub struct Harness {
    pub span_exporter: InMemorySpanExporter,
    pub metric_exporter: InMemoryMetricExporter,
    pub tracer_provider: SdkTracerProvider,
    pub meter_provider: SdkMeterProvider,
    /// The bridge and the metrics layer (as one `InfermonLayer`, as `telemetry::init` installs
    /// them).
    pub dispatch: Dispatch,
    metrics: InferenceMetrics,
}

impl Harness {
    pub fn new() -> Self {
        Self::with(|b| b)
    }

    /// A harness whose metrics layer (and [`metrics`](Self::metrics)) are built by `configure`.
    pub fn with(
        configure: impl FnOnce(InferenceMetricsBuilder<'_>) -> InferenceMetricsBuilder<'_>,
    ) -> Self {
        let span_exporter = InMemorySpanExporter::default();
        let tracer_provider = SdkTracerProvider::builder()
            .with_simple_exporter(span_exporter.clone())
            .build();
        let metric_exporter = InMemoryMetricExporter::default();
        let meter_provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(metric_exporter.clone()).build())
            .build();
        let metrics = configure(InferenceMetrics::builder(&meter_provider.meter("test"))).build();
        // The combined layer `telemetry::init` installs (the simulator's tests stack the two
        // layers separately).
        let subscriber = tracing_subscriber::registry().with(InfermonLayer::new(
            infermon::telemetry::tracing_layer(tracer_provider.tracer("test")),
            MetricsLayer::new(metrics.clone()),
        ));
        Self {
            span_exporter,
            metric_exporter,
            tracer_provider,
            meter_provider,
            dispatch: Dispatch::new(subscriber),
            metrics,
        }
    }

    pub fn meter(&self) -> Meter {
        self.meter_provider.meter("test")
    }

    /// The request instruments (and caps) the harness's metrics layer records into.
    pub fn metrics(&self) -> InferenceMetrics {
        self.metrics.clone()
    }

    /// A dispatch with only the metrics layer (no spans exported).
    pub fn metrics_only_dispatch(&self) -> Dispatch {
        Dispatch::new(tracing_subscriber::registry().with(MetricsLayer::new(self.metrics())))
    }

    /// Runs `f` with this harness's subscriber as the thread's default.
    pub fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        tracing::dispatcher::with_default(&self.dispatch, f)
    }

    pub fn spans(&self) -> Vec<SpanData> {
        self.span_exporter.get_finished_spans().unwrap()
    }

    pub fn span(&self, name: &str) -> SpanData {
        let spans = self.spans();
        let mut matching = spans.iter().filter(|s| s.name == name);
        let span = matching
            .next()
            .unwrap_or_else(|| panic!("no span {name:?} in {:?}", names(&spans)))
            .clone();
        assert!(matching.next().is_none(), "more than one span {name:?}");
        span
    }

    /// The latest cumulative metrics.
    pub fn collect(&self) -> ResourceMetrics {
        self.try_collect().expect("one export after force_flush")
    }

    /// The latest cumulative metrics, or `None` when no instrument had a data point to export.
    pub fn try_collect(&self) -> Option<ResourceMetrics> {
        self.metric_exporter.reset();
        self.meter_provider.force_flush().unwrap();
        self.metric_exporter.get_finished_metrics().unwrap().pop()
    }
}

pub fn names(spans: &[SpanData]) -> Vec<&str> {
    spans.iter().map(|s| s.name.as_ref()).collect()
}

pub fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

pub fn has_attrs(attrs: &mut dyn Iterator<Item = &KeyValue>, want: &[(&str, &str)]) -> bool {
    let attrs: Vec<&KeyValue> = attrs.collect();
    attrs.len() == want.len()
        && want.iter().all(|(k, v)| {
            attrs
                .iter()
                .any(|kv| kv.key == Key::from(k.to_string()) && kv.value.as_str() == *v)
        })
}

pub fn find_metric<'a>(
    rm: &'a ResourceMetrics,
    name: &str,
) -> Option<&'a opentelemetry_sdk::metrics::data::Metric> {
    rm.scope_metrics()
        .flat_map(|sm| sm.metrics())
        .find(|m| m.name() == name)
}

/// Histogram points of an f64 histogram.
pub fn f64_histogram<'a>(rm: &'a ResourceMetrics, name: &str) -> Vec<&'a HistogramDataPoint<f64>> {
    match find_metric(rm, name).map(|m| m.data()) {
        Some(AggregatedMetrics::F64(MetricData::Histogram(h))) => h.data_points().collect(),
        other => panic!("{name}: not an f64 histogram: {other:?}"),
    }
}

pub fn u64_histogram<'a>(rm: &'a ResourceMetrics, name: &str) -> Vec<&'a HistogramDataPoint<u64>> {
    match find_metric(rm, name).map(|m| m.data()) {
        Some(AggregatedMetrics::U64(MetricData::Histogram(h))) => h.data_points().collect(),
        other => panic!("{name}: not a u64 histogram: {other:?}"),
    }
}

/// (attributes as sorted `k=v` strings, value) of each point of a u64 sum or gauge.
pub fn u64_points(rm: &ResourceMetrics, name: &str) -> Vec<(Vec<String>, u64)> {
    fn kvs<'a>(it: impl Iterator<Item = &'a KeyValue>) -> Vec<String> {
        let mut v: Vec<String> = it.map(|kv| format!("{}={}", kv.key, kv.value)).collect();
        v.sort();
        v
    }
    let mut points: Vec<_> = match find_metric(rm, name).map(|m| m.data()) {
        Some(AggregatedMetrics::U64(MetricData::Sum(s))) => s
            .data_points()
            .map(|p| (kvs(p.attributes()), p.value()))
            .collect(),
        Some(AggregatedMetrics::U64(MetricData::Gauge(g))) => g
            .data_points()
            .map(|p| (kvs(p.attributes()), p.value()))
            .collect(),
        other => panic!("{name}: not a u64 sum or gauge: {other:?}"),
    };
    points.sort();
    points
}

pub fn f64_gauge(rm: &ResourceMetrics, name: &str) -> Vec<f64> {
    match find_metric(rm, name).map(|m| m.data()) {
        Some(AggregatedMetrics::F64(MetricData::Gauge(g))) => {
            g.data_points().map(|p| p.value()).collect()
        }
        other => panic!("{name}: not an f64 gauge: {other:?}"),
    }
}

/// Log output captured in memory (a `TelemetryConfig::with_log_writer` sink).
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Lines containing every one of `needles`.
    pub fn lines_with(&self, needles: &[&str]) -> usize {
        self.text()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count()
    }
}
