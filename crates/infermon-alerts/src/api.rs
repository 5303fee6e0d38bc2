//! The parts of Alertmanager's v2 API that acknowledging alerts needs: alerts, silences.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::matcher::{display_matchers, MatchOp, Matcher};

/// How long one API call may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why talking to Alertmanager failed; one line each (with its causes, where there are).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{0}` is not an Alertmanager URL: it must start with http:// or https://, e.g. http://127.0.0.1:9093")]
    BadUrl(String),
    #[error("cannot create an HTTP client")]
    HttpClient(#[source] reqwest::Error),
    #[error("cannot reach Alertmanager at {base} to {what}")]
    Unreachable {
        base: String,
        what: &'static str,
        #[source]
        source: reqwest::Error,
    },
    #[error("Alertmanager refused to {what}: HTTP {status}: {message}")]
    Refused {
        what: &'static str,
        status: reqwest::StatusCode,
        /// Alertmanager's own words.
        message: String,
    },
    #[error("unexpected answer from Alertmanager to {what}")]
    Unexpected {
        what: &'static str,
        #[source]
        source: reqwest::Error,
    },
    #[error("an acknowledgement needs a comment saying why")]
    NoComment,
    #[error("no firing alert matches {0}")]
    NothingFiring(String),
    #[error("a silence of {0:?} would end too far in the future")]
    TooLong(Duration, #[source] jiff::Error),
    #[error("no active acknowledgement (silence) for {0}")]
    NoAcknowledgement(String),
}

/// A small client for Alertmanager's v2 API.
pub struct Alertmanager {
    base: reqwest::Url,
    http: reqwest::Client,
}

impl Alertmanager {
    /// A client for the Alertmanager at `base_url` (e.g. `http://127.0.0.1:9093`); nothing is
    /// sent yet.
    pub fn new(base_url: &str) -> Result<Self, Error> {
        let trimmed = base_url.trim().trim_end_matches('/');
        let bad_url = || Error::BadUrl(base_url.to_owned());
        if !(trimmed.starts_with("http://") || trimmed.starts_with("https://")) {
            return Err(bad_url());
        }
        let base = reqwest::Url::parse(trimmed).map_err(|_| bad_url())?;
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(Error::HttpClient)?;
        Ok(Self { base, http })
    }

    /// The base URL, as the user wrote it (without a trailing slash).
    pub fn base(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// Alerts Alertmanager holds as firing (acknowledged and inhibited ones included), matching
    /// every matcher.
    pub async fn alerts(&self, matchers: &[Matcher]) -> Result<Vec<Alert>, Error> {
        let what = "list alerts";
        let mut url = self.url("/api/v2/alerts");
        {
            let mut query = url.query_pairs_mut();
            for flag in ["active", "silenced", "inhibited", "unprocessed"] {
                query.append_pair(flag, "true");
            }
            for m in matchers {
                query.append_pair("filter", &m.to_string());
            }
        }
        let response = self.send(self.http.get(url), what).await?;
        response
            .json()
            .await
            .map_err(|source| Error::Unexpected { what, source })
    }

    /// Every silence Alertmanager knows (active, pending and recently expired).
    pub async fn silences(&self) -> Result<Vec<Silence>, Error> {
        let what = "list silences";
        let request = self.http.get(self.url("/api/v2/silences"));
        self.send(request, what)
            .await?
            .json()
            .await
            .map_err(|source| Error::Unexpected { what, source })
    }

    /// Creates a silence and returns its ID.
    pub async fn create_silence(&self, silence: &NewSilence) -> Result<String, Error> {
        #[derive(Deserialize)]
        struct Created {
            #[serde(rename = "silenceID")]
            silence_id: String,
        }
        let what = "create a silence";
        let request = self.http.post(self.url("/api/v2/silences")).json(silence);
        let created: Created = self
            .send(request, what)
            .await?
            .json()
            .await
            .map_err(|source| Error::Unexpected { what, source })?;
        Ok(created.silence_id)
    }

    /// Expires a silence now.
    pub async fn expire_silence(&self, id: &str) -> Result<(), Error> {
        let mut url = self.url("/api/v2/silence");
        url.path_segments_mut()
            .expect("an http(s) URL has path segments")
            .push(id);
        self.send(self.http.delete(url), "expire a silence").await?;
        Ok(())
    }

    /// `path` under the base URL (which may itself have a path, behind a proxy).
    fn url(&self, path: &str) -> reqwest::Url {
        let mut url = self.base.clone();
        let joined = format!("{}{path}", url.path().trim_end_matches('/'));
        url.set_path(&joined);
        url
    }

    /// Sends a request; transport failures and non-2xx answers become errors saying what was
    /// attempted and what Alertmanager said.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        what: &'static str,
    ) -> Result<reqwest::Response, Error> {
        let response = request.send().await.map_err(|source| Error::Unreachable {
            base: self.base().to_owned(),
            what,
            source,
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        Err(Error::Refused {
            what,
            status,
            message: api_error_message(&body),
        })
    }
}

/// Alertmanager answers errors with a JSON string or `{"message": ...}`; fall back to the body.
fn api_error_message(body: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(serde_json::Value::Object(o)) => match o.get("message") {
            Some(serde_json::Value::String(s)) => s.clone(),
            _ => body.trim().to_owned(),
        },
        _ => body.trim().to_owned(),
    }
}

/// An alert as `GET /api/v2/alerts` returns it: the fields used here, and the rest kept as it
/// came (so that it can be printed as Alertmanager's JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339, as Alertmanager wrote it.
    pub starts_at: String,
    pub status: AlertStatus,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertStatus {
    /// `active`, `suppressed` (silenced or inhibited) or `unprocessed`.
    pub state: String,
    #[serde(default)]
    pub silenced_by: Vec<String>,
    #[serde(default)]
    pub inhibited_by: Vec<String>,
}

impl Alert {
    /// Its `alertname` label.
    pub fn name(&self) -> &str {
        self.labels
            .get("alertname")
            .map(String::as_str)
            .unwrap_or("")
    }

    /// Nobody acknowledged it and no other alert inhibits it.
    pub fn is_unacknowledged(&self) -> bool {
        self.status.state == "active"
    }
}

/// A silence as `GET /api/v2/silences` returns it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Silence {
    pub id: String,
    pub matchers: Vec<SilenceMatcher>,
    /// RFC 3339, as Alertmanager wrote it.
    pub ends_at: String,
    pub created_by: String,
    pub comment: String,
    pub status: SilenceStatus,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SilenceStatus {
    /// `active`, `pending` or `expired`.
    pub state: String,
}

impl Silence {
    pub fn is_active(&self) -> bool {
        self.status.state == "active"
    }

    /// Whether every wanted matcher is one of this silence's matchers.
    pub fn includes_all(&self, wanted: &[Matcher]) -> bool {
        wanted
            .iter()
            .all(|w| self.matchers.iter().any(|m| *m == SilenceMatcher::from(w)))
    }
}

/// `<id> ({matchers}, by <author>: <comment>)`.
impl fmt::Display for Silence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let matchers: Vec<Matcher> = self.matchers.iter().map(Matcher::from).collect();
        write!(
            f,
            "{} ({}, by {}: {})",
            self.id,
            display_matchers(&matchers),
            self.created_by,
            self.comment
        )
    }
}

