//! The collector tiers of docs/scale.md on loopback, with the real binaries: two agent
//! collectors (otel-collector/agent.yaml, dns resolver) and two gateway collectors
//! (otel-collector/gateway.yaml) between two simulated nodes and the stores (Prometheus,
//! Jaeger). Each node's engine exports to its own agent; each load generator exports its
//! client spans to the OTHER node's agent, so every trace reaches the gateways through both
//! agents and stays whole only if both route it by trace id to the same gateway.
//!
//! Phase 1 (both gateways): no trace is split; every error trace and every slow trace (per
//! model threshold) is kept; the kept share of the rest is within 4 sigma of the sampling
//! percentage; span-metric request counts equal the requests sent.
//! Phase 2: a gateway is SIGKILLed while load runs and dropped from the agents' DNS (as a
//! Kubernetes headless Service drops a pod that fails readiness); the agents re-balance.
//! Only this phase may lose or cut traces, and only those of requests inside the documented
//! loss window around the kill (the dead gateway's undecided buffer and what the agents sent it
//! before re-resolving; docs/scale.md): each load generator's `--requests-log` gives every
//! request's trace id and times, so every lost or cut trace is checked to lie inside it, and
//! every failed request outside it to be kept. The loss inside is printed.
//! Phase 3 (after the re-balance): everything goes to the surviving gateway and nothing is lost.
//!
//! Ground truth: the load generators' own counts (requests sent, failed) and the span metrics
//! computed from every span before sampling (slow = the SERVER span's duration above the
//! threshold; the thresholds are histogram bucket bounds so the histogram counts them exactly).
//!
//! A second test runs the `static` resolver (the ring for VMs, which never changes): a gateway
//! killed and back on its address within the agents' 60 s of retries gets the share of the
//! traces that was routed to it while it was down (docs/scale.md).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use infermon_e2e::alerting::require_stack_binaries;
use infermon_e2e::http_api::{eventually, Prometheus};
use infermon_e2e::stack::{free_port, free_port_range, infermon_bin, json_summary, Process, Stack};
use infermon_e2e::tiers::{
    binomial_band, kept_traces, ports_free_on, self_metric, spawn_agent, spawn_gateway,
    spawn_static_agent, write_hosts, Collector, CollectorPorts, KeptTrace, ScratchDir,
};

const GATEWAY_HOSTS: [&str; 2] = ["127.0.0.2", "127.0.0.3"];
const GATEWAY_IDS: [&str; 2] = ["gateway-a", "gateway-b"];
const SAMPLE_PERCENT: f64 = 25.0;
/// Every trace here has a root (the load generator's client span), so the gateways decide
/// DECISION_WAIT_AFTER_ROOT after it arrives: more than the senders' export delay (500 ms
/// here) plus the agents' batch timeout (1 s). DECISION_WAIT is only the cap.
const DECISION_WAIT: &str = "30s";
const DECISION_WAIT_AFTER_ROOT: &str = "3s";
/// With every output running to its max_tokens (--ignore-eos, `Node::output_tokens`), about
/// 40 % of node 1's and 20 % of node 2's requests are slow on an idle machine (more on a busy
/// one), leaving enough of the rest for the sampling check.
const TIME_SCALE: &str = "4";
const RATE: &str = "15";
const WAIT: Duration = Duration::from_secs(120);

struct Node {
    name: &'static str,
    model: &'static str,
    /// The slow threshold the gateways apply to this node's model, in ms, and the same bound
    /// as the span metrics' histogram bucket label.
    slow_ms: u64,
    slow_le: &'static str,
    /// The load generator's `--output-tokens` against this node.
    output_tokens: &'static str,
}

/// Node 1's model has its own threshold (INFERMON_TAIL_SLOW_MODEL_A); node 2's model has
/// none, so the default threshold applies to it.
const NODES: [Node; 2] = [
    Node {
        name: "sim-node-1",
        model: "llama-3.1-8b-instruct",
        slow_ms: 640,
        slow_le: "0.64",
        output_tokens: "uniform:16:600",
    },
    Node {
        name: "sim-node-2",
        model: "qwen2.5-7b-instruct",
        slow_ms: 1280,
        slow_le: "1.28",
        output_tokens: "uniform:16:900",
    },
];

