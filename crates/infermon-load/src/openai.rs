//! The slice of the OpenAI HTTP API the load generator speaks: request bodies for
//! `/v1/chat/completions` and `/v1/completions`, and the response, stream-chunk and error shapes
//! it reads back. Response types borrow from the body so parsing a stream chunk allocates
//! (almost) nothing; only the fields needed for measurement are declared, the rest is ignored.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// Which OpenAI endpoint to call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    /// `POST /v1/chat/completions` with one user message.
    Chat,
    /// `POST /v1/completions` with a raw prompt.
    Completions,
}

impl Api {
    /// Path below the `/v1` base.
    pub fn path(self) -> &'static str {
        match self {
            Api::Chat => "chat/completions",
            Api::Completions => "completions",
        }
    }
}

impl std::str::FromStr for Api {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "chat" => Ok(Api::Chat),
            "completions" => Ok(Api::Completions),
            other => Err(format!(
                "unknown API `{other}` (expected `chat` or `completions`)"
            )),
        }
    }
}

/// What one request asks for; serialised as the JSON body of either endpoint.
#[derive(Debug, Clone, Copy)]
pub struct RequestBody<'a> {
    pub api: Api,
    pub model: &'a str,
    pub prompt: &'a str,
    pub max_tokens: u64,
    pub stream: bool,
    pub temperature: Option<f64>,
    /// vLLM's extension to keep generating past end-of-sequence (exact output lengths).
    pub ignore_eos: bool,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Serialize)]
struct Wire<'a> {
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    messages: Option<[Message<'a>; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt: Option<&'a str>,
    max_tokens: u64,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    ignore_eos: bool,
}

impl RequestBody<'_> {
    pub fn to_json(self) -> Vec<u8> {
        let (messages, prompt) = match self.api {
            Api::Chat => (
                Some([Message {
                    role: "user",
                    content: self.prompt,
                }]),
                None,
            ),
            Api::Completions => (None, Some(self.prompt)),
        };
        let wire = Wire {
            model: self.model,
            messages,
            prompt,
            max_tokens: self.max_tokens,
            stream: self.stream,
            // Ask for the usage chunk so token counts come from the server, not our guess.
            stream_options: self.stream.then_some(StreamOptions {
                include_usage: true,
            }),
            temperature: self.temperature,
            ignore_eos: self.ignore_eos,
        };
        // Serialising plain strings and numbers into a Vec cannot fail.
        serde_json::to_vec(&wire).unwrap_or_default()
    }
}

/// A streamed chunk, a whole (non-streamed) response, or an error body: all three share these
/// optional fields, so one type reads them all.
#[derive(Debug, Deserialize)]
pub struct ResponseBody<'a> {
    #[serde(borrow, default)]
    pub id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub model: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub choices: Vec<Choice<'a>>,
    #[serde(default)]
    pub usage: Option<Usage>,
    #[serde(borrow, default)]
    pub error: Option<ApiError<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct Choice<'a> {
    /// Chat streaming.
    #[serde(borrow, default)]
    pub delta: Option<ChoiceMessage<'a>>,
    /// Chat, non-streaming.
    #[serde(borrow, default)]
    pub message: Option<ChoiceMessage<'a>>,
    /// Completions, streaming or not.
    #[serde(borrow, default)]
    pub text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub finish_reason: Option<Cow<'a, str>>,
}

/// The `delta`/`message` object of a chat choice.
#[derive(Debug, Deserialize)]
pub struct ChoiceMessage<'a> {
    #[serde(borrow, default)]
    pub content: Option<Cow<'a, str>>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
}

/// OpenAI's error object, `{"error": {"message": …, "type": …, "code": …}}`; only the type
/// is read (the message is free text, not a grouping key).
#[derive(Debug, Deserialize)]
pub struct ApiError<'a> {
    #[serde(borrow, default, rename = "type")]
    pub kind: Option<Cow<'a, str>>,
}

impl Choice<'_> {
    /// Whether this choice carries generated text (a role-only or empty delta does not count
    /// as a token: TTFT is measured to the first visible content, as OpenAI benchmarks do).
    pub fn has_content(&self) -> bool {
        let content = self
            .delta
            .as_ref()
            .or(self.message.as_ref())
            .and_then(|m| m.content.as_deref())
            .or(self.text.as_deref());
        content.is_some_and(|c| !c.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(api: Api, stream: bool) -> serde_json::Value {
        let b = RequestBody {
            api,
            model: "m",
            prompt: "hi \"there\"",
            max_tokens: 5,
            stream,
            temperature: None,
            ignore_eos: false,
        };
        serde_json::from_slice(&b.to_json()).unwrap()
    }

    #[test]
    fn chat_body_has_one_user_message_and_asks_for_usage_when_streaming() {
        assert_eq!(
            body(Api::Chat, true),
            serde_json::json!({
                "model": "m",
                "messages": [{"role": "user", "content": "hi \"there\""}],
                "max_tokens": 5,
                "stream": true,
                "stream_options": {"include_usage": true},
            })
        );
    }

    #[test]
    fn completions_body_has_a_prompt_and_no_stream_options_when_not_streaming() {
        assert_eq!(
            body(Api::Completions, false),
            serde_json::json!({"model": "m", "prompt": "hi \"there\"", "max_tokens": 5, "stream": false})
        );
    }

    #[test]
    fn reads_chat_chunks_completion_chunks_usage_and_errors() {
        let role: ResponseBody = serde_json::from_str(
            r#"{"id":"c1","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
        )
        .unwrap();
        assert_eq!(role.id.as_deref(), Some("c1"));
        assert!(!role.choices[0].has_content());

        let token: ResponseBody = serde_json::from_str(
            r#"{"id":"c1","choices":[{"index":0,"delta":{"content":" the"},"finish_reason":"length"}]}"#,
        )
        .unwrap();
        assert!(token.choices[0].has_content());
        assert_eq!(token.choices[0].finish_reason.as_deref(), Some("length"));

        let text: ResponseBody =
            serde_json::from_str(r#"{"choices":[{"index":0,"text":"a\nb"}]}"#).unwrap();
        assert!(text.choices[0].has_content());

        let usage: ResponseBody = serde_json::from_str(
            r#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}"#,
        )
        .unwrap();
        let u = usage.usage.unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (12, 3));

        let error: ResponseBody = serde_json::from_str(
            r#"{"error":{"message":"queue full","type":"overloaded_error","param":null,"code":503}}"#,
        )
        .unwrap();
        let e = error.error.unwrap();
        assert_eq!(e.kind.as_deref(), Some("overloaded_error"));
    }
}
