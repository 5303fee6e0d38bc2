//! `infermon alerts`: see what is firing and acknowledge it, through Alertmanager's v2 API.
//!
//! Acknowledging an alert creates an Alertmanager *silence* for it: notifications stop for the
//! given time, the alert stays visible (as acknowledged, with who, why and until when), and it
//! notifies again if it is still firing when the silence ends. `unack` expires the silence early.
//! This is the same mechanism as `amtool silence add/expire` and Grafana's "Silence" button, so
//! the three can be mixed (docs/alerting.md).
//!
//! This module is self-contained (it uses no other module of the binary) so that its tests can
//! drive it against a real Alertmanager.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use infermon::contract::attr;
use serde::{Deserialize, Serialize};

/// Arguments of `infermon alerts`.
#[derive(clap::Args, Debug, Clone)]
pub struct AlertsArgs {
    /// Alertmanager to talk to (its base URL, plain HTTP).
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
    let mut out = std::io::stdout().lock();
    run_with_output(args, &mut out).await
}

/// Runs `infermon alerts ...`, printing to `out`.
pub async fn run_with_output(args: AlertsArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let client = Alertmanager::new(&args.alertmanager_url)?;
    match args.command {
        AlertsCommand::List(list) => list_alerts(&client, &list, out).await,
        AlertsCommand::Ack(ack) => acknowledge(&client, &ack, SystemTime::now(), out).await,
        AlertsCommand::Unack(unack) => unacknowledge(&client, &unack, out).await,
    }
}

// ---- the three commands --------------------------------------------------------------------------

async fn list_alerts(
    client: &Alertmanager,
    args: &ListArgs,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut alerts = client.alerts(&args.matchers).await?;
    if args.unacked {
        alerts.retain(|a| a.status.state == "active");
    }
    alerts.sort_by(|a, b| {
        severity_rank(a)
            .cmp(&severity_rank(b))
            .then_with(|| a.starts_at.cmp(&b.starts_at))
            .then_with(|| a.name().cmp(b.name()))
    });
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &alerts)?;
        writeln!(out)?;
        return Ok(());
    }
    if alerts.is_empty() {
        writeln!(
            out,
            "no firing alerts{}",
            if args.unacked {
                " without acknowledgement"
            } else {
                ""
            }
        )?;
        return Ok(());
    }
    let silences = client.silences().await?;
    let rows: Vec<[String; 6]> = alerts
        .iter()
        .map(|a| {
            [
                a.state_word().to_owned(),
                a.labels.get("severity").cloned().unwrap_or_default(),
                a.name().to_owned(),
                a.target(),
                seconds_precision(&a.starts_at),
                a.note(&silences),
            ]
        })
        .collect();
    write_table(
        out,
        ["STATE", "SEVERITY", "ALERT", "TARGET", "SINCE", "SUMMARY"],
        &rows,
    )?;
    Ok(())
}

async fn acknowledge(
    client: &Alertmanager,
    args: &AckArgs,
    now: SystemTime,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    if args.comment.trim().is_empty() {
        bail!("--comment must say why the alert is acknowledged");
    }
    let mut matchers = vec![Matcher::equal("alertname", &args.alert)];
    matchers.extend(args.matchers.iter().cloned());
    let firing = client.alerts(&matchers).await?;
    if firing.is_empty() && !args.force {
        bail!(
            "no firing alert matches {}; check the name with `infermon alerts list`, or pass --force to silence it ahead of time",
            display_matchers(&matchers)
        );
    }
    let author = args
        .author
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("USERNAME").ok())
        .unwrap_or_else(|| "infermon".to_owned());
    let ends = now + args.duration;
    let silence = NewSilence {
        matchers: matchers.iter().map(SilenceMatcher::from).collect(),
        starts_at: rfc3339(now),
        ends_at: rfc3339(ends),
        created_by: author.clone(),
        comment: args.comment.clone(),
    };
    let id = client.create_silence(&silence).await?;
    writeln!(
        out,
        "acknowledged {} ({} firing) until {} by {author}: silence {id}",
        display_matchers(&matchers),
        firing.len(),
        silence.ends_at,
    )?;
    writeln!(out, "undo with: infermon alerts unack {id}")?;
    Ok(())
}

