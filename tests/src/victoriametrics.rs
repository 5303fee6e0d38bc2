//! VictoriaMetrics as the metrics store behind the dashboards (docs/scale.md, "Metrics store").
//!
//! `scripts/start-stack.sh victoriametrics prometheus ...` starts VictoriaMetrics single-node
//! and has Prometheus remote-write everything it stores into it, so both hold the same series.
//! [`compare_coverage`] then sets the dashboards' live-query report against VictoriaMetrics
//! beside the one against Prometheus, target by target: a target with data in Prometheus must
//! have data in VictoriaMetrics too, unless [`VM_DIFFERS`] says why not.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::dashboards::{CoverageReport, CoverageRow, Outcome};

/// A dashboard target whose result differs on VictoriaMetrics by design, and why.
#[derive(Debug, Clone, Copy)]
pub struct VmDifference {
    pub dashboard_uid: &'static str,
    pub panel_title: &'static str,
    pub reason: &'static str,
}

/// Targets that return data on Prometheus but not on VictoriaMetrics, by design. Exemplars are
/// not listed: VictoriaMetrics stores none, so no exemplar-enabled target has them there
/// ([`Comparison::exemplars_on_vm`] must stay 0; Grafana then draws the line without dots).
pub const VM_DIFFERS: &[VmDifference] = &[];

/// One target, side by side.
#[derive(Debug, Clone)]
pub struct Pair {
    pub dashboard_uid: String,
    pub panel_title: String,
    pub ref_id: String,
    pub query: String,
    /// Series found (All, one value) in Prometheus and in VictoriaMetrics.
    pub prometheus: (Outcome, Outcome),
    pub victoriametrics: (Outcome, Outcome),
}

impl Pair {
    fn has_data(o: &Outcome) -> bool {
        matches!(o, Outcome::Found(n) if *n > 0)
    }

    /// Data in Prometheus, none (or an error) in VictoriaMetrics, for either expansion.
    pub fn lost(&self) -> bool {
        let (pa, po) = &self.prometheus;
        let (va, vo) = &self.victoriametrics;
        (Self::has_data(pa) && !Self::has_data(va))
            || (Self::has_data(po) && !Self::has_data(vo))
            || matches!(va, Outcome::Error(_))
            || matches!(vo, Outcome::Error(_))
    }

    /// Both have data, but a different number of series.
    pub fn count_differs(&self) -> bool {
        !self.lost()
            && (self.prometheus.0 != self.victoriametrics.0
                || self.prometheus.1 != self.victoriametrics.1)
    }

    pub fn allowed(&self) -> Option<&'static str> {
        VM_DIFFERS
            .iter()
            .find(|d| d.dashboard_uid == self.dashboard_uid && d.panel_title == self.panel_title)
            .map(|d| d.reason)
    }
}

/// The two reports, paired by target.
#[derive(Debug, Clone, Default)]
pub struct Comparison {
    pub pairs: Vec<Pair>,
    /// Exemplars VictoriaMetrics returned for exemplar-enabled targets (it stores none).
    pub exemplars_on_vm: usize,
}

fn key(r: &CoverageRow) -> (String, i64, String) {
    (r.dashboard_uid.clone(), r.panel_id, r.ref_id.clone())
}

/// Pairs the PromQL targets of a report against Prometheus with the same targets of a report
/// against VictoriaMetrics (trace-store targets do not involve the metrics store).
pub fn compare_coverage(prometheus: &CoverageReport, vm: &CoverageReport) -> Comparison {
    let vm_rows: BTreeMap<_, _> = vm.rows.iter().map(|r| (key(r), r)).collect();
    let mut out = Comparison::default();
    for p in prometheus.rows.iter().filter(|r| r.language == "promql") {
        let Some(v) = vm_rows.get(&key(p)) else {
            continue;
        };
        if let Some(Ok(n)) = v.exemplars {
            out.exemplars_on_vm += n;
        }
        out.pairs.push(Pair {
            dashboard_uid: p.dashboard_uid.clone(),
            panel_title: p.panel_title.clone(),
            ref_id: p.ref_id.clone(),
            query: p.query.clone(),
            prometheus: (p.all.outcome.clone(), p.one.outcome.clone()),
            victoriametrics: (v.all.outcome.clone(), v.one.outcome.clone()),
        });
    }
    out
}

fn show(o: &Outcome) -> String {
    match o {
        Outcome::Found(n) => n.to_string(),
        Outcome::Error(e) => format!("error: {e}"),
        Outcome::Skipped(s) => format!("skipped: {s}"),
    }
}

impl Comparison {
    /// Targets with data in Prometheus and none in VictoriaMetrics that [`VM_DIFFERS`] does
    /// not explain.
    pub fn unexplained(&self) -> Vec<&Pair> {
        self.pairs
            .iter()
            .filter(|p| p.lost() && p.allowed().is_none())
            .collect()
    }

