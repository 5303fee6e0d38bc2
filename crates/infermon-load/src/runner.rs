//! Driving a run: open-loop Poisson arrivals or closed-loop clients, a stop condition (duration,
//! request count, or an external shutdown), and draining what is in flight.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::HeaderValue;
use infermon::contract::{span, value};
use opentelemetry::global::BoxedTracer;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::client::{Client, Endpoint};
use crate::config::{Arrival, ConfigError, LoadConfig};
use crate::openai::{Api, RequestBody};
use crate::outcome::{RequestError, RequestRecord};
use crate::prompt::PromptText;
use crate::request_log::RequestLog;
use crate::stats::{Progress, Recorder};
use crate::summary::Summary;

/// A validated load run, ready to start.
pub struct LoadGenerator {
    config: LoadConfig,
    endpoints: Vec<Endpoint>,
    http: reqwest::Client,
    tracer: Option<BoxedTracer>,
    recorder: Arc<Recorder>,
    request_log: Option<RequestLog>,
}

impl LoadGenerator {
    /// Validates `config`. Client spans go to the global tracer provider unless
    /// [`with_tracer`](Self::with_tracer) names another.
    pub fn new(config: LoadConfig) -> Result<Self, ConfigError> {
        let endpoints = config.validate()?;
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .tcp_nodelay(true)
            // Closed loop reuses one connection per client; open loop may need many more.
            .pool_max_idle_per_host(usize::MAX)
            .build()
            .map_err(|e| ConfigError::HttpClient(e.to_string()))?;
        Ok(Self {
            config,
            endpoints,
            http,
            tracer: None,
            recorder: Arc::new(Recorder::new()),
            request_log: None,
        })
    }

    /// Sends client spans to `tracer` (tests use an in-memory exporter's provider).
    pub fn with_tracer(mut self, tracer: BoxedTracer) -> Self {
        self.tracer = Some(tracer);
        self
    }

    /// Also writes one JSON line per request to `log` ([`RequestLog`]); `run` flushes it.
    pub fn with_request_log(mut self, log: RequestLog) -> Self {
        self.request_log = Some(log);
        self
    }

    pub fn config(&self) -> &LoadConfig {
        &self.config
    }

    /// A handle to watch the run from another task while it goes.
    pub fn progress(&self) -> Progress {
        Progress {
            recorder: self.recorder.clone(),
        }
    }

    /// Runs until the duration or request count is reached (in-flight requests are then
    /// awaited) or `shutdown` resolves (in-flight requests are then cancelled), and returns the
    /// summary.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<Summary, ConfigError> {
        let authorization = match &self.config.api_key {
            Some(key) => Some(
                HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| ConfigError::ApiKey)?,
            ),
            None => None,
        };
        let operation = match self.config.api {
            Api::Chat => span::CLIENT_PREFIX,
            Api::Completions => value::OPERATION_TEXT_COMPLETION,
        };
        let tracer = self
            .tracer
            .unwrap_or_else(|| opentelemetry::global::tracer(env!("CARGO_PKG_NAME")));
        let client = Client::new(
            self.http,
            tracer,
            operation,
            &self.config.model,
            authorization,
        );
        let prompts = PromptText::new(self.config.prompt_tokens.practical_max());
        self.recorder.start();
        let shared = Arc::new(Shared {
            budget: Budget::new(self.config.duration, self.config.requests),
            client,
            endpoints: self.endpoints,
            prompts,
            sequence: AtomicU64::new(0),
            recorder: self.recorder.clone(),
            request_log: self.request_log,
            config: self.config,
        });

        let (cancel_tx, cancel_rx) = watch::channel(false);
        let seed = shared.config.seed.unwrap_or_else(rand::random);
        let work = async {
            match shared.config.arrival {
                Arrival::Poisson { rate } => open_loop(&shared, rate, seed, cancel_rx).await,
                Arrival::Closed { concurrency } => {
                    closed_loop(&shared, concurrency, seed, cancel_rx).await
                }
            }
        };
        tokio::pin!(work, shutdown);
        tokio::select! {
            () = &mut work => {}
            () = &mut shutdown => {
                let _ = cancel_tx.send(true);
                work.await;
            }
        }
        self.recorder.stop();
        if let Some(log) = &shared.request_log {
            // A lost line is the log's problem, reported on stderr; the run's numbers stand.
            if let Err(e) = log.finish() {
                eprintln!("warning: {e}: {}", e.source);
            }
        }
        Ok(self.recorder.summary())
    }
}

/// What every request task of a run reads.
struct Shared {
    config: LoadConfig,
    client: Client,
    endpoints: Vec<Endpoint>,
    prompts: PromptText,
    budget: Budget,
    /// Numbers requests: picks the round-robin target and starts each prompt.
    sequence: AtomicU64,
    recorder: Arc<Recorder>,
    request_log: Option<RequestLog>,
}

