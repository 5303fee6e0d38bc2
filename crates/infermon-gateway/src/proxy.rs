//! The OpenAI-compatible front: routes, the attempt loop with failover, and the request's
//! spans (a SERVER span in, a CLIENT span per upstream attempt, `traceparent` passed on).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Extension, Json, Router};
use http_body_util::{BodyExt as _, Full};
use infermon_http::error::{ApiError, INVALID_REQUEST, SERVER_ERROR};
use infermon_http::ReceivedAt;
use infermon_instrument::contract::{attr, field, value};
use infermon_instrument::layer::context_of;
use infermon_instrument::propagation::{extract_context, inject_context};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry::KeyValue;
use tokio::time::Instant;
use tracing::field::Empty;

use crate::body::{Observed, Seen};
use crate::client::UpstreamClient;
use crate::config::{ConfigError, GatewayConfig, Price, Role};
use crate::telemetry::{AttemptOutcome, GatewayMetrics, Measured};
use crate::tenants::{Admission, Tenants, UNAUTHENTICATED};
use crate::upstreams::{InFlight, Upstream, Upstreams};

use opentelemetry_semantic_conventions::attribute::URL_SCHEME;

/// The `tracing` target of the gateway's request spans.
pub const TARGET: &str = "infermon::gateway";

const CHAT_PATH: &str = "/v1/chat/completions";
const COMPLETIONS_PATH: &str = "/v1/completions";
const ROUTES: &str = "POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /health";

/// Request headers passed to the upstream (the client's API key is the gateway's business, not
/// the engine's; hop-by-hop headers are the connection's).
const FORWARDED: &[http::header::HeaderName] = &[
    http::header::CONTENT_TYPE,
    http::header::ACCEPT,
    http::header::USER_AGENT,
];

/// Everything a request needs; cheap to clone.
#[derive(Clone)]
pub struct Gateway(Arc<Inner>);

struct Inner {
    config: GatewayConfig,
    upstreams: Upstreams,
    client: UpstreamClient,
    tenants: Tenants,
    metrics: GatewayMetrics,
    requests: AtomicU64,
    retries: AtomicU64,
}

impl Gateway {
    /// [`try_new`](Self::try_new) for a configuration that passed
    /// [`GatewayConfig::validate`] (which reads the CA files this reads again).
    pub fn new(config: GatewayConfig, meter: &opentelemetry::metrics::Meter) -> Self {
        Self::try_new(config, meter)
            .unwrap_or_else(|e| panic!("{e} (GatewayConfig::validate checks this first)"))
    }

    /// The gateway for `config`; fails on a CA file that cannot be read or used, and logs a
    /// warning for each upstream whose certificate is not verified (`insecure_skip_verify`).
    pub fn try_new(
        config: GatewayConfig,
        meter: &opentelemetry::metrics::Meter,
    ) -> Result<Self, ConfigError> {
        let tls = crate::tls::UpstreamTls::from_config(&config, true)?;
        let upstreams = Upstreams::new(&config.upstreams).with_routing(config.routing);
        Ok(Self(Arc::new(Inner {
            client: UpstreamClient::new(config.connect_timeout, tls),
            tenants: Tenants::new(config.tenants.as_deref()),
            metrics: GatewayMetrics::new(meter, &upstreams, config.tenants.as_deref()),
            upstreams,
            config,
            requests: AtomicU64::new(0),
            retries: AtomicU64::new(0),
        })))
    }

    pub fn upstreams(&self) -> &Upstreams {
        &self.0.upstreams
    }

    /// Starts the `/v1/models` probe of every upstream (health and served models).
    pub fn spawn_probe(&self) -> tokio::task::JoinHandle<()> {
        self.0
            .upstreams
            .spawn_probe(self.0.client.clone(), self.0.config.probe_interval)
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route(CHAT_PATH, forwarding(value::OPERATION_CHAT, CHAT_PATH))
            .route(
                COMPLETIONS_PATH,
                forwarding(value::OPERATION_TEXT_COMPLETION, COMPLETIONS_PATH),
            )
            .route("/v1/models", get(models))
            .route("/health", get(health))
            .fallback(not_found)
            .layer(DefaultBodyLimit::max(self.0.config.max_body_bytes))
            .with_state(self.clone())
    }

