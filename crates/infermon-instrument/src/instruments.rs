//! The contract's instruments: per-request ([`InferenceMetrics`]) and engine-state
//! ([`EngineMetrics`]).
//!
//! Histograms carry the contract's explicit boundaries (set on the instrument with
//! `with_boundaries`), never the SDK default. User-supplied label values (model, operation,
//! finish reason, error type) pass through a [`LabelCap`] so no caller can create unbounded
//! series.
//!
//! Request metrics are recorded through instruments bound to each (model, operation) attribute
//! set (the SDK's bound instruments), created on a model's first request. Such series are
//! exported from then on, at zero until something is counted in them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use opentelemetry::metrics::{
    AsyncInstrument, AsyncInstrumentBuilder, BoundCounter, BoundHistogram, Counter, Histogram,
    Meter,
};
use opentelemetry::{KeyValue, StringValue};

use crate::cardinality::{FastHash, LabelCap, LabelPolicy};
use crate::contract::{attr, buckets, metric, metric_spec, value};
use crate::exemplars::TracedHistogram;

/// How many distinct model names [`InferenceMetrics::new`] admits before mapping newcomers to
/// `other`.
pub const DEFAULT_MODEL_CAP: usize = 64;
/// Distinct operation names admitted (the contract knows two; room for a few custom ones).
const OPERATION_CAP: usize = 16;
/// Distinct finish reasons admitted (OpenAI's handful plus `abort` and `error`).
const FINISH_REASON_CAP: usize = 16;
/// Distinct error types admitted.
const ERROR_TYPE_CAP: usize = 32;
/// Captured prompt or completion content is cut past this many bytes.
pub const DEFAULT_MAX_CONTENT_LEN: usize = 16 * 1024;

/// The request-level instruments of the contract and the label caps.
///
/// The [`MetricsLayer`](crate::layer::MetricsLayer) records into them from the request's
/// `tracing` spans and events (the typed path records into the layer's instance itself, by the
/// same rules); the typed [`InferenceRequest`](crate::request::InferenceRequest) uses the caps
/// of the instance it is given so its span names agree with the metric labels.
///
/// Cheap to clone (one `Arc`); create one per process (or per engine) and share it.
#[derive(Clone, Debug)]
pub struct InferenceMetrics {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub request_duration: Histogram<f64>,
    pub time_to_first_token: Histogram<f64>,
    pub time_per_output_token: Histogram<f64>,
    pub queue_duration: Histogram<f64>,
    pub prefill_duration: Histogram<f64>,
    pub decode_duration: Histogram<f64>,
    pub request_tokens: Histogram<u64>,
    pub gpu_time: Histogram<f64>,
    pub requests: Counter<u64>,
    pub tokens: Counter<u64>,
    pub prefix_cache_queries: Counter<u64>,
    pub prefix_cache_hits: Counter<u64>,
    pub models: LabelCap,
    pub operations: LabelCap,
    pub finish_reasons: LabelCap,
    pub error_types: LabelCap,
    pub capture_content: bool,
    pub max_content_len: usize,
    /// Bound instruments per (capped model, operation); bounded by the two caps.
    series: RwLock<HashMap<(StringValue, StringValue), Arc<Series>, FastHash>>,
}

/// The instruments of one (model, operation) pair, bound to its attribute sets.
///
/// Binding resolves the attribute set once; each record is then an update of a known
/// aggregator instead of hashing two or three attributes to find it — which was most of the
/// cost of a request's telemetry. The per-request metrics whose attributes vary beyond model
/// and operation (`llm.requests`, and the request duration with `error.type`) stay unbound.
#[derive(Debug)]
pub(crate) struct Series {
    pub model: StringValue,
    pub operation: StringValue,
    /// `gen_ai.server.request.duration` without `error.type` (success and abort).
    pub request_duration: TracedHistogram,
    pub time_to_first_token: TracedHistogram,
    pub time_per_output_token: TracedHistogram,
    pub queue_duration: TracedHistogram,
    pub prefill_duration: TracedHistogram,
    pub decode_duration: TracedHistogram,
    pub request_input_tokens: BoundHistogram<u64>,
    pub request_output_tokens: BoundHistogram<u64>,
    pub gpu_time: BoundHistogram<f64>,
    pub input_tokens: BoundCounter<u64>,
    pub output_tokens: BoundCounter<u64>,
    pub prefix_cache_queries: BoundCounter<u64>,
    pub prefix_cache_hits: BoundCounter<u64>,
    /// `llm.requests` for outcome `aborted`.
    pub aborted: BoundCounter<u64>,
    /// `llm.requests` for outcome `success`, by (capped) finish reason, bound on first use.
    succeeded: RwLock<HashMap<StringValue, BoundCounter<u64>, FastHash>>,
    requests: Counter<u64>,
}

