//! [`TelemetryConfig`]: what [`init`](super::init) sets up, from code and `OTEL_*` variables.
//!
//! Precedence, highest first: a value set in code, the environment variable, infermon's default.
//! An environment variable with an unusable value is ignored with a warning (as the
//! OpenTelemetry specification asks), never a startup failure.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::Sampler;

/// Metrics reach a live dashboard within this long (the SDK's own default is 60 s).
pub const DEFAULT_EXPORT_INTERVAL: Duration = Duration::from_secs(5);
/// Bound on how long [`TelemetryGuard::shutdown`](super::TelemetryGuard::shutdown) (or drop)
/// waits for the final flush, collector up or not.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Attribute sets kept per metric before the SDK folds new ones into an overflow series.
pub const DEFAULT_CARDINALITY_LIMIT: usize = 2000;
/// The OTLP/gRPC endpoint when none is configured.
pub const DEFAULT_ENDPOINT: &str = "http://localhost:4317";
/// The batch span processor's queue bound when `OTEL_BSP_MAX_QUEUE_SIZE` is unset (the
/// specification's default).
pub const DEFAULT_MAX_QUEUE_SIZE: usize = 2048;
/// The log filter when neither code nor `RUST_LOG` gives one.
pub const DEFAULT_LOG_FILTER: &str = "info";
/// Deadline of one export attempt when neither code nor `OTEL_EXPORTER_OTLP_TIMEOUT` gives one
/// (the specification's default).
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) mod env {
    pub const SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
    pub const RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";
    pub const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
    pub const TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
    pub const METRICS_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT";
    pub const HEADERS: &str = "OTEL_EXPORTER_OTLP_HEADERS";
    pub const METRICS_HEADERS: &str = "OTEL_EXPORTER_OTLP_METRICS_HEADERS";
    pub const TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TIMEOUT";
    pub const METRICS_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT";
    pub const METRIC_EXPORT_INTERVAL: &str = "OTEL_METRIC_EXPORT_INTERVAL";
    pub const BSP_MAX_QUEUE_SIZE: &str = "OTEL_BSP_MAX_QUEUE_SIZE";
    pub const SDK_DISABLED: &str = "OTEL_SDK_DISABLED";
    pub const RUST_LOG: &str = "RUST_LOG";
}

/// Telemetry setup. Build with [`new`](Self::new) or [`from_env`](Self::from_env) and the
/// `with_*` setters; every setter overrides the corresponding environment variable.
///
/// Variables honoured: `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
/// `OTEL_EXPORTER_OTLP_ENDPOINT` and `OTEL_EXPORTER_OTLP_{TRACES,METRICS}_ENDPOINT`,
/// `OTEL_EXPORTER_OTLP_HEADERS` (and per signal), `OTEL_EXPORTER_OTLP_TIMEOUT` (and per signal),
/// `OTEL_METRIC_EXPORT_INTERVAL`, `OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_BSP_SCHEDULE_DELAY`,
/// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, `OTEL_BSP_EXPORT_TIMEOUT`, `OTEL_TRACES_SAMPLER`,
/// `OTEL_TRACES_SAMPLER_ARG`, `OTEL_SDK_DISABLED`, `RUST_LOG`.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    pub(crate) default_service_name: String,
    pub(crate) service_name: Option<String>,
    pub(crate) service_version: String,
    pub(crate) endpoint: Option<String>,
    pub(crate) traces_endpoint: Option<String>,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) export_interval: Option<Duration>,
    pub(crate) export_timeout: Option<Duration>,
    pub(crate) resource_attributes: Vec<KeyValue>,
    pub(crate) sampler: Option<Sampler>,
    pub(crate) log_filter: Option<String>,
    pub(crate) fmt_layer: bool,
    pub(crate) log_request_spans: bool,
    pub(crate) log_writer: Option<LogWriter>,
    pub(crate) disabled: Option<bool>,
    pub(crate) max_queue_size: Option<usize>,
    pub(crate) scheduled_delay: Option<Duration>,
    pub(crate) max_export_batch_size: Option<usize>,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) cardinality_limit: usize,
}

