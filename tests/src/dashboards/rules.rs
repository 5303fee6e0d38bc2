//! The recording rules in `deploy/prometheus/rules/*.yml`, read just far enough to know each
//! rule's name and expression (Prometheus rule files have a fixed shape; promtool validates them
//! fully in their own test).

use std::path::{Path, PathBuf};

use super::DashboardError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingRule {
    /// The file it is defined in (`recording.yml`, ...).
    pub file: String,
    pub name: String,
    pub expr: String,
}

/// The rules directory of this repository.
pub fn repo_rules_dir() -> PathBuf {
    crate::stack::repo_root()
        .join("deploy")
        .join("prometheus")
        .join("rules")
}

/// Every `record:` rule of every `*.yml` / `*.yaml` file in `dir`.
pub fn load_recording_rules(dir: &Path) -> Result<Vec<RecordingRule>, DashboardError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DashboardError::Io { path, source }
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
        .collect();
    paths.sort();
    let mut rules = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        rules.extend(
            parse_recording_rules(&text)
                .into_iter()
                .map(|r| RecordingRule {
                    file: file.clone(),
                    ..r
                }),
        );
    }
    Ok(rules)
}

/// Rules as list items: `- record: NAME` followed (before the next list item) by `expr:` with
/// the expression on the same line or as an indented block scalar (`expr: |`).
pub fn parse_recording_rules(text: &str) -> Vec<RecordingRule> {
    let lines: Vec<&str> = text.lines().collect();
    let mut rules = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(name) = lines[i].trim_start().strip_prefix("- record:") else {
            i += 1;
            continue;
        };
        let name = unquote(name.trim());
        let mut expr = String::new();
        i += 1;
        while i < lines.len() && !lines[i].trim_start().starts_with('-') {
            let line = lines[i];
            if let Some(value) = line.trim_start().strip_prefix("expr:") {
                let value = value.trim();
                if value == "|" || value == ">" || value == "|-" || value == ">-" {
                    let key_indent = indent(line);
                    i += 1;
                    while i < lines.len()
                        && (lines[i].trim().is_empty() || indent(lines[i]) > key_indent)
                    {
                        expr.push_str(lines[i].trim());
                        expr.push('\n');
                        i += 1;
                    }
                    continue;
                }
                expr = unquote(value);
            }
            i += 1;
        }
        rules.push(RecordingRule {
            file: String::new(),
            name,
            expr: expr.trim().to_string(),
        });
    }
    rules
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

fn unquote(s: &str) -> String {
    s.trim_matches(|c| c == '"' || c == '\'').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_inline_and_block_expressions() {
        let text = "groups:\n  - name: g\n    rules:\n      - record: a:b:rate5m\n        expr: sum(rate(x[5m]))\n      - record: \"c:d\"\n        expr: |\n          sum(y)\n            /\n          sum(z)\n        labels:\n          quantile: \"0.5\"\n      - alert: NotARecord\n        expr: up == 0\n";
        let rules = parse_recording_rules(text);
        assert_eq!(
            rules,
            vec![
                RecordingRule {
                    file: String::new(),
                    name: "a:b:rate5m".to_string(),
                    expr: "sum(rate(x[5m]))".to_string()
                },
                RecordingRule {
                    file: String::new(),
                    name: "c:d".to_string(),
                    expr: "sum(y)\n/\nsum(z)".to_string()
                },
            ]
        );
    }
}
