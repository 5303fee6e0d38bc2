//! What a [`DeviceSource`](crate::DeviceSource) hands the poller: device identities and raw
//! readings in the units NVML uses (percent, mW, mJ, MHz, KiB/s). Conversion to OpenTelemetry
//! units happens in one place, the poller, so every source gets it right the same way.

use std::fmt;

use infermon::contract::{metric, value};
use serde::Serialize;

/// Identity of one GPU, as attached to every series it produces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceInfo {
    /// NVML index (`gpu.index`).
    pub index: u32,
    /// Stable identifier (`hw.id`): NVML's UUID, e.g. `GPU-5e1b…`.
    pub uuid: String,
    /// Product name (`hw.name`), e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// `hw.vendor`: `NVIDIA`, or `infermon-simulated` for simulated devices.
    pub vendor: String,
}

/// One reading of one device. Every value is optional: `None` means the value is not
/// available this time, and `problems` says why (unsupported by the device, or a transient
/// read error). A source never reports an unavailable value as zero.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceReading {
    /// Percent of time a kernel was running.
    pub gpu_utilization_percent: Option<u32>,
    /// Percent of time the memory controller was busy.
    pub memory_utilization_percent: Option<u32>,
    pub encoder_utilization_percent: Option<u32>,
    pub decoder_utilization_percent: Option<u32>,
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    pub gpu_temperature_celsius: Option<u32>,
    pub memory_temperature_celsius: Option<u32>,
    pub power_milliwatts: Option<u32>,
    pub power_limit_milliwatts: Option<u32>,
    /// Energy since the driver loaded (NVML's total-energy counter).
    pub total_energy_millijoules: Option<u64>,
    pub sm_clock_mhz: Option<u32>,
    pub memory_clock_mhz: Option<u32>,
    /// PCIe receive throughput (KiB/s, NVML samples a short window).
    pub pcie_rx_kib_per_s: Option<u32>,
    pub pcie_tx_kib_per_s: Option<u32>,
    pub throttle_reasons: Option<ThrottleReasons>,
    /// Corrected ECC errors since the driver loaded.
    pub ecc_corrected_total: Option<u64>,
    /// Uncorrected ECC errors since the driver loaded.
    pub ecc_uncorrected_total: Option<u64>,
    pub retired_pages: Option<EccCounts>,
    pub remapped_rows: Option<EccCounts>,
    /// Processes using the device, largest memory first (the source caps how many).
    pub processes: Option<Vec<ProcessMemory>>,
    /// Why each `None` above is `None`.
    pub problems: Vec<FieldProblem>,
}

/// A pair of counts split by ECC error class (retired pages, remapped rows).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EccCounts {
    /// Caused by (many) corrected single-bit errors.
    pub corrected: u64,
    /// Caused by uncorrected (double-bit) errors.
    pub uncorrected: u64,
}

/// GPU memory held by one process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessMemory {
    pub pid: u32,
    /// Executable name where the host's process table shows it (not inside every container).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executable: Option<String>,
    pub used_bytes: u64,
}

/// Clock throttle reasons, one flag per reason NVML reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThrottleReasons {
    pub gpu_idle: bool,
    pub applications_clocks: bool,
    pub sw_power_cap: bool,
    pub hw_slowdown: bool,
    pub sync_boost: bool,
    pub sw_thermal: bool,
    pub hw_thermal: bool,
    pub hw_power_brake: bool,
    pub display_clocks: bool,
}

