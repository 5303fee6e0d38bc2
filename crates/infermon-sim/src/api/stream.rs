//! Server-sent events for streaming responses, as OpenAI sends them: one `data: {chunk}` per
//! token, a last chunk carrying `finish_reason`, a usage chunk (empty `choices`) when the client
//! asked for `stream_options.include_usage`, then `data: [DONE]`.
//!
//! Chunks are assembled from a per-request prefix and the token text, not serialised per token:
//! the hot path is a few string pushes. Token texts come from [`tokens::FILLER`], plain ASCII
//! without quotes or backslashes, so they need no JSON escaping (a unit test checks it).

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use tokio::sync::mpsc;

use crate::api::error::ApiError;
use crate::api::types::Usage;
use crate::engine::{Event, FinishReason};
use crate::tokens;

/// Which API's chunk shape to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Chat,
    Completion,
}

impl Api {
    /// The request field that holds the prompt (named in errors about it).
    pub fn prompt_param(self) -> &'static str {
        match self {
            Api::Chat => "messages",
            Api::Completion => "prompt",
        }
    }

    pub fn chunk_object(self) -> &'static str {
        match self {
            Api::Chat => "chat.completion.chunk",
            Api::Completion => "text_completion",
        }
    }
}

/// Writes one request's SSE chunks.
pub struct ChunkWriter {
    api: Api,
    /// `data: {"id":…,"object":…,"created":…,"model":…,"choices":[{"index":0,`
    choice_head: String,
    /// `data: {"id":…,"object":…,"created":…,"model":…,"choices":[],"usage":`
    usage_head: String,
}

impl ChunkWriter {
    pub fn new(api: Api, id: &str, created: u64, model: &str) -> Self {
        let model = serde_json::to_string(model).unwrap_or_else(|_| "\"\"".to_owned());
        let id = serde_json::to_string(id).unwrap_or_else(|_| "\"\"".to_owned());
        let common = format!(
            "data: {{\"id\":{id},\"object\":\"{}\",\"created\":{created},\"model\":{model},\"choices\":",
            api.chunk_object()
        );
        Self {
            api,
            choice_head: format!("{common}[{{\"index\":0,"),
            usage_head: format!("{common}[],\"usage\":"),
        }
    }

    pub fn token(&self, out: &mut String, index: u32) {
        let text = tokens::filler_token(index);
        out.push_str(&self.choice_head);
        match (self.api, index) {
            (Api::Chat, 0) => {
                out.push_str("\"delta\":{\"role\":\"assistant\",\"content\":\"");
            }
            (Api::Chat, _) => out.push_str("\"delta\":{\"content\":\""),
            (Api::Completion, _) => out.push_str("\"text\":\""),
        }
        out.push_str(text);
        match self.api {
            Api::Chat => out.push_str("\"},"),
            Api::Completion => out.push_str("\","),
        }
        out.push_str("\"logprobs\":null,\"finish_reason\":null}]}\n\n");
    }

    pub fn finish(&self, out: &mut String, reason: FinishReason) {
        out.push_str(&self.choice_head);
        match self.api {
            Api::Chat => out.push_str("\"delta\":{},"),
            Api::Completion => out.push_str("\"text\":\"\","),
        }
        out.push_str("\"logprobs\":null,\"finish_reason\":\"");
        out.push_str(reason.as_str());
        out.push_str("\"}]}\n\n");
    }

    pub fn usage(&self, out: &mut String, usage: &Usage) {
        out.push_str(&self.usage_head);
        out.push_str(&serde_json::to_string(usage).unwrap_or_else(|_| "null".to_owned()));
        out.push_str("}\n\n");
    }

    pub fn error(out: &mut String, error: &ApiError) {
        out.push_str("data: ");
        out.push_str(&serde_json::to_string(&error.body()).unwrap_or_default());
        out.push_str("\n\n");
    }

    pub fn done(out: &mut String) {
        out.push_str("data: [DONE]\n\n");
    }
}

