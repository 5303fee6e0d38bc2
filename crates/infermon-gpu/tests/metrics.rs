//! GPU readings → OpenTelemetry metrics, checked through the SDK's in-memory exporter.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use infermon::contract::{attr, metric, metric_spec, value, Instrument};
use infermon_gpu::{
    register_instruments, spawn_gpu_monitor, DeviceInfo, DeviceReading, EccCounts, FakeDevice,
    FakeGpmCounters, FakeSource, FakeStep, Field, GpuPoller, NvmlSource, ProcessMemory,
    SimulatedGpu, ThrottleReasons,
};
use opentelemetry::metrics::{Meter, MeterProvider};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};

/// One exported data point, flattened for easy assertions.
#[derive(Debug, Clone, PartialEq)]
struct Point {
    name: String,
    unit: String,
    kind: Kind,
    value: f64,
    attrs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Gauge,
    MonotonicSum,
    UpDownSum,
}

struct Harness {
    provider: SdkMeterProvider,
    exporter: InMemoryMetricExporter,
}

impl Harness {
    fn new() -> (Self, Meter) {
        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter.clone()).build())
            .build();
        let meter = provider.meter("infermon-gpu-test");
        (Self { provider, exporter }, meter)
    }

    /// Everything one export contains now.
    fn collect(&self) -> Vec<Point> {
        self.exporter.reset();
        self.provider.force_flush().expect("flush");
        let batches = self.exporter.get_finished_metrics().expect("metrics");
        let mut points = Vec::new();
        for rm in batches.last().into_iter() {
            for scope in rm.scope_metrics() {
                for m in scope.metrics() {
                    flatten(m.name(), m.unit(), m.data(), &mut points);
                }
            }
        }
        points
    }
}

fn flatten(name: &str, unit: &str, data: &AggregatedMetrics, out: &mut Vec<Point>) {
    fn push<T: Copy + Into<AsF64>>(
        name: &str,
        unit: &str,
        data: &MetricData<T>,
        out: &mut Vec<Point>,
    ) {
        let attrs = |it: &mut dyn Iterator<Item = &opentelemetry::KeyValue>| {
            it.map(|kv| (kv.key.to_string(), kv.value.to_string()))
                .collect()
        };
        match data {
            MetricData::Gauge(g) => out.extend(g.data_points().map(|p| Point {
                name: name.into(),
                unit: unit.into(),
                kind: Kind::Gauge,
                value: p.value().into().0,
                attrs: attrs(&mut p.attributes()),
            })),
            MetricData::Sum(s) => out.extend(s.data_points().map(|p| Point {
                name: name.into(),
                unit: unit.into(),
                kind: if s.is_monotonic() {
                    Kind::MonotonicSum
                } else {
                    Kind::UpDownSum
                },
                value: p.value().into().0,
                attrs: attrs(&mut p.attributes()),
            })),
            _ => panic!("unexpected aggregation (histogram) for {name}"),
        }
    }
    match data {
        AggregatedMetrics::F64(d) => push(name, unit, d, out),
        AggregatedMetrics::U64(d) => push(name, unit, d, out),
        AggregatedMetrics::I64(d) => push(name, unit, d, out),
    }
}

/// Lossless enough for test values (all well under 2^53).
struct AsF64(f64);
impl From<f64> for AsF64 {
    fn from(v: f64) -> Self {
        Self(v)
    }
}
impl From<u64> for AsF64 {
    fn from(v: u64) -> Self {
        Self(v as f64)
    }
}
impl From<i64> for AsF64 {
    fn from(v: i64) -> Self {
        Self(v as f64)
    }
}

