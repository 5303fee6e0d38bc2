//! The collector tiers on loopback (tests/tests/collector_tiers.rs): agent and gateway
//! collectors started from the repository's `otel-collector/agent.yaml` and `gateway.yaml`,
//! the traces Jaeger kept, and the collectors' own metrics.
//!
//! The agents find the gateways with the load_balancing exporter's `dns` resolver, the one a
//! Kubernetes deployment uses (a headless Service), or its `static` list
//! ([`spawn_static_agent`], for VMs). Here the "DNS" is a hosts file: each agent runs in its own
//! mount namespace (`unshare -m`, root) where that file is bind-mounted over /etc/hosts, and
//! Go's resolver re-reads /etc/hosts when it changes. Rewriting the file is what
//! Kubernetes' endpoint controller does when a gateway pod stops being ready. The gateways
//! listen on 127.0.0.2, 127.0.0.3, ... (all of 127/8 is loopback on Linux): the dns resolver
//! gives every resolved address the same port.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::alerting::stack_binary;
use crate::http_api::send_for_json;
use crate::stack::{repo_root, Process};

/// The name the agents resolve to find the gateways (`.test` is reserved: never a real name).
pub const GATEWAY_DNS_NAME: &str = "gateways.infermon.test";

/// The four ports a collector listens on (OTLP gRPC and HTTP, health, own metrics).
#[derive(Debug, Clone, Copy)]
pub struct CollectorPorts {
    pub grpc: u16,
    pub http: u16,
    pub health: u16,
    pub metrics: u16,
}

impl CollectorPorts {
    /// Four consecutive ports from `base`.
    pub fn from_base(base: u16) -> Self {
        CollectorPorts {
            grpc: base,
            http: base + 1,
            health: base + 2,
            metrics: base + 3,
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("INFERMON_OTLP_GRPC_PORT", self.grpc.to_string()),
            ("INFERMON_OTLP_HTTP_PORT", self.http.to_string()),
            ("INFERMON_OTELCOL_HEALTH_PORT", self.health.to_string()),
            ("INFERMON_OTELCOL_METRICS_PORT", self.metrics.to_string()),
        ]
    }
}

/// Four consecutive ports free on every address in `hosts` (below the ephemeral range, like
/// `stack::free_port_range`).
pub fn ports_free_on(hosts: &[&str]) -> u16 {
    let mut base = 21_000 + (std::process::id() % 1_000) as u16 * 10;
    loop {
        let free =
            (base..base + 4).all(|p| hosts.iter().all(|h| TcpListener::bind((*h, p)).is_ok()));
        if free {
            return base;
        }
        base = if base > 31_000 { 21_000 } else { base + 4 };
    }
}

/// One running collector of a tier.
pub struct Collector {
    pub process: Process,
    pub host: String,
    pub ports: CollectorPorts,
}

impl Collector {
    pub fn health_url(&self) -> String {
        format!("http://{}:{}/", self.host, self.ports.health)
    }

    pub fn metrics_url(&self) -> String {
        format!("http://{}:{}/metrics", self.host, self.ports.metrics)
    }

    /// For `OTEL_EXPORTER_OTLP_ENDPOINT` / `--otlp-endpoint` of a process on this node.
    pub fn otlp_endpoint(&self) -> String {
        format!("http://{}:{}", self.host, self.ports.grpc)
    }
}

impl Collector {
    /// Waits until the health endpoint answers; fails at once with the collector's log if it
    /// exited (a config error, or `unshare` refused), or after 60 s.
    pub async fn wait_ready(&mut self) {
        let http = reqwest::Client::new();
        let url = self.health_url();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            assert!(
                self.process.is_running(),
                "{} exited:\n{}",
                self.process.name,
                self.process.output()
            );
            if let Ok(r) = http.get(&url).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} not healthy at {url} after 60 s:\n{}",
                self.process.name,
                self.process.output()
            );
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
    }
}

/// The collector distribution built from otel-collector/builder.yaml.
pub fn otelcol_bin() -> PathBuf {
    stack_binary("OTELCOL").expect("otelcol not built: run scripts/build-stack.sh")
}

fn config(name: &str) -> String {
    repo_root()
        .join("otel-collector")
        .join(name)
        .display()
        .to_string()
}

