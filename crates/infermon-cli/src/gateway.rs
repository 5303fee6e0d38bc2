//! `infermon gateway`: an OpenAI-compatible gateway in front of several engines (see
//! `docs/gateway.md`). Wiring only; the work is in `infermon-gateway`.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use infermon::contract::INSTRUMENTATION_SCOPE;
use infermon_gateway::{Gateway, GatewayConfig, Role, Routing, UpstreamConfig};

use clap::builder::{PossibleValuesParser, RangedI64ValueParser};

use crate::args::{parse_duration, ServerArgs, TelemetryArgs};
use crate::config_file::{ConfigFileError, Layer, Layered};
use crate::signal::first_of_two_signals;

/// `service.name` default of the gateway.
const SERVICE_GATEWAY: &str = "infermon-gateway";

#[derive(clap::Args, Debug)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  \
    infermon gateway --upstream a=http://10.0.0.1:8000 --upstream b=http://10.0.0.2:8000\n  \
    infermon gateway --gateway-config gateway.toml     # upstreams, tenants (API keys), prices\n  \
    infermon gateway hash-key sk-my-secret             # the key_sha256 for a [[tenant]]"
)]
pub struct GatewayArgs {
    #[command(subcommand)]
    pub command: Option<GatewayCommand>,

    /// Address the OpenAI-compatible API listens on.
    #[arg(
        long,
        value_name = "ADDR",
        env = "INFERMON_GATEWAY_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: String,

    /// An upstream engine as NAME=URL (http://host:port, or https://host[:port]: TLS, the
    /// certificate verified against the system's roots and --upstream-ca-file); repeat, or
    /// separate with commas.
    #[arg(long, value_name = "NAME=URL", env = "INFERMON_GATEWAY_UPSTREAMS", value_delimiter = ',', value_parser = parse_upstream)]
    pub upstream: Vec<UpstreamConfig>,

    /// A prefill worker of a disaggregated prefill/decode pool, as NAME=URL (repeatable). With
    /// prefill and decode workers, every request is sent to a prefill worker (one token, the
    /// KV cache kept), then to a decode worker with the prefill worker's kv_transfer_params.
    #[arg(long, value_name = "NAME=URL", env = "INFERMON_GATEWAY_PREFILL_UPSTREAMS", value_delimiter = ',', value_parser = parse_prefill)]
    pub prefill_upstream: Vec<UpstreamConfig>,

    /// A decode worker of a disaggregated prefill/decode pool, as NAME=URL (repeatable).
    #[arg(long, value_name = "NAME=URL", env = "INFERMON_GATEWAY_DECODE_UPSTREAMS", value_delimiter = ',', value_parser = parse_decode)]
    pub decode_upstream: Vec<UpstreamConfig>,

    /// TOML file with [[upstream]], [[tenant]] (API keys as SHA-256) and [[price]] entries
    /// (docs/gateway.md).
    #[arg(long, value_name = "FILE", env = "INFERMON_GATEWAY_CONFIG")]
    pub gateway_config: Option<PathBuf>,

    /// A PEM bundle of CA certificates trusted for https:// upstreams besides the system's
    /// roots (a private CA). Per upstream: ca_file in the --gateway-config file.
    #[arg(long, value_name = "FILE", env = "INFERMON_GATEWAY_UPSTREAM_CA_FILE")]
    pub upstream_ca_file: Option<PathBuf>,

    /// Attempts per request, on different upstreams (1 = no retry). Retries happen only before
    /// the client received anything: connection failure, timeout or 5xx.
    #[arg(long, value_name = "N", env = "INFERMON_GATEWAY_MAX_ATTEMPTS", default_value_t = 2, value_parser = max_attempts())]
    pub max_attempts: u32,

    /// Give an upstream up (and retry elsewhere) when its response headers take longer.
    #[arg(long, value_name = "DURATION", env = "INFERMON_GATEWAY_FIRST_BYTE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub first_byte_timeout: Duration,

    /// End a streaming response with an error event when the upstream sends nothing for this
    /// long.
    #[arg(long, value_name = "DURATION", env = "INFERMON_GATEWAY_STREAM_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub stream_idle_timeout: Duration,

    /// How to choose among upstreams: least-outstanding (fewest requests in flight), or
    /// kv-cache (the same, avoiding upstreams whose KV cache is over 90 % full, read from their
    /// /metrics at each probe).
    #[arg(long, value_name = "POLICY", env = "INFERMON_GATEWAY_ROUTING", default_value = "least-outstanding", value_parser = routings())]
    pub routing: String,

    /// How often each upstream's /v1/models is probed (health and served models).
    #[arg(long, value_name = "DURATION", env = "INFERMON_GATEWAY_PROBE_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub probe_interval: Duration,

