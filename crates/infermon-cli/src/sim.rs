//! `infermon sim`: the simulated inference engine behind an OpenAI-compatible HTTP API, with its
//! telemetry exported over OTLP.

use std::path::PathBuf;
use std::str::FromStr;

use anyhow::Context as _;
use clap::builder::EnumValueParser;
use infermon::contract::{value, INSTRUMENTATION_SCOPE};
use infermon_sim::{
    MetricsFormat, SimConfig, SimHandle, SimTelemetry, Simulator, TraceFormat, VllmTraces,
};
use opentelemetry_sdk::trace::Sampler;
use tokio::net::TcpListener;

use crate::args::{ServerArgs, TelemetryArgs};
use crate::config_file::{ConfigFileError, Layer, Layered};

#[derive(clap::Args, Debug)]
#[command(
    after_help = "The simulator is a test and demo workload: it behaves like a \
    continuous-batching server (paged KV cache, preemption, roofline step timing) and emits \
    infermon's telemetry, but its output is filler text, not a model's.\n\n\
    Examples:\n  \
    infermon sim\n  \
    infermon sim --profile a100-40gb-llama-8b --time-scale 10 --metrics none\n  \
    infermon sim --scenario faults.toml --otlp-endpoint http://collector:4317\n  \
    infermon sim --kv-blocks 1000 --max-model-len 4096   # a small KV cache: preemptions"
)]
pub struct SimArgs {
    /// Address to serve the HTTP API on (port 0 picks a free port; the address is printed).
    #[arg(
        long,
        value_name = "ADDR",
        env = "INFERMON_LISTEN",
        default_value = "127.0.0.1:8000"
    )]
    pub listen: String,

    #[command(flatten)]
    pub engine: EngineArgs,

    /// Request spans to emit: infermon (the contract's request span with queue/prefill/decode
    /// children), vllm (vLLM 0.33's flat `llm_request` span instead, scope vllm.tracing.otel,
    /// for testing `infermon relay`), or both (the contract spans are then the ground truth)
    /// [default: the --sim-config file's trace_format, else infermon].
    #[arg(long, value_enum, value_name = "FORMAT", env = "INFERMON_TRACE_FORMAT")]
    pub trace_format: Option<TraceFormatArg>,

    #[command(flatten)]
    pub server: ServerArgs,

    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

impl Layered for SimArgs {
    fn layer(&mut self, layer: &mut Layer) -> Result<(), ConfigFileError> {
        layer.value("listen", &mut self.listen, String::from_str)?;
        self.engine.layer(layer)?;
        let formats = EnumValueParser::<TraceFormatArg>::new();
        layer.optional("trace_format", &mut self.trace_format, formats)?;
        self.server.layer(layer)?;
        self.telemetry.layer(layer)
    }
}

/// The simulated engine's settings (shared by `sim` and `demo`). Flags override the
/// `--sim-config` file, which overrides the simulator's defaults.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Simulated engine")]
pub struct EngineArgs {
    /// Simulator configuration TOML (scheduler, KV cache, output lengths, faults; see
    /// docs/simulator.md).
    #[arg(long, value_name = "FILE", env = "INFERMON_SIM_CONFIG")]
    pub sim_config: Option<PathBuf>,

    /// Hardware/model profile: a built-in name (h100-80gb-llama-8b, a100-40gb-llama-8b) or the
    /// path of a profile TOML [default: h100-80gb-llama-8b].
    #[arg(long, value_name = "NAME|FILE", env = "INFERMON_PROFILE")]
    pub profile: Option<String>,

    /// Served model name [default: the profile's model].
    #[arg(long, value_name = "NAME", env = "INFERMON_MODEL")]
    pub model: Option<String>,

    /// Run simulated time this many times faster than wall time (latencies shrink by as much).
    #[arg(long, value_name = "FACTOR", env = "INFERMON_TIME_SCALE")]
    pub time_scale: Option<f64>,

    /// Fault scenario TOML: error rates, latency spikes and KV pressure over time.
    #[arg(long, value_name = "FILE", env = "INFERMON_SCENARIO")]
    pub scenario: Option<PathBuf>,

    /// GET /metrics in this format (vllm, the default as vLLM always serves it: vLLM's
    /// Prometheus names; none: no /metrics).
    #[arg(long, value_enum, value_name = "FORMAT", env = "INFERMON_METRICS")]
    pub metrics: Option<MetricsArg>,

