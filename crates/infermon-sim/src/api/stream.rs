//! Response bodies: server-sent events as OpenAI sends them (one `data: {chunk}` per token, a
//! chunk carrying each choice's `finish_reason`, a usage chunk with empty `choices` when the
//! client asked for `stream_options.include_usage`, then `data: [DONE]`), and the choices of a
//! non-streaming response.
//!
//! Chunks are assembled from a per-request prefix and the token text, not serialised per token:
//! the hot path is a few string pushes. Filler tokens
//! ([`tokens::FILLER`](crate::tokens::FILLER), plain ASCII without quotes or backslashes) need
//! no JSON escaping (a unit test checks it); other outputs (JSON documents, tool arguments) are
//! escaped.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use futures::stream::{SelectAll, StreamExt};
use futures::FutureExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::api::error::{ApiError, SimErrors as _};
use crate::api::output::{self, Script};
use crate::api::types::{ToolCall, Usage};
use crate::engine::{Event, FinishReason};

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

/// One choice of a response: one engine sequence.
#[derive(Debug, Clone)]
pub struct ChoiceSpec {
    pub index: u32,
    /// Which of the request's prompts it continues.
    pub prompt: usize,
    pub script: Script,
    /// Text prepended to the output (`echo`: the prompt, or chat's last assistant message).
    pub echo: Option<String>,
}

/// What every choice of a response carries besides its text.
#[derive(Debug, Clone)]
pub struct Shape {
    pub api: Api,
    /// Log-probabilities with this many alternatives per token.
    pub logprobs: Option<u32>,
    /// A forced tool call and its id: the output is its arguments.
    pub tool: Option<(ToolCall, String)>,
}

impl Shape {
    /// The `finish_reason` as the API reports it: a forced (not named) tool call that ended on
    /// its own is `tool_calls` (vLLM's `resolve_finish_reason`,
    /// vllm/entrypoints/serve/utils/tool_calls_utils.py, vLLM 0.33.0).
    fn finish_reason(&self, reason: FinishReason) -> &'static str {
        match (&self.tool, reason) {
            (Some((tool, _)), FinishReason::Stop) if !tool.named => "tool_calls",
            _ => reason.as_str(),
        }
    }

    /// One choice of a non-streaming response, `tokens` output tokens long.
    pub fn complete_choice(&self, choice: &ChoiceSpec, tokens: u32, reason: FinishReason) -> Value {
        let text = choice.script.text(tokens);
        let logprobs = self.logprobs.map(|top| match self.api {
            Api::Chat => json!({
                "content": (0..tokens)
                    .filter(|i| !choice.script.token(*i).is_empty())
                    .map(|i| chat_logprob(&choice.script, i, top))
                    .collect::<Vec<_>>()
            }),
            Api::Completion => completion_logprobs(choice, 0..tokens, top),
        });
        let mut rendered = match (self.api, &self.tool) {
            (Api::Chat, Some((tool, id))) => json!({
                "message": {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [{
                        "id": id,
                        "type": "function",
                        "function": {"name": tool.name, "arguments": text},
                    }],
                },
            }),
            (Api::Chat, None) => {
                let echoed = choice.echo.as_deref().unwrap_or("");
                json!({"message": {"role": "assistant", "content": format!("{echoed}{text}")}})
            }
            (Api::Completion, _) => {
                let echoed = choice.echo.as_deref().unwrap_or("");
                json!({"text": format!("{echoed}{text}")})
            }
        };
        rendered["index"] = json!(choice.index);
        rendered["logprobs"] = logprobs.unwrap_or(Value::Null);
        rendered["finish_reason"] = json!(self.finish_reason(reason));
        rendered["stop_reason"] = choice.script.stop_reason.clone().unwrap_or(Value::Null);
        rendered
    }
}

/// A chat `logprobs.content` entry for output token `index`.
fn chat_logprob(script: &Script, index: u32, top: u32) -> Value {
    let token = script.token(index);
    json!({
        "token": token,
        "logprob": output::logprob(index, 0),
        "bytes": token.as_bytes(),
        "top_logprobs": (0..top).map(|rank| {
            let alt = if rank == 0 { token } else { output::alternative(index, rank) };
            json!({"token": alt, "logprob": output::logprob(index, rank), "bytes": alt.as_bytes()})
        }).collect::<Vec<_>>(),
    })
}

