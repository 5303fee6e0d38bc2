//! The live check: every panel query of every dashboard, with its variables expanded to "All"
//! and to one concrete value, run against the stack's Prometheus and Jaeger; the result is a
//! report of how many series (or traces, or service-graph edges) each one returned.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::model::{load_dashboards, repo_dashboards_dir, Dashboard, Query, Target, Variable};
use super::promql;
use super::vars::{expand, references, Choice, Format, TimeContext};
use super::{allowed_empty, DashboardError};
use crate::http_api::{send_for_json, Prometheus};

/// Where the stack is and which time range the panels are evaluated over.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    pub prometheus_url: String,
    /// Jaeger's query API; without it, trace-store targets are reported as skipped.
    pub jaeger_url: Option<String>,
    pub dashboards_dir: PathBuf,
    pub time: TimeContext,
    /// Variables held at a given value in the "one value" expansion instead of the first value
    /// found (e.g. `job` = `vllm` to see what the dashboards show for a vLLM engine).
    pub pinned: BTreeMap<String, String>,
}

impl LiveConfig {
    pub fn new(prometheus_url: &str, jaeger_url: Option<&str>) -> Self {
        LiveConfig {
            prometheus_url: prometheus_url.to_string(),
            jaeger_url: jaeger_url.map(str::to_string),
            dashboards_dir: repo_dashboards_dir(),
            time: TimeContext::default(),
            pinned: BTreeMap::new(),
        }
    }
}

/// What one expansion of one target returned.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Series (PromQL), traces (Jaeger search) or edges (service graph).
    Found(usize),
    Error(String),
    Skipped(String),
}

/// One expansion of a target: the variable values used, the query sent, and its outcome.
#[derive(Debug, Clone)]
pub struct Run {
    /// `All`, or `name=value, ...` of the variables the query uses.
    pub binding: String,
    pub expanded: String,
    pub outcome: Outcome,
}

