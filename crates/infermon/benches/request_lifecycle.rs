//! One request lifecycle's telemetry — request span with its attributes, `queue`/`prefill`/
//! `decode` children, the `first_token` event, and every metric point — through the real SDK
//! pipeline (batch span processor, no-op exporter; meter provider with a periodic reader),
//! written four ways:
//!
//! * `raw_sdk_bound` — **the floor**: the same spans, attributes, event and metric points
//!   written directly against the OpenTelemetry API with instruments bound once;
//! * `raw_sdk`: the same, passing the attributes on every metric record (plain API use);
//! * `typed`: `InferenceRequest` as a server uses it;
//! * `macros`: the same lifecycle written with `tracing::info_span!`/`info!` only (the macros
//!   path of docs/instrumenting.md).
//!
//! `typed` and `macros` run under the subscriber `telemetry::init` installs
//! (`telemetry::init_subscriber`: fmt layer with its filters, the bridge, the metrics layer).
//!
//! Each is measured in wall-clock time (`request_lifecycle/*`) and in the calling thread's CPU
//! time (`request_lifecycle_cpu/*`), which other processes on a busy machine do not inflate.
//! `tokens/*` measures per-token recording.
//!
//! Counted only (`LIFECYCLE_COUNT`, below), not lifecycles: `poll_phase` enters and exits a live
//! `decode` phase span once, `poll_own` a span of the service's own inside it — what an
//! instrumented future pays per poll; `debug_event` and `debug_span` (entered once) are below
//! the `info` log level — what a dependency's `debug!` costs a service.
//!
//! Run: `cargo bench -p infermon --bench request_lifecycle`
//!
//! Instruction counts (stable on a noisy machine): with `LIFECYCLE_COUNT=<variant>:<n>` the
//! binary runs `n` lifecycles of one variant inside `measured_lifecycles` and exits (with
//! `LIFECYCLE_SUBSCRIBER=bare`: under a registry with only `init`'s `InfermonLayer`; with
//! `registry`: under the bare `tracing` registry, no layer, what `tracing` alone costs), for
//! `valgrind --tool=callgrind --toggle-collect='*measured_lifecycles*'` (see
//! docs/benchmarks.md for the full command). Run without valgrind, it also prints the calling
//! thread's CPU time per lifecycle over all `n`, steadier than criterion's short samples.
//!
//! Time side by side (`LIFECYCLE_ROUNDS=<rounds>[:<n>]`): every variant runs `n` lifecycles
//! (default 20,000) per round, in a rotating order, for `rounds` rounds; the binary prints each
//! variant's thread CPU per lifecycle (median, the 10th–90th percentile range and the minimum
//! over the rounds) and its median per-round ratio to the floor. A slow phase of a noisy machine
//! lands on every variant of the rounds it spans, so the ratios hold where single runs move by a
//! fifth.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{criterion_group, Criterion, Throughput};
use infermon::contract::{attr, buckets, metric, span as names, value};
use infermon::instruments::InferenceMetrics;
use infermon::request::{InferenceRequest, RequestParams};
use infermon::telemetry::TelemetryConfig;
use opentelemetry::metrics::{
    BoundCounter, BoundHistogram, Counter, Histogram, Meter, MeterProvider as _,
};
use opentelemetry::trace::{
    Span as _, SpanKind, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Array, Context, KeyValue, Value};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, SdkTracer, SdkTracerProvider, SpanData, SpanExporter,
};

const MODEL: &str = "llama-3-8b";

/// Counts what reaches it, so the run can show that no span was dropped on the way.
#[derive(Debug, Clone, Default)]
struct NoopSpanExporter(Arc<AtomicU64>);

impl SpanExporter for NoopSpanExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

struct NoopMetricExporter;

impl PushMetricExporter for NoopMetricExporter {
    async fn export(&self, _: &ResourceMetrics) -> OTelSdkResult {
        Ok(())
    }
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }
    fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
        Ok(())
    }
    fn temporality(&self) -> Temporality {
        Temporality::Cumulative
    }
}