/// 10 % of requests fail with HTTP 500 for the whole run.
const SCENARIO: &str = r#"
[[fault]]
from_s = 0
to_s = 100000
errors = [{ type = "server_error", rate = 0.1 }]
"#;

/// The loss window around a gateway's death (docs/scale.md, "When a gateway dies"): only a
/// request that ended less than AT_RISK_BEFORE before the kill (its trace still awaiting the
/// dead gateway's decision: DECISION_WAIT_AFTER_ROOT 3 s + the sampler's 1 s tick + the
/// senders' 0.5 s export delay + the agent's and the gateway's 1 s batches = 6.5 s) and started
/// less than AT_RISK_AFTER after the agents re-resolved (spans already on their way to it: 0.5 s
/// + 1 s) may be lost or cut. Both carry 3 s of slack for a loaded CI machine.
const AT_RISK_BEFORE_MS: f64 = 9_500.0;
const AT_RISK_AFTER_MS: f64 = 4_500.0;

/// One `infermon load` run against one node's engine.
struct LoadRun {
    node: usize,
    service: String,
    sent: u64,
    failed: u64,
    /// Its `--requests-log`, one entry per request.
    requests: Vec<LoggedRequest>,
}

struct LoggedRequest {
    trace_id: String,
    start_ms: f64,
    end_ms: f64,
    failed: bool,
}

impl LoadRun {
    fn by_trace_id(&self) -> HashMap<&str, &LoggedRequest> {
        self.requests
            .iter()
            .map(|r| (r.trace_id.as_str(), r))
            .collect()
    }

    fn failed_trace_ids(&self) -> BTreeSet<&str> {
        self.requests
            .iter()
            .filter(|r| r.failed)
            .map(|r| r.trace_id.as_str())
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiers_keep_whole_traces_sample_by_policy_and_rebalance() {
    require_stack_binaries(&["OTELCOL", "PROMETHEUS", "JAEGER"]);
    let unshare = std::process::Command::new("unshare")
        .args(["--mount", "true"])
        .output()
        .expect("run unshare (util-linux)");
    assert!(
        unshare.status.success(),
        "this test runs the agents in mount namespaces (unshare -m, needs root): {}",
        String::from_utf8_lossy(&unshare.stderr)
    );
    let bin = infermon_bin();
    let stack = Stack::start(&["prometheus", "jaeger"], &[]);
    let prom = Prometheus::new(stack.prometheus_url());
    let jaeger_url = stack.jaeger_url().to_string();
    let http = reqwest::Client::new();

    let dir = ScratchDir::new("infermon-tiers");
    let hosts = dir.path().join("hosts");
    write_hosts(&hosts, &GATEWAY_HOSTS);
    let scenario = dir.path().join("scenario.toml");
    std::fs::write(&scenario, SCENARIO).expect("write scenario");

    // Gateways: same ports, different loopback addresses (the dns resolver's one port).
    let gateway_ports = CollectorPorts::from_base(ports_free_on(&GATEWAY_HOSTS));
    let mut gateway_env = gateway_env(&stack, SAMPLE_PERCENT);
    gateway_env.extend([
        ("INFERMON_TAIL_SLOW_MODEL_A", NODES[0].model.to_string()),
        ("INFERMON_TAIL_SLOW_MS_A", NODES[0].slow_ms.to_string()),
        (
            "INFERMON_TAIL_SLOW_MS_DEFAULT",
            NODES[1].slow_ms.to_string(),
        ),
    ]);
    let mut gateways: Vec<Collector> = GATEWAY_IDS
        .iter()
        .zip(GATEWAY_HOSTS)
        .map(|(id, host)| spawn_gateway(id, host, gateway_ports, &gateway_env))
        .collect();

    // Agents, one per node; each also scrapes its node's engine /metrics (vLLM format).
    let sim_addrs: Vec<String> = (0..2)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let agent_base = free_port_range(8);
    let mut agents: Vec<Collector> = (0..2)
        .map(|i| {
            spawn_agent(
                &format!("agent-{}", i + 1),
                CollectorPorts::from_base(agent_base + 4 * i as u16),
                gateway_ports.grpc,
                &hosts,
                &[
                    ("INFERMON_GATEWAY_DNS_INTERVAL", "1s".to_string()),
                    ("INFERMON_VLLM_TARGET", sim_addrs[i].clone()),
                ],
            )
        })
        .collect();
    for c in gateways.iter_mut().chain(agents.iter_mut()) {
        c.wait_ready().await;
    }

    let scenario_arg = scenario.display().to_string();
    let mut sims = Vec::new();
    for (i, node) in NODES.iter().enumerate() {
        let otlp = agents[i].otlp_endpoint();
        let resource = format!("host.name={}", node.name.trim_start_matches("sim-"));
        sims.push(Process::sim(
            node.name,
            &bin,
            &sim_addrs[i],
            TIME_SCALE,
            &["--model", node.model, "--scenario", &scenario_arg],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.as_str()),
                ("OTEL_SERVICE_NAME", node.name),
                ("OTEL_RESOURCE_ATTRIBUTES", resource.as_str()),
                ("OTEL_BSP_SCHEDULE_DELAY", "500"),
                ("OTEL_METRIC_EXPORT_INTERVAL", "1000"),
            ],
        ));
    }
    for addr in &sim_addrs {
        infermon_e2e::http_api::wait_healthy(&format!("http://{addr}/health")).await;
    }