impl Series {
    /// Counts one successful request that finished for `reason` (already capped).
    pub fn count_success(&self, reason: &StringValue) {
        let bound = self.succeeded.read().unwrap_or_else(|e| e.into_inner());
        if let Some(counter) = bound.get(reason) {
            return counter.add(1);
        }
        drop(bound);
        let mut bound = self.succeeded.write().unwrap_or_else(|e| e.into_inner());
        bound
            .entry(reason.clone())
            .or_insert_with(|| {
                let [model, op] = self.model_op();
                self.requests.bind(&[
                    model,
                    op,
                    KeyValue::new(attr::LLM_REQUEST_OUTCOME, value::OUTCOME_SUCCESS),
                    KeyValue::new(attr::GEN_AI_RESPONSE_FINISH_REASON, reason.clone()),
                ])
            })
            .add(1);
    }

    /// `[model, operation]` as metric attributes.
    pub fn model_op(&self) -> [KeyValue; 2] {
        [
            KeyValue::new(attr::GEN_AI_REQUEST_MODEL, self.model.clone()),
            KeyValue::new(attr::GEN_AI_OPERATION_NAME, self.operation.clone()),
        ]
    }
}

impl Inner {
    /// The bound instruments for a request's model and operation (already passed through the
    /// caps), created on first use.
    pub(crate) fn series(&self, model: StringValue, operation: StringValue) -> Arc<Series> {
        let key = (model, operation);
        let existing = self.series.read().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = existing.get(&key) {
            return s.clone();
        }
        drop(existing);
        let mut all = self.series.write().unwrap_or_else(|e| e.into_inner());
        all.entry(key)
            .or_insert_with_key(|(model, operation)| Arc::new(self.bind(model, operation)))
            .clone()
    }

    fn bind(&self, model: &StringValue, operation: &StringValue) -> Series {
        let mo = [
            KeyValue::new(attr::GEN_AI_REQUEST_MODEL, model.clone()),
            KeyValue::new(attr::GEN_AI_OPERATION_NAME, operation.clone()),
        ];
        let token = |ty: &'static str| {
            let [m, o] = mo.clone();
            [m, o, KeyValue::new(attr::GEN_AI_TOKEN_TYPE, ty)]
        };
        Series {
            model: model.clone(),
            operation: operation.clone(),
            request_duration: traced(&self.request_duration, metric::REQUEST_DURATION, &mo),
            time_to_first_token: traced(
                &self.time_to_first_token,
                metric::TIME_TO_FIRST_TOKEN,
                &mo,
            ),
            time_per_output_token: traced(
                &self.time_per_output_token,
                metric::TIME_PER_OUTPUT_TOKEN,
                &mo,
            ),
            queue_duration: traced(&self.queue_duration, metric::QUEUE_DURATION, &mo),
            prefill_duration: traced(&self.prefill_duration, metric::PREFILL_DURATION, &mo),
            decode_duration: traced(&self.decode_duration, metric::DECODE_DURATION, &mo),
            request_input_tokens: self.request_tokens.bind(&token(value::TOKEN_INPUT)),
            request_output_tokens: self.request_tokens.bind(&token(value::TOKEN_OUTPUT)),
            gpu_time: self.gpu_time.bind(&mo),
            input_tokens: self.tokens.bind(&token(value::TOKEN_INPUT)),
            output_tokens: self.tokens.bind(&token(value::TOKEN_OUTPUT)),
            prefix_cache_queries: self.prefix_cache_queries.bind(&mo),
            prefix_cache_hits: self.prefix_cache_hits.bind(&mo),
            aborted: {
                let [m, o] = mo.clone();
                self.requests.bind(&[
                    m,
                    o,
                    KeyValue::new(attr::LLM_REQUEST_OUTCOME, value::OUTCOME_ABORTED),
                    KeyValue::new(attr::GEN_AI_RESPONSE_FINISH_REASON, value::FINISH_ABORT),
                ])
            },
            succeeded: RwLock::new(HashMap::default()),
            requests: self.requests.clone(),
        }
    }
}

