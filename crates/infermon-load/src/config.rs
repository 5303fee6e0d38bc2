//! What a load run does, and its validation: every problem is reported as one line that names
//! the setting (by its [`LoadConfig`] name; a front end such as the CLI can name its own flag
//! instead, see [`ConfigError::setting`]) and says what a valid value is.

use std::time::Duration;

use serde::Serialize;

use crate::client::Endpoint;
use crate::dist::LengthDist;
use crate::openai::Api;

/// How requests arrive.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Arrival {
    /// Open loop: Poisson arrivals at `rate` requests per second, whatever the server's pace.
    Poisson { rate: f64 },
    /// Closed loop: `concurrency` clients, each sending its next request when the last ends.
    Closed { concurrency: usize },
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadConfig {
    /// Base URLs (`http://host:port`, optionally ending in `/v1` or the full endpoint path),
    /// used round robin.
    pub urls: Vec<String>,
    pub model: String,
    pub api: Api,
    pub arrival: Arrival,
    /// Stop sending after this long…
    pub duration: Option<Duration>,
    /// …or after this many requests, whichever comes first. With neither, the run lasts until
    /// the shutdown future passed to `run` resolves.
    pub requests: Option<u64>,
    pub prompt_tokens: LengthDist,
    /// `max_tokens` of each request.
    pub output_tokens: LengthDist,
    pub stream: bool,
    /// Whole-request timeout (connect to last byte).
    pub timeout: Duration,
    /// Open loop only: arrivals beyond this many requests in flight are counted as
    /// `client_overload` errors instead of piling up without bound.
    pub max_in_flight: usize,
    pub temperature: Option<f64>,
    /// Send vLLM's `ignore_eos: true` so outputs run to exactly `max_tokens`.
    pub ignore_eos: bool,
    /// Sent as `Authorization: Bearer …`; never printed.
    #[serde(skip)]
    pub api_key: Option<String>,
    /// Seed for arrival times and lengths (a random one when unset).
    pub seed: Option<u64>,
}

impl LoadConfig {
    /// A closed-loop run of one client against `urls`, 256-token prompts and outputs,
    /// streaming, until shut down.
    pub fn new(urls: Vec<String>, model: impl Into<String>) -> Self {
        Self {
            urls,
            model: model.into(),
            api: Api::Chat,
            arrival: Arrival::Closed { concurrency: 1 },
            duration: None,
            requests: None,
            prompt_tokens: LengthDist::Fixed(256),
            output_tokens: LengthDist::Fixed(256),
            stream: true,
            timeout: Duration::from_secs(300),
            max_in_flight: 10_000,
            temperature: None,
            ignore_eos: false,
            api_key: None,
            seed: None,
        }
    }

    /// Checks every setting and resolves the target endpoints.
    pub(crate) fn validate(&self) -> Result<Vec<Endpoint>, ConfigError> {
        if self.model.trim().is_empty() {
            return Err(ConfigError::EmptyModel);
        }
        match self.arrival {
            Arrival::Poisson { rate } if !(rate.is_finite() && rate > 0.0) => {
                return Err(ConfigError::Rate(rate))
            }
            Arrival::Closed { concurrency: 0 } => return Err(ConfigError::Concurrency),
            _ => {}
        }
        if self.duration.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::Duration);
        }
        if self.requests == Some(0) {
            return Err(ConfigError::Requests);
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::Timeout);
        }
        if self.max_in_flight == 0 {
            return Err(ConfigError::MaxInFlight);
        }
        if let Some(t) = self.temperature {
            if !(0.0..=2.0).contains(&t) {
                return Err(ConfigError::Temperature(t));
            }
        }
        if self.urls.is_empty() {
            return Err(ConfigError::NoUrl);
        }
        self.urls
            .iter()
            .map(|url| endpoint(url, self.api))
            .collect()
    }
}

/// A setting that cannot work.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigError {
    NoUrl,
    Url { url: String, reason: String },
    EmptyModel,
    Rate(f64),
    Concurrency,
    Duration,
    Requests,
    Timeout,
    MaxInFlight,
    Temperature(f64),
    ApiKey,
    HttpClient(String),
}

