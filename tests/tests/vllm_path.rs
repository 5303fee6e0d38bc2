//! The vLLM path alone: a stack fed only by the collector's scrape of a vLLM-format `/metrics`
//! (the simulator in its default `--metrics vllm` mode, with `--no-otlp`; the load generator
//! sends no telemetry either), so that what reaches Prometheus is exactly what an operator who
//! points infermon at a real vLLM fleet gets.
//!
//! 1. Every vLLM series the collector normalises arrives under the contract's name and labels,
//!    with the value the engine exposed (read from the same `/metrics` after the load): counters
//!    and histogram counts equal, aborted and failed requests under their own outcome, KV blocks
//!    used + free equal to vLLM's allocatable pool. Speculative decoding, which the simulator does
//!    not do, is covered by a scrape proxy that appends vLLM 0.33.0's `vllm:spec_decode_*`
//!    counters, in vLLM's own format, to the simulator's exposition.
//! 2. Every dashboard panel is run live against this stack, and whether it shows data must agree
//!    with the table in docs/vllm.md: a panel without data needs a written reason there, and a
//!    panel with a reason must indeed have none.
//!
//! Disaggregated prefill/decode: the simulator serves both halves of a few P/D requests (the
//! prefill half, then the decode half that pulls its KV cache), so its exposition has the NIXL
//! connector's metrics; they arrive as the contract's `llm.kv_transfer.*`.
//!
//! One test function: the stack takes seconds to start and both parts read the same data.

use std::collections::BTreeMap;
use std::time::Duration;

use infermon::contract::{attr, metric, metric_spec, value, Instrument};
use infermon_e2e::dashboards::{render_report, run_coverage, CoverageReport, LiveConfig, Outcome};
use infermon_e2e::http_api::{eventually, wait_healthy, Prometheus, Sample};
use infermon_e2e::stack::{free_port, infermon_bin, repo_root, Process, Stack};

/// Mid-stream failures (vLLM `finished_reason="error"`) between simulated seconds 100 and 250
/// (10–25 s of real time at time scale 10): few enough that the error-ratio alerts (5 %) stay
/// quiet, so the alert panels are judged on a healthy engine.
const SCENARIO: &str = r#"
[[fault]]
from_s = 100
to_s = 250
errors = [{ type = "mid_stream_error", rate = 0.03 }]
"#;

/// Disaggregated prefill/decode requests (each a prefill half and a decode half).
const PD_REQUESTS: u64 = 3;

/// One disaggregated request as vLLM's P/D routers send it, with the simulator as both the
/// prefill and the decode worker: the decode half's pull is one NIXL transfer.
async fn pd_request(sim_url: &str, model: &str, prompt: &str) {
    let client = reqwest::Client::new();
    let url = format!("{sim_url}/v1/chat/completions");
    let mut body = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 1,
        "kv_transfer_params": {"do_remote_decode": true},
    });
    let answer: serde_json::Value = client
        .post(&url)
        .json(&body)
        .send()
        .await
        .expect("prefill half")
        .json()
        .await
        .expect("prefill answer");
    assert_eq!(
        answer["kv_transfer_params"]["do_remote_prefill"], true,
        "{answer}"
    );
    body["max_tokens"] = serde_json::json!(8);
    body["kv_transfer_params"] = answer["kv_transfer_params"].clone();
    let status = client
        .post(&url)
        .json(&body)
        .send()
        .await
        .expect("decode half")
        .status();
    assert!(status.is_success(), "decode half: {status}");
}

/// Requests the client gives up on (vLLM `finished_reason="abort"`).
const ABORTED_REQUESTS: u64 = 3;

/// What the scrape proxy appends: vLLM 0.33.0's speculative-decoding counters
/// (vllm/v1/spec_decode/metrics.py SpecDecodingProm), as prometheus_client writes them. They
/// grow by these amounts at every scrape, as a drafter proposing 4 tokens per draft with 10 of
/// every 16 accepted would: acceptance rate 0.625, mean acceptance length 1 + 10 / 4.
const SPEC_DRAFTS_PER_SCRAPE: u64 = 4;
const SPEC_DRAFT_TOKENS_PER_SCRAPE: u64 = 16;
const SPEC_ACCEPTED_TOKENS_PER_SCRAPE: u64 = 10;

