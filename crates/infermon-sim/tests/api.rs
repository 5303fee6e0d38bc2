//! The OpenAI API surface beyond plain generation, against vLLM 0.33.0's behaviour: stop
//! strings and token ids, `n`, prompt batches, log-probabilities, `echo`, structured JSON
//! output, forced tool calls (whole and streamed), Content-Type checks and the utility routes.

mod common;

use std::time::Instant;

use common::*;
use serde_json::{json, Value};

fn chat(extra: Value) -> Value {
    let mut body = json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 40,
    });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

async fn ok_json(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// The JSON chunks of a stream (without `[DONE]`), checking it ends with `[DONE]`.
async fn chunks(response: reqwest::Response) -> Vec<Value> {
    let streamed = read_stream(response, Instant::now()).await;
    assert_eq!(streamed.events.last().map(String::as_str), Some("[DONE]"));
    streamed.events[..streamed.events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

#[tokio::test]
async fn stop_strings_end_the_text_before_them() {
    let server = Server::start(test_config()).await;
    let body = chat(json!({"stop": ["infermon", "model"], "ignore_eos": true}));
    let response = ok_json(server.post_json("/v1/chat/completions", &body).await).await;
    let choice = &response["choices"][0];
    assert_eq!(choice["message"]["content"], "This text is simulated by ");
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(choice["stop_reason"], "infermon");
    // The output ran until the token that completed "infermon" (byte 34 → 9 tokens).
    assert_eq!(response["usage"]["completion_tokens"], 9);

    // Streamed: the same text, the same ending.
    let mut body = body;
    body["stream"] = json!(true);
    let chunks = chunks(server.post_json("/v1/chat/completions", &body).await).await;
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "This text is simulated by ");
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
}

#[tokio::test]
async fn stop_token_ids_end_the_output_at_that_token() {
    let server = Server::start(test_config()).await;
    // The ids /tokenize gives are the ids the output uses.
    let tokenized = ok_json(
        server
            .post_json("/tokenize", &json!({"prompt": "This text is simulated"}))
            .await,
    )
    .await;
    let sim_id = tokenized["tokens"][3].clone(); // " sim"
    let body = json!({"model": MODEL, "prompt": "x", "max_tokens": 40, "ignore_eos": true,
                      "stop_token_ids": [sim_id]});
    let response = ok_json(server.post_json("/v1/completions", &body).await).await;
    let choice = &response["choices"][0];
    assert_eq!(choice["text"], "This text is");
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(choice["stop_reason"], sim_id);
    assert_eq!(response["usage"]["completion_tokens"], 4);
}

#[tokio::test]
async fn n_choices_and_prompt_batches_are_separate_sequences() {
    let server = Server::start(test_config()).await;
    let body = json!({"model": MODEL, "prompt": ["first prompt", "second, longer prompt"],
                      "n": 2, "max_tokens": 6, "ignore_eos": true});
    let response = ok_json(server.post_json("/v1/completions", &body).await).await;
    let choices = response["choices"].as_array().unwrap();
    let indices: Vec<u64> = choices
        .iter()
        .map(|c| c["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indices, [0, 1, 2, 3]);
    assert!(choices
        .iter()
        .all(|c| c["text"] == "This text is simulated b"));
    // Prompt tokens once per prompt (3 + 6), completion tokens for all four choices.
    assert_eq!(response["usage"]["prompt_tokens"], 3 + 6);
    assert_eq!(response["usage"]["completion_tokens"], 4 * 6);
    assert_eq!(server.sim.stats().finished, 4, "four engine sequences");

    // Streamed chat with n = 3: every choice's tokens, finish and one usage total.
    let body = chat(
        json!({"n": 3, "max_tokens": 5, "ignore_eos": true, "stream": true,
                           "stream_options": {"include_usage": true}}),
    );
    let chunks = chunks(server.post_json("/v1/chat/completions", &body).await).await;
    for index in 0..3 {
        let of_choice: Vec<&Value> = chunks
            .iter()
            .filter(|c| c["choices"][0]["index"] == index)
            .collect();
        assert_eq!(
            of_choice.len(),
            5 + 1,
            "choice {index}: 5 tokens and a finish"
        );
        assert_eq!(of_choice[5]["choices"][0]["finish_reason"], "length");
    }
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 15);
}

#[tokio::test]
async fn logprobs_come_in_each_apis_shape() {
    let server = Server::start(test_config()).await;
    let body =
        chat(json!({"logprobs": true, "top_logprobs": 3, "max_tokens": 4, "ignore_eos": true}));
    let response = ok_json(server.post_json("/v1/chat/completions", &body).await).await;
    let content = response["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap();
    assert_eq!(content.len(), 4);
    assert_eq!(content[0]["token"], "This");
    assert_eq!(content[0]["bytes"], json!([84, 104, 105, 115]));
    let top = content[0]["top_logprobs"].as_array().unwrap();
    assert_eq!(top.len(), 3);
    assert_eq!(top[0]["token"], "This");
    assert!(top
        .windows(2)
        .all(|w| w[0]["logprob"].as_f64() > w[1]["logprob"].as_f64()));
    assert!(content.iter().all(|c| c["logprob"].as_f64().unwrap() < 0.0));

    let body = json!({"model": MODEL, "prompt": "abc", "logprobs": 2, "max_tokens": 3,
                      "ignore_eos": true, "stream": true});
    let chunks = chunks(server.post_json("/v1/completions", &body).await).await;
    let first = &chunks[0]["choices"][0]["logprobs"];
    assert_eq!(first["tokens"], json!(["This"]));
    assert_eq!(first["text_offset"], json!([0]));
    assert_eq!(first["top_logprobs"][0].as_object().unwrap().len(), 2);
    assert_eq!(
        chunks[1]["choices"][0]["logprobs"]["text_offset"],
        json!([4])
    );
}

#[tokio::test]
async fn echo_prepends_the_prompt() {
    let server = Server::start(test_config()).await;
    let body = json!({"model": MODEL, "prompt": "Say \"hi\": ", "echo": true, "max_tokens": 2,
                      "ignore_eos": true});
    let response = ok_json(server.post_json("/v1/completions", &body).await).await;
    assert_eq!(response["choices"][0]["text"], "Say \"hi\": This tex");

    let mut body = body;
    body["stream"] = json!(true);
    let chunks = chunks(server.post_json("/v1/completions", &body).await).await;
    assert_eq!(chunks[0]["choices"][0]["text"], "Say \"hi\": This");
}

#[tokio::test]
async fn chat_echo_prepends_the_last_assistant_message() {
    let server = Server::start(test_config()).await;
    let body = json!({"model": MODEL, "echo": true, "max_tokens": 2, "ignore_eos": true,
        "messages": [{"role": "user", "content": "Finish this:"},
                     {"role": "assistant", "content": "Once upon a time, "}]});
    let response = ok_json(server.post_json("/v1/chat/completions", &body).await).await;
    assert_eq!(
        response["choices"][0]["message"]["content"],
        "Once upon a time, This tex"
    );
    // Only an assistant's last message is echoed.
    let body = chat(json!({"echo": true, "max_tokens": 2, "ignore_eos": true}));
    let response = ok_json(server.post_json("/v1/chat/completions", &body).await).await;
    assert_eq!(response["choices"][0]["message"]["content"], "This tex");
}

#[tokio::test]
async fn response_format_gives_json_of_the_schema_shape() {
    let server = Server::start(test_config()).await;
    let schema = json!({
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "population": {"type": "integer"},
            "coastal": {"type": "boolean"},
            "districts": {"type": "array", "items": {"type": "string"}}
        },
        "required": ["city", "population", "coastal", "districts"]
    });
    let body = chat(json!({"max_tokens": 200, "response_format": {
        "type": "json_schema", "json_schema": {"name": "city", "schema": schema}}}));
    let response = ok_json(server.post_json("/v1/chat/completions", &body).await).await;
    let choice = &response["choices"][0];
    assert_eq!(choice["finish_reason"], "stop");
    let content = choice["message"]["content"].as_str().unwrap();
    let document: Value = serde_json::from_str(content).unwrap();
    assert!(document["city"].is_string());
    assert!(document["population"].is_i64());
    assert!(document["coastal"].is_boolean());
    assert!(document["districts"][0].is_string());
    assert_eq!(
        response["usage"]["completion_tokens"].as_u64().unwrap(),
        content.len().div_ceil(4) as u64
    );

    // json_object, streamed: the pieces join into one JSON object.
    let body = chat(json!({"max_tokens": 200, "stream": true,
                           "response_format": {"type": "json_object"}}));
    let chunks = chunks(server.post_json("/v1/chat/completions", &body).await).await;
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(
        serde_json::from_str::<Value>(&text).unwrap().is_object(),
        "{text}"
    );
}

fn weather_tools() -> Value {
    json!([{
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}
            }
        }
    }])
}

