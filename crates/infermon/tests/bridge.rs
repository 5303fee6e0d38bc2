//! What the bridge (`infermon::layer::OtelLayer`) promises, pinned so that a change in it — or
//! in a dependency under it — fails here: explicit timestamps through the documented fields,
//! `traceparent` parenting a request span written with macros, and the fmt layer of `init`'s
//! subscriber leaving request spans out unless asked and span enters and exits alone unless its
//! filter needs them.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::params::plain_chat;
use common::*;
use http::HeaderMap;
use infermon::contract::{field, span as names, value};
use infermon::layer::{context_of, unix_nanos, InfermonLayer};
use infermon::propagation::extract_context;
use infermon::request::InferenceRequest;
use infermon::telemetry::{metrics_layer, tracing_layer, TelemetryConfig};
use opentelemetry::trace::{SpanKind, Status, TracerProvider as _};
use opentelemetry::Value;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::Layer as _;

fn t(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000) + Duration::from_millis(ms)
}

/// A relay rebuilding a span from another system's data: every time comes from the fields.
#[test]
fn explicit_start_end_and_event_times_are_exported_exactly() {
    let h = Harness::new();
    h.run(|| {
        let span = tracing::info_span!(
            "imported",
            otel.name = "imported step",
            otel.kind = "client",
            { field::START_TIME } = unix_nanos(t(10)),
            { field::END_TIME } = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
            step = 7u64,
        );
        tracing::info!(parent: &span, infermon.time_unix_nano = unix_nanos(t(15)), detail = "x", "checkpoint");
        span.record(field::END_TIME, unix_nanos(t(20)));
        span.record("otel.status_code", "error");
        span.record("otel.status_description", "boom");
    });
    let s = h.span("imported step");
    assert_eq!((s.start_time, s.end_time), (t(10), t(20)));
    assert_eq!(s.span_kind, SpanKind::Client);
    assert_eq!(s.status, Status::error("boom"));
    assert_eq!(attr(&s.attributes, "step"), Some(&Value::I64(7)));
    // The steering fields are not exported as attributes.
    for f in [
        field::START_TIME,
        field::END_TIME,
        field::OTEL_NAME,
        field::OTEL_KIND,
    ] {
        assert!(attr(&s.attributes, f).is_none(), "{f}");
    }
    let event = &s.events.iter().collect::<Vec<_>>()[0];
    assert_eq!(event.name, "checkpoint");
    assert_eq!(event.timestamp, t(15));
    assert_eq!(attr(&event.attributes, "detail"), Some(&Value::from("x")));
}

/// Without the time fields, spans take the moments they are created and closed.
#[test]
fn without_time_fields_spans_take_creation_and_close_times() {
    let h = Harness::new();
    let before = SystemTime::now();
    h.run(|| tracing::info_span!("plain").in_scope(|| {}));
    let after = SystemTime::now();
    let s = h.span("plain");
    assert!(before <= s.start_time && s.start_time <= s.end_time && s.end_time <= after);
    assert_eq!(s.span_kind, SpanKind::Internal);
}

