//! The NVML device source (nvml-wrapper). `libnvidia-ml.so.1` is loaded at run time, so this
//! builds and runs everywhere; without the library [`NvmlSource::new`] returns
//! [`GpuError::NvmlLibraryNotFound`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use nvml_wrapper::bitmasks::device::ThrottleReasons as NvmlThrottle;
use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enum_wrappers::device::{
    Clock, EccCounter, MemoryError, PcieUtilCounter, RetirementCause, TemperatureSensor,
};
use nvml_wrapper::enums::device::{SampleValue, UsedGpuMemory};
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::enums::gpm::GpmMetricId;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::struct_wrappers::device::FieldValueSample;
use nvml_wrapper::structs::device::FieldId;
use nvml_wrapper::sys_exports::field_id::{
    NVML_FI_DEV_MEMORY_TEMP, NVML_FI_DEV_REMAPPED_COR, NVML_FI_DEV_REMAPPED_UNC,
};
use nvml_wrapper::{Device, EventSet, GpmSample, Nvml};

use crate::reading::{
    DeviceInfo, DeviceReading, EccCounts, Field, FieldProblem, GpmMetrics, ProblemKind,
    ProcessMemory, ThrottleReasons, XidEvent,
};
use crate::source::{DeviceSelection, DeviceSource, GpuError};

/// How long the XID thread blocks in one `EventSet::wait`; also the longest a drop of the
/// source waits for that thread to notice it should stop.
const XID_WAIT_MS: u32 = 500;

/// Processes reported per device unless told otherwise.
pub const DEFAULT_TOP_PROCESSES: usize = 5;

/// Reads NVIDIA GPUs through NVML.
pub struct NvmlSource {
    nvml: &'static Nvml,
    devices: Vec<DeviceInfo>,
    handles: Vec<Device<'static>>,
    /// `Err(reason)` where the device has no GPM.
    gpm_support: Vec<Result<(), String>>,
    /// `Some(reason)` where XID events cannot be delivered for the device.
    xid_unsupported: Vec<Option<String>>,
    xid: Option<XidListener>,
    top_processes: usize,
}

impl NvmlSource {
    /// Every GPU NVML sees.
    pub fn new() -> Result<Self, GpuError> {
        Self::open(&DeviceSelection::All)
    }

    /// The selected GPUs. Starts a background thread that listens for XID events.
    pub fn open(selection: &DeviceSelection) -> Result<Self, GpuError> {
        let nvml = shared_nvml()?;
        let present = enumerate(nvml)?;
        let chosen =
            selection.apply(&present.iter().map(|(i, _)| i.clone()).collect::<Vec<_>>())?;
        let (devices, handles): (Vec<_>, Vec<_>) = present
            .into_iter()
            .enumerate()
            .filter(|(position, _)| chosen.contains(position))
            .map(|(_, pair)| pair)
            .unzip();

        let gpm_support = handles.iter().map(gpm_support).collect();
        let (xid, xid_unsupported) = XidListener::start(nvml, &devices, &handles);
        Ok(Self {
            nvml,
            devices,
            handles,
            gpm_support,
            xid_unsupported,
            xid,
            top_processes: DEFAULT_TOP_PROCESSES,
        })
    }

    /// Report at most `n` processes per device (largest GPU memory first); 0 turns it off.
    pub fn with_top_processes(mut self, n: usize) -> Self {
        self.top_processes = n;
        self
    }
}

/// NVML is initialised once per process and kept: `Device`, `GpmSample` and `EventSet` borrow
/// it, and a `'static` borrow lets the source own them without self-reference. NVML reference-
/// counts initialisation, so never shutting it down costs nothing but the loaded library.
fn shared_nvml() -> Result<&'static Nvml, GpuError> {
    static NVML: OnceLock<Nvml> = OnceLock::new();
    static INIT: Mutex<()> = Mutex::new(());
    if let Some(nvml) = NVML.get() {
        return Ok(nvml);
    }
    let _serialised = INIT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(nvml) = NVML.get() {
        return Ok(nvml);
    }
    let nvml = Nvml::init().map_err(init_error)?;
    Ok(NVML.get_or_init(|| nvml))
}

fn init_error(error: NvmlError) -> GpuError {
    match error {
        NvmlError::LibloadingError(_) | NvmlError::LibraryNotFound => GpuError::NvmlLibraryNotFound,
        NvmlError::DriverNotLoaded => GpuError::NvmlUnavailable("NVIDIA driver not loaded".into()),
        other => GpuError::NvmlUnavailable(other.to_string()),
    }
}

