//! The load generator against a scripted OpenAI-style server: every failure mode lands under the
//! right error key, targets are used round robin, open and closed loops send what they should,
//! and a shutdown cancels what is in flight.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use common::run_traced;
use infermon_load::{Arrival, LengthDist, LoadConfig, LoadGenerator, Summary};

const STREAM_OK: &str = concat!(
    "data: {\"id\":\"c1\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
    "data: {\"id\":\"c1\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n",
    "data: {\"id\":\"c1\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"b\"}}]}\n\n",
    "data: {\"id\":\"c1\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]}\n\n",
    "data: {\"id\":\"c1\",\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2,\"total_tokens\":9}}\n\n",
    "data: [DONE]\n\n",
);

/// Requests `/traced` received with a `traceparent` header.
static TRACEPARENTS_SEEN: AtomicUsize = AtomicUsize::new(0);

fn sse(body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
}

async fn serve() -> SocketAddr {
    let app = Router::new()
        .route("/ok/v1/chat/completions", post(|| async { sse(STREAM_OK) }))
        .route(
            "/overloaded/v1/chat/completions",
            post(|| async {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::CONTENT_TYPE, "application/json")],
                    r#"{"error":{"message":"queue full","type":"overloaded_error","param":null,"code":503}}"#,
                )
            }),
        )
        .route(
            "/plain500/v1/chat/completions",
            post(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "oops") }),
        )
        .route(
            "/midstream/v1/chat/completions",
            post(|| async {
                sse(concat!(
                    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n",
                    "data: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}\n\n",
                ))
            }),
        )
        .route(
            "/truncated/v1/chat/completions",
            post(|| async { sse("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n") }),
        )
        .route(
            "/garbage/v1/chat/completions",
            post(|| async { sse("data: this is not json\n\n") }),
        )
        .route(
            "/slow/v1/chat/completions",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                sse(STREAM_OK)
            }),
        )
        .route(
            "/whole/v1/chat/completions",
            post(|| async {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    r#"{"id":"c9","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"abc"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}"#,
                )
            }),
        )
        .route(
            "/traced/v1/chat/completions",
            post(|headers: HeaderMap| async move {
                if headers.contains_key("traceparent") {
                    TRACEPARENTS_SEEN.fetch_add(1, Ordering::Relaxed);
                }
                sse(STREAM_OK)
            }),
        )
        .fallback(|| async { (StatusCode::NOT_FOUND, Body::empty()) });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

fn config(urls: Vec<String>, requests: u64) -> LoadConfig {
    let mut c = LoadConfig::new(urls, "m");
    c.requests = Some(requests);
    c.arrival = Arrival::Closed { concurrency: 2 };
    c.prompt_tokens = LengthDist::Fixed(8);
    c.output_tokens = LengthDist::Fixed(2);
    c.timeout = Duration::from_secs(5);
    c.seed = Some(1);
    c
}

async fn run(config: LoadConfig) -> Summary {
    LoadGenerator::new(config)
        .unwrap()
        .run(std::future::pending())
        .await
        .unwrap()
}

#[tokio::test]
async fn every_failure_mode_has_its_own_error_key() {
    let address = serve().await;
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    }; // dropped: nothing listens there any more
    let cases = [
        ("overloaded", "http_503:overloaded_error"),
        ("plain500", "http_500"),
        ("midstream", "stream_error:server_error"),
        ("truncated", "incomplete_stream"),
        ("garbage", "invalid_response"),
    ];
    for (path, key) in cases {
        let summary = run(config(vec![format!("http://{address}/{path}")], 3)).await;
        assert_eq!(summary.requests.failed, 3, "{path}: {summary:?}");
        assert_eq!(
            summary.errors.get(key),
            Some(&3),
            "{path}: {:?}",
            summary.errors
        );
        assert_eq!(summary.errors.len(), 1, "{path}: {:?}", summary.errors);
    }

    let summary = run(config(vec![format!("http://{refused}")], 2)).await;
    assert_eq!(
        summary.errors.get("connect"),
        Some(&2),
        "{:?}",
        summary.errors
    );

    let mut slow = config(vec![format!("http://{address}/slow")], 2);
    slow.timeout = Duration::from_millis(200);
    let summary = run(slow).await;
    assert_eq!(
        summary.errors.get("timeout"),
        Some(&2),
        "{:?}",
        summary.errors
    );
}

