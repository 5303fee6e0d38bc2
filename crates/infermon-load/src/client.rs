//! One request, start to finish: a CLIENT span whose context travels in `traceparent`, the HTTP
//! exchange (streamed or not), and the timings the summary needs.

use std::time::{Instant, SystemTime};

use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::HeaderMap;
use infermon::contract::{attr, value};
use infermon::propagation::inject_context;
use opentelemetry::global::{BoxedSpan, BoxedTracer};
use opentelemetry::trace::{Span, SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Array, Context, KeyValue, StringValue, Value};
use tokio::sync::watch;

use crate::openai::{RequestBody, ResponseBody, Usage};
use crate::outcome::{Outcome, RequestError, RequestRecord};
use infermon_http::sse::SseDecoder;

/// Error bodies longer than this are not read further: only the OpenAI error type is wanted.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// A non-streamed response larger than this is treated as invalid rather than buffered.
const MAX_RESPONSE_BODY: usize = 64 * 1024 * 1024;
const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

/// One target server endpoint, resolved from one of the configured URLs.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub url: reqwest::Url,
    /// `server.address` / `server.port` of the client span.
    pub address: StringValue,
    pub port: u16,
}

/// What every request of a run shares: the HTTP client, the tracer and the fixed attributes.
pub struct Client {
    http: reqwest::Client,
    tracer: BoxedTracer,
    span_name: String,
    operation: &'static str,
    model: StringValue,
    authorization: Option<HeaderValue>,
}

impl Client {
    pub fn new(
        http: reqwest::Client,
        tracer: BoxedTracer,
        operation: &'static str,
        model: &str,
        authorization: Option<HeaderValue>,
    ) -> Self {
        Self {
            http,
            tracer,
            span_name: infermon::contract::span::request_span_name(operation, model),
            operation,
            model: StringValue::from(model.to_owned()),
            authorization,
        }
    }

    /// Sends one request and measures it. `cancel` turning true abandons the request (the
    /// connection is dropped, which a server sees as a client disconnect).
    pub async fn execute(
        &self,
        endpoint: &Endpoint,
        body: RequestBody<'_>,
        cancel: &mut watch::Receiver<bool>,
    ) -> RequestRecord {
        let mut span = self.start_span(endpoint, &body);
        let mut headers = HeaderMap::with_capacity(4);
        // An unsampled client span (telemetry off here) propagates nothing, so the engine
        // samples by its own policy instead of inheriting "do not record" from a client that
        // records nothing itself.
        if span.span_context().is_sampled() {
            let trace_cx = Context::new().with_remote_span_context(span.span_context().clone());
            inject_context(&trace_cx, &mut headers);
        }
        headers.insert(CONTENT_TYPE, APPLICATION_JSON);
        if let Some(auth) = &self.authorization {
            headers.insert(AUTHORIZATION, auth.clone());
        }

        let started = Instant::now();
        let started_at = SystemTime::now();
        let mut record = RecordBuilder::new(started);
        let result = {
            let exchange = self.exchange(endpoint, headers, &body, &mut record);
            tokio::select! {
                biased;
                () = cancelled(cancel) => None,
                result = exchange => Some(result),
            }
        };
        let outcome = match result {
            None => Outcome::Cancelled,
            Some(Ok(())) => Outcome::Success,
            Some(Err(e)) => Outcome::Failed(e),
        };
        let mut record = record.finish(outcome);
        record.started_at = started_at;
        let context = span.span_context();
        record.trace_id = context.is_sampled().then(|| context.trace_id());
        end_span(&mut span, &record);
        record
    }

    fn start_span(&self, endpoint: &Endpoint, body: &RequestBody<'_>) -> BoxedSpan {
        let mut attributes = Vec::with_capacity(8);
        attributes.extend([
            KeyValue::new(attr::GEN_AI_OPERATION_NAME, self.operation),
            KeyValue::new(attr::GEN_AI_REQUEST_MODEL, self.model.clone()),
            KeyValue::new(attr::GEN_AI_REQUEST_MAX_TOKENS, body.max_tokens as i64),
            KeyValue::new(attr::GEN_AI_REQUEST_STREAM, body.stream),
            KeyValue::new(attr::SERVER_ADDRESS, endpoint.address.clone()),
            KeyValue::new(attr::SERVER_PORT, i64::from(endpoint.port)),
        ]);
        if let Some(t) = body.temperature {
            attributes.push(KeyValue::new(attr::GEN_AI_REQUEST_TEMPERATURE, t));
        }
        self.tracer
            .span_builder(self.span_name.clone())
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start(&self.tracer)
    }

