//! Alert delivery, end to end: a local webhook receiver standing in for Slack's and PagerDuty's
//! HTTP endpoints, Alertmanager's webhook payload, Alertmanager started with the repository's
//! config rendered for that webhook, and assertions on what was delivered.
//!
//! This is the one Alertmanager harness of the repository: the alert-delivery tests here and the
//! `infermon alerts` test (crates/infermon-cli/tests/alerts.rs, which has this crate as a
//! dev-dependency) both start Alertmanager through it, so both run the same binary with the same
//! config, and skip or fail the same way when it has not been built.
//!
//! ```no_run
//! # async fn demo() {
//! use infermon_e2e::alerting::{Alertmanager, WebhookReceiver};
//! let webhook = WebhookReceiver::start().await;
//! let am = Alertmanager::start(19093, &webhook.url(), &[]);
//! // ... make an alert fire ...
//! let n = webhook.wait_for_alert("InferenceHighErrorRatio", "firing", std::time::Duration::from_secs(300)).await;
//! n.assert_alert_documented("InferenceHighErrorRatio");
//! # }
//! ```

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use serde::Deserialize;

use crate::stack::{free_port, repo_root, Process};

/// Where every runbook link of alerts.yml points: `<this>#<alertname in lower case>`.
pub const RUNBOOK_URL: &str = "https://github.com/infermon/infermon/blob/main/docs/runbook.md";

// ---- the payload -----------------------------------------------------------------------------

/// One notification as Alertmanager's webhook integration POSTs it (payload version 4).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub version: String,
    pub group_key: String,
    /// `firing` or `resolved` (the group's status).
    pub status: String,
    /// The Alertmanager receiver (route) that sent it: `page`, `chat`, `pipeline`, ...
    pub receiver: String,
    pub group_labels: BTreeMap<String, String>,
    pub common_labels: BTreeMap<String, String>,
    pub common_annotations: BTreeMap<String, String>,
    #[serde(rename = "externalURL")]
    pub external_url: String,
    pub alerts: Vec<NotifiedAlert>,
}

/// One alert inside a notification.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotifiedAlert {
    /// `firing` or `resolved`.
    pub status: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    pub ends_at: String,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
    pub fingerprint: String,
}

impl Notification {
    /// The alerts of this notification named `alertname` with status `status`.
    pub fn alerts_named<'a>(
        &'a self,
        alertname: &'a str,
        status: &'a str,
    ) -> impl Iterator<Item = &'a NotifiedAlert> {
        self.alerts.iter().filter(move |a| {
            a.labels.get("alertname").map(String::as_str) == Some(alertname) && a.status == status
        })
    }

    /// Asserts the notification carries what an on-call person needs for `alertname`: the
    /// payload version, a severity and component, a summary and description, and a runbook
    /// link whose anchor exists in docs/runbook.md.
    pub fn assert_alert_documented(&self, alertname: &str) {
        assert_eq!(
            self.version, "4",
            "Alertmanager webhook payload version: {self:#?}"
        );
        let alert = self
            .alerts
            .iter()
            .find(|a| a.labels.get("alertname").map(String::as_str) == Some(alertname))
            .unwrap_or_else(|| panic!("no {alertname} in notification {self:#?}"));
        for label in ["severity", "component"] {
            assert!(
                alert.labels.get(label).is_some_and(|v| !v.is_empty()),
                "{alertname} has no {label} label: {alert:#?}"
            );
        }
        for annotation in ["summary", "description"] {
            assert!(
                alert
                    .annotations
                    .get(annotation)
                    .is_some_and(|v| !v.trim().is_empty()),
                "{alertname} has no {annotation}: {alert:#?}"
            );
        }
        let runbook = alert
            .annotations
            .get("runbook_url")
            .map(String::as_str)
            .unwrap_or_default();
        assert_eq!(
            runbook,
            runbook_url(alertname),
            "runbook link of {alertname}"
        );
        assert_runbook_has_section(alertname);
    }
}