async fn unacknowledge(
    client: &Alertmanager,
    args: &UnackArgs,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let active: Vec<Silence> = client
        .silences()
        .await?
        .into_iter()
        .filter(|s| s.status.state == "active")
        .collect();
    let chosen: Vec<&Silence> = if looks_like_silence_id(&args.target) {
        active.iter().filter(|s| s.id == args.target).collect()
    } else {
        let mut wanted = vec![Matcher::equal("alertname", &args.target)];
        wanted.extend(args.matchers.iter().cloned());
        active.iter().filter(|s| s.includes_all(&wanted)).collect()
    };
    if chosen.is_empty() {
        bail!(
            "no active acknowledgement (silence) for {}; `infermon alerts list` shows what is acknowledged",
            args.target
        );
    }
    for silence in chosen {
        client.expire_silence(&silence.id).await?;
        writeln!(
            out,
            "expired silence {} ({}, by {}: {})",
            silence.id,
            display_silence_matchers(&silence.matchers),
            silence.created_by,
            silence.comment
        )?;
    }
    Ok(())
}

// ---- Alertmanager v2 API ----------------------------------------------------------------------

/// A small client for the parts of Alertmanager's v2 API this command uses.
pub struct Alertmanager {
    base: String,
    http: reqwest::Client,
}

impl Alertmanager {
    pub fn new(base_url: &str) -> anyhow::Result<Self> {
        let base = base_url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!(
                "--alertmanager-url {base_url} must start with http://, e.g. http://127.0.0.1:9093"
            );
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .context("cannot create an HTTP client")?;
        Ok(Self { base, http })
    }

    /// Alerts Alertmanager currently holds as firing, matching every matcher.
    pub async fn alerts(&self, matchers: &[Matcher]) -> anyhow::Result<Vec<Alert>> {
        let mut query: Vec<(&str, String)> = vec![
            ("active", "true".into()),
            ("silenced", "true".into()),
            ("inhibited", "true".into()),
            ("unprocessed", "true".into()),
        ];
        query.extend(matchers.iter().map(|m| ("filter", m.to_string())));
        let url = reqwest::Url::parse_with_params(&self.url("/api/v2/alerts"), &query)
            .with_context(|| format!("--alertmanager-url {} is not a valid URL", self.base))?;
        let request = self.http.get(url);
        self.send(request, "list alerts")
            .await?
            .json()
            .await
            .context("unexpected alert list from Alertmanager")
    }

    /// Every silence Alertmanager knows (active, pending and recently expired).
    pub async fn silences(&self) -> anyhow::Result<Vec<Silence>> {
        let request = self.http.get(self.url("/api/v2/silences"));
        self.send(request, "list silences")
            .await?
            .json()
            .await
            .context("unexpected silence list from Alertmanager")
    }

    /// Creates a silence and returns its ID.
    pub async fn create_silence(&self, silence: &NewSilence) -> anyhow::Result<String> {
        #[derive(Deserialize)]
        struct Created {
            #[serde(rename = "silenceID")]
            silence_id: String,
        }
        let request = self.http.post(self.url("/api/v2/silences")).json(silence);
        let created: Created = self
            .send(request, "create a silence")
            .await?
            .json()
            .await
            .context("unexpected answer from Alertmanager to a new silence")?;
        Ok(created.silence_id)
    }

    /// Expires a silence now.
    pub async fn expire_silence(&self, id: &str) -> anyhow::Result<()> {
        let request = self.http.delete(self.url(&format!("/api/v2/silence/{id}")));
        self.send(request, "expire a silence").await?;
        Ok(())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request; transport failures and non-2xx answers become one-line errors saying
    /// what was attempted and what Alertmanager said.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> anyhow::Result<reqwest::Response> {
        let response = request.send().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach Alertmanager at {} to {what} ({}); is it running? Set --alertmanager-url or INFERMON_ALERTMANAGER_URL",
                self.base,
                root_cause(&e)
            )
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        bail!(
            "Alertmanager refused to {what}: HTTP {status}: {}",
            api_error_message(&body)
        )
    }
}

