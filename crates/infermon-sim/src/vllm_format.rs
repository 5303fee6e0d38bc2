//! `GET /metrics` in vLLM's Prometheus text format, so the collector's vLLM normalisation can be
//! tested without a GPU.
//!
//! These are vLLM's names (v1 engine, `vllm/v1/metrics/loggers.py` of vLLM 0.33.0, the version
//! the compose `vllm` profile pins), external to infermon's contract, so they live here and
//! nowhere else. Every metric vLLM 0.33.0 registers in its default configuration is here with
//! its HELP text, label names and bucket boundaries, except those listed as excluded (with the
//! reason) in `tests/golden/vllm-0.33.0-metrics.toml`, which `tests/vllm_golden.rs` checks this
//! exposition against. Labels are `model_name` and `engine` (the engine index, always `"0"`);
//! counters carry `_total` in their `# TYPE` line and numbers are written the way
//! `prometheus_client` writes them (`floatToGoString`); series with a fixed label set
//! (`finished_reason`, `source`, ...) all exist from the start, as vLLM creates them up front.

use std::fmt::Write as _;

/// vLLM's `TIME_TO_FIRST_TOKEN_BUCKETS` (`vllm/v1/metrics/buckets.py`).
const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
/// vLLM's `INTER_TOKEN_LATENCY_BUCKETS`: inter-token latency and per-request time per output
/// token.
const ITL_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];
/// vLLM's `REQUEST_LATENCY_BUCKETS`: the per-request phase latencies (e2e, queue, inference,
/// prefill, decode).
const REQUEST_LATENCY_BUCKETS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];
/// vLLM's `ITERATION_TOKENS_BUCKETS`: tokens per engine step.
const ITERATION_TOKENS_BUCKETS: &[f64] = &[
    1.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0,
];
/// vLLM's `REQUEST_PARAMS_N_BUCKETS`.
const REQUEST_PARAMS_N_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0];
/// vLLM's `REQUEST_NUM_PREEMPTIONS_BUCKETS`.
const REQUEST_NUM_PREEMPTIONS_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0];

/// The NIXL connector's buckets (`NixlPromMetrics.__init__`,
/// `vllm/distributed/kv_transfer/kv_connector/v1/nixl/stats.py`, vLLM 0.33.0): one list of
/// durations, of which the transfer time uses all but the first (`buckets[1:]`) and the post
/// time all.
const NIXL_TIME_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 5.0,
];
/// Bytes per transfer: `[2 ** (10 + i) for i in range(1, 25, 2)]`, 2 KiB to 8 GiB.
const NIXL_BYTES_BUCKETS: &[f64] = &[
    2048.0,
    8192.0,
    32768.0,
    131072.0,
    524288.0,
    2097152.0,
    8388608.0,
    33554432.0,
    134217728.0,
    536870912.0,
    2147483648.0,
    8589934592.0,
];
/// Descriptors per transfer.
const NIXL_DESCRIPTORS_BUCKETS: &[f64] = &[
    10.0, 20.0, 30.0, 50.0, 75.0, 100.0, 200.0, 400.0, 1000.0, 2000.0, 4000.0, 10000.0, 20000.0,
    50000.0,
];

/// vLLM's `finished_reason` values (`FINISH_REASON_STRINGS`, `vllm/v1/engine/__init__.py`).
const FINISHED_REASONS: [&str; 5] = ["stop", "length", "abort", "error", "repetition"];
/// `PromptTokenStats.ALL_SOURCES` (`vllm/v1/metrics/stats.py`).
const PROMPT_TOKEN_SOURCES: [&str; 3] =
    ["local_compute", "local_cache_hit", "external_kv_transfer"];
/// `CacheHitSource` (`vllm/v1/metrics/cache_hit_source.py`); the simulator's one tier is the
/// first (device memory).
const CACHE_HIT_SOURCES: [&str; 5] = ["device", "host", "p2p", "disk", "external_unspecified"];

/// The token-count buckets (`request_tokens` family) for a context of `max_model_len`: vLLM's
/// `build_1_2_5_buckets(max_model_len)` (`vllm/v1/metrics/buckets.py`): 1, 2, 5, 10, 20, 50, ...
/// up to and including `max_model_len`.
pub fn request_tokens_buckets(max_model_len: u32) -> Vec<f64> {
    let max = f64::from(max_model_len);
    let mut buckets = Vec::new();
    let mut scale = 1.0;
    loop {
        for mantissa in [1.0, 2.0, 5.0] {
            let value = mantissa * scale;
            if value > max {
                return buckets;
            }
            buckets.push(value);
        }
        scale *= 10.0;
    }
}

