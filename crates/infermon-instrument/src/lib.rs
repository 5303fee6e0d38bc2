//! infermon-instrument: instrument an LLM inference service through `tracing`.
//!
//! Depends on `tracing`, `tracing-subscriber` (registry and `Layer` only) and the OpenTelemetry
//! **API** — no SDK, no exporter — so a library can instrument with it and leave the pipeline
//! to the application (the `infermon` crate's `telemetry::init` assembles one).
//!
//! # The public API at a glance
//!
//! ```text
//! contract      every span/field/attribute/metric name, unit, well-known value and bucket set
//! request       typed path:
//!               InferenceRequest::start(&metrics, RequestParams { .. }, parent: Option<&Context>)
//!                 Queued    .scheduled(queue_position)        -> Prefilling
//!                 Prefilling.first_token(cached_input_tokens) -> Decoding
//!                 Decoding  .tokens(n), .finish(finish_reason)
//!                 any state .preempted(), .resumed(), .fail(error_type), .abort(), .span(),
//!                           .phase_span(), .context(), .record_{input,output}_messages(json),
//!                           .into_tracked()
//!                 every transition has an `_at(.., SystemTime)` twin
//!               TrackedRequest: the same with `&mut self` transitions valid in any phase
//! layer         MetricsLayer::new(InferenceMetrics)  — the contract's metrics from the spans
//!               OtelLayer::new(tracer)               — spans/events to an OpenTelemetry tracer
//!               InfermonLayer::new(otel, metrics)    — both in one pass (what `init` installs)
//!                 .with_log_layer(filtered_fmt, ignores) — a log layer run inside it
//!                 .log_skips_enter_exit()            — for a log with no use for span enters
//!               context_of(&tracing::Span) -> Context
//! instruments   InferenceMetrics::{new(&meter), with_model_cap(&meter, cap), builder(&meter)}
//!               EngineMetrics::new(&meter, model).record_step(&EngineSnapshot { .. })
//! exemplars     TracedHistogram::bind(..).record(value, ids), registry().drain() — trace ids on
//!               latency points (the SDK records none; the bootstrap's exporter attaches them)
//! propagation   extract_context(&HeaderMap) -> Context, inject_context(&Context, &mut HeaderMap)
//! cardinality   LabelCap::new(cap).get(value) -> StringValue (value, or "other" past the cap)
//!               LabelCap::with_policy(cap, &LabelPolicy { allow, idle_eviction }), LabelPolicy::process()
//! duration      parse_duration("30s") — the unit syntax every flag and variable accepts
//! ```
//!
//! The macros path — the same spans written with `tracing::info_span!` — is described in
//! `docs/instrumenting.md` and shown in `crates/infermon/examples/axum_macros.rs`.
pub mod cardinality;
pub mod contract;
pub mod duration;
pub mod exemplars;
pub mod instruments;
pub mod layer;
pub mod propagation;
pub mod request;
