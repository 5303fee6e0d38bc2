//! The OpenAI request and response bodies the simulator understands. Unknown request fields are
//! ignored, as OpenAI-compatible servers do (clients send many optional ones).

use serde::{Deserialize, Serialize};

use crate::api::error::ApiError;
use crate::tokens;

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(flatten)]
    pub sampling: Sampling,
}

#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
}

/// A message's content: a string, or an array of parts of which the text ones count.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(default)]
    pub text: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: Prompt,
    #[serde(flatten)]
    pub sampling: Sampling,
}

/// The legacy completions `prompt`: text or token ids, alone or in a one-element batch.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenBatches(Vec<Vec<u32>>),
}

/// Generation parameters shared by both endpoints.
#[derive(Debug, Default, Deserialize)]
pub struct Sampling {
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub max_tokens: Option<u64>,
    /// The chat API's newer name for `max_tokens`; wins when both are given.
    pub max_completion_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub n: Option<u32>,
    /// vLLM extension: generate exactly `max_tokens` (load generators use it).
    #[serde(default)]
    pub ignore_eos: bool,
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

impl Sampling {
    pub fn max_tokens(&self) -> Option<u64> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// Checks the parameters the simulator honours or must refuse.
    pub fn validate(&self) -> Result<(), ApiError> {
        if self.max_tokens() == Some(0) {
            return Err(ApiError::invalid(
                "max_tokens",
                "max_tokens must be at least 1.",
            ));
        }
        if self.n.is_some_and(|n| n != 1) {
            return Err(ApiError::invalid(
                "n",
                "Only n = 1 is supported by the simulator.",
            ));
        }
        if self.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
            return Err(ApiError::invalid(
                "temperature",
                "temperature must be between 0 and 2.",
            ));
        }
        if self.top_p.is_some_and(|p| !(p > 0.0 && p <= 1.0)) {
            return Err(ApiError::invalid(
                "top_p",
                "top_p must be greater than 0 and at most 1.",
            ));
        }
        if self.stream_options.is_some() && !self.stream {
            return Err(ApiError::invalid(
                "stream_options",
                "stream_options is only allowed when stream is true.",
            ));
        }
        Ok(())
    }

    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }
}

impl ChatRequest {
    /// The prompt as counted and hashed (see [`tokens`]).
    pub fn prompt_bytes(&self) -> Result<Vec<u8>, ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::invalid(
                "messages",
                "messages must contain at least one message.",
            ));
        }
        let mut texts: Vec<(&str, String)> = Vec::with_capacity(self.messages.len());
        for message in &self.messages {
            let text = match &message.content {
                None => String::new(),
                Some(Content::Text(t)) => t.clone(),
                Some(Content::Parts(parts)) => parts
                    .iter()
                    .filter_map(|p| p.text.as_deref())
                    .collect::<Vec<_>>()
                    .join("\n"),
            };
            texts.push((message.role.as_str(), text));
        }
        let rendered = tokens::render_chat(texts.iter().map(|(r, t)| (*r, t.as_str())));
        Ok(rendered.into_bytes())
    }
}

impl CompletionRequest {
    pub fn prompt_bytes(&self) -> Result<Vec<u8>, ApiError> {
        let one =
            "The simulator accepts one prompt per request; send a batch as separate requests.";
        let bytes = match &self.prompt {
            Prompt::Text(t) => t.clone().into_bytes(),
            Prompt::Texts(ts) if ts.len() == 1 => ts[0].clone().into_bytes(),
            Prompt::Tokens(ids) => tokens::token_ids_to_bytes(ids),
            Prompt::TokenBatches(b) if b.len() == 1 => tokens::token_ids_to_bytes(&b[0]),
            _ => return Err(ApiError::invalid("prompt", one)),
        };
        Ok(bytes)
    }
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
    pub prompt_tokens_details: PromptTokensDetails,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct PromptTokensDetails {
    pub cached_tokens: u32,
}

impl Usage {
    pub fn new(prompt: u32, completion: u32, cached: u32) -> Self {
        Self {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            prompt_tokens_details: PromptTokensDetails {
                cached_tokens: cached,
            },
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ChatCompletion<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
    pub choices: [ChatChoice; 1],
    pub usage: Usage,
    pub system_fingerprint: &'static str,
}

#[derive(Debug, Serialize)]
pub struct ChatChoice {
    pub index: u32,
    pub message: AssistantMessage,
    pub logprobs: Option<()>,
    pub finish_reason: &'static str,
}

#[derive(Debug, Serialize)]
pub struct AssistantMessage {
    pub role: &'static str,
    pub content: String,
}

#[derive(Debug, Serialize)]
pub struct TextCompletion<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
    pub choices: [TextChoice; 1],
    pub usage: Usage,
    pub system_fingerprint: &'static str,
}

#[derive(Debug, Serialize)]
pub struct TextChoice {
    pub index: u32,
    pub text: String,
    pub logprobs: Option<()>,
    pub finish_reason: &'static str,
}

#[derive(Debug, Serialize)]
pub struct ModelList<'a> {
    pub object: &'static str,
    pub data: [ModelCard<'a>; 1],
}

#[derive(Debug, Serialize)]
pub struct ModelCard<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
    /// vLLM's extension: the context length.
    pub max_model_len: u32,
}
