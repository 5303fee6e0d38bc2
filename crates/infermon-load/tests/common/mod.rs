//! Shared by the load generator's test binaries.

use infermon_load::{LoadConfig, LoadGenerator, Summary};
use opentelemetry::global::BoxedTracer;

/// Runs `config` to its end (its request count or duration), its client spans going to
/// `tracer`.
pub async fn run_traced(config: LoadConfig, tracer: BoxedTracer) -> Summary {
    LoadGenerator::new(config)
        .unwrap()
        .with_tracer(tracer)
        .run(std::future::pending())
        .await
        .unwrap()
}
