//! The poller: reads every device of a source, converts NVML units to OpenTelemetry units,
//! integrates rates into counters, diffs GPM samples, counts XID events and read errors, and
//! publishes the result to the shared state the instruments observe.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::reading::{DeviceReading, Field, FieldProblem, GpmMetrics, ProblemKind, XidEvent};
use crate::snapshot::{xid_label, DeviceMetrics, DeviceSnapshot, GpuSnapshot};
use crate::source::DeviceSource;

/// State shared between the poller (writer) and the instrument callbacks (readers).
pub(crate) type SharedSnapshot = Arc<Mutex<GpuSnapshot>>;

/// A poisoned lock only means a panic elsewhere mid-update; the snapshot is still coherent
/// enough to export, and telemetry must never take the service down.
pub(crate) fn lock(shared: &SharedSnapshot) -> MutexGuard<'_, GpuSnapshot> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// Drives a [`DeviceSource`]: call [`poll`](Self::poll) once per interval.
pub struct GpuPoller<S: DeviceSource> {
    source: S,
    shared: SharedSnapshot,
    tracks: Vec<Track<S::GpmSample>>,
    xid_buffer: Vec<XidEvent>,
}

/// What the poller remembers about one device between polls.
struct Track<G> {
    last_read: Option<Instant>,
    /// Previous PCIe rates (KiB/s) for trapezoidal integration.
    last_rx: Option<u32>,
    last_tx: Option<u32>,
    previous_gpm: Option<G>,
    /// Why GPM is unsupported, once known; GPM is not sampled again.
    gpm_unsupported: Option<String>,
    /// Unavailable fields already logged.
    logged_unavailable: BTreeSet<Field>,
    /// Fields whose first read error was already logged as a warning.
    logged_errors: BTreeSet<Field>,
}

impl<G> Default for Track<G> {
    fn default() -> Self {
        Self {
            last_read: None,
            last_rx: None,
            last_tx: None,
            previous_gpm: None,
            gpm_unsupported: None,
            logged_unavailable: BTreeSet::new(),
            logged_errors: BTreeSet::new(),
        }
    }
}

impl<S: DeviceSource> GpuPoller<S> {
    pub fn new(source: S) -> Self {
        let devices = source
            .devices()
            .iter()
            .map(|info| DeviceSnapshot {
                info: info.clone(),
                metrics: DeviceMetrics::default(),
                unavailable: Default::default(),
            })
            .collect();
        let tracks = source.devices().iter().map(|_| Track::default()).collect();
        Self {
            source,
            shared: Arc::new(Mutex::new(GpuSnapshot { devices })),
            tracks,
            xid_buffer: Vec::new(),
        }
    }