    /// A table of every target whose outcome differs (series counts included), then a summary.
    pub fn render(&self) -> String {
        let mut s = String::from(
            "| dashboard | panel | ref | Prometheus (All / one) | VictoriaMetrics (All / one) | note |\n|---|---|---|---|---|---|\n",
        );
        for p in self.pairs.iter().filter(|p| p.lost() || p.count_differs()) {
            let note = match (p.lost(), p.allowed()) {
                (true, Some(reason)) => format!("allowed: {reason}"),
                (true, None) => "NO DATA ON VICTORIAMETRICS".to_string(),
                _ => "series count differs".to_string(),
            };
            s.push_str(&format!(
                "| {} | {} | {} | {} / {} | {} / {} | {} |\n",
                p.dashboard_uid,
                p.panel_title,
                p.ref_id,
                show(&p.prometheus.0),
                show(&p.prometheus.1),
                show(&p.victoriametrics.0),
                show(&p.victoriametrics.1),
                note
            ));
        }
        let same = self
            .pairs
            .iter()
            .filter(|p| !p.lost() && !p.count_differs())
            .count();
        s.push_str(&format!(
            "{} PromQL targets compared: {} identical series counts, {} with a different count, {} without data on VictoriaMetrics ({} unexplained); exemplars from VictoriaMetrics: {}\n",
            self.pairs.len(),
            same,
            self.pairs.iter().filter(|p| p.count_differs()).count(),
            self.pairs.iter().filter(|p| p.lost()).count(),
            self.unexplained().len(),
            self.exemplars_on_vm
        ));
        s
    }
}

/// An instant query at a fixed time (seconds since the epoch), for side-by-side values.
pub async fn query_at(base: &str, promql: &str, time: f64) -> Result<Vec<(String, f64)>, String> {
    let url = format!("{}/api/v1/query", base.trim_end_matches('/'));
    let body: Value = reqwest::Client::new()
        .get(&url)
        .query(&[("query", promql.to_string()), ("time", time.to_string())])
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?
        .json()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if body["status"] != "success" {
        return Err(format!("{promql}: {}", body["error"]));
    }
    let mut out: Vec<(String, f64)> = body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r| {
            let mut labels: Vec<String> = r["metric"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect()
                })
                .unwrap_or_default();
            labels.sort();
            let value = r["value"][1]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN);
            (labels.join(","), value)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Values of a metric in a Prometheus-format `/metrics` page: the sum over the series whose
/// name and labels start with `prefix` (e.g. `vm_cache_entries{type="storage/hour_metric_ids"}`).
pub fn metric_sum(page: &str, prefix: &str) -> Option<f64> {
    let values: Vec<f64> = page
        .lines()
        .filter(|l| !l.starts_with('#') && l.starts_with(prefix))
        .filter(|l| {
            // `name` must not match `name_suffix`.
            let rest = &l[prefix.len()..];
            rest.starts_with(' ') || rest.starts_with('{') || prefix.ends_with('}')
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sum_matches_whole_names_only() {
        let page = "# HELP x\nvm_rows{type=\"a\"} 2\nvm_rows{type=\"b\"} 3\nvm_rows_added_total 7\nprocess_resident_memory_bytes 1.5e+07\n";
        assert_eq!(metric_sum(page, "vm_rows"), Some(5.0));
        assert_eq!(metric_sum(page, "vm_rows{type=\"b\"}"), Some(3.0));
        assert_eq!(
            metric_sum(page, "process_resident_memory_bytes"),
            Some(15_000_000.0)
        );
        assert_eq!(metric_sum(page, "missing"), None);
    }

    fn row(found_all: usize, found_one: usize) -> CoverageRow {
        use crate::dashboards::Run;
        let run = |n| Run {
            binding: "All".into(),
            expanded: "q".into(),
            outcome: Outcome::Found(n),
        };
        CoverageRow {
            dashboard_uid: "d".into(),
            dashboard_title: "D".into(),
            panel_id: 1,
            panel_title: "p".into(),
            ref_id: "A".into(),
            language: "promql",
            query: "q".into(),
            all: run(found_all),
            one: run(found_one),
            exemplars: None,
            may_be_empty: None,
        }
    }

    #[test]
    fn a_target_without_data_on_vm_is_unexplained() {
        let prom = CoverageReport {
            rows: vec![row(2, 1)],
        };
        let vm = CoverageReport {
            rows: vec![row(0, 1)],
        };
        let c = compare_coverage(&prom, &vm);
        assert_eq!(c.unexplained().len(), 1);
        let same = compare_coverage(&prom, &prom);
        assert!(same.unexplained().is_empty());
        assert!(!same.pairs[0].count_differs());
        let more = compare_coverage(
            &prom,
            &CoverageReport {
                rows: vec![row(3, 1)],
            },
        );
        assert!(more.unexplained().is_empty() && more.pairs[0].count_differs());
    }
}
