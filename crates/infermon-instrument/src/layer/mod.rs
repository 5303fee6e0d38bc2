//! The two `tracing` layers that turn the contract's spans into telemetry:
//!
//! * [`MetricsLayer`] derives every request metric of the contract from the request span, its
//!   phase spans and its `first_token` event (in the spirit of tracing-opentelemetry's
//!   `MetricsLayer`, but for the inference contract);
//! * [`OtelLayer`] bridges `tracing` spans and events to an OpenTelemetry API
//!   [`Tracer`](opentelemetry::trace::Tracer), with explicit timestamps through documented
//!   fields ([`contract::field`](crate::contract::field)).
//!
//! [`InfermonLayer`] is the two in one (one registry lookup per callback, one visit of a span's
//! fields feeding both layers, and both layers' state of a span kept as one extension),
//! optionally with a log layer run inside it;
//! `telemetry::init` installs it. Both work with any span: the macros path (a service's own
//! `tracing::info_span!`s named and fielded per the contract) and the typed path
//! ([`InferenceRequest`](crate::request)) emit the same spans and so get the same telemetry (the
//! typed path records its metrics itself, by the metrics layer's rules, into the metrics layer's
//! instruments: see [`MetricsLayer`]).

mod bridge;
mod combined;
mod fields;
mod metrics;

pub use bridge::{context_of, OtelLayer};
pub(crate) use bridge::{
    create_prepared, event_prepared, string_value, PreparedEvent, PreparedSpan,
};
pub use combined::InfermonLayer;
pub(crate) use fields::{attribute_int, seconds};
pub use fields::{from_unix_nanos, unix_nanos};
pub use metrics::MetricsLayer;
pub(crate) use metrics::{Phase as MetricPhase, PhaseState, RequestState, TypedMetrics};
