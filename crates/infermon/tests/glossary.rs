//! `docs/metrics.md` cannot drift from the contract: its metrics table must list exactly
//! `contract::METRICS` (same order, type, unit, attributes, Prometheus name and meaning), and
//! every span and event name must be documented.

use infermon::contract::{span, MetricSpec, METRICS};

const GLOSSARY: &str = include_str!("../../../docs/metrics.md");
const METRICS_HEADING: &str = "## Metrics";
const SPANS_HEADING: &str = "## Spans";

/// The glossary row for one metric, exactly as the doc must spell it.
fn expected_row(m: &MetricSpec) -> String {
    let attributes = if m.attributes.is_empty() {
        "—".to_owned()
    } else {
        m.attributes
            .iter()
            .map(|a| format!("`{a}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "| `{}` | {} | `{}` | {} | `{}` | {} |",
        m.name,
        m.instrument.as_str(),
        m.unit,
        attributes,
        m.prometheus,
        m.description.replace('|', "\\|"),
    )
}

/// The text between `heading` and the next `## ` heading.
fn section<'a>(doc: &'a str, heading: &str) -> &'a str {
    let start = doc
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("docs/metrics.md has no `{heading}` section"));
    let body = &doc[start + heading.len() + 2..];
    &body[..body.find("\n## ").unwrap_or(body.len())]
}

#[test]
fn metrics_table_matches_the_contract_exactly() {
    let documented: Vec<&str> = section(GLOSSARY, METRICS_HEADING)
        .lines()
        .filter(|l| l.starts_with("| `"))
        .collect();
    let expected: Vec<String> = METRICS.iter().map(expected_row).collect();

    let mut problems = Vec::new();
    for row in &expected {
        if !documented.contains(&row.as_str()) {
            problems.push(format!("missing or different: {row}"));
        }
    }
    for row in &documented {
        if !expected.iter().any(|e| e == row) {
            problems.push(format!("not in contract::METRICS: {row}"));
        }
    }
    if problems.is_empty() {
        assert_eq!(documented, expected, "same rows, different order");
    }
    assert!(
        problems.is_empty(),
        "docs/metrics.md drifted from contract::METRICS:\n{}\n\nExpected table rows:\n{}",
        problems.join("\n"),
        expected.join("\n")
    );
}

#[test]
fn every_span_and_event_is_documented() {
    let spans = section(GLOSSARY, SPANS_HEADING);
    for name in [
        span::QUEUE,
        span::PREFILL,
        span::DECODE,
        span::EVENT_FIRST_TOKEN,
        span::EVENT_PREEMPTED,
        span::EVENT_RESUMED,
    ] {
        assert!(
            spans.contains(&format!("`{name}`")),
            "span/event `{name}` is not in the Spans section of docs/metrics.md"
        );
    }
}