#[derive(Debug, Clone)]
struct Histogram {
    bounds: Vec<f64>,
    /// Per bucket (not cumulative); the last is +Inf.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &[f64]) -> Self {
        Self {
            bounds: bounds.to_vec(),
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        // `le` semantics: v falls in the first bucket whose bound is >= v.
        let i = self.bounds.partition_point(|&b| b < v);
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }
}

/// How one request ended, as vLLM's `finished_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishedReason {
    Stop,
    Length,
    Abort,
    Error,
}

impl FinishedReason {
    fn index(self) -> usize {
        match self {
            FinishedReason::Stop => 0,
            FinishedReason::Length => 1,
            FinishedReason::Abort => 2,
            FinishedReason::Error => 3,
        }
    }
}

/// One ended request, as vLLM's `FinishedRequestStats` (`vllm/v1/metrics/stats.py`); durations
/// in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FinishedRequest {
    pub reason: FinishedReason,
    /// Arrival to the last token.
    pub e2e: f64,
    /// Arrival to first scheduled.
    pub queue: f64,
    /// First scheduled to first token.
    pub prefill: f64,
    /// First token to last token.
    pub decode: f64,
    /// First scheduled to last token (vLLM's "RUNNING phase", preemptions included).
    pub inference: f64,
    pub prompt_tokens: u32,
    /// Output tokens delivered.
    pub generation_tokens: u32,
    /// Prompt tokens served from the prefix cache.
    pub cached_tokens: u32,
    pub preemptions: u32,
    /// The request's `max_tokens` as vLLM resolves it (the context left when not given).
    pub max_tokens: u32,
}

impl FinishedRequest {
    /// vLLM's `mean_time_per_output_token`: decode time over the tokens after the first.
    fn mean_time_per_output_token(&self) -> f64 {
        if self.generation_tokens > 1 {
            self.decode / f64::from(self.generation_tokens - 1)
        } else {
            0.0
        }
    }
}

/// The vLLM-format metrics of one engine.
#[derive(Debug, Clone)]
pub struct VllmMetrics {
    ttft: Histogram,
    itl: Histogram,
    tpot: Histogram,
    e2e: Histogram,
    queue: Histogram,
    inference: Histogram,
    prefill: Histogram,
    decode: Histogram,
    iteration_tokens: Histogram,
    prompt_tokens: Histogram,
    generation_tokens: Histogram,
    max_num_generation_tokens: Histogram,
    params_n: Histogram,
    params_max_tokens: Histogram,
    num_preemptions: Histogram,
    prefill_kv_computed: Histogram,
    success: [u64; FINISHED_REASONS.len()],
    /// Indexed like `PROMPT_TOKEN_SOURCES`.
    prompt_tokens_by_source: [u64; PROMPT_TOKEN_SOURCES.len()],
    prompt_tokens_cached: u64,
    /// The NIXL connector's metrics: `None` until this engine first takes part in a
    /// disaggregated request (see [`VllmMetrics::nixl_connected`]).
    nixl: Option<NixlMetrics>,
}

/// What vLLM's `NixlPromMetrics` records: one observation per completed NIXL transfer
/// (`NixlKVConnectorStats.record_transfer`, from the transfer's `nixlXferTelemetry`).
#[derive(Debug, Clone)]
struct NixlMetrics {
    xfer_time: Histogram,
    post_time: Histogram,
    bytes: Histogram,
    descriptors: Histogram,
}

impl NixlMetrics {
    fn new() -> Self {
        Self {
            xfer_time: Histogram::new(&NIXL_TIME_BUCKETS[1..]),
            post_time: Histogram::new(NIXL_TIME_BUCKETS),
            bytes: Histogram::new(NIXL_BYTES_BUCKETS),
            descriptors: Histogram::new(NIXL_DESCRIPTORS_BUCKETS),
        }
    }
}

/// One completed KV cache pull, as NIXL's transfer telemetry reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KvTransferRecord {
    /// From posting the READ to its completion (`xferDuration`), seconds.
    pub seconds: f64,
    /// Posting the READ (`postDuration`), seconds.
    pub post_seconds: f64,
    /// Bytes moved (`totalBytes`).
    pub bytes: u64,
    /// Memory descriptors of the transfer (`descCount`).
    pub descriptors: u64,
}

