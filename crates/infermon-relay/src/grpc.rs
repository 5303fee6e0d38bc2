//! The OTLP/gRPC receiver: vLLM's default protocol.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::forward::Refused;
use crate::relay::Intake;

struct Receiver {
    intake: Arc<Intake>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        match self.intake.accept(request.into_inner()) {
            Ok(()) => Ok(Response::new(ExportTraceServiceResponse::default())),
            // OTLP/gRPC throttling: RESOURCE_EXHAUSTED is retryable only with RetryInfo.
            Err(Refused::QueueFull) => Err(Status::with_error_details(
                Code::ResourceExhausted,
                "relay queue to the collector is full",
                ErrorDetails::with_retry_info(Some(self.intake.retry_after)),
            )),
            Err(Refused::ShuttingDown) => Err(Status::unavailable("relay is shutting down")),
        }
    }
}

/// Serves until `stop` turns true. Messages over `max_message_bytes` get tonic's
/// `OUT_OF_RANGE`; undecodable ones `INTERNAL` (tonic's decode error), as for any OTLP
/// receiver built on tonic.
///
/// Limits, as the HTTP receiver's (`options`): at most `max_connections` connections (more are
/// closed at once, which an OTLP exporter sees as `CANCELLED` or `UNAVAILABLE`, both
/// retryable in OTLP), a silent
/// connection is closed after the idle timeout's worth of unanswered HTTP/2 keepalive pings, a
/// request that takes longer than the header timeout plus the drain timeout is cancelled, and
/// on shutdown open requests get the drain timeout to finish.
pub(crate) async fn serve(
    listener: TcpListener,
    intake: Arc<Intake>,
    max_message_bytes: usize,
    options: infermon_http::ServeOptions,
    mut stop: watch::Receiver<bool>,
) {
    let service =
        TraceServiceServer::new(Receiver { intake }).max_decoding_message_size(max_message_bytes);
    let incoming = capped::incoming(listener, options.max_connections);
    let (drain_tx, mut drain_rx) = watch::channel(false);
    let server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .timeout(options.header_timeout + options.drain_timeout)
        .http2_keepalive_interval(Some(options.idle_timeout))
        .http2_keepalive_timeout(Some(options.idle_timeout))
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = stop.wait_for(|stop| *stop).await;
            let _ = drain_tx.send(true);
        });
    tokio::pin!(server);
    // tonic's graceful shutdown waits for every connection without a bound: give it the
    // drain timeout once shutdown has begun.
    let result = tokio::select! {
        result = &mut server => result,
        () = async {
            let _ = drain_rx.wait_for(|draining| *draining).await;
            tokio::time::sleep(options.drain_timeout).await;
        } => {
            tracing::warn!("OTLP/gRPC receiver: drain timeout reached, closing open connections");
            Ok(())
        }
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "OTLP/gRPC receiver failed");
    }
}

/// A connection cap for tonic, which has none of its own.
mod capped {
    use std::io;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll};

    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_stream::Stream;
    use tonic::transport::server::{Connected, TcpConnectInfo};

    /// Accepted connections while fewer than `max` are open; the others are closed at once
    /// (counted, and logged once per streak).
    pub(super) fn incoming(
        listener: TcpListener,
        max: usize,
    ) -> impl Stream<Item = io::Result<Counted>> {
        let open = Arc::new(AtomicUsize::new(0));
        // The accept loop runs as its own task and ends when tonic drops the stream.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            let mut refusing = false;
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    () = tx.closed() => return,
                };
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: tonic logs and retries.
                        if tx.send(Err(e)).await.is_err() {
                            return;
                        }
                        continue;
                    }
                };
                if open.load(Ordering::Relaxed) >= max {
                    if !refusing {
                        tracing::warn!(
                            max_connections = max,
                            "OTLP/gRPC receiver at its connection cap: closing new connections"
                        );
                    }
                    refusing = true;
                    drop(stream);
                    continue;
                }
                refusing = false;
                open.fetch_add(1, Ordering::Relaxed);
                let counted = Counted {
                    stream,
                    open: Arc::clone(&open),
                };
                if tx.send(Ok(counted)).await.is_err() {
                    return;
                }
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }

    /// A connection that counts itself open until dropped.
    pub(super) struct Counted {
        stream: TcpStream,
        open: Arc<AtomicUsize>,
    }

    impl Drop for Counted {
        fn drop(&mut self) {
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
    }

    impl Connected for Counted {
        type ConnectInfo = TcpConnectInfo;

        fn connect_info(&self) -> TcpConnectInfo {
            self.stream.connect_info()
        }
    }

    impl AsyncRead for Counted {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Counted {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
        }

        fn is_write_vectored(&self) -> bool {
            self.stream.is_write_vectored()
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().stream).poll_flush(cx)
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
        }
    }
}