struct Pipeline {
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
    exported: Arc<AtomicU64>,
}

fn pipeline() -> Pipeline {
    let exporter = NoopSpanExporter::default();
    let exported = exporter.0.clone();
    let tracer_provider = SdkTracerProvider::builder()
        .with_span_processor(BatchSpanProcessor::builder(exporter).build())
        .build();
    let meter_provider = SdkMeterProvider::builder()
        .with_reader(
            PeriodicReader::builder(NoopMetricExporter)
                .with_interval(Duration::from_secs(5))
                .build(),
        )
        .build();
    Pipeline {
        tracer_provider,
        meter_provider,
        exported,
    }
}

// The request the lifecycle tests check, so the benchmark measures exactly that.
#[allow(dead_code)] // the tests' other requests
#[path = "../tests/common/params.rs"]
mod request_params;

fn params() -> RequestParams<'static> {
    request_params::full_chat(MODEL)
}

/// The typed path.
fn typed_lifecycle(metrics: &InferenceMetrics) {
    let req = InferenceRequest::start(metrics, params(), None);
    let req = req.scheduled(3);
    let mut req = req.first_token(40);
    req.tokens(9);
    req.finish(value::FINISH_STOP);
}

/// The macros path: what a service writes with `tracing` alone (no explicit timestamps; the
/// spans take the moments they are created and closed).
fn macros_lifecycle() {
    let request = tracing::info_span!(
        "inference_request",
        otel.name = "chat llama-3-8b",
        otel.kind = "server",
        gen_ai.operation.name = value::OPERATION_CHAT,
        gen_ai.provider.name = value::PROVIDER_SIMULATOR,
        gen_ai.request.model = MODEL,
        gen_ai.request.stream = true,
        gen_ai.usage.input_tokens = 100u64,
        gen_ai.request.max_tokens = 128u64,
        gen_ai.request.temperature = 0.7,
        gen_ai.request.top_p = 0.9,
        gen_ai.response.id = "chatcmpl-1",
        gen_ai.response.time_to_first_chunk = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
        gen_ai.usage.cache_read.input_tokens = tracing::field::Empty,
        gen_ai.response.finish_reasons = tracing::field::Empty,
    );
    let arrived = Instant::now();
    let queue = tracing::info_span!(parent: &request, "queue", llm.queue.position = 3u64);
    drop(queue);
    let prefill = tracing::info_span!(
        parent: &request,
        "prefill",
        llm.prefill.computed_tokens = 60u64,
        llm.prefill.cached_tokens = 40u64
    );
    drop(prefill);
    let ttft = arrived.elapsed().as_secs_f64();
    tracing::info!(parent: &request, llm.time_to_first_token = ttft, "first_token");
    request.record("gen_ai.response.time_to_first_chunk", ttft);
    let decode = tracing::info_span!(
        parent: &request,
        "decode",
        llm.decode.output_tokens = 10u64,
        llm.decode.preemptions = 0u64
    );
    drop(decode);
    request.record("gen_ai.response.finish_reasons", value::FINISH_STOP);
    request.record("gen_ai.usage.output_tokens", 10u64);
    request.record("gen_ai.usage.cache_read.input_tokens", 40u64);
}

/// The request instruments, built directly.
struct RawInstruments {
    request_duration: Histogram<f64>,
    ttft: Histogram<f64>,
    tpot: Histogram<f64>,
    queue: Histogram<f64>,
    prefill: Histogram<f64>,
    decode: Histogram<f64>,
    request_tokens: Histogram<u64>,
    requests: Counter<u64>,
    tokens: Counter<u64>,
    cache_queries: Counter<u64>,
    cache_hits: Counter<u64>,
}

