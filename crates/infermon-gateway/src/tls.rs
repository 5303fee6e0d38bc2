//! TLS to `https://` upstreams: rustls (the `ring` provider), HTTP/1.1 by ALPN, the server's
//! certificate verified against the system's roots plus any CA bundle the configuration adds
//! (for the gateway, and per upstream), and its name (SNI and hostname check) taken from the
//! upstream's URL.
//!
//! The connector is our own, over hyper-util's `HttpConnector` (which keeps `TCP_NODELAY` and
//! the connect timeout): a handshake that fails is reported as a [`TlsHandshakeError`], so the
//! proxy can tell it from a TCP connect failure (`error.type` `tls_handshake`), and both are
//! failed over the same way.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::config::{ConfigError, GatewayConfig};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A TLS handshake with an upstream failed (certificate not trusted, wrong name, no common
/// protocol, or no handshake within the connect timeout). The TCP connection had been made.
#[derive(Debug, thiserror::Error)]
#[error("TLS handshake with {authority} failed")]
pub struct TlsHandshakeError {
    authority: String,
    #[source]
    source: io::Error,
}

/// The TLS client settings of each `https://` upstream, by `host:port`.
#[derive(Clone, Default, Debug)]
pub struct UpstreamTls {
    by_authority: HashMap<String, TlsConnectorOf>,
}

#[derive(Clone)]
struct TlsConnectorOf(TlsConnector);

impl std::fmt::Debug for TlsConnectorOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsConnector")
    }
}

impl UpstreamTls {
    /// Reads the CA bundles and builds a client configuration per `https://` upstream. Errors
    /// name the file or the upstream. Upstreams with `insecure_skip_verify` are logged as a
    /// warning here when `warn` is set (once, at start).
    pub fn from_config(config: &GatewayConfig, warn: bool) -> Result<Self, ConfigError> {
        let mut by_authority: HashMap<String, (String, TlsSettings<'_>, TlsConnectorOf)> =
            HashMap::new();
        let gateway_cas = match &config.upstream_ca_file {
            Some(path) => read_ca_file(path)?,
            None => Vec::new(),
        };
        for u in &config.upstreams {
            let Ok(uri) = u.url.parse::<http::Uri>() else {
                return Err(ConfigError::BadUpstreamUrl(u.name.clone()));
            };
            if uri.scheme() != Some(&http::uri::Scheme::HTTPS) {
                if u.ca_file.is_some() || u.insecure_skip_verify {
                    return Err(ConfigError::TlsOnPlainUpstream(u.name.clone()));
                }
                continue;
            }
            let host = uri.host().unwrap_or_default();
            if server_name(host).is_none() {
                return Err(ConfigError::BadTlsHost(u.name.clone()));
            }
            let settings = TlsSettings {
                ca_file: u.ca_file.as_deref(),
                insecure: u.insecure_skip_verify,
            };
            let key = authority_key(&uri);
            if let Some((other, seen, _)) = by_authority.get(&key) {
                if *seen != settings {
                    return Err(ConfigError::TlsConflict(other.clone(), u.name.clone()));
                }
                continue;
            }
            let client = if u.insecure_skip_verify {
                if warn {
                    tracing::warn!(
                        upstream = %u.name,
                        url = %u.url,
                        "insecure_skip_verify: the upstream's TLS certificate is NOT verified; \
                         anyone on the path can read and change its traffic"
                    );
                }
                ClientConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .expect("ring supports rustls' default protocol versions")
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
                    .with_no_client_auth()
            } else {
                let mut roots = native_roots().clone();
                let upstream_cas = match &u.ca_file {
                    Some(path) => read_ca_file(path)?,
                    None => Vec::new(),
                };
                for (path, cert) in gateway_cas.iter().chain(&upstream_cas) {
                    roots
                        .add(cert.clone())
                        .map_err(|source| ConfigError::CaFileBadCert {
                            path: path.to_path_buf(),
                            source,
                        })?;
                }
                if roots.is_empty() && warn {
                    tracing::warn!(
                        upstream = %u.name,
                        "no trusted CA certificates: the system has none (install ca-certificates) \
                         and no CA file is configured; TLS handshakes with it will fail"
                    );
                }
                ClientConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .expect("ring supports rustls' default protocol versions")
                    .with_root_certificates(roots)
                    .with_no_client_auth()
            };
            let mut client = client;
            // HTTP/1.1 only: the gateway's client speaks nothing else to upstreams.
            client.alpn_protocols = vec![b"http/1.1".to_vec()];
            let connector = TlsConnectorOf(TlsConnector::from(Arc::new(client)));
            by_authority.insert(key, (u.name.clone(), settings, connector));
        }
        Ok(Self {
            by_authority: by_authority
                .into_iter()
                .map(|(k, (_, _, c))| (k, c))
                .collect(),
        })
    }
}

#[derive(PartialEq, Eq)]
struct TlsSettings<'a> {
    ca_file: Option<&'a Path>,
    insecure: bool,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The system's trusted roots, read once per process (a few hundred files on a typical
/// distribution). Certificates the system has but rustls cannot use are skipped.
fn native_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::debug!(error = %e, "a system CA certificate could not be read");
        }
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(found.certs);
        roots
    })
}

