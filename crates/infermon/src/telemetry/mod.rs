//! Telemetry bootstrap: one [`init`] call sets up logs, traces and metrics over OTLP/gRPC.
//!
//! * `tracing-subscriber`: a fmt layer to stderr filtered by `RUST_LOG` (or
//!   [`TelemetryConfig::with_log_filter`]) that leaves the request telemetry spans out unless
//!   asked ([`TelemetryConfig::with_log_request_spans`]); infermon's bridge ([`tracing_layer`])
//!   for spans at INFO and above; and the [`metrics_layer`] that derives the contract's request
//!   metrics from the request spans. The bridge and the metrics layer are one `InfermonLayer`,
//!   and the fmt layer (with its own filter) runs inside it, so the request spans it leaves out
//!   cost it no registry lookups.
//! * Traces: OTLP/gRPC exporter (tonic) → bounded batch span processor → `SdkTracerProvider`.
//! * Metrics: OTLP/gRPC exporter (infermon's, which adds the exemplars the SDK does not record;
//!   see `metrics_export`) → periodic reader (every 5 s by default) → `SdkMeterProvider`
//!   with a cardinality limit on every instrument.
//! * Resource: `service.name`, `service.version`, `service.instance.id` (a UUID, stable for the
//!   process), `host.name`, the SDK's `telemetry.sdk.*`, plus `OTEL_RESOURCE_ATTRIBUTES`.
//!
//! When the collector is missing or goes away, the process keeps serving: exports retry with
//! the exporter's backoff (3 retries, 100 ms doubling to 1.6 s), the span queue stays bounded,
//! dropped spans and failed exports are counted ([`TelemetryStats`], and the
//! `infermon.telemetry.*` self-metrics), and each outage logs one warning, not one per export.
//!
//! Needs a Tokio runtime (the gRPC channel runs on it); a multi-threaded one, since exports run
//! on SDK threads that wait for the channel's tasks.

mod config;
mod export;
mod layer;
mod metrics_export;

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::metrics::{Instrument, PeriodicReader, SdkMeterProvider, Stream};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::resource::EnvResourceDetector;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider,
};
use opentelemetry_sdk::Resource;
use tracing_subscriber::filter::{EnvFilter, FilterExt as _, FilterFn, LevelFilter};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer as _;

use crate::contract::{attr, metric, metric_spec, value, INSTRUMENTATION_SCOPE};
use crate::layer::InfermonLayer;
use crate::request::TARGET as REQUEST_TARGET;

pub use config::{
    TelemetryConfig, DEFAULT_CARDINALITY_LIMIT, DEFAULT_ENDPOINT, DEFAULT_EXPORT_INTERVAL,
    DEFAULT_LOG_FILTER, DEFAULT_MAX_QUEUE_SIZE, DEFAULT_SHUTDOWN_TIMEOUT,
};
pub use export::TelemetryStats;
pub use layer::{metrics_layer, tracing_layer};

use export::{BoundedSpanProcessor, CountingMetricExporter, CountingSpanExporter, Health};
use metrics_export::OtlpMetricExporter;

/// Why telemetry could not start or stop cleanly. Each message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(
        "telemetry needs a Tokio runtime: call infermon::telemetry::init from inside one \
         (e.g. under #[tokio::main])"
    )]
    NoRuntime,
    #[error("invalid log filter {filter:?}; use RUST_LOG syntax such as `info,infermon=debug`")]
    LogFilter {
        filter: String,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    #[error(
        "cannot set up the OTLP {signal} exporter for {endpoint:?}; set \
         OTEL_EXPORTER_OTLP_ENDPOINT to a URL such as http://localhost:4317"
    )]
    Exporter {
        signal: &'static str,
        endpoint: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    #[error(
        "invalid OTLP header {key:?}: keys must be lowercase ASCII tokens and values visible \
         ASCII"
    )]
    Header { key: String },
    #[error(
        "a global tracing subscriber or logger is already installed: call init once per \
         process, or add infermon::telemetry::tracing_layer and metrics_layer to your own \
         subscriber"
    )]
    SubscriberAlreadySet,
    #[error(
        "telemetry shutdown did not finish within {0:?} (collector unreachable?); unsent \
         telemetry was discarded"
    )]
    ShutdownTimedOut(Duration),
    #[error(
        "telemetry shutdown could not deliver everything pending (collector unreachable?); \
         it was discarded"
    )]
    Shutdown(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
}

