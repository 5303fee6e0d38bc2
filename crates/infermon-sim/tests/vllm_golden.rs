//! The simulator's `--metrics vllm` exposition against the golden list derived from vLLM's
//! source (`tests/golden/vllm-<version>-metrics.toml`, made by `scripts/vllm-metrics-golden.py`):
//! the same metric names, TYPE, HELP, label names, fixed label values and bucket boundaries,
//! every metric it leaves out listed as excluded with a reason, and nothing it adds. The NIXL
//! connector's metrics (`sim = "disaggregated"`) appear once a simulator takes part in
//! disaggregated prefill/decode, and count on the decode worker what its pulls moved.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{test_config, Server, MODEL};
use infermon_sim::MetricsFormat;
use serde_json::json;

const GOLDEN: &str = include_str!("golden/vllm-0.33.0-metrics.toml");

/// One metric of the golden file.
struct Golden {
    name: String,
    kind: String,
    help: String,
    labels: Vec<String>,
    label_values: BTreeMap<String, Vec<String>>,
    buckets: Option<Vec<String>>,
    excluded: Option<String>,
    /// Emitted only once the simulator has served a disaggregated request.
    disaggregated: bool,
}

fn strings(value: &toml::Value) -> Vec<String> {
    value
        .as_array()
        .expect("an array")
        .iter()
        .map(|v| v.as_str().expect("a string").to_owned())
        .collect()
}

fn golden() -> (toml::Table, Vec<Golden>) {
    let table: toml::Table = GOLDEN.parse().expect("the golden file is TOML");
    let metrics = table["metric"]
        .as_array()
        .expect("[[metric]] tables")
        .iter()
        .map(|m| {
            let field = |key: &str| m[key].as_str().expect(key).to_owned();
            let sim = field("sim");
            let excluded = match sim.as_str() {
                "emitted" | "disaggregated" => None,
                "excluded" => Some(
                    m.get("reason")
                        .and_then(|r| r.as_str())
                        .unwrap_or("")
                        .to_owned(),
                ),
                other => panic!(
                    "{}: sim = {other:?}, expected emitted or excluded",
                    field("name")
                ),
            };
            Golden {
                name: field("name"),
                kind: field("type"),
                help: field("help"),
                labels: strings(&m["labels"]),
                label_values: m
                    .get("label_values")
                    .and_then(|v| v.as_table())
                    .map(|t| t.iter().map(|(k, v)| (k.clone(), strings(v))).collect())
                    .unwrap_or_default(),
                buckets: m.get("buckets").map(strings),
                excluded,
                disaggregated: sim == "disaggregated",
            }
        })
        .collect();
    (table, metrics)
}

/// One metric family as the exposition shows it.
#[derive(Default, Debug)]
struct Family {
    kind: String,
    help: String,
    /// Label names of each sample, `le` left out, in the order written.
    label_names: BTreeSet<Vec<String>>,
    label_values: BTreeMap<String, BTreeSet<String>>,
    /// `le` values of the `_bucket` samples, in order, +Inf included.
    buckets: Vec<String>,
}

/// `k="v",k2="v2"` into pairs (values unescaped).
fn parse_labels(text: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").expect("label=\"value\"");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().expect("closing quote") {
                (_, '\\') => match chars.next().expect("escaped char").1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        pairs.push((key.to_owned(), value));
        rest = after[end + 1..].trim_start_matches(',');
    }
    pairs
}

/// The families of a text exposition, by name. Samples belong to the family whose `# TYPE`
/// line precedes them, as the format requires.
fn parse_exposition(text: &str) -> BTreeMap<String, Family> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("# HELP name text");
            let help = help.replace("\\n", "\n").replace("\\\\", "\\");
            families.entry(name.to_owned()).or_default().help = help;
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            families.entry(name.to_owned()).or_default().kind = kind.to_owned();
            current = name.to_owned();
        } else {
            let (series, value) = line.rsplit_once(' ').expect("series value");
            assert!(value.parse::<f64>().is_ok(), "not a number: {line}");
            let (sample, labels) = series
                .strip_suffix('}')
                .and_then(|s| s.split_once('{'))
                .unwrap_or((series, ""));
            assert!(
                sample.starts_with(current.as_str()),
                "{sample} outside its family ({current})"
            );
            let family = families.get_mut(&current).expect("a # TYPE line first");
            let mut names = Vec::new();
            for (key, value) in parse_labels(labels) {
                if key == "le" && sample.ends_with("_bucket") {
                    if !family.buckets.contains(&value) {
                        family.buckets.push(value);
                    }
                    continue;
                }
                family
                    .label_values
                    .entry(key.clone())
                    .or_default()
                    .insert(value);
                names.push(key);
            }
            family.label_names.insert(names);
        }
    }
    families
}

