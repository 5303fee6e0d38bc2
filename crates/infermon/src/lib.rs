//! infermon: OpenTelemetry-native observability for LLM inference — the bootstrap.
//!
//! The instrumentation itself (contract, typed request API, `tracing` layers, propagation,
//! label caps) lives in [`infermon_instrument`], which depends on the OpenTelemetry API only;
//! its modules are re-exported here so `infermon::contract`, `infermon::request`, … keep
//! working. This crate adds what an application needs to run a pipeline: the SDK providers,
//! OTLP exporters, subscriber assembly, self-metrics and shutdown.
//!
//! ```text
//! telemetry     init(TelemetryConfig) -> Result<TelemetryGuard, TelemetryError>   (needs Tokio)
//!               TelemetryConfig::{new(default_service_name), from_env()} + with_* setters
//!               TelemetryGuard::{meter(scope), tracer(), stats(), flush(), shutdown()}
//!               init_subscriber(&config, tracer, &meter) — the subscriber init installs
//!               tracing_layer(tracer), metrics_layer(&meter) — its two telemetry layers
//! ```
//!
//! See `docs/instrumenting.md` for the two ways to instrument (typed and `tracing` macros).
pub use infermon_instrument::{
    cardinality, contract, duration, exemplars, instruments, layer, propagation, request,
};

pub mod telemetry;
