//! The gateway's metrics: the contract's TTFT, TPOT and request duration as a client sees them
//! (with `llm.upstream`, so a dashboard puts the gateway's TTFT beside the engine's for the same
//! model), and the gateway's own (`llm.gateway.*`): requests, tokens and cost per tenant, inter-
//! token latency, attempts per upstream, and the upstreams' load and health.

use infermon_instrument::cardinality::{LabelCap, LabelPolicy};
use infermon_instrument::contract::{attr, buckets, metric, metric_spec, value};
use opentelemetry::metrics::{Counter, Histogram, Meter};
use opentelemetry::KeyValue;

use crate::config::TenantConfig;
use crate::upstreams::Upstreams;

/// Distinct model names in labels (they come from request bodies).
const MODEL_CAP: usize = 64;
/// Distinct tenant names in labels (from the config file; the cap guards the label anyway).
const TENANT_CAP: usize = 256;

/// How an upstream attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Ok,
    ClientError,
    ServerError,
    ConnectError,
    /// TCP connected, but the TLS handshake failed (untrusted certificate, wrong name, ...).
    TlsHandshake,
    Timeout,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Ok => "ok",
            AttemptOutcome::ClientError => "client_error",
            AttemptOutcome::ServerError => "server_error",
            AttemptOutcome::ConnectError => "connect_error",
            AttemptOutcome::TlsHandshake => "tls_handshake",
            AttemptOutcome::Timeout => "timeout",
        }
    }

    /// Whether another upstream may be tried (nothing was sent to the client yet).
    pub fn retryable(self) -> bool {
        matches!(
            self,
            AttemptOutcome::ServerError
                | AttemptOutcome::ConnectError
                | AttemptOutcome::TlsHandshake
                | AttemptOutcome::Timeout
        )
    }
}

/// What one request measured, recorded when it ends.
#[derive(Debug, Default, Clone)]
pub struct Measured {
    pub tenant: String,
    pub model: String,
    pub operation: &'static str,
    /// `None` if no upstream answered.
    pub upstream: Option<String>,
    pub duration_s: f64,
    pub ttft_s: Option<f64>,
    /// Seconds from the first content chunk to the last one.
    pub decode_s: Option<f64>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cost_usd: Option<f64>,
    /// `None` for success; `aborted` for a client that went away.
    pub error_type: Option<String>,
    pub aborted: bool,
}

#[derive(Debug)]
pub struct GatewayMetrics {
    request_duration: Histogram<f64>,
    ttft: Histogram<f64>,
    tpot: Histogram<f64>,
    itl: Histogram<f64>,
    requests: Counter<u64>,
    tokens: Counter<u64>,
    cost: Counter<f64>,
    attempts: Counter<u64>,
    time_to_headers: Histogram<f64>,
    models: LabelCap,
    tenants: LabelCap,
}

fn spec(name: &str) -> &'static infermon_instrument::contract::MetricSpec {
    metric_spec(name).unwrap_or_else(|| unreachable!("{name} missing from contract::METRICS"))
}

fn histogram(meter: &Meter, name: &'static str) -> Histogram<f64> {
    let s = spec(name);
    meter
        .f64_histogram(s.name)
        .with_unit(s.unit)
        .with_description(s.description)
        .with_boundaries(
            buckets::of(name)
                .unwrap_or_else(|| unreachable!("{name} has no bucket set"))
                .to_vec(),
        )
        .build()
}

/// An observable gauge with one point per upstream, read by `read` at each collection.
fn upstream_gauge(
    meter: &Meter,
    upstreams: &Upstreams,
    name: &'static str,
    read: fn(&crate::upstreams::Upstream) -> u64,
) {
    let s = spec(name);
    let pool = upstreams.clone();
    meter
        .u64_observable_gauge(s.name)
        .with_unit(s.unit)
        .with_description(s.description)
        .with_callback(move |o| {
            for u in pool.all() {
                o.observe(
                    read(u),
                    &[KeyValue::new(attr::LLM_UPSTREAM, u.name.clone())],
                );
            }
        })
        .build();
}

