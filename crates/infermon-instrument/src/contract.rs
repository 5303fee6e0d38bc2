//! The telemetry contract: every span, event, attribute, metric name, unit, well-known value
//! and histogram boundary set that infermon emits.
//!
//! This module is the single source of truth. Nothing else in the Rust code spells one of these
//! names as a string literal; the glossary `docs/metrics.md` is checked against [`METRICS`] by a
//! test, and dashboards, alert rules and the collector's vLLM normalisation use the Prometheus
//! forms listed there.
//!
//! OpenTelemetry GenAI semantic conventions (`gen_ai.*`) and hardware conventions (`hw.*`) are
//! used wherever they cover a concept; the `llm.*` namespace covers what they do not (engine
//! scheduler, KV cache, per-phase durations), and `infermon.*` names the pipeline's own health.

/// The instrumentation scope (meter and tracer name) of everything the `infermon` crate emits.
pub const INSTRUMENTATION_SCOPE: &str = "infermon";

use opentelemetry_semantic_conventions::attribute as semconv;

/// Span names and span events.
///
/// The request and its phases are `tracing` spans: the request span's `tracing` name is
/// [`REQUEST`](span::REQUEST) (its exported name comes from the `otel.name` field, see
/// [`request_span_name`](span::request_span_name)); the phases are `tracing` spans named
/// [`QUEUE`](span::QUEUE), [`PREFILL`](span::PREFILL) and [`DECODE`](span::DECODE), children of
/// the request span; the events are `tracing` events whose message is the event name.
pub mod span {
    /// The `tracing` name of the request span (the metrics layer recognises the request by it).
    pub const REQUEST: &str = "inference_request";
    /// Child span: arrival → first scheduled.
    pub const QUEUE: &str = "queue";
    /// Child span: scheduled → first token.
    pub const PREFILL: &str = "prefill";
    /// Child span: first token → last token.
    pub const DECODE: &str = "decode";
    /// Event on the request span when the first output token is produced.
    pub const EVENT_FIRST_TOKEN: &str = "first_token";
    /// Event on the request span when the engine evicts the sequence from the running batch.
    pub const EVENT_PREEMPTED: &str = "preempted";
    /// Event on the request span when a preempted sequence is scheduled again.
    pub const EVENT_RESUMED: &str = "resumed";
    /// Disaggregated prefill/decode: the decode worker pulling the prompt's KV cache from the
    /// prefill worker (a sibling of the decode worker's request span, under the caller's).
    pub const KV_TRANSFER: &str = "kv_transfer";
    /// Load generator's client span name (followed by the model, like the server span).
    pub const CLIENT_PREFIX: &str = "chat";

    /// Whether a `tracing` span name is one of the contract's request or phase spans.
    pub fn is_contract_span(name: &str) -> bool {
        matches!(name, REQUEST | QUEUE | PREFILL | DECODE)
    }

    /// The SERVER span's name: `{gen_ai.operation.name} {gen_ai.request.model}`.
    pub fn request_span_name(operation: &str, model: &str) -> String {
        let mut name = String::with_capacity(operation.len() + 1 + model.len());
        name.push_str(operation);
        name.push(' ');
        name.push_str(model);
        name
    }
}

/// Attribute keys (span attributes, metric attributes and event attributes).
///
/// Keys that `opentelemetry-semantic-conventions` 0.33 defines come from it; the rest are
/// ours. That crate marks its `gen_ai.*` constants deprecated only because the GenAI
/// conventions moved to their own repository — the keys themselves are current.
#[allow(deprecated)]
pub mod attr {
    // --- GenAI semantic conventions ---
    pub const GEN_AI_OPERATION_NAME: &str = super::semconv::GEN_AI_OPERATION_NAME;
    pub const GEN_AI_PROVIDER_NAME: &str = super::semconv::GEN_AI_PROVIDER_NAME;
    pub const GEN_AI_REQUEST_MODEL: &str = super::semconv::GEN_AI_REQUEST_MODEL;
    pub const GEN_AI_REQUEST_MAX_TOKENS: &str = super::semconv::GEN_AI_REQUEST_MAX_TOKENS;
    pub const GEN_AI_REQUEST_TEMPERATURE: &str = super::semconv::GEN_AI_REQUEST_TEMPERATURE;
    pub const GEN_AI_REQUEST_TOP_P: &str = super::semconv::GEN_AI_REQUEST_TOP_P;
    pub const GEN_AI_REQUEST_STREAM: &str = super::semconv::GEN_AI_REQUEST_STREAM;
    pub const GEN_AI_RESPONSE_ID: &str = super::semconv::GEN_AI_RESPONSE_ID;
    pub const GEN_AI_RESPONSE_MODEL: &str = super::semconv::GEN_AI_RESPONSE_MODEL;
    pub const GEN_AI_RESPONSE_FINISH_REASONS: &str = super::semconv::GEN_AI_RESPONSE_FINISH_REASONS;
    /// Metric attribute: the single finish reason of one request.
    pub const GEN_AI_RESPONSE_FINISH_REASON: &str = "gen_ai.response.finish_reason";
    pub const GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: &str =
        super::semconv::GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK;
    pub const GEN_AI_USAGE_INPUT_TOKENS: &str = super::semconv::GEN_AI_USAGE_INPUT_TOKENS;
    pub const GEN_AI_USAGE_OUTPUT_TOKENS: &str = super::semconv::GEN_AI_USAGE_OUTPUT_TOKENS;
    pub const GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: &str =
        super::semconv::GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS;
    pub const GEN_AI_TOKEN_TYPE: &str = super::semconv::GEN_AI_TOKEN_TYPE;
    /// Opt-in content capture: the input messages as JSON (replaces the deprecated
    /// `gen_ai.prompt`).
    pub const GEN_AI_INPUT_MESSAGES: &str = super::semconv::GEN_AI_INPUT_MESSAGES;
    /// Opt-in content capture: the output messages as JSON (replaces the deprecated
    /// `gen_ai.completion`).
    pub const GEN_AI_OUTPUT_MESSAGES: &str = super::semconv::GEN_AI_OUTPUT_MESSAGES;

    // --- General semantic conventions ---
    pub const ERROR_TYPE: &str = super::semconv::ERROR_TYPE;
    pub const SERVER_ADDRESS: &str = super::semconv::SERVER_ADDRESS;
    pub const SERVER_PORT: &str = super::semconv::SERVER_PORT;
    pub const HTTP_RESPONSE_STATUS_CODE: &str = super::semconv::HTTP_RESPONSE_STATUS_CODE;
    pub const NETWORK_IO_DIRECTION: &str = super::semconv::NETWORK_IO_DIRECTION;