    // ---- phase 1: both gateways ------------------------------------------------------------
    let phase1 = run_phase(&bin, &sim_addrs, &agents, dir.path(), "p1", 300).await;
    let total1: u64 = phase1.iter().map(|r| r.sent).sum();
    // Every trace decided (one decision per trace; the first phase is all there is so far).
    eventually("phase 1: every trace decided", WAIT, || async {
        let mut decided = 0.0;
        for g in &gateways {
            decided += self_metric(
                &http,
                &g.metrics_url(),
                "otelcol_processor_tail_sampling_global_count_traces_sampled",
                &[],
            )
            .await?
            .unwrap_or(0.0);
        }
        Ok((decided >= total1 as f64).then_some(()))
    })
    .await;
    let mut gateways_seen = std::collections::BTreeSet::new();
    for run in &phase1 {
        let node = &NODES[run.node];
        // Span metrics: every request counted, whichever gateway saw it and whatever was kept.
        let server = format!(
            "service_name=\"{}\", span_kind=\"SPAN_KIND_SERVER\"",
            node.name
        );
        let calls = eventually_sum(
            &prom,
            &format!("sum(traces_span_metrics_calls_total{{{server}}})"),
            run.sent as f64,
        )
        .await;
        client_spans_all_counted(&prom, run).await;
        // The engine's own request counter, through agent -> gateway -> Prometheus.
        eventually_sum(
            &prom,
            &format!("sum(llm_requests_total{{job=\"{}\"}})", node.name),
            run.sent as f64,
        )
        .await;
        let fast = prom
            .query_sum(&format!(
                "sum(traces_span_metrics_duration_seconds_bucket{{{server}, le=\"{}\"}})",
                node.slow_le
            ))
            .await
            .expect("query fast requests");
        let fast_ok = prom
            .query_sum(&format!(
                "sum(traces_span_metrics_duration_seconds_bucket{{{server}, status_code!=\"STATUS_CODE_ERROR\", le=\"{}\"}})",
                node.slow_le
            ))
            .await
            .expect("query fast ok requests");
        let slow = (calls - fast) as u64;
        assert!(
            slow > 0 && fast_ok > 0.0,
            "{}: the load must produce slow ({slow}) and fast ok ({fast_ok}) requests for the checks to mean anything",
            node.name
        );

        let kept = settled_traces(&http, &jaeger_url, run, |kept| {
            let errors = kept.iter().filter(|t| t.error).count() as u64;
            let kept_slow = kept.iter().filter(|t| is_slow(t, node)).count() as u64;
            (errors >= run.failed && kept_slow >= slow).then_some(())
        })
        .await;
        let kept_slow = kept.iter().filter(|t| is_slow(t, node)).count() as u64;
        assert_eq!(
            error_trace_ids(&kept),
            run.failed_trace_ids(),
            "{}: every failed request's trace kept as an error trace, no other",
            run.service
        );
        assert_eq!(
            kept_slow, slow,
            "{}: every slow trace kept (> {} ms)",
            run.service, node.slow_ms
        );
        assert_whole(&kept, run);
        gateways_seen.extend(kept.iter().flat_map(|t| t.collector_ids.iter().cloned()));

        let kept_rest = kept
            .iter()
            .filter(|t| !t.error && !is_slow(t, node))
            .count() as f64;
        let (lo, hi) = binomial_band(fast_ok as u64, SAMPLE_PERCENT / 100.0, 4.0);
        println!(
            "{}: sent {} failed {} slow {slow} kept {} (rest kept {kept_rest} of {fast_ok}, band {lo:.1}..{hi:.1})",
            run.service,
            run.sent,
            run.failed,
            kept.len()
        );
        assert!(
            (lo..=hi).contains(&kept_rest),
            "{}: kept {kept_rest} of {fast_ok} ok fast traces, outside {lo:.1}..{hi:.1} ({SAMPLE_PERCENT} % ± 4 sigma)",
            run.service
        );
    }
    // Each agent scraped its node's engine in vLLM's format and normalised the names, as the
    // single collector does: the contract's request counter arrives per engine.
    eventually("vLLM-format scrapes through the tiers", WAIT, || async {
        let found = prom
            .query("sum by (instance) (llm_requests_total{job=\"vllm\"})")
            .await?;
        let mut instances: Vec<&str> = found.iter().filter_map(|s| s.label("instance")).collect();
        instances.sort();
        let mut want: Vec<&str> = sim_addrs.iter().map(String::as_str).collect();
        want.sort();
        Ok((instances == want).then_some(()))
    })
    .await;
    assert_eq!(
        gateways_seen,
        GATEWAY_IDS.iter().map(|s| s.to_string()).collect(),
        "phase 1: both gateways kept traces (the agents spread the load)"
    );