#[derive(Debug, Clone)]
pub struct CoverageRow {
    pub dashboard_uid: String,
    pub dashboard_title: String,
    pub panel_id: i64,
    pub panel_title: String,
    pub ref_id: String,
    pub language: &'static str,
    pub query: String,
    pub all: Run,
    pub one: Run,
    /// Exemplars found for targets that ask for them (`"exemplar": true`), over the range.
    pub exemplars: Option<Result<usize, String>>,
    /// Why this target may legitimately return nothing (from [`super::MAY_BE_EMPTY`]).
    pub may_be_empty: Option<&'static str>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Ok,
    /// Empty, and the reason table says why that is legitimate.
    AllowedEmpty(&'static str),
    Failed(String),
    Skipped(String),
}

impl CoverageRow {
    pub fn verdict(&self) -> Verdict {
        let runs = [("All", &self.all), ("one value", &self.one)];
        for (which, run) in runs {
            match &run.outcome {
                Outcome::Error(e) => return Verdict::Failed(format!("{which}: {e}")),
                Outcome::Skipped(why) => return Verdict::Skipped(why.clone()),
                Outcome::Found(_) => {}
            }
        }
        if let Some(Err(e)) = &self.exemplars {
            return Verdict::Failed(format!("exemplars: {e}"));
        }
        let empty = runs
            .iter()
            .find(|(_, r)| r.outcome == Outcome::Found(0))
            .map(|(w, r)| (*w, r));
        let no_exemplars = self.exemplars == Some(Ok(0));
        match (empty, no_exemplars, self.may_be_empty) {
            (None, false, _) => Verdict::Ok,
            (_, _, Some(reason)) => Verdict::AllowedEmpty(reason),
            (Some((which, run)), _, None) => {
                Verdict::Failed(format!("nothing returned with {which} ({})", run.binding))
            }
            (None, true, None) => Verdict::Failed("no exemplars".to_string()),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct CoverageReport {
    pub rows: Vec<CoverageRow>,
}

impl CoverageReport {
    pub fn failures(&self) -> Vec<&CoverageRow> {
        self.rows
            .iter()
            .filter(|r| matches!(r.verdict(), Verdict::Failed(_)))
            .collect()
    }

    pub fn skipped(&self) -> Vec<&CoverageRow> {
        self.rows
            .iter()
            .filter(|r| matches!(r.verdict(), Verdict::Skipped(_)))
            .collect()
    }

    /// One line: targets checked, ok, allowed empty, failed, skipped.
    pub fn summary(&self) -> String {
        let mut counts = [0usize; 4];
        for row in &self.rows {
            counts[match row.verdict() {
                Verdict::Ok => 0,
                Verdict::AllowedEmpty(_) => 1,
                Verdict::Failed(_) => 2,
                Verdict::Skipped(_) => 3,
            }] += 1;
        }
        format!(
            "{} targets: {} ok, {} empty (allowed, reason given), {} failed, {} skipped",
            self.rows.len(),
            counts[0],
            counts[1],
            counts[2],
            counts[3]
        )
    }
}

/// Runs every target of every dashboard in `config.dashboards_dir`. Errors of individual queries
/// are part of the report; only a dashboard that cannot be loaded is an `Err`.
pub async fn run_coverage(config: &LiveConfig) -> Result<CoverageReport, DashboardError> {
    let dashboards = load_dashboards(&config.dashboards_dir)?;
    let stack = Stack {
        prometheus: Prometheus::new(&config.prometheus_url),
        prometheus_url: config.prometheus_url.trim_end_matches('/').to_string(),
        http: http_client(),
        jaeger: config.jaeger_url.as_deref().map(Jaeger::new),
        time: config.time,
        pinned: config.pinned.clone(),
    };
    let mut report = CoverageReport::default();
    for dashboard in &dashboards {
        for target in dashboard.targets() {
            report.rows.push(stack.check(dashboard, &target).await);
        }
    }
    Ok(report)
}

type Choices = BTreeMap<String, Choice>;

/// Why variables could not be given values.
#[derive(Debug, Clone)]
enum Unresolved {
    /// The target's series carry no value for the variable's label: there is nothing to show.
    NoValue(String),
    Error(String),
}

struct Stack {
    prometheus: Prometheus,
    /// For range queries, which [`Prometheus`] does not offer.
    prometheus_url: String,
    http: reqwest::Client,
    jaeger: Option<Jaeger>,
    time: TimeContext,
    pinned: BTreeMap<String, String>,
}

impl Stack {
    async fn check(&self, dashboard: &Dashboard, target: &Target) -> CoverageRow {
        let variables = dashboard.variables();
        let all = self.all_choices(&variables, target).await;
        let all_run = self.run(target, &variables, all.clone()).await;
        let one = self
            .one_value_choices(&variables, target, &all, &all_run)
            .await;
        let one_run = self.run(target, &variables, one).await;
        let exemplars = match (&target.query, &all_run.outcome) {
            (Query::PromQl { exemplar: true, .. }, Outcome::Found(_)) => {
                Some(self.exemplars_open_traces(&all_run.expanded).await)
            }
            _ => None,
        };
        CoverageRow {
            dashboard_uid: dashboard.uid.clone(),
            dashboard_title: dashboard.title.clone(),
            panel_id: target.panel_id,
            panel_title: target.panel_title.clone(),
            ref_id: target.ref_id.clone(),
            language: target.query.language(),
            query: target.query.display(),
            all: all_run,
            one: one_run,
            exemplars,
            may_be_empty: allowed_empty(&dashboard.uid, &target.panel_title, &target.ref_id),
        }
    }

    /// The number of exemplars stored for `promql` over the range; with a trace store, an
    /// error unless one of them (up to the first ten) opens a trace there — what clicking an
    /// exemplar does.
    async fn exemplars_open_traces(&self, promql: &str) -> Result<usize, String> {
        let ids = self
            .prometheus
            .exemplar_trace_ids(promql, self.time.range)
            .await?;
        let Some(search) = &self.jaeger else {
            return Ok(ids.len());
        };
        let jaeger = crate::http_api::Jaeger::new(&search.base);
        for id in ids.iter().take(10) {
            if jaeger.trace(id).await?.is_some() {
                return Ok(ids.len());
            }
        }
        match ids.first() {
            None => Ok(0),
            Some(id) => Err(format!(
                "none of {} exemplar trace ids is in the trace store (e.g. {id})",
                ids.len()
            )),
        }
    }

    /// A range query over the dashboard's time range: the number of series with at least one
    /// point. The step is the panel interval, coarser for long ranges (Prometheus caps a range
    /// query at 11,000 points per series).
    async fn query_range(&self, promql: &str) -> Result<usize, String> {
        let end = micros_since_epoch() as f64 / 1e6;
        let step = self
            .time
            .interval
            .as_secs_f64()
            .max(self.time.range.as_secs_f64() / 1000.0);
        let params = [
            ("query", promql.to_string()),
            ("start", (end - self.time.range.as_secs_f64()).to_string()),
            ("end", end.to_string()),
            ("step", step.to_string()),
        ];
        let url = format!("{}/api/v1/query_range", self.prometheus_url);
        let request = self.http.get(&url).query(&params);
        let body = send_for_json(request, &format!("GET {url}")).await?;
        if body["status"] != "success" {
            return Err(format!("{promql}: {}", body["error"]));
        }
        Ok(body["data"]["result"].as_array().map_or(0, Vec::len))
    }

    /// "All" for variables that offer it; the first value for single-value variables, as
    /// Grafana selects when nothing is chosen yet.
    async fn all_choices(
        &self,
        variables: &[Variable],
        target: &Target,
    ) -> Result<Choices, Unresolved> {
        let mut choices = BTreeMap::new();
        for v in used_variables(variables, target) {
            let choice = if v.include_all {
                Choice::All
            } else {
                Choice::Value(self.first_value(v, variables, &choices, None).await?)
            };
            choices.insert(v.name.clone(), choice);
        }
        Ok(choices)
    }

    /// One concrete value per variable the target uses, chosen in dashboard order among the
    /// label values of the series the target itself selects (narrowed by the values already
    /// chosen), so that a chained selection such as job → model is one a user could make.
    async fn one_value_choices(
        &self,
        variables: &[Variable],
        target: &Target,
        all: &Result<Choices, Unresolved>,
        all_run: &Run,
    ) -> Result<Choices, Unresolved> {
        let all = all.as_ref().map_err(Clone::clone)?;
        let selectors = match &target.query {
            Query::PromQl { .. } => promql::names(&all_run.expanded).selectors,
            _ => Vec::new(),
        };
        let mut choices = BTreeMap::new();
        for v in used_variables(variables, target) {
            let value = match all.get(&v.name) {
                _ if self.pinned.contains_key(&v.name) => self.pinned[&v.name].clone(),
                Some(Choice::Value(single)) if !v.include_all => single.clone(),
                _ => {
                    self.first_value(v, variables, &choices, Some(&selectors))
                        .await?
                }
            };
            choices.insert(v.name.clone(), Choice::Value(value));
        }
        Ok(choices)
    }

    /// The first value of `v`: a custom variable's default, or the first label value of a
    /// `label_values(selector, label)` query variable. With `selectors` (those of the target's
    /// query), the values are the ones its own series carry, instead of the variable's.
    async fn first_value(
        &self,
        v: &Variable,
        variables: &[Variable],
        chosen: &Choices,
        selectors: Option<&[String]>,
    ) -> Result<String, Unresolved> {
        if v.kind == "custom" {
            return v
                .current
                .clone()
                .or_else(|| v.definition.split(',').next().map(|s| s.trim().to_string()))
                .ok_or_else(|| {
                    Unresolved::Error(format!("${}: custom variable without values", v.name))
                });
        }
        let (selector, label) = parse_label_values(&v.definition).ok_or_else(|| {
            Unresolved::Error(format!(
                "${}: only label_values(selector, label) variables are supported",
                v.name
            ))
        })?;
        // The dropdown's own values, where its query can be expanded with what is chosen so far
        // (it may name variables this target does not use).
        let own_selector = expand(&selector, variables, chosen, &self.time, Format::Regex);
        let offered = match &own_selector {
            Ok(own) => self.label_values(&label, std::slice::from_ref(own)).await?,
            Err(_) => BTreeSet::new(),
        };
        let selectors: Vec<String> = match selectors.filter(|s| !s.is_empty()) {
            Some(own) => own.iter().map(|s| narrowed(s, variables, chosen)).collect(),
            None => vec![own_selector.map_err(|e| Unresolved::Error(e.to_string()))?],
        };
        let values = self.label_values(&label, &selectors).await?;
        // A value the variable's dropdown offers, if the target's series carry one (a user
        // cannot pick any other); else the first the target's series carry.
        let first_offered = values.iter().find(|v| offered.contains(*v)).cloned();
        first_offered
            .or_else(|| values.into_iter().next())
            .ok_or_else(|| {
                Unresolved::NoValue(format!("no `{label}` value in {}", selectors.join(", ")))
            })
    }

    /// The values of `label` on the series `selectors` select.
    async fn label_values(
        &self,
        label: &str,
        selectors: &[String],
    ) -> Result<BTreeSet<String>, Unresolved> {
        let mut values = BTreeSet::new();
        for selector in selectors {
            let samples = self
                .prometheus
                .query(&format!("group by ({label}) ({selector})"))
                .await
                .map_err(Unresolved::Error)?;
            values.extend(
                samples
                    .iter()
                    .filter_map(|s| s.label(label))
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            );
        }
        Ok(values)
    }

    async fn run(
        &self,
        target: &Target,
        variables: &[Variable],
        choices: Result<Choices, Unresolved>,
    ) -> Run {
        let choices = match choices {
            Ok(c) => c,
            // Nothing to choose from means nothing to show: an empty panel, judged like one.
            Err(Unresolved::NoValue(why)) => {
                return Run {
                    binding: why,
                    expanded: String::new(),
                    outcome: Outcome::Found(0),
                }
            }
            Err(Unresolved::Error(e)) => {
                return Run {
                    binding: "?".to_string(),
                    expanded: String::new(),
                    outcome: Outcome::Error(e),
                }
            }
        };
        let binding = describe(&choices);
        let fail = |e: String| Run {
            binding: binding.clone(),
            expanded: String::new(),
            outcome: Outcome::Error(e),
        };
        let ex = |text: &str, format| {
            expand(text, variables, &choices, &self.time, format).map_err(|e| e.to_string())
        };
        match &target.query {
            Query::PromQl { expr, instant, .. } => {
                let expanded = match ex(expr, Format::Regex) {
                    Ok(e) => e,
                    Err(e) => return fail(e),
                };
                // As Grafana runs them: table/stat targets at one instant, graphs over the range.
                let series = if *instant {
                    self.prometheus.query(&expanded).await.map(|s| s.len())
                } else {
                    self.query_range(&expanded).await
                };
                let outcome = match series {
                    Ok(n) => Outcome::Found(n),
                    Err(e) => Outcome::Error(e),
                };
                Run {
                    binding,
                    expanded,
                    outcome,
                }
            }
            Query::JaegerSearch {
                service,
                operation,
                tags,
                min_duration,
                max_duration,
                limit,
            } => {
                let expand_opt =
                    |o: &Option<String>| o.as_deref().map(|t| ex(t, Format::Raw)).transpose();
                let search = match (|| {
                    Ok::<_, String>(TraceSearch {
                        service: ex(service, Format::Raw)?,
                        operation: expand_opt(operation)?,
                        tags: expand_opt(tags)?,
                        min_duration: expand_opt(min_duration)?,
                        max_duration: expand_opt(max_duration)?,
                        limit: limit.unwrap_or(20),
                    })
                })() {
                    Ok(s) => s,
                    Err(e) => return fail(e),
                };
                let expanded = search.describe();
                let outcome = match &self.jaeger {
                    None => Outcome::Skipped("no trace store URL given".to_string()),
                    Some(j) => match j.search(&search, self.time.range).await {
                        Ok(n) => Outcome::Found(n),
                        Err(e) => Outcome::Error(e),
                    },
                };
                Run {
                    binding,
                    expanded,
                    outcome,
                }
            }
            Query::JaegerDependencies => {
                let outcome = match &self.jaeger {
                    None => Outcome::Skipped("no trace store URL given".to_string()),
                    Some(j) => match j.dependencies(self.time.range).await {
                        Ok(n) => Outcome::Found(n),
                        Err(e) => Outcome::Error(e),
                    },
                };
                Run {
                    binding,
                    expanded: "GET /api/dependencies".to_string(),
                    outcome,
                }
            }
            Query::Unsupported(why) => fail(why.clone()),
        }
    }
}

/// The dashboard variables a target refers to, in dashboard order.
fn used_variables<'a>(variables: &'a [Variable], target: &Target) -> Vec<&'a Variable> {
    let text = match &target.query {
        Query::PromQl { expr, .. } => expr.clone(),
        Query::JaegerSearch {
            service,
            operation,
            tags,
            min_duration,
            max_duration,
            ..
        } => [
            Some(service.clone()),
            operation.clone(),
            tags.clone(),
            min_duration.clone(),
            max_duration.clone(),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" "),
        _ => String::new(),
    };
    let used: BTreeSet<String> = references(&text).into_iter().map(|r| r.name).collect();
    variables
        .iter()
        .filter(|v| used.contains(&v.name))
        .collect()
}

/// `label_values(selector, label)` → (selector, label); `label_values(label)` → (`{label!=""}`, label).
pub fn parse_label_values(definition: &str) -> Option<(String, String)> {
    let inner = definition
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    match inner.rsplit_once(',') {
        Some((selector, label)) => Some((selector.trim().to_string(), label.trim().to_string())),
        None => Some((
            format!("{{{}!=\"\"}}", inner.trim()),
            inner.trim().to_string(),
        )),
    }
}

/// `selector` narrowed by the concrete values chosen so far, for the labels their variables are
/// defined on.
fn narrowed(selector: &str, variables: &[Variable], chosen: &Choices) -> String {
    let mut narrowed = selector.to_string();
    for (name, choice) in chosen {
        let label = variables
            .iter()
            .find(|v| &v.name == name)
            .and_then(|v| parse_label_values(&v.definition))
            .map(|(_, label)| label);
        if let (Some(label), Choice::Value(value)) = (label, choice) {
            narrowed = promql::with_matcher(&narrowed, &label, value);
        }
    }
    narrowed
}

fn describe(choices: &Choices) -> String {
    let values: Vec<String> = choices
        .iter()
        .filter_map(|(k, c)| match c {
            Choice::Value(v) => Some(format!("{k}={v}")),
            Choice::All => None,
        })
        .collect();
    match (values.is_empty(), choices.is_empty()) {
        (_, true) => "no variables".to_string(),
        (true, false) => "All".to_string(),
        (false, false) => values.join(", "),
    }
}

/// A Jaeger search with its variables expanded.
#[derive(Debug, Clone)]
struct TraceSearch {
    service: String,
    operation: Option<String>,
    /// logfmt, as Grafana's Jaeger query editor takes it (`error=true http.status_code=500`).
    tags: Option<String>,
    min_duration: Option<String>,
    max_duration: Option<String>,
    limit: u64,
}

impl TraceSearch {
    fn describe(&self) -> String {
        Query::JaegerSearch {
            service: self.service.clone(),
            operation: self.operation.clone(),
            tags: self.tags.clone(),
            min_duration: self.min_duration.clone(),
            max_duration: self.max_duration.clone(),
            limit: Some(self.limit),
        }
        .display()
    }
}

/// The two calls of Jaeger's query API that Grafana's Jaeger datasource makes for search and
/// dependency-graph queries (`crate::http_api::Jaeger` fetches single traces).
struct Jaeger {
    base: String,
    http: reqwest::Client,
}

impl Jaeger {
    fn new(base: &str) -> Self {
        Jaeger {
            base: base.trim_end_matches('/').to_string(),
            http: http_client(),
        }
    }