/// Keeps telemetry running; shutting it down (explicitly or on drop) flushes what is pending,
/// waiting at most the configured shutdown timeout (default 5 s) even if the collector is down.
#[must_use = "telemetry stops when the guard is dropped"]
#[derive(Debug)]
pub struct TelemetryGuard {
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
    health: Arc<Health>,
    shutdown_timeout: Duration,
    service_name: String,
    shut_down: bool,
}

impl TelemetryGuard {
    /// A meter of this pipeline, e.g. for [`InferenceMetrics::new`](crate::instruments::InferenceMetrics::new).
    pub fn meter(&self, scope: &'static str) -> Meter {
        self.meter_provider.meter(scope)
    }

    /// The SDK tracer of this pipeline (infermon's instrumentation scope).
    pub fn tracer(&self) -> SdkTracer {
        self.tracer_provider.tracer_with_scope(scope())
    }

    /// The tracer provider, for code that needs its own scope or a flush.
    pub fn tracer_provider(&self) -> &SdkTracerProvider {
        &self.tracer_provider
    }

    /// The meter provider.
    pub fn meter_provider(&self) -> &SdkMeterProvider {
        &self.meter_provider
    }

    /// The resolved `service.name`.
    pub fn service_name(&self) -> &str {
        &self.service_name
    }

    /// Export-path counters: dropped spans, failed exports, queue occupancy.
    pub fn stats(&self) -> TelemetryStats {
        self.health.stats()
    }

    /// Exports everything pending now (bounded by the shutdown timeout).
    pub fn flush(&self) -> Result<(), TelemetryError> {
        let (tp, mp) = (self.tracer_provider.clone(), self.meter_provider.clone());
        run_bounded(self.shutdown_timeout, move || {
            let traces = tp.force_flush();
            let metrics = mp.force_flush();
            traces.and(metrics)
        })
    }

    /// Flushes and stops exporting, within the shutdown timeout.
    pub fn shutdown(mut self) -> Result<(), TelemetryError> {
        self.shutdown_once()
    }

    fn shutdown_once(&mut self) -> Result<(), TelemetryError> {
        if std::mem::replace(&mut self.shut_down, true) {
            return Ok(());
        }
        let (tp, mp) = (self.tracer_provider.clone(), self.meter_provider.clone());
        let timeout = self.shutdown_timeout;
        run_bounded(timeout, move || {
            // Traces and metrics flush in parallel so the bound holds for both together.
            let metrics = std::thread::spawn(move || mp.shutdown());
            let traces = tp.shutdown_with_timeout(timeout);
            let metrics = metrics.join().unwrap_or_else(|_| {
                Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure(
                    "metric shutdown panicked".into(),
                ))
            });
            traces.and(metrics)
        })
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown_once() {
            // Logging may already be gone at this point; stderr is the one channel left.
            eprintln!("infermon: {e}");
        }
    }
}

/// Runs `f` on a helper thread and waits at most `timeout` (+ a small grace) for it. A stuck
/// exporter then costs a parked thread, never a hung process.
fn run_bounded(
    timeout: Duration,
    f: impl FnOnce() -> opentelemetry_sdk::error::OTelSdkResult + Send + 'static,
) -> Result<(), TelemetryError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("infermon-telemetry-shutdown".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| TelemetryError::Shutdown(e.into()))?;
    match rx.recv_timeout(timeout + Duration::from_millis(250)) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(opentelemetry_sdk::error::OTelSdkError::Timeout(_))) | Err(_) => {
            Err(TelemetryError::ShutdownTimedOut(timeout))
        }
        Ok(Err(e)) => Err(TelemetryError::Shutdown(e.into())),
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope::builder(INSTRUMENTATION_SCOPE)
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