    /// Whether a retry fits the budget (a fraction of requests, plus a floor).
    fn may_retry(&self) -> bool {
        let requests = self.0.requests.load(Ordering::Relaxed) as f64;
        let allowed = 10.0 + self.0.config.retry_budget * requests;
        if (self.0.retries.load(Ordering::Relaxed) as f64) < allowed {
            self.0.retries.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            false
        }
    }
}

/// The handler of `POST path`: proxies the request upstream as an `operation` request.
fn forwarding(operation: &'static str, path: &'static str) -> MethodRouter<Gateway> {
    post(
        move |State(gw): State<Gateway>,
              received: Option<Extension<ReceivedAt>>,
              headers: HeaderMap,
              body: Bytes| proxy(gw, operation, path, received, headers, body),
    )
}

async fn not_found(method: Method, uri: Uri) -> Response {
    ApiError::not_found(method.as_str(), uri.path(), ROUTES).into_response()
}

/// The union of the models the upstreams serve (as their last probe found them).
async fn models(State(gw): State<Gateway>) -> Response {
    let mut ids: Vec<String> =
        gw.0.upstreams
            .all()
            .iter()
            .flat_map(|u| u.models())
            .collect();
    ids.sort();
    ids.dedup();
    let data: Vec<serde_json::Value> = ids
        .into_iter()
        .map(|id| serde_json::json!({"id": id, "object": "model", "owned_by": "infermon-gateway"}))
        .collect();
    Json(serde_json::json!({"object": "list", "data": data})).into_response()
}

async fn health(State(gw): State<Gateway>) -> Response {
    let upstreams: Vec<serde_json::Value> =
        gw.0.upstreams
            .all()
            .iter()
            .map(|u| {
                serde_json::json!({
                    "name": u.name, "healthy": u.is_healthy(), "outstanding": u.outstanding()
                })
            })
            .collect();
    let any = gw.0.upstreams.all().iter().any(|u| u.is_healthy());
    let status = if any {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(serde_json::json!({"healthy": any, "upstreams": upstreams})),
    )
        .into_response()
}

/// What a request ends with: its spans, its measurements, its slots.
pub(crate) struct Finisher {
    gw: Gateway,
    span: tracing::Span,
    attempt_span: Option<tracing::Span>,
    received: Instant,
    measured: Measured,
    price: Option<Price>,
    /// The labels of this request's inter-token latency points, capped once per request rather
    /// than once per token.
    itl_labels: [KeyValue; 2],
    _in_flight: Option<InFlight>,
    _admission: Option<Admission>,
}

impl Finisher {
    pub(crate) fn inter_token(&self, seconds: f64) {
        self.gw.0.metrics.inter_token(&self.itl_labels, seconds);
    }

    pub(crate) fn finish(mut self, seen: Seen, error: Option<&'static str>, aborted: bool) {
        let m = &mut self.measured;
        m.duration_s = self.received.elapsed().as_secs_f64();
        m.ttft_s = seen
            .first_content
            .map(|t| t.saturating_duration_since(self.received).as_secs_f64());
        m.decode_s = match (seen.first_content, seen.last_content) {
            (Some(first), Some(last)) => Some(last.saturating_duration_since(first).as_secs_f64()),
            _ => None,
        };
        m.input_tokens = seen.input_tokens;
        m.output_tokens = seen.output_tokens;
        m.cost_usd = self.price.map(|p| {
            p.of(
                seen.input_tokens.unwrap_or(0),
                seen.output_tokens.unwrap_or(0),
            )
        });
        if let Some(e) = error {
            m.error_type = Some(e.to_owned());
        }
        if aborted {
            m.aborted = true;
            m.error_type
                .get_or_insert_with(|| "client_closed".to_owned());
        }
        let span = &self.span;
        if let Some(n) = seen.input_tokens {
            span.record(attr::GEN_AI_USAGE_INPUT_TOKENS, n);
        }
        if let Some(n) = seen.output_tokens {
            span.record(attr::GEN_AI_USAGE_OUTPUT_TOKENS, n);
        }
        if let Some(ttft) = m.ttft_s {
            span.record(attr::GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, ttft);
        }
        if let Some(cost) = m.cost_usd {
            span.record(attr::LLM_COST_USD, cost);
        }
        if let Some(e) = &m.error_type {
            span.record(attr::ERROR_TYPE, e.as_str());
            if !aborted {
                span.record(field::OTEL_STATUS_CODE, field::STATUS_ERROR);
            }
            if let Some(attempt) = &self.attempt_span {
                attempt.record(attr::ERROR_TYPE, e.as_str());
            }
        }
        self.gw.0.metrics.request_ended(m);
    }
}