impl RawInstruments {
    fn new(m: &Meter) -> Self {
        let h = |name: &'static str, b: &[f64]| {
            m.f64_histogram(name).with_boundaries(b.to_vec()).build()
        };
        Self {
            request_duration: h(metric::REQUEST_DURATION, buckets::REQUEST_DURATION),
            ttft: h(metric::TIME_TO_FIRST_TOKEN, buckets::TIME_TO_FIRST_TOKEN),
            tpot: h(
                metric::TIME_PER_OUTPUT_TOKEN,
                buckets::TIME_PER_OUTPUT_TOKEN,
            ),
            queue: h(metric::QUEUE_DURATION, buckets::PHASE_DURATION),
            prefill: h(metric::PREFILL_DURATION, buckets::PHASE_DURATION),
            decode: h(metric::DECODE_DURATION, buckets::PHASE_DURATION),
            request_tokens: m
                .u64_histogram(metric::REQUEST_TOKENS)
                .with_boundaries(buckets::TOKENS.to_vec())
                .build(),
            requests: m.u64_counter(metric::REQUESTS).build(),
            tokens: m.u64_counter(metric::TOKENS).build(),
            cache_queries: m.u64_counter(metric::PREFIX_CACHE_QUERIES).build(),
            cache_hits: m.u64_counter(metric::PREFIX_CACHE_HITS).build(),
        }
    }

    /// The same instruments bound once to this benchmark's fixed attribute sets.
    fn bind(&self) -> BoundInstruments {
        let mo = model_op();
        let with = |kv: KeyValue| {
            let [m, o] = model_op();
            [m, o, kv]
        };
        let token = |ty| with(KeyValue::new(attr::GEN_AI_TOKEN_TYPE, ty));
        let [m, o] = model_op();
        BoundInstruments {
            request_duration: self.request_duration.bind(&mo),
            ttft: self.ttft.bind(&mo),
            tpot: self.tpot.bind(&mo),
            queue: self.queue.bind(&mo),
            prefill: self.prefill.bind(&mo),
            decode: self.decode.bind(&mo),
            request_tokens_in: self.request_tokens.bind(&token(value::TOKEN_INPUT)),
            request_tokens_out: self.request_tokens.bind(&token(value::TOKEN_OUTPUT)),
            requests_ok: self.requests.bind(&[
                m,
                o,
                KeyValue::new(attr::LLM_REQUEST_OUTCOME, value::OUTCOME_SUCCESS),
                KeyValue::new(attr::GEN_AI_RESPONSE_FINISH_REASON, value::FINISH_STOP),
            ]),
            tokens_in: self.tokens.bind(&token(value::TOKEN_INPUT)),
            tokens_out: self.tokens.bind(&token(value::TOKEN_OUTPUT)),
            cache_queries: self.cache_queries.bind(&mo),
            cache_hits: self.cache_hits.bind(&mo),
        }
    }
}

struct BoundInstruments {
    request_duration: BoundHistogram<f64>,
    ttft: BoundHistogram<f64>,
    tpot: BoundHistogram<f64>,
    queue: BoundHistogram<f64>,
    prefill: BoundHistogram<f64>,
    decode: BoundHistogram<f64>,
    request_tokens_in: BoundHistogram<u64>,
    request_tokens_out: BoundHistogram<u64>,
    requests_ok: BoundCounter<u64>,
    tokens_in: BoundCounter<u64>,
    tokens_out: BoundCounter<u64>,
    cache_queries: BoundCounter<u64>,
    cache_hits: BoundCounter<u64>,
}

fn model_op() -> [KeyValue; 2] {
    [
        KeyValue::new(attr::GEN_AI_REQUEST_MODEL, MODEL),
        KeyValue::new(attr::GEN_AI_OPERATION_NAME, value::OPERATION_CHAT),
    ]
}

/// The metric records of one request, at the points of its lifecycle where infermon makes them.
trait Records {
    fn scheduled(&self, queue: f64);
    fn first_token(&self, ttft: f64, prefill: f64, input: u64, cached: u64);
    fn finished(&self, decode: f64, tpot: f64, total: f64, input: u64, output: u64);
}

/// Unbound: every record passes its attributes, as plain API use does.
impl Records for RawInstruments {
    fn scheduled(&self, queue: f64) {
        self.queue.record(queue, &model_op());
    }

