//! `infermon demo`: the simulator and the load generator in one process, with a live terminal
//! view — the one command that shows infermon working with nothing else installed, and feeds a
//! collector when one is listening.

use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use infermon::contract::value;
use infermon::telemetry::{TelemetryGuard, TelemetryStats, DEFAULT_EXPORT_INTERVAL};
use infermon_load::{human_secs, key_counts, Arrival, LoadGenerator, Progress, Summary, Window};
use infermon_sim::{EngineStats, SimHandle};

use crate::args::{load_config_error, parse_duration, TelemetryArgs, WorkloadArgs};
use crate::config_file::{ConfigFileError, Layer, Layered};
use crate::load::print_json;
use crate::sim::{bind, EngineArgs};

/// Without --rate or --concurrency, the demo's Poisson arrival rate.
const DEFAULT_RATE: f64 = 10.0;
/// How long the demo waits at exit for the engine to see the client's cancellations.
const SETTLE: Duration = Duration::from_secs(2);
/// How long the look for a collector at start may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// The same look at each refresh while there is none (it must not delay the view).
const REPROBE_TIMEOUT: Duration = Duration::from_millis(200);

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

impl Layered for DemoArgs {
    fn layer(&mut self, layer: &mut Layer) -> Result<(), ConfigFileError> {
        layer.optional("duration", &mut self.duration, parse_duration)?;
        layer.value("listen", &mut self.listen, String::from_str)?;
        layer.value("refresh", &mut self.refresh, parse_duration)?;
        layer.switch("json", &mut self.json)?;
        self.engine.layer(layer)?;
        self.workload.layer(layer)?;
        self.telemetry.layer(layer)
    }
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    if args.refresh.is_zero() {
        anyhow::bail!("--refresh must be longer than zero, e.g. --refresh 2s");
    }
    args.engine.sim_config()?.resolve()?;
    let listener = bind(&args.listen).await?;
    let address = listener.local_addr()?;

    let endpoint = args.telemetry.endpoint();
    let otlp = if args.telemetry.exporting() {
        if collector_reachable(&endpoint, PROBE_TIMEOUT).await {
            Otlp::Reachable
        } else {
            Otlp::Unreachable
        }
    } else {
        Otlp::Off
    };
    let console = Arc::new(Console::for_terminal(!args.json));
    let mut config = args.telemetry.config(value::SERVICE_DEMO, true);
    let log_console = Arc::clone(&console);
    config = config.with_log_writer(move || Box::new(LogLine::new(Arc::clone(&log_console))));
    if otlp == Otlp::Unreachable && std::env::var_os("RUST_LOG").is_none() {
        // The demo says it once below and the live view shows the failure counts: the
        // exporter's own warnings would repeat it.
        config = config.with_log_filter("info,infermon::telemetry::export=error");
    }
    let telemetry = Arc::new(infermon::telemetry::init(config).context("cannot start telemetry")?);
    if otlp == Otlp::Unreachable {
        console.log(no_collector_message(&endpoint).as_bytes());
    }
    let sim = args.engine.start(&telemetry)?;