    // ---- phase 2: kill gateway-b mid-run ------------------------------------------------------
    let accepted = |g: &Collector| {
        let (http, url) = (http.clone(), g.metrics_url());
        async move {
            self_metric(
                &http,
                &url,
                "otelcol_receiver_accepted_spans",
                &[("receiver", "otlp")],
            )
            .await
        }
    };
    let before = accepted(&gateways[1])
        .await
        .expect("gateway-b metrics")
        .unwrap_or(0.0);
    // Long enough that most of it lies outside the loss window, so "nothing outside it is
    // lost" is a real check.
    let loads = start_phase(&bin, &sim_addrs, &agents, dir.path(), "p2", 400);
    eventually("phase 2 spans reaching gateway-b", WAIT, || async {
        let now = accepted(&gateways[1]).await?.unwrap_or(0.0);
        Ok((now >= before + 200.0).then_some(()))
    })
    .await;
    gateways[1].process.kill();
    let killed_at = Instant::now();
    let killed_ms = unix_ms();
    // What Kubernetes' endpoint controller does when the pod fails its readiness probe.
    write_hosts(&hosts, &GATEWAY_HOSTS[..1]);
    eventually("both agents resolve one gateway", WAIT, || async {
        let mut all_one = true;
        for a in &agents {
            let n = self_metric(
                &http,
                &a.metrics_url(),
                "otelcol_loadbalancer_num_backends",
                &[],
            )
            .await?;
            all_one &= n == Some(1.0);
        }
        Ok(all_one.then_some(()))
    })
    .await;
    let rebalanced_ms = unix_ms();
    println!(
        "agents re-balanced {:.1} s after the kill",
        killed_at.elapsed().as_secs_f64()
    );
    let phase2 = finish_phase(loads).await;

