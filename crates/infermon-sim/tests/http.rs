//! The OpenAI-compatible API through a real HTTP client: every endpoint, streaming as OpenAI
//! clients parse it, every bad-input case, faults, disconnects and preemption.

mod common;

use std::time::Instant;

use common::*;
use futures::StreamExt;
use infermon_sim::tokens::filler_text;
use infermon_sim::{ErrorFault, ErrorKind, MetricsFormat, SimConfig};
use serde_json::{json, Value};

fn chat_body(content: &str, max_tokens: u64) -> Value {
    json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "ignore_eos": true,
    })
}

#[tokio::test]
async fn chat_completion_returns_filler_and_exact_usage() {
    let server = Server::start(test_config()).await;
    let response = server
        .post_json("/v1/chat/completions", &chat_body("Hello there", 12))
        .await;
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], MODEL);
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let choice = &body["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], filler_text(12));
    assert_eq!(choice["finish_reason"], "length");
    // "<|user|>\nHello there\n" is 21 bytes: 6 tokens at 4 bytes per token, rounded up.
    assert_eq!(body["usage"]["prompt_tokens"], 6);
    assert_eq!(body["usage"]["completion_tokens"], 12);
    assert_eq!(body["usage"]["total_tokens"], 18);
    assert_eq!(server.sim.stats().finished, 1);
}

#[tokio::test]
async fn completion_stops_at_its_natural_length_below_max_tokens() {
    let mut config = test_config();
    config.output.min_tokens = 5;
    config.output.max_tokens = 5;
    let server = Server::start(config).await;
    let response = server
        .post_json(
            "/v1/completions",
            &json!({"model": MODEL, "prompt": "Once upon a time", "max_tokens": 50}),
        )
        .await;
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "text_completion");
    assert!(body["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(body["choices"][0]["text"], filler_text(5));
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 4);
    assert_eq!(body["usage"]["completion_tokens"], 5);

    // Token-id prompts count one token per id.
    let body: Value = server
        .post_json(
            "/v1/completions",
            &json!({"model": MODEL, "prompt": [1, 2, 3, 4, 5, 6, 7], "max_tokens": 3}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["usage"]["prompt_tokens"], 7);
    assert_eq!(body["choices"][0]["finish_reason"], "length");
}

#[tokio::test]
async fn models_and_health() {
    let server = Server::start(test_config()).await;
    let response = server.get("/v1/models").await;
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"][0]["id"], MODEL);
    assert_eq!(body["data"][0]["object"], "model");
    assert_eq!(body["data"][0]["max_model_len"], 4096);

    let health = server.get("/health").await;
    assert_eq!(health.status().as_u16(), 200);

    server.sim.shutdown().await;
    let health = server.get("/health").await;
    expect_error(health, 503).await;
    let after = server
        .post_json("/v1/chat/completions", &chat_body("late", 4))
        .await;
    expect_error(after, 503).await;
}

#[tokio::test]
async fn streaming_chat_parses_like_an_openai_client() {
    let server = Server::start(test_config()).await;
    let mut body = chat_body("Stream me something", 20);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let sent = Instant::now();
    let streamed = read_stream(server.post_json("/v1/chat/completions", &body).await, sent).await;

    assert_eq!(streamed.events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = streamed.events[..streamed.events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).expect("every event but [DONE] is JSON"))
        .collect();
    let ids: Vec<&str> = chunks.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "one id for the whole stream"
    );
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));

    // 20 content chunks, then one with the finish reason, then the usage chunk.
    assert_eq!(chunks.len(), 22);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks[..20]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, filler_text(20));
    assert!(chunks[..20]
        .iter()
        .all(|c| c["choices"][0]["finish_reason"].is_null()));
    assert_eq!(chunks[20]["choices"][0]["finish_reason"], "length");
    assert_eq!(chunks[21]["choices"].as_array().unwrap().len(), 0);
    assert_eq!(chunks[21]["usage"]["completion_tokens"], 20);
    assert_eq!(chunks[21]["usage"]["prompt_tokens"], 8);
    assert!(streamed.first_content_after.is_some());
}

