//! Structural checks of grafana/dashboards/*.json, without any service: what Grafana would
//! reject or silently draw wrong, and every metric and label name against the telemetry contract,
//! the recording rules and the collector's vocabulary, so a typo fails here instead of drawing
//! an empty panel.

use std::collections::{BTreeMap, BTreeSet};

use infermon::contract::{Instrument, METRICS};
use infermon_e2e::dashboards::{
    datasource_type, load_dashboards, load_recording_rules, parse_label_values, promql,
    repo_dashboards_dir, repo_rules_dir, vars, Dashboard, Query, EXTERNAL_LABELS, EXTERNAL_METRICS,
    MAY_BE_EMPTY,
};
use serde_json::Value;

const REQUIRED_DASHBOARDS: &[&str] = &[
    "infermon-overview",
    "infermon-performance",
    "infermon-resources",
    "infermon-errors",
    "infermon-traces",
    "infermon-gateway",
];

fn dashboards() -> Vec<Dashboard> {
    load_dashboards(&repo_dashboards_dir()).expect("dashboards load")
}

/// Every PromQL expression (panel targets) with its variables expanded to "All".
fn promql_targets(d: &Dashboard) -> Vec<(String, String)> {
    let variables = d.variables();
    let all: BTreeMap<_, _> = variables
        .iter()
        .map(|v| {
            let choice = if v.include_all {
                vars::Choice::All
            } else {
                vars::Choice::Value("x".to_string())
            };
            (v.name.clone(), choice)
        })
        .collect();
    d.targets()
        .into_iter()
        .filter_map(|t| match t.query {
            Query::PromQl { expr, .. } => {
                let expanded = vars::expand(
                    &expr,
                    &variables,
                    &all,
                    &vars::TimeContext::default(),
                    vars::Format::Regex,
                )
                .unwrap_or_else(|e| panic!("{} / {}: {e}", d.uid, t.panel_title));
                Some((
                    format!("{} / {} [{}]", d.uid, t.panel_title, t.ref_id),
                    expanded,
                ))
            }
            _ => None,
        })
        .collect()
}