    // ---- phase 3: after the re-balance --------------------------------------------------------
    let phase3 = run_phase(&bin, &sim_addrs, &agents, dir.path(), "p3", 150).await;
    for run in &phase3 {
        client_spans_all_counted(&prom, run).await;
        let kept = settled_traces(&http, &jaeger_url, run, |kept| {
            (kept.iter().filter(|t| t.error).count() as u64 >= run.failed).then_some(())
        })
        .await;
        assert_eq!(
            error_trace_ids(&kept),
            run.failed_trace_ids(),
            "{}: every failed request's trace kept as an error trace",
            run.service
        );
        assert_whole(&kept, run);
        assert!(
            kept.iter()
                .all(|t| t.collector_ids.iter().eq([GATEWAY_IDS[0]].iter())),
            "{}: after the re-balance every trace goes to {}",
            run.service,
            GATEWAY_IDS[0]
        );
    }
    // Phase 2, now long decided. Inside the loss window a trace may be lost (it awaited the dead
    // gateway's decision, or its spans were on their way there) or cut (one agent re-resolved
    // before the other). Outside it, nothing: every failed request's trace is kept, whole.
    let at_risk = |r: &LoggedRequest| {
        r.end_ms >= killed_ms - AT_RISK_BEFORE_MS && r.start_ms <= rebalanced_ms + AT_RISK_AFTER_MS
    };
    for run in &phase2 {
        let safe_failed: BTreeSet<&str> = run
            .requests
            .iter()
            .filter(|r| r.failed && !at_risk(r))
            .map(|r| r.trace_id.as_str())
            .collect();
        assert!(
            safe_failed.len() >= 5,
            "{}: only {} failed requests outside the loss window: the phase must outlast it",
            run.service,
            safe_failed.len()
        );
        let kept = settled_traces(&http, &jaeger_url, run, |kept| {
            let errors = error_trace_ids(kept);
            safe_failed.is_subset(&errors).then_some(())
        })
        .await;
        let requests = run.by_trace_id();
        let kept_errors = error_trace_ids(&kept);
        let mut lost = 0;
        for r in run.requests.iter().filter(|r| r.failed) {
            if !kept_errors.contains(r.trace_id.as_str()) {
                lost += 1;
                assert!(
                    at_risk(r),
                    "{}: failed request {} (started {:.1} s, ended {:.1} s from the kill) lost outside the window",
                    run.service,
                    r.trace_id,
                    (r.start_ms - killed_ms) / 1e3,
                    (r.end_ms - killed_ms) / 1e3
                );
            }
        }
        let mut cut = 0;
        for t in &kept {
            let r = requests.get(t.trace_id.as_str()).unwrap_or_else(|| {
                panic!("{}: kept trace {} was never sent", run.service, t.trace_id)
            });
            let whole = t.collector_ids.len() == 1 && t.services.len() == 2;
            if !whole {
                cut += 1;
                assert!(
                    at_risk(r),
                    "{}: trace {} cut ({:?}, {:?}) outside the window",
                    run.service,
                    t.trace_id,
                    t.collector_ids,
                    t.services
                );
            }
        }
        let in_window = run.requests.iter().filter(|r| at_risk(r)).count();
        println!(
            "{}: sent {} failed {}; {in_window} requests in the loss window: {lost} error traces lost, {cut} of {} kept traces cut; none outside it",
            run.service,
            run.sent,
            run.failed,
            kept.len()
        );
    }
}