    /// Simulate this many GPUs whose telemetry follows the engine's load.
    #[arg(long, value_name = "N", env = "INFERMON_SIMULATED_GPUS")]
    pub simulated_gpus: Option<u32>,

    /// Link a decode request pulls its KV cache over from the prefill worker, in disaggregated
    /// prefill/decode (nvlink 450 GB/s, rdma 50 GB/s, tcp 3.125 GB/s; default rdma).
    #[arg(long, value_name = "LINK", env = "INFERMON_KV_TRANSPORT")]
    pub kv_transport: Option<infermon_sim::KvTransport>,

    /// Most sequences in the running batch.
    #[arg(long, value_name = "N", env = "INFERMON_MAX_NUM_SEQS")]
    pub max_num_seqs: Option<u32>,

    /// Most requests waiting to be scheduled; more are rejected with 503 [default: unbounded,
    /// as in vLLM].
    #[arg(long, value_name = "N", env = "INFERMON_MAX_WAITING")]
    pub max_waiting: Option<u32>,

    /// Use exactly this many KV cache blocks (small numbers make preemption easy to see; the
    /// context length must then fit in them, see --max-model-len).
    #[arg(long, value_name = "N", env = "INFERMON_KV_BLOCKS")]
    pub kv_blocks: Option<u32>,

    /// Context length in tokens, prompt plus output [default: the profile's model].
    #[arg(long, value_name = "TOKENS", env = "INFERMON_MAX_MODEL_LEN")]
    pub max_model_len: Option<u32>,

    /// Seed of the simulator's random choices (faults, natural output lengths).
    #[arg(long, value_name = "N", env = "INFERMON_SIM_SEED")]
    pub sim_seed: Option<u64>,
}