#[tokio::test]
async fn streaming_completion_without_usage_has_no_usage_chunk() {
    let server = Server::start(test_config()).await;
    let body = json!({
        "model": MODEL, "prompt": "abc", "max_tokens": 6, "stream": true, "ignore_eos": true
    });
    let streamed = read_stream(
        server.post_json("/v1/completions", &body).await,
        Instant::now(),
    )
    .await;
    assert_eq!(streamed.events.len(), 6 + 1 + 1);
    let chunks: Vec<Value> = streamed.events[..7]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let text: String = chunks[..6]
        .iter()
        .map(|c| c["choices"][0]["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, filler_text(6));
    assert_eq!(chunks[6]["choices"][0]["finish_reason"], "length");
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
}

#[tokio::test]
async fn sse_decoder_handles_split_events_and_crlf() {
    // The decoder the streaming tests rely on, checked on its own.
    let mut decoder = SseDecoder::default();
    assert!(decoder.feed(b"data: {\"a\"").is_empty());
    assert_eq!(
        decoder.feed(b":1}\r\n\r\n: comment\n\ndata: x\ndata: y\n\n"),
        vec!["{\"a\":1}".to_owned(), "x\ny".to_owned()]
    );
}

#[tokio::test]
async fn malformed_and_mistyped_bodies_are_400() {
    let server = Server::start(test_config()).await;
    let send = |body: &'static str| {
        server
            .client
            .post(server.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let body = expect_error(send("{\"model\": ").await.unwrap(), 400).await;
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let body = expect_error(send("{\"model\": \"x\"}").await.unwrap(), 400).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("messages"),
        "{body}"
    );
    expect_error(send("{\"model\": 5, \"messages\": []}").await.unwrap(), 400).await;
    expect_error(send("[]").await.unwrap(), 400).await;
    expect_error(send("").await.unwrap(), 400).await;
}

#[tokio::test]
async fn invalid_parameters_are_400_naming_the_parameter() {
    let server = Server::start(test_config()).await;
    let cases = [
        (json!({"model": MODEL, "messages": []}), "messages"),
        (
            json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "n": 0}),
            "n",
        ),
        (
            json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "presence_penalty": 2.5}),
            "presence_penalty",
        ),
        (
            json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "frequency_penalty": -3}),
            "frequency_penalty",
        ),
        (
            json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "stop": ["a", ""]}),
            "stop",
        ),
        (
            json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "top_logprobs": 3}),
            "top_logprobs",
        ),
        (
            json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "logprobs": true, "top_logprobs": 21}),
            "top_logprobs",
        ),
        (
            json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema"}}),
            "response_format",
        ),
        (
            json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "tool_choice": "required"}),
            "tool_choice",
        ),
        (
            json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "tools": []}),
            "tools",
        ),
        (
            json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}],
                   "tools": [{"type": "function", "function": {"name": "f"}}],
                   "tool_choice": {"type": "function", "function": {"name": "g"}}}),
            "tool_choice",
        ),
        (
            json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}),
            "max_tokens",
        ),
        (
            json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "temperature": 3.0}),
            "temperature",
        ),
        (
            json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": true}}),
            "stream_options",
        ),
    ];
    for (body, param) in cases {
        let error = expect_error(server.post_json("/v1/chat/completions", &body).await, 400).await;
        assert_eq!(error["error"]["param"], param, "{body}");
    }
    let error = expect_error(
        server
            .post_json(
                "/v1/completions",
                &json!({"model": MODEL, "prompt": "a", "logprobs": 21}),
            )
            .await,
        400,
    )
    .await;
    assert_eq!(error["error"]["param"], "logprobs");
    assert_eq!(server.sim.stats().finished + server.sim.stats().rejected, 0);
}

#[tokio::test]
async fn unknown_model_is_404() {
    let server = Server::start(test_config()).await;
    let mut body = chat_body("hi", 4);
    body["model"] = json!("gpt-9");
    let error = expect_error(server.post_json("/v1/chat/completions", &body).await, 404).await;
    assert_eq!(error["error"]["code"], "model_not_found");
    assert_eq!(error["error"]["param"], "model");
    assert!(error["error"]["message"].as_str().unwrap().contains(MODEL));
}

