//! Request handlers: parse and validate, admit into the engine, then answer from the engine's
//! events — all at once (non-streaming) or as server-sent events.
//!
//! One request becomes one engine sequence per choice: `n` choices for each prompt (the
//! completions API takes a batch of prompts), as vLLM fans a request out into child requests.
//! Each sequence is scheduled, batched and traced on its own; the response merges them by
//! choice index (prompt × n + j, as vLLM's `OpenAIServingCompletion` numbers them).

use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::vllm_trace::VllmSpan;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::StreamExt;
use infermon::contract::{attr, field, value};
use infermon::layer::unix_nanos;
use infermon::propagation::extract_context;
use infermon::request::{InferenceRequest, RequestParams};
use rand::RngExt;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::api::error::{ApiError, SimErrors as _, ROUTES};
use crate::api::output::{self, Ending, Script};
use crate::api::rejected::Rejection;
use crate::api::stream::{merge, Api, ChoiceSpec, ChunkWriter, Shape, StreamState};
use crate::api::types::{
    ChatRequest, CompletionRequest, Format, ModelCard, ModelList, Sampling, ToolCall, Usage,
};
use crate::engine::{lock, Command, Event, FinishReason, Submission};
use crate::faults::ErrorKind;
use crate::scheduler::SeqSpec;
use crate::server::ReceivedAt;
use crate::tokens;
use crate::SimHandle;

/// Reported as `system_fingerprint`, so nobody mistakes the output for a model's.
const FINGERPRINT: &str = "infermon-simulator";

/// A request, validated: what every API's handler hands to [`generate`].
pub struct Generation<'a> {
    api: Api,
    model: &'a str,
    sampling: &'a Sampling,
    /// Each prompt's bytes (counted and hashed) and, with `echo`, its text.
    prompts: Vec<(Vec<u8>, Option<String>)>,
    logprobs: Option<u32>,
    tool: Option<ToolCall>,
}

/// An OpenAI request body the simulator serves: how it is validated into a [`Generation`].
pub trait ApiRequest: DeserializeOwned + Send + 'static {
    const API: Api;
    fn model(&self) -> &str;
    fn streaming(&self) -> bool;
    fn generation(&self) -> Result<Generation<'_>, ApiError>;
}

impl ApiRequest for ChatRequest {
    const API: Api = Api::Chat;
    fn model(&self) -> &str {
        &self.model
    }
    fn streaming(&self) -> bool {
        self.sampling.stream
    }
    fn generation(&self) -> Result<Generation<'_>, ApiError> {
        chat_generation(self)
    }
}

impl ApiRequest for CompletionRequest {
    const API: Api = Api::Completion;
    fn model(&self) -> &str {
        &self.model
    }
    fn streaming(&self) -> bool {
        self.sampling.stream
    }
    fn generation(&self) -> Result<Generation<'_>, ApiError> {
        completion_generation(self)
    }
}

/// `POST /v1/chat/completions` (`R` = [`ChatRequest`]) and `POST /v1/completions`
/// ([`CompletionRequest`]): parse, validate, generate; a rejection is answered (and counted)
/// as the API's.
pub async fn handle<R: ApiRequest>(
    State(sim): State<SimHandle>,
    received: Option<Extension<ReceivedAt>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let request: R = match parse(&sim, &headers, body) {
        Ok(r) => r,
        Err(rejection) => return rejection.respond(&sim, &headers, R::API),
    };
    let generation = match request.generation() {
        Ok(g) => g,
        Err(e) => {
            return Rejection::new(e, request.model(), request.streaming()).respond(
                &sim,
                &headers,
                R::API,
            )
        }
    };
    generate(&sim, arrival(received), &headers, generation).await
}