/// A request the gateway answers itself (refused, or nobody to send it to): the error, counted
/// and on the span.
fn refuse(
    gw: &Gateway,
    span: &tracing::Span,
    mut measured: Measured,
    received: Instant,
    error: ApiError,
    error_type: &str,
) -> Response {
    span.record(attr::HTTP_RESPONSE_STATUS_CODE, error.status.as_u16());
    span.record(attr::ERROR_TYPE, error_type);
    span.record(field::OTEL_STATUS_CODE, field::STATUS_ERROR);
    measured.duration_s = received.elapsed().as_secs_f64();
    measured.error_type = Some(error_type.to_owned());
    gw.0.metrics.request_ended(&measured);
    error.into_response()
}

async fn proxy(
    gw: Gateway,
    operation: &'static str,
    path: &'static str,
    received: Option<Extension<ReceivedAt>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let received = received.map_or_else(Instant::now, |Extension(r)| r.0);
    gw.0.requests.fetch_add(1, Ordering::Relaxed);
    let parent = extract_context(&headers);
    let span = {
        let _parent = parent.clone().attach();
        tracing::info_span!(
            target: TARGET,
            "gateway_request",
            otel.name = format!("POST {path}"),
            otel.kind = "server",
            { attr::GEN_AI_OPERATION_NAME } = operation,
            { attr::GEN_AI_REQUEST_MODEL } = Empty,
            { attr::LLM_TENANT } = Empty,
            { attr::LLM_UPSTREAM } = Empty,
            { attr::HTTP_RESPONSE_STATUS_CODE } = Empty,
            { attr::GEN_AI_USAGE_INPUT_TOKENS } = Empty,
            { attr::GEN_AI_USAGE_OUTPUT_TOKENS } = Empty,
            { attr::GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK } = Empty,
            { attr::LLM_COST_USD } = Empty,
            { attr::ERROR_TYPE } = Empty,
            otel.status_code = Empty,
        )
    };
    let mut measured = Measured {
        tenant: UNAUTHENTICATED.to_owned(),
        operation,
        ..Measured::default()
    };

    // Who is asking, and may they now?
    let tenant = match gw.0.tenants.authenticate(&headers) {
        Ok(t) => t,
        Err(e) => return refuse(&gw, &span, measured, received, e, "unauthorized"),
    };
    span.record(attr::LLM_TENANT, tenant.name.as_str());
    measured.tenant = tenant.name.clone();
    let admission = match tenant.admit() {
        Ok(a) => a,
        Err(e) => {
            let kind = e.code.unwrap_or("rate_limited");
            return refuse(&gw, &span, measured, received, e, kind);
        }
    };

    // What is asked: the model, and whether to stream (with usage, for the accounting).
    let ClientRequest {
        json: mut request,
        model,
        streaming,
        mut changed,
    } = match read_request(&body) {
        Ok(r) => r,
        Err(e) => return refuse(&gw, &span, measured, received, e, "invalid_request"),
    };
    span.record(attr::GEN_AI_REQUEST_MODEL, model.as_str());
    measured.model = model.clone();
    let price = gw.0.config.prices.get(&model).copied();
    let call = Call {
        gw: &gw,
        span: &span,
        parent: &parent,
        headers: &headers,
        model: &model,
        operation,
        path,
    };

    // Disaggregated: the prompt on a prefill worker, whose KV cache a decode worker then pulls.
    let mut role = Role::Both;
    if gw.0.upstreams.disaggregated() {
        role = Role::Decode;
        match call.prefill(&request).await {
            Ok(params) => {
                request["kv_transfer_params"] = params;
                changed = true;
            }
            Err(Stop::Answered(answer)) => {
                return respond(
                    &gw, span, answer, false, received, measured, price, admission,
                )
            }
            Err(Stop::Refused(error, kind)) => {
                return refuse(&gw, &span, measured, received, error, kind)
            }
        }
    }
    let body = if changed {
        Bytes::from(serde_json::to_vec(&request).unwrap_or_default())
    } else {
        body
    };
    match call.send(role, body).await {
        Ok(answer) => respond(
            &gw, span, answer, streaming, received, measured, price, admission,
        ),
        Err((error, kind)) => refuse(&gw, &span, measured, received, error, kind),
    }
}

