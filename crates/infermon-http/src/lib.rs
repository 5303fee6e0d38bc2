//! infermon-http: the HTTP/1.1 server in front of an axum router — what `axum::serve` does,
//! plus what a server facing real clients needs and `axum::serve` lacks. The simulator and the
//! gateway both serve through it (one implementation, tested once).
//!
//! - `TCP_NODELAY` on every accepted socket: without it Nagle's algorithm holds a streamed token
//!   back until the previous segment is acknowledged (up to the peer's ~40 ms delayed ACK), so a
//!   client on a reused connection sees bunched tokens and a late first one.
//! - A bounded request head ([`MAX_HEADER_BYTES`], [`MAX_HEADERS`]: past either, `431`).
//! - A header-read timeout (a request's headers must arrive complete within it) and a
//!   keep-alive idle timeout (a connection with no request in flight is closed after it; vLLM's
//!   uvicorn closes after `VLLM_HTTP_TIMEOUT_KEEP_ALIVE` = 5 s, vllm/envs.py, vLLM 0.33.0).
//! - A connection cap: past it a new connection gets a one-shot `503` with an OpenAI-style JSON
//!   error and is closed, and accept errors (such as running out of file descriptors) are
//!   logged once per streak instead of once per retry.
//! - Graceful shutdown with a bounded drain: stop accepting, let open responses finish for up to
//!   `drain_timeout`, then ask the service to end them ([`Drain::drain_timed_out`]: the
//!   simulator stops its engine, so each open stream ends with an error event and `[DONE]`),
//!   give them a moment to write that, and return.
//!
//! ```text
//! serve(router, listener, ServeOptions { .. }, drain: impl Drain, shutdown: impl Future)
//! ReceivedAt   request extension: when the request's headers had been read
//! error        ApiError: OpenAI-style JSON errors
//! sse          SseDecoder: server-sent events as OpenAI's clients read them
//! ```

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

pub mod error;
pub mod sse;

pub use error::ApiError;

/// When a request's headers had been read: its arrival, for latencies as a client measures
/// them (reading and parsing the body is part of the time to first token). Every request
/// served by [`serve`] carries it as an extension.
#[derive(Debug, Clone, Copy)]
pub struct ReceivedAt(pub Instant);

