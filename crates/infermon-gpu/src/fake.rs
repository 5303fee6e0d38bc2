//! A device source without hardware: scripted readings for tests, and simulated GPUs whose
//! utilisation, memory, power and temperature follow a load signal (the engine simulator sets it;
//! `infermon gpu-agent --fake N` drives it with a slow wave). Simulated devices carry
//! `hw.vendor = infermon-simulated`, so they can never be mistaken for real ones.

use std::collections::VecDeque;
use std::f64::consts::TAU;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use infermon::contract::value::VENDOR_SIMULATED;

use crate::reading::{
    DeviceInfo, DeviceReading, EccCounts, Field, FieldProblem, GpmMetrics, ProblemKind,
    ThrottleReasons, XidEvent,
};
use crate::source::{DeviceSelection, DeviceSource, GpuError};

/// Cumulative GPM-style activity counters: how many seconds (of `elapsed_s`) each unit was busy.
/// GPM metrics are the ratio of two counters' increase between samples, which is what NVML
/// computes from its own (opaque) samples.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FakeGpmCounters {
    pub elapsed_s: f64,
    pub sm_active_s: f64,
    /// Integral of occupancy (resident warps / max) over time.
    pub sm_occupancy_s: f64,
    pub dram_busy_s: f64,
    pub tensor_active_s: f64,
}

impl FakeGpmCounters {
    /// GPM metrics between two samples: each counter's increase over the elapsed time, in percent.
    pub fn diff(earlier: &Self, later: &Self) -> Result<GpmMetrics, ProblemKind> {
        let elapsed = later.elapsed_s - earlier.elapsed_s;
        if elapsed <= 0.0 {
            return Err(ProblemKind::ReadError(
                "GPM samples are not separated in time".into(),
            ));
        }
        let percent = |a: f64, b: f64| Some(100.0 * (b - a) / elapsed);
        Ok(GpmMetrics {
            sm_activity_percent: percent(earlier.sm_active_s, later.sm_active_s),
            sm_occupancy_percent: percent(earlier.sm_occupancy_s, later.sm_occupancy_s),
            dram_bandwidth_percent: percent(earlier.dram_busy_s, later.dram_busy_s),
            tensor_activity_percent: percent(earlier.tensor_active_s, later.tensor_active_s),
        })
    }
}

/// One scripted reading of a fake device. Values left `None` are reported as unsupported;
/// fields listed in `failing` fail this time with a read error.
#[derive(Debug, Clone, Default)]
pub struct FakeStep {
    pub reading: DeviceReading,
    pub failing: Vec<Field>,
    /// GPM counters at this step; `None` makes GPM unsupported (a pre-Hopper device).
    pub gpm: Option<FakeGpmCounters>,
}

impl FakeStep {
    pub fn new(reading: DeviceReading) -> Self {
        Self {
            reading,
            ..Self::default()
        }
    }

    pub fn failing(mut self, fields: impl IntoIterator<Item = Field>) -> Self {
        self.failing.extend(fields);
        self
    }

    pub fn with_gpm(mut self, counters: FakeGpmCounters) -> Self {
        self.gpm = Some(counters);
        self
    }
}

/// The hardware a simulated GPU pretends to be. All figures are nominal, for plausible demos.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulatedGpu {
    pub name: String,
    pub memory_total_bytes: u64,
    /// Memory in use at zero load (weights and runtime) as a fraction of the total.
    pub idle_memory_fraction: f64,
    /// Memory in use at full load (weights plus a full KV cache).
    pub full_memory_fraction: f64,
    pub idle_power_w: f64,
    pub max_power_w: f64,
    pub power_limit_w: f64,
    pub idle_temperature_c: f64,
    pub max_temperature_c: f64,
    /// Seconds for the temperature to move 63 % of the way to its target.
    pub thermal_time_constant_s: f64,
    pub idle_sm_clock_mhz: u32,
    pub max_sm_clock_mhz: u32,
    pub memory_clock_mhz: u32,
    pub max_pcie_kib_per_s: u32,
    /// Whether it reports GPM metrics (Hopper-class).
    pub gpm: bool,
}

