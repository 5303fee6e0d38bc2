//! `infermon alerts` against a real Alertmanager: the binary `scripts/build-stack.sh` builds,
//! started by the end-to-end crate's harness (`infermon_e2e::alerting`) with the repository's
//! config. The test posts alerts the way Prometheus does, then lists, acknowledges and
//! un-acknowledges them with the built `infermon` binary, and checks the result through
//! Alertmanager's API. Without Alertmanager the tests fail; `scripts/test.sh --quick` leaves
//! them out by name (`with_alertmanager::`) and prints that it did.

use std::net::TcpListener;

use infermon_e2e::alerting::Alertmanager;
use serde_json::{json, Value};

/// Runs `infermon alerts <args>` and returns its stdout, or its one-line error without the
/// `error: ` prefix.
async fn alerts_cli(url: &str, args: &[&str]) -> Result<String, String> {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_infermon"))
        .args(["alerts", "--alertmanager-url", url])
        .args(args)
        .env_remove("INFERMON_CONFIG")
        .env_remove("INFERMON_ALERTMANAGER_URL")
        .env_remove("INFERMON_ALERTS_AUTHOR")
        .output()
        .await
        .expect("the infermon binary runs");
    let stdout = String::from_utf8(out.stdout).expect("UTF-8 output");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        return Ok(stdout);
    }
    assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}:\n{stderr}");
    Err(stderr
        .trim_end()
        .strip_prefix("error: ")
        .unwrap_or(&stderr)
        .to_owned())
}

/// Alertmanager with helpers for these tests.
trait AlertsCli {
    async fn cli(&self, args: &[&str]) -> Result<String, String>;
    async fn post(&self, alerts: &[(Value, &str)]);
}

impl AlertsCli for Alertmanager {
    async fn cli(&self, args: &[&str]) -> Result<String, String> {
        alerts_cli(&self.url, args).await
    }

    /// Posts alerts, each with its summary annotation.
    async fn post(&self, alerts: &[(Value, &str)]) {
        let alerts: Vec<(Value, Value)> = alerts
            .iter()
            .map(|(labels, summary)| (labels.clone(), json!({ "summary": summary })))
            .collect();
        self.post_alerts(&alerts).await.expect("post alerts");
    }
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

/// The tests that start Alertmanager: `scripts/test.sh --quick` skips them by this module's
/// name (and says so); everywhere else a missing Alertmanager fails them.
mod with_alertmanager {
    use super::*;

    #[tokio::test]
    async fn list_shows_firing_alerts_most_severe_first() {
        let (am, _webhook) = Alertmanager::start_with_webhook().await;
        assert_eq!(am.cli(&["list"]).await.unwrap(), "no firing alerts\n");

        am.post(&[kv_cache_alert(), error_ratio_alert()]).await;
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
            lines[2].contains("InferenceKvCacheNearFull")
                && lines[2].contains("svc engine-1 llama"),
            "{table}"
        );

        let warnings = am
            .cli(&["list", "--matcher", "severity=warning"])
            .await
            .unwrap();
        assert_eq!(warnings.lines().count(), 2, "{warnings}");
        assert!(warnings.contains("InferenceKvCacheNearFull"), "{warnings}");

        let json: Value =
            serde_json::from_str(&am.cli(&["list", "--json"]).await.unwrap()).unwrap();
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
        let (am, _webhook) = Alertmanager::start_with_webhook().await;
        am.post(&[error_ratio_alert(), kv_cache_alert()]).await;

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
        let (am, _webhook) = Alertmanager::start_with_webhook().await;
        am.post(&[error_ratio_alert(), kv_cache_alert()]).await;
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
        let (am, _webhook) = Alertmanager::start_with_webhook().await;
        am.post(&[error_ratio_alert()]).await;

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
        let (am, _webhook) = Alertmanager::start_with_webhook().await;
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
    let e = alerts_cli(&url, &["list"]).await.unwrap_err();
    assert!(
        e.starts_with(&format!(
            "cannot reach Alertmanager at {url} to list alerts ("
        )),
        "{e}"
    );
    assert!(e.contains("INFERMON_ALERTMANAGER_URL"), "{e}");

    let e = alerts_cli("localhost:9093", &["list"]).await.unwrap_err();
    assert!(e.contains("must start with http://"), "{e}");
}