#[tokio::test]
async fn max_tokens_beyond_the_context_is_400() {
    let server = Server::start(test_config()).await;
    let error = expect_error(
        server
            .post_json("/v1/chat/completions", &chat_body("hi", 5000))
            .await,
        400,
    )
    .await;
    assert_eq!(error["error"]["code"], "context_length_exceeded");
    assert_eq!(error["error"]["param"], "max_tokens");
    assert!(error["error"]["message"].as_str().unwrap().contains("4096"));

    // A prompt that alone fills the context.
    let long = "x".repeat(4 * 4096);
    let body = json!({"model": MODEL, "prompt": long});
    expect_error(server.post_json("/v1/completions", &body).await, 400).await;
}

#[tokio::test]
async fn oversized_body_is_413() {
    let mut config = test_config();
    config.max_body_bytes = 1024;
    let server = Server::start(config).await;
    let error = expect_error(
        server
            .post_json("/v1/chat/completions", &chat_body(&"y".repeat(4096), 4))
            .await,
        413,
    )
    .await;
    assert_eq!(error["error"]["code"], "request_too_large");
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let server = Server::start(test_config()).await;
    let response = server.get("/v2/nothing").await;
    expect_error(response, 404).await;
    let response = server.get("/v1/chat/completions").await;
    expect_error(response, 405).await;
    // /metrics is served unless turned off.
    let mut config = test_config();
    config.metrics = infermon_sim::MetricsFormat::None;
    let server = Server::start(config).await;
    let response = server.get("/metrics").await;
    expect_error(response, 404).await;
}

#[tokio::test]
async fn full_queue_is_503_with_retry_after() {
    let mut config = test_config();
    config.time_scale = 1.0;
    config.scheduler.max_num_seqs = 1;
    config.scheduler.max_waiting = Some(1);
    let server = Server::start(config).await;

    // A occupies the only batch slot (a long stream we read the start of).
    let mut body = chat_body("first", 2000);
    body["stream"] = json!(true);
    let a = server.post_json("/v1/chat/completions", &body).await;
    let mut a_stream = a.bytes_stream();
    a_stream.next().await.unwrap().unwrap();

    // B waits in the queue...
    let b = {
        let client = server.client.clone();
        let url = server.url("/v1/chat/completions");
        tokio::spawn(async move { client.post(url).json(&chat_body("second", 2)).send().await })
    };
    let sim = server.sim.clone();
    wait_until("B is waiting", || {
        let sim = sim.clone();
        async move { sim.stats().waiting == 1 }
    })
    .await;

    // ...so C finds the queue full.
    let c = server
        .post_json("/v1/chat/completions", &chat_body("third", 2))
        .await;
    assert_eq!(c.headers()["retry-after"], "1");
    let error = expect_error(c, 503).await;
    assert_eq!(error["error"]["code"], "queue_full");
    assert_eq!(server.sim.stats().rejected, 1);

    drop(a_stream); // A's client goes away: B gets the slot and completes.
    let b = b.await.unwrap().unwrap();
    assert_eq!(b.status().as_u16(), 200);
}

#[tokio::test]
async fn disconnect_mid_stream_aborts_and_frees_blocks() {
    let mut config = test_config();
    config.time_scale = 1.0;
    config.metrics = MetricsFormat::Vllm;
    let server = Server::start(config).await;
    let mut body = chat_body(&"long prompt ".repeat(50), 3000);
    body["stream"] = json!(true);
    let response = server.post_json("/v1/chat/completions", &body).await;
    let mut stream = response.bytes_stream();
    stream.next().await.unwrap().unwrap();
    let sim = server.sim.clone();
    wait_until("the sequence holds KV blocks", || {
        let sim = sim.clone();
        async move { sim.stats().kv_blocks_used > 0 }
    })
    .await;
    drop(stream);

    wait_until("the sequence is aborted", || {
        let sim = sim.clone();
        async move { sim.stats().aborted == 1 }
    })
    .await;
    let stats = sim.stats();
    assert_eq!(stats.running, 0);
    assert_eq!(stats.finished, 0);
    assert_eq!(stats.kv_blocks_used, 0, "every KV block freed");

    let metrics = server.get("/metrics").await.text().await.unwrap();
    let abort = format!(
        "vllm:request_success_total{{model_name=\"{MODEL}\",engine=\"0\",finished_reason=\"abort\"}} 1.0"
    );
    assert!(metrics.contains(&abort), "{metrics}");
}

