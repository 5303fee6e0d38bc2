//! `trace_format = "both"`: each request's vLLM 0.33.0-shaped `llm_request` span beside the
//! contract's span tree, which is the ground truth — checked directly, and after the relay's
//! expansion (`infermon-relay`), whose rebuilt phases must match the contract's children.

mod common;

use std::time::SystemTime;

use common::telemetry::{attr, Harness};
use common::*;
use infermon::contract::relay::vllm;
use infermon::contract::{attr as key, span as names, value};
use infermon_relay::expand::expand_request;
use infermon_relay::ModelNames;
use infermon_sim::{TraceFormat, VllmTraces};
use opentelemetry::trace::SpanKind;
use opentelemetry::Value;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use opentelemetry_sdk::Resource;
use serde_json::json;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

fn nanos(t: SystemTime) -> i128 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as i128
}

fn f64_attr(span: &SpanData, k: &str) -> f64 {
    match attr(&span.attributes, k) {
        Some(Value::F64(v)) => *v,
        other => panic!("{k}: {other:?}"),
    }
}

/// The contract's child `name` of the request span with `gen_ai.response.id` = `id`.
fn contract_phase<'a>(spans: &'a [SpanData], id: &str, name: &str) -> &'a SpanData {
    let root = spans
        .iter()
        .find(|s| {
            s.span_kind == SpanKind::Server
                && attr(&s.attributes, key::GEN_AI_RESPONSE_ID).map(|v| v.as_str().into_owned())
                    == Some(id.to_owned())
        })
        .expect("contract request span");
    spans
        .iter()
        .find(|s| s.parent_span_id == root.span_context.span_id() && s.name == name)
        .unwrap_or_else(|| panic!("no contract {name}"))
}

#[tokio::test(flavor = "current_thread")]
async fn vllm_spans_match_the_contract_spans_before_and_after_the_relay() {
    let harness = Harness::new();
    let _guard = tracing::dispatcher::set_default(&harness.dispatch);
    let vllm_spans = InMemorySpanExporter::default();
    let vllm_provider = SdkTracerProvider::builder()
        .with_simple_exporter(vllm_spans.clone())
        .build();
    let mut config = test_config();
    config.trace_format = TraceFormat::Both;
    let sim = infermon_sim::Simulator::start_with_vllm_traces(
        config,
        harness.sim_telemetry(),
        Some(VllmTraces::with_provider(vllm_provider)),
    )
    .unwrap();
    let server = Server::serve(sim.clone()).await;
    let mut ids = Vec::new();
    for (i, temperature) in [(0, json!(0.0)), (1, json!(0.8))] {
        let body = json!({
            "model": MODEL,
            "messages": [{"role": "user", "content": format!("request {i}")}],
            "max_tokens": 12,
            "ignore_eos": true,
            "temperature": temperature,
        });
        let response = json_answer(
            server
                .client
                .post(server.url("/v1/chat/completions"))
                .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
                .json(&body),
        )
        .await;
        ids.push(response["id"].as_str().unwrap().to_owned());
    }
    // Read before `sim.shutdown()`, which shuts the vLLM provider (and its exporter) down.
    wait_until("both vLLM spans exported", || async {
        vllm_spans.get_finished_spans().unwrap().len() == 2
    })
    .await;
    let exported = vllm_spans.get_finished_spans().unwrap();
    sim.shutdown().await;
    let contract = harness.spans();
    for (span, id) in exported.iter().zip(&ids) {
        assert_eq!(span.name, vllm::SPAN_NAME);
        assert_eq!(span.instrumentation_scope.name(), vllm::SCOPE);
        assert_eq!(span.span_kind, SpanKind::Server);
        assert_eq!(span.span_context.trace_id().to_string(), TRACE_ID);
        assert_eq!(span.parent_span_id.to_string(), PARENT_ID);
        assert_eq!(
            attr(&span.attributes, vllm::REQUEST_ID).map(|v| v.as_str().into_owned()),
            Some(id.clone())
        );
        // The phases vLLM reports equal the contract's phase spans (1 µs: float seconds).
        let close =
            |a: f64, b: f64, what: &str| assert!((a - b).abs() < 1e-6, "{what}: {a} vs {b}");
        let duration = |s: &SpanData| {
            s.end_time
                .duration_since(s.start_time)
                .unwrap()
                .as_secs_f64()
        };
        close(
            f64_attr(span, vllm::LATENCY_TIME_IN_QUEUE),
            duration(contract_phase(&contract, id, names::QUEUE)),
            "queue",
        );
        close(
            f64_attr(span, vllm::LATENCY_TIME_IN_MODEL_PREFILL),
            duration(contract_phase(&contract, id, names::PREFILL)),
            "prefill",
        );
        close(
            f64_attr(span, vllm::LATENCY_TIME_IN_MODEL_DECODE),
            duration(contract_phase(&contract, id, names::DECODE)),
            "decode",
        );
    }
    // Sampling parameters only when non-zero: temperature 0 is absent, 0.8 present.
    assert!(attr(&exported[0].attributes, vllm::REQUEST_TEMPERATURE).is_none());
    assert_eq!(
        attr(&exported[1].attributes, vllm::REQUEST_TEMPERATURE),
        Some(&Value::F64(0.8))
    );

    // Through the relay's expansion: the rebuilt children land on the contract's children.
    let resource = Resource::builder().build();
    let mut request = ExportTraceServiceRequest {
        resource_spans: group_spans_by_resource_and_scope(
            exported.clone(),
            &ResourceAttributesWithSchema::from(&resource),
        ),
    };
    let report = expand_request(&mut request, &ModelNames::new(MODEL), value::OPERATION_CHAT);
    assert_eq!((report.expanded, report.incomplete), (2, [0; 4]));
    let rebuilt: Vec<_> = request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .filter(|s| [names::QUEUE, names::PREFILL, names::DECODE].contains(&s.name.as_str()))
        .collect();
    assert_eq!(rebuilt.len(), 6);
    for child in rebuilt {
        let parent = exported
            .iter()
            .find(|p| p.span_context.span_id().to_bytes().as_slice() == child.parent_span_id)
            .unwrap();
        let id = attr(&parent.attributes, vllm::REQUEST_ID)
            .unwrap()
            .as_str()
            .into_owned();
        let truth = contract_phase(&contract, &id, &child.name);
        for (rebuilt_at, truth_at) in [
            (child.start_time_unix_nano, truth.start_time),
            (child.end_time_unix_nano, truth.end_time),
        ] {
            let off = (rebuilt_at as i128 - nanos(truth_at)).abs();
            assert!(off <= 1_000, "{} off by {off} ns", child.name);
        }
    }
}
