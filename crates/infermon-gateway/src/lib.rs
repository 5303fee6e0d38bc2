//! `infermon gateway`: an OpenAI-compatible reverse proxy in front of several inference
//! engines (infermon sims, vLLM, any OpenAI-compatible server), which observes what only a
//! client can.
//!
//! ```text
//! Gateway::new(GatewayConfig, &Meter) -> Gateway;  .router() -> axum::Router;  .spawn_probe()
//!   POST /v1/chat/completions, /v1/completions   routed, streamed through, observed
//!   GET  /v1/models                              the union of the upstreams' models
//!   GET  /health                                 200 while an upstream is healthy
//! serve with infermon_http::serve (TCP_NODELAY, timeouts, connection cap, drain)
//! ```
//!
//! - [`upstreams`]: least outstanding requests among the healthy upstreams that serve the
//!   model; passive health (consecutive failures) and an active `/v1/models` probe.
//! - [`proxy`]: one SERVER span per request (parented by the caller's `traceparent`), one
//!   CLIENT span per upstream attempt (its context goes upstream as `traceparent`); failover to
//!   another upstream on connection failure, timeout or 5xx — only before the first byte went to
//!   the client, within a retry budget.
//! - [`body`]: the response streamed back frame by frame, unchanged; client-side TTFT,
//!   inter-token latency, usage; a client that disconnects closes the upstream request.
//! - [`tenants`]: API keys (SHA-256 digests) → tenants, per-tenant concurrency and rate limits.
//! - [`tls`]: `https://` upstreams (rustls, system roots plus configured CA bundles).
//! - [`telemetry`]: the contract's latencies with `llm.upstream`, per-tenant requests, tokens
//!   and cost.

pub mod body;
pub mod client;
pub mod config;
pub mod proxy;
pub mod telemetry;
pub mod tenants;
pub mod tls;
pub mod upstreams;

pub use config::{
    hash_key, ConfigError, GatewayConfig, Price, Role, Routing, TenantConfig, UpstreamConfig,
};
pub use proxy::{Gateway, TARGET};