    /// Number of traces the search finds over the last `range`.
    async fn search(&self, s: &TraceSearch, range: Duration) -> Result<usize, String> {
        let end = micros_since_epoch();
        let start = end.saturating_sub(range.as_micros());
        let mut params = vec![
            ("service", s.service.clone()),
            ("start", start.to_string()),
            ("end", end.to_string()),
            ("limit", s.limit.to_string()),
        ];
        let optional = [
            ("operation", &s.operation),
            ("minDuration", &s.min_duration),
            ("maxDuration", &s.max_duration),
        ];
        params.extend(
            optional
                .into_iter()
                .filter_map(|(k, v)| v.clone().map(|v| (k, v))),
        );
        if let Some(tags) = &s.tags {
            params.push(("tags", logfmt_to_json(tags)?.to_string()));
        }
        let data = self.get("/api/traces", &params).await?;
        Ok(data.as_array().map_or(0, Vec::len))
    }

    /// Number of caller → callee edges in the service graph over the last `range`.
    async fn dependencies(&self, range: Duration) -> Result<usize, String> {
        let end_ms = micros_since_epoch() / 1000;
        let params = [
            ("endTs", end_ms.to_string()),
            ("lookback", range.as_millis().to_string()),
        ];
        let data = self.get("/api/dependencies", &params).await?;
        Ok(data.as_array().map_or(0, Vec::len))
    }