    // --- llm.* (engine concepts the GenAI conventions do not cover) ---
    pub const LLM_QUEUE_POSITION: &str = "llm.queue.position";
    pub const LLM_PREFILL_COMPUTED_TOKENS: &str = "llm.prefill.computed_tokens";
    pub const LLM_PREFILL_CACHED_TOKENS: &str = "llm.prefill.cached_tokens";
    pub const LLM_DECODE_OUTPUT_TOKENS: &str = "llm.decode.output_tokens";
    pub const LLM_DECODE_PREEMPTIONS: &str = "llm.decode.preemptions";
    pub const LLM_REQUEST_OUTCOME: &str = "llm.request.outcome";
    pub const LLM_REQUEST_STATE: &str = "llm.request.state";
    pub const LLM_KV_CACHE_BLOCK_STATE: &str = "llm.kv_cache.block.state";
    /// Event attribute of `first_token`: time to first token in seconds.
    pub const LLM_TTFT: &str = "llm.time_to_first_token";
    /// Event attribute of `preempted`/`resumed`: how many times the sequence was preempted so far.
    pub const LLM_PREEMPTION_COUNT: &str = "llm.preemption.count";
    /// Resource attribute marking a simulated workload.
    pub const LLM_SIMULATED: &str = "llm.simulated";
    /// Request span: the request's share of the engine's step time, in seconds (each step's
    /// duration split over the sequences it served by the tokens it computed for each).
    pub const LLM_REQUEST_GPU_TIME: &str = "llm.request.gpu_time";
    /// `kv_transfer` span and metrics: bytes of KV cache moved.
    pub const LLM_KV_TRANSFER_BYTES: &str = "llm.kv_transfer.bytes";
    /// `kv_transfer` span and metrics: the link (`nvlink`, `rdma`, `tcp`).
    pub const LLM_KV_TRANSFER_TRANSPORT: &str = "llm.kv_transfer.transport";
    /// `infermon gateway` attempt span: which half of a disaggregated request (`prefill`,
    /// `decode`); absent for a request served whole.
    pub const LLM_PD_PHASE: &str = "llm.pd.phase";
    /// `infermon gateway`: the upstream engine a request (attempt) went to, by configured name.
    pub const LLM_UPSTREAM: &str = "llm.upstream";
    /// `infermon gateway`: the tenant an API key belongs to (capped label).
    pub const LLM_TENANT: &str = "llm.tenant";
    /// `infermon gateway`: how an upstream attempt ended (`ok`, `connect_error`,
    /// `tls_handshake`, `timeout`, `server_error`, `client_error`).
    pub const LLM_ATTEMPT_OUTCOME: &str = "llm.gateway.attempt.outcome";
    /// `infermon gateway` span attribute: the attempt's number (1 = first try).
    pub const LLM_ATTEMPT: &str = "llm.gateway.attempt";
    /// `infermon gateway` span attribute: the request's price in US dollars (price table).
    pub const LLM_COST_USD: &str = "llm.request.cost_usd";

    // --- Hardware semantic conventions (GPUs) ---
    pub const HW_ID: &str = super::semconv::HW_ID;
    pub const HW_NAME: &str = super::semconv::HW_NAME;
    pub const HW_VENDOR: &str = super::semconv::HW_VENDOR;
    pub const HW_TYPE: &str = super::semconv::HW_TYPE;
    pub const HW_GPU_TASK: &str = super::semconv::HW_GPU_TASK;
    pub const HW_SENSOR_LOCATION: &str = super::semconv::HW_SENSOR_LOCATION;
    pub const HW_GPU_CLOCK_TYPE: &str = "hw.gpu.clock.type";
    pub const HW_GPU_THROTTLE_REASON: &str = "hw.gpu.throttle.reason";
    pub const HW_GPU_XID: &str = "hw.gpu.xid";
    pub const GPU_INDEX: &str = "gpu.index";
    pub const PROCESS_PID: &str = super::semconv::PROCESS_PID;
    pub const PROCESS_EXECUTABLE_NAME: &str = super::semconv::PROCESS_EXECUTABLE_NAME;

    // --- Pipeline self-telemetry ---
    pub const INFERMON_SIGNAL: &str = "infermon.signal";

    // --- Resource (service and host semantic conventions) ---
    pub const SERVICE_NAME: &str = super::semconv::SERVICE_NAME;
    pub const SERVICE_VERSION: &str = super::semconv::SERVICE_VERSION;
    pub const SERVICE_INSTANCE_ID: &str = super::semconv::SERVICE_INSTANCE_ID;
    pub const HOST_NAME: &str = super::semconv::HOST_NAME;
}

/// `tracing` field names the bridge and the metrics layer interpret rather than export.
///
/// The `otel.*` names follow tracing-opentelemetry's conventions so code written for it keeps
/// working; the timestamp fields are infermon's own (nanoseconds since the Unix epoch, `u64`).
pub mod field {
    /// The exported span name (default: the `tracing` span name).
    pub const OTEL_NAME: &str = "otel.name";
    /// The span kind: `server`, `client`, `producer`, `consumer` or `internal` (default).
    pub const OTEL_KIND: &str = "otel.kind";
    /// `error` sets the span status to ERROR (`ok` to OK).
    pub const OTEL_STATUS_CODE: &str = "otel.status_code";
    /// The status description that goes with an ERROR status.
    pub const OTEL_STATUS_DESCRIPTION: &str = "otel.status_description";
    /// On a span, at creation: its start time (default: when the `tracing` span was created).
    pub const START_TIME: &str = "infermon.start_time_unix_nano";
    /// On a span, recorded before it closes: its end time (default: when it closed).
    pub const END_TIME: &str = "infermon.end_time_unix_nano";
    /// On an event: its timestamp (default: when it was emitted).
    pub const EVENT_TIME: &str = "infermon.time_unix_nano";
    /// `otel.kind` of the request span.
    pub const KIND_SERVER: &str = "server";
    /// `otel.status_code` of a failed request.
    pub const STATUS_ERROR: &str = "error";
}

