//! An OpenAI-style `/v1/chat/completions` server with streaming, instrumented with `tracing`
//! macros only — the macros path of docs/instrumenting.md. No infermon type is in the request
//! path: the contract's span and field names are written out, and `telemetry::init`'s layers
//! export the spans and derive every request metric from them.
//!
//! ```text
//! cargo run -p infermon --example axum_macros            # listens on 127.0.0.1:8088
//! curl -N localhost:8088/v1/chat/completions -H 'content-type: application/json' \
//!   -d '{"model":"toy","stream":true,"max_tokens":5,"messages":[{"role":"user","content":"hi"}]}'
//! ```
//!
//! `tests/axum_example.rs` drives it and checks the exported spans and metrics.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt as _;
use axum::{Json, Router};
use futures::StreamExt as _;
use tokio::sync::Semaphore;
use tracing::field::Empty;
use tracing::{info, info_span, Instrument as _, Span};

/// How many requests the toy engine decodes at once; the rest wait (the `queue` phase).
const SLOTS: usize = 4;
const TOKEN_TIME: Duration = Duration::from_millis(2);

#[derive(Clone)]
pub struct Engine {
    slots: Arc<Semaphore>,
}

/// The server's routes.
pub fn app() -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .with_state(Engine {
            slots: Arc::new(Semaphore::new(SLOTS)),
        })
}

async fn chat(State(engine): State<Engine>, headers: HeaderMap, body: Bytes) -> Response {
    let body: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(e) => return reject(&headers, "unknown", &format!("invalid JSON body: {e}")),
    };
    let Some(model) = body["model"].as_str().map(str::to_owned) else {
        return reject(&headers, "unknown", "`model` is required");
    };
    let max_tokens = body["max_tokens"].as_u64().unwrap_or(16).clamp(1, 64);
    let prompt = body["messages"].to_string();
    let input_tokens = (prompt.len() as u64 / 4).max(1);

    // The caller's `traceparent`, current while the request span is created, parents it.
    let caller = infermon::propagation::extract_context(&headers).attach();
    let request = info_span!(
        "inference_request",
        otel.name = format!("chat {model}").as_str(),
        otel.kind = "server",
        gen_ai.operation.name = "chat",
        gen_ai.provider.name = "axum-example",
        gen_ai.request.model = model.as_str(),
        gen_ai.request.max_tokens = max_tokens,
        gen_ai.request.stream = true,
        gen_ai.usage.input_tokens = input_tokens,
        gen_ai.response.time_to_first_chunk = Empty,
        gen_ai.usage.output_tokens = Empty,
        gen_ai.response.finish_reasons = Empty,
        error.type = Empty,
        otel.status_code = Empty,
    );
    drop(caller);
    let arrived = Instant::now();

    // Queue: wait for a decode slot.
    let permit = engine
        .slots
        .clone()
        .acquire_owned()
        .instrument(info_span!(parent: &request, "queue"))
        .await
        .expect("the semaphore is never closed");

    // Prefill: the service's own instrumented work nests under the phase it runs in.
    let prefill = info_span!(
        parent: &request,
        "prefill",
        llm.prefill.computed_tokens = input_tokens,
        llm.prefill.cached_tokens = 0u64
    );
    async {
        tokenize(&prompt);
        tokio::time::sleep(TOKEN_TIME).await;
    }
    .instrument(prefill)
    .await;
    let ttft = arrived.elapsed().as_secs_f64();
    info!(parent: &request, llm.time_to_first_token = ttft, "first_token");
    request.record("gen_ai.response.time_to_first_chunk", ttft);

    // Decode: streamed; the spans live in the stream and end with it.
    let decode = info_span!(
        parent: &request,
        "decode",
        llm.decode.output_tokens = Empty
    );
    let generation = Generation {
        request,
        decode,
        produced: 1,
        target: max_tokens,
        _slot: permit,
        finished: false,
    };
    let first = chunk(&model, "tok0 ");
    let stream = futures::stream::once(async move { first }).chain(futures::stream::unfold(
        (generation, model),
        |(mut g, model)| async move {
            if g.finished {
                return None;
            }
            if g.produced == g.target {
                g.finish("length");
                return Some((Ok("data: [DONE]\n\n".to_owned()), (g, model)));
            }
            tokio::time::sleep(TOKEN_TIME).await;
            let text = format!("tok{} ", g.produced);
            g.produced += 1;
            Some((chunk(&model, &text), (g, model)))
        },
    ));
    (
        [("content-type", "text/event-stream")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// A request turned away before it reaches the engine still becomes a trace and a count: a
/// SERVER span whose `error.type` the metrics layer counts in `llm.requests` (outcome `error`).
fn reject(headers: &HeaderMap, model: &str, message: &str) -> Response {
    let caller = infermon::propagation::extract_context(headers).attach();
    let _request = info_span!(
        "inference_request",
        otel.name = format!("chat {model}").as_str(),
        otel.kind = "server",
        gen_ai.operation.name = "chat",
        gen_ai.provider.name = "axum-example",
        gen_ai.request.model = model,
        error.type = "invalid_request",
        otel.status_code = "error",
    );
    drop(caller);
    let error = serde_json::json!({"error": {"message": message,
        "type": "invalid_request_error"}});
    (StatusCode::BAD_REQUEST, Json(error)).into_response()
}

fn chunk(model: &str, text: &str) -> Result<String, Infallible> {
    let data = serde_json::json!({"object": "chat.completion.chunk", "model": model,
        "choices": [{"index": 0, "delta": {"content": text}}]});
    Ok(format!("data: {data}\n\n"))
}

#[tracing::instrument(skip_all, fields(prompt_bytes = prompt.len()))]
fn tokenize(prompt: &str) -> usize {
    prompt.split_whitespace().count()
}

/// One streaming generation. If the client goes away mid-stream the stream is dropped, and
/// the request is recorded as aborted instead of left unended.
struct Generation {
    request: Span,
    decode: Span,
    produced: u64,
    target: u64,
    _slot: tokio::sync::OwnedSemaphorePermit,
    finished: bool,
}

impl Generation {
    fn finish(&mut self, reason: &str) {
        self.finished = true;
        self.decode
            .record("llm.decode.output_tokens", self.produced);
        self.decode = Span::none();
        self.request
            .record("gen_ai.response.finish_reasons", reason);
        self.request
            .record("gen_ai.usage.output_tokens", self.produced);
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        if !self.finished {
            self.finish("abort");
        }
    }
}

#[allow(dead_code)] // the test includes this file for `app` only
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let _telemetry = infermon::telemetry::init(infermon::telemetry::TelemetryConfig::new(
        "axum-macros-example",
    ))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8088").await?;
    tracing::info!("listening on {}", listener.local_addr()?);
    // Streamed tokens leave at once instead of waiting for the previous segment's ACK.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app()).await?;
    Ok(())
}
