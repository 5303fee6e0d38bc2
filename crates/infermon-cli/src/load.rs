//! `infermon load`: drive OpenAI-compatible endpoints, export the client spans, print a summary.

use std::io::Write as _;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use infermon::contract::value;
use infermon_load::{
    human_secs, key_counts, served_model, Arrival, LoadGenerator, ModelLookupError, Progress,
    RequestLog, Summary,
};

use crate::args::{load_config_error, parse_duration, TelemetryArgs, WorkloadArgs};
use crate::config_file::{ConfigFileError, Layer, Layered};

/// How often a progress line is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Without --duration or --requests, a run lasts this long.
const DEFAULT_DURATION: Duration = Duration::from_secs(60);
/// Without --rate or --concurrency, this many closed-loop clients.
const DEFAULT_CONCURRENCY: usize = 8;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    infermon load --url http://127.0.0.1:8000 --model llama-3-8b --rate 20 --duration 1m\n  \
    infermon load --url http://a:8000 --url http://b:8000 --concurrency 64 --requests 1000 --json\n  \
    infermon load --prompt-tokens uniform:128:1024 --output-tokens lognormal:256:128")]
pub struct LoadArgs {
    /// Target server (http://host:port, optionally with /v1 or the full endpoint path).
    /// Repeat for several targets, used round robin; the variable takes a comma-separated list.
    #[arg(
        long = "url",
        value_name = "URL",
        env = "INFERMON_URL",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8000"
    )]
    pub urls: Vec<String>,

    /// Model name sent in each request [default: the first model the first --url lists at
    /// GET /v1/models].
    #[arg(long, value_name = "NAME", env = "INFERMON_MODEL")]
    pub model: Option<String>,

    /// Stop sending after this long (e.g. 30s, 5m) [default: 60s unless --requests is given].
    #[arg(long, value_name = "DURATION", env = "INFERMON_DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Stop after this many requests (with --duration too: whichever comes first).
    #[arg(long, value_name = "N", env = "INFERMON_REQUESTS")]
    pub requests: Option<u64>,

    /// API key, sent as `Authorization: Bearer …` (never printed).
    #[arg(
        long,
        value_name = "KEY",
        env = "INFERMON_API_KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,

    /// Print the summary as JSON on stdout.
    #[arg(long, env = "INFERMON_JSON")]
    pub json: bool,

    /// No progress lines on stderr.
    #[arg(long, short, env = "INFERMON_QUIET")]
    pub quiet: bool,

    /// Also write one JSON line per request to this file: trace id, start time, e2e and TTFT,
    /// outcome and error type, HTTP status, tokens. Ask the trace store about exactly the
    /// requests that failed, or that ran while something broke.
    #[arg(long, value_name = "PATH", env = "INFERMON_REQUESTS_LOG")]
    pub requests_log: Option<PathBuf>,

    #[command(flatten)]
    pub workload: WorkloadArgs,

    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

impl Layered for LoadArgs {
    fn layer(&mut self, layer: &mut Layer) -> Result<(), ConfigFileError> {
        layer.list("urls", &mut self.urls, String::from_str)?;
        layer.optional("model", &mut self.model, String::from_str)?;
        layer.optional("duration", &mut self.duration, parse_duration)?;
        layer.optional("requests", &mut self.requests, u64::from_str)?;
        layer.optional("api_key", &mut self.api_key, String::from_str)?;
        layer.switch("json", &mut self.json)?;
        layer.switch("quiet", &mut self.quiet)?;
        layer.optional("requests_log", &mut self.requests_log, PathBuf::from_str)?;
        self.workload.layer(layer)?;
        self.telemetry.layer(layer)
    }
}

pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    let model = match &args.model {
        Some(model) => model.clone(),
        None => served_model(args.urls.first().map_or("", String::as_str))
            .await
            .map_err(|e| match e {
                ModelLookupError::Config(e) => load_config_error(e),
                other => anyhow::anyhow!("{other}; or pass --model"),
            })?,
    };
    let mut config = args.workload.load_config(
        args.urls.clone(),
        model,
        Arrival::Closed {
            concurrency: DEFAULT_CONCURRENCY,
        },
    );
    config.duration = args
        .duration
        .or((args.requests.is_none()).then_some(DEFAULT_DURATION));
    config.requests = args.requests;
    config.api_key = args.api_key.clone();
    let mut generator = LoadGenerator::new(config).map_err(load_config_error)?;
    if let Some(path) = &args.requests_log {
        let file = std::fs::File::create(path).with_context(|| {
            format!(
                "--requests-log: cannot create {}: check that its directory exists and is writable",
                path.display()
            )
        })?;
        generator = generator.with_request_log(RequestLog::new(std::io::BufWriter::new(file)));
    }

    let telemetry = args.telemetry.init(value::SERVICE_LOAD, false)?;
    let progress = generator.progress();
    let printer = (!args.quiet).then(|| tokio::spawn(print_progress(progress)));

    let summary = generator
        .run(crate::signal::shutdown_signal())
        .await
        .map_err(load_config_error)?;
    if let Some(printer) = printer {
        printer.abort();
    }
    print_summary(&summary, args.json)?;
    // Flush the client spans before exiting; a collector that is not there costs at most the
    // shutdown timeout, and is not the run's failure.
    if let Err(e) = telemetry.shutdown() {
        tracing::warn!("{}", args.telemetry.shutdown_message(&e));
    }
    if summary.requests.sent > 0 && summary.requests.succeeded == 0 {
        anyhow::bail!(
            "no request succeeded ({}): check --url and --model, and that the server is up",
            key_counts(&summary.errors)
        );
    }
    Ok(())
}

fn print_summary(summary: &Summary, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(summary);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{summary}")?;
    out.flush().context("cannot write the summary")
}

/// The run's summary as JSON on stdout (`--json`, of `load` and `demo`).
pub(crate) fn print_json(summary: &Summary) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, summary)?;
    writeln!(out)?;
    out.flush().context("cannot write the summary")
}

/// One line on stderr every few seconds, about the requests that ended since the last one.
async fn print_progress(progress: Progress) {
    let mut ticker = tokio::time::interval(PROGRESS_EVERY);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        eprintln!("{}", progress_line(&progress));
    }
}

pub fn progress_line(progress: &Progress) -> String {
    let counts = progress.counts();
    let window = progress.take_window();
    let secs = window.elapsed.as_secs_f64().max(f64::EPSILON);
    let t = &window.tally;
    let p = |h: &infermon_load::LatencyHistogram, q| {
        h.quantile(q)
            .map_or_else(|| "-".to_owned(), |d| human_secs(d.as_secs_f64()))
    };
    format!(
        "[{:>4.0}s] {} done ({:.1} req/s), {} failed, {} in flight | {:.0} tok/s | ttft p50 {} p99 {} | e2e p50 {} p99 {}",
        progress.elapsed().as_secs_f64(),
        counts.succeeded,
        t.succeeded as f64 / secs,
        counts.failed,
        counts.in_flight,
        t.output_tokens as f64 / secs,
        p(&t.ttft, 0.5),
        p(&t.ttft, 0.99),
        p(&t.e2e, 0.5),
        p(&t.e2e, 0.99),
    )
}
