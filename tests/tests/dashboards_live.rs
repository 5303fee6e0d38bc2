//! Every dashboard query proven against real data: the simulator (with simulated GPUs, an
//! error burst and KV-cache pressure) behind `infermon gateway` (a tenant's key, a price
//! table), a disaggregated prefill/decode pair behind a second gateway, and a vLLM-format
//! engine feed the real collector, Prometheus and Jaeger; then every panel target runs with its
//! variables expanded to "All" and to one concrete value, and must return data (or be listed in
//! `MAY_BE_EMPTY` with the reason).
//!
//! Prometheus also remote-writes everything into VictoriaMetrics in the same run, and every
//! PromQL target runs again against it, side by side (docs/scale.md, "Metrics store").

use std::time::Duration;

use infermon_e2e::dashboards::{render_report, run_coverage, LiveConfig};
use infermon_e2e::http_api::{eventually, wait_healthy, Prometheus};
use infermon_e2e::stack::{free_port, infermon_bin, Process, Stack};
use infermon_e2e::victoriametrics::{compare_coverage, metric_sum, query_at};

/// Seconds since the simulator started (it runs at real speed here, so that requests last
/// long enough for the "slow requests" trace search).
const SCENARIO: &str = r#"
[[fault]]
from_s = 5
to_s = 35
errors = [{ type = "server_error", rate = 0.2 }, { type = "rate_limited", rate = 0.05 }]