impl VllmMetrics {
    /// Empty metrics for an engine whose context is `max_model_len` tokens (vLLM derives the
    /// token-count buckets from it).
    pub fn new(max_model_len: u32) -> Self {
        let tokens = request_tokens_buckets(max_model_len);
        Self {
            ttft: Histogram::new(TTFT_BUCKETS),
            itl: Histogram::new(ITL_BUCKETS),
            tpot: Histogram::new(ITL_BUCKETS),
            e2e: Histogram::new(REQUEST_LATENCY_BUCKETS),
            queue: Histogram::new(REQUEST_LATENCY_BUCKETS),
            inference: Histogram::new(REQUEST_LATENCY_BUCKETS),
            prefill: Histogram::new(REQUEST_LATENCY_BUCKETS),
            decode: Histogram::new(REQUEST_LATENCY_BUCKETS),
            iteration_tokens: Histogram::new(ITERATION_TOKENS_BUCKETS),
            prompt_tokens: Histogram::new(&tokens),
            generation_tokens: Histogram::new(&tokens),
            max_num_generation_tokens: Histogram::new(&tokens),
            params_n: Histogram::new(REQUEST_PARAMS_N_BUCKETS),
            params_max_tokens: Histogram::new(&tokens),
            num_preemptions: Histogram::new(REQUEST_NUM_PREEMPTIONS_BUCKETS),
            prefill_kv_computed: Histogram::new(&tokens),
            success: [0; FINISHED_REASONS.len()],
            prompt_tokens_by_source: [0; PROMPT_TOKEN_SOURCES.len()],
            prompt_tokens_cached: 0,
            nixl: None,
        }
    }

    /// This engine takes part in disaggregated prefill/decode: from now on its exposition has
    /// the NIXL connector's metrics, as a vLLM started with `--kv-transfer-config
    /// '{"kv_connector":"NixlConnector","kv_role":"kv_both"}'` has them from its start (at 0
    /// until a transfer completes). The simulator has no such start-up setting (every simulator
    /// can play either half), so the first disaggregated request it sees stands for it.
    pub fn nixl_connected(&mut self) {
        self.nixl.get_or_insert_with(NixlMetrics::new);
    }

    /// A KV cache pull completed on this (decode) engine. In vLLM's default pull mode the
    /// decode worker issues the NIXL READ and records the transfer
    /// (`_pop_done_transfers` over `_recving_transfers`, nixl/base_worker.py); the prefill
    /// worker records none.
    pub fn kv_transfer(&mut self, t: &KvTransferRecord) {
        let nixl = self.nixl.get_or_insert_with(NixlMetrics::new);
        nixl.xfer_time.observe(t.seconds);
        nixl.post_time.observe(t.post_seconds);
        nixl.bytes.observe(t.bytes as f64);
        nixl.descriptors.observe(t.descriptors as f64);
    }

    /// A request's prefill completed with its first token; vLLM counts its prompt tokens by
    /// source at this point.
    pub fn first_token(&mut self, ttft: f64, prompt_tokens: u32, cached_tokens: u32) {
        self.ttft.observe(ttft);
        let cached = u64::from(cached_tokens.min(prompt_tokens));
        self.prompt_tokens_by_source[0] += u64::from(prompt_tokens) - cached;
        self.prompt_tokens_by_source[1] += cached;
        self.prompt_tokens_cached += cached;
    }

    pub fn inter_token(&mut self, seconds: f64) {
        self.itl.observe(seconds);
    }

    /// One engine step computed `tokens` tokens (prompt tokens plus generated tokens).
    pub fn iteration(&mut self, tokens: u64) {
        self.iteration_tokens.observe(tokens as f64);
    }

    /// A request left the engine (vLLM records aborted ones too, as `finished_reason=abort`).
    ///
    /// `request_max_num_generation_tokens` and `request_params_n` stay empty: vLLM observes
    /// them only for parallel-sampling requests (`n > 1`, `vllm/v1/engine/parallel_sampling.py`).
    pub fn finished(&mut self, r: &FinishedRequest) {
        self.success[r.reason.index()] += 1;
        self.e2e.observe(r.e2e);
        self.queue.observe(r.queue);
        self.prefill.observe(r.prefill);
        self.inference.observe(r.inference);
        self.decode.observe(r.decode);
        self.num_preemptions.observe(f64::from(r.preemptions));
        let computed = r.prompt_tokens - r.cached_tokens.min(r.prompt_tokens);
        self.prefill_kv_computed.observe(f64::from(computed));
        self.prompt_tokens.observe(f64::from(r.prompt_tokens));
        self.generation_tokens
            .observe(f64::from(r.generation_tokens));
        self.tpot.observe(r.mean_time_per_output_token());
        if r.max_tokens > 0 {
            self.params_max_tokens.observe(f64::from(r.max_tokens));
        }
    }
}

/// The engine's cache configuration, as `vllm:cache_config_info` reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CacheInfo {
    pub block_size: u32,
    pub num_gpu_blocks: u32,
    pub gpu_memory_utilization: f64,
    pub enable_prefix_caching: bool,
}