impl TelemetryConfig {
    /// A config whose service is called `service_name` unless `OTEL_SERVICE_NAME` (or
    /// `service.name` in `OTEL_RESOURCE_ATTRIBUTES`) says otherwise; use
    /// [`with_service_name`](Self::with_service_name) to force a name.
    pub fn new(service_name: impl Into<String>) -> Self {
        Self {
            default_service_name: service_name.into(),
            service_name: None,
            service_version: env!("CARGO_PKG_VERSION").to_owned(),
            endpoint: None,
            traces_endpoint: None,
            headers: Vec::new(),
            export_interval: None,
            export_timeout: None,
            resource_attributes: Vec::new(),
            sampler: None,
            log_filter: None,
            fmt_layer: true,
            log_request_spans: false,
            log_writer: None,
            disabled: None,
            max_queue_size: None,
            scheduled_delay: None,
            max_export_batch_size: None,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            cardinality_limit: DEFAULT_CARDINALITY_LIMIT,
        }
    }

    /// Everything from the environment; the service is `unknown_service` (the specification's
    /// fallback) unless `OTEL_SERVICE_NAME` names it.
    pub fn from_env() -> Self {
        Self::new("unknown_service")
    }

    /// Where traces go, as [`init`](super::init) resolves it now: the code's traces endpoint,
    /// else its endpoint for both signals, else
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else `OTEL_EXPORTER_OTLP_ENDPOINT`, else
    /// [`DEFAULT_ENDPOINT`]. For a second trace exporter that must go where these traces go.
    pub fn traces_endpoint(&self) -> String {
        self.resolve(&|k| std::env::var(k).ok()).traces_endpoint
    }

    /// Where metrics go, resolved as [`traces_endpoint`](Self::traces_endpoint) is (with
    /// `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`).
    pub fn metrics_endpoint(&self) -> String {
        self.resolve(&|k| std::env::var(k).ok()).metrics_endpoint
    }

