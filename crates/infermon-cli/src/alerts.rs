//! `infermon alerts`: see what is firing and acknowledge it (an Alertmanager silence). The
//! arguments and the messages; the work is in `infermon-alerts`.

use std::io::Write;
use std::str::FromStr;
use std::time::Duration;

use infermon_alerts::{
    parse_silence_duration, Acknowledgement, Alertmanager, Error, ListFilter, Matcher,
};

use crate::config_file::{ConfigFileError, Layer, Layered};

/// Arguments of `infermon alerts`.
#[derive(clap::Args, Debug, Clone)]
pub struct AlertsArgs {
    /// Alertmanager to talk to (its base URL).
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "INFERMON_ALERTMANAGER_URL",
        default_value = "http://127.0.0.1:9093"
    )]
    pub alertmanager_url: String,

    #[command(subcommand)]
    pub command: AlertsCommand,
}

/// The config file's `[alerts]` table sets what all three commands share.
impl Layered for AlertsArgs {
    fn layer(&mut self, layer: &mut Layer) -> Result<(), ConfigFileError> {
        let url = &mut self.alertmanager_url;
        layer.value("alertmanager_url", url, String::from_str)
    }
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum AlertsCommand {
    /// List firing alerts, acknowledged (silenced) and inhibited ones included and marked.
    List(ListArgs),
    /// Acknowledge a firing alert: silence its notifications for a while, with a comment.
    Ack(AckArgs),
    /// Withdraw an acknowledgement: expire the silences on an alert (or one silence by its ID).
    Unack(UnackArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct ListArgs {
    /// Only alerts matching this label matcher (name=value, name!=value, name=~regex,
    /// name!~regex); repeatable.
    #[arg(long = "matcher", short = 'm', value_name = "MATCHER")]
    pub matchers: Vec<Matcher>,

    /// Only alerts nobody has acknowledged and no other alert inhibits.
    #[arg(long)]
    pub unacked: bool,

    /// Print Alertmanager's JSON for the listed alerts instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct AckArgs {
    /// Name of the alert (its `alertname` label), e.g. InferenceHighErrorRatio.
    #[arg(value_name = "ALERT")]
    pub alert: String,

    /// Narrow the acknowledgement to alerts with these labels, e.g. --matcher job=my-service;
    /// repeatable. Without it every alert of that name is acknowledged.
    #[arg(long = "matcher", short = 'm', value_name = "MATCHER")]
    pub matchers: Vec<Matcher>,

    /// How long to stay silent: e.g. 30m, 1h, 2h30m, 1d.
    #[arg(long = "for", value_name = "DURATION", default_value = "1h", value_parser = parse_silence_duration)]
    pub duration: Duration,

    /// Why (shown to everyone who lists the alert, and kept in Alertmanager's silence history).
    #[arg(long, value_name = "TEXT")]
    pub comment: String,

    /// Who acknowledges [default: $USER].
    #[arg(long, value_name = "NAME", env = "INFERMON_ALERTS_AUTHOR")]
    pub author: Option<String>,

    /// Create the silence even if no firing alert matches (e.g. ahead of planned maintenance).
    #[arg(long)]
    pub force: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct UnackArgs {
    /// Alert name whose acknowledgements to withdraw, or the ID of one silence.
    #[arg(value_name = "ALERT|SILENCE_ID")]
    pub target: String,

    /// Only withdraw acknowledgements that include these matchers; repeatable.
    #[arg(long = "matcher", short = 'm', value_name = "MATCHER")]
    pub matchers: Vec<Matcher>,
}

/// Runs `infermon alerts ...`, printing to stdout.
pub async fn run(args: AlertsArgs) -> anyhow::Result<()> {
    let out = &mut std::io::stdout().lock();
    let client = Alertmanager::new(&args.alertmanager_url).map_err(explain)?;
    match args.command {
        AlertsCommand::List(list) => {
            let filter = ListFilter {
                matchers: list.matchers,
                unacknowledged: list.unacked,
            };
            let alerts = client.list(&filter).await.map_err(explain)?;
            if list.json {
                serde_json::to_writer_pretty(&mut *out, &alerts)?;
                writeln!(out)?;
            } else if alerts.is_empty() {
                let which = if list.unacked {
                    " without acknowledgement"
                } else {
                    ""
                };
                writeln!(out, "no firing alerts{which}")?;
            } else {
                let silences = client.silences().await.map_err(explain)?;
                infermon_alerts::write_table(out, &alerts, &silences)?;
            }
        }
        AlertsCommand::Ack(ack) => {
            let author = ack
                .author
                .or_else(|| std::env::var("USER").ok())
                .or_else(|| std::env::var("USERNAME").ok())
                .unwrap_or_else(|| "infermon".to_owned());
            let ack = Acknowledgement {
                alert: ack.alert,
                matchers: ack.matchers,
                duration: ack.duration,
                comment: ack.comment,
                author,
                force: ack.force,
            };
            let done = client.acknowledge(&ack).await.map_err(explain)?;
            writeln!(out, "{done}")?;
            writeln!(out, "undo with: infermon alerts unack {}", done.silence_id)?;
        }
        AlertsCommand::Unack(unack) => {
            let expired = client
                .unacknowledge(&unack.target, &unack.matchers)
                .await
                .map_err(explain)?;
            for silence in expired {
                writeln!(out, "expired silence {silence}")?;
            }
        }
    }
    Ok(())
}

/// The library's error, with what to do about it in terms of this command's flags.
fn explain(e: Error) -> anyhow::Error {
    match e {
        Error::BadUrl(_) => anyhow::anyhow!("invalid --alertmanager-url: {e}"),
        Error::Unreachable { .. } => {
            // The innermost cause ("Connection refused") is what a user can act on; reqwest's
            // outer messages only say that sending failed.
            let e = anyhow::Error::new(e);
            let cause = e.root_cause().to_string();
            anyhow::anyhow!(
                "{e} ({cause}); is it running? Set --alertmanager-url or INFERMON_ALERTMANAGER_URL"
            )
        }
        Error::NoComment => anyhow::anyhow!("--comment must say why the alert is acknowledged"),
        Error::NothingFiring(_) => anyhow::anyhow!(
            "{e}; check the name with `infermon alerts list`, or pass --force to silence it ahead of time"
        ),
        Error::TooLong(..) => anyhow::Error::new(e).context("--for is too long"),
        Error::NoAcknowledgement(_) => {
            anyhow::anyhow!("{e}; `infermon alerts list` shows what is acknowledged")
        }
        other => other.into(),
    }
}
