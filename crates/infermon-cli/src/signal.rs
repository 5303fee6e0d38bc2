//! Shutdown on Ctrl-C (SIGINT) or SIGTERM: containers and process supervisors stop services
//! with SIGTERM, and the commands must flush their telemetry and exit 0 then too.

/// Resolves when the process is asked to stop. If a signal handler cannot be installed, only
/// the other signal stops the process (and a warning says so).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops this process");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