/// What the gateway reads of a client's chat or completions request body.
#[derive(Debug)]
pub struct ClientRequest {
    /// The body, a JSON object; a streaming request's asks for usage (see [`read_request`]).
    pub json: serde_json::Value,
    pub model: String,
    pub streaming: bool,
    /// Whether `json` differs from the client's bytes (then it goes upstream re-serialised).
    pub changed: bool,
}

/// Reads a client's request body: a JSON object with a string `model`, else an OpenAI-style
/// 400. A streaming request is made to ask for usage, which the gateway accounts tokens from.
pub fn read_request(body: &[u8]) -> Result<ClientRequest, ApiError> {
    let mut json: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        Ok(_) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                INVALID_REQUEST,
                "The request body must be a JSON object.",
            ))
        }
        Err(err) => return Err(ApiError::bad_json(&err)),
    };
    let Some(model) = json["model"].as_str().map(str::to_owned) else {
        return Err(ApiError::invalid(
            "model",
            "`model` is required and must be a string.",
        ));
    };
    let streaming = json["stream"].as_bool().unwrap_or(false);
    // The client's bytes go upstream as they came unless the gateway adds something.
    let mut changed = false;
    if streaming && json["stream_options"]["include_usage"].as_bool() != Some(true) {
        changed = true;
        // The gateway accounts tokens from the usage the upstream reports; the client then also
        // receives the final usage chunk (`choices: []`), as OpenAI sends it with include_usage.
        json["stream_options"] = serde_json::json!({"include_usage": true});
    }
    Ok(ClientRequest {
        json,
        model,
        streaming,
        changed,
    })
}

/// An upstream's answer to an attempt, and what to end with it.
pub(crate) struct Answer {
    upstream: Arc<Upstream>,
    response: http::Response<hyper::body::Incoming>,
    attempt_span: tracing::Span,
    in_flight: InFlight,
}

/// Why a disaggregated request did not reach its decode half.
enum Stop {
    /// The prefill worker's own error answer, passed on.
    Answered(Answer),
    Refused(ApiError, &'static str),
}

/// One request's sending: to whom, under which span, with which headers.
struct Call<'a> {
    gw: &'a Gateway,
    span: &'a tracing::Span,
    parent: &'a opentelemetry::Context,
    headers: &'a HeaderMap,
    model: &'a str,
    operation: &'static str,
    path: &'static str,
}

/// Largest prefill answer read (it is one token and the transfer parameters).
const MAX_PREFILL_ANSWER: usize = 1024 * 1024;

