//! Shared test helpers: a simulator on a loopback port, an SSE decoder that works the way
//! OpenAI's client libraries do, and bounded polling.
#![allow(dead_code)] // each test binary uses a different part

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use infermon_sim::{OutputConfig, SimConfig, SimHandle, SimTelemetry, Simulator};
use serde_json::Value;

pub const MODEL: &str = "llama-3.1-8b-instruct";

/// A small, fast configuration: short context, a modest cache, 20× simulated speed.
pub fn test_config() -> SimConfig {
    let mut config = SimConfig {
        time_scale: 20.0,
        output: OutputConfig {
            min_tokens: 8,
            max_tokens: 24,
        },
        ..SimConfig::default()
    };
    config.scheduler.max_model_len = Some(4096);
    config.kv_cache.num_blocks = Some(1024);
    config
}

pub struct Server {
    pub sim: SimHandle,
    pub base: String,
    pub client: reqwest::Client,
}

impl Server {
    pub async fn start(config: SimConfig) -> Self {
        Self::start_with(config, SimTelemetry::disabled()).await
    }

    pub async fn start_with(config: SimConfig, telemetry: SimTelemetry) -> Self {
        Self::serve(Simulator::start(config, telemetry).expect("simulator starts")).await
    }

    /// Serves an already started simulator (one a test started its own way).
    pub async fn serve(sim: SimHandle) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(infermon_sim::serve(
            sim.clone(),
            listener,
            std::future::pending(),
        ));
        Self {
            sim,
            base,
            client: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }
}

/// Starts a streamed chat far longer than any test (3,000 tokens) and waits for its first
/// chunk: the engine is busy with it until the test drops the returned body.
pub async fn long_stream(server: &Server, content: &str) -> impl futures::Stream + Unpin {
    let body = serde_json::json!({
        "model": MODEL, "messages": [{"role": "user", "content": content}],
        "max_tokens": 3000, "ignore_eos": true, "stream": true,
    });
    let mut stream = server
        .post_json("/v1/chat/completions", &body)
        .await
        .bytes_stream();
    stream.next().await.unwrap().unwrap();
    stream
}

/// Sends `request` and reads its answer as JSON.
pub async fn json_answer(request: reqwest::RequestBuilder) -> Value {
    let response = request.send().await.expect("request sent");
    response.json().await.expect("a JSON answer")
}

/// Checks an OpenAI-style error body and returns it.
pub async fn expect_error(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let body: Value = response.json().await.expect("error body is JSON");
    let error = &body["error"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(error["type"].as_str().is_some(), "{body}");
    assert!(
        error.get("param").is_some() && error.get("code").is_some(),
        "{body}"
    );
    body
}

/// Server-sent events as text, decoded by the decoder the load generator and the gateway
/// read streams with (`infermon_http::sse`, which decodes the way OpenAI's client libraries
/// do): the streaming tests compare each event's data as a string and parse it as JSON.
#[derive(Default)]
pub struct SseDecoder(infermon_http::sse::SseDecoder);

impl SseDecoder {
    /// Feeds bytes; returns the `data` of every event completed by them.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut events = Vec::new();
        self.0.feed(bytes, &mut |data| {
            events.push(String::from_utf8(data.to_vec()).expect("SSE is UTF-8"));
        });
        events
    }
}

/// A streamed response read to its end: every event's data in order, and when the first
/// content chunk arrived relative to `sent`.
pub struct Streamed {
    pub events: Vec<String>,
    pub first_content_after: Option<Duration>,
}

pub async fn read_stream(response: reqwest::Response, sent: std::time::Instant) -> Streamed {
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut decoder = SseDecoder::default();
    let mut events = Vec::new();
    let mut first_content_after = None;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        for event in decoder.feed(&chunk.expect("stream chunk")) {
            if first_content_after.is_none() && has_content(&event) {
                first_content_after = Some(sent.elapsed());
            }
            events.push(event);
        }
    }
    Streamed {
        events,
        first_content_after,
    }
}

fn has_content(event: &str) -> bool {
    let Ok(json) = serde_json::from_str::<Value>(event) else {
        return false;
    };
    let choice = &json["choices"][0];
    choice["delta"]["content"]
        .as_str()
        .is_some_and(|c| !c.is_empty())
        || choice["text"].as_str().is_some_and(|t| !t.is_empty())
}