impl Default for CacheInfo {
    fn default() -> Self {
        Self {
            block_size: 16,
            num_gpu_blocks: 0,
            gpu_memory_utilization: 0.92,
            enable_prefix_caching: true,
        }
    }
}

/// Engine state and totals read at scrape time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct VllmGauges {
    pub running: u64,
    pub waiting: u64,
    pub kv_cache_usage: f64,
    pub preemptions: u64,
    pub prompt_tokens: u64,
    pub generation_tokens: u64,
    pub prefix_cache_queries: u64,
    pub prefix_cache_hits: u64,
    pub cache: CacheInfo,
}

/// Renders the Prometheus text exposition (format 0.0.4), in the order vLLM registers the
/// metrics.
pub fn render(model_name: &str, metrics: &VllmMetrics, gauges: &VllmGauges) -> String {
    let model = escape_label(model_name);
    let labels = format!("model_name=\"{model}\",engine=\"0\"");
    let mut out = String::with_capacity(64 * 1024);
    let o = &mut out;
    let m = metrics;

    gauge(
        o,
        &labels,
        "vllm:num_requests_running",
        "Number of requests in model execution batches.",
        gauges.running as f64,
    );
    gauge(
        o,
        &labels,
        "vllm:num_requests_waiting",
        "Number of requests waiting to be processed.",
        gauges.waiting as f64,
    );
    // Every waiting request waits for capacity: the simulator defers none (no LoRA budget, no
    // KV transfer).
    labelled(
        o,
        &labels,
        "vllm:num_requests_waiting_by_reason",
        "Number of waiting requests by reason. Reason labels: 'capacity' = waiting for \
         scheduling capacity; 'deferred' = deferred by transient constraints (LoRA budget, KV \
         transfer, blocked status). Sum of all reasons equals vllm:num_requests_waiting.",
        "gauge",
        "reason",
        &[("capacity", gauges.waiting as f64), ("deferred", 0.0)],
    );
    // The simulated engine never sleeps.
    labelled(
        o,
        &labels,
        "vllm:engine_sleep_state",
        "Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means engine is \
         awake; weights_offloaded = 1 means sleep level 1; discard_all = 1 means sleep level 2.",
        "gauge",
        "sleep_state",
        &[
            ("awake", 1.0),
            ("weights_offloaded", 0.0),
            ("discard_all", 0.0),
        ],
    );
    gauge(
        o,
        &labels,
        "vllm:kv_cache_usage_perc",
        "KV-cache usage. 1 means 100 percent usage.",
        gauges.kv_cache_usage,
    );
    counter(
        o,
        &labels,
        "vllm:prefix_cache_queries_total",
        "Prefix cache queries, in terms of number of queried tokens.",
        gauges.prefix_cache_queries,
    );
    counter(
        o,
        &labels,
        "vllm:prefix_cache_hits_total",
        "Prefix cache hits, in terms of number of cached tokens.",
        gauges.prefix_cache_hits,
    );
    counter(
        o,
        &labels,
        "vllm:num_preemptions_total",
        "Cumulative number of preemption from the engine.",
        gauges.preemptions,
    );
    counter(
        o,
        &labels,
        "vllm:prompt_tokens_total",
        "Number of prefill tokens processed.",
        gauges.prompt_tokens,
    );
    let by_source: Vec<(&str, f64)> = PROMPT_TOKEN_SOURCES
        .iter()
        .zip(m.prompt_tokens_by_source)
        .map(|(source, n)| (*source, n as f64))
        .collect();
    labelled(
        o,
        &labels,
        "vllm:prompt_tokens_by_source_total",
        "Number of prompt tokens by source.",
        "counter",
        "source",
        &by_source,
    );
    counter(
        o,
        &labels,
        "vllm:prompt_tokens_cached_total",
        "Number of cached prompt tokens (local + external).",
        m.prompt_tokens_cached,
    );
    // vLLM adds the scheduler's prefix-cache hits to the device tier.
    let cached_by_source: Vec<(&str, f64)> = CACHE_HIT_SOURCES
        .iter()
        .map(|source| {
            let n = if *source == "device" {
                gauges.prefix_cache_hits
            } else {
                0
            };
            (*source, n as f64)
        })
        .collect();
    labelled(
        o,
        &labels,
        "vllm:prompt_tokens_cached_by_source_total",
        "Prefix-cache hit tokens by the cache tier that supplied them: device (local HBM), host \
         (offloaded to DRAM), disk, p2p (transferred from another vLLM instance) or \
         external_unspecified. Counted at admission; sums to vllm:prefix_cache_hits + \
         vllm:external_prefix_cache_hits.",
        "counter",
        "source",
        &cached_by_source,
    );
    counter(
        o,
        &labels,
        "vllm:generation_tokens_total",
        "Number of generation tokens processed.",
        gauges.generation_tokens,
    );
    let success: Vec<(&str, f64)> = FINISHED_REASONS
        .iter()
        .zip(m.success)
        .map(|(reason, n)| (*reason, n as f64))
        .collect();
    labelled(
        o,
        &labels,
        "vllm:request_success_total",
        "Count of successfully processed requests.",
        "counter",
        "finished_reason",
        &success,
    );

    let histograms: &[(&str, &str, &Histogram)] = &[
        (
            "vllm:request_prompt_tokens",
            "Number of prefill tokens processed.",
            &m.prompt_tokens,
        ),
        (
            "vllm:request_generation_tokens",
            "Number of generation tokens processed.",
            &m.generation_tokens,
        ),
        (
            "vllm:iteration_tokens_total",
            "Histogram of number of tokens per engine_step.",
            &m.iteration_tokens,
        ),
        (
            "vllm:request_max_num_generation_tokens",
            "Histogram of maximum number of requested generation tokens.",
            &m.max_num_generation_tokens,
        ),
        (
            "vllm:request_params_n",
            "Histogram of the n request parameter.",
            &m.params_n,
        ),
        (
            "vllm:request_params_max_tokens",
            "Histogram of the max_tokens request parameter.",
            &m.params_max_tokens,
        ),
        (
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            &m.ttft,
        ),
        (
            "vllm:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
            &m.itl,
        ),
        (
            "vllm:request_time_per_output_token_seconds",
            "Histogram of time_per_output_token_seconds per request.",
            &m.tpot,
        ),
        (
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            &m.e2e,
        ),
        (
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            &m.queue,
        ),
        (
            "vllm:request_inference_time_seconds",
            "Histogram of time spent in RUNNING phase for request.",
            &m.inference,
        ),
        (
            "vllm:request_prefill_time_seconds",
            "Histogram of time spent in PREFILL phase for request.",
            &m.prefill,
        ),
        (
            "vllm:request_decode_time_seconds",
            "Histogram of time spent in DECODE phase for request.",
            &m.decode,
        ),
        (
            "vllm:request_num_preemptions",
            "Histogram of the number of times a request was preempted.",
            &m.num_preemptions,
        ),
        (
            "vllm:request_prefill_kv_computed_tokens",
            "Histogram of new KV tokens computed during prefill (excluding cached tokens).",
            &m.prefill_kv_computed,
        ),
    ];
    for (name, help, h) in histograms {
        histogram(o, &labels, name, help, h);
    }

    cache_config_info(o, &gauges.cache);
    if let Some(nixl) = &m.nixl {
        nixl_metrics(o, &labels, nixl);
    }
    out
}