    async fn exchange(
        &self,
        endpoint: &Endpoint,
        headers: HeaderMap,
        body: &RequestBody<'_>,
        record: &mut RecordBuilder,
    ) -> Result<(), RequestError> {
        let mut response = self
            .http
            .post(endpoint.url.clone())
            .headers(headers)
            .body(body.to_json())
            .send()
            .await
            .map_err(|e| classify(&e))?;
        let status = response.status();
        record.status = Some(status.as_u16());
        if !status.is_success() {
            let body = read_up_to(&mut response, MAX_ERROR_BODY)
                .await
                .unwrap_or_default();
            let error_type = serde_json::from_slice::<ResponseBody>(&body)
                .ok()
                .and_then(|b| b.error?.kind.map(|k| k.into_owned()));
            return Err(RequestError::Http {
                status: status.as_u16(),
                error_type,
            });
        }
        if body.stream {
            read_stream(&mut response, record).await
        } else {
            let bytes = read_up_to(&mut response, MAX_RESPONSE_BODY).await?;
            let parsed: ResponseBody =
                serde_json::from_slice(&bytes).map_err(|_| RequestError::InvalidResponse)?;
            record.observe_whole(parsed)
        }
    }
}

/// Reads an SSE stream to its end. `[DONE]` marks success; the body is still read to the end so
/// the connection goes back to the pool instead of being torn down.
async fn read_stream(
    response: &mut reqwest::Response,
    record: &mut RecordBuilder,
) -> Result<(), RequestError> {
    let mut decoder = SseDecoder::new();
    let mut done = false;
    let mut failure = None;
    while let Some(bytes) = response.chunk().await.map_err(|e| classify(&e))? {
        if done {
            continue;
        }
        let now = Instant::now();
        decoder.feed(&bytes, &mut |data| {
            if done || failure.is_some() {
                return;
            }
            if data == b"[DONE]" {
                done = true;
                record.done_at = Some(now);
                return;
            }
            match serde_json::from_slice::<ResponseBody>(data) {
                Ok(chunk) => {
                    if let Err(e) = record.observe_chunk(chunk, now) {
                        failure = Some(e);
                    }
                }
                Err(_) => failure = Some(RequestError::InvalidResponse),
            }
        });
        if let Some(e) = failure {
            return Err(e);
        }
    }
    if done {
        Ok(())
    } else {
        Err(RequestError::IncompleteStream)
    }
}