impl InferenceMetrics {
    /// The contract's request instruments on `meter`, with [`DEFAULT_MODEL_CAP`].
    pub fn new(meter: &Meter) -> Self {
        Self::builder(meter).build()
    }

    /// Like [`new`](Self::new), admitting at most `cap` distinct model names.
    pub fn with_model_cap(meter: &Meter, cap: usize) -> Self {
        Self::builder(meter).model_cap(cap).build()
    }

    /// Full control: model cap, content capture.
    pub fn builder(meter: &Meter) -> InferenceMetricsBuilder<'_> {
        InferenceMetricsBuilder {
            meter,
            model_cap: DEFAULT_MODEL_CAP,
            capture_content: false,
            max_content_len: DEFAULT_MAX_CONTENT_LEN,
        }
    }

    /// The label value a model name is recorded as (itself, or `other` past the cap).
    pub fn model_label(&self, model: &str) -> StringValue {
        self.inner.models.get(model)
    }
}

/// Builder for [`InferenceMetrics`].
pub struct InferenceMetricsBuilder<'m> {
    meter: &'m Meter,
    model_cap: usize,
    capture_content: bool,
    max_content_len: usize,
}

impl InferenceMetricsBuilder<'_> {
    /// Distinct model names admitted before newcomers become `other` (default
    /// [`DEFAULT_MODEL_CAP`]).
    pub fn model_cap(mut self, cap: usize) -> Self {
        self.model_cap = cap;
        self
    }

    /// Whether [`InferenceRequest::record_input_messages`](crate::request::InferenceRequest::record_input_messages)
    /// and `record_output_messages` put content on the span (`gen_ai.input.messages`,
    /// `gen_ai.output.messages`). Off by default: prompts and completions can hold personal
    /// data and are large.
    pub fn capture_content(mut self, enabled: bool) -> Self {
        self.capture_content = enabled;
        self
    }

    /// Captured content longer than this many bytes is cut (at a character boundary) and
    /// marked with a trailing `…` (default [`DEFAULT_MAX_CONTENT_LEN`]).
    pub fn max_content_len(mut self, bytes: usize) -> Self {
        self.max_content_len = bytes;
        self
    }

    pub fn build(self) -> InferenceMetrics {
        let m = self.meter;
        InferenceMetrics {
            inner: Arc::new(Inner {
                request_duration: f64_histogram(
                    m,
                    metric::REQUEST_DURATION,
                    buckets::REQUEST_DURATION,
                ),
                time_to_first_token: f64_histogram(
                    m,
                    metric::TIME_TO_FIRST_TOKEN,
                    buckets::TIME_TO_FIRST_TOKEN,
                ),
                time_per_output_token: f64_histogram(
                    m,
                    metric::TIME_PER_OUTPUT_TOKEN,
                    buckets::TIME_PER_OUTPUT_TOKEN,
                ),
                queue_duration: f64_histogram(m, metric::QUEUE_DURATION, buckets::PHASE_DURATION),
                prefill_duration: f64_histogram(
                    m,
                    metric::PREFILL_DURATION,
                    buckets::PHASE_DURATION,
                ),
                decode_duration: f64_histogram(m, metric::DECODE_DURATION, buckets::PHASE_DURATION),
                request_tokens: {
                    let spec = spec(metric::REQUEST_TOKENS);
                    m.u64_histogram(spec.name)
                        .with_unit(spec.unit)
                        .with_description(spec.description)
                        .with_boundaries(buckets::TOKENS.to_vec())
                        .build()
                },
                gpu_time: f64_histogram(m, metric::REQUEST_GPU_TIME, buckets::PHASE_DURATION),
                requests: u64_counter(m, metric::REQUESTS),
                tokens: u64_counter(m, metric::TOKENS),
                prefix_cache_queries: u64_counter(m, metric::PREFIX_CACHE_QUERIES),
                prefix_cache_hits: u64_counter(m, metric::PREFIX_CACHE_HITS),
                models: LabelCap::with_policy(self.model_cap, LabelPolicy::process()),
                operations: LabelCap::new(OPERATION_CAP),
                finish_reasons: LabelCap::new(FINISH_REASON_CAP),
                error_types: LabelCap::new(ERROR_TYPE_CAP),
                capture_content: self.capture_content,
                max_content_len: self.max_content_len,
                series: RwLock::new(HashMap::default()),
            }),
        }
    }
}