/// Well-known attribute values.
pub mod value {
    // gen_ai.operation.name
    pub const OPERATION_CHAT: &str = "chat";
    pub const OPERATION_TEXT_COMPLETION: &str = "text_completion";
    // gen_ai.provider.name
    pub const PROVIDER_SIMULATOR: &str = "infermon.simulator";
    pub const PROVIDER_VLLM: &str = "vllm";
    // gen_ai.token.type
    pub const TOKEN_INPUT: &str = "input";
    pub const TOKEN_OUTPUT: &str = "output";
    // gen_ai.response.finish_reason (OpenAI's values plus `abort` and `error`)
    pub const FINISH_STOP: &str = "stop";
    pub const FINISH_LENGTH: &str = "length";
    pub const FINISH_ABORT: &str = "abort";
    pub const FINISH_ERROR: &str = "error";
    // llm.request.outcome
    pub const OUTCOME_SUCCESS: &str = "success";
    pub const OUTCOME_ERROR: &str = "error";
    pub const OUTCOME_ABORTED: &str = "aborted";
    // llm.request.state
    pub const STATE_RUNNING: &str = "running";
    pub const STATE_WAITING: &str = "waiting";
    pub const STATE_SWAPPED: &str = "swapped";
    // llm.kv_cache.block.state
    pub const BLOCK_USED: &str = "used";
    pub const BLOCK_FREE: &str = "free";
    // hw.type
    pub const HW_TYPE_GPU: &str = "gpu";
    // hw.gpu.task
    pub const GPU_TASK_GENERAL: &str = "general";
    pub const GPU_TASK_ENCODER: &str = "encoder";
    pub const GPU_TASK_DECODER: &str = "decoder";
    // hw.sensor_location
    pub const SENSOR_GPU: &str = "gpu";
    pub const SENSOR_MEMORY: &str = "memory";
    // hw.gpu.clock.type
    pub const CLOCK_SM: &str = "sm";
    pub const CLOCK_MEMORY: &str = "memory";
    // hw.gpu.throttle.reason (NVML's clock throttle reasons)
    pub const THROTTLE_GPU_IDLE: &str = "gpu_idle";
    pub const THROTTLE_APPLICATIONS_CLOCKS: &str = "applications_clocks";
    pub const THROTTLE_SW_POWER_CAP: &str = "sw_power_cap";
    pub const THROTTLE_HW_SLOWDOWN: &str = "hw_slowdown";
    pub const THROTTLE_SYNC_BOOST: &str = "sync_boost";
    pub const THROTTLE_SW_THERMAL: &str = "sw_thermal";
    pub const THROTTLE_HW_THERMAL: &str = "hw_thermal";
    pub const THROTTLE_HW_POWER_BRAKE: &str = "hw_power_brake";
    pub const THROTTLE_DISPLAY_CLOCKS: &str = "display_clocks";
    /// hw.gpu.xid: the XID codes that get their own label value; every other code is
    /// [`OVERFLOW`]. NVIDIA's critical and commonly alerted-on XIDs: 13 graphics engine exception,
    /// 31 memory page fault, 32 corrupted push buffer, 43 GPU stopped processing, 45 preemptive
    /// cleanup, 48 double-bit ECC, 61/62 internal micro-controller, 63/64 page retirement or row
    /// remapping, 68 video processor exception, 69 graphics engine class error, 74 NVLink,
    /// 79 fallen off the bus, 92 high single-bit ECC rate, 94/95 contained/uncontained ECC,
    /// 109 context switch timeout, 119/120 GSP RPC timeout / GSP error, 140 unrecovered ECC.
    pub const GPU_XIDS: &[&str] = &[
        "13", "31", "32", "43", "45", "48", "61", "62", "63", "64", "68", "69", "74", "79", "92",
        "94", "95", "109", "119", "120", "140",
    ];
    // error.type on hw.errors
    pub const HW_ERROR_XID: &str = "xid";
    pub const HW_ERROR_ECC_CORRECTED: &str = "ecc_corrected";
    pub const HW_ERROR_ECC_UNCORRECTED: &str = "ecc_uncorrected";
    // network.io.direction
    pub const IO_RECEIVE: &str = "receive";
    pub const IO_TRANSMIT: &str = "transmit";
    // hw.vendor of simulated GPUs
    pub const VENDOR_NVIDIA: &str = "NVIDIA";
    pub const VENDOR_SIMULATED: &str = "infermon-simulated";
    // infermon.signal
    pub const SIGNAL_TRACES: &str = "traces";
    pub const SIGNAL_METRICS: &str = "metrics";
    /// Replacement for a user-supplied label value past the cardinality cap.
    pub const OVERFLOW: &str = "other";
    /// error.type of a request whose lifecycle object was dropped before it finished, failed or
    /// was aborted (a bug in the caller, reported rather than leaked as an open span).
    pub const ERROR_DROPPED: &str = "dropped";
    /// error.type of a request span whose status is ERROR but that names no error type (the
    /// semantic conventions' fallback value).
    pub const ERROR_OTHER: &str = "_OTHER";
    // error.type of requests the engine simulator rejects or fails: admission control, engine
    // shutdown, and the fault-injection types a scenario file names (`type = "server_error"`).
    pub const ERROR_QUEUE_FULL: &str = "queue_full";
    pub const ERROR_SHUTDOWN: &str = "shutdown";
    pub const ERROR_SERVER: &str = "server_error";
    pub const ERROR_OVERLOADED: &str = "overloaded";
    pub const ERROR_RATE_LIMITED: &str = "rate_limited";
    pub const ERROR_MID_STREAM: &str = "mid_stream_error";
    // error.type of requests the simulator rejects before they reach its engine (OpenAI's
    // error codes where it has one): a bad field or body (400), an unknown model (404), a
    // prompt longer than the context (400), a body over the size limit (413), a body that is
    // not JSON by its Content-Type (415).
    pub const ERROR_INVALID_REQUEST: &str = "invalid_request";
    pub const ERROR_MODEL_NOT_FOUND: &str = "model_not_found";
    pub const ERROR_CONTEXT_LENGTH: &str = "context_length_exceeded";
    pub const ERROR_REQUEST_TOO_LARGE: &str = "request_too_large";
    pub const ERROR_UNSUPPORTED_MEDIA_TYPE: &str = "unsupported_media_type";
    // error.type of the load generator's CLIENT spans (and its summary's error keys): an HTTP
    // status as `http_{status}`, optionally followed by `:{OpenAI error type}`, or one of the
    // transport failures below.
    pub const CLIENT_ERROR_HTTP_PREFIX: &str = "http_";
    pub const CLIENT_ERROR_IN_STREAM: &str = "stream_error";
    pub const CLIENT_ERROR_CONNECT: &str = "connect";
    pub const CLIENT_ERROR_TIMEOUT: &str = "timeout";
    pub const CLIENT_ERROR_INTERRUPTED: &str = "interrupted";
    pub const CLIENT_ERROR_INCOMPLETE_STREAM: &str = "incomplete_stream";
    pub const CLIENT_ERROR_INVALID_RESPONSE: &str = "invalid_response";
    pub const CLIENT_ERROR_CLIENT_OVERLOAD: &str = "client_overload";
    pub const CLIENT_ERROR_TRANSPORT: &str = "transport";
    // service.name defaults of the `infermon` commands (dashboards select the simulator by it).
    pub const SERVICE_SIM: &str = "infermon-sim";
    pub const SERVICE_LOAD: &str = "infermon-load";
    pub const SERVICE_DEMO: &str = "infermon-demo";
}

/// Metric names (OTLP form).
pub mod metric {
    pub const REQUEST_DURATION: &str = "gen_ai.server.request.duration";
    pub const TIME_TO_FIRST_TOKEN: &str = "gen_ai.server.time_to_first_token";
    pub const TIME_PER_OUTPUT_TOKEN: &str = "gen_ai.server.time_per_output_token";
    pub const QUEUE_DURATION: &str = "llm.request.queue.duration";
    pub const PREFILL_DURATION: &str = "llm.request.prefill.duration";
    pub const DECODE_DURATION: &str = "llm.request.decode.duration";
    pub const REQUEST_TOKENS: &str = "llm.request.tokens";
    pub const REQUEST_GPU_TIME: &str = "llm.request.gpu_time";
    pub const REQUESTS: &str = "llm.requests";
    // `infermon gateway` (besides the contract's TTFT, TPOT and request duration, which it
    // records with `llm.upstream` as a client sees them).
    pub const KV_TRANSFER_DURATION: &str = "llm.kv_transfer.duration";
    pub const KV_TRANSFER_BYTES: &str = "llm.kv_transfer.bytes";
    pub const GATEWAY_REQUESTS: &str = "llm.gateway.requests";
    pub const GATEWAY_TOKENS: &str = "llm.gateway.tokens";
    pub const GATEWAY_COST: &str = "llm.gateway.cost";
    pub const GATEWAY_INTER_TOKEN_LATENCY: &str = "llm.gateway.inter_token_latency";
    pub const GATEWAY_ATTEMPTS: &str = "llm.gateway.upstream.attempts";
    pub const GATEWAY_TIME_TO_HEADERS: &str = "llm.gateway.upstream.time_to_headers";
    pub const GATEWAY_OUTSTANDING: &str = "llm.gateway.upstream.outstanding";
    pub const GATEWAY_HEALTHY: &str = "llm.gateway.upstream.healthy";
    pub const TOKENS: &str = "llm.tokens";
    pub const SCHEDULER_REQUESTS: &str = "llm.scheduler.requests";
    pub const SCHEDULER_ITERATIONS: &str = "llm.scheduler.iterations";
    pub const SCHEDULER_PREEMPTIONS: &str = "llm.scheduler.preemptions";
    pub const KV_CACHE_USAGE: &str = "llm.kv_cache.usage";
    pub const KV_CACHE_BLOCKS: &str = "llm.kv_cache.blocks";
    /// Prompt tokens looked up in the prefix cache (vLLM: `vllm:prefix_cache_queries`).
    pub const PREFIX_CACHE_QUERIES: &str = "llm.prefix_cache.queries";
    /// Prompt tokens found in the prefix cache (vLLM: `vllm:prefix_cache_hits`).
    pub const PREFIX_CACHE_HITS: &str = "llm.prefix_cache.hits";
    /// Speculative decoding: draft proposals (vLLM: `vllm:spec_decode_num_drafts`).
    pub const SPEC_DECODE_DRAFTS: &str = "llm.spec_decode.drafts";
    /// Speculative decoding: tokens proposed by the drafter (`vllm:spec_decode_num_draft_tokens`).
    pub const SPEC_DECODE_DRAFT_TOKENS: &str = "llm.spec_decode.draft_tokens";
    /// Speculative decoding: draft tokens the target model accepted
    /// (`vllm:spec_decode_num_accepted_tokens`).
    pub const SPEC_DECODE_ACCEPTED_TOKENS: &str = "llm.spec_decode.accepted_tokens";

