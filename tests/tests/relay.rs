//! vLLM's traces through `infermon relay`, end to end: `infermon sim --trace-format both` emits,
//! per request, vLLM 0.33.0's flat `llm_request` span beside infermon's own span tree (the
//! ground truth); both go through the relay (the contract spans pass through unchanged) to the
//! real collector and Jaeger. The load generator starts each trace (`traceparent`).
//!
//! Asserted through Jaeger's API: the relay's rebuilt queue/prefill/decode children of the vLLM
//! span start and end within 1 ms of the simulator's own phase spans, the vLLM span is renamed
//! with the configured model, and it is a child of the load generator's client span in the same
//! trace, as the contract span is.
//!
//! Then the latency panels' exemplar targets, run as Grafana runs them: the TTFT, TPOT and
//! phase panels have data, and their exemplars open traces in Jaeger, both for the simulator's
//! own contract histograms and for the relay's histograms of the vLLM spans.

use std::time::Duration;

use infermon::contract::relay::vllm;
use infermon::contract::{attr, span as names};
use infermon_e2e::dashboards::{repo_dashboards_dir, run_coverage, LiveConfig, Outcome};
use infermon_e2e::http_api::{eventually, wait_healthy, Jaeger, TraceSpan};
use infermon_e2e::stack::{free_port, infermon_bin, Process, Stack};

const SIM_SERVICE: &str = "infermon-sim-relay-e2e";
const LOAD_SERVICE: &str = "infermon-load-relay-e2e";
const MODEL: &str = "relayed-llama";
/// The bound on rebuilt timings against the simulator's ground truth.
const TOLERANCE_US: i64 = 1_000;

/// The performance dashboard's latency panels and how many exemplar targets each has: the
/// engine's own histogram and the relay's, per quantity.
const EXEMPLAR_PANELS: &[(&str, usize)] = &[
    ("Time to first token P50/P95/P99/P99.9", 2),
    ("Time per output token P50/P95/P99/P99.9", 2),
    ("Queue, prefill and decode P99", 6),
];

