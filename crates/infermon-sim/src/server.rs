//! The simulator's HTTP server: infermon-http's (`TCP_NODELAY`, header and idle timeouts,
//! connection cap, bounded drain) in front of the API router. When the drain times out the
//! engine is stopped, so each open stream ends with an error event and `[DONE]`.

use std::future::Future;

use tokio::net::TcpListener;

pub use infermon_http::{ReceivedAt, ServeOptions};

use crate::error::SimError;
use crate::SimHandle;

/// Serves `sim`'s API on `listener` with [`ServeOptions::default`]; see [`serve_with`].
pub async fn serve(
    sim: SimHandle,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SimError> {
    serve_with(sim, listener, ServeOptions::default(), shutdown).await
}

/// Serves `sim`'s API on `listener` until `shutdown` completes, then drains (infermon-http's
/// module docs). If open streams outlive `options.drain_timeout`, the engine is stopped so that
/// they end with an error event; otherwise the engine keeps running (call
/// [`SimHandle::shutdown`]).
pub async fn serve_with(
    sim: SimHandle,
    listener: TcpListener,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SimError> {
    let router = sim.router();
    infermon_http::serve(router, listener, options, SimDrain(sim), shutdown).await;
    Ok(())
}

struct SimDrain(SimHandle);

impl infermon_http::Drain for SimDrain {
    fn in_flight(&self) -> String {
        let stats = self.0.stats();
        format!("running={} waiting={}", stats.running, stats.waiting)
    }

    async fn drain_timed_out(&self) {
        self.0.shutdown().await;
    }
}
