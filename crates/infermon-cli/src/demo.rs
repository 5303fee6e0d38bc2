//! `infermon demo`: the simulator and the load generator in one process, with a live terminal
//! view — the one command that shows infermon working with nothing else installed, and feeds a
//! collector when one is listening.

use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};
use std::sync::Arc;
use std::time::Duration;

use infermon::contract::value;
use infermon::telemetry::TelemetryGuard;
use infermon_load::{human_secs, key_counts, Arrival, LoadGenerator, Progress, Summary, Window};
use infermon_sim::SimHandle;

use crate::args::{parse_duration, TelemetryArgs, WorkloadArgs};
use crate::sim::{bind, EngineArgs};

/// Without --rate or --concurrency, the demo's Poisson arrival rate.
const DEFAULT_RATE: f64 = 10.0;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    infermon demo\n  \
    infermon demo --rate 40 --output-tokens uniform:64:512 --duration 5m\n  \
    infermon demo --kv-blocks 1000 --max-model-len 4096 --rate 30   # KV pressure, preemptions\n  \
    OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4317 infermon demo")]
pub struct DemoArgs {
    /// Stop after this long (e.g. 30s, 5m) [default: until Ctrl-C].
    #[arg(long, value_name = "DURATION", env = "INFERMON_DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Also serve the simulator's HTTP API here (port 0 picks a free port).
    #[arg(
        long,
        value_name = "ADDR",
        env = "INFERMON_DEMO_LISTEN",
        default_value = "127.0.0.1:0"
    )]
    pub listen: String,

    /// How often the live view refreshes.
    #[arg(long, value_name = "DURATION", env = "INFERMON_REFRESH", default_value = "2s", value_parser = parse_duration)]
    pub refresh: Duration,

    /// Print the final summary as JSON on stdout (the live view then goes to stderr).
    #[arg(long, env = "INFERMON_JSON")]
    pub json: bool,

    #[command(flatten)]
    pub engine: EngineArgs,

    #[command(flatten)]
    pub workload: WorkloadArgs,

    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    if args.refresh.is_zero() {
        anyhow::bail!("--refresh must be longer than zero, e.g. --refresh 2s");
    }
    args.engine.sim_config()?.resolve()?;
    let listener = bind(&args.listen).await?;
    let address = listener.local_addr()?;
    let telemetry = Arc::new(args.telemetry.init(value::SERVICE_DEMO, true)?);
    let sim = args.engine.start(&telemetry)?;

    let (stop_api, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let api = tokio::spawn(infermon_sim::serve(sim.clone(), listener, async {
        let _ = api_stopped.await;
    }));

    let mut config = args.workload.load_config(
        vec![format!("http://{address}")],
        sim.model().to_owned(),
        Arrival::Poisson { rate: DEFAULT_RATE },
    );
    config.duration = args.duration;
    let generator = LoadGenerator::new(config)?;
    let header = header_line(&sim, generator.config().arrival, address);
    let view = LiveView {
        header,
        progress: generator.progress(),
        sim: sim.clone(),
        telemetry: telemetry.clone(),
        to_stdout: !args.json,
    };
    let refresher = tokio::spawn(view.refresh_every(args.refresh));

    // --duration ends the demo like Ctrl-C: in-flight requests are cancelled (the engine sees
    // client disconnects) rather than awaited, so it stops on time.
    let duration = args.duration;
    let summary = generator
        .run(async move {
            tokio::select! {
                () = crate::signal::shutdown_signal() => {}
                () = sleep_or_forever(duration) => {}
            }
        })
        .await?;
    refresher.abort();
    let _ = refresher.await;

    print_final(&summary, &sim, args.json)?;
    let _ = stop_api.send(());
    let _ = api.await;
    sim.shutdown().await;
    // The refresher has ended, so this is the last reference; dropping it any other way would
    // shut telemetry down all the same (the guard's Drop).
    if let Ok(telemetry) = Arc::try_unwrap(telemetry) {
        if let Err(e) = telemetry.shutdown() {
            tracing::warn!("{e}");
        }
    }
    Ok(())
}