/// `histogram` (the contract's `metric`) bound to `attributes`, with exemplar slots over the
/// metric's bucket set.
fn traced(
    histogram: &Histogram<f64>,
    metric: &'static str,
    attributes: &[KeyValue],
) -> TracedHistogram {
    let bounds = buckets::of(metric)
        .unwrap_or_else(|| unreachable!("{metric} is a contract histogram with a bucket set"));
    TracedHistogram::bind(histogram, metric, bounds, attributes)
}

fn spec(name: &str) -> &'static crate::contract::MetricSpec {
    // Every name passed here is a `contract::metric` constant listed in `METRICS`; the
    // `every_instrument_is_in_the_contract` test keeps it so.
    metric_spec(name).unwrap_or_else(|| unreachable!("{name} missing from contract::METRICS"))
}

fn f64_histogram(meter: &Meter, name: &'static str, boundaries: &[f64]) -> Histogram<f64> {
    let spec = spec(name);
    meter
        .f64_histogram(spec.name)
        .with_unit(spec.unit)
        .with_description(spec.description)
        .with_boundaries(boundaries.to_vec())
        .build()
}

fn u64_counter(meter: &Meter, name: &'static str) -> Counter<u64> {
    let spec = spec(name);
    meter
        .u64_counter(spec.name)
        .with_unit(spec.unit)
        .with_description(spec.description)
        .build()
}

/// One engine step's view of the scheduler and KV cache, passed to
/// [`EngineMetrics::record_step`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineSnapshot {
    /// Sequences in the running batch.
    pub running: u64,
    /// Requests waiting to be scheduled.
    pub waiting: u64,
    /// Preempted sequences whose KV blocks were swapped out (0 for engines that recompute).
    pub swapped: u64,
    /// KV cache blocks in use.
    pub kv_blocks_used: u64,
    /// KV cache blocks in total.
    pub kv_blocks_total: u64,
    /// Engine iterations since the previous snapshot (usually 1).
    pub iterations: u64,
    /// Preemptions since the previous snapshot.
    pub preemptions: u64,
}

/// Engine-state instruments: `llm.scheduler.requests`, `llm.scheduler.iterations`,
/// `llm.scheduler.preemptions`, `llm.kv_cache.usage`, `llm.kv_cache.blocks`.
///
/// # Why observable instruments
///
/// An engine steps tens to thousands of times a second; the exporter reads every few seconds.
/// Recording synchronous gauges every step would cost seven attribute-set lookups per step for
/// values of which only the last survives. Instead [`record_step`](Self::record_step) stores the
/// snapshot in atomics (a handful of relaxed stores, a few nanoseconds) and observable
/// instruments read them once per collection. Counters accumulate in atomics the same way and
/// are reported as cumulative sums.
///
/// Create one `EngineMetrics` per engine (per model): a second one for the same model would
/// report the same series twice. When it is dropped its instruments stop reporting.
#[derive(Clone, Debug)]
pub struct EngineMetrics {
    state: Arc<EngineState>,
}

#[derive(Debug, Default)]
struct EngineState {
    running: AtomicU64,
    waiting: AtomicU64,
    swapped: AtomicU64,
    kv_blocks_used: AtomicU64,
    kv_blocks_total: AtomicU64,
    iterations: AtomicU64,
    preemptions: AtomicU64,
}

