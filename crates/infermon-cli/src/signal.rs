//! Shutdown on Ctrl-C (SIGINT) or SIGTERM: containers and process supervisors stop services
//! with SIGTERM, and the commands must flush their telemetry and exit 0 then too. Every command
//! waits for its stop here, so all treat a signal handler that cannot be installed the same way:
//! a warning, and the other signal still stops the process cleanly (the one without a handler
//! keeps its default action, ending the process at once).

use std::time::Duration;

/// Exit status after a second signal cut the drain short (128 + SIGINT, as shells report it).
const FORCED_EXIT: i32 = 130;

/// Resolves when the process is asked to stop. If a signal handler cannot be installed, only
/// the other signal stops the process (and a warning says so).
pub async fn shutdown_signal() {
    Signals::new().recv().await;
}

/// Resolves on the first SIGINT/SIGTERM (after logging it); a second one exits the process at
/// once, without waiting for the drain of up to `drain` to finish.
pub async fn first_of_two_signals(drain: Duration) {
    let mut signals = Signals::new();
    let first = signals.recv().await;
    tracing::info!(
        signal = first,
        drain_seconds = drain.as_secs_f64(),
        "stopping: open requests get up to the drain timeout; send the signal again to exit now"
    );
    tokio::spawn(async move {
        let second = signals.recv().await;
        tracing::warn!(signal = second, "second signal: exiting now");
        eprintln!("infermon: second {second}, exiting without finishing open requests");
        std::process::exit(FORCED_EXIT);
    });
}

/// SIGINT and SIGTERM, listened to for the life of the value (so none is missed between two
/// waits).
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let listen = |kind: SignalKind, name: &str| match signal(kind) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for {name}; only the other signal stops this process");
                    None
                }
            };
            Self {
                term: listen(SignalKind::terminate(), "SIGTERM"),
                int: listen(SignalKind::interrupt(), "SIGINT"),
            }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    /// Waits for the next signal and names it.
    async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                () = next(&mut self.int) => "SIGINT",
                () = next(&mut self.term) => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}