async fn sleep_or_forever(duration: Option<Duration>) {
    match duration {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

fn header_line(sim: &SimHandle, arrival: Arrival, address: std::net::SocketAddr) -> String {
    let load = match arrival {
        Arrival::Poisson { rate } => format!("Poisson {rate} req/s"),
        Arrival::Closed { concurrency } => format!("{concurrency} closed-loop clients"),
    };
    format!(
        "infermon demo: `{}` on simulated {} ({load}), API at http://{address}/v1",
        sim.model(),
        sim.profile().name,
    )
}

/// The live terminal view: one frame every refresh interval, redrawn in place on a terminal
/// and appended otherwise (pipes, logs, tests).
struct LiveView {
    header: String,
    progress: Progress,
    sim: SimHandle,
    telemetry: Arc<TelemetryGuard>,
    to_stdout: bool,
}

impl LiveView {
    async fn refresh_every(self, every: Duration) {
        let redraw = self.to_stdout && std::io::stdout().is_terminal();
        let mut ticker = tokio::time::interval(every);
        ticker.tick().await;
        let mut last_lines = 0;
        loop {
            ticker.tick().await;
            let frame = self.frame(&self.progress.take_window(), &self.telemetry.stats());
            let mut text = String::new();
            if redraw && last_lines > 0 {
                // Back to the previous frame's first line and clear to the end of the screen.
                let _ = write!(text, "\x1b[{last_lines}F\x1b[J");
            }
            text.push_str(&frame);
            last_lines = frame.lines().count();
            self.emit(&text);
        }
    }

    fn emit(&self, text: &str) {
        if self.to_stdout {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        } else {
            eprintln!("{text}");
        }
    }

    fn frame(&self, window: &Window, telemetry: &infermon::telemetry::TelemetryStats) -> String {
        let secs = window.elapsed.as_secs_f64().max(f64::EPSILON);
        let t = &window.tally;
        let q = |h: &infermon_load::LatencyHistogram, q| {
            h.quantile(q)
                .map_or_else(|| "-".to_owned(), |d| human_secs(d.as_secs_f64()))
        };
        let engine = self.sim.stats();
        let errors = if t.errors.is_empty() {
            "0 errors".to_owned()
        } else {
            format!("{} errors ({})", t.failed, key_counts(&t.errors))
        };
        let otlp = if telemetry.span_export_failures + telemetry.metric_export_failures > 0 {
            format!(
                "OTLP export failing (collector unreachable?): {} span / {} metric exports failed, {} spans dropped",
                telemetry.span_export_failures,
                telemetry.metric_export_failures,
                telemetry.spans_dropped
            )
        } else {
            format!(
                "OTLP export ok, {} spans queued, {} dropped",
                telemetry.spans_queued, telemetry.spans_dropped
            )
        };
        format!(
            "{header} [{elapsed:.0}s]\n\
             \x20 requests   {rps:.1} req/s   {ok} ok   {errors}\n\
             \x20 latency    e2e p50 {e50}  p99 {e99}   TTFT p50 {t50}  p99 {t99}\n\
             \x20 tokens     {tps:.0} tok/s generated\n\
             \x20 engine     {running} running  {waiting} waiting  KV cache {kv:.1}%  {preempt} preemptions  {rejected} rejected\n\
             \x20 telemetry  {otlp}",
            header = self.header,
            elapsed = self.progress.elapsed().as_secs_f64(),
            rps = t.succeeded as f64 / secs,
            ok = t.succeeded,
            e50 = q(&t.e2e, 0.5),
            e99 = q(&t.e2e, 0.99),
            t50 = q(&t.ttft, 0.5),
            t99 = q(&t.ttft, 0.99),
            tps = t.output_tokens as f64 / secs,
            running = engine.running,
            waiting = engine.waiting,
            kv = engine.kv_cache_usage() * 100.0,
            preempt = engine.preemptions,
            rejected = engine.rejected,
        )
    }
}

fn print_final(summary: &Summary, sim: &SimHandle, json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, summary)?;
        writeln!(out)?;
    } else {
        let engine = sim.stats();
        writeln!(out, "\nsummary (client side)\n{summary}")?;
        writeln!(
            out,
            "engine      {} finished, {} aborted, {} failed, {} rejected, {} preemptions, {} steps",
            engine.finished,
            engine.aborted,
            engine.failed,
            engine.rejected,
            engine.preemptions,
            engine.steps
        )?;
    }
    out.flush()?;
    Ok(())
}