/// The decode half of a disaggregated request, with what a prefill worker would have handed
/// over for `remote_num_tokens` prompt tokens (the decode worker does not contact the prefill
/// worker: the pull is modelled).
fn decode_request(prompt: &str, remote_num_tokens: u64) -> serde_json::Value {
    json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 4,
        "kv_transfer_params": {
            "do_remote_prefill": true,
            "remote_engine_id": "prefill-0",
            "remote_host": "127.0.0.1",
            "remote_port": 9,
            "remote_num_tokens": remote_num_tokens,
        },
    })
}

/// `/metrics` after three plain requests and, if `disaggregated`, the decode half of a
/// disaggregated one.
async fn scrape_after_some_traffic(max_model_len: u32, disaggregated: bool) -> String {
    let mut config = test_config();
    config.metrics = MetricsFormat::Vllm;
    config.scheduler.max_model_len = Some(max_model_len);
    // Enough blocks for one full-length context (the configuration requires it).
    config.kv_cache.num_blocks = Some(max_model_len.div_ceil(16) + 64);
    let server = Server::start(config).await;
    for prompt in ["one", "two", "one"] {
        let body = json!({
            "model": MODEL,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 4,
        });
        let response = server.post_json("/v1/chat/completions", &body).await;
        assert_eq!(response.status().as_u16(), 200);
    }
    if disaggregated {
        let body = decode_request("three", 5);
        let response = server.post_json("/v1/chat/completions", &body).await;
        assert_eq!(response.status().as_u16(), 200);
    }
    let response = server.get("/metrics").await;
    assert_eq!(response.status().as_u16(), 200);
    response.text().await.unwrap()
}

#[tokio::test]
async fn vllm_exposition_matches_the_golden_file_derived_from_vllm() {
    let (table, golden) = golden();
    let max_model_len = table["max_model_len"].as_integer().expect("max_model_len") as u32;
    let text = scrape_after_some_traffic(max_model_len, true).await;
    let families = parse_exposition(&text);
    let mut problems = Vec::new();

    for g in &golden {
        let Some(found) = families.get(&g.name) else {
            if g.excluded.is_none() {
                problems.push(format!("{}: missing", g.name));
            }
            continue;
        };
        if g.excluded.is_some() {
            problems.push(format!("{}: listed as excluded but emitted", g.name));
            continue;
        }
        if found.kind != g.kind {
            problems.push(format!(
                "{}: TYPE {} (vLLM: {})",
                g.name, found.kind, g.kind
            ));
        }
        if found.help != g.help {
            problems.push(format!(
                "{}: HELP {:?}\n   vLLM: {:?}",
                g.name, found.help, g.help
            ));
        }
        let expected: BTreeSet<Vec<String>> = [g.labels.clone()].into();
        if found.label_names != expected {
            problems.push(format!(
                "{}: label names {:?} (vLLM: {:?})",
                g.name, found.label_names, g.labels
            ));
        }
        for (label, values) in &g.label_values {
            let want: BTreeSet<String> = values.iter().cloned().collect();
            let got = found.label_values.get(label).cloned().unwrap_or_default();
            if got != want {
                problems.push(format!(
                    "{}: {label} values {got:?} (vLLM: {want:?})",
                    g.name
                ));
            }
        }
        match &g.buckets {
            Some(bounds) => {
                let mut want = bounds.clone();
                want.push("+Inf".to_owned());
                if found.buckets != want {
                    problems.push(format!(
                        "{}: buckets {:?}\n   vLLM: {want:?}",
                        g.name, found.buckets
                    ));
                }
            }
            None if !found.buckets.is_empty() => {
                problems.push(format!("{}: buckets on a non-histogram", g.name));
            }
            None => {}
        }
    }
    let known: BTreeSet<&str> = golden.iter().map(|g| g.name.as_str()).collect();
    for name in families.keys() {
        if !known.contains(name.as_str()) {
            problems.push(format!("{name}: emitted, but vLLM has no such metric"));
        }
    }
    assert!(problems.is_empty(), "{}\n\n{text}", problems.join("\n"));
}

