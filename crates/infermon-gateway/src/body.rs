//! The response body going back to the client: the upstream's frames passed on unchanged, as
//! they arrive (no buffering, no re-chunking), observed on the way — the first content chunk
//! (client-side TTFT), the gaps between chunks (inter-token latency), the usage the upstream
//! reports — and the request's telemetry finished when the body ends, fails, stalls past the
//! idle timeout, or is dropped because the client went away (which closes the upstream
//! connection, so the engine frees the slot).

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use infermon_http::sse::SseDecoder;
use serde::Deserialize;
use tokio::time::{Instant, Sleep};

use crate::proxy::Finisher;

/// Non-streamed bodies are kept up to this size to read their usage; past it the usage is
/// not known (the body still goes through whole).
const MAX_JSON_BYTES: usize = 8 * 1024 * 1024;

pub struct Observed {
    inner: Incoming,
    idle_timeout: Duration,
    /// Fires at the earliest moment the stream could have been idle too long; moved on lazily
    /// (when it fires early) rather than reset on every chunk, which would touch the timer wheel
    /// once per token.
    idle: Pin<Box<Sleep>>,
    /// When the upstream's last frame came: the idle timer's reference.
    last_frame: Instant,
    /// `Some` for `text/event-stream` responses.
    sse: Option<SseDecoder>,
    json: Vec<u8>,
    /// What the stream saw so far.
    pub(crate) seen: Seen,
    finisher: Option<Finisher>,
    /// A last frame to send (the error event of a stalled or broken stream).
    tail: Option<Bytes>,
    ended: bool,
}

/// What the body observed.
#[derive(Debug, Default, Clone, Copy)]
pub struct Seen {
    pub first_content: Option<Instant>,
    pub last_content: Option<Instant>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
}

impl Observed {
    pub(crate) fn new(
        inner: Incoming,
        streaming: bool,
        idle_timeout: Duration,
        finisher: Finisher,
    ) -> Self {
        Self {
            inner,
            idle_timeout,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
            last_frame: Instant::now(),
            sse: streaming.then(SseDecoder::new),
            json: Vec::new(),
            seen: Seen::default(),
            finisher: Some(finisher),
            tail: None,
            ended: false,
        }
    }

    fn observe(&mut self, data: &Bytes, now: Instant) {
        match &mut self.sse {
            Some(decoder) => {
                let finisher = self.finisher.as_ref();
                let seen = &mut self.seen;
                decoder.feed(data, &mut |event: &[u8]| {
                    if event == b"[DONE]" {
                        return;
                    }
                    // Most chunks are one token: a few byte searches decide, and only a chunk
                    // that may carry usage is parsed.
                    let content = if find(event, b"\"usage\"").is_some() {
                        let Ok(chunk) = serde_json::from_slice::<Chunk<'_>>(event) else {
                            return; // not ours to judge: passed on as it came
                        };
                        if let Some(usage) = chunk.usage {
                            seen.input_tokens = usage.prompt_tokens;
                            seen.output_tokens = usage.completion_tokens;
                        }
                        chunk.choices.iter().any(Choice::has_content)
                    } else {
                        has_content(event)
                    };
                    if content {
                        if seen.first_content.is_none() {
                            seen.first_content = Some(now);
                        } else if let (Some(last), Some(f)) = (seen.last_content, finisher) {
                            f.inter_token(now.duration_since(last).as_secs_f64());
                        }
                        seen.last_content = Some(now);
                    }
                });
            }
            None => {
                if self.json.len() + data.len() <= MAX_JSON_BYTES {
                    self.json.extend_from_slice(data);
                }
            }
        }
    }

    /// Ends the request's telemetry once; `error`: what went wrong, if anything.
    fn finish(&mut self, error: Option<&'static str>, aborted: bool) {
        if self.sse.is_none() && error.is_none() {
            if let Ok(body) = serde_json::from_slice::<Chunk<'_>>(&self.json) {
                if let Some(usage) = body.usage {
                    self.seen.input_tokens = usage.prompt_tokens;
                    self.seen.output_tokens = usage.completion_tokens;
                }
            }
        }
        if let Some(f) = self.finisher.take() {
            f.finish(self.seen, error, aborted);
        }
    }

    /// Whether nothing has come from the upstream for the idle timeout. When the timer fires
    /// but a frame came since it was set, it is moved to that frame's deadline (and polled, so
    /// that it wakes this task then).
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        while self.idle.as_mut().poll(cx).is_ready() {
            let deadline = self.last_frame + self.idle_timeout;
            if deadline <= Instant::now() {
                return true;
            }
            self.idle.as_mut().reset(deadline);
        }
        false
    }

    /// The last event of a stream the gateway had to end.
    fn error_event(message: &str, code: &str) -> Bytes {
        let error = serde_json::json!({
            "error": { "message": message, "type": "server_error", "param": null, "code": code }
        });
        Bytes::from(format!("data: {error}\n\ndata: [DONE]\n\n"))
    }
}

