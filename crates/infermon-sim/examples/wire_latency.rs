//! Client-observed against server-side latency, and the simulator's CPU per 1,000 streamed
//! tokens: N keep-alive clients stream completions back to back; the client side times every
//! token as it arrives, the server side is read from the simulator's own request spans
//! (`first_token` event's TTFT; decode time per output token), in memory.
//!
//! ```text
//! cargo run --release -p infermon-sim --example wire_latency -- \
//!     [concurrency=1] [seconds=10] [time_scale=10] [max_tokens=64]
//! ```
//!
//! `SIM_METRICS=none` or `vllm` sets the simulator's `metrics` option (default: its default).
//!
//! Server and client run on separate one-thread runtimes in this process; the simulator's CPU
//! is the process's minus the client thread's (so it includes span export and the engine).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use infermon::contract::{attr, span as names};
use infermon_sim::{MetricsFormat, SimConfig, SimTelemetry, Simulator};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{SpanKind, TracerProvider as _};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt as _;

fn arg<T: std::str::FromStr>(position: usize, default: T) -> T {
    std::env::args()
        .nth(position)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds of this process's threads whose name starts with `prefix` (all if empty).
fn cpu_seconds(prefix: &str) -> f64 {
    let tick = 100.0; // USER_HZ on Linux
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .filter_map(|stat| {
            let open = stat.find('(')?;
            let close = stat.rfind(')')?;
            let name = &stat[open + 1..close];
            let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
            let ticks: f64 =
                fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
            name.starts_with(prefix).then_some(ticks / tick)
        })
        .sum()
}

fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * q).round() as usize]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let concurrency: usize = arg(1, 1);
    let seconds: u64 = arg(2, 10);
    let time_scale: f64 = arg(3, 10.0);
    let max_tokens: u32 = arg(4, 64);

    let spans = InMemorySpanExporter::default();
    let tracer_provider = SdkTracerProvider::builder()
        .with_batch_exporter(spans.clone())
        .build();
    let meter_provider = SdkMeterProvider::builder().build();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(
        infermon::telemetry::tracing_layer(tracer_provider.tracer("wire-latency")),
    ))?;

    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("sim-server")
        .enable_all()
        .build()?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("load-client")
        .enable_all()
        .build()?;

    let (sim, url) = server_rt.block_on(async {
        let mut config = SimConfig {
            time_scale,
            ..SimConfig::default()
        };
        config.scheduler.max_num_seqs = 512;
        // SIM_METRICS=none|vllm: the vLLM-format /metrics recording (the default differs
        // between versions; set it to compare like with like).
        match std::env::var("SIM_METRICS").as_deref() {
            Ok("none") => config.metrics = MetricsFormat::None,
            Ok("vllm") => config.metrics = MetricsFormat::Vllm,
            _ => {}
        }
        let telemetry = SimTelemetry::new(&meter_provider.meter("infermon-sim"));
        let sim = Simulator::start(config, telemetry).expect("simulator starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/completions", listener.local_addr().unwrap());
        tokio::spawn(infermon_sim::serve(
            sim.clone(),
            listener,
            std::future::pending(),
        ));
        (sim, url)
    });

    let ttft = Arc::new(Mutex::new(Vec::<f64>::new()));
    let gaps = Arc::new(Mutex::new(Vec::<f64>::new()));
    let warmup = Duration::from_secs((seconds / 5).max(1));
    let (cpu_start, client_cpu_start, tokens_start, measured) = client_rt.block_on(async {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(concurrency)
            .build()
            .unwrap();
        let start = Instant::now();
        let deadline = start + warmup + Duration::from_secs(seconds);
        let workers: Vec<_> = (0..concurrency)
            .map(|worker| {
                let (client, url) = (client.clone(), url.clone());
                let (ttft, gaps) = (Arc::clone(&ttft), Arc::clone(&gaps));
                tokio::spawn(async move {
                    let padding = "lorem ipsum ".repeat(80);
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        n += 1;
                        let body = serde_json::json!({
                            "model": "llama-3.1-8b-instruct",
                            "prompt": format!("worker {worker} request {n}: {padding}"),
                            "max_tokens": max_tokens,
                            "ignore_eos": true,
                            "stream": true,
                        });
                        let sent = Instant::now();
                        let Ok(response) = client.post(&url).json(&body).send().await else {
                            continue;
                        };
                        let mut arrivals = Vec::with_capacity(max_tokens as usize);
                        let mut stream = response.bytes_stream();
                        while let Some(Ok(chunk)) = stream.next().await {
                            let now = Instant::now();
                            // One `"text":"…"` per token chunk (the finish chunk's text is "").
                            let tokens = chunk
                                .windows(8)
                                .filter(|w| *w == b"\"text\":\"")
                                .count()
                                .saturating_sub(usize::from(
                                    chunk.windows(10).any(|w| w == b"\"text\":\"\","),
                                ));
                            arrivals.extend(std::iter::repeat_n(now, tokens));
                        }
                        if sent < start + warmup || arrivals.is_empty() {
                            continue;
                        }
                        ttft.lock()
                            .unwrap()
                            .push((arrivals[0] - sent).as_secs_f64());
                        gaps.lock()
                            .unwrap()
                            .extend(arrivals.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()));
                    }
                })
            })
            .collect();
        tokio::time::sleep(warmup).await;
        let marks = (
            cpu_seconds(""),
            cpu_seconds("load-client"),
            sim.stats().generation_tokens,
            Instant::now(),
        );
        for worker in workers {
            let _ = worker.await;
        }
        marks
    });
    let elapsed = measured.elapsed().as_secs_f64();
    let sim_cpu = (cpu_seconds("") - cpu_start) - (cpu_seconds("load-client") - client_cpu_start);
    let tokens = sim.stats().generation_tokens - tokens_start;
    server_rt.block_on(sim.shutdown());
    let _ = tracer_provider.force_flush();

    // Server side, from the request spans that started after the warm-up.
    let finished = spans.get_finished_spans()?;
    let cutoff = std::time::SystemTime::now() - Duration::from_secs_f64(elapsed);
    let mut server_ttft = Vec::new();
    let mut server_tpot = Vec::new();
    for root in finished.iter().filter(|s| s.span_kind == SpanKind::Server) {
        if root.start_time < cutoff {
            continue;
        }
        let Some(first) = root
            .events
            .iter()
            .find(|e| e.name == names::EVENT_FIRST_TOKEN)
        else {
            continue;
        };
        if let Some(v) = first
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == attr::LLM_TTFT)
            .and_then(|kv| kv.value.as_str().parse::<f64>().ok())
        {
            server_ttft.push(v);
        }
        if let Ok(decode) = root.end_time.duration_since(first.timestamp) {
            server_tpot.push(decode.as_secs_f64() / f64::from(max_tokens - 1));
        }
    }
    let (mut ttft, mut gaps) = (ttft.lock().unwrap().clone(), gaps.lock().unwrap().clone());
    let ms = |v: f64| v * 1e3;
    println!(
        "concurrency {concurrency}, time_scale {time_scale}, max_tokens {max_tokens}, {elapsed:.1} s measured:\n\
         | TTFT client p50 / p99 | TTFT server p50 / p99 | ITL client p50 / p99 | TPOT server p50 / p99 | sim CPU s per 1,000 tokens | streamed tokens/s |\n\
         | {:.2} / {:.2} ms | {:.2} / {:.2} ms | {:.2} / {:.2} ms | {:.2} / {:.2} ms | {:.4} | {:.0} |",
        ms(percentile(&mut ttft, 0.5)),
        ms(percentile(&mut ttft, 0.99)),
        ms(percentile(&mut server_ttft, 0.5)),
        ms(percentile(&mut server_ttft, 0.99)),
        ms(percentile(&mut gaps, 0.5)),
        ms(percentile(&mut gaps, 0.99)),
        ms(percentile(&mut server_tpot, 0.5)),
        ms(percentile(&mut server_tpot, 0.99)),
        sim_cpu / (tokens as f64 / 1000.0),
        tokens as f64 / elapsed,
    );
    Ok(())
}
