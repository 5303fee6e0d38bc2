//! The telemetry of a simulator run, checked through the SDK's in-memory exporters: the span
//! tree of every request, the first-token TTFT against what the client saw, and metric totals
//! against the requests served.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use common::telemetry::{attr, f64_histogram_count, u64_sum, Harness};
use common::*;
use infermon::contract::{attr as key, metric, span as names, value};
use infermon_sim::{ErrorFault, ErrorKind};
use opentelemetry::trace::{SpanId, SpanKind, Status, TraceId};
use opentelemetry::Value;
use opentelemetry_sdk::trace::SpanData;
use serde_json::{json, Value as Json};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

fn secs_between(from: SystemTime, to: SystemTime) -> f64 {
    to.duration_since(from).unwrap().as_secs_f64()
}

/// The root span of each request, keyed by `gen_ai.response.id`.
fn roots(spans: &[SpanData]) -> HashMap<String, SpanData> {
    spans
        .iter()
        .filter(|s| s.span_kind == SpanKind::Server)
        .map(|s| {
            let id = attr(&s.attributes, key::GEN_AI_RESPONSE_ID)
                .expect("every request span has a response id")
                .as_str()
                .into_owned();
            (id, s.clone())
        })
        .collect()
}

fn child<'a>(spans: &'a [SpanData], root: &SpanData, name: &str) -> &'a SpanData {
    let mut matching = spans
        .iter()
        .filter(|s| s.parent_span_id == root.span_context.span_id() && s.name == name);
    let span = matching.next().unwrap_or_else(|| panic!("no {name} child"));
    assert!(matching.next().is_none(), "two {name} children");
    assert_eq!(span.span_kind, SpanKind::Internal);
    assert_eq!(span.span_context.trace_id(), root.span_context.trace_id());
    span
}

