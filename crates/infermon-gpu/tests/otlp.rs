//! The embedded monitor on the real telemetry pipeline (`infermon::telemetry::init`): GPU
//! metrics reach an OTLP/gRPC receiver with the contract's names and the GPU identity.

// The infermon crate's recording OTLP receiver, shared rather than written again.
#[allow(dead_code)] // this test reads only the metrics it received
#[path = "../../infermon/tests/common/receiver.rs"]
mod receiver;

use std::collections::BTreeSet;
use std::time::Duration;

use infermon::contract::{attr, metric, value, INSTRUMENTATION_SCOPE};
use infermon::telemetry::{init, TelemetryConfig};
use infermon_gpu::{spawn_gpu_monitor, FakeSource, SimulatedGpu};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use receiver::{Received, Receiver};

/// `(metric name, hw.vendor)` of every GPU data point received.
fn gpu_points(received: &Received) -> BTreeSet<(String, String)> {
    let mut points = BTreeSet::new();
    for m in received.metrics() {
        if !m.name.starts_with("hw.") {
            continue;
        }
        let attributes = match &m.data {
            Some(Data::Gauge(g)) => g.data_points.iter().map(|p| &p.attributes).collect(),
            Some(Data::Sum(s)) => s.data_points.iter().map(|p| &p.attributes).collect(),
            _ => Vec::new(),
        };
        for attrs in attributes {
            let vendor = attrs
                .iter()
                .find(|kv| kv.key == attr::HW_VENDOR)
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                .map(|v| match v {
                    any_value::Value::StringValue(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            points.insert((m.name.clone(), vendor));
        }
    }
    points
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_metrics_reach_an_otlp_receiver() {
    let receiver = Receiver::start().await;
    let received = receiver.received.clone();

    let telemetry = init(
        TelemetryConfig::new("gpu-otlp-test")
            .with_endpoint(receiver.endpoint())
            .with_export_interval(Duration::from_millis(200))
            .with_fmt_layer(false),
    )
    .expect("telemetry");
    let meter = telemetry.meter(INSTRUMENTATION_SCOPE);
    let source = FakeSource::simulated(2, &SimulatedGpu::h100());
    source.control().set_load(0, 0.5);
    let monitor = spawn_gpu_monitor(source, &meter, Duration::from_millis(20));

    // Bounded wait for exports carrying GPU series (periodic export every 200 ms).
    let wanted = [
        metric::GPU_UTILIZATION,
        metric::GPU_MEMORY_USAGE,
        metric::HW_POWER,
        metric::HW_ENERGY,
        metric::GPU_SM_ACTIVITY,
    ];
    for _ in 0..300 {
        let names: BTreeSet<String> = gpu_points(&received).into_iter().map(|(n, _)| n).collect();
        if wanted.iter().all(|w| names.contains(*w)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    monitor.shutdown().await;
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .unwrap()
        .expect("shutdown");

    let points = gpu_points(&received);
    for w in wanted {
        assert!(
            points.iter().any(|(n, _)| n == w),
            "{w} not exported: {points:?}"
        );
    }
    assert!(
        points
            .iter()
            .all(|(_, vendor)| vendor == value::VENDOR_SIMULATED),
        "{points:?}"
    );
}
