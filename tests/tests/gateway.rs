//! `infermon gateway` end to end: two simulators behind the real gateway binary, the load
//! generator in front with two tenants' keys, everything exporting to the real collector,
//! Prometheus and Jaeger.
//!
//! Asserted through the stack's APIs: one trace holds load generator → gateway (SERVER, then a
//! CLIENT attempt) → engine, with parent links and start order; for that request the gateway's
//! TTFT is at least the engine's; per-tenant token counts in Prometheus equal what each load
//! generator received per key; and an upstream killed mid-run costs no request that had not
//! started streaming (those are retried on the other engine).

use std::time::Duration;

use infermon::contract::{attr, metric_spec};
use infermon_e2e::http_api::{eventually, wait_healthy, Jaeger, Prometheus, TraceSpan};
use infermon_e2e::stack::{free_port, infermon_bin, json_summary, Process, Stack};
use serde_json::Value;

const LOAD_SERVICE: &str = "infermon-load-gw-e2e";
const GATEWAY_SERVICE: &str = "infermon-gateway-e2e";
const ENGINE_SERVICE: &str = "infermon-sim-gw-e2e";

fn prom_name(otlp: &str) -> &'static str {
    metric_spec(otlp).expect("contract metric").prometheus
}

/// Runs `infermon load` to completion with `key`; its JSON summary.
fn load(
    bin: &std::path::Path,
    url: &str,
    key: &str,
    duration: &str,
    env: &[(&str, &str)],
) -> Value {
    let mut p = Process::spawn(
        "load",
        bin,
        &[
            "load",
            "--url",
            url,
            "--json",
            "--quiet",
            "--rate",
            "6",
            "--duration",
            duration,
            "--output-tokens",
            "uniform:16:48",
            "--api-key",
            key,
        ],
        env,
    );
    let status = p.wait(Duration::from_secs(120)).expect("load finished");
    assert!(status.success(), "load failed:\n{}", p.output());
    let out = p.output();
    json_summary(&out).unwrap_or_else(|| panic!("no JSON summary in:\n{out}"))
}

