//! OpenTelemetry instruments over the shared GPU snapshot.
//!
//! Every GPU instrument is *observable*: the poller updates the snapshot at its own interval and
//! the SDK reads it at export time. That choice fits the data:
//! - NVML's energy and ECC counts are already cumulative totals, and an observable counter
//!   reports a cumulative total as-is — monotonic by construction, no delta bookkeeping that a
//!   missed poll or a restart could double-count; PCIe bytes and XID counts are totals the
//!   poller keeps, reported the same way.
//! - Observable gauges and counters export only the series observed in the latest callback, so
//!   a series for an unsupported field never appears, and one for a process that exited
//!   disappears instead of lingering at its last value.

use opentelemetry::metrics::{AsyncInstrument, AsyncInstrumentBuilder, Meter};
use opentelemetry::KeyValue;

use infermon::contract::{attr, metric, metric_spec, value};

use crate::poller::{lock, SharedSnapshot};
use crate::reading::DeviceInfo;
use crate::snapshot::DeviceSnapshot;

/// `builder` with the contract's unit and description, when its name is a contract metric.
fn described<'m, I, T>(
    builder: AsyncInstrumentBuilder<'m, I, T>,
) -> AsyncInstrumentBuilder<'m, I, T> {
    match metric_spec(&builder.name) {
        Some(spec) => builder
            .with_unit(spec.unit)
            .with_description(spec.description),
        None => builder,
    }
}