    fn first_token(&self, ttft: f64, prefill: f64, input: u64, cached: u64) {
        let mo = model_op();
        self.ttft.record(ttft, &mo);
        self.prefill.record(prefill, &mo);
        let [m, o] = model_op();
        let input_kv = KeyValue::new(attr::GEN_AI_TOKEN_TYPE, value::TOKEN_INPUT);
        self.tokens.add(input, &[m, o, input_kv]);
        self.cache_queries.add(input, &mo);
        self.cache_hits.add(cached, &mo);
    }

    fn finished(&self, decode: f64, tpot: f64, total: f64, input: u64, output: u64) {
        let mo = model_op();
        self.decode.record(decode, &mo);
        self.tpot.record(tpot, &mo);
        let token = |ty| {
            let [m, o] = model_op();
            [m, o, KeyValue::new(attr::GEN_AI_TOKEN_TYPE, ty)]
        };
        self.request_tokens
            .record(input, &token(value::TOKEN_INPUT));
        self.request_tokens
            .record(output, &token(value::TOKEN_OUTPUT));
        self.request_duration.record(total, &mo);
        let [m, o] = model_op();
        self.requests.add(
            1,
            &[
                m,
                o,
                KeyValue::new(attr::LLM_REQUEST_OUTCOME, value::OUTCOME_SUCCESS),
                KeyValue::new(attr::GEN_AI_RESPONSE_FINISH_REASON, value::FINISH_STOP),
            ],
        );
        self.tokens.add(output, &token(value::TOKEN_OUTPUT));
    }
}

/// Bound: the floor for these records.
impl Records for BoundInstruments {
    fn scheduled(&self, queue: f64) {
        self.queue.record(queue);
    }

    fn first_token(&self, ttft: f64, prefill: f64, input: u64, cached: u64) {
        self.ttft.record(ttft);
        self.prefill.record(prefill);
        self.tokens_in.add(input);
        self.cache_queries.add(input);
        self.cache_hits.add(cached);
    }

    fn finished(&self, decode: f64, tpot: f64, total: f64, input: u64, output: u64) {
        self.decode.record(decode);
        self.tpot.record(tpot);
        self.request_tokens_in.record(input);
        self.request_tokens_out.record(output);
        self.request_duration.record(total);
        self.requests_ok.add(1);
        self.tokens_out.add(output);
    }
}

fn secs(from: SystemTime, to: SystemTime) -> f64 {
    to.duration_since(from).map_or(0.0, |d| d.as_secs_f64())
}

