//! The dashboards as files: loading them and reading panels, variables and query targets out of
//! Grafana's JSON model.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::DashboardError;

/// One dashboard file.
#[derive(Debug, Clone)]
pub struct Dashboard {
    pub path: PathBuf,
    pub uid: String,
    pub title: String,
    pub json: Value,
}

/// A template variable (`templating.list[]`), reduced to what expansion needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Variable {
    pub name: String,
    /// Grafana's variable type: `query`, `datasource`, `custom`, ...
    pub kind: String,
    /// `label_values(...)` of a query variable; the plugin id of a datasource variable; the
    /// comma-separated values of a custom variable.
    pub definition: String,
    pub multi: bool,
    pub include_all: bool,
    /// What "All" expands to (a regex such as `.*`); `None` when Grafana would list every value.
    pub all_value: Option<String>,
    /// The value selected by default (custom variables).
    pub current: Option<String>,
}

/// The query language of a target, decided by its datasource.
#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    PromQl {
        expr: String,
        instant: bool,
        exemplar: bool,
    },
    /// Grafana's Jaeger "Search" query type.
    JaegerSearch {
        service: String,
        operation: Option<String>,
        tags: Option<String>,
        min_duration: Option<String>,
        max_duration: Option<String>,
        limit: Option<u64>,
    },
    /// Grafana's Jaeger "Dependency graph" query type (the service graph).
    JaegerDependencies,
    /// A datasource or query type this harness cannot run; always a failure.
    Unsupported(String),
}

impl Query {
    /// The text to show for the query in reports.
    pub fn display(&self) -> String {
        match self {
            Query::PromQl { expr, .. } => expr.split_whitespace().collect::<Vec<_>>().join(" "),
            Query::JaegerSearch {
                service,
                operation,
                tags,
                min_duration,
                max_duration,
                limit,
            } => {
                let mut parts = vec![format!("service={service}")];
                let optional = [
                    ("operation", operation.clone()),
                    ("tags", tags.clone()),
                    ("minDuration", min_duration.clone()),
                    ("maxDuration", max_duration.clone()),
                    ("limit", limit.map(|l| l.to_string())),
                ];
                parts.extend(
                    optional
                        .into_iter()
                        .filter_map(|(k, v)| v.map(|v| format!("{k}={v}"))),
                );
                format!("jaeger search {}", parts.join(" "))
            }
            Query::JaegerDependencies => "jaeger dependency graph".to_string(),
            Query::Unsupported(why) => format!("unsupported: {why}"),
        }
    }

    pub fn language(&self) -> &'static str {
        match self {
            Query::PromQl { .. } => "promql",
            Query::JaegerSearch { .. } | Query::JaegerDependencies => "jaeger",
            Query::Unsupported(_) => "?",
        }
    }
}

/// One query of one panel.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub dashboard_uid: String,
    pub panel_id: i64,
    pub panel_title: String,
    pub ref_id: String,
    pub query: Query,
}

/// The dashboards directory of this repository.
pub fn repo_dashboards_dir() -> PathBuf {
    crate::stack::repo_root().join("grafana").join("dashboards")
}

/// Every `*.json` in `dir`, sorted by file name.
pub fn load_dashboards(dir: &Path) -> Result<Vec<Dashboard>, DashboardError> {
    let read_dir = |e| DashboardError::Io {
        path: dir.to_path_buf(),
        source: e,
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read_dir)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_dir)?
        .into_iter()
        .map(|entry| entry.path())
        .filter(|p| p.extension().is_some_and(|ext| ext == "json"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(DashboardError::NoDashboards(dir.to_path_buf()));
    }
    paths.iter().map(|p| load_dashboard(p)).collect()
}