/// The spans of one request: load CLIENT → gateway SERVER → gateway CLIENT → engine request.
fn chain(spans: &[TraceSpan]) -> Result<[&TraceSpan; 4], String> {
    let load = spans
        .iter()
        .find(|s| s.service == LOAD_SERVICE)
        .ok_or("no load generator span")?;
    let by_parent = |parent: &TraceSpan, service: &str| {
        spans
            .iter()
            .find(|s| s.service == service && s.parent_id.as_deref() == Some(&parent.span_id))
    };
    let server = by_parent(load, GATEWAY_SERVICE).ok_or("no gateway span under the load's")?;
    let attempt =
        by_parent(server, GATEWAY_SERVICE).ok_or("no attempt span under the gateway's")?;
    let engine = by_parent(attempt, ENGINE_SERVICE).ok_or("no engine span under the attempt")?;
    if !(load.start_us <= server.start_us
        && server.start_us <= attempt.start_us
        && attempt.start_us <= engine.start_us)
    {
        return Err("spans start out of order".into());
    }
    Ok([load, server, attempt, engine])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_one_bill_and_failover_through_the_gateway() {
    let bin = infermon_bin();
    let stack = Stack::start(&["prometheus", "jaeger", "otelcol"], &[]);
    let otlp = stack.otlp_endpoint().to_string();
    let prom = Prometheus::new(stack.prometheus_url());
    let jaeger = Jaeger::new(stack.jaeger_url());
    let fast_export = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.as_str()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "1000"),
        ("OTEL_BSP_SCHEDULE_DELAY", "500"),
    ];

    let engine_env: Vec<(&str, &str)> = fast_export
        .iter()
        .copied()
        .chain([("OTEL_SERVICE_NAME", ENGINE_SERVICE)])
        .collect();
    let (a, b) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let mut engines = Vec::new();
    for addr in [&a, &b] {
        engines.push(Process::spawn(
            "sim",
            &bin,
            &["sim", "--listen", addr, "--time-scale", "5"],
            &engine_env,
        ));
    }
    for addr in [&a, &b] {
        wait_healthy(&format!("http://{addr}/health")).await;
    }

    let config = std::env::temp_dir().join(format!("infermon-gw-e2e-{}.toml", std::process::id()));
    let hash = |key: &str| infermon_gateway::hash_key(key);
    std::fs::write(
        &config,
        format!(
            "[[tenant]]\nname = \"tenant-a\"\nkey_sha256 = \"{}\"\n\n\
             [[tenant]]\nname = \"tenant-b\"\nkey_sha256 = \"{}\"\n",
            hash("sk-a"),
            hash("sk-b")
        ),
    )
    .expect("write gateway config");
    let gateway_addr = format!("127.0.0.1:{}", free_port());
    let gateway_env: Vec<(&str, &str)> = fast_export
        .iter()
        .copied()
        .chain([("OTEL_SERVICE_NAME", GATEWAY_SERVICE)])
        .collect();
    let mut gateway = Process::spawn(
        "gateway",
        &bin,
        &[
            "gateway",
            "--listen",
            &gateway_addr,
            "--upstream",
            &format!("a=http://{a},b=http://{b}"),
            "--gateway-config",
            &config.display().to_string(),
            "--probe-interval",
            "1s",
        ],
        &gateway_env,
    );
    wait_healthy(&format!("http://{gateway_addr}/health")).await;
    let url = format!("http://{gateway_addr}");
    let load_env: Vec<(&str, &str)> = fast_export
        .iter()
        .copied()
        .chain([("OTEL_SERVICE_NAME", LOAD_SERVICE)])
        .collect();

    // 1. Two tenants at once; each load generator's received tokens are its bill.
    let (sa, sb) = {
        let (bin_a, url_a, env_a) = (bin.clone(), url.clone(), load_env.clone());
        let env_a: Vec<(String, String)> = env_a
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let first = std::thread::spawn(move || {
            let env: Vec<(&str, &str)> = env_a
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            load(&bin_a, &url_a, "sk-a", "6s", &env)
        });
        let second = load(&bin, &url, "sk-b", "6s", &load_env);
        (first.join().expect("load a"), second)
    };
    for (tenant, summary) in [("tenant-a", &sa), ("tenant-b", &sb)] {
        assert_eq!(summary["requests"]["failed"], 0, "{tenant}: {summary}");
        for (ty, key) in [("output", "output"), ("input", "input")] {
            let want = summary["tokens"][key]
                .as_f64()
                .expect("tokens in the summary");
            let q = format!(
                "sum({}{{llm_tenant=\"{tenant}\", gen_ai_token_type=\"{ty}\"}})",
                prom_name(infermon::contract::metric::GATEWAY_TOKENS)
            );
            let prom = prom.clone();
            let got = eventually(
                &format!("{tenant} {ty} tokens"),
                Duration::from_secs(30),
                || {
                    let (prom, q) = (prom.clone(), q.clone());
                    async move {
                        let v = prom.query_sum(&q).await?;
                        if v == want {
                            Ok(Some(v))
                        } else {
                            Err(format!("{v} in Prometheus, {want} received"))
                        }
                    }
                },
            )
            .await;
            println!("GATEWAY: {tenant} {ty} tokens: {got} in Prometheus = {want} received");
        }
    }

    // 2. One trace through three services; the gateway's TTFT includes the engine's.
    let (trace, gateway_ttft, engine_ttft) = eventually(
        "a trace load → gateway → engine",
        Duration::from_secs(60),
        || {
            let jaeger = jaeger.clone();
            async move {
                let ids = jaeger.trace_ids(LOAD_SERVICE, 20).await?;
                let mut last = format!("{} traces", ids.len());
                for id in ids {
                    let Some(spans) = jaeger.trace(&id).await? else {
                        continue;
                    };
                    match chain(&spans) {
                        Ok([_, server, _, engine]) => {
                            let ttft = |s: &TraceSpan| {
                                s.tags
                                    .get(attr::GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK)
                                    .and_then(Value::as_f64)
                            };
                            match (ttft(server), ttft(engine)) {
                                (Some(g), Some(e)) => return Ok(Some((id, g, e))),
                                other => last = format!("trace {id}: TTFT attributes {other:?}"),
                            }
                        }
                        Err(problem) => last = format!("trace {id}: {problem}"),
                    }
                }
                Err(last)
            }
        },
    )
    .await;
    println!("GATEWAY: trace {trace}: gateway TTFT {gateway_ttft:.4} s >= engine TTFT {engine_ttft:.4} s");
    assert!(
        gateway_ttft >= engine_ttft,
        "gateway {gateway_ttft} < engine {engine_ttft}"
    );

    // 3. Kill engine b mid-run: requests that had not started streaming go to a.
    let (bin_k, url_k) = (bin.clone(), url.clone());
    let env_k: Vec<(String, String)> = load_env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let running = std::thread::spawn(move || {
        let env: Vec<(&str, &str)> = env_k
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        load(&bin_k, &url_k, "sk-a", "8s", &env)
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    engines[1].kill();
    let summary = running.join().expect("load during the kill");
    let errors = summary["errors"].as_object().cloned().unwrap_or_default();
    println!(
        "GATEWAY: with engine b killed mid-run: {} sent, {} failed, errors {errors:?}",
        summary["requests"]["sent"], summary["requests"]["failed"]
    );
    for kind in errors.keys() {
        assert!(
            !kind.starts_with("http_5"),
            "a request failed before streaming ({kind}): it should have gone to engine a; {summary}"
        );
    }
    assert!(summary["requests"]["succeeded"].as_u64().unwrap_or(0) > 0);
    // The gateway noticed: failed attempts on b, or its probe took b out (whichever came
    // first; requests between the kill and the next probe fail over).
    let healthy = format!(
        "max({}{{llm_upstream=\"b\"}})",
        prom_name(infermon::contract::metric::GATEWAY_HEALTHY)
    );
    eventually("engine b marked unhealthy", Duration::from_secs(30), || {
        let (prom, q) = (prom.clone(), healthy.clone());
        async move { Ok((prom.query(&q).await?.iter().any(|s| s.value == 0.0)).then_some(())) }
    })
    .await;
    let failovers = prom
        .query_sum(&format!(
            "sum({}{{llm_upstream=\"b\", llm_gateway_attempt_outcome!=\"ok\"}})",
            prom_name(infermon::contract::metric::GATEWAY_ATTEMPTS)
        ))
        .await
        .unwrap_or(0.0);
    println!("GATEWAY: engine b out of rotation; failed attempts on it: {failovers}");

    assert!(
        gateway.terminate(),
        "gateway did not stop cleanly:\n{}",
        gateway.output()
    );
    let _ = std::fs::remove_file(config);

    // 4. Disaggregated prefill/decode: load → gateway → prefill engine, then kv_transfer and
    //    the decode engine, on one trace.
    let pd_env = |service: &'static str| -> Vec<(&str, &str)> {
        fast_export
            .iter()
            .copied()
            .chain([("OTEL_SERVICE_NAME", service)])
            .collect()
    };
    let (p_addr, d_addr) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let _prefill = Process::spawn(
        "sim-prefill",
        &bin,
        &["sim", "--listen", &p_addr, "--time-scale", "5"],
        &pd_env(PREFILL_SERVICE),
    );
    let _decode = Process::spawn(
        "sim-decode",
        &bin,
        &[
            "sim",
            "--listen",
            &d_addr,
            "--time-scale",
            "5",
            "--kv-transport",
            "tcp",
        ],
        &pd_env(DECODE_SERVICE),
    );
    for addr in [&p_addr, &d_addr] {
        wait_healthy(&format!("http://{addr}/health")).await;
    }
    let pd_gateway_addr = format!("127.0.0.1:{}", free_port());
    let mut pd_gateway = Process::spawn(
        "gateway-pd",
        &bin,
        &[
            "gateway",
            "--listen",
            &pd_gateway_addr,
            "--prefill-upstream",
            &format!("p=http://{p_addr}"),
            "--decode-upstream",
            &format!("d=http://{d_addr}"),
        ],
        &gateway_env,
    );
    wait_healthy(&format!("http://{pd_gateway_addr}/health")).await;
    let pd = load(
        &bin,
        &format!("http://{pd_gateway_addr}"),
        "none",
        "2s",
        &load_env,
    );
    assert_eq!(pd["requests"]["failed"], 0, "{pd}");
    let (trace, transfer_bytes) = eventually(
        "a trace load → gateway → prefill → kv_transfer → decode",
        Duration::from_secs(60),
        || {
            let jaeger = jaeger.clone();
            async move {
                let ids = jaeger.trace_ids(DECODE_SERVICE, 20).await?;
                let mut last = format!("{} traces", ids.len());
                for id in ids {
                    let Some(spans) = jaeger.trace(&id).await? else {
                        continue;
                    };
                    match pd_chain(&spans) {
                        Ok(bytes) => return Ok(Some((id, bytes))),
                        Err(problem) => last = format!("trace {id}: {problem}"),
                    }
                }
                Err(last)
            }
        },
    )
    .await;
    println!(
        "GATEWAY: P/D trace {trace}: prefill engine, then {transfer_bytes} KV bytes over tcp, \
         then the decode engine"
    );
    assert!(
        pd_gateway.terminate(),
        "P/D gateway did not stop cleanly:\n{}",
        pd_gateway.output()
    );
}