/// A completions `logprobs` object for output tokens `range` of `choice`.
fn completion_logprobs(choice: &ChoiceSpec, range: std::ops::Range<u32>, top: u32) -> Value {
    let echo = choice.echo.as_deref().map_or(0, str::len);
    let mut offsets = Vec::new();
    let mut values = Vec::new();
    let mut texts = Vec::new();
    let mut tops = Vec::new();
    for i in range {
        let token = choice.script.token(i);
        offsets.push(echo + choice.script.text(i).len());
        values.push(output::logprob(i, 0));
        texts.push(token);
        let mut alternatives = serde_json::Map::new();
        for rank in 0..top.max(1) {
            let alt = if rank == 0 {
                token
            } else {
                output::alternative(i, rank)
            };
            alternatives
                .entry(alt.to_owned())
                .or_insert(json!(output::logprob(i, rank)));
        }
        tops.push(Value::Object(alternatives));
    }
    json!({"text_offset": offsets, "token_logprobs": values, "tokens": texts, "top_logprobs": tops})
}

/// Writes one response's SSE chunks.
pub struct ChunkWriter {
    shape: Shape,
    /// `data: {"id":…,"object":…,"created":…,"model":…,"choices":[{"index":`
    choice_head: String,
    /// `data: {"id":…,"object":…,"created":…,"model":…,"choices":[],"usage":`
    usage_head: String,
}

/// Appends `text` as a JSON string.
fn push_json_str(out: &mut String, text: &str, escape: bool) {
    if escape {
        out.push_str(&serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned()));
    } else {
        out.push('"');
        out.push_str(text);
        out.push('"');
    }
}

impl ChunkWriter {
    pub fn new(shape: Shape, id: &str, created: u64, model: &str) -> Self {
        let model = serde_json::to_string(model).unwrap_or_else(|_| "\"\"".to_owned());
        let id = serde_json::to_string(id).unwrap_or_else(|_| "\"\"".to_owned());
        let common = format!(
            "data: {{\"id\":{id},\"object\":\"{}\",\"created\":{created},\"model\":{model},\"choices\":",
            shape.api.chunk_object()
        );
        Self {
            shape,
            choice_head: format!("{common}[{{\"index\":"),
            usage_head: format!("{common}[],\"usage\":"),
        }
    }

    pub fn token(&self, out: &mut String, choice: &ChoiceSpec, index: u32) {
        let script = &choice.script;
        let mut text = script.token(index);
        let echoed;
        if index == 0 {
            if let Some(prompt) = &choice.echo {
                echoed = format!("{prompt}{text}");
                text = &echoed;
            }
        }
        // Tokens past a stop string carry no text: like vLLM, send no chunk for them.
        if text.is_empty() && index > 0 {
            return;
        }
        let escape = script.needs_escaping() || choice.echo.is_some();
        out.push_str(&self.choice_head);
        out.push_str(itoa(choice.index).as_str());
        out.push(',');
        match (self.shape.api, &self.shape.tool, index) {
            (Api::Chat, Some((tool, id)), 0) => {
                // vLLM's first named-tool delta: id, type, name and the first arguments text
                // (`extract_named_tool_call_streaming`, vllm/tool_parsers/streaming.py, 0.33.0).
                out.push_str("\"delta\":{\"role\":\"assistant\",\"tool_calls\":[{\"id\":");
                push_json_str(out, id, true);
                out.push_str(",\"type\":\"function\",\"index\":0,\"function\":{\"name\":");
                push_json_str(out, &tool.name, true);
                out.push_str(",\"arguments\":");
                push_json_str(out, text, escape);
                out.push_str("}}]},");
            }
            (Api::Chat, Some(_), _) => {
                out.push_str(
                    "\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":",
                );
                push_json_str(out, text, escape);
                out.push_str("}}]},");
            }
            (Api::Chat, None, 0) => {
                out.push_str("\"delta\":{\"role\":\"assistant\",\"content\":");
                push_json_str(out, text, escape);
                out.push_str("},");
            }
            (Api::Chat, None, _) => {
                out.push_str("\"delta\":{\"content\":");
                push_json_str(out, text, escape);
                out.push_str("},");
            }
            (Api::Completion, _, _) => {
                out.push_str("\"text\":");
                push_json_str(out, text, escape);
                out.push(',');
            }
        }
        match self.shape.logprobs {
            None => out.push_str("\"logprobs\":null"),
            Some(top) => {
                let value = match self.shape.api {
                    Api::Chat => json!({"content": [chat_logprob(script, index, top)]}),
                    Api::Completion => completion_logprobs(choice, index..index + 1, top),
                };
                out.push_str("\"logprobs\":");
                out.push_str(&value.to_string());
            }
        }
        out.push_str(",\"finish_reason\":null}]}\n\n");
    }

