//! Small clients for the Prometheus and Jaeger HTTP APIs, and polling.

use serde_json::Value;
use std::future::Future;
use std::time::{Duration, Instant};

/// One series of an instant query: its labels and value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub labels: serde_json::Map<String, Value>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).and_then(Value::as_str)
    }
}

/// Prometheus' HTTP API.
#[derive(Clone)]
pub struct Prometheus {
    base: String,
    http: reqwest::Client,
}

impl Prometheus {
    pub fn new(base: &str) -> Self {
        Prometheus {
            base: base.trim_end_matches('/').to_string(),
            http: client(),
        }
    }

    /// An instant query; a query error is an `Err` with Prometheus' message.
    pub async fn query(&self, promql: &str) -> Result<Vec<Sample>, String> {
        let data = self.get("/api/v1/query", &[("query", promql)]).await?;
        let result = data["result"].as_array().cloned().unwrap_or_default();
        Ok(result
            .into_iter()
            .map(|r| Sample {
                labels: r["metric"].as_object().cloned().unwrap_or_default(),
                value: r["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN),
            })
            .collect())
    }

    /// The sum of an instant query's values (0 when it returns nothing).
    pub async fn query_sum(&self, promql: &str) -> Result<f64, String> {
        Ok(self.query(promql).await?.iter().map(|s| s.value).sum())
    }

    /// Trace ids of the exemplars stored for `promql` over the last `window`.
    pub async fn exemplar_trace_ids(
        &self,
        promql: &str,
        window: Duration,
    ) -> Result<Vec<String>, String> {
        let end = now_secs();
        let start = end - window.as_secs_f64();
        let data = self
            .get(
                "/api/v1/query_exemplars",
                &[
                    ("query", promql),
                    ("start", &start.to_string()),
                    ("end", &end.to_string()),
                ],
            )
            .await?;
        let mut ids = Vec::new();
        for series in data.as_array().into_iter().flatten() {
            for exemplar in series["exemplars"].as_array().into_iter().flatten() {
                if let Some(id) = exemplar["labels"]["trace_id"].as_str() {
                    ids.push(id.to_string());
                }
            }
        }
        Ok(ids)
    }

    /// Metric names Prometheus knows.
    pub async fn metric_names(&self) -> Result<Vec<String>, String> {
        let data = self.get("/api/v1/label/__name__/values", &[]).await?;
        Ok(data
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect())
    }

    async fn get(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let request = self.http.get(format!("{}{path}", self.base)).query(params);
        let body = send_for_json(request, &format!("GET {path}")).await?;
        if body["status"] != "success" {
            return Err(format!("GET {path} {params:?}: {}", body["error"]));
        }
        Ok(body["data"].clone())
    }
}

/// Jaeger's query HTTP API (the trace store of the native test stack).
#[derive(Clone)]
pub struct Jaeger {
    base: String,
    http: reqwest::Client,
}

/// A span as Jaeger returns it, reduced to what the tests look at.
#[derive(Debug, Clone)]
pub struct TraceSpan {
    pub span_id: String,
    pub parent_id: Option<String>,
    pub name: String,
    pub service: String,
    pub tags: serde_json::Map<String, Value>,
    pub events: Vec<(String, serde_json::Map<String, Value>)>,
    /// Start, microseconds since the Unix epoch (Jaeger's resolution).
    pub start_us: u64,
    pub duration_us: u64,
}

impl Jaeger {
    pub fn new(base: &str) -> Self {
        Jaeger {
            base: base.trim_end_matches('/').to_string(),
            http: client(),
        }
    }

    /// Ids of the latest traces (at most `limit`) with a span from `service`.
    pub async fn trace_ids(&self, service: &str, limit: usize) -> Result<Vec<String>, String> {
        let url = format!(
            "{}/api/traces?service={service}&limit={limit}&lookback=1h",
            self.base
        );
        let body = send_for_json(self.http.get(&url), &format!("GET {url}")).await?;
        Ok(body["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["traceID"].as_str().map(str::to_string))
            .collect())
    }

    /// The spans of one trace, or `None` while Jaeger does not have it.
    pub async fn trace(&self, trace_id: &str) -> Result<Option<Vec<TraceSpan>>, String> {
        let url = format!("{}/api/traces/{trace_id}", self.base);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let body: Value = response
            .json()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let Some(trace) = body["data"].as_array().and_then(|d| d.first()) else {
            return Ok(None);
        };
        let services: serde_json::Map<String, Value> =
            trace["processes"].as_object().cloned().unwrap_or_default();
        let spans = trace["spans"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| TraceSpan {
                span_id: s["spanID"].as_str().unwrap_or_default().to_string(),
                parent_id: s["references"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|r| r["refType"] == "CHILD_OF")
                    .and_then(|r| r["spanID"].as_str().map(str::to_string)),
                name: s["operationName"].as_str().unwrap_or_default().to_string(),
                service: s["processID"]
                    .as_str()
                    .and_then(|p| services.get(p))
                    .and_then(|p| p["serviceName"].as_str())
                    .unwrap_or_default()
                    .to_string(),
                tags: key_values(&s["tags"]),
                start_us: s["startTime"].as_u64().unwrap_or_default(),
                duration_us: s["duration"].as_u64().unwrap_or_default(),
                events: s["logs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|log| {
                        let fields = key_values(&log["fields"]);
                        let name = fields
                            .get("event")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string();
                        (name, fields)
                    })
                    .collect(),
            })
            .collect();
        Ok(Some(spans))
    }
}

fn key_values(list: &Value) -> serde_json::Map<String, Value> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|kv| Some((kv["key"].as_str()?.to_string(), kv["value"].clone())))
        .collect()
}

/// Sends `request` and reads its JSON body; a transport or decoding error is an `Err` that
/// starts with `what` (e.g. `GET /api/v1/query`).
pub(crate) async fn send_for_json(
    request: reqwest::RequestBuilder,
    what: &str,
) -> Result<Value, String> {
    let response = request.send().await.map_err(|e| format!("{what}: {e}"))?;
    response.json().await.map_err(|e| format!("{what}: {e}"))
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// Polls `probe` every 500 ms until it yields `Some`, or fails with `what` after `timeout`,
/// including the last error the probe reported.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, String>>,
{
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no answer yet");
    loop {
        match probe().await {
            Ok(Some(v)) => return v,
            Ok(None) => {}
            Err(e) => last = e,
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what} (last: {last})");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until `url` answers 2xx (a service's health endpoint), for at most 30 s.
pub async fn wait_healthy(url: &str) {
    let http = reqwest::Client::new();
    eventually(&format!("{url} healthy"), Duration::from_secs(30), || {
        let http = http.clone();
        let url = url.to_string();
        async move {
            match http.get(&url).send().await {
                Ok(r) if r.status().is_success() => Ok(Some(())),
                Ok(r) => Err(format!("status {}", r.status())),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await
}