/// Streams one chat request; returns (response id, client-observed TTFT, usage).
async fn stream_chat(
    server: &Server,
    content: &str,
    traceparent: Option<&str>,
) -> (String, Duration, Json) {
    let body = json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 16,
        "ignore_eos": true,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let mut request = server
        .client
        .post(server.url("/v1/chat/completions"))
        .json(&body);
    if let Some(tp) = traceparent {
        request = request.header("traceparent", tp);
    }
    let sent = Instant::now();
    let streamed = read_stream(request.send().await.unwrap(), sent).await;
    let chunks: Vec<Json> = streamed.events[..streamed.events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let id = chunks[0]["id"].as_str().unwrap().to_owned();
    let usage = chunks.last().unwrap()["usage"].clone();
    (id, streamed.first_content_after.unwrap(), usage)
}

#[tokio::test(flavor = "current_thread")]
async fn every_request_gets_the_contract_span_tree_and_metrics() {
    let harness = Harness::new();
    let _guard = tracing::dispatcher::set_default(&harness.dispatch);
    let server = Server::start_with(test_config(), harness.sim_telemetry()).await;

    // Three streamed chats (one carrying a traceparent), one completion, one aborted stream.
    let mut client_ttft = HashMap::new();
    let mut usages = HashMap::new();
    for (i, traceparent) in [None, Some(format!("00-{TRACE_ID}-{PARENT_ID}-01")), None]
        .into_iter()
        .enumerate()
    {
        let (id, ttft, usage) =
            stream_chat(&server, &format!("request {i}"), traceparent.as_deref()).await;
        client_ttft.insert(id.clone(), ttft);
        usages.insert(id, usage);
    }
    let completion: Json = server
        .post_json(
            "/v1/completions",
            &json!({"model": MODEL, "prompt": "complete this", "max_tokens": 7, "ignore_eos": true}),
        )
        .await
        .json()
        .await
        .unwrap();
    usages.insert(
        completion["id"].as_str().unwrap().to_owned(),
        completion["usage"].clone(),
    );

    let abandoned = long_stream(&server, "walk away").await;
    drop(abandoned);
    let sim = server.sim.clone();
    wait_until("the abandoned stream is aborted", || {
        let sim = sim.clone();
        async move { sim.stats().aborted == 1 }
    })
    .await;

    let spans = harness.spans();
    let roots = roots(&spans);
    assert_eq!(roots.len(), 5, "one SERVER span per request");

    let mut compared_with_client = 0;
    for (id, root) in &roots {
        let queue = child(&spans, root, names::QUEUE);
        let prefill = child(&spans, root, names::PREFILL);
        let decode = child(&spans, root, names::DECODE);
        // The phases tile the request span exactly: they are stamped from the same step times.
        assert_eq!(queue.start_time, root.start_time, "{id}");
        assert_eq!(queue.end_time, prefill.start_time, "{id}");
        assert_eq!(prefill.end_time, decode.start_time, "{id}");
        assert_eq!(decode.end_time, root.end_time, "{id}");
        assert_eq!(
            attr(&root.attributes, key::GEN_AI_PROVIDER_NAME)
                .unwrap()
                .as_str(),
            value::PROVIDER_SIMULATOR
        );

        let first_token = root
            .events
            .iter()
            .find(|e| e.name == names::EVENT_FIRST_TOKEN)
            .expect("first_token event");
        assert_eq!(first_token.timestamp, prefill.end_time, "{id}");
        let Some(Value::F64(ttft)) = attr(&first_token.attributes, key::LLM_TTFT) else {
            panic!("first_token carries the TTFT in seconds");
        };
        let span_ttft = secs_between(root.start_time, first_token.timestamp);
        assert!(
            (ttft - span_ttft).abs() < 1e-6,
            "{id}: {ttft} vs {span_ttft}"
        );
        // The server stamps the token at the end of its step, before the client can see it,
        // and the arrival after the client sent: the server's TTFT cannot exceed the client's.
        if let Some(client) = client_ttft.get(id) {
            assert!(
                *ttft <= client.as_secs_f64(),
                "{id}: server {ttft} > client {client:?}"
            );
            compared_with_client += 1;
        }

        match usages.get(id) {
            Some(usage) => {
                assert_eq!(root.status, Status::Unset, "{id}");
                let output = attr(&root.attributes, key::GEN_AI_USAGE_OUTPUT_TOKENS).unwrap();
                assert_eq!(
                    *output,
                    Value::I64(usage["completion_tokens"].as_i64().unwrap())
                );
                let input = attr(&root.attributes, key::GEN_AI_USAGE_INPUT_TOKENS).unwrap();
                assert_eq!(*input, Value::I64(usage["prompt_tokens"].as_i64().unwrap()));
            }
            None => {
                // The abandoned one.
                let reasons = attr(&root.attributes, key::GEN_AI_RESPONSE_FINISH_REASONS).unwrap();
                assert!(
                    format!("{reasons:?}").contains(value::FINISH_ABORT),
                    "{reasons:?}"
                );
            }
        }
    }

    assert_eq!(compared_with_client, 3);

    // The traceparent was honoured: same trace, remote parent.
    let traced: Vec<&SpanData> = roots
        .values()
        .filter(|r| r.span_context.trace_id() == TraceId::from_hex(TRACE_ID).unwrap())
        .collect();
    assert_eq!(traced.len(), 1);
    assert_eq!(
        traced[0].parent_span_id,
        SpanId::from_hex(PARENT_ID).unwrap()
    );
    assert!(traced[0].parent_span_is_remote);
    let untraced = roots
        .values()
        .filter(|r| r.parent_span_id == SpanId::INVALID)
        .count();
    assert_eq!(
        untraced, 4,
        "requests without traceparent start their own traces"
    );

    // Metric totals equal what was served.
    let m = harness.collect();
    let stats = server.sim.stats();
    let requests = |outcome| u64_sum(&m, metric::REQUESTS, &[(key::LLM_REQUEST_OUTCOME, outcome)]);
    assert_eq!(requests(value::OUTCOME_SUCCESS), 4);
    assert_eq!(requests(value::OUTCOME_ABORTED), 1);
    assert_eq!(u64_sum(&m, metric::REQUESTS, &[]), 5);
    let chats = &[(key::GEN_AI_OPERATION_NAME, value::OPERATION_CHAT)];
    assert_eq!(u64_sum(&m, metric::REQUESTS, chats), 4);
    let output_tokens = u64_sum(
        &m,
        metric::TOKENS,
        &[(key::GEN_AI_TOKEN_TYPE, value::TOKEN_OUTPUT)],
    );
    assert_eq!(output_tokens, stats.generation_tokens);
    let served: u64 = usages
        .values()
        .map(|u| u["completion_tokens"].as_u64().unwrap())
        .sum();
    assert!(
        output_tokens > served,
        "the aborted stream produced some tokens too"
    );
    let input_tokens = u64_sum(
        &m,
        metric::TOKENS,
        &[(key::GEN_AI_TOKEN_TYPE, value::TOKEN_INPUT)],
    );
    assert_eq!(input_tokens, stats.prompt_tokens);
    assert_eq!(f64_histogram_count(&m, metric::TIME_TO_FIRST_TOKEN, &[]), 5);
    assert_eq!(f64_histogram_count(&m, metric::REQUEST_DURATION, &[]), 5);
    assert_eq!(f64_histogram_count(&m, metric::QUEUE_DURATION, &[]), 5);

    // Engine gauges and counters, as recorded every step.
    assert_eq!(u64_sum(&m, metric::SCHEDULER_ITERATIONS, &[]), stats.steps);
    assert!(stats.steps > 0);
    let blocks = u64_sum(&m, metric::KV_CACHE_BLOCKS, &[]);
    assert_eq!(blocks, u64::from(server.sim.num_kv_blocks()));
    let used = u64_sum(
        &m,
        metric::KV_CACHE_BLOCKS,
        &[(key::LLM_KV_CACHE_BLOCK_STATE, value::BLOCK_USED)],
    );
    assert_eq!(used, 0, "everything finished or aborted: no block in use");
}

#[tokio::test(flavor = "current_thread")]
async fn rejected_and_failed_requests_are_errors_with_their_type() {
    let harness = Harness::new();
    let _guard = tracing::dispatcher::set_default(&harness.dispatch);
    let mut config = test_config();
    config.faults.errors = vec![ErrorFault {
        kind: ErrorKind::RateLimited,
        rate: 1.0,
    }];
    let server = Server::start_with(config, harness.sim_telemetry()).await;
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}]});
    let response = server.post_json("/v1/chat/completions", &body).await;
    assert_eq!(response.status().as_u16(), 429);

    let spans = harness.spans();
    let root = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Server)
        .unwrap();
    assert!(
        matches!(root.status, Status::Error { .. }),
        "{:?}",
        root.status
    );
    assert_eq!(
        attr(&root.attributes, key::ERROR_TYPE).unwrap().as_str(),
        value::ERROR_RATE_LIMITED
    );
    let m = harness.collect();
    let errors = u64_sum(
        &m,
        metric::REQUESTS,
        &[
            (key::LLM_REQUEST_OUTCOME, value::OUTCOME_ERROR),
            (key::ERROR_TYPE, value::ERROR_RATE_LIMITED),
        ],
    );
    assert_eq!(errors, 1);
}