/// The NIXL connector's metrics (`NixlPromMetrics`, vLLM 0.33.0), in its registration order.
/// The failure counters stay 0: the simulated link never fails, and no lease expires.
fn nixl_metrics(o: &mut String, labels: &str, nixl: &NixlMetrics) {
    let histograms: [(&str, &str, &Histogram); 4] = [
        (
            "vllm:nixl_xfer_time_seconds",
            "Histogram of transfer duration for NIXL KV Cache transfers.",
            &nixl.xfer_time,
        ),
        (
            "vllm:nixl_post_time_seconds",
            "Histogram of transfer post time for NIXL KV Cache transfers.",
            &nixl.post_time,
        ),
        (
            "vllm:nixl_bytes_transferred",
            "Histogram of bytes transferred per NIXL KV Cache transfers.",
            &nixl.bytes,
        ),
        (
            // Two spaces: vLLM's two string literals join that way.
            "vllm:nixl_num_descriptors",
            "Histogram of number of descriptors per NIXL  KV Cache transfers.",
            &nixl.descriptors,
        ),
    ];
    for (name, help, h) in histograms {
        histogram(o, labels, name, help, h);
    }
    for (name, help) in [
        (
            "vllm:nixl_num_failed_transfers_total",
            "Number of failed NIXL KV Cache transfers, including handshake and notification \
             failures. NOTE: KV expiry is tracked separately in vllm:nixl_num_kv_expired_reqs.",
        ),
        (
            "vllm:nixl_num_failed_notifications_total",
            "Number of failed NIXL KV Cache notifications. Retained for compatibility; these \
             failures are also included in vllm:nixl_num_failed_transfers.",
        ),
        (
            "vllm:nixl_num_kv_expired_reqs_total",
            "Number of requests that had their KV expire. NOTE: This metric is tracked on the P \
             instance.",
        ),
        (
            "vllm:nixl_num_notifications_after_expiry_total",
            "Number of completion notifications for requests that were no longer tracked, \
             usually because their KV lease expired. The KV blocks may have been reused before \
             the transfer finished. Counted per notification (one per remote rank), not per \
             request.",
        ),
    ] {
        counter(o, labels, name, help, 0);
    }
}