/// Every GPU that can be identified. One that cannot (fallen off the bus at start-up) is
/// skipped with a warning rather than taking the others down with it.
fn enumerate(nvml: &'static Nvml) -> Result<Vec<(DeviceInfo, Device<'static>)>, GpuError> {
    let count = nvml
        .device_count()
        .map_err(|e| GpuError::Enumeration(e.to_string()))?;
    let mut devices = Vec::with_capacity(count as usize);
    for index in 0..count {
        let identified = nvml.device_by_index(index).and_then(|device| {
            let info = DeviceInfo {
                index,
                uuid: device.uuid()?,
                name: device.name()?,
                vendor: infermon::contract::value::VENDOR_NVIDIA.to_owned(),
            };
            Ok((info, device))
        });
        match identified {
            Ok(pair) => devices.push(pair),
            Err(e) => {
                tracing::warn!(gpu.index = index, error = %e, "skipping a GPU NVML cannot identify")
            }
        }
    }
    Ok(devices)
}

fn gpm_support(device: &Device<'static>) -> Result<(), String> {
    match device.gpm_support() {
        Ok(true) => Ok(()),
        Ok(false) => Err("GPM needs a Hopper or newer GPU".to_owned()),
        Err(e) => Err(format!("GPM support query failed: {e}")),
    }
}

/// Whether an NVML error means "this will never work here" (series absent, logged once) or
/// "try again next poll" (counted as a read error).
fn classify(error: NvmlError) -> ProblemKind {
    match error {
        NvmlError::NotSupported => ProblemKind::Unsupported("not supported by this device".into()),
        NvmlError::NoPermission => ProblemKind::Unsupported("no permission".into()),
        NvmlError::FunctionNotFound | NvmlError::FailedToLoadSymbol(_) => {
            ProblemKind::Unsupported("not available in this driver version".into())
        }
        other => ProblemKind::ReadError(other.to_string()),
    }
}

/// The value, or `None` with the reason recorded.
fn take<T>(
    problems: &mut Vec<FieldProblem>,
    field: Field,
    result: Result<T, NvmlError>,
) -> Option<T> {
    result
        .map_err(|e| {
            problems.push(FieldProblem {
                field,
                kind: classify(e),
            })
        })
        .ok()
}

impl DeviceSource for NvmlSource {
    type GpmSample = GpmSample<'static>;

    fn devices(&self) -> &[DeviceInfo] {
        &self.devices
    }

