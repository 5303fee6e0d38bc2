//! Flags shared by several subcommands: telemetry export, the workload a load generator sends,
//! and an HTTP server's connection handling. Each flag also reads an environment variable
//! (shown by `--help`) and may be set in the `--config` file (see [`crate::config_file`]).

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use clap::builder::{EnumValueParser, RangedI64ValueParser};
use infermon::contract::attr;
use infermon::telemetry::{TelemetryConfig, TelemetryGuard};
use infermon_load::{Api, Arrival, ConfigError, LengthDist, LoadConfig};
use opentelemetry::KeyValue;

use crate::config_file::{ConfigFileError, Layer, Layered};

/// Where telemetry goes. Unset flags leave the standard `OTEL_*` variables in charge (including
/// the per-signal `OTEL_EXPORTER_OTLP_{TRACES,METRICS}_ENDPOINT`).
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Telemetry")]
pub struct TelemetryArgs {
    /// OTLP/gRPC endpoint of the OpenTelemetry Collector [default: http://localhost:4317].
    /// Without a reachable collector the command still runs: exports are retried and counted,
    /// with one warning per outage.
    #[arg(long, value_name = "URL", env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// OTLP/gRPC endpoint for traces only, over --otlp-endpoint (e.g. spans to `infermon relay`,
    /// metrics to the collector). OTEL_EXPORTER_OTLP_TRACES_ENDPOINT does the same when
    /// --otlp-endpoint is not given; a flag beats every variable.
    #[arg(long, value_name = "URL")]
    pub otlp_traces_endpoint: Option<String>,

    /// `service.name` of the exported telemetry [default: infermon-<command>].
    #[arg(long, value_name = "NAME", env = "OTEL_SERVICE_NAME")]
    pub service_name: Option<String>,

    /// Export nothing over OTLP (OTEL_SDK_DISABLED=true does the same).
    #[arg(long, env = "INFERMON_NO_OTLP")]
    pub no_otlp: bool,

    /// Whether `otlp_endpoint` came from OTEL_EXPORTER_OTLP_ENDPOINT: then it is left to the
    /// telemetry configuration, which also honours the per-signal variables.
    #[arg(skip)]
    pub endpoint_from_env: bool,
}

impl Layered for TelemetryArgs {
    fn layer(&mut self, layer: &mut Layer) -> Result<(), ConfigFileError> {
        layer.optional("otlp_endpoint", &mut self.otlp_endpoint, String::from_str)?;
        layer.optional(
            "otlp_traces_endpoint",
            &mut self.otlp_traces_endpoint,
            String::from_str,
        )?;
        layer.optional("service_name", &mut self.service_name, String::from_str)?;
        layer.switch("no_otlp", &mut self.no_otlp)?;
        self.endpoint_from_env = layer.given_by_env("otlp_endpoint");
        Ok(())
    }
}

impl TelemetryArgs {
    /// Starts OTLP export of traces and metrics and the stderr log. A collector that is not
    /// reachable is not an error; an invalid setting is. `simulated` marks the resource as a
    /// simulated workload (`llm.simulated = true`) so dashboards never mistake it for a model.
    pub fn init(
        &self,
        default_service_name: &str,
        simulated: bool,
    ) -> anyhow::Result<TelemetryGuard> {
        let config = self.config(default_service_name, simulated);
        infermon::telemetry::init(config).context("cannot start telemetry")
    }

    /// Whether OTLP export is on (neither `--no-otlp` nor `OTEL_SDK_DISABLED=true`).
    pub fn exporting(&self) -> bool {
        let sdk_disabled =
            std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
        !self.no_otlp && !sdk_disabled
    }

    /// The collector endpoint traces and metrics go to, as given or by default.
    pub fn endpoint(&self) -> String {
        self.otlp_endpoint
            .clone()
            .unwrap_or_else(|| infermon::telemetry::DEFAULT_ENDPOINT.to_owned())
    }