impl EngineMetrics {
    /// Registers the engine-state instruments on `meter` for the engine serving `model`.
    pub fn new(meter: &Meter, model: &str) -> Self {
        let state = Arc::new(EngineState::default());
        let model = KeyValue::new(attr::GEN_AI_REQUEST_MODEL, model.to_owned());

        let by_state = |s: &'static str| [model.clone(), KeyValue::new(attr::LLM_REQUEST_STATE, s)];
        let (running, waiting, swapped) = (
            by_state(value::STATE_RUNNING),
            by_state(value::STATE_WAITING),
            by_state(value::STATE_SWAPPED),
        );
        observing(
            meter.u64_observable_gauge(metric::SCHEDULER_REQUESTS),
            &state,
            move |s, obs| {
                obs.observe(load(&s.running), &running);
                obs.observe(load(&s.waiting), &waiting);
                obs.observe(load(&s.swapped), &swapped);
            },
        )
        .build();

        let model_only = [model.clone()];
        let counters = [
            (
                metric::SCHEDULER_ITERATIONS,
                (|s| load(&s.iterations)) as fn(&EngineState) -> u64,
            ),
            (metric::SCHEDULER_PREEMPTIONS, |s| load(&s.preemptions)),
        ];
        for (name, read) in counters {
            let attributes = model_only.clone();
            observing(meter.u64_observable_counter(name), &state, move |s, obs| {
                obs.observe(read(s), &attributes)
            })
            .build();
        }
        observing(
            meter.f64_observable_gauge(metric::KV_CACHE_USAGE),
            &state,
            move |s, obs| {
                let usage = kv_usage(load(&s.kv_blocks_used), load(&s.kv_blocks_total));
                obs.observe(usage, &model_only);
            },
        )
        .build();

        let used = [
            model.clone(),
            KeyValue::new(attr::LLM_KV_CACHE_BLOCK_STATE, value::BLOCK_USED),
        ];
        let free = [
            model,
            KeyValue::new(attr::LLM_KV_CACHE_BLOCK_STATE, value::BLOCK_FREE),
        ];
        observing(
            meter.u64_observable_gauge(metric::KV_CACHE_BLOCKS),
            &state,
            move |s, obs| {
                let (u, t) = (load(&s.kv_blocks_used), load(&s.kv_blocks_total));
                obs.observe(u, &used);
                obs.observe(t.saturating_sub(u), &free);
            },
        )
        .build();

        Self { state }
    }

    /// Called by the engine once per step (or whenever its state changes).
    pub fn record_step(&self, s: &EngineSnapshot) {
        let st = &self.state;
        st.running.store(s.running, Ordering::Relaxed);
        st.waiting.store(s.waiting, Ordering::Relaxed);
        st.swapped.store(s.swapped, Ordering::Relaxed);
        st.kv_blocks_used.store(s.kv_blocks_used, Ordering::Relaxed);
        st.kv_blocks_total
            .store(s.kv_blocks_total, Ordering::Relaxed);
        st.iterations.fetch_add(s.iterations, Ordering::Relaxed);
        st.preemptions.fetch_add(s.preemptions, Ordering::Relaxed);
    }
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// Fraction of blocks in use; an engine without a KV cache (total 0) reports 0.
fn kv_usage(used: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        (used as f64 / total as f64).min(1.0)
    }
}

/// `builder` (an observable instrument named for a contract metric) with the contract's unit
/// and description, reporting what `observe` reads from the engine state for as long as the
/// [`EngineMetrics`] lives (it holds the state weakly, so a dropped `EngineMetrics` stops
/// reporting). The caller builds it.
fn observing<'m, I, M>(
    builder: AsyncInstrumentBuilder<'m, I, M>,
    state: &Arc<EngineState>,
    observe: impl Fn(&EngineState, &dyn AsyncInstrument<M>) + Send + Sync + 'static,
) -> AsyncInstrumentBuilder<'m, I, M> {
    let spec = spec(&builder.name);
    let state = Arc::downgrade(state);
    builder
        .with_unit(spec.unit)
        .with_description(spec.description)
        .with_callback(move |obs| {
            if let Some(s) = state.upgrade() {
                observe(&s, obs);
            }
        })
}