/// `CacheConfig`'s fields (`vllm/config/cache.py`), in declaration order, with the value
/// `str()` gives their defaults; `metrics_info()` turns them into the labels of
/// `vllm:cache_config_info`. The ones the simulator knows are set in `cache_config_info`.
const CACHE_CONFIG_DEFAULTS: &[(&str, &str)] = &[
    ("block_size", "16"),
    ("user_specified_block_size", "False"),
    ("kv_cache_layout", "None"),
    ("prefix_match_unit", "None"),
    ("gpu_memory_utilization", "0.92"),
    ("cache_dtype", "auto"),
    ("is_attention_free", "False"),
    ("num_gpu_blocks_override", "None"),
    ("sliding_window", "None"),
    ("enable_prefix_caching", "True"),
    ("prefix_caching_hash_algo", "sha256"),
    ("prefix_cache_retention_interval", "0"),
    ("kv_cache_dtype_skip_layers", "[]"),
    ("mamba_page_size_padded", "None"),
    ("skip_page_size_padded", "None"),
    ("mamba_block_size", "None"),
    ("mamba_cache_dtype", "auto"),
    ("mamba_ssm_cache_dtype", "auto"),
    ("mamba_cache_mode", "none"),
    ("enable_mamba_shared_prefix_checkpoint", "False"),
    ("replayssm_buffer_len", "16"),
    ("use_replayssm", "False"),
    ("use_kda_recoverssm", "False"),
    ("num_gpu_blocks", "None"),
    ("num_cpu_blocks", "None"),
    ("simple_cpu_offload_num_blocks", "None"),
    ("effective_attention_block_size", "None"),
    ("kv_cache_size_tokens", "None"),
    ("kv_cache_max_concurrency", "None"),
    ("hash_block_size", "None"),
    ("cache_hit_alignment_tokens", "None"),
    ("kv_sharing_fast_prefill", "False"),
    ("swa_bounded_replay", "True"),
    ("kv_cache_memory_bytes", "None"),
    ("kv_offloading_size", "None"),
    ("kv_offloading_backend", "native"),
    // Set by CacheConfig's block-size validator, so True on every running engine.
    ("_block_size_resolved", "True"),
];

/// `vllm:cache_config_info`: vLLM's info-style gauge, permanently 1, whose labels carry the
/// cache configuration (`PrometheusStatLogger.log_metrics_info`).
fn cache_config_info(o: &mut String, cache: &CacheInfo) {
    let name = "vllm:cache_config_info";
    header(o, name, "Information of the LLMEngine CacheConfig", "gauge");
    let python_bool = |b: bool| if b { "True" } else { "False" };
    let known = [
        ("block_size", cache.block_size.to_string()),
        ("num_gpu_blocks", cache.num_gpu_blocks.to_string()),
        (
            "gpu_memory_utilization",
            format!("{:?}", cache.gpu_memory_utilization),
        ),
        (
            "enable_prefix_caching",
            python_bool(cache.enable_prefix_caching).to_owned(),
        ),
    ];
    let mut labels = String::new();
    for (key, default) in CACHE_CONFIG_DEFAULTS {
        let value = known
            .iter()
            .find(|(k, _)| k == key)
            .map_or(*default, |(_, v)| v.as_str());
        let _ = write!(labels, "{key}=\"{}\",", escape_label(value));
    }
    let _ = writeln!(o, "{name}{{{labels}engine=\"0\"}} 1.0");
}

fn header(o: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
}

fn gauge(o: &mut String, labels: &str, name: &str, help: &str, value: f64) {
    header(o, name, help, "gauge");
    let _ = writeln!(o, "{name}{{{labels}}} {}", go_float(value));
}

fn counter(o: &mut String, labels: &str, name: &str, help: &str, value: u64) {
    header(o, name, help, "counter");
    let _ = writeln!(o, "{name}{{{labels}}} {}", go_float(value as f64));
}

/// A gauge or counter with one series per value of `label`.
fn labelled(
    o: &mut String,
    labels: &str,
    name: &str,
    help: &str,
    kind: &str,
    label: &str,
    series: &[(&str, f64)],
) {
    header(o, name, help, kind);
    for (value, n) in series {
        let _ = writeln!(o, "{name}{{{labels},{label}=\"{value}\"}} {}", go_float(*n));
    }
}

