//! Errors of the simulator's library API. HTTP-level errors are in `api::error`.

use std::path::PathBuf;

/// What went wrong loading a configuration, profile or scenario, or starting the simulator.
/// Every message is one line that says what is wrong and what to change; an underlying I/O
/// error is the [`source`](std::error::Error::source), not repeated in the message (so a
/// chain printed with `{:#}` names it once).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: invalid TOML: {message}")]
    Parse { origin: String, message: String },
    #[error("{origin}: `{field}` {message}")]
    Invalid {
        origin: String,
        field: String,
        message: String,
    },
    #[error("unknown simulator profile `{name}`: use one of {known}, or a path to a profile TOML")]
    UnknownProfile { name: String, known: String },
    #[error("the simulator needs a Tokio runtime: call Simulator::start from inside one")]
    NoRuntime,
    #[error("serving HTTP failed")]
    Serve(#[from] std::io::Error),
}