impl GatewayMetrics {
    /// The instruments on `meter`, plus gauges of `upstreams`' load and health. The configured
    /// `tenants` always keep their own label (junk keys are refused before they are counted,
    /// but the cap's policy applies to models and tenants alike).
    pub fn new(meter: &Meter, upstreams: &Upstreams, tenants: Option<&[TenantConfig]>) -> Self {
        let counter = |name: &'static str| {
            let s = spec(name);
            meter
                .u64_counter(s.name)
                .with_unit(s.unit)
                .with_description(s.description)
                .build()
        };
        upstream_gauge(meter, upstreams, metric::GATEWAY_OUTSTANDING, |u| {
            u.outstanding() as u64
        });
        upstream_gauge(meter, upstreams, metric::GATEWAY_HEALTHY, |u| {
            u64::from(u.is_healthy())
        });
        let cost = spec(metric::GATEWAY_COST);
        Self {
            request_duration: histogram(meter, metric::REQUEST_DURATION),
            ttft: histogram(meter, metric::TIME_TO_FIRST_TOKEN),
            tpot: histogram(meter, metric::TIME_PER_OUTPUT_TOKEN),
            itl: histogram(meter, metric::GATEWAY_INTER_TOKEN_LATENCY),
            requests: counter(metric::GATEWAY_REQUESTS),
            tokens: counter(metric::GATEWAY_TOKENS),
            cost: meter
                .f64_counter(cost.name)
                .with_unit(cost.unit)
                .with_description(cost.description)
                .build(),
            attempts: counter(metric::GATEWAY_ATTEMPTS),
            time_to_headers: histogram(meter, metric::GATEWAY_TIME_TO_HEADERS),
            models: LabelCap::with_policy(MODEL_CAP, LabelPolicy::process()),
            tenants: LabelCap::with_policy(
                TENANT_CAP,
                &LabelPolicy::process()
                    .clone()
                    .allowing(tenants.unwrap_or_default().iter().map(|t| t.name.clone())),
            ),
        }
    }

    pub fn attempt(&self, upstream: &str, outcome: AttemptOutcome) {
        self.attempts.add(
            1,
            &[
                KeyValue::new(attr::LLM_UPSTREAM, upstream.to_owned()),
                KeyValue::new(attr::LLM_ATTEMPT_OUTCOME, outcome.as_str()),
            ],
        );
    }

    /// How long an upstream took to answer with headers.
    pub fn time_to_headers(&self, upstream: &str, seconds: f64) {
        self.time_to_headers.record(
            seconds,
            &[KeyValue::new(attr::LLM_UPSTREAM, upstream.to_owned())],
        );
    }

    /// The labels of a request's inter-token latency points ([`inter_token`](Self::inter_token)),
    /// capped once per request.
    pub fn inter_token_labels(&self, model: &str, upstream: &str) -> [KeyValue; 2] {
        [
            KeyValue::new(attr::GEN_AI_REQUEST_MODEL, self.models.get(model)),
            KeyValue::new(attr::LLM_UPSTREAM, upstream.to_owned()),
        ]
    }

    /// One gap between two content chunks of a stream.
    pub fn inter_token(&self, labels: &[KeyValue; 2], seconds: f64) {
        self.itl.record(seconds, labels);
    }

    /// A request has ended (answered, refused, failed or abandoned by its client).
    pub fn request_ended(&self, m: &Measured) {
        let model = self.models.get(&m.model);
        let tenant = self.tenants.get(&m.tenant);
        let outcome = match (&m.error_type, m.aborted) {
            (_, true) => value::OUTCOME_ABORTED,
            (Some(_), false) => value::OUTCOME_ERROR,
            (None, false) => value::OUTCOME_SUCCESS,
        };
        let mut request_attrs = vec![
            KeyValue::new(attr::LLM_TENANT, tenant.clone()),
            KeyValue::new(attr::GEN_AI_REQUEST_MODEL, model.clone()),
            KeyValue::new(attr::LLM_REQUEST_OUTCOME, outcome),
        ];
        if let (Some(e), false) = (&m.error_type, m.aborted) {
            request_attrs.push(KeyValue::new(attr::ERROR_TYPE, e.clone()));
        }
        self.requests.add(1, &request_attrs);
        for (ty, n) in [
            (value::TOKEN_INPUT, m.input_tokens),
            (value::TOKEN_OUTPUT, m.output_tokens),
        ] {
            if let Some(n) = n.filter(|n| *n > 0) {
                self.tokens.add(
                    n,
                    &[
                        KeyValue::new(attr::LLM_TENANT, tenant.clone()),
                        KeyValue::new(attr::GEN_AI_REQUEST_MODEL, model.clone()),
                        KeyValue::new(attr::GEN_AI_TOKEN_TYPE, ty),
                    ],
                );
            }
        }
        if let Some(cost) = m.cost_usd.filter(|c| *c > 0.0) {
            self.cost.add(
                cost,
                &[
                    KeyValue::new(attr::LLM_TENANT, tenant),
                    KeyValue::new(attr::GEN_AI_REQUEST_MODEL, model.clone()),
                ],
            );
        }
        let Some(upstream) = &m.upstream else { return };
        let mut latency_attrs = vec![
            KeyValue::new(attr::GEN_AI_REQUEST_MODEL, model),
            KeyValue::new(attr::GEN_AI_OPERATION_NAME, m.operation),
            KeyValue::new(attr::LLM_UPSTREAM, upstream.clone()),
        ];
        if let Some(ttft) = m.ttft_s {
            self.ttft.record(ttft, &latency_attrs);
        }
        if let (Some(decode), Some(out), None) = (m.decode_s, m.output_tokens, &m.error_type) {
            if out > 1 {
                self.tpot.record(decode / (out - 1) as f64, &latency_attrs);
            }
        }
        if let (Some(e), false) = (&m.error_type, m.aborted) {
            latency_attrs.push(KeyValue::new(attr::ERROR_TYPE, e.clone()));
        }
        self.request_duration.record(m.duration_s, &latency_attrs);
    }
}