    /// Forces `service.name`, overriding `OTEL_SERVICE_NAME`.
    pub fn with_service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = Some(name.into());
        self
    }

    /// `service.version` (default: the infermon crate's version; pass your own
    /// `env!("CARGO_PKG_VERSION")`).
    pub fn with_service_version(mut self, version: impl Into<String>) -> Self {
        self.service_version = version.into();
        self
    }

    /// The OTLP/gRPC endpoint for both signals, e.g. `http://collector:4317`.
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// The OTLP/gRPC endpoint for traces only (e.g. `infermon relay`), over
    /// [`with_endpoint`](Self::with_endpoint)'s: an endpoint set in code wins over every
    /// variable, so this is how code splits the signals.
    pub fn with_traces_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.traces_endpoint = Some(endpoint.into());
        self
    }

    /// A gRPC metadata entry sent with every export (e.g. an auth token); overrides the same key
    /// from `OTEL_EXPORTER_OTLP_HEADERS`.
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((key.into(), value.into()));
        self
    }

    /// How often metrics are exported (default [`DEFAULT_EXPORT_INTERVAL`]).
    pub fn with_export_interval(mut self, interval: Duration) -> Self {
        self.export_interval = Some(interval);
        self
    }

    /// Deadline of one export attempt (default: `OTEL_EXPORTER_OTLP_TIMEOUT`, else 10 s).
    pub fn with_export_timeout(mut self, timeout: Duration) -> Self {
        self.export_timeout = Some(timeout);
        self
    }

    /// An extra resource attribute; overrides the same key from `OTEL_RESOURCE_ATTRIBUTES`.
    pub fn with_resource_attribute(mut self, kv: KeyValue) -> Self {
        self.resource_attributes.push(kv);
        self
    }

    /// The trace sampler (default: `OTEL_TRACES_SAMPLER`, else parent-based always-on).
    pub fn with_sampler(mut self, sampler: Sampler) -> Self {
        self.sampler = Some(sampler);
        self
    }

    /// An `EnvFilter` directive string for logs and spans (default: `RUST_LOG`, else `info`).
    pub fn with_log_filter(mut self, filter: impl Into<String>) -> Self {
        self.log_filter = Some(filter.into());
        self
    }

    /// Whether logs are printed to stderr (default true).
    pub fn with_fmt_layer(mut self, enabled: bool) -> Self {
        self.fmt_layer = enabled;
        self
    }

    /// Whether the log output also shows the request telemetry spans (`inference_request`,
    /// `queue`, `prefill`, `decode`) and the typed path's events (default false: they are
    /// exported as traces, and formatting them would cost about a quarter of a request's
    /// instrumentation). A log filter that names the `infermon::request` target turns this on
    /// too.
    pub fn with_log_request_spans(mut self, enabled: bool) -> Self {
        self.log_request_spans = enabled;
        self
    }

    /// Where logs go instead of stderr: `make` is called for each log line and returns the
    /// writer for it (e.g. a file handle, or a buffer in tests). Lines are written without ANSI
    /// colours.
    pub fn with_log_writer(
        mut self,
        make: impl Fn() -> Box<dyn std::io::Write + Send> + Send + Sync + 'static,
    ) -> Self {
        self.log_writer = Some(LogWriter(std::sync::Arc::new(make)));
        self
    }

    /// Turns OpenTelemetry export off (logs still print), overriding `OTEL_SDK_DISABLED`.
    pub fn with_disabled(mut self, disabled: bool) -> Self {
        self.disabled = Some(disabled);
        self
    }

    /// Spans buffered for export before new ones are dropped (and counted).
    pub fn with_max_queue_size(mut self, size: usize) -> Self {
        self.max_queue_size = Some(size);
        self
    }

    /// Delay between span batch exports.
    pub fn with_scheduled_delay(mut self, delay: Duration) -> Self {
        self.scheduled_delay = Some(delay);
        self
    }

    /// Largest span batch per export.
    pub fn with_max_export_batch_size(mut self, size: usize) -> Self {
        self.max_export_batch_size = Some(size);
        self
    }

    /// Bound on the final flush at shutdown (default [`DEFAULT_SHUTDOWN_TIMEOUT`]).
    pub fn with_shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Attribute sets kept per metric (default [`DEFAULT_CARDINALITY_LIMIT`]).
    pub fn with_cardinality_limit(mut self, limit: usize) -> Self {
        self.cardinality_limit = limit;
        self
    }

    /// Merges code settings, environment (`var`) and defaults.
    pub(crate) fn resolve(&self, var: &dyn Fn(&str) -> Option<String>) -> Resolved {
        let mut warnings = Vec::new();
        let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());

        let service_name = self
            .service_name
            .clone()
            .or_else(|| set(env::SERVICE_NAME))
            .or_else(|| set(env::RESOURCE_ATTRIBUTES).and_then(|s| service_name_in(&s)))
            .unwrap_or_else(|| self.default_service_name.clone());

        let endpoint_for = |signal_var: &str| {
            self.endpoint
                .clone()
                .or_else(|| set(signal_var))
                .or_else(|| set(env::ENDPOINT))
                .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned())
        };

        let export_interval = self.export_interval.unwrap_or_else(|| {
            parse_env(&set, env::METRIC_EXPORT_INTERVAL, &mut warnings, |v| {
                v.parse::<u64>()
                    .ok()
                    .filter(|ms| *ms > 0)
                    .map(Duration::from_millis)
            })
            .unwrap_or(DEFAULT_EXPORT_INTERVAL)
        });

        let max_queue_size = self.max_queue_size.unwrap_or_else(|| {
            parse_env(&set, env::BSP_MAX_QUEUE_SIZE, &mut warnings, |v| {
                v.parse::<usize>().ok().filter(|n| *n > 0)
            })
            .unwrap_or(DEFAULT_MAX_QUEUE_SIZE)
        });

        let disabled = self.disabled.unwrap_or_else(|| {
            parse_env(&set, env::SDK_DISABLED, &mut warnings, |v| {
                match v.trim().to_ascii_lowercase().as_str() {
                    "true" => Some(true),
                    "false" => Some(false),
                    _ => None,
                }
            })
            .unwrap_or(false)
        });

        // Metrics are sent by infermon's own exporter (it adds exemplars), so it resolves the
        // metric signal's headers and timeout as opentelemetry-otlp does for traces.
        let mut metrics_headers = set(env::METRICS_HEADERS)
            .or_else(|| set(env::HEADERS))
            .map(|v| parse_headers(&v))
            .unwrap_or_default();
        for (k, v) in &self.headers {
            metrics_headers.retain(|(key, _)| key != k);
            metrics_headers.push((k.clone(), v.clone()));
        }
        let metrics_timeout = self.export_timeout.unwrap_or_else(|| {
            let ms = |v: &str| v.parse::<u64>().ok().map(Duration::from_millis);
            parse_env(&set, env::METRICS_TIMEOUT, &mut warnings, ms)
                .or_else(|| parse_env(&set, env::TIMEOUT, &mut warnings, ms))
                .unwrap_or(DEFAULT_EXPORT_TIMEOUT)
        });

        let log_filter = self
            .log_filter
            .clone()
            .or_else(|| set(env::RUST_LOG))
            .unwrap_or_else(|| DEFAULT_LOG_FILTER.to_owned());

        Resolved {
            service_name,
            traces_endpoint: self
                .traces_endpoint
                .clone()
                .unwrap_or_else(|| endpoint_for(env::TRACES_ENDPOINT)),
            metrics_endpoint: endpoint_for(env::METRICS_ENDPOINT),
            metrics_headers,
            metrics_timeout,
            export_interval,
            max_queue_size,
            disabled,
            log_filter,
            warnings,
        }
    }
}