    fn read(&mut self, device: usize) -> DeviceReading {
        let d = &self.handles[device];
        let mut r = DeviceReading::default();
        let p = &mut r.problems;

        if let Some(u) = take(p, Field::Utilization, d.utilization_rates()) {
            r.gpu_utilization_percent = Some(u.gpu);
            r.memory_utilization_percent = Some(u.memory);
        }
        r.encoder_utilization_percent =
            take(p, Field::EncoderUtilization, d.encoder_utilization()).map(|u| u.utilization);
        r.decoder_utilization_percent =
            take(p, Field::DecoderUtilization, d.decoder_utilization()).map(|u| u.utilization);
        if let Some(m) = take(p, Field::Memory, d.memory_info()) {
            r.memory_used_bytes = Some(m.used);
            r.memory_total_bytes = Some(m.total);
        }
        r.gpu_temperature_celsius = take(
            p,
            Field::GpuTemperature,
            d.temperature(TemperatureSensor::Gpu),
        );
        r.power_milliwatts = take(p, Field::Power, d.power_usage());
        r.power_limit_milliwatts = take(p, Field::PowerLimit, d.enforced_power_limit());
        r.total_energy_millijoules = take(p, Field::Energy, d.total_energy_consumption());
        r.sm_clock_mhz = take(p, Field::SmClock, d.clock_info(Clock::SM));
        r.memory_clock_mhz = take(p, Field::MemoryClock, d.clock_info(Clock::Memory));
        r.pcie_rx_kib_per_s = take(
            p,
            Field::PcieRx,
            d.pcie_throughput(PcieUtilCounter::Receive),
        );
        r.pcie_tx_kib_per_s = take(p, Field::PcieTx, d.pcie_throughput(PcieUtilCounter::Send));
        r.throttle_reasons =
            take(p, Field::ThrottleReasons, d.current_throttle_reasons()).map(throttle_reasons);
        r.ecc_corrected_total = take(
            p,
            Field::EccCorrected,
            d.total_ecc_errors(MemoryError::Corrected, EccCounter::Volatile),
        );
        r.ecc_uncorrected_total = take(
            p,
            Field::EccUncorrected,
            d.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile),
        );
        r.retired_pages = take(p, Field::RetiredPages, retired_pages(d));
        read_field_values(d, &mut r);
        if self.top_processes > 0 {
            let processes = top_processes(d, self.top_processes);
            r.processes = take(&mut r.problems, Field::Processes, processes);
        }
        if let Some(reason) = &self.xid_unsupported[device] {
            r.problems
                .push(FieldProblem::unsupported(Field::Xid, reason.clone()));
        }
        r
    }

    fn gpm_sample(&mut self, device: usize) -> Result<Self::GpmSample, ProblemKind> {
        if let Err(reason) = &self.gpm_support[device] {
            return Err(ProblemKind::Unsupported(reason.clone()));
        }
        self.handles[device].gpm_sample().map_err(classify)
    }

    fn gpm_metrics(
        &mut self,
        _device: usize,
        earlier: &Self::GpmSample,
        later: &Self::GpmSample,
    ) -> Result<GpmMetrics, ProblemKind> {
        const IDS: [GpmMetricId; 4] = [
            GpmMetricId::SmUtil,
            GpmMetricId::SmOccupancy,
            GpmMetricId::DramBwUtil,
            GpmMetricId::AnyTensorUtil,
        ];
        let results = nvml_wrapper::gpm::gpm_metrics_get(self.nvml, earlier, later, &IDS)
            .map_err(classify)?;
        let mut values = results.into_iter().map(|r| r.ok().map(|m| m.value));
        let mut next = || values.next().flatten();
        let metrics = GpmMetrics {
            sm_activity_percent: next(),
            sm_occupancy_percent: next(),
            dram_bandwidth_percent: next(),
            tensor_activity_percent: next(),
        };
        if metrics == GpmMetrics::default() {
            return Err(ProblemKind::ReadError(
                "no GPM metric could be computed".into(),
            ));
        }
        Ok(metrics)
    }

    fn drain_xid_events(&mut self, out: &mut Vec<XidEvent>) {
        if let Some(xid) = &self.xid {
            out.extend(xid.events.try_iter());
        }
    }
}

fn throttle_reasons(bits: NvmlThrottle) -> ThrottleReasons {
    ThrottleReasons {
        gpu_idle: bits.contains(NvmlThrottle::GPU_IDLE),
        applications_clocks: bits.contains(NvmlThrottle::APPLICATIONS_CLOCKS_SETTING),
        sw_power_cap: bits.contains(NvmlThrottle::SW_POWER_CAP),
        hw_slowdown: bits.contains(NvmlThrottle::HW_SLOWDOWN),
        sync_boost: bits.contains(NvmlThrottle::SYNC_BOOST),
        sw_thermal: bits.contains(NvmlThrottle::SW_THERMAL_SLOWDOWN),
        hw_thermal: bits.contains(NvmlThrottle::HW_THERMAL_SLOWDOWN),
        hw_power_brake: bits.contains(NvmlThrottle::HW_POWER_BRAKE_SLOWDOWN),
        display_clocks: bits.contains(NvmlThrottle::DISPLAY_CLOCK_SETTING),
    }
}

/// Page retirement exists before Ampere; Ampere and newer answer `NotSupported` and remap rows.
fn retired_pages(d: &Device<'static>) -> Result<EccCounts, NvmlError> {
    Ok(EccCounts {
        corrected: d
            .retired_pages(RetirementCause::MultipleSingleBitEccErrors)?
            .len() as u64,
        uncorrected: d.retired_pages(RetirementCause::DoubleBitEccError)?.len() as u64,
    })
}

