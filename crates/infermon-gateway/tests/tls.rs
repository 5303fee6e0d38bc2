//! `https://` upstreams over real sockets: a CA and server certificates made here (rcgen), a
//! TLS-terminating front (tokio-rustls, like an ingress) before a simulator or a hand-made
//! upstream, and the gateway verifying the certificate against the configured CA bundle.

mod common;

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::routing::post;
use common::tls::{tls_front, Ca};
use common::*;
use futures::StreamExt as _;
use infermon_gateway::GatewayConfig;
use infermon_instrument::contract::{attr, metric};
use rcgen::KeyPair;

fn config(urls: &[&str], ca: &Ca) -> GatewayConfig {
    let mut c = GatewayConfig::new(upstreams(urls));
    c.upstream_ca_file = Some(ca.pem.clone());
    c.first_byte_timeout = Duration::from_secs(10);
    c.stream_idle_timeout = Duration::from_secs(10);
    c.validate().expect("a valid TLS configuration");
    c
}

/// The `error.message` of an OpenAI-style error response.
async fn error_message(response: reqwest::Response) -> String {
    let body: serde_json::Value = response.json().await.unwrap();
    body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_streams_chunk_by_chunk_with_a_verified_certificate() {
    const CHUNKS: usize = 5;
    // The upstream sends chunk i only once the test has read chunk i-1 through the gateway: a
    // gateway that held chunks back (buffering, re-chunking, Nagle) would never get the next.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let release = gate.clone();
    let lockstep = fake(axum::Router::new().route(
        "/v1/chat/completions",
        post(move || {
            let gate = gate.clone();
            async move {
                let chunks = futures::stream::iter(0..CHUNKS)
                    .then(move |i| {
                        let gate = gate.clone();
                        async move {
                            gate.acquire().await.unwrap().forget();
                            Ok::<_, Infallible>(Bytes::from(format!(
                                "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"t{i}\"}}}}]}}\n\n"
                            )))
                        }
                    })
                    .chain(futures::stream::once(async {
                        Ok(Bytes::from_static(b"data: [DONE]\n\n"))
                    }));
                axum::response::Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(Body::from_stream(chunks))
                    .unwrap()
            }
        }),
    ))
    .await;
    let ca = Ca::new("stream");
    let (port, seen) = tls_front(&lockstep, ca.server_cert(&["localhost"])).await;
    // By DNS name: SNI and the hostname check use `localhost`.
    let gw = Running::start(config(&[&format!("https://localhost:{port}")], &ca)).await;

    let mut response = gw.chat(true).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut got = String::new();
    for i in 0..CHUNKS {
        release.add_permits(1);
        let want = format!("\"t{i}\"");
        while !got.contains(&want) {
            // A guard against hanging forever, not a latency bound.
            let chunk = tokio::time::timeout(Duration::from_secs(30), response.chunk())
                .await
                .unwrap_or_else(|_| panic!("chunk {i} was held back by the gateway"))
                .unwrap()
                .unwrap_or_else(|| panic!("the stream ended before chunk {i}: {got}"));
            got.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
    while let Some(chunk) = response.chunk().await.unwrap() {
        got.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(got.ends_with("data: [DONE]\n\n"), "{got}");
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        &[Some(b"http/1.1".to_vec())],
        "one TLS connection, HTTP/1.1 by ALPN"
    );
    let upstream = &gw.gateway.upstreams().all()[0];
    assert_eq!(
        (upstream.scheme, upstream.host.as_str(), upstream.port),
        ("https", "localhost", port),
        "url.scheme, server.address, server.port of the attempt spans"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulator_behind_tls_streams_and_is_probed() {
    let engine = sim().await;
    let ca = Ca::new("sim");
    // By IP address: the certificate's IP SAN is what is checked.
    let (port, _) = tls_front(&engine, ca.server_cert(&["127.0.0.1"])).await;
    let gw = Running::start(config(&[&format!("https://127.0.0.1:{port}")], &ca)).await;
    let through = events(gw.chat(true).send().await.unwrap()).await;
    assert_eq!(through.last().map(String::as_str), Some("[DONE]"));
    let usage: serde_json::Value = serde_json::from_str(&through[through.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 8);
    let probe = gw.gateway.spawn_probe();
    let listed = eventually(Duration::from_secs(5), || {
        gw.gateway.upstreams().all()[0].models() == vec![MODEL.to_owned()]
    })
    .await;
    probe.abort();
    assert!(listed, "the /v1/models probe works over TLS");
    let m = gw.metrics();
    let ok = [
        (attr::LLM_UPSTREAM, "u0"),
        (attr::LLM_ATTEMPT_OUTCOME, "ok"),
    ];
    assert_eq!(counter(&m, metric::GATEWAY_ATTEMPTS, &ok), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_fails_the_handshake_and_is_failed_over() {
    let (a, b) = (sim().await, sim().await);
    let trusted = Ca::new("trusted");
    let rogue = Ca::new("rogue");
    let (bad, _) = tls_front(&a, rogue.server_cert(&["localhost"])).await;
    let (good, _) = tls_front(&b, trusted.server_cert(&["localhost"])).await;
    let bad = format!("https://localhost:{bad}");
    let good = format!("https://localhost:{good}");
    let mut c = config(&[&bad, &good], &trusted);
    c.unhealthy_after = 2;
    let gw = Running::start(c).await;
    for _ in 0..4 {
        let response = gw.chat(true).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-infermon-upstream"], "u1");
        assert_eq!(events(response).await.last().unwrap(), "[DONE]");
    }
    assert!(
        !gw.gateway.upstreams().all()[0].is_healthy(),
        "handshake failures count like connect failures for health"
    );
    let m = gw.metrics();
    let failed = [
        (attr::LLM_UPSTREAM, "u0"),
        (attr::LLM_ATTEMPT_OUTCOME, "tls_handshake"),
    ];
    assert_eq!(
        counter(&m, metric::GATEWAY_ATTEMPTS, &failed),
        2,
        "tried until marked unhealthy"
    );

    // Alone, the untrusted upstream's failure is the client's answer, with the reason.
    let gw = Running::start(config(&[&bad], &trusted)).await;
    let response = gw.chat(false).send().await.unwrap();
    assert_eq!(response.status(), 502);
    let message = error_message(response).await;
    assert!(
        message.contains("TLS handshake with localhost:")
            && message.contains("invalid peer certificate"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_name_fails_and_insecure_skip_verify_is_explicit() {
    let engine = sim().await;
    let ca = Ca::new("name");
    let (port, _) = tls_front(&engine, ca.server_cert(&["other.example"])).await;
    let url = format!("https://localhost:{port}");
    let gw = Running::start(config(&[&url], &ca)).await;
    let response = gw.chat(false).send().await.unwrap();
    assert_eq!(response.status(), 502);
    let message = error_message(response).await;
    assert!(message.contains("not valid for name"), "{message}");
    let m = gw.metrics();
    let failed = [(attr::LLM_ATTEMPT_OUTCOME, "tls_handshake")];
    assert_eq!(counter(&m, metric::GATEWAY_ATTEMPTS, &failed), 1);

    // The same upstream with verification off, per upstream and on purpose.
    let mut c = GatewayConfig::new(upstreams(&[&url]));
    c.upstreams[0].insecure_skip_verify = true;
    c.validate().unwrap();
    let gw = Running::start(c).await;
    assert_eq!(gw.chat(false).send().await.unwrap().status(), 200);
}

#[test]
fn ca_file_mistakes_are_named() {
    let ca = Ca::new("files");
    let with_ca = |path: PathBuf| {
        let mut c = GatewayConfig::new(upstreams(&["https://localhost:1"]));
        c.upstream_ca_file = Some(path);
        c.validate().map_err(|e| {
            // One line, as the CLI prints it: the error and its source.
            let mut s = e.to_string();
            if let Some(source) = std::error::Error::source(&e) {
                s = format!("{s}: {source}");
            }
            s
        })
    };
    with_ca(ca.pem.clone()).expect("a good bundle");

    let missing = std::env::temp_dir().join("infermon-gateway-tls-no-such-file.pem");
    let e = with_ca(missing.clone()).unwrap_err();
    assert!(
        e.starts_with(&format!("cannot read CA file {}: ", missing.display())),
        "{e}"
    );

    let write = |name: &str, text: &str| {
        let path = std::env::temp_dir().join(format!(
            "infermon-gateway-tls-{}-{name}.pem",
            std::process::id()
        ));
        std::fs::write(&path, text).unwrap();
        path
    };
    let bad_pem = write(
        "bad-pem",
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
    );
    let e = with_ca(bad_pem.clone()).unwrap_err();
    assert!(e.contains("is not valid PEM"), "{e}");

    let key_only = write("key-only", &KeyPair::generate().unwrap().serialize_pem());
    let e = with_ca(key_only.clone()).unwrap_err();
    assert!(e.contains("holds no PEM certificate"), "{e}");

    let not_a_cert = write(
        "not-a-cert",
        "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n",
    );
    let e = with_ca(not_a_cert.clone()).unwrap_err();
    assert!(e.contains("cannot be used as a trust anchor"), "{e}");

    for path in [&ca.pem, &bad_pem, &key_only, &not_a_cert] {
        let _ = std::fs::remove_file(path);
    }
}