    /// Where the last telemetry was headed, for messages: the endpoint, and where traces went
    /// instead when --otlp-traces-endpoint split them off.
    fn destination(&self) -> String {
        match &self.otlp_traces_endpoint {
            Some(traces) => format!("{} (traces: {traces})", self.endpoint()),
            None => self.endpoint(),
        }
    }

    /// The one line a failed telemetry shutdown gets at exit, instead of the SDK's error value
    /// (`InternalFailure("Failed to shutdown")` says nothing to an operator).
    pub fn shutdown_message(&self, error: &infermon::telemetry::TelemetryError) -> String {
        let gave_up = match error {
            infermon::telemetry::TelemetryError::ShutdownTimedOut(t) => {
                format!(", gave up after {t:?}")
            }
            _ => String::new(),
        };
        format!(
            "telemetry: the last spans and metrics could not be delivered to {} at exit and \
             were dropped (is the collector running?{gave_up})",
            self.destination()
        )
    }

    /// The telemetry configuration `init` starts (for callers that add to it, e.g. a log
    /// writer).
    pub fn config(&self, default_service_name: &str, simulated: bool) -> TelemetryConfig {
        let mut config = TelemetryConfig::new(default_service_name)
            .with_service_version(env!("CARGO_PKG_VERSION"));
        if simulated {
            config = config.with_resource_attribute(KeyValue::new(attr::LLM_SIMULATED, true));
        }
        if let Some(endpoint) = self
            .otlp_endpoint
            .as_ref()
            .filter(|_| !self.endpoint_from_env)
        {
            config = config.with_endpoint(endpoint);
        }
        if let Some(endpoint) = &self.otlp_traces_endpoint {
            config = config.with_traces_endpoint(endpoint);
        }
        if let Some(name) = &self.service_name {
            config = config.with_service_name(name);
        }
        if self.no_otlp {
            config = config.with_disabled(true);
        }
        config
    }
}

/// The requests a load generator sends (shared by `load` and `demo`).
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Workload")]
pub struct WorkloadArgs {
    /// Open loop: Poisson arrivals at this many requests per second.
    #[arg(
        long,
        value_name = "REQ_PER_S",
        env = "INFERMON_RATE",
        conflicts_with = "concurrency"
    )]
    pub rate: Option<f64>,

    /// Closed loop: this many clients, each sending its next request as soon as its last one
    /// ends [default without --rate: `load` 8 clients; `demo` uses Poisson 10 req/s].
    #[arg(long, value_name = "N", env = "INFERMON_CONCURRENCY")]
    pub concurrency: Option<usize>,

    /// Prompt length in tokens: N, uniform:MIN:MAX, normal:MEAN:STDDEV or
    /// lognormal:MEAN:STDDEV.
    #[arg(
        long,
        value_name = "DIST",
        env = "INFERMON_PROMPT_TOKENS",
        default_value = "256"
    )]
    pub prompt_tokens: LengthDist,

    /// Output length in tokens (each request's max_tokens), same syntax as --prompt-tokens.
    #[arg(
        long,
        value_name = "DIST",
        env = "INFERMON_OUTPUT_TOKENS",
        default_value = "128"
    )]
    pub output_tokens: LengthDist,

    /// OpenAI endpoint to call.
    #[arg(long, value_enum, env = "INFERMON_API", default_value = "chat")]
    pub api: ApiArg,

    /// Send non-streaming requests (default: streaming, with the usage chunk requested).
    #[arg(long, env = "INFERMON_NO_STREAM")]
    pub no_stream: bool,

    /// Timeout of one request, connect to last byte (e.g. 30s, 5m).
    #[arg(long, value_name = "DURATION", env = "INFERMON_TIMEOUT", default_value = "300s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Open loop: arrivals while this many requests are in flight are not sent and count as
    /// `client_overload` errors (bounds the client's memory when the server stalls).
    #[arg(
        long,
        value_name = "N",
        env = "INFERMON_MAX_IN_FLIGHT",
        default_value_t = 10_000
    )]
    pub max_in_flight: usize,

    /// Sampling temperature sent with each request (omitted when unset).
    #[arg(long, value_name = "T", env = "INFERMON_TEMPERATURE")]
    pub temperature: Option<f64>,

    /// Send vLLM's `ignore_eos: true` so every output runs to max_tokens.
    #[arg(long, env = "INFERMON_IGNORE_EOS")]
    pub ignore_eos: bool,

    /// Seed for arrival times and lengths (random when unset).
    #[arg(long, value_name = "N", env = "INFERMON_SEED")]
    pub seed: Option<u64>,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum ApiArg {
    /// POST /v1/chat/completions
    Chat,
    /// POST /v1/completions
    Completions,
}