pub fn load_dashboard(path: &Path) -> Result<Dashboard, DashboardError> {
    let text = std::fs::read_to_string(path).map_err(|e| DashboardError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let json: Value = serde_json::from_str(&text).map_err(|e| DashboardError::Json {
        path: path.to_path_buf(),
        source: e,
    })?;
    let field = |key: &str| {
        json[key]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or_else(|| DashboardError::Missing {
                path: path.to_path_buf(),
                what: key.to_string(),
            })
    };
    Ok(Dashboard {
        uid: field("uid")?,
        title: field("title")?,
        path: path.to_path_buf(),
        json,
    })
}

impl Dashboard {
    /// Every panel, rows included, with the panels of collapsed rows flattened in.
    pub fn panels(&self) -> Vec<&Value> {
        let mut out = Vec::new();
        for p in self.json["panels"].as_array().into_iter().flatten() {
            out.push(p);
            out.extend(p["panels"].as_array().into_iter().flatten());
        }
        out
    }

    pub fn variables(&self) -> Vec<Variable> {
        self.json["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .map(variable)
            .collect()
    }

    pub fn variable(&self, name: &str) -> Option<Variable> {
        self.variables().into_iter().find(|v| v.name == name)
    }

    /// Every query target of every non-row panel, hidden ones included (Grafana still runs
    /// hidden targets for exemplars and transformations).
    pub fn targets(&self) -> Vec<Target> {
        let variables = self.variables();
        let mut out = Vec::new();
        for panel in self.panels().into_iter().filter(|p| p["type"] != "row") {
            for t in panel["targets"].as_array().into_iter().flatten() {
                out.push(Target {
                    dashboard_uid: self.uid.clone(),
                    panel_id: panel["id"].as_i64().unwrap_or(-1),
                    panel_title: panel["title"].as_str().unwrap_or_default().to_string(),
                    ref_id: t["refId"].as_str().unwrap_or_default().to_string(),
                    query: query(t, panel, &variables),
                });
            }
        }
        out
    }
}

fn variable(v: &Value) -> Variable {
    let s = |key: &str| v[key].as_str().map(str::to_string);
    let kind = s("type").unwrap_or_default();
    let definition = match kind.as_str() {
        "query" => s("definition").or_else(|| v["query"]["query"].as_str().map(str::to_string)),
        _ => s("query"),
    };
    let current = match &v["current"]["value"] {
        Value::String(text) => Some(text.clone()),
        Value::Array(values) => values.first().and_then(Value::as_str).map(str::to_string),
        _ => None,
    };
    Variable {
        name: s("name").unwrap_or_default(),
        kind,
        definition: definition.unwrap_or_default(),
        multi: v["multi"].as_bool().unwrap_or(false),
        include_all: v["includeAll"].as_bool().unwrap_or(false),
        all_value: s("allValue").filter(|a| !a.is_empty()),
        current,
    }
}

/// The datasource plugin a target runs on: its own datasource, else its panel's. A reference
/// through a datasource variable resolves to that variable's plugin id.
pub fn datasource_type(target: &Value, panel: &Value, variables: &[Variable]) -> Option<String> {
    let ds = if target["datasource"].is_object() {
        &target["datasource"]
    } else {
        &panel["datasource"]
    };
    if let Some(t) = ds["type"].as_str() {
        return Some(t.to_string());
    }
    let uid = ds["uid"].as_str()?;
    let name = uid
        .trim_start_matches("${")
        .trim_start_matches('$')
        .trim_end_matches('}');
    variables
        .iter()
        .find(|v| v.kind == "datasource" && v.name == name)
        .map(|v| v.definition.clone())
}

fn query(t: &Value, panel: &Value, variables: &[Variable]) -> Query {
    let s = |key: &str| {
        t[key]
            .as_str()
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    match datasource_type(t, panel, variables).as_deref() {
        Some("prometheus") => match s("expr") {
            Some(expr) => Query::PromQl {
                expr,
                instant: t["instant"].as_bool().unwrap_or(false)
                    && !t["range"].as_bool().unwrap_or(false),
                exemplar: t["exemplar"].as_bool().unwrap_or(false),
            },
            None => Query::Unsupported("prometheus target without expr".to_string()),
        },
        Some("jaeger") => match s("queryType").as_deref() {
            Some("search") => Query::JaegerSearch {
                service: s("service").unwrap_or_default(),
                operation: s("operation"),
                tags: s("tags"),
                min_duration: s("minDuration"),
                max_duration: s("maxDuration"),
                limit: t["limit"].as_u64(),
            },
            Some("dependencyGraph") => Query::JaegerDependencies,
            other => Query::Unsupported(format!("jaeger queryType {other:?}")),
        },
        other => Query::Unsupported(format!("datasource type {other:?}")),
    }
}
