//! `infermon`: run the engine simulator, drive load, watch a live demo, export GPU telemetry,
//! relay vLLM's traces, run a gateway, acknowledge alerts. The binary (`src/main.rs`) calls
//! [`main`]; the crate is a library only so that the fuzz targets can reach its parsing.

mod alerts;
mod args;
mod config_file;
mod demo;
mod gateway;
mod gpu_agent;
mod load;
mod relay;
mod signal;
mod sim;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use config_file::{ConfigFile, ConfigFileError, Layer, Layered};

#[derive(Parser)]
#[command(
    name = "infermon",
    version,
    about = "OpenTelemetry-native observability for LLM inference: simulator, load generator, demo, GPU agent, vLLM trace relay, gateway.",
    long_about = None,
    after_help = "Every flag can also be set by the environment variable shown in its help, or in \
        the --config file. Precedence: command-line flag > environment variable > config file > \
        default.\nQuick start (nothing else needed): infermon demo"
)]
pub(crate) struct Cli {
    /// TOML file with settings for any flag: a [sim], [load], [demo], [gpu-agent], [alerts],
    /// [relay] or [gateway] table whose keys are long flag names. Precedence: command-line flag
    /// > environment variable > this file > default.
    #[arg(long, global = true, value_name = "FILE", env = "INFERMON_CONFIG")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the simulated inference engine (OpenAI-compatible HTTP API).
    Sim(sim::SimArgs),
    /// Drive load against OpenAI-compatible endpoints and report latency percentiles.
    Load(load::LoadArgs),
    /// Simulator and load generator in one process, with a live terminal summary.
    Demo(demo::DemoArgs),
    /// Export NVIDIA GPU telemetry (NVML) over OTLP.
    GpuAgent(gpu_agent::GpuAgentArgs),
    /// List firing alerts, acknowledge (silence) and unacknowledge them in Alertmanager.
    Alerts(alerts::AlertsArgs),
    /// OTLP trace relay for vLLM: adds queue/prefill/decode child spans to vLLM's request span.
    ///
    /// Point vLLM's --otlp-traces-endpoint at it (OTLP/gRPC, or OTLP/HTTP protobuf with
    /// OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=http/protobuf). For each vLLM 0.33 `llm_request` span
    /// it adds queue, prefill and decode child spans and a first_token event rebuilt from the
    /// span's latency attributes, renames the span `{operation} {model}` and adds the infermon
    /// contract's attributes beside vLLM's; phases it cannot rebuild honestly are left out and
    /// counted. Every other span passes through unchanged. Spans go on to --upstream through a
    /// bounded queue with retries; a full queue is refused with RESOURCE_EXHAUSTED (gRPC) or 429
    /// (HTTP) and a retry delay.
    Relay(relay::RelayArgs),
    /// OpenAI-compatible gateway in front of several engines: routing, failover, tenants, cost.
    ///
    /// Routes /v1/chat/completions and /v1/completions to the least busy healthy upstream that
    /// serves the model, streams responses through unchanged, retries elsewhere before the
    /// first byte on connection failure, timeout or 5xx, and reports what a client sees per
    /// upstream (TTFT, inter-token latency, duration) and per tenant (requests, tokens, cost),
    /// with one trace from the caller through the gateway to the engine.
    Gateway(gateway::GatewayArgs),
}