/// A gateway collector (otel-collector/gateway.yaml) with id `id` listening on `host`;
/// `env` adds the stores' addresses and the sampling settings.
pub fn spawn_gateway(
    id: &str,
    host: &str,
    ports: CollectorPorts,
    env: &[(&str, String)],
) -> Collector {
    let mut all = ports.env();
    all.push(("INFERMON_COLLECTOR_ID", id.to_string()));
    all.push(("INFERMON_BIND_HOST", host.to_string()));
    all.extend(env.iter().map(|(k, v)| (*k, v.clone())));
    spawn_collector(id, "gateway.yaml", host, ports, &all)
}

/// `otelcol --config otel-collector/<config_file>` named `name`, with `env`, listening on
/// `host` at `ports`.
fn spawn_collector(
    name: &str,
    config_file: &str,
    host: &str,
    ports: CollectorPorts,
    env: &[(&str, String)],
) -> Collector {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let process = Process::spawn(
        name,
        &otelcol_bin(),
        &["--config", &config(config_file)],
        &env,
    );
    Collector {
        process,
        host: host.to_string(),
        ports,
    }
}

/// An agent collector (otel-collector/agent.yaml, dns resolver) on 127.0.0.1 whose /etc/hosts
/// is `hosts_file` (see the module comment). The process is the collector itself: `unshare`
/// and `sh` exec into it, so a signal to the pid reaches the collector.
pub fn spawn_agent(
    name: &str,
    ports: CollectorPorts,
    gateway_port: u16,
    hosts_file: &Path,
    env: &[(&str, String)],
) -> Collector {
    let all = agent_env(
        ports,
        [
            ("INFERMON_GATEWAY_RESOLVER", "dns".to_string()),
            ("INFERMON_GATEWAY_DNS_NAME", GATEWAY_DNS_NAME.to_string()),
            ("INFERMON_GATEWAY_DNS_PORT", gateway_port.to_string()),
        ],
        env,
    );
    let env: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let hosts = hosts_file.display().to_string();
    let otelcol = otelcol_bin().display().to_string();
    let agent_config = config("agent.yaml");
    let process = Process::spawn(
        name,
        Path::new("unshare"),
        &[
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            r#"mount --bind "$1" /etc/hosts && exec "$2" --config "$3""#,
            "sh",
            &hosts,
            &otelcol,
            &agent_config,
        ],
        &env,
    );
    Collector {
        process,
        host: "127.0.0.1".to_string(),
        ports,
    }
}

/// An agent collector (otel-collector/agent.yaml) on 127.0.0.1 with the `static` resolver: the
/// gateways at `gateways` (`host:port` each), a ring that never changes.
pub fn spawn_static_agent(
    name: &str,
    ports: CollectorPorts,
    gateways: &[String],
    env: &[(&str, String)],
) -> Collector {
    let all = agent_env(
        ports,
        [
            ("INFERMON_GATEWAY_RESOLVER", "static".to_string()),
            (
                "INFERMON_GATEWAY_ENDPOINTS",
                format!("[{}]", gateways.join(",")),
            ),
        ],
        env,
    );
    spawn_collector(name, "agent.yaml", "127.0.0.1", ports, &all)
}