#[tokio::test]
async fn injected_arrival_errors_use_their_status() {
    for (kind, status) in [
        (ErrorKind::ServerError, 500),
        (ErrorKind::Overloaded, 503),
        (ErrorKind::RateLimited, 429),
    ] {
        let mut config = test_config();
        config.faults.errors = vec![ErrorFault { kind, rate: 1.0 }];
        let server = Server::start(config).await;
        let response = server
            .post_json("/v1/chat/completions", &chat_body("hi", 4))
            .await;
        if status != 500 {
            assert_eq!(response.headers()["retry-after"], "1");
        }
        let error = expect_error(response, status).await;
        assert_eq!(error["error"]["code"], kind.as_str());
        assert_eq!(server.sim.stats().rejected, 1);
    }
}

#[tokio::test]
async fn injected_mid_stream_failure_ends_the_stream_with_an_error_event() {
    let mut config = test_config();
    config.faults.errors = vec![ErrorFault {
        kind: ErrorKind::MidStream,
        rate: 1.0,
    }];
    let server = Server::start(config).await;
    let mut body = chat_body("hi", 30);
    body["stream"] = json!(true);
    let streamed = read_stream(
        server.post_json("/v1/chat/completions", &body).await,
        Instant::now(),
    )
    .await;
    let n = streamed.events.len();
    assert_eq!(streamed.events[n - 1], "[DONE]");
    let error: Value = serde_json::from_str(&streamed.events[n - 2]).unwrap();
    assert_eq!(error["error"]["code"], "mid_stream_error");
    assert!(n - 2 >= 1, "at least one token before the failure");
    assert!(n - 2 < 30, "the stream did not complete");

    let response = server
        .post_json("/v1/chat/completions", &chat_body("hi", 30))
        .await;
    expect_error(response, 500).await;
    let stats = server.sim.stats();
    assert_eq!(stats.failed, 2);
    assert_eq!(stats.kv_blocks_used, 0);
}

