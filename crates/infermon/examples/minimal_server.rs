//! A minimal instrumented server loop: a toy continuous-batching engine that admits requests,
//! schedules them, prefills, decodes and finishes them, describing each request's lifecycle
//! with `InferenceRequest` and its own state with `EngineMetrics` every step.
//!
//! ```text
//! cargo run -p infermon --example minimal_server
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4317 cargo run -p infermon --example minimal_server
//! ```
//!
//! Without a collector it still runs to the end: export failures are counted and logged once.

use std::collections::VecDeque;
use std::time::Duration;

use http::HeaderMap;
use infermon::contract::{value, INSTRUMENTATION_SCOPE};
use infermon::instruments::{EngineMetrics, EngineSnapshot, InferenceMetrics};
use infermon::propagation::extract_context;
use infermon::request::{Decoding, InferenceRequest, Prefilling, Queued, RequestParams};
use infermon::telemetry::{self, TelemetryConfig};

const MODEL: &str = "toy-1b";
const REQUESTS: usize = 20;
const MAX_BATCH: usize = 4;
const KV_BLOCKS: u64 = 64;
const STEP: Duration = Duration::from_millis(10);

/// A request the toy engine is working on: its telemetry plus how much is left to generate.
struct Running {
    request: InferenceRequest<Decoding>,
    remaining: u64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let guard = telemetry::init(
        TelemetryConfig::new("minimal-server").with_service_version(env!("CARGO_PKG_VERSION")),
    )?;
    let meter = guard.meter(INSTRUMENTATION_SCOPE);
    let metrics = InferenceMetrics::new(&meter);
    let engine = EngineMetrics::new(&meter, MODEL);

    let mut waiting: VecDeque<InferenceRequest<Queued>> = VecDeque::new();
    let mut prefilling: Vec<InferenceRequest<Prefilling>> = Vec::new();
    let mut running: Vec<Running> = Vec::new();
    let (mut arrived, mut finished) = (0, 0);

    while finished < REQUESTS {
        // Arrivals: two per step. A real server gets the headers from its HTTP request; the
        // caller's `traceparent`, if any, makes the request span part of the caller's trace.
        for _ in 0..2 {
            if arrived < REQUESTS {
                let headers = HeaderMap::new();
                let parent = extract_context(&headers);
                let params = RequestParams {
                    operation: value::OPERATION_CHAT,
                    model: MODEL,
                    provider: "toy",
                    max_tokens: Some(8),
                    temperature: Some(0.0),
                    top_p: None,
                    stream: true,
                    input_tokens: 32 + arrived as u64,
                    response_id: None,
                };
                waiting.push_back(InferenceRequest::start(&metrics, params, Some(&parent)));
                arrived += 1;
            }
        }

        // Prefill finishes one step after scheduling; the first token comes out of it.
        for request in prefilling.drain(..) {
            running.push(Running {
                request: request.first_token(0),
                remaining: 7,
            });
        }

        // Decode: one token per running sequence per step.
        let mut still_running = Vec::with_capacity(running.len());
        for mut r in running.drain(..) {
            r.request.tokens(1);
            r.remaining -= 1;
            if r.remaining == 0 {
                r.request.finish(value::FINISH_LENGTH);
                finished += 1;
            } else {
                still_running.push(r);
            }
        }
        running = still_running;

        // Schedule waiting requests into free batch slots.
        while running.len() + prefilling.len() < MAX_BATCH {
            let Some(request) = waiting.pop_front() else {
                break;
            };
            prefilling.push(request.scheduled(waiting.len() as u64));
        }

        let busy = (running.len() + prefilling.len()) as u64;
        engine.record_step(&EngineSnapshot {
            running: busy,
            waiting: waiting.len() as u64,
            swapped: 0,
            kv_blocks_used: busy * 4,
            kv_blocks_total: KV_BLOCKS,
            iterations: 1,
            preemptions: 0,
        });
        tokio::time::sleep(STEP).await;
    }

    let stats = guard.stats();
    println!(
        "served {finished} requests; spans dropped: {}, failed exports: {} traces / {} metrics",
        stats.spans_dropped, stats.span_export_failures, stats.metric_export_failures
    );
    // Bounded even with the collector down; then what was pending is reported lost, which is
    // worth a line on stderr but not a failed exit.
    if let Err(e) = guard.shutdown() {
        eprintln!("{e}");
    }
    Ok(())
}
