//! Starting and stopping the relay: both receivers, the shared intake, the forwarder.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::metrics::Meter;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

use crate::config::{ModelNames, RelayConfig};
use crate::expand::expand_request;
use crate::forward::{ExportSettings, Forwarder, Refused};
use crate::latency::LatencyMetrics;
use crate::stats::RelayStats;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("invalid upstream endpoint `{endpoint}` (expected e.g. http://collector:4317)")]
    Upstream {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("cannot listen on {addr} for OTLP/{protocol}")]
    Listen {
        addr: SocketAddr,
        protocol: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// What both receivers do with a decoded request: expand, count, queue.
pub(crate) struct Intake {
    forwarder: Arc<Forwarder>,
    models: ModelNames,
    default_operation: String,
    stats: RelayStats,
    latency: LatencyMetrics,
    pub(crate) retry_after: Duration,
}

impl Intake {
    pub(crate) fn accept(&self, mut request: ExportTraceServiceRequest) -> Result<(), Refused> {
        let report = expand_request(&mut request, &self.models, &self.default_operation);
        self.stats.record_expansion(&report);
        let spans: u64 = request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len() as u64)
            .sum();
        if spans == 0 {
            return Ok(());
        }
        self.forwarder.enqueue(request, spans)?;
        // Only once accepted: a refused batch is sent again and would be measured twice.
        self.latency.record(&report.latencies);
        Ok(())
    }
}

pub struct Relay;

impl Relay {
    /// Binds both receivers and starts forwarding. The relay's counters and the expanded
    /// requests' latency histograms are registered on `meter`.
    pub async fn start(config: RelayConfig, meter: &Meter) -> Result<RelayHandle, RelayError> {
        let channel = upstream_channel(&config.upstream)?;
        let stats = RelayStats::default();
        stats.register(meter);
        let forwarder = Forwarder::start(
            channel,
            config.queue_spans,
            config.export_workers,
            ExportSettings {
                timeout: config.export_timeout,
                retry: config.retry,
                max_message_bytes: config.max_message_bytes,
            },
            stats.clone(),
        );
        let intake = Arc::new(Intake {
            forwarder: forwarder.clone(),
            models: config.models.clone(),
            default_operation: config.default_operation.clone(),
            stats: stats.clone(),
            latency: LatencyMetrics::new(meter),
            retry_after: config.retry_after,
        });
        let grpc = bind(config.grpc_listen, "gRPC").await?;
        let http = bind(config.http_listen, "HTTP").await?;
        let grpc_addr = grpc.local_addr().expect("bound listener has an address");
        let http_addr = http.local_addr().expect("bound listener has an address");
        let (stop, stopped) = watch::channel(false);
        let servers = vec![
            tokio::spawn(crate::grpc::serve(
                grpc,
                intake.clone(),
                config.max_message_bytes,
                config.serve.clone(),
                stopped.clone(),
            )),
            tokio::spawn(crate::http::serve(
                http,
                intake,
                config.max_message_bytes,
                config.serve.clone(),
                stopped,
            )),
        ];
        tracing::info!(%grpc_addr, %http_addr, upstream = %config.upstream, "relay listening");
        Ok(RelayHandle {
            grpc_addr,
            http_addr,
            stats,
            forwarder,
            stop,
            servers,
        })
    }
}

fn upstream_channel(endpoint: &str) -> Result<Channel, RelayError> {
    let error = |source| RelayError::Upstream {
        endpoint: endpoint.to_owned(),
        source,
    };
    Ok(Endpoint::from_shared(endpoint.to_owned())
        .map_err(error)?
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy())
}

async fn bind(addr: SocketAddr, protocol: &'static str) -> Result<TcpListener, RelayError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| RelayError::Listen {
            addr,
            protocol,
            source,
        })
}

/// A running relay.
pub struct RelayHandle {
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    stats: RelayStats,
    forwarder: Arc<Forwarder>,
    stop: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
}

impl RelayHandle {
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn stats(&self) -> &RelayStats {
        &self.stats
    }

    /// Stops both receivers, then gives queued spans up to `grace` to reach the collector.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(true);
        for server in self.servers {
            let _ = server.await;
        }
        self.forwarder.shutdown(grace).await;
    }
}