impl SimulatedGpu {
    /// An H100-SXM-like device.
    pub fn h100() -> Self {
        Self {
            name: "Simulated H100 80GB".into(),
            memory_total_bytes: 80 * 1024 * 1024 * 1024,
            idle_memory_fraction: 0.2,
            full_memory_fraction: 0.9,
            idle_power_w: 70.0,
            max_power_w: 690.0,
            power_limit_w: 700.0,
            idle_temperature_c: 32.0,
            max_temperature_c: 74.0,
            thermal_time_constant_s: 30.0,
            idle_sm_clock_mhz: 345,
            max_sm_clock_mhz: 1980,
            memory_clock_mhz: 2619,
            max_pcie_kib_per_s: 4 * 1024 * 1024,
            gpm: true,
        }
    }
}

impl Default for SimulatedGpu {
    fn default() -> Self {
        Self::h100()
    }
}

/// Where a simulated GPU's load comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Load {
    /// Set from outside (the engine simulator), 0–1.
    Manual(f64),
    /// A slow sine wave between 0.2 and 0.9, for standalone demos.
    Wave { period_s: f64, phase: f64 },
}

/// A fake device: its identity and how its readings are produced.
pub struct FakeDevice {
    info: DeviceInfo,
    behaviour: Behaviour,
}

enum Behaviour {
    Scripted(Box<Script>),
    Simulated(Box<Simulated>),
}

impl FakeDevice {
    /// Readings from a script: each read takes the next step; the last step repeats.
    pub fn scripted(info: DeviceInfo, steps: impl IntoIterator<Item = FakeStep>) -> Self {
        let steps: VecDeque<FakeStep> = steps.into_iter().collect();
        Self {
            info,
            behaviour: Behaviour::Scripted(Box::new(Script {
                current: steps.front().cloned().unwrap_or_default(),
                pending: steps,
            })),
        }
    }

    /// A simulated GPU following a load signal (0 until [`FakeControl::set_load`] is called).
    pub fn simulated(index: u32, spec: SimulatedGpu) -> Self {
        Self::simulated_with(index, spec, Load::Manual(0.0))
    }

    /// A simulated GPU whose load is a slow wave (period in seconds), phase-shifted per index so
    /// several devices do not move in lockstep.
    pub fn simulated_wave(index: u32, spec: SimulatedGpu, period: Duration) -> Self {
        let load = Load::Wave {
            period_s: period.as_secs_f64().max(1.0),
            phase: f64::from(index) * 0.9,
        };
        Self::simulated_with(index, spec, load)
    }

    fn simulated_with(index: u32, spec: SimulatedGpu, load: Load) -> Self {
        let info = DeviceInfo {
            index,
            uuid: format!("sim-gpu-{index}"),
            name: spec.name.clone(),
            vendor: VENDOR_SIMULATED.to_owned(),
        };
        Self {
            info,
            behaviour: Behaviour::Simulated(Box::new(Simulated::new(spec, load))),
        }
    }
}

struct Script {
    pending: VecDeque<FakeStep>,
    /// The step the last read returned; GPM samples come from it.
    current: FakeStep,
}

impl Script {
    fn advance(&mut self) -> &FakeStep {
        if self.pending.len() > 1 {
            self.current = self.pending.pop_front().unwrap_or_default();
        } else if let Some(last) = self.pending.front() {
            self.current = last.clone();
        }
        &self.current
    }
}

/// The fake's time: real, or advanced by hand so tests are deterministic.
#[derive(Debug, Clone, Copy)]
enum Clock {
    Real(Instant),
    Manual(Duration),
}

impl Clock {
    fn elapsed(&self) -> Duration {
        match self {
            Clock::Real(start) => start.elapsed(),
            Clock::Manual(elapsed) => *elapsed,
        }
    }
}