impl Call<'_> {
    /// The prefill half, as vLLM's P/D routers send it (one token, not streamed,
    /// `kv_transfer_params.do_remote_decode`); returns the `kv_transfer_params` for the decode
    /// worker.
    async fn prefill(&self, request: &serde_json::Value) -> Result<serde_json::Value, Stop> {
        let mut first = request.clone();
        first["max_tokens"] = 1.into();
        if first.get("max_completion_tokens").is_some() {
            first["max_completion_tokens"] = 1.into();
        }
        first["stream"] = false.into();
        if let Some(o) = first.as_object_mut() {
            o.remove("stream_options");
        }
        first["kv_transfer_params"] = serde_json::json!({"do_remote_decode": true});
        let body = Bytes::from(serde_json::to_vec(&first).unwrap_or_default());
        let answer = self
            .send(Role::Prefill, body)
            .await
            .map_err(|(e, kind)| Stop::Refused(e, kind))?;
        if !answer.response.status().is_success() {
            return Err(Stop::Answered(answer));
        }
        let Answer {
            upstream,
            response,
            attempt_span,
            in_flight,
        } = answer;
        let read = tokio::time::timeout(
            self.gw.0.config.first_byte_timeout,
            http_body_util::Limited::new(response.into_body(), MAX_PREFILL_ANSWER).collect(),
        )
        .await;
        drop(in_flight);
        let params = match read {
            Ok(Ok(body)) => serde_json::from_slice::<serde_json::Value>(&body.to_bytes())
                .ok()
                .and_then(|v| v.get("kv_transfer_params").cloned())
                .filter(serde_json::Value::is_object),
            _ => None,
        };
        params.ok_or_else(|| {
            attempt_span.record(attr::ERROR_TYPE, "no_kv_transfer_params");
            attempt_span.record(field::OTEL_STATUS_CODE, field::STATUS_ERROR);
            Stop::Refused(
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    SERVER_ERROR,
                    format!(
                        "The prefill worker {} answered without kv_transfer_params (is it started \
                         with a KV connector?).",
                        upstream.name
                    ),
                )
                .code("prefill_failed"),
                "prefill_failed",
            )
        })
    }

    /// Sends `body` to an upstream in `role`, trying another on connection failure, timeout or
    /// 5xx (before anything reached the client) within the attempt limit and the retry budget.
    /// The last upstream's own 5xx is an answer too; no answer at all is an error to send.
    async fn send(&self, role: Role, body: Bytes) -> Result<Answer, (ApiError, &'static str)> {
        let gw = self.gw;
        let model = self.model;
        let mut tried = Vec::new();
        let mut last_failure: Option<(AttemptOutcome, String)> = None;
        for attempt in 1..=gw.0.config.max_attempts.max(1) {
            if attempt > 1 && !gw.may_retry() {
                break;
            }
            let Some((index, upstream)) = gw.0.upstreams.pick(model, &tried, role) else {
                break;
            };
            tried.push(index);
            let in_flight = upstream.begin();
            let attempt_span = tracing::info_span!(
                target: TARGET,
                parent: self.span,
                "gateway_attempt",
                otel.name = format!("{} {model}", self.operation),
                otel.kind = "client",
                { attr::GEN_AI_OPERATION_NAME } = self.operation,
                { attr::GEN_AI_REQUEST_MODEL } = model,
                { attr::LLM_UPSTREAM } = upstream.name.as_str(),
                { attr::LLM_ATTEMPT } = attempt,
                { attr::LLM_PD_PHASE } = (role != Role::Both).then_some(role.as_str()),
                { attr::SERVER_ADDRESS } = upstream.host.as_str(),
                { attr::SERVER_PORT } = upstream.port,
                { URL_SCHEME } = upstream.scheme,
                { attr::HTTP_RESPONSE_STATUS_CODE } = Empty,
                { attr::ERROR_TYPE } = Empty,
                otel.status_code = Empty,
            );
            let mut upstream_headers = HeaderMap::new();
            for name in FORWARDED {
                if let Some(v) = self.headers.get(name) {
                    upstream_headers.insert(name.clone(), v.clone());
                }
            }
            // The attempt's span parents the engine's; with the gateway's own tracing off, the
            // caller's trace still continues upstream.
            let attempt_cx = context_of(&attempt_span);
            if attempt_cx.span().span_context().is_valid() {
                inject_context(&attempt_cx, &mut upstream_headers);
            } else {
                inject_context(self.parent, &mut upstream_headers);
            }
            let mut upstream_request =
                http::Request::post(format!("{}{}", upstream.base, self.path))
                    .body(Full::new(body.clone()))
                    .expect("a valid URI: upstream URLs are checked at startup");
            *upstream_request.headers_mut() = upstream_headers;

            let sent_at = Instant::now();
            let sent = tokio::time::timeout(
                gw.0.config.first_byte_timeout,
                gw.0.client.send(upstream_request),
            )
            .await;
            if let Ok(Ok(_)) = &sent {
                gw.0.metrics
                    .time_to_headers(&upstream.name, sent_at.elapsed().as_secs_f64());
            }
            let outcome = match &sent {
                Err(_) => AttemptOutcome::Timeout,
                Ok(Err(e)) if crate::tls::is_tls_handshake(e) => AttemptOutcome::TlsHandshake,
                Ok(Err(_)) => AttemptOutcome::ConnectError,
                Ok(Ok(r)) if r.status().is_server_error() => AttemptOutcome::ServerError,
                Ok(Ok(r)) if r.status().is_client_error() => AttemptOutcome::ClientError,
                Ok(Ok(_)) => AttemptOutcome::Ok,
            };
            gw.0.metrics.attempt(&upstream.name, outcome);
            if !outcome.retryable() {
                upstream.succeeded();
                let Ok(Ok(response)) = sent else {
                    unreachable!("non-retryable outcomes have a response")
                };
                return Ok(Answer {
                    upstream,
                    response,
                    attempt_span,
                    in_flight,
                });
            }
            upstream.failed(gw.0.config.unhealthy_after);
            let detail = match &sent {
                Err(_) => format!(
                    "no response headers within {:?}",
                    gw.0.config.first_byte_timeout
                ),
                Ok(Err(e)) => error_chain(e),
                Ok(Ok(r)) => format!("status {}", r.status()),
            };
            tracing::warn!(upstream = %upstream.name, attempt, %detail, "upstream attempt failed");
            attempt_span.record(attr::ERROR_TYPE, outcome.as_str());
            attempt_span.record(field::OTEL_STATUS_CODE, field::STATUS_ERROR);
            if let Ok(Ok(r)) = &sent {
                attempt_span.record(attr::HTTP_RESPONSE_STATUS_CODE, r.status().as_u16());
            }
            let more = attempt < gw.0.config.max_attempts
                && gw.0.upstreams.pick(model, &tried, role).is_some();
            if !more {
                if let Ok(Ok(response)) = sent {
                    // The last word is the upstream's own 5xx: passed on as it is.
                    return Ok(Answer {
                        upstream,
                        response,
                        attempt_span,
                        in_flight,
                    });
                }
            }
            last_failure = Some((outcome, detail));
        }
        Err(no_answer(model, tried.is_empty(), last_failure))
    }
}