/// Validates a chat request: its prompt, `logprobs` and tool choice.
fn chat_generation(request: &ChatRequest) -> Result<Generation<'_>, ApiError> {
    let prompt = request.prompt_bytes()?;
    let logprobs = request.logprobs()?;
    let tool = request.tool_call()?;
    if tool.is_some() && request.sampling.format()? != Format::Text {
        // vLLM's `check_structured_outputs_count`.
        return Err(ApiError::invalid(
            "response_format",
            "You can only either use constraints for structured outputs or tools, not both.",
        ));
    }
    // An echo goes into the message content; a forced tool call has none.
    let echo = request.echo_text().filter(|_| tool.is_none());
    Ok(Generation {
        api: Api::Chat,
        model: &request.model,
        sampling: &request.sampling,
        prompts: vec![(prompt, echo)],
        logprobs,
        tool,
    })
}

/// Validates a completions request: its prompts and `logprobs`.
fn completion_generation(request: &CompletionRequest) -> Result<Generation<'_>, ApiError> {
    let prompts = request.prompts()?;
    let logprobs = request.logprobs()?;
    let echo = request.echo;
    Ok(Generation {
        api: Api::Completion,
        model: &request.model,
        sampling: &request.sampling,
        prompts: prompts
            .into_iter()
            .map(|(bytes, text)| (bytes, echo.then_some(text)))
            .collect(),
        logprobs,
        tool: None,
    })
}

/// Everything a `/v1/chat/completions` (`chat`) or `/v1/completions` body goes through before
/// the engine sees it — the JSON, the validation, each choice's output plan — without
/// submitting it; returns the number of choices. For the fuzz targets (`fuzz/`): the handlers'
/// own code path, minus the engine and the telemetry of a rejection.
#[doc(hidden)]
pub fn check_request(sim: &SimHandle, chat: bool, body: &[u8]) -> Result<usize, ApiError> {
    fn plan<R: ApiRequest>(sim: &SimHandle, body: &[u8]) -> Result<usize, ApiError> {
        let request: R = parse_json(body).map_err(|r| r.error)?;
        Ok(plan_choices(sim, &request.generation()?)?.choices.len())
    }
    if chat {
        plan::<ChatRequest>(sim, body)
    } else {
        plan::<CompletionRequest>(sim, body)
    }
}

/// When the request arrived: its headers were read (the router used without [`crate::serve`]
/// has no such stamp, and then it is now).
fn arrival(received: Option<Extension<ReceivedAt>>) -> tokio::time::Instant {
    received.map_or_else(tokio::time::Instant::now, |Extension(r)| r.0)
}

/// Reads the body as the API's JSON. Like vLLM (`validate_json_request`,
/// vllm/entrypoints/serve/utils/api_utils.py, vLLM 0.33.0), a Content-Type other than
/// `application/json` is a 400 before the body is looked at.
fn parse<T: DeserializeOwned>(
    sim: &SimHandle,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, Rejection> {
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media_type != "application/json" {
        return Err(ApiError::unsupported_media_type().into());
    }
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::body_too_large(sim.config().max_body_bytes)
        } else {
            ApiError::unreadable_body(rejection.body_text())
        }
    })?;
    parse_json(&bytes)
}

/// The body as the API's JSON.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Rejection> {
    serde_json::from_slice(bytes).map_err(|e| {
        // A body that is JSON but not the API's shape may still name its model and mode.
        let loose: Option<serde_json::Value> = serde_json::from_slice(bytes).ok();
        let field = |name: &str| loose.as_ref().and_then(|v| v.get(name));
        Rejection {
            error: ApiError::bad_json(&e),
            model: field("model").and_then(|m| m.as_str()).map(str::to_owned),
            stream: field("stream").and_then(|s| s.as_bool()).unwrap_or(false),
        }
    })
}