/// The runbook link an alert must carry.
pub fn runbook_url(alertname: &str) -> String {
    format!("{RUNBOOK_URL}#{}", alertname.to_lowercase())
}

/// docs/runbook.md has a `## <alertname>` section, which GitHub anchors as the lower-cased name.
pub fn assert_runbook_has_section(alertname: &str) {
    let path = repo_root().join("docs/runbook.md");
    let runbook =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(
        runbook
            .lines()
            .any(|l| l.trim_end() == format!("## {alertname}")),
        "docs/runbook.md has no `## {alertname}` section"
    );
}

// ---- the receiver ----------------------------------------------------------------------------

type Received = Arc<Mutex<Vec<Notification>>>;

/// An HTTP endpoint on 127.0.0.1 that records every notification POSTed to it. Payloads that
/// are not Alertmanager's JSON are answered 400 (and recorded as errors), so a broken template
/// or integration shows up in the test instead of passing silently.
pub struct WebhookReceiver {
    url: String,
    received: Received,
    errors: Arc<Mutex<Vec<String>>>,
    server: tokio::task::JoinHandle<()>,
}

impl WebhookReceiver {
    /// Starts the receiver on a free loopback port.
    pub async fn start() -> WebhookReceiver {
        let received: Received = Arc::default();
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let app = Router::new()
            .route("/", post(record))
            .with_state((received.clone(), errors.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the webhook receiver");
        let url = format!("http://{}/", listener.local_addr().expect("local address"));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        WebhookReceiver {
            url,
            received,
            errors,
            server,
        }
    }

    /// The URL to configure as Alertmanager's webhook.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Everything received so far, oldest first.
    pub fn notifications(&self) -> Vec<Notification> {
        self.received.lock().expect("receiver lock").clone()
    }

    /// Bodies that were not valid notifications.
    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().expect("receiver lock").clone()
    }

    /// Waits for a notification containing alert `alertname` with status `firing`/`resolved`.
    /// Panics after `timeout`, listing what did arrive.
    pub async fn wait_for_alert(
        &self,
        alertname: &str,
        status: &str,
        timeout: Duration,
    ) -> Notification {
        self.wait_for(&format!("{alertname} {status}"), timeout, |n| {
            n.alerts_named(alertname, status).next().is_some()
        })
        .await
    }

    /// Waits for the first notification satisfying `predicate`.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        predicate: impl Fn(&Notification) -> bool,
    ) -> Notification {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = self.notifications().into_iter().find(|n| predicate(n)) {
                return found;
            }
            if Instant::now() >= deadline {
                panic!(
                    "no notification with {what} within {timeout:?}; received: {}; invalid bodies: {:?}",
                    self.summary(),
                    self.errors()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// One line per notification: receiver, status and the alerts in it.
    pub fn summary(&self) -> String {
        let lines: Vec<String> = self
            .notifications()
            .iter()
            .map(|n| {
                let alerts: Vec<String> = n
                    .alerts
                    .iter()
                    .map(|a| {
                        format!(
                            "{}:{}",
                            a.labels.get("alertname").cloned().unwrap_or_default(),
                            a.status
                        )
                    })
                    .collect();
                format!("[{} {} {}]", n.receiver, n.status, alerts.join(","))
            })
            .collect();
        if lines.is_empty() {
            "nothing".to_owned()
        } else {
            lines.join(" ")
        }
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn record(
    State((received, errors)): State<(Received, Arc<Mutex<Vec<String>>>)>,
    body: String,
) -> StatusCode {
    match serde_json::from_str::<Notification>(&body) {
        Ok(notification) => {
            received.lock().expect("receiver lock").push(notification);
            StatusCode::OK
        }
        Err(e) => {
            errors
                .lock()
                .expect("receiver lock")
                .push(format!("{e}: {body}"));
            StatusCode::BAD_REQUEST
        }
    }
}

// ---- Alertmanager with the repository's config ------------------------------------------------

/// A stack binary's path as `scripts/stack-env.sh` exports it (`ALERTMANAGER`, `PROMTOOL`, ...),
/// or None when it has not been built.
pub fn stack_binary(var: &str) -> Option<PathBuf> {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source scripts/stack-env.sh >/dev/null 2>&1; printf %s \"${var}\""
        ))
        .current_dir(repo_root())
        .output()
        .ok()?;
    let path = String::from_utf8(out.stdout).ok()?;
    (!path.is_empty()).then(|| PathBuf::from(path))
}

/// Fails the calling test unless the given stack binaries (`ALERTMANAGER`, `PROMETHEUS`, ...
/// as scripts/stack-env.sh names them) are built: a test that cannot run must not pass.
/// (`scripts/test.sh --quick` does not run these tests at all, and says so.)
pub fn require_stack_binaries(names: &[&str]) {
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| stack_binary(n).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "stack binaries not built: {missing:?}; run scripts/build-stack.sh"
    );
}

/// Renders deploy/alertmanager/alertmanager.yml into `out_dir` with
/// deploy/alertmanager/render-config.sh and the given environment; returns the config's path.
/// Panics with the script's one-line error if it refuses.
pub fn render_config(out_dir: &Path, env: &[(&str, &str)]) -> PathBuf {
    let output = Command::new(repo_root().join("deploy/alertmanager/render-config.sh"))
        .arg(out_dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .output()
        .expect("run deploy/alertmanager/render-config.sh");
    assert!(
        output.status.success(),
        "render-config.sh failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    out_dir.join("alertmanager.yml")
}

/// Alertmanager running the repository's config, rendered with the webhook receiver enabled
/// and short grouping intervals (1 s group_wait, 5 s group_interval) so that firing and
/// resolved notifications arrive within seconds of Prometheus sending them.
pub struct Alertmanager {
    pub url: String,
    pub process: Process,
    dir: PathBuf,
}

impl Alertmanager {
    /// Starts it on 127.0.0.1:`port`, delivering to `webhook_url`, with `extra_env` passed to
    /// the renderer (e.g. other INFERMON_ALERT_* settings). Panics if Alertmanager is not built.
    pub fn start(port: u16, webhook_url: &str, extra_env: &[(&str, &str)]) -> Alertmanager {
        let binary = stack_binary("ALERTMANAGER")
            .expect("Alertmanager is not built: run scripts/build-stack.sh alertmanager");
        let dir = std::env::temp_dir().join(format!(
            "infermon-e2e-alertmanager-{}-{port}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).expect("create the Alertmanager dir");
        let mut env = vec![
            ("INFERMON_ALERT_RECEIVERS", "webhook"),
            ("INFERMON_ALERT_WEBHOOK_URL", webhook_url),
            ("INFERMON_ALERT_GROUP_WAIT", "1s"),
            ("INFERMON_ALERT_GROUP_INTERVAL", "5s"),
        ];
        env.extend_from_slice(extra_env);
        let config = render_config(&dir.join("config"), &env);
        let listen = format!("127.0.0.1:{port}");
        let args = [
            format!("--config.file={}", config.display()),
            format!("--storage.path={}", dir.join("data").display()),
            format!("--web.listen-address={listen}"),
            "--cluster.listen-address=".to_owned(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let process = Process::spawn("alertmanager", &binary, &args, &[]);
        let am = Alertmanager {
            url: format!("http://{listen}"),
            process,
            dir,
        };
        am.wait_ready();
        am
    }

    /// Alertmanager on a free port delivering to a new webhook receiver (the test fails if it
    /// is not built, see [`require_stack_binaries`]). The receiver comes second so that it
    /// outlives Alertmanager when the pair is dropped.
    pub async fn start_with_webhook() -> (Alertmanager, WebhookReceiver) {
        require_stack_binaries(&["ALERTMANAGER"]);
        let webhook = WebhookReceiver::start().await;
        let am = Alertmanager::start(free_port(), &webhook.url(), &[]);
        (am, webhook)
    }

    /// Waits until `GET /-/ready` answers 200: Alertmanager's own word that it is ready, rather
    /// than a listening socket. Blocking, so that `start` can be called from any test.
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let address = self.url.trim_start_matches("http://").to_owned();
        let ready = || -> std::io::Result<bool> {
            let mut stream = std::net::TcpStream::connect(&address)?;
            stream.set_read_timeout(Some(Duration::from_secs(2)))?;
            write!(stream, "GET /-/ready HTTP/1.0\r\nHost: {address}\r\n\r\n")?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer)?;
            Ok(answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"))
        };
        while Instant::now() < deadline {
            if ready().unwrap_or(false) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "Alertmanager not ready on {address} after 30 s:\n{}",
            self.process.output()
        );
    }

    /// Posts alerts the way Prometheus does (labels and annotations; without an end time they
    /// stay firing for the config's resolve_timeout, 5 minutes).
    pub async fn post_alerts(
        &self,
        alerts: &[(serde_json::Value, serde_json::Value)],
    ) -> Result<(), String> {
        let body: Vec<serde_json::Value> = alerts
            .iter()
            .map(|(labels, annotations)| {
                serde_json::json!({
                    "labels": labels,
                    "annotations": annotations,
                    "generatorURL": "http://prometheus.invalid/graph",
                })
            })
            .collect();
        let response = reqwest::Client::new()
            .post(format!("{}/api/v2/alerts", self.url))
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("POST /api/v2/alerts: {}", response.status()));
        }
        Ok(())
    }

    /// Alertmanager's view of its alerts (`GET /api/v2/alerts`).
    pub async fn alerts(&self) -> Result<Vec<serde_json::Value>, String> {
        let response = reqwest::get(format!("{}/api/v2/alerts", self.url))
            .await
            .map_err(|e| e.to_string())?;
        response.json().await.map_err(|e| e.to_string())
    }

    /// `GET <path>` of the API, as JSON. Panics on failure.
    pub async fn get(&self, path: &str) -> serde_json::Value {
        let url = format!("{}{path}", self.url);
        let response = reqwest::get(&url)
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        response
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
    }

    /// The alert with this alertname, as the API shows it. Panics when there is none.
    pub async fn alert(&self, alertname: &str) -> serde_json::Value {
        let all = self.get("/api/v2/alerts").await;
        all.as_array()
            .into_iter()
            .flatten()
            .find(|a| a["labels"]["alertname"] == alertname)
            .unwrap_or_else(|| panic!("{alertname} not in {all:#}"))
            .clone()
    }

    /// A silence by its ID, as the API shows it.
    pub async fn silence(&self, id: &str) -> serde_json::Value {
        self.get(&format!("/api/v2/silence/{id}")).await
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        self.process.terminate();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runbook_links_use_github_anchors() {
        assert_eq!(
            runbook_url("InferenceHighErrorRatio"),
            "https://github.com/infermon/infermon/blob/main/docs/runbook.md#inferencehigherrorratio"
        );
    }

    #[tokio::test]
    async fn the_receiver_records_notifications_and_rejects_other_bodies() {
        let webhook = WebhookReceiver::start().await;
        let payload = serde_json::json!({
            "version": "4", "groupKey": "{}:{alertname=\"A\"}", "truncatedAlerts": 0, "status": "firing",
            "receiver": "page", "groupLabels": {"alertname": "A"}, "commonLabels": {"alertname": "A"},
            "commonAnnotations": {}, "externalURL": "http://am",
            "alerts": [{"status": "firing", "labels": {"alertname": "A"}, "annotations": {"summary": "s"},
                        "startsAt": "2026-01-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                        "generatorURL": "http://p", "fingerprint": "f"}]
        });
        let client = reqwest::Client::new();
        let ok = client
            .post(webhook.url())
            .json(&payload)
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
        let bad = client
            .post(webhook.url())
            .body("not json")
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 400);

        let n = webhook
            .wait_for_alert("A", "firing", Duration::from_secs(5))
            .await;
        assert_eq!((n.receiver.as_str(), n.alerts.len()), ("page", 1));
        assert_eq!(webhook.errors().len(), 1);
        assert_eq!(webhook.summary(), "[page firing A:firing]");
    }
}