/// The innermost cause of an HTTP error ("Connection refused (os error 111)"), which is what a
/// user can act on; reqwest's outer messages only say "error sending request".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// Alertmanager answers errors with a JSON string or `{"message": ...}`; fall back to the body.
fn api_error_message(body: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(serde_json::Value::Object(o)) => match o.get("message") {
            Some(serde_json::Value::String(s)) => s.clone(),
            _ => body.trim().to_owned(),
        },
        _ => body.trim().to_owned(),
    }
}

/// An alert as `GET /api/v2/alerts` returns it (the fields this command uses; the rest is kept
/// for `list --json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    pub status: AlertStatus,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertStatus {
    /// `active`, `suppressed` (silenced or inhibited) or `unprocessed`.
    pub state: String,
    #[serde(default)]
    pub silenced_by: Vec<String>,
    #[serde(default)]
    pub inhibited_by: Vec<String>,
}

impl Alert {
    pub fn name(&self) -> &str {
        self.labels
            .get("alertname")
            .map(String::as_str)
            .unwrap_or("")
    }

    fn state_word(&self) -> &'static str {
        if !self.status.silenced_by.is_empty() {
            "acked"
        } else if !self.status.inhibited_by.is_empty() {
            "inhibited"
        } else {
            "firing"
        }
    }

    /// What the alert is about: the service, and the instance/model/host/GPU where present.
    fn target(&self) -> String {
        let model = prometheus_label(attr::GEN_AI_REQUEST_MODEL);
        let host = prometheus_label(attr::HOST_NAME);
        let gpu = prometheus_label(attr::GPU_INDEX);
        let mut parts: Vec<String> = Vec::new();
        for key in ["job", "instance", &model, &host] {
            if let Some(v) = self.labels.get(key) {
                if !parts.contains(v) {
                    parts.push(v.clone());
                }
            }
        }
        if let Some(index) = self.labels.get(&gpu) {
            parts.push(format!("gpu {index}"));
        }
        parts.join(" ")
    }

    /// The summary, followed by who acknowledged it, why and until when.
    fn note(&self, silences: &[Silence]) -> String {
        let mut note = self.annotations.get("summary").cloned().unwrap_or_default();
        for id in &self.status.silenced_by {
            match silences.iter().find(|s| &s.id == id) {
                Some(s) => note.push_str(&format!(
                    " [acked by {} until {}: {}]",
                    s.created_by,
                    seconds_precision(&s.ends_at),
                    s.comment
                )),
                None => note.push_str(&format!(" [silence {id}]")),
            }
        }
        note
    }
}

/// An attribute's label name in Prometheus (its default OTLP translation: dots to underscores).
fn prometheus_label(attribute: &str) -> String {
    attribute.replace('.', "_")
}

fn severity_rank(alert: &Alert) -> u8 {
    match alert.labels.get("severity").map(String::as_str) {
        Some("critical") => 0,
        Some("warning") => 1,
        Some("info") => 2,
        _ => 3,
    }
}

/// A silence as `GET /api/v2/silences` returns it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Silence {
    pub id: String,
    pub matchers: Vec<SilenceMatcher>,
    pub ends_at: String,
    pub created_by: String,
    pub comment: String,
    pub status: SilenceStatus,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SilenceStatus {
    /// `active`, `pending` or `expired`.
    pub state: String,
}

impl Silence {
    /// Whether every wanted matcher is one of this silence's matchers.
    fn includes_all(&self, wanted: &[Matcher]) -> bool {
        wanted
            .iter()
            .all(|w| self.matchers.iter().any(|m| *m == SilenceMatcher::from(w)))
    }
}

/// A silence to create (`POST /api/v2/silences`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewSilence {
    pub matchers: Vec<SilenceMatcher>,
    pub starts_at: String,
    pub ends_at: String,
    pub created_by: String,
    pub comment: String,
}

/// A label matcher in the API's JSON form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SilenceMatcher {
    pub name: String,
    pub value: String,
    pub is_regex: bool,
    #[serde(default = "default_true")]
    pub is_equal: bool,
}

fn default_true() -> bool {
    true
}

impl From<&Matcher> for SilenceMatcher {
    fn from(m: &Matcher) -> Self {
        Self {
            name: m.name.clone(),
            value: m.value.clone(),
            is_regex: matches!(m.op, MatchOp::Regex | MatchOp::NotRegex),
            is_equal: matches!(m.op, MatchOp::Equal | MatchOp::Regex),
        }
    }
}