/// Checks the model and the context length of one prompt; returns its token count and how
/// many output tokens the context leaves.
fn check_prompt(
    sim: &SimHandle,
    api: Api,
    sampling: &Sampling,
    prompt: &[u8],
) -> Result<(u32, u32), ApiError> {
    let max_len = sim.max_model_len();
    // An empty prompt still costs one token (the BOS token a real tokenizer adds).
    let prompt_tokens = tokens::count_bytes(prompt.len()).max(1);
    if prompt_tokens >= max_len {
        // The prompt alone is too long, whatever max_tokens says: blame the prompt. Wording
        // after vLLM's `_token_len_check` (vllm/renderers/params.py, vLLM 0.33.0).
        return Err(ApiError::context_exceeded(
            api.prompt_param(),
            format!(
                "This model's maximum context length is {max_len} tokens. However, your prompt \
                 contains {prompt_tokens} input tokens, which leaves no room for any output \
                 token. Please reduce the length of the input prompt."
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
    Ok((prompt_tokens, limit))
}

/// Most output token texts one request's choices may hold in memory (JSON documents and text
/// cut at a stop string are held per choice; filler text costs nothing). vLLM bounds `n` at
/// 16,384 but holds no text ahead, so without this `n` × prompts × a 1 MiB document could ask
/// for more memory than the machine has; 4 Mi tokens is about 16 MiB of text.
const MAX_HELD_OUTPUT_TOKENS: usize = 4 << 20;

/// What validation made of a request: its choices, and per prompt its token count and resolved
/// `max_tokens`.
struct PlannedChoices {
    choices: Vec<ChoiceSpec>,
    prompt_tokens: Vec<u32>,
    max_tokens: Vec<u32>,
}

/// Every choice of the request: its prompt, its output script, its echo.
fn plan_choices(sim: &SimHandle, generation: &Generation<'_>) -> Result<PlannedChoices, ApiError> {
    let sampling = generation.sampling;
    let served = sim.model();
    if generation.model != served {
        return Err(ApiError::model_not_found(generation.model, served));
    }
    sampling.validate()?;
    let format = sampling.format()?;
    let stop = sampling.stop();
    let stop_token_ids = sampling.stop_token_ids.clone().unwrap_or_default();
    let n = sampling.n();
    let output = &sim.config().output;
    let mut choices = Vec::new();
    let mut prompt_tokens = Vec::new();
    let mut max_tokens = Vec::new();
    let mut held_pieces = 0usize;
    for (p, (prompt, echo)) in generation.prompts.iter().enumerate() {
        let (tokens_in, limit) = check_prompt(sim, generation.api, sampling, prompt)?;
        prompt_tokens.push(tokens_in);
        // vLLM's resolved `max_tokens`: the client's, or the context left after the prompt.
        max_tokens.push(limit);
        for j in 0..n {
            let natural = if sampling.ignore_eos {
                u32::MAX
            } else {
                let span = u64::from(output.max_tokens - output.min_tokens) + 1;
                // Choice j of a prompt draws its own length, deterministically.
                let pick =
                    tokens::prompt_fingerprint(prompt, sim.config().seed ^ u64::from(j)) % span;
                output.min_tokens + pick as u32
            };
            let ending = Ending {
                limit,
                natural,
                stop: &stop,
                stop_token_ids: &stop_token_ids,
            };
            let script: Script = match (&generation.tool, &format) {
                (Some(tool), _) => output::json(&tool.arguments, &ending),
                (None, Format::Json(document)) => output::json(document, &ending),
                (None, Format::Text) => output::filler(&ending),
            };
            if let output::Tokens::Pieces(pieces) = &script.tokens {
                held_pieces += pieces.len();
                if held_pieces > MAX_HELD_OUTPUT_TOKENS {
                    return Err(ApiError::invalid(
                        "n",
                        format!(
                            "This request's choices would hold more than \
                             {MAX_HELD_OUTPUT_TOKENS} output tokens of text at once in the \
                             simulator (n x prompts x output length); lower n, max_tokens or \
                             the number of prompts."
                        ),
                    ));
                }
            }
            choices.push(ChoiceSpec {
                index: p as u32 * n + j,
                prompt: p,
                script,
                echo: echo.clone(),
            });
        }
    }
    Ok(PlannedChoices {
        choices,
        prompt_tokens,
        max_tokens,
    })
}

async fn generate(
    sim: &SimHandle,
    arrived_at: tokio::time::Instant,
    headers: &HeaderMap,
    generation: Generation<'_>,
) -> Response {
    let (api, model, sampling) = (generation.api, generation.model, generation.sampling);
    let PlannedChoices {
        choices,
        prompt_tokens,
        max_tokens,
    } = match plan_choices(sim, &generation) {
        Ok(c) => c,
        Err(e) => return Rejection::new(e, model, sampling.stream).respond(sim, headers, api),
    };
    let (id_prefix, operation) = match api {
        Api::Chat => ("chatcmpl-", value::OPERATION_CHAT),
        Api::Completion => ("cmpl-", value::OPERATION_TEXT_COMPLETION),
    };
    let response_id = format!("{id_prefix}{}", uuid::Uuid::new_v4().simple());
    let shared = sim.shared();
    let parent = extract_context(headers);
    let kv = sampling.kv_transfer_params.clone().unwrap_or_default();
    if kv.do_remote_decode || kv.do_remote_prefill {
        // Either half of a disaggregated pair: a NIXL-connected engine, in vLLM's format.
        if let Some(vllm) = &shared.vllm {
            lock(vllm).nixl_connected();
        }
    }
    // A decode request of a disaggregated pair: the engine sees it once its KV cache is here.
    let (arrived_at, transferred_tokens) = if kv.do_remote_prefill {
        let tokens = kv
            .remote_num_tokens
            .unwrap_or(prompt_tokens[0])
            .min(prompt_tokens[0]);
        (
            pull_kv(sim, &parent, &kv, model, tokens, arrived_at).await,
            tokens,
        )
    } else {
        (arrived_at, 0)
    };
    let arrived = shared.clock.system(arrived_at);
    let start = |input_tokens: u32| {
        InferenceRequest::start_at(
            &sim.request_metrics,
            RequestParams {
                operation,
                model,
                provider: value::PROVIDER_SIMULATOR,
                max_tokens: sampling.max_tokens(),
                temperature: sampling.temperature,
                top_p: sampling.top_p,
                stream: sampling.stream,
                input_tokens: u64::from(input_tokens),
                response_id: Some(&response_id),
            },
            Some(&parent),
            arrived,
        )
    };

    // Injected faults first (an overloaded server rejects before queueing), then admission.
    let faults = shared.faults_now();
    let injected = faults.roll_error(&mut *lock(&shared.rng));
    if let Some(kind) = injected.filter(|k| *k != ErrorKind::MidStream) {
        shared.rejected.fetch_add(1, Ordering::Relaxed);
        start(prompt_tokens[0]).fail(kind.as_str());
        return ApiError::injected(kind).into_response();
    }
    let sequences = choices.len() as u64;
    let first_position = shared.fresh_waiting.fetch_add(sequences, Ordering::AcqRel);
    if let Some(max_waiting) = sim
        .config()
        .scheduler
        .max_waiting
        .filter(|max| first_position + sequences > u64::from(*max))
    {
        shared.fresh_waiting.fetch_sub(sequences, Ordering::AcqRel);
        shared.rejected.fetch_add(1, Ordering::Relaxed);
        start(prompt_tokens[0]).fail(value::ERROR_QUEUE_FULL);
        return ApiError::queue_full(max_waiting).into_response();
    }

    let mut receivers = Vec::with_capacity(choices.len());
    for (k, choice) in choices.iter().enumerate() {
        let fail_at = (injected == Some(ErrorKind::MidStream)).then(|| {
            let n = choice.script.output_tokens;
            if n > 1 {
                lock(&shared.rng).random_range(1..n)
            } else {
                0
            }
        });
        let prompt = &generation.prompts[choice.prompt].0;
        let (events, receiver) = mpsc::unbounded_channel();
        let submission = Submission {
            spec: SeqSpec {
                prompt_tokens: prompt_tokens[choice.prompt],
                output_tokens: choice.script.output_tokens,
                block_hashes: tokens::block_hashes(prompt, sim.config().kv_cache.block_size),
                transferred_tokens,
            },
            finish_reason: choice.script.finish_reason,
            fail_at,
            max_tokens: max_tokens[choice.prompt],
            request: start(prompt_tokens[choice.prompt]),
            arrived,
            arrived_at,
            queue_position: first_position + k as u64,
            events,
            vllm_span: shared.vllm_traces.as_ref().map(|_| VllmSpan {
                parent: parent.clone(),
                arrived,
                request_id: response_id.clone(),
                prompt_tokens: prompt_tokens[choice.prompt],
                max_tokens: max_tokens[choice.prompt],
                // vLLM's defaults when the request leaves them out (OpenAI's 1.0).
                temperature: sampling.temperature.unwrap_or(1.0),
                top_p: sampling.top_p.unwrap_or(1.0),
                n: sampling.n.unwrap_or(1),
            }),
        };
        if let Err(mpsc::error::SendError(command)) =
            shared.commands.send(Command::Submit(Box::new(submission)))
        {
            shared
                .fresh_waiting
                .fetch_sub(sequences - k as u64, Ordering::AcqRel);
            if let Command::Submit(s) = command {
                s.request.fail(value::ERROR_SHUTDOWN);
            }
            return ApiError::engine_stopped().into_response();
        }
        receivers.push(receiver);
    }

    let created = unix_seconds();
    let shape = Shape {
        api,
        logprobs: generation.logprobs,
        tool: generation
            .tool
            .as_ref()
            .map(|t| (t.clone(), tool_call_id())),
    };
    let prompt_total: u32 = prompt_tokens.iter().sum();
    if sampling.stream {
        let state = StreamState::new(
            merge(receivers),
            ChunkWriter::new(shape, &response_id, created, model),
            choices,
            sampling.include_usage(),
            prompt_total,
        );
        return (
            [
                (header::CONTENT_TYPE, "text/event-stream"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            state.into_body(),
        )
            .into_response();
    }

    // Non-streaming: wait for every choice's last token. If the client hangs up, this future
    // is dropped with the receivers, and the engine aborts the sequences.
    let mut events = merge(receivers);
    let mut ends: Vec<Option<(u32, FinishReason)>> = vec![None; choices.len()];
    let mut cached = 0;
    while ends.iter().any(Option::is_none) {
        match events.next().await {
            Some((
                k,
                Event::Token {
                    index,
                    cached_tokens,
                    finish: Some(reason),
                },
            )) => {
                ends[k] = Some((index + 1, reason));
                cached += cached_tokens;
            }
            Some((_, Event::Token { .. })) => {}
            Some((_, Event::Failed(failure))) => {
                return ApiError::engine_failure(failure).into_response()
            }
            None => return ApiError::engine_stopped().into_response(),
        }
    }
    let completion_tokens = ends.iter().flatten().map(|(n, _)| n).sum();
    let usage = Usage::new(prompt_total, completion_tokens, cached);
    let rendered: Vec<Value> = choices
        .iter()
        .zip(&ends)
        .map(|(choice, end)| {
            let (n, reason) = end.unwrap_or((0, FinishReason::Length));
            shape.complete_choice(choice, n, reason)
        })
        .collect();
    let object = match api {
        Api::Chat => "chat.completion",
        Api::Completion => "text_completion",
    };
    let mut body = json!({
        "id": response_id,
        "object": object,
        "created": created,
        "model": model,
        "choices": rendered,
        "usage": usage,
        "system_fingerprint": FINGERPRINT,
    });
    if kv.do_remote_decode {
        // The prefill half of a disaggregated pair: what the decode worker needs, under
        // vLLM's names (`request_finished` in vLLM 0.33.0's nixl/pull_scheduler.py).
        body["kv_transfer_params"] = json!({
            "do_remote_prefill": true,
            "do_remote_decode": false,
            "remote_block_ids": [[]],
            "remote_engine_id": sim.engine_id(),
            "remote_request_id": response_id,
            "remote_host": headers.get(header::HOST).and_then(|h| h.to_str().ok()).map(|h| h.split(':').next().unwrap_or(h)),
            "remote_port": headers.get(header::HOST).and_then(|h| h.to_str().ok()).and_then(|h| h.rsplit_once(':')).and_then(|(_, p)| p.parse::<u16>().ok()),
            "tp_size": 1,
            "remote_num_tokens": prompt_total,
            "transfer_mode": "pull",
        });
    }
    Json(body).into_response()
}

/// The decode worker's pull of `tokens` prompt tokens' KV cache from the prefill worker named
/// in `kv`: a `kv_transfer` span under the caller's context and the `llm.kv_transfer.*`
/// metrics; returns when the cache is here (on the engine's clock).
async fn pull_kv(
    sim: &SimHandle,
    parent: &opentelemetry::Context,
    kv: &crate::disagg::KvTransferParams,
    model: &str,
    tokens: u32,
    started: tokio::time::Instant,
) -> tokio::time::Instant {
    let shared = sim.shared();
    let transport = sim.config().kv_transport;
    let bytes = u64::from(tokens) * sim.profile().model.kv_bytes_per_token;
    let done = started + shared.clock.wall(transport.transfer_seconds(bytes));
    tokio::time::sleep_until(done).await;
    let (from, to) = (shared.clock.system(started), shared.clock.system(done));
    {
        let _caller = parent.clone().attach();
        let _span = tracing::info_span!(
            target: "infermon::sim",
            "kv_transfer",
            otel.kind = "client",
            { attr::LLM_KV_TRANSFER_BYTES } = bytes,
            { attr::LLM_KV_TRANSFER_TRANSPORT } = transport.as_str(),
            { attr::SERVER_ADDRESS } = kv.remote_host.as_deref().unwrap_or(""),
            { attr::SERVER_PORT } = kv.remote_port.unwrap_or(0),
            llm.kv_transfer.remote_engine_id = kv.remote_engine_id.as_deref().unwrap_or(""),
            { field::START_TIME } = unix_nanos(from),
            { field::END_TIME } = unix_nanos(to),
        );
    }
    let labels = [
        opentelemetry::KeyValue::new(
            attr::GEN_AI_REQUEST_MODEL,
            sim.request_metrics.model_label(model),
        ),
        opentelemetry::KeyValue::new(attr::LLM_KV_TRANSFER_TRANSPORT, transport.as_str()),
    ];
    sim.kv_transfer
        .duration
        .record(done.duration_since(started).as_secs_f64(), &labels);
    sim.kv_transfer.bytes.add(bytes, &labels);
    if let Some(vllm) = &shared.vllm {
        // One NIXL transfer per request, as vLLM's decode worker issues one READ per request
        // and remote rank (one rank here: tp_size 1). Descriptors: one per block per K/V
        // region, and vLLM's usual attention layout ((2, num_blocks, ...) per layer) registers
        // two regions (K, V) per layer (nixl/base_worker.py register_kv_caches). The posting
        // itself costs nothing in the simulation: post time 0.
        let blocks = u64::from(tokens.div_ceil(sim.config().kv_cache.block_size));
        lock(vllm).kv_transfer(&crate::vllm_format::KvTransferRecord {
            seconds: done.duration_since(started).as_secs_f64(),
            post_seconds: 0.0,
            bytes,
            descriptors: 2 * u64::from(sim.profile().model.num_layers) * blocks,
        });
    }
    done
}

/// vLLM's default tool-call id: `chatcmpl-tool-` and 16 random hex digits
/// (`make_tool_call_id`, vllm/renderers/chat_utils/tool_call.py, vLLM 0.33.0).
fn tool_call_id() -> String {
    format!(
        "chatcmpl-tool-{:016x}",
        uuid::Uuid::new_v4().as_u64_pair().0
    )
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

/// The vLLM version whose API the simulator imitates, and the simulator's own.
pub async fn version() -> Response {
    Json(json!({
        "version": VLLM_API_VERSION,
        "simulator": concat!("infermon-sim ", env!("CARGO_PKG_VERSION")),
    }))
    .into_response()
}

/// The vLLM release whose OpenAI server the simulator follows (reported by `/version`).
const VLLM_API_VERSION: &str = "0.33.0";

/// `POST /tokenize`: a `prompt` or chat `messages` to token ids under the simulator's
/// approximation (4 bytes per token; see [`tokens`]). Shapes of vLLM's `TokenizeResponse`
/// (vllm/entrypoints/serve/tokenize/protocol.py, vLLM 0.33.0).
pub async fn tokenize(
    State(sim): State<SimHandle>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    #[derive(serde::Deserialize)]
    struct Tokenize {
        model: Option<String>,
        prompt: Option<String>,
        messages: Option<Vec<crate::api::types::ChatMessage>>,
        #[serde(default)]
        return_token_strs: bool,
    }
    let request: Tokenize = match parse(&sim, &headers, body) {
        Ok(r) => r,
        Err(rejection) => return rejection.error.into_response(),
    };
    if let Some(model) = request.model.as_deref().filter(|m| *m != sim.model()) {
        return ApiError::model_not_found(model, sim.model()).into_response();
    }
    let text = match (request.prompt, request.messages) {
        (Some(prompt), None) => prompt,
        (None, Some(messages)) => {
            let chat = ChatRequest {
                model: String::new(),
                messages,
                logprobs: false,
                top_logprobs: None,
                tools: None,
                tool_choice: None,
                echo: false,
                sampling: Sampling::default(),
            };
            match chat.prompt_bytes() {
                Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                Err(e) => return e.into_response(),
            }
        }
        _ => {
            return ApiError::invalid("prompt", "Send either `prompt` or `messages`.")
                .into_response()
        }
    };
    let ids = tokens::text_to_ids(&text);
    let strs = request.return_token_strs.then(|| {
        ids.iter()
            .map(|id| tokens::ids_to_text(&[*id]))
            .collect::<Vec<_>>()
    });
    Json(json!({
        "count": ids.len(),
        "max_model_len": sim.max_model_len(),
        "tokens": ids,
        "token_strs": strs,
    }))
    .into_response()
}

/// `POST /detokenize`: token ids back to text (vLLM's `DetokenizeResponse`).
pub async fn detokenize(
    State(sim): State<SimHandle>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    #[derive(serde::Deserialize)]
    struct Detokenize {
        model: Option<String>,
        tokens: Vec<u32>,
    }
    let request: Detokenize = match parse(&sim, &headers, body) {
        Ok(r) => r,
        Err(rejection) => return rejection.error.into_response(),
    };
    if let Some(model) = request.model.as_deref().filter(|m| *m != sim.model()) {
        return ApiError::model_not_found(model, sim.model()).into_response();
    }
    Json(json!({"prompt": tokens::ids_to_text(&request.tokens)})).into_response()
}

/// vLLM's Prometheus text format (routed only when `metrics = "vllm"`).
pub async fn vllm_metrics(State(sim): State<SimHandle>) -> Response {
    let shared = sim.shared();
    let Some(histograms) = &shared.vllm else {
        return ApiError::not_found("GET", "/metrics", ROUTES).into_response();
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
    ApiError::not_found(method.as_str(), uri.path(), ROUTES).into_response()
}

pub async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    ApiError::method_not_allowed(method.as_str(), uri.path()).into_response()
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
