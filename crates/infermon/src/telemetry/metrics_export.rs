//! The metric exporter: OTLP/gRPC as opentelemetry-otlp's, plus the exemplars the SDK does not
//! record.
//!
//! opentelemetry-otlp converts the SDK's `ResourceMetrics` into an OTLP request and sends it; the
//! SDK's data points cannot be given exemplars (their field is crate-private and nothing fills
//! it). So this exporter does the conversion itself with `opentelemetry-proto` (the same
//! conversion opentelemetry-otlp uses), attaches the exemplars that
//! [`infermon_instrument::exemplars`] kept for each histogram series since the last export, and
//! sends the request over tonic with opentelemetry-otlp's behaviour: the configured endpoint,
//! headers and per-attempt timeout, and up to three retries of a retryable failure, 100 ms
//! doubling.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, UNIX_EPOCH};

use infermon_instrument::exemplars::{self, Exemplar, SeriesKey};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use opentelemetry_proto::tonic::metrics::v1::{exemplar, metric, Exemplar as OtlpExemplar};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::Temporality;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::Code;

/// Retries after the first attempt, as opentelemetry-otlp's default retry policy.
const RETRIES: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// OTLP/gRPC metric exporter with exemplars; see the [module docs](self).
#[derive(Debug)]
pub(crate) struct OtlpMetricExporter {
    /// `None` once shut down.
    client: Mutex<Option<MetricsServiceClient<Channel>>>,
    metadata: MetadataMap,
    /// Backoff sleeps run here: the SDK's reader thread that calls `export` has no runtime.
    runtime: tokio::runtime::Handle,
}

impl OtlpMetricExporter {
    /// An exporter to `endpoint` (`http://host:port`) sending `metadata` with every request;
    /// each attempt gives up after `timeout`. Needs a Tokio runtime (the channel runs on it);
    /// connects lazily.
    pub(crate) fn new(
        endpoint: &str,
        metadata: MetadataMap,
        timeout: Duration,
    ) -> Result<Self, http::uri::InvalidUri> {
        let channel = Channel::from_shared(endpoint.to_owned())?
            .timeout(timeout)
            .connect_timeout(timeout)
            .connect_lazy();
        Ok(Self {
            client: Mutex::new(Some(MetricsServiceClient::new(channel))),
            metadata,
            runtime: tokio::runtime::Handle::current(),
        })
    }

    async fn send(&self, request: ExportMetricsServiceRequest) -> Result<(), tonic::Status> {
        let client = self
            .client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| tonic::Status::failed_precondition("metric exporter is shut down"))?;
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 0;
        loop {
            let mut call = tonic::Request::new(request.clone());
            *call.metadata_mut() = self.metadata.clone();
            match client.clone().export(call).await {
                Ok(response) => {
                    if let Some(partial) = response.into_inner().partial_success {
                        if partial.rejected_data_points > 0 {
                            tracing::warn!(
                                rejected = partial.rejected_data_points,
                                reason = %partial.error_message,
                                "the collector rejected some metric points"
                            );
                        }
                    }
                    return Ok(());
                }
                Err(status) if attempt < RETRIES && retryable(status.code()) => {
                    attempt += 1;
                    // The timer is made and awaited on the runtime; awaiting its task works from any
                    // executor.
                    let _ = self
                        .runtime
                        .spawn(async move { tokio::time::sleep(backoff).await })
                        .await;
                    backoff *= 2;
                }
                Err(status) => return Err(status),
            }
        }
    }
}

/// OTLP's retryable gRPC codes (the OTLP specification's list).
fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::OutOfRange
            | Code::Unavailable
            | Code::DataLoss
            | Code::ResourceExhausted
    )
}

impl PushMetricExporter for OtlpMetricExporter {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let mut request = ExportMetricsServiceRequest::from(metrics);
        attach_exemplars(&mut request, exemplars::registry().drain());
        self.send(request).await.map_err(|status| {
            // One line, like the trace exporter's: the code and tonic's message.
            OTelSdkError::InternalFailure(format!(
                "export failed with gRPC code {:?}: {}",
                status.code(),
                status.message()
            ))
        })
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        self.client.lock().unwrap_or_else(|e| e.into_inner()).take();
        Ok(())
    }

    fn temporality(&self) -> Temporality {
        Temporality::Cumulative
    }
}

