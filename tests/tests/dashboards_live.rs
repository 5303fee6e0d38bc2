//! Every dashboard query proven against real data: the simulator (with simulated GPUs, an
//! error burst and KV-cache pressure) behind `infermon gateway` (a tenant's key, a price
//! table), a disaggregated prefill/decode pair behind a second gateway, and a vLLM-format
//! engine feed the real collector, Prometheus and Jaeger; then every panel target runs with its
//! variables expanded to "All" and to one concrete value, and must return data (or be listed in
//! `MAY_BE_EMPTY` with the reason).

use std::time::Duration;

use infermon_e2e::dashboards::{render_report, run_coverage, LiveConfig};
use infermon_e2e::http_api::{eventually, wait_healthy, Prometheus};
use infermon_e2e::stack::{free_port, infermon_bin, Process, Stack};

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
        &["prometheus", "jaeger", "otelcol"],
        &[("INFERMON_VLLM_TARGET", format!("127.0.0.1:{vllm_port}"))],
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
    let _ = std::fs::remove_file(scenario);
    let _ = std::fs::remove_file(gateway_config);
}