/// An agent's environment: its ports, how it finds the gateways, then the caller's `env`.
fn agent_env<'a, const N: usize>(
    ports: CollectorPorts,
    resolver: [(&'a str, String); N],
    env: &[(&'a str, String)],
) -> Vec<(&'a str, String)> {
    let mut all: Vec<(&'a str, String)> = ports.env();
    all.extend(resolver);
    all.extend(env.iter().cloned());
    all
}

/// Writes the hosts file the agents resolve the gateways with: one line per address. Written
/// in place (same inode), as the bind mounts need.
pub fn write_hosts(hosts_file: &Path, gateway_hosts: &[&str]) {
    let text: String = gateway_hosts
        .iter()
        .map(|h| format!("{h} {GATEWAY_DNS_NAME}\n"))
        .collect();
    std::fs::write(hosts_file, text)
        .unwrap_or_else(|e| panic!("write {}: {e}", hosts_file.display()));
}

/// The sum of a collector's own metric `name` over the series whose labels include all of
/// `labels`; `None` when no such series is exposed (yet).
pub async fn self_metric(
    http: &reqwest::Client,
    url: &str,
    name: &str,
    labels: &[(&str, &str)],
) -> Result<Option<f64>, String> {
    let text = http
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?
        .text()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let mut sum = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric, label_text) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name {
            continue;
        }
        // Label values here (endpoints, ids) contain no commas or quotes.
        let has_all = labels
            .iter()
            .all(|(k, v)| label_text.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
        if has_all {
            let v: f64 = value
                .parse()
                .map_err(|e| format!("{url}: {name} value {value:?}: {e}"))?;
            *sum.get_or_insert(0.0) += v;
        }
    }
    Ok(sum)
}

/// A trace as the trace store kept it, reduced to what the tier test checks.
#[derive(Debug, Clone)]
pub struct KeptTrace {
    pub trace_id: String,
    /// `infermon.collector.id` of every span's resource: the gateway(s) that kept it.
    pub collector_ids: BTreeSet<String>,
    pub services: BTreeSet<String>,
    /// Any span with error status.
    pub error: bool,
    /// Duration of the SERVER span of `server_service` (the engine's request span), µs.
    pub server_duration_us: Option<u64>,
}

/// Every trace Jaeger holds with a span from `service` (the search returns whole traces),
/// with `server_service`'s SERVER span duration.
pub async fn kept_traces(
    http: &reqwest::Client,
    jaeger_url: &str,
    service: &str,
    server_service: &str,
) -> Result<Vec<KeptTrace>, String> {
    let url = format!(
        "{}/api/traces?service={service}&limit=100000&lookback=1h",
        jaeger_url.trim_end_matches('/')
    );
    let body = send_for_json(http.get(&url), &format!("GET {url}")).await?;
    let traces = body["data"].as_array().cloned().unwrap_or_default();
    Ok(traces
        .iter()
        .map(|t| parse_trace(t, server_service))
        .collect())
}

fn tag<'a>(tags: &'a Value, key: &str) -> Option<&'a Value> {
    tags.as_array()?
        .iter()
        .find(|kv| kv["key"] == key)
        .map(|kv| &kv["value"])
}

fn parse_trace(trace: &Value, server_service: &str) -> KeptTrace {
    let processes = &trace["processes"];
    let mut kept = KeptTrace {
        trace_id: trace["traceID"].as_str().unwrap_or_default().to_string(),
        collector_ids: BTreeSet::new(),
        services: BTreeSet::new(),
        error: false,
        server_duration_us: None,
    };
    for span in trace["spans"].as_array().into_iter().flatten() {
        let process = &processes[span["processID"].as_str().unwrap_or_default()];
        let service = process["serviceName"].as_str().unwrap_or_default();
        kept.services.insert(service.to_string());
        match tag(&process["tags"], "infermon.collector.id").and_then(Value::as_str) {
            Some(id) => kept.collector_ids.insert(id.to_string()),
            // A span no gateway stamped: would show as a split.
            None => kept.collector_ids.insert(String::from("<none>")),
        };
        if tag(&span["tags"], "error") == Some(&Value::Bool(true)) {
            kept.error = true;
        }
        if service == server_service
            && tag(&span["tags"], "span.kind").and_then(Value::as_str) == Some("server")
        {
            kept.server_duration_us = span["duration"].as_u64();
        }
    }
    kept
}

/// A directory under the system temp dir, removed on drop (also when a test panics).
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new(prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        ScratchDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The band `n·p ± sigmas·√(n·p·(1-p))` for the number of successes of `n` independent trials
/// with probability `p`.
pub fn binomial_band(n: u64, p: f64, sigmas: f64) -> (f64, f64) {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    (mean - sigmas * sd, mean + sigmas * sd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binomial_band_is_centred_on_the_mean() {
        let (lo, hi) = binomial_band(400, 0.25, 4.0);
        // mean 100, sd sqrt(75) = 8.66
        assert!((lo - (100.0 - 34.64)).abs() < 0.01, "{lo}");
        assert!((hi - (100.0 + 34.64)).abs() < 0.01, "{hi}");
    }

    #[test]
    fn a_trace_stamped_by_two_gateways_shows_both_ids() {
        let trace = serde_json::json!({
            "traceID": "ab",
            "processes": {
                "p1": {"serviceName": "load", "tags": [{"key": "infermon.collector.id", "value": "gateway-a"}]},
                "p2": {"serviceName": "sim", "tags": [{"key": "infermon.collector.id", "value": "gateway-b"}]}
            },
            "spans": [
                {"processID": "p1", "duration": 5, "tags": [{"key": "span.kind", "value": "client"}]},
                {"processID": "p2", "duration": 4, "tags": [
                    {"key": "span.kind", "value": "server"}, {"key": "error", "value": true}]}
            ]
        });
        let kept = parse_trace(&trace, "sim");
        assert_eq!(kept.collector_ids.len(), 2);
        assert!(kept.error);
        assert_eq!(kept.server_duration_us, Some(4));
        assert_eq!(kept.services.len(), 2);
    }
}
