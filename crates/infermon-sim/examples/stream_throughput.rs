//! Measures how many streamed tokens per second the simulator sustains in-process: N clients
//! (in the same process) each stream chat completions back to back for a fixed time, with the
//! full infermon telemetry pipeline initialised (spans through the batch processor, metrics
//! through the periodic reader; OTLP export goes to `OTEL_EXPORTER_OTLP_ENDPOINT`, and without a
//! collector there the exports fail and are counted, as in `infermon demo` without a stack).
//!
//! ```text
//! cargo run --release -p infermon-sim --example stream_throughput -- \
//!     [concurrency=200] [seconds=20] [time_scale=1] [max_tokens=256]
//! ```
//!
//! This is a measuring tool, not a load generator (that is `infermon load`): it only counts
//! content chunks received and reports tokens/s and requests/s over the run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use infermon::telemetry::{init, TelemetryConfig};
use infermon_sim::{SimConfig, SimTelemetry, Simulator};

fn arg<T: std::str::FromStr>(position: usize, default: T) -> T {
    std::env::args()
        .nth(position)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let concurrency: usize = arg(1, 200);
    let seconds: u64 = arg(2, 20);
    let time_scale: f64 = arg(3, 1.0);
    let max_tokens: u32 = arg(4, 256);

    let telemetry = init(TelemetryConfig::new("infermon-sim-throughput").with_fmt_layer(false))?;
    let config = SimConfig {
        time_scale,
        ..SimConfig::default()
    };
    let sim = Simulator::start(config, SimTelemetry::new(&telemetry.meter("infermon-sim")))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/v1/chat/completions", listener.local_addr()?);
    tokio::spawn(infermon_sim::serve(
        sim.clone(),
        listener,
        std::future::pending(),
    ));

    let requests = Arc::new(AtomicU64::new(0));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            let (client, url, requests) = (client.clone(), url.clone(), Arc::clone(&requests));
            tokio::spawn(async move {
                let padding = "lorem ipsum ".repeat(30);
                let mut n = 0u64;
                while Instant::now() < deadline {
                    n += 1;
                    let body = serde_json::json!({
                        "model": "llama-3.1-8b-instruct",
                        "messages": [{"role": "user", "content": format!("worker {worker} request {n}: {padding}")}],
                        "max_tokens": max_tokens,
                        "ignore_eos": true,
                        "stream": true,
                    });
                    let Ok(response) = client.post(&url).json(&body).send().await else {
                        continue;
                    };
                    let mut stream = response.bytes_stream();
                    while let Some(Ok(_chunk)) = stream.next().await {}
                    requests.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    // Rates over the run after a warm-up (every stream starts with a prefill), up to the
    // deadline; tokens are the engine's count of tokens handed to live streams.
    let warmup = Duration::from_secs((seconds / 4).max(1));
    tokio::time::sleep(warmup).await;
    let before = sim.stats();
    let (t0, tok0, req0) = (
        Instant::now(),
        before.generation_tokens,
        requests.load(Ordering::Relaxed),
    );
    tokio::time::sleep_until(deadline.into()).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let stats = sim.stats();
    let streamed = stats.generation_tokens - tok0;
    // Simulated step time over simulated time elapsed: 1.0 means the engine kept the profile's
    // pace (the figure is the model's); less means the host made it fall behind.
    let on_schedule = (stats.busy_seconds - before.busy_seconds)
        / (stats.elapsed_seconds - before.elapsed_seconds).max(f64::MIN_POSITIVE);
    let finished = requests.load(Ordering::Relaxed) - req0;
    println!(
        "concurrency {concurrency}, time_scale {time_scale}, max_tokens {max_tokens}: \
         {:.0} streamed tokens/s, {:.1} requests/s over {elapsed:.1} s \
         (engine: {} running, {} waiting, {} steps, {} preemptions, busy {:.0} % of simulated \
         time; telemetry: {:?})",
        streamed as f64 / elapsed,
        finished as f64 / elapsed,
        stats.running,
        stats.waiting,
        stats.steps,
        stats.preemptions,
        on_schedule * 100.0,
        telemetry.stats(),
    );
    for worker in workers {
        let _ = worker.await;
    }
    sim.shutdown().await;
    let _ = telemetry.shutdown();
    Ok(())
}
