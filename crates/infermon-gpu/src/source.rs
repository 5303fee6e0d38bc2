//! The device-source abstraction: NVML on real machines, a fake everywhere else.

use std::fmt;
use std::str::FromStr;

use crate::reading::{DeviceInfo, DeviceReading, GpmMetrics, ProblemKind, XidEvent};

/// Where GPU readings come from. The poller drives it from one thread at a time; calls may block
/// (NVML calls wait on the driver), so the monitor runs them off the
/// async executor.
pub trait DeviceSource: Send + 'static {
    /// An opaque GPM sample. GPM metrics are only defined between two samples, so the poller keeps
    /// the previous one per device and asks the source to diff it against the next.
    type GpmSample: Send;

    /// The devices this source reads, in a fixed order; `device` arguments index this slice.
    fn devices(&self) -> &[DeviceInfo];

    /// Reads everything except GPM. Never fails as a whole: each missing value is explained in
    /// [`DeviceReading::problems`].
    fn read(&mut self, device: usize) -> DeviceReading;

    /// Takes a GPM sample now. `Unsupported` where the device has no GPM (pre-Hopper).
    fn gpm_sample(&mut self, device: usize) -> Result<Self::GpmSample, ProblemKind>;

    /// GPM metrics over the interval between two samples of the same device.
    fn gpm_metrics(
        &mut self,
        device: usize,
        earlier: &Self::GpmSample,
        later: &Self::GpmSample,
    ) -> Result<GpmMetrics, ProblemKind>;

    /// Moves the XID events that arrived since the last call into `out`.
    fn drain_xid_events(&mut self, out: &mut Vec<XidEvent>);
}

/// Errors setting up a source.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GpuError {
    /// The NVIDIA management library is not installed (no driver, or a machine without GPUs).
    #[error("NVML not available: libnvidia-ml.so.1 not found — GPU metrics disabled")]
    NvmlLibraryNotFound,
    /// The library loaded but NVML could not start (driver not loaded, no permission, …).
    #[error("NVML not available: {0} — GPU metrics disabled")]
    NvmlUnavailable(String),
    /// NVML started but listing or identifying the GPUs failed.
    #[error("NVML could not list the GPUs: {0}")]
    Enumeration(String),
    /// A device selector names no present GPU.
    #[error("no GPU matches `{selector}` (present: {present})")]
    NoSuchDevice { selector: String, present: String },
    /// A device selector is neither an index nor a UUID.
    #[error(
        "invalid GPU selector `{0}`: use indices or UUIDs separated by commas, e.g. `0,1` or `GPU-5e1b…`"
    )]
    BadSelector(String),
}

/// Which GPUs to read: all of them, or those named by index or UUID.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum DeviceSelection {
    #[default]
    All,
    Only(Vec<DeviceSelector>),
}

/// One GPU named by its NVML index or its UUID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSelector {
    Index(u32),
    Uuid(String),
}

impl fmt::Display for DeviceSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSelector::Index(i) => write!(f, "{i}"),
            DeviceSelector::Uuid(u) => f.write_str(u),
        }
    }
}

impl FromStr for DeviceSelection {
    type Err = GpuError;

    /// `all`, or a comma-separated list of indices and UUIDs (`0,1`, `GPU-5e1b…,MIG-…`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("all") {
            return Ok(DeviceSelection::All);
        }
        let selectors = s
            .split(',')
            .map(str::trim)
            .map(|part| {
                if let Ok(index) = part.parse::<u32>() {
                    Ok(DeviceSelector::Index(index))
                } else if is_uuid_like(part) {
                    Ok(DeviceSelector::Uuid(part.to_owned()))
                } else {
                    Err(GpuError::BadSelector(part.to_owned()))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(DeviceSelection::Only(selectors))
    }
}

/// NVML UUIDs look like `GPU-xxxxxxxx-…` (or `MIG-…`); we accept any word of letters, digits and
/// dashes that is not a plain number, and let matching report a UUID that is not present.
fn is_uuid_like(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

impl DeviceSelection {
    /// Positions in `devices` of the selected GPUs, in `devices` order. Naming a GPU that is not
    /// present is an error (a typo should not silently monitor nothing).
    pub fn apply(&self, devices: &[DeviceInfo]) -> Result<Vec<usize>, GpuError> {
        let DeviceSelection::Only(selectors) = self else {
            return Ok((0..devices.len()).collect());
        };
        for selector in selectors {
            if !devices.iter().any(|d| selector.matches(d)) {
                return Err(GpuError::NoSuchDevice {
                    selector: selector.to_string(),
                    present: describe_present(devices),
                });
            }
        }
        Ok(devices
            .iter()
            .enumerate()
            .filter(|(_, d)| selectors.iter().any(|s| s.matches(d)))
            .map(|(i, _)| i)
            .collect())
    }
}

impl DeviceSelector {
    fn matches(&self, device: &DeviceInfo) -> bool {
        match self {
            DeviceSelector::Index(i) => device.index == *i,
            DeviceSelector::Uuid(u) => device.uuid.eq_ignore_ascii_case(u),
        }
    }
}

fn describe_present(devices: &[DeviceInfo]) -> String {
    if devices.is_empty() {
        return "none".to_owned();
    }
    devices
        .iter()
        .map(|d| format!("{} {}", d.index, d.uuid))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(index: u32, uuid: &str) -> DeviceInfo {
        DeviceInfo {
            index,
            uuid: uuid.to_owned(),
            name: "test".to_owned(),
            vendor: "test".to_owned(),
        }
    }

    #[test]
    fn selection_parses_indices_uuids_and_all() {
        assert_eq!("all".parse::<DeviceSelection>(), Ok(DeviceSelection::All));
        assert_eq!(
            "0, 2,GPU-abc-123".parse::<DeviceSelection>(),
            Ok(DeviceSelection::Only(vec![
                DeviceSelector::Index(0),
                DeviceSelector::Index(2),
                DeviceSelector::Uuid("GPU-abc-123".to_owned()),
            ]))
        );
        assert_eq!(
            "0,gpu one".parse::<DeviceSelection>(),
            Err(GpuError::BadSelector("gpu one".to_owned()))
        );
        assert_eq!(
            "".parse::<DeviceSelection>(),
            Err(GpuError::BadSelector(String::new()))
        );
    }

    #[test]
    fn selection_keeps_device_order_and_rejects_absent_gpus() {
        let devices = [device(0, "GPU-a"), device(1, "GPU-b"), device(2, "GPU-c")];
        let pick = |s: &str| s.parse::<DeviceSelection>().unwrap().apply(&devices);
        assert_eq!(pick("all"), Ok(vec![0, 1, 2]));
        assert_eq!(pick("2,gpu-a"), Ok(vec![0, 2]));
        assert_eq!(
            pick("3"),
            Err(GpuError::NoSuchDevice {
                selector: "3".to_owned(),
                present: "0 GPU-a, 1 GPU-b, 2 GPU-c".to_owned(),
            })
        );
    }
}