/// Adds each histogram data point's exemplars (matched by metric name and attributes). An
/// exemplar whose series is not in this request (not collected this time) is dropped.
pub(crate) fn attach_exemplars(
    request: &mut ExportMetricsServiceRequest,
    mut exemplars: HashMap<SeriesKey, Vec<Exemplar>>,
) {
    if exemplars.is_empty() {
        return;
    }
    let metrics = request
        .resource_metrics
        .iter_mut()
        .flat_map(|r| r.scope_metrics.iter_mut())
        .flat_map(|s| s.metrics.iter_mut());
    for m in metrics {
        let Some(metric::Data::Histogram(histogram)) = &mut m.data else {
            continue;
        };
        for point in &mut histogram.data_points {
            let key = exemplars::series_key(
                &m.name,
                point
                    .attributes
                    .iter()
                    .map(|kv| (kv.key.as_str(), any_value_string(kv.value.as_ref()))),
            );
            if let Some(found) = exemplars.remove(&key) {
                point.exemplars.extend(found.iter().map(otlp_exemplar));
            }
        }
    }
}

/// An attribute value in the string form `opentelemetry::Value::as_str` gives it.
fn any_value_string(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

fn otlp_exemplar(e: &Exemplar) -> OtlpExemplar {
    OtlpExemplar {
        filtered_attributes: Vec::new(),
        time_unix_nano: e
            .time
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64,
        span_id: e.ids.span_id.to_bytes().to_vec(),
        trace_id: e.ids.trace_id.to_bytes().to_vec(),
        value: Some(exemplar::Value::AsDouble(e.value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use infermon_instrument::exemplars::TraceIds;
    use opentelemetry::trace::{SpanId, TraceId};
    use opentelemetry_proto::tonic::common::v1::KeyValue;
    use opentelemetry_proto::tonic::metrics::v1::{
        Histogram, HistogramDataPoint, Metric, ResourceMetrics, ScopeMetrics,
    };

    fn string_attr(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.into())),
            }),
            ..Default::default()
        }
    }

    fn histogram(name: &str, points: Vec<Vec<KeyValue>>) -> Metric {
        Metric {
            name: name.into(),
            data: Some(metric::Data::Histogram(Histogram {
                data_points: points
                    .into_iter()
                    .map(|attributes| HistogramDataPoint {
                        attributes,
                        ..Default::default()
                    })
                    .collect(),
                aggregation_temporality: 2,
            })),
            ..Default::default()
        }
    }

    #[test]
    fn exemplars_go_to_the_data_point_of_their_series() {
        let mut request = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![
                        histogram(
                            "ttft",
                            vec![
                                vec![string_attr("model", "a"), string_attr("op", "chat")],
                                vec![string_attr("model", "b"), string_attr("op", "chat")],
                            ],
                        ),
                        histogram("other", vec![vec![string_attr("model", "a")]]),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let ids = TraceIds {
            trace_id: TraceId::from_bytes([7; 16]),
            span_id: SpanId::from_bytes([8; 8]),
        };
        let exemplar = Exemplar {
            value: 0.25,
            time: UNIX_EPOCH + Duration::from_secs(1),
            ids,
        };
        let key = exemplars::series_key(
            "ttft",
            [("op", "chat".to_owned()), ("model", "b".to_owned())],
        );
        attach_exemplars(&mut request, HashMap::from([(key, vec![exemplar])]));

        let metrics = &request.resource_metrics[0].scope_metrics[0].metrics;
        let points = |i: usize| match &metrics[i].data {
            Some(metric::Data::Histogram(h)) => h.data_points.clone(),
            _ => unreachable!(),
        };
        assert!(points(0)[0].exemplars.is_empty());
        let got = &points(0)[1].exemplars;
        assert_eq!(got.len(), 1, "model b's point gets the exemplar");
        assert_eq!(got[0].trace_id, vec![7; 16]);
        assert_eq!(got[0].span_id, vec![8; 8]);
        assert_eq!(got[0].time_unix_nano, 1_000_000_000);
        assert_eq!(got[0].value, Some(exemplar::Value::AsDouble(0.25)));
        assert!(
            points(1)[0].exemplars.is_empty(),
            "another metric's point gets none"
        );
    }
}
