//! A simulated continuous-batching LLM engine with an OpenAI-compatible HTTP API.
//!
//! It is a **test and demo workload**: it behaves like a vLLM-v1-style server (bounded waiting
//! queue, continuous batching, paged KV cache with preemption by recompute, optional prefix
//! cache and chunked prefill, roofline step timing from a hardware/model profile) and emits the
//! infermon telemetry contract, with `gen_ai.provider.name = infermon.simulator`. It never
//! pretends to be a model: output is deterministic filler text.
//!
//! # API (for the `infermon sim` / `infermon demo` commands)
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use infermon_sim::{SimConfig, SimTelemetry, Simulator};
//!
//! // Every field has a default; a TOML file may set any subset of them.
//! let mut config = SimConfig::load("sim.toml".as_ref())?; // or SimConfig::default()
//! config.time_scale = 10.0;                                   // flags override the file
//!
//! // Telemetry: request spans go through `tracing` (whatever subscriber the binary installed,
//! // e.g. `infermon::telemetry::init`), metrics through this meter.
//! let meter = opentelemetry::global::meter("infermon-sim");
//! let sim = Simulator::start(config, SimTelemetry::new(&meter))?; // spawns the engine task
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! infermon_sim::serve(sim.clone(), listener, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! sim.shutdown().await; // stops the engine; in-flight requests end as errors
//! # Ok(()) }
//! ```
//!
//! - [`SimConfig`] (serde, `#[serde(default)]` everywhere, unknown keys rejected):
//!   `model` (served model name, default from the profile), `profile` (a built-in name such as
//!   `h100-80gb-llama-8b` / `a100-40gb-llama-8b`, or a path to a profile TOML), `time_scale`,
//!   `seed`, `[scheduler]` (`max_num_seqs`, `max_num_batched_tokens`, `max_waiting`,
//!   `chunked_prefill`, `max_model_len`), `[kv_cache]` (`block_size`, `gpu_memory_utilization`,
//!   `prefix_caching`), `[output]` (natural output length range), `[faults]` (always-on faults),
//!   `scenario` (path to a fault scenario TOML), `metrics` (`"vllm"`, the default: serve
//!   `GET /metrics` in vLLM's Prometheus text format; `"none"`), `trace_format`
//!   ([`TraceFormat`]: `"infermon"`, `"vllm"`, `"both"`), `simulated_gpus`, `max_body_bytes`.
//! - [`Profile`]: `Profile::builtin(name)`, `Profile::load(path)`, `Profile::resolve(name_or_path)`,
//!   `Profile::builtin_names()`.
//! - [`Scenario`]: fault schedule, `Scenario::load(path)`; see `docs/simulator.md`.
//! - [`Simulator::start`], or [`Simulator::start_with_vllm_traces`] with a [`VllmTraces`]
//!   provider for vLLM-shaped spans → [`SimHandle`] (cheap to clone): `router()` gives the axum
//!   [`axum::Router`] (`/v1/chat/completions`, `/v1/completions`, `/v1/models`, `/health`,
//!   `/ping`, `/version`, `/tokenize`, `/detokenize`, and `/metrics` unless `metrics = "none"`),
//!   `stats()` a snapshot of engine state ([`EngineStats`]),
//!   `gpu_snapshot()` (simulated GPUs), `active_faults()`, `model()`, `max_model_len()`,
//!   `num_kv_blocks()`, `config()`, `profile()`, `shutdown()`.
//! - [`serve`] / [`serve_with`] ([`ServeOptions`]): the router behind the simulator's HTTP/1.1
//!   server (`TCP_NODELAY`, header and idle timeouts, a connection cap, a bounded drain on
//!   shutdown).
//! - Errors are [`SimError`] (thiserror); bad config files produce one-line messages naming the
//!   file and the field.
//!
//! `docs/simulator.md` describes the model (scheduler, KV cache, roofline timing, token
//! approximation), the HTTP API and its errors, fault scenarios and the telemetry.

mod api;
mod config;
pub mod disagg;
mod engine;
mod error;
mod faults;
mod gpu;
mod kv_cache;
mod profile;
mod roofline;
mod scheduler;
mod server;
mod telemetry;
pub mod tokens;
mod toml_file;
pub mod vllm_format;
pub mod vllm_trace;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use infermon::instruments::InferenceMetrics;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

#[doc(hidden)]
pub use api::check_request;
pub use api::{router, ApiError, Usage};
pub use config::{KvCacheConfig, MetricsFormat, OutputConfig, SchedulerConfig, SimConfig};
pub use disagg::{KvTransferParams, KvTransport};
pub use engine::EngineStats;
pub use error::SimError;
pub use faults::{ErrorFault, ErrorKind, Faults, Scenario, TimedFaults};
pub use profile::{GpuSpec, ModelSpec, Profile, DEFAULT_PROFILE};
pub use server::{serve, serve_with, ServeOptions};
pub use telemetry::SimTelemetry;
pub use vllm_trace::{TraceFormat, VllmTraces};

use engine::{Command, Engine, Shared, SimClock};
use gpu::SimulatedGpus;
use vllm_format::VllmMetrics;

/// Starts simulated engines.
pub struct Simulator;

impl Simulator {
    /// Resolves `config` (profile, scenario, limits), then spawns the engine task on the current
    /// Tokio runtime.
    pub fn start(config: SimConfig, telemetry: SimTelemetry) -> Result<SimHandle, SimError> {
        Self::start_with_vllm_traces(config, telemetry, None)
    }

    /// [`start`](Self::start), emitting vLLM's request spans through `vllm_traces` when the
    /// configuration's `trace_format` asks for them.
    pub fn start_with_vllm_traces(
        config: SimConfig,
        telemetry: SimTelemetry,
        vllm_traces: Option<VllmTraces>,
    ) -> Result<SimHandle, SimError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| SimError::NoRuntime)?;
        let resolved = config.resolve()?;
        let scenario = match &config.scenario {
            Some(path) => Scenario::load(path)?,
            None => Scenario::default(),
        };
        let (commands, receiver) = mpsc::unbounded_channel();
        let engine_metrics = telemetry.engine_metrics(&resolved.model);
        let shared = Arc::new(Shared {
            clock: SimClock::new(config.time_scale),
            scenario,
            rng: Mutex::new(SmallRng::seed_from_u64(config.seed)),
            fresh_waiting: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            stats: Mutex::new(EngineStats::default()),
            vllm: (config.metrics == MetricsFormat::Vllm)
                .then(|| Mutex::new(VllmMetrics::new(resolved.max_model_len))),
            commands,
            vllm_traces: vllm_traces.filter(|_| config.trace_format.emits_vllm()),
            resolved,
        });
        let engine = Engine::new(Arc::clone(&shared), engine_metrics);
        let task = runtime.spawn(engine.run(receiver));
        let gpus = (config.simulated_gpus > 0).then(|| {
            SimulatedGpus::start(
                config.simulated_gpus,
                Arc::clone(&shared),
                telemetry.meter(),
            )
        });
        Ok(SimHandle {
            shared,
            request_metrics: telemetry.request_metrics(),
            kv_transfer: telemetry.kv_transfer_metrics(),
            task: Arc::new(Mutex::new(Some(task))),
            gpus: Arc::new(Mutex::new(gpus)),
            started_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        })
    }
}

