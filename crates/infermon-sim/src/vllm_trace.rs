//! vLLM's request span, as the simulator's `trace_format = "vllm"` mode emits it instead of (or,
//! with `"both"`, beside) infermon's request and phase spans — so the `infermon relay` path is
//! tested against what vLLM really sends.
//!
//! Built as vLLM 0.33.0 builds it (released wheel): `OutputProcessor.do_tracing` in
//! `vllm/v1/engine/output_processor.py` with the timestamps of `vllm/v1/metrics/stats.py`,
//! through `manual_instrument_otel` (`vllm/tracing/otel.py`):
//!
//! - one SERVER span named `llm_request`, scope `vllm.tracing.otel`, per request that finished
//!   in the engine (stop, length, engine abort, error) — none when the client went away;
//! - parent: the request's `traceparent`; start: arrival; end: when the output was handled;
//! - `time_to_first_token` = first token − arrival (0.0 when there was none), `e2e` = end −
//!   arrival; `time_in_queue` = first scheduled − queued, `time_in_model_prefill` = first token
//!   − first scheduled, `time_in_model_decode` = last − first token, `time_in_model_inference`
//!   = last token − first scheduled, with vLLM's unset engine timestamps as 0.0 (so an engine
//!   abort before scheduling yields the same meaningless values vLLM's do);
//! - token counts, the request id, and `top_p`, `max_tokens`, `temperature`, `n` only when
//!   non-zero (`if req_state.top_p:` …);
//! - resource: `vllm.instrumenting_module_name` = `vllm.llm_engine`, `vllm.process_id`, the
//!   SDK's defaults (service.name from `OTEL_SERVICE_NAME`), plus `llm.simulated = true`.
//!
//! The simulator's engine receives a request at its arrival, so `queued` = arrival here (vLLM's
//! engine core sees it a few ms later).

use std::time::{SystemTime, UNIX_EPOCH};

use infermon::contract::{attr, relay::vllm};
use opentelemetry::trace::{SpanKind, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use serde::{Deserialize, Serialize};

/// Which request spans the simulator emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TraceFormat {
    /// infermon's request span with queue/prefill/decode children (the contract).
    #[default]
    Infermon,
    /// vLLM 0.33.0's flat `llm_request` span only (the binary turns the contract spans' export
    /// off).
    Vllm,
    /// Both: the vLLM span beside the contract spans, which are then the ground truth its
    /// relayed expansion can be checked against.
    Both,
}

impl TraceFormat {
    pub fn emits_vllm(self) -> bool {
        matches!(self, TraceFormat::Vllm | TraceFormat::Both)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot set up the vLLM span exporter to {endpoint}")]
pub struct VllmTraceError {
    endpoint: String,
    #[source]
    source: opentelemetry_otlp::ExporterBuildError,
}

/// A tracer provider with vLLM's resource and scope, exporting over OTLP/gRPC (as vLLM's
/// default `grpc` protocol does).
#[derive(Clone, Debug)]
pub struct VllmTraces {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl VllmTraces {
    /// Exports to `endpoint`. `service_name` None leaves the SDK default (from
    /// `OTEL_SERVICE_NAME`, else `unknown_service`), as vLLM's `Resource.create` does.
    pub fn otlp(endpoint: &str, service_name: Option<&str>) -> Result<Self, VllmTraceError> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .map_err(|source| VllmTraceError {
                endpoint: endpoint.to_owned(),
                source,
            })?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource(service_name))
            .build();
        Ok(Self::with_provider(provider))
    }

    /// Spans go to `provider` (tests use an in-memory exporter).
    pub fn with_provider(provider: SdkTracerProvider) -> Self {
        let tracer = provider.tracer(vllm::SCOPE);
        VllmTraces { provider, tracer }
    }

    /// Exports what is buffered and stops.
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "vLLM span export shutdown");
        }
    }

    pub(crate) fn emit(&self, span: &VllmSpan, times: &EngineTimes, end: SystemTime) {
        let attributes = span.attributes(times, end);
        let builder = self
            .tracer
            .span_builder(vllm::SPAN_NAME)
            .with_kind(SpanKind::Server)
            .with_start_time(span.arrived)
            .with_attributes(attributes);
        let mut otel_span = self.tracer.build_with_context(builder, &span.parent);
        opentelemetry::trace::Span::end_with_timestamp(&mut otel_span, end);
    }
}

fn resource(service_name: Option<&str>) -> Resource {
    let mut builder = Resource::builder().with_attributes([
        KeyValue::new(
            vllm::RESOURCE_INSTRUMENTING_MODULE,
            vllm::INSTRUMENTING_MODULE,
        ),
        KeyValue::new(vllm::RESOURCE_PROCESS_ID, std::process::id().to_string()),
        KeyValue::new(attr::LLM_SIMULATED, true),
    ]);
    if let Some(name) = service_name {
        builder = builder.with_service_name(name.to_owned());
    }
    builder.build()
}

/// What the handler knows of a request for its vLLM span.
#[derive(Debug)]
pub struct VllmSpan {
    pub parent: Context,
    pub arrived: SystemTime,
    /// vLLM's `external_req_id`: the response id (`chatcmpl-…`, `cmpl-…`).
    pub request_id: String,
    pub prompt_tokens: u32,
    /// `max_tokens` as vLLM resolves it into the sampling parameters.
    pub max_tokens: u32,
    pub temperature: f64,
    pub top_p: f64,
    pub n: i64,
}

/// The engine-core timestamps vLLM's `RequestStateStats` keeps (None: never set, 0.0 there).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct EngineTimes {
    pub queued: Option<SystemTime>,
    pub scheduled: Option<SystemTime>,
    pub first_token: Option<SystemTime>,
    pub last_token: Option<SystemTime>,
    pub generation_tokens: u32,
}