/// `e` and its sources, `: `-separated (hyper-util's own message is only "client error
/// (Connect)"; the reason, e.g. an untrusted certificate, is further down).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}

/// The error for a request no upstream answered.
fn no_answer(
    model: &str,
    nobody_serves: bool,
    last_failure: Option<(AttemptOutcome, String)>,
) -> (ApiError, &'static str) {
    let (status, message, kind) = match last_failure {
        None if nobody_serves => {
            let e = ApiError::new(
                StatusCode::NOT_FOUND,
                INVALID_REQUEST,
                format!(
                    "The model `{model}` is not served by any upstream of this gateway (GET \
                     /v1/models lists them)."
                ),
            )
            .param("model")
            .code("model_not_found");
            return (e, "model_not_found");
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "No upstream could take the request (retry budget spent).".to_owned(),
            "no_upstream",
        ),
        Some((AttemptOutcome::Timeout, detail)) => (
            StatusCode::GATEWAY_TIMEOUT,
            format!("The upstream engines did not answer in time ({detail})."),
            "upstream_timeout",
        ),
        Some((_, detail)) => (
            StatusCode::BAD_GATEWAY,
            format!("The upstream engines could not be reached ({detail})."),
            "upstream_unavailable",
        ),
    };
    let error = ApiError::new(status, SERVER_ERROR, message)
        .code(kind)
        .retry_after(1);
    (error, kind)
}

/// Passes the upstream's answer on: status and headers now, the body as it streams.
#[allow(clippy::too_many_arguments)]
fn respond(
    gw: &Gateway,
    span: tracing::Span,
    answer: Answer,
    streaming: bool,
    received: Instant,
    mut measured: Measured,
    price: Option<Price>,
    admission: Admission,
) -> Response {
    let Answer {
        upstream,
        response,
        attempt_span,
        in_flight,
    } = answer;
    let upstream = upstream.name.as_str();
    let (parts, incoming) = response.into_parts();
    let status = parts.status.as_u16();
    span.record(attr::HTTP_RESPONSE_STATUS_CODE, status);
    span.record(attr::LLM_UPSTREAM, upstream);
    attempt_span.record(attr::HTTP_RESPONSE_STATUS_CODE, status);
    measured.upstream = Some(upstream.to_owned());
    if !parts.status.is_success() {
        measured.error_type = Some(format!("http_{status}"));
    }
    let is_sse = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let itl_labels = gw.0.metrics.inter_token_labels(&measured.model, upstream);
    let finisher = Finisher {
        gw: gw.clone(),
        span,
        attempt_span: Some(attempt_span),
        received,
        measured,
        price,
        itl_labels,
        _in_flight: Some(in_flight),
        _admission: Some(admission),
    };
    let body = Observed::new(
        incoming,
        streaming && is_sse,
        gw.0.config.stream_idle_timeout,
        finisher,
    );
    let mut out = Response::new(Body::new(body));
    *out.status_mut() = parts.status;
    for (name, value) in &parts.headers {
        if !is_hop_by_hop(name) {
            out.headers_mut().append(name.clone(), value.clone());
        }
    }
    out.headers_mut().insert(
        "x-infermon-upstream",
        HeaderValue::from_str(upstream).unwrap_or(HeaderValue::from_static("upstream")),
    );
    out
}

fn is_hop_by_hop(name: &http::header::HeaderName) -> bool {
    use http::header::*;
    [
        CONNECTION,
        TRANSFER_ENCODING,
        UPGRADE,
        TE,
        TRAILER,
        PROXY_AUTHENTICATE,
        PROXY_AUTHORIZATION,
    ]
    .contains(name)
        || name.as_str() == "keep-alive"
}
