//! The OpenAI request and response bodies the simulator understands. Unknown request fields are
//! ignored, as OpenAI-compatible servers do (clients send many optional ones).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::error::ApiError;
use crate::api::output;
use crate::tokens;

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    /// Chat: return log-probabilities of the output tokens.
    #[serde(default)]
    pub logprobs: bool,
    /// Chat: how many alternatives per token (needs `logprobs`).
    pub top_logprobs: Option<i64>,
    pub tools: Option<Vec<Value>>,
    pub tool_choice: Option<Value>,
    /// vLLM extension: prepend the last message to the output when it is the assistant's.
    #[serde(default)]
    pub echo: bool,
    #[serde(flatten)]
    pub sampling: Sampling,
}

#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
}

impl ChatMessage {
    /// The message's text: its string content, or its text parts joined by newlines.
    pub fn text(&self) -> String {
        match &self.content {
            None => String::new(),
            Some(Content::Text(t)) => t.clone(),
            Some(Content::Parts(parts)) => parts
                .iter()
                .filter_map(|p| p.text.as_deref())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
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
    /// Completions: log-probabilities with this many alternatives per token.
    pub logprobs: Option<i64>,
    /// Completions: prepend the prompt to the output.
    #[serde(default)]
    pub echo: bool,
    #[serde(flatten)]
    pub sampling: Sampling,
}

/// The legacy completions `prompt`: text or token ids, one or a batch.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenBatches(Vec<Vec<u32>>),
}

/// `stop`: one string or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
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
    pub n: Option<i64>,
    pub stop: Option<Stop>,
    /// vLLM extension: end the output at any of these token ids.
    pub stop_token_ids: Option<Vec<u32>>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub response_format: Option<Value>,
    /// vLLM extension: generate exactly `max_tokens` (load generators use it).
    #[serde(default)]
    pub ignore_eos: bool,
    /// vLLM extension: disaggregated prefill/decode (see `disagg`).
    pub kv_transfer_params: Option<crate::disagg::KvTransferParams>,
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// vLLM's `VLLM_MAX_N_SEQUENCES` default (vllm/envs.py, vLLM 0.33.0).
const MAX_N: i64 = 16384;
/// vLLM's default `max_logprobs` (vllm/config/model.py, vLLM 0.33.0).
pub const MAX_LOGPROBS: i64 = 20;

/// What the output must look like (`response_format`).
#[derive(Debug, Clone, PartialEq)]
pub enum Format {
    Text,
    /// A JSON document: the rendered sample.
    Json(String),
}

impl Sampling {
    pub fn max_tokens(&self) -> Option<u64> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    pub fn n(&self) -> u32 {
        self.n.map_or(1, |n| n as u32)
    }

    pub fn stop(&self) -> Vec<String> {
        match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        }
    }