/// Memory temperature and remapped rows have no dedicated NVML call; they are field values,
/// fetched together in one round trip.
fn read_field_values(d: &Device<'static>, r: &mut DeviceReading) {
    let ids = [
        FieldId(NVML_FI_DEV_MEMORY_TEMP),
        FieldId(NVML_FI_DEV_REMAPPED_COR),
        FieldId(NVML_FI_DEV_REMAPPED_UNC),
    ];
    let samples = match d.field_values_for(&ids) {
        Ok(samples) => samples,
        Err(e) => {
            let kind = classify(e);
            for field in [Field::MemoryTemperature, Field::RemappedRows] {
                r.problems.push(FieldProblem {
                    field,
                    kind: kind.clone(),
                });
            }
            return;
        }
    };
    let mut values = samples.into_iter().map(field_value);
    let (temp, cor, unc) = (values.next(), values.next(), values.next());
    let p = &mut r.problems;
    r.memory_temperature_celsius = take(p, Field::MemoryTemperature, flatten(temp))
        .map(|v| u32::try_from(v).unwrap_or(u32::MAX));
    let rows = flatten(cor).and_then(|c| flatten(unc).map(|u| (c, u)));
    r.remapped_rows =
        take(p, Field::RemappedRows, rows).map(|(corrected, uncorrected)| EccCounts {
            corrected,
            uncorrected,
        });
}

fn field_value(sample: Result<FieldValueSample, NvmlError>) -> Result<u64, NvmlError> {
    match sample?.value? {
        SampleValue::U32(v) => Ok(u64::from(v)),
        SampleValue::U64(v) => Ok(v),
        SampleValue::I64(v) => Ok(v.max(0) as u64),
        SampleValue::F64(v) => Ok(v.max(0.0) as u64),
    }
}

fn flatten(v: Option<Result<u64, NvmlError>>) -> Result<u64, NvmlError> {
    v.unwrap_or(Err(NvmlError::NotSupported))
}

/// Compute processes by GPU memory, largest first, at most `n`.
fn top_processes(d: &Device<'static>, n: usize) -> Result<Vec<ProcessMemory>, NvmlError> {
    let mut processes: Vec<ProcessMemory> = d
        .running_compute_processes()?
        .into_iter()
        .filter_map(|p| match p.used_gpu_memory {
            UsedGpuMemory::Used(bytes) => Some((p.pid, bytes)),
            UsedGpuMemory::Unavailable => None,
        })
        .map(|(pid, used_bytes)| ProcessMemory {
            pid,
            executable: executable_name(pid),
            used_bytes,
        })
        .collect();
    processes.sort_by(|a, b| b.used_bytes.cmp(&a.used_bytes).then(a.pid.cmp(&b.pid)));
    processes.truncate(n);
    Ok(processes)
}

/// The process's command name, where this process can see it (a containerised agent without
/// the host PID namespace cannot).
fn executable_name(pid: u32) -> Option<String> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    let name = comm.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// Critical XID events, delivered by NVML on a background thread blocked in `EventSet::wait`.
struct XidListener {
    events: mpsc::Receiver<XidEvent>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl XidListener {
    /// Registers every device that supports XID events and starts the thread. Returns, per
    /// device, why XID events are unavailable where they are.
    fn start(
        nvml: &'static Nvml,
        devices: &[DeviceInfo],
        handles: &[Device<'static>],
    ) -> (Option<Self>, Vec<Option<String>>) {
        let mut unsupported: Vec<Option<String>> = handles
            .iter()
            .map(|d| match d.supported_event_types() {
                Ok(types) if types.contains(EventTypes::CRITICAL_XID_ERROR) => None,
                Ok(_) => Some("XID events not supported by this device".to_owned()),
                Err(e) => Some(format!("XID event support query failed: {e}")),
            })
            .collect();
        let set = match register_xid(nvml, handles, &mut unsupported) {
            Ok(Some(set)) => set,
            Ok(None) => return (None, unsupported),
            Err(e) => {
                let reason = format!("cannot create an NVML event set: {e}");
                return (None, vec![Some(reason); handles.len()]);
            }
        };

        let uuids: Vec<String> = devices.iter().map(|d| d.uuid.clone()).collect();
        let (tx, events) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("infermon-gpu-xid".into())
            .spawn(move || listen(set, &uuids, &tx, &thread_stop));
        match thread {
            Ok(thread) => (
                Some(Self {
                    events,
                    stop,
                    thread: Some(thread),
                }),
                unsupported,
            ),
            Err(e) => {
                let reason = format!("cannot start the XID thread: {e}");
                (None, vec![Some(reason); handles.len()])
            }
        }
    }
}

impl Drop for XidListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // Returns within one XID_WAIT_MS wait.
            let _ = thread.join();
        }
    }
}