/// Polls `condition` until it holds; panics (with `what`) if it never does within a generous
/// bound. Not a timing assertion: the bound only keeps a broken build from hanging.
pub async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..2000 {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// In-memory telemetry: spans and metrics land in the SDK's in-memory exporters.
pub mod telemetry {
    use infermon_sim::SimTelemetry;
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry::{KeyValue, Value};
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
    use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
    use tracing::Dispatch;
    use tracing_subscriber::layer::SubscriberExt as _;

    pub struct Harness {
        spans: InMemorySpanExporter,
        metrics: InMemoryMetricExporter,
        pub tracer_provider: SdkTracerProvider,
        pub meter_provider: SdkMeterProvider,
        pub dispatch: Dispatch,
    }

    impl Harness {
        pub fn new() -> Self {
            let spans = InMemorySpanExporter::default();
            let tracer_provider = SdkTracerProvider::builder()
                .with_simple_exporter(spans.clone())
                .build();
            let metrics = InMemoryMetricExporter::default();
            let meter_provider = SdkMeterProvider::builder()
                .with_reader(PeriodicReader::builder(metrics.clone()).build())
                .build();
            // The bridge and the metrics layer, as `telemetry::init` installs them.
            let subscriber = tracing_subscriber::registry()
                .with(infermon::telemetry::tracing_layer(
                    tracer_provider.tracer("sim-test"),
                ))
                .with(infermon::telemetry::metrics_layer(
                    &meter_provider.meter("infermon-sim"),
                ));
            Self {
                spans,
                metrics,
                tracer_provider,
                meter_provider,
                dispatch: Dispatch::new(subscriber),
            }
        }

        /// What the simulator gets: this harness's meter.
        pub fn sim_telemetry(&self) -> SimTelemetry {
            SimTelemetry::new(&self.meter_provider.meter("infermon-sim"))
        }

        pub fn spans(&self) -> Vec<SpanData> {
            self.spans.get_finished_spans().unwrap()
        }

        /// The latest cumulative metrics.
        pub fn collect(&self) -> ResourceMetrics {
            self.metrics.reset();
            self.meter_provider.force_flush().unwrap();
            self.metrics
                .get_finished_metrics()
                .unwrap()
                .pop()
                .expect("one export after force_flush")
        }
    }

    pub fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
        attrs
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| &kv.value)
    }

    fn metric<'a>(rm: &'a ResourceMetrics, name: &str) -> &'a AggregatedMetrics {
        rm.scope_metrics()
            .flat_map(|sm| sm.metrics())
            .find(|m| m.name() == name)
            .unwrap_or_else(|| panic!("no metric {name}"))
            .data()
    }

    fn matches(point: &mut dyn Iterator<Item = &KeyValue>, want: &[(&str, &str)]) -> bool {
        let attrs: Vec<&KeyValue> = point.collect();
        want.iter().all(|(k, v)| {
            attrs
                .iter()
                .any(|kv| kv.key.as_str() == *k && kv.value.as_str() == *v)
        })
    }

    /// Sum of a u64 counter's (or gauge's) points whose attributes include all of `want`.
    pub fn u64_sum(rm: &ResourceMetrics, name: &str, want: &[(&str, &str)]) -> u64 {
        match metric(rm, name) {
            AggregatedMetrics::U64(MetricData::Sum(s)) => s
                .data_points()
                .filter(|p| matches(&mut p.attributes(), want))
                .map(|p| p.value())
                .sum(),
            AggregatedMetrics::U64(MetricData::Gauge(g)) => g
                .data_points()
                .filter(|p| matches(&mut p.attributes(), want))
                .map(|p| p.value())
                .sum(),
            other => panic!("{name}: not a u64 sum or gauge: {other:?}"),
        }
    }

    /// Total observation count of an f64 histogram's points whose attributes include `want`.
    pub fn f64_histogram_count(rm: &ResourceMetrics, name: &str, want: &[(&str, &str)]) -> u64 {
        match metric(rm, name) {
            AggregatedMetrics::F64(MetricData::Histogram(h)) => h
                .data_points()
                .filter(|p| matches(&mut p.attributes(), want))
                .map(|p| p.count())
                .sum(),
            other => panic!("{name}: not an f64 histogram: {other:?}"),
        }
    }
}