/// A running simulated engine. Cheap to clone; every clone talks to the same engine.
#[derive(Clone)]
pub struct SimHandle {
    shared: Arc<Shared>,
    request_metrics: InferenceMetrics,
    kv_transfer: telemetry::KvTransferMetrics,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
    gpus: Arc<Mutex<Option<SimulatedGpus>>>,
    started_unix: u64,
}

impl SimHandle {
    /// The HTTP API bound to this engine.
    pub fn router(&self) -> axum::Router {
        api::router(self.clone())
    }

    /// A snapshot of the engine's state and totals (updated every step).
    pub fn stats(&self) -> EngineStats {
        self.shared.stats()
    }

    /// This engine's id in disaggregated prefill/decode (`remote_engine_id`): unique per
    /// process start.
    pub fn engine_id(&self) -> String {
        format!("infermon-sim-{}-{}", std::process::id(), self.started_unix)
    }

    /// The served model name.
    pub fn model(&self) -> &str {
        &self.shared.resolved.model
    }

    pub fn config(&self) -> &SimConfig {
        &self.shared.resolved.config
    }

    pub fn profile(&self) -> &Profile {
        &self.shared.resolved.profile
    }

    /// Context length in tokens (prompt + output).
    pub fn max_model_len(&self) -> u32 {
        self.shared.resolved.max_model_len
    }

    /// KV cache blocks in total.
    pub fn num_kv_blocks(&self) -> u32 {
        self.shared.resolved.num_blocks
    }

    /// The faults in effect now (configured ones plus the scenario's current ones).
    pub fn active_faults(&self) -> Faults {
        self.shared.faults_now()
    }

    /// Stops the engine: requests still in flight end as errors (`error.type` = `shutdown`),
    /// later ones get 503. Returns once the engine task has ended.
    pub async fn shutdown(&self) {
        let _ = self.shared.commands.send(Command::Shutdown);
        let task = engine::lock(&self.task).take();
        if let Some(task) = task {
            let _ = task.await;
        }
        let gpus = engine::lock(&self.gpus).take();
        if let Some(gpus) = gpus {
            gpus.shutdown().await;
        }
        if let Some(traces) = self.shared.vllm_traces.clone() {
            // The provider's shutdown blocks until its export thread has flushed.
            let _ = tokio::task::spawn_blocking(move || traces.shutdown()).await;
        }
    }

    /// The simulated GPUs' latest readings (empty unless `simulated_gpus` > 0).
    pub fn gpu_snapshot(&self) -> infermon_gpu::GpuSnapshot {
        engine::lock(&self.gpus)
            .as_ref()
            .map(|g| g.monitor.snapshot())
            .unwrap_or_default()
    }

    fn shared(&self) -> &Shared {
        &self.shared
    }

    fn started_unix(&self) -> u64 {
        self.started_unix
    }
}
