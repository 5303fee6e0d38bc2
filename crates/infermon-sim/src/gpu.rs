//! Simulated GPU telemetry: `infermon-gpu`'s load-following fake devices, driven by the engine.
//!
//! Every simulated GPU (the engine's tensor-parallel group) follows the same load: the fraction
//! of simulated time the engine spent stepping over the last interval, which is what NVML's
//! utilisation means ("a kernel was running"). Memory in use is the weights plus the whole KV
//! cache from the start, because vLLM preallocates its cache; how full the cache is shows in
//! `llm.kv_cache.usage`, not in GPU memory. Devices report `hw.vendor = infermon-simulated`.

use std::sync::Arc;
use std::time::Duration;

use infermon_gpu::{spawn_gpu_monitor, FakeControl, FakeSource, GpuMonitor, SimulatedGpu};
use opentelemetry::metrics::Meter;

use crate::engine::Shared;

/// How often the devices are read and their load updated.
pub const GPU_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The simulated devices and the task that feeds them the engine's load.
pub struct SimulatedGpus {
    pub monitor: GpuMonitor,
    feeder: tokio::task::JoinHandle<()>,
}

impl SimulatedGpus {
    pub fn start(count: u32, shared: Arc<Shared>, meter: &Meter) -> Self {
        let spec = device_spec(&shared);
        let memory_used = preallocated_bytes(&shared);
        let source = FakeSource::simulated(count, &spec);
        let control = source.control();
        for device in 0..count as usize {
            control.set_memory_used(device, Some(memory_used));
        }
        let monitor = spawn_gpu_monitor(source, meter, GPU_POLL_INTERVAL);
        let feeder = tokio::spawn(feed_load(shared, control, count as usize));
        Self { monitor, feeder }
    }

    pub async fn shutdown(self) {
        self.feeder.abort();
        self.monitor.shutdown().await;
    }
}

/// The profile's GPU as a simulated device (thermal and clock figures keep the fake's
/// H100-like defaults; they only shape the demo curves).
fn device_spec(shared: &Shared) -> SimulatedGpu {
    let gpu = &shared.resolved.profile.gpu;
    SimulatedGpu {
        name: gpu.name.clone(),
        memory_total_bytes: gpu.memory_bytes,
        idle_power_w: gpu.idle_power_watts,
        max_power_w: gpu.power_limit_watts,
        power_limit_w: gpu.power_limit_watts,
        ..SimulatedGpu::default()
    }
}

fn preallocated_bytes(shared: &Shared) -> u64 {
    let r = &shared.resolved;
    let block_bytes = r.profile.model.kv_bytes_per_token * u64::from(r.config.kv_cache.block_size);
    let kv = u64::from(r.num_blocks) * block_bytes;
    (r.profile.weight_bytes() as u64)
        .saturating_add(kv)
        .min(r.profile.gpu.memory_bytes)
}

async fn feed_load(shared: Arc<Shared>, control: FakeControl, devices: usize) {
    let mut ticks = tokio::time::interval(GPU_POLL_INTERVAL);
    let elapsed = || shared.clock.sim_elapsed(tokio::time::Instant::now());
    let (mut busy_before, mut elapsed_before) = (shared.stats().busy_seconds, elapsed());
    loop {
        ticks.tick().await;
        if shared.commands.is_closed() {
            return; // the engine stopped
        }
        let (busy_now, elapsed_now) = (shared.stats().busy_seconds, elapsed());
        let load = busy_fraction(busy_before, busy_now, elapsed_before, elapsed_now);
        for device in 0..devices {
            control.set_load(device, load);
        }
        (busy_before, elapsed_before) = (busy_now, elapsed_now);
    }
}

/// Busy simulated seconds over elapsed simulated seconds, clamped to 0–1.
fn busy_fraction(busy_before: f64, busy_now: f64, elapsed_before: f64, elapsed_now: f64) -> f64 {
    let elapsed = elapsed_now - elapsed_before;
    if elapsed <= 0.0 {
        return 0.0;
    }
    ((busy_now - busy_before) / elapsed).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_fraction_is_a_clamped_ratio() {
        assert_eq!(busy_fraction(1.0, 1.5, 10.0, 11.0), 0.5);
        assert_eq!(busy_fraction(0.0, 3.0, 0.0, 1.0), 1.0);
        assert_eq!(busy_fraction(0.0, 0.0, 5.0, 5.0), 0.0);
    }
}