#[test]
fn every_exclusion_is_explicit_and_explained() {
    let (table, golden) = golden();
    assert_eq!(table["vllm_version"].as_str(), Some("0.33.0"));
    assert!(
        golden.len() > 30,
        "the golden file lists {} metrics",
        golden.len()
    );
    let names: BTreeSet<&str> = golden.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names.len(), golden.len(), "a metric is listed twice");
    for g in &golden {
        if let Some(reason) = &g.excluded {
            assert!(
                reason.split_whitespace().count() >= 4,
                "{} is excluded without a reason: {reason:?}",
                g.name
            );
        }
        assert!(g.name.starts_with("vllm:"), "{}", g.name);
        assert_eq!(g.kind == "histogram", g.buckets.is_some(), "{}", g.name);
    }
    // The core series the collector normalises must be among the emitted ones.
    for name in [
        "vllm:time_to_first_token_seconds",
        "vllm:inter_token_latency_seconds",
        "vllm:e2e_request_latency_seconds",
        "vllm:request_queue_time_seconds",
        "vllm:request_prefill_time_seconds",
        "vllm:request_decode_time_seconds",
        "vllm:kv_cache_usage_perc",
        "vllm:num_preemptions_total",
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:request_prompt_tokens",
        "vllm:request_generation_tokens",
        "vllm:request_success_total",
    ] {
        let g = golden.iter().find(|g| g.name == name).expect(name);
        assert!(g.excluded.is_none(), "{name} is excluded");
    }
}

#[test]
fn golden_version_is_the_one_the_compose_vllm_profile_pins() {
    let (table, _) = golden();
    let version = table["vllm_version"].as_str().unwrap();
    let compose = include_str!("../../../deploy/docker-compose.yml");
    let pin = format!("vllm/vllm-openai:${{VLLM_VERSION:-v{version}}}");
    assert!(
        compose.contains(&pin),
        "deploy/docker-compose.yml no longer pins vLLM {version} ({pin}): regenerate the golden \
         file for the pinned version (scripts/vllm-metrics-golden.py)"
    );
}

/// The value of the one sample `series` (name with its labels, as written).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {series}\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn per_request_and_per_step_series_count_what_was_served() {
    let mut config = test_config();
    config.metrics = MetricsFormat::Vllm;
    let server = Server::start(config).await;
    for _ in 0..3 {
        let body = json!({
            "model": MODEL,
            "messages": [{"role": "user", "content": "count me"}],
            "max_tokens": 5,
            "ignore_eos": true,
        });
        let response = server.post_json("/v1/chat/completions", &body).await;
        assert_eq!(response.status().as_u16(), 200);
    }
    let text = server.get("/metrics").await.text().await.unwrap();
    let l = format!("model_name=\"{MODEL}\",engine=\"0\"");
    let get = |series: &str| sample(&text, series);
    // "<|user|>\ncount me\n" = 5 tokens (less than a block: nothing cached), 5 generated,
    // three times, one after the other.
    assert_eq!(
        get(&format!("vllm:request_prompt_tokens_count{{{l}}}")),
        3.0
    );
    assert_eq!(get(&format!("vllm:request_prompt_tokens_sum{{{l}}}")), 15.0);
    assert_eq!(
        get(&format!("vllm:request_generation_tokens_sum{{{l}}}")),
        15.0
    );
    assert_eq!(
        get(&format!("vllm:request_params_max_tokens_sum{{{l}}}")),
        15.0
    );
    assert_eq!(
        get(&format!(
            "vllm:request_prefill_kv_computed_tokens_sum{{{l}}}"
        )),
        15.0
    );
    assert_eq!(
        get(&format!(
            "vllm:prompt_tokens_by_source_total{{{l},source=\"local_compute\"}}"
        )),
        15.0
    );
    // Every token computed in some step, prompt and output alike.
    assert_eq!(
        get(&format!("vllm:iteration_tokens_total_sum{{{l}}}")),
        30.0
    );
    assert!(get(&format!("vllm:iteration_tokens_total_count{{{l}}}")) >= 5.0);
    // Never preempted: all three in the first bucket.
    assert_eq!(
        get(&format!(
            "vllm:request_num_preemptions_bucket{{{l},le=\"1.0\"}}"
        )),
        3.0
    );
    assert_eq!(
        get(&format!(
            "vllm:request_time_per_output_token_seconds_count{{{l}}}"
        )),
        3.0
    );
    // RUNNING = prefill + decode, as vLLM defines the phases.
    let inference = get(&format!("vllm:request_inference_time_seconds_sum{{{l}}}"));
    let prefill = get(&format!("vllm:request_prefill_time_seconds_sum{{{l}}}"));
    let decode = get(&format!("vllm:request_decode_time_seconds_sum{{{l}}}"));
    assert!(
        (inference - (prefill + decode)).abs() < 1e-9,
        "{inference} {prefill} {decode}"
    );
    // n > 1 only, in vLLM too.
    assert_eq!(get(&format!("vllm:request_params_n_count{{{l}}}")), 0.0);
    let info = text
        .lines()
        .find(|line| line.starts_with("vllm:cache_config_info{"))
        .expect("cache_config_info");
    assert!(info.contains("block_size=\"16\""), "{info}");
    // 1024 allocatable blocks plus vLLM's null block.
    assert!(info.contains("num_gpu_blocks=\"1025\""), "{info}");
    assert!(info.contains("enable_prefix_caching=\"True\""), "{info}");
    assert!(info.ends_with("engine=\"0\"} 1.0"), "{info}");
}