// ---- matchers ---------------------------------------------------------------------------------

/// A label matcher given on the command line: `name=value`, `name!=value`, `name=~regex` or
/// `name!~regex`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

impl Matcher {
    pub fn equal(name: &str, value: &str) -> Self {
        Self {
            name: name.to_owned(),
            op: MatchOp::Equal,
            value: value.to_owned(),
        }
    }
}

impl FromStr for Matcher {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let hint = "write a matcher as name=value, name!=value, name=~regex or name!~regex (e.g. job=my-service)";
        // Two-character operators first: `a!=b` also contains `=`.
        let (at, op, len) = [
            ("=~", MatchOp::Regex),
            ("!~", MatchOp::NotRegex),
            ("!=", MatchOp::NotEqual),
            ("=", MatchOp::Equal),
        ]
        .iter()
        .filter_map(|(token, op)| s.find(token).map(|at| (at, *op, token.len())))
        .min_by_key(|(at, _, len)| (*at, usize::MAX - len))
        .ok_or_else(|| format!("`{s}` has no operator; {hint}"))?;
        let name = s[..at].trim();
        let value = s[at + len..].trim().trim_matches('"');
        let valid_name = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            return Err(format!("`{name}` in `{s}` is not a label name; {hint}"));
        }
        Ok(Self {
            name: name.to_owned(),
            op,
            value: value.to_owned(),
        })
    }
}

/// Alertmanager's matcher syntax, as its `filter` query parameter and amtool take it.
impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        };
        let value = self.value.replace('\\', "\\\\").replace('"', "\\\"");
        write!(f, "{}{op}\"{value}\"", self.name)
    }
}

fn display_matchers(matchers: &[Matcher]) -> String {
    let inner: Vec<String> = matchers.iter().map(Matcher::to_string).collect();
    format!("{{{}}}", inner.join(", "))
}

fn display_silence_matchers(matchers: &[SilenceMatcher]) -> String {
    let as_matchers: Vec<Matcher> = matchers
        .iter()
        .map(|m| Matcher {
            name: m.name.clone(),
            op: match (m.is_equal, m.is_regex) {
                (true, false) => MatchOp::Equal,
                (false, false) => MatchOp::NotEqual,
                (true, true) => MatchOp::Regex,
                (false, true) => MatchOp::NotRegex,
            },
            value: m.value.clone(),
        })
        .collect();
    display_matchers(&as_matchers)
}