/// Sets up logs, traces and metrics as described in the [module docs](self) and installs them
/// globally (tracing subscriber, OpenTelemetry tracer and meter providers, W3C propagator).
///
/// Must run inside a Tokio runtime. Fails with a clear [`TelemetryError`] on bad configuration;
/// an unreachable collector is not an error (exports retry in the background).
pub fn init(config: TelemetryConfig) -> Result<TelemetryGuard, TelemetryError> {
    let resolved = config.resolve(&|k| std::env::var(k).ok());
    let log = LogSettings::new(&config, &resolved.log_filter)?;
    let health = Health::new(resolved.max_queue_size);
    let resource = resource(&config, &resolved.service_name);

    let (tracer_provider, meter_provider) = if resolved.disabled {
        (
            SdkTracerProvider::builder()
                .with_sampler(Sampler::AlwaysOff)
                .with_resource(resource)
                .build(),
            SdkMeterProvider::builder()
                .with_resource(resource_placeholder())
                .build(),
        )
    } else {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(TelemetryError::NoRuntime);
        }
        (
            tracer_provider(&config, &resolved, &health, resource.clone())?,
            meter_provider(&config, &resolved, &health, resource)?,
        )
    };
    register_self_metrics(&meter_provider.meter(INSTRUMENTATION_SCOPE), &health);

    subscriber(
        &config,
        log,
        tracer_provider.tracer_with_scope(scope()),
        &meter_provider.meter_with_scope(scope()),
    )
    .try_init()
    .map_err(|_| TelemetryError::SubscriberAlreadySet)?;

    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(tracer_provider.clone());
    opentelemetry::global::set_meter_provider(meter_provider.clone());

    for w in &resolved.warnings {
        tracing::warn!("{w}");
    }
    tracing::debug!(
        service = %resolved.service_name,
        traces = %resolved.traces_endpoint,
        metrics = %resolved.metrics_endpoint,
        interval = ?resolved.export_interval,
        disabled = resolved.disabled,
        "telemetry started"
    );

    Ok(TelemetryGuard {
        tracer_provider,
        meter_provider,
        health,
        shutdown_timeout: config.shutdown_timeout,
        service_name: resolved.service_name,
        shut_down: false,
    })
}

/// The subscriber [`init`] installs, over the given tracer and meter: the fmt layer (filtered
/// by the log filter, request telemetry left out unless asked), the bridge (INFO and above, the
/// export stack left out) and the metrics layer. Public so benchmarks and tests measure exactly
/// what `init` installs; services call [`init`].
pub fn init_subscriber(
    config: &TelemetryConfig,
    tracer: SdkTracer,
    meter: &Meter,
) -> Result<impl tracing::Subscriber + Send + Sync, TelemetryError> {
    let resolved = config.resolve(&|k| std::env::var(k).ok());
    let log = LogSettings::new(config, &resolved.log_filter)?;
    Ok(subscriber(config, log, tracer, meter))
}

/// What the fmt layer is given, from the configured log filter.
struct LogSettings {
    filter: EnvFilter,
    /// Request spans and events are logged: asked in the config, or by naming the typed
    /// path's target in the filter.
    requests: bool,
    /// The filter has span-scoped directives (`target[span{field=value}]=level`; `[` starts
    /// the span part of a directive and appears nowhere else), so it must see spans entered and
    /// exited.
    span_scoped: bool,
}

impl LogSettings {
    fn new(config: &TelemetryConfig, directives: &str) -> Result<Self, TelemetryError> {
        Ok(Self {
            filter: log_filter(directives)?,
            requests: config.log_request_spans || directives.contains(REQUEST_TARGET),
            span_scoped: directives.contains('['),
        })
    }
}