    let (stop_api, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let api = tokio::spawn(infermon_sim::serve(sim.clone(), listener, async {
        let _ = api_stopped.await;
    }));

    let mut load = args.workload.load_config(
        vec![format!("http://{address}")],
        sim.model().to_owned(),
        Arrival::Poisson { rate: DEFAULT_RATE },
    );
    load.duration = args.duration;
    let generator = LoadGenerator::new(load).map_err(load_config_error)?;
    // Whether a collector was there at some point: if never, the user has been told already
    // and a failed flush at exit is no news.
    let collector_seen = Arc::new(AtomicBool::new(otlp == Otlp::Reachable));
    let view = LiveView {
        header: header_line(&sim, generator.config().arrival, address),
        progress: generator.progress(),
        sim: sim.clone(),
        telemetry: telemetry.clone(),
        otlp,
        reachable_since: Duration::ZERO,
        collector_seen: Arc::clone(&collector_seen),
        endpoint: endpoint.clone(),
        console: Arc::clone(&console),
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
    console.finish();

    let engine = settled_engine_stats(&sim).await;
    print_final(&summary, &engine, args.json)?;
    let _ = stop_api.send(());
    let _ = api.await;
    sim.shutdown().await;
    // The refresher has ended, so this is the last reference; dropping it any other way would
    // shut telemetry down all the same (the guard's Drop).
    if let Ok(telemetry) = Arc::try_unwrap(telemetry) {
        let result = telemetry.shutdown();
        // An export the shutdown gave up on may still log its failure from its own thread
        // as the process ends: the line below already says what it would.
        console.close();
        if let Err(e) = result {
            if collector_seen.load(Ordering::Relaxed) {
                eprintln!("{}", args.telemetry.shutdown_message(&e));
            }
        }
    }
    Ok(())
}

/// Whether the collector's OTLP port accepts a connection (a quick look before starting, so
/// the demo can say at once that nothing will be exported).
async fn collector_reachable(endpoint: &str, timeout: Duration) -> bool {
    let without_scheme = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest);
    let authority = without_scheme.split('/').next().unwrap_or(without_scheme);
    let address = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_owned()
    } else {
        format!("{authority}:4317")
    };
    let connect = tokio::net::TcpStream::connect(address);
    matches!(tokio::time::timeout(timeout, connect).await, Ok(Ok(_)))
}

fn no_collector_message(endpoint: &str) -> String {
    format!(
        "infermon demo: no OpenTelemetry collector at {endpoint}, so traces and metrics are not \
         exported. Start the stack with scripts/start-stack.sh, or pass --no-otlp to silence \
         this."
    )
}

/// Engine totals once the engine has seen the requests the client cancelled at exit: it
/// notices a closed stream at its next step, so it needs a moment (bounded) after the client
/// stops.
async fn settled_engine_stats(sim: &SimHandle) -> EngineStats {
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let stats = sim.stats();
        if stats.running + stats.waiting == 0 || tokio::time::Instant::now() >= deadline {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
        "infermon demo: `{}` on simulated {} ({load})\n\x20 API        http://{address}/v1",
        sim.model(),
        sim.profile().name,
    )
}

/// Where OTLP export stands, as far as the demo can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Otlp {
    /// `--no-otlp` (or `OTEL_SDK_DISABLED=true`).
    Off,
    /// Nothing listened on the collector's port at start.
    Unreachable,
    Reachable,
}

/// The terminal the demo shares between the live view and log lines: the frame stays at the
/// bottom, and a log line is written above it (the frame is erased, the line written, the
/// frame drawn again), so neither leaves a stale or torn copy of the other.
struct Console {
    state: Mutex<ConsoleState>,
}

struct ConsoleState {
    frames: Box<dyn Write + Send>,
    logs: Box<dyn Write + Send>,
    /// Frames are redrawn in place (a terminal); otherwise appended (pipes, logs, tests).
    redraw: bool,
    /// Log lines land on the same screen as the frames.
    shared_screen: bool,
    frame: String,
    /// Lines of the frame now on screen (0: none, or finished).
    drawn: usize,
    /// Telemetry is shut down: stragglers are not written.
    closed: bool,
}

impl Console {
    /// Frames to stdout (or stderr with `--json`, whose stdout is the summary), logs to stderr.
    fn for_terminal(frames_to_stdout: bool) -> Self {
        let stderr_tty = std::io::stderr().is_terminal();
        let (frames, redraw): (Box<dyn Write + Send>, bool) = if frames_to_stdout {
            (Box::new(std::io::stdout()), std::io::stdout().is_terminal())
        } else {
            (Box::new(std::io::stderr()), stderr_tty)
        };
        Self::new(
            frames,
            Box::new(std::io::stderr()),
            redraw,
            redraw && stderr_tty,
        )
    }