/// What `typed_lifecycle` emits, spelled out against the OpenTelemetry API.
fn raw_lifecycle(tracer: &SdkTracer, m: &impl Records) {
    let p = params();
    let arrived = SystemTime::now();
    let root = tracer
        .span_builder(names::request_span_name(p.operation, p.model))
        .with_kind(SpanKind::Server)
        .with_start_time(arrived)
        .with_attributes([
            KeyValue::new(attr::GEN_AI_OPERATION_NAME, p.operation),
            KeyValue::new(attr::GEN_AI_PROVIDER_NAME, p.provider),
            KeyValue::new(attr::GEN_AI_REQUEST_MODEL, p.model),
            KeyValue::new(attr::GEN_AI_REQUEST_STREAM, p.stream),
            KeyValue::new(attr::GEN_AI_USAGE_INPUT_TOKENS, 100),
            KeyValue::new(attr::GEN_AI_REQUEST_MAX_TOKENS, 128),
            KeyValue::new(attr::GEN_AI_REQUEST_TEMPERATURE, 0.7),
            KeyValue::new(attr::GEN_AI_REQUEST_TOP_P, 0.9),
            KeyValue::new(attr::GEN_AI_RESPONSE_ID, "chatcmpl-1"),
        ])
        .start(tracer);
    let cx = Context::new().with_span(root);
    let child = |name: &'static str, at: SystemTime| {
        tracer
            .span_builder(name)
            .with_start_time(at)
            .start_with_context(tracer, &cx)
    };

    let mut queue = child(names::QUEUE, arrived);
    let scheduled = SystemTime::now();
    queue.set_attribute(KeyValue::new(attr::LLM_QUEUE_POSITION, 3));
    queue.end_with_timestamp(scheduled);
    m.scheduled(secs(arrived, scheduled));

    let mut prefill = child(names::PREFILL, scheduled);
    let first = SystemTime::now();
    prefill.set_attributes([
        KeyValue::new(attr::LLM_PREFILL_COMPUTED_TOKENS, 60),
        KeyValue::new(attr::LLM_PREFILL_CACHED_TOKENS, 40),
    ]);
    prefill.end_with_timestamp(first);
    let ttft = secs(arrived, first);
    m.first_token(ttft, secs(scheduled, first), 100, 40);
    cx.span().add_event_with_timestamp(
        names::EVENT_FIRST_TOKEN,
        first,
        vec![KeyValue::new(attr::LLM_TTFT, ttft)],
    );
    cx.span().set_attribute(KeyValue::new(
        attr::GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK,
        ttft,
    ));

    let mut decode = child(names::DECODE, first);
    let end = SystemTime::now();
    let d = secs(first, end);
    decode.set_attributes([
        KeyValue::new(attr::LLM_DECODE_OUTPUT_TOKENS, 10),
        KeyValue::new(attr::LLM_DECODE_PREEMPTIONS, 0),
    ]);
    decode.end_with_timestamp(end);
    m.finished(d, d / 9.0, secs(arrived, end), 100, 10);
    cx.span().set_attributes([
        KeyValue::new(
            attr::GEN_AI_RESPONSE_FINISH_REASONS,
            Value::Array(Array::String(vec![value::FINISH_STOP.into()])),
        ),
        KeyValue::new(attr::GEN_AI_USAGE_OUTPUT_TOKENS, 10),
        KeyValue::new(attr::GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, 40),
    ]);
    cx.span().end_with_timestamp(end);
}

/// Everything the variants share, set up once per process (the subscriber is global).
struct Setup {
    pipeline: Pipeline,
    raw: RawInstruments,
    raw_bound: BoundInstruments,
    raw_tracer: SdkTracer,
    metrics: InferenceMetrics,
}

impl Setup {
    /// Exports every span ended so far (between measured bursts, see [`bursts`]).
    fn flush(&self) {
        let _ = self.pipeline.tracer_provider.force_flush();
    }
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let p = pipeline();
        // As in production: the subscriber `init` installs, as the global default; logs at
        // `info` to a sink (nothing else logs here).
        let config = TelemetryConfig::new("bench")
            .with_log_filter("info")
            .with_log_writer(|| Box::new(std::io::sink()));
        let (tracer, meter) = (
            p.tracer_provider.tracer("bench"),
            p.meter_provider.meter("bench"),
        );
        let subscriber_kind = std::env::var("LIFECYCLE_SUBSCRIBER");
        if subscriber_kind.as_deref() == Ok("registry") {
            // What `tracing` itself costs the macros path: the registry alone, no layer (so
            // no telemetry at all; not a comparable variant, a floor for the macros path).
            tracing::subscriber::set_global_default(tracing_subscriber::registry())
                .expect("first subscriber");
        } else if subscriber_kind.as_deref() == Ok("bare") {
            // For the breakdown in docs/benchmarks.md: `init`'s telemetry layer alone, no fmt
            // layer.
            use tracing_subscriber::layer::SubscriberExt as _;
            let subscriber =
                tracing_subscriber::registry().with(infermon::layer::InfermonLayer::new(
                    infermon::telemetry::tracing_layer(tracer),
                    infermon::telemetry::metrics_layer(&meter),
                ));
            tracing::subscriber::set_global_default(subscriber).expect("first subscriber");
        } else {
            let subscriber = infermon::telemetry::init_subscriber(&config, tracer, &meter)
                .expect("valid config");
            tracing::subscriber::set_global_default(subscriber).expect("first subscriber");
        }