impl Layered for WorkloadArgs {
    fn layer(&mut self, layer: &mut Layer) -> Result<(), ConfigFileError> {
        layer.either(
            ("rate", &mut self.rate, f64::from_str),
            ("concurrency", &mut self.concurrency, usize::from_str),
        )?;
        layer.value(
            "prompt_tokens",
            &mut self.prompt_tokens,
            LengthDist::from_str,
        )?;
        layer.value(
            "output_tokens",
            &mut self.output_tokens,
            LengthDist::from_str,
        )?;
        layer.value("api", &mut self.api, EnumValueParser::<ApiArg>::new())?;
        layer.switch("no_stream", &mut self.no_stream)?;
        layer.value("timeout", &mut self.timeout, parse_duration)?;
        layer.value("max_in_flight", &mut self.max_in_flight, usize::from_str)?;
        layer.optional("temperature", &mut self.temperature, f64::from_str)?;
        layer.switch("ignore_eos", &mut self.ignore_eos)?;
        layer.optional("seed", &mut self.seed, u64::from_str)
    }
}

/// The load generator's objection to a setting, naming the flag that sets it (every setting
/// the library names is a flag of `load`, spelled with dashes).
pub fn load_config_error(e: ConfigError) -> anyhow::Error {
    match e.setting() {
        Some(setting) => anyhow::anyhow!("--{} {}", setting.replace('_', "-"), e.problem()),
        None => e.into(),
    }
}

impl WorkloadArgs {
    /// The load configuration these flags describe; `default_arrival` applies when neither
    /// --rate nor --concurrency is given.
    pub fn load_config(
        &self,
        urls: Vec<String>,
        model: String,
        default_arrival: Arrival,
    ) -> LoadConfig {
        let mut config = LoadConfig::new(urls, model);
        config.arrival = match (self.rate, self.concurrency) {
            (Some(rate), _) => Arrival::Poisson { rate },
            (None, Some(concurrency)) => Arrival::Closed { concurrency },
            (None, None) => default_arrival,
        };
        config.api = match self.api {
            ApiArg::Chat => Api::Chat,
            ApiArg::Completions => Api::Completions,
        };
        config.prompt_tokens = self.prompt_tokens.clone();
        config.output_tokens = self.output_tokens.clone();
        config.stream = !self.no_stream;
        config.timeout = self.timeout;
        config.max_in_flight = self.max_in_flight;
        config.temperature = self.temperature;
        config.ignore_eos = self.ignore_eos;
        config.seed = self.seed;
        config
    }
}

/// `500ms`, `30s`, `5m`, `2h`, or a bare number of seconds (fractions allowed): the one syntax
/// of every duration flag, config key and variable ([`infermon::duration`]), as clap's value
/// parser wants it.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    infermon::duration::parse_duration(s).map_err(|e| e.to_string())
}

/// Connection handling and shutdown of a server (`sim`, `gateway`, and `relay`'s receivers).
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "HTTP server")]
pub struct ServerArgs {
    /// On SIGINT/SIGTERM, how long open requests may run on before their streams are ended
    /// with an error event (a second signal exits at once).
    #[arg(long, value_name = "DURATION", env = "INFERMON_DRAIN_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// A request's headers must arrive complete within this time.
    #[arg(long, value_name = "DURATION", env = "INFERMON_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,