#[tokio::test]
async fn nixl_metrics_appear_only_on_a_disaggregated_worker() {
    let (table, golden) = golden();
    let max_model_len = table["max_model_len"].as_integer().expect("max_model_len") as u32;
    let nixl: Vec<&Golden> = golden.iter().filter(|g| g.disaggregated).collect();
    assert_eq!(
        nixl.len(),
        8,
        "vLLM 0.33.0's NixlPromMetrics registers 8 metrics"
    );
    assert!(nixl.iter().all(|g| g.name.starts_with("vllm:nixl_")));
    let families = parse_exposition(&scrape_after_some_traffic(max_model_len, false).await);
    for g in nixl {
        assert!(
            !families.contains_key(&g.name),
            "{} exposed by an engine that never took part in disaggregated prefill/decode",
            g.name
        );
    }
}

#[tokio::test]
async fn nixl_transfers_are_recorded_on_the_decode_worker_as_the_sim_modelled_them() {
    let mut config = test_config();
    config.metrics = MetricsFormat::Vllm;
    let prefill = Server::start(config.clone()).await;
    let decode = Server::start(config).await;
    let prompts = ["word ".repeat(100), "word ".repeat(300)];
    let mut pulled_tokens = Vec::new();
    for prompt in &prompts {
        let first = json!({
            "model": MODEL,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 1,
            "kv_transfer_params": {"do_remote_decode": true},
        });
        let answer: serde_json::Value = prefill
            .post_json("/v1/chat/completions", &first)
            .await
            .json()
            .await
            .unwrap();
        let params = answer["kv_transfer_params"].clone();
        pulled_tokens.push(
            params["remote_num_tokens"]
                .as_u64()
                .expect("remote_num_tokens"),
        );
        let mut second = first.clone();
        second["max_tokens"] = json!(4);
        second["kv_transfer_params"] = params;
        let response = decode.post_json("/v1/chat/completions", &second).await;
        assert_eq!(response.status().as_u16(), 200);
    }
    let p = prefill.get("/metrics").await.text().await.unwrap();
    let d = decode.get("/metrics").await.text().await.unwrap();
    let l = format!("model_name=\"{MODEL}\",engine=\"0\"");
    let (pf, df) = (|s: &str| sample(&p, s), |s: &str| sample(&d, s));
    // Pull mode: the decode worker's READs are the transfers; the prefill worker records none
    // but, being NIXL-connected, exposes the series at 0.
    for h in [
        "vllm:nixl_xfer_time_seconds",
        "vllm:nixl_post_time_seconds",
        "vllm:nixl_bytes_transferred",
        "vllm:nixl_num_descriptors",
    ] {
        assert_eq!(pf(&format!("{h}_count{{{l}}}")), 0.0, "{h}\n{p}");
        assert_eq!(df(&format!("{h}_count{{{l}}}")), 2.0, "{h}\n{d}");
    }
    let profile = infermon_sim::Profile::builtin(infermon_sim::DEFAULT_PROFILE).unwrap();
    let bytes: u64 = pulled_tokens
        .iter()
        .map(|t| t * profile.model.kv_bytes_per_token)
        .sum();
    assert_eq!(
        df(&format!("vllm:nixl_bytes_transferred_sum{{{l}}}")),
        bytes as f64
    );
    // One descriptor per block per K and V region of every layer (16-token blocks).
    let descriptors: u64 = pulled_tokens
        .iter()
        .map(|t| 2 * u64::from(profile.model.num_layers) * t.div_ceil(16))
        .sum();
    assert_eq!(
        df(&format!("vllm:nixl_num_descriptors_sum{{{l}}}")),
        descriptors as f64
    );
    // The modelled duration: the link's latency plus bytes at its rate (rdma by default), in
    // wall seconds at the test's time scale, as every vLLM-format duration is. The pull ends at
    // a deadline computed from its start, so this is exact up to nanosecond rounding.
    let expected: f64 = pulled_tokens
        .iter()
        .map(|t| {
            infermon_sim::KvTransport::Rdma.transfer_seconds(t * profile.model.kv_bytes_per_token)
        })
        .sum::<f64>()
        / test_config().time_scale;
    let measured = df(&format!("vllm:nixl_xfer_time_seconds_sum{{{l}}}"));
    assert!(
        expected > 0.0 && (measured - expected).abs() < 1e-6,
        "{measured} vs modelled {expected}"
    );
    assert_eq!(df(&format!("vllm:nixl_post_time_seconds_sum{{{l}}}")), 0.0);
    for c in [
        "vllm:nixl_num_failed_transfers_total",
        "vllm:nixl_num_kv_expired_reqs_total",
    ] {
        assert_eq!(df(&format!("{c}{{{l}}}")), 0.0, "{c}");
    }
}