    pub const GPU_UTILIZATION: &str = "hw.gpu.utilization";
    pub const GPU_MEMORY_UTILIZATION: &str = "hw.gpu.memory.utilization";
    pub const GPU_MEMORY_USAGE: &str = "hw.gpu.memory.usage";
    pub const GPU_MEMORY_LIMIT: &str = "hw.gpu.memory.limit";
    pub const HW_TEMPERATURE: &str = "hw.temperature";
    pub const HW_POWER: &str = "hw.power";
    pub const HW_POWER_LIMIT: &str = "hw.power.limit";
    pub const HW_ENERGY: &str = "hw.energy";
    pub const GPU_IO: &str = "hw.gpu.io";
    pub const HW_ERRORS: &str = "hw.errors";
    pub const GPU_CLOCK_FREQUENCY: &str = "hw.gpu.clock.frequency";
    pub const GPU_THROTTLED: &str = "hw.gpu.throttled";
    pub const GPU_SM_ACTIVITY: &str = "hw.gpu.sm.activity";
    pub const GPU_SM_OCCUPANCY: &str = "hw.gpu.sm.occupancy";
    pub const GPU_DRAM_BANDWIDTH_UTILIZATION: &str = "hw.gpu.dram.bandwidth.utilization";
    pub const GPU_TENSOR_ACTIVITY: &str = "hw.gpu.tensor.activity";
    pub const GPU_RETIRED_PAGES: &str = "hw.gpu.memory.retired_pages";
    pub const GPU_REMAPPED_ROWS: &str = "hw.gpu.memory.remapped_rows";
    pub const GPU_PROCESS_MEMORY_USAGE: &str = "hw.gpu.process.memory.usage";
    pub const GPU_READ_ERRORS: &str = "infermon.gpu.read_errors";

    pub const TELEMETRY_SPANS_DROPPED: &str = "infermon.telemetry.spans.dropped";
    pub const TELEMETRY_EXPORT_FAILURES: &str = "infermon.telemetry.export.failures";
}

/// Units (UCUM, as OpenTelemetry expects them).
pub mod unit {
    pub const SECONDS: &str = "s";
    pub const USD: &str = "{USD}";
    pub const ATTEMPTS: &str = "{attempt}";
    pub const TOKENS: &str = "{token}";
    pub const REQUESTS: &str = "{request}";
    pub const ITERATIONS: &str = "{iteration}";
    pub const PREEMPTIONS: &str = "{preemption}";
    pub const DRAFTS: &str = "{draft}";
    pub const BLOCKS: &str = "{block}";
    pub const RATIO: &str = "1";
    pub const BYTES: &str = "By";
    pub const CELSIUS: &str = "Cel";
    pub const WATTS: &str = "W";
    pub const JOULES: &str = "J";
    pub const HERTZ: &str = "Hz";
    pub const ERRORS: &str = "{error}";
    pub const PAGES: &str = "{page}";
    pub const ROWS: &str = "{row}";
    pub const SPANS: &str = "{span}";
    pub const EXPORTS: &str = "{export}";
}

/// Explicit histogram bucket boundaries. Never the SDK default (`0, 5, 10, …`), which is useless
/// for sub-second latencies.
pub mod buckets {
    /// GenAI advisory boundaries for `gen_ai.server.request.duration`.
    pub const REQUEST_DURATION: &[f64] = &[
        0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
    ];
    /// GenAI advisory boundaries for `gen_ai.server.time_to_first_token`.
    pub const TIME_TO_FIRST_TOKEN: &[f64] = &[
        0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    ];
    /// GenAI advisory boundaries for `gen_ai.server.time_per_output_token`.
    pub const TIME_PER_OUTPUT_TOKEN: &[f64] = &[
        0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
    ];
    /// Queue/prefill/decode phases: vLLM's request-latency boundaries (0.3 s … 7680 s) with a
    /// finer sub-0.3 s end, since on a healthy engine most phases finish well under 0.3 s.
    pub const PHASE_DURATION: &[f64] = &[
        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0,
        15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
    ];
    /// The bucket set of a contract histogram, by its OTLP name (`None` for other metrics).
    pub fn of(metric_name: &str) -> Option<&'static [f64]> {
        use super::metric as m;
        use super::relay::metric as r;
        Some(match metric_name {
            m::REQUEST_DURATION => REQUEST_DURATION,
            m::TIME_TO_FIRST_TOKEN => TIME_TO_FIRST_TOKEN,
            m::TIME_PER_OUTPUT_TOKEN => TIME_PER_OUTPUT_TOKEN,
            m::QUEUE_DURATION | m::PREFILL_DURATION | m::DECODE_DURATION => PHASE_DURATION,
            m::GATEWAY_INTER_TOKEN_LATENCY => TIME_PER_OUTPUT_TOKEN,
            m::REQUEST_GPU_TIME => PHASE_DURATION,
            m::GATEWAY_TIME_TO_HEADERS => TIME_TO_FIRST_TOKEN,
            m::KV_TRANSFER_DURATION => PHASE_DURATION,
            m::REQUEST_TOKENS => TOKENS,
            r::REQUEST_TIME_TO_FIRST_TOKEN => TIME_TO_FIRST_TOKEN,
            r::REQUEST_TIME_PER_OUTPUT_TOKEN => TIME_PER_OUTPUT_TOKEN,
            r::REQUEST_QUEUE_DURATION
            | r::REQUEST_PREFILL_DURATION
            | r::REQUEST_DECODE_DURATION => PHASE_DURATION,
            _ => return None,
        })
    }

    /// Token counts per request: vLLM's 1-2-5 series.
    pub const TOKENS: &[f64] = &[
        1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
        20000.0, 50000.0, 100000.0, 200000.0,
    ];
}

/// `infermon relay`: the vLLM request span it recognises (vLLM's names, the input vocabulary)
/// and the relay's own metrics, attribute and reason values.
pub mod relay {
    /// `service.name` default of `infermon relay`.
    pub const SERVICE_RELAY: &str = "infermon-relay";
    /// Attribute of the relay's counters: why a span was incomplete or dropped.
    pub const ATTR_REASON: &str = "infermon.relay.reason";