/// Lengths of one request, drawn by whoever schedules it.
#[derive(Clone, Copy)]
struct Plan {
    prompt_tokens: u64,
    max_tokens: u64,
}

impl Shared {
    fn plan(&self, rng: &mut SmallRng) -> Plan {
        Plan {
            prompt_tokens: self.config.prompt_tokens.sample(rng),
            max_tokens: self.config.output_tokens.sample(rng),
        }
    }

    async fn send(&self, plan: Plan, cancel: &mut watch::Receiver<bool>) {
        let n = self.sequence.fetch_add(1, Ordering::Relaxed);
        let endpoint = &self.endpoints[(n % self.endpoints.len() as u64) as usize];
        let prompt = self.prompts.build(plan.prompt_tokens, n);
        let body = RequestBody {
            api: self.config.api,
            model: &self.config.model,
            prompt: &prompt,
            max_tokens: plan.max_tokens,
            stream: self.config.stream,
            temperature: self.config.temperature,
            ignore_eos: self.config.ignore_eos,
        };
        self.recorder.request_sent();
        let record = self.client.execute(endpoint, body, cancel).await;
        self.finished(&record);
    }

    /// Counts a request that ended (or was never sent) and logs it.
    fn finished(&self, record: &RequestRecord) {
        self.recorder.record(record);
        if let Some(log) = &self.request_log {
            log.write(record);
        }
    }
}

/// When to stop sending: a deadline, a request count, both or neither.
struct Budget {
    deadline: Option<Instant>,
    remaining: AtomicU64,
}

impl Budget {
    fn new(duration: Option<Duration>, requests: Option<u64>) -> Self {
        Self {
            deadline: duration.map(|d| Instant::now() + d),
            remaining: AtomicU64::new(requests.unwrap_or(u64::MAX)),
        }
    }

    /// Takes one request from the budget; false once it is spent.
    fn try_take(&self) -> bool {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        self.remaining
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }
}

async fn open_loop(shared: &Arc<Shared>, rate: f64, seed: u64, cancel: watch::Receiver<bool>) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut tasks = JoinSet::new();
    let mut watch_cancel = cancel.clone();
    let mut next = Instant::now();
    'arrivals: loop {
        // Wait for the next arrival, reaping finished requests meanwhile (JoinSet keeps them
        // until joined); never sleep past the deadline.
        let wake = shared.budget.deadline.map_or(next, |d| d.min(next));
        let sleep = tokio::time::sleep_until(wake.into());
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                biased;
                _ = watch_cancel.wait_for(|c| *c) => break 'arrivals,
                () = &mut sleep => break,
                Some(_) = tasks.join_next() => {}
            }
        }
        if !shared.budget.try_take() {
            break;
        }
        let plan = shared.plan(&mut rng);
        if tasks.len() >= shared.config.max_in_flight {
            shared.recorder.request_sent();
            shared.finished(&RequestRecord::failed(
                RequestError::ClientOverload,
                Duration::ZERO,
            ));
        } else {
            let shared = shared.clone();
            let mut cancel = cancel.clone();
            tasks.spawn(async move { shared.send(plan, &mut cancel).await });
        }
        next += exponential_gap(&mut rng, rate);
    }
    while tasks.join_next().await.is_some() {}
}

async fn closed_loop(
    shared: &Arc<Shared>,
    concurrency: usize,
    seed: u64,
    cancel: watch::Receiver<bool>,
) {
    let mut tasks = JoinSet::new();
    for worker in 0..concurrency as u64 {
        let shared = shared.clone();
        let mut cancel = cancel.clone();
        // Distinct, reproducible streams per worker.
        let mut rng = SmallRng::seed_from_u64(seed ^ worker.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        tasks.spawn(async move {
            while !*cancel.borrow() && shared.budget.try_take() {
                let plan = shared.plan(&mut rng);
                shared.send(plan, &mut cancel).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// Time to the next Poisson arrival: exponentially distributed with mean 1/`rate`.
fn exponential_gap(rng: &mut SmallRng, rate: f64) -> Duration {
    // random() is in [0, 1), so 1 - u is in (0, 1] and its logarithm is finite.
    let u: f64 = rng.random();
    Duration::from_secs_f64(-(1.0 - u).ln() / rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_gaps_average_one_over_the_rate() {
        let mut rng = SmallRng::seed_from_u64(9);
        let n = 100_000;
        let total: f64 = (0..n)
            .map(|_| exponential_gap(&mut rng, 50.0).as_secs_f64())
            .sum();
        let mean = total / n as f64;
        assert!((mean - 0.02).abs() < 0.0005, "mean gap {mean}");
    }

    #[test]
    fn budget_counts_requests_down_to_zero() {
        let budget = Budget::new(None, Some(3));
        assert_eq!((0..5).filter(|_| budget.try_take()).count(), 3);
        let expired = Budget::new(Some(Duration::ZERO), None);
        assert!(!expired.try_take());
    }
}