/// The points of `name` whose attributes include every `(key, value)` in `with`.
fn find<'a>(points: &'a [Point], name: &str, with: &[(&str, &str)]) -> Vec<&'a Point> {
    points
        .iter()
        .filter(|p| p.name == name)
        .filter(|p| {
            with.iter()
                .all(|(k, v)| p.attrs.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

/// The single value of `name` with those attributes.
fn value_of(points: &[Point], name: &str, with: &[(&str, &str)]) -> f64 {
    let found = find(points, name, with);
    assert_eq!(found.len(), 1, "{name} {with:?}: {found:#?}");
    found[0].value
}

fn has_series(points: &[Point], name: &str) -> bool {
    points.iter().any(|p| p.name == name)
}

fn h100_info(index: u32) -> DeviceInfo {
    DeviceInfo {
        index,
        uuid: format!("GPU-0000000{index}-test"),
        name: "NVIDIA H100 80GB HBM3".into(),
        vendor: value::VENDOR_NVIDIA.into(),
    }
}

/// A reading with every field present, in NVML units.
fn full_reading() -> DeviceReading {
    DeviceReading {
        gpu_utilization_percent: Some(45),
        memory_utilization_percent: Some(30),
        encoder_utilization_percent: Some(2),
        decoder_utilization_percent: Some(0),
        memory_used_bytes: Some(40 << 30),
        memory_total_bytes: Some(80 << 30),
        gpu_temperature_celsius: Some(61),
        memory_temperature_celsius: Some(70),
        power_milliwatts: Some(250_500),
        power_limit_milliwatts: Some(700_000),
        total_energy_millijoules: Some(1_234_567),
        sm_clock_mhz: Some(1_410),
        memory_clock_mhz: Some(2_619),
        pcie_rx_kib_per_s: Some(1_000),
        pcie_tx_kib_per_s: Some(500),
        throttle_reasons: Some(ThrottleReasons {
            sw_power_cap: true,
            ..ThrottleReasons::default()
        }),
        ecc_corrected_total: Some(7),
        ecc_uncorrected_total: Some(1),
        retired_pages: None,
        remapped_rows: Some(EccCounts {
            corrected: 3,
            uncorrected: 0,
        }),
        processes: Some(vec![ProcessMemory {
            pid: 4242,
            executable: Some("python3".into()),
            used_bytes: 39 << 30,
        }]),
        problems: Vec::new(),
    }
}

fn gpm(elapsed_s: f64, busy: f64) -> FakeGpmCounters {
    FakeGpmCounters {
        elapsed_s,
        sm_active_s: busy * elapsed_s,
        sm_occupancy_s: 0.5 * busy * elapsed_s,
        dram_busy_s: 0.25 * busy * elapsed_s,
        tensor_active_s: 0.1 * busy * elapsed_s,
    }
}

/// A poller over scripted steps with instruments on a fresh in-memory pipeline.
fn scripted(steps: Vec<FakeStep>) -> (Harness, GpuPoller<FakeSource>) {
    let (harness, meter) = Harness::new();
    let source = FakeSource::new([FakeDevice::scripted(h100_info(0), steps)]);
    let poller = GpuPoller::new(source);
    register_instruments(&meter, &poller);
    (harness, poller)
}

const T: Duration = Duration::from_secs(2);

#[test]
fn every_field_maps_to_its_metric_in_contract_units() {
    let step = FakeStep::new(full_reading()).with_gpm(gpm(10.0, 0.8));
    let later = FakeStep::new(full_reading()).with_gpm(gpm(12.0, 0.8));
    // The GPM counters grow at `busy` per second, so the diff of the two samples is `busy`.
    let (h, mut poller) = scripted(vec![step, later]);
    let t0 = Instant::now();
    poller.poll(t0);
    poller.poll(t0 + T);
    let p = h.collect();

    let gpu = [(attr::HW_ID, "GPU-00000000-test"), (attr::GPU_INDEX, "0")];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut v = gpu.to_vec();
        v.extend_from_slice(extra);
        v
    };
    // percent → ratio
    let task = |t| with(&[(attr::HW_GPU_TASK, t)]);
    assert_eq!(
        value_of(&p, metric::GPU_UTILIZATION, &task(value::GPU_TASK_GENERAL)),
        0.45
    );
    assert_eq!(
        value_of(&p, metric::GPU_UTILIZATION, &task(value::GPU_TASK_ENCODER)),
        0.02
    );
    assert_eq!(
        value_of(&p, metric::GPU_UTILIZATION, &task(value::GPU_TASK_DECODER)),
        0.0
    );
    assert_eq!(value_of(&p, metric::GPU_MEMORY_UTILIZATION, &gpu), 0.30);
    // bytes
    assert_eq!(
        value_of(&p, metric::GPU_MEMORY_USAGE, &gpu),
        (40u64 << 30) as f64
    );
    assert_eq!(
        value_of(&p, metric::GPU_MEMORY_LIMIT, &gpu),
        (80u64 << 30) as f64
    );
    // °C, with hw.type and the sensor location
    let sensor = |s| {
        with(&[
            (attr::HW_TYPE, value::HW_TYPE_GPU),
            (attr::HW_SENSOR_LOCATION, s),
        ])
    };
    assert_eq!(
        value_of(&p, metric::HW_TEMPERATURE, &sensor(value::SENSOR_GPU)),
        61.0
    );
    assert_eq!(
        value_of(&p, metric::HW_TEMPERATURE, &sensor(value::SENSOR_MEMORY)),
        70.0
    );
    // mW → W, mJ → J
    let typed = with(&[(attr::HW_TYPE, value::HW_TYPE_GPU)]);
    assert_eq!(value_of(&p, metric::HW_POWER, &typed), 250.5);
    assert_eq!(value_of(&p, metric::HW_POWER_LIMIT, &typed), 700.0);
    assert_eq!(value_of(&p, metric::HW_ENERGY, &typed), 1234.567);
    // MHz → Hz
    let clock = |c| with(&[(attr::HW_GPU_CLOCK_TYPE, c)]);
    assert_eq!(
        value_of(&p, metric::GPU_CLOCK_FREQUENCY, &clock(value::CLOCK_SM)),
        1.41e9
    );
    assert_eq!(
        value_of(&p, metric::GPU_CLOCK_FREQUENCY, &clock(value::CLOCK_MEMORY)),
        2.619e9
    );
    // KiB/s → bytes over the 2 s between polls
    let dir = |d| with(&[(attr::NETWORK_IO_DIRECTION, d)]);
    assert_eq!(
        value_of(&p, metric::GPU_IO, &dir(value::IO_RECEIVE)),
        1000.0 * 1024.0 * 2.0
    );
    assert_eq!(
        value_of(&p, metric::GPU_IO, &dir(value::IO_TRANSMIT)),
        500.0 * 1024.0 * 2.0
    );
    // one 0/1 series per throttle reason
    let reason = |r| with(&[(attr::HW_GPU_THROTTLE_REASON, r)]);
    assert_eq!(
        value_of(
            &p,
            metric::GPU_THROTTLED,
            &reason(value::THROTTLE_SW_POWER_CAP)
        ),
        1.0
    );
    assert_eq!(
        value_of(
            &p,
            metric::GPU_THROTTLED,
            &reason(value::THROTTLE_HW_THERMAL)
        ),
        0.0
    );
    assert_eq!(find(&p, metric::GPU_THROTTLED, &gpu).len(), 9);
    // ECC
    let class = |c| with(&[(attr::HW_TYPE, value::HW_TYPE_GPU), (attr::ERROR_TYPE, c)]);
    assert_eq!(
        value_of(&p, metric::HW_ERRORS, &class(value::HW_ERROR_ECC_CORRECTED)),
        7.0
    );
    assert_eq!(
        value_of(
            &p,
            metric::HW_ERRORS,
            &class(value::HW_ERROR_ECC_UNCORRECTED)
        ),
        1.0
    );
    let rows = |c| with(&[(attr::ERROR_TYPE, c)]);
    assert_eq!(
        value_of(
            &p,
            metric::GPU_REMAPPED_ROWS,
            &rows(value::HW_ERROR_ECC_CORRECTED)
        ),
        3.0
    );
    assert_eq!(
        value_of(
            &p,
            metric::GPU_REMAPPED_ROWS,
            &rows(value::HW_ERROR_ECC_UNCORRECTED)
        ),
        0.0
    );
    // GPM, percent → ratio
    assert!((value_of(&p, metric::GPU_SM_ACTIVITY, &gpu) - 0.8).abs() < 1e-12);
    assert!((value_of(&p, metric::GPU_SM_OCCUPANCY, &gpu) - 0.4).abs() < 1e-12);
    assert!((value_of(&p, metric::GPU_DRAM_BANDWIDTH_UTILIZATION, &gpu) - 0.2).abs() < 1e-12);
    assert!((value_of(&p, metric::GPU_TENSOR_ACTIVITY, &gpu) - 0.08).abs() < 1e-12);
    // per-process memory
    let process = [
        (attr::PROCESS_PID, "4242"),
        (attr::PROCESS_EXECUTABLE_NAME, "python3"),
    ];
    assert_eq!(
        value_of(&p, metric::GPU_PROCESS_MEMORY_USAGE, &process),
        (39u64 << 30) as f64
    );
    // no read errors, but the series exists
    assert_eq!(value_of(&p, metric::GPU_READ_ERRORS, &gpu), 0.0);
}

/// Every exported series is a contract metric with the contract's unit, instrument kind and
/// attribute keys (plus the GPU identity).
#[test]
fn exported_series_match_the_contract() {
    let steps = vec![
        FakeStep::new(full_reading()).with_gpm(gpm(1.0, 0.5)),
        FakeStep::new(full_reading()).with_gpm(gpm(2.0, 0.5)),
    ];
    let (h, mut poller) = scripted(steps);
    let t0 = Instant::now();
    poller.poll(t0);
    poller.poll(t0 + T);
    let points = h.collect();
    assert!(!points.is_empty());
    for p in &points {
        let spec = metric_spec(&p.name).unwrap_or_else(|| panic!("{} not in contract", p.name));
        assert_eq!(p.unit, spec.unit, "{}", p.name);
        let expected = match spec.instrument {
            Instrument::Gauge => Kind::Gauge,
            Instrument::Counter => Kind::MonotonicSum,
            Instrument::UpDownCounter => Kind::UpDownSum,
            Instrument::Histogram => unreachable!("no GPU histograms"),
        };
        assert_eq!(p.kind, expected, "{}", p.name);
        for key in p.attrs.keys() {
            assert!(
                spec.attributes.contains(&key.as_str()),
                "{} carries {key}, not in the contract",
                p.name
            );
        }
        if p.name != metric::GPU_PROCESS_MEMORY_USAGE && p.name != metric::GPU_READ_ERRORS {
            for key in [attr::HW_ID, attr::HW_NAME, attr::HW_VENDOR, attr::GPU_INDEX] {
                assert!(p.attrs.contains_key(key), "{} lacks {key}", p.name);
            }
        }
    }
}

#[test]
fn pcie_throughput_is_integrated_into_a_monotonic_byte_counter() {
    let at = |rx| {
        FakeStep::new(DeviceReading {
            pcie_rx_kib_per_s: Some(rx),
            ..DeviceReading::default()
        })
    };
    let (h, mut poller) = scripted(vec![at(1_000), at(3_000), at(0)]);
    let rx = [(attr::NETWORK_IO_DIRECTION, value::IO_RECEIVE)];
    let t0 = Instant::now();

    poller.poll(t0);
    assert_eq!(
        value_of(&h.collect(), metric::GPU_IO, &rx),
        0.0,
        "starts at zero"
    );
    poller.poll(t0 + T);
    // Trapezoid: (1000 + 3000) / 2 KiB/s over 2 s.
    let second = value_of(&h.collect(), metric::GPU_IO, &rx);
    assert_eq!(second, 2_000.0 * 1024.0 * 2.0);
    poller.poll(t0 + T * 2);
    let third = value_of(&h.collect(), metric::GPU_IO, &rx);
    assert_eq!(third, second + 1_500.0 * 1024.0 * 2.0);
    assert!(
        !has_series(&h.collect(), metric::HW_ENERGY),
        "energy unsupported here"
    );
}

#[test]
fn gpm_needs_two_samples_and_restarts_after_a_failed_one() {
    let ok = |elapsed, busy| FakeStep::new(full_reading()).with_gpm(gpm(elapsed, busy));
    let failed = FakeStep::new(full_reading())
        .with_gpm(gpm(3.0, 0.5))
        .failing([Field::Gpm]);
    let (h, mut poller) = scripted(vec![
        ok(1.0, 0.5),
        ok(2.0, 0.5),
        failed,
        ok(4.0, 0.5),
        ok(6.0, 0.5),
    ]);
    let t0 = Instant::now();
    let mut sm_activity = Vec::new();
    for i in 0..5 {
        poller.poll(t0 + T * i);
        let found = find(&h.collect(), metric::GPU_SM_ACTIVITY, &[])
            .first()
            .map(|p| p.value);
        sm_activity.push(found);
    }
    // Absent on the first poll (one sample), present from the second; the failed third sample
    // breaks the pair, so the fourth poll has only one sample again.
    assert_eq!(sm_activity, [None, Some(0.5), None, None, Some(0.5)]);
    assert_eq!(poller.snapshot().devices[0].metrics.read_errors, 1);
}

#[test]
fn unsupported_fields_have_no_series_rather_than_zero() {
    let sparse = DeviceReading {
        gpu_utilization_percent: Some(10),
        memory_utilization_percent: Some(5),
        memory_used_bytes: Some(1 << 30),
        memory_total_bytes: Some(16 << 30),
        ..DeviceReading::default()
    };
    let (h, mut poller) = scripted(vec![FakeStep::new(sparse)]);
    let t0 = Instant::now();
    poller.poll(t0);
    poller.poll(t0 + T);
    let p = h.collect();

    assert!(has_series(&p, metric::GPU_UTILIZATION));
    assert!(has_series(&p, metric::GPU_MEMORY_USAGE));
    for absent in [
        metric::HW_POWER,
        metric::HW_POWER_LIMIT,
        metric::HW_ENERGY,
        metric::HW_TEMPERATURE,
        metric::GPU_CLOCK_FREQUENCY,
        metric::GPU_IO,
        metric::GPU_THROTTLED,
        metric::HW_ERRORS,
        metric::GPU_SM_ACTIVITY,
        metric::GPU_SM_OCCUPANCY,
        metric::GPU_DRAM_BANDWIDTH_UTILIZATION,
        metric::GPU_TENSOR_ACTIVITY,
        metric::GPU_RETIRED_PAGES,
        metric::GPU_REMAPPED_ROWS,
        metric::GPU_PROCESS_MEMORY_USAGE,
    ] {
        assert!(!has_series(&p, absent), "{absent} should be absent: {p:#?}");
    }
    // Only the general-task utilisation; encoder/decoder are unsupported here.
    assert_eq!(find(&p, metric::GPU_UTILIZATION, &[]).len(), 1);
    let snapshot = poller.snapshot();
    let unavailable = &snapshot.devices[0].unavailable;
    assert!(unavailable.contains_key(&Field::Power));
    assert!(unavailable.contains_key(&Field::Gpm));
    assert_eq!(
        snapshot.devices[0].metrics.read_errors, 0,
        "unsupported is not an error"
    );
}

#[test]
fn transient_read_errors_are_counted_and_retried() {
    let ok = FakeStep::new(full_reading());
    let failing = FakeStep::new(full_reading()).failing([Field::Power, Field::Energy]);
    let (h, mut poller) = scripted(vec![ok.clone(), failing, ok]);
    let gpu = [(attr::GPU_INDEX, "0")];
    let t0 = Instant::now();

    poller.poll(t0);
    poller.poll(t0 + T);
    let during = h.collect();
    assert_eq!(value_of(&during, metric::GPU_READ_ERRORS, &gpu), 2.0);
    assert!(
        !has_series(&during, metric::HW_POWER),
        "a failed gauge is absent, not stale"
    );
    assert_eq!(
        value_of(&during, metric::HW_ENERGY, &gpu),
        1234.567,
        "a counter keeps its last total through a failed read"
    );
    assert!(
        has_series(&during, metric::GPU_UTILIZATION),
        "other fields unaffected"
    );

    poller.poll(t0 + T * 2);
    let after = h.collect();
    assert_eq!(
        value_of(&after, metric::HW_POWER, &gpu),
        250.5,
        "retried next poll"
    );
    assert_eq!(value_of(&after, metric::GPU_READ_ERRORS, &gpu), 2.0);
}

#[test]
fn xid_events_are_counted_under_a_bounded_label_set() {
    let (h, mut poller) = scripted(vec![FakeStep::new(full_reading())]);
    let control = poller.source().control();
    for code in [Some(79), Some(79), Some(48), Some(12_345), Some(7), None] {
        control.inject_xid(0, code);
    }
    control.inject_xid(5, Some(79)); // no such device: ignored
    poller.poll(Instant::now());
    let p = h.collect();

    let xid = |code| {
        value_of(
            &p,
            metric::HW_ERRORS,
            &[
                (attr::ERROR_TYPE, value::HW_ERROR_XID),
                (attr::HW_GPU_XID, code),
                (attr::HW_TYPE, value::HW_TYPE_GPU),
            ],
        )
    };
    assert_eq!(xid("79"), 2.0);
    assert_eq!(xid("48"), 1.0);
    assert_eq!(xid(value::OVERFLOW), 3.0, "unknown codes share one label");
    for point in find(
        &p,
        metric::HW_ERRORS,
        &[(attr::ERROR_TYPE, value::HW_ERROR_XID)],
    ) {
        let label = point.attrs[attr::HW_GPU_XID].as_str();
        assert!(
            label == value::OVERFLOW || value::GPU_XIDS.contains(&label),
            "{label}"
        );
    }

    control.inject_xid(0, Some(79));
    poller.poll(Instant::now());
    assert_eq!(
        find(&h.collect(), metric::HW_ERRORS, &[(attr::HW_GPU_XID, "79")])[0].value,
        3.0,
        "cumulative"
    );
}

#[test]
fn simulated_gpus_are_labelled_simulated_and_follow_their_load() {
    let (h, meter) = Harness::new();
    let source = FakeSource::simulated(2, &SimulatedGpu::h100()).with_manual_clock();
    let control = source.control();
    let mut poller = GpuPoller::new(source);
    register_instruments(&meter, &poller);
    control.set_load(0, 0.25);
    control.set_load(1, 0.75);
    let t0 = Instant::now();
    poller.poll(t0);
    control.advance(T);
    poller.poll(t0 + T);
    let p = h.collect();

    assert!(p
        .iter()
        .filter(
            |pt| pt.name != metric::GPU_READ_ERRORS && pt.name != metric::GPU_PROCESS_MEMORY_USAGE
        )
        .all(|pt| pt.attrs[attr::HW_VENDOR] == value::VENDOR_SIMULATED));
    let util = |i| {
        value_of(
            &p,
            metric::GPU_UTILIZATION,
            &[
                (attr::GPU_INDEX, i),
                (attr::HW_GPU_TASK, value::GPU_TASK_GENERAL),
            ],
        )
    };
    assert_eq!((util("0"), util("1")), (0.25, 0.75));
    let sm = |i| value_of(&p, metric::GPU_SM_ACTIVITY, &[(attr::GPU_INDEX, i)]);
    assert!(
        (sm("1") - 0.75).abs() < 1e-9,
        "GPM follows the load over the interval"
    );
    let power = |i| value_of(&p, metric::HW_POWER, &[(attr::GPU_INDEX, i)]);
    assert!(power("1") > power("0"));
}

/// Captures formatted log output so tests can count lines.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn unavailable_metrics_are_logged_once_per_device() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let sparse = || {
        FakeStep::new(DeviceReading {
            gpu_utilization_percent: Some(10),
            memory_utilization_percent: Some(5),
            ..DeviceReading::default()
        })
    };
    let source = FakeSource::new([
        FakeDevice::scripted(h100_info(0), [sparse()]),
        FakeDevice::scripted(h100_info(1), [sparse()]),
    ]);
    let mut poller = GpuPoller::new(source);
    tracing::subscriber::with_default(subscriber, || {
        let t0 = Instant::now();
        for i in 0..5 {
            poller.poll(t0 + T * i);
        }
    });
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("GPU metrics unavailable"))
        .collect();
    assert_eq!(lines.len(), 2, "one line per device: {log}");
    assert!(lines[0].contains(metric::HW_POWER) && lines[0].contains(metric::GPU_SM_ACTIVITY));
    assert!(
        lines[0].contains("not supported by this fake device"),
        "says why: {}",
        lines[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_polls_in_the_background_and_its_series_end_with_it() {
    let (h, meter) = Harness::new();
    let monitor = spawn_gpu_monitor(
        FakeSource::simulated(2, &SimulatedGpu::h100()),
        &meter,
        Duration::from_millis(10),
    );
    assert!(monitor.is_running());
    // Wait (bounded) for the first polls; no timing is asserted.
    for _ in 0..500 {
        if monitor
            .snapshot()
            .devices
            .iter()
            .all(|d| d.metrics.utilization.is_some())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let snapshot = monitor.snapshot();
    assert_eq!(snapshot.devices.len(), 2);
    let points = tokio::task::spawn_blocking(move || {
        let p = h.collect();
        (h, p)
    })
    .await
    .unwrap();
    let (h, p) = points;
    assert_eq!(find(&p, metric::HW_POWER, &[]).len(), 2);

    monitor.shutdown().await;
    let after = tokio::task::spawn_blocking(move || h.collect())
        .await
        .unwrap();
    assert!(
        !after.iter().any(|p| p.name.starts_with("hw.")),
        "no GPU series once stopped: {after:#?}"
    );
}

#[test]
fn monitor_without_a_runtime_stays_off() {
    let (_h, meter) = Harness::new();
    let monitor = spawn_gpu_monitor(FakeSource::demo(1), &meter, Duration::from_secs(1));
    assert!(!monitor.is_running());
    assert!(monitor.snapshot().devices.is_empty());
}

#[tokio::test]
async fn without_nvml_the_embedded_monitor_stays_off() {
    let (_h, meter) = Harness::new();
    let nvml_present = NvmlSource::new().is_ok();
    let monitor = infermon_gpu::spawn_nvml_monitor(
        &meter,
        Duration::from_secs(1),
        &infermon_gpu::DeviceSelection::All,
    );
    assert_eq!(monitor.is_running(), nvml_present);
    monitor.shutdown().await;
}