    /// vLLM 0.33.0's per-request span, as `vllm/v1/engine/output_processor.py`
    /// (`OutputProcessor.do_tracing`) and `vllm/tracing/` of the released wheel build it. These
    /// are vLLM's names, not ours: the relay recognises and maps them, the simulator's vLLM
    /// trace mode imitates them.
    pub mod vllm {
        /// The span name (`do_tracing`: `span_name="llm_request"`).
        pub const SPAN_NAME: &str = "llm_request";
        /// The instrumentation scope: `manual_instrument_otel` calls
        /// `trace.get_tracer(__name__)` in `vllm/tracing/otel.py`.
        pub const SCOPE: &str = "vllm.tracing.otel";
        /// Resource attributes `init_otel_tracer` sets (`vllm/tracing/otel.py`).
        pub const RESOURCE_INSTRUMENTING_MODULE: &str = "vllm.instrumenting_module_name";
        pub const RESOURCE_PROCESS_ID: &str = "vllm.process_id";
        /// The module name `AsyncLLM` passes to `init_tracer` (`vllm/v1/engine/async_llm.py`).
        pub const INSTRUMENTING_MODULE: &str = "vllm.llm_engine";
        // `SpanAttributes` in `vllm/tracing/utils.py`.
        pub const USAGE_COMPLETION_TOKENS: &str = "gen_ai.usage.completion_tokens";
        pub const USAGE_PROMPT_TOKENS: &str = "gen_ai.usage.prompt_tokens";
        pub const REQUEST_MAX_TOKENS: &str = "gen_ai.request.max_tokens";
        pub const REQUEST_TOP_P: &str = "gen_ai.request.top_p";
        pub const REQUEST_TEMPERATURE: &str = "gen_ai.request.temperature";
        pub const REQUEST_ID: &str = "gen_ai.request.id";
        pub const REQUEST_N: &str = "gen_ai.request.n";
        /// Seconds, engine-core clock: first SCHEDULED minus QUEUED.
        pub const LATENCY_TIME_IN_QUEUE: &str = "gen_ai.latency.time_in_queue";
        /// Seconds, frontend clock: arrival to the frontend's handling of the first token.
        pub const LATENCY_TIME_TO_FIRST_TOKEN: &str = "gen_ai.latency.time_to_first_token";
        /// Seconds, frontend clock: arrival to the frontend's handling of the last output.
        pub const LATENCY_E2E: &str = "gen_ai.latency.e2e";
        /// Seconds, engine-core clock: first token minus first SCHEDULED.
        pub const LATENCY_TIME_IN_MODEL_PREFILL: &str = "gen_ai.latency.time_in_model_prefill";
        /// Seconds, engine-core clock: last token minus first token.
        pub const LATENCY_TIME_IN_MODEL_DECODE: &str = "gen_ai.latency.time_in_model_decode";
        /// Seconds, engine-core clock: last token minus first SCHEDULED (prefill + decode).
        pub const LATENCY_TIME_IN_MODEL_INFERENCE: &str = "gen_ai.latency.time_in_model_inference";
        /// Prefix of vLLM's OpenAI server request ids for chat completions
        /// (`vllm/entrypoints/openai/chat_completion/serving.py`).
        pub const CHAT_REQUEST_ID_PREFIX: &str = "chatcmpl-";
        /// Prefix of vLLM's OpenAI server request ids for text completions
        /// (`vllm/entrypoints/openai/completion/serving.py`).
        pub const COMPLETION_REQUEST_ID_PREFIX: &str = "cmpl-";
    }

    /// The relay's metric names (OTLP form).
    pub mod metric {
        pub const SPANS_RECEIVED: &str = "infermon.relay.spans.received";
        pub const SPANS_EXPANDED: &str = "infermon.relay.spans.expanded";
        pub const SPANS_PASSED: &str = "infermon.relay.spans.passed";
        pub const SPANS_INCOMPLETE: &str = "infermon.relay.spans.incomplete";
        pub const SPANS_DROPPED: &str = "infermon.relay.spans.dropped";
        pub const QUEUE_DEPTH: &str = "infermon.relay.queue.depth";
        pub const EXPORT_FAILURES: &str = "infermon.relay.export.failures";
        // Latencies of the vLLM requests the relay expanded, from their spans' attributes, with
        // exemplars: vLLM's own histograms (scraped) have none, so these are the vLLM path's
        // metric → trace drill-down. Same bucket sets as the contract's request histograms.
        pub const REQUEST_TIME_TO_FIRST_TOKEN: &str = "infermon.relay.request.time_to_first_token";
        pub const REQUEST_TIME_PER_OUTPUT_TOKEN: &str =
            "infermon.relay.request.time_per_output_token";
        pub const REQUEST_QUEUE_DURATION: &str = "infermon.relay.request.queue.duration";
        pub const REQUEST_PREFILL_DURATION: &str = "infermon.relay.request.prefill.duration";
        pub const REQUEST_DECODE_DURATION: &str = "infermon.relay.request.decode.duration";
    }

    /// Values of [`ATTR_REASON`].
    pub mod reason {
        /// Incomplete: a latency attribute a phase needs is absent or not a number.
        pub const MISSING_ATTRIBUTE: &str = "missing_attribute";
        /// Incomplete: a latency attribute is negative, NaN or infinite.
        pub const INVALID_VALUE: &str = "invalid_value";
        /// Incomplete: no first token (time to first token 0, vLLM's value when the request
        /// ended before producing one, e.g. an engine abort), so no phase can be anchored.
        pub const NO_FIRST_TOKEN: &str = "no_first_token";
        /// Incomplete: a phase would extend past the request span (e.g. an engine abort's
        /// meaningless prefill, measured from an unset scheduling time).
        pub const EXCEEDS_SPAN: &str = "exceeds_span";
        /// Dropped: the queue to the collector was full; the sender got a retryable refusal.
        pub const QUEUE_FULL: &str = "queue_full";
        /// Dropped: the collector kept failing until the retries ran out.
        pub const EXPORT_FAILED: &str = "export_failed";
        /// Dropped: the collector refused the batch with a non-retryable error.
        pub const UPSTREAM_REJECTED: &str = "upstream_rejected";
        /// Dropped: still queued when the relay stopped.
        pub const SHUTDOWN: &str = "shutdown";
    }
}

/// Instrument kinds as they appear in the glossary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instrument {
    Histogram,
    Counter,
    Gauge,
    UpDownCounter,
}

impl Instrument {
    pub fn as_str(self) -> &'static str {
        match self {
            Instrument::Histogram => "histogram",
            Instrument::Counter => "counter",
            Instrument::Gauge => "gauge",
            Instrument::UpDownCounter => "updowncounter",
        }
    }
}

/// One metric of the contract: what the glossary documents and what the Prometheus side sees.
#[derive(Debug, Clone, Copy)]
pub struct MetricSpec {
    pub name: &'static str,
    pub instrument: Instrument,
    pub unit: &'static str,
    /// Attribute keys the metric carries (besides resource attributes).
    pub attributes: &'static [&'static str],
    /// The series name under Prometheus' default OTLP translation (histograms: the base name,
    /// to which `_bucket`, `_sum` and `_count` are appended).
    pub prometheus: &'static str,
    pub description: &'static str,
}

use attr::*;
use Instrument::*;

const MODEL_OP: &[&str] = &[GEN_AI_REQUEST_MODEL, GEN_AI_OPERATION_NAME];
const MODEL_OP_TOKEN: &[&str] = &[
    GEN_AI_REQUEST_MODEL,
    GEN_AI_OPERATION_NAME,
    GEN_AI_TOKEN_TYPE,
];
const MODEL_ONLY: &[&str] = &[GEN_AI_REQUEST_MODEL];
const GPU: &[&str] = &[HW_ID, HW_NAME, HW_VENDOR, GPU_INDEX];