    /// Close a kept-alive connection after this long without a request (vLLM's default: 5 s).
    #[arg(long, value_name = "DURATION", env = "INFERMON_IDLE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Most open connections; more are refused (HTTP: a 503) and closed.
    #[arg(long, value_name = "N", env = "INFERMON_MAX_CONNECTIONS", default_value_t = 4096, value_parser = max_connections())]
    pub max_connections: u32,
}

/// `--max-connections`' values (the flag's and the config file's).
fn max_connections() -> RangedI64ValueParser<u32> {
    clap::value_parser!(u32).range(1..)
}

impl Layered for ServerArgs {
    fn layer(&mut self, layer: &mut Layer) -> Result<(), ConfigFileError> {
        layer.value("drain_timeout", &mut self.drain_timeout, parse_duration)?;
        layer.value("header_timeout", &mut self.header_timeout, parse_duration)?;
        layer.value("idle_timeout", &mut self.idle_timeout, parse_duration)?;
        layer.value(
            "max_connections",
            &mut self.max_connections,
            max_connections(),
        )
    }
}

impl ServerArgs {
    pub fn options(&self) -> infermon_http::ServeOptions {
        infermon_http::ServeOptions {
            header_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections as usize,
            drain_timeout: self.drain_timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_durations_say_how_to_write_one() {
        for bad in ["", "s", "5 parsecs", "-3s", "1e999s", "1.2.3s"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("30s"), "{bad}: {e}");
        }
    }

    #[test]
    fn load_errors_name_the_flag() {
        let e = load_config_error(ConfigError::Rate(0.0)).to_string();
        assert_eq!(
            e,
            "--rate must be a positive number of requests per second, got 0"
        );
        let e = load_config_error(ConfigError::MaxInFlight).to_string();
        assert_eq!(e, "--max-in-flight must be at least 1");
    }

    #[test]
    fn every_setting_the_load_library_names_is_a_load_flag() {
        use clap::CommandFactory as _;
        let cli = crate::Cli::command();
        let load = cli.find_subcommand("load").unwrap();
        let errors = [
            ConfigError::NoUrl,
            ConfigError::EmptyModel,
            ConfigError::Rate(0.0),
            ConfigError::Concurrency,
            ConfigError::Duration,
            ConfigError::Requests,
            ConfigError::Timeout,
            ConfigError::MaxInFlight,
            ConfigError::Temperature(3.0),
            ConfigError::ApiKey,
        ];
        for e in errors {
            let flag = e.setting().unwrap().replace('_', "-");
            assert!(
                load.get_arguments()
                    .any(|a| a.get_long() == Some(flag.as_str())),
                "--{flag}"
            );
        }
    }

    #[test]
    fn the_traces_endpoint_flag_splits_the_signals() {
        let args = TelemetryArgs {
            otlp_endpoint: Some("http://collector:4317".into()),
            otlp_traces_endpoint: Some("http://relay:4319".into()),
            service_name: None,
            no_otlp: false,
            endpoint_from_env: false,
        };
        let config = args.config("infermon-sim", true);
        assert_eq!(config.traces_endpoint(), "http://relay:4319");
        assert_eq!(config.metrics_endpoint(), "http://collector:4317");
        assert_eq!(
            args.destination(),
            "http://collector:4317 (traces: http://relay:4319)"
        );
    }

    #[test]
    fn shutdown_errors_become_one_line() {
        use infermon::telemetry::TelemetryError;
        let args = TelemetryArgs {
            otlp_endpoint: Some("http://c:4317".into()),
            otlp_traces_endpoint: None,
            service_name: None,
            no_otlp: false,
            endpoint_from_env: false,
        };
        let e = TelemetryError::Shutdown("InternalFailure(\"Failed to shutdown\")".into());
        let line = args.shutdown_message(&e);
        assert_eq!(
            line,
            "telemetry: the last spans and metrics could not be delivered to http://c:4317 at \
             exit and were dropped (is the collector running?)"
        );
        let timed_out = TelemetryError::ShutdownTimedOut(std::time::Duration::from_secs(5));
        let line = args.shutdown_message(&timed_out);
        assert!(line.contains("gave up after 5s"), "{line}");
        assert_eq!(line.lines().count(), 1);
    }
}