impl Layered for EngineArgs {
    fn layer(&mut self, layer: &mut Layer) -> Result<(), ConfigFileError> {
        layer.optional("sim_config", &mut self.sim_config, PathBuf::from_str)?;
        layer.optional("profile", &mut self.profile, String::from_str)?;
        layer.optional("model", &mut self.model, String::from_str)?;
        layer.optional("time_scale", &mut self.time_scale, f64::from_str)?;
        layer.optional("scenario", &mut self.scenario, PathBuf::from_str)?;
        let metrics = EnumValueParser::<MetricsArg>::new();
        layer.optional("metrics", &mut self.metrics, metrics)?;
        layer.optional("simulated_gpus", &mut self.simulated_gpus, u32::from_str)?;
        let transport = infermon_sim::KvTransport::from_str;
        layer.optional("kv_transport", &mut self.kv_transport, transport)?;
        layer.optional("max_num_seqs", &mut self.max_num_seqs, u32::from_str)?;
        layer.optional("max_waiting", &mut self.max_waiting, u32::from_str)?;
        layer.optional("kv_blocks", &mut self.kv_blocks, u32::from_str)?;
        layer.optional("max_model_len", &mut self.max_model_len, u32::from_str)?;
        layer.optional("sim_seed", &mut self.sim_seed, u64::from_str)
    }
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum TraceFormatArg {
    Infermon,
    Vllm,
    Both,
}

impl From<TraceFormatArg> for TraceFormat {
    fn from(arg: TraceFormatArg) -> Self {
        match arg {
            TraceFormatArg::Infermon => TraceFormat::Infermon,
            TraceFormatArg::Vllm => TraceFormat::Vllm,
            TraceFormatArg::Both => TraceFormat::Both,
        }
    }
}

/// Starts the engine emitting vLLM-shaped request spans (`--trace-format vllm|both`) through
/// their own provider, with vLLM's resource, to the same collector as the rest.
/// `traces_endpoint`: where the contract's traces would go (the vLLM spans follow them, so
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` sends them to a relay while metrics go elsewhere).
fn start_with_vllm_traces(
    config: SimConfig,
    telemetry: &infermon::telemetry::TelemetryGuard,
    args: &TelemetryArgs,
    traces_endpoint: &str,
) -> anyhow::Result<SimHandle> {
    let traces = args
        .exporting()
        .then(|| VllmTraces::otlp(traces_endpoint, args.service_name.as_deref()))
        .transpose()?;
    let meter = telemetry.meter(INSTRUMENTATION_SCOPE);
    Ok(Simulator::start_with_vllm_traces(
        config,
        SimTelemetry::new(&meter),
        traces,
    )?)
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum MetricsArg {
    /// No /metrics endpoint (telemetry goes out over OTLP only).
    None,
    /// vLLM's Prometheus metric names and labels.
    Vllm,
}

impl EngineArgs {
    pub fn sim_config(&self) -> anyhow::Result<SimConfig> {
        let mut config = match &self.sim_config {
            Some(path) => SimConfig::load(path)?,
            None => SimConfig::default(),
        };
        if let Some(profile) = &self.profile {
            config.profile = profile.clone();
        }
        if let Some(model) = &self.model {
            config.model = Some(model.clone());
        }
        if let Some(scale) = self.time_scale {
            config.time_scale = scale;
        }
        if let Some(scenario) = &self.scenario {
            config.scenario = Some(scenario.clone());
        }
        if let Some(metrics) = self.metrics {
            config.metrics = match metrics {
                MetricsArg::None => MetricsFormat::None,
                MetricsArg::Vllm => MetricsFormat::Vllm,
            };
        }
        if let Some(t) = self.kv_transport {
            config.kv_transport = t;
        }
        if let Some(n) = self.simulated_gpus {
            config.simulated_gpus = n;
        }
        if let Some(n) = self.max_num_seqs {
            config.scheduler.max_num_seqs = n;
        }
        if let Some(n) = self.max_waiting {
            config.scheduler.max_waiting = Some(n);
        }
        if let Some(n) = self.kv_blocks {
            config.kv_cache.num_blocks = Some(n);
        }
        if let Some(n) = self.max_model_len {
            config.scheduler.max_model_len = Some(n);
        }
        if let Some(seed) = self.sim_seed {
            config.seed = seed;
        }
        Ok(config)
    }

    /// Starts the engine with its telemetry going to `telemetry`'s providers.
    pub fn start(
        &self,
        telemetry: &infermon::telemetry::TelemetryGuard,
    ) -> anyhow::Result<SimHandle> {
        let config = self.sim_config()?;
        let meter = telemetry.meter(INSTRUMENTATION_SCOPE);
        let sim = Simulator::start(config, SimTelemetry::new(&meter))?;
        Ok(sim)
    }
}

/// Binds the API's address, with a message that says what to do when it is taken.
pub async fn bind(listen: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(listen).await.with_context(|| {
        format!(
            "cannot listen on {listen}: choose another address with --listen (e.g. 127.0.0.1:8001)"
        )
    })
}

pub async fn run(args: SimArgs) -> anyhow::Result<()> {
    // Check the configuration before binding or starting anything, so mistakes cost nothing.
    let mut config = args.engine.sim_config()?;
    if let Some(format) = args.trace_format {
        config.trace_format = format.into();
    }
    config.resolve()?;
    let listener = bind(&args.listen).await?;
    let mut telemetry_config = args.telemetry.config(value::SERVICE_SIM, true);
    if config.trace_format == TraceFormat::Vllm {
        // vLLM's span instead of the contract's: these are still recorded (the request
        // metrics derive from them) but not exported.
        telemetry_config = telemetry_config.with_sampler(Sampler::AlwaysOff);
    }
    let traces_endpoint = telemetry_config.traces_endpoint();
    let telemetry =
        infermon::telemetry::init(telemetry_config).context("cannot start telemetry")?;
    let sim = if config.trace_format.emits_vllm() {
        start_with_vllm_traces(config, &telemetry, &args.telemetry, &traces_endpoint)?
    } else {
        args.engine.start(&telemetry)?
    };
    let address = listener.local_addr()?;
    eprintln!(
        "infermon sim: serving `{}` ({}, simulated) on http://{address}/v1; Ctrl-C stops",
        sim.model(),
        sim.profile().name,
    );
    let options = args.server.options();
    let drain = options.drain_timeout;
    infermon_sim::serve_with(
        sim.clone(),
        listener,
        options,
        crate::signal::first_of_two_signals(drain),
    )
    .await?;
    sim.shutdown().await;
    if let Err(e) = telemetry.shutdown() {
        tracing::warn!("{}", args.telemetry.shutdown_message(&e));
    }
    Ok(())
}
