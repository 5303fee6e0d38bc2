//! Test helpers: simulators and hand-made fault upstreams on loopback ports, a gateway in front
//! of them with in-memory metrics, and readers for what came back.
#![allow(dead_code)] // each test binary uses a different part

pub mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::Response;
use futures::StreamExt as _;
use infermon_gateway::{Gateway, GatewayConfig, UpstreamConfig};
use infermon_sim::{OutputConfig, SimConfig, SimTelemetry, Simulator};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use tokio::net::TcpListener;

pub const MODEL: &str = "llama-3.1-8b-instruct";

/// A simulator at 20× speed on a loopback port.
pub async fn sim() -> String {
    let config = SimConfig {
        time_scale: 20.0,
        output: OutputConfig {
            min_tokens: 8,
            max_tokens: 16,
        },
        ..SimConfig::default()
    };
    let sim = Simulator::start(config, SimTelemetry::disabled()).expect("simulator starts");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(infermon_sim::serve(sim, listener, std::future::pending()));
    url
}

/// A hand-made upstream (for faults a real engine does not produce on demand).
pub async fn fake(router: axum::Router) -> String {
    use axum::serve::ListenerExt as _;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    // TCP_NODELAY as engines set it (uvicorn does): without it a response's small writes
    // wait ~40 ms for the peer's delayed ACK, which the TLS bench would measure instead.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

/// An address nothing listens on.
pub async fn dead() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    url
}

/// A streamed response from `chunks`, each sent after `gap`.
pub fn sse(chunks: Vec<String>, gap: Duration) -> Response {
    sse_paced(chunks.into_iter().map(|c| (gap, c)).collect())
}

/// A streamed response from `chunks`, each sent after its own pause.
pub fn sse_paced(chunks: Vec<(Duration, String)>) -> Response {
    let stream = futures::stream::iter(chunks).then(|(gap, c)| async move {
        tokio::time::sleep(gap).await;
        Ok::<_, Infallible>(Bytes::from(c))
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}

pub fn upstreams(urls: &[&str]) -> Vec<UpstreamConfig> {
    urls.iter()
        .enumerate()
        .map(|(i, url)| UpstreamConfig {
            name: format!("u{i}"),
            url: (*url).to_owned(),
            role: infermon_gateway::Role::Both,
            ..Default::default()
        })
        .collect()
}

/// A running gateway and its metrics.
pub struct Running {
    pub base: String,
    pub gateway: Gateway,
    pub client: reqwest::Client,
    exporter: InMemoryMetricExporter,
    provider: SdkMeterProvider,
}

impl Running {
    pub async fn start(config: GatewayConfig) -> Self {
        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter.clone()).build())
            .build();
        let gateway = Gateway::new(config, &provider.meter("test"));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(infermon_http::serve(
            gateway.router(),
            listener,
            infermon_http::ServeOptions::default(),
            (),
            std::future::pending(),
        ));
        Self {
            base,
            gateway,
            client: reqwest::Client::new(),
            exporter,
            provider,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn chat(&self, stream: bool) -> reqwest::RequestBuilder {
        self.client
            .post(self.url("/v1/chat/completions"))
            .json(&serde_json::json!({
                "model": MODEL,
                "messages": [{"role": "user", "content": "Hello there"}],
                "max_tokens": 8,
                "stream": stream,
            }))
    }

    pub fn metrics(&self) -> ResourceMetrics {
        self.exporter.reset();
        self.provider.force_flush().unwrap();
        self.exporter
            .get_finished_metrics()
            .unwrap()
            .pop()
            .expect("metrics")
    }
}

/// Reads a whole SSE body into its events' data.
pub async fn events(response: reqwest::Response) -> Vec<String> {
    let text = response.text().await.unwrap();
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

fn matches(
    attrs: &mut dyn Iterator<Item = &opentelemetry::KeyValue>,
    want: &[(&str, &str)],
) -> bool {
    let attrs: Vec<_> = attrs.collect();
    want.iter().all(|(k, v)| {
        attrs
            .iter()
            .any(|kv| kv.key.as_str() == *k && kv.value.as_str() == *v)
    })
}

/// Sum of a u64 counter's points whose attributes include `want`.
pub fn counter(rm: &ResourceMetrics, name: &str, want: &[(&str, &str)]) -> u64 {
    let mut total = 0;
    for m in rm
        .scope_metrics()
        .flat_map(|s| s.metrics())
        .filter(|m| m.name() == name)
    {
        if let AggregatedMetrics::U64(MetricData::Sum(sum)) = m.data() {
            for p in sum.data_points() {
                if matches(&mut p.attributes(), want) {
                    total += p.value();
                }
            }
        }
    }
    total
}

/// Sum of an f64 counter's points whose attributes include `want`.
pub fn f64_counter(rm: &ResourceMetrics, name: &str, want: &[(&str, &str)]) -> f64 {
    let mut total = 0.0;
    for m in rm
        .scope_metrics()
        .flat_map(|s| s.metrics())
        .filter(|m| m.name() == name)
    {
        if let AggregatedMetrics::F64(MetricData::Sum(sum)) = m.data() {
            for p in sum.data_points() {
                if matches(&mut p.attributes(), want) {
                    total += p.value();
                }
            }
        }
    }
    total
}

/// (count, sum) of an f64 histogram's points whose attributes include `want`.
pub fn histogram(rm: &ResourceMetrics, name: &str, want: &[(&str, &str)]) -> (u64, f64) {
    let (mut count, mut sum) = (0, 0.0);
    for m in rm
        .scope_metrics()
        .flat_map(|s| s.metrics())
        .filter(|m| m.name() == name)
    {
        if let AggregatedMetrics::F64(MetricData::Histogram(h)) = m.data() {
            for p in h.data_points() {
                if matches(&mut p.attributes(), want) {
                    count += p.count();
                    sum += p.sum();
                }
            }
        }
    }
    (count, sum)
}

/// Polls `check` until it holds or `limit` passes.
pub async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

pub fn addr(url: &str) -> SocketAddr {
    url.trim_start_matches("http://").parse().unwrap()
}
