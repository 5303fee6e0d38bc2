//! `infermon relay`: between vLLM and the collector, rebuilding vLLM's request phases as child
//! spans (see `docs/relay.md`). Wiring only; the work is in `infermon-relay`.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use infermon::contract::{relay::SERVICE_RELAY, value, INSTRUMENTATION_SCOPE};
use infermon_relay::config::DEFAULT_MODEL;
use infermon_relay::{ModelNames, Relay, RelayConfig, RetryPolicy};

use clap::builder::{PossibleValuesParser, RangedI64ValueParser};

use crate::args::{parse_duration, ServerArgs, TelemetryArgs};
use crate::config_file::{ConfigFileError, Layer, Layered};
use crate::signal::first_of_two_signals;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "vLLM's span carries no model name: give it with --model, or per vLLM \
    service.name (OTEL_SERVICE_NAME) with --model-for.\n\n\
    Examples:\n  \
    infermon relay --upstream http://collector:4317 --model llama-3-8b\n  \
    infermon relay --model-for vllm-a=llama-3-8b,vllm-b=qwen2-7b\n  \
    vllm serve meta-llama/Meta-Llama-3-8B --otlp-traces-endpoint grpc://relay:4319"
)]
pub struct RelayArgs {
    /// Address for OTLP/gRPC (vLLM's default protocol).
    #[arg(
        long,
        value_name = "ADDR",
        env = "INFERMON_RELAY_GRPC_LISTEN",
        default_value = "0.0.0.0:4319"
    )]
    pub grpc_listen: SocketAddr,

    /// Address for OTLP/HTTP (POST /v1/traces, application/x-protobuf).
    #[arg(
        long,
        value_name = "ADDR",
        env = "INFERMON_RELAY_HTTP_LISTEN",
        default_value = "0.0.0.0:4320"
    )]
    pub http_listen: SocketAddr,

    /// OTLP/gRPC endpoint the relay forwards traces to (the collector).
    #[arg(long, value_name = "URL", env = "INFERMON_RELAY_UPSTREAM", default_value = "http://localhost:4317", value_parser = parse_upstream)]
    pub upstream: String,

    /// Model name for vLLM's spans when --model-for does not name their service.
    #[arg(long, value_name = "NAME", env = "INFERMON_RELAY_MODEL", default_value = DEFAULT_MODEL)]
    pub model: String,

    /// Model name per vLLM service.name, as SERVICE=MODEL (repeat, or separate with commas).
    #[arg(long, value_name = "SERVICE=MODEL", env = "INFERMON_RELAY_MODEL_FOR", value_delimiter = ',', value_parser = parse_model_for)]
    pub model_for: Vec<(String, String)>,

    /// gen_ai.operation.name when the request id does not tell (vLLM's OpenAI server ids start
    /// chatcmpl- or cmpl-).
    #[arg(long, value_name = "OPERATION", env = "INFERMON_RELAY_DEFAULT_OPERATION", default_value = value::OPERATION_CHAT, value_parser = operations())]
    pub default_operation: String,

    /// Most spans waiting for the collector; past it senders are told to retry later.
    #[arg(long, value_name = "N", env = "INFERMON_RELAY_QUEUE_SPANS", default_value_t = 65_536, value_parser = queue_spans())]
    pub queue_spans: u32,

    /// Largest OTLP message accepted, in bytes (gRPC message or HTTP body).
    #[arg(long, value_name = "BYTES", env = "INFERMON_RELAY_MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024, value_parser = message_bytes())]
    pub max_message_bytes: u32,

    /// Concurrent exports to the collector.
    #[arg(long, value_name = "N", env = "INFERMON_RELAY_EXPORT_WORKERS", default_value_t = 2, value_parser = export_workers())]
    pub export_workers: u16,

    /// Give a batch up when the collector has failed it for this long (e.g. 60s).
    #[arg(long, value_name = "DURATION", env = "INFERMON_RELAY_RETRY_FOR", default_value = "60s", value_parser = parse_duration)]
    pub retry_for: Duration,

    /// On shutdown, how long queued spans may take to reach the collector.
    #[arg(long, value_name = "DURATION", env = "INFERMON_RELAY_DRAIN", default_value = "5s", value_parser = parse_duration)]
    pub drain: Duration,

    /// The receivers' connection limits (`--drain-timeout` here is for open requests; queued
    /// spans get `--drain`).
    #[command(flatten)]
    pub server: ServerArgs,

    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

