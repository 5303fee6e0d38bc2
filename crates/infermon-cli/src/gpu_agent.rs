//! `infermon gpu-agent`: a standalone exporter of NVIDIA GPU telemetry (NVML) over OTLP, for
//! GPU nodes. `--once` prints one reading instead (handy for checking a node); `--fake N` runs
//! with simulated GPUs for demos and CI.

use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use infermon::contract::INSTRUMENTATION_SCOPE;
use infermon_gpu::{
    spawn_gpu_monitor, DeviceSelection, DeviceSource, FakeSource, GpuError, GpuMonitor, GpuPoller,
    GpuSnapshot, NvmlSource, DEFAULT_TOP_PROCESSES, MIN_INTERVAL,
};

use clap::builder::RangedI64ValueParser;

use crate::args::{parse_duration, TelemetryArgs};
use crate::config_file::{ConfigFileError, Layer, Layered};

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Without NVML (no NVIDIA driver) the agent prints one line and exits \
    non-zero, unless --allow-no-gpu is given.\n\n\
    Examples:\n  \
    infermon gpu-agent --otlp-endpoint http://collector:4317\n  \
    infermon gpu-agent --devices 0,1 --interval 500ms\n  \
    infermon gpu-agent --once --json\n  \
    infermon gpu-agent --fake 8 --no-otlp"
)]
pub struct GpuAgentArgs {
    /// Poll interval (e.g. 1s, 500ms). With --once, the time between the two reads that give
    /// GPM metrics and PCIe byte counts an interval to cover.
    #[arg(long, value_name = "DURATION", env = "INFERMON_GPU_INTERVAL", default_value = "1s", value_parser = parse_interval)]
    pub interval: Duration,

    /// GPUs to monitor: `all`, or indices and/or UUIDs separated by commas (e.g. 0,1 or
    /// GPU-5e1b…).
    #[arg(long, value_name = "LIST", env = "INFERMON_GPU_DEVICES", default_value = "all", value_parser = parse_devices)]
    pub devices: DeviceSelection,

    /// Print one reading and exit (no OTLP export).
    #[arg(long)]
    pub once: bool,

    /// With --once: print the reading as JSON.
    #[arg(long)]
    pub json: bool,

    /// Keep running without GPUs when NVML is not available (and exit 0 with --once), instead
    /// of failing. For node pools that mix GPU and CPU machines.
    #[arg(long, env = "INFERMON_ALLOW_NO_GPU")]
    pub allow_no_gpu: bool,

    /// Read N simulated GPUs instead of NVML (hw.vendor = infermon-simulated), for demos and CI.
    #[arg(long, value_name = "N", env = "INFERMON_GPU_FAKE", value_parser = fake_gpus())]
    pub fake: Option<u32>,

