//! `infermon alerts` against a real Alertmanager (the binary `scripts/build-stack.sh` builds),
//! started on a free loopback port with the repository's `deploy/alertmanager/alertmanager.yml`.
//! The test posts alerts the way Prometheus does, then lists, acknowledges and un-acknowledges
//! them with the command's own argument parsing, and checks the result through Alertmanager's
//! API. Skipped, with the reason printed, only when Alertmanager has not been built.

// The command module is compiled into this test as it is into the binary (it is self-contained);
// not every item is used here.
#[allow(dead_code)]
#[path = "../src/alerts.rs"]
mod alerts;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use clap::Parser as _;
use serde_json::{json, Value};

/// `infermon alerts ...` as the binary parses it.
#[derive(clap::Parser)]
#[command(name = "infermon-alerts")]
struct AlertsCli {
    #[command(flatten)]
    args: alerts::AlertsArgs,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Alertmanager binary from the stack cache, as `scripts/stack-env.sh` locates it.
fn alertmanager_binary() -> Option<PathBuf> {
    let out = Command::new("bash")
        .arg("-c")
        .arg("source scripts/stack-env.sh >/dev/null 2>&1; printf %s \"$ALERTMANAGER\"")
        .current_dir(repo_root())
        .output()
        .ok()?;
    let path = String::from_utf8(out.stdout).ok()?;
    (!path.is_empty()).then(|| PathBuf::from(path))
}

/// A running Alertmanager, killed on drop.
struct Alertmanager {
    child: Child,
    url: String,
    _storage: tempfile::TempDir,
}

impl Alertmanager {
    /// Starts Alertmanager with the repository's config. When it has not been built the test
    /// fails, as the end-to-end tests do, unless `INFERMON_E2E_SKIP_MISSING=1` (then it returns
    /// None, printing why): a missing binary must not pass silently in CI.
    async fn start() -> Option<Alertmanager> {
        let Some(binary) = alertmanager_binary() else {
            let hint = "Alertmanager is not built (run scripts/build-stack.sh alertmanager)";
            if std::env::var("INFERMON_E2E_SKIP_MISSING").as_deref() == Ok("1") {
                eprintln!("skipped: {hint}");
                return None;
            }
            panic!("{hint} (or set INFERMON_E2E_SKIP_MISSING=1 to skip)");
        };
        let storage = tempfile::tempdir().expect("temp dir");
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&binary)
            .arg(format!(
                "--config.file={}",
                repo_root()
                    .join("deploy/alertmanager/alertmanager.yml")
                    .display()
            ))
            .arg(format!("--storage.path={}", storage.path().display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start alertmanager");
        let am = Alertmanager {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _storage: storage,
        };
        am.wait_ready().await;
        Some(am)
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = reqwest::get(format!("{}/-/ready", self.url)).await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("Alertmanager at {} not ready after 30 s", self.url);
    }

    /// Posts alerts as Prometheus does: firing until an end time in the future.
    async fn post_alerts(&self, alerts: &[(Value, &str)]) {
        let ends = alerts::rfc3339(SystemTime::now() + Duration::from_secs(3600));
        let body: Vec<Value> = alerts
            .iter()
            .map(|(labels, summary)| {
                json!({
                    "labels": labels,
                    "annotations": {"summary": summary},
                    "endsAt": ends,
                    "generatorURL": "http://prometheus.test/graph",
                })
            })
            .collect();
        let response = reqwest::Client::new()
            .post(format!("{}/api/v2/alerts", self.url))
            .json(&body)
            .send()
            .await
            .expect("post alerts");
        assert!(
            response.status().is_success(),
            "posting alerts: {}",
            response.status()
        );
    }

    async fn get(&self, path: &str) -> Value {
        reqwest::get(format!("{}{path}", self.url))
            .await
            .expect("GET")
            .json()
            .await
            .expect("JSON")
    }

    /// The alert with this alertname, from the API.
    async fn alert(&self, name: &str) -> Value {
        let all = self.get("/api/v2/alerts").await;
        all.as_array()
            .unwrap()
            .iter()
            .find(|a| a["labels"]["alertname"] == name)
            .unwrap_or_else(|| panic!("{name} not in {all:#}"))
            .clone()
    }

    async fn silence(&self, id: &str) -> Value {
        self.get(&format!("/api/v2/silence/{id}")).await
    }

    /// Runs `infermon alerts <args>` and returns its output, or its one-line error.
    async fn cli(&self, args: &[&str]) -> Result<String, String> {
        let mut argv = vec!["infermon-alerts", "--alertmanager-url", &self.url];
        argv.extend_from_slice(args);
        run_cli(&argv).await
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn run_cli(argv: &[&str]) -> Result<String, String> {
    let cli = AlertsCli::try_parse_from(argv).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    alerts::run_with_output(cli.args, &mut out)
        .await
        .map_err(|e| format!("{e:#}"))?;
    Ok(String::from_utf8(out).expect("UTF-8 output"))
}

fn error_ratio_alert() -> (Value, &'static str) {
    (
        json!({"alertname": "InferenceHighErrorRatio", "severity": "critical", "component": "inference",
               "job": "svc", "gen_ai_request_model": "llama"}),
        "12% of requests to svc / llama are failing",
    )
}

fn kv_cache_alert() -> (Value, &'static str) {
    (
        json!({"alertname": "InferenceKvCacheNearFull", "severity": "warning", "component": "inference",
               "job": "svc", "instance": "engine-1", "gen_ai_request_model": "llama"}),
        "KV cache of svc (engine-1) is 97% full",
    )
}

#[tokio::test]
async fn list_shows_firing_alerts_most_severe_first() {
    let Some(am) = Alertmanager::start().await else {
        return;
    };
    assert_eq!(am.cli(&["list"]).await.unwrap(), "no firing alerts\n");

    am.post_alerts(&[kv_cache_alert(), error_ratio_alert()])
        .await;
    let table = am.cli(&["list"]).await.unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        lines[0].starts_with("STATE") && lines[0].contains("SUMMARY"),
        "{table}"
    );
    assert!(
        lines[1].starts_with("firing") && lines[1].contains("critical"),
        "{table}"
    );
    assert!(
        lines[1].contains("InferenceHighErrorRatio") && lines[1].contains("svc llama"),
        "{table}"
    );
    assert!(
        lines[1].ends_with("12% of requests to svc / llama are failing"),
        "{table}"
    );
    assert!(
        lines[2].contains("InferenceKvCacheNearFull") && lines[2].contains("svc engine-1 llama"),
        "{table}"
    );

    let warnings = am
        .cli(&["list", "--matcher", "severity=warning"])
        .await
        .unwrap();
    assert_eq!(warnings.lines().count(), 2, "{warnings}");
    assert!(warnings.contains("InferenceKvCacheNearFull"), "{warnings}");

    let json: Value = serde_json::from_str(&am.cli(&["list", "--json"]).await.unwrap()).unwrap();
    let names: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["labels"]["alertname"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["InferenceHighErrorRatio", "InferenceKvCacheNearFull"]
    );
    assert!(
        json[0]["fingerprint"].is_string(),
        "Alertmanager's own fields are kept: {json:#}"
    );
}

#[tokio::test]
async fn ack_silences_an_alert_and_unack_brings_it_back() {
    let Some(am) = Alertmanager::start().await else {
        return;
    };
    am.post_alerts(&[error_ratio_alert(), kv_cache_alert()])
        .await;

    let out = am
        .cli(&[
            "ack",
            "InferenceHighErrorRatio",
            "--matcher",
            "job=svc",
            "--for",
            "2h",
            "--comment",
            "rolling back",
            "--author",
            "alice",
        ])
        .await
        .unwrap();
    assert!(
        out.starts_with(
            r#"acknowledged {alertname="InferenceHighErrorRatio", job="svc"} (1 firing) until "#
        ),
        "{out}"
    );
    let id = out
        .split("silence ")
        .nth(1)
        .and_then(|s| s.lines().next())
        .unwrap()
        .to_owned();
    assert!(
        out.contains(&format!("infermon alerts unack {id}")),
        "{out}"
    );

    // Alertmanager holds the silence as given, and the alert is suppressed by it.
    let silence = am.silence(&id).await;
    assert_eq!(silence["status"]["state"], "active", "{silence:#}");
    assert_eq!(silence["createdBy"], "alice");
    assert_eq!(silence["comment"], "rolling back");
    let matchers: Vec<(String, String, bool)> = silence["matchers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().into(),
                m["value"].as_str().unwrap().into(),
                m["isEqual"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        matchers,
        [
            ("alertname".into(), "InferenceHighErrorRatio".into(), true),
            ("job".into(), "svc".into(), true)
        ]
    );
    let until = out
        .split(" until ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .trim_end_matches('Z');
    assert!(
        silence["endsAt"].as_str().unwrap().starts_with(until),
        "{until} vs {silence:#}"
    );
    let alert = am.alert("InferenceHighErrorRatio").await;
    assert_eq!(alert["status"]["state"], "suppressed");
    assert_eq!(alert["status"]["silencedBy"][0], id.as_str());

    // The list says who acknowledged it and why; --unacked leaves it out.
    let table = am.cli(&["list"]).await.unwrap();
    let acked = table
        .lines()
        .find(|l| l.contains("InferenceHighErrorRatio"))
        .unwrap();
    assert!(acked.starts_with("acked"), "{table}");
    assert!(
        acked.contains("[acked by alice until ") && acked.ends_with(": rolling back]"),
        "{table}"
    );
    let unacked = am.cli(&["list", "--unacked"]).await.unwrap();
    assert!(
        !unacked.contains("InferenceHighErrorRatio")
            && unacked.contains("InferenceKvCacheNearFull"),
        "{unacked}"
    );

    // unack by alert name expires the silence; the alert notifies again.
    let out = am.cli(&["unack", "InferenceHighErrorRatio"]).await.unwrap();
    assert!(out.starts_with(&format!("expired silence {id} (")), "{out}");
    assert!(out.contains("by alice: rolling back"), "{out}");
    assert_eq!(am.silence(&id).await["status"]["state"], "expired");
    assert_eq!(
        am.alert("InferenceHighErrorRatio").await["status"]["state"],
        "active"
    );

    let again = am
        .cli(&["unack", "InferenceHighErrorRatio"])
        .await
        .unwrap_err();
    assert!(
        again.contains("no active acknowledgement (silence) for InferenceHighErrorRatio"),
        "{again}"
    );
}

#[tokio::test]
async fn unack_by_silence_id_leaves_other_acknowledgements_alone() {
    let Some(am) = Alertmanager::start().await else {
        return;
    };
    am.post_alerts(&[error_ratio_alert(), kv_cache_alert()])
        .await;
    let first = am
        .cli(&["ack", "InferenceHighErrorRatio", "--comment", "a"])
        .await
        .unwrap();
    let second = am
        .cli(&["ack", "InferenceKvCacheNearFull", "--comment", "b"])
        .await
        .unwrap();
    let id_of = |out: &str| {
        out.split("silence ")
            .nth(1)
            .and_then(|s| s.lines().next())
            .unwrap()
            .to_owned()
    };
    let (first, second) = (id_of(&first), id_of(&second));

    let out = am.cli(&["unack", &second]).await.unwrap();
    assert!(
        out.starts_with(&format!("expired silence {second}")),
        "{out}"
    );
    assert_eq!(am.silence(&second).await["status"]["state"], "expired");
    assert_eq!(am.silence(&first).await["status"]["state"], "active");
}

#[tokio::test]
async fn ack_refuses_an_alert_that_is_not_firing_unless_forced() {
    let Some(am) = Alertmanager::start().await else {
        return;
    };
    am.post_alerts(&[error_ratio_alert()]).await;

    let typo = am
        .cli(&["ack", "InferenceHighErrorRatoi", "--comment", "x"])
        .await
        .unwrap_err();
    assert!(
        typo.contains(r#"no firing alert matches {alertname="InferenceHighErrorRatoi"}"#),
        "{typo}"
    );
    assert!(typo.contains("--force"), "{typo}");
    let wrong_service = am
        .cli(&[
            "ack",
            "InferenceHighErrorRatio",
            "-m",
            "job=other",
            "--comment",
            "x",
        ])
        .await
        .unwrap_err();
    assert!(
        wrong_service.contains("no firing alert matches"),
        "{wrong_service}"
    );
    assert!(am
        .get("/api/v2/silences")
        .await
        .as_array()
        .unwrap()
        .is_empty());

    let planned = am
        .cli(&[
            "ack",
            "GpuXidErrors",
            "-m",
            "host_name=node7",
            "--for",
            "1d",
            "--comment",
            "driver upgrade",
            "--force",
        ])
        .await
        .unwrap();
    assert!(planned.contains("(0 firing)"), "{planned}");
    assert_eq!(
        am.get("/api/v2/silences").await.as_array().unwrap().len(),
        1
    );
}

#[tokio::test]
async fn bad_input_is_one_clear_line() {
    let Some(am) = Alertmanager::start().await else {
        return;
    };
    let cases: &[(&[&str], &str)] = &[
        (&["ack", "X", "--comment", "  "], "--comment must say why"),
        (&["ack", "X", "--comment", "c", "--for", "5 parsecs"], "30m"),
        (&["ack", "X", "--comment", "c", "-m", "job"], "name=value"),
        (&["ack", "X"], "--comment"),
        (&["list", "-m", "bad-label=x"], "is not a label name"),
    ];
    for (args, expected) in cases {
        let e = am.cli(args).await.unwrap_err();
        assert!(e.contains(expected), "{args:?}: {e}");
    }
}

#[tokio::test]
async fn an_unreachable_alertmanager_is_one_clear_line() {
    // Nothing listens on a port that was just free.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let e = run_cli(&["infermon-alerts", "--alertmanager-url", &url, "list"])
        .await
        .unwrap_err();
    assert!(
        e.starts_with(&format!(
            "cannot reach Alertmanager at {url} to list alerts ("
        )),
        "{e}"
    );
    assert!(
        e.contains("INFERMON_ALERTMANAGER_URL") && !e.contains('\n'),
        "{e}"
    );

    let e = run_cli(&[
        "infermon-alerts",
        "--alertmanager-url",
        "localhost:9093",
        "list",
    ])
    .await
    .unwrap_err();
    assert!(e.contains("must start with http://"), "{e}");
}