impl Body for Observed {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if let Some(tail) = this.tail.take() {
            return Poll::Ready(Some(Ok(Frame::data(tail))));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let now = Instant::now();
                this.last_frame = now;
                if let Some(data) = frame.data_ref() {
                    this.observe(data, now);
                }
                if this.inner.is_end_stream() {
                    // Its last frame: hyper may not poll a body of known length again.
                    this.ended = true;
                    let truncated = this.sse.as_ref().is_some_and(SseDecoder::has_pending);
                    this.finish(truncated.then_some("upstream_truncated"), false);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                tracing::warn!(error = %e, "upstream response broke off");
                this.ended = true;
                this.finish(Some("upstream_broken"), false);
                if this.sse.is_some() {
                    Poll::Ready(Some(Ok(Frame::data(Self::error_event(
                        "The upstream engine's response broke off.",
                        "upstream_broken",
                    )))))
                } else {
                    Poll::Ready(Some(Err(e)))
                }
            }
            Poll::Ready(None) => {
                this.ended = true;
                let truncated = this.sse.as_ref().is_some_and(SseDecoder::has_pending);
                this.finish(truncated.then_some("upstream_truncated"), false);
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.idle_expired(cx) {
                    this.ended = true;
                    this.finish(Some("upstream_timeout"), false);
                    let secs = this.idle_timeout.as_secs_f64();
                    // Ending the body drops the upstream response: its connection closes.
                    return Poll::Ready(Some(Ok(Frame::data(Self::error_event(
                        &format!("The upstream engine sent nothing for {secs} s; the gateway ended the response."),
                        "upstream_timeout",
                    )))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.tail.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        if self.sse.is_some() {
            SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        if self.finisher.is_some() {
            // The client went away before the end (hyper drops the body).
            self.finish(None, true);
        }
    }
}

/// The parts of a completion (chunk) the gateway reads.
#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(default, borrow)]
    choices: Vec<Choice<'a>>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(borrow)]
    delta: Option<Delta<'a>>,
    #[serde(borrow)]
    text: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow)]
    content: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    reasoning_content: Option<std::borrow::Cow<'a, str>>,
    tool_calls: Option<serde::de::IgnoredAny>,
}

impl Choice<'_> {
    fn has_content(&self) -> bool {
        let non_empty =
            |s: &Option<std::borrow::Cow<'_, str>>| s.as_ref().is_some_and(|s| !s.is_empty());
        non_empty(&self.text)
            || self.delta.as_ref().is_some_and(|d| {
                non_empty(&d.content) || non_empty(&d.reasoning_content) || d.tool_calls.is_some()
            })
    }
}

#[derive(Deserialize)]
struct Usage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

/// Whether a completion chunk carries output — a non-empty `content`, `reasoning_content` or
/// `text`, or `tool_calls` — decided by byte searches instead of a JSON parse per token. A key
/// inside a string value is escaped (`\"content\"`) and does not match.
fn has_content(event: &[u8]) -> bool {
    let non_empty_string =
        |key: &[u8]| values_after(event, key).any(|v| v.len() > 1 && v[0] == b'"' && v[1] != b'"');
    non_empty_string(b"\"content\"")
        || non_empty_string(b"\"reasoning_content\"")
        || non_empty_string(b"\"text\"")
        || values_after(event, b"\"tool_calls\"")
            .any(|v| v.first() == Some(&b'[') && v.get(1) != Some(&b']'))
}

/// For each occurrence of `key` followed by `:`, what follows the colon and any whitespace.
fn values_after<'a>(event: &'a [u8], key: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = event;
    std::iter::from_fn(move || loop {
        let at = find(rest, key)?;
        let after = &rest[at + key.len()..];
        rest = after;
        let after = trim_start(after);
        if let Some(value) = after.strip_prefix(b":") {
            return Some(trim_start(value));
        }
    })
}

fn trim_start(bytes: &[u8]) -> &[u8] {
    let skip = bytes.iter().take_while(|b| b.is_ascii_whitespace()).count();
    &bytes[skip..]
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

#[cfg(test)]
mod tests {
    use super::has_content;

    #[test]
    fn content_is_recognised_without_parsing() {
        let yes: &[&str] = &[
            r#"{"choices":[{"index":0,"delta":{"content":" tex"},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":"This"}}]}"#,
            r#"{"choices": [{"index": 0, "delta": {"content" : "spaced"}}]}"#,
            r#"{"choices":[{"index":0,"text":"completion text"}]}"#,
            r#"{"choices":[{"delta":{"reasoning_content":"thinking"}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{"}}]}}]}"#,
            // Tool-call arguments are output, even when they quote a "content" key.
            r#"{"choices":[{"delta":{"tool_calls":[{"function":{"arguments":"{\"content\":\"\"}"}}]}}]}"#,
        ];
        let no: &[&str] = &[
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":null}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[]}}]}"#,
            r#"{"error":{"message":"boom"}}"#,
        ];
        for e in yes {
            assert!(has_content(e.as_bytes()), "{e}");
        }
        for e in no {
            assert!(!has_content(e.as_bytes()), "{e}");
        }
    }
}
