//! TLS for the tests: a certificate authority made per test (rcgen) and a TLS-terminating
//! front (tokio-rustls) before a plain upstream, as an ingress in front of an engine.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};

/// A certificate authority made for one test, its certificate written as a PEM file.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pub pem: PathBuf,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("infermon test CA {name}"),
        );
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let pem = std::env::temp_dir().join(format!(
            "infermon-gateway-tls-{}-{name}.pem",
            std::process::id()
        ));
        std::fs::write(&pem, issuer.pem()).unwrap();
        Self { issuer, pem }
    }

    /// A server certificate for `names` (DNS names or IP addresses) and its key.
    pub fn server_cert(&self, names: &[&str]) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (cert.der().clone(), key)
    }
}

/// What the TLS front saw of each accepted connection: the ALPN protocol agreed on.
pub type Seen = Arc<Mutex<Vec<Option<Vec<u8>>>>>;

/// Serves TLS on a loopback port with `cert` and passes the plaintext to `upstream`
/// (`http://host:port`), as an ingress in front of an engine does. Returns the port.
pub async fn tls_front(
    upstream: &str,
    cert: (CertificateDer<'static>, PrivateKeyDer<'static>),
) -> (u16, Seen) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.0], cert.1)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let target = upstream.trim_start_matches("http://").to_owned();
    let seen: Seen = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, target, record) = (acceptor.clone(), target.clone(), record.clone());
            tokio::spawn(async move {
                // A refused handshake is what some tests are about: nothing to forward then.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                record
                    .lock()
                    .unwrap()
                    .push(tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec));
                let Ok(mut plain) = TcpStream::connect(&target).await else {
                    return;
                };
                let _ = plain.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (port, seen)
}

/// A plain TCP forwarder to `upstream` (`http://host:port`): the same extra hop as
/// [`tls_front`] without TLS, so that comparing the two measures TLS alone. Returns the port.
pub async fn plain_front(upstream: &str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let target = upstream.trim_start_matches("http://").to_owned();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            let target = target.clone();
            tokio::spawn(async move {
                let Ok(mut plain) = TcpStream::connect(&target).await else {
                    return;
                };
                let _ = plain.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut tcp, &mut plain).await;
            });
        }
    });
    port
}
