//! The converted, exportable state: per device, every metric in OpenTelemetry units. The
//! instruments observe it; `gpu-agent --once --json` prints it.

use std::collections::BTreeMap;

use infermon::contract::value;
use serde::Serialize;

use crate::reading::{DeviceInfo, EccCounts, Field, ProcessMemory, ThrottleReasons};

/// The latest state of every monitored device.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GpuSnapshot {
    pub devices: Vec<DeviceSnapshot>,
}

/// One device: identity, metrics, and what is unavailable and why.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceSnapshot {
    #[serde(flatten)]
    pub info: DeviceInfo,
    pub metrics: DeviceMetrics,
    /// Fields the device cannot provide, with the reason.
    pub unavailable: BTreeMap<Field, String>,
}

/// Every metric of one device in OpenTelemetry units (ratios 0–1, bytes, °C, W, J, Hz).
/// `None` means the series is absent: unsupported, or (for gauges) the last read failed.
/// Counters (`energy_joules`, `io_*`, `ecc_*`) keep their last total through a failed read.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DeviceMetrics {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub utilization: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoder_utilization: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decoder_utilization: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_utilization: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_usage_bytes: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_limit_bytes: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_temperature_celsius: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_temperature_celsius: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power_watts: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power_limit_watts: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub energy_joules: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sm_clock_hz: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_clock_hz: Option<f64>,
    /// PCIe bytes received since monitoring started (integrated from NVML's throughput).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub io_receive_bytes: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub io_transmit_bytes: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttle_reasons: Option<ThrottleReasons>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ecc_corrected_errors: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ecc_uncorrected_errors: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retired_pages: Option<EccCounts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remapped_rows: Option<EccCounts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sm_activity: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sm_occupancy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dram_bandwidth_utilization: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tensor_activity: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processes: Option<Vec<ProcessMemory>>,
    /// XID events counted since monitoring started, by bounded label (see [`xid_label`]).
    pub xid_errors: BTreeMap<&'static str, u64>,
    /// Transient read failures since monitoring started.
    pub read_errors: u64,
}

/// The `hw.gpu.xid` label of an XID code: the code itself if it is one of the well-known
/// critical codes in the contract, else `other` — the attribute's value set stays bounded.
pub fn xid_label(code: Option<u64>) -> &'static str {
    code.and_then(|code| {
        value::GPU_XIDS
            .iter()
            .copied()
            .find(|known| known.parse::<u64>() == Ok(code))
    })
    .unwrap_or(value::OVERFLOW)
}

impl serde::Serialize for ThrottleReasons {
    /// As a map of reason label → active, using the exported label values.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let labelled = self.labelled();
        let mut map = serializer.serialize_map(Some(labelled.len()))?;
        for (label, active) in labelled {
            map.serialize_entry(label, &active)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xid_labels_are_known_codes_or_other() {
        assert_eq!(xid_label(Some(79)), "79");
        assert_eq!(xid_label(Some(48)), "48");
        assert_eq!(xid_label(Some(999_999)), value::OVERFLOW);
        assert_eq!(xid_label(None), value::OVERFLOW);
        // Every code in the contract round-trips, so the label set is exactly GPU_XIDS + other.
        for known in value::GPU_XIDS {
            assert_eq!(xid_label(Some(known.parse().unwrap())), *known);
        }
    }
}
