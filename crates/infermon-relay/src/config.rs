//! What the relay listens on, where it forwards, and how it names vLLM's models.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use infermon_instrument::contract::value;

/// The relay's configuration. [`RelayConfig::new`] gives the defaults documented in
/// `docs/relay.md`.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// OTLP/gRPC listen address (vLLM's default protocol).
    pub grpc_listen: SocketAddr,
    /// OTLP/HTTP listen address (`POST /v1/traces`, `application/x-protobuf`).
    pub http_listen: SocketAddr,
    /// Upstream OTLP/gRPC endpoint (the collector), e.g. `http://127.0.0.1:4317`.
    pub upstream: String,
    /// Model names for vLLM's spans, which carry none.
    pub models: ModelNames,
    /// `gen_ai.operation.name` when the request id does not tell (vLLM's OpenAI server ids
    /// start `chatcmpl-` or `cmpl-`).
    pub default_operation: String,
    /// Largest request accepted, in bytes (gRPC message or HTTP body).
    pub max_message_bytes: usize,
    /// Most spans waiting for the collector; past it, senders get a retryable refusal.
    pub queue_spans: usize,
    /// Concurrent exports to the collector.
    pub export_workers: usize,
    /// Timeout of one export attempt.
    pub export_timeout: Duration,
    pub retry: RetryPolicy,
    /// What a refused sender is told to wait (`Retry-After`, gRPC `RetryInfo`).
    pub retry_after: Duration,
    /// Connection limits of both receivers: the header-read and idle timeouts (OTLP/HTTP),
    /// the connection cap (each receiver), and how long open requests may finish on shutdown.
    pub serve: infermon_http::ServeOptions,
}

impl RelayConfig {
    pub fn new(upstream: impl Into<String>) -> Self {
        RelayConfig {
            grpc_listen: SocketAddr::from(([0, 0, 0, 0], 4319)),
            http_listen: SocketAddr::from(([0, 0, 0, 0], 4320)),
            upstream: upstream.into(),
            models: ModelNames::new(DEFAULT_MODEL),
            default_operation: value::OPERATION_CHAT.to_owned(),
            max_message_bytes: 4 * 1024 * 1024,
            queue_spans: 65_536,
            export_workers: 2,
            export_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            retry_after: Duration::from_secs(1),
            serve: infermon_http::ServeOptions::default(),
        }
    }
}

/// Model name used when neither the service's mapping nor `--model` gives one.
pub const DEFAULT_MODEL: &str = "unknown";

/// Retry with exponential backoff, as the OpenTelemetry exporters do.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Give a batch up once this much time has passed since its first attempt.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            max_elapsed: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `attempt` (0-based): initial × 2^attempt, capped.
    pub fn backoff(&self, attempt: u32) -> Duration {
        self.initial_backoff
            .saturating_mul(1u32.checked_shl(attempt.min(30)).unwrap_or(u32::MAX))
            .min(self.max_backoff)
    }
}

/// `gen_ai.request.model` for vLLM's spans, by the resource's `service.name` (vLLM's
/// `OTEL_SERVICE_NAME`), with a default.
#[derive(Debug, Clone)]
pub struct ModelNames {
    default: String,
    by_service: HashMap<String, String>,
}

impl ModelNames {
    pub fn new(default: impl Into<String>) -> Self {
        ModelNames {
            default: default.into(),
            by_service: HashMap::new(),
        }
    }

    pub fn with_service(mut self, service: impl Into<String>, model: impl Into<String>) -> Self {
        self.by_service.insert(service.into(), model.into());
        self
    }

    /// The model of a service, or the default.
    pub fn for_service(&self, service: Option<&str>) -> &str {
        service
            .and_then(|s| self.by_service.get(s))
            .unwrap_or(&self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
            max_elapsed: Duration::from_secs(1),
        };
        let waits: Vec<u128> = (0..5).map(|a| p.backoff(a).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 500, 500]);
        assert_eq!(p.backoff(1000), Duration::from_millis(500));
    }

    #[test]
    fn model_by_service_with_default() {
        let m = ModelNames::new("llama").with_service("vllm-a", "qwen");
        assert_eq!(m.for_service(Some("vllm-a")), "qwen");
        assert_eq!(m.for_service(Some("vllm-b")), "llama");
        assert_eq!(m.for_service(None), "llama");
    }
}
