//! The end-of-run summary: counts, throughput, latency percentiles and errors, as JSON
//! (`--json`) or as a short text table.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::time::Duration;

use serde::Serialize;

use crate::histogram::LatencyHistogram;
use crate::stats::Tally;

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Wall time of the run, first request to last response.
    pub elapsed_s: f64,
    pub requests: Requests,
    pub tokens: Tokens,
    pub throughput: Throughput,
    pub latency: Latencies,
    /// Failed requests by error key (`http_503:overloaded_error`, `connect`, `timeout`, …).
    pub errors: BTreeMap<String, u64>,
    /// Succeeded requests by finish reason.
    pub finish_reasons: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Requests {
    pub sent: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Tokens {
    /// Prompt tokens, as the servers' usage reports counted them.
    pub input: u64,
    /// Generated tokens received (usage reports, else content chunks), including those of
    /// requests that later failed or were cancelled.
    pub output: u64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Throughput {
    /// Succeeded requests per second.
    pub requests_per_s: f64,
    /// Output tokens received per second.
    pub output_tokens_per_s: f64,
    /// Input plus output tokens per second.
    pub total_tokens_per_s: f64,
}

/// Client-side latencies, seconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latencies {
    /// Send → first content chunk (streaming only).
    pub ttft: Option<Percentiles>,
    /// Gap between successive content chunks (streaming only).
    pub itl: Option<Percentiles>,
    /// Per request: (e2e − TTFT) / (output tokens − 1).
    pub tpot: Option<Percentiles>,
    /// Send → last byte, succeeded requests.
    pub e2e: Option<Percentiles>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub min: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    #[serde(rename = "p99.9")]
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(h: &LatencyHistogram) -> Option<Self> {
        let secs = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64());
        (!h.is_empty()).then(|| Self {
            count: h.count(),
            mean: secs(h.mean()),
            min: secs(h.min()),
            p50: secs(h.quantile(0.5)),
            p95: secs(h.quantile(0.95)),
            p99: secs(h.quantile(0.99)),
            p999: secs(h.quantile(0.999)),
            max: secs(h.max()),
        })
    }
}

impl Summary {
    pub(crate) fn new(sent: u64, tally: &Tally, elapsed: Duration) -> Self {
        let secs = elapsed.as_secs_f64().max(f64::EPSILON);
        Self {
            elapsed_s: elapsed.as_secs_f64(),
            requests: Requests {
                sent,
                succeeded: tally.succeeded,
                failed: tally.failed,
                cancelled: tally.cancelled,
            },
            tokens: Tokens {
                input: tally.input_tokens,
                output: tally.output_tokens,
            },
            throughput: Throughput {
                requests_per_s: tally.succeeded as f64 / secs,
                output_tokens_per_s: tally.output_tokens as f64 / secs,
                total_tokens_per_s: (tally.input_tokens + tally.output_tokens) as f64 / secs,
            },
            latency: Latencies {
                ttft: Percentiles::of(&tally.ttft),
                itl: Percentiles::of(&tally.itl),
                tpot: Percentiles::of(&tally.tpot),
                e2e: Percentiles::of(&tally.e2e),
            },
            errors: tally.errors.clone(),
            finish_reasons: tally.finish_reasons.clone(),
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.requests;
        writeln!(
            f,
            "requests    {} sent, {} succeeded, {} failed, {} cancelled in {:.1} s",
            r.sent, r.succeeded, r.failed, r.cancelled, self.elapsed_s
        )?;
        let t = &self.throughput;
        writeln!(
            f,
            "throughput  {:.1} req/s, {:.0} output tok/s, {:.0} total tok/s",
            t.requests_per_s, t.output_tokens_per_s, t.total_tokens_per_s
        )?;
        writeln!(
            f,
            "tokens      {} input, {} output",
            self.tokens.input, self.tokens.output
        )?;
        writeln!(
            f,
            "latency     {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "p50", "p95", "p99", "p99.9", "max", "mean", "count"
        )?;
        let rows = [
            ("  ttft", &self.latency.ttft),
            ("  itl", &self.latency.itl),
            ("  tpot", &self.latency.tpot),
            ("  e2e", &self.latency.e2e),
        ];
        for (name, p) in rows {
            match p {
                Some(p) => writeln!(
                    f,
                    "{name:<11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                    human_secs(p.p50),
                    human_secs(p.p95),
                    human_secs(p.p99),
                    human_secs(p.p999),
                    human_secs(p.max),
                    human_secs(p.mean),
                    p.count
                )?,
                None => writeln!(f, "{name:<11} {:>9}", "-")?,
            }
        }
        writeln!(f, "errors      {}", key_counts(&self.errors))?;
        write!(f, "finish      {}", key_counts(&self.finish_reasons))
    }
}

/// `a 3, b 1` in descending count order, or `none`.
pub fn key_counts(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "none".to_owned();
    }
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let mut out = String::new();
    for (i, (key, count)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{key} {count}");
    }
    out
}

/// Seconds at a readable scale: `850µs`, `12.3ms`, `1.25s`.
pub fn human_secs(s: f64) -> String {
    if s < 1e-3 {
        format!("{:.0}µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.1}ms", s * 1e3)
    } else {
        format!("{s:.2}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_secs_picks_the_unit() {
        assert_eq!(human_secs(0.000_85), "850µs");
        assert_eq!(human_secs(0.0123), "12.3ms");
        assert_eq!(human_secs(1.254), "1.25s");
    }

    #[test]
    fn key_counts_sorts_by_count() {
        let map = BTreeMap::from([("a".to_owned(), 1), ("b".to_owned(), 3)]);
        assert_eq!(key_counts(&map), "b 3, a 1");
        assert_eq!(key_counts(&BTreeMap::new()), "none");
    }

    #[test]
    fn throughput_divides_by_elapsed_and_json_names_the_percentiles() {
        let mut tally = Tally {
            succeeded: 10,
            input_tokens: 1000,
            output_tokens: 500,
            ..Tally::default()
        };
        tally.e2e.record(Duration::from_millis(20));
        let s = Summary::new(12, &tally, Duration::from_secs(5));
        assert_eq!(s.throughput.requests_per_s, 2.0);
        assert_eq!(s.throughput.output_tokens_per_s, 100.0);
        assert_eq!(s.throughput.total_tokens_per_s, 300.0);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["latency"]["e2e"]["p99.9"], 0.02);
        assert!(json["latency"]["ttft"].is_null());
        let text = s.to_string();
        assert!(text.contains("12 sent, 10 succeeded"), "{text}");
    }
}
