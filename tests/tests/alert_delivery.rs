//! Proven alert delivery: the repository's alert rules in a real Prometheus and its Alertmanager
//! config in a real Alertmanager, delivering to a local webhook that stands in for Slack's and
//! PagerDuty's HTTP endpoints.
//!
//! - `alertmanager_routes_inhibits_and_delivers`: alerts posted as Prometheus posts them reach
//!   the webhook through the receiver their route names, and a down service inhibits its
//!   symptoms (seconds).
//! - `error_fault_pages_and_resolves`: the simulator's fault scenario raises the error ratio;
//!   InferenceHighErrorRatio fires in Prometheus, arrives at the webhook with its labels,
//!   annotations and runbook link, and the resolved notification follows once the fault ends
//!   (about 5 minutes: the alert's 5m/2m rate windows and its `for: 1m` are the real ones).
//!
//! Both need the stack binaries (scripts/build-stack.sh) and fail without them; the second
//! also needs the `infermon` binary
//! (`cargo build -p infermon-cli`, or INFERMON_BIN).

use std::time::Duration;

use infermon::contract::{attr, metric, metric_spec};
use infermon_e2e::alerting::{require_stack_binaries, runbook_url, Alertmanager, WebhookReceiver};
use infermon_e2e::http_api::{eventually, Prometheus};
use infermon_e2e::stack::{free_port, infermon_bin, Process, Stack};
use serde_json::json;

