//! End-to-end harness: the real OpenTelemetry Collector, Prometheus, Jaeger and Alertmanager
//! started from the cached binaries on loopback, the `infermon` binary as the workload, and
//! clients for the stack's HTTP APIs.

pub mod alerting;
pub mod dashboards;
pub mod http_api;
pub mod stack;
pub mod tiers;
pub mod victoriametrics;
