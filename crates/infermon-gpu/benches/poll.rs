//! GPU telemetry cost.
//!
//! 1. criterion: one poll of N simulated devices (read, unit conversion, counter integration,
//!    GPM diff, publish), N = 1 and 8; and one metrics export of N devices into the SDK's
//!    in-memory exporter through a periodic reader's `force_flush`, N = 0 and 8 (the difference
//!    is what the GPU callbacks and their aggregation cost; the rest is the reader's thread
//!    round trip and the exporter's copy).
//! 2. The agent's CPU share: the real `infermon gpu-agent --fake 8` at a 1 s interval, exporting
//!    over OTLP/gRPC to a receiver in this process (and, for comparison, not exporting), its CPU
//!    time summed over its threads from `/proc/<pid>/task/*/schedstat` (nanoseconds; the
//!    10 ms ticks of `/proc/<pid>/stat` are too coarse) over 20 s. Runs only under
//!    `cargo bench` and needs the release binary: `cargo build --release -p infermon-cli` first
//!    (or point `INFERMON_BIN` at a binary).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion};
use infermon_gpu::{register_instruments, FakeSource, GpuPoller, SimulatedGpu};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};

fn poller(devices: u32) -> GpuPoller<FakeSource> {
    let source = FakeSource::simulated(devices, &SimulatedGpu::h100()).with_manual_clock();
    let control = source.control();
    for i in 0..devices as usize {
        control.set_load(i, 0.6);
    }
    GpuPoller::new(source)
}

fn poll(c: &mut Criterion) {
    let mut group = c.benchmark_group("gpu_poll");
    for devices in [1u32, 8] {
        let mut poller = poller(devices);
        let control = poller.source().control();
        let mut now = Instant::now();
        group.bench_with_input(BenchmarkId::from_parameter(devices), &devices, |b, _| {
            b.iter(|| {
                // Time moves so energy, temperature and GPM counters integrate as in real use.
                control.advance(Duration::from_secs(1));
                now += Duration::from_secs(1);
                poller.poll(now);
            })
        });
    }
    group.finish();
}

fn collect(c: &mut Criterion) {
    let mut group = c.benchmark_group("gpu_export");
    for devices in [0u32, 8] {
        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter.clone()).build())
            .build();
        let meter = provider.meter("bench");
        let mut poller = poller(devices);
        register_instruments(&meter, &poller);
        let t0 = Instant::now();
        poller.poll(t0);
        poller.source().control().advance(Duration::from_secs(1));
        poller.poll(t0 + Duration::from_secs(1));
        group.bench_with_input(BenchmarkId::from_parameter(devices), &devices, |b, _| {
            b.iter(|| {
                provider.force_flush().unwrap();
                exporter.reset();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, poll, collect);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // `cargo test --benches` runs benches without `--bench`: skip the 20 s process measurement.
    if std::env::args().any(|a| a == "--bench") {
        agent_cpu_share();
    }
}

const MEASURE: Duration = Duration::from_secs(20);
const WARM_UP: Duration = Duration::from_secs(3);

fn agent_cpu_share() {
    let Some(binary) = agent_binary() else {
        println!(
            "agent CPU share: skipped (no release binary; run `cargo build --release -p infermon-cli` or set INFERMON_BIN)"
        );
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let endpoint = runtime.block_on(sink::start());
    for (label, extra) in [
        (
            "OTLP export to a local receiver",
            vec!["--otlp-endpoint", endpoint.as_str()],
        ),
        ("no export (--no-otlp)", vec!["--no-otlp"]),
    ] {
        let mut child = Command::new(&binary)
            .args(["gpu-agent", "--fake", "8", "--interval", "1s"])
            .args(&extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the agent");
        std::thread::sleep(WARM_UP);
        let (cpu0, wall0) = (cpu_seconds(&child), Instant::now());
        std::thread::sleep(MEASURE);
        let (cpu1, wall) = (cpu_seconds(&child), wall0.elapsed().as_secs_f64());
        stop(&mut child);
        let cpu = cpu1 - cpu0;
        let polls = wall; // one poll per second
        println!(
            "agent CPU share, 8 fake GPUs at 1 s, {label}: {:.3} % of one core ({cpu:.4} s CPU over {wall:.1} s; {:.0} µs per poll, {:.0} µs per poll per device, export included)",
            100.0 * cpu / wall,
            1e6 * cpu / polls,
            1e6 * cpu / polls / 8.0,
        );
    }
    println!("metric export requests received: {}", sink::requests());
}

fn agent_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("INFERMON_BIN") {
        return Some(PathBuf::from(path));
    }
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let path = target.join("release/infermon");
    path.exists().then_some(path)
}

/// CPU time of the process: the first field of each thread's `schedstat` (ns on a CPU). A
/// thread that exits between two readings takes its time with it; the agent's threads (Tokio
/// workers, blocking-pool threads kept alive by the 1 s polls, the SDK's export thread) live
/// for the whole run.
fn cpu_seconds(child: &Child) -> f64 {
    let tasks =
        std::fs::read_dir(format!("/proc/{}/task", child.id())).expect("agent exited early");
    let nanos: u64 = tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    nanos as f64 / 1e9
}

fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// An OTLP/gRPC metrics receiver that only counts requests.
mod sink {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
        MetricsService, MetricsServiceServer,
    };
    use opentelemetry_proto::tonic::collector::metrics::v1::{
        ExportMetricsServiceRequest, ExportMetricsServiceResponse,
    };
    use tokio_stream::wrappers::TcpListenerStream;
    use tonic::{Request, Response, Status};

    static REQUESTS: AtomicUsize = AtomicUsize::new(0);

    pub fn requests() -> usize {
        REQUESTS.load(Ordering::Relaxed)
    }

    struct Counter;

    #[tonic::async_trait]
    impl MetricsService for Counter {
        async fn export(
            &self,
            _request: Request<ExportMetricsServiceRequest>,
        ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
            REQUESTS.fetch_add(1, Ordering::Relaxed);
            Ok(Response::new(ExportMetricsServiceResponse {
                partial_success: None,
            }))
        }
    }

    /// Starts the receiver on the current runtime; returns its endpoint URL.
    pub async fn start() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(MetricsServiceServer::new(Counter))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        format!("http://{addr}")
    }
}