#[tokio::test]
async fn forced_tool_calls_are_well_formed_whole_and_streamed() {
    let server = Server::start(test_config()).await;
    let named = json!({"type": "function", "function": {"name": "get_weather"}});
    let body = chat(json!({"max_tokens": 100, "tools": weather_tools(), "tool_choice": named}));
    let response = ok_json(server.post_json("/v1/chat/completions", &body).await).await;
    let choice = &response["choices"][0];
    // A named tool: OpenAI and vLLM report "stop"; "required" reports "tool_calls".
    assert_eq!(choice["finish_reason"], "stop");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert!(call["id"].as_str().unwrap().starts_with("chatcmpl-tool-"));
    assert_eq!(call["function"]["name"], "get_weather");
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(arguments["city"].is_string() && arguments["days"].is_i64());

    let body = chat(json!({"max_tokens": 100, "tools": weather_tools(),
                           "tool_choice": "required", "stream": true}));
    let chunks = chunks(server.post_json("/v1/chat/completions", &body).await).await;
    let first = &chunks[0]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(first["index"], 0);
    assert_eq!(first["function"]["name"], "get_weather");
    assert!(first["id"].as_str().unwrap().starts_with("chatcmpl-tool-"));
    let arguments: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert!(serde_json::from_str::<Value>(&arguments)
        .unwrap()
        .is_object());
    assert!(chunks[1..]
        .iter()
        .all(|c| c["choices"][0]["delta"]["tool_calls"][0]
            .get("id")
            .is_none()));
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );

    // "auto" on a server without auto tool choice: plain text, as vLLM answers.
    let body = chat(json!({"max_tokens": 5, "tools": weather_tools(), "tool_choice": "auto"}));
    let response = ok_json(server.post_json("/v1/chat/completions", &body).await).await;
    assert!(response["choices"][0]["message"]["content"].is_string());
    assert!(response["choices"][0]["message"]
        .get("tool_calls")
        .is_none());
}