/// The most verbose spans and events exported as traces (and the contract's level).
const EXPORTED_LEVEL: tracing::Level = tracing::Level::INFO;

fn subscriber(
    config: &TelemetryConfig,
    log: LogSettings,
    tracer: SdkTracer,
    meter: &Meter,
) -> impl tracing::Subscriber + Send + Sync {
    let otel_layer = tracing_layer(tracer)
        .exporting_only(|meta| meta.level() <= &EXPORTED_LEVEL && !is_export_stack(meta.target()));
    // The bridge and the metrics layer as one layer: one registry lookup per callback. Nothing
    // more verbose than the exported level reaches them, or the log unless its filter asks.
    let infermon_layer = InfermonLayer::new(otel_layer, metrics_layer(meter))
        .with_max_level(LevelFilter::from_level(EXPORTED_LEVEL));
    if !config.fmt_layer {
        return tracing_subscriber::registry().with(infermon_layer);
    }
    // What the fmt layer leaves out: the request telemetry, unless asked. One function serves
    // as the first check of its filter (a string comparison that rejects the contract's spans
    // and events before `EnvFilter` matches them against its directives) and tells
    // `InfermonLayer` which spans the filter rejects, so it skips the log layer for them
    // without a second registry lookup (see `InfermonLayer::with_log_layer`).
    let ignores: fn(&tracing::Metadata<'_>) -> bool = if log.requests {
        |_| false
    } else {
        layer::is_request_telemetry
    };
    // The exclusion bounds no level (TRACE), so the pair's hint is the log filter's.
    let fmt_filter = FilterFn::new(move |meta| !ignores(meta))
        .with_max_level_hint(LevelFilter::TRACE)
        .and(log.filter);
    let fmt_layer = tracing_subscriber::fmt::layer();
    let fmt_layer = match config.log_writer.clone() {
        Some(w) => fmt_layer
            .with_ansi(false)
            .with_writer(BoxMakeWriter::new(move || (w.0)())),
        None => fmt_layer
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(BoxMakeWriter::new(std::io::stderr)),
    };
    let infermon_layer = infermon_layer.with_log_layer(fmt_layer.with_filter(fmt_filter), ignores);
    // The fmt layer has no span events, so only a span-scoped filter needs enters and exits.
    let infermon_layer = if log.span_scoped {
        infermon_layer
    } else {
        infermon_layer.log_skips_enter_exit()
    };
    tracing_subscriber::registry().with(infermon_layer)
}

/// Crates on the export path. Their spans must never be traced (each export would produce
/// spans to export) and their per-export error logs are replaced by our one warning per outage.
fn is_export_stack(target: &str) -> bool {
    ["h2", "hyper", "tonic", "tower", "opentelemetry"]
        .iter()
        .any(|p| target.starts_with(p))
}

/// The fmt layer's filter. The SDK logs every failed export at ERROR; unless the user's filter
/// says something about `opentelemetry*` targets, those are silenced in favour of
/// [`Health`]'s single warning per outage.
fn log_filter(directives: &str) -> Result<EnvFilter, TelemetryError> {
    let full = if directives.contains("opentelemetry") {
        directives.to_owned()
    } else {
        format!("{directives},opentelemetry=off")
    };
    EnvFilter::builder()
        .parse(&full)
        .map_err(|source| TelemetryError::LogFilter {
            filter: directives.to_owned(),
            source,
        })
}

