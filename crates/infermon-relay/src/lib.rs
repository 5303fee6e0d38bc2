//! `infermon relay`: an OTLP trace relay that sits between vLLM and the collector.
//!
//! vLLM (0.33) emits one flat `llm_request` span per finished request, with its phases only as
//! float-seconds attributes. The relay rebuilds the phases as `queue`, `prefill` and `decode`
//! child spans plus a `first_token` event ([`expand`]), maps vLLM's attributes onto the
//! contract's names, and forwards everything — expanded or passed through unchanged — to an
//! upstream OTLP/gRPC endpoint ([`forward`]) through a bounded queue with retries.
//!
//! ```text
//! Relay::start(RelayConfig, &Meter) -> Result<RelayHandle, RelayError>
//!   receives: OTLP/gRPC TraceService (grpc)  +  OTLP/HTTP protobuf POST /v1/traces (http)
//!   intake:   decode -> expand::expand_request -> forward::Forwarder::enqueue
//!             -> latency::LatencyMetrics::record (the expanded requests' latencies, exemplars)
//!   forward:  bounded queue (spans) -> workers -> upstream TraceService, retry with backoff
//! RelayHandle::{grpc_addr(), http_addr(), stats(), shutdown(grace)}
//! ```

pub mod config;
pub mod expand;
pub mod forward;
pub mod grpc;
pub mod http;
pub mod latency;
pub mod stats;

mod relay;

pub use config::{ModelNames, RelayConfig, RetryPolicy};
pub use relay::{Relay, RelayError, RelayHandle};
pub use stats::{RelayStats, StatsSnapshot};
