//! Asking a server which model it serves (`GET /v1/models`), so the model need not be given.

use std::time::Duration;

use serde::Deserialize;

use crate::client::Endpoint;
use crate::config::endpoint;
use crate::openai::Api;

/// Why the served model could not be found out (naming the model is the way around it).
#[derive(Debug, thiserror::Error)]
pub enum ModelLookupError {
    #[error(transparent)]
    Config(#[from] crate::ConfigError),
    #[error("cannot ask {url} which model it serves ({reason}); is the server up?")]
    Request { url: String, reason: String },
    #[error("{url} lists no models")]
    NoModel { url: String },
}

#[derive(Deserialize)]
struct ModelList {
    #[serde(default)]
    data: Vec<ModelEntry>,
}

#[derive(Deserialize)]
struct ModelEntry {
    id: String,
}

/// The first model `GET /v1/models` of `url` lists (`url` as in [`crate::LoadConfig::urls`]).
pub async fn served_model(url: &str) -> Result<String, ModelLookupError> {
    let models_url = models_url(&endpoint(url, Api::Chat)?);
    let fail = |reason: String| ModelLookupError::Request {
        url: models_url.to_string(),
        reason,
    };
    let response = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| fail(root_cause(&e)))?
        .get(models_url.clone())
        .send()
        .await
        .map_err(|e| fail(root_cause(&e)))?;
    if !response.status().is_success() {
        return Err(fail(format!("HTTP {}", response.status())));
    }
    let body = response.bytes().await.map_err(|e| fail(root_cause(&e)))?;
    let list: ModelList =
        serde_json::from_slice(&body).map_err(|_| fail("not an OpenAI model list".to_owned()))?;
    list.data
        .into_iter()
        .next()
        .map(|m| m.id)
        .ok_or_else(|| ModelLookupError::NoModel {
            url: models_url.to_string(),
        })
}

/// The innermost cause ("Connection refused (os error 111)"): reqwest's own message only says
/// that sending failed.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// `…/v1/chat/completions` → `…/v1/models`.
fn models_url(chat: &Endpoint) -> reqwest::Url {
    let mut url = chat.url.clone();
    let path = url.path().to_owned();
    let base = path
        .strip_suffix(Api::Chat.path())
        .or_else(|| path.strip_suffix(Api::Completions.path()))
        .unwrap_or(&path);
    url.set_path(&format!("{base}models"));
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_url_sits_beside_the_api_paths() {
        for (given, expected) in [
            ("http://h:1", "http://h:1/v1/models"),
            ("http://h:1/v1", "http://h:1/v1/models"),
            ("http://h:1/p/v1/completions", "http://h:1/p/v1/models"),
        ] {
            let e = endpoint(given, Api::Chat).unwrap();
            assert_eq!(models_url(&e).as_str(), expected, "{given}");
        }
    }
}