impl ThrottleReasons {
    /// Every reason with its `hw.gpu.throttle.reason` label and whether it is active.
    pub fn labelled(&self) -> [(&'static str, bool); 9] {
        [
            (value::THROTTLE_GPU_IDLE, self.gpu_idle),
            (
                value::THROTTLE_APPLICATIONS_CLOCKS,
                self.applications_clocks,
            ),
            (value::THROTTLE_SW_POWER_CAP, self.sw_power_cap),
            (value::THROTTLE_HW_SLOWDOWN, self.hw_slowdown),
            (value::THROTTLE_SYNC_BOOST, self.sync_boost),
            (value::THROTTLE_SW_THERMAL, self.sw_thermal),
            (value::THROTTLE_HW_THERMAL, self.hw_thermal),
            (value::THROTTLE_HW_POWER_BRAKE, self.hw_power_brake),
            (value::THROTTLE_DISPLAY_CLOCKS, self.display_clocks),
        ]
    }
}

/// GPM metrics between two samples, in percent as NVML reports them. NVML computes each metric
/// separately, so one can be missing while the others are present.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GpmMetrics {
    pub sm_activity_percent: Option<f64>,
    pub sm_occupancy_percent: Option<f64>,
    pub dram_bandwidth_percent: Option<f64>,
    pub tensor_activity_percent: Option<f64>,
}

/// A critical XID error reported by the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XidEvent {
    /// Position of the device in the source's [`devices`](crate::DeviceSource::devices).
    pub device: usize,
    /// The XID code; `None` when the driver could not say which.
    pub code: Option<u64>,
}

/// One group of values a source reads with one driver call; the unit in which availability
/// and errors are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    Utilization,
    EncoderUtilization,
    DecoderUtilization,
    Memory,
    GpuTemperature,
    MemoryTemperature,
    Power,
    PowerLimit,
    Energy,
    SmClock,
    MemoryClock,
    PcieRx,
    PcieTx,
    ThrottleReasons,
    EccCorrected,
    EccUncorrected,
    RetiredPages,
    RemappedRows,
    Processes,
    /// GPU Performance Monitoring (SM activity/occupancy, DRAM bandwidth, tensor activity).
    Gpm,
    /// XID event delivery.
    Xid,
}

impl Field {
    /// Every field, in reading order.
    pub const ALL: [Field; 21] = [
        Field::Utilization,
        Field::EncoderUtilization,
        Field::DecoderUtilization,
        Field::Memory,
        Field::GpuTemperature,
        Field::MemoryTemperature,
        Field::Power,
        Field::PowerLimit,
        Field::Energy,
        Field::SmClock,
        Field::MemoryClock,
        Field::PcieRx,
        Field::PcieTx,
        Field::ThrottleReasons,
        Field::EccCorrected,
        Field::EccUncorrected,
        Field::RetiredPages,
        Field::RemappedRows,
        Field::Processes,
        Field::Gpm,
        Field::Xid,
    ];

