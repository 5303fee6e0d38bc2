//! GPU telemetry for infermon: NVIDIA GPUs read through NVML (loaded at run time, so this builds
//! and runs without a GPU), published as OpenTelemetry metrics per the telemetry contract
//! (`hw.*` semantic conventions plus `hw.gpu.*` extensions).
//!
//! ```no_run
//! # async fn run() {
//! use std::time::Duration;
//! use infermon_gpu::{spawn_nvml_monitor, DeviceSelection};
//!
//! let meter = opentelemetry::global::meter("my-inference-server");
//! // Without NVML this logs one line and stays off; the server carries on.
//! let gpus = spawn_nvml_monitor(&meter, Duration::from_secs(1), &DeviceSelection::All);
//! // ... serve ...
//! gpus.shutdown().await;
//! # }
//! ```
//!
//! The pieces: a [`DeviceSource`] ([`NvmlSource`], or [`FakeSource`] for tests, demos and the
//! simulator's simulated GPUs) yields raw [`DeviceReading`]s; a [`GpuPoller`] converts them to
//! OpenTelemetry units and keeps counters; [`spawn_gpu_monitor`] runs a poller on a background
//! task with observable instruments on the caller's meter.

mod fake;
mod instruments;
mod monitor;
mod nvml;
mod poller;
mod reading;
mod snapshot;
mod source;

pub use fake::{FakeControl, FakeDevice, FakeGpmCounters, FakeSource, FakeStep, SimulatedGpu};
pub use monitor::{spawn_gpu_monitor, spawn_nvml_monitor, GpuMonitor, MIN_INTERVAL};
pub use nvml::{NvmlSource, DEFAULT_TOP_PROCESSES};
pub use poller::GpuPoller;
pub use reading::{
    DeviceInfo, DeviceReading, EccCounts, Field, FieldProblem, GpmMetrics, ProblemKind,
    ProcessMemory, ThrottleReasons, XidEvent,
};
pub use snapshot::{xid_label, DeviceMetrics, DeviceSnapshot, GpuSnapshot};
pub use source::{DeviceSelection, DeviceSelector, DeviceSource, GpuError};

/// Registers the GPU instruments on `meter`, observing `poller`'s state — for callers that
/// drive a [`GpuPoller`] themselves instead of using [`spawn_gpu_monitor`].
pub fn register_instruments<S: DeviceSource>(
    meter: &opentelemetry::metrics::Meter,
    poller: &GpuPoller<S>,
) {
    instruments::register(meter, &poller.shared());
}
