//! What TLS to the upstream adds to a streamed request's time to first token through the
//! gateway: the same hand-made upstream (first SSE chunk at once) behind a TLS-terminating
//! front (`https://`, certificate from a CA made here) or behind a plain TCP forwarder
//! (`http://`, the same extra hop without TLS), each on a pooled keep-alive connection and on a
//! new connection per request (the upstream answers `Connection: close`, so every request pays
//! the TCP connect and, over https, the handshake).
//!
//! ```sh
//! cargo bench -p infermon-gateway --bench upstream_tls
//! ```

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use axum::routing::post;
use common::tls::{plain_front, tls_front, Ca};
use common::{fake, sse, upstreams, Running};
use criterion::{criterion_group, criterion_main, Criterion};
use infermon_gateway::GatewayConfig;

/// An upstream whose stream starts at once; `close`: one request per connection.
fn upstream(close: bool) -> axum::Router {
    axum::Router::new().route(
        "/v1/chat/completions",
        post(move || async move {
            let first = r#"data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}"#;
            let mut response = sse(
                vec![format!("{first}\n\n"), "data: [DONE]\n\n".into()],
                Duration::ZERO,
            );
            if close {
                response.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            response
        }),
    )
}

fn ttft(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ca = Ca::new("bench");
    let gateways = rt.block_on(async {
        let mut out = Vec::new();
        for (connection, close) in [("pooled", false), ("new_connection", true)] {
            let engine = fake(upstream(close)).await;
            let plain = plain_front(&engine).await;
            let config = GatewayConfig::new(upstreams(&[&format!("http://127.0.0.1:{plain}")]));
            out.push((format!("http/{connection}"), Running::start(config).await));
            let (tls, _) = tls_front(&engine, ca.server_cert(&["localhost"])).await;
            let mut config = GatewayConfig::new(upstreams(&[&format!("https://localhost:{tls}")]));
            config.upstream_ca_file = Some(ca.pem.clone());
            config.validate().unwrap();
            out.push((format!("https/{connection}"), Running::start(config).await));
        }
        out
    });
    let mut group = c.benchmark_group("gateway_ttft");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for (name, gw) in &gateways {
        group.bench_function(name.as_str(), |b| {
            b.to_async(&rt).iter_custom(|iters| async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let mut response = gw.chat(true).send().await.unwrap();
                    assert_eq!(response.status(), 200);
                    response.chunk().await.unwrap().expect("a first chunk");
                    total += start.elapsed();
                    while response.chunk().await.unwrap().is_some() {}
                }
                total
            })
        });
    }
    group.finish();
    let _ = std::fs::remove_file(&ca.pem);
}

criterion_group!(benches, ttft);
criterion_main!(benches);