/// Every metric of the contract, in glossary order.
pub const METRICS: &[MetricSpec] = &[
    MetricSpec {
        name: metric::REQUEST_DURATION,
        instrument: Histogram,
        unit: unit::SECONDS,
        attributes: &[GEN_AI_REQUEST_MODEL, GEN_AI_OPERATION_NAME, ERROR_TYPE],
        prometheus: "gen_ai_server_request_duration_seconds",
        description: "End-to-end server-side request duration, arrival to last token or error.",
    },
    MetricSpec {
        name: metric::TIME_TO_FIRST_TOKEN,
        instrument: Histogram,
        unit: unit::SECONDS,
        attributes: MODEL_OP,
        prometheus: "gen_ai_server_time_to_first_token_seconds",
        description: "Time from arrival to the first output token (queue + prefill).",
    },
    MetricSpec {
        name: metric::TIME_PER_OUTPUT_TOKEN,
        instrument: Histogram,
        unit: unit::SECONDS,
        attributes: MODEL_OP,
        prometheus: "gen_ai_server_time_per_output_token_seconds",
        description: "Decode time divided by output tokens after the first (inter-token latency).",
    },
    MetricSpec {
        name: metric::QUEUE_DURATION,
        instrument: Histogram,
        unit: unit::SECONDS,
        attributes: MODEL_OP,
        prometheus: "llm_request_queue_duration_seconds",
        description: "Time a request waited before it was first scheduled.",
    },
    MetricSpec {
        name: metric::PREFILL_DURATION,
        instrument: Histogram,
        unit: unit::SECONDS,
        attributes: MODEL_OP,
        prometheus: "llm_request_prefill_duration_seconds",
        description: "Time from first scheduled to first token (prompt processing).",
    },
    MetricSpec {
        name: metric::DECODE_DURATION,
        instrument: Histogram,
        unit: unit::SECONDS,
        attributes: MODEL_OP,
        prometheus: "llm_request_decode_duration_seconds",
        description: "Time from first token to last token.",
    },
    MetricSpec {
        name: metric::REQUEST_TOKENS,
        instrument: Histogram,
        unit: unit::TOKENS,
        attributes: MODEL_OP_TOKEN,
        prometheus: "llm_request_tokens",
        description: "Tokens per request, input (prompt) or output (generated).",
    },
    MetricSpec {
        name: metric::REQUEST_GPU_TIME,
        instrument: Histogram,
        unit: unit::SECONDS,
        attributes: MODEL_OP,
        prometheus: "llm_request_gpu_time_seconds",
        description: "A request's share of the engine's step time (GPU time it used), from the request span's llm.request.gpu_time.",
    },
    MetricSpec {
        name: metric::REQUESTS,
        instrument: Counter,
        unit: unit::REQUESTS,
        attributes: &[
            GEN_AI_REQUEST_MODEL,
            GEN_AI_OPERATION_NAME,
            LLM_REQUEST_OUTCOME,
            GEN_AI_RESPONSE_FINISH_REASON,
            ERROR_TYPE,
        ],
        prometheus: "llm_requests_total",
        description: "Requests that ended, by outcome, finish reason and error type.",
    },
    MetricSpec {
        name: metric::TOKENS,
        instrument: Counter,
        unit: unit::TOKENS,
        attributes: MODEL_OP_TOKEN,
        prometheus: "llm_tokens_total",
        description: "Tokens processed: input (prompt) and output (generated).",
    },
    MetricSpec {
        name: metric::SCHEDULER_REQUESTS,
        instrument: Gauge,
        unit: unit::REQUESTS,
        attributes: &[GEN_AI_REQUEST_MODEL, LLM_REQUEST_STATE],
        prometheus: "llm_scheduler_requests",
        description: "Requests in the engine by state: running, waiting, swapped.",
    },
    MetricSpec {
        name: metric::SCHEDULER_ITERATIONS,
        instrument: Counter,
        unit: unit::ITERATIONS,
        attributes: MODEL_ONLY,
        prometheus: "llm_scheduler_iterations_total",
        description: "Engine steps (one forward pass of the running batch each).",
    },
    MetricSpec {
        name: metric::SCHEDULER_PREEMPTIONS,
        instrument: Counter,
        unit: unit::PREEMPTIONS,
        attributes: MODEL_ONLY,
        prometheus: "llm_scheduler_preemptions_total",
        description: "Sequences evicted from the running batch for lack of KV cache blocks.",
    },
    MetricSpec {
        name: metric::KV_CACHE_USAGE,
        instrument: Gauge,
        unit: unit::RATIO,
        attributes: MODEL_ONLY,
        prometheus: "llm_kv_cache_usage_ratio",
        description: "Fraction of KV cache blocks in use (0–1).",
    },
    MetricSpec {
        name: metric::KV_CACHE_BLOCKS,
        instrument: Gauge,
        unit: unit::BLOCKS,
        attributes: &[GEN_AI_REQUEST_MODEL, LLM_KV_CACHE_BLOCK_STATE],
        prometheus: "llm_kv_cache_blocks",
        description: "KV cache blocks by state: used or free.",
    },
    MetricSpec {
        name: metric::PREFIX_CACHE_QUERIES,
        instrument: Counter,
        unit: unit::TOKENS,
        attributes: MODEL_OP,
        prometheus: "llm_prefix_cache_queries_total",
        description: "Prompt tokens looked up in the prefix cache (hit rate = hits / queries).",
    },
    MetricSpec {
        name: metric::PREFIX_CACHE_HITS,
        instrument: Counter,
        unit: unit::TOKENS,
        attributes: MODEL_OP,
        prometheus: "llm_prefix_cache_hits_total",
        description: "Prompt tokens served from the prefix cache instead of being computed.",
    },
    // Speculative decoding, as vLLM counts it (vllm/v1/spec_decode/metrics.py, 0.33.0):
    // acceptance rate = accepted / draft tokens; mean acceptance length = 1 + accepted / drafts.
    MetricSpec {
        name: metric::SPEC_DECODE_DRAFTS,
        instrument: Counter,
        unit: unit::DRAFTS,
        attributes: MODEL_ONLY,
        prometheus: "llm_spec_decode_drafts_total",
        description:
            "Speculative decoding drafts proposed (one per sequence per step that drafts).",
    },
    MetricSpec {
        name: metric::SPEC_DECODE_DRAFT_TOKENS,
        instrument: Counter,
        unit: unit::TOKENS,
        attributes: MODEL_ONLY,
        prometheus: "llm_spec_decode_draft_tokens_total",
        description: "Tokens proposed by the speculative drafter.",
    },
    MetricSpec {
        name: metric::SPEC_DECODE_ACCEPTED_TOKENS,
        instrument: Counter,
        unit: unit::TOKENS,
        attributes: MODEL_ONLY,
        prometheus: "llm_spec_decode_accepted_tokens_total",
        description:
            "Draft tokens the target model accepted (acceptance rate = accepted / draft tokens).",
    },
    MetricSpec {
        name: metric::GPU_UTILIZATION,
        instrument: Gauge,
        unit: unit::RATIO,
        attributes: &[HW_ID, HW_NAME, HW_VENDOR, GPU_INDEX, HW_GPU_TASK],
        prometheus: "hw_gpu_utilization_ratio",
        description: "Fraction of time the GPU was busy (task: general, encoder, decoder).",
    },
    MetricSpec {
        name: metric::GPU_MEMORY_UTILIZATION,
        instrument: Gauge,
        unit: unit::RATIO,
        attributes: GPU,
        prometheus: "hw_gpu_memory_utilization_ratio",
        description: "Fraction of time the memory controller was busy.",
    },
    MetricSpec {
        name: metric::GPU_MEMORY_USAGE,
        instrument: UpDownCounter,
        unit: unit::BYTES,
        attributes: GPU,
        prometheus: "hw_gpu_memory_usage_bytes",
        description: "GPU memory in use.",
    },
    MetricSpec {
        name: metric::GPU_MEMORY_LIMIT,
        instrument: UpDownCounter,
        unit: unit::BYTES,
        attributes: GPU,
        prometheus: "hw_gpu_memory_limit_bytes",
        description: "Total GPU memory.",
    },
    MetricSpec {
        name: metric::HW_TEMPERATURE,
        instrument: Gauge,
        unit: unit::CELSIUS,
        attributes: &[
            HW_ID,
            HW_NAME,
            HW_VENDOR,
            GPU_INDEX,
            HW_TYPE,
            HW_SENSOR_LOCATION,
        ],
        prometheus: "hw_temperature_celsius",
        description: "Temperature of the GPU die or its memory.",
    },
    MetricSpec {
        name: metric::HW_POWER,
        instrument: Gauge,
        unit: unit::WATTS,
        attributes: &[HW_ID, HW_NAME, HW_VENDOR, GPU_INDEX, HW_TYPE],
        prometheus: "hw_power_watts",
        description: "Power draw.",
    },
    MetricSpec {
        name: metric::HW_POWER_LIMIT,
        instrument: Gauge,
        unit: unit::WATTS,
        attributes: &[HW_ID, HW_NAME, HW_VENDOR, GPU_INDEX, HW_TYPE],
        prometheus: "hw_power_limit_watts",
        description: "Enforced power limit.",
    },
    MetricSpec {
        name: metric::HW_ENERGY,
        instrument: Counter,
        unit: unit::JOULES,
        attributes: &[HW_ID, HW_NAME, HW_VENDOR, GPU_INDEX, HW_TYPE],
        prometheus: "hw_energy_joules_total",
        description: "Energy consumed since the driver loaded.",
    },
    MetricSpec {
        name: metric::GPU_IO,
        instrument: Counter,
        unit: unit::BYTES,
        attributes: &[HW_ID, HW_NAME, HW_VENDOR, GPU_INDEX, NETWORK_IO_DIRECTION],
        prometheus: "hw_gpu_io_bytes_total",
        description: "PCIe traffic, receive and transmit.",
    },
    MetricSpec {
        name: metric::HW_ERRORS,
        instrument: Counter,
        unit: unit::ERRORS,
        attributes: &[
            HW_ID, HW_NAME, HW_VENDOR, GPU_INDEX, HW_TYPE, ERROR_TYPE, HW_GPU_XID,
        ],
        prometheus: "hw_errors_total",
        description: "GPU errors: XID events, corrected and uncorrected ECC errors.",
    },
    MetricSpec {
        name: metric::GPU_CLOCK_FREQUENCY,
        instrument: Gauge,
        unit: unit::HERTZ,
        attributes: &[HW_ID, HW_NAME, HW_VENDOR, GPU_INDEX, HW_GPU_CLOCK_TYPE],
        prometheus: "hw_gpu_clock_frequency_hertz",
        description: "Current SM and memory clock frequency.",
    },
    MetricSpec {
        name: metric::GPU_THROTTLED,
        instrument: Gauge,
        unit: unit::RATIO,
        attributes: &[HW_ID, HW_NAME, HW_VENDOR, GPU_INDEX, HW_GPU_THROTTLE_REASON],
        prometheus: "hw_gpu_throttled_ratio",
        description: "1 while the clocks are held down for the given reason, else 0.",
    },
    MetricSpec {
        name: metric::GPU_SM_ACTIVITY,
        instrument: Gauge,
        unit: unit::RATIO,
        attributes: GPU,
        prometheus: "hw_gpu_sm_activity_ratio",
        description: "Fraction of SMs active (GPM, Hopper and newer).",
    },
    MetricSpec {
        name: metric::GPU_SM_OCCUPANCY,
        instrument: Gauge,
        unit: unit::RATIO,
        attributes: GPU,
        prometheus: "hw_gpu_sm_occupancy_ratio",
        description: "Resident warps over the maximum (GPM, Hopper and newer).",
    },
    MetricSpec {
        name: metric::GPU_DRAM_BANDWIDTH_UTILIZATION,
        instrument: Gauge,
        unit: unit::RATIO,
        attributes: GPU,
        prometheus: "hw_gpu_dram_bandwidth_utilization_ratio",
        description: "Fraction of peak DRAM bandwidth used (GPM, Hopper and newer).",
    },
    MetricSpec {
        name: metric::GPU_TENSOR_ACTIVITY,
        instrument: Gauge,
        unit: unit::RATIO,
        attributes: GPU,
        prometheus: "hw_gpu_tensor_activity_ratio",
        description: "Fraction of time any tensor pipe was active (GPM, Hopper and newer).",
    },
    MetricSpec {
        name: metric::GPU_RETIRED_PAGES,
        instrument: Gauge,
        unit: unit::PAGES,
        attributes: &[HW_ID, HW_NAME, HW_VENDOR, GPU_INDEX, ERROR_TYPE],
        prometheus: "hw_gpu_memory_retired_pages",
        description: "Memory pages retired for ECC errors (pre-Ampere).",
    },
    MetricSpec {
        name: metric::GPU_REMAPPED_ROWS,
        instrument: Gauge,
        unit: unit::ROWS,
        attributes: &[HW_ID, HW_NAME, HW_VENDOR, GPU_INDEX, ERROR_TYPE],
        prometheus: "hw_gpu_memory_remapped_rows",
        description: "Memory rows remapped for ECC errors (Ampere and newer).",
    },
    MetricSpec {
        name: metric::GPU_PROCESS_MEMORY_USAGE,
        instrument: Gauge,
        unit: unit::BYTES,
        attributes: &[HW_ID, GPU_INDEX, PROCESS_PID, PROCESS_EXECUTABLE_NAME],
        prometheus: "hw_gpu_process_memory_usage_bytes",
        description: "GPU memory used per process (top N by usage).",
    },
    MetricSpec {
        name: metric::GPU_READ_ERRORS,
        instrument: Counter,
        unit: unit::ERRORS,
        attributes: &[HW_ID, GPU_INDEX],
        prometheus: "infermon_gpu_read_errors_total",
        description: "Transient NVML read failures (retried on the next poll).",
    },
    MetricSpec {
        name: metric::TELEMETRY_SPANS_DROPPED,
        instrument: Counter,
        unit: unit::SPANS,
        attributes: &[],
        prometheus: "infermon_telemetry_spans_dropped_total",
        description: "Spans that will not be delivered: the export queue was full, the export that met the start of a collector outage failed, or the outage outlasted the retry buffer.",
    },
    MetricSpec {
        name: metric::TELEMETRY_EXPORT_FAILURES,
        instrument: Counter,
        unit: unit::EXPORTS,
        attributes: &[INFERMON_SIGNAL],
        prometheus: "infermon_telemetry_export_failures_total",
        description: "Failed OTLP export attempts, by signal (traces or metrics).",
    },
    MetricSpec {
        name: relay::metric::SPANS_RECEIVED,
        instrument: Counter,
        unit: unit::SPANS,
        attributes: &[],
        prometheus: "infermon_relay_spans_received_total",
        description: "Spans the relay received (OTLP/gRPC and OTLP/HTTP).",
    },
    MetricSpec {
        name: relay::metric::SPANS_EXPANDED,
        instrument: Counter,
        unit: unit::SPANS,
        attributes: &[],
        prometheus: "infermon_relay_spans_expanded_total",
        description: "vLLM request spans given queue/prefill/decode children.",
    },
    MetricSpec {
        name: relay::metric::SPANS_PASSED,
        instrument: Counter,
        unit: unit::SPANS,
        attributes: &[],
        prometheus: "infermon_relay_spans_passed_total",
        description: "Spans passed through unchanged (not vLLM request spans).",
    },
    MetricSpec {
        name: relay::metric::SPANS_INCOMPLETE,
        instrument: Counter,
        unit: unit::SPANS,
        attributes: &[relay::ATTR_REASON],
        prometheus: "infermon_relay_spans_incomplete_total",
        description: "vLLM request spans passed on with some phases not rebuilt, by reason.",
    },
    MetricSpec {
        name: relay::metric::SPANS_DROPPED,
        instrument: Counter,
        unit: unit::SPANS,
        attributes: &[relay::ATTR_REASON],
        prometheus: "infermon_relay_spans_dropped_total",
        description: "Spans the relay did not deliver to the collector, by reason.",
    },
    MetricSpec {
        name: relay::metric::QUEUE_DEPTH,
        instrument: Gauge,
        unit: unit::SPANS,
        attributes: &[],
        prometheus: "infermon_relay_queue_depth",
        description: "Spans waiting in the relay's queue to the collector.",
    },
    MetricSpec {
        name: relay::metric::EXPORT_FAILURES,
        instrument: Counter,
        unit: unit::EXPORTS,
        attributes: &[],
        prometheus: "infermon_relay_export_failures_total",
        description: "Failed export attempts from the relay to the collector (each retry counts).",
    },
    MetricSpec {
        name: relay::metric::REQUEST_TIME_TO_FIRST_TOKEN,
        instrument: Histogram,
        unit: unit::SECONDS,
        attributes: MODEL_OP,
        prometheus: "infermon_relay_request_time_to_first_token_seconds",
        description: "Time to first token of the vLLM requests the relay expanded, from their spans; with exemplars.",
    },
    MetricSpec {
        name: relay::metric::REQUEST_TIME_PER_OUTPUT_TOKEN,
        instrument: Histogram,
        unit: unit::SECONDS,
        attributes: MODEL_OP,
        prometheus: "infermon_relay_request_time_per_output_token_seconds",
        description: "Decode time per output token after the first of the vLLM requests the relay expanded; with exemplars.",
    },
    MetricSpec {
        name: relay::metric::REQUEST_QUEUE_DURATION,
        instrument: Histogram,
        unit: unit::SECONDS,
        attributes: MODEL_OP,
        prometheus: "infermon_relay_request_queue_duration_seconds",
        description: "Queue time of the vLLM requests the relay expanded, from their spans; with exemplars.",
    },
    MetricSpec {
        name: relay::metric::REQUEST_PREFILL_DURATION,
        instrument: Histogram,
        unit: unit::SECONDS,
        attributes: MODEL_OP,
        prometheus: "infermon_relay_request_prefill_duration_seconds",
        description: "Prefill time of the vLLM requests the relay expanded, from their spans; with exemplars.",
    },
    MetricSpec {
        name: relay::metric::REQUEST_DECODE_DURATION,
        instrument: Histogram,
        unit: unit::SECONDS,
        attributes: MODEL_OP,
        prometheus: "infermon_relay_request_decode_duration_seconds",
        description: "Decode time of the vLLM requests the relay expanded, from their spans; with exemplars.",
    },
    MetricSpec {
        name: metric::KV_TRANSFER_DURATION,
        instrument: Histogram,
        unit: unit::SECONDS,
        attributes: &[GEN_AI_REQUEST_MODEL, LLM_KV_TRANSFER_TRANSPORT],
        prometheus: "llm_kv_transfer_duration_seconds",
        description: "Time a decode worker spent pulling a request's KV cache from the prefill worker.",
    },
    MetricSpec {
        name: metric::KV_TRANSFER_BYTES,
        instrument: Counter,
        unit: unit::BYTES,
        attributes: &[GEN_AI_REQUEST_MODEL, LLM_KV_TRANSFER_TRANSPORT],
        prometheus: "llm_kv_transfer_bytes_total",
        description: "KV cache bytes decode workers pulled from prefill workers.",
    },
    MetricSpec {
        name: metric::GATEWAY_REQUESTS,
        instrument: Counter,
        unit: unit::REQUESTS,
        attributes: &[LLM_TENANT, GEN_AI_REQUEST_MODEL, LLM_REQUEST_OUTCOME, ERROR_TYPE],
        prometheus: "llm_gateway_requests_total",
        description: "Requests the gateway answered, by tenant, model and outcome (401s and 429s included).",
    },
    MetricSpec {
        name: metric::GATEWAY_TOKENS,
        instrument: Counter,
        unit: unit::TOKENS,
        attributes: &[LLM_TENANT, GEN_AI_REQUEST_MODEL, GEN_AI_TOKEN_TYPE],
        prometheus: "llm_gateway_tokens_total",
        description: "Tokens per tenant and model as the upstream's usage reported them (input, output).",
    },
    MetricSpec {
        name: metric::GATEWAY_COST,
        instrument: Counter,
        unit: unit::USD,
        attributes: &[LLM_TENANT, GEN_AI_REQUEST_MODEL],
        prometheus: "llm_gateway_cost_total",
        description: "Price of the tokens per tenant and model, from the gateway's price table.",
    },
    MetricSpec {
        name: metric::GATEWAY_INTER_TOKEN_LATENCY,
        instrument: Histogram,
        unit: unit::SECONDS,
        attributes: &[GEN_AI_REQUEST_MODEL, LLM_UPSTREAM],
        prometheus: "llm_gateway_inter_token_latency_seconds",
        description: "Time between two streamed chunks with content, as the gateway (a client) sees them.",
    },
    MetricSpec {
        name: metric::GATEWAY_ATTEMPTS,
        instrument: Counter,
        unit: unit::ATTEMPTS,
        attributes: &[LLM_UPSTREAM, LLM_ATTEMPT_OUTCOME],
        prometheus: "llm_gateway_upstream_attempts_total",
        description: "Requests sent to each upstream, by how the attempt ended (retries count).",
    },
    MetricSpec {
        name: metric::GATEWAY_TIME_TO_HEADERS,
        instrument: Histogram,
        unit: unit::SECONDS,
        attributes: &[LLM_UPSTREAM],
        prometheus: "llm_gateway_upstream_time_to_headers_seconds",
        description: "From sending a request upstream to its response headers: connecting (or a pooled connection) and the engine accepting it.",
    },
    MetricSpec {
        name: metric::GATEWAY_OUTSTANDING,
        instrument: Gauge,
        unit: unit::REQUESTS,
        attributes: &[LLM_UPSTREAM],
        prometheus: "llm_gateway_upstream_outstanding",
        description: "Requests in flight to each upstream (what least-outstanding routing balances).",
    },
    MetricSpec {
        name: metric::GATEWAY_HEALTHY,
        instrument: Gauge,
        unit: unit::RATIO,
        attributes: &[LLM_UPSTREAM],
        prometheus: "llm_gateway_upstream_healthy_ratio",
        description: "1 while the gateway routes to the upstream, 0 after failures or a failed probe.",
    },
];