fn resource(config: &TelemetryConfig, service_name: &str) -> Resource {
    // Later entries win: infermon's defaults, then OTEL_RESOURCE_ATTRIBUTES, then code.
    Resource::builder_empty()
        .with_attributes([
            KeyValue::new(attr::SERVICE_VERSION, config.service_version.clone()),
            KeyValue::new(attr::SERVICE_INSTANCE_ID, instance_id().to_owned()),
            KeyValue::new(attr::HOST_NAME, host_name()),
        ])
        .with_detector(Box::new(
            opentelemetry_sdk::resource::TelemetryResourceDetector,
        ))
        .with_detector(Box::new(EnvResourceDetector::new()))
        .with_attributes(config.resource_attributes.iter().cloned())
        .with_service_name(service_name.to_owned())
        .build()
}

/// The disabled pipeline exports nothing, so its resource is irrelevant.
fn resource_placeholder() -> Resource {
    Resource::builder_empty().build()
}

/// `service.instance.id`: one random UUID per process, the same for every `init`.
pub fn instance_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| uuid::Uuid::new_v4().to_string())
}

fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Code-configured headers, applied after `OTEL_EXPORTER_OTLP_HEADERS` so code wins.
fn header_interceptor(
    headers: &[(String, String)],
) -> Result<
    impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone + Send + Sync,
    TelemetryError,
> {
    let metadata = header_metadata(headers)?;
    Ok(move |mut req: tonic::Request<()>| {
        for kv in metadata.iter() {
            if let tonic::metadata::KeyAndValueRef::Ascii(k, v) = kv {
                req.metadata_mut().insert(k.clone(), v.clone());
            }
        }
        Ok(req)
    })
}

/// `headers` as gRPC metadata; an invalid key or value is an error naming the key.
fn header_metadata(
    headers: &[(String, String)],
) -> Result<tonic::metadata::MetadataMap, TelemetryError> {
    use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};
    let mut metadata = MetadataMap::new();
    for (k, v) in headers {
        let key = AsciiMetadataKey::from_bytes(k.as_bytes());
        let value = AsciiMetadataValue::try_from(v.as_str());
        match (key, value) {
            (Ok(k), Ok(v)) => {
                metadata.insert(k, v);
            }
            _ => return Err(TelemetryError::Header { key: k.clone() }),
        }
    }
    Ok(metadata)
}

fn tracer_provider(
    config: &TelemetryConfig,
    resolved: &config::Resolved,
    health: &Arc<Health>,
    resource: Resource,
) -> Result<SdkTracerProvider, TelemetryError> {
    let endpoint = resolved.traces_endpoint.clone();
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .with_interceptor(header_interceptor(&config.headers)?);
    if let Some(t) = config.export_timeout {
        builder = builder.with_timeout(t);
    }
    let exporter = builder.build().map_err(|e| TelemetryError::Exporter {
        signal: value::SIGNAL_TRACES,
        endpoint: endpoint.clone(),
        source: e.into(),
    })?;
    let exporter =
        CountingSpanExporter::new(exporter, health.clone(), endpoint, resolved.max_queue_size);

    // Reads the remaining OTEL_BSP_* variables; code settings override them.
    let mut batch = BatchConfigBuilder::default().with_max_queue_size(resolved.max_queue_size);
    if let Some(d) = config.scheduled_delay {
        batch = batch.with_scheduled_delay(d);
    }
    if let Some(n) = config.max_export_batch_size {
        batch = batch.with_max_export_batch_size(n);
    }
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batch.build())
        .build();

    let mut builder = SdkTracerProvider::builder()
        .with_span_processor(BoundedSpanProcessor::new(processor, health.clone()))
        .with_resource(resource);
    // Without a code sampler the SDK applies OTEL_TRACES_SAMPLER(_ARG).
    if let Some(s) = config.sampler.clone() {
        builder = builder.with_sampler(s);
    }
    Ok(builder.build())
}

