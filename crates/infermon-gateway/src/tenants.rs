//! Who is calling: API keys (kept as SHA-256 digests, never logged) mapped to tenants, and each
//! tenant's limits — requests in flight and a sustained rate — answered with OpenAI-style
//! `401` and `429` + `Retry-After`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::http::{HeaderMap, StatusCode};
use infermon_http::error::{ApiError, AUTHENTICATION, RATE_LIMIT};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{digest, TenantConfig};

/// The tenant of requests when no tenants are configured.
pub const DEFAULT_TENANT: &str = "default";
/// The tenant label of requests refused for their key.
pub const UNAUTHENTICATED: &str = "unauthenticated";

#[derive(Debug)]
pub struct Tenant {
    pub name: String,
    concurrency: Option<Arc<Semaphore>>,
    rate: Option<Mutex<TokenBucket>>,
}

/// A request let in: holds its concurrency slot until dropped.
#[derive(Debug)]
pub struct Admission {
    _slot: Option<OwnedSemaphorePermit>,
}

#[derive(Debug, Clone)]
pub struct Tenants {
    by_digest: Arc<HashMap<[u8; 32], Arc<Tenant>>>,
    /// Without tenants: everyone is this one.
    open: Option<Arc<Tenant>>,
}

impl Tenants {
    pub fn new(config: Option<&[TenantConfig]>) -> Self {
        match config {
            None => Self {
                by_digest: Arc::new(HashMap::new()),
                open: Some(Arc::new(Tenant {
                    name: DEFAULT_TENANT.to_owned(),
                    concurrency: None,
                    rate: None,
                })),
            },
            Some(list) => Self {
                by_digest: Arc::new(
                    list.iter()
                        .map(|t| {
                            let tenant = Tenant {
                                name: t.name.clone(),
                                concurrency: t
                                    .max_concurrency
                                    .map(|n| Arc::new(Semaphore::new(n as usize))),
                                rate: t
                                    .requests_per_second
                                    .map(|r| Mutex::new(TokenBucket::new(r))),
                            };
                            (t.key_sha256, Arc::new(tenant))
                        })
                        .collect(),
                ),
                open: None,
            },
        }
    }

    /// The tenant whose key is in `Authorization: Bearer <key>`.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Tenant>, ApiError> {
        if let Some(open) = &self.open {
            return Ok(Arc::clone(open));
        }
        let key = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|k| !k.is_empty());
        let Some(key) = key else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                AUTHENTICATION,
                "You didn't provide an API key. Send it as `Authorization: Bearer <key>`.",
            )
            .code("missing_api_key"));
        };
        self.by_digest.get(&digest(key)).cloned().ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                AUTHENTICATION,
                "Incorrect API key provided.",
            )
            .code("invalid_api_key")
        })
    }
}

impl Tenant {
    /// Lets a request in, or says when to retry.
    pub fn admit(&self) -> Result<Admission, ApiError> {
        if let Some(rate) = &self.rate {
            let mut bucket = rate.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(wait_s) = bucket.take(Instant::now()) {
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    RATE_LIMIT,
                    format!(
                        "Rate limit reached for tenant {}: retry after the time in the \
                         Retry-After header.",
                        self.name
                    ),
                )
                .code("rate_limit_exceeded")
                .retry_after(wait_s.ceil().max(1.0) as u32));
            }
        }
        let slot = match &self.concurrency {
            None => None,
            Some(semaphore) => Some(Arc::clone(semaphore).try_acquire_owned().map_err(|_| {
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    RATE_LIMIT,
                    format!(
                        "Too many concurrent requests for tenant {}: wait for one to finish.",
                        self.name
                    ),
                )
                .code("concurrency_limit_exceeded")
                .retry_after(1)
            })?),
        };
        Ok(Admission { _slot: slot })
    }
}

/// `rate` requests per second sustained, bursts up to one second's worth (at least 1).
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    at: Option<Instant>,
}

impl TokenBucket {
    fn new(rate: f64) -> Self {
        let capacity = rate.max(1.0);
        Self {
            rate,
            capacity,
            tokens: capacity,
            at: None,
        }
    }

    /// Takes one token, or returns the seconds until one is available.
    fn take(&mut self, now: Instant) -> Result<(), f64> {
        if let Some(at) = self.at {
            let elapsed = now.saturating_duration_since(at).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        }
        self.at = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err((1.0 - self.tokens) / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn tenants() -> Tenants {
        Tenants::new(Some(&[TenantConfig {
            name: "acme".into(),
            key_sha256: digest("sk-acme"),
            max_concurrency: Some(1),
            requests_per_second: None,
        }]))
    }

    fn bearer(key: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {key}").parse().unwrap(),
        );
        h
    }

    #[test]
    fn keys_map_to_tenants_and_others_get_401() {
        let t = tenants();
        assert_eq!(t.authenticate(&bearer("sk-acme")).unwrap().name, "acme");
        let wrong = t.authenticate(&bearer("sk-nope")).unwrap_err();
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
        assert_eq!(wrong.code, Some("invalid_api_key"));
        assert!(
            !wrong.message.contains("sk-nope"),
            "the key is never echoed"
        );
        let missing = t.authenticate(&HeaderMap::new()).unwrap_err();
        assert_eq!(missing.code, Some("missing_api_key"));
        let open = Tenants::new(None);
        assert_eq!(
            open.authenticate(&HeaderMap::new()).unwrap().name,
            DEFAULT_TENANT
        );
    }

    #[test]
    fn concurrency_is_limited_until_a_request_finishes() {
        let acme = tenants().authenticate(&bearer("sk-acme")).unwrap();
        let first = acme.admit().unwrap();
        let refused = acme.admit().unwrap_err();
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.retry_after, Some(1));
        drop(first);
        assert!(acme.admit().is_ok());
    }

    #[test]
    fn the_rate_refills_and_says_when_to_retry() {
        let mut bucket = TokenBucket::new(2.0);
        let t0 = Instant::now();
        assert!(bucket.take(t0).is_ok());
        assert!(bucket.take(t0).is_ok());
        let wait = bucket.take(t0).unwrap_err();
        assert!((wait - 0.5).abs() < 1e-9, "{wait}");
        assert!(bucket.take(t0 + Duration::from_millis(500)).is_ok());
    }
}
