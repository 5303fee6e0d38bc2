//! `infermon relay`, run as the built binary: help, one-line errors, and a vLLM span over
//! OTLP/HTTP arriving expanded at a fake collector; SIGTERM stops it cleanly.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

// The relay crate's OTLP fixtures (hand-built batches, a recording collector), shared rather
// than written again.
#[path = "../../infermon-relay/tests/common/mod.rs"]
mod relay_fixtures;

use infermon::contract::relay::vllm;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use relay_fixtures::{batch, double, next, span_names, start_collector};

fn relay(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_infermon"));
    cmd.arg("relay").args(args);
    for (var, _) in std::env::vars() {
        if var.starts_with("INFERMON_") || var.starts_with("OTEL_") {
            cmd.env_remove(var);
        }
    }
    cmd
}

fn output(args: &[&str]) -> Output {
    relay(args).output().expect("run infermon")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn help_explains_the_relay_and_its_flags() {
    let out = output(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "llm_request",
        "--upstream",
        "--model-for",
        "INFERMON_RELAY_UPSTREAM",
        "--grpc-listen",
        "--http-listen",
        "--queue-spans",
        "http/protobuf",
    ] {
        assert!(
            help.contains(needle),
            "{needle} missing from relay --help:\n{help}"
        );
    }
}

#[test]
fn bad_flags_are_one_line_each() {
    for (args, expected) in [
        (
            &["--upstream", "collector:4317"][..],
            "http://collector:4317",
        ),
        (&["--model-for", "vllm-a"][..], "SERVICE=MODEL"),
        (&["--grpc-listen", "nowhere"][..], "--grpc-listen"),
        (&["--default-operation", "embed"][..], "chat"),
    ] {
        let out = output(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}

#[test]
fn a_port_in_use_is_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = output(&[
        "--grpc-listen",
        &addr,
        "--http-listen",
        "127.0.0.1:0",
        "--no-otlp",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let last = err.trim().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: cannot start the relay: cannot listen on") && last.contains(&addr),
        "{err}"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn vllm_batch() -> ExportTraceServiceRequest {
    let start = 1_764_633_600_000_000_000u64;
    let resource = Resource {
        attributes: vec![KeyValue {
            key: "service.name".to_owned(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue("vllm-b".to_owned())),
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let span = Span {
        trace_id: vec![3; 16],
        span_id: vec![4; 8],
        name: vllm::SPAN_NAME.to_owned(),
        start_time_unix_nano: start,
        end_time_unix_nano: start + 1_000_000_000,
        attributes: vec![
            double(vllm::LATENCY_TIME_TO_FIRST_TOKEN, 0.2),
            double(vllm::LATENCY_TIME_IN_QUEUE, 0.05),
            double(vllm::LATENCY_TIME_IN_MODEL_PREFILL, 0.1),
            double(vllm::LATENCY_TIME_IN_MODEL_DECODE, 0.7),
        ],
        ..Default::default()
    };
    batch(Some(resource), vllm::SCOPE, vec![span])
}

#[tokio::test]
async fn forwards_an_expanded_vllm_span_and_stops_on_sigterm() {
    let (collector, mut accepted) = start_collector(vec![], Duration::ZERO).await;
    let upstream = format!("http://{collector}");
    let (grpc, http) = (free_port(), free_port());
    let mut child = relay(&[
        "--upstream",
        &upstream,
        "--grpc-listen",
        &format!("127.0.0.1:{grpc}"),
        "--http-listen",
        &format!("127.0.0.1:{http}"),
        "--model",
        "fallback",
        "--model-for",
        "vllm-a=llama-3-8b,vllm-b=qwen2-7b",
        "--no-otlp",
    ])
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();

    let url = format!("http://127.0.0.1:{http}/v1/traces");
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let sent = client
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .body(vllm_batch().encode_to_vec())
            .send()
            .await;
        match sent {
            Ok(r) => {
                assert_eq!(r.status(), 200);
                break;
            }
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("relay never listened: {e}"),
        }
    }
    let forwarded = next(&mut accepted).await;
    assert_eq!(
        span_names(&forwarded),
        ["chat qwen2-7b", "queue", "prefill", "decode"]
    );

    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

/// The simulator's vLLM span mode, the relay's test input: offered in `sim --help`, and a
/// wrong value is one line.
#[test]
fn sim_offers_the_vllm_trace_format() {
    let sim = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_infermon"))
            .arg("sim")
            .args(args)
            .env_remove("INFERMON_TRACE_FORMAT")
            .env_remove("INFERMON_CONFIG")
            .output()
            .unwrap()
    };
    let help = sim(&["--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--trace-format") && help.contains("llm_request"),
        "{help}"
    );
    let out = sim(&["--trace-format", "jaeger"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("vllm"), "{err}");
}