struct Shared {
    devices: Vec<Behaviour>,
    xids: Vec<XidEvent>,
    clock: Clock,
}

/// A [`DeviceSource`] over fake devices. Control it (load, XID events, time) through the
/// [`FakeControl`] from [`FakeSource::control`], which stays usable after the source has moved
/// into a monitor task.
pub struct FakeSource {
    devices: Vec<DeviceInfo>,
    shared: Arc<Mutex<Shared>>,
}

/// A handle that steers a [`FakeSource`] from outside.
#[derive(Clone)]
pub struct FakeControl {
    shared: Arc<Mutex<Shared>>,
}

impl FakeSource {
    pub fn new(devices: impl IntoIterator<Item = FakeDevice>) -> Self {
        let (devices, behaviours) = devices.into_iter().map(|d| (d.info, d.behaviour)).unzip();
        Self {
            devices,
            shared: Arc::new(Mutex::new(Shared {
                devices: behaviours,
                xids: Vec::new(),
                clock: Clock::Real(Instant::now()),
            })),
        }
    }

    /// `n` simulated GPUs of the given kind, all following loads set through [`FakeControl`].
    pub fn simulated(n: u32, spec: &SimulatedGpu) -> Self {
        Self::new((0..n).map(|i| FakeDevice::simulated(i, spec.clone())))
    }

    /// `n` simulated H100s under a wave load: the standalone demo (`gpu-agent --fake N`).
    pub fn demo(n: u32) -> Self {
        let period = Duration::from_secs(120);
        Self::new((0..n).map(|i| FakeDevice::simulated_wave(i, SimulatedGpu::h100(), period)))
    }

    /// Time stands still until [`FakeControl::advance`] moves it (for deterministic tests of
    /// energy, temperature and GPM on simulated devices).
    pub fn with_manual_clock(self) -> Self {
        lock(&self.shared).clock = Clock::Manual(Duration::ZERO);
        self
    }

    /// Keeps only the selected devices (same rules as NVML device selection).
    pub fn select(self, selection: &DeviceSelection) -> Result<Self, GpuError> {
        let keep = selection.apply(&self.devices)?;
        let mut shared = lock(&self.shared);
        let behaviours = std::mem::take(&mut shared.devices);
        shared.devices = behaviours
            .into_iter()
            .enumerate()
            .filter(|(i, _)| keep.contains(i))
            .map(|(_, b)| b)
            .collect();
        drop(shared);
        let devices = self
            .devices
            .iter()
            .enumerate()
            .filter(|(i, _)| keep.contains(i))
            .map(|(_, d)| d.clone())
            .collect();
        Ok(Self {
            devices,
            shared: Arc::clone(&self.shared),
        })
    }