/// A silence to create (`POST /api/v2/silences`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewSilence {
    pub matchers: Vec<SilenceMatcher>,
    /// RFC 3339.
    pub starts_at: String,
    /// RFC 3339.
    pub ends_at: String,
    pub created_by: String,
    pub comment: String,
}

/// A label matcher in the API's JSON form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SilenceMatcher {
    pub name: String,
    pub value: String,
    pub is_regex: bool,
    /// Absent in silences made before Alertmanager 0.22, which only had equality.
    #[serde(default = "default_true")]
    pub is_equal: bool,
}

fn default_true() -> bool {
    true
}

impl From<&Matcher> for SilenceMatcher {
    fn from(m: &Matcher) -> Self {
        Self {
            name: m.name.clone(),
            value: m.value.clone(),
            is_regex: matches!(m.op, MatchOp::Regex | MatchOp::NotRegex),
            is_equal: matches!(m.op, MatchOp::Equal | MatchOp::Regex),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_are_unwrapped_to_their_message() {
        assert_eq!(
            api_error_message(r#""silence not found""#),
            "silence not found"
        );
        assert_eq!(
            api_error_message(r#"{"code":400,"message":"bad matcher"}"#),
            "bad matcher"
        );
        assert_eq!(api_error_message("plain text\n"), "plain text");
    }

    #[test]
    fn urls_must_be_http_and_keep_their_path() {
        for bad in ["localhost:9093", "ftp://am", "", "http://"] {
            let e = Alertmanager::new(bad).err().unwrap().to_string();
            assert!(e.contains("must start with http://"), "{bad}: {e}");
        }
        let am = Alertmanager::new("http://am:9093/").unwrap();
        assert_eq!(am.base(), "http://am:9093");
        assert_eq!(
            am.url("/api/v2/silences").as_str(),
            "http://am:9093/api/v2/silences"
        );
        let proxied = Alertmanager::new("http://proxy/alertmanager").unwrap();
        assert_eq!(
            proxied.url("/api/v2/alerts").as_str(),
            "http://proxy/alertmanager/api/v2/alerts"
        );
    }

    #[test]
    fn silences_print_their_matchers_author_and_comment() {
        let silence: Silence = serde_json::from_value(serde_json::json!({
            "id": "3f2a9c1e-7b4d-4e8a-9c2f-1a2b3c4d5e6f",
            "matchers": [{"name": "alertname", "value": "A", "isRegex": false, "isEqual": true},
                         {"name": "job", "value": "x|y", "isRegex": true}],
            "endsAt": "2026-01-01T00:00:00.000Z", "createdBy": "alice", "comment": "rolling back",
            "status": {"state": "active"}, "startsAt": "2025-12-31T23:00:00Z", "updatedAt": "2025-12-31T23:00:00Z"
        }))
        .unwrap();
        assert_eq!(
            silence.to_string(),
            r#"3f2a9c1e-7b4d-4e8a-9c2f-1a2b3c4d5e6f ({alertname="A", job=~"x|y"}, by alice: rolling back)"#
        );
        assert!(silence.is_active());
        assert!(silence.includes_all(&[Matcher::equal("alertname", "A")]));
        assert!(!silence.includes_all(&[Matcher::equal("job", "x|y")]));
    }
}
