//! Request handlers: parse and validate, admit into the engine, then answer from the engine's
//! events — all at once (non-streaming) or as server-sent events.

use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use infermon::contract::value;
use infermon::propagation::extract_context;
use infermon::request::{InferenceRequest, RequestParams};
use rand::RngExt;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::api::error::ApiError;
use crate::api::stream::{Api, ChunkWriter, StreamState};
use crate::api::types::{
    AssistantMessage, ChatChoice, ChatCompletion, ChatRequest, CompletionRequest, ModelCard,
    ModelList, Sampling, TextChoice, TextCompletion, Usage,
};
use crate::engine::{lock, Command, Event, FinishReason, Submission};
use crate::faults::ErrorKind;
use crate::scheduler::SeqSpec;
use crate::tokens;
use crate::SimHandle;

/// Reported as `system_fingerprint`, so nobody mistakes the output for a model's.
const FINGERPRINT: &str = "infermon-simulator";

pub async fn chat(
    State(sim): State<SimHandle>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let request: ChatRequest = match parse(&sim, body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let prompt = match request.prompt_bytes() {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    generate(
        &sim,
        &headers,
        Api::Chat,
        &request.model,
        &request.sampling,
        prompt,
    )
    .await
}

pub async fn completions(
    State(sim): State<SimHandle>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let request: CompletionRequest = match parse(&sim, body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let prompt = match request.prompt_bytes() {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    generate(
        &sim,
        &headers,
        Api::Completion,
        &request.model,
        &request.sampling,
        prompt,
    )
    .await
}

fn parse<T: DeserializeOwned>(
    sim: &SimHandle,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::body_too_large(sim.config().max_body_bytes)
        } else {
            ApiError::unreadable_body(rejection.body_text())
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_json(&e))
}

/// What a request turned into after validation: the engine's view of it.
struct Plan {
    prompt_tokens: u32,
    output_tokens: u32,
    finish_reason: FinishReason,
    /// `max_tokens` as vLLM resolves it (the context left when the client gave none).
    max_tokens: u32,
}

/// Checks the model and the context length, and decides how long the completion will be.
fn plan(
    sim: &SimHandle,
    model: &str,
    sampling: &Sampling,
    prompt: &[u8],
) -> Result<Plan, ApiError> {
    let served = sim.model();
    if model != served {
        return Err(ApiError::model_not_found(model, served));
    }
    sampling.validate()?;
    let max_len = sim.max_model_len();
    // An empty prompt still costs one token (the BOS token a real tokenizer adds).
    let prompt_tokens = tokens::count_bytes(prompt.len()).max(1);
    if prompt_tokens >= max_len {
        return Err(ApiError::context_exceeded(
            if sampling.max_tokens().is_some() {
                "max_tokens"
            } else {
                "messages"
            },
            format!(
                "This model's maximum context length is {max_len} tokens. However, your prompt \
                 has {prompt_tokens} tokens, leaving no room for output. Shorten the prompt."
            ),
        ));
    }
    let room = max_len - prompt_tokens;
    let limit = match sampling.max_tokens() {
        Some(requested) if requested > u64::from(room) => {
            return Err(ApiError::context_exceeded(
                "max_tokens",
                format!(
                    "This model's maximum context length is {max_len} tokens. However, you \
                     requested {} tokens ({prompt_tokens} in the prompt, {requested} for the \
                     completion). Reduce max_tokens to at most {room}.",
                    u64::from(prompt_tokens) + requested
                ),
            ));
        }
        Some(requested) => requested as u32,
        None => room,
    };
    let output = &sim.config().output;
    let natural = if sampling.ignore_eos {
        u32::MAX
    } else {
        let span = u64::from(output.max_tokens - output.min_tokens) + 1;
        let pick = tokens::prompt_fingerprint(prompt, sim.config().seed) % span;
        output.min_tokens + pick as u32
    };
    let (output_tokens, finish_reason) = if natural < limit {
        (natural, FinishReason::Stop)
    } else {
        (limit, FinishReason::Length)
    };
    Ok(Plan {
        prompt_tokens,
        output_tokens,
        finish_reason,
        max_tokens: limit,
    })
}

async fn generate(
    sim: &SimHandle,
    headers: &HeaderMap,
    api: Api,
    model: &str,
    sampling: &Sampling,
    prompt: Vec<u8>,
) -> Response {
    let plan = match plan(sim, model, sampling, &prompt) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let (id_prefix, operation) = match api {
        Api::Chat => ("chatcmpl-", value::OPERATION_CHAT),
        Api::Completion => ("cmpl-", value::OPERATION_TEXT_COMPLETION),
    };
    let response_id = format!("{id_prefix}{}", uuid::Uuid::new_v4().simple());
    let shared = sim.shared();
    let arrived = shared.clock.now_system();
    let parent = extract_context(headers);
    let request = InferenceRequest::start_at(
        &sim.request_metrics,
        RequestParams {
            operation,
            model,
            provider: value::PROVIDER_SIMULATOR,
            max_tokens: sampling.max_tokens(),
            temperature: sampling.temperature,
            top_p: sampling.top_p,
            stream: sampling.stream,
            input_tokens: u64::from(plan.prompt_tokens),
            response_id: Some(&response_id),
        },
        Some(&parent),
        arrived,
    );

    // Injected faults first (an overloaded server rejects before queueing), then admission.
    let faults = shared.faults_now();
    let (injected, fail_at) = {
        let mut rng = lock(&shared.rng);
        let injected = faults.roll_error(&mut *rng);
        let fail_at = (injected == Some(ErrorKind::MidStream)).then(|| {
            if plan.output_tokens > 1 {
                rng.random_range(1..plan.output_tokens)
            } else {
                0
            }
        });
        (injected, fail_at)
    };
    if let Some(kind) = injected.filter(|k| *k != ErrorKind::MidStream) {
        shared.rejected.fetch_add(1, Ordering::Relaxed);
        request.fail(kind.as_str());
        return ApiError::injected(kind).into_response();
    }
    let max_waiting = sim.config().scheduler.max_waiting;
    let queue_position = shared.fresh_waiting.fetch_add(1, Ordering::AcqRel);
    if queue_position >= u64::from(max_waiting) {
        shared.fresh_waiting.fetch_sub(1, Ordering::AcqRel);
        shared.rejected.fetch_add(1, Ordering::Relaxed);
        request.fail(value::ERROR_QUEUE_FULL);
        return ApiError::queue_full(max_waiting).into_response();
    }

    let block_hashes = tokens::block_hashes(&prompt, sim.config().kv_cache.block_size);
    let (events, mut receiver) = mpsc::unbounded_channel();
    let submission = Submission {
        spec: SeqSpec {
            prompt_tokens: plan.prompt_tokens,
            output_tokens: plan.output_tokens,
            block_hashes,
        },
        finish_reason: plan.finish_reason,
        fail_at,
        max_tokens: plan.max_tokens,
        request,
        arrived,
        queue_position,
        events,
    };
    if let Err(mpsc::error::SendError(command)) =
        shared.commands.send(Command::Submit(Box::new(submission)))
    {
        shared.fresh_waiting.fetch_sub(1, Ordering::AcqRel);
        if let Command::Submit(s) = command {
            s.request.fail(value::ERROR_SHUTDOWN);
        }
        return ApiError::engine_stopped().into_response();
    }

    let created = unix_seconds();
    if sampling.stream {
        let state = StreamState {
            events: receiver,
            writer: ChunkWriter::new(api, &response_id, created, model),
            include_usage: sampling.include_usage(),
            prompt_tokens: plan.prompt_tokens,
            finished: false,
        };
        return (
            [
                (header::CONTENT_TYPE, "text/event-stream"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            state.into_body(),
        )
            .into_response();
    }

    // Non-streaming: wait for the last token. If the client hangs up, this future is dropped
    // with the receiver, and the engine aborts the sequence.
    loop {
        match receiver.recv().await {
            Some(Event::Token {
                index,
                cached_tokens,
                finish: Some(reason),
            }) => {
                let usage = Usage::new(plan.prompt_tokens, index + 1, cached_tokens);
                let text = tokens::filler_text(index + 1);
                return completed(api, &response_id, created, model, text, reason, usage);
            }
            Some(Event::Token { .. }) => {}
            Some(Event::Failed(failure)) => {
                return ApiError::engine_failure(failure).into_response()
            }
            None => return ApiError::engine_stopped().into_response(),
        }
    }
}

fn completed(
    api: Api,
    id: &str,
    created: u64,
    model: &str,
    text: String,
    reason: FinishReason,
    usage: Usage,
) -> Response {
    match api {
        Api::Chat => Json(ChatCompletion {
            id,
            object: "chat.completion",
            created,
            model,
            choices: [ChatChoice {
                index: 0,
                message: AssistantMessage {
                    role: "assistant",
                    content: text,
                },
                logprobs: None,
                finish_reason: reason.as_str(),
            }],
            usage,
            system_fingerprint: FINGERPRINT,
        })
        .into_response(),
        Api::Completion => Json(TextCompletion {
            id,
            object: "text_completion",
            created,
            model,
            choices: [TextChoice {
                index: 0,
                text,
                logprobs: None,
                finish_reason: reason.as_str(),
            }],
            usage,
            system_fingerprint: FINGERPRINT,
        })
        .into_response(),
    }
}

pub async fn models(State(sim): State<SimHandle>) -> Response {
    Json(ModelList {
        object: "list",
        data: [ModelCard {
            id: sim.model(),
            object: "model",
            created: sim.started_unix(),
            owned_by: FINGERPRINT,
            max_model_len: sim.max_model_len(),
        }],
    })
    .into_response()
}

/// 200 with an empty body while the engine runs (as vLLM answers), 503 once it stopped.
pub async fn health(State(sim): State<SimHandle>) -> Response {
    if sim.shared().commands.is_closed() {
        ApiError::engine_stopped().into_response()
    } else {
        StatusCode::OK.into_response()
    }
}

/// vLLM's Prometheus text format (routed only when `metrics = "vllm"`).
pub async fn vllm_metrics(State(sim): State<SimHandle>) -> Response {
    let shared = sim.shared();
    let Some(histograms) = &shared.vllm else {
        return ApiError::not_found("GET", "/metrics").into_response();
    };
    let snapshot = lock(histograms).clone();
    let text = crate::vllm_format::render(sim.model(), &snapshot, &shared.vllm_gauges());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

pub async fn not_found(method: Method, uri: Uri) -> Response {
    ApiError::not_found(method.as_str(), uri.path()).into_response()
}

pub async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    ApiError::method_not_allowed(method.as_str(), uri.path()).into_response()
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