/// The macros path joins the caller's trace: the context extracted from `traceparent` is
/// current while the request span is created.
#[test]
fn traceparent_parents_a_request_span_written_with_macros() {
    let h = Harness::new();
    let mut headers = HeaderMap::new();
    headers.insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    let mut own_context = None;
    h.run(|| {
        let _caller = extract_context(&headers).attach();
        let span = tracing::info_span!(
            "inference_request",
            otel.name = "chat m",
            otel.kind = "server"
        );
        own_context = Some(context_of(&span));
    });
    let root = h.span("chat m");
    assert_eq!(root.span_kind, SpanKind::Server);
    assert_eq!(
        root.span_context.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(root.parent_span_id.to_string(), "00f067aa0ba902b7");
    assert!(root.parent_span_is_remote);
    use opentelemetry::trace::TraceContextExt as _;
    assert_eq!(
        own_context.unwrap().span().span_context().span_id(),
        root.span_context.span_id()
    );
}

/// One request under `init`'s subscriber (with an in-memory tracer) whose logs go to a buffer:
/// the logs and the number of spans exported.
fn logged_request(config: TelemetryConfig, request: fn(&Harness)) -> (String, usize) {
    let h = Harness::new();
    let logs = Logs::default();
    let sink = logs.clone();
    let config = config.with_log_writer(move || Box::new(sink.clone()));
    let subscriber =
        infermon::telemetry::init_subscriber(&config, h.tracer_provider.tracer("init"), &h.meter())
            .unwrap();
    tracing::subscriber::with_default(subscriber, || request(&h));
    let text = logs.text();
    (text, h.spans().len())
}

/// The typed path, with a user's log line inside its prefill phase.
fn typed_request(h: &Harness) {
    let req = InferenceRequest::start(&h.metrics(), plain_chat("m", 3), None).scheduled(0);
    req.phase_span()
        .in_scope(|| tracing::info!("user log line"));
    let mut req = req.first_token(0);
    req.tokens(1);
    req.finish(value::FINISH_STOP);
}

/// The same request written with macros only.
fn macros_request(_: &Harness) {
    let request = tracing::info_span!(
        "inference_request",
        otel.name = "chat m",
        gen_ai.operation.name = "chat",
        gen_ai.request.model = "m",
        gen_ai.usage.input_tokens = 3u64,
        gen_ai.response.finish_reasons = tracing::field::Empty,
    );
    drop(tracing::info_span!(parent: &request, "queue"));
    tracing::info_span!(parent: &request, "prefill").in_scope(|| tracing::info!("user log line"));
    tracing::info!(parent: &request, llm.time_to_first_token = 0.01, "first_token");
    drop(tracing::info_span!(parent: &request, "decode"));
    request.record("gen_ai.response.finish_reasons", value::FINISH_STOP);
}

#[test]
fn fmt_layer_leaves_request_spans_out_unless_asked() {
    for (path, request) in [
        ("typed", typed_request as fn(&Harness)),
        ("macros", macros_request),
    ] {
        let (quiet, spans) =
            logged_request(TelemetryConfig::new("t").with_log_filter("info"), request);
        // Exported all the same.
        assert_eq!(spans, 4, "{path}");
        assert!(quiet.contains("user log line"), "{path}: {quiet}");
        for name in [names::REQUEST, names::PREFILL, names::EVENT_FIRST_TOKEN] {
            assert!(!quiet.contains(name), "{path}: {name} formatted in {quiet}");
        }

        let (shown, _) = logged_request(
            TelemetryConfig::new("t")
                .with_log_filter("info")
                .with_log_request_spans(true),
            request,
        );
        // The user's line now shows the request and phase it ran in, and the request's events
        // are logged.
        assert!(shown.contains(names::REQUEST), "{path}: {shown}");
        assert!(shown.contains(names::PREFILL), "{path}: {shown}");
        assert!(shown.contains(names::EVENT_FIRST_TOKEN), "{path}: {shown}");
    }
}

/// `init` stops telling the fmt layer of span enters and exits (every poll of an instrumented
/// future makes both) unless its filter has span-scoped directives, which need them: under
/// `warn,[load_weights]=debug` a debug line inside an entered `load_weights` span is logged, one
/// outside it is not.
#[test]
fn a_span_scoped_log_directive_still_sees_the_spans_entered() {
    let (logs, _) = logged_request(
        TelemetryConfig::new("t").with_log_filter("warn,[load_weights]=debug"),
        |_| {
            tracing::info_span!("load_weights").in_scope(|| tracing::debug!("inside the span"));
            tracing::debug!("outside any span");
        },
    );
    assert!(logs.contains("inside the span"), "{logs}");
    assert!(!logs.contains("outside any span"), "{logs}");
}

/// A log layer that counts the span enters and exits it is told of.
struct CountingEnters(Arc<AtomicUsize>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CountingEnters {
    fn on_enter(&self, _: &tracing::span::Id, _: tracing_subscriber::layer::Context<'_, S>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn on_exit(&self, _: &tracing::span::Id, _: tracing_subscriber::layer::Context<'_, S>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn log_skips_enter_exit_keeps_span_enters_and_exits_from_the_log_layer() {
    // Not asked; asked after the log layer is set; asked before it.
    for (case, skip_before, skip_after, expected) in [
        ("passed on", false, false, 4),
        ("skipped, asked after", false, true, 0),
        ("skipped, asked before", true, false, 0),
    ] {
        let h = Harness::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let mut layer = InfermonLayer::new(
            tracing_layer(h.tracer_provider.tracer("t")),
            metrics_layer(&h.meter()),
        );
        if skip_before {
            layer = layer.log_skips_enter_exit();
        }
        layer = layer.with_log_layer(
            CountingEnters(calls.clone()).with_filter(LevelFilter::INFO),
            |_| false,
        );
        if skip_after {
            layer = layer.log_skips_enter_exit();
        }
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("work");
            span.in_scope(|| tracing::info!("polled"));
            span.in_scope(|| tracing::info!("polled again"));
        });
        assert_eq!(calls.load(Ordering::Relaxed), expected, "{case}");
    }
}

/// `init`'s subscriber tells `tracing` the most verbose level any of its layers uses — the
/// bridge's INFO, or the log filter's level if more verbose — so more verbose `debug!` and
/// `trace!` callsites are skipped inside the macro instead of dispatched to layers that drop
/// them.
#[test]
fn init_hints_the_most_verbose_level_its_layers_use() {
    use tracing::Subscriber as _;
    let h = Harness::new();
    for (filter, hint) in [
        ("info", LevelFilter::INFO),
        ("warn", LevelFilter::INFO),
        ("debug", LevelFilter::DEBUG),
        ("info,load_weights=trace", LevelFilter::TRACE),
        ("warn,[load_weights]=debug", LevelFilter::DEBUG),
    ] {
        for fmt_layer in [true, false] {
            let config = TelemetryConfig::new("t")
                .with_log_filter(filter)
                .with_fmt_layer(fmt_layer);
            let subscriber = infermon::telemetry::init_subscriber(
                &config,
                h.tracer_provider.tracer("init"),
                &h.meter(),
            )
            .unwrap();
            let expected = if fmt_layer { hint } else { LevelFilter::INFO };
            assert_eq!(
                subscriber.max_level_hint(),
                Some(expected),
                "{filter}, fmt layer {fmt_layer}"
            );
        }
    }
}

/// Under an `info` log a `debug_span!` is not even created (whatever other subscribers are live
/// in this process), and under a `debug` log a debug line is still logged.
#[test]
fn a_debug_callsite_is_disabled_unless_the_log_asks_for_it() {
    let (logs, _) = logged_request(TelemetryConfig::new("t").with_log_filter("info"), |_| {
        assert!(tracing::debug_span!("step").is_disabled());
        tracing::debug!("debug detail");
        tracing::info!("info line");
    });
    assert!(!logs.contains("debug detail"), "{logs}");
    assert!(logs.contains("info line"), "{logs}");

    let (logs, _) = logged_request(TelemetryConfig::new("t").with_log_filter("debug"), |_| {
        assert!(!tracing::debug_span!("step").is_disabled());
        tracing::debug!("debug detail");
    });
    assert!(logs.contains("debug detail"), "{logs}");
}
