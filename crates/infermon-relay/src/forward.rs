//! The way to the collector: a queue bounded in spans, export workers, retry with backoff.
//!
//! Retries follow the OTLP/gRPC specification: `CANCELLED`, `DEADLINE_EXCEEDED`, `ABORTED`,
//! `OUT_OF_RANGE`, `UNAVAILABLE` and `DATA_LOSS` are retryable, `RESOURCE_EXHAUSTED` only when
//! the server sends `RetryInfo` (whose delay is then honoured); anything else is a permanent
//! refusal and the batch is dropped (counted).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tokio::sync::{mpsc, Mutex, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::Code;
use tonic_types::StatusExt;

use crate::config::RetryPolicy;
use crate::stats::{Dropped, RelayStats};

/// Why a batch was not accepted into the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The queue holds as many spans as it may; retry later.
    QueueFull,
    /// The relay is stopping.
    ShuttingDown,
}

struct Queued {
    request: ExportTraceServiceRequest,
    spans: u64,
    _permit: OwnedSemaphorePermit,
}

/// The queue's sending side plus the workers that drain it.
pub struct Forwarder {
    tx: mpsc::UnboundedSender<Queued>,
    room: Arc<Semaphore>,
    capacity: usize,
    closing: AtomicBool,
    stats: RelayStats,
    workers: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

/// How the workers export.
#[derive(Clone)]
pub struct ExportSettings {
    pub timeout: Duration,
    pub retry: RetryPolicy,
    pub max_message_bytes: usize,
}

impl Forwarder {
    /// Starts `workers` export tasks towards `channel` (which may connect lazily).
    pub fn start(
        channel: Channel,
        capacity_spans: usize,
        workers: usize,
        settings: ExportSettings,
        stats: RelayStats,
    ) -> Arc<Forwarder> {
        let (tx, rx) = mpsc::unbounded_channel();
        let rx = Arc::new(Mutex::new(rx));
        let client = TraceServiceClient::new(channel)
            .max_decoding_message_size(settings.max_message_bytes)
            .max_encoding_message_size(usize::MAX);
        let handles = (0..workers.max(1))
            .map(|_| {
                tokio::spawn(work(
                    rx.clone(),
                    client.clone(),
                    settings.clone(),
                    stats.clone(),
                ))
            })
            .collect();
        Arc::new(Forwarder {
            tx,
            room: Arc::new(Semaphore::new(capacity_spans)),
            capacity: capacity_spans,
            closing: AtomicBool::new(false),
            stats,
            workers: std::sync::Mutex::new(handles),
        })
    }

    /// Queues a batch of `spans` spans, or refuses it without waiting.
    pub fn enqueue(&self, request: ExportTraceServiceRequest, spans: u64) -> Result<(), Refused> {
        if self.closing.load(Ordering::Acquire) {
            return Err(Refused::ShuttingDown);
        }
        // A batch larger than the whole queue takes all of it rather than never fitting.
        let needed = spans.clamp(1, self.capacity.max(1) as u64) as u32;
        let Ok(permit) = self.room.clone().try_acquire_many_owned(needed) else {
            self.stats.record_dropped(Dropped::QueueFull, spans);
            return Err(Refused::QueueFull);
        };
        self.stats.queued_add(spans);
        self.tx
            .send(Queued {
                request,
                spans,
                _permit: permit,
            })
            .map_err(|_| Refused::ShuttingDown)
    }

    /// Stops accepting, gives the queue up to `grace` to drain, then stops the workers and
    /// counts what was still queued (or in flight) as dropped.
    pub async fn shutdown(&self, grace: Duration) {
        self.closing.store(true, Ordering::Release);
        let deadline = Instant::now() + grace;
        while self.room.available_permits() < self.capacity && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let handles = std::mem::take(&mut *self.workers.lock().expect("workers lock"));
        for handle in handles {
            handle.abort();
            let _ = handle.await;
        }
        let left = self.stats.snapshot().queued;
        if left > 0 {
            self.stats.record_dropped(Dropped::Shutdown, left);
            self.stats.queued_sub(left);
        }
    }
}

async fn work(
    rx: Arc<Mutex<mpsc::UnboundedReceiver<Queued>>>,
    mut client: TraceServiceClient<Channel>,
    settings: ExportSettings,
    stats: RelayStats,
) {
    loop {
        let Some(batch) = rx.lock().await.recv().await else {
            return;
        };
        let outcome = export_with_retry(&mut client, &batch.request, &settings, &stats).await;
        if let Err(why) = outcome {
            stats.record_dropped(why, batch.spans);
        }
        stats.queued_sub(batch.spans);
    }
}

async fn export_with_retry(
    client: &mut TraceServiceClient<Channel>,
    request: &ExportTraceServiceRequest,
    settings: &ExportSettings,
    stats: &RelayStats,
) -> Result<(), Dropped> {
    let first = Instant::now();
    let mut attempt = 0;
    loop {
        let mut call = tonic::Request::new(request.clone());
        call.set_timeout(settings.timeout);
        let status = match client.export(call).await {
            Ok(_) => return Ok(()),
            Err(status) => status,
        };
        stats.record_export_failure();
        let Some(server_delay) = retry_delay(&status) else {
            tracing::warn!(code = ?status.code(), message = status.message(), "collector refused a batch; dropped");
            return Err(Dropped::UpstreamRejected);
        };
        let wait = server_delay.unwrap_or_else(|| settings.retry.backoff(attempt));
        if first.elapsed() + wait > settings.retry.max_elapsed {
            tracing::warn!(code = ?status.code(), message = status.message(), "collector kept failing; batch dropped");
            return Err(Dropped::ExportFailed);
        }
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

/// `None`: not retryable. `Some(delay)`: retryable, with the server's delay if it gave one.
fn retry_delay(status: &tonic::Status) -> Option<Option<Duration>> {
    let server_delay = status.get_details_retry_info().and_then(|r| r.retry_delay);
    match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => Some(server_delay),
        Code::ResourceExhausted => server_delay.map(Some),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::ErrorDetails;

    #[test]
    fn retryable_codes_follow_the_otlp_specification() {
        assert_eq!(retry_delay(&tonic::Status::unavailable("x")), Some(None));
        assert_eq!(
            retry_delay(&tonic::Status::deadline_exceeded("x")),
            Some(None)
        );
        assert_eq!(retry_delay(&tonic::Status::invalid_argument("x")), None);
        assert_eq!(retry_delay(&tonic::Status::resource_exhausted("x")), None);
        let with_info = tonic::Status::with_error_details(
            Code::ResourceExhausted,
            "slow down",
            ErrorDetails::with_retry_info(Some(Duration::from_millis(250))),
        );
        assert_eq!(
            retry_delay(&with_info),
            Some(Some(Duration::from_millis(250)))
        );
    }
}
