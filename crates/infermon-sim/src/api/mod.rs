//! The OpenAI-compatible HTTP API (axum).

mod error;
mod handlers;
mod output;
mod rejected;
mod stream;
mod types;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

pub use error::ApiError;
#[doc(hidden)]
pub use handlers::check_request;
pub use types::Usage;

use crate::config::MetricsFormat;
use crate::SimHandle;
use types::{ChatRequest, CompletionRequest};

/// The simulator's routes, bound to one running engine.
pub fn router(sim: SimHandle) -> Router {
    let mut router = Router::new()
        .route(
            "/v1/chat/completions",
            post(handlers::handle::<ChatRequest>),
        )
        .route(
            "/v1/completions",
            post(handlers::handle::<CompletionRequest>),
        )
        .route("/v1/models", get(handlers::models))
        .route("/health", get(handlers::health))
        .route("/ping", get(handlers::health).post(handlers::health))
        .route("/version", get(handlers::version))
        .route("/tokenize", post(handlers::tokenize))
        .route("/detokenize", post(handlers::detokenize));
    if sim.config().metrics == MetricsFormat::Vllm {
        router = router.route("/metrics", get(handlers::vllm_metrics));
    }
    router
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(sim.config().max_body_bytes))
        .with_state(sim)
}