#[tokio::test]
async fn non_json_content_type_is_refused_as_vllm_does() {
    let server = Server::start(test_config()).await;
    let body = chat(json!({})).to_string();
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut request = server
            .client
            .post(server.url("/v1/chat/completions"))
            .body(body.clone());
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        let error = expect_error(request.send().await.unwrap(), 400).await;
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("application/json"),
            "{error}"
        );
    }
    let response = server
        .client
        .post(server.url("/v1/chat/completions"))
        .header("content-type", "application/json; charset=utf-8")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_too_long_prompt_blames_the_prompt_not_max_tokens() {
    let server = Server::start(test_config()).await; // 4,096-token context
    let long = "word ".repeat(4000); // 5,000 tokens
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": long}],
                      "max_tokens": 10});
    let error = expect_error(server.post_json("/v1/chat/completions", &body).await, 400).await;
    assert_eq!(error["error"]["param"], "messages");
    assert_eq!(error["error"]["code"], "context_length_exceeded");
    let body = json!({"model": MODEL, "prompt": long, "max_tokens": 10});
    let error = expect_error(server.post_json("/v1/completions", &body).await, 400).await;
    assert_eq!(error["error"]["param"], "prompt");
}

#[tokio::test]
async fn utility_routes_answer_like_vllms() {
    let server = Server::start(test_config()).await;
    let version = ok_json(server.get("/version").await).await;
    assert_eq!(version["version"], "0.33.0");
    for ping in [
        server.client.get(server.url("/ping")),
        server.client.post(server.url("/ping")),
    ] {
        assert_eq!(ping.send().await.unwrap().status(), 200);
    }
    let tokenized = ok_json(
        server
            .post_json(
                "/tokenize",
                &json!({"model": MODEL, "prompt": "Hello, world!"}),
            )
            .await,
    )
    .await;
    assert_eq!(tokenized["count"], 4);
    assert_eq!(tokenized["max_model_len"], 4096);
    let detokenized = ok_json(
        server
            .post_json("/detokenize", &json!({"tokens": tokenized["tokens"]}))
            .await,
    )
    .await;
    assert_eq!(detokenized["prompt"], "Hello, world!");
    let chat_tokens = ok_json(
        server
            .post_json(
                "/tokenize",
                &json!({"messages": [{"role": "user", "content": "hi"}]}),
            )
            .await,
    )
    .await;
    assert!(
        chat_tokens["count"].as_u64().unwrap() > 1,
        "the role marker counts too"
    );
    // /metrics is served by default, as vLLM always serves it.
    let metrics = server.get("/metrics").await;
    assert_eq!(metrics.status(), 200);
    assert!(metrics.text().await.unwrap().contains("vllm:"));
}