impl Layered for RelayArgs {
    fn layer(&mut self, layer: &mut Layer) -> Result<(), ConfigFileError> {
        layer.value("grpc_listen", &mut self.grpc_listen, SocketAddr::from_str)?;
        layer.value("http_listen", &mut self.http_listen, SocketAddr::from_str)?;
        layer.value("upstream", &mut self.upstream, parse_upstream)?;
        layer.value("model", &mut self.model, String::from_str)?;
        layer.list("model_for", &mut self.model_for, parse_model_for)?;
        layer.value(
            "default_operation",
            &mut self.default_operation,
            operations(),
        )?;
        layer.value("queue_spans", &mut self.queue_spans, queue_spans())?;
        layer.value(
            "max_message_bytes",
            &mut self.max_message_bytes,
            message_bytes(),
        )?;
        layer.value("export_workers", &mut self.export_workers, export_workers())?;
        layer.value("retry_for", &mut self.retry_for, parse_duration)?;
        layer.value("drain", &mut self.drain, parse_duration)?;
        self.server.layer(layer)?;
        self.telemetry.layer(layer)
    }
}

// The values of the flags below, shared by the flag and the config file.

fn operations() -> PossibleValuesParser {
    PossibleValuesParser::new([value::OPERATION_CHAT, value::OPERATION_TEXT_COMPLETION])
}

fn queue_spans() -> RangedI64ValueParser<u32> {
    clap::value_parser!(u32).range(1..)
}

fn message_bytes() -> RangedI64ValueParser<u32> {
    clap::value_parser!(u32).range(1024..)
}

fn export_workers() -> RangedI64ValueParser<u16> {
    clap::value_parser!(u16).range(1..=64)
}

fn parse_upstream(s: &str) -> Result<String, String> {
    let s = s.trim();
    if !(s.starts_with("http://") || s.starts_with("https://")) || s.len() <= "https://".len() {
        return Err(format!(
            "`{s}` is not an OTLP/gRPC URL; write it like http://collector:4317"
        ));
    }
    Ok(s.to_owned())
}

fn parse_model_for(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((service, model)) if !service.trim().is_empty() && !model.trim().is_empty() => {
            Ok((service.trim().to_owned(), model.trim().to_owned()))
        }
        _ => Err(format!(
            "`{s}` is not SERVICE=MODEL (e.g. vllm-a=llama-3-8b)"
        )),
    }
}

impl RelayArgs {
    fn relay_config(&self) -> RelayConfig {
        let models = self
            .model_for
            .iter()
            .fold(ModelNames::new(&self.model), |m, (service, model)| {
                m.with_service(service, model)
            });
        let mut config = RelayConfig::new(&self.upstream);
        config.grpc_listen = self.grpc_listen;
        config.http_listen = self.http_listen;
        config.models = models;
        config.default_operation = self.default_operation.clone();
        config.queue_spans = self.queue_spans as usize;
        config.max_message_bytes = self.max_message_bytes as usize;
        config.export_workers = usize::from(self.export_workers);
        config.retry = RetryPolicy {
            max_elapsed: self.retry_for,
            ..RetryPolicy::default()
        };
        config.serve = self.server.options();
        config
    }
}

pub async fn run(args: RelayArgs) -> anyhow::Result<()> {
    let telemetry = args.telemetry.init(SERVICE_RELAY, false)?;
    let meter = telemetry.meter(INSTRUMENTATION_SCOPE);
    let relay = Relay::start(args.relay_config(), &meter)
        .await
        .context("cannot start the relay")?;
    eprintln!(
        "infermon relay: OTLP/gRPC on {}, OTLP/HTTP on {}, forwarding to {}",
        relay.grpc_addr(),
        relay.http_addr(),
        args.upstream
    );
    first_of_two_signals(args.drain).await;
    relay.shutdown(args.drain).await;
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .context("telemetry shutdown panicked")?
        .context("telemetry shutdown")?;
    Ok(())
}