/// Registers the devices not yet marked unsupported on one event set. NVML frees the set when a
/// registration fails, so on failure the device is marked and the set rebuilt without it.
fn register_xid(
    nvml: &'static Nvml,
    handles: &[Device<'static>],
    unsupported: &mut [Option<String>],
) -> Result<Option<EventSet<'static>>, NvmlError> {
    loop {
        let candidates: Vec<usize> = (0..handles.len())
            .filter(|&i| unsupported[i].is_none())
            .collect();
        if candidates.is_empty() {
            return Ok(None);
        }
        let set = nvml.create_event_set()?;
        let registered = candidates.iter().try_fold(set, |set, &i| {
            handles[i]
                .register_events(EventTypes::CRITICAL_XID_ERROR, set)
                .map_err(|e| (i, e.error))
        });
        match registered {
            Ok(set) => return Ok(Some(set)),
            Err((i, e)) => unsupported[i] = Some(format!("XID event registration failed: {e}")),
        }
    }
}

fn listen(
    set: EventSet<'static>,
    uuids: &[String],
    tx: &mpsc::Sender<XidEvent>,
    stop: &AtomicBool,
) {
    let mut warned = false;
    while !stop.load(Ordering::Relaxed) {
        match set.wait(XID_WAIT_MS) {
            Ok(event) => {
                let Some(device) = event
                    .device
                    .uuid()
                    .ok()
                    .and_then(|uuid| uuids.iter().position(|u| *u == uuid))
                else {
                    continue;
                };
                let code = match event.event_data {
                    Some(XidError::Value(code)) => Some(code),
                    Some(XidError::Unknown) | None => None,
                };
                if tx.send(XidEvent { device, code }).is_err() {
                    return; // the source is gone
                }
            }
            Err(NvmlError::Timeout) => {}
            Err(e) => {
                // GpuLost and friends repeat on every call: say so once and avoid a busy loop.
                if !warned {
                    tracing::warn!(error = %e, "waiting for NVML XID events failed; retrying");
                    warned = true;
                }
                std::thread::sleep(std::time::Duration::from_millis(u64::from(XID_WAIT_MS)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine class has no NVIDIA driver. Where one is installed the test still checks
    /// that opening NVML either works or fails with a one-line "NVML not available" error.
    #[test]
    fn without_nvml_the_source_reports_the_one_clear_line() {
        match NvmlSource::new() {
            Err(GpuError::NvmlLibraryNotFound) => assert_eq!(
                GpuError::NvmlLibraryNotFound.to_string(),
                "NVML not available: libnvidia-ml.so.1 not found — GPU metrics disabled"
            ),
            Err(e @ GpuError::NvmlUnavailable(_)) => {
                let line = e.to_string();
                assert!(line.starts_with("NVML not available: "), "{line}");
                assert!(!line.contains('\n'), "{line}");
            }
            Err(other) => panic!("unexpected error opening NVML: {other}"),
            Ok(source) => assert_eq!(
                source.devices().len(),
                source.handles.len(),
                "every device has a handle"
            ),
        }
    }

    #[test]
    fn library_load_failures_map_to_not_found() {
        assert_eq!(
            init_error(NvmlError::LibraryNotFound),
            GpuError::NvmlLibraryNotFound
        );
        assert_eq!(
            init_error(NvmlError::DriverNotLoaded).to_string(),
            "NVML not available: NVIDIA driver not loaded — GPU metrics disabled"
        );
    }

    #[test]
    fn nvml_errors_split_into_unsupported_and_transient() {
        for error in [NvmlError::NotSupported, NvmlError::NoPermission] {
            let kind = classify(error);
            assert!(matches!(kind, ProblemKind::Unsupported(_)), "{kind:?}");
        }
        for error in [NvmlError::GpuLost, NvmlError::Unknown, NvmlError::Timeout] {
            let kind = classify(error);
            assert!(matches!(kind, ProblemKind::ReadError(_)), "{kind:?}");
        }
    }

    #[test]
    fn throttle_bits_map_to_reasons() {
        let reasons =
            throttle_reasons(NvmlThrottle::SW_POWER_CAP | NvmlThrottle::HW_THERMAL_SLOWDOWN);
        let active: Vec<&str> = reasons
            .labelled()
            .iter()
            .filter(|(_, on)| *on)
            .map(|(label, _)| *label)
            .collect();
        assert_eq!(
            active,
            [
                infermon::contract::value::THROTTLE_SW_POWER_CAP,
                infermon::contract::value::THROTTLE_HW_THERMAL
            ]
        );
    }
}