    /// Reads every device once. `now` is the time of this poll (the monitor passes
    /// `Instant::now()`; tests pass synthetic instants so counter integration is deterministic).
    pub fn poll(&mut self, now: Instant) {
        for device in 0..self.tracks.len() {
            self.poll_device(device, now);
        }
        self.count_xid_events();
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> GpuSnapshot {
        lock(&self.shared).clone()
    }

    /// The source, e.g. to inspect a fake in tests.
    pub fn source(&self) -> &S {
        &self.source
    }

    pub(crate) fn shared(&self) -> SharedSnapshot {
        Arc::clone(&self.shared)
    }

    fn poll_device(&mut self, device: usize, now: Instant) {
        let reading = self.source.read(device);
        let mut problems = reading.problems.clone();
        let gpm = self.sample_gpm(device, &mut problems);

        let track = &mut self.tracks[device];
        let seconds = track
            .last_read
            .map(|last| now.saturating_duration_since(last).as_secs_f64());
        track.last_read = Some(now);

        let mut shared = lock(&self.shared);
        let entry = &mut shared.devices[device];
        apply_reading(&mut entry.metrics, &reading, seconds, track);
        apply_gpm(&mut entry.metrics, gpm);
        // Rebuilt every poll, so a field that starts working again leaves the list.
        entry.unavailable.clear();
        for problem in &problems {
            match &problem.kind {
                ProblemKind::ReadError(_) => entry.metrics.read_errors += 1,
                ProblemKind::Unsupported(reason) => {
                    entry.unavailable.insert(problem.field, reason.clone());
                }
            }
        }
        let info = entry.info.clone();
        drop(shared);

        log_problems(&info, &problems, track);
    }

    /// Takes this poll's GPM sample and diffs it against the previous one. `None` until two
    /// samples exist, after a failure, or where GPM is unsupported.
    fn sample_gpm(
        &mut self,
        device: usize,
        problems: &mut Vec<FieldProblem>,
    ) -> Option<GpmMetrics> {
        let track = &mut self.tracks[device];
        if let Some(reason) = &track.gpm_unsupported {
            problems.push(FieldProblem::unsupported(Field::Gpm, reason.clone()));
            return None;
        }
        let outcome = match self.source.gpm_sample(device) {
            Ok(sample) => match track.previous_gpm.replace(sample) {
                None => return None, // the first sample of a pair
                Some(earlier) => {
                    let later = track.previous_gpm.as_ref()?;
                    self.source.gpm_metrics(device, &earlier, later)
                }
            },
            Err(kind) => {
                // A failed sample breaks the pair; start over from the next one.
                track.previous_gpm = None;
                Err(kind)
            }
        };
        match outcome {
            Ok(metrics) => Some(metrics),
            Err(kind) => {
                if let ProblemKind::Unsupported(reason) = &kind {
                    track.gpm_unsupported = Some(reason.clone());
                    track.previous_gpm = None;
                }
                problems.push(FieldProblem {
                    field: Field::Gpm,
                    kind,
                });
                None
            }
        }
    }

    fn count_xid_events(&mut self) {
        self.source.drain_xid_events(&mut self.xid_buffer);
        if self.xid_buffer.is_empty() {
            return;
        }
        let mut shared = lock(&self.shared);
        for event in self.xid_buffer.drain(..) {
            let Some(entry) = shared.devices.get_mut(event.device) else {
                continue;
            };
            let label = xid_label(event.code);
            *entry.metrics.xid_errors.entry(label).or_insert(0) += 1;
            tracing::warn!(
                gpu.index = entry.info.index,
                hw.id = %entry.info.uuid,
                xid = ?event.code,
                "GPU reported a critical XID error"
            );
        }
    }
}

const KIB: f64 = 1024.0;

/// Converts one reading into `metrics`. Gauges take the new value or become absent; counters
/// keep their last total through a transient read error (a gap would look like a reset).
fn apply_reading<G>(
    metrics: &mut DeviceMetrics,
    r: &DeviceReading,
    seconds: Option<f64>,
    track: &mut Track<G>,
) {
    let failed = |field| {
        r.problems
            .iter()
            .any(|p| p.field == field && matches!(p.kind, ProblemKind::ReadError(_)))
    };
    let ratio = |percent: Option<u32>| percent.map(|p| (f64::from(p) / 100.0).clamp(0.0, 1.0));
    let bytes = |b: Option<u64>| b.map(|b| i64::try_from(b).unwrap_or(i64::MAX));
    let milli = |v: Option<u32>| v.map(|v| f64::from(v) / 1000.0);
    let hertz = |mhz: Option<u32>| mhz.map(|mhz| f64::from(mhz) * 1e6);

    metrics.utilization = ratio(r.gpu_utilization_percent);
    metrics.memory_utilization = ratio(r.memory_utilization_percent);
    metrics.encoder_utilization = ratio(r.encoder_utilization_percent);
    metrics.decoder_utilization = ratio(r.decoder_utilization_percent);
    metrics.memory_usage_bytes = bytes(r.memory_used_bytes);
    metrics.memory_limit_bytes = bytes(r.memory_total_bytes);
    metrics.gpu_temperature_celsius = r.gpu_temperature_celsius.map(f64::from);
    metrics.memory_temperature_celsius = r.memory_temperature_celsius.map(f64::from);
    metrics.power_watts = milli(r.power_milliwatts);
    metrics.power_limit_watts = milli(r.power_limit_milliwatts);
    metrics.sm_clock_hz = hertz(r.sm_clock_mhz);
    metrics.memory_clock_hz = hertz(r.memory_clock_mhz);
    metrics.throttle_reasons = r.throttle_reasons;
    metrics.retired_pages = r.retired_pages;
    metrics.remapped_rows = r.remapped_rows;
    metrics.processes.clone_from(&r.processes);

    // Counters: NVML's own cumulative totals.
    metrics.ecc_corrected_errors = counter(
        r.ecc_corrected_total,
        metrics.ecc_corrected_errors,
        failed(Field::EccCorrected),
    );
    metrics.ecc_uncorrected_errors = counter(
        r.ecc_uncorrected_total,
        metrics.ecc_uncorrected_errors,
        failed(Field::EccUncorrected),
    );
    metrics.energy_joules = counter(
        r.total_energy_millijoules.map(|mj| mj as f64 / 1000.0),
        metrics.energy_joules,
        failed(Field::Energy),
    );

    // Counters we integrate: PCIe throughput is a rate over a short NVML window, so bytes moved
    // are estimated as the average of this and the previous rate times the time between polls.
    metrics.io_receive_bytes = integrate(
        metrics.io_receive_bytes,
        r.pcie_rx_kib_per_s,
        &mut track.last_rx,
        seconds,
        failed(Field::PcieRx),
    );
    metrics.io_transmit_bytes = integrate(
        metrics.io_transmit_bytes,
        r.pcie_tx_kib_per_s,
        &mut track.last_tx,
        seconds,
        failed(Field::PcieTx),
    );
}

/// A cumulative total: the new one, else the last one through a failed read, else absent.
fn counter<T>(new: Option<T>, last: Option<T>, failed: bool) -> Option<T> {
    new.or(last.filter(|_| failed))
}

/// Adds the bytes moved since the previous poll to `total`. The series starts at 0 on the first
/// supported reading; a failed read keeps the total and restarts the trapezoid; an unsupported
/// field has no series.
fn integrate(
    total: Option<f64>,
    rate_kib_s: Option<u32>,
    previous_rate: &mut Option<u32>,
    seconds: Option<f64>,
    failed: bool,
) -> Option<f64> {
    let Some(rate) = rate_kib_s else {
        *previous_rate = None;
        return total.filter(|_| failed);
    };
    let average = previous_rate.map_or(f64::from(rate), |prev| {
        (f64::from(prev) + f64::from(rate)) / 2.0
    });
    *previous_rate = Some(rate);
    let moved = total.and(seconds).map_or(0.0, |s| average * KIB * s);
    Some(total.unwrap_or(0.0) + moved)
}

fn apply_gpm(metrics: &mut DeviceMetrics, gpm: Option<GpmMetrics>) {
    let ratio = |percent: Option<f64>| percent.map(|p| (p / 100.0).clamp(0.0, 1.0));
    let gpm = gpm.unwrap_or_default();
    metrics.sm_activity = ratio(gpm.sm_activity_percent);
    metrics.sm_occupancy = ratio(gpm.sm_occupancy_percent);
    metrics.dram_bandwidth_utilization = ratio(gpm.dram_bandwidth_percent);
    metrics.tensor_activity = ratio(gpm.tensor_activity_percent);
}

/// Unavailable metrics: one line per device listing them all, the first time each is seen.
/// Read errors: a warning the first time per field, then debug (they are also counted).
fn log_problems<G>(info: &crate::DeviceInfo, problems: &[FieldProblem], track: &mut Track<G>) {
    let mut newly_unavailable = Vec::new();
    for problem in problems {
        match &problem.kind {
            ProblemKind::Unsupported(reason) => {
                if track.logged_unavailable.insert(problem.field) {
                    newly_unavailable.push(format!("{} ({reason})", problem.field.series()));
                }
            }
            ProblemKind::ReadError(message) => {
                if track.logged_errors.insert(problem.field) {
                    tracing::warn!(
                        gpu.index = info.index,
                        hw.id = %info.uuid,
                        field = %problem.field,
                        error = %message,
                        "GPU read failed; counted in infermon.gpu.read_errors and retried next poll"
                    );
                } else {
                    tracing::debug!(gpu.index = info.index, field = %problem.field, error = %message, "GPU read failed");
                }
            }
        }
    }
    if !newly_unavailable.is_empty() {
        tracing::info!(
            gpu.index = info.index,
            hw.id = %info.uuid,
            hw.name = %info.name,
            "GPU metrics unavailable: {}",
            newly_unavailable.join("; ")
        );
    }
}