#[tokio::test]
async fn shared_prefixes_hit_the_prefix_cache() {
    let server = Server::start(test_config()).await;
    let system = "You are a meticulous assistant. ".repeat(20);
    let ask = |question: &str| {
        json!({
            "model": MODEL,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": question}
            ],
            "max_tokens": 2,
        })
    };
    let first: Value = server
        .post_json("/v1/chat/completions", &ask("Question one?"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    let second: Value = server
        .post_json("/v1/chat/completions", &ask("Another question?"))
        .await
        .json()
        .await
        .unwrap();
    // The system prompt (640 bytes + markers) spans 10 full 16-token blocks.
    let cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    assert_eq!(cached % 16, 0, "cache hits are whole blocks");
    assert!(cached >= 160, "{second}");
    let stats = server.sim.stats();
    assert_eq!(stats.prefix_cache_hits, cached);
}

#[tokio::test]
async fn kv_pressure_preempts_and_every_request_still_completes() {
    let mut config: SimConfig = test_config();
    // 8 blocks × 16 tokens = 128 tokens; four sequences growing to 100 tokens each cannot all
    // fit, so the newest ones are preempted and recomputed.
    config.kv_cache.num_blocks = Some(8);
    config.scheduler.max_model_len = Some(128);
    config.kv_cache.prefix_caching = false;
    let server = Server::start(config).await;
    let requests = (0..4).map(|i| {
        let body = chat_body(&format!("{i} {}", "p".repeat(140)), 60);
        let client = server.client.clone();
        let url = server.url("/v1/chat/completions");
        async move { client.post(url).json(&body).send().await.unwrap() }
    });
    let responses = futures::future::join_all(requests).await;
    for response in responses {
        assert_eq!(response.status().as_u16(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["usage"]["completion_tokens"], 60);
        assert_eq!(body["choices"][0]["message"]["content"], filler_text(60));
    }
    let stats = server.sim.stats();
    assert!(stats.preemptions > 0, "{stats:?}");
    assert_eq!(stats.swapped, 0);
    assert_eq!(stats.finished, 4);
    assert_eq!(stats.kv_blocks_used, 0);
}

#[tokio::test]
async fn vllm_metrics_count_what_was_served() {
    let mut config = test_config();
    config.metrics = MetricsFormat::Vllm;
    let server = Server::start(config).await;
    for _ in 0..3 {
        let response = server
            .post_json("/v1/chat/completions", &chat_body("count me", 5))
            .await;
        assert_eq!(response.status().as_u16(), 200);
    }
    let response = server.get("/metrics").await;
    assert_eq!(response.status().as_u16(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = response.text().await.unwrap();
    let labels = format!("model_name=\"{MODEL}\",engine=\"0\"");
    for expected in [
        format!("vllm:request_success_total{{{labels},finished_reason=\"length\"}} 3.0"),
        format!("vllm:generation_tokens_total{{{labels}}} 15.0"),
        // "<|user|>\ncount me\n" = 18 bytes = 5 tokens, three times.
        format!("vllm:prompt_tokens_total{{{labels}}} 15.0"),
        format!("vllm:time_to_first_token_seconds_count{{{labels}}} 3.0"),
        // 4 gaps between 5 tokens, three times.
        format!("vllm:inter_token_latency_seconds_count{{{labels}}} 12.0"),
        format!("vllm:e2e_request_latency_seconds_count{{{labels}}} 3.0"),
        format!("vllm:num_requests_running{{{labels}}} 0.0"),
        format!("vllm:num_requests_waiting{{{labels}}} 0.0"),
        format!("vllm:kv_cache_usage_perc{{{labels}}} 0.0"),
    ] {
        assert!(text.contains(&expected), "missing {expected}\n{text}");
    }
}

#[tokio::test]
async fn kv_pressure_fault_takes_blocks_away_and_requests_still_complete() {
    let mut config = test_config();
    config.kv_cache.num_blocks = Some(400);
    config.faults.kv_pressure = 0.5;
    let server = Server::start(config).await;
    let response = server
        .post_json("/v1/chat/completions", &chat_body("under pressure", 10))
        .await;
    assert_eq!(response.status().as_u16(), 200);
    // Nothing runs now, yet half the cache counts as used.
    let stats = server.sim.stats();
    assert_eq!(stats.kv_blocks_total, 400);
    assert_eq!(stats.kv_blocks_used, 200);
    assert_eq!(server.sim.active_faults().kv_pressure, 0.5);
}

#[tokio::test]
async fn shutdown_fails_in_flight_streams_cleanly() {
    let mut config = test_config();
    config.time_scale = 1.0;
    let server = Server::start(config).await;
    let mut body = chat_body("interrupted", 3000);
    body["stream"] = json!(true);
    let response = server.post_json("/v1/chat/completions", &body).await;
    let mut decoder = SseDecoder::default();
    let mut stream = response.bytes_stream();
    let mut events = decoder.feed(&stream.next().await.unwrap().unwrap());
    server.sim.shutdown().await;
    while let Some(chunk) = stream.next().await {
        events.extend(decoder.feed(&chunk.unwrap()));
    }
    let n = events.len();
    assert_eq!(events[n - 1], "[DONE]");
    let error: Value = serde_json::from_str(&events[n - 2]).unwrap();
    assert_eq!(error["error"]["code"], "shutdown");
    let stats = server.sim.stats();
    assert_eq!(stats.failed, 1);
    assert_eq!(stats.running, 0);
    assert_eq!(stats.kv_blocks_used, 0);
}
