//! Just enough of PromQL's lexical structure to list the metric and label names a query uses,
//! so that a misspelt name fails a test instead of drawing an empty panel. Run it on queries
//! whose Grafana variables are already expanded; the real parser (Prometheus) checks the rest
//! in the live run.

use std::collections::BTreeSet;

/// Metric and label names one query refers to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Names {
    pub metrics: BTreeSet<String>,
    pub labels: BTreeSet<String>,
    /// Every vector selector as written: `metric` or `metric{matchers}`.
    pub selectors: Vec<String>,
}

/// Aggregation operators: never metric names, even when `by (...)` follows instead of `(`.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];
/// Keywords followed by a parenthesised list of label names.
const LABEL_LIST_KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
/// Other keywords and literals that look like identifiers.
const KEYWORDS: &[&str] = &[
    "and", "or", "unless", "bool", "atan2", "inf", "nan", "offset",
];

pub fn names(expr: &str) -> Names {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Names::default();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&chars, i);
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '{' {
            i = read_matchers(&chars, i, &mut names.labels);
        } else if c == '[' {
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // Numbers, durations (5m), exponents (1e3), hex.
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '.' || chars[i] == '_')
            {
                i += 1;
            }
        } else if is_ident_start(c) {
            let start = i;
            while i < chars.len() && is_ident_char(chars[i]) {
                i += 1;
            }
            let ident: String = chars[start..i].iter().collect();
            let next = skip_space(&chars, i);
            let followed_by_paren = chars.get(next) == Some(&'(');
            if LABEL_LIST_KEYWORDS.contains(&ident.as_str()) {
                if followed_by_paren {
                    i = read_label_list(&chars, next, &mut names.labels);
                }
            } else if ident == "offset" {
                // `offset 5m`: the duration is not a name.
                i = skip_space(&chars, i);
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '-') {
                    i += 1;
                }
            } else if !(followed_by_paren
                || AGGREGATIONS.contains(&ident.as_str())
                || KEYWORDS.contains(&ident.as_str()))
            {
                let end = if chars.get(next) == Some(&'{') {
                    let mut matcher_labels = BTreeSet::new();
                    let end = read_matchers(&chars, next, &mut matcher_labels);
                    names.labels.extend(matcher_labels);
                    i = end;
                    end
                } else {
                    i
                };
                names
                    .selectors
                    .push(chars[start..end.min(chars.len())].iter().collect());
                names.metrics.insert(ident);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// For each `histogram_quantile(φ, inner)`, the labels `inner` is aggregated by when it starts
/// with `sum by (...)`, else `None` (quantiles of unaggregated buckets are wrong across series).
pub fn histogram_quantile_groupings(expr: &str) -> Vec<Option<Vec<String>>> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(pos) = rest.find("histogram_quantile(") {
        rest = &rest[pos + "histogram_quantile(".len()..];
        let Some(comma) = rest.find(',') else {
            out.push(None);
            break;
        };
        let inner = rest[comma + 1..].trim_start();
        let grouping = inner
            .strip_prefix("sum")
            .map(str::trim_start)
            .and_then(|s| s.strip_prefix("by"))
            .map(str::trim_start)
            .and_then(|s| s.strip_prefix('('))
            .and_then(|s| s.split_once(')'))
            .map(|(list, _)| list.split(',').map(|l| l.trim().to_string()).collect());
        out.push(grouping);
    }
    out
}

/// The range of every `rate(...[r])`, `increase(...[r])` and other range-vector selector, as
/// written (before variable expansion: `$__rate_interval`, `$__range`, `5m`, ...).
pub fn range_selectors(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        let Some(close) = after.find(']') else { break };
        out.push(after[..close].to_string());
        rest = &after[close + 1..];
    }
    out
}

/// `selector` with `label="value"` added to its matchers.
pub fn with_matcher(selector: &str, label: &str, value: &str) -> String {
    let value = value.replace('\\', "\\\\").replace('"', "\\\"");
    let matcher = format!("{label}=\"{value}\"");
    match selector.strip_suffix('}') {
        Some(open) if open.trim_end().ends_with('{') => format!("{open}{matcher}}}"),
        Some(open) => format!("{open}, {matcher}}}"),
        None => format!("{selector}{{{matcher}}}"),
    }
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

fn skip_space(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() && chars[i].is_whitespace() {
        i += 1;
    }
    i
}

fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() && chars[i] != quote {
        if chars[i] == '\\' && quote != '`' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

/// `{name op "value", ...}` starting at `{`: records the label names, returns the index after `}`.
fn read_matchers(chars: &[char], start: usize, labels: &mut BTreeSet<String>) -> usize {
    let mut i = start + 1;
    while i < chars.len() && chars[i] != '}' {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(chars, i);
        } else if is_ident_start(c) {
            let from = i;
            while i < chars.len() && is_ident_char(chars[i]) {
                i += 1;
            }
            labels.insert(chars[from..i].iter().collect());
        } else {
            i += 1;
        }
    }
    i + 1
}

/// `(a, b, c)` starting at `(`: records the names, returns the index after `)`.
fn read_label_list(chars: &[char], start: usize, labels: &mut BTreeSet<String>) -> usize {
    let close = chars[start..]
        .iter()
        .position(|&c| c == ')')
        .map_or(chars.len(), |p| start + p);
    let list: String = chars[start + 1..close].iter().collect();
    labels.extend(
        list.split(',')
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string),
    );
    close + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn finds_metrics_and_labels_but_not_functions_keywords_or_strings() {
        let n = names(
            r#"histogram_quantile(0.99, sum by (le, job) (rate(a_seconds_bucket{job=~"x|y", m!="z{q}"}[1m])))
               / on (job) group_left (model) b:rule:rate5m offset 5m or vector(0) and time() - max(timestamp(c))"#,
        );
        assert_eq!(n.metrics, set(&["a_seconds_bucket", "b:rule:rate5m", "c"]));
        assert_eq!(n.labels, set(&["le", "job", "m", "model"]));
        assert_eq!(
            n.selectors,
            vec![
                r#"a_seconds_bucket{job=~"x|y", m!="z{q}"}"#,
                "b:rule:rate5m",
                "c"
            ]
        );
    }

    #[test]
    fn adding_a_matcher_keeps_the_selector_valid() {
        assert_eq!(with_matcher("m", "job", "a"), r#"m{job="a"}"#);
        assert_eq!(with_matcher("m{}", "job", "a"), r#"m{job="a"}"#);
        assert_eq!(
            with_matcher(r#"m{x="1"}"#, "job", "a\"b"),
            r#"m{x="1", job="a\"b"}"#
        );
    }

    #[test]
    fn aggregation_with_grouping_first_is_not_a_metric() {
        let n = names(
            r#"sum without (instance) (up) + count by (alertname) (ALERTS{alertstate="firing"})"#,
        );
        assert_eq!(n.metrics, set(&["up", "ALERTS"]));
        assert_eq!(n.labels, set(&["instance", "alertname", "alertstate"]));
    }

    #[test]
    fn quantile_groupings_are_read_from_the_inner_sum() {
        let g = histogram_quantile_groupings(
            "histogram_quantile(0.5, sum by (le, x) (rate(a[1m]))) + histogram_quantile(0.9, rate(b[1m]))",
        );
        assert_eq!(g, vec![Some(vec!["le".to_string(), "x".to_string()]), None]);
    }

    #[test]
    fn range_selectors_are_listed_as_written() {
        let r = range_selectors("rate(a[$__rate_interval]) + increase(b[$__range]) + rate(c[5m])");
        assert_eq!(r, vec!["$__rate_interval", "$__range", "5m"]);
    }
}