fn meter_provider(
    config: &TelemetryConfig,
    resolved: &config::Resolved,
    health: &Arc<Health>,
    resource: Resource,
) -> Result<SdkMeterProvider, TelemetryError> {
    let endpoint = resolved.metrics_endpoint.clone();
    let metadata = header_metadata(&resolved.metrics_headers)?;
    let exporter =
        OtlpMetricExporter::new(&endpoint, metadata, resolved.metrics_timeout).map_err(|e| {
            TelemetryError::Exporter {
                signal: value::SIGNAL_METRICS,
                endpoint: endpoint.clone(),
                source: e.into(),
            }
        })?;
    let exporter = CountingMetricExporter::new(exporter, health.clone(), endpoint);
    let reader = PeriodicReader::builder(exporter)
        .with_interval(resolved.export_interval)
        .build();
    Ok(SdkMeterProvider::builder()
        .with_reader(reader)
        .with_resource(resource)
        .with_view(cardinality_view(config.cardinality_limit))
        .build())
}

/// A view that caps every instrument's attribute sets at `limit` (past it the SDK folds new
/// sets into one `otel.metric.overflow=true` series). Name, unit, description and histogram
/// boundaries stay as the instrument set them.
pub fn cardinality_view(limit: usize) -> impl Fn(&Instrument) -> Option<Stream> + Send + Sync {
    move |_| Stream::builder().with_cardinality_limit(limit).build().ok()
}

fn register_self_metrics(meter: &Meter, health: &Arc<Health>) {
    let spec = metric_spec(metric::TELEMETRY_SPANS_DROPPED)
        .unwrap_or_else(|| unreachable!("self-metric missing from contract::METRICS"));
    let h = health.clone();
    meter
        .u64_observable_counter(spec.name)
        .with_unit(spec.unit)
        .with_description(spec.description)
        .with_callback(move |obs| obs.observe(h.stats().spans_dropped, &[]))
        .build();

    let spec = metric_spec(metric::TELEMETRY_EXPORT_FAILURES)
        .unwrap_or_else(|| unreachable!("self-metric missing from contract::METRICS"));
    let h = health.clone();
    let traces = [KeyValue::new(attr::INFERMON_SIGNAL, value::SIGNAL_TRACES)];
    let metrics = [KeyValue::new(attr::INFERMON_SIGNAL, value::SIGNAL_METRICS)];
    meter
        .u64_observable_counter(spec.name)
        .with_unit(spec.unit)
        .with_description(spec.description)
        .with_callback(move |obs| {
            let s = h.stats();
            obs.observe(s.span_export_failures, &traces);
            obs.observe(s.metric_export_failures, &metrics);
        })
        .build();
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
    use opentelemetry_sdk::metrics::InMemoryMetricExporter;

    #[test]
    fn cardinality_view_caps_attribute_sets_per_instrument() {
        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter.clone()).build())
            .with_view(cardinality_view(3))
            .build();
        let counter = provider.meter("test").u64_counter("c").build();
        for i in 0..10 {
            counter.add(1, &[KeyValue::new("k", i)]);
        }
        provider.force_flush().unwrap();
        let metrics = exporter.get_finished_metrics().unwrap();
        let metric = metrics[0]
            .scope_metrics()
            .flat_map(|s| s.metrics())
            .next()
            .unwrap();
        let AggregatedMetrics::U64(MetricData::Sum(sum)) = metric.data() else {
            panic!("not a u64 sum: {metric:?}");
        };
        // Up to the limit as recorded plus one overflow series holding the rest; none lost.
        let points: Vec<_> = sum.data_points().collect();
        assert_eq!(points.len(), 3 + 1);
        assert_eq!(points.iter().map(|p| p.value()).sum::<u64>(), 10);
        assert!(points.iter().any(|p| p
            .attributes()
            .any(|kv| kv.key.as_str() == "otel.metric.overflow")));
    }

    #[test]
    fn log_filter_silences_sdk_export_errors_unless_asked_for() {
        assert!(log_filter("info")
            .unwrap()
            .to_string()
            .contains("opentelemetry=off"));
        assert!(!log_filter("info,opentelemetry_sdk=debug")
            .unwrap()
            .to_string()
            .contains("opentelemetry=off"));
    }
}
