//! Both receivers in process, with a real tonic client, a real HTTP client and a fake
//! collector upstream: expansion end to end, OTLP error responses, back-pressure, retries.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;

use infermon_instrument::contract::relay::vllm;
use infermon_relay::stats::Dropped;
use infermon_relay::{ModelNames, Relay, RelayConfig, RelayHandle, RetryPolicy};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tonic::Code;
use tonic_types::StatusExt;

fn config(upstream: SocketAddr) -> RelayConfig {
    let mut config = RelayConfig::new(format!("http://{upstream}"));
    config.grpc_listen = "127.0.0.1:0".parse().unwrap();
    config.http_listen = "127.0.0.1:0".parse().unwrap();
    config.models = ModelNames::new("llama-3-8b");
    config.retry = RetryPolicy {
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        max_elapsed: Duration::from_secs(5),
    };
    config
}

async fn start_relay(config: RelayConfig) -> RelayHandle {
    Relay::start(config, &opentelemetry::global::meter("relay-test"))
        .await
        .unwrap()
}

/// One vLLM `llm_request` span (0.5 s to first token, all phases present).
fn vllm_request(span_id: u8) -> ExportTraceServiceRequest {
    let start = 1_764_633_600_000_000_000u64;
    let span = Span {
        trace_id: vec![7; 16],
        span_id: vec![span_id; 8],
        name: vllm::SPAN_NAME.to_owned(),
        kind: 2,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 2_000_000_000,
        attributes: vec![
            double(vllm::LATENCY_TIME_TO_FIRST_TOKEN, 0.5),
            double(vllm::LATENCY_TIME_IN_QUEUE, 0.1),
            double(vllm::LATENCY_TIME_IN_MODEL_PREFILL, 0.3),
            double(vllm::LATENCY_TIME_IN_MODEL_DECODE, 1.2),
        ],
        ..Default::default()
    };
    batch(None, vllm::SCOPE, vec![span])
}

async fn grpc_client(relay: &RelayHandle) -> TraceServiceClient<tonic::transport::Channel> {
    TraceServiceClient::connect(format!("http://{}", relay.grpc_addr()))
        .await
        .unwrap()
}

fn http_url(relay: &RelayHandle) -> String {
    format!("http://{}/v1/traces", relay.http_addr())
}