    pub fn finish(&self, out: &mut String, choice: &ChoiceSpec, reason: FinishReason) {
        out.push_str(&self.choice_head);
        out.push_str(itoa(choice.index).as_str());
        match self.shape.api {
            Api::Chat => out.push_str(",\"delta\":{},"),
            Api::Completion => out.push_str(",\"text\":\"\","),
        }
        out.push_str("\"logprobs\":null,\"finish_reason\":\"");
        out.push_str(self.shape.finish_reason(reason));
        out.push_str("\",\"stop_reason\":");
        match &choice.script.stop_reason {
            None => out.push_str("null"),
            Some(reason) => out.push_str(&reason.to_string()),
        }
        out.push_str("}]}\n\n");
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

fn itoa(n: u32) -> String {
    n.to_string()
}

/// The events of every choice's sequence, tagged with the choice's position.
pub type Merged = SelectAll<futures::stream::BoxStream<'static, (usize, Event)>>;

pub fn merge(receivers: Vec<mpsc::UnboundedReceiver<Event>>) -> Merged {
    futures::stream::select_all(receivers.into_iter().enumerate().map(|(k, r)| {
        UnboundedReceiverStream::new(r)
            .map(move |event| (k, event))
            .boxed()
    }))
}

/// Everything the stream needs after the handler returned.
pub struct StreamState {
    events: Merged,
    writer: ChunkWriter,
    choices: Vec<ChoiceSpec>,
    /// Output tokens of each choice once it finished.
    finished: Vec<Option<u32>>,
    cached_tokens: u32,
    include_usage: bool,
    prompt_tokens: u32,
    done: bool,
}

/// Most events folded into one body chunk: under load several tokens of a request can be
/// waiting, and one write is cheaper than many.
const MAX_EVENTS_PER_CHUNK: usize = 64;

impl StreamState {
    pub fn new(
        events: Merged,
        writer: ChunkWriter,
        choices: Vec<ChoiceSpec>,
        include_usage: bool,
        prompt_tokens: u32,
    ) -> Self {
        Self {
            events,
            writer,
            finished: vec![None; choices.len()],
            choices,
            cached_tokens: 0,
            include_usage,
            prompt_tokens,
            done: false,
        }
    }

    /// The response body. Dropping it (client gone) drops the event receivers, which is how
    /// the engine learns to abort the sequences.
    pub fn into_body(self) -> Body {
        let stream = futures::stream::unfold(self, |mut state| async move {
            if state.done {
                return None;
            }
            let first = state.events.next().await;
            let mut out = String::with_capacity(256);
            state.write(first, &mut out);
            let mut folded = 1;
            while !state.done && folded < MAX_EVENTS_PER_CHUNK {
                match state.events.next().now_or_never() {
                    Some(event) => state.write(event, &mut out),
                    None => break,
                }
                folded += 1;
            }
            Some((Ok::<_, Infallible>(Bytes::from(out)), state))
        });
        Body::from_stream(stream)
    }

    fn write(&mut self, event: Option<(usize, Event)>, out: &mut String) {
        match event {
            Some((
                k,
                Event::Token {
                    index,
                    cached_tokens,
                    finish,
                },
            )) => {
                let choice = &self.choices[k];
                self.writer.token(out, choice, index);
                if let Some(reason) = finish {
                    self.writer.finish(out, choice, reason);
                    self.finished[k] = Some(index + 1);
                    self.cached_tokens += cached_tokens;
                    if self.finished.iter().all(Option::is_some) {
                        if self.include_usage {
                            let completion = self.finished.iter().flatten().sum();
                            let usage =
                                Usage::new(self.prompt_tokens, completion, self.cached_tokens);
                            self.writer.usage(out, &usage);
                        }
                        ChunkWriter::done(out);
                        self.done = true;
                    }
                }
            }
            Some((_, Event::Failed(failure))) => {
                ChunkWriter::error(out, &ApiError::engine_failure(failure));
                ChunkWriter::done(out);
                self.done = true;
            }
            None => {
                // The engine dropped the request without a word: only if it stopped abruptly.
                ChunkWriter::error(out, &ApiError::engine_stopped());
                ChunkWriter::done(out);
                self.done = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::output::Tokens;
    use crate::tokens;

    fn filler_choice(index: u32) -> ChoiceSpec {
        ChoiceSpec {
            index,
            prompt: 0,
            script: Script {
                tokens: Tokens::Filler,
                output_tokens: 2,
                finish_reason: FinishReason::Length,
                stop_reason: None,
            },
            echo: None,
        }
    }

    fn shape(api: Api) -> Shape {
        Shape {
            api,
            logprobs: None,
            tool: None,
        }
    }

    #[test]
    fn filler_needs_no_json_escaping() {
        assert!(!tokens::FILLER.contains(['"', '\\']));
        assert!(tokens::FILLER.bytes().all(|b| (0x20..0x7f).contains(&b)));
    }

    #[test]
    fn every_chunk_is_valid_json_of_the_openai_shape() {
        for api in [Api::Chat, Api::Completion] {
            let writer = ChunkWriter::new(shape(api), "id-1", 42, "model \"x\"");
            let choice = filler_choice(3);
            let mut out = String::new();
            writer.token(&mut out, &choice, 0);
            writer.token(&mut out, &choice, 1);
            writer.finish(&mut out, &choice, FinishReason::Length);
            writer.usage(&mut out, &Usage::new(10, 2, 0));
            let events: Vec<&str> = out.split("\n\n").filter(|e| !e.is_empty()).collect();
            assert_eq!(events.len(), 4);
            for event in &events {
                let json: Value =
                    serde_json::from_str(event.strip_prefix("data: ").unwrap()).unwrap();
                assert_eq!(json["object"], api.chunk_object());
                assert_eq!(json["model"], "model \"x\"");
            }
            let first: Value =
                serde_json::from_str(events[0].strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(first["choices"][0]["index"], 3);
            match api {
                Api::Chat => {
                    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
                    assert_eq!(first["choices"][0]["delta"]["content"], "This");
                }
                Api::Completion => assert_eq!(first["choices"][0]["text"], "This"),
            }
            let last: Value =
                serde_json::from_str(events[2].strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(last["choices"][0]["finish_reason"], "length");
            let usage: Value =
                serde_json::from_str(events[3].strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(usage["choices"].as_array().unwrap().len(), 0);
            assert_eq!(usage["usage"]["total_tokens"], 12);
        }
    }

    #[test]
    fn escaped_outputs_and_logprobs_stay_valid_json() {
        let choice = ChoiceSpec {
            echo: Some("say \"hi\"\n".to_owned()),
            script: Script {
                tokens: Tokens::Pieces(vec!["{\"a\"".to_owned(), ": \\1}".to_owned()]),
                output_tokens: 2,
                finish_reason: FinishReason::Stop,
                stop_reason: Some(json!("x")),
            },
            ..filler_choice(0)
        };
        for api in [Api::Chat, Api::Completion] {
            let writer = ChunkWriter::new(
                Shape {
                    api,
                    logprobs: Some(2),
                    tool: None,
                },
                "id",
                1,
                "m",
            );
            let mut out = String::new();
            writer.token(&mut out, &choice, 0);
            writer.token(&mut out, &choice, 1);
            writer.finish(&mut out, &choice, FinishReason::Stop);
            for event in out.split("\n\n").filter(|e| !e.is_empty()) {
                let json: Value =
                    serde_json::from_str(event.strip_prefix("data: ").unwrap()).unwrap();
                assert!(json["choices"][0].is_object(), "{json}");
            }
        }
    }
}
