//! One JSON line per request (`infermon load --requests-log`): what a per-request analysis needs
//! beyond the summary's percentiles — above all the trace id, so a test or an operator can ask
//! the trace store about exactly the requests that failed, or that ran while something broke.
//!
//! ```text
//! {"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","start_unix_ms":1764652312345.125,"e2e_ms":812.5,
//!  "ttft_ms":40.25,"outcome":"failed","error_type":"http_503:overloaded_error","http_status":503,
//!  "input_tokens":0,"output_tokens":0,"finish_reason":null}
//! ```
//!
//! A log that cannot be written never stops the run: the first failure is reported once on
//! stderr and later lines are dropped (counted in [`RequestLog::finish`]'s error).

use std::io::{self, Write};
use std::sync::Mutex;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use crate::outcome::{Outcome, RequestRecord};

/// Where the lines go; shared by every request task of a run.
pub struct RequestLog {
    state: Mutex<LogState>,
}

struct LogState {
    out: Box<dyn Write + Send>,
    /// The first write error; once set, nothing more is written.
    failed: Option<io::Error>,
    dropped: u64,
}

/// Why the log is incomplete.
#[derive(Debug, thiserror::Error)]
#[error("the request log lost {dropped} line(s)")]
pub struct RequestLogError {
    pub dropped: u64,
    #[source]
    pub source: io::Error,
}

#[derive(Serialize)]
struct Line<'a> {
    /// Hex, as Jaeger and Tempo show it; null when the client span was not sampled.
    trace_id: Option<String>,
    start_unix_ms: f64,
    e2e_ms: f64,
    ttft_ms: Option<f64>,
    outcome: &'static str,
    /// The summary's error key (`http_503:overloaded_error`, `timeout`, ...).
    error_type: Option<String>,
    http_status: Option<u16>,
    input_tokens: u64,
    output_tokens: u64,
    finish_reason: Option<&'a str>,
}

impl RequestLog {
    /// Lines go to `out` (buffer it: every request writes one line).
    pub fn new(out: impl Write + Send + 'static) -> Self {
        Self {
            state: Mutex::new(LogState {
                out: Box::new(out),
                failed: None,
                dropped: 0,
            }),
        }
    }

    pub(crate) fn write(&self, record: &RequestRecord) {
        let (outcome, error_type) = match &record.outcome {
            Outcome::Success => ("success", None),
            Outcome::Failed(e) => ("failed", Some(e.key())),
            Outcome::Cancelled => ("cancelled", None),
        };
        let line = Line {
            trace_id: record.trace_id.map(|t| t.to_string()),
            start_unix_ms: millis(
                record
                    .started_at
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default(),
            ),
            e2e_ms: millis(record.e2e),
            ttft_ms: record.ttft.map(millis),
            outcome,
            error_type,
            http_status: record.http_status,
            input_tokens: record.input_tokens,
            output_tokens: record.output_tokens,
            finish_reason: record.finish_reason.as_deref(),
        };
        // Serialised outside the lock; only the write holds it.
        let mut bytes = serde_json::to_vec(&line).expect("a request line always serialises");
        bytes.push(b'\n');
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.failed.is_some() {
            state.dropped += 1;
            return;
        }
        if let Err(e) = state.out.write_all(&bytes) {
            eprintln!("warning: cannot write the request log ({e}); later lines are dropped");
            state.failed = Some(e);
            state.dropped += 1;
        }
    }

    /// Flushes the lines written so far; an error if any line was lost.
    pub fn finish(&self) -> Result<(), RequestLogError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.failed.is_none() {
            if let Err(e) = state.out.flush() {
                state.failed = Some(e);
            }
        }
        match state.failed.take() {
            None => Ok(()),
            Some(source) => Err(RequestLogError {
                dropped: state.dropped,
                source,
            }),
        }
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::RequestError;
    use std::sync::Arc;

    /// A writer tests can read back, failing after `limit` bytes.
    #[derive(Clone, Default)]
    struct Sink {
        bytes: Arc<Mutex<Vec<u8>>>,
        limit: Option<usize>,
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut bytes = self.bytes.lock().unwrap();
            if self.limit.is_some_and(|l| bytes.len() + buf.len() > l) {
                return Err(io::Error::other("disk full"));
            }
            bytes.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn lines(sink: &Sink) -> Vec<serde_json::Value> {
        String::from_utf8(sink.bytes.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn one_line_per_request_with_trace_id_times_and_outcome() {
        let sink = Sink::default();
        let log = RequestLog::new(sink.clone());
        let mut failed = RequestRecord::failed(
            RequestError::Http {
                status: 503,
                error_type: Some("overloaded_error".into()),
            },
            Duration::from_millis(1500),
        );
        failed.http_status = Some(503);
        failed.trace_id = Some(opentelemetry::trace::TraceId::from_bytes(
            0xabc_u128.to_be_bytes(),
        ));
        failed.started_at = UNIX_EPOCH + Duration::from_millis(1_000_250);
        log.write(&failed);
        log.write(&RequestRecord::failed(
            RequestError::ClientOverload,
            Duration::ZERO,
        ));
        log.finish().unwrap();

        let lines = lines(&sink);
        assert_eq!(lines.len(), 2);
        let first = &lines[0];
        assert_eq!(first["trace_id"], "00000000000000000000000000000abc");
        assert_eq!(first["start_unix_ms"], 1_000_250.0);
        assert_eq!(first["e2e_ms"], 1500.0);
        assert_eq!(first["outcome"], "failed");
        assert_eq!(first["error_type"], "http_503:overloaded_error");
        assert_eq!(first["http_status"], 503);
        assert!(first["ttft_ms"].is_null());
        assert!(lines[1]["trace_id"].is_null(), "never sent, so no trace");
        assert_eq!(lines[1]["error_type"], "client_overload");
    }

    #[test]
    fn a_failing_writer_loses_lines_but_not_the_run() {
        let sink = Sink {
            limit: Some(300),
            ..Sink::default()
        };
        let log = RequestLog::new(sink.clone());
        for _ in 0..5 {
            log.write(&RequestRecord::failed(
                RequestError::Timeout,
                Duration::from_secs(1),
            ));
        }
        let err = log.finish().unwrap_err();
        let kept = lines(&sink).len() as u64;
        assert!((1..5).contains(&kept), "{kept} lines fit in 300 bytes");
        assert_eq!(err.dropped, 5 - kept);
        assert_eq!(err.source.to_string(), "disk full");
    }
}