    /// Report GPU memory of the N processes using the most, per device (0: none).
    #[arg(long, value_name = "N", env = "INFERMON_GPU_TOP_PROCESSES", default_value_t = DEFAULT_TOP_PROCESSES)]
    pub top_processes: usize,

    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

impl Layered for GpuAgentArgs {
    fn layer(&mut self, layer: &mut Layer) -> Result<(), ConfigFileError> {
        layer.value("interval", &mut self.interval, parse_interval)?;
        layer.value("devices", &mut self.devices, parse_devices)?;
        layer.switch("once", &mut self.once)?;
        layer.switch("json", &mut self.json)?;
        layer.switch("allow_no_gpu", &mut self.allow_no_gpu)?;
        layer.optional("fake", &mut self.fake, fake_gpus())?;
        layer.value("top_processes", &mut self.top_processes, usize::from_str)?;
        self.telemetry.layer(layer)
    }
}

/// `--fake`'s values (the flag's and the config file's).
fn fake_gpus() -> RangedI64ValueParser<u32> {
    clap::value_parser!(u32).range(1..=1024)
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let interval = parse_duration(s)?;
    if interval < MIN_INTERVAL {
        return Err(format!(
            "`{s}` is too short; the interval must be at least {} ms",
            MIN_INTERVAL.as_millis()
        ));
    }
    Ok(interval)
}

fn parse_devices(s: &str) -> Result<DeviceSelection, String> {
    s.parse().map_err(|e: GpuError| e.to_string())
}

/// The two kinds of device source; each path is generic over [`DeviceSource`].
enum Source {
    Nvml(NvmlSource),
    Fake(FakeSource),
}

pub async fn run(args: GpuAgentArgs) -> anyhow::Result<()> {
    if args.json && !args.once {
        anyhow::bail!(
            "--json prints a single reading, so it needs --once: infermon gpu-agent --once --json"
        );
    }
    let source = match open_source(&args) {
        Ok(source) => Some(source),
        Err(e @ (GpuError::NvmlLibraryNotFound | GpuError::NvmlUnavailable(_)))
            if args.allow_no_gpu =>
        {
            eprintln!("{e}");
            None
        }
        Err(e) => return Err(e.into()),
    };
    if args.once {
        let snapshot = match source {
            Some(Source::Nvml(s)) => read_once(s, args.interval).await?,
            Some(Source::Fake(s)) => read_once(s, args.interval).await?,
            None => GpuSnapshot::default(),
        };
        return print_snapshot(&snapshot, args.json);
    }
    export(source, &args).await
}

fn open_source(args: &GpuAgentArgs) -> Result<Source, GpuError> {
    match args.fake {
        Some(n) => FakeSource::demo(n).select(&args.devices).map(Source::Fake),
        None => NvmlSource::open(&args.devices)
            .map(|s| Source::Nvml(s.with_top_processes(args.top_processes))),
    }
}

/// Polls until Ctrl-C or SIGTERM (what Kubernetes sends a DaemonSet pod), exporting over OTLP.
async fn export(source: Option<Source>, args: &GpuAgentArgs) -> anyhow::Result<()> {
    let simulated = args.fake.is_some();
    let telemetry = args.telemetry.init("infermon-gpu-agent", simulated)?;
    let meter = telemetry.meter(INSTRUMENTATION_SCOPE);
    let monitor = match source {
        Some(Source::Nvml(s)) => start(s, &meter, args.interval),
        Some(Source::Fake(s)) => start(s, &meter, args.interval),
        None => GpuMonitor::off(),
    };
    crate::signal::shutdown_signal().await;
    monitor.shutdown().await;
    // Blocking flush of the last export, off the async workers.
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .context("telemetry shutdown panicked")?
        .context("telemetry shutdown")?;
    Ok(())
}

fn start<S: DeviceSource>(
    source: S,
    meter: &opentelemetry::metrics::Meter,
    interval: Duration,
) -> GpuMonitor {
    let devices = source.devices().len();
    tracing::info!(devices, interval = ?interval, "gpu-agent polling");
    spawn_gpu_monitor(source, meter, interval)
}

/// Two reads one interval apart: the second has GPM metrics and PCIe byte counts.
async fn read_once<S: DeviceSource>(source: S, interval: Duration) -> anyhow::Result<GpuSnapshot> {
    tokio::task::spawn_blocking(move || {
        let mut poller = GpuPoller::new(source);
        poller.poll(Instant::now());
        std::thread::sleep(interval);
        poller.poll(Instant::now());
        poller.snapshot()
    })
    .await
    .context("GPU read panicked")
}

fn print_snapshot(snapshot: &GpuSnapshot, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(snapshot)?);
        return Ok(());
    }
    if snapshot.devices.is_empty() {
        println!("no GPUs");
    }
    for device in &snapshot.devices {
        let info = &device.info;
        println!(
            "GPU {} {} ({}, {})",
            info.index, info.name, info.uuid, info.vendor
        );
        if let serde_json::Value::Object(metrics) = serde_json::to_value(&device.metrics)? {
            for (name, value) in metrics {
                println!("  {name}: {value}");
            }
        }
        for (field, reason) in &device.unavailable {
            println!("  unavailable: {field} ({reason})");
        }
    }
    Ok(())
}