/// Silence IDs are UUIDs.
fn looks_like_silence_id(s: &str) -> bool {
    s.len() == 36
        && s.chars().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

// ---- durations and times ----------------------------------------------------------------------

/// Silence lengths: a sequence of number+unit (`s`, `m`, `h`, `d`, `w`), e.g. `90m`, `2h30m`,
/// `1d`. Unlike request timeouts, acknowledgements are minutes to days long.
pub fn parse_silence_duration(s: &str) -> Result<Duration, String> {
    let hint = "write a duration such as 30m, 1h, 2h30m or 1d";
    let mut total: u64 = 0;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(format!("empty duration; {hint}"));
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{s}` is not a duration; {hint}"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 604_800,
            other => return Err(format!("unknown unit `{other}` in `{s}`; {hint}")),
        };
        rest = &rest[unit_len..];
        total = number
            .checked_mul(seconds)
            .and_then(|n| total.checked_add(n))
            .ok_or_else(|| format!("`{s}` is too long"))?;
    }
    if total == 0 {
        return Err(format!("`{s}` is zero; {hint}"));
    }
    Ok(Duration::from_secs(total))
}

/// `2026-11-28T09:30:00Z` (UTC, whole seconds), the form Alertmanager's API takes.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `2026-11-28T09:30:00.123456Z` -> `2026-11-28T09:30:00Z`.
fn seconds_precision(timestamp: &str) -> String {
    match (timestamp.find('.'), timestamp.ends_with('Z')) {
        (Some(19), true) => format!("{}Z", &timestamp[..19]),
        _ => timestamp.to_owned(),
    }
}

// ---- output -----------------------------------------------------------------------------------

/// Left-aligned columns; the last column is not padded.
fn write_table<const N: usize>(
    out: &mut dyn Write,
    header: [&str; N],
    rows: &[[String; N]],
) -> std::io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(header.as_slice()).chain(rows.iter().map(|r| r.as_slice())) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(widths[i] - cell.chars().count() + 2));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matchers_parse_every_operator_and_print_in_alertmanager_syntax() {
        let cases = [
            ("job=svc", "job", MatchOp::Equal, "svc", r#"job="svc""#),
            ("job!=svc", "job", MatchOp::NotEqual, "svc", r#"job!="svc""#),
            (
                "instance=~a.*",
                "instance",
                MatchOp::Regex,
                "a.*",
                r#"instance=~"a.*""#,
            ),
            (
                "instance!~b|c",
                "instance",
                MatchOp::NotRegex,
                "b|c",
                r#"instance!~"b|c""#,
            ),
            (
                r#"model="llama 3""#,
                "model",
                MatchOp::Equal,
                "llama 3",
                r#"model="llama 3""#,
            ),
            ("expr=a=b", "expr", MatchOp::Equal, "a=b", r#"expr="a=b""#),
        ];
        for (input, name, op, value, shown) in cases {
            let m: Matcher = input.parse().unwrap();
            assert_eq!(
                (m.name.as_str(), m.op, m.value.as_str()),
                (name, op, value),
                "{input}"
            );
            assert_eq!(m.to_string(), shown, "{input}");
        }
        assert_eq!(Matcher::equal("a", r#"x"y\"#).to_string(), r#"a="x\"y\\""#);
    }

    #[test]
    fn bad_matchers_explain_the_syntax() {
        for bad in ["job", "=svc", "1job=svc", "my-label=x"] {
            let e = bad.parse::<Matcher>().unwrap_err();
            assert!(e.contains("name=value"), "{bad}: {e}");
        }
    }

    #[test]
    fn silence_durations_accept_compound_units_and_reject_nonsense() {
        assert_eq!(parse_silence_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(
            parse_silence_duration("2h30m"),
            Ok(Duration::from_secs(9000))
        );
        assert_eq!(
            parse_silence_duration("1d"),
            Ok(Duration::from_secs(86_400))
        );
        assert_eq!(
            parse_silence_duration("1w"),
            Ok(Duration::from_secs(604_800))
        );
        for bad in [
            "",
            "1",
            "h",
            "5 parsecs",
            "0m",
            "-1h",
            "1.5h",
            "99999999999999999999w",
        ] {
            assert!(parse_silence_duration(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn rfc3339_matches_known_instants() {
        let at = |s: u64| rfc3339(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(at(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn timestamps_are_shown_to_the_second() {
        assert_eq!(
            seconds_precision("2026-11-28T09:30:00.123456789Z"),
            "2026-11-28T09:30:00Z"
        );
        assert_eq!(
            seconds_precision("2026-11-28T09:30:00Z"),
            "2026-11-28T09:30:00Z"
        );
    }

    #[test]
    fn silence_ids_are_recognised_and_alert_names_are_not() {
        assert!(looks_like_silence_id(
            "3f2a9c1e-7b4d-4e8a-9c2f-1a2b3c4d5e6f"
        ));
        assert!(!looks_like_silence_id("InferenceHighErrorRatio"));
        assert!(!looks_like_silence_id(
            "3f2a9c1e-7b4d-4e8a-9c2f-1a2b3c4d5e6"
        ));
    }

    #[test]
    fn api_errors_are_unwrapped_to_their_message() {
        assert_eq!(
            api_error_message(r#""silence not found""#),
            "silence not found"
        );
        assert_eq!(
            api_error_message(r#"{"code":400,"message":"bad matcher"}"#),
            "bad matcher"
        );
        assert_eq!(api_error_message("plain text\n"), "plain text");
    }

    #[test]
    fn tables_align_columns() {
        let mut out = Vec::new();
        let rows = [
            ["a".to_owned(), "long cell".to_owned()],
            ["bbbb".to_owned(), "x".to_owned()],
        ];
        write_table(&mut out, ["H1", "H2"], &rows).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "H1    H2\na     long cell\nbbbb  x\n"
        );
    }
}
