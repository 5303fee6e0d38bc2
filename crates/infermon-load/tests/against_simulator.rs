//! The load generator against the real simulator, in one process, with every span captured by
//! an in-memory exporter: one trace per request from the client span to the engine's spans, and
//! a summary that agrees with what the engine served.

mod common;

use std::collections::HashMap;

use common::run_traced;
use infermon::contract::{attr, span as names, value};
use infermon_load::{Api, Arrival, LengthDist, LoadConfig, Summary};
use infermon_sim::{SimConfig, SimTelemetry, Simulator};
use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::{SpanId, SpanKind, Status, TracerProvider as _};
use opentelemetry::Value;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt as _;

const STREAMED: u64 = 24;
const WHOLE: u64 = 6;

fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn int(span: &SpanData, key: &str) -> i64 {
    match attribute(span, key) {
        Some(Value::I64(v)) => *v,
        other => panic!("{key} of {:?} is {other:?}", span.name),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_from_client_span_to_engine_spans() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    // The engine's request spans are `tracing` spans; its tasks run on any runtime thread, so
    // the subscriber must be the global one (this file holds a single test for that reason).
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(
        infermon::telemetry::tracing_layer(provider.tracer("engine")),
    ))
    .unwrap();

    let sim_config = SimConfig {
        time_scale: 20.0, // keep the test quick; timing is not under test here
        ..SimConfig::default()
    };
    let meter = opentelemetry::global::meter("test");
    let sim = Simulator::start(sim_config, SimTelemetry::new(&meter)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(infermon_sim::serve(
        sim.clone(),
        listener,
        std::future::pending(),
    ));

    let run = |api, stream, requests| {
        let mut c = LoadConfig::new(vec![url.clone()], sim.model());
        c.api = api;
        c.stream = stream;
        c.requests = Some(requests);
        c.arrival = Arrival::Closed { concurrency: 4 };
        c.prompt_tokens = LengthDist::Uniform { min: 16, max: 200 };
        c.output_tokens = LengthDist::Uniform { min: 4, max: 40 };
        c.seed = Some(7);
        let tracer = BoxedTracer::new(Box::new(provider.tracer("load")));
        run_traced(c, tracer)
    };
    let streamed: Summary = run(Api::Chat, true, STREAMED).await;
    let whole: Summary = run(Api::Completions, false, WHOLE).await;
    let engine = sim.stats();
    sim.shutdown().await;
    server.abort();
    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();

    // --- trace structure ---
    let clients: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.span_kind == SpanKind::Client)
        .collect();
    let servers: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.span_kind == SpanKind::Server)
        .collect();
    assert_eq!(clients.len() as u64, STREAMED + WHOLE);
    assert_eq!(servers.len() as u64, STREAMED + WHOLE);
    let server_by_parent: HashMap<SpanId, &SpanData> =
        servers.iter().map(|s| (s.parent_span_id, *s)).collect();
    for client in &clients {
        assert_eq!(
            client.parent_span_id,
            SpanId::INVALID,
            "client spans start traces"
        );
        assert_eq!(client.status, Status::Unset, "{client:?}");
        let server = server_by_parent
            .get(&client.span_context.span_id())
            .unwrap_or_else(|| panic!("no engine span under client span {client:?}"));
        assert_eq!(
            server.span_context.trace_id(),
            client.span_context.trace_id()
        );
        assert!(server.parent_span_is_remote, "the parent came over HTTP");
        for phase in [names::QUEUE, names::PREFILL, names::DECODE] {
            let child = spans
                .iter()
                .find(|s| s.name == phase && s.parent_span_id == server.span_context.span_id())
                .unwrap_or_else(|| panic!("no {phase} span under {server:?}"));
            assert_eq!(
                child.span_context.trace_id(),
                client.span_context.trace_id()
            );
        }
        // Both sides agree on what was exchanged.
        for key in [
            attr::GEN_AI_USAGE_INPUT_TOKENS,
            attr::GEN_AI_USAGE_OUTPUT_TOKENS,
        ] {
            assert_eq!(int(client, key), int(server, key), "{key}");
        }
        assert_eq!(
            attribute(client, attr::GEN_AI_RESPONSE_ID),
            attribute(server, attr::GEN_AI_RESPONSE_ID)
        );
        assert_eq!(
            attribute(client, attr::GEN_AI_REQUEST_MAX_TOKENS),
            attribute(server, attr::GEN_AI_REQUEST_MAX_TOKENS)
        );
    }
    let chat_name = names::request_span_name(names::CLIENT_PREFIX, sim.model());
    let completion_name = names::request_span_name(value::OPERATION_TEXT_COMPLETION, sim.model());
    assert_eq!(
        clients.iter().filter(|s| s.name == chat_name).count() as u64,
        STREAMED
    );
    assert_eq!(
        clients.iter().filter(|s| s.name == completion_name).count() as u64,
        WHOLE
    );

    // --- summaries agree with the requests sent and what the engine served ---
    for (summary, n) in [(&streamed, STREAMED), (&whole, WHOLE)] {
        assert_eq!(summary.requests.sent, n);
        assert_eq!(summary.requests.succeeded, n);
        assert_eq!(summary.requests.failed + summary.requests.cancelled, 0);
        assert_eq!(summary.latency.e2e.as_ref().unwrap().count, n);
        assert_eq!(summary.finish_reasons.values().sum::<u64>(), n);
    }
    assert_eq!(streamed.latency.ttft.as_ref().unwrap().count, STREAMED);
    let itl = streamed.latency.itl.as_ref().unwrap().count;
    assert_eq!(
        itl,
        streamed.tokens.output - STREAMED,
        "one chunk per token: every token after the first has a gap"
    );
    assert_eq!(engine.finished, STREAMED + WHOLE);
    assert_eq!(
        streamed.tokens.output + whole.tokens.output,
        engine.generation_tokens
    );
    assert_eq!(
        streamed.tokens.input + whole.tokens.input,
        engine.prompt_tokens
    );
    let client_output: i64 = clients
        .iter()
        .map(|c| int(c, attr::GEN_AI_USAGE_OUTPUT_TOKENS))
        .sum();
    assert_eq!(client_output as u64, engine.generation_tokens);
}