/// Looks a metric of the contract up by its OTLP name.
pub fn metric_spec(name: &str) -> Option<&'static MetricSpec> {
    METRICS.iter().find(|m| m.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn metric_names_are_unique() {
        let mut seen = HashSet::new();
        for m in METRICS {
            assert!(seen.insert(m.name), "duplicate metric {}", m.name);
        }
    }

    #[test]
    fn bucket_boundaries_are_strictly_increasing() {
        for set in [
            buckets::REQUEST_DURATION,
            buckets::TIME_TO_FIRST_TOKEN,
            buckets::TIME_PER_OUTPUT_TOKEN,
            buckets::PHASE_DURATION,
            buckets::TOKENS,
        ] {
            assert!(set.windows(2).all(|w| w[0] < w[1]), "{set:?}");
        }
    }

    /// The Prometheus forms follow the default OTLP translation: dots to underscores, a unit
    /// suffix (`_seconds`, `_bytes`, `_ratio` for unit 1 gauges, …) unless the name already
    /// ends with it (`llm.kv_transfer.bytes` stays `…_bytes`), `_total` on counters, and
    /// annotation units (`{token}`) dropped.
    #[test]
    fn prometheus_names_follow_the_default_translation() {
        for m in METRICS {
            let base = m.name.replace('.', "_");
            let suffix = match m.unit {
                "s" => "_seconds",
                "By" => "_bytes",
                "Cel" => "_celsius",
                "W" => "_watts",
                "J" => "_joules",
                "Hz" => "_hertz",
                "1" if m.instrument == Instrument::Gauge => "_ratio",
                _ => "",
            };
            let suffix = if base.ends_with(suffix) { "" } else { suffix };
            let total = if m.instrument == Instrument::Counter {
                "_total"
            } else {
                ""
            };
            assert_eq!(m.prometheus, format!("{base}{suffix}{total}"), "{}", m.name);
        }
    }
}