/// How long the restarted gateway of the static-ring test stays down: well inside the agents'
/// 60 s of retries per batch (otel-collector/agent.yaml), long enough that many requests start
/// and end while it is away.
const STATIC_DOWNTIME: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_ring_delivers_a_restarted_gateways_share() {
    require_stack_binaries(&["OTELCOL", "PROMETHEUS", "JAEGER"]);
    let bin = infermon_bin();
    let stack = Stack::start(&["prometheus", "jaeger"], &[]);
    let jaeger_url = stack.jaeger_url().to_string();
    let http = reqwest::Client::new();
    let dir = ScratchDir::new("infermon-static-ring");
    let scenario = dir.path().join("scenario.toml");
    std::fs::write(&scenario, SCENARIO).expect("write scenario");

    // Two gateways keeping every trace (so every lost trace shows), one agent with the static
    // resolver in front of one node's engine and its load generator.
    let gateway_ports = CollectorPorts::from_base(ports_free_on(&GATEWAY_HOSTS));
    let gateway_env = gateway_env(&stack, 100.0);
    let spawn = |i: usize| {
        spawn_gateway(
            GATEWAY_IDS[i],
            GATEWAY_HOSTS[i],
            gateway_ports,
            &gateway_env,
        )
    };
    let mut gateways: Vec<Collector> = (0..2).map(spawn).collect();
    let ring: Vec<String> = GATEWAY_HOSTS
        .iter()
        .map(|h| format!("{h}:{}", gateway_ports.grpc))
        .collect();
    let sim_addr = format!("127.0.0.1:{}", free_port());
    let mut agent = spawn_static_agent(
        "agent-static",
        CollectorPorts::from_base(free_port_range(4)),
        &ring,
        &[("INFERMON_VLLM_TARGET", sim_addr.clone())],
    );
    for c in gateways.iter_mut().chain(std::iter::once(&mut agent)) {
        c.wait_ready().await;
    }
    let node = &NODES[0];
    let otlp = agent.otlp_endpoint();
    let scenario_arg = scenario.display().to_string();
    let _sim = Process::sim(
        node.name,
        &bin,
        &sim_addr,
        TIME_SCALE,
        &["--model", node.model, "--scenario", &scenario_arg],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.as_str()),
            ("OTEL_SERVICE_NAME", node.name),
            ("OTEL_BSP_SCHEDULE_DELAY", "500"),
        ],
    );
    infermon_e2e::http_api::wait_healthy(&format!("http://{sim_addr}/health")).await;

    // 450 requests at 15/s: 30 s, the kill and the downtime in the middle.
    let load = start_load(&bin, &sim_addr, 0, &otlp, dir.path(), "load-static", 450);
    let gateway_b_metrics = gateways[1].metrics_url();
    eventually("spans reaching gateway-b", WAIT, || async {
        let accepted = self_metric(
            &http,
            &gateway_b_metrics,
            "otelcol_receiver_accepted_spans",
            &[("receiver", "otlp")],
        )
        .await?;
        Ok((accepted >= Some(200.0)).then_some(()))
    })
    .await;
    gateways[1].process.kill();
    let killed_ms = unix_ms();
    tokio::time::sleep(STATIC_DOWNTIME).await;
    gateways[1] = spawn(1);
    gateways[1].wait_ready().await;
    let restarted_ms = unix_ms();
    println!("gateway-b down {:.1} s", (restarted_ms - killed_ms) / 1e3);
    let run = finish_phase(vec![load]).await.remove(0);

    // Lost may only be what the dead gateway itself held: traces awaiting its decision (their
    // request ended at most AT_RISK_BEFORE_MS before the kill) whose spans it had accepted
    // (the request started before the kill, or just after it: spans already on their way,
    // 1.5 s). Everything else is kept whole, including what was routed to gateway-b while it
    // was down: the agent queued it and delivered it once gateway-b was back.
    let at_risk = |r: &LoggedRequest| {
        r.end_ms >= killed_ms - AT_RISK_BEFORE_MS && r.start_ms <= killed_ms + 1_500.0
    };
    let safe: BTreeSet<&str> = run
        .requests
        .iter()
        .filter(|r| !at_risk(r))
        .map(|r| r.trace_id.as_str())
        .collect();
    let kept = eventually("every trace outside the loss window kept", WAIT, || async {
        let kept = kept_traces(&http, &jaeger_url, &run.service, node.name).await?;
        let ids: BTreeSet<&str> = kept.iter().map(|t| t.trace_id.as_str()).collect();
        let missing = safe.difference(&ids).count();
        match missing {
            0 => Ok(Some(kept)),
            // Reported if it never settles: how many are missing.
            _ => Err(format!("{missing} of {} traces missing", safe.len())),
        }
    })
    .await;
    let requests = run.by_trace_id();
    let mut during_downtime_to_b = 0;
    for t in &kept {
        let r = requests
            .get(t.trace_id.as_str())
            .unwrap_or_else(|| panic!("kept trace {} was never sent", t.trace_id));
        assert!(
            t.collector_ids.len() == 1 && t.services.len() == 2,
            "trace {} not whole: {:?}, {:?}",
            t.trace_id,
            t.collector_ids,
            t.services
        );
        let started_while_down = r.start_ms > killed_ms + 1_500.0 && r.end_ms < restarted_ms;
        if started_while_down && t.collector_ids.contains(GATEWAY_IDS[1]) {
            during_downtime_to_b += 1;
        }
    }
    let lost = run.requests.len() - kept.len();
    let in_window = run.requests.iter().filter(|r| at_risk(r)).count();
    println!(
        "{}: sent {}, kept {} ({lost} lost, all among the {in_window} in the loss window); {during_downtime_to_b} traces of requests made entirely while gateway-b was down reached it after its restart",
        run.service,
        run.sent,
        kept.len()
    );
    // Not vacuous: at 15 requests/s, about half of the ~120 requests made entirely while
    // gateway-b was down hash to it.
    assert!(
        during_downtime_to_b >= 10,
        "only {during_downtime_to_b} traces of requests made while gateway-b was down reached it"
    );
}

