//! The embedded GPU monitor: a background Tokio task that polls a source at a fixed interval
//! and feeds the instruments of the caller's meter (the same pipeline as the rest of the
//! service's telemetry).

use std::time::{Duration, Instant};

use opentelemetry::metrics::Meter;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::instruments;
use crate::nvml::NvmlSource;
use crate::poller::{lock, GpuPoller, SharedSnapshot};
use crate::snapshot::GpuSnapshot;
use crate::source::{DeviceSelection, DeviceSource};

/// The shortest poll interval accepted; shorter ones are raised to it (NVML's own sampling
/// windows make faster polling meaningless, and `tokio::time::interval` rejects zero).
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// Handle to a running (or disabled) GPU monitor. Dropping it stops the monitor.
#[must_use = "dropping the handle stops the GPU monitor"]
pub struct GpuMonitor {
    running: Option<Running>,
}

struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    shared: SharedSnapshot,
}

/// Starts polling `source` every `interval` on a background task, publishing through
/// instruments registered on `meter`. The first poll happens immediately. Needs a Tokio
/// runtime; without one the monitor stays off and says so once.
pub fn spawn_gpu_monitor<S: DeviceSource>(
    source: S,
    meter: &Meter,
    interval: Duration,
) -> GpuMonitor {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!("GPU monitor needs a Tokio runtime; GPU metrics disabled");
        return GpuMonitor::off();
    };
    let poller = GpuPoller::new(source);
    let shared = poller.shared();
    instruments::register(meter, &shared);
    let (stop, stopped) = oneshot::channel();
    let task = runtime.spawn(poll_loop(poller, interval.max(MIN_INTERVAL), stopped));
    GpuMonitor {
        running: Some(Running {
            stop: Some(stop),
            task,
            shared,
        }),
    }
}

/// Monitors the selected NVIDIA GPUs. Where NVML is not available (no driver, no GPU) the
/// monitor stays off and logs the reason once; the service carries on.
pub fn spawn_nvml_monitor(
    meter: &Meter,
    interval: Duration,
    selection: &DeviceSelection,
) -> GpuMonitor {
    match NvmlSource::open(selection) {
        Ok(source) => spawn_gpu_monitor(source, meter, interval),
        Err(e) => {
            tracing::warn!("{e}");
            GpuMonitor::off()
        }
    }
}

impl GpuMonitor {
    /// A monitor that does nothing (GPU metrics disabled).
    pub fn off() -> Self {
        Self { running: None }
    }

    /// Whether a polling task was started and has not ended.
    pub fn is_running(&self) -> bool {
        self.running.as_ref().is_some_and(|r| !r.task.is_finished())
    }

    /// The latest state of every monitored device (empty when off).
    pub fn snapshot(&self) -> GpuSnapshot {
        self.running
            .as_ref()
            .map(|r| lock(&r.shared).clone())
            .unwrap_or_default()
    }

    /// Stops polling and waits for the task to end. The GPU series disappear from later exports.
    pub async fn shutdown(mut self) {
        if let Some(mut running) = self.running.take() {
            if let Some(stop) = running.stop.take() {
                let _ = stop.send(());
            }
            let _ = (&mut running.task).await;
        }
    }
}

impl Drop for GpuMonitor {
    fn drop(&mut self) {
        if let Some(stop) = self.running.as_mut().and_then(|r| r.stop.take()) {
            let _ = stop.send(());
        }
    }
}

async fn poll_loop<S: DeviceSource>(
    mut poller: GpuPoller<S>,
    interval: Duration,
    mut stopped: oneshot::Receiver<()>,
) {
    let shared = poller.shared();
    let mut ticker = tokio::time::interval(interval);
    // After a slow poll, wait a full interval rather than bursting to catch up.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            _ = ticker.tick() => {}
        }
        // NVML calls block (up to milliseconds each), so they run off the async workers.
        let polled = tokio::task::spawn_blocking(move || {
            poller.poll(Instant::now());
            poller
        })
        .await;
        match polled {
            Ok(p) => poller = p,
            Err(e) => {
                tracing::error!(error = %e, "GPU poller failed; GPU metrics disabled");
                break;
            }
        }
    }
    // Observable instruments outlive the task; with no devices they report nothing.
    lock(&shared).devices.clear();
}