/// Requests turned away before the engine still become traces: one SERVER span each, marked
/// as an error with its `error.type`, and an `llm.requests` error point per type.
#[tokio::test(flavor = "current_thread")]
async fn requests_rejected_before_the_engine_leave_a_span_and_a_count() {
    let harness = Harness::new();
    let _guard = tracing::dispatcher::set_default(&harness.dispatch);
    let mut config = test_config();
    config.max_body_bytes = 4096;
    let server = Server::start_with(config, harness.sim_telemetry()).await;
    let chat = server.url("/v1/chat/completions");
    let cases: Vec<(reqwest::RequestBuilder, u16, &str, &str)> = vec![
        (
            server
                .client
                .post(&chat)
                .json(&json!({"model": MODEL, "messages": []})),
            400,
            value::ERROR_INVALID_REQUEST,
            MODEL,
        ),
        (
            server.client.post(&chat).json(&json!({
                "model": "no-such-model", "messages": [{"role": "user", "content": "x"}]
            })),
            404,
            value::ERROR_MODEL_NOT_FOUND,
            "no-such-model",
        ),
        (
            server.client.post(&chat).json(&json!({
                "model": MODEL, "messages": [{"role": "user", "content": "word ".repeat(1000)}]
            })),
            413,
            value::ERROR_REQUEST_TOO_LARGE,
            value::OVERFLOW,
        ),
        (
            server
                .client
                .post(&chat)
                .body("{}")
                .header("content-type", "text/plain"),
            400,
            value::ERROR_UNSUPPORTED_MEDIA_TYPE,
            value::OVERFLOW,
        ),
        (
            server
                .client
                .post(&chat)
                .body("{not json")
                .header("content-type", "application/json"),
            400,
            value::ERROR_INVALID_REQUEST,
            value::OVERFLOW,
        ),
    ];
    let count = cases.len();
    for (request, status, _, _) in cases
        .iter()
        .map(|c| (c.0.try_clone().unwrap(), c.1, c.2, c.3))
    {
        assert_eq!(request.send().await.unwrap().status().as_u16(), status);
    }

    let spans = harness.spans();
    let roots: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.span_kind == SpanKind::Server)
        .collect();
    assert_eq!(roots.len(), count, "one SERVER span per rejected request");
    assert_eq!(
        spans.len(),
        count,
        "no phase spans: nothing reached the engine"
    );
    let m = harness.collect();
    for phase in [
        metric::QUEUE_DURATION,
        metric::PREFILL_DURATION,
        metric::DECODE_DURATION,
    ] {
        assert_eq!(f64_histogram_count(&m, phase, &[]), 0, "{phase}");
    }
    for (root, (_, _, error_type, model)) in roots.iter().zip(&cases) {
        assert!(
            matches!(root.status, Status::Error { .. }),
            "{:?}",
            root.status
        );
        assert_eq!(
            attr(&root.attributes, key::ERROR_TYPE).unwrap().as_str(),
            *error_type
        );
        assert_eq!(
            attr(&root.attributes, key::GEN_AI_REQUEST_MODEL)
                .unwrap()
                .as_str(),
            *model
        );
    }
    for (_, _, error_type, _) in &cases {
        let want = cases.iter().filter(|c| c.2 == *error_type).count() as u64;
        let counted = u64_sum(
            &m,
            metric::REQUESTS,
            &[
                (key::LLM_REQUEST_OUTCOME, value::OUTCOME_ERROR),
                (key::ERROR_TYPE, error_type),
            ],
        );
        assert_eq!(counted, want, "llm.requests for {error_type}");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn simulated_gpus_follow_the_engine_load() {
    let harness = Harness::new();
    let mut config = test_config();
    config.simulated_gpus = 2;
    config.time_scale = 5.0;
    let server = Server::start_with(config, harness.sim_telemetry()).await;

    let busy = long_stream(&server, "keep busy").await;
    let sim = server.sim.clone();
    wait_until("both simulated GPUs report the engine busy", || {
        let sim = sim.clone();
        async move {
            let snapshot = sim.gpu_snapshot();
            snapshot.devices.len() == 2
                && snapshot
                    .devices
                    .iter()
                    .all(|d| d.metrics.utilization.is_some_and(|u| u > 0.5))
        }
    })
    .await;
    drop(busy);

    let profile = server.sim.profile();
    let preallocated = profile.model.params * profile.model.bytes_per_param
        + 1024.0 * 16.0 * profile.model.kv_bytes_per_token as f64;
    for device in server.sim.gpu_snapshot().devices {
        assert_eq!(device.info.vendor, value::VENDOR_SIMULATED);
        assert_eq!(device.info.name, profile.gpu.name);
        assert_eq!(device.metrics.memory_usage_bytes, Some(preallocated as i64));
        assert_eq!(
            device.metrics.memory_limit_bytes,
            Some(profile.gpu.memory_bytes as i64)
        );
    }
    // The same instruments as real GPUs, on the simulator's meter.
    let m = harness.collect();
    assert!(f64_gauge_present(&m, metric::GPU_UTILIZATION));
    server.sim.shutdown().await;
}

fn f64_gauge_present(m: &opentelemetry_sdk::metrics::data::ResourceMetrics, name: &str) -> bool {
    m.scope_metrics()
        .flat_map(|s| s.metrics())
        .any(|x| x.name() == name)
}

/// Each request's share of the engine's step time: on its span, and as a histogram. Two
/// requests served together split the steps they share, so their shares add up to no more
/// than the time the engine was busy.
#[tokio::test(flavor = "current_thread")]
async fn requests_report_their_share_of_engine_time() {
    let harness = Harness::new();
    let _guard = tracing::dispatcher::set_default(&harness.dispatch);
    let server = Server::start_with(test_config(), harness.sim_telemetry()).await;
    let started = Instant::now();
    let (a, b) = tokio::join!(
        stream_chat(&server, "first", None),
        stream_chat(&server, "second", None)
    );
    let wall = started.elapsed().as_secs_f64();
    let _ = (a, b);
    let shares: Vec<f64> = harness
        .spans()
        .iter()
        .filter(|s| s.name == format!("chat {MODEL}"))
        .map(|s| match attr(&s.attributes, key::LLM_REQUEST_GPU_TIME) {
            Some(Value::F64(v)) => *v,
            other => panic!("no llm.request.gpu_time on the request span: {other:?}"),
        })
        .collect();
    assert_eq!(shares.len(), 2);
    assert!(shares.iter().all(|s| *s > 0.0), "{shares:?}");
    let total: f64 = shares.iter().sum();
    assert!(
        total <= wall,
        "shares {shares:?} add up to more than the {wall} s the engine ran"
    );
    let m = harness.collect();
    let labels = [(key::GEN_AI_REQUEST_MODEL, MODEL)];
    assert_eq!(
        f64_histogram_count(&m, metric::REQUEST_GPU_TIME, &labels),
        2
    );
}