    #[command(flatten)]
    pub server: ServerArgs,

    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

#[derive(clap::Subcommand, Debug)]
pub enum GatewayCommand {
    /// Print the SHA-256 of an API key, for a [[tenant]]'s key_sha256 (the key itself is never
    /// stored).
    HashKey {
        /// The API key.
        key: String,
    },
}

impl Layered for GatewayArgs {
    fn layer(&mut self, layer: &mut Layer) -> Result<(), ConfigFileError> {
        layer.value("listen", &mut self.listen, String::from_str)?;
        layer.list("upstream", &mut self.upstream, parse_upstream)?;
        layer.list(
            "prefill_upstream",
            &mut self.prefill_upstream,
            parse_prefill,
        )?;
        layer.list("decode_upstream", &mut self.decode_upstream, parse_decode)?;
        layer.optional(
            "gateway_config",
            &mut self.gateway_config,
            PathBuf::from_str,
        )?;
        layer.optional(
            "upstream_ca_file",
            &mut self.upstream_ca_file,
            PathBuf::from_str,
        )?;
        layer.value("max_attempts", &mut self.max_attempts, max_attempts())?;
        layer.value(
            "first_byte_timeout",
            &mut self.first_byte_timeout,
            parse_duration,
        )?;
        let idle = &mut self.stream_idle_timeout;
        layer.value("stream_idle_timeout", idle, parse_duration)?;
        layer.value("routing", &mut self.routing, routings())?;
        layer.value("probe_interval", &mut self.probe_interval, parse_duration)?;
        self.server.layer(layer)?;
        self.telemetry.layer(layer)
    }
}

// The values of the flags below, shared by the flag and the config file.

fn max_attempts() -> RangedI64ValueParser<u32> {
    clap::value_parser!(u32).range(1..=10)
}

fn routings() -> PossibleValuesParser {
    PossibleValuesParser::new(["least-outstanding", "kv-cache"])
}

fn parse_prefill(s: &str) -> Result<UpstreamConfig, String> {
    parse_upstream(s).map(|u| UpstreamConfig {
        role: Role::Prefill,
        ..u
    })
}

fn parse_decode(s: &str) -> Result<UpstreamConfig, String> {
    parse_upstream(s).map(|u| UpstreamConfig {
        role: Role::Decode,
        ..u
    })
}

fn parse_upstream(s: &str) -> Result<UpstreamConfig, String> {
    match s.split_once('=') {
        Some((name, url)) if !name.trim().is_empty() && !url.trim().is_empty() => {
            Ok(UpstreamConfig {
                name: name.trim().to_owned(),
                url: url.trim().to_owned(),
                role: Role::Both,
                ..Default::default()
            })
        }
        _ => Err(format!(
            "`{s}` is not NAME=URL (e.g. a=http://10.0.0.1:8000)"
        )),
    }
}

impl GatewayArgs {
    fn gateway_config(&self) -> anyhow::Result<GatewayConfig> {
        let upstreams = self
            .upstream
            .iter()
            .chain(&self.prefill_upstream)
            .chain(&self.decode_upstream)
            .cloned()
            .collect();
        let mut config = GatewayConfig::new(upstreams);
        if let Some(path) = &self.gateway_config {
            config = config.merge_file(path)?;
        }
        // The command line wins over the gateway file's upstream_ca_file.
        if let Some(path) = &self.upstream_ca_file {
            config.upstream_ca_file = Some(path.clone());
        }
        config.max_attempts = self.max_attempts;
        config.first_byte_timeout = self.first_byte_timeout;
        config.stream_idle_timeout = self.stream_idle_timeout;
        config.probe_interval = self.probe_interval;
        config.routing = match self.routing.as_str() {
            "kv-cache" => Routing::KvCache,
            _ => Routing::LeastOutstanding,
        };
        config.validate()?;
        Ok(config)
    }
}

pub async fn run(args: GatewayArgs) -> anyhow::Result<()> {
    if let Some(GatewayCommand::HashKey { key }) = &args.command {
        println!("{}", infermon_gateway::hash_key(key));
        return Ok(());
    }
    // Check everything before binding or starting anything.
    let config = args.gateway_config()?;
    let listener = crate::sim::bind(&args.listen).await?;
    let telemetry = args.telemetry.init(SERVICE_GATEWAY, false)?;
    let meter = telemetry.meter(INSTRUMENTATION_SCOPE);
    let upstreams: Vec<String> = config
        .upstreams
        .iter()
        .map(|u| match u.role {
            Role::Both => format!("{}={}", u.name, u.url),
            role => format!("{}={} ({})", u.name, u.url, role.as_str()),
        })
        .collect();
    let tenants = config.tenants.as_ref().map_or(0, Vec::len);
    // try_new reads the CA files again (validate checked them) and warns about upstreams
    // whose certificates are not verified, now that logging is set up.
    let gateway = Gateway::try_new(config, &meter)?;
    let probe = gateway.spawn_probe();
    eprintln!(
        "infermon gateway: http://{}/v1 -> {} ({}); Ctrl-C stops",
        listener.local_addr()?,
        upstreams.join(", "),
        if tenants == 0 {
            "no API keys required".to_owned()
        } else {
            format!("{tenants} tenants")
        }
    );
    let options = args.server.options();
    infermon_http::serve(
        gateway.router(),
        listener,
        options.clone(),
        (),
        first_of_two_signals(options.drain_timeout),
    )
    .await;
    probe.abort();
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .context("telemetry shutdown panicked")?
        .map_err(|e| anyhow::anyhow!("{}", args.telemetry.shutdown_message(&e)))?;
    Ok(())
}