/// Everything the stream needs after the handler returned.
pub struct StreamState {
    pub events: mpsc::UnboundedReceiver<Event>,
    pub writer: ChunkWriter,
    pub include_usage: bool,
    pub prompt_tokens: u32,
    pub finished: bool,
}

/// Most events folded into one body chunk: under load several tokens of a request can be
/// waiting, and one write is cheaper than many.
const MAX_EVENTS_PER_CHUNK: usize = 64;

impl StreamState {
    /// The response body. Dropping it (client gone) drops the event receiver, which is how the
    /// engine learns to abort the sequence.
    pub fn into_body(self) -> Body {
        let stream = futures::stream::unfold(self, |mut state| async move {
            if state.finished {
                return None;
            }
            let first = state.events.recv().await;
            let mut out = String::with_capacity(256);
            state.write(first, &mut out);
            let mut folded = 1;
            while !state.finished && folded < MAX_EVENTS_PER_CHUNK {
                match state.events.try_recv() {
                    Ok(event) => state.write(Some(event), &mut out),
                    Err(_) => break,
                }
                folded += 1;
            }
            Some((Ok::<_, Infallible>(Bytes::from(out)), state))
        });
        Body::from_stream(stream)
    }

    fn write(&mut self, event: Option<Event>, out: &mut String) {
        match event {
            Some(Event::Token {
                index,
                cached_tokens,
                finish,
            }) => {
                self.writer.token(out, index);
                if let Some(reason) = finish {
                    self.writer.finish(out, reason);
                    if self.include_usage {
                        let usage = Usage::new(self.prompt_tokens, index + 1, cached_tokens);
                        self.writer.usage(out, &usage);
                    }
                    ChunkWriter::done(out);
                    self.finished = true;
                }
            }
            Some(Event::Failed(failure)) => {
                ChunkWriter::error(out, &ApiError::engine_failure(failure));
                ChunkWriter::done(out);
                self.finished = true;
            }
            None => {
                // The engine dropped the request without a word: only if it stopped abruptly.
                ChunkWriter::error(out, &ApiError::engine_stopped());
                ChunkWriter::done(out);
                self.finished = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filler_needs_no_json_escaping() {
        assert!(!tokens::FILLER.contains(['"', '\\']));
        assert!(tokens::FILLER.bytes().all(|b| (0x20..0x7f).contains(&b)));
    }

    #[test]
    fn every_chunk_is_valid_json_of_the_openai_shape() {
        for api in [Api::Chat, Api::Completion] {
            let writer = ChunkWriter::new(api, "id-1", 42, "model \"x\"");
            let mut out = String::new();
            writer.token(&mut out, 0);
            writer.token(&mut out, 1);
            writer.finish(&mut out, FinishReason::Length);
            writer.usage(&mut out, &Usage::new(10, 2, 0));
            let events: Vec<&str> = out.split("\n\n").filter(|e| !e.is_empty()).collect();
            assert_eq!(events.len(), 4);
            for event in &events {
                let json: serde_json::Value =
                    serde_json::from_str(event.strip_prefix("data: ").unwrap()).unwrap();
                assert_eq!(json["object"], api.chunk_object());
                assert_eq!(json["model"], "model \"x\"");
            }
            let first: serde_json::Value =
                serde_json::from_str(events[0].strip_prefix("data: ").unwrap()).unwrap();
            match api {
                Api::Chat => {
                    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
                    assert_eq!(first["choices"][0]["delta"]["content"], "This");
                }
                Api::Completion => assert_eq!(first["choices"][0]["text"], "This"),
            }
            let last: serde_json::Value =
                serde_json::from_str(events[2].strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(last["choices"][0]["finish_reason"], "length");
            let usage: serde_json::Value =
                serde_json::from_str(events[3].strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(usage["choices"].as_array().unwrap().len(), 0);
            assert_eq!(usage["usage"]["total_tokens"], 12);
        }
    }
}
