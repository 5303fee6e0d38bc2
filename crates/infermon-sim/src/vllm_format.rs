//! `GET /metrics` in vLLM's Prometheus text format, so the collector's vLLM normalisation can be
//! tested without a GPU.
//!
//! These are vLLM's names (v1 engine, `vllm/v1/metrics/loggers.py`), external to infermon's
//! contract, so they live here and nowhere else. Labels are `model_name` and `engine` (the
//! engine index, always `"0"`), histogram buckets are vLLM's, counters carry `_total` in their
//! `# TYPE` line as `prometheus_client` renders them, and `request_success` has one series per
//! finish reason from the start. There is no swapped gauge: vLLM v1 has none.

use std::fmt::Write as _;

/// vLLM's boundaries for `vllm:time_to_first_token_seconds`.
const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
/// vLLM's boundaries for `vllm:inter_token_latency_seconds`.
const ITL_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];
/// vLLM's boundaries for the per-request phase latencies (e2e, queue, prefill, decode).
const REQUEST_LATENCY_BUCKETS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];
/// vLLM's `finished_reason` values (its `FinishReason` enum, lower-cased).
const FINISHED_REASONS: [&str; 4] = ["stop", "length", "abort", "error"];

#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative); the last is +Inf.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
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

/// Durations of one ended request, seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FinishedRequest {
    pub reason: FinishedReason,
    pub e2e: f64,
    pub queue: f64,
    pub prefill: f64,
    pub decode: f64,
}

/// The vLLM-format metrics of one engine.
#[derive(Debug, Clone)]
pub struct VllmMetrics {
    ttft: Histogram,
    itl: Histogram,
    e2e: Histogram,
    queue: Histogram,
    prefill: Histogram,
    decode: Histogram,
    success: [u64; 4],
}

impl Default for VllmMetrics {
    fn default() -> Self {
        Self {
            ttft: Histogram::new(TTFT_BUCKETS),
            itl: Histogram::new(ITL_BUCKETS),
            e2e: Histogram::new(REQUEST_LATENCY_BUCKETS),
            queue: Histogram::new(REQUEST_LATENCY_BUCKETS),
            prefill: Histogram::new(REQUEST_LATENCY_BUCKETS),
            decode: Histogram::new(REQUEST_LATENCY_BUCKETS),
            success: [0; 4],
        }
    }
}

impl VllmMetrics {
    pub fn first_token(&mut self, ttft: f64) {
        self.ttft.observe(ttft);
    }

    pub fn inter_token(&mut self, seconds: f64) {
        self.itl.observe(seconds);
    }

    /// A request left the engine (vLLM records aborted ones too, as `finished_reason=abort`).
    pub fn finished(&mut self, r: &FinishedRequest) {
        self.success[r.reason.index()] += 1;
        self.e2e.observe(r.e2e);
        self.queue.observe(r.queue);
        self.prefill.observe(r.prefill);
        self.decode.observe(r.decode);
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
}

/// Renders the Prometheus text exposition (format 0.0.4).
pub fn render(model_name: &str, metrics: &VllmMetrics, gauges: &VllmGauges) -> String {
    let labels = format!("model_name=\"{}\",engine=\"0\"", escape_label(model_name));
    let mut out = String::with_capacity(8 * 1024);
    let o = &mut out;

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
    counter(
        o,
        &labels,
        "vllm:generation_tokens_total",
        "Number of generation tokens processed.",
        gauges.generation_tokens,
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

    let name = "vllm:request_success_total";
    header(
        o,
        name,
        "Count of successfully processed requests.",
        "counter",
    );
    for (reason, count) in FINISHED_REASONS.iter().zip(metrics.success) {
        let _ = writeln!(
            o,
            "{name}{{{labels},finished_reason=\"{reason}\"}} {:?}",
            count as f64
        );
    }

    histogram(
        o,
        &labels,
        "vllm:time_to_first_token_seconds",
        "Histogram of time to first token in seconds.",
        &metrics.ttft,
    );
    histogram(
        o,
        &labels,
        "vllm:inter_token_latency_seconds",
        "Histogram of inter-token latency in seconds.",
        &metrics.itl,
    );
    histogram(
        o,
        &labels,
        "vllm:e2e_request_latency_seconds",
        "Histogram of e2e request latency in seconds.",
        &metrics.e2e,
    );
    histogram(
        o,
        &labels,
        "vllm:request_queue_time_seconds",
        "Histogram of time spent in WAITING phase for request.",
        &metrics.queue,
    );
    histogram(
        o,
        &labels,
        "vllm:request_prefill_time_seconds",
        "Histogram of time spent in PREFILL phase for request.",
        &metrics.prefill,
    );
    histogram(
        o,
        &labels,
        "vllm:request_decode_time_seconds",
        "Histogram of time spent in DECODE phase for request.",
        &metrics.decode,
    );
    out
}

fn header(o: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
}

fn gauge(o: &mut String, labels: &str, name: &str, help: &str, value: f64) {
    header(o, name, help, "gauge");
    let _ = writeln!(o, "{name}{{{labels}}} {value:?}");
}

fn counter(o: &mut String, labels: &str, name: &str, help: &str, value: u64) {
    header(o, name, help, "counter");
    let _ = writeln!(o, "{name}{{{labels}}} {:?}", value as f64);
}

fn histogram(o: &mut String, labels: &str, name: &str, help: &str, h: &Histogram) {
    header(o, name, help, "histogram");
    let mut cumulative = 0u64;
    for (bound, count) in h.bounds.iter().zip(&h.counts) {
        cumulative += count;
        let _ = writeln!(
            o,
            "{name}_bucket{{{labels},le=\"{bound:?}\"}} {:?}",
            cumulative as f64
        );
    }
    let _ = writeln!(
        o,
        "{name}_bucket{{{labels},le=\"+Inf\"}} {:?}",
        h.count as f64
    );
    let _ = writeln!(o, "{name}_count{{{labels}}} {:?}", h.count as f64);
    let _ = writeln!(o, "{name}_sum{{{labels}}} {:?}", h.sum);
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

    fn sample_line<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting with {prefix}\n{text}"))
    }

    #[test]
    fn histograms_are_cumulative_with_le_semantics() {
        let mut m = VllmMetrics::default();
        m.first_token(0.005); // on a boundary: counts in le="0.005"
        m.first_token(0.03);
        m.first_token(5000.0); // past the last bound: only +Inf
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
        let mut m = VllmMetrics::default();
        m.finished(&FinishedRequest {
            reason: FinishedReason::Abort,
            e2e: 1.0,
            queue: 0.1,
            prefill: 0.2,
            decode: 0.7,
        });
        let text = render("m", &m, &VllmGauges::default());
        for (reason, n) in [
            ("stop", "0.0"),
            ("length", "0.0"),
            ("abort", "1.0"),
            ("error", "0.0"),
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
        };
        let text = render("llama \"8b\"", &VllmMetrics::default(), &gauges);
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
            assert!(series.contains("model_name=\"llama \\\"8b\\\"\""), "{line}");
        }
        assert!(text.contains(
            "vllm:kv_cache_usage_perc{model_name=\"llama \\\"8b\\\"\",engine=\"0\"} 0.25"
        ));
    }
}