const PREFILL_SERVICE: &str = "infermon-sim-prefill-e2e";
const DECODE_SERVICE: &str = "infermon-sim-decode-e2e";

/// load → gateway SERVER → attempt (prefill) → prefill engine's request span; attempt (decode)
/// → kv_transfer (decode engine) and the decode engine's request span, in that order. Returns
/// the transfer's bytes.
fn pd_chain(spans: &[TraceSpan]) -> Result<u64, String> {
    let load = spans
        .iter()
        .find(|s| s.service == LOAD_SERVICE)
        .ok_or("no load generator span")?;
    let children = |parent: &TraceSpan| -> Vec<&TraceSpan> {
        spans
            .iter()
            .filter(|s| s.parent_id.as_deref() == Some(&parent.span_id))
            .collect()
    };
    let server = *children(load)
        .iter()
        .find(|s| s.service == GATEWAY_SERVICE)
        .ok_or("no gateway span under the load's")?;
    let phase = |name: &str| {
        children(server)
            .into_iter()
            .find(|s| s.tags.get(attr::LLM_PD_PHASE).and_then(Value::as_str) == Some(name))
            .ok_or(format!("no {name} attempt"))
    };
    let (prefill_attempt, decode_attempt) = (phase("prefill")?, phase("decode")?);
    let prefill = *children(prefill_attempt)
        .iter()
        .find(|s| s.service == PREFILL_SERVICE)
        .ok_or("no prefill engine span")?;
    let under_decode = children(decode_attempt);
    let transfer = *under_decode
        .iter()
        .find(|s| s.name == infermon::contract::span::KV_TRANSFER)
        .ok_or("no kv_transfer span")?;
    let decode = *under_decode
        .iter()
        .find(|s| s.service == DECODE_SERVICE && s.name != infermon::contract::span::KV_TRANSFER)
        .ok_or("no decode engine span")?;
    let end = |s: &TraceSpan| s.start_us + s.duration_us;
    if !(end(prefill) <= transfer.start_us + 1000 && end(transfer) <= decode.start_us + 1) {
        return Err(format!(
            "out of order: prefill ends {}, transfer {}..{}, decode starts {}",
            end(prefill),
            transfer.start_us,
            end(transfer),
            decode.start_us
        ));
    }
    transfer
        .tags
        .get(attr::LLM_KV_TRANSFER_BYTES)
        .and_then(Value::as_u64)
        .filter(|b| *b > 0)
        .ok_or_else(|| "kv_transfer without bytes".to_owned())
}