/// Largest CA bundle read (the system's whole bundle is about 200 KiB).
const MAX_CA_FILE_BYTES: u64 = 8 << 20;

/// The certificates of a PEM bundle, each with the file's path (for errors).
fn read_ca_file(path: &Path) -> Result<Vec<(&Path, CertificateDer<'static>)>, ConfigError> {
    use std::io::Read as _;
    let read_error = |source| ConfigError::CaFileRead {
        path: path.to_owned(),
        source,
    };
    // Bounded: a path such as /dev/zero must not hang the start.
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_CA_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_CA_FILE_BYTES {
        return Err(read_error(io::Error::other(format!(
            "larger than {} MiB",
            MAX_CA_FILE_BYTES >> 20
        ))));
    }
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| ConfigError::CaFileBadPem {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(ConfigError::CaFileEmpty(path.to_owned()));
    }
    Ok(certs.into_iter().map(|c| (path, c)).collect())
}

/// The name a TLS upstream is verified against (a DNS name or an IP address; `[::1]` as `::1`).
fn server_name(host: &str) -> Option<ServerName<'static>> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).ok()
}

/// `host:port` of an upstream URI, port 443 when the URL has none (the connection pool and
/// the TLS settings are per host and port).
fn authority_key(uri: &http::Uri) -> String {
    format!(
        "{}:{}",
        uri.host().unwrap_or_default().to_ascii_lowercase(),
        uri.port_u16().unwrap_or(443)
    )
}

/// hyper-util's connector for the legacy client: TCP (with `TCP_NODELAY` and the connect
/// timeout) by `HttpConnector`, then TLS for `https://` URIs.
#[derive(Clone)]
pub(crate) struct Connector {
    http: HttpConnector,
    tls: Arc<UpstreamTls>,
    handshake_timeout: Duration,
}

impl Connector {
    pub(crate) fn new(connect_timeout: Duration, tls: UpstreamTls) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        // https:// URIs come here too; TLS is layered on top below.
        http.enforce_http(false);
        Self {
            http,
            tls: Arc::new(tls),
            handshake_timeout: connect_timeout,
        }
    }
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = UpstreamStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<UpstreamStream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        tower_service::Service::<http::Uri>::poll_ready(&mut self.http, cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let tls = https.then(|| {
            let key = authority_key(&uri);
            let connector = self.tls.by_authority.get(&key).map(|c| c.0.clone());
            (key, connector, uri.host().and_then(server_name))
        });
        let connecting = self.http.call(uri);
        let handshake_timeout = self.handshake_timeout;
        Box::pin(async move {
            let tcp = connecting.await?.into_inner();
            let Some((authority, connector, name)) = tls else {
                return Ok(UpstreamStream(TokioIo::new(Stream::Plain(tcp))));
            };
            let fail = |source: io::Error| TlsHandshakeError {
                authority: authority.clone(),
                source,
            };
            // Only URLs of configured upstreams are requested, and those are checked at start.
            let (Some(connector), Some(name)) = (connector, name) else {
                return Err(fail(io::Error::other("no TLS settings for this upstream")).into());
            };
            let tls = tokio::time::timeout(handshake_timeout, connector.connect(name, tcp))
                .await
                .map_err(|_| {
                    fail(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no handshake within {handshake_timeout:?}"),
                    ))
                })?
                .map_err(fail)?;
            Ok(UpstreamStream(TokioIo::new(Stream::Tls(Box::new(tls)))))
        })
    }
}

/// Whether a client error was a TLS handshake failure (anywhere in its chain of sources).
pub(crate) fn is_tls_handshake(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<TlsHandshakeError>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// A connection to an upstream, plain or TLS.
pub struct UpstreamStream(TokioIo<Stream>);

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for UpstreamStream {
    fn connected(&self) -> Connected {
        match self.0.inner() {
            Stream::Plain(tcp) => tcp.connected(),
            Stream::Tls(tls) => tls.get_ref().0.connected(),
        }
    }
}

impl hyper::rt::Read for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }
}

/// `insecure_skip_verify = true`: any certificate is accepted (the handshake's signatures are
/// still checked, so the session is encrypted — to whoever answered).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