/// The checks on one trace; `Err` says what is not there (yet).
fn check_trace(spans: &[TraceSpan]) -> Result<usize, String> {
    let client = spans
        .iter()
        .find(|s| s.service == LOAD_SERVICE)
        .ok_or("no load generator span")?;
    let vllm_span = spans
        .iter()
        .find(|s| s.tags.contains_key(vllm::REQUEST_ID))
        .ok_or("no vLLM span (yet)")?;
    let contract = spans
        .iter()
        .find(|s| {
            s.service == SIM_SERVICE
                && s.tags.contains_key(attr::GEN_AI_RESPONSE_ID)
                && !s.tags.contains_key(vllm::REQUEST_ID)
        })
        .ok_or("no contract request span (yet)")?;
    if vllm_span.name != format!("chat {MODEL}") {
        return Err(format!("vLLM span not renamed: {}", vllm_span.name));
    }
    for request in [vllm_span, contract] {
        if request.parent_id.as_deref() != Some(client.span_id.as_str()) {
            return Err(format!(
                "{} is not a child of the load generator's span",
                request.name
            ));
        }
    }
    if !vllm_span
        .events
        .iter()
        .any(|(name, _)| name == names::EVENT_FIRST_TOKEN)
    {
        return Err("no first_token event on the vLLM span".into());
    }
    let child = |parent: &TraceSpan, name: &str| {
        spans
            .iter()
            .find(|s| s.parent_id.as_deref() == Some(parent.span_id.as_str()) && s.name == name)
            .cloned()
            .ok_or(format!("no {name} child of {}", parent.span_id))
    };
    let mut checked = 0;
    for phase in [names::QUEUE, names::PREFILL, names::DECODE] {
        let rebuilt = child(vllm_span, phase)?;
        let truth = child(contract, phase)?;
        let start_off = rebuilt.start_us as i64 - truth.start_us as i64;
        let end_off = (rebuilt.start_us + rebuilt.duration_us) as i64
            - (truth.start_us + truth.duration_us) as i64;
        println!("RELAY: {phase}: start {start_off} µs, end {end_off} µs from the ground truth");
        if start_off.abs() > TOLERANCE_US || end_off.abs() > TOLERANCE_US {
            panic!(
                "{phase}: rebuilt [{}, +{}] µs vs ground truth [{}, +{}] µs",
                rebuilt.start_us, rebuilt.duration_us, truth.start_us, truth.duration_us
            );
        }
        checked += 1;
    }
    Ok(checked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vllm_spans_are_expanded_on_the_way_to_jaeger() {
    let bin = infermon_bin();
    let stack = Stack::start(&["prometheus", "jaeger", "otelcol"], &[]);
    let jaeger = Jaeger::new(stack.jaeger_url());
    let collector = stack.otlp_endpoint().to_string();

    let (grpc, http) = (free_port(), free_port());
    let relay_endpoint = format!("http://127.0.0.1:{grpc}");
    let mut relay = Process::spawn(
        "relay",
        &bin,
        &[
            "relay",
            "--upstream",
            &collector,
            "--grpc-listen",
            &format!("127.0.0.1:{grpc}"),
            "--http-listen",
            &format!("127.0.0.1:{http}"),
            "--model-for",
            &format!("{SIM_SERVICE}={MODEL}"),
        ],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.as_str()),
            ("OTEL_SERVICE_NAME", "infermon-relay-e2e"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "1000"),
        ],
    );

    // Spans (both kinds) to the relay through the per-signal variable (the vLLM spans must
    // follow it too); metrics straight to the collector.
    let sim_addr = format!("127.0.0.1:{}", free_port());
    let sim_url = format!("http://{sim_addr}");
    let mut sim = Process::sim(
        "sim",
        &bin,
        &sim_addr,
        "10",
        &["--trace-format", "both"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.as_str()),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                relay_endpoint.as_str(),
            ),
            ("OTEL_SERVICE_NAME", SIM_SERVICE),
            ("OTEL_BSP_SCHEDULE_DELAY", "500"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "1000"),
        ],
    );
    wait_healthy(&format!("{sim_url}/health")).await;

    let mut load = Process::spawn(
        "load",
        &bin,
        &[
            "load",
            "--url",
            &sim_url,
            "--json",
            "--quiet",
            "--rate",
            "4",
            "--duration",
            "3s",
        ],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.as_str()),
            ("OTEL_SERVICE_NAME", LOAD_SERVICE),
            ("OTEL_BSP_SCHEDULE_DELAY", "500"),
        ],
    );
    let status = load.wait(Duration::from_secs(60)).expect("load finished");
    assert!(status.success(), "load failed:\n{}", load.output());

    let checked = eventually(
        "a load generator trace with the vLLM span expanded",
        Duration::from_secs(60),
        || {
            let jaeger = jaeger.clone();
            async move {
                let ids = jaeger.trace_ids(LOAD_SERVICE, 20).await?;
                let mut last = format!("{} traces, none complete", ids.len());
                for id in ids {
                    if let Some(spans) = jaeger.trace(&id).await? {
                        match check_trace(&spans) {
                            Ok(n) => return Ok(Some((id, n))),
                            Err(problem) => last = format!("trace {id}: {problem}"),
                        }
                    }
                }
                Err(last)
            }
        },
    )
    .await;
    println!("RELAY: trace {} checked ({} phases)", checked.0, checked.1);

    // The latency panels' exemplar targets, expanded and run as the dashboard coverage does
    // (only the performance dashboard, to keep each round short).
    let dashboards =
        std::env::temp_dir().join(format!("infermon-relay-dash-{}", std::process::id()));
    std::fs::create_dir_all(&dashboards).expect("temp dir");
    std::fs::copy(
        repo_dashboards_dir().join("performance.json"),
        dashboards.join("performance.json"),
    )
    .expect("copy the performance dashboard");
    let mut config = LiveConfig::new(stack.prometheus_url(), Some(stack.jaeger_url()));
    config.dashboards_dir = dashboards.clone();
    let proven = eventually(
        "exemplars on every latency panel that open traces",
        Duration::from_secs(90),
        || {
            let config = config.clone();
            async move {
                let report = run_coverage(&config).await.map_err(|e| e.to_string())?;
                let mut proven = Vec::new();
                for (panel, targets) in EXEMPLAR_PANELS {
                    let rows: Vec<_> = report
                        .rows
                        .iter()
                        .filter(|r| r.panel_title == *panel && r.exemplars.is_some())
                        .collect();
                    if rows.len() != *targets {
                        return Err(format!("{panel}: {} exemplar targets ran", rows.len()));
                    }
                    for row in rows {
                        let has_data = [&row.all, &row.one]
                            .iter()
                            .all(|run| matches!(run.outcome, Outcome::Found(n) if n > 0));
                        match &row.exemplars {
                            Some(Ok(n)) if *n > 0 && has_data => {
                                proven.push(format!("{panel} / {}: {n} exemplars", row.ref_id))
                            }
                            other => {
                                return Err(format!(
                                    "{panel} / {}: data {:?}, exemplars {other:?}",
                                    row.ref_id, row.all.outcome
                                ))
                            }
                        }
                    }
                }
                Ok(Some(proven))
            }
        },
    )
    .await;
    for line in &proven {
        println!("EXEMPLARS: {line} (a trace opens)");
    }
    let _ = std::fs::remove_dir_all(dashboards);

    assert!(
        sim.terminate(),
        "sim did not stop cleanly:\n{}",
        sim.output()
    );
    assert!(
        relay.terminate(),
        "relay did not stop cleanly:\n{}",
        relay.output()
    );
}
