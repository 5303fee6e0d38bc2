//! infermon: OpenTelemetry-native observability for LLM inference.
//!
//! # The public API at a glance
//!
//! ```text
//! contract      every span/attribute/metric name, unit, well-known value and bucket set
//! telemetry     init(TelemetryConfig) -> Result<TelemetryGuard, TelemetryError>   (needs Tokio)
//!               TelemetryConfig::{new(default_service_name), from_env()} + with_* setters
//!               TelemetryGuard::{meter(scope), tracer(), stats(), flush(), shutdown()}
//!               tracing_layer(tracer)  — the configured tracing-opentelemetry layer
//! instruments   InferenceMetrics::{new(&meter), with_model_cap(&meter, cap), builder(&meter)}
//!               EngineMetrics::new(&meter, model).record_step(&EngineSnapshot { .. })
//! request       InferenceRequest::start(&metrics, RequestParams { .. }, parent: Option<&Context>)
//!                 Queued    .scheduled(queue_position)        -> Prefilling
//!                 Prefilling.first_token(cached_input_tokens) -> Decoding
//!                 Decoding  .tokens(n), .finish(finish_reason)
//!                 any state .preempted(), .resumed(), .fail(error_type), .abort(),
//!                           .span(), .context(), .record_prompt(text), .record_completion(text)
//!                 every transition has an `_at(.., SystemTime)` twin (start_at, scheduled_at, ..)
//! propagation   extract_context(&HeaderMap) -> Context, inject_context(&Context, &mut HeaderMap)
//! cardinality   LabelCap::new(cap).get(value) -> StringValue (value, or "other" past the cap)
//! ```
//!
//! A minimal instrumented server loop is in `examples/minimal_server.rs`.
pub mod cardinality;
pub mod contract;
pub mod instruments;
pub mod propagation;
pub mod request;
pub mod telemetry;
