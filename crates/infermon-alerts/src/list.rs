//! What is firing: the alerts, most severe first, and the table that shows them with who
//! acknowledged what.

use std::io::Write;

use infermon_instrument::contract::attr;
use jiff::Timestamp;

use crate::api::{Alert, Alertmanager, Error, Silence};
use crate::matcher::Matcher;
use crate::time::to_the_second;

/// Which firing alerts to list.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only alerts matching every one of these.
    pub matchers: Vec<Matcher>,
    /// Only alerts nobody has acknowledged and no other alert inhibits.
    pub unacknowledged: bool,
}

impl Alertmanager {
    /// The firing alerts the filter selects: most severe first, then the oldest first.
    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<Alert>, Error> {
        let mut alerts = self.alerts(&filter.matchers).await?;
        if filter.unacknowledged {
            alerts.retain(Alert::is_unacknowledged);
        }
        alerts.sort_by_cached_key(|a| {
            (
                severity_rank(a),
                a.starts_at.parse::<Timestamp>().ok(),
                a.name().to_owned(),
            )
        });
        Ok(alerts)
    }
}

/// The alert table: state, severity, name, target, since when, and the summary followed by
/// who acknowledged it, why and until when (from `silences`). Left-aligned columns.
pub fn write_table(
    out: &mut dyn Write,
    alerts: &[Alert],
    silences: &[Silence],
) -> std::io::Result<()> {
    let rows: Vec<[String; 6]> = alerts
        .iter()
        .map(|a| {
            [
                state_word(a).to_owned(),
                a.labels.get("severity").cloned().unwrap_or_default(),
                a.name().to_owned(),
                target(a),
                to_the_second(&a.starts_at),
                note(a, silences),
            ]
        })
        .collect();
    write_columns(
        out,
        ["STATE", "SEVERITY", "ALERT", "TARGET", "SINCE", "SUMMARY"],
        &rows,
    )
}

fn state_word(alert: &Alert) -> &'static str {
    if !alert.status.silenced_by.is_empty() {
        "acked"
    } else if !alert.status.inhibited_by.is_empty() {
        "inhibited"
    } else {
        "firing"
    }
}

/// What the alert is about: the service, and the instance/model/host/GPU where present.
fn target(alert: &Alert) -> String {
    let model = prometheus_label(attr::GEN_AI_REQUEST_MODEL);
    let host = prometheus_label(attr::HOST_NAME);
    let gpu = prometheus_label(attr::GPU_INDEX);
    let mut parts: Vec<String> = Vec::new();
    for key in ["job", "instance", &model, &host] {
        if let Some(v) = alert.labels.get(key) {
            if !parts.contains(v) {
                parts.push(v.clone());
            }
        }
    }
    if let Some(index) = alert.labels.get(&gpu) {
        parts.push(format!("gpu {index}"));
    }
    parts.join(" ")
}

/// The summary, followed by who acknowledged it, why and until when.
fn note(alert: &Alert, silences: &[Silence]) -> String {
    let mut note = alert
        .annotations
        .get("summary")
        .cloned()
        .unwrap_or_default();
    for id in &alert.status.silenced_by {
        match silences.iter().find(|s| &s.id == id) {
            Some(s) => note.push_str(&format!(
                " [acked by {} until {}: {}]",
                s.created_by,
                to_the_second(&s.ends_at),
                s.comment
            )),
            None => note.push_str(&format!(" [silence {id}]")),
        }
    }
    note
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

/// Left-aligned columns; the last column is not padded.
fn write_columns<const N: usize>(
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
    let header = header.map(str::to_owned);
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < N {
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

    fn alert(labels: serde_json::Value, silenced_by: &[&str]) -> Alert {
        serde_json::from_value(serde_json::json!({
            "labels": labels,
            "annotations": {"summary": "it broke"},
            "startsAt": "2026-11-28T09:30:00.123456Z",
            "status": {"state": if silenced_by.is_empty() { "active" } else { "suppressed" },
                       "silencedBy": silenced_by, "inhibitedBy": []},
            "fingerprint": "f"
        }))
        .unwrap()
    }

    #[test]
    fn columns_align() {
        let mut out = Vec::new();
        let rows = [
            ["a".to_owned(), "long cell".to_owned()],
            ["bbbb".to_owned(), "x".to_owned()],
        ];
        write_columns(&mut out, ["H1", "H2"], &rows).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "H1    H2\na     long cell\nbbbb  x\n"
        );
    }

    #[test]
    fn the_table_names_the_target_and_who_acknowledged() {
        let firing = alert(
            serde_json::json!({"alertname": "GpuXidErrors", "severity": "warning",
                               "job": "gpu-agent", "host_name": "node7", "gpu_index": "3"}),
            &[],
        );
        let acked = alert(
            serde_json::json!({"alertname": "A", "job": "svc", "instance": "svc"}),
            &["s1", "gone"],
        );
        let silence: Silence = serde_json::from_value(serde_json::json!({
            "id": "s1", "matchers": [], "endsAt": "2026-11-28T10:30:00.5Z", "createdBy": "bob",
            "comment": "on it", "status": {"state": "active"}
        }))
        .unwrap();
        let mut out = Vec::new();
        write_table(&mut out, &[firing, acked], &[silence]).unwrap();
        let table = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[1].starts_with("firing  warning"), "{table}");
        assert!(
            lines[1].contains("gpu-agent node7 gpu 3")
                && lines[1].contains(" 2026-11-28T09:30:00Z "),
            "{table}"
        );
        assert!(lines[2].starts_with("acked"), "{table}");
        assert!(
            lines[2].ends_with(
                "it broke [acked by bob until 2026-11-28T10:30:00Z: on it] [silence gone]"
            ),
            "{table}"
        );
    }
}