        Setup {
            raw: RawInstruments::new(&p.meter_provider.meter("bench-raw")),
            raw_bound: RawInstruments::new(&p.meter_provider.meter("bench-bound")).bind(),
            raw_tracer: p.tracer_provider.tracer("bench-raw"),
            metrics: InferenceMetrics::new(&p.meter_provider.meter("bench-caps")),
            pipeline: p,
        }
    })
}

/// The variants by name, as `LIFECYCLE_COUNT` and the criterion groups know them.
fn variant(name: &str) -> Option<Box<dyn Fn()>> {
    let s = setup();
    Some(match name {
        "raw_sdk_bound" => {
            Box::new(|| raw_lifecycle(black_box(&s.raw_tracer), black_box(&s.raw_bound)))
        }
        "raw_sdk" => Box::new(|| raw_lifecycle(black_box(&s.raw_tracer), black_box(&s.raw))),
        "typed" => Box::new(|| typed_lifecycle(black_box(&s.metrics))),
        "macros" => Box::new(macros_lifecycle),
        "poll_phase" => Box::new(|| polled_spans().phase.in_scope(|| black_box(()))),
        "poll_own" => Box::new(|| polled_spans().own.in_scope(|| black_box(()))),
        "debug_event" => Box::new(|| tracing::debug!(step = black_box(7u64), "detail")),
        "debug_span" => Box::new(|| tracing::debug_span!("step").in_scope(|| black_box(()))),
        _ => return None,
    })
}

/// Live spans for the `poll_*` counts: a macros request span, its `decode` phase, and a span of
/// the service's own inside the phase (what `#[instrument]` gives).
struct PolledSpans {
    phase: tracing::Span,
    own: tracing::Span,
}

/// Made once, under the subscriber [`setup`] installs, and kept open for the whole run: an
/// instrumented future enters and exits its span on every poll, and a streaming request is
/// polled once per token or so.
fn polled_spans() -> &'static PolledSpans {
    static SPANS: OnceLock<PolledSpans> = OnceLock::new();
    SPANS.get_or_init(|| {
        let request = tracing::info_span!(
            "inference_request",
            otel.name = "chat llama-3-8b",
            otel.kind = "server",
            gen_ai.operation.name = value::OPERATION_CHAT,
            gen_ai.request.model = MODEL,
        );
        let phase = tracing::info_span!(parent: &request, "decode");
        let own = tracing::info_span!(parent: &phase, "sample_batch", batch = 8u64);
        PolledSpans { phase, own }
    })
}

const VARIANTS: [&str; 4] = ["raw_sdk_bound", "raw_sdk", "typed", "macros"];

/// Variants for `LIFECYCLE_COUNT` only: one poll or one disabled callsite each, not a lifecycle
/// (see the module docs).
const COUNTED_ONLY: [&str; 4] = ["poll_phase", "poll_own", "debug_event", "debug_span"];

/// Lifecycles per measured burst: 4 spans each, so a burst (1,600 spans) fits the batch
/// processor's default queue of 2,048 and nothing is ever dropped.
const BURST: u64 = 400;

/// Runs `iters` lifecycles in bursts and returns the `clock` time spent inside the bursts.
///
/// Between bursts, outside the measured time, the span pipeline is flushed. Measured back to
/// back, a single thread produces spans faster than the batch processor's export thread drains
/// them on this machine; the queue fills and the processor drops spans, and a dropped span
/// costs less than an exported one, which would flatter whichever variant happened to run
/// while the queue was full. Bursts keep every measured span on the real export path.
fn bursts(iters: u64, clock: fn() -> Duration, flush: &dyn Fn(), lifecycle: &dyn Fn()) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(BURST);
        flush();
        let start = clock();
        for _ in 0..n {
            lifecycle();
        }
        total += clock().saturating_sub(start);
        left -= n;
    }
    total
}