fn histogram(o: &mut String, labels: &str, name: &str, help: &str, h: &Histogram) {
    header(o, name, help, "histogram");
    let mut cumulative = 0u64;
    for (bound, count) in h.bounds.iter().zip(&h.counts) {
        cumulative += count;
        let _ = writeln!(
            o,
            "{name}_bucket{{{labels},le=\"{}\"}} {}",
            go_float(*bound),
            go_float(cumulative as f64)
        );
    }
    let count = go_float(h.count as f64);
    let _ = writeln!(o, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
    let _ = writeln!(o, "{name}_count{{{labels}}} {count}");
    let _ = writeln!(o, "{name}_sum{{{labels}}} {}", go_float(h.sum));
}

/// A number as `prometheus_client` writes it (`floatToGoString` in its `utils.py`): Python's
/// `repr`, except that, like Go, values of a million and more switch to an exponent
/// (`1e+06`), which is how `le` labels and large counters appear in vLLM's exposition.
pub fn go_float(value: f64) -> String {
    if value == f64::INFINITY {
        return "+Inf".to_owned();
    }
    if value == f64::NEG_INFINITY {
        return "-Inf".to_owned();
    }
    if value.is_nan() {
        return "NaN".to_owned();
    }
    let repr = python_repr(value);
    match repr.find('.') {
        Some(dot) if value > 0.0 && dot > 6 => {
            let digits = format!("{}.{}{}", &repr[..1], &repr[1..dot], &repr[dot + 1..]);
            let mantissa = digits.trim_end_matches(['0', '.']);
            format!("{mantissa}e+0{}", dot - 1)
        }
        _ => repr,
    }
}

/// Python's `repr` of a float, near enough: Rust's `{:?}` is the same shortest round-trip
/// digits, but writes exponents as `1e16` / `1e-7` where Python writes `1e+16` / `1e-07`.
/// (Python also switches to an exponent below 1e-4, Rust below 1e-5; the values in between
/// are written in positional form here, which parses to the same number.)
fn python_repr(value: f64) -> String {
    let repr = format!("{value:?}");
    match repr.split_once('e') {
        Some((mantissa, exponent)) => {
            let (sign, digits) = match exponent.strip_prefix('-') {
                Some(digits) => ('-', digits),
                None => ('+', exponent),
            };
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => repr,
    }
}

/// Label values escape backslash, double quote and newline.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(reason: FinishedReason) -> FinishedRequest {
        FinishedRequest {
            reason,
            e2e: 1.0,
            queue: 0.1,
            prefill: 0.2,
            decode: 0.7,
            inference: 0.9,
            prompt_tokens: 100,
            generation_tokens: 8,
            cached_tokens: 32,
            preemptions: 0,
            max_tokens: 16,
        }
    }

    fn sample_line<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting with {prefix}\n{text}"))
    }

    #[test]
    fn histograms_are_cumulative_with_le_semantics() {
        let mut m = VllmMetrics::new(1000);
        m.first_token(0.005, 10, 0); // on a boundary: counts in le="0.005"
        m.first_token(0.03, 10, 0);
        m.first_token(5000.0, 10, 0); // past the last bound: only +Inf
        let text = render("m", &m, &VllmGauges::default());
        let labels = "model_name=\"m\",engine=\"0\"";
        let b =
            |le: &str| format!("vllm:time_to_first_token_seconds_bucket{{{labels},le=\"{le}\"}} ");
        assert!(sample_line(&text, &b("0.001")).ends_with(" 0.0"));
        assert!(sample_line(&text, &b("0.005")).ends_with(" 1.0"));
        assert!(sample_line(&text, &b("0.04")).ends_with(" 2.0"));
        assert!(sample_line(&text, &b("2560.0")).ends_with(" 2.0"));
        assert!(sample_line(&text, &b("+Inf")).ends_with(" 3.0"));
        let count = sample_line(&text, "vllm:time_to_first_token_seconds_count");
        assert!(count.ends_with(" 3.0"), "{count}");
        let sum = sample_line(&text, "vllm:time_to_first_token_seconds_sum");
        assert!(sum.ends_with(" 5000.035"), "{sum}");
    }

    #[test]
    fn every_finish_reason_has_a_series_from_the_start() {
        let mut m = VllmMetrics::new(1000);
        m.finished(&FinishedRequest {
            inference: 0.9,
            ..request(FinishedReason::Abort)
        });
        let text = render("m", &m, &VllmGauges::default());
        for (reason, n) in [
            ("stop", "0.0"),
            ("length", "0.0"),
            ("abort", "1.0"),
            ("error", "0.0"),
            ("repetition", "0.0"),
        ] {
            let line = sample_line(
                &text,
                &format!("vllm:request_success_total{{model_name=\"m\",engine=\"0\",finished_reason=\"{reason}\"}}"),
            );
            assert!(line.ends_with(&format!(" {n}")), "{line}");
        }
    }

    #[test]
    fn every_line_is_valid_exposition_syntax() {
        let gauges = VllmGauges {
            running: 3,
            waiting: 2,
            kv_cache_usage: 0.25,
            preemptions: 1,
            prompt_tokens: 100,
            generation_tokens: 50,
            prefix_cache_queries: 100,
            prefix_cache_hits: 32,
            cache: CacheInfo::default(),
        };
        let text = render("llama \"8b\"", &VllmMetrics::new(1000), &gauges);
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# ") {
                assert!(
                    rest.starts_with("HELP vllm:") || rest.starts_with("TYPE vllm:"),
                    "{line}"
                );
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect(line);
            assert!(value.parse::<f64>().is_ok(), "{line}");
            assert!(
                series.starts_with("vllm:") && series.ends_with('}'),
                "{line}"
            );
            if !series.starts_with("vllm:cache_config_info") {
                assert!(series.contains("model_name=\"llama \\\"8b\\\"\""), "{line}");
            }
        }
        assert!(text.contains(
            "vllm:kv_cache_usage_perc{model_name=\"llama \\\"8b\\\"\",engine=\"0\"} 0.25"
        ));
    }

    #[test]
    fn token_buckets_follow_vllms_1_2_5_series() {
        // vLLM's own docstring example: build_1_2_5_buckets(100).
        assert_eq!(
            request_tokens_buckets(100),
            [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]
        );
        // Not on the series: capped below max_model_len.
        assert_eq!(request_tokens_buckets(4), [1.0, 2.0]);
        let long = request_tokens_buckets(131_072);
        assert_eq!(long.last(), Some(&100_000.0));
        assert_eq!(long.len(), 16);
    }

    #[test]
    fn numbers_are_written_as_prometheus_client_writes_them() {
        for (value, text) in [
            (0.0, "0.0"),
            (1.0, "1.0"),
            (0.3, "0.3"),
            (2560.0, "2560.0"),
            (100_000.0, "100000.0"),
            (999_999.0, "999999.0"),
            (1_000_000.0, "1e+06"),
            (2_000_000.0, "2e+06"),
            (1_500_000.0, "1.5e+06"),
            (12_345_678.0, "1.2345678e+07"),
            (1e16, "1e+16"),
            (1.5e-7, "1.5e-07"),
            (f64::INFINITY, "+Inf"),
        ] {
            assert_eq!(go_float(value), text, "{value}");
        }
    }

    #[test]
    fn a_finished_request_feeds_every_per_request_histogram() {
        let mut m = VllmMetrics::new(1000);
        m.first_token(0.05, 100, 32);
        m.iteration(69);
        m.finished(&request(FinishedReason::Length));
        let gauges = VllmGauges {
            prefix_cache_hits: 32,
            ..VllmGauges::default()
        };
        let text = render("m", &m, &gauges);
        let labels = "model_name=\"m\",engine=\"0\"";
        let value = |series: &str| {
            let line = sample_line(&text, &format!("{series} "));
            line.rsplit_once(' ').unwrap().1.to_owned()
        };
        for (name, extra, expected) in [
            // 0.7 s of decode over the 7 tokens after the first.
            (
                "vllm:request_time_per_output_token_seconds_sum",
                "",
                "0.09999999999999999",
            ),
            ("vllm:request_inference_time_seconds_sum", "", "0.9"),
            ("vllm:request_prefill_kv_computed_tokens_sum", "", "68.0"),
            ("vllm:request_prompt_tokens_sum", "", "100.0"),
            ("vllm:request_generation_tokens_sum", "", "8.0"),
            ("vllm:request_params_max_tokens_sum", "", "16.0"),
            ("vllm:iteration_tokens_total_sum", "", "69.0"),
            // Never preempted: counted in the first bucket, as vLLM's buckets intend.
            ("vllm:request_num_preemptions_bucket", ",le=\"1.0\"", "1.0"),
            // n > 1 only: empty, as in vLLM for plain requests.
            ("vllm:request_params_n_count", "", "0.0"),
            (
                "vllm:prompt_tokens_by_source_total",
                ",source=\"local_compute\"",
                "68.0",
            ),
            (
                "vllm:prompt_tokens_by_source_total",
                ",source=\"local_cache_hit\"",
                "32.0",
            ),
            ("vllm:prompt_tokens_cached_total", "", "32.0"),
            (
                "vllm:prompt_tokens_cached_by_source_total",
                ",source=\"device\"",
                "32.0",
            ),
        ] {
            let series = format!("{name}{{{labels}{extra}}}");
            assert_eq!(value(&series), expected, "{series}");
        }
    }
}