/// A shareable log destination (see [`TelemetryConfig::with_log_writer`]).
#[derive(Clone)]
pub(crate) struct LogWriter(
    pub(crate) std::sync::Arc<dyn Fn() -> Box<dyn std::io::Write + Send> + Send + Sync>,
);

impl std::fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogWriter")
    }
}

/// The settings infermon resolves itself (the rest go to the SDK, which reads their variables).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Resolved {
    pub service_name: String,
    pub traces_endpoint: String,
    pub metrics_endpoint: String,
    /// gRPC metadata of metric exports: the variables' headers, then code's (which win).
    pub metrics_headers: Vec<(String, String)>,
    /// Deadline of one metric export attempt.
    pub metrics_timeout: Duration,
    pub export_interval: Duration,
    pub max_queue_size: usize,
    pub disabled: bool,
    pub log_filter: String,
    /// Environment variables that were set but unusable, as sentences to log once logging is up.
    pub warnings: Vec<String>,
}

fn parse_env<T>(
    set: &dyn Fn(&str) -> Option<String>,
    name: &str,
    warnings: &mut Vec<String>,
    parse: impl Fn(&str) -> Option<T>,
) -> Option<T> {
    let raw = set(name)?;
    let parsed = parse(raw.trim());
    if parsed.is_none() {
        warnings.push(format!(
            "ignoring {name}={raw:?}: not a valid value; using the default"
        ));
    }
    parsed
}