/// The variants as one criterion group, timed with `clock`.
fn variants<M: Measurement<Value = Duration>>(
    c: &mut Criterion<M>,
    group: &str,
    clock: fn() -> Duration,
) {
    let s = setup();
    // Lifecycles run, to compare with the spans that reached the exporter (4 per lifecycle):
    // equal means the batch processor dropped nothing and the measurement is the full cost.
    let lifecycles = AtomicU64::new(0);
    let exported_before = s.pipeline.exported.load(Ordering::Relaxed);
    let flush = || s.flush();
    let mut g = c.benchmark_group(group);
    let mut run = |name: &str, lifecycle: &dyn Fn()| {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                lifecycles.fetch_add(iters, Ordering::Relaxed);
                bursts(iters, clock, &flush, lifecycle)
            })
        });
    };
    for name in VARIANTS {
        let lifecycle = variant(name).expect("known variant");
        run(name, &*lifecycle);
    }
    g.finish();

    flush();
    let spans = 4 * lifecycles.load(Ordering::Relaxed);
    let exported = s.pipeline.exported.load(Ordering::Relaxed) - exported_before;
    eprintln!(
        "{group}: spans created: {spans}, reached the no-op exporter: {exported} ({} dropped)",
        spans.saturating_sub(exported)
    );
}

/// Wall-clock time since the first call (criterion's usual measurement).
fn wall_now() -> Duration {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed()
}

fn wall_clock(c: &mut Criterion) {
    variants(c, "request_lifecycle", wall_now);
}

fn thread_cpu(c: &mut Criterion<ThreadCpuTime>) {
    variants(c, "request_lifecycle_cpu", thread_cpu_now);
}

/// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`): what the request path itself
/// spends, not inflated by other processes taking the CPU away — the figure that stays honest
/// on a shared 2-core machine. (The batch processor's export thread is not included; it is the
/// same per span for every variant.)
struct ThreadCpuTime;

fn thread_cpu_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        thread_cpu_now()
    }
    fn end(&self, started: Duration) -> Duration {
        thread_cpu_now().saturating_sub(started)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &Nanoseconds
    }
}

/// Formats nanosecond values like criterion's wall-clock output.
struct Nanoseconds;

impl ValueFormatter for Nanoseconds {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (divisor, unit) = match typical {
            t if t < 1e3 => (1.0, "ns"),
            t if t < 1e6 => (1e3, "µs"),
            t if t < 1e9 => (1e6, "ms"),
            _ => (1e9, "s"),
        };
        values.iter_mut().for_each(|v| *v /= divisor);
        unit
    }

    fn scale_throughputs(&self, _: f64, _: &Throughput, values: &mut [f64]) -> &'static str {
        // No throughput is configured for these benchmarks; report per-iteration values.
        self.scale_for_machines(values)
    }

    fn scale_for_machines(&self, _: &mut [f64]) -> &'static str {
        "ns"
    }
}