impl ConfigError {
    /// The setting at fault, as [`LoadConfig`] names it (`rate` and `concurrency` being those
    /// of [`Arrival`], `url` one of `urls`); None when no setting is.
    pub fn setting(&self) -> Option<&'static str> {
        Some(match self {
            Self::NoUrl | Self::Url { .. } => "url",
            Self::EmptyModel => "model",
            Self::Rate(_) => "rate",
            Self::Concurrency => "concurrency",
            Self::Duration => "duration",
            Self::Requests => "requests",
            Self::Timeout => "timeout",
            Self::MaxInFlight => "max_in_flight",
            Self::Temperature(_) => "temperature",
            Self::ApiKey => "api_key",
            Self::HttpClient(_) => return None,
        })
    }

    /// What is wrong, and what would be right, without naming the setting (the message is
    /// `{setting} {problem}`).
    pub fn problem(&self) -> String {
        match self {
            Self::NoUrl => {
                "is missing: give at least one target, e.g. http://127.0.0.1:8000".into()
            }
            Self::Url { url, reason } => format!("`{url}` is invalid: {reason}"),
            Self::EmptyModel => "must not be empty: give the model name the server serves".into(),
            Self::Rate(rate) => {
                format!("must be a positive number of requests per second, got {rate}")
            }
            Self::Concurrency | Self::Requests | Self::MaxInFlight => "must be at least 1".into(),
            Self::Duration => "must be longer than zero, e.g. 30s".into(),
            Self::Timeout => "must be longer than zero, e.g. 60s".into(),
            Self::Temperature(t) => format!("must be between 0 and 2, got {t}"),
            Self::ApiKey => "contains characters that cannot be sent in an HTTP header".into(),
            Self::HttpClient(reason) => reason.clone(),
        }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.setting() {
            Some(setting) => write!(f, "{setting} {}", self.problem()),
            None => write!(f, "cannot build the HTTP client: {}", self.problem()),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Resolves a target URL to the endpoint to POST to: `http://h:p` and `http://h:p/v1` get the API's
/// path appended; a URL already ending in `/chat/completions` or `/completions` is used as is.
pub(crate) fn endpoint(url: &str, api: Api) -> Result<Endpoint, ConfigError> {
    let fail = |reason: &str| ConfigError::Url {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let mut parsed = reqwest::Url::parse(url)
        .map_err(|e| fail(&format!("{e}; write it like http://127.0.0.1:8000")))?;
    match parsed.scheme() {
        "http" => {}
        "https" => {
            return Err(fail(
                "https is not supported by this build; use http:// (put a TLS-terminating proxy in front for remote HTTPS servers)",
            ))
        }
        other => {
            return Err(fail(&format!(
                "unsupported scheme `{other}`; write it like http://127.0.0.1:8000"
            )))
        }
    }
    let address = parsed
        .host_str()
        .ok_or_else(|| fail("no host; write it like http://127.0.0.1:8000"))?
        .to_owned();
    let port = parsed.port_or_known_default().unwrap_or(80);
    let path = parsed.path().trim_end_matches('/').to_owned();
    if !(path.ends_with("/chat/completions") || path.ends_with("/completions")) {
        let base = if path.ends_with("/v1") {
            path
        } else {
            format!("{path}/v1")
        };
        parsed.set_path(&format!("{base}/{}", api.path()));
    }
    Ok(Endpoint {
        url: parsed,
        address: address.into(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url_of(url: &str, api: Api) -> String {
        endpoint(url, api).unwrap().url.to_string()
    }

    #[test]
    fn base_urls_get_the_api_path() {
        assert_eq!(
            url_of("http://127.0.0.1:8000", Api::Chat),
            "http://127.0.0.1:8000/v1/chat/completions"
        );
        assert_eq!(
            url_of("http://h:1/v1/", Api::Completions),
            "http://h:1/v1/completions"
        );
        assert_eq!(
            url_of("http://h/proxy/v1/chat/completions", Api::Chat),
            "http://h/proxy/v1/chat/completions"
        );
        let e = endpoint("http://engine:8000", Api::Chat).unwrap();
        assert_eq!((e.address.as_str(), e.port), ("engine", 8000));
        assert_eq!(endpoint("http://engine", Api::Chat).unwrap().port, 80);
    }

    #[test]
    fn bad_urls_say_what_to_write() {
        for bad in ["localhost:8000", "127.0.0.1", "https://x", "ftp://x", ""] {
            let e = endpoint(bad, Api::Chat).unwrap_err().to_string();
            assert!(e.starts_with(&format!("url `{bad}` is invalid: ")), "{e}");
            assert!(!e.contains('\n') && !e.contains("--"), "{e}");
        }
    }

    #[test]
    fn invalid_settings_are_rejected() {
        let ok = LoadConfig::new(vec!["http://h:1".into()], "m");
        assert!(ok.validate().is_ok());
        type Mutation = fn(&mut LoadConfig);
        let cases: Vec<(Mutation, ConfigError)> = vec![
            (|c| c.urls.clear(), ConfigError::NoUrl),
            (|c| c.model = " ".into(), ConfigError::EmptyModel),
            (
                |c| c.arrival = Arrival::Poisson { rate: 0.0 },
                ConfigError::Rate(0.0),
            ),
            (
                |c| c.arrival = Arrival::Closed { concurrency: 0 },
                ConfigError::Concurrency,
            ),
            (|c| c.duration = Some(Duration::ZERO), ConfigError::Duration),
            (|c| c.requests = Some(0), ConfigError::Requests),
            (|c| c.temperature = Some(3.0), ConfigError::Temperature(3.0)),
        ];
        for (mutate, expected) in cases {
            let mut c = ok.clone();
            mutate(&mut c);
            assert_eq!(c.validate().unwrap_err(), expected);
        }
    }
}
