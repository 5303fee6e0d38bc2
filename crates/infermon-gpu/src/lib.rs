//! GPU telemetry (NVML).