    /// The series this field feeds, for log lines ("which metrics are unavailable").
    pub fn series(self) -> String {
        use infermon::contract::attr;
        let with = |name: &str, key: &str, value: &str| format!("{name}{{{key}={value}}}");
        match self {
            Field::Utilization => format!(
                "{}, {}",
                with(
                    metric::GPU_UTILIZATION,
                    attr::HW_GPU_TASK,
                    value::GPU_TASK_GENERAL
                ),
                metric::GPU_MEMORY_UTILIZATION
            ),
            Field::EncoderUtilization => with(
                metric::GPU_UTILIZATION,
                attr::HW_GPU_TASK,
                value::GPU_TASK_ENCODER,
            ),
            Field::DecoderUtilization => with(
                metric::GPU_UTILIZATION,
                attr::HW_GPU_TASK,
                value::GPU_TASK_DECODER,
            ),
            Field::Memory => format!("{}, {}", metric::GPU_MEMORY_USAGE, metric::GPU_MEMORY_LIMIT),
            Field::GpuTemperature => with(
                metric::HW_TEMPERATURE,
                attr::HW_SENSOR_LOCATION,
                value::SENSOR_GPU,
            ),
            Field::MemoryTemperature => with(
                metric::HW_TEMPERATURE,
                attr::HW_SENSOR_LOCATION,
                value::SENSOR_MEMORY,
            ),
            Field::Power => metric::HW_POWER.to_owned(),
            Field::PowerLimit => metric::HW_POWER_LIMIT.to_owned(),
            Field::Energy => metric::HW_ENERGY.to_owned(),
            Field::SmClock => with(
                metric::GPU_CLOCK_FREQUENCY,
                attr::HW_GPU_CLOCK_TYPE,
                value::CLOCK_SM,
            ),
            Field::MemoryClock => with(
                metric::GPU_CLOCK_FREQUENCY,
                attr::HW_GPU_CLOCK_TYPE,
                value::CLOCK_MEMORY,
            ),
            Field::PcieRx => with(
                metric::GPU_IO,
                attr::NETWORK_IO_DIRECTION,
                value::IO_RECEIVE,
            ),
            Field::PcieTx => with(
                metric::GPU_IO,
                attr::NETWORK_IO_DIRECTION,
                value::IO_TRANSMIT,
            ),
            Field::ThrottleReasons => metric::GPU_THROTTLED.to_owned(),
            Field::EccCorrected => with(
                metric::HW_ERRORS,
                attr::ERROR_TYPE,
                value::HW_ERROR_ECC_CORRECTED,
            ),
            Field::EccUncorrected => with(
                metric::HW_ERRORS,
                attr::ERROR_TYPE,
                value::HW_ERROR_ECC_UNCORRECTED,
            ),
            Field::RetiredPages => metric::GPU_RETIRED_PAGES.to_owned(),
            Field::RemappedRows => metric::GPU_REMAPPED_ROWS.to_owned(),
            Field::Processes => metric::GPU_PROCESS_MEMORY_USAGE.to_owned(),
            Field::Gpm => [
                metric::GPU_SM_ACTIVITY,
                metric::GPU_SM_OCCUPANCY,
                metric::GPU_DRAM_BANDWIDTH_UTILIZATION,
                metric::GPU_TENSOR_ACTIVITY,
            ]
            .join(", "),
            Field::Xid => with(metric::HW_ERRORS, attr::ERROR_TYPE, value::HW_ERROR_XID),
        }
    }

    /// The field's name in JSON output and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Utilization => "utilization",
            Field::EncoderUtilization => "encoder_utilization",
            Field::DecoderUtilization => "decoder_utilization",
            Field::Memory => "memory",
            Field::GpuTemperature => "gpu_temperature",
            Field::MemoryTemperature => "memory_temperature",
            Field::Power => "power",
            Field::PowerLimit => "power_limit",
            Field::Energy => "energy",
            Field::SmClock => "sm_clock",
            Field::MemoryClock => "memory_clock",
            Field::PcieRx => "pcie_rx",
            Field::PcieTx => "pcie_tx",
            Field::ThrottleReasons => "throttle_reasons",
            Field::EccCorrected => "ecc_corrected",
            Field::EccUncorrected => "ecc_uncorrected",
            Field::RetiredPages => "retired_pages",
            Field::RemappedRows => "remapped_rows",
            Field::Processes => "processes",
            Field::Gpm => "gpm",
            Field::Xid => "xid",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a value is missing from a reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    pub field: Field,
    pub kind: ProblemKind,
}

/// The two kinds of missing value, which the poller treats differently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProblemKind {
    /// The device (or driver, or our permissions) cannot provide it: the series is absent and
    /// the reason is logged once.
    Unsupported(String),
    /// The read failed this time: counted in `infermon.gpu.read_errors` and retried next poll.
    ReadError(String),
}

impl FieldProblem {
    pub fn unsupported(field: Field, reason: impl Into<String>) -> Self {
        Self {
            field,
            kind: ProblemKind::Unsupported(reason.into()),
        }
    }

    pub fn read_error(field: Field, message: impl Into<String>) -> Self {
        Self {
            field,
            kind: ProblemKind::ReadError(message.into()),
        }
    }
}