[[fault]]
from_s = 15
to_s = 45
kv_pressure = 0.95
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_data() {
    const TENANT_KEY: &str = "sk-dashboards";
    let bin = infermon_bin();
    let vllm_port = free_port();
    let stack = Stack::start(
        &["victoriametrics", "prometheus", "jaeger", "otelcol"],
        &[
            ("INFERMON_VLLM_TARGET", format!("127.0.0.1:{vllm_port}")),
            ("INFERMON_VICTORIAMETRICS_PORT", free_port().to_string()),
        ],
    );
    let otlp = stack.otlp_endpoint().to_string();
    let scenario = std::env::temp_dir().join(format!("infermon-dash-{}.toml", std::process::id()));
    std::fs::write(&scenario, SCENARIO).expect("write scenario");

    let sim_addr = format!("127.0.0.1:{}", free_port());
    let scenario_arg = scenario.display().to_string();
    let telemetry_env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.as_str()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "1000"),
        ("OTEL_BSP_SCHEDULE_DELAY", "500"),
    ];
    let _sim = Process::sim(
        "sim",
        &bin,
        &sim_addr,
        "1",
        &["--simulated-gpus", "2", "--scenario", &scenario_arg],
        &telemetry_env,
    );
    let vllm_addr = format!("127.0.0.1:{vllm_port}");
    let _vllm = Process::vllm_metrics_sim(&bin, &vllm_addr, &[]);
    // A disaggregated pair, and a gateway in front of each kind of engine.
    let (prefill_addr, decode_addr) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let mut engines = Vec::new();
    for (addr, service) in [(&prefill_addr, "sim-prefill"), (&decode_addr, "sim-decode")] {
        let env: Vec<(&str, &str)> = telemetry_env
            .iter()
            .copied()
            .chain([("OTEL_SERVICE_NAME", service)])
            .collect();
        engines.push(Process::spawn(
            service,
            &bin,
            &["sim", "--listen", addr, "--time-scale", "10"],
            &env,
        ));
    }
    for addr in [&sim_addr, &vllm_addr, &prefill_addr, &decode_addr] {
        wait_healthy(&format!("http://{addr}/health")).await;
    }
    let gateway_config =
        std::env::temp_dir().join(format!("infermon-dash-gw-{}.toml", std::process::id()));
    std::fs::write(
        &gateway_config,
        format!(
            "[[tenant]]\nname = \"acme\"\nkey_sha256 = \"{}\"\n\n\
             [[price]]\nmodel = \"llama-3.1-8b-instruct\"\ninput_per_million = 0.2\n\
             output_per_million = 0.6\n",
            infermon_gateway::hash_key(TENANT_KEY)
        ),
    )
    .expect("write the gateway config");
    let (gateway_addr, pd_gateway_addr) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let gateway_config_arg = gateway_config.display().to_string();
    let (sim_upstream, prefill_upstream, decode_upstream) = (
        format!("sim=http://{sim_addr}"),
        format!("p=http://{prefill_addr}"),
        format!("d=http://{decode_addr}"),
    );
    let gateways = [
        (
            &gateway_addr,
            vec![
                "--upstream",
                &sim_upstream,
                "--gateway-config",
                &gateway_config_arg,
            ],
        ),
        (
            &pd_gateway_addr,
            vec![
                "--prefill-upstream",
                &prefill_upstream,
                "--decode-upstream",
                &decode_upstream,
            ],
        ),
    ];
    for (addr, extra) in gateways {
        let mut args = vec!["gateway", "--listen", addr.as_str()];
        args.extend(extra);
        engines.push(Process::spawn("gateway", &bin, &args, &telemetry_env));
        wait_healthy(&format!("http://{addr}/health")).await;
    }

    let mut loads = Vec::new();
    // 256 output tokens take about 2 s at the H100 profile's pace: slow enough for the
    // "slow requests" panel (default threshold 1 s).
    // The simulator's traffic comes through its gateway with the tenant's key.
    for (addr, rate, extra) in [
        (&gateway_addr, "8", ["--api-key", TENANT_KEY].as_slice()),
        (&vllm_addr, "8", ["--no-otlp"].as_slice()),
        (&pd_gateway_addr, "2", [].as_slice()),
    ] {
        let url = format!("http://{addr}");
        let mut args = vec![
            "load",
            "--url",
            &url,
            "--rate",
            rate,
            "--duration",
            "50s",
            "--quiet",
            "--output-tokens",
            "256",
            "--ignore-eos",
        ];
        args.extend(extra);
        loads.push(Process::spawn("load", &bin, &args, &telemetry_env));
    }
    for load in &mut loads {
        let status = load.wait(Duration::from_secs(120)).expect("load finished");
        // Injected errors make some requests fail; the load generator still exits normally.
        assert!(
            status.code().is_some(),
            "load generator crashed:\n{}",
            load.output()
        );
    }

    // Give the last exports and a rule evaluation time to land.
    let prom = Prometheus::new(stack.prometheus_url());
    eventually("recording rules evaluated", Duration::from_secs(60), || {
        let prom = prom.clone();
        async move {
            let names = prom.metric_names().await?;
            Ok(names.iter().any(|n| n.contains(':')).then_some(()))
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;

    let report = run_coverage(&LiveConfig::new(
        stack.prometheus_url(),
        Some(stack.jaeger_url()),
    ))
    .await
    .expect("run dashboard queries");
    let table = render_report(&report);
    println!("{table}\n{}", report.summary());
    assert!(
        report.failures().is_empty(),
        "dashboard targets without data:\n{table}"
    );
    assert!(
        report.skipped().is_empty(),
        "dashboard targets skipped:\n{table}"
    );
    against_victoriametrics(
        stack.prometheus_url(),
        stack.var("INFERMON_VICTORIAMETRICS_URL"),
        &report,
    )
    .await;
    let _ = std::fs::remove_file(scenario);
    let _ = std::fs::remove_file(gateway_config);
}

/// The same dashboards against VictoriaMetrics, fed by Prometheus' remote_write in this run:
/// the same metric names, the same stored values, every target with data in Prometheus has
/// data there too (or `VM_DIFFERS` says why not); query-engine differences are printed side by
/// side, with VictoriaMetrics' memory per active series.
async fn against_victoriametrics(
    prom_url: &str,
    vm_url: &str,
    prom_report: &infermon_e2e::dashboards::CoverageReport,
) {
    let prom_done = std::time::Instant::now();
    let (prom, vm) = (Prometheus::new(prom_url), Prometheus::new(vm_url));
    // Remote write lags by a few seconds: wait until every name Prometheus has arrived, except
    // series whose every sample is NaN (a summary's quantiles before any observation):
    // VictoriaMetrics does not store NaN samples.
    let (names, nan_only) = eventually(
        "VictoriaMetrics holds every metric name Prometheus holds (but NaN-only ones)",
        Duration::from_secs(60),
        || {
            let (prom, vm) = (prom.clone(), vm.clone());
            async move {
                let p: std::collections::BTreeSet<String> =
                    prom.metric_names().await?.into_iter().collect();
                let v: std::collections::BTreeSet<String> =
                    vm.metric_names().await?.into_iter().collect();
                let (mut nan_only, mut missing) = (Vec::new(), Vec::new());
                for name in p.difference(&v) {
                    let samples = prom
                        .query(&format!("last_over_time({{__name__=\"{name}\"}}[1h])"))
                        .await?;
                    if !samples.is_empty() && samples.iter().all(|s| s.value.is_nan()) {
                        nan_only.push(name.clone());
                    } else {
                        missing.push(format!("{name} ({} series)", samples.len()));
                    }
                }
                if missing.is_empty() {
                    Ok(Some(((p, v), nan_only)))
                } else {
                    Err(format!("not in VictoriaMetrics: {missing:?}"))
                }
            }
        },
    )
    .await;
    let extra: Vec<_> = names.1.difference(&names.0).collect();
    assert!(
        extra.is_empty(),
        "names in VictoriaMetrics that Prometheus lacks: {extra:?}"
    );
    println!(
        "VictoriaMetrics: the same {} metric names as Prometheus, less {} whose samples are all NaN: {nan_only:?}",
        names.0.len(),
        nan_only.len()
    );

    // Side by side at one instant inside the workload: a stored series must be identical; the
    // query-engine differences (rate extrapolation, histogram_quantile) are shown. The instant is
    // over 30 s back: VictoriaMetrics answers for no later time by default
    // (-search.latencyOffset, against samples still on their way).
    let at = eventually(
        "recording rule output at least 31 s old in Prometheus",
        Duration::from_secs(60),
        || async move {
            let at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock after 1970")
                .as_secs_f64()
                - 31.0;
            let p = query_at(prom_url, "job_model:llm_requests:rate5m", at).await?;
            Ok((!p.is_empty()).then_some(at))
        },
    )
    .await;
    for (expr, stored) in [
        ("sum by (job) (job_model:llm_requests:rate5m)", true),
        ("sum by (job) (rate(llm_requests_total[5m]))", false),
        ("sum by (job) (increase(llm_requests_total[5m]))", false),
        (
            "histogram_quantile(0.95, sum by (job, le) (rate(gen_ai_server_request_duration_seconds_bucket[5m])))",
            false,
        ),
    ] {
        let p = query_at(prom_url, expr, at).await.expect("Prometheus query");
        let v = query_at(vm_url, expr, at).await.expect("VictoriaMetrics query");
        assert!(!p.is_empty(), "{expr}: no data in Prometheus at {at}");
        for (labels, pv) in &p {
            let vv = v
                .iter()
                .find(|(l, _)| l == labels)
                .map(|(_, x)| *x)
                .unwrap_or(f64::NAN);
            let rel = (vv - pv).abs() / pv.abs().max(f64::MIN_POSITIVE);
            println!("side by side: {expr} {{{labels}}}: Prometheus {pv:.6}, VictoriaMetrics {vv:.6} ({:+.2} %)", 100.0 * (vv - pv) / pv);
            if stored {
                assert!(
                    rel < 1e-9,
                    "{expr} {{{labels}}}: stored values differ: Prometheus {pv}, VictoriaMetrics {vv}"
                );
            }
        }
    }

    // VictoriaMetrics leaves the newest 30 s out of query results by default
    // (-search.latencyOffset): query it once everything the Prometheus pass saw is older than
    // that (an alert that went pending just before would otherwise be missing).
    tokio::time::sleep(
        (prom_done + Duration::from_secs(31)).saturating_duration_since(std::time::Instant::now()),
    )
    .await;
    let vm_report = run_coverage(&LiveConfig::new(vm_url, None))
        .await
        .expect("run dashboard queries against VictoriaMetrics");
    let comparison = compare_coverage(prom_report, &vm_report);
    println!("{}", comparison.render());
    assert!(
        comparison.unexplained().is_empty(),
        "dashboard targets with data in Prometheus but none in VictoriaMetrics:\n{}",
        comparison.render()
    );
    // docs/scale.md says VictoriaMetrics stores no exemplars; this keeps that statement true.
    assert_eq!(
        comparison.exemplars_on_vm, 0,
        "VictoriaMetrics returned exemplars: update docs/scale.md"
    );

    // Memory per active series, from each store's own /metrics (docs/scale.md).
    for (name, url, series_metric) in [
        (
            "VictoriaMetrics",
            vm_url,
            "vm_cache_entries{type=\"storage/hour_metric_ids\"}",
        ),
        ("Prometheus", prom_url, "prometheus_tsdb_head_series"),
    ] {
        let page = reqwest::get(format!("{url}/metrics"))
            .await
            .and_then(|r| r.error_for_status())
            .expect("GET /metrics")
            .text()
            .await
            .expect("read /metrics");
        if name == "VictoriaMetrics" {
            // Rows over a limit (labels per series, label length) are dropped, not stored.
            let ignored = metric_sum(&page, "vm_rows_ignored_total").unwrap_or(0.0);
            assert_eq!(ignored, 0.0, "VictoriaMetrics ignored {ignored} rows (vm_rows_ignored_total): a limit in deploy/victoriametrics/victoriametrics.flags is too low");
        }
        let rss = metric_sum(&page, "process_resident_memory_bytes").expect("RSS on /metrics");
        let series = metric_sum(&page, series_metric).expect("active series on /metrics");
        assert!(series > 0.0, "{name}: {series_metric} is 0 after the run");
        println!(
            "memory: {name}: {series} active series ({series_metric}), RSS {:.1} MiB, {:.2} MiB per 1k active series",
            rss / 1048576.0,
            rss / 1048576.0 / (series / 1000.0)
        );
    }
}