/// vLLM's float timestamps (seconds); unset is 0.0, as in `RequestStateStats`.
fn ts(t: Option<SystemTime>) -> f64 {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64())
}

fn since(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

impl VllmSpan {
    /// `do_tracing`'s attribute dict, in its order.
    fn attributes(&self, t: &EngineTimes, end: SystemTime) -> Vec<KeyValue> {
        // Differences of absolute float timestamps would lose precision (epoch seconds are
        // ~1.7e9); compute set-set differences exactly and only fall back to vLLM's 0.0 for
        // unset ones.
        let diff = |to: Option<SystemTime>, from: Option<SystemTime>| match (to, from) {
            (Some(to), Some(from)) => since(from, to),
            _ => ts(to) - ts(from),
        };
        let ttft = t.first_token.map_or(0.0, |f| since(self.arrived, f));
        let mut attributes = vec![
            KeyValue::new(vllm::LATENCY_TIME_TO_FIRST_TOKEN, ttft),
            KeyValue::new(vllm::LATENCY_E2E, since(self.arrived, end)),
            KeyValue::new(vllm::LATENCY_TIME_IN_QUEUE, diff(t.scheduled, t.queued)),
            KeyValue::new(vllm::USAGE_PROMPT_TOKENS, i64::from(self.prompt_tokens)),
            KeyValue::new(
                vllm::USAGE_COMPLETION_TOKENS,
                i64::from(t.generation_tokens),
            ),
            KeyValue::new(
                vllm::LATENCY_TIME_IN_MODEL_PREFILL,
                diff(t.first_token, t.scheduled),
            ),
            KeyValue::new(
                vllm::LATENCY_TIME_IN_MODEL_DECODE,
                diff(t.last_token, t.first_token),
            ),
            KeyValue::new(
                vllm::LATENCY_TIME_IN_MODEL_INFERENCE,
                diff(t.last_token, t.scheduled),
            ),
            KeyValue::new(vllm::REQUEST_ID, self.request_id.clone()),
        ];
        if self.top_p != 0.0 {
            attributes.push(KeyValue::new(vllm::REQUEST_TOP_P, self.top_p));
        }
        if self.max_tokens != 0 {
            attributes.push(KeyValue::new(
                vllm::REQUEST_MAX_TOKENS,
                i64::from(self.max_tokens),
            ));
        }
        if self.temperature != 0.0 {
            attributes.push(KeyValue::new(vllm::REQUEST_TEMPERATURE, self.temperature));
        }
        if self.n != 0 {
            attributes.push(KeyValue::new(vllm::REQUEST_N, self.n));
        }
        attributes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::Value;
    use std::time::Duration;

    fn span(temperature: f64) -> VllmSpan {
        VllmSpan {
            parent: Context::new(),
            arrived: UNIX_EPOCH + Duration::from_secs(1_764_633_600),
            request_id: "chatcmpl-1".to_owned(),
            prompt_tokens: 100,
            max_tokens: 16,
            temperature,
            top_p: 1.0,
            n: 1,
        }
    }

    fn get(attrs: &[KeyValue], key: &str) -> Option<Value> {
        attrs
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.clone())
    }

    #[test]
    fn attributes_follow_do_tracing() {
        let s = span(0.0);
        let at = |ms: u64| Some(s.arrived + Duration::from_millis(ms));
        let times = EngineTimes {
            queued: at(0),
            scheduled: at(40),
            first_token: at(100),
            last_token: at(900),
            generation_tokens: 16,
        };
        let attrs = s.attributes(&times, s.arrived + Duration::from_millis(950));
        let f = |key| match get(&attrs, key) {
            Some(Value::F64(v)) => (v * 1e6).round() / 1e6,
            other => panic!("{key}: {other:?}"),
        };
        assert_eq!(f(vllm::LATENCY_TIME_TO_FIRST_TOKEN), 0.1);
        assert_eq!(f(vllm::LATENCY_E2E), 0.95);
        assert_eq!(f(vllm::LATENCY_TIME_IN_QUEUE), 0.04);
        assert_eq!(f(vllm::LATENCY_TIME_IN_MODEL_PREFILL), 0.06);
        assert_eq!(f(vllm::LATENCY_TIME_IN_MODEL_DECODE), 0.8);
        assert_eq!(f(vllm::LATENCY_TIME_IN_MODEL_INFERENCE), 0.86);
        // temperature 0 is left out, as `if req_state.temperature:` does.
        assert_eq!(get(&attrs, vllm::REQUEST_TEMPERATURE), None);
        assert_eq!(get(&attrs, vllm::REQUEST_N), Some(Value::I64(1)));
        assert_eq!(get(&attrs, vllm::REQUEST_MAX_TOKENS), Some(Value::I64(16)));
    }

    #[test]
    fn an_abort_before_scheduling_gives_vllms_meaningless_values() {
        let s = span(0.7);
        let times = EngineTimes {
            queued: Some(s.arrived),
            ..EngineTimes::default()
        };
        let attrs = s.attributes(&times, s.arrived + Duration::from_millis(5));
        assert_eq!(
            get(&attrs, vllm::LATENCY_TIME_TO_FIRST_TOKEN),
            Some(Value::F64(0.0))
        );
        // 0.0 - queued_ts: a large negative number, as vLLM computes it.
        match get(&attrs, vllm::LATENCY_TIME_IN_QUEUE) {
            Some(Value::F64(v)) => assert!(v < -1e9, "{v}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            get(&attrs, vllm::REQUEST_TEMPERATURE),
            Some(Value::F64(0.7))
        );
    }
}
