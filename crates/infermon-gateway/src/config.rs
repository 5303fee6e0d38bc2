//! What the gateway routes to, who may call it and what tokens cost: a TOML file
//! (`docs/gateway.md`) and the defaults below.
//!
//! ```toml
//! [[upstream]]
//! name = "engine-a"
//! url = "http://10.0.0.1:8000"
//! role = "both"                 # or "prefill" / "decode": disaggregated prefill/decode
//!
//! [[upstream]]
//! name = "hosted"
//! url = "https://llm.example.internal"  # TLS: verified against the system's roots
//! ca_file = "private-ca.pem"            # optional: a CA bundle added for this upstream
//! insecure_skip_verify = false          # true: no verification (logged as a warning)
//!
//! [[tenant]]
//! name = "acme"
//! key_sha256 = "9f86d0…"        # sha256 of the API key, hex (`infermon gateway hash-key`)
//! max_concurrency = 16          # optional: requests in flight at once
//! requests_per_second = 20      # optional: sustained rate (burst: one second's worth)
//!
//! [[price]]
//! model = "llama-3.1-8b-instruct"
//! input_per_million = 0.20      # US dollars per 1M input tokens
//! output_per_million = 0.60
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

/// Why a configuration was refused; each message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read gateway config {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("gateway config {path} is not valid")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("no upstreams: give --upstream NAME=URL or [[upstream]] entries in the config file")]
    NoUpstreams,
    #[error("upstream {0:?}: the URL must be http://host:port or https://host[:port] (no path)")]
    BadUpstreamUrl(String),
    #[error("upstream {0:?}: the URL's host is not a valid TLS server name (a DNS name or an IP address)")]
    BadTlsHost(String),
    #[error("upstream {0:?}: ca_file and insecure_skip_verify apply to https:// upstreams only")]
    TlsOnPlainUpstream(String),
    #[error("upstreams {0:?} and {1:?} are the same host:port with different TLS settings")]
    TlsConflict(String, String),
    #[error("cannot read CA file {path}")]
    CaFileRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("CA file {path} is not valid PEM")]
    CaFileBadPem {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("CA file {0} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    CaFileEmpty(PathBuf),
    #[error("CA file {path}: a certificate cannot be used as a trust anchor")]
    CaFileBadCert {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("prefill upstreams need decode upstreams and the other way round (disaggregated prefill/decode)")]
    HalfPair,
    #[error("upstream name {0:?} is used twice")]
    DuplicateUpstream(String),
    #[error("tenant {0:?}: key_sha256 must be 64 hex digits (the SHA-256 of the API key)")]
    BadKeyDigest(String),
    #[error("tenant {0:?}: the same key digest is given to two tenants")]
    DuplicateKey(String),
    #[error("tenant {name:?}: {what} must be greater than zero")]
    BadLimit { name: String, what: &'static str },
    #[error("price for {0:?}: prices must be between 0 and 1000000 (dollars per million tokens)")]
    BadPrice(String),
}

/// The gateway's configuration. [`GatewayConfig::new`] gives the defaults in `docs/gateway.md`.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub upstreams: Vec<UpstreamConfig>,
    pub routing: Routing,
    /// API keys and limits; `None`: no authentication, every request is tenant `default`.
    pub tenants: Option<Vec<TenantConfig>>,
    pub prices: HashMap<String, Price>,
    /// TCP connect timeout to an upstream.
    pub connect_timeout: Duration,
    /// An upstream that has not sent response headers within this is given up (and the
    /// request retried elsewhere).
    pub first_byte_timeout: Duration,
    /// A streaming response with no bytes for this long is ended with an error event.
    pub stream_idle_timeout: Duration,
    /// Attempts per request (1 = no retry). Retries happen only before any byte was sent
    /// to the client: on connection failure, timeout or a 5xx.
    pub max_attempts: u32,
    /// Retries allowed as a fraction of requests (plus a floor of 10), so a failing fleet is
    /// not hit with a multiple of its load.
    pub retry_budget: f64,
    /// How often each upstream's `/v1/models` is probed (health and served models).
    pub probe_interval: Duration,
    /// Consecutive failures after which an upstream is routed around until a probe succeeds.
    pub unhealthy_after: u32,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// A PEM bundle of CA certificates trusted for every `https://` upstream, besides the
    /// system's roots (a private CA).
    pub upstream_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpstreamConfig {
    pub name: String,
    /// `http://host:port` or `https://host[:port]` (no path).
    pub url: String,
    pub role: Role,
    /// `https://` only: a PEM bundle of CA certificates trusted for this upstream, besides the
    /// system's roots and the gateway's `upstream_ca_file`.
    pub ca_file: Option<PathBuf>,
    /// `https://` only: accept any certificate. Logged as a warning at start.
    pub insecure_skip_verify: bool,
}

/// How the gateway chooses among upstreams that can take a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Routing {
    /// The one with the fewest requests in flight (ties in turn).
    #[default]
    LeastOutstanding,
    /// The same, but upstreams whose KV cache is nearly full (from their `/metrics`:
    /// `vllm:kv_cache_usage_perc` or infermon's `llm_kv_cache_usage_ratio`) only when no other
    /// is left: a request there would wait for blocks or cause preemptions.
    KvCache,
}

/// What an upstream does in disaggregated prefill/decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Serves whole requests.
    #[default]
    Both,
    /// Computes prompts and hands the KV cache on (`kv_transfer_params`).
    Prefill,
    /// Decodes from a KV cache a prefill worker computed.
    Decode,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Both => "both",
            Role::Prefill => "prefill",
            Role::Decode => "decode",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TenantConfig {
    pub name: String,
    pub key_sha256: [u8; 32],
    pub max_concurrency: Option<u32>,
    pub requests_per_second: Option<f64>,
}

/// US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Price {
    pub input_per_million: f64,
    pub output_per_million: f64,
}

