//! The gateway over real sockets: simulators as upstreams for the normal path, hand-made
//! upstreams for the faults (down, 5xx, hanging, malformed SSE, stalling, a client that goes
//! away), and tenants.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use common::*;
use infermon_gateway::{hash_key, GatewayConfig, Price, TenantConfig};
use infermon_instrument::contract::{attr, metric};

fn config(urls: &[&str]) -> GatewayConfig {
    let mut c = GatewayConfig::new(upstreams(urls));
    c.first_byte_timeout = Duration::from_millis(500);
    c.stream_idle_timeout = Duration::from_millis(500);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_pass_through_unchanged_and_are_measured_per_upstream() {
    let engine = sim().await;
    let mut c = config(&[&engine]);
    c.prices.insert(
        MODEL.to_owned(),
        Price {
            input_per_million: 1.0,
            output_per_million: 2.0,
        },
    );
    let gw = Running::start(c).await;

    let direct = events(
        gw.client
            .post(format!("{engine}/v1/chat/completions"))
            .json(&serde_json::json!({
                "model": MODEL, "messages": [{"role": "user", "content": "Hello there"}],
                "max_tokens": 8, "stream": true, "stream_options": {"include_usage": true},
            }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let response = gw.chat(true).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-infermon-upstream"], "u0");
    let through = events(response).await;
    // Same shape as the engine's own stream (ids differ): content chunks, finish, usage, DONE.
    assert_eq!(through.len(), direct.len(), "{through:#?}");
    assert_eq!(through.last().map(String::as_str), Some("[DONE]"));
    let usage: serde_json::Value = serde_json::from_str(&through[through.len() - 2]).unwrap();
    let (input, output) = (
        usage["usage"]["prompt_tokens"].as_u64().unwrap(),
        usage["usage"]["completion_tokens"].as_u64().unwrap(),
    );
    assert_eq!(output, 8);

    // A non-streamed request too.
    let plain: serde_json::Value = gw.chat(false).send().await.unwrap().json().await.unwrap();
    assert_eq!(plain["usage"]["completion_tokens"], 8);

    let m = gw.metrics();
    let upstream = [
        (attr::LLM_UPSTREAM, "u0"),
        (attr::GEN_AI_REQUEST_MODEL, MODEL),
    ];
    assert_eq!(
        histogram(&m, metric::TIME_TO_FIRST_TOKEN, &upstream).0,
        1,
        "TTFT: streams only"
    );
    assert_eq!(histogram(&m, metric::REQUEST_DURATION, &upstream).0, 2);
    assert_eq!(histogram(&m, metric::TIME_PER_OUTPUT_TOKEN, &upstream).0, 1);
    assert_eq!(
        histogram(&m, metric::GATEWAY_INTER_TOKEN_LATENCY, &upstream).0,
        7,
        "8 chunks, 7 gaps"
    );
    let tenant = [(attr::LLM_TENANT, "default")];
    assert_eq!(
        counter(
            &m,
            metric::GATEWAY_TOKENS,
            &[tenant[0], (attr::GEN_AI_TOKEN_TYPE, "output")]
        ),
        2 * output
    );
    assert_eq!(
        counter(
            &m,
            metric::GATEWAY_TOKENS,
            &[tenant[0], (attr::GEN_AI_TOKEN_TYPE, "input")]
        ),
        2 * input
    );
    let cost = f64_counter(&m, metric::GATEWAY_COST, &tenant);
    let expected = 2.0 * (input as f64 * 1.0 + output as f64 * 2.0) / 1e6;
    assert!((cost - expected).abs() < 1e-12, "{cost} vs {expected}");
    assert_eq!(
        counter(
            &m,
            metric::GATEWAY_REQUESTS,
            &[(attr::LLM_REQUEST_OUTCOME, "success")]
        ),
        2
    );
    assert_eq!(
        counter(
            &m,
            metric::GATEWAY_ATTEMPTS,
            &[
                (attr::LLM_UPSTREAM, "u0"),
                (attr::LLM_ATTEMPT_OUTCOME, "ok")
            ]
        ),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_go_to_the_least_busy_upstream() {
    let (a, b) = (sim().await, sim().await);
    let gw = Running::start(config(&[&a, &b])).await;
    let requests = (0..8).map(|_| {
        let r = gw.chat(true).send();
        async move {
            let response = r.await.unwrap();
            let upstream = response.headers()["x-infermon-upstream"]
                .to_str()
                .unwrap()
                .to_owned();
            let _ = response.text().await;
            upstream
        }
    });
    let picked = futures::future::join_all(requests).await;
    let on_a = picked.iter().filter(|u| *u == "u0").count();
    assert!(
        (3..=5).contains(&on_a),
        "8 concurrent requests split {on_a}/{}",
        8 - on_a
    );
    assert!(
        eventually(Duration::from_secs(2), || gw
            .gateway
            .upstreams()
            .all()
            .iter()
            .all(|u| u.outstanding() == 0))
        .await,
        "every request released its upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_upstream_is_failed_over_then_routed_around() {
    let (down, up) = (dead().await, sim().await);
    let mut c = config(&[&down, &up]);
    c.unhealthy_after = 2;
    let gw = Running::start(c).await;
    for _ in 0..6 {
        let response = gw.chat(false).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-infermon-upstream"], "u1");
    }
    assert!(!gw.gateway.upstreams().all()[0].is_healthy());
    let m = gw.metrics();
    let failed = [
        (attr::LLM_UPSTREAM, "u0"),
        (attr::LLM_ATTEMPT_OUTCOME, "connect_error"),
    ];
    assert_eq!(
        counter(&m, metric::GATEWAY_ATTEMPTS, &failed),
        2,
        "tried until marked unhealthy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_before_the_first_byte_is_retried_and_the_last_one_passed_on() {
    let broken = fake(axum::Router::new().route(
        "/v1/chat/completions",
        post(|| async {
            (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                [("content-type", "application/json")],
                r#"{"error":{"message":"overloaded","type":"server_error","param":null,"code":"queue_full"}}"#,
            )
        }),
    ))
    .await;
    let good = sim().await;
    let gw = Running::start(config(&[&broken, &good])).await;
    let response = gw.chat(false).send().await.unwrap();
    assert_eq!(response.status(), 200, "retried on the healthy upstream");

    let alone = Running::start(config(&[&broken])).await;
    let response = alone.chat(false).send().await.unwrap();
    assert_eq!(
        response.status(),
        503,
        "nothing else to try: the upstream's answer"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "queue_full");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_upstream_times_out_and_is_retried_elsewhere() {
    let hanging = fake(axum::Router::new().route(
        "/v1/chat/completions",
        post(|| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            "never"
        }),
    ))
    .await;
    let good = sim().await;
    let gw = Running::start(config(&[&hanging, &good])).await;
    let response = gw.chat(false).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-infermon-upstream"], "u1");

    let alone = Running::start(config(&[&hanging])).await;
    let response = alone.chat(false).send().await.unwrap();
    assert_eq!(response.status(), 504);
    assert!(response.headers().contains_key("retry-after"));
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_timeout");
    let m = alone.metrics();
    assert_eq!(
        counter(
            &m,
            metric::GATEWAY_REQUESTS,
            &[(attr::ERROR_TYPE, "upstream_timeout")]
        ),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_sse_passes_through_and_a_stalled_stream_is_ended_with_an_error_event() {
    let malformed = fake(axum::Router::new().route(
        "/v1/chat/completions",
        post(|| async {
            sse(
                vec!["data: {not json\n\n".into(), "data: [DONE]\n\n".into()],
                Duration::from_millis(5),
            )
        }),
    ))
    .await;
    let gw = Running::start(config(&[&malformed])).await;
    let text = gw.chat(true).send().await.unwrap().text().await.unwrap();
    assert_eq!(
        text, "data: {not json\n\ndata: [DONE]\n\n",
        "bytes as the upstream sent them"
    );

    let stalling = fake(axum::Router::new().route(
        "/v1/chat/completions",
        post(|| async {
            let first = r#"data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}"#;
            sse(
                vec![format!("{first}\n\n"), "data: [DONE]\n\n".into()],
                Duration::from_secs(5),
            )
        }),
    ))
    .await;
    let gw = Running::start(config(&[&stalling])).await;
    let got = events(gw.chat(true).send().await.unwrap()).await;
    assert_eq!(got.len(), 2, "{got:?}");
    let error: serde_json::Value = serde_json::from_str(&got[0]).unwrap();
    assert_eq!(error["error"]["code"], "upstream_timeout");
    assert_eq!(got[1], "[DONE]");

    // A stream that keeps coming for longer than the idle timeout (0.5 s) is not cut: the idle
    // timer fires mid-stream and is moved on, not obeyed. Once it stalls, it is ended.
    let steady_then_stalled = fake(axum::Router::new().route(
        "/v1/chat/completions",
        post(|| async {
            let token = |i: usize| {
                let chunk =
                    format!(r#"{{"choices":[{{"index":0,"delta":{{"content":"t{i}"}}}}]}}"#);
                (Duration::from_millis(150), format!("data: {chunk}\n\n"))
            };
            let mut chunks: Vec<_> = (0..8).map(token).collect();
            chunks.push((Duration::from_secs(5), "data: [DONE]\n\n".into()));
            sse_paced(chunks)
        }),
    ))
    .await;
    let gw = Running::start(config(&[&steady_then_stalled])).await;
    let got = events(gw.chat(true).send().await.unwrap()).await;
    assert_eq!(
        got.len(),
        10,
        "8 tokens over 1.2 s, the error, [DONE]: {got:?}"
    );
    assert!(got[7].contains("\"t7\""), "{got:?}");
    let error: serde_json::Value = serde_json::from_str(&got[8]).unwrap();
    assert_eq!(error["error"]["code"], "upstream_timeout");
    assert_eq!(got[9], "[DONE]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_cancels_the_upstream_request() {
    /// Counts upstream response bodies dropped (the gateway closed the connection).
    struct Dropped(Arc<AtomicUsize>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicUsize::new(0));
    let seen = dropped.clone();
    let slow = fake(axum::Router::new().route(
        "/v1/chat/completions",
        post(move || {
            let guard = Dropped(seen.clone());
            async move {
                use futures::StreamExt as _;
                let chunks = futures::stream::iter(0..1000).then(move |i| {
                    let _keep = &guard;
                    async move {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(format!(
                            "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"t{i}\"}}}}]}}\n\n"
                        )))
                    }
                });
                axum::response::Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(axum::body::Body::from_stream(chunks))
                    .unwrap()
            }
        }),
    ))
    .await;
    let gw = Running::start(config(&[&slow])).await;
    let mut response = gw.chat(true).send().await.unwrap();
    for _ in 0..3 {
        response.chunk().await.unwrap().expect("a chunk");
    }
    assert_eq!(gw.gateway.upstreams().all()[0].outstanding(), 1);
    drop(response);
    assert!(
        eventually(Duration::from_secs(3), || dropped.load(Ordering::SeqCst)
            == 1)
        .await,
        "the upstream's response was not cancelled"
    );
    assert!(
        eventually(Duration::from_secs(3), || gw.gateway.upstreams().all()[0]
            .outstanding()
            == 0)
        .await
    );
    let m = gw.metrics();
    assert_eq!(
        counter(
            &m,
            metric::GATEWAY_REQUESTS,
            &[(attr::LLM_REQUEST_OUTCOME, "aborted")]
        ),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_need_their_key_keep_their_limits_and_get_their_tokens_counted() {
    // Streams take a second (so a tenant's second stream overlaps its first); plain requests
    // answer at once. Usage as an engine reports it.
    let engine = fake(axum::Router::new().route(
        "/v1/chat/completions",
        post(|body: axum::Json<serde_json::Value>| async move {
            use axum::response::IntoResponse as _;
            let usage = serde_json::json!({"prompt_tokens": 5, "completion_tokens": 7});
            if body["stream"] == true {
                let mut chunks: Vec<String> = (0..50)
                    .map(|i| format!("data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"t{i}\"}}}}]}}\n\n"))
                    .collect();
                chunks.push(format!("data: {}\n\n", serde_json::json!({"choices": [], "usage": usage})));
                chunks.push("data: [DONE]\n\n".into());
                sse(chunks, Duration::from_millis(20))
            } else {
                axum::Json(serde_json::json!({"choices": [], "usage": usage})).into_response()
            }
        }),
    ))
    .await;
    let mut c = config(&[&engine]);
    let tenant = |name: &str, key: &str, max| TenantConfig {
        name: name.into(),
        key_sha256: {
            let hex = hash_key(key);
            let mut out = [0u8; 32];
            for (i, b) in out.iter_mut().enumerate() {
                *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
            }
            out
        },
        max_concurrency: max,
        requests_per_second: None,
    };
    c.tenants = Some(vec![
        tenant("acme", "sk-acme", None),
        tenant("solo", "sk-solo", Some(1)),
    ]);
    let gw = Running::start(c).await;

    let unknown = gw.chat(false).bearer_auth("sk-wrong").send().await.unwrap();
    assert_eq!(unknown.status(), 401);
    let body: serde_json::Value = unknown.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key");
    assert_eq!(
        gw.chat(false).send().await.unwrap().status(),
        401,
        "no key at all"
    );

    let mut sent = 0;
    for _ in 0..3 {
        let r: serde_json::Value = gw
            .chat(false)
            .bearer_auth("sk-acme")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        sent += r["usage"]["completion_tokens"].as_u64().unwrap();
    }

    // solo may have one request in flight: a second one while its stream runs gets a 429.
    let open = gw.chat(true).bearer_auth("sk-solo").send().await.unwrap();
    let second = gw.chat(true).bearer_auth("sk-solo").send().await.unwrap();
    assert_eq!(second.status(), 429);
    assert_eq!(second.headers()["retry-after"], "1");
    let _ = open.text().await;
    assert_eq!(
        gw.chat(false)
            .bearer_auth("sk-solo")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let m = gw.metrics();
    let acme_out = [
        (attr::LLM_TENANT, "acme"),
        (attr::GEN_AI_TOKEN_TYPE, "output"),
    ];
    assert_eq!(counter(&m, metric::GATEWAY_TOKENS, &acme_out), sent);
    assert_eq!(
        counter(
            &m,
            metric::GATEWAY_REQUESTS,
            &[(attr::LLM_TENANT, "unauthenticated")]
        ),
        2
    );
    assert_eq!(
        counter(
            &m,
            metric::GATEWAY_REQUESTS,
            &[
                (attr::LLM_TENANT, "solo"),
                (attr::ERROR_TYPE, "concurrency_limit_exceeded")
            ]
        ),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_trace_continues_to_the_upstream_and_models_are_listed() {
    let got = Arc::new(std::sync::Mutex::new(None::<String>));
    let seen = got.clone();
    let echo = fake(
        axum::Router::new()
            .route(
                "/v1/chat/completions",
                post(move |headers: axum::http::HeaderMap| {
                    let seen = seen.clone();
                    async move {
                        *seen.lock().unwrap() = headers
                            .get("traceparent")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        assert!(headers.get("authorization").is_none(), "keys stay at the gateway");
                        axum::Json(serde_json::json!({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}))
                    }
                }),
            )
            .route(
                "/v1/models",
                get(|| async { axum::Json(serde_json::json!({"data": [{"id": "m-a"}]})) }),
            ),
    )
    .await;
    let gw = Running::start(config(&[&echo])).await;
    let caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let response = gw
        .chat(false)
        .header("traceparent", caller)
        .bearer_auth("sk-anything")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let upstream = got
        .lock()
        .unwrap()
        .clone()
        .expect("traceparent sent upstream");
    assert!(
        upstream.starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
        "same trace: {upstream}"
    );

    let probe = gw.gateway.spawn_probe();
    let listed = eventually(Duration::from_secs(3), || {
        gw.gateway.upstreams().all()[0].models() == vec!["m-a".to_owned()]
    })
    .await;
    probe.abort();
    assert!(listed, "the probe learnt the upstream's models");
    let models: serde_json::Value = gw
        .client
        .get(gw.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], "m-a");
    let unserved = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .json(&serde_json::json!({"model": "other", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(unserved.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disaggregated_pool_prefills_on_one_worker_and_decodes_on_another() {
    let (p, d) = (sim().await, sim().await);
    let mut upstreams = upstreams(&[&p, &d]);
    upstreams[0].name = "p".into();
    upstreams[0].role = infermon_gateway::Role::Prefill;
    upstreams[1].name = "d".into();
    upstreams[1].role = infermon_gateway::Role::Decode;
    let mut c = GatewayConfig::new(upstreams);
    c.first_byte_timeout = Duration::from_secs(5);
    c.validate().expect("a P/D pool is a valid config");
    let gw = Running::start(c).await;

    let response = gw.chat(true).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["x-infermon-upstream"],
        "d",
        "the stream comes from decode"
    );
    let events = events(response).await;
    let usage: serde_json::Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(
        usage["usage"]["completion_tokens"], 8,
        "all tokens from the decode worker"
    );

    let m = gw.metrics();
    for upstream in ["p", "d"] {
        let ok = [
            (attr::LLM_UPSTREAM, upstream),
            (attr::LLM_ATTEMPT_OUTCOME, "ok"),
        ];
        assert_eq!(counter(&m, metric::GATEWAY_ATTEMPTS, &ok), 1, "{upstream}");
    }
    let ttft = [(attr::LLM_UPSTREAM, "d")];
    assert_eq!(histogram(&m, metric::TIME_TO_FIRST_TOKEN, &ttft).0, 1);

    // A prefill pool without decode workers is refused at startup.
    let mut half = GatewayConfig::new(common::upstreams(&[&p]));
    half.upstreams[0].role = infermon_gateway::Role::Prefill;
    assert!(half.validate().unwrap_err().to_string().contains("decode"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_cache_routing_steers_away_from_a_nearly_full_engine() {
    // An engine reporting a 97 % full KV cache (vLLM's metric name) beside a simulator.
    let full = fake(
        axum::Router::new()
            .route(
                "/metrics",
                get(|| async {
                    "# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{engine=\"0\",model_name=\"llama-3.1-8b-instruct\"} 0.97\n"
                }),
            )
            .route(
                "/v1/models",
                get(|| async { axum::Json(serde_json::json!({"data": [{"id": MODEL}]})) }),
            ),
    )
    .await;
    let roomy = sim().await;
    let mut c = config(&[&full, &roomy]);
    c.routing = infermon_gateway::Routing::KvCache;
    c.probe_interval = Duration::from_millis(100);
    let gw = Running::start(c).await;
    let probe = gw.gateway.spawn_probe();
    let probed = eventually(Duration::from_secs(3), || {
        gw.gateway.upstreams().all()[0].kv_usage() == Some(0.97)
            && gw.gateway.upstreams().all()[1].kv_usage().is_some()
    })
    .await;
    assert!(probed, "the probe read both upstreams' KV usage");
    for _ in 0..4 {
        let response = gw.chat(false).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-infermon-upstream"], "u1");
    }
    probe.abort();
    let m = gw.metrics();
    let headers = [(attr::LLM_UPSTREAM, "u1")];
    assert_eq!(
        histogram(&m, metric::GATEWAY_TIME_TO_HEADERS, &headers).0,
        4
    );
}