fn spec_decode_exposition(model: &str, scrapes: u64) -> String {
    let mut out = String::new();
    for (name, help, per_scrape) in [
        (
            "vllm:spec_decode_num_drafts",
            "Number of spec decoding drafts.",
            SPEC_DRAFTS_PER_SCRAPE,
        ),
        (
            "vllm:spec_decode_num_draft_tokens",
            "Number of draft tokens.",
            SPEC_DRAFT_TOKENS_PER_SCRAPE,
        ),
        (
            "vllm:spec_decode_num_accepted_tokens",
            "Number of accepted tokens.",
            SPEC_ACCEPTED_TOKENS_PER_SCRAPE,
        ),
    ] {
        let v = (per_scrape * scrapes) as f64;
        out.push_str(&format!(
            "# HELP {name}_total {help}\n# TYPE {name}_total counter\n\
             {name}_total{{model_name=\"{model}\",engine=\"0\"}} {v:?}\n"
        ));
    }
    out
}

/// Serves `GET /metrics` as the simulator's exposition plus the speculative-decoding counters.
async fn spawn_scrape_proxy(listen: u16, upstream: String, model: String) {
    use axum::{routing::get, Router};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let scrapes = Arc::new(AtomicU64::new(0));
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let upstream = upstream.clone();
            let model = model.clone();
            let n = scrapes.fetch_add(1, Ordering::Relaxed) + 1;
            async move {
                let body = match reqwest::get(&upstream).await {
                    Ok(r) => r.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                };
                (
                    [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
                    format!("{body}{}", spec_decode_exposition(&model, n)),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", listen))
        .await
        .expect("bind the scrape proxy");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
}

/// The sum of the samples of `name` in a text exposition whose labels include all of `labels`.
fn exposed(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (label_text, value) = match rest.strip_prefix('{') {
                Some(r) => r.rsplit_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            labels
                .iter()
                .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")))
                .then(|| value.trim().parse::<f64>().ok())?
        })
        .sum()
}

/// The value of one label in the first sample of `name`.
fn exposed_label(text: &str, name: &str, label: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with(&format!("{name}{{")))?;
    let start = line.find(&format!("{label}=\""))? + label.len() + 2;
    let end = start + line[start..].find('"')?;
    Some(line[start..end].to_string())
}

/// The Prometheus series to compare: histograms by their `_count`.
fn series(otlp_name: &str) -> String {
    let spec = metric_spec(otlp_name).unwrap_or_else(|| panic!("{otlp_name} not in the contract"));
    match spec.instrument {
        Instrument::Histogram => format!("{}_count", spec.prometheus),
        _ => spec.prometheus.to_string(),
    }
}

fn label_sel(otlp_attr: &str, v: &str) -> String {
    format!("{}=\"{v}\"", otlp_attr.replace('.', "_"))
}

/// Waits until the sum of `promql` equals `expected` (counters reach Prometheus one scrape and
/// one export after the engine updated them).
async fn arrives(prom: &Prometheus, what: &str, promql: String, expected: f64) -> Vec<Sample> {
    let found = eventually(
        &format!("{what}: {promql} == {expected}"),
        Duration::from_secs(45),
        || {
            let prom = prom.clone();
            let q = promql.clone();
            async move {
                let samples = prom.query(&q).await?;
                let sum: f64 = samples.iter().map(|s| s.value).sum();
                if samples.is_empty() || (sum - expected).abs() > 1e-6 {
                    // Reported as the last error if it never converges.
                    return Err(format!("{} series, sum {sum}", samples.len()));
                }
                Ok(Some(samples))
            }
        },
    )
    .await;
    println!("VLLM-PATH {what}: {expected} arrived");
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vllm_metrics_arrive_normalised_and_every_panel_is_accounted_for() {
    let bin = infermon_bin();
    let proxy_port = free_port();
    let stack = Stack::start(
        // Alertmanager too: without it, its own TelemetryComponentDown alert would fill the
        // alert panels, which are judged here on a healthy stack.
        &["prometheus", "alertmanager", "jaeger", "otelcol"],
        &[("INFERMON_VLLM_TARGET", format!("127.0.0.1:{proxy_port}"))],
    );
    let prom = Prometheus::new(stack.prometheus_url());

    let scenario = std::env::temp_dir().join(format!("infermon-vllm-{}.toml", std::process::id()));
    std::fs::write(&scenario, SCENARIO).expect("write scenario");
    let sim_addr = format!("127.0.0.1:{}", free_port());
    let sim_url = format!("http://{sim_addr}");
    let scenario_arg = scenario.display().to_string();
    let _sim = Process::vllm_metrics_sim(&bin, &sim_addr, &["--scenario", &scenario_arg]);
    wait_healthy(&format!("{sim_url}/health")).await;
    let metrics_url = format!("{sim_url}/metrics");
    let first = reqwest::get(&metrics_url)
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    let model = exposed_label(&first, "vllm:num_requests_running", "model_name")
        .expect("model_name label on vllm:num_requests_running");
    spawn_scrape_proxy(proxy_port, metrics_url.clone(), model.clone()).await;

    // The workload: steady traffic (with the scenario's mid-stream failures), then a few
    // requests the client abandons long before their last token.
    let run = |args: &[&str]| {
        let mut all = vec!["load", "--url", &sim_url, "--quiet", "--no-otlp"];
        all.extend_from_slice(args);
        let mut load = Process::spawn("load", &bin, &all, &[]);
        let status = load.wait(Duration::from_secs(120)).expect("load finished");
        assert!(status.code().is_some(), "load crashed:\n{}", load.output());
    };
    // The disaggregated requests first: their NIXL series then exist in Prometheus for the
    // whole run, so the KV panels' rate() windows hold samples when they are judged.
    for i in 0..PD_REQUESTS {
        pd_request(
            &sim_url,
            &model,
            &"disaggregated ".repeat(50 * (i as usize + 1)),
        )
        .await;
    }
    run(&["--rate", "10", "--duration", "30s", "--seed", "7"]);
    let aborted = ABORTED_REQUESTS.to_string();
    run(&[
        "--requests",
        &aborted,
        "--concurrency",
        &aborted,
        "--output-tokens",
        "20000",
        "--ignore-eos",
        // Longer than a scrape interval (5 s), so that a scrape sees their KV blocks in use;
        // far shorter than 20000 tokens take even at time scale 10.
        "--timeout",
        "7s",
    ]);

    // The engine's own account, once it is idle (aborted sequences leave at its next step).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let truth = reqwest::get(&metrics_url)
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    let v = |name: &str| exposed(&truth, name, &[]);
    let by_reason = |reason: &str| {
        exposed(
            &truth,
            "vllm:request_success_total",
            &[("finished_reason", reason)],
        )
    };
    assert_eq!(by_reason("abort"), ABORTED_REQUESTS as f64, "{truth}");
    assert!(by_reason("error") > 0.0, "no mid-stream failure injected");
    assert!(v("vllm:prefix_cache_queries_total") > 0.0);

    let requests = series(metric::REQUESTS);
    let model_sel = label_sel(attr::GEN_AI_REQUEST_MODEL, &model);
    let outcome = |o: &str| label_sel(attr::LLM_REQUEST_OUTCOME, o);
    let reason = |r: &str| label_sel(attr::GEN_AI_RESPONSE_FINISH_REASON, r);

    // Outcomes: abort and error are not successes.
    let aborted_series = arrives(
        &prom,
        "aborted requests",
        format!(
            "{requests}{{{model_sel}, {}}}",
            outcome(value::OUTCOME_ABORTED)
        ),
        by_reason("abort"),
    )
    .await;
    assert!(
        aborted_series
            .iter()
            .all(|s| s.label("gen_ai_response_finish_reason") == Some(value::FINISH_ABORT)),
        "{aborted_series:?}"
    );
    let failed = arrives(
        &prom,
        "failed requests",
        format!(
            "{requests}{{{model_sel}, {}}}",
            outcome(value::OUTCOME_ERROR)
        ),
        by_reason("error"),
    )
    .await;
    assert!(
        failed
            .iter()
            .all(|s| s.label("error_type") == Some(value::ERROR_OTHER)
                && s.label("gen_ai_response_finish_reason") == Some(value::FINISH_ERROR)),
        "{failed:?}"
    );
    arrives(
        &prom,
        "successful requests",
        format!(
            "{requests}{{{model_sel}, {}}}",
            outcome(value::OUTCOME_SUCCESS)
        ),
        by_reason("stop") + by_reason("length") + by_reason("repetition"),
    )
    .await;
    for r in [value::FINISH_ABORT, value::FINISH_ERROR] {
        let wrong = prom
            .query(&format!(
                "{requests}{{{}, {}}}",
                outcome(value::OUTCOME_SUCCESS),
                reason(r)
            ))
            .await
            .expect("query");
        assert!(wrong.is_empty(), "{r} counted as success: {wrong:?}");
    }

    // Counters and histogram counts, one for one.
    let token = |t: &str| label_sel(attr::GEN_AI_TOKEN_TYPE, t);
    let one_for_one: Vec<(&str, String, f64)> = vec![
        (
            "prefix cache queries",
            series(metric::PREFIX_CACHE_QUERIES),
            v("vllm:prefix_cache_queries_total"),
        ),
        (
            "prefix cache hits",
            series(metric::PREFIX_CACHE_HITS),
            v("vllm:prefix_cache_hits_total"),
        ),
        (
            "scheduler iterations",
            series(metric::SCHEDULER_ITERATIONS),
            v("vllm:iteration_tokens_total_count"),
        ),
        (
            "preemptions",
            series(metric::SCHEDULER_PREEMPTIONS),
            v("vllm:num_preemptions_total"),
        ),
        (
            "input tokens",
            format!(
                "{}{{{}}}",
                series(metric::TOKENS),
                token(value::TOKEN_INPUT)
            ),
            v("vllm:prompt_tokens_total"),
        ),
        (
            "output tokens",
            format!(
                "{}{{{}}}",
                series(metric::TOKENS),
                token(value::TOKEN_OUTPUT)
            ),
            v("vllm:generation_tokens_total"),
        ),
        (
            "prompt length histogram",
            format!(
                "{}{{{}}}",
                series(metric::REQUEST_TOKENS),
                token(value::TOKEN_INPUT)
            ),
            v("vllm:request_prompt_tokens_count"),
        ),
        (
            "output length histogram",
            format!(
                "{}{{{}}}",
                series(metric::REQUEST_TOKENS),
                token(value::TOKEN_OUTPUT)
            ),
            v("vllm:request_generation_tokens_count"),
        ),
        (
            "time to first token",
            series(metric::TIME_TO_FIRST_TOKEN),
            v("vllm:time_to_first_token_seconds_count"),
        ),
        (
            "time per output token (per request)",
            series(metric::TIME_PER_OUTPUT_TOKEN),
            v("vllm:request_time_per_output_token_seconds_count"),
        ),
        (
            "request duration",
            series(metric::REQUEST_DURATION),
            v("vllm:e2e_request_latency_seconds_count"),
        ),
        (
            "queue phase",
            series(metric::QUEUE_DURATION),
            v("vllm:request_queue_time_seconds_count"),
        ),
        (
            "prefill phase",
            series(metric::PREFILL_DURATION),
            v("vllm:request_prefill_time_seconds_count"),
        ),
        (
            "decode phase",
            series(metric::DECODE_DURATION),
            v("vllm:request_decode_time_seconds_count"),
        ),
    ];
    for (what, promql, expected) in one_for_one {
        let promql = if promql.ends_with('}') {
            format!("{}, {model_sel}}}", &promql[..promql.len() - 1])
        } else {
            format!("{promql}{{{model_sel}}}")
        };
        let found = arrives(&prom, what, promql, expected).await;
        for s in &found {
            assert!(
                s.label("model_name").is_none() && s.label("job") == Some("vllm"),
                "{what}: {:?}",
                s.labels
            );
        }
    }
    // Speculative decoding: the counters arrive under the contract's names, and the ratios an
    // operator reads (acceptance rate, tokens per draft) are the drafter's.
    let spec = |m: &str| format!("sum({}{{{model_sel}}})", series(m));
    arrives(
        &prom,
        "speculative acceptance rate",
        format!(
            "{} / {}",
            spec(metric::SPEC_DECODE_ACCEPTED_TOKENS),
            spec(metric::SPEC_DECODE_DRAFT_TOKENS)
        ),
        SPEC_ACCEPTED_TOKENS_PER_SCRAPE as f64 / SPEC_DRAFT_TOKENS_PER_SCRAPE as f64,
    )
    .await;
    arrives(
        &prom,
        "speculative draft tokens per draft",
        format!(
            "{} / {}",
            spec(metric::SPEC_DECODE_DRAFT_TOKENS),
            spec(metric::SPEC_DECODE_DRAFTS)
        ),
        SPEC_DRAFT_TOKENS_PER_SCRAPE as f64 / SPEC_DRAFTS_PER_SCRAPE as f64,
    )
    .await;
    let drafts = prom
        .query(&format!(
            "{}{{{model_sel}}}",
            series(metric::SPEC_DECODE_DRAFTS)
        ))
        .await
        .expect("query");
    assert!(
        drafts
            .iter()
            .all(|s| s.label("job") == Some("vllm") && s.value > 0.0),
        "{drafts:?}"
    );

    // The histograms' sums too: the phases are vLLM's own measurements, not re-derived.
    arrives(
        &prom,
        "time to first token (sum)",
        format!(
            "{}_sum{{{model_sel}}}",
            metric_spec(metric::TIME_TO_FIRST_TOKEN).unwrap().prometheus
        ),
        v("vllm:time_to_first_token_seconds_sum"),
    )
    .await;

    // KV transfers (NIXL): one per disaggregated request, recorded by the decode half; the
    // duration histogram renamed (vLLM's buckets), the bytes histogram's sum as the counter.
    assert_eq!(
        v("vllm:nixl_xfer_time_seconds_count"),
        PD_REQUESTS as f64,
        "{truth}"
    );
    assert!(v("vllm:nixl_bytes_transferred_sum") > 0.0, "{truth}");
    let duration = metric_spec(metric::KV_TRANSFER_DURATION)
        .unwrap()
        .prometheus;
    for (what, promql, expected) in [
        (
            "KV transfers",
            format!("{duration}_count{{{model_sel}}}"),
            v("vllm:nixl_xfer_time_seconds_count"),
        ),
        (
            "KV transfer time (sum)",
            format!("{duration}_sum{{{model_sel}}}"),
            v("vllm:nixl_xfer_time_seconds_sum"),
        ),
        (
            "KV transfer bytes",
            format!("{}{{{model_sel}}}", series(metric::KV_TRANSFER_BYTES)),
            v("vllm:nixl_bytes_transferred_sum"),
        ),
    ] {
        let found = arrives(&prom, what, promql, expected).await;
        for s in &found {
            assert!(
                s.label("model_name").is_none()
                    && s.label("job") == Some("vllm")
                    && s.label("llm_kv_transfer_transport").is_none(),
                "{what}: {:?}",
                s.labels
            );
        }
    }
    // vLLM's bucket boundaries arrive as they are (histogram_quantile reads any).
    arrives(
        &prom,
        "KV transfers under vLLM's last finite bucket (le=5.0)",
        format!("{duration}_bucket{{{model_sel}, le=~\"5|5.0\"}}"),
        v("vllm:nixl_xfer_time_seconds_count"),
    )
    .await;

    // Gauges: usage as exposed, blocks derived from it and the pool size.
    let num_gpu_blocks: f64 = exposed_label(&truth, "vllm:cache_config_info", "num_gpu_blocks")
        .and_then(|n| n.parse().ok())
        .expect("num_gpu_blocks");
    let usage = v("vllm:kv_cache_usage_perc");
    arrives(
        &prom,
        "KV cache usage",
        format!("{}{{{model_sel}}}", series(metric::KV_CACHE_USAGE)),
        usage,
    )
    .await;
    let blocks = series(metric::KV_CACHE_BLOCKS);
    let state = |s: &str| label_sel(attr::LLM_KV_CACHE_BLOCK_STATE, s);
    arrives(
        &prom,
        "KV cache blocks used + free (vLLM's allocatable pool, null block excluded)",
        format!("{blocks}{{{model_sel}}}"),
        num_gpu_blocks - 1.0,
    )
    .await;
    arrives(
        &prom,
        "KV cache blocks used",
        format!("{blocks}{{{model_sel}, {}}}", state(value::BLOCK_USED)),
        usage * (num_gpu_blocks - 1.0),
    )
    .await;
    let peak_used = prom
        .query_sum(&format!(
            "max_over_time({blocks}{{{model_sel}, {}}}[10m])",
            state(value::BLOCK_USED)
        ))
        .await
        .expect("query");
    assert!(peak_used > 0.0, "no KV block was ever used under load");
    // used = usage × (num_gpu_blocks − 1) at every instant, not only when both are 0.
    let worst = prom
        .query_sum(&format!(
            "max_over_time((abs(sum({blocks}{{{model_sel}, {}}}) - sum({}{{{model_sel}}}) * {}))[10m:1s])",
            state(value::BLOCK_USED),
            series(metric::KV_CACHE_USAGE),
            num_gpu_blocks - 1.0
        ))
        .await
        .expect("query");
    assert!(
        worst < 1e-6,
        "used blocks and usage disagree by up to {worst} blocks"
    );
    let running = prom
        .query(&format!(
            "{}{{{model_sel}}}",
            series(metric::SCHEDULER_REQUESTS)
        ))
        .await
        .expect("query");
    let states: Vec<_> = running
        .iter()
        .filter_map(|s| s.label("llm_request_state"))
        .collect();
    assert!(
        states.contains(&value::STATE_RUNNING) && states.contains(&value::STATE_WAITING),
        "{running:?}"
    );

    // 2. Every panel, live, against the table in docs/vllm.md.
    eventually("recording rules evaluated", Duration::from_secs(60), || {
        let prom = prom.clone();
        async move {
            let n = prom
                .query_sum("count(job_model:llm_requests:rate5m)")
                .await?;
            Ok((n > 0.0).then_some(()))
        }
    })
    .await;
    let report = run_coverage(&LiveConfig::new(
        stack.prometheus_url(),
        Some(stack.jaeger_url()),
    ))
    .await
    .expect("run dashboard queries");
    println!("{}", render_report(&report));
    let measured = panels_with_data(&report);
    let documented = documented_panels();
    let mut problems = Vec::new();
    println!("VLLM-PATH panel coverage:");
    for ((dashboard, panel), has_data) in &measured {
        println!(
            "  {dashboard} / {panel}: {}",
            if *has_data { "data" } else { "no data" }
        );
        match (documented.get(&(dashboard.clone(), panel.clone())), has_data) {
            (None, _) => problems.push(format!(
                "{dashboard} / {panel} is not in the docs/vllm.md panel table"
            )),
            (Some(Documented::Data), false) => problems.push(format!(
                "{dashboard} / {panel} has no data on the vLLM path, and docs/vllm.md gives no reason"
            )),
            (Some(Documented::NoData(reason)), true) => problems.push(format!(
                "{dashboard} / {panel} has data on the vLLM path, but docs/vllm.md says it has not: {reason}"
            )),
            _ => {}
        }
    }
    // Which alerts the alert panels saw, should they have data.
    let alerts = prom
        .query("max_over_time(ALERTS[15m])")
        .await
        .expect("query ALERTS");
    println!("VLLM-PATH alerts pending or firing during the run: {alerts:?}");
    for key in documented.keys() {
        if !measured.contains_key(key) {
            problems.push(format!(
                "docs/vllm.md lists {} / {}, which no dashboard has",
                key.0, key.1
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let _ = std::fs::remove_file(scenario);
}

/// Per (dashboard title, panel title): whether any of its queries returned data with every
/// variable at "All". Threshold lines (`infermon:threshold:*`, constants) are not data.
/// A query that fails is a broken panel, not a vLLM gap: the test stops on it.
fn panels_with_data(report: &CoverageReport) -> BTreeMap<(String, String), bool> {
    let mut panels = BTreeMap::new();
    for row in &report.rows {
        let key = (row.dashboard_title.clone(), row.panel_title.clone());
        let entry = panels.entry(key).or_insert(false);
        if row.query.trim_start().starts_with("infermon:threshold:") {
            continue;
        }
        match &row.all.outcome {
            Outcome::Found(n) => *entry |= *n > 0,
            other => panic!(
                "{} / {} {}: {other:?}",
                row.dashboard_title, row.panel_title, row.ref_id
            ),
        }
    }
    panels
}

/// What docs/vllm.md says of one panel on the vLLM path.
#[derive(Debug)]
enum Documented {
    /// "yes": it has data.
    Data,
    /// "no", with the reason.
    NoData(String),
}

/// The panel table of docs/vllm.md: (dashboard, panel) → what it says.
fn documented_panels() -> BTreeMap<(String, String), Documented> {
    let path = repo_root().join("docs/vllm.md");
    let doc = std::fs::read_to_string(&path).expect("read docs/vllm.md");
    let start = doc
        .find(PANEL_TABLE_HEADING)
        .expect("docs/vllm.md has the panel table section");
    let mut table = BTreeMap::new();
    for line in doc[start + PANEL_TABLE_HEADING.len()..].lines() {
        if line.starts_with("## ") {
            break;
        }
        let cells: Vec<&str> = line
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        if cells.len() != 4 || cells[0] == "Dashboard" || cells[0].starts_with("---") {
            continue;
        }
        let reason = || {
            assert!(
                !cells[3].is_empty(),
                "docs/vllm.md: {} / {} says {} without a reason",
                cells[0],
                cells[1],
                cells[2]
            );
            cells[3].to_string()
        };
        let said = match cells[2] {
            "yes" => Documented::Data,
            "no" => Documented::NoData(reason()),
            other => panic!("docs/vllm.md: data column must be yes or no, not {other:?}"),
        };
        table.insert((cells[0].to_string(), cells[1].to_string()), said);
    }
    table
}

const PANEL_TABLE_HEADING: &str = "\n## What each panel shows for vLLM\n";
