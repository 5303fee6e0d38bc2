//! Flags shared by several subcommands: telemetry export, and the workload a load generator
//! sends. Each flag also reads an environment variable (shown by `--help`) and may be set in the
//! `--config` file.

use std::time::Duration;

use anyhow::Context as _;
use infermon::contract::attr;
use infermon::telemetry::{TelemetryConfig, TelemetryGuard};
use infermon_load::{Api, Arrival, LengthDist, LoadConfig};
use opentelemetry::KeyValue;

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

    /// `service.name` of the exported telemetry [default: infermon-<command>].
    #[arg(long, value_name = "NAME", env = "OTEL_SERVICE_NAME")]
    pub service_name: Option<String>,

    /// Export nothing over OTLP (OTEL_SDK_DISABLED=true does the same).
    #[arg(long, env = "INFERMON_NO_OTLP")]
    pub no_otlp: bool,
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
            self.endpoint()
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
        // A value equal to the environment's came from it (or agrees with it): leave it to the
        // telemetry config, which also honours the per-signal variables.
        if let Some(endpoint) = &self.otlp_endpoint {
            if std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok().as_ref() != Some(endpoint) {
                config = config.with_endpoint(endpoint);
            }
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

/// `500ms`, `30s`, `5m`, `2h`, or a bare number of seconds (fractions allowed).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{s}`; use ms, s, m or h (e.g. 30s)"
            ))
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a duration; write e.g. 500ms, 30s, 5m or 1h"))?;
    Duration::try_from_secs_f64(value * scale)
        .map_err(|_| format!("`{s}` is not a duration; write e.g. 500ms, 30s, 5m or 1h"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_every_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    }

    #[test]
    fn bad_durations_say_how_to_write_one() {
        for bad in ["", "s", "5 parsecs", "-3s", "1e999s", "1.2.3s"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("30s"), "{bad}: {e}");
        }
    }

    #[test]
    fn shutdown_errors_become_one_line() {
        use infermon::telemetry::TelemetryError;
        let args = TelemetryArgs {
            otlp_endpoint: Some("http://c:4317".into()),
            service_name: None,
            no_otlp: false,
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

/// Connection handling and shutdown of an HTTP server (`sim`, `gateway`).
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

    /// Most open connections; more are answered 503 and closed.
    #[arg(long, value_name = "N", env = "INFERMON_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
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