fn alert(
    name: &str,
    severity: &str,
    component: &str,
    job: &str,
) -> (serde_json::Value, serde_json::Value) {
    (
        json!({"alertname": name, "severity": severity, "component": component, "job": job}),
        json!({"summary": format!("{name} on {job}"), "description": "posted by the test",
               "runbook_url": runbook_url(name)}),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn alertmanager_routes_inhibits_and_delivers() {
    let (am, webhook) = Alertmanager::start_with_webhook().await;

    am.post_alerts(&[
        // Service "down-svc": its metrics endpoint is down, which explains its error ratio.
        alert("InferenceServiceDown", "critical", "inference", "down-svc"),
        alert(
            "InferenceHighErrorRatio",
            "critical",
            "inference",
            "down-svc",
        ),
        // Service "other-svc" fails on its own: not inhibited.
        alert(
            "InferenceHighErrorRatio",
            "critical",
            "inference",
            "other-svc",
        ),
        alert(
            "InferenceKvCacheNearFull",
            "warning",
            "inference",
            "other-svc",
        ),
        alert(
            "TelemetryCollectorQueueNearFull",
            "warning",
            "pipeline",
            "otelcol",
        ),
        alert("GpuXidErrors", "warning", "gpu", "gpu-agent"),
    ])
    .await
    .expect("post alerts");

    let timeout = Duration::from_secs(60);
    let page = webhook
        .wait_for("the page for other-svc", timeout, |n| {
            n.receiver == "page"
                && n.common_labels.get("job").map(String::as_str) == Some("other-svc")
        })
        .await;
    assert_eq!(page.status, "firing");
    assert_eq!(page.common_labels["alertname"], "InferenceHighErrorRatio");
    page.assert_alert_documented("InferenceHighErrorRatio");
    for (alertname, receiver) in [
        ("InferenceServiceDown", "page"),
        ("InferenceKvCacheNearFull", "chat"),
        ("TelemetryCollectorQueueNearFull", "pipeline"),
        ("GpuXidErrors", "hardware"),
    ] {
        let n = webhook.wait_for_alert(alertname, "firing", timeout).await;
        assert_eq!(
            n.receiver, receiver,
            "{alertname} went to the wrong receiver"
        );
    }

    // The inhibited alert is suppressed in Alertmanager and never delivered.
    let alerts = am.alerts().await.expect("GET /api/v2/alerts");
    let inhibited = alerts
        .iter()
        .find(|a| {
            a["labels"]["alertname"] == "InferenceHighErrorRatio"
                && a["labels"]["job"] == "down-svc"
        })
        .expect("the inhibited alert is still held");
    assert_eq!(inhibited["status"]["state"], "suppressed", "{inhibited:#}");
    assert!(
        !inhibited["status"]["inhibitedBy"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{inhibited:#}"
    );
    let delivered_inhibited = webhook.notifications().iter().any(|n| {
        n.alerts.iter().any(|a| {
            a.labels["alertname"] == "InferenceHighErrorRatio" && a.labels["job"] == "down-svc"
        })
    });
    assert!(
        !delivered_inhibited,
        "an inhibited alert was delivered: {}",
        webhook.summary()
    );
    assert!(webhook.errors().is_empty(), "{:?}", webhook.errors());
}

/// The fault: 15% of requests fail with server_error from 30 s to 180 s of simulated time
/// (= wall time at time scale 1), after a clean start.
const SCENARIO: &str = r#"
[[fault]]
from_s = 30
to_s = 180
errors = [{ type = "server_error", rate = 0.15 }]
"#;
const SERVICE: &str = "alert-e2e-engine";
const MODEL: &str = "alert-e2e-model";

#[tokio::test(flavor = "multi_thread")]
async fn error_fault_pages_and_resolves() {
    require_stack_binaries(&["PROMETHEUS", "ALERTMANAGER", "OTELCOL", "JAEGER"]);
    let webhook = WebhookReceiver::start().await;
    // Prometheus with the repository's prometheus.yml and rules; its Alertmanager target is the
    // port below, where the rendered config runs instead of the stack's default one.
    let stack = Stack::start(&["prometheus", "jaeger", "otelcol"], &[]);
    let am_port: u16 = stack
        .var("INFERMON_ALERTMANAGER_PORT")
        .parse()
        .expect("port");
    let _am = Alertmanager::start(am_port, &webhook.url(), &[]);
    let prometheus = Prometheus::new(stack.prometheus_url());

    let dir = std::env::temp_dir().join(format!(
        "infermon-e2e-alert-delivery-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let scenario = dir.join("fault.toml");
    std::fs::write(&scenario, SCENARIO).expect("write the scenario");
    let bin = infermon_bin();
    let sim_port = free_port().to_string();
    let sim_listen = format!("127.0.0.1:{sim_port}");
    let scenario_arg = scenario.display().to_string();
    let _sim = Process::sim(
        "sim",
        &bin,
        &sim_listen,
        "1",
        &["--model", MODEL, "--scenario", &scenario_arg],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", stack.otlp_endpoint()),
            ("OTEL_SERVICE_NAME", SERVICE),
            ("OTEL_METRIC_EXPORT_INTERVAL", "2000"),
        ],
    );
    let sim_url = format!("http://{sim_listen}");
    let _load = Process::spawn(
        "load",
        &bin,
        &[
            "load",
            "--url",
            &sim_url,
            "--model",
            MODEL,
            "--rate",
            "5",
            "--duration",
            "15m",
            "--quiet",
            "--no-otlp",
        ],
        &[],
    );

    // 1. Prometheus sees the error ratio and fires the alert (pending for its `for: 1m` first).
    let requests = metric_spec(metric::REQUESTS)
        .expect("in the contract")
        .prometheus;
    let ratio = format!(r#"job_model:llm_requests_errors:ratio_rate5m{{job="{SERVICE}"}}"#);
    eventually(
        "requests from the simulator in Prometheus",
        Duration::from_secs(120),
        || async {
            let n = prometheus
                .query(&format!(r#"{requests}{{job="{SERVICE}"}}"#))
                .await?;
            Ok((!n.is_empty()).then_some(()))
        },
    )
    .await;
    let firing_query = format!(
        r#"ALERTS{{alertname="InferenceHighErrorRatio", alertstate="firing", job="{SERVICE}"}}"#
    );
    eventually(
        "InferenceHighErrorRatio firing in Prometheus",
        Duration::from_secs(300),
        || async {
            let firing = prometheus.query(&firing_query).await?;
            Ok((!firing.is_empty()).then_some(()))
        },
    )
    .await;
    let observed = prometheus.query_sum(&ratio).await.expect("error ratio");
    assert!(
        observed > 0.05,
        "alert firing with an error ratio of {observed}"
    );

    // 2. Alertmanager delivers it: labels, annotations with the value, runbook link.
    let fired = webhook
        .wait_for_alert(
            "InferenceHighErrorRatio",
            "firing",
            Duration::from_secs(120),
        )
        .await;
    assert_eq!(fired.receiver, "page", "a critical inference alert pages");
    fired.assert_alert_documented("InferenceHighErrorRatio");
    let alert = fired
        .alerts_named("InferenceHighErrorRatio", "firing")
        .next()
        .unwrap();
    assert_eq!(alert.labels["job"], SERVICE);
    assert_eq!(
        alert.labels[&attr::GEN_AI_REQUEST_MODEL.replace('.', "_")],
        MODEL
    );
    assert_eq!(alert.labels["severity"], "critical");
    assert_eq!(alert.labels["component"], "inference");
    let summary = &alert.annotations["summary"];
    assert!(
        summary.ends_with(&format!("of requests to {SERVICE} / {MODEL} are failing"))
            && summary.contains('%'),
        "summary states the ratio: {summary}"
    );
    assert!(
        alert.annotations["description"].contains("(threshold 5%)"),
        "{alert:#?}"
    );
    assert!(
        alert.generator_url.contains("/graph?g0.expr="),
        "links back to Prometheus: {alert:#?}"
    );

    // 3. After the fault ends (180 s), the short window clears and the resolution is delivered.
    let resolved = webhook
        .wait_for_alert(
            "InferenceHighErrorRatio",
            "resolved",
            Duration::from_secs(360),
        )
        .await;
    let alert = resolved
        .alerts_named("InferenceHighErrorRatio", "resolved")
        .next()
        .unwrap();
    assert_eq!(alert.labels["job"], SERVICE);
    assert_ne!(
        alert.ends_at, "0001-01-01T00:00:00Z",
        "a resolved alert has an end time"
    );
    assert!(webhook.errors().is_empty(), "{:?}", webhook.errors());
    eprintln!("delivered: {}", webhook.summary());
    let _ = std::fs::remove_dir_all(&dir);
}
