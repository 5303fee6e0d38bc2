//! Load generator for OpenAI-compatible inference servers (used by `infermon load` and
//! `infermon demo`).
//!
//! - Arrivals: open-loop Poisson at a rate, or closed-loop with N concurrent clients
//!   ([`Arrival`]); stop after a duration, a request count, or an external shutdown.
//! - Prompt and output lengths from [`LengthDist`] (`512`, `uniform:128:1024`,
//!   `normal:512:128`, `lognormal:512:256`); `/v1/chat/completions` or `/v1/completions`;
//!   streaming (SSE parsed as OpenAI clients do, usage from `stream_options.include_usage`) or
//!   not; several target URLs, round robin.
//! - Every request is an OpenTelemetry CLIENT span (`chat {model}`, GenAI client attributes)
//!   whose context goes out in `traceparent`, so the engine's request span joins its trace.
//! - Client-side TTFT, inter-token latency, time per output token and end-to-end latency
//!   percentiles (p50/p95/p99/p99.9) from a constant-memory log-linear histogram; request and
//!   token throughput; errors by HTTP status / OpenAI error type / transport failure.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use infermon_load::{Arrival, LoadConfig, LoadGenerator};
//!
//! let mut config = LoadConfig::new(vec!["http://127.0.0.1:8000".into()], "llama-3-8b");
//! config.arrival = Arrival::Poisson { rate: 20.0 };
//! config.duration = Some(Duration::from_secs(30));
//! let generator = LoadGenerator::new(config)?;
//! let progress = generator.progress(); // poll from another task for live lines
//! let summary = generator.run(std::future::pending()).await?;
//! println!("{summary}");
//! # let _ = progress; Ok(()) }
//! ```

mod client;
mod config;
mod dist;
mod histogram;
mod models;
mod openai;
mod outcome;
mod prompt;
mod request_log;
mod runner;
mod stats;
mod summary;

pub use config::{Arrival, ConfigError, LoadConfig};
pub use dist::{LengthDist, LengthDistError, LENGTH_SYNTAX};
pub use histogram::LatencyHistogram;
pub use infermon_http::sse::SseDecoder;
pub use models::{served_model, ModelLookupError};
pub use openai::Api;
pub use outcome::{Outcome, RequestError};
pub use request_log::{RequestLog, RequestLogError};
pub use runner::LoadGenerator;
pub use stats::{Counts, Progress, Tally, Window};
pub use summary::{
    human_secs, key_counts, Latencies, Percentiles, Requests, Summary, Throughput, Tokens,
};