    async fn get(&self, path: &str, params: &[(&str, String)]) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let response = self
            .http
            .get(&url)
            .query(params)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .map_err(|e| format!("GET {url}: {status}: {e}"))?;
        if !status.is_success() || !body["errors"].is_null() {
            return Err(format!("GET {url}: {status}: {}", body["errors"]));
        }
        Ok(body["data"].clone())
    }
}

/// `a=b c="d e"` → `{"a": "b", "c": "d e"}` (Jaeger's `tags` search parameter).
fn logfmt_to_json(text: &str) -> Result<Value, String> {
    let mut map = serde_json::Map::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once('=')
            .ok_or_else(|| format!("tags `{text}`: expected key=value"))?;
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted
                    .find('"')
                    .ok_or_else(|| format!("tags `{text}`: unterminated quote"))?;
                (&quoted[..end], &quoted[end + 1..])
            }
            None => after.split_once(char::is_whitespace).unwrap_or((after, "")),
        };
        map.insert(key.trim().to_string(), Value::String(value.to_string()));
        rest = after.trim_start();
    }
    Ok(Value::Object(map))
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

fn micros_since_epoch() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or_default()
}

// ---- the report as text ------------------------------------------------------------------------

/// The report as a Markdown table (dashboard → panel → query → series count), followed by the
/// summary and, for every failure, the expanded queries and what went wrong.
pub fn render_report(report: &CoverageReport) -> String {
    let mut out = String::new();
    out.push_str("| dashboard | panel | ref | query | All | one value | exemplars | verdict |\n");
    out.push_str("|---|---|---|---|---|---|---|---|\n");
    for row in &report.rows {
        let verdict = match row.verdict() {
            Verdict::Ok => "ok".to_string(),
            Verdict::AllowedEmpty(reason) => format!("empty, allowed: {reason}"),
            Verdict::Failed(why) => format!("FAILED: {why}"),
            Verdict::Skipped(why) => format!("skipped: {why}"),
        };
        let exemplars = match &row.exemplars {
            None => "-".to_string(),
            Some(Ok(n)) => n.to_string(),
            Some(Err(_)) => "error".to_string(),
        };
        out.push_str(&format!(
            "| {} | {} | {} | `{}` | {} | {} ({}) | {} | {} |\n",
            row.dashboard_title.trim_start_matches("infermon / "),
            cell(&row.panel_title),
            row.ref_id,
            cell(&truncate(&row.query, 70)),
            count(&row.all.outcome, row.language),
            count(&row.one.outcome, row.language),
            cell(&row.one.binding),
            exemplars,
            cell(&verdict),
        ));
    }
    out.push('\n');
    out.push_str(&report.summary());
    out.push('\n');
    for row in report.failures() {
        out.push_str(&format!(
            "\nFAILED {} / {} [{}]: {}\n  All:       {}\n  one value: {}\n",
            row.dashboard_uid,
            row.panel_title,
            row.ref_id,
            match row.verdict() {
                Verdict::Failed(why) => why,
                _ => String::new(),
            },
            row.all
                .expanded
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
            row.one
                .expanded
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        ));
    }
    out
}

