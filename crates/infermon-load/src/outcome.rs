//! What one request produced, as the client saw it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use infermon::contract::value;
use opentelemetry::trace::TraceId;

/// Why a request failed, classified the way the summary groups errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// The server answered with a non-2xx status; `error_type` is the OpenAI error body's
    /// `type` when it had one.
    Http {
        status: u16,
        error_type: Option<String>,
    },
    /// The server reported an error inside a 200 stream (`data: {"error": …}`).
    InStream { error_type: Option<String> },
    /// No connection could be made (refused, unreachable, DNS).
    Connect,
    /// The whole exchange took longer than the request timeout.
    Timeout,
    /// The connection broke while the body was being read.
    Interrupted,
    /// The stream ended without `data: [DONE]`.
    IncompleteStream,
    /// A body that is not the API's JSON.
    InvalidResponse,
    /// Open-loop arrival not sent because the in-flight limit was reached (the client, not
    /// the server, was overloaded).
    ClientOverload,
    /// Any other transport error.
    Transport,
}

/// Longest server-supplied error type kept verbatim; the rest is cut (a misbehaving server
/// must not be able to blow up the summary).
const MAX_ERROR_TYPE_LEN: usize = 64;

impl RequestError {
    /// The summary's grouping key and the client span's `error.type`: the HTTP status, or the
    /// transport failure, optionally followed by the OpenAI error type (`http_503:overloaded`).
    pub fn key(&self) -> String {
        fn with_type(base: String, error_type: &Option<String>) -> String {
            match error_type {
                Some(t) if !t.is_empty() => {
                    let mut end = t.len().min(MAX_ERROR_TYPE_LEN);
                    while !t.is_char_boundary(end) {
                        end -= 1;
                    }
                    format!("{base}:{}", &t[..end])
                }
                _ => base,
            }
        }
        match self {
            RequestError::Http { status, error_type } => with_type(
                format!("{}{status}", value::CLIENT_ERROR_HTTP_PREFIX),
                error_type,
            ),
            RequestError::InStream { error_type } => {
                with_type(value::CLIENT_ERROR_IN_STREAM.to_owned(), error_type)
            }
            RequestError::Connect => value::CLIENT_ERROR_CONNECT.to_owned(),
            RequestError::Timeout => value::CLIENT_ERROR_TIMEOUT.to_owned(),
            RequestError::Interrupted => value::CLIENT_ERROR_INTERRUPTED.to_owned(),
            RequestError::IncompleteStream => value::CLIENT_ERROR_INCOMPLETE_STREAM.to_owned(),
            RequestError::InvalidResponse => value::CLIENT_ERROR_INVALID_RESPONSE.to_owned(),
            RequestError::ClientOverload => value::CLIENT_ERROR_CLIENT_OVERLOAD.to_owned(),
            RequestError::Transport => value::CLIENT_ERROR_TRANSPORT.to_owned(),
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failed(RequestError),
    /// Stopped by the load generator itself (Ctrl-C, end of a demo): not the server's fault.
    Cancelled,
}

/// Everything measured about one request.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub outcome: Outcome,
    /// Send to last byte (or failure).
    pub e2e: Duration,
    /// Send to the first chunk with content; streaming only.
    pub ttft: Option<Duration>,
    /// Gaps between successive content chunks, in nanoseconds; streaming only.
    pub itl_ns: Vec<u64>,
    /// The HTTP status, when a response arrived.
    pub http_status: Option<u16>,
    /// `id` and `model` of the response (first chunk).
    pub response_id: Option<String>,
    pub response_model: Option<String>,
    /// Whether the server sent a usage report (`input_tokens` is 0 without one).
    pub usage_reported: bool,
    /// From the server's usage report.
    pub input_tokens: u64,
    /// From the usage report, else the number of content chunks received.
    pub output_tokens: u64,
    pub finish_reason: Option<String>,
    /// The client span's trace, when it was sampled (and so propagated to the server).
    pub trace_id: Option<TraceId>,
    /// Wall-clock time the request was sent (the timings above are monotonic).
    pub started_at: SystemTime,
}

impl RequestRecord {
    pub fn failed(error: RequestError, e2e: Duration) -> Self {
        Self {
            outcome: Outcome::Failed(error),
            e2e,
            ttft: None,
            itl_ns: Vec::new(),
            http_status: None,
            response_id: None,
            response_model: None,
            usage_reported: false,
            input_tokens: 0,
            output_tokens: 0,
            finish_reason: None,
            trace_id: None,
            started_at: SystemTime::now().checked_sub(e2e).unwrap_or(UNIX_EPOCH),
        }
    }

    /// Time per output token after the first: (e2e − TTFT) / (output − 1), the client-side
    /// counterpart of `gen_ai.server.time_per_output_token`.
    pub fn tpot(&self) -> Option<Duration> {
        let ttft = self.ttft?;
        (self.outcome == Outcome::Success && self.output_tokens > 1)
            .then(|| self.e2e.saturating_sub(ttft) / (self.output_tokens - 1) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_keys_name_status_and_openai_type() {
        let http = RequestError::Http {
            status: 503,
            error_type: Some("overloaded_error".into()),
        };
        assert_eq!(http.key(), "http_503:overloaded_error");
        let bare = RequestError::Http {
            status: 404,
            error_type: None,
        };
        assert_eq!(bare.key(), "http_404");
        assert_eq!(RequestError::Timeout.key(), "timeout");
        let long = RequestError::InStream {
            error_type: Some("é".repeat(100)),
        };
        assert!(long.key().len() <= "stream_error:".len() + 64);
    }

    #[test]
    fn tpot_divides_decode_time_by_tokens_after_the_first() {
        let mut r = RequestRecord::failed(RequestError::Timeout, Duration::from_millis(1100));
        r.outcome = Outcome::Success;
        r.ttft = Some(Duration::from_millis(100));
        r.output_tokens = 11;
        assert_eq!(r.tpot(), Some(Duration::from_millis(100)));
        r.output_tokens = 1;
        assert_eq!(r.tpot(), None, "one token has no inter-token time");
    }
}