impl Price {
    /// The price of a request's tokens.
    pub fn of(&self, input_tokens: u64, output_tokens: u64) -> f64 {
        (input_tokens as f64 * self.input_per_million
            + output_tokens as f64 * self.output_per_million)
            / 1e6
    }
}

impl GatewayConfig {
    pub fn new(upstreams: Vec<UpstreamConfig>) -> Self {
        Self {
            upstreams,
            routing: Routing::default(),
            tenants: None,
            prices: HashMap::new(),
            connect_timeout: Duration::from_secs(2),
            first_byte_timeout: Duration::from_secs(60),
            stream_idle_timeout: Duration::from_secs(60),
            max_attempts: 2,
            retry_budget: 0.2,
            probe_interval: Duration::from_secs(5),
            unhealthy_after: 3,
            max_body_bytes: 4 * 1024 * 1024,
            upstream_ca_file: None,
        }
    }

    /// Reads `[[upstream]]`, `[[tenant]]` and `[[price]]` from a TOML file on top of `self`.
    pub fn merge_file(self, path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        self.merge_toml(&text, path)
    }

    /// [`merge_file`](Self::merge_file) on the file's text; `path` names it in errors.
    pub fn merge_toml(mut self, text: &str, path: &Path) -> Result<Self, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        // CA files are relative to the config file, as its reader would expect.
        let dir = path.parent().unwrap_or(Path::new(""));
        if let Some(ca) = file.upstream_ca_file {
            self.upstream_ca_file = Some(dir.join(ca));
        }
        self.upstreams
            .extend(file.upstream.into_iter().map(|u| UpstreamConfig {
                name: u.name,
                url: u.url,
                role: u.role,
                ca_file: u.ca_file.map(|ca| dir.join(ca)),
                insecure_skip_verify: u.insecure_skip_verify,
            }));
        if !file.tenant.is_empty() {
            let mut tenants = self.tenants.take().unwrap_or_default();
            for t in file.tenant {
                tenants.push(TenantConfig {
                    key_sha256: parse_digest(&t.key_sha256)
                        .ok_or_else(|| ConfigError::BadKeyDigest(t.name.clone()))?,
                    name: t.name,
                    max_concurrency: t.max_concurrency,
                    requests_per_second: t.requests_per_second,
                });
            }
            self.tenants = Some(tenants);
        }
        for p in file.price {
            self.prices.insert(
                p.model,
                Price {
                    input_per_million: p.input_per_million,
                    output_per_million: p.output_per_million,
                },
            );
        }
        Ok(self)
    }

    /// Checks what the file format cannot: URLs, unique names and keys, positive limits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.upstreams.is_empty() {
            return Err(ConfigError::NoUpstreams);
        }
        let has = |r: Role| self.upstreams.iter().any(|u| u.role == r);
        if has(Role::Prefill) != has(Role::Decode) {
            return Err(ConfigError::HalfPair);
        }
        let mut names = std::collections::HashSet::new();
        for u in &self.upstreams {
            let rest = u.url.strip_prefix("http://");
            let ok = rest.or(u.url.strip_prefix("https://")).is_some_and(|rest| {
                let host_port = rest.trim_end_matches('/');
                !host_port.is_empty() && !host_port.contains('/')
            }) && u.url.parse::<http::Uri>().is_ok();
            if !ok {
                return Err(ConfigError::BadUpstreamUrl(u.name.clone()));
            }
            if !names.insert(&u.name) {
                return Err(ConfigError::DuplicateUpstream(u.name.clone()));
            }
        }
        // https:// hosts, CA files (read and parsed), TLS settings per host:port.
        crate::tls::UpstreamTls::from_config(self, false)?;
        let mut keys = std::collections::HashSet::new();
        for t in self.tenants.iter().flatten() {
            if !keys.insert(t.key_sha256) {
                return Err(ConfigError::DuplicateKey(t.name.clone()));
            }
            if t.max_concurrency == Some(0) {
                return Err(ConfigError::BadLimit {
                    name: t.name.clone(),
                    what: "max_concurrency",
                });
            }
            if t.requests_per_second
                .is_some_and(|r| r.is_nan() || r <= 0.0)
            {
                return Err(ConfigError::BadLimit {
                    name: t.name.clone(),
                    what: "requests_per_second",
                });
            }
        }
        for (model, p) in &self.prices {
            // Bounded so that no token count can make a request's cost infinite.
            let bad = |v: f64| !v.is_finite() || !(0.0..=MAX_PRICE_PER_MILLION).contains(&v);
            if bad(p.input_per_million) || bad(p.output_per_million) {
                return Err(ConfigError::BadPrice(model.clone()));
            }
        }
        Ok(())
    }
}

