//! `examples/axum_macros.rs`, a streaming chat server instrumented with `tracing` macros only,
//! gets every contract span and metric through the layers `init` installs.

mod common;

#[path = "../examples/axum_macros.rs"]
#[allow(dead_code)]
mod example;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use infermon::contract::{attr, metric, span as names, value};
use opentelemetry::trace::SpanKind;
use opentelemetry::Value;
use tower::ServiceExt as _;

fn chat_request(body: &str) -> Request<Body> {
    Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(Body::from(body.to_owned()))
        .unwrap()
}

#[tokio::test]
async fn streaming_request_gets_every_contract_span_and_metric() {
    let h = Harness::new();
    // A current-thread runtime: every task runs on this thread, under this subscriber.
    let _subscriber = tracing::dispatcher::set_default(&h.dispatch);

    let response = example::app()
        .oneshot(chat_request(
            r#"{"model":"toy","stream":true,"max_tokens":5,"messages":[{"role":"user","content":"hello there"}]}"#,
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let body = String::from_utf8(body.to_vec()).unwrap();
    assert_eq!(body.matches("chat.completion.chunk").count(), 5, "{body}");
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");

    // Spans: the SERVER span under the caller's trace, its three phases, the user's
    // `#[instrument]` function under `prefill`.
    let root = h.span("chat toy");
    assert_eq!(root.span_kind, SpanKind::Server);
    assert_eq!(root.parent_span_id.to_string(), "00f067aa0ba902b7");
    for phase in [names::QUEUE, names::PREFILL, names::DECODE] {
        assert_eq!(
            h.span(phase).parent_span_id,
            root.span_context.span_id(),
            "{phase}"
        );
    }
    assert_eq!(
        h.span("tokenize").parent_span_id,
        h.span(names::PREFILL).span_context.span_id()
    );
    assert_eq!(
        root.events
            .iter()
            .map(|e| e.name.as_ref())
            .collect::<Vec<_>>(),
        [names::EVENT_FIRST_TOKEN]
    );
    assert_eq!(
        attr(&root.attributes, attr::GEN_AI_USAGE_OUTPUT_TOKENS),
        Some(&Value::I64(5))
    );

    // Metrics, derived from those spans.
    let rm = h.collect();
    let requests: Vec<_> = u64_points(&rm, metric::REQUESTS)
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    assert_eq!(requests.len(), 1);
    let labels = &requests[0].0;
    assert!(labels.contains(&format!(
        "{}={}",
        attr::LLM_REQUEST_OUTCOME,
        value::OUTCOME_SUCCESS
    )));
    assert!(labels.contains(&format!(
        "{}={}",
        attr::GEN_AI_RESPONSE_FINISH_REASON,
        value::FINISH_LENGTH
    )));
    for name in LATENCY_HISTOGRAMS {
        let counted: u64 = f64_histogram(&rm, name).iter().map(|p| p.count()).sum();
        assert_eq!(counted, 1, "{name}");
    }
    let output: Vec<_> = u64_points(&rm, metric::TOKENS)
        .into_iter()
        .filter(|(labels, _)| labels.iter().any(|l| l.ends_with("=output")))
        .collect();
    assert_eq!(output[0].1, 5);
}

#[tokio::test]
async fn bad_requests_are_openai_style_400s_and_still_a_trace_and_a_count() {
    let h = Harness::new();
    let _subscriber = tracing::dispatcher::set_default(&h.dispatch);
    for body in [r#"{"messages":[]}"#, "{not json"] {
        let response = example::app().oneshot(chat_request(body)).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        assert!(String::from_utf8_lossy(&body).contains("invalid_request_error"));
    }

    let rejected: Vec<_> = h
        .spans()
        .into_iter()
        .filter(|s| s.name == "chat unknown")
        .collect();
    assert_eq!(rejected.len(), 2);
    for span in &rejected {
        assert_eq!(span.span_kind, SpanKind::Server);
        assert_eq!(span.parent_span_id.to_string(), "00f067aa0ba902b7");
        assert_eq!(
            attr(&span.attributes, attr::ERROR_TYPE),
            Some(&Value::from("invalid_request"))
        );
    }
    let errors: u64 = u64_points(&h.collect(), metric::REQUESTS)
        .into_iter()
        .filter(|(labels, _)| labels.iter().any(|l| l == "error.type=invalid_request"))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(errors, 2);
}
