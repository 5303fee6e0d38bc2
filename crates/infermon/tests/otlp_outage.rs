//! The collector goes away mid-run: requests keep being served, the span queue never exceeds
//! its bound, drops and failed exports are counted, each kind of trouble is logged once, and
//! exports resume when the collector is back.
//!
//! One test per file: `init` installs process-global state (subscriber, providers).

mod common;

use std::time::Duration;

use common::params::plain_chat;
use common::receiver::{wait_until, Receiver};
use common::Logs;
use infermon::contract::{value, INSTRUMENTATION_SCOPE};
use infermon::instruments::InferenceMetrics;
use infermon::request::InferenceRequest;
use infermon::telemetry::{self, TelemetryConfig};

const QUEUE: usize = 64;
const LIVENESS: Duration = Duration::from_secs(30);

/// One request through every state: four spans.
fn serve_one(metrics: &InferenceMetrics) {
    let mut req = InferenceRequest::start(metrics, plain_chat("m", 8), None)
        .scheduled(0)
        .first_token(0);
    req.tokens(2);
    req.finish(value::FINISH_STOP);
}

async fn serve(metrics: &InferenceMetrics, n: usize) {
    for i in 0..n {
        serve_one(metrics);
        if i % 50 == 0 {
            tokio::task::yield_now().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_outage_is_survived_counted_and_logged_once() {
    let receiver = Receiver::start().await;
    let addr = receiver.addr;
    let logs = Logs::default();
    let sink = logs.clone();
    let guard = telemetry::init(
        TelemetryConfig::new("outage-test")
            .with_endpoint(receiver.endpoint())
            .with_max_queue_size(QUEUE)
            .with_max_export_batch_size(32)
            .with_scheduled_delay(Duration::from_millis(50))
            .with_export_interval(Duration::from_millis(100))
            .with_export_timeout(Duration::from_millis(500))
            .with_log_filter("info")
            .with_log_writer(move || Box::new(sink.clone())),
    )
    .expect("init");
    let metrics = InferenceMetrics::new(&guard.meter(INSTRUMENTATION_SCOPE));

    // Healthy: spans flow (10 requests, 40 spans: fewer than the queue holds).
    serve(&metrics, 10).await;
    let first = receiver.received.clone();
    assert!(wait_until(LIVENESS, || first.spans().len() >= 40).await);
    assert_eq!(guard.stats().spans_dropped, 0);

    // Outage: the collector goes away; keep serving until drops and failures of both signals
    // have been seen.
    receiver.stop().await;
    let mut served = 0;
    let saw_trouble = {
        let deadline = tokio::time::Instant::now() + LIVENESS;
        loop {
            serve(&metrics, 200).await;
            served += 200;
            let s = guard.stats();
            if s.spans_dropped > 0 && s.span_export_failures > 0 && s.metric_export_failures > 0 {
                break true;
            }
            if tokio::time::Instant::now() > deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let s = guard.stats();
    assert!(
        saw_trouble,
        "after {served} requests: {s:?}\n{}",
        logs.text()
    );
    // Memory stays bounded: never more than QUEUE spans waited, however many were produced.
    assert_eq!(s.queue_capacity, QUEUE as u64);
    assert!(s.spans_queued_high_water <= QUEUE as u64, "{s:?}");
    assert!(s.spans_dropped > 0);

    // Serve a lot more during the outage: the counters grow, the logs do not.
    serve(&metrics, 2000).await;
    let later = guard.stats();
    assert!(later.spans_dropped > s.spans_dropped, "{later:?}");
    assert!(later.spans_queued_high_water <= QUEUE as u64, "{later:?}");
    assert_eq!(
        logs.lines_with(&["WARN", "OTLP export failed", "signal=\"traces\""]),
        1
    );
    assert_eq!(
        logs.lines_with(&["WARN", "OTLP export failed", "signal=\"metrics\""]),
        1
    );
    assert_eq!(logs.lines_with(&["WARN", "span export queue is full"]), 1);
    assert_eq!(logs.lines_with(&["WARN"]), 3, "{}", logs.text());
    assert_eq!(logs.lines_with(&["ERROR"]), 0, "{}", logs.text());

    // The collector is back on the same address: exports resume without a restart.
    let back = Receiver::start_on(addr).await.expect("rebind the receiver");
    let resumed = back.received.clone();
    let mut recovered = false;
    let deadline = tokio::time::Instant::now() + LIVENESS;
    while tokio::time::Instant::now() < deadline {
        serve(&metrics, 10).await;
        if !resumed.spans().is_empty()
            && logs.lines_with(&["OTLP export recovered", "signal=\"traces\""]) == 1
        {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recovered, "{:?}\n{}", guard.stats(), logs.text());

    // The collector goes away again; shutdown still returns (bounded by the shutdown timeout)
    // and reports that pending telemetry could not be delivered.
    back.stop().await;
    serve(&metrics, 10).await;
    let shutdown = tokio::task::spawn_blocking(move || guard.shutdown())
        .await
        .unwrap();
    assert!(
        shutdown.is_err(),
        "undeliverable telemetry must not be reported as flushed"
    );
}
