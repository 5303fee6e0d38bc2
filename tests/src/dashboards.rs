//! infermon's Grafana dashboards under test.
//!
//! Grafana cannot run on the test machines, so the dashboards are checked in two ways:
//!
//! * structurally (`tests/tests/dashboards_structure.rs`, no services): the JSON model, the
//!   layout, the variables, and every metric and label name a query uses against the telemetry
//!   contract, the recording rules and the collector's own vocabulary ([`EXTERNAL_METRICS`]);
//! * live ([`run_coverage`]): every panel target, with its variables expanded to "All" and to one
//!   concrete value, runs against the stack's Prometheus and Jaeger and must return data, unless
//!   [`MAY_BE_EMPTY`] says why it legitimately may not. [`render_report`] prints the result;
//!   `scripts/dashboard-coverage.sh` runs it against a running stack.
//!
//! From an end-to-end test, once the workload has fed the stack for a while:
//!
//! ```text
//! let config = LiveConfig::new(stack.prometheus_url(), Some(stack.jaeger_url()));
//! let report = run_coverage(&config).await.expect("dashboards load");
//! assert!(report.failures().is_empty(), "{}", render_report(&report));
//! ```

mod coverage;
mod model;
pub mod promql;
mod rules;
pub mod vars;

use std::path::PathBuf;

pub use coverage::{
    parse_label_values, render_report, run_coverage, CoverageReport, CoverageRow, LiveConfig,
    Outcome, Run, Verdict,
};
pub use model::{
    datasource_type, load_dashboard, load_dashboards, repo_dashboards_dir, Dashboard, Query,
    Target, Variable,
};
pub use rules::{load_recording_rules, parse_recording_rules, repo_rules_dir, RecordingRule};

#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not valid JSON: {source}", path.display())]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{} has no `{what}`", path.display())]
    Missing { path: PathBuf, what: String },
    #[error("no dashboards (*.json) in {}", .0.display())]
    NoDashboards(PathBuf),
    #[error("unknown variable ${0}: define it under templating.list or fix the name")]
    UnknownVariable(String),
    #[error("cannot expand variables: {0}")]
    Expand(String),
}

/// A panel target that may legitimately return nothing, and why. `ref_id: None` covers every
/// target of the panel.
#[derive(Debug, Clone, Copy)]
pub struct EmptyAllowed {
    pub dashboard_uid: &'static str,
    pub panel_title: &'static str,
    pub ref_id: Option<&'static str>,
    pub reason: &'static str,
}

const NO_ALERT_FIRING: &str = "no alert is firing now: a healthy stack has none";
const NO_ALERT_IN_RANGE: &str = "no alert fired or was pending in the time range";
const HEALTHY_GPU: &str =
    "healthy GPUs report no XID or ECC errors; the counter appears with the first error";
const NO_GPM: &str = "GPM metrics exist only on Hopper and newer GPUs (NVML gpm_*); \
    older and simulated GPUs may not report them";
const RELAY_ONLY: &str = "latencies of vLLM requests measured by infermon relay from vLLM's \
    spans: only a vLLM engine sending its traces through the relay has them; \
    tests/tests/relay.rs proves these targets and their exemplars";
const NOTHING_LOST: &str = "the collector creates its send-failure counters at the first \
    failure: while nothing is lost they do not exist";

const fn empty(
    dashboard_uid: &'static str,
    panel_title: &'static str,
    ref_id: Option<&'static str>,
    reason: &'static str,
) -> EmptyAllowed {
    EmptyAllowed {
        dashboard_uid,
        panel_title,
        ref_id,
        reason,
    }
}

