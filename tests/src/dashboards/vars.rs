//! Grafana template variables in query text: finding references (`$job`, `${model:regex}`,
//! `[[gpu]]`, `$__rate_interval`) and expanding them the way Grafana does before it sends a
//! query, either to "All" or to one concrete value.

use std::collections::BTreeMap;
use std::time::Duration;

use super::model::Variable;
use super::DashboardError;

/// One variable reference in a piece of text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub name: String,
    /// `regex`, `raw`, ... from `${name:format}` / `[[name:format]]`.
    pub format: Option<String>,
    start: usize,
    end: usize,
}

/// Variables Grafana itself defines. Only the time-range ones may appear in queries; the rest
/// are for links and field overrides.
pub const BUILTIN_TIME_VARIABLES: &[&str] = &[
    "__rate_interval",
    "__interval",
    "__interval_ms",
    "__range",
    "__range_s",
    "__range_ms",
];
pub const BUILTIN_LINK_VARIABLES: &[&str] = &[
    "__url_time_range",
    "__all_variables",
    "__from",
    "__to",
    "__timezone",
    "__dashboard",
    "__org",
    "__user",
    "__data",
    "__field",
    "__series",
    "__value",
    "__name",
    // The value of a variable set to "All", in `current`.
    "__all",
];

/// How a variable's value is written into a query when no `:format` is given: PromQL regex
/// matchers need the value regex-escaped, Jaeger fields take it as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Regex,
    Raw,
}

/// What a variable is set to for one expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    All,
    Value(String),
}

/// The dashboard time range and the intervals Grafana derives from it.
#[derive(Debug, Clone, Copy)]
pub struct TimeContext {
    pub range: Duration,
    pub interval: Duration,
    pub rate_interval: Duration,
}

impl Default for TimeContext {
    /// A 15-minute range with the datasource's 15 s scrape interval, for which Grafana's
    /// `$__rate_interval` is max(4 × scrape interval, interval + scrape interval) = 1 m.
    fn default() -> Self {
        TimeContext {
            range: Duration::from_secs(15 * 60),
            interval: Duration::from_secs(15),
            rate_interval: Duration::from_secs(60),
        }
    }
}

impl TimeContext {
    fn builtin(&self, name: &str) -> Option<String> {
        Some(match name {
            "__rate_interval" => prom_duration(self.rate_interval),
            "__interval" => prom_duration(self.interval),
            "__interval_ms" => self.interval.as_millis().to_string(),
            "__range" => prom_duration(self.range),
            "__range_s" => self.range.as_secs().to_string(),
            "__range_ms" => self.range.as_millis().to_string(),
            _ => return None,
        })
    }
}

fn prom_duration(d: Duration) -> String {
    format!("{}s", d.as_secs().max(1))
}

/// Every variable reference in `text`, in order.
pub fn references(text: &str) -> Vec<Reference> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !text.is_char_boundary(i) {
            i += 1;
            continue;
        }
        let found = if text[i..].starts_with("${") {
            text[i + 2..].find('}').map(|close| {
                let inner = &text[i + 2..i + 2 + close];
                (split_reference(inner), i + 2 + close + 1)
            })
        } else if text[i..].starts_with("[[") {
            text[i + 2..].find("]]").map(|close| {
                let inner = &text[i + 2..i + 2 + close];
                (split_reference(inner), i + 2 + close + 2)
            })
        } else if bytes[i] == b'$' {
            let len = text[i + 1..]
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count();
            (len > 0).then(|| ((text[i + 1..i + 1 + len].to_string(), None), i + 1 + len))
        } else {
            None
        };
        match found {
            Some(((name, format), end)) => {
                out.push(Reference {
                    name,
                    format,
                    start: i,
                    end,
                });
                i = end;
            }
            None => i += 1,
        }
    }
    out
}

/// `name`, `name:format` or `name.field.path` (links use `${__data.fields.x}`).
fn split_reference(inner: &str) -> (String, Option<String>) {
    let (head, format) = match inner.split_once(':') {
        Some((h, f)) => (h, Some(f.to_string())),
        None => (inner, None),
    };
    let name = head.split(['.', '[']).next().unwrap_or_default();
    (name.to_string(), format)
}