/// The `infermon` command: parses the command line and config file, runs the subcommand, and
/// turns any failure into one line on stderr and an exit code (2: bad flags or config; 1:
/// everything else).
pub fn main() -> ExitCode {
    let cli = match parse(std::env::args_os().collect(), ConfigFile::read) {
        Ok(cli) => cli,
        Err(Parsed::Exit(e)) => {
            // --help and --version: clap's own output, exit 0.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(Parsed::Invalid(line)) => {
            eprintln!("{line}");
            return ExitCode::from(2);
        }
    };
    // The label-cap policy variables are read where the caps are made, which must not fail a
    // service; a command refuses a bad value here, at start-up, instead.
    if let Err(e) = infermon::cardinality::LabelPolicy::from_env() {
        eprintln!("error: {:#}", anyhow::Error::new(e));
        return ExitCode::from(2);
    }
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| {
            runtime.block_on(async {
                match cli.command {
                    Command::Sim(args) => sim::run(args).await,
                    Command::Load(args) => load::run(args).await,
                    Command::Demo(args) => demo::run(args).await,
                    Command::GpuAgent(args) => gpu_agent::run(args).await,
                    Command::Alerts(args) => alerts::run(args).await,
                    Command::Relay(args) => relay::run(args).await,
                    Command::Gateway(args) => gateway::run(args).await,
                }
            })
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes, joined.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

enum Parsed {
    /// Help or version was requested.
    Exit(clap::Error),
    /// A one-line message saying what is wrong.
    Invalid(String),
}

/// What `--config FILE` would do with `text` as the file's contents, for the `cli_config`
/// fuzz target (`fuzz/`): the command line's own parsing and layering, with the file read from
/// memory. `Err` is the one line the command would print.
#[doc(hidden)]
pub fn check_config_text(argv: &[&str], text: &str) -> Result<(), String> {
    let argv = argv.iter().map(OsString::from).collect();
    let from_memory = |path: &Path, command: &clap::Command| ConfigFile::parse(text, path, command);
    match parse(argv, from_memory) {
        Ok(_) => Ok(()),
        Err(Parsed::Invalid(line)) => Err(line),
        Err(Parsed::Exit(e)) => Err(e.to_string()),
    }
}

/// Parses the command line (once), then takes from the `--config` file (`load` reads it)
/// the settings that the command line and environment left unset (see [`config_file`]).
fn parse(
    argv: Vec<OsString>,
    load: impl Fn(&Path, &clap::Command) -> Result<ConfigFile, ConfigFileError>,
) -> Result<Cli, Parsed> {
    let mut command = Cli::command();
    // Built (help flags, global flags and value counts filled in), as the file's values are
    // checked against its arguments.
    command.build();
    let help = help_hint(&command, &argv);
    let clap_failure = |e: clap::Error| clap_failure(e, &help);
    let matches = command
        .clone()
        .try_get_matches_from(&argv)
        .map_err(clap_failure)?;
    let mut cli = Cli::from_arg_matches(&matches).map_err(clap_failure)?;
    // The error and its causes (e.g. the I/O error of an unreadable file), on one line.
    let invalid =
        |e: ConfigFileError| Parsed::Invalid(format!("error: {:#}", anyhow::Error::new(e)));
    let file = match &cli.config {
        Some(path) => Some(load(path, &command).map_err(invalid)?),
        None => None,
    };
    let (name, sub_matches) = matches.subcommand().expect("clap requires a subcommand");
    let sub = command
        .find_subcommand(name)
        .expect("the subcommand clap matched");
    let mut layer = Layer::new(file.as_ref(), sub, sub_matches).map_err(invalid)?;
    cli.command.layer(&mut layer).map_err(invalid)?;
    Ok(cli)
}

impl Layered for Command {
    fn layer(&mut self, layer: &mut Layer) -> Result<(), ConfigFileError> {
        match self {
            Command::Sim(args) => args.layer(layer),
            Command::Load(args) => args.layer(layer),
            Command::Demo(args) => args.layer(layer),
            Command::GpuAgent(args) => args.layer(layer),
            Command::Alerts(args) => args.layer(layer),
            Command::Relay(args) => args.layer(layer),
            Command::Gateway(args) => args.layer(layer),
        }
    }
}

/// Clap's errors are several lines (message, usage, tip); keep the message and the tip on one
/// line, and leave help/version output alone.
fn clap_failure(e: clap::Error, help: &str) -> Parsed {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        return Parsed::Exit(e);
    }
    Parsed::Invalid(format!("{}; see `{help}`", one_line(&e)))
}

/// A clap error's "error:" and "tip:" lines joined into one, the indented lines that continue
/// an error (e.g. the list of missing required arguments) folded into it.
pub(crate) fn one_line(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let mut parts: Vec<String> = Vec::new();
    let mut continues_error = false;
    for line in rendered.lines().map(str::trim) {
        if line.starts_with("error:") || line.starts_with("tip:") {
            continues_error = line.starts_with("error:");
            parts.push(line.to_owned());
        } else if continues_error && !line.is_empty() && !line.starts_with("Usage:") {
            if let Some(last) = parts.last_mut() {
                last.push(' ');
                last.push_str(line);
            }
        } else {
            continues_error = false;
        }
    }
    if parts.is_empty() {
        parts.push(
            rendered
                .lines()
                .next()
                .unwrap_or("error: invalid arguments")
                .to_owned(),
        );
    }
    parts.join("; ")
}

/// `infermon <subcommand> --help` for the subcommand named on the command line, else
/// `infermon --help`.
fn help_hint(command: &clap::Command, argv: &[OsString]) -> String {
    let sub = argv.iter().skip(1).find_map(|a| {
        let a = a.to_str()?;
        command.find_subcommand(a).map(|s| s.get_name().to_owned())
    });
    match sub {
        Some(sub) => format!("infermon {sub} --help"),
        None => "infermon --help".to_owned(),
    }
}
