//! The gateway's HTTP/1.1 client to its upstreams: pooled keep-alive connections with
//! `TCP_NODELAY` (a streamed token is not held back by Nagle's algorithm on this hop either)
//! and a connect timeout; TLS for `https://` upstreams ([`crate::tls`]).

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::tls::{Connector, UpstreamTls};

/// How long a `/v1/models` probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest `/v1/models` answer read.
const PROBE_MAX_BYTES: usize = 1024 * 1024;
/// Pooled connections idle longer than this are closed by the gateway first: engines close
/// idle keep-alive connections after 5 s (vLLM's uvicorn), and a request sent on a connection
/// the upstream is closing fails.
const POOL_IDLE: Duration = Duration::from_secs(4);

#[derive(Clone, Debug)]
pub struct UpstreamClient {
    client: Client<Connector, Full<Bytes>>,
}

impl UpstreamClient {
    /// `connect_timeout` bounds the TCP connect and, separately, the TLS handshake.
    pub fn new(connect_timeout: Duration, tls: UpstreamTls) -> Self {
        let connector = Connector::new(connect_timeout, tls);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .build(connector);
        Self { client }
    }

    pub async fn send(
        &self,
        request: http::Request<Full<Bytes>>,
    ) -> Result<http::Response<Incoming>, hyper_util::client::legacy::Error> {
        self.client.request(request).await
    }

    /// `base`'s KV cache usage (0–1) from its `/metrics`: vLLM's `vllm:kv_cache_usage_perc`
    /// (a fraction despite its name) or infermon's `llm_kv_cache_usage_ratio`; the highest
    /// series if there are several (one engine per model or data-parallel rank).
    pub async fn kv_usage(&self, base: &str) -> Option<f64> {
        let body = self.probe(base, "/metrics", PROBE_MAX_BYTES * 4).await?;
        kv_usage_in(&String::from_utf8_lossy(&body))
    }

    /// The model ids `base`'s `/v1/models` lists, or `None` if it does not answer well.
    pub async fn models(&self, base: &str) -> Option<HashSet<String>> {
        let body = self.probe(base, "/v1/models", PROBE_MAX_BYTES).await?;
        let list: serde_json::Value = serde_json::from_slice(&body).ok()?;
        Some(
            list["data"]
                .as_array()?
                .iter()
                .filter_map(|m| m["id"].as_str().map(str::to_owned))
                .collect(),
        )
    }

    /// The body of `GET base+path` if it answers 2xx within the probe timeout and `limit` bytes.
    async fn probe(&self, base: &str, path: &str, limit: usize) -> Option<Bytes> {
        let request = http::Request::get(format!("{base}{path}"))
            .body(Full::new(Bytes::new()))
            .ok()?;
        let fetch = async {
            let response = self.send(request).await.ok()?;
            if !response.status().is_success() {
                return None;
            }
            let body = http_body_util::Limited::new(response.into_body(), limit)
                .collect()
                .await
                .ok()?;
            Some(body.to_bytes())
        };
        tokio::time::timeout(PROBE_TIMEOUT, fetch).await.ok()?
    }
}

/// The KV cache usage in a Prometheus text exposition (see [`UpstreamClient::kv_usage`]).
fn kv_usage_in(text: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let name = l.split(['{', ' ']).next()?;
            if name != "vllm:kv_cache_usage_perc" && name != "llm_kv_cache_usage_ratio" {
                return None;
            }
            l.rsplit(' ').next()?.parse::<f64>().ok()
        })
        .filter(|v| v.is_finite())
        .reduce(f64::max)
}

#[cfg(test)]
mod tests {
    use super::kv_usage_in;

    #[test]
    fn kv_usage_is_read_from_vllm_and_infermon_names() {
        let vllm = "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.\n\
                    # TYPE vllm:kv_cache_usage_perc gauge\n\
                    vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"m\"} 0.25\n\
                    vllm:kv_cache_usage_perc{engine=\"1\",model_name=\"m\"} 0.75\n\
                    vllm:num_requests_running{engine=\"0\"} 3.0\n";
        assert_eq!(kv_usage_in(vllm), Some(0.75));
        assert_eq!(kv_usage_in("llm_kv_cache_usage_ratio 0.5\n"), Some(0.5));
        assert_eq!(kv_usage_in("other_metric 1\n"), None);
    }
}