#[tokio::test]
async fn a_stream_is_measured_from_its_chunks_and_usage() {
    let address = serve().await;
    let summary = run(config(vec![format!("http://{address}/ok")], 4)).await;
    assert_eq!(summary.requests.succeeded, 4);
    assert_eq!(summary.tokens.input, 4 * 7, "from the usage chunk");
    assert_eq!(summary.tokens.output, 4 * 2, "from the usage chunk");
    assert_eq!(summary.finish_reasons.get("length"), Some(&4));
    let ttft = summary.latency.ttft.unwrap();
    assert_eq!(ttft.count, 4, "the role-only chunk is not the first token");
    assert_eq!(
        summary.latency.itl.unwrap().count,
        4,
        "one gap per request (a → b)"
    );
    assert_eq!(summary.latency.e2e.unwrap().count, 4);
}

#[tokio::test]
async fn non_streaming_responses_are_read_whole() {
    let address = serve().await;
    let mut c = config(vec![format!("http://{address}/whole")], 3);
    c.stream = false;
    let summary = run(c).await;
    assert_eq!(summary.requests.succeeded, 3);
    assert_eq!((summary.tokens.input, summary.tokens.output), (15, 9));
    assert!(summary.latency.ttft.is_none(), "no TTFT without streaming");
    assert_eq!(summary.finish_reasons.get("stop"), Some(&3));
}

#[tokio::test]
async fn targets_are_used_round_robin() {
    let address = serve().await;
    let urls = vec![
        format!("http://{address}/ok"),
        format!("http://{address}/overloaded/v1"),
    ];
    let summary = run(config(urls, 10)).await;
    assert_eq!(summary.requests.sent, 10);
    assert_eq!(summary.requests.succeeded, 5);
    assert_eq!(summary.errors.get("http_503:overloaded_error"), Some(&5));
}

#[tokio::test]
async fn open_loop_sends_the_requested_number_at_the_requested_rate() {
    let address = serve().await;
    let mut c = config(vec![format!("http://{address}/ok")], 40);
    c.arrival = Arrival::Poisson { rate: 400.0 };
    let summary = run(c).await;
    assert_eq!(summary.requests.sent, 40);
    assert_eq!(summary.requests.succeeded, 40);
}

#[tokio::test]
async fn open_loop_counts_arrivals_past_the_in_flight_limit_as_client_overload() {
    let address = serve().await;
    let mut c = config(vec![format!("http://{address}/slow")], 5);
    c.arrival = Arrival::Poisson { rate: 1000.0 };
    c.max_in_flight = 2;
    let generator = LoadGenerator::new(c).unwrap();
    let progress = generator.progress();
    // Stop once all five arrivals were handled: 2 in flight, 3 turned away.
    let summary = generator
        .run(async move {
            while progress.counts().sent < 5 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
    assert_eq!(
        summary.errors.get("client_overload"),
        Some(&3),
        "{:?}",
        summary.errors
    );
    assert_eq!(summary.requests.cancelled, 2);
}

#[tokio::test]
async fn shutdown_cancels_requests_in_flight() {
    let address = serve().await;
    let mut c = config(vec![format!("http://{address}/slow")], 100);
    c.arrival = Arrival::Closed { concurrency: 3 };
    let generator = LoadGenerator::new(c).unwrap();
    let summary = generator
        .run(tokio::time::sleep(Duration::from_millis(300)))
        .await
        .unwrap();
    assert_eq!(summary.requests.sent, 3);
    assert_eq!(summary.requests.cancelled, 3);
    assert_eq!(
        summary.requests.failed, 0,
        "cancelling is not a server error"
    );
}

#[tokio::test]
async fn invalid_settings_fail_before_anything_is_sent() {
    let mut c = config(vec!["http://127.0.0.1:1".into()], 1);
    c.arrival = Arrival::Poisson { rate: -1.0 };
    let e = LoadGenerator::new(c).err().unwrap();
    assert_eq!(e, infermon_load::ConfigError::Rate(-1.0));
    // The library names the setting, not a command-line flag.
    assert_eq!(
        e.to_string(),
        "rate must be a positive number of requests per second, got -1"
    );
}

#[tokio::test]
async fn only_sampled_client_spans_propagate_their_context() {
    use opentelemetry::global::BoxedTracer;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};

    let address = serve().await;
    let run_with = |sampler| {
        let provider = SdkTracerProvider::builder().with_sampler(sampler).build();
        let tracer = BoxedTracer::new(Box::new(provider.tracer("test")));
        let c = config(vec![format!("http://{address}/traced")], 4);
        run_traced(c, tracer)
    };
    run_with(Sampler::AlwaysOn).await;
    assert_eq!(TRACEPARENTS_SEEN.load(Ordering::Relaxed), 4);
    run_with(Sampler::AlwaysOff).await;
    assert_eq!(
        TRACEPARENTS_SEEN.load(Ordering::Relaxed),
        4,
        "an unsampled client leaves the engine to sample on its own"
    );
}