async fn read_up_to(
    response: &mut reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, RequestError> {
    let mut body = Vec::new();
    while let Some(bytes) = response.chunk().await.map_err(|e| classify(&e))? {
        if body.len() + bytes.len() > limit {
            return Err(RequestError::InvalidResponse);
        }
        body.extend_from_slice(&bytes);
    }
    Ok(body)
}

fn classify(e: &reqwest::Error) -> RequestError {
    if e.is_timeout() {
        RequestError::Timeout
    } else if e.is_connect() {
        RequestError::Connect
    } else if e.is_body() || e.is_decode() {
        RequestError::Interrupted
    } else {
        RequestError::Transport
    }
}

/// Resolves when the run is cancelled; never, if the sender is gone without cancelling.
async fn cancelled(cancel: &mut watch::Receiver<bool>) {
    if cancel.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn end_span(span: &mut BoxedSpan, record: &RequestRecord) {
    let mut attributes = Vec::with_capacity(8);
    if let Some(status) = record.http_status {
        attributes.push(KeyValue::new(
            attr::HTTP_RESPONSE_STATUS_CODE,
            i64::from(status),
        ));
    }
    if let Some(id) = &record.response_id {
        attributes.push(KeyValue::new(attr::GEN_AI_RESPONSE_ID, id.clone()));
    }
    if let Some(model) = &record.response_model {
        attributes.push(KeyValue::new(attr::GEN_AI_RESPONSE_MODEL, model.clone()));
    }
    if let Some(ttft) = record.ttft {
        attributes.push(KeyValue::new(
            attr::GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK,
            ttft.as_secs_f64(),
        ));
    }
    let finish_reason = match &record.outcome {
        Outcome::Cancelled => Some(value::FINISH_ABORT.to_owned()),
        _ => record.finish_reason.clone(),
    };
    if let Some(reason) = finish_reason {
        attributes.push(KeyValue::new(
            attr::GEN_AI_RESPONSE_FINISH_REASONS,
            Value::Array(Array::String(vec![StringValue::from(reason)])),
        ));
    }
    if record.usage_reported {
        attributes.push(KeyValue::new(
            attr::GEN_AI_USAGE_INPUT_TOKENS,
            record.input_tokens as i64,
        ));
    }
    attributes.push(KeyValue::new(
        attr::GEN_AI_USAGE_OUTPUT_TOKENS,
        record.output_tokens as i64,
    ));
    if let Outcome::Failed(error) = &record.outcome {
        let key = error.key();
        attributes.push(KeyValue::new(attr::ERROR_TYPE, key.clone()));
        span.set_status(Status::error(key));
    }
    span.set_attributes(attributes);
    span.end();
}

/// The record of a request, filled in as its response arrives. It lives outside the exchange
/// future so that a cancelled request still reports what it had received.
struct RecordBuilder {
    started: Instant,
    status: Option<u16>,
    response_id: Option<String>,
    response_model: Option<String>,
    first_content_at: Option<Instant>,
    last_content_at: Option<Instant>,
    itl_ns: Vec<u64>,
    content_chunks: u64,
    usage: Option<Usage>,
    finish_reason: Option<String>,
    /// When `[DONE]` arrived: the end of the request, even if the body's last bytes come later.
    done_at: Option<Instant>,
}

impl RecordBuilder {
    fn new(started: Instant) -> Self {
        Self {
            started,
            status: None,
            response_id: None,
            response_model: None,
            first_content_at: None,
            last_content_at: None,
            itl_ns: Vec::new(),
            content_chunks: 0,
            usage: None,
            finish_reason: None,
            done_at: None,
        }
    }

    fn observe_chunk(&mut self, chunk: ResponseBody<'_>, now: Instant) -> Result<(), RequestError> {
        if let Some(error) = chunk.error {
            return Err(RequestError::InStream {
                error_type: error.kind.map(|k| k.into_owned()),
            });
        }
        self.observe_identity(&chunk);
        for choice in &chunk.choices {
            if choice.has_content() {
                self.content_chunks += 1;
                match self.last_content_at {
                    None => self.first_content_at = Some(now),
                    Some(last) => self.itl_ns.push(nanos(now - last)),
                }
                self.last_content_at = Some(now);
            }
            if let Some(reason) = &choice.finish_reason {
                self.finish_reason = Some(reason.clone().into_owned());
            }
        }
        if chunk.usage.is_some() {
            self.usage = chunk.usage;
        }
        Ok(())
    }

    fn observe_whole(&mut self, body: ResponseBody<'_>) -> Result<(), RequestError> {
        if let Some(error) = body.error {
            return Err(RequestError::InStream {
                error_type: error.kind.map(|k| k.into_owned()),
            });
        }
        self.observe_identity(&body);
        let choice = body.choices.first().ok_or(RequestError::InvalidResponse)?;
        self.finish_reason = choice
            .finish_reason
            .as_ref()
            .map(|r| r.clone().into_owned());
        self.usage = body.usage;
        self.done_at = Some(Instant::now());
        Ok(())
    }

    fn observe_identity(&mut self, body: &ResponseBody<'_>) {
        if self.response_id.is_none() {
            self.response_id = body.id.as_ref().map(|s| s.clone().into_owned());
        }
        if self.response_model.is_none() {
            self.response_model = body.model.as_ref().map(|s| s.clone().into_owned());
        }
    }

    fn finish(self, outcome: Outcome) -> RequestRecord {
        let end = match (&outcome, self.done_at) {
            (Outcome::Success, Some(done)) => done,
            _ => Instant::now(),
        };
        RequestRecord {
            e2e: end - self.started,
            ttft: self.first_content_at.map(|t| t - self.started),
            itl_ns: self.itl_ns,
            http_status: self.status,
            response_id: self.response_id,
            response_model: self.response_model,
            input_tokens: self.usage.map_or(0, |u| u.prompt_tokens),
            // The server's count is authoritative; without a usage report, one content chunk
            // is one token (true of vLLM, TGI and the simulator).
            output_tokens: self
                .usage
                .map_or(self.content_chunks, |u| u.completion_tokens),
            usage_reported: self.usage.is_some(),
            finish_reason: self.finish_reason,
            trace_id: None,
            started_at: SystemTime::UNIX_EPOCH,
            outcome,
        }
    }
}

fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