/// Registers every GPU instrument on `meter`, observing `shared`.
pub(crate) fn register(meter: &Meter, shared: &SharedSnapshot) {
    per_device(
        meter.f64_observable_gauge(metric::GPU_UTILIZATION),
        shared,
        |d, observe| {
            let m = &d.metrics;
            for (task, v) in [
                (value::GPU_TASK_GENERAL, m.utilization),
                (value::GPU_TASK_ENCODER, m.encoder_utilization),
                (value::GPU_TASK_DECODER, m.decoder_utilization),
            ] {
                if let Some(v) = v {
                    observe(
                        v,
                        &gpu_attrs(&d.info, &[KeyValue::new(attr::HW_GPU_TASK, task)]),
                    );
                }
            }
        },
    )
    .build();
    per_device(
        meter.f64_observable_gauge(metric::GPU_MEMORY_UTILIZATION),
        shared,
        |d, observe| {
            if let Some(v) = d.metrics.memory_utilization {
                observe(v, &gpu_attrs(&d.info, &[]));
            }
        },
    )
    .build();
    bytes_up_down(meter, metric::GPU_MEMORY_USAGE, shared, |d| {
        d.metrics.memory_usage_bytes
    });
    bytes_up_down(meter, metric::GPU_MEMORY_LIMIT, shared, |d| {
        d.metrics.memory_limit_bytes
    });
    per_device(
        meter.f64_observable_gauge(metric::HW_TEMPERATURE),
        shared,
        |d, observe| {
            let m = &d.metrics;
            for (location, v) in [
                (value::SENSOR_GPU, m.gpu_temperature_celsius),
                (value::SENSOR_MEMORY, m.memory_temperature_celsius),
            ] {
                if let Some(v) = v {
                    let extra = [hw_type(), KeyValue::new(attr::HW_SENSOR_LOCATION, location)];
                    observe(v, &gpu_attrs(&d.info, &extra));
                }
            }
        },
    )
    .build();
    per_device(
        meter.f64_observable_gauge(metric::HW_POWER),
        shared,
        |d, observe| {
            if let Some(v) = d.metrics.power_watts {
                observe(v, &gpu_attrs(&d.info, &[hw_type()]));
            }
        },
    )
    .build();
    per_device(
        meter.f64_observable_gauge(metric::HW_POWER_LIMIT),
        shared,
        |d, observe| {
            if let Some(v) = d.metrics.power_limit_watts {
                observe(v, &gpu_attrs(&d.info, &[hw_type()]));
            }
        },
    )
    .build();
    per_device(
        meter.f64_observable_gauge(metric::GPU_CLOCK_FREQUENCY),
        shared,
        |d, observe| {
            let m = &d.metrics;
            for (clock, v) in [
                (value::CLOCK_SM, m.sm_clock_hz),
                (value::CLOCK_MEMORY, m.memory_clock_hz),
            ] {
                if let Some(v) = v {
                    observe(
                        v,
                        &gpu_attrs(&d.info, &[KeyValue::new(attr::HW_GPU_CLOCK_TYPE, clock)]),
                    );
                }
            }
        },
    )
    .build();
    per_device(
        meter.f64_observable_gauge(metric::GPU_THROTTLED),
        shared,
        |d, observe| {
            let Some(reasons) = d.metrics.throttle_reasons else {
                return;
            };
            for (reason, active) in reasons.labelled() {
                let extra = [KeyValue::new(attr::HW_GPU_THROTTLE_REASON, reason)];
                observe(if active { 1.0 } else { 0.0 }, &gpu_attrs(&d.info, &extra));
            }
        },
    )
    .build();
    for (name, get) in [
        (
            metric::GPU_SM_ACTIVITY,
            gpm_sm_activity as fn(&DeviceSnapshot) -> Option<f64>,
        ),
        (metric::GPU_SM_OCCUPANCY, |d| d.metrics.sm_occupancy),
        (metric::GPU_DRAM_BANDWIDTH_UTILIZATION, |d| {
            d.metrics.dram_bandwidth_utilization
        }),
        (metric::GPU_TENSOR_ACTIVITY, |d| d.metrics.tensor_activity),
    ] {
        per_device(
            meter.f64_observable_gauge(name),
            shared,
            move |d, observe| {
                if let Some(v) = get(d) {
                    observe(v, &gpu_attrs(&d.info, &[]));
                }
            },
        )
        .build();
    }
    for (name, get) in [
        (
            metric::GPU_RETIRED_PAGES,
            retired_pages as fn(&DeviceSnapshot) -> _,
        ),
        (metric::GPU_REMAPPED_ROWS, |d| d.metrics.remapped_rows),
    ] {
        per_device(
            meter.u64_observable_gauge(name),
            shared,
            move |d, observe| {
                if let Some(counts) = get(d) {
                    for (class, v) in [
                        (value::HW_ERROR_ECC_CORRECTED, counts.corrected),
                        (value::HW_ERROR_ECC_UNCORRECTED, counts.uncorrected),
                    ] {
                        observe(
                            v,
                            &gpu_attrs(&d.info, &[KeyValue::new(attr::ERROR_TYPE, class)]),
                        );
                    }
                }
            },
        )
        .build();
    }
    per_device(
        meter.u64_observable_gauge(metric::GPU_PROCESS_MEMORY_USAGE),
        shared,
        |d, observe| {
            for process in d.metrics.processes.iter().flatten() {
                let mut attrs = vec![
                    KeyValue::new(attr::HW_ID, d.info.uuid.clone()),
                    KeyValue::new(attr::GPU_INDEX, i64::from(d.info.index)),
                    KeyValue::new(attr::PROCESS_PID, i64::from(process.pid)),
                ];
                if let Some(exe) = &process.executable {
                    attrs.push(KeyValue::new(attr::PROCESS_EXECUTABLE_NAME, exe.clone()));
                }
                observe(process.used_bytes, &attrs);
            }
        },
    )
    .build();

    register_counters(meter, shared);
}