    /// Checks the parameters as vLLM's `SamplingParams._verify_args` and request validators
    /// do (vllm/sampling_params.py, vllm/entrypoints/openai/chat_completion/protocol.py,
    /// vLLM 0.33.0), with their messages.
    pub fn validate(&self) -> Result<(), ApiError> {
        if let Some(n) = self.n {
            if n < 1 {
                return Err(ApiError::invalid(
                    "n",
                    format!("n must be at least 1, got {n}."),
                ));
            }
            if n > MAX_N {
                return Err(ApiError::invalid(
                    "n",
                    format!("n must be at most {MAX_N}, got {n}."),
                ));
            }
        }
        if let Some(max) = self.max_tokens().filter(|m| *m < 1) {
            return Err(ApiError::invalid(
                "max_tokens",
                format!("max_tokens must be at least 1, got {max}."),
            ));
        }
        if let Some(t) = self.temperature.filter(|t| !(0.0..=2.0).contains(t)) {
            return Err(ApiError::invalid(
                "temperature",
                format!("temperature must be in [0, 2], got {t}."),
            ));
        }
        if let Some(p) = self.top_p.filter(|p| !(*p > 0.0 && *p <= 1.0)) {
            return Err(ApiError::invalid(
                "top_p",
                format!("top_p must be in (0, 1], got {p}."),
            ));
        }
        for (param, value) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if let Some(v) = value.filter(|v| !(-2.0..=2.0).contains(v)) {
                return Err(ApiError::invalid(
                    param,
                    format!("{param} must be in [-2, 2], got {v}."),
                ));
            }
        }
        if self.stop().iter().any(String::is_empty) {
            return Err(ApiError::invalid(
                "stop",
                "stop cannot contain an empty string.",
            ));
        }
        if self.stream_options.is_some() && !self.stream {
            return Err(ApiError::invalid(
                "stream_options",
                "Stream options can only be defined when `stream=True`.",
            ));
        }
        self.format()?;
        Ok(())
    }

    /// The `response_format` asked for.
    pub fn format(&self) -> Result<Format, ApiError> {
        let Some(format) = &self.response_format else {
            return Ok(Format::Text);
        };
        match format.get("type").and_then(Value::as_str) {
            Some("text") => Ok(Format::Text),
            Some("json_object") => Ok(Format::Json(output::json_object_document())),
            Some("json_schema") => {
                // vLLM's `validate_response_format` wording.
                let Some(spec) = format.get("json_schema").filter(|s| !s.is_null()) else {
                    return Err(ApiError::invalid(
                        "response_format",
                        "When response_format type is 'json_schema', the 'json_schema' field \
                         must be provided.",
                    ));
                };
                // OpenAI's shape nests the schema under `schema`; vLLM also accepts it bare.
                let schema = spec.get("schema").unwrap_or(spec);
                Ok(Format::Json(output::document_for_schema(schema)))
            }
            Some("structural_tag") => Err(ApiError::invalid(
                "response_format",
                "response_format type 'structural_tag' is not supported by the simulator.",
            )),
            other => Err(ApiError::invalid(
                "response_format",
                format!(
                    "Invalid response_format type {}: use 'text', 'json_object' or \
                     'json_schema'.",
                    other.map_or_else(|| "(missing)".to_owned(), |t| format!("'{t}'"))
                ),
            )),
        }
    }

    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }
}

/// A forced function call (`tool_choice` `"required"` or a named function).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub name: String,
    /// The arguments document (JSON of the function's `parameters` schema).
    pub arguments: String,
    /// Named by the request (OpenAI then reports `finish_reason` `stop`, not `tool_calls`).
    pub named: bool,
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
        let texts: Vec<(&str, String)> = self
            .messages
            .iter()
            .map(|m| (m.role.as_str(), m.text()))
            .collect();
        let rendered = tokens::render_chat(texts.iter().map(|(r, t)| (*r, t.as_str())));
        Ok(rendered.into_bytes())
    }

    /// With `echo`, the text the answer starts with: the last message's, when it is the
    /// assistant's — the role of the message being generated (vLLM's chat `echo`,
    /// vllm/entrypoints/openai/chat_completion/serving.py, vLLM 0.33.0).
    pub fn echo_text(&self) -> Option<String> {
        let last = self.messages.last()?;
        (self.echo && last.role == "assistant")
            .then(|| last.text())
            .filter(|t| !t.is_empty())
    }

    /// `top_logprobs` when log-probabilities are asked for (vLLM's `check_logprobs`).
    pub fn logprobs(&self) -> Result<Option<u32>, ApiError> {
        let top = self.top_logprobs.unwrap_or(0);
        if top < 0 && top != -1 {
            return Err(ApiError::invalid(
                "top_logprobs",
                "`top_logprobs` must be a positive value or -1.",
            ));
        }
        if top != 0 && !self.logprobs {
            return Err(ApiError::invalid(
                "top_logprobs",
                "when using `top_logprobs`, `logprobs` must be set to true.",
            ));
        }
        if !self.logprobs {
            return Ok(None);
        }
        check_logprobs_limit("top_logprobs", top).map(Some)
    }

    /// The forced tool call, if `tool_choice` forces one (vLLM's `check_tool_usage`). Like a
    /// vLLM server started without `--enable-auto-tool-choice`, `"auto"` and `"none"` answer
    /// with text.
    pub fn tool_call(&self) -> Result<Option<ToolCall>, ApiError> {
        if self.tools.as_ref().is_some_and(Vec::is_empty) {
            return Err(ApiError::invalid(
                "tools",
                "`tools` must not be an empty array. Either provide at least one tool or omit \
                 the field entirely.",
            ));
        }
        let choice = match &self.tool_choice {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) if s == "none" => return Ok(None),
            Some(choice) => choice,
        };
        let Some(tools) = &self.tools else {
            return Err(ApiError::invalid(
                "tool_choice",
                "When using `tool_choice`, `tools` must be set.",
            ));
        };
        let function_of = |tool: &Value| tool.get("function").cloned().unwrap_or(Value::Null);
        let call = |function: &Value, named: bool| -> Result<ToolCall, ApiError> {
            let name = function
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::invalid("tools", "Every tool needs `function.name`."))?;
            let parameters = function.get("parameters").cloned().unwrap_or(Value::Null);
            let arguments = if parameters.is_null() {
                "{}".to_owned()
            } else {
                output::document_for_schema(&parameters)
            };
            Ok(ToolCall {
                name: name.to_owned(),
                arguments,
                named,
            })
        };
        let usage =
            "Correct usage: `{\"type\": \"function\", \"function\": {\"name\": \"my_function\"}}`";
        match choice {
            Value::String(s) if s == "auto" => Ok(None),
            Value::String(s) if s == "required" => call(&function_of(&tools[0]), false).map(Some),
            Value::Object(_) => {
                let Some(function) = choice.get("function").filter(|f| f.is_object()) else {
                    return Err(ApiError::invalid(
                        "tool_choice.function",
                        format!("Invalid value for `function` in `tool_choice`! {usage}"),
                    ));
                };
                let Some(name) = function.get("name").and_then(Value::as_str) else {
                    return Err(ApiError::invalid(
                        "tool_choice.function.name",
                        format!("Expected field `name` in `function` in `tool_choice`! {usage}"),
                    ));
                };
                let tool = tools
                    .iter()
                    .map(function_of)
                    .find(|f| f.get("name").and_then(Value::as_str) == Some(name))
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "tool_choice",
                            "The tool specified in `tool_choice` does not match any of the \
                             specified `tools`",
                        )
                    })?;
                call(&tool, true).map(Some)
            }
            other => Err(ApiError::invalid(
                "tool_choice",
                format!(
                    "Invalid value for `tool_choice`: {other}! Only named tools, \"none\", \
                     \"auto\" or \"required\" are supported."
                ),
            )),
        }
    }
}

