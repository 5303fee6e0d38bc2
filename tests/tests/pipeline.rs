//! The pipeline end to end: `infermon sim` and `infermon load` (the real binary) send OTLP to
//! the real OpenTelemetry Collector, which writes to the real Prometheus (metrics, exemplars)
//! and Jaeger (traces) and scrapes a second simulator's vLLM-format `/metrics`. Everything is
//! asserted through the stack's HTTP APIs.
//!
//! One test function on purpose: the stack takes seconds to start and the phases build on
//! each other's data (the outage phase needs a baseline from the first).

use std::time::{Duration, Instant};

use infermon::contract::{metric, metric_spec, Instrument};
use infermon_e2e::http_api::{eventually, wait_healthy, Jaeger, Prometheus, TraceSpan};
use infermon_e2e::stack::{free_port, infermon_bin, json_summary, Process, Stack};
use serde_json::Value;

const SIM_SERVICE: &str = "infermon-sim-e2e";
const LOAD_SERVICE: &str = "infermon-load-e2e";
/// Generous bound for "queryable soon after"; the measured figure is printed and recorded in
/// docs/benchmarks.md.
const FRESHNESS_BOUND: Duration = Duration::from_secs(60);

/// Contract metrics the simulator emits under load with simulated GPUs (GPU error counters,
/// GPM and per-process series are absent on fault-free simulated GPUs, by design).
const SIM_METRICS: &[&str] = &[
    metric::REQUEST_DURATION,
    metric::TIME_TO_FIRST_TOKEN,
    metric::TIME_PER_OUTPUT_TOKEN,
    metric::QUEUE_DURATION,
    metric::PREFILL_DURATION,
    metric::DECODE_DURATION,
    metric::REQUEST_TOKENS,
    metric::REQUESTS,
    metric::TOKENS,
    metric::SCHEDULER_REQUESTS,
    metric::SCHEDULER_ITERATIONS,
    metric::KV_CACHE_USAGE,
    metric::KV_CACHE_BLOCKS,
    metric::GPU_UTILIZATION,
    metric::GPU_MEMORY_USAGE,
    metric::GPU_MEMORY_LIMIT,
    metric::HW_TEMPERATURE,
    metric::HW_POWER,
    metric::HW_ENERGY,
];

/// Contract metrics that the collector's normalisation derives from vLLM's `/metrics`.
const VLLM_METRICS: &[&str] = &[
    metric::REQUEST_DURATION,
    metric::TIME_TO_FIRST_TOKEN,
    metric::TIME_PER_OUTPUT_TOKEN,
    metric::QUEUE_DURATION,
    metric::PREFILL_DURATION,
    metric::DECODE_DURATION,
    metric::REQUESTS,
    metric::TOKENS,
    metric::SCHEDULER_REQUESTS,
    metric::SCHEDULER_PREEMPTIONS,
    metric::KV_CACHE_USAGE,
];

/// The Prometheus series to look for: histograms by their `_count`.
fn series_name(otlp_name: &str) -> String {
    let spec = metric_spec(otlp_name).unwrap_or_else(|| panic!("{otlp_name} not in the contract"));
    match spec.instrument {
        Instrument::Histogram => format!("{}_count", spec.prometheus),
        _ => spec.prometheus.to_string(),
    }
}

fn prom_name(otlp_name: &str) -> &'static str {
    metric_spec(otlp_name).expect("contract metric").prometheus
}

/// Runs `infermon load --json` to completion and returns its summary.
fn run_load(bin: &std::path::Path, url: &str, args: &[&str], env: &[(&str, &str)]) -> Value {
    let mut all = vec!["load", "--url", url, "--json", "--quiet"];
    all.extend_from_slice(args);
    let mut load = Process::spawn("load", bin, &all, env);
    let status = load
        .wait(Duration::from_secs(180))
        .expect("load finished in time");
    let output = load.output();
    assert!(status.success(), "infermon load failed:\n{output}");
    json_summary(&output).unwrap_or_else(|| panic!("no JSON summary in:\n{output}"))
}