fn register_counters(meter: &Meter, shared: &SharedSnapshot) {
    per_device(
        meter.f64_observable_counter(metric::HW_ENERGY),
        shared,
        |d, observe| {
            if let Some(v) = d.metrics.energy_joules {
                observe(v, &gpu_attrs(&d.info, &[hw_type()]));
            }
        },
    )
    .build();

    per_device(
        meter.f64_observable_counter(metric::GPU_IO),
        shared,
        |d, observe| {
            let m = &d.metrics;
            for (direction, v) in [
                (value::IO_RECEIVE, m.io_receive_bytes),
                (value::IO_TRANSMIT, m.io_transmit_bytes),
            ] {
                if let Some(v) = v {
                    let extra = [KeyValue::new(attr::NETWORK_IO_DIRECTION, direction)];
                    observe(v, &gpu_attrs(&d.info, &extra));
                }
            }
        },
    )
    .build();

    per_device(
        meter.u64_observable_counter(metric::HW_ERRORS),
        shared,
        |d, observe| {
            let m = &d.metrics;
            for (class, v) in [
                (value::HW_ERROR_ECC_CORRECTED, m.ecc_corrected_errors),
                (value::HW_ERROR_ECC_UNCORRECTED, m.ecc_uncorrected_errors),
            ] {
                if let Some(v) = v {
                    let extra = [hw_type(), KeyValue::new(attr::ERROR_TYPE, class)];
                    observe(v, &gpu_attrs(&d.info, &extra));
                }
            }
            for (xid, count) in &m.xid_errors {
                let extra = [
                    hw_type(),
                    KeyValue::new(attr::ERROR_TYPE, value::HW_ERROR_XID),
                    KeyValue::new(attr::HW_GPU_XID, *xid),
                ];
                observe(*count, &gpu_attrs(&d.info, &extra));
            }
        },
    )
    .build();

    per_device(
        meter.u64_observable_counter(metric::GPU_READ_ERRORS),
        shared,
        |d, observe| {
            let attrs = [
                KeyValue::new(attr::HW_ID, d.info.uuid.clone()),
                KeyValue::new(attr::GPU_INDEX, i64::from(d.info.index)),
            ];
            observe(d.metrics.read_errors, &attrs);
        },
    )
    .build();
}

type Observe<'a, T> = &'a mut dyn FnMut(T, &[KeyValue]);

/// `builder` (an observable instrument named for a contract metric) with the contract's unit
/// and description, calling `each` on every device of the snapshot when the SDK collects. The
/// caller builds it.
fn per_device<'m, I, T: 'static>(
    builder: AsyncInstrumentBuilder<'m, I, T>,
    shared: &SharedSnapshot,
    each: impl Fn(&DeviceSnapshot, Observe<'_, T>) + Send + Sync + 'static,
) -> AsyncInstrumentBuilder<'m, I, T> {
    let state = shared.clone();
    described(builder).with_callback(move |o: &dyn AsyncInstrument<T>| {
        for d in &lock(&state).devices {
            each(d, &mut |v, attrs| o.observe(v, attrs));
        }
    })
}

/// Memory in bytes, as an up-down counter of the devices that report it.
fn bytes_up_down(
    meter: &Meter,
    name: &'static str,
    shared: &SharedSnapshot,
    get: fn(&DeviceSnapshot) -> Option<i64>,
) {
    per_device(
        meter.i64_observable_up_down_counter(name),
        shared,
        move |d, observe| {
            if let Some(v) = get(d) {
                observe(v, &gpu_attrs(&d.info, &[]));
            }
        },
    )
    .build();
}

fn gpm_sm_activity(d: &DeviceSnapshot) -> Option<f64> {
    d.metrics.sm_activity
}

fn retired_pages(d: &DeviceSnapshot) -> Option<crate::reading::EccCounts> {
    d.metrics.retired_pages
}

fn hw_type() -> KeyValue {
    KeyValue::new(attr::HW_TYPE, value::HW_TYPE_GPU)
}

/// The identity every GPU series carries, plus the series' own attributes.
fn gpu_attrs(info: &DeviceInfo, extra: &[KeyValue]) -> Vec<KeyValue> {
    let mut attrs = Vec::with_capacity(4 + extra.len());
    attrs.push(KeyValue::new(attr::HW_ID, info.uuid.clone()));
    attrs.push(KeyValue::new(attr::HW_NAME, info.name.clone()));
    attrs.push(KeyValue::new(attr::HW_VENDOR, info.vendor.clone()));
    attrs.push(KeyValue::new(attr::GPU_INDEX, i64::from(info.index)));
    attrs.extend_from_slice(extra);
    attrs
}