/// The highest price a `[[price]]` may set, in dollars per million tokens (far above any real
/// one; what matters is that costs stay finite).
pub const MAX_PRICE_PER_MILLION: f64 = 1e6;

/// The SHA-256 of an API key, as the config file stores it (hex).
pub fn hash_key(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub(crate) fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    // Hex digits only: from_str_radix alone would also take a sign (`+f`).
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    /// Before any table: a CA bundle for every https:// upstream.
    upstream_ca_file: Option<PathBuf>,
    #[serde(default)]
    upstream: Vec<FileUpstream>,
    #[serde(default)]
    tenant: Vec<FileTenant>,
    #[serde(default)]
    price: Vec<FilePrice>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileUpstream {
    name: String,
    url: String,
    #[serde(default)]
    role: Role,
    ca_file: Option<PathBuf>,
    #[serde(default)]
    insecure_skip_verify: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTenant {
    name: String,
    key_sha256: String,
    max_concurrency: Option<u32>,
    requests_per_second: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePrice {
    model: String,
    input_per_million: f64,
    output_per_million: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "infermon-gateway-config-{}-{}.toml",
            std::process::id(),
            text.len()
        ));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_full_file_is_read_and_keys_stay_digests() {
        let key = hash_key("sk-test");
        let path = write(&format!(
            r#"
[[upstream]]
name = "a"
url = "http://127.0.0.1:8000"

[[tenant]]
name = "acme"
key_sha256 = "{key}"
max_concurrency = 2
requests_per_second = 5.0

[[price]]
model = "m"
input_per_million = 1.0
output_per_million = 2.0
"#
        ));
        let config = GatewayConfig::new(vec![]).merge_file(&path).unwrap();
        config.validate().unwrap();
        assert_eq!(config.upstreams[0].url, "http://127.0.0.1:8000");
        let tenant = &config.tenants.as_ref().unwrap()[0];
        assert_eq!(tenant.key_sha256, digest("sk-test"));
        assert_eq!(tenant.max_concurrency, Some(2));
        assert!((config.prices["m"].of(1_000_000, 500_000) - 2.0).abs() < 1e-12);
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn mistakes_are_named() {
        let bad = |c: GatewayConfig| c.validate().unwrap_err().to_string();
        assert!(bad(GatewayConfig::new(vec![])).contains("no upstreams"));
        let up = |url: &str| UpstreamConfig {
            name: "a".into(),
            url: url.into(),
            role: Role::Both,
            ..Default::default()
        };
        assert!(bad(GatewayConfig::new(vec![up("ftp://x:1")])).contains("http://host:port"));
        assert!(bad(GatewayConfig::new(vec![up("https://x:1/v1")])).contains("https://host"));
        GatewayConfig::new(vec![up("https://x:1")])
            .validate()
            .unwrap();
        GatewayConfig::new(vec![up("https://127.0.0.1")])
            .validate()
            .unwrap();
        assert!(bad(GatewayConfig::new(vec![up("http://x:1/v1")])).contains("http://host:port"));
        assert!(
            bad(GatewayConfig::new(vec![up("http://x:1"), up("http://y:1")]))
                .contains("used twice")
        );
        let path = write("[[tenant]]\nname = \"t\"\nkey_sha256 = \"abc\"\n");
        let err = GatewayConfig::new(vec![]).merge_file(&path).unwrap_err();
        assert!(err.to_string().contains("64 hex digits"), "{err}");
        let path2 = write("[[upstreams]]\nname = \"t\"\n");
        let err = GatewayConfig::new(vec![]).merge_file(&path2).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
        let _ = (std::fs::remove_file(path), std::fs::remove_file(path2));
    }

    #[test]
    fn tls_settings_are_read_and_checked() {
        let up = |url: &str| UpstreamConfig {
            name: "a".into(),
            url: url.into(),
            ..Default::default()
        };
        let bad = |u: UpstreamConfig| GatewayConfig::new(vec![u]).validate().unwrap_err();
        for host in [
            "https://-x-.example:443",
            "https://a..b:443",
            "https://x.-y:1",
        ] {
            let e = bad(up(host));
            assert!(matches!(e, ConfigError::BadTlsHost(_)), "{host}: {e}");
        }
        let e = bad(UpstreamConfig {
            insecure_skip_verify: true,
            ..up("http://x:1")
        });
        assert!(e.to_string().contains("https:// upstreams only"), "{e}");
        let a = UpstreamConfig {
            insecure_skip_verify: true,
            ..up("https://x:443")
        };
        let b = UpstreamConfig {
            name: "b".into(),
            ..up("https://X")
        };
        let e = GatewayConfig::new(vec![a, b]).validate().unwrap_err();
        assert!(e.to_string().contains("different TLS settings"), "{e}");

        // Paths in the file are relative to it; the format's new keys parse.
        let path = write(
            "upstream_ca_file = \"ca.pem\"\n\n[[upstream]]\nname = \"h\"\n\
             url = \"https://h:8443\"\nca_file = \"/etc/h.pem\"\ninsecure_skip_verify = false\n",
        );
        let config = GatewayConfig::new(vec![]).merge_file(&path).unwrap();
        assert_eq!(
            config.upstream_ca_file,
            Some(std::env::temp_dir().join("ca.pem"))
        );
        assert_eq!(
            config.upstreams[0].ca_file,
            Some(PathBuf::from("/etc/h.pem"))
        );
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn a_digest_is_hex_digits_only() {
        let hex = hash_key("sk-test");
        assert!(parse_digest(&hex).is_some());
        // from_str_radix alone takes "+f" as 15 (seen while writing the gateway_config fuzz target).
        let signed = format!("+{}", &hex[1..]);
        assert_eq!(parse_digest(&signed), None);
    }

    #[test]
    fn prices_are_bounded_so_costs_stay_finite() {
        let mut config = GatewayConfig::new(vec![UpstreamConfig {
            name: "a".into(),
            url: "http://x:1".into(),
            role: Role::Both,
            ..Default::default()
        }]);
        let price = |v: f64| Price {
            input_per_million: v,
            output_per_million: 1.0,
        };
        config
            .prices
            .insert("m".into(), price(MAX_PRICE_PER_MILLION));
        config.validate().unwrap();
        assert!(config.prices["m"].of(u64::MAX, u64::MAX).is_finite());
        for bad in [1e300, -1.0, f64::NAN, f64::INFINITY] {
            config.prices.insert("m".into(), price(bad));
            let e = config.validate().unwrap_err().to_string();
            assert!(e.contains("between 0 and 1000000"), "{bad}: {e}");
        }
    }
}
