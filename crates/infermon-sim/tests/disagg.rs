//! Disaggregated prefill/decode between two simulators, driven as vLLM's P/D routers drive it:
//! the prefill worker answers `max_tokens: 1` with `kv_transfer_params`; the decode worker
//! pulls the KV cache (a `kv_transfer` span and metrics) and decodes without computing the
//! prompt.

mod common;

use common::telemetry::{attr, f64_histogram_count, u64_sum, Harness};
use common::{json_answer, test_config, Server, MODEL};
use infermon::contract::{attr as a, metric, span as names};
use opentelemetry::trace::SpanKind;
use serde_json::json;

#[tokio::test(flavor = "current_thread")]
async fn a_prefill_worker_hands_its_kv_cache_to_a_decode_worker() {
    let harness = Harness::new();
    let _guard = tracing::dispatcher::set_default(&harness.dispatch);
    let prefill = Server::start(test_config()).await;
    let decode = Server::start_with(test_config(), harness.sim_telemetry()).await;
    let prompt = "word ".repeat(400);
    let request = json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 12,
        "ignore_eos": true,
    });

    // 1. Prefill: one token, and the parameters for the decode worker.
    let mut first = request.clone();
    first["max_tokens"] = json!(1);
    first["kv_transfer_params"] = json!({"do_remote_decode": true});
    let answer = json_answer(
        prefill
            .client
            .post(prefill.url("/v1/chat/completions"))
            .json(&first),
    )
    .await;
    let params = answer["kv_transfer_params"].clone();
    assert_eq!(params["do_remote_prefill"], true, "{answer}");
    let prompt_tokens = answer["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(params["remote_num_tokens"].as_u64(), Some(prompt_tokens));
    assert!(params["remote_engine_id"]
        .as_str()
        .is_some_and(|id| !id.is_empty()));

    // 2. Decode, under the caller's trace.
    let mut second = request.clone();
    second["kv_transfer_params"] = params;
    let response = json_answer(
        decode
            .client
            .post(decode.url("/v1/chat/completions"))
            .header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .json(&second),
    )
    .await;
    assert_eq!(response["usage"]["completion_tokens"], 12, "{response}");
    assert!(response.get("kv_transfer_params").is_none());

    let spans = harness.spans();
    let transfer = spans
        .iter()
        .find(|s| s.name == names::KV_TRANSFER)
        .expect("kv_transfer span");
    // Both workers share this test's subscriber: the decode worker's request is the one in the
    // caller's trace.
    let request_span = spans
        .iter()
        .find(|s| {
            s.name == format!("chat {MODEL}")
                && s.span_context.trace_id() == transfer.span_context.trace_id()
        })
        .expect("decode request span");
    assert_eq!(transfer.span_kind, SpanKind::Client);
    assert_eq!(
        transfer.parent_span_id, request_span.parent_span_id,
        "siblings under the caller's span"
    );
    assert!(
        transfer.end_time <= request_span.start_time,
        "transfer, then the request"
    );
    let profile = infermon_sim::Profile::builtin(infermon_sim::DEFAULT_PROFILE).unwrap();
    let bytes = prompt_tokens * profile.model.kv_bytes_per_token;
    assert_eq!(
        attr(&transfer.attributes, a::LLM_KV_TRANSFER_BYTES).map(|v| v.as_str().into_owned()),
        Some(bytes.to_string())
    );
    assert_eq!(
        attr(&transfer.attributes, a::LLM_KV_TRANSFER_TRANSPORT).map(|v| v.as_str().into_owned()),
        Some("rdma".to_owned())
    );
    // The decode worker computed one prompt token, not the whole prompt: nothing from the
    // prefix cache, and a prefill far shorter than the prompt would take.
    let prefill_span = spans
        .iter()
        .find(|s| {
            s.name == names::PREFILL && s.parent_span_id == request_span.span_context.span_id()
        })
        .expect("decode worker's prefill span");
    assert_eq!(
        attr(&prefill_span.attributes, a::LLM_PREFILL_COMPUTED_TOKENS)
            .map(|v| v.as_str().into_owned()),
        Some("1".to_owned())
    );

    let m = harness.collect();
    let labels = [
        (a::GEN_AI_REQUEST_MODEL, MODEL),
        (a::LLM_KV_TRANSFER_TRANSPORT, "rdma"),
    ];
    assert_eq!(u64_sum(&m, metric::KV_TRANSFER_BYTES, &labels), bytes);
    assert_eq!(
        f64_histogram_count(&m, metric::KV_TRANSFER_DURATION, &labels),
        1
    );
}