/// Expands every reference in `text`. `choices` must hold each dashboard variable the text uses;
/// time variables come from `time`. Unknown variables and unsupported formats are errors,
/// never left in the query.
pub fn expand(
    text: &str,
    variables: &[Variable],
    choices: &BTreeMap<String, Choice>,
    time: &TimeContext,
    default_format: Format,
) -> Result<String, DashboardError> {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for r in references(text) {
        out.push_str(&text[last..r.start]);
        last = r.end;
        if let Some(value) = time.builtin(&r.name) {
            out.push_str(&value);
            continue;
        }
        let variable = variables
            .iter()
            .find(|v| v.name == r.name)
            .ok_or_else(|| DashboardError::UnknownVariable(r.name.clone()))?;
        let format = match r.format.as_deref() {
            None => default_format,
            Some("regex") => Format::Regex,
            Some("raw") | Some("text") => Format::Raw,
            Some(other) => {
                return Err(DashboardError::Expand(format!(
                    "${{{}:{other}}}: unsupported format",
                    r.name
                )))
            }
        };
        match choices.get(&r.name) {
            Some(Choice::All) => match (&variable.all_value, variable.include_all) {
                (Some(all), true) => out.push_str(all),
                _ => {
                    return Err(DashboardError::Expand(format!(
                        "${}: \"All\" needs includeAll and an allValue (a regex such as .*)",
                        r.name
                    )))
                }
            },
            Some(Choice::Value(v)) => match format {
                Format::Regex => out.push_str(&promql_regex_escape(v)),
                Format::Raw => out.push_str(v),
            },
            None => {
                return Err(DashboardError::Expand(format!(
                    "${}: no value chosen",
                    r.name
                )))
            }
        }
    }
    out.push_str(&text[last..]);
    Ok(out)
}

/// A literal value as a regex inside a PromQL double-quoted string: regex metacharacters get a
/// backslash, and every backslash is doubled for the string literal (Grafana does the same).
pub fn promql_regex_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 2);
    for c in value.chars() {
        match c {
            '\\' | '.' | '+' | '*' | '?' | '(' | ')' | '|' | '[' | ']' | '{' | '}' | '^' | '$' => {
                out.push_str("\\\\");
                out.push(c);
            }
            '"' => out.push_str("\\\""),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(name: &str, all: Option<&str>) -> Variable {
        Variable {
            name: name.to_string(),
            kind: "query".to_string(),
            definition: String::new(),
            multi: true,
            include_all: all.is_some(),
            all_value: all.map(str::to_string),
            current: None,
        }
    }

    #[test]
    fn finds_every_reference_syntax() {
        let names: Vec<_> = references("a{j=~\"$job\", m=~\"${model:regex}\", g=\"[[gpu]]\"}[$__rate_interval] ${__data.fields.x}")
            .into_iter()
            .map(|r| (r.name, r.format))
            .collect();
        assert_eq!(
            names,
            vec![
                ("job".to_string(), None),
                ("model".to_string(), Some("regex".to_string())),
                ("gpu".to_string(), None),
                ("__rate_interval".to_string(), None),
                ("__data".to_string(), None),
            ]
        );
    }

    #[test]
    fn expands_all_to_the_all_value_and_one_value_regex_escaped() {
        let vars = [var("job", Some(".*")), var("model", Some(".*"))];
        let text = r#"rate(x{job=~"$job", m=~"${model:regex}"}[$__rate_interval])"#;
        let time = TimeContext::default();
        let all = BTreeMap::from([
            ("job".to_string(), Choice::All),
            ("model".to_string(), Choice::All),
        ]);
        assert_eq!(
            expand(text, &vars, &all, &time, Format::Regex).unwrap(),
            r#"rate(x{job=~".*", m=~".*"}[60s])"#
        );
        let one = BTreeMap::from([
            ("job".to_string(), Choice::Value("infermon/sim".to_string())),
            (
                "model".to_string(),
                Choice::Value("llama-3.1-8b".to_string()),
            ),
        ]);
        assert_eq!(
            expand(text, &vars, &one, &time, Format::Regex).unwrap(),
            r#"rate(x{job=~"infermon/sim", m=~"llama-3\\.1-8b"}[60s])"#
        );
    }

    #[test]
    fn unknown_variables_and_all_without_all_value_are_errors() {
        let vars = [var("service", None)];
        let time = TimeContext::default();
        let all = BTreeMap::from([("service".to_string(), Choice::All)]);
        assert!(matches!(
            expand("$nope", &vars, &all, &time, Format::Raw),
            Err(DashboardError::UnknownVariable(n)) if n == "nope"
        ));
        assert!(expand("$service", &vars, &all, &time, Format::Raw).is_err());
    }
}