fn config<M: Measurement>(c: Criterion<M>) -> Criterion<M> {
    c.without_plots()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

/// Per-token recording on the typed path: `tokens(1)` on a decoding request.
fn per_token(c: &mut Criterion<ThreadCpuTime>) {
    let s = setup();
    let mut req = InferenceRequest::start(&s.metrics, params(), None)
        .scheduled(0)
        .first_token(0);
    c.bench_function("tokens/typed_tokens_1", |b| {
        b.iter(|| req.tokens(black_box(1)))
    });
    req.finish(value::FINISH_STOP);
}

criterion_group! {
    name = wall;
    config = config(Criterion::default());
    targets = wall_clock
}
criterion_group! {
    name = cpu;
    config = config(Criterion::default().with_measurement(ThreadCpuTime));
    targets = thread_cpu, per_token
}

/// Runs `n` lifecycles of `lifecycle` in bursts, flushing between bursts outside
/// [`measured_lifecycles`] (the function callgrind counts).
fn count(spec: &str) {
    let known = || format!("{VARIANTS:?}, or counted only {COUNTED_ONLY:?}");
    let (name, n) = spec
        .split_once(':')
        .and_then(|(name, n)| Some((name, n.parse::<u64>().ok()?)))
        .unwrap_or_else(|| {
            panic!(
                "LIFECYCLE_COUNT={spec}: expected <variant>:<n>, variants {}",
                known()
            )
        });
    let lifecycle =
        variant(name).unwrap_or_else(|| panic!("unknown variant {name}; one of {}", known()));
    let s = setup();
    // One unmeasured lifecycle first: bound series, label caps and lazily built state exist
    // from then on, as in a server that has served one request of the model.
    lifecycle();
    let mut left = n;
    let mut cpu = Duration::ZERO;
    while left > 0 {
        let burst = left.min(BURST);
        s.flush();
        let started = thread_cpu_now();
        measured_lifecycles(burst, &*lifecycle);
        cpu += thread_cpu_now() - started;
        left -= burst;
    }
    s.flush();
    // The calling thread's CPU time over all `n` lifecycles: with a large `n`, steadier on a
    // busy machine than criterion's short samples.
    eprintln!(
        "{name}: {n} runs, {:.3} µs thread CPU each",
        cpu.as_secs_f64() * 1e6 / n as f64
    );
}

/// Runs every variant `n` lifecycles per round for `rounds` rounds (see the module docs) and
/// prints their thread CPU per lifecycle and ratios to the floor.
fn rounds(spec: &str) {
    let parsed = match spec.split_once(':') {
        Some((rounds, n)) => rounds.parse::<usize>().ok().zip(n.parse::<u64>().ok()),
        None => spec.parse::<usize>().ok().map(|rounds| (rounds, 20_000)),
    };
    let Some((rounds, n)) = parsed.filter(|(r, n)| *r > 0 && *n > 0) else {
        panic!("LIFECYCLE_ROUNDS={spec}: expected <rounds>[:<lifecycles per round>], both > 0");
    };
    let s = setup();
    let flush = || s.flush();
    let lifecycles: Vec<_> = VARIANTS
        .iter()
        .map(|name| variant(name).expect("known variant"))
        .collect();
    for lifecycle in &lifecycles {
        lifecycle();
    }
    // Per variant, its thread CPU per lifecycle in each round (µs).
    let mut per_round = vec![Vec::with_capacity(rounds); VARIANTS.len()];
    for round in 0..rounds {
        for k in 0..VARIANTS.len() {
            let v = (round + k) % VARIANTS.len();
            let cpu = bursts(n, thread_cpu_now, &flush, &*lifecycles[v]);
            per_round[v].push(cpu.as_secs_f64() * 1e6 / n as f64);
        }
        eprint!("\rround {}/{rounds}", round + 1);
    }
    eprintln!();
    let floor = &per_round[0]; // VARIANTS[0], `raw_sdk_bound`
    println!("{rounds} rounds of {n} lifecycles per variant, thread CPU per lifecycle (µs):");
    println!("variant          median   p10–p90        min     ratio to floor (median)");
    for (name, times) in VARIANTS.iter().zip(&per_round) {
        let ratios: Vec<f64> = times.iter().zip(floor).map(|(t, f)| t / f).collect();
        let (median, p10, p90, min) = (
            quantile(times, 0.5),
            quantile(times, 0.1),
            quantile(times, 0.9),
            quantile(times, 0.0),
        );
        println!(
            "{name:<15} {median:>7.3}   {p10:.3}–{p90:.3}    {min:.3}   {:.2}",
            quantile(&ratios, 0.5)
        );
    }
}

/// The `q` quantile of `values` (nearest rank).
fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[rank]
}

#[inline(never)]
fn measured_lifecycles(n: u64, lifecycle: &dyn Fn()) {
    for _ in 0..n {
        lifecycle();
    }
}

fn main() {
    if let Ok(spec) = std::env::var("LIFECYCLE_COUNT") {
        return count(&spec);
    }
    if let Ok(spec) = std::env::var("LIFECYCLE_ROUNDS") {
        return rounds(&spec);
    }
    wall();
    cpu();
    Criterion::default().configure_from_args().final_summary();
}