/// Every panel target that may be empty in a healthy run, with the reason. Kept to the cases
/// where emptiness is the correct reading of the panel; anything else that is empty fails.
pub const MAY_BE_EMPTY: &[EmptyAllowed] = &[
    empty(
        "infermon-overview",
        "Firing alerts (list)",
        None,
        NO_ALERT_FIRING,
    ),
    empty("infermon-errors", "Alert history", None, NO_ALERT_IN_RANGE),
    empty(
        "infermon-resources",
        "XID and ECC errors",
        None,
        HEALTHY_GPU,
    ),
    empty("infermon-errors", "GPU hardware errors", None, HEALTHY_GPU),
    empty(
        "infermon-resources",
        "SM activity, occupancy and tensor activity (GPM)",
        None,
        NO_GPM,
    ),
    empty(
        "infermon-resources",
        "DRAM bandwidth utilisation (GPM)",
        None,
        NO_GPM,
    ),
    empty(
        "infermon-resources",
        "Clock throttle reasons",
        None,
        "clocks that are not held down report no throttle reason besides gpu_idle, which the \
         panel leaves out",
    ),
    empty(
        "infermon-errors",
        "Out-of-memory pressure: preemptions and rejections",
        Some("B"),
        "queue_full rejections happen only when the waiting queue reaches its limit",
    ),
    empty(
        "infermon-performance",
        "Speculative decoding acceptance rate",
        None,
        "only engines that decode speculatively report it (vLLM with --speculative-config); \
         the simulator does not, and the vLLM path test (tests/tests/vllm_path.rs) covers it",
    ),
    empty(
        "infermon-performance",
        "Time to first token P50/P95/P99/P99.9",
        Some("C"),
        RELAY_ONLY,
    ),
    empty(
        "infermon-performance",
        "Time per output token P50/P95/P99/P99.9",
        Some("C"),
        RELAY_ONLY,
    ),
    empty(
        "infermon-performance",
        "Queue, prefill and decode P99",
        Some("D"),
        RELAY_ONLY,
    ),
    empty(
        "infermon-performance",
        "Queue, prefill and decode P99",
        Some("E"),
        RELAY_ONLY,
    ),
    empty(
        "infermon-performance",
        "Queue, prefill and decode P99",
        Some("F"),
        RELAY_ONLY,
    ),
    empty(
        "infermon-errors",
        "Telemetry pipeline errors",
        Some("A"),
        NOTHING_LOST,
    ),
    empty(
        "infermon-errors",
        "Telemetry pipeline errors",
        Some("B"),
        NOTHING_LOST,
    ),
];

/// The reason a target may be empty, if it may.
pub fn allowed_empty(dashboard_uid: &str, panel_title: &str, ref_id: &str) -> Option<&'static str> {
    MAY_BE_EMPTY
        .iter()
        .find(|e| {
            e.dashboard_uid == dashboard_uid
                && e.panel_title == panel_title
                && e.ref_id.is_none_or(|r| r == ref_id)
        })
        .map(|e| e.reason)
}

/// Series the dashboards read that infermon does not define: the OpenTelemetry Collector's
/// spanmetrics connector, hostmetrics receiver and own telemetry, and Prometheus' alert series.
/// Listed one by one so that a misspelling still fails the structural test.
pub const EXTERNAL_METRICS: &[&str] = &[
    // spanmetrics connector (otel-collector/config.yaml, histogram unit s)
    "traces_span_metrics_calls_total",
    "traces_span_metrics_duration_seconds_bucket",
    "traces_span_metrics_duration_seconds_sum",
    "traces_span_metrics_duration_seconds_count",
    // hostmetrics receiver
    "system_cpu_time_seconds_total",
    "system_memory_usage_bytes",
    "system_network_io_bytes_total",
    "system_disk_io_bytes_total",
    "system_filesystem_usage_bytes",
    // the collector's own telemetry (Prometheus job "otelcol"; its internal telemetry exposes
    // counters without the `_total` suffix)
    "otelcol_exporter_send_failed_metric_points",
    "otelcol_exporter_send_failed_spans",
    "otelcol_receiver_refused_spans",
    // Prometheus
    "ALERTS",
    "ALERTS_FOR_STATE",
];

/// Labels the dashboards may use besides the contract's metric attributes (in Prometheus form):
/// target labels from the OTLP resource (`job`, `instance` and the attributes
/// deploy/prometheus/prometheus.yml promotes), histogram and rule labels, alert labels, and the
/// labels of [`EXTERNAL_METRICS`].
pub const EXTERNAL_LABELS: &[&str] = &[
    "job",
    "instance",
    "host_name",
    "service_version",
    "deployment_environment_name",
    "__name__",
    "le",
    "quantile",
    "alertname",
    "alertstate",
    "severity",
    "service_name",
    "span_name",
    "span_kind",
    "status_code",
    "state",
    "direction",
    "device",
    "mountpoint",
    "mode",
    "cpu",
    "exporter",
    "receiver",
];