/// vLLM's `_validate_logprobs` limit (vllm/sampling_params.py, vLLM 0.33.0); -1 means all.
fn check_logprobs_limit(param: &'static str, requested: i64) -> Result<u32, ApiError> {
    if requested > MAX_LOGPROBS || requested == -1 {
        let shown = if requested == -1 {
            "the whole vocabulary".to_owned()
        } else {
            requested.to_string()
        };
        return Err(ApiError::invalid(
            param,
            format!(
                "Requested sample logprobs of {shown}, which is greater than max allowed: \
                 {MAX_LOGPROBS}"
            ),
        ));
    }
    Ok(requested as u32)
}

impl CompletionRequest {
    /// Every prompt of the request, as counted and hashed, with its text (for `echo`).
    pub fn prompts(&self) -> Result<Vec<(Vec<u8>, String)>, ApiError> {
        let text = |t: &String| (t.clone().into_bytes(), t.clone());
        let ids = |ids: &Vec<u32>| (tokens::token_ids_to_bytes(ids), tokens::ids_to_text(ids));
        let prompts: Vec<(Vec<u8>, String)> = match &self.prompt {
            Prompt::Text(t) => vec![text(t)],
            Prompt::Texts(ts) => ts.iter().map(text).collect(),
            Prompt::Tokens(t) => vec![ids(t)],
            Prompt::TokenBatches(b) => b.iter().map(ids).collect(),
        };
        if prompts.is_empty() {
            return Err(ApiError::invalid("prompt", "prompt must not be empty."));
        }
        Ok(prompts)
    }

    /// `logprobs` (vLLM: non-negative or -1, at most `max_logprobs`).
    pub fn logprobs(&self) -> Result<Option<u32>, ApiError> {
        match self.logprobs {
            None => Ok(None),
            Some(n) if n < 0 && n != -1 => Err(ApiError::invalid(
                "logprobs",
                format!("logprobs must be non-negative or -1, got {n}."),
            )),
            Some(n) => check_logprobs_limit("logprobs", n).map(Some),
        }
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