/// What the server asks of the service it serves during shutdown.
pub trait Drain: Send + Sync + 'static {
    /// Work in flight, for the shutdown log lines (e.g. `running=3 waiting=0`).
    fn in_flight(&self) -> String {
        String::new()
    }

    /// The drain timeout passed with responses still open: make them end now (e.g. stop the
    /// engine so streams end with an error event). The server then waits a little for them to
    /// write their last bytes and closes what is left.
    fn drain_timed_out(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// A service with nothing to end on its own: open responses are closed after the drain.
impl Drain for () {}

/// Connection handling and shutdown settings of [`serve`].
#[derive(Debug, Clone, PartialEq)]
pub struct ServeOptions {
    /// A request's headers must arrive complete within this time of the connection opening or
    /// finishing its previous response.
    pub header_timeout: Duration,
    /// A connection with no request in flight and nothing received for this long is closed.
    pub idle_timeout: Duration,
    /// Most open connections; more are answered `503` and closed.
    pub max_connections: usize,
    /// On shutdown, how long open responses may take to finish before their streams are ended
    /// with an error.
    pub drain_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(5),
            max_connections: 4096,
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// Largest request head (request line and headers) read; a larger one is answered `431`.
/// Without it only hyper's read buffer (about 400 KB) bounds a head; no OpenAI client sends
/// more than a few KB.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Most headers in a request; more are answered `431` (hyper's default, stated here).
pub const MAX_HEADERS: usize = 100;

/// After [`Drain::drain_timed_out`], how long connections get to write their final bytes.
const FLUSH_AFTER_STOP: Duration = Duration::from_secs(2);
/// Pause after a failed `accept` (e.g. out of file descriptors), so it does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long a rejected connection may take to send its request before it is answered anyway.
const REJECT_READ: Duration = Duration::from_millis(200);

/// Serves `router` on `listener` until `shutdown` completes, then drains (see the module docs):
/// returns once every connection has closed, at most `options.drain_timeout` plus a short
/// flush after [`Drain::drain_timed_out`].
pub async fn serve(
    router: axum::Router,
    listener: TcpListener,
    options: ServeOptions,
    drain: impl Drain,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let open = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let mut accept_errors = AcceptErrors::default();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
            // Reap finished connection tasks so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                accept_errors.recovered(open.load(Ordering::Relaxed));
                stream
            }
            Err(e) => {
                accept_errors.failed(&e, open.load(Ordering::Relaxed));
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        if open.load(Ordering::Relaxed) >= options.max_connections {
            tokio::spawn(reject_connection(stream, options.max_connections));
            continue;
        }
        open.fetch_add(1, Ordering::Relaxed);
        let guard = OpenGuard(Arc::clone(&open));
        let router = router.clone();
        let options = options.clone();
        let stop = stop_rx.clone();
        connections.spawn(async move {
            let _guard = guard;
            serve_connection(stream, router, &options, stop).await;
        });
    }

    drop(listener);
    tracing::info!(
        connections = open.load(Ordering::Relaxed),
        in_flight = %drain.in_flight(),
        drain_seconds = options.drain_timeout.as_secs_f64(),
        "shutting down: stopped accepting connections, letting open requests finish"
    );
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(options.drain_timeout, join_all(&mut connections)).await;
    if drained.is_err() {
        tracing::warn!(
            connections = open.load(Ordering::Relaxed),
            in_flight = %drain.in_flight(),
            "drain timeout reached: ending the open responses"
        );
        drain.drain_timed_out().await;
        if tokio::time::timeout(FLUSH_AFTER_STOP, join_all(&mut connections))
            .await
            .is_err()
        {
            tracing::warn!(
                connections = connections.len(),
                "closing connections that did not finish after the engine stopped"
            );
            connections.shutdown().await;
        }
    }
    tracing::info!("HTTP server stopped");
}

async fn join_all(connections: &mut tokio::task::JoinSet<()>) {
    while connections.join_next().await.is_some() {}
}

/// Counts a connection as open until its task ends (whichever way).
struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Logs accept failures once per streak: a server out of file descriptors fails every retry.
#[derive(Default)]
struct AcceptErrors {
    failing_since: Option<Instant>,
    failures: u64,
}

impl AcceptErrors {
    fn failed(&mut self, error: &io::Error, open: usize) {
        self.failures += 1;
        if self.failing_since.is_none() {
            self.failing_since = Some(Instant::now());
            tracing::error!(
                error = %error,
                open_connections = open,
                "cannot accept connections (retrying quietly): if this is `Too many open files`, \
                 raise the file-descriptor limit (ulimit -n) or lower --max-connections"
            );
        }
    }

    fn recovered(&mut self, open: usize) {
        if let Some(since) = self.failing_since.take() {
            tracing::warn!(
                failures = self.failures,
                seconds = since.elapsed().as_secs_f64(),
                open_connections = open,
                "accepting connections again"
            );
            self.failures = 0;
        }
    }
}

/// The answer to a connection over the cap: read what the client sent (so closing does not
/// reset the connection before it reads the answer), send a 503, close.
async fn reject_connection(mut stream: TcpStream, max_connections: usize) {
    let body = ApiError::too_many_connections(max_connections)
        .body()
        .to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut scratch = [0u8; 4096];
    let _ = tokio::time::timeout(REJECT_READ, async {
        use tokio::io::AsyncReadExt;
        // Up to the end of the headers is enough; a body may follow, unread.
        let mut seen = Vec::new();
        while let Ok(n @ 1..) = stream.read(&mut scratch).await {
            seen.extend_from_slice(&scratch[..n]);
            if seen.windows(4).any(|w| w == b"\r\n\r\n") || seen.len() > 64 * 1024 {
                break;
            }
        }
    })
    .await;
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Per-connection activity, for the idle timeout.
struct Activity {
    /// Milliseconds since `epoch` of the last byte received or response finished.
    last: AtomicU64,
    /// Requests whose response has not finished yet.
    in_flight: AtomicUsize,
    epoch: Instant,
}

impl Activity {
    fn new() -> Self {
        Self {
            last: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            epoch: Instant::now(),
        }
    }

    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last.store(ms, Ordering::Relaxed);
    }

    /// When the connection becomes idle-expired if nothing happens before.
    fn deadline(&self, idle: Duration) -> Instant {
        self.epoch + Duration::from_millis(self.last.load(Ordering::Relaxed)) + idle
    }
}

async fn serve_connection(
    stream: TcpStream,
    router: axum::Router,
    options: &ServeOptions,
    mut stop: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: Arc::clone(&activity),
    });
    let service = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ReceivedAt(Instant::now()));
            activity.in_flight.fetch_add(1, Ordering::Relaxed);
            let done = InFlight(Arc::clone(&activity));
            let call = tower::ServiceExt::oneshot(router.clone(), request.map(Body::new));
            async move {
                let response = call.await?;
                // The request counts as in flight until its body is fully sent or dropped.
                Ok::<_, std::convert::Infallible>(response.map(|body| {
                    Body::new(Tracked {
                        inner: body,
                        _done: done,
                    })
                }))
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout)
        .max_header_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let mut closing = false;
    loop {
        // While a request is in flight the connection is not idle: look again one idle timeout
        // later (its end touches the activity, which restarts the countdown).
        let idle_deadline = if activity.in_flight.load(Ordering::Relaxed) > 0 {
            Instant::now() + options.idle_timeout
        } else {
            activity.deadline(options.idle_timeout)
        };
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.wait_for(|stop| *stop), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep_until(idle_deadline), if !closing => {
                let idle = activity.in_flight.load(Ordering::Relaxed) == 0
                    && Instant::now() >= activity.deadline(options.idle_timeout);
                if idle {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Marks a request finished (for the idle timeout) when its response body ends or is dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request counted as in flight while it lives.
struct Tracked {
    inner: Body,
    _done: InFlight,
}

impl http_body::Body for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, noting when bytes arrive (for the idle timeout).
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