fn raw_promql(d: &Dashboard) -> Vec<(String, String)> {
    d.targets()
        .into_iter()
        .filter_map(|t| match t.query {
            Query::PromQl { expr, .. } => Some((
                format!("{} / {} [{}]", d.uid, t.panel_title, t.ref_id),
                expr,
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn the_six_dashboards_are_valid_json_with_unique_uids() {
    let all = dashboards();
    let uids: BTreeSet<&str> = all.iter().map(|d| d.uid.as_str()).collect();
    assert_eq!(uids.len(), all.len(), "dashboard uids must be unique");
    for uid in REQUIRED_DASHBOARDS {
        assert!(uids.contains(uid), "missing dashboard {uid}; have {uids:?}");
    }
    for d in &all {
        let schema = d.json["schemaVersion"].as_i64().unwrap_or(0);
        assert!(
            (39..=41).contains(&schema),
            "{}: schemaVersion {schema}",
            d.uid
        );
        assert!(
            d.json["id"].is_null(),
            "{}: id must be null so import and provisioning assign one",
            d.uid
        );
        assert!(!d.targets().is_empty(), "{}: no queries", d.uid);
    }
}

#[test]
fn datasources_are_importable_through_inputs() {
    for d in dashboards() {
        let inputs: BTreeMap<&str, &str> = d.json["__inputs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| Some((i["name"].as_str()?, i["pluginId"].as_str()?)))
            .collect();
        assert_eq!(
            inputs.get("DS_PROMETHEUS"),
            Some(&"prometheus"),
            "{}: __inputs",
            d.uid
        );
        assert_eq!(
            inputs.get("DS_JAEGER"),
            Some(&"jaeger"),
            "{}: __inputs",
            d.uid
        );
        for (var, input) in [
            ("datasource", "${DS_PROMETHEUS}"),
            ("traces", "${DS_JAEGER}"),
        ] {
            let v = d.json["templating"]["list"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|v| v["name"] == var)
                .unwrap_or_else(|| panic!("{}: no ${var} variable", d.uid));
            assert_eq!(
                v["current"]["value"], input,
                "{}: ${var} defaults to the imported datasource",
                d.uid
            );
        }
    }
}

#[test]
fn panel_ids_are_unique_within_each_dashboard() {
    for d in dashboards() {
        let mut seen = BTreeSet::new();
        for p in d.panels() {
            let id = p["id"]
                .as_i64()
                .unwrap_or_else(|| panic!("{}: panel {:?} has no id", d.uid, p["title"]));
            assert!(seen.insert(id), "{}: duplicate panel id {id}", d.uid);
        }
    }
}

#[test]
fn panels_fit_the_grid_without_overlapping() {
    for d in dashboards() {
        let boxes: Vec<(String, [i64; 4])> = d
            .panels()
            .into_iter()
            .map(|p| {
                let g = &p["gridPos"];
                let n = |k: &str| {
                    g[k].as_i64()
                        .unwrap_or_else(|| panic!("{}: {:?} gridPos.{k}", d.uid, p["title"]))
                };
                (
                    p["title"].as_str().unwrap_or_default().to_string(),
                    [n("x"), n("y"), n("w"), n("h")],
                )
            })
            .collect();
        for (title, [x, _, w, h]) in &boxes {
            assert!(
                *x >= 0 && *w > 0 && *h > 0 && x + w <= 24,
                "{}: {title} leaves the 24-column grid",
                d.uid
            );
        }
        for (i, (a, [ax, ay, aw, ah])) in boxes.iter().enumerate() {
            for (b, [bx, by, bw, bh]) in &boxes[i + 1..] {
                let overlap =
                    ax < &(bx + bw) && bx < &(ax + aw) && ay < &(by + bh) && by < &(ay + ah);
                assert!(!overlap, "{}: panels '{a}' and '{b}' overlap", d.uid);
            }
        }
    }
}

#[test]
fn every_panel_has_title_description_unit_and_a_datasource_variable() {
    for d in dashboards() {
        let variables = d.variables();
        for p in d.panels() {
            let title = p["title"].as_str().unwrap_or_default();
            assert!(
                !title.trim().is_empty(),
                "{}: panel {} has no title",
                d.uid,
                p["id"]
            );
            let description = p["description"].as_str().unwrap_or_default();
            assert!(
                !description.trim().is_empty(),
                "{}: '{title}' has no description",
                d.uid
            );
            assert!(
                !description.contains('\n'),
                "{}: '{title}': the description is one line",
                d.uid
            );
            if p["type"] == "row" {
                continue;
            }
            let unit = p["fieldConfig"]["defaults"]["unit"]
                .as_str()
                .unwrap_or_default();
            assert!(
                !unit.is_empty(),
                "{}: '{title}' has no unit (fieldConfig.defaults.unit)",
                d.uid
            );
            let mut refs = vec![&p["datasource"]];
            refs.extend(
                p["targets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| &t["datasource"]),
            );
            for ds in refs {
                let uid = ds["uid"].as_str().unwrap_or_default();
                let var = uid.strip_prefix("${").and_then(|u| u.strip_suffix('}')).unwrap_or_else(|| {
                    panic!("{}: '{title}' names datasource {uid:?} directly; use ${{datasource}} or ${{traces}}", d.uid)
                });
                let v = variables
                    .iter()
                    .find(|v| v.name == var && v.kind == "datasource")
                    .unwrap_or_else(|| {
                        panic!("{}: '{title}': ${var} is not a datasource variable", d.uid)
                    });
                assert_eq!(
                    ds["type"].as_str(),
                    Some(v.definition.as_str()),
                    "{}: '{title}': type of ${var}",
                    d.uid
                );
            }
            for t in p["targets"].as_array().into_iter().flatten() {
                assert!(
                    datasource_type(t, p, &variables).is_some(),
                    "{}: '{title}': target without datasource",
                    d.uid
                );
            }
            assert!(
                !p["targets"].as_array().is_none_or(Vec::is_empty),
                "{}: '{title}' has no targets",
                d.uid
            );
        }
    }
}

/// Every `$var` in queries, variable definitions, datasource references and links exists.
#[test]
fn every_variable_used_is_defined() {
    fn strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::String(s) => out.push(s),
            Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
            Value::Object(o) => o.values().for_each(|x| strings(x, out)),
            _ => {}
        }
    }
    for d in dashboards() {
        let mut defined: BTreeSet<String> = d.variables().into_iter().map(|v| v.name).collect();
        defined.extend(
            d.json["__inputs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["name"].as_str().map(str::to_string)),
        );
        let builtins: BTreeSet<&str> = vars::BUILTIN_TIME_VARIABLES
            .iter()
            .chain(vars::BUILTIN_LINK_VARIABLES)
            .copied()
            .collect();
        let mut texts = Vec::new();
        for p in d.panels() {
            for key in ["targets", "datasource", "links"] {
                strings(&p[key], &mut texts);
            }
            strings(&p["fieldConfig"]["defaults"]["links"], &mut texts);
        }
        strings(&d.json["templating"], &mut texts);
        strings(&d.json["links"], &mut texts);
        let mut used = 0;
        for text in texts {
            for r in vars::references(text) {
                used += 1;
                assert!(
                    defined.contains(&r.name) || builtins.contains(r.name.as_str()),
                    "{}: ${} is used in {text:?} but not defined",
                    d.uid,
                    r.name
                );
            }
        }
        assert!(used > 0, "{}: no variables used at all", d.uid);
    }
}

#[test]
fn every_dashboard_has_the_shared_variables_multi_select_with_all() {
    for d in dashboards() {
        for (name, plugin) in [("datasource", "prometheus"), ("traces", "jaeger")] {
            let v = d
                .variable(name)
                .unwrap_or_else(|| panic!("{}: no ${name}", d.uid));
            assert_eq!(
                (v.kind.as_str(), v.definition.as_str()),
                ("datasource", plugin),
                "{}: ${name}",
                d.uid
            );
        }
        for (name, label) in [
            ("job", "job"),
            ("instance", "instance"),
            ("model", "gen_ai_request_model"),
            ("gpu", "gpu_index"),
        ] {
            let v = d
                .variable(name)
                .unwrap_or_else(|| panic!("{}: no ${name}", d.uid));
            assert!(
                v.multi && v.include_all,
                "{}: ${name} must be multi-select with All",
                d.uid
            );
            assert!(
                v.all_value.is_some(),
                "{}: ${name} needs an allValue regex (.*) so All stays one short matcher",
                d.uid
            );
            let (_, l) = parse_label_values(&v.definition)
                .unwrap_or_else(|| panic!("{}: ${name} is not label_values(...)", d.uid));
            assert_eq!(l, label, "{}: ${name} reads the wrong label", d.uid);
        }
    }
}

#[test]
fn refresh_time_ranges_timezone_and_links_are_as_operators_expect() {
    for d in dashboards() {
        let j = &d.json;
        assert_eq!(j["refresh"], "5s", "{}: refresh", d.uid);
        let intervals: Vec<&str> = j["timepicker"]["refresh_intervals"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(
            intervals,
            ["1s", "5s", "10s", "30s", "1m"],
            "{}: refresh choices",
            d.uid
        );
        let ranges: Vec<&str> = j["timepicker"]["quick_ranges"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["from"].as_str())
            .collect();
        assert_eq!(
            ranges,
            ["now-5m", "now-1h", "now-6h", "now-24h", "now-7d"],
            "{}: quick ranges",
            d.uid
        );
        assert_eq!(
            j["timepicker"]["hidden"],
            Value::Null,
            "{}: the custom picker stays visible",
            d.uid
        );
        assert_eq!(j["timezone"], "browser", "{}: timezone", d.uid);
        let tags: Vec<&str> = j["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            tags.contains(&"infermon"),
            "{}: tag infermon (the dashboard links list that tag)",
            d.uid
        );
        let linked = j["links"].as_array().into_iter().flatten().any(|l| {
            l["type"] == "dashboards"
                && l["tags"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| t == "infermon"))
                && l["includeVars"] == true
                && l["keepTime"] == true
        });
        assert!(
            linked,
            "{}: needs a link to the other infermon dashboards keeping time and variables",
            d.uid
        );
    }
}

/// The contract's Prometheus series (histograms with their _bucket/_sum/_count), the recording
/// rules, and the collector's/Prometheus' own series.
fn known_metrics() -> BTreeSet<String> {
    let mut known = BTreeSet::new();
    for m in METRICS {
        if m.instrument == Instrument::Histogram {
            for suffix in ["_bucket", "_sum", "_count"] {
                known.insert(format!("{}{suffix}", m.prometheus));
            }
        } else {
            known.insert(m.prometheus.to_string());
        }
    }
    known.extend(
        load_recording_rules(&repo_rules_dir())
            .expect("rules load")
            .into_iter()
            .map(|r| r.name),
    );
    known.extend(EXTERNAL_METRICS.iter().map(|s| s.to_string()));
    known
}

#[test]
fn every_metric_in_a_query_is_in_the_contract_a_rule_or_the_collector() {
    let known = known_metrics();
    let mut used = BTreeSet::new();
    for d in dashboards() {
        for (what, expr) in promql_targets(&d) {
            for m in promql::names(&expr).metrics {
                assert!(
                    known.contains(&m),
                    "{what}: unknown metric `{m}` (typo, or missing from contract.rs / rules)"
                );
                used.insert(m);
            }
        }
        for v in d.variables().into_iter().filter(|v| v.kind == "query") {
            let (selector, _) = parse_label_values(&v.definition).unwrap_or_else(|| {
                panic!(
                    "{}: ${} is not label_values(selector, label)",
                    d.uid, v.name
                )
            });
            let mut metrics = promql::names(&selector).metrics;
            // `{__name__=~"a|b"}` selects several metrics by name.
            if let Some((_, rest)) = selector.split_once("__name__=~\"") {
                metrics.extend(
                    rest.split('"')
                        .next()
                        .unwrap_or_default()
                        .split('|')
                        .map(str::to_string),
                );
            }
            for m in metrics {
                assert!(
                    known.contains(&m),
                    "{}: variable ${} reads unknown metric `{m}`",
                    d.uid,
                    v.name
                );
            }
        }
    }
    assert!(used.len() > 20, "suspiciously few metrics found: {used:?}");
}

#[test]
fn every_label_in_a_query_is_a_contract_attribute_or_a_known_target_label() {
    let mut known: BTreeSet<String> = METRICS
        .iter()
        .flat_map(|m| m.attributes.iter())
        .map(|a| a.replace('.', "_"))
        .collect();
    known.extend(EXTERNAL_LABELS.iter().map(|s| s.to_string()));
    for d in dashboards() {
        for (what, expr) in promql_targets(&d) {
            for l in promql::names(&expr).labels {
                assert!(
                    known.contains(&l),
                    "{what}: unknown label `{l}` (typo, or not an attribute in contract.rs)"
                );
            }
        }
    }
}

#[test]
fn rates_use_grafana_intervals_and_quantiles_aggregate_by_le_first() {
    for d in dashboards() {
        for (what, expr) in raw_promql(&d) {
            for range in promql::range_selectors(&expr) {
                assert!(
                    range == "$__rate_interval" || range == "$__range",
                    "{what}: range [{range}] should be $__rate_interval (or $__range for totals over the range)"
                );
            }
            for grouping in promql::histogram_quantile_groupings(&expr) {
                let labels = grouping.unwrap_or_else(|| {
                    panic!("{what}: histogram_quantile needs `sum by (le, ...)` inside")
                });
                assert!(
                    labels.iter().any(|l| l == "le"),
                    "{what}: histogram_quantile must keep `le`: {labels:?}"
                );
            }
        }
    }
}

/// Quantiles and request/error rates have recording rules (fast at 7 days): the dashboards read
/// every rule of recording.yml, and never recompute a recorded quantile from raw buckets.
#[test]
fn recording_rules_are_read_instead_of_recomputed() {
    let rules = load_recording_rules(&repo_rules_dir()).expect("rules load");
    assert!(!rules.is_empty());
    let exprs: Vec<(String, String)> = dashboards().iter().flat_map(promql_targets).collect();
    let exemplar_targets: BTreeSet<String> = dashboards()
        .iter()
        .flat_map(|d| {
            d.targets().into_iter().filter_map(move |t| match t.query {
                Query::PromQl { exemplar: true, .. } => {
                    Some(format!("{} / {} [{}]", d.uid, t.panel_title, t.ref_id))
                }
                _ => None,
            })
        })
        .collect();
    let used: BTreeSet<String> = exprs
        .iter()
        .flat_map(|(_, e)| promql::names(e).metrics)
        .collect();
    for rule in &rules {
        // recording.yml holds the dashboards' rules; alerts.yml's helpers and thresholds.yml's
        // constants serve the alerts (the dashboards draw some of the thresholds, not all).
        if rule.file == "recording.yml" {
            assert!(
                used.contains(&rule.name),
                "recording rule {} is not read by any panel",
                rule.name
            );
        }
        if !rule.expr.contains("histogram_quantile(") {
            continue;
        }
        for bucket in promql::names(&rule.expr).metrics {
            // Exemplar targets are exempt: exemplars live only on the raw buckets (a recording
            // rule's output carries none), so the target that shows them must read those.
            for (what, expr) in exprs
                .iter()
                .filter(|(what, _)| !exemplar_targets.contains(what))
            {
                let recomputes = expr.contains("histogram_quantile(")
                    && promql::names(expr).metrics.contains(&bucket);
                assert!(
                    !recomputes,
                    "{what}: recomputes a quantile of {bucket}; read {} instead",
                    rule.name
                );
            }
        }
    }
}

#[test]
fn latency_panels_offer_exemplars() {
    let mut with_exemplars = BTreeSet::new();
    for d in dashboards() {
        for t in d.targets() {
            if let Query::PromQl {
                exemplar: true,
                expr,
                ..
            } = &t.query
            {
                assert!(
                    expr.contains("_bucket"),
                    "{} / {}: exemplars live on histogram buckets",
                    d.uid,
                    t.panel_title
                );
                with_exemplars.insert(format!("{} / {}", d.uid, t.panel_title));
            }
        }
    }
    for panel in [
        "infermon-performance / End-to-end latency P50/P95/P99/P99.9",
        "infermon-performance / Time to first token P50/P95/P99/P99.9",
        "infermon-performance / Time per output token P50/P95/P99/P99.9",
        "infermon-performance / Queue, prefill and decode P99",
        "infermon-traces / Span duration by span name (P95)",
    ] {
        assert!(
            with_exemplars.contains(panel),
            "{panel} has no exemplar target"
        );
    }
}

#[test]
fn the_may_be_empty_table_names_real_targets_and_gives_reasons() {
    let all = dashboards();
    for e in MAY_BE_EMPTY {
        assert!(!e.reason.trim().is_empty());
        let d = all
            .iter()
            .find(|d| d.uid == e.dashboard_uid)
            .unwrap_or_else(|| panic!("{}: no such dashboard", e.dashboard_uid));
        let targets: Vec<_> = d
            .targets()
            .into_iter()
            .filter(|t| t.panel_title == e.panel_title)
            .collect();
        assert!(
            !targets.is_empty(),
            "{} / {}: no such panel (renamed?)",
            e.dashboard_uid,
            e.panel_title
        );
        if let Some(r) = e.ref_id {
            assert!(
                targets.iter().any(|t| t.ref_id == r),
                "{} / {}: no target {r}",
                e.dashboard_uid,
                e.panel_title
            );
        }
    }
}