/// `OTEL_EXPORTER_OTLP_HEADERS`' format: `k=v,k2=v2`, values percent-encoded (W3C baggage
/// style). Pairs without `=` are skipped.
fn parse_headers(raw: &str) -> Vec<(String, String)> {
    raw.split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            let k = k.trim();
            (!k.is_empty()).then(|| (k.to_ascii_lowercase(), percent_decode(v.trim())))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `service.name` from an `OTEL_RESOURCE_ATTRIBUTES` value (`k=v,k=v`).
fn service_name_in(resource_attributes: &str) -> Option<String> {
    resource_attributes.split(',').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == crate::contract::attr::SERVICE_NAME && !v.trim().is_empty())
            .then(|| v.trim().to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve_with(config: &TelemetryConfig, vars: &[(&str, &str)]) -> Resolved {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        config.resolve(&|k| vars.get(k).cloned())
    }

    #[test]
    fn defaults_suit_a_live_dashboard() {
        let r = resolve_with(&TelemetryConfig::new("svc"), &[]);
        assert_eq!(r.service_name, "svc");
        assert_eq!(r.traces_endpoint, DEFAULT_ENDPOINT);
        assert!(r.export_interval <= Duration::from_secs(5));
        assert_eq!(r.max_queue_size, DEFAULT_MAX_QUEUE_SIZE);
        assert!(!r.disabled);
        assert_eq!(r.log_filter, DEFAULT_LOG_FILTER);
        assert!(r.warnings.is_empty());
    }

    #[test]
    fn environment_overrides_defaults() {
        let r = resolve_with(
            &TelemetryConfig::new("svc"),
            &[
                (env::SERVICE_NAME, "from-env"),
                (env::ENDPOINT, "http://collector:4317"),
                (env::METRICS_ENDPOINT, "http://metrics:4317"),
                (env::METRIC_EXPORT_INTERVAL, "1500"),
                (env::BSP_MAX_QUEUE_SIZE, "64"),
                (env::SDK_DISABLED, "TRUE"),
                (env::RUST_LOG, "debug"),
            ],
        );
        assert_eq!(r.service_name, "from-env");
        assert_eq!(r.traces_endpoint, "http://collector:4317");
        assert_eq!(r.metrics_endpoint, "http://metrics:4317");
        assert_eq!(r.export_interval, Duration::from_millis(1500));
        assert_eq!(r.max_queue_size, 64);
        assert!(r.disabled);
        assert_eq!(r.log_filter, "debug");
    }

    #[test]
    fn code_overrides_environment() {
        let config = TelemetryConfig::new("svc")
            .with_service_name("from-code")
            .with_endpoint("http://code:4317")
            .with_export_interval(Duration::from_secs(2))
            .with_max_queue_size(8)
            .with_disabled(false)
            .with_log_filter("warn");
        let r = resolve_with(
            &config,
            &[
                (env::SERVICE_NAME, "from-env"),
                (env::TRACES_ENDPOINT, "http://env:4317"),
                (env::METRIC_EXPORT_INTERVAL, "1500"),
                (env::BSP_MAX_QUEUE_SIZE, "64"),
                (env::SDK_DISABLED, "true"),
                (env::RUST_LOG, "debug"),
            ],
        );
        assert_eq!(r.service_name, "from-code");
        assert_eq!(r.traces_endpoint, "http://code:4317");
        assert_eq!(r.metrics_endpoint, "http://code:4317");
        let split = resolve_with(
            &config.clone().with_traces_endpoint("http://relay:4319"),
            &[(env::TRACES_ENDPOINT, "http://env:4317")],
        );
        assert_eq!(split.traces_endpoint, "http://relay:4319");
        assert_eq!(split.metrics_endpoint, "http://code:4317");
        assert_eq!(r.export_interval, Duration::from_secs(2));
        assert_eq!(r.max_queue_size, 8);
        assert!(!r.disabled);
        assert_eq!(r.log_filter, "warn");
    }

    #[test]
    fn metric_export_headers_and_timeout_follow_the_variables_then_code() {
        let vars = [
            (env::HEADERS, "x-all=1"),
            (
                env::METRICS_HEADERS,
                "Authorization=Bearer%20abc, x-tenant = t1 ,junk",
            ),
            (env::TIMEOUT, "3000"),
            (env::METRICS_TIMEOUT, "2500"),
        ];
        let r = resolve_with(&TelemetryConfig::new("svc"), &vars);
        assert_eq!(
            r.metrics_headers,
            vec![
                ("authorization".to_owned(), "Bearer abc".to_owned()),
                ("x-tenant".to_owned(), "t1".to_owned()),
            ],
            "the per-signal variable wins over the general one; values are percent-decoded"
        );
        assert_eq!(r.metrics_timeout, Duration::from_millis(2500));

        let r = resolve_with(&TelemetryConfig::new("svc"), &vars[..1]);
        assert_eq!(
            r.metrics_headers,
            vec![("x-all".to_owned(), "1".to_owned())]
        );
        assert_eq!(r.metrics_timeout, DEFAULT_EXPORT_TIMEOUT);

        let config = TelemetryConfig::new("svc")
            .with_header("x-tenant", "code")
            .with_export_timeout(Duration::from_secs(1));
        let r = resolve_with(&config, &vars);
        assert_eq!(
            r.metrics_headers,
            vec![
                ("authorization".to_owned(), "Bearer abc".to_owned()),
                ("x-tenant".to_owned(), "code".to_owned()),
            ]
        );
        assert_eq!(r.metrics_timeout, Duration::from_secs(1));
    }

    #[test]
    fn service_name_falls_back_to_resource_attributes() {
        let r = resolve_with(
            &TelemetryConfig::new("svc"),
            &[(
                env::RESOURCE_ATTRIBUTES,
                "team=a, service.name = billing ,x=y",
            )],
        );
        assert_eq!(r.service_name, "billing");
    }

    #[test]
    fn unusable_environment_values_are_ignored_with_a_warning() {
        let r = resolve_with(
            &TelemetryConfig::new("svc"),
            &[
                (env::METRIC_EXPORT_INTERVAL, "soon"),
                (env::BSP_MAX_QUEUE_SIZE, "0"),
                (env::SDK_DISABLED, "yes"),
            ],
        );
        assert_eq!(r.export_interval, DEFAULT_EXPORT_INTERVAL);
        assert_eq!(r.max_queue_size, DEFAULT_MAX_QUEUE_SIZE);
        assert!(!r.disabled);
        assert_eq!(r.warnings.len(), 3, "{:?}", r.warnings);
        assert!(r.warnings[0].contains(env::METRIC_EXPORT_INTERVAL));
    }
}