/// The gateways' environment: the stores of `stack`, the decision waits, the sampling
/// percentage of the traces no policy keeps.
fn gateway_env(stack: &Stack, sample_percent: f64) -> Vec<(&'static str, String)> {
    vec![
        (
            "INFERMON_PROMETHEUS_ADDR",
            format!("127.0.0.1:{}", stack.var("INFERMON_PROMETHEUS_PORT")),
        ),
        (
            "INFERMON_JAEGER_OTLP_ADDR",
            format!("127.0.0.1:{}", stack.var("INFERMON_JAEGER_OTLP_GRPC_PORT")),
        ),
        ("INFERMON_TAIL_DECISION_WAIT", DECISION_WAIT.to_string()),
        (
            "INFERMON_TAIL_DECISION_WAIT_AFTER_ROOT",
            DECISION_WAIT_AFTER_ROOT.to_string(),
        ),
        ("INFERMON_TAIL_SAMPLE_PERCENT", sample_percent.to_string()),
    ]
}

fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
        * 1e3
}

fn error_trace_ids(kept: &[KeptTrace]) -> BTreeSet<&str> {
    kept.iter()
        .filter(|t| t.error)
        .map(|t| t.trace_id.as_str())
        .collect()
}

fn is_slow(t: &KeptTrace, node: &Node) -> bool {
    t.server_duration_us
        .is_some_and(|d| d > node.slow_ms * 1000)
}

/// Every kept trace was kept by one gateway and holds both the load generator's span (sent
/// through one agent) and the engine's (through the other).
fn assert_whole(kept: &[KeptTrace], run: &LoadRun) {
    for t in kept {
        assert_eq!(
            t.collector_ids.len(),
            1,
            "{}: trace {} split across gateways {:?}",
            run.service,
            t.trace_id,
            t.collector_ids
        );
        assert!(
            t.services.contains(&run.service) && t.services.contains(NODES[run.node].name),
            "{}: trace {} lacks a side: {:?}",
            run.service,
            t.trace_id,
            t.services
        );
    }
}

/// Polls Jaeger for `run`'s kept traces until `done` says they are all there.
async fn settled_traces(
    http: &reqwest::Client,
    jaeger_url: &str,
    run: &LoadRun,
    done: impl Fn(&[KeptTrace]) -> Option<()>,
) -> Vec<KeptTrace> {
    let what = format!("{}: kept traces in Jaeger", run.service);
    eventually(&what, WAIT, || async {
        let kept = kept_traces(http, jaeger_url, &run.service, NODES[run.node].name).await?;
        Ok(done(&kept).map(|()| kept))
    })
    .await
}

/// The span metrics count every one of `run`'s client spans, kept or not.
async fn client_spans_all_counted(prom: &Prometheus, run: &LoadRun) {
    eventually_sum(
        prom,
        &format!(
            "sum(traces_span_metrics_calls_total{{service_name=\"{}\", span_kind=\"SPAN_KIND_CLIENT\"}})",
            run.service
        ),
        run.sent as f64,
    )
    .await;
}