fn request_span(spans: &[TraceSpan]) -> Option<&TraceSpan> {
    spans
        .iter()
        .find(|s| s.service == SIM_SERVICE && s.name.starts_with("chat "))
}

/// The trace has the whole contract: client span → request span → queue/prefill/decode, and
/// the `first_token` event with its TTFT.
fn trace_is_complete(spans: &[TraceSpan]) -> Result<(), String> {
    use infermon::contract::{attr, span};
    let request = request_span(spans).ok_or("no request span from the simulator")?;
    for child in [span::QUEUE, span::PREFILL, span::DECODE] {
        spans
            .iter()
            .find(|s| s.name == child && s.parent_id.as_deref() == Some(&request.span_id))
            .ok_or(format!("no `{child}` child of the request span"))?;
    }
    let (_, fields) = request
        .events
        .iter()
        .find(|(name, _)| name == span::EVENT_FIRST_TOKEN)
        .ok_or("no first_token event")?;
    let ttft = fields
        .get(attr::LLM_TTFT)
        .and_then(|v| {
            v.as_f64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
        .ok_or("first_token event without its TTFT")?;
    if ttft.is_nan() || ttft <= 0.0 {
        return Err(format!("TTFT {ttft} is not positive"));
    }
    let client = spans
        .iter()
        .find(|s| Some(&s.span_id) == request.parent_id.as_ref())
        .ok_or("request span has no parent in the trace")?;
    if client.service != LOAD_SERVICE {
        return Err(format!(
            "request span's parent is from {}, not the load generator",
            client.service
        ));
    }
    if request.tags.get(attr::GEN_AI_REQUEST_MODEL).is_none() {
        return Err("request span lacks gen_ai.request.model".into());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_telemetry_reaches_prometheus_and_jaeger_through_the_collector() {
    let bin = infermon_bin();
    let vllm_port = free_port();
    let mut stack = Stack::start(
        &["prometheus", "jaeger", "otelcol"],
        &[("INFERMON_VLLM_TARGET", format!("127.0.0.1:{vllm_port}"))],
    );
    let prom = Prometheus::new(stack.prometheus_url());
    let jaeger = Jaeger::new(stack.jaeger_url());
    let otlp = stack.otlp_endpoint().to_string();

    // The OTLP-instrumented engine, with simulated GPUs.
    let sim_port = free_port();
    let sim_addr = format!("127.0.0.1:{sim_port}");
    let sim_url = format!("http://{sim_addr}");
    let sim_env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.as_str()),
        ("OTEL_SERVICE_NAME", SIM_SERVICE),
        ("OTEL_METRIC_EXPORT_INTERVAL", "1000"),
        ("OTEL_BSP_SCHEDULE_DELAY", "500"),
    ];
    let mut sim = Process::sim(
        "sim",
        &bin,
        &sim_addr,
        "10",
        &["--simulated-gpus", "2"],
        &sim_env,
    );
    // A second engine that only exposes vLLM's /metrics format, scraped by the collector.
    let vllm_addr = format!("127.0.0.1:{vllm_port}");
    let vllm_url = format!("http://{vllm_addr}");
    let _vllm = Process::vllm_metrics_sim(&bin, &vllm_addr, &[]);
    wait_healthy(&format!("{sim_url}/health")).await;
    wait_healthy(&format!("{vllm_url}/health")).await;

    let load_env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.as_str()),
        ("OTEL_SERVICE_NAME", LOAD_SERVICE),
        ("OTEL_BSP_SCHEDULE_DELAY", "500"),
    ];
    let vllm_load = {
        let bin = bin.clone();
        let url = vllm_url.clone();
        std::thread::spawn(move || {
            run_load(
                &bin,
                &url,
                &["--rate", "5", "--duration", "15s", "--no-otlp"],
                &[],
            )
        })
    };
    let summary = run_load(
        &bin,
        &sim_url,
        &["--rate", "10", "--duration", "15s"],
        &load_env,
    );
    let load_done = Instant::now();
    let served = summary["requests"]["succeeded"]
        .as_u64()
        .expect("succeeded count");
    assert!(served > 50, "too few requests served: {summary}");
    assert_eq!(summary["requests"]["failed"].as_u64(), Some(0), "{summary}");
    let vllm_summary = vllm_load.join().expect("vLLM-mode load thread");
    assert!(
        vllm_summary["requests"]["succeeded"].as_u64() > Some(10),
        "{vllm_summary}"
    );

    // 4. Freshness: how long after the last request ended its metrics are queryable.
    let requests_total = prom_name(metric::REQUESTS);
    let served_query = format!("sum({requests_total}{{job=\"{SIM_SERVICE}\"}})");
    eventually(
        "every served request counted in Prometheus",
        FRESHNESS_BOUND,
        || {
            let prom = prom.clone();
            let q = served_query.clone();
            async move { Ok((prom.query_sum(&q).await? >= served as f64).then_some(())) }
        },
    )
    .await;
    let freshness = load_done.elapsed();
    println!(
        "FRESHNESS: all {served} requests queryable {:.1} s after the load ended",
        freshness.as_secs_f64()
    );

    // 1. Every contract metric the simulator emits, under its documented name, with job and
    //    instance from the resource; and hostmetrics.
    for name in SIM_METRICS {
        let series = series_name(name);
        let q = format!("{series}{{job=\"{SIM_SERVICE}\"}}");
        let found = eventually(
            &format!("{series} from the simulator"),
            Duration::from_secs(30),
            || {
                let prom = prom.clone();
                let q = q.clone();
                async move {
                    let samples = prom.query(&q).await?;
                    Ok((!samples.is_empty()).then_some(samples))
                }
            },
        )
        .await;
        assert!(
            found
                .iter()
                .all(|s| s.label("instance").is_some_and(|i| !i.is_empty())),
            "{series} without an instance label: {found:?}"
        );
        for spec_attr in metric_spec(name).unwrap().attributes {
            let label = spec_attr.replace('.', "_");
            // error.type appears only on failed requests; everything else on every series.
            if *spec_attr == infermon::contract::attr::ERROR_TYPE
                || *spec_attr == infermon::contract::attr::GEN_AI_RESPONSE_FINISH_REASON
            {
                continue;
            }
            assert!(
                found.iter().any(|s| s.label(&label).is_some()),
                "{series} lacks the `{label}` label: {:?}",
                found[0].labels
            );
        }
    }
    for host_metric in ["system_cpu_time_seconds_total", "system_memory_usage_bytes"] {
        let q = format!("count({host_metric})");
        eventually(
            &format!("hostmetrics {host_metric}"),
            Duration::from_secs(30),
            || {
                let prom = prom.clone();
                let q = q.clone();
                async move { Ok((prom.query_sum(&q).await? > 0.0).then_some(())) }
            },
        )
        .await;
    }

    // 2. The vLLM path: scraped vLLM-format metrics under the contract's names and labels.
    for name in VLLM_METRICS {
        let series = series_name(name);
        let q = format!("{series}{{gen_ai_request_model!=\"\", job!=\"{SIM_SERVICE}\"}}");
        eventually(
            &format!("{series} from the vLLM-format engine"),
            Duration::from_secs(30),
            || {
                let prom = prom.clone();
                let q = q.clone();
                async move { Ok((!prom.query(&q).await?.is_empty()).then_some(())) }
            },
        )
        .await;
    }
    let vllm_requests = prom
        .query_sum(&format!("sum({requests_total}{{job!=\"{SIM_SERVICE}\"}})"))
        .await
        .expect("query");
    assert!(vllm_requests > 0.0, "no vLLM-normalised request count");

    // 3. Exemplars on the spanmetrics latency histogram lead to whole traces in the trace store.
    let exemplar_query = "traces_span_metrics_duration_seconds_bucket";
    let trace_ids = eventually("exemplars with trace ids", Duration::from_secs(30), || {
        let prom = prom.clone();
        async move {
            let ids = prom
                .exemplar_trace_ids(exemplar_query, Duration::from_secs(600))
                .await?;
            Ok((!ids.is_empty()).then_some(ids))
        }
    })
    .await;
    let mut last_problem = String::new();
    let mut complete = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    'search: while Instant::now() < deadline {
        for id in &trace_ids {
            match jaeger.trace(id).await {
                Ok(Some(spans)) => match trace_is_complete(&spans) {
                    Ok(()) => {
                        complete = Some(id.clone());
                        break 'search;
                    }
                    Err(problem) => last_problem = format!("trace {id}: {problem}"),
                },
                Ok(None) => last_problem = format!("trace {id} not in Jaeger"),
                Err(e) => last_problem = e,
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let trace_id = complete.unwrap_or_else(|| {
        panic!(
            "no exemplar trace ({} ids) had the whole span tree; last: {last_problem}",
            trace_ids.len()
        )
    });
    println!("EXEMPLAR: trace {trace_id} spans load generator -> engine with queue/prefill/decode");

    // 5. Collector outage under load: the engine keeps serving, its memory stays bounded, and
    //    data flows again once the collector is back.
    let outage_load = {
        let bin = bin.clone();
        let url = sim_url.clone();
        let env: Vec<(String, String)> = load_env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        std::thread::spawn(move || {
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            run_load(&bin, &url, &["--rate", "10", "--duration", "50s"], &env)
        })
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_before = sim.rss_kib().expect("simulator RSS");
    let calls_before = prom
        .query_sum(&format!(
            "sum(traces_span_metrics_calls_total{{service_name=\"{SIM_SERVICE}\"}})"
        ))
        .await
        .expect("query");
    stack.stop_component("otelcol");
    let mut rss_peak = rss_before;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            sim.is_running(),
            "simulator died while the collector was down:\n{}",
            sim.output()
        );
        rss_peak = rss_peak.max(sim.rss_kib().unwrap_or(0));
    }
    wait_healthy(&format!("{sim_url}/health")).await;
    stack.start_component("otelcol");
    let outage_summary = outage_load.join().expect("outage load thread");
    assert_eq!(
        outage_summary["requests"]["failed"].as_u64(),
        Some(0),
        "requests failed while the collector was down: {outage_summary}"
    );
    let growth_mib = rss_peak.saturating_sub(rss_before) as f64 / 1024.0;
    println!("OUTAGE: simulator RSS {rss_before} KiB before, {rss_peak} KiB peak during a 30 s collector outage (+{growth_mib:.1} MiB)");
    assert!(
        growth_mib < 64.0,
        "simulator memory grew by {growth_mib:.1} MiB during the outage"
    );

    // Data flows again: metrics (cumulative counters catch up) and traces (spanmetrics grow).
    let total_served = served
        + outage_summary["requests"]["succeeded"]
            .as_u64()
            .unwrap_or(0);
    eventually(
        "metrics after the collector restart",
        Duration::from_secs(60),
        || {
            let prom = prom.clone();
            let q = served_query.clone();
            async move { Ok((prom.query_sum(&q).await? >= total_served as f64).then_some(())) }
        },
    )
    .await;
    let calls_query =
        format!("sum(traces_span_metrics_calls_total{{service_name=\"{SIM_SERVICE}\"}})");
    eventually(
        "spans after the collector restart",
        Duration::from_secs(60),
        || {
            let prom = prom.clone();
            let q = calls_query.clone();
            async move { Ok((prom.query_sum(&q).await? > calls_before).then_some(())) }
        },
    )
    .await;
    // The failed exports during the outage were counted and reported once it was over.
    let failures = prom_name(metric::TELEMETRY_EXPORT_FAILURES);
    let failures_query = format!("sum({failures}{{job=\"{SIM_SERVICE}\"}})");
    eventually("export failures counted", Duration::from_secs(60), || {
        let prom = prom.clone();
        let q = failures_query.clone();
        async move { Ok((prom.query_sum(&q).await? > 0.0).then_some(())) }
    })
    .await;

    assert!(
        sim.terminate(),
        "simulator did not exit cleanly:\n{}",
        sim.output()
    );
}