    fn new(
        frames: Box<dyn Write + Send>,
        logs: Box<dyn Write + Send>,
        redraw: bool,
        shared_screen: bool,
    ) -> Self {
        Self {
            state: Mutex::new(ConsoleState {
                frames,
                logs,
                redraw,
                shared_screen,
                frame: String::new(),
                drawn: 0,
                closed: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ConsoleState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces the frame on screen with `frame`.
    fn draw(&self, frame: &str) {
        let mut s = self.lock();
        s.erase();
        s.frame = frame.to_owned();
        s.show();
    }

    /// Writes one log line (or several) above the frame.
    fn log(&self, line: &[u8]) {
        let mut s = self.lock();
        if s.closed {
            return;
        }
        let covers_frame = s.shared_screen && s.drawn > 0;
        if covers_frame {
            s.erase();
        }
        let _ = s.logs.write_all(line);
        if !line.ends_with(b"\n") {
            let _ = s.logs.write_all(b"\n");
        }
        let _ = s.logs.flush();
        if covers_frame {
            s.show();
        }
    }

    /// Leaves the last frame on screen for good: what follows is written below it.
    fn finish(&self) {
        self.lock().drawn = 0;
    }

    /// Drops log lines from now on (once telemetry is shut down and the demo is exiting).
    fn close(&self) {
        self.lock().closed = true;
    }
}

impl ConsoleState {
    /// Moves back to the frame's first line and clears to the end of the screen.
    fn erase(&mut self) {
        if self.redraw && self.drawn > 0 {
            let _ = write!(self.frames, "\x1b[{}F\x1b[J", self.drawn);
            // Frames and logs are separate streams (stdout is buffered): the erase must reach
            // the terminal before a log line written next does.
            let _ = self.frames.flush();
            self.drawn = 0;
        }
    }

    fn show(&mut self) {
        if self.redraw {
            // Autowrap off while drawing: a line wider than the terminal is cut at the edge
            // instead of wrapping onto a row `erase` would not count.
            let _ = writeln!(self.frames, "\x1b[?7l{}\x1b[?7h", self.frame);
        } else {
            let _ = writeln!(self.frames, "{}", self.frame);
        }
        let _ = self.frames.flush();
        if self.redraw {
            self.drawn = self.frame.lines().count();
        }
    }
}

/// One log event on its way to the [`Console`]: the log layer writes it here, and it reaches
/// the console whole when the layer is done with it.
struct LogLine {
    console: Arc<Console>,
    buffer: Vec<u8>,
}

impl LogLine {
    fn new(console: Arc<Console>) -> Self {
        Self {
            console,
            buffer: Vec::new(),
        }
    }
}

impl Write for LogLine {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if !self.buffer.is_empty() {
            self.console.log(&self.buffer);
        }
    }
}

/// The live terminal view: one frame every refresh interval.
struct LiveView {
    header: String,
    progress: Progress,
    sim: SimHandle,
    telemetry: Arc<TelemetryGuard>,
    otlp: Otlp,
    /// When the collector was first seen (run time).
    reachable_since: Duration,
    collector_seen: Arc<AtomicBool>,
    endpoint: String,
    console: Arc<Console>,
}

impl LiveView {
    async fn refresh_every(mut self, every: Duration) {
        let mut ticker = tokio::time::interval(every);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let elapsed = self.progress.elapsed();
            if self.otlp == Otlp::Unreachable
                && collector_reachable(&self.endpoint, REPROBE_TIMEOUT).await
            {
                // Started meanwhile: exports are retried, so they will reach it.
                self.otlp = Otlp::Reachable;
                self.reachable_since = elapsed;
                self.collector_seen.store(true, Ordering::Relaxed);
                let note = format!(
                    "infermon demo: collector at {} is up; exporting",
                    self.endpoint
                );
                self.console.log(note.as_bytes());
            }
            let since = elapsed.saturating_sub(self.reachable_since);
            let otlp = otlp_line(self.otlp, &self.endpoint, &self.telemetry.stats(), since);
            let frame = frame(
                &self.header,
                elapsed,
                &self.progress.take_window(),
                &self.sim.stats(),
                &otlp,
            );
            self.console.draw(&frame);
        }
    }
}

/// The telemetry line of the live view. It claims no failed exports only once an export can
/// have been tried (the first periodic export is one interval after the collector was seen):
/// the exporter reports failures, not successes, so that is all it can honestly say.
fn otlp_line(otlp: Otlp, endpoint: &str, t: &TelemetryStats, reachable_for: Duration) -> String {
    let failures = t.span_export_failures + t.metric_export_failures;
    match otlp {
        Otlp::Off => "OTLP export off (--no-otlp)".to_owned(),
        Otlp::Unreachable => format!(
            "no collector at {endpoint}: not exported ({failures} failed exports, {} spans \
             dropped)",
            t.spans_dropped
        ),
        Otlp::Reachable if failures > 0 => format!(
            "OTLP export to {endpoint} failing: {} span / {} metric exports failed, {} spans \
             dropped",
            t.span_export_failures, t.metric_export_failures, t.spans_dropped
        ),
        Otlp::Reachable if reachable_for < DEFAULT_EXPORT_INTERVAL => {
            format!("OTLP export to {endpoint}: first export pending")
        }
        Otlp::Reachable => format!(
            "OTLP export to {endpoint}: no failed exports, {} spans queued, {} dropped",
            t.spans_queued, t.spans_dropped
        ),
    }
}

/// One frame of the live view. Client-side figures are the last refresh interval's; engine
/// figures are its state now and its totals since start.
fn frame(
    header: &str,
    elapsed: Duration,
    window: &Window,
    engine: &EngineStats,
    otlp: &str,
) -> String {
    let secs = window.elapsed.as_secs_f64().max(f64::EPSILON);
    let t = &window.tally;
    let q = |h: &infermon_load::LatencyHistogram, q| {
        h.quantile(q)
            .map_or_else(|| "-".to_owned(), |d| human_secs(d.as_secs_f64()))
    };
    let errors = if t.errors.is_empty() {
        "0 errors".to_owned()
    } else {
        format!("{} errors ({})", t.failed, key_counts(&t.errors))
    };
    format!(
        "[{elapsed:.0}s] {header}\n\
         \x20 last {window:.0}s    {ok} ok   {errors}   {rps:.1} req/s   {tps:.0} tok/s generated\n\
         \x20 latency    e2e p50 {e50}  p99 {e99}   TTFT p50 {t50}  p99 {t99}   (last {window:.0}s)\n\
         \x20 engine     {running} running  {waiting} waiting  KV cache {kv:.1}%   since start: \
         {preempt} preemptions  {rejected} rejected\n\
         \x20 telemetry  {otlp}",
        elapsed = elapsed.as_secs_f64(),
        window = secs,
        ok = t.succeeded,
        rps = t.succeeded as f64 / secs,
        tps = t.output_tokens as f64 / secs,
        e50 = q(&t.e2e, 0.5),
        e99 = q(&t.e2e, 0.99),
        t50 = q(&t.ttft, 0.5),
        t99 = q(&t.ttft, 0.99),
        running = engine.running,
        waiting = engine.waiting,
        kv = engine.kv_cache_usage() * 100.0,
        preempt = engine.preemptions,
        rejected = engine.rejected,
    )
}

/// The engine's totals at exit, with the client's cancellations accounted for. A request the
/// client cancels at exit is one the engine aborts when it sees the closed stream, unless the
/// engine had already sent its last token (then the engine counts it finished, the client
/// cancelled): the engine finished more requests than the client saw succeed by that many.
fn engine_summary(engine: &EngineStats, succeeded: u64, cancelled: u64) -> String {
    let mut text = format!(
        "engine      {} finished, {} aborted, {} failed, {} rejected, {} preemptions, {} steps",
        engine.finished,
        engine.aborted,
        engine.failed,
        engine.rejected,
        engine.preemptions,
        engine.steps
    );
    if cancelled > 0 {
        let already_finished = engine.finished.saturating_sub(succeeded).min(cancelled);
        if already_finished == 0 {
            let _ = write!(
                text,
                "\n            the {cancelled} requests the client cancelled at exit are among \
                 the engine's aborted ones (it aborts a request when its client disconnects)"
            );
        } else {
            let _ = write!(
                text,
                "\n            of the {cancelled} requests the client cancelled at exit, the \
                 engine aborted {} (it saw the disconnect) and had already finished \
                 {already_finished} (their last tokens were in transit)",
                cancelled - already_finished
            );
        }
        let in_engine = engine.running + engine.waiting;
        if in_engine > 0 {
            let _ = write!(
                text,
                "; {in_engine} were still in the engine when it stopped and count as failed"
            );
        }
    }
    text
}

fn print_final(summary: &Summary, engine: &EngineStats, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(summary);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "\nsummary (client side)\n{summary}")?;
    writeln!(
        out,
        "{}",
        engine_summary(
            engine,
            summary.requests.succeeded,
            summary.requests.cancelled
        )
    )?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer into a buffer shared by the "screen" of a test.
    #[derive(Clone, Default)]
    struct Screen(Arc<Mutex<Vec<u8>>>);

    impl Write for Screen {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Screen {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// Like stdout: what is written reaches the screen when flushed.
    struct Buffered {
        screen: Screen,
        pending: Vec<u8>,
    }

    impl Write for Buffered {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.pending.extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.screen.write_all(&std::mem::take(&mut self.pending))
        }
    }

    /// Frames through a buffered stream, logs unbuffered (stderr), both onto one screen.
    fn terminal() -> (Screen, Console) {
        let screen = Screen::default();
        let frames = Buffered {
            screen: screen.clone(),
            pending: Vec::new(),
        };
        let console = Console::new(Box::new(frames), Box::new(screen.clone()), true, true);
        (screen, console)
    }

    #[test]
    fn a_log_line_mid_view_is_written_above_a_redrawn_frame() {
        let (screen, console) = terminal();
        console.draw("frame 1 line a\nframe 1 line b");
        console.log(b"WARN something happened\n");
        console.draw("frame 2 line a\nframe 2 line b");
        // Frames are drawn with autowrap off (\x1b[?7l ... \x1b[?7h); each redraw first goes
        // back up over exactly the frame's lines and clears them.
        assert_eq!(
            screen.text(),
            "\x1b[?7lframe 1 line a\nframe 1 line b\x1b[?7h\n\
             \x1b[2F\x1b[J\
             WARN something happened\n\
             \x1b[?7lframe 1 line a\nframe 1 line b\x1b[?7h\n\
             \x1b[2F\x1b[J\
             \x1b[?7lframe 2 line a\nframe 2 line b\x1b[?7h\n"
        );
    }

    #[test]
    fn log_lines_through_the_log_writer_arrive_whole() {
        let (screen, console) = terminal();
        let console = Arc::new(console);
        console.draw("frame");
        {
            let mut line = LogLine::new(Arc::clone(&console));
            line.write_all(b"WARN part one, ").unwrap();
            line.write_all(b"part two").unwrap();
        }
        // One erase for the one line, and a newline added where the line had none.
        assert_eq!(
            screen.text(),
            "\x1b[?7lframe\x1b[?7h\n\x1b[1F\x1b[JWARN part one, part two\n\x1b[?7lframe\x1b[?7h\n"
        );
    }

    #[test]
    fn after_finish_output_goes_below_the_last_frame() {
        let (screen, console) = terminal();
        console.draw("last frame");
        console.finish();
        console.log(b"shutdown note");
        console.close();
        console.log(b"a straggler from an abandoned export");
        assert_eq!(screen.text(), "\x1b[?7llast frame\x1b[?7h\nshutdown note\n");
    }

    #[test]
    fn without_a_terminal_frames_and_logs_are_appended() {
        let screen = Screen::default();
        let console = Console::new(
            Box::new(screen.clone()),
            Box::new(screen.clone()),
            false,
            false,
        );
        console.draw("frame 1");
        console.log(b"log\n");
        console.draw("frame 2");
        assert_eq!(screen.text(), "frame 1\nlog\nframe 2\n");
    }

    fn stats(span_failures: u64, metric_failures: u64) -> TelemetryStats {
        TelemetryStats {
            span_export_failures: span_failures,
            metric_export_failures: metric_failures,
            spans_queued: 3,
            ..TelemetryStats::default()
        }
    }

    #[test]
    fn otlp_is_never_ok_before_an_export_or_when_off() {
        let e = "http://localhost:4317";
        let early = Duration::from_secs(1);
        let later = DEFAULT_EXPORT_INTERVAL + Duration::from_secs(1);
        let off = otlp_line(Otlp::Off, e, &stats(0, 0), later);
        assert_eq!(off, "OTLP export off (--no-otlp)");
        let pending = otlp_line(Otlp::Reachable, e, &stats(0, 0), early);
        assert!(pending.contains("first export pending"), "{pending}");
        let ok = otlp_line(Otlp::Reachable, e, &stats(0, 0), later);
        assert!(ok.contains(": no failed exports, 3 spans queued"), "{ok}");
        let failing = otlp_line(Otlp::Reachable, e, &stats(2, 1), later);
        assert!(failing.contains("failing: 2 span / 1 metric"), "{failing}");
        for elapsed in [early, later] {
            let none = otlp_line(Otlp::Unreachable, e, &stats(0, 0), elapsed);
            assert!(
                none.contains("no collector at http://localhost:4317"),
                "{none}"
            );
            assert!(!none.contains("ok"), "{none}");
        }
    }

    #[test]
    fn frame_labels_interval_counts_and_engine_totals() {
        let mut window = Window {
            elapsed: Duration::from_secs(2),
            tally: infermon_load::Tally::default(),
        };
        window.tally.succeeded = 28;
        window.tally.output_tokens = 500;
        let engine = EngineStats {
            running: 3,
            preemptions: 7,
            ..EngineStats::default()
        };
        let text = frame("hdr", Duration::from_secs(12), &window, &engine, "otlp");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "[12s] hdr");
        assert!(
            lines[1].starts_with("  last 2s    28 ok   0 errors   14.0 req/s   250 tok/s"),
            "{text}"
        );
        assert!(lines[2].ends_with("(last 2s)"), "{text}");
        assert!(lines[3].contains("3 running"), "{text}");
        assert!(lines[3].contains("since start: 7 preemptions"), "{text}");
        assert_eq!(lines[4], "  telemetry  otlp");
    }

    #[test]
    fn exit_summary_reconciles_client_cancellations_with_engine_aborts() {
        // 6 cancelled by the client: 5 the engine aborted, 1 it had finished (41 finished, the
        // client saw 40 succeed).
        let engine = EngineStats {
            finished: 41,
            aborted: 5,
            ..EngineStats::default()
        };
        let text = engine_summary(&engine, 40, 6);
        assert!(
            text.starts_with("engine      41 finished, 5 aborted"),
            "{text}"
        );
        assert!(
            text.contains("of the 6 requests the client cancelled at exit, the engine aborted 5"),
            "{text}"
        );
        assert!(text.contains("had already finished 1 "), "{text}");
        assert!(!text.contains("still in the engine"), "{text}");
        let all_aborted = engine_summary(&engine, 41, 6);
        assert!(
            all_aborted.contains(
                "the 6 requests the client cancelled at exit are among the engine's aborted ones"
            ),
            "{all_aborted}"
        );
        let stuck = EngineStats {
            running: 2,
            ..engine
        };
        assert!(engine_summary(&stuck, 40, 6).contains("2 were still in the engine"));
        assert!(!engine_summary(&engine, 41, 0).contains("cancelled"));
    }
}