    pub fn control(&self) -> FakeControl {
        FakeControl {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl FakeControl {
    /// Sets a simulated device's load (clamped to 0–1). Ignored for scripted devices.
    pub fn set_load(&self, device: usize, load: f64) {
        if let Some(Behaviour::Simulated(sim)) = lock(&self.shared).devices.get_mut(device) {
            sim.load = Load::Manual(if load.is_finite() {
                load.clamp(0.0, 1.0)
            } else {
                0.0
            });
        }
    }

    /// Pins a simulated device's memory in use (e.g. to the simulator's KV-cache footprint);
    /// `None` goes back to following the load.
    pub fn set_memory_used(&self, device: usize, bytes: Option<u64>) {
        if let Some(Behaviour::Simulated(sim)) = lock(&self.shared).devices.get_mut(device) {
            sim.memory_used_override = bytes.map(|b| b.min(sim.spec.memory_total_bytes));
        }
    }

    /// Queues a critical XID event, as the NVML event thread would.
    pub fn inject_xid(&self, device: usize, code: Option<u64>) {
        lock(&self.shared).xids.push(XidEvent { device, code });
    }

    /// Moves a manual clock forward; does nothing to a real clock.
    pub fn advance(&self, by: Duration) {
        if let Clock::Manual(elapsed) = &mut lock(&self.shared).clock {
            *elapsed += by;
        }
    }
}

/// A poisoned lock only means a panic elsewhere mid-update; the fake's state is still usable.
fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

impl DeviceSource for FakeSource {
    type GpmSample = FakeGpmCounters;

    fn devices(&self) -> &[DeviceInfo] {
        &self.devices
    }

    fn read(&mut self, device: usize) -> DeviceReading {
        let mut shared = lock(&self.shared);
        let now = shared.clock.elapsed();
        match &mut shared.devices[device] {
            Behaviour::Scripted(script) => scripted_reading(script.advance()),
            Behaviour::Simulated(sim) => {
                sim.advance_to(now);
                sim.reading()
            }
        }
    }

    fn gpm_sample(&mut self, device: usize) -> Result<FakeGpmCounters, ProblemKind> {
        let shared = lock(&self.shared);
        match &shared.devices[device] {
            Behaviour::Scripted(script) => {
                if script.current.failing.contains(&Field::Gpm) {
                    return Err(ProblemKind::ReadError("scripted GPM failure".into()));
                }
                script.current.gpm.ok_or_else(gpm_unsupported)
            }
            Behaviour::Simulated(sim) if sim.spec.gpm => Ok(sim.gpm),
            Behaviour::Simulated(_) => Err(gpm_unsupported()),
        }
    }

    fn gpm_metrics(
        &mut self,
        _device: usize,
        earlier: &FakeGpmCounters,
        later: &FakeGpmCounters,
    ) -> Result<GpmMetrics, ProblemKind> {
        FakeGpmCounters::diff(earlier, later)
    }

    fn drain_xid_events(&mut self, out: &mut Vec<XidEvent>) {
        out.append(&mut lock(&self.shared).xids);
    }
}

fn gpm_unsupported() -> ProblemKind {
    ProblemKind::Unsupported("GPM needs a Hopper or newer GPU".into())
}

/// The step's reading with failing fields blanked and every missing value explained.
fn scripted_reading(step: &FakeStep) -> DeviceReading {
    let mut reading = step.reading.clone();
    reading.problems.clear();
    for field in Field::ALL {
        if matches!(field, Field::Gpm | Field::Xid) {
            continue; // GPM is sampled separately; fake XID delivery always works
        }
        if step.failing.contains(&field) {
            clear(&mut reading, field);
            reading
                .problems
                .push(FieldProblem::read_error(field, "scripted read failure"));
        } else if is_missing(&reading, field) {
            reading.problems.push(FieldProblem::unsupported(
                field,
                "not supported by this fake device",
            ));
        }
    }
    reading
}

fn is_missing(r: &DeviceReading, field: Field) -> bool {
    match field {
        Field::Utilization => r.gpu_utilization_percent.is_none(),
        Field::EncoderUtilization => r.encoder_utilization_percent.is_none(),
        Field::DecoderUtilization => r.decoder_utilization_percent.is_none(),
        Field::Memory => r.memory_used_bytes.is_none(),
        Field::GpuTemperature => r.gpu_temperature_celsius.is_none(),
        Field::MemoryTemperature => r.memory_temperature_celsius.is_none(),
        Field::Power => r.power_milliwatts.is_none(),
        Field::PowerLimit => r.power_limit_milliwatts.is_none(),
        Field::Energy => r.total_energy_millijoules.is_none(),
        Field::SmClock => r.sm_clock_mhz.is_none(),
        Field::MemoryClock => r.memory_clock_mhz.is_none(),
        Field::PcieRx => r.pcie_rx_kib_per_s.is_none(),
        Field::PcieTx => r.pcie_tx_kib_per_s.is_none(),
        Field::ThrottleReasons => r.throttle_reasons.is_none(),
        Field::EccCorrected => r.ecc_corrected_total.is_none(),
        Field::EccUncorrected => r.ecc_uncorrected_total.is_none(),
        Field::RetiredPages => r.retired_pages.is_none(),
        Field::RemappedRows => r.remapped_rows.is_none(),
        Field::Processes => r.processes.is_none(),
        Field::Gpm | Field::Xid => false,
    }
}

fn clear(r: &mut DeviceReading, field: Field) {
    match field {
        Field::Utilization => {
            r.gpu_utilization_percent = None;
            r.memory_utilization_percent = None;
        }
        Field::EncoderUtilization => r.encoder_utilization_percent = None,
        Field::DecoderUtilization => r.decoder_utilization_percent = None,
        Field::Memory => {
            r.memory_used_bytes = None;
            r.memory_total_bytes = None;
        }
        Field::GpuTemperature => r.gpu_temperature_celsius = None,
        Field::MemoryTemperature => r.memory_temperature_celsius = None,
        Field::Power => r.power_milliwatts = None,
        Field::PowerLimit => r.power_limit_milliwatts = None,
        Field::Energy => r.total_energy_millijoules = None,
        Field::SmClock => r.sm_clock_mhz = None,
        Field::MemoryClock => r.memory_clock_mhz = None,
        Field::PcieRx => r.pcie_rx_kib_per_s = None,
        Field::PcieTx => r.pcie_tx_kib_per_s = None,
        Field::ThrottleReasons => r.throttle_reasons = None,
        Field::EccCorrected => r.ecc_corrected_total = None,
        Field::EccUncorrected => r.ecc_uncorrected_total = None,
        Field::RetiredPages => r.retired_pages = None,
        Field::RemappedRows => r.remapped_rows = None,
        Field::Processes => r.processes = None,
        Field::Gpm | Field::Xid => {}
    }
}

/// A load-following GPU model: everything is a simple function of the load, except temperature
/// (first-order lag) and the integrals (energy, GPM counters).
struct Simulated {
    spec: SimulatedGpu,
    load: Load,
    memory_used_override: Option<u64>,
    last: Option<Duration>,
    temperature_c: f64,
    energy_mj: f64,
    gpm: FakeGpmCounters,
}

impl Simulated {
    fn new(spec: SimulatedGpu, load: Load) -> Self {
        Self {
            temperature_c: spec.idle_temperature_c,
            spec,
            load,
            memory_used_override: None,
            last: None,
            energy_mj: 0.0,
            gpm: FakeGpmCounters::default(),
        }
    }

    fn load_at(&self, t: Duration) -> f64 {
        match self.load {
            Load::Manual(load) => load,
            Load::Wave { period_s, phase } => {
                0.55 + 0.35 * (TAU * t.as_secs_f64() / period_s + phase).sin()
            }
        }
    }

    fn power_w(&self, load: f64) -> f64 {
        lerp(self.spec.idle_power_w, self.spec.max_power_w, load).min(self.spec.power_limit_w)
    }

    /// Integrates energy, temperature and GPM counters up to `now` at the current load.
    fn advance_to(&mut self, now: Duration) {
        let dt = self
            .last
            .map_or(0.0, |last| now.saturating_sub(last).as_secs_f64());
        self.last = Some(now);
        if dt == 0.0 {
            return;
        }
        let load = self.load_at(now);
        self.energy_mj += self.power_w(load) * dt * 1000.0;
        let target = lerp(
            self.spec.idle_temperature_c,
            self.spec.max_temperature_c,
            load,
        );
        let approach = 1.0 - (-dt / self.spec.thermal_time_constant_s.max(1e-3)).exp();
        self.temperature_c += (target - self.temperature_c) * approach;
        // Busy fractions of a decode-heavy inference workload: SMs busy with the load, occupancy
        // and tensor use a fraction of that, DRAM bandwidth the limiter.
        self.gpm.elapsed_s += dt;
        self.gpm.sm_active_s += load * dt;
        self.gpm.sm_occupancy_s += 0.45 * load * dt;
        self.gpm.dram_busy_s += 0.8 * load * dt;
        self.gpm.tensor_active_s += 0.35 * load * dt;
    }

    fn reading(&self) -> DeviceReading {
        let spec = &self.spec;
        let load = self.load_at(self.last.unwrap_or_default());
        let memory_used = self.memory_used_override.unwrap_or_else(|| {
            let fraction = lerp(spec.idle_memory_fraction, spec.full_memory_fraction, load);
            (spec.memory_total_bytes as f64 * fraction) as u64
        });
        let percent = |x: f64| (100.0 * x).round() as u32;
        let pcie = (f64::from(spec.max_pcie_kib_per_s) * 0.05 * load) as u32;
        DeviceReading {
            gpu_utilization_percent: Some(percent(load)),
            memory_utilization_percent: Some(percent(0.8 * load)),
            encoder_utilization_percent: Some(0),
            decoder_utilization_percent: Some(0),
            memory_used_bytes: Some(memory_used),
            memory_total_bytes: Some(spec.memory_total_bytes),
            gpu_temperature_celsius: Some(self.temperature_c.round() as u32),
            memory_temperature_celsius: Some((self.temperature_c + 6.0).round() as u32),
            power_milliwatts: Some((self.power_w(load) * 1000.0) as u32),
            power_limit_milliwatts: Some((spec.power_limit_w * 1000.0) as u32),
            total_energy_millijoules: Some(self.energy_mj as u64),
            // Clocks boost as soon as there is any work (full boost from 5 % load).
            sm_clock_mhz: Some(lerp(
                f64::from(spec.idle_sm_clock_mhz),
                f64::from(spec.max_sm_clock_mhz),
                load * 20.0,
            ) as u32),
            memory_clock_mhz: Some(spec.memory_clock_mhz),
            pcie_rx_kib_per_s: Some(pcie),
            pcie_tx_kib_per_s: Some(pcie / 2),
            throttle_reasons: Some(ThrottleReasons {
                gpu_idle: load < 0.01,
                sw_power_cap: self.power_w(load) >= spec.power_limit_w,
                ..ThrottleReasons::default()
            }),
            ecc_corrected_total: Some(0),
            ecc_uncorrected_total: Some(0),
            retired_pages: None,
            remapped_rows: Some(EccCounts::default()),
            processes: Some(Vec::new()),
            problems: vec![FieldProblem::unsupported(
                Field::RetiredPages,
                "Hopper-class GPUs remap rows instead of retiring pages",
            )],
        }
    }
}

fn lerp(a: f64, b: f64, t: f64) -> f64 {
    a + (b - a) * t.clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpm_diff_is_the_busy_fraction_of_the_interval() {
        let earlier = FakeGpmCounters {
            elapsed_s: 10.0,
            sm_active_s: 4.0,
            sm_occupancy_s: 1.0,
            dram_busy_s: 2.0,
            tensor_active_s: 0.5,
        };
        let later = FakeGpmCounters {
            elapsed_s: 12.0,
            sm_active_s: 5.5,
            sm_occupancy_s: 1.5,
            dram_busy_s: 3.0,
            tensor_active_s: 0.5,
        };
        let m = FakeGpmCounters::diff(&earlier, &later).unwrap();
        assert_eq!(m.sm_activity_percent, Some(75.0));
        assert_eq!(m.sm_occupancy_percent, Some(25.0));
        assert_eq!(m.dram_bandwidth_percent, Some(50.0));
        assert_eq!(m.tensor_activity_percent, Some(0.0));
        assert!(matches!(
            FakeGpmCounters::diff(&later, &later),
            Err(ProblemKind::ReadError(_))
        ));
    }

    #[test]
    fn scripted_steps_advance_and_the_last_repeats() {
        let info = DeviceInfo {
            index: 0,
            uuid: "GPU-x".into(),
            name: "x".into(),
            vendor: "x".into(),
        };
        let step = |util| {
            FakeStep::new(DeviceReading {
                gpu_utilization_percent: Some(util),
                memory_utilization_percent: Some(1),
                ..DeviceReading::default()
            })
        };
        let mut source = FakeSource::new([FakeDevice::scripted(info, [step(10), step(20)])]);
        let utils: Vec<_> = (0..3)
            .map(|_| source.read(0).gpu_utilization_percent)
            .collect();
        assert_eq!(utils, [Some(10), Some(20), Some(20)]);
    }

    #[test]
    fn scripted_missing_values_are_unsupported_and_failing_ones_are_read_errors() {
        let info = DeviceInfo {
            index: 0,
            uuid: "GPU-x".into(),
            name: "x".into(),
            vendor: "x".into(),
        };
        let reading = DeviceReading {
            power_milliwatts: Some(100_000),
            total_energy_millijoules: Some(5),
            ..DeviceReading::default()
        };
        let step = FakeStep::new(reading).failing([Field::Energy]);
        let mut source = FakeSource::new([FakeDevice::scripted(info, [step])]);
        let r = source.read(0);
        assert_eq!(r.power_milliwatts, Some(100_000));
        assert_eq!(r.total_energy_millijoules, None);
        let kind_of = |field| {
            r.problems
                .iter()
                .find(|p| p.field == field)
                .map(|p| matches!(p.kind, ProblemKind::ReadError(_)))
        };
        assert_eq!(
            kind_of(Field::Energy),
            Some(true),
            "energy failed this time"
        );
        assert_eq!(kind_of(Field::SmClock), Some(false), "clock unsupported");
        assert_eq!(kind_of(Field::Power), None, "power present");
        assert!(matches!(
            source.gpm_sample(0),
            Err(ProblemKind::Unsupported(_))
        ));
    }

    #[test]
    fn simulated_gpu_follows_its_load() {
        let mut source = FakeSource::simulated(2, &SimulatedGpu::h100()).with_manual_clock();
        let control = source.control();
        assert_eq!(source.devices()[1].vendor, VENDOR_SIMULATED);

        control.set_load(0, 0.0);
        control.set_load(1, 1.0);
        let _ = (source.read(0), source.read(1));
        control.advance(Duration::from_secs(10));
        let (idle, busy) = (source.read(0), source.read(1));

        assert_eq!(idle.gpu_utilization_percent, Some(0));
        assert_eq!(busy.gpu_utilization_percent, Some(100));
        assert!(busy.power_milliwatts > idle.power_milliwatts);
        assert!(busy.memory_used_bytes > idle.memory_used_bytes);
        assert!(busy.gpu_temperature_celsius > idle.gpu_temperature_celsius);
        // 10 s at 70 W idle = 700 J = 700 000 mJ.
        assert_eq!(idle.total_energy_millijoules, Some(700_000));
        assert!(idle.throttle_reasons.unwrap().gpu_idle);

        let before = source.gpm_sample(1).unwrap();
        control.advance(Duration::from_secs(2));
        let _ = source.read(1);
        let after = source.gpm_sample(1).unwrap();
        let m = source.gpm_metrics(1, &before, &after).unwrap();
        assert_eq!(m.sm_activity_percent, Some(100.0));

        control.set_memory_used(1, Some(1234));
        assert_eq!(source.read(1).memory_used_bytes, Some(1234));
    }

    #[test]
    fn selection_keeps_the_chosen_fake_devices() {
        let source = FakeSource::simulated(4, &SimulatedGpu::h100());
        let picked = source
            .select(&"1,3".parse::<DeviceSelection>().unwrap())
            .unwrap();
        let indices: Vec<u32> = picked.devices().iter().map(|d| d.index).collect();
        assert_eq!(indices, [1, 3]);
        assert_eq!(lock(&picked.shared).devices.len(), 2);
    }
}
