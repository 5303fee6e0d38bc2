//! Bad telemetry configuration fails `init` with an error that says what to fix, before
//! anything global is installed (so each case can run in the same process).

use infermon::telemetry::{self, TelemetryConfig, TelemetryError};

fn config() -> TelemetryConfig {
    TelemetryConfig::new("init-errors-test").with_fmt_layer(false)
}

#[test]
fn init_outside_a_tokio_runtime_says_so() {
    let err = telemetry::init(config().with_endpoint("http://127.0.0.1:4317")).unwrap_err();
    assert!(matches!(err, TelemetryError::NoRuntime), "{err:?}");
    assert!(err.to_string().contains("Tokio runtime"), "{err}");
}

#[tokio::test]
async fn malformed_endpoint_names_the_variable_to_fix() {
    let err = telemetry::init(config().with_endpoint("not a url")).unwrap_err();
    assert!(
        matches!(&err, TelemetryError::Exporter { endpoint, .. } if endpoint == "not a url"),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("OTEL_EXPORTER_OTLP_ENDPOINT"),
        "{err}"
    );
    // The exporter's own reason is the error's source, not flattened into the message.
    assert!(std::error::Error::source(&err).is_some(), "{err:?}");
}

#[tokio::test]
async fn invalid_header_is_rejected_with_its_key() {
    let err = telemetry::init(
        config()
            .with_endpoint("http://127.0.0.1:4317")
            .with_header("bad key", "v"),
    )
    .unwrap_err();
    assert!(
        matches!(&err, TelemetryError::Header { key } if key == "bad key"),
        "{err:?}"
    );
}

#[tokio::test]
async fn invalid_log_filter_shows_the_expected_syntax() {
    let err = telemetry::init(config().with_log_filter("info,[[")).unwrap_err();
    assert!(matches!(err, TelemetryError::LogFilter { .. }), "{err:?}");
    assert!(err.to_string().contains("RUST_LOG"), "{err}");
    assert!(std::error::Error::source(&err).is_some(), "{err:?}");
}
