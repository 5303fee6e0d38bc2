//! Runs every panel query of the Grafana dashboards against a running stack and prints the
//! coverage table (dashboard → panel → query → series count).
//!
//!   cargo run -p infermon-e2e --bin dashboard-coverage -- \
//!       --prometheus http://127.0.0.1:9090 --jaeger http://127.0.0.1:16686
//!
//! Exits 1 when a target fails (returns nothing without a reason, or errors), 2 when targets
//! were skipped (no --jaeger), 0 otherwise.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use infermon_e2e::dashboards::{render_report, run_coverage, LiveConfig};

#[derive(Parser)]
#[command(
    about = "Run every Grafana dashboard query against a live stack and report what returns data"
)]
struct Args {
    /// Prometheus base URL.
    #[arg(long, env = "INFERMON_PROMETHEUS_URL")]
    prometheus: String,
    /// Jaeger query base URL (trace search and service graph panels); without it they are skipped.
    #[arg(long, env = "INFERMON_JAEGER_URL")]
    jaeger: Option<String>,
    /// Dashboard directory (default: the repository's grafana/dashboards).
    #[arg(long)]
    dashboards: Option<PathBuf>,
    /// Dashboard time range the queries are evaluated over, in minutes ($__range, trace search).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=10_080))]
    range_minutes: u64,
    /// Hold a variable at one value in the "one value" run, e.g. `--pin job=vllm` (repeatable).
    #[arg(long, value_name = "VAR=VALUE", value_parser = parse_pin)]
    pin: Vec<(String, String)>,
}

fn parse_pin(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((var, value)) if !var.is_empty() && !value.is_empty() => {
            Ok((var.to_string(), value.to_string()))
        }
        _ => Err(format!("`{s}`: expected VAR=VALUE, e.g. job=vllm")),
    }
}

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    for (flag, url) in [
        ("--prometheus", Some(&args.prometheus)),
        ("--jaeger", args.jaeger.as_ref()),
    ] {
        if let Some(url) = url {
            anyhow::ensure!(
                url.starts_with("http://") || url.starts_with("https://"),
                "{flag} {url}: expected an http(s):// URL such as http://127.0.0.1:9090"
            );
        }
    }
    let mut config = LiveConfig::new(&args.prometheus, args.jaeger.as_deref());
    if let Some(dir) = args.dashboards {
        config.dashboards_dir = dir;
    }
    config.time.range = Duration::from_secs(args.range_minutes * 60);
    config.pinned = args.pin.into_iter().collect();

    let runtime = tokio::runtime::Runtime::new().context("start the Tokio runtime")?;
    let report = runtime.block_on(run_coverage(&config))?;
    print!("{}", render_report(&report));
    Ok(if !report.failures().is_empty() {
        ExitCode::from(1)
    } else if !report.skipped().is_empty() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