/// Waits for `promql` to reach `want` (a count that only grows); fails if it overshoots.
async fn eventually_sum(prom: &Prometheus, promql: &str, want: f64) -> f64 {
    eventually(promql, WAIT, || async {
        let v = prom.query_sum(promql).await?;
        assert!(v <= want, "{promql} = {v}, more than {want}");
        Ok((v == want).then_some(v))
    })
    .await
}

type PendingLoad = (
    usize,
    String,
    std::path::PathBuf,
    tokio::task::JoinHandle<std::process::Output>,
);

/// Starts one load generator per node: against that node's engine, exporting its client spans
/// to the other node's agent. Service `load-<phase>-node-<n>`.
fn start_phase(
    bin: &Path,
    sim_addrs: &[String],
    agents: &[Collector],
    logs: &Path,
    phase: &str,
    requests: u32,
) -> Vec<PendingLoad> {
    (0..2)
        .map(|i| {
            let service = format!("load-{phase}-node-{}", i + 1);
            let otlp = agents[1 - i].otlp_endpoint();
            start_load(bin, &sim_addrs[i], i, &otlp, logs, &service, requests)
        })
        .collect()
}

/// Starts `infermon load` against node `node`'s engine at `sim_addr`, exporting its client
/// spans to `otlp` as `service`, with its `--requests-log` in `logs`.
fn start_load(
    bin: &Path,
    sim_addr: &str,
    node: usize,
    otlp: &str,
    logs: &Path,
    service: &str,
    requests: u32,
) -> PendingLoad {
    let log = logs.join(format!("{service}.jsonl"));
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args([
        "load",
        "--url",
        &format!("http://{sim_addr}"),
        "--model",
        NODES[node].model,
        "--requests",
        &requests.to_string(),
        "--rate",
        RATE,
        "--output-tokens",
        NODES[node].output_tokens,
        "--ignore-eos",
        "--seed",
        &(7 + node).to_string(),
        "--json",
        "--quiet",
        "--otlp-endpoint",
        otlp,
        "--service-name",
        service,
        "--requests-log",
        &log.display().to_string(),
    ])
    .env("OTEL_BSP_SCHEDULE_DELAY", "500")
    .kill_on_drop(true);
    let handle = tokio::spawn(async move { cmd.output().await.expect("run infermon load") });
    (node, service.to_string(), log, handle)
}

async fn finish_phase(loads: Vec<PendingLoad>) -> Vec<LoadRun> {
    let mut runs = Vec::new();
    for (node, service, log, handle) in loads {
        let out = handle.await.expect("load task");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let summary = json_summary(&stdout).unwrap_or_else(|| {
            panic!(
                "{service}: no JSON summary ({}):\n{stdout}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let count = |k: &str| summary["requests"][k].as_u64().expect("request counts");
        let run = LoadRun {
            node,
            service,
            sent: count("sent"),
            failed: count("failed"),
            requests: read_requests_log(&log),
        };
        assert_eq!(
            run.requests.len() as u64,
            run.sent,
            "{}: one log line per request",
            run.service
        );
        assert!(
            run.failed > 0,
            "{}: the scenario's errors must show",
            run.service
        );
        runs.push(run);
    }
    runs
}

async fn run_phase(
    bin: &Path,
    sim_addrs: &[String],
    agents: &[Collector],
    logs: &Path,
    phase: &str,
    requests: u32,
) -> Vec<LoadRun> {
    finish_phase(start_phase(bin, sim_addrs, agents, logs, phase, requests)).await
}

/// `infermon load --requests-log`'s lines.
fn read_requests_log(path: &Path) -> Vec<LoggedRequest> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {line}", path.display()));
            let start_ms = v["start_unix_ms"].as_f64().expect("start_unix_ms");
            LoggedRequest {
                trace_id: v["trace_id"]
                    .as_str()
                    .expect("a sampled client span")
                    .to_owned(),
                start_ms,
                end_ms: start_ms + v["e2e_ms"].as_f64().expect("e2e_ms"),
                failed: v["outcome"] == "failed",
            }
        })
        .collect()
}