fn count(outcome: &Outcome, language: &str) -> String {
    match outcome {
        Outcome::Found(n) => {
            let unit = if language == "jaeger" {
                "traces/edges"
            } else {
                "series"
            };
            format!("{n} {unit}")
        }
        Outcome::Error(_) => "error".to_string(),
        Outcome::Skipped(_) => "skipped".to_string(),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max - 1).collect();
    t.push('…');
    t
}

/// Table cells cannot contain `|` or newlines.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        all: Outcome,
        one: Outcome,
        exemplars: Option<Result<usize, String>>,
        reason: Option<&'static str>,
    ) -> CoverageRow {
        let run = |outcome| Run {
            binding: "job=x".to_string(),
            expanded: "q".to_string(),
            outcome,
        };
        CoverageRow {
            dashboard_uid: "d".to_string(),
            dashboard_title: "infermon / D".to_string(),
            panel_id: 1,
            panel_title: "P | q".to_string(),
            ref_id: "A".to_string(),
            language: "promql",
            query: "sum(x)".to_string(),
            all: run(all),
            one: run(one),
            exemplars,
            may_be_empty: reason,
        }
    }

    #[test]
    fn verdicts_need_data_in_both_expansions_unless_a_reason_is_given() {
        use Outcome::*;
        assert_eq!(row(Found(2), Found(1), None, None).verdict(), Verdict::Ok);
        assert!(
            matches!(row(Found(2), Found(0), None, None).verdict(), Verdict::Failed(w) if w.contains("one value"))
        );
        assert_eq!(
            row(Found(0), Found(0), None, Some("why")).verdict(),
            Verdict::AllowedEmpty("why")
        );
        assert!(
            matches!(row(Found(1), Found(1), Some(Ok(0)), None).verdict(), Verdict::Failed(w) if w == "no exemplars")
        );
        assert_eq!(
            row(Found(1), Found(1), Some(Ok(3)), None).verdict(),
            Verdict::Ok
        );
        // A broken query is a failure even when emptiness would be allowed.
        assert!(matches!(
            row(Error("bad".into()), Found(1), None, Some("why")).verdict(),
            Verdict::Failed(_)
        ));
        assert!(matches!(
            row(Skipped("no url".into()), Found(1), None, None).verdict(),
            Verdict::Skipped(_)
        ));
    }

    #[test]
    fn the_rendered_report_has_one_table_row_per_target_and_details_of_failures() {
        use Outcome::*;
        let report = CoverageReport {
            rows: vec![
                row(Found(2), Found(1), None, None),
                row(Found(0), Found(0), None, None),
            ],
        };
        let text = render_report(&report);
        let table_rows = text.lines().filter(|l| l.starts_with("| D |")).count();
        assert_eq!(table_rows, 2);
        assert!(
            text.contains("P \\| q"),
            "pipes in cells are escaped: {text}"
        );
        assert!(
            text.contains("2 targets: 1 ok, 0 empty (allowed, reason given), 1 failed, 0 skipped")
        );
        assert!(text.contains("FAILED d / P | q [A]: nothing returned with All (job=x)"));
    }

    #[test]
    fn label_values_definitions_are_split_into_selector_and_label() {
        assert_eq!(
            parse_label_values(r#"label_values({__name__=~"a|b", job=~"$job"}, instance)"#),
            Some((
                r#"{__name__=~"a|b", job=~"$job"}"#.to_string(),
                "instance".to_string()
            ))
        );
        assert_eq!(
            parse_label_values("label_values(job)"),
            Some(("{job!=\"\"}".to_string(), "job".to_string()))
        );
        assert_eq!(parse_label_values("query_result(up)"), None);
    }

    #[test]
    fn logfmt_tags_become_jaeger_json() {
        assert_eq!(
            logfmt_to_json(r#"error=true http.route="/v1/chat completions""#).unwrap(),
            serde_json::json!({"error": "true", "http.route": "/v1/chat completions"})
        );
        assert!(logfmt_to_json("oops").is_err());
    }
}