/// Posts one vLLM span to the relay over OTLP/HTTP (protobuf).
async fn post_vllm_request(relay: &RelayHandle) -> reqwest::Response {
    reqwest::Client::new()
        .post(http_url(relay))
        .header("content-type", "application/x-protobuf")
        .body(vllm_request(1).encode_to_vec())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn grpc_in_expanded_out() {
    let (upstream, mut accepted) = start_collector(vec![], Duration::ZERO).await;
    let relay = start_relay(config(upstream)).await;
    grpc_client(&relay)
        .await
        .export(vllm_request(1))
        .await
        .unwrap();
    let forwarded = next(&mut accepted).await;
    assert_eq!(
        span_names(&forwarded),
        ["chat llama-3-8b", "queue", "prefill", "decode"]
    );
    let stats = relay.stats().snapshot();
    assert_eq!((stats.received, stats.expanded, stats.passed), (1, 1, 0));
    relay.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn http_in_expanded_out() {
    let (upstream, mut accepted) = start_collector(vec![], Duration::ZERO).await;
    let relay = start_relay(config(upstream)).await;
    let response = post_vllm_request(&relay).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-protobuf");
    ExportTraceServiceResponse::decode(response.bytes().await.unwrap()).unwrap();
    let forwarded = next(&mut accepted).await;
    assert_eq!(
        span_names(&forwarded),
        ["chat llama-3-8b", "queue", "prefill", "decode"]
    );
    relay.shutdown(Duration::from_secs(1)).await;
}

/// Posts `body` and returns the status and the decoded `google.rpc.Status`.
async fn post(
    url: &str,
    content_type: &str,
    extra: Option<(&str, &str)>,
    body: Vec<u8>,
) -> (u16, tonic_types::pb::Status, reqwest::header::HeaderMap) {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", content_type)
        .body(body);
    if let Some((k, v)) = extra {
        request = request.header(k, v);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "application/x-protobuf");
    let body = tonic_types::pb::Status::decode(response.bytes().await.unwrap()).unwrap();
    (status, body, headers)
}

#[tokio::test]
async fn http_bad_input_gets_otlp_errors_and_nothing_else_is_lost() {
    let (upstream, mut accepted) = start_collector(vec![], Duration::ZERO).await;
    let mut config = config(upstream);
    config.max_message_bytes = 64 * 1024;
    let relay = start_relay(config).await;
    let url = http_url(&relay);
    let good = vllm_request(1).encode_to_vec();

    let (status, body, _) = post(&url, "application/json", None, b"{}".to_vec()).await;
    assert_eq!(status, 415);
    assert!(
        body.message.contains("application/x-protobuf"),
        "{}",
        body.message
    );

    let (status, _, _) = post(
        &url,
        "application/x-protobuf",
        Some(("content-encoding", "gzip")),
        good.clone(),
    )
    .await;
    assert_eq!(status, 415);

    let (status, body, _) = post(&url, "application/x-protobuf", None, vec![0xFF; 64]).await;
    assert_eq!(status, 400);
    assert_eq!(body.code, Code::InvalidArgument as i32);

    let (status, body, _) =
        post(&url, "application/x-protobuf", None, vec![0; 64 * 1024 + 1]).await;
    assert_eq!(status, 413);
    assert_eq!(body.code, Code::OutOfRange as i32);

    // The relay still works, and nothing of the bad requests reached the collector.
    let (status, _) = {
        let r = reqwest::Client::new()
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .body(good)
            .send()
            .await
            .unwrap();
        (r.status(), ())
    };
    assert_eq!(status, 200);
    assert_eq!(span_names(&next(&mut accepted).await).len(), 4);
    assert!(accepted.try_recv().is_err());
    relay.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn grpc_oversized_message_is_refused() {
    let (upstream, _accepted) = start_collector(vec![], Duration::ZERO).await;
    let mut config = config(upstream);
    config.max_message_bytes = 1024;
    let relay = start_relay(config).await;
    let mut big = vllm_request(1);
    big.resource_spans[0].scope_spans[0].spans[0].name = "x".repeat(4096);
    let error = grpc_client(&relay).await.export(big).await.unwrap_err();
    assert_eq!(error.code(), Code::OutOfRange, "{error:?}");
    // The next, well-sized request goes through.
    grpc_client(&relay)
        .await
        .export(vllm_request(2))
        .await
        .unwrap();
    relay.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_full_queue_pushes_back_on_both_protocols() {
    // The collector holds each export 3 s; the queue holds one span (the first request's
    // four after expansion take all of it).
    let (upstream, _accepted) = start_collector(vec![], Duration::from_secs(3)).await;
    let mut config = config(upstream);
    config.queue_spans = 1;
    config.export_workers = 1;
    config.retry_after = Duration::from_secs(2);
    let relay = start_relay(config).await;
    let mut client = grpc_client(&relay).await;
    client.export(vllm_request(1)).await.unwrap();

    let refused = client.export(vllm_request(2)).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    let retry = refused.get_details_retry_info().expect("RetryInfo");
    assert_eq!(retry.retry_delay, Some(Duration::from_secs(2)));

    let (status, body, headers) = post(
        &http_url(&relay),
        "application/x-protobuf",
        None,
        vllm_request(3).encode_to_vec(),
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(body.code, Code::ResourceExhausted as i32);
    assert_eq!(headers["retry-after"], "2");

    let stats = relay.stats().snapshot();
    assert_eq!(stats.dropped(Dropped::QueueFull), 8);
    assert_eq!(stats.queued, 4);
    // Stopping with the first batch still at the collector: counted as dropped at shutdown.
    let stats = relay.stats().clone();
    relay.shutdown(Duration::from_millis(100)).await;
    let after = stats.snapshot();
    assert_eq!((after.dropped(Dropped::Shutdown), after.queued), (4, 0));
}

#[tokio::test]
async fn unavailable_collector_is_retried_until_it_accepts() {
    let (upstream, mut accepted) = start_collector(
        vec![
            tonic::Status::unavailable("starting"),
            tonic::Status::unavailable("starting"),
        ],
        Duration::ZERO,
    )
    .await;
    let relay = start_relay(config(upstream)).await;
    grpc_client(&relay)
        .await
        .export(vllm_request(1))
        .await
        .unwrap();
    assert_eq!(span_names(&next(&mut accepted).await).len(), 4);
    let stats = relay.stats().snapshot();
    assert_eq!(stats.export_failures, 2);
    assert_eq!(stats.dropped, [0; 4]);
    relay.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_permanent_refusal_drops_the_batch_and_counts_it() {
    let (upstream, mut accepted) = start_collector(
        vec![tonic::Status::invalid_argument("bad batch")],
        Duration::ZERO,
    )
    .await;
    let relay = start_relay(config(upstream)).await;
    let mut client = grpc_client(&relay).await;
    client.export(vllm_request(1)).await.unwrap();
    client.export(vllm_request(2)).await.unwrap();
    // The second batch arrives; the first was dropped, not retried.
    let delivered = next(&mut accepted).await;
    assert_eq!(
        delivered.resource_spans[0].scope_spans[0].spans[0].span_id,
        vec![2; 8]
    );
    let stats = relay.stats().snapshot();
    assert_eq!(stats.dropped(Dropped::UpstreamRejected), 4);
    assert_eq!(stats.export_failures, 1);
    relay.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn retries_give_up_after_the_elapsed_limit() {
    let errors = (0..1000)
        .map(|_| tonic::Status::unavailable("down"))
        .collect();
    let (upstream, _accepted) = start_collector(errors, Duration::ZERO).await;
    let mut config = config(upstream);
    config.retry.max_elapsed = Duration::from_millis(200);
    let relay = start_relay(config).await;
    grpc_client(&relay)
        .await
        .export(vllm_request(1))
        .await
        .unwrap();
    let stats = relay.stats().clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while stats.snapshot().dropped(Dropped::ExportFailed) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never gave up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = stats.snapshot();
    assert_eq!(s.dropped(Dropped::ExportFailed), 4);
    assert!(s.export_failures >= 2, "{s:?}");
    relay.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn connections_over_the_cap_are_refused_on_both_protocols() {
    let (upstream, mut accepted) = start_collector(vec![], Duration::ZERO).await;
    let mut config = config(upstream);
    config.serve.max_connections = 1;
    let relay = start_relay(config).await;
    // One idle connection on each receiver takes its only slot.
    let held_http = tokio::net::TcpStream::connect(relay.http_addr())
        .await
        .unwrap();
    let held_grpc = tokio::net::TcpStream::connect(relay.grpc_addr())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // HTTP: the shared server's answer, a 503 with an OpenAI-style JSON error.
    let response = post_vllm_request(&relay).await;
    assert_eq!(response.status(), 503);
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("too_many_connections"));

    // gRPC: the connection is closed at once.
    let refused = match TraceServiceClient::connect(format!("http://{}", relay.grpc_addr())).await {
        Err(_) => true,
        // tonic reports the closed connection as CANCELLED; OTLP exporters retry it, as
        // they do UNAVAILABLE.
        Ok(mut client) => client
            .export(vllm_request(2))
            .await
            .is_err_and(|s| matches!(s.code(), Code::Cancelled | Code::Unavailable)),
    };
    assert!(refused, "a gRPC connection over the cap was served");

    // A freed slot serves again.
    drop((held_http, held_grpc));
    tokio::time::sleep(Duration::from_millis(200)).await;
    grpc_client(&relay)
        .await
        .export(vllm_request(3))
        .await
        .unwrap();
    let forwarded = next(&mut accepted).await;
    assert_eq!(span_names(&forwarded)[0], "chat llama-3-8b");
    relay.shutdown(Duration::from_secs(1)).await;
}
