//! Mutual TLS for mPlane peers: rustls configurations from the reference PEM layout, peer
//! identities from certificate subjects, and reloading certificates without a restart.
//!
//! ```text
//!  [TLS] cert/key/ca-chain/crl ──server_config──► ServerConfig (client cert required, ALPN http/1.1)
//!                               └─client_config──► ClientConfig (server chain + name/IP checked)
//!  ReloadableServerConfig::accept(tcp) ──► (TlsStream, Identity of the client)
//!  Connector::connect(host, port)      ──► (TlsStream, Identity of the server)
//! ```
//!
//! # Files (reference digest §9)
//! * `cert`: our certificate, optionally followed by intermediates. Only PEM blocks are read,
//!   so the `openssl x509 -text` dump that the reference PKI puts before the block is fine.
//! * `key`: unencrypted PEM private key, PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
//! * `ca-chain`: PEM bundle; **every** certificate in it is a trust anchor, for client
//!   certificates (server side) and server certificates (client side) alike.
//! * `crl` (ours, optional): PEM CRLs. Only the client's end-entity certificate is checked,
//!   and a client certificate whose issuer has no CRL in the file is **rejected** (rustls'
//!   "unknown status" is an error), so the file must hold a CRL of every CA issuing client
//!   certificates. CRL expiry (`nextUpdate`) is not enforced.
//!
//! Only the `ring` crypto provider is used, via `builder_with_provider`, so no process-wide
//! default provider needs to be installed.
//!
//! # Identities (reference digest §8)
//! [`Identity::from_certificate`] joins the **values** of the subject's RDNs in certificate
//! order with `.` (a multi-valued RDN contributes its first value, no escaping), exactly as
//! the reference builds it from Python's `getpeercert()['subject']`:
//! `DC=org, DC=mplane, O=SSB, OU=Clients, CN=Client-1` → `org.mplane.SSB.Clients.Client-1`.
//! The reference scrapes its *own* identity from the text dump (dropping every space);
//! [`local_identity`] reads the DER instead, so it also works without the dump and keeps
//! spaces — the same string the peers derive for us.
//!
//! # Handshake failures
//! With TLS 1.3 a client whose certificate is rejected sees the failure only at its first
//! read; the reason is in the server's [`TlsError::Handshake`]. Log it with the peer address.
//! Callers should bound handshakes with `tokio::time::timeout`.
//!
//! # Serving
//! Without `[TLS]` there is no handshake and every peer is [`Identity::unauthenticated`].
//!
//! ```no_run
//! # async fn serve(config: mplane::config::Config) -> Result<(), Box<dyn std::error::Error>> {
//! use std::{sync::Arc, time::Duration};
//! use mplane::tls::ReloadableServerConfig;
//! let tls = Arc::new(ReloadableServerConfig::load(config.tls.clone().ok_or("no [TLS]")?)?);
//! let port = config.require_component()?.listen_port;
//! let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;
//! loop {
//!     let (tcp, peer) = listener.accept().await?;
//!     let tls = tls.clone(); // `tls.reload()` elsewhere (e.g. on SIGHUP) affects new connections
//!     tokio::spawn(async move {
//!         match tokio::time::timeout(Duration::from_secs(10), tls.accept(tcp)).await {
//!             Ok(Ok((_stream, identity))) => {
//!                 // serve HTTP/1.1 on the stream; `azn.check(&identity, label, token)` per capability
//!                 tracing::debug!(%peer, %identity, "TLS peer");
//!             }
//!             Ok(Err(e)) => tracing::warn!(%peer, "TLS handshake failed: {e}"),
//!             Err(_) => tracing::warn!(%peer, "TLS handshake timed out"),
//!         }
//!     });
//! }
//! # }
//! ```
#![forbid(unsafe_code)]

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};
use x509_parser::der_parser::asn1_rs::Tag;

use crate::config::TlsFiles;

/// The identity of every peer when there is no `[TLS]` section (reference `DUMMY_DN`).
pub const UNAUTHENTICATED: &str = "Identity.Unauthenticated.Default";

/// The ALPN protocol offered and accepted (the reference speaks HTTP/1.1 only).
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// Errors loading TLS material, building configurations, or handshaking.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read (operator: path or permissions).
    #[error("{}: cannot read {what}: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// Which `[TLS]` key it came from.
        what: &'static str,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A PEM block is malformed (operator: broken file).
    #[error("{}: bad PEM in {what}: {source}", file.display())]
    Pem {
        /// The file.
        file: PathBuf,
        /// Which `[TLS]` key it came from.
        what: &'static str,
        /// The PEM error.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The file holds no PEM block of the needed kind (operator: wrong file).
    #[error("{}: no {kind} found in {what}", file.display())]
    Missing {
        /// The file.
        file: PathBuf,
        /// Which `[TLS]` key it came from.
        what: &'static str,
        /// What was looked for (`certificate`, `private key`, `CRL`).
        kind: &'static str,
    },
    /// A CA certificate was refused as a trust anchor (operator: not a CA certificate).
    #[error("{}: unusable CA certificate in ca-chain: {source}", file.display())]
    TrustAnchor {
        /// The `ca-chain` file.
        file: PathBuf,
        /// The reason from rustls/webpki.
        #[source]
        source: rustls::Error,
    },
    /// The client-certificate verifier could not be built (e.g. a CRL does not parse).
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// rustls refused the configuration (e.g. key does not match the certificate).
    #[error("{what}: {source}")]
    Config {
        /// What was being configured.
        what: &'static str,
        /// The rustls error.
        #[source]
        source: rustls::Error,
    },
    /// A certificate's subject could not be turned into an identity.
    #[error("certificate subject: {0}")]
    Identity(String),
    /// The host name is neither a DNS name nor an IP address.
    #[error("{0:?} is not a valid server name")]
    ServerName(String),
    /// TCP connect failed.
    #[error("connect to {addr}: {source}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The TLS handshake failed (peer at fault, or untrusted/expired/revoked certificate).
    #[error("TLS handshake: {0}")]
    Handshake(#[source] io::Error),
    /// The handshake succeeded but the peer sent no certificate (cannot happen on the
    /// server side, where certificates are mandatory).
    #[error("peer presented no certificate")]
    NoPeerCertificate,
}

/// A peer identity: the dot-joined subject RDN values of its certificate, or
/// [`UNAUTHENTICATED`] without TLS. Compared byte-exactly (as the reference's dict lookups).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity(String);

impl Identity {
    /// Wraps an identity string as written in `[Roles]`.
    pub fn new(identity: impl Into<String>) -> Identity {
        Identity(identity.into())
    }

    /// `Identity.Unauthenticated.Default`, the identity of everyone without `[TLS]`.
    pub fn unauthenticated() -> Identity {
        Identity(UNAUTHENTICATED.to_owned())
    }

    /// Whether this is [`UNAUTHENTICATED`].
    pub fn is_unauthenticated(&self) -> bool {
        self.0 == UNAUTHENTICATED
    }

    /// The identity string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Derives the identity from a DER certificate as the reference does (module doc).
    pub fn from_certificate(der: &[u8]) -> Result<Identity, TlsError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| TlsError::Identity(format!("not an X.509 certificate: {e}")))?;
        let mut values = Vec::new();
        for rdn in cert.subject().iter() {
            // An RDN is a non-empty SET; Python's tuple keeps the DER order, `elem[0]`.
            let Some(attr) = rdn.iter().next() else {
                continue;
            };
            values.push(attribute_text(attr)?);
        }
        Ok(Identity(values.join(".")))
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Identity {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Identity {
    fn from(s: &str) -> Identity {
        Identity(s.to_owned())
    }
}

impl From<String> for Identity {
    fn from(s: String) -> Identity {
        Identity(s)
    }
}

/// The text of a directory string as OpenSSL's `ASN1_STRING_to_UTF8` (used by Python's
/// `getpeercert`) yields it.
fn attribute_text(attr: &x509_parser::x509::AttributeTypeAndValue<'_>) -> Result<String, TlsError> {
    if let Ok(s) = attr.as_str() {
        return Ok(s.to_owned());
    }
    let data = attr.attr_value().data;
    let bad = |what: &str| TlsError::Identity(format!("{what} in attribute {}", attr.attr_type()));
    match attr.attr_value().tag() {
        Tag::BmpString => {
            if data.len() % 2 != 0 {
                return Err(bad("odd-length BMPString"));
            }
            let units = data
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .map_err(|_| bad("invalid BMPString"))
        }
        Tag::UniversalString => {
            if data.len() % 4 != 0 {
                return Err(bad("bad-length UniversalString"));
            }
            data.chunks_exact(4)
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect::<Option<String>>()
                .ok_or_else(|| bad("invalid UniversalString"))
        }
        // OpenSSL treats T61String as Latin-1; VisibleString is ASCII.
        Tag::T61String | Tag::VisibleString => Ok(data.iter().map(|&b| char::from(b)).collect()),
        _ => Err(bad("a non-string value")),
    }
}

/// Our own identity, from the first certificate in the `cert` file (DER, see module doc).
pub fn local_identity(cert: &Path) -> Result<Identity, TlsError> {
    let chain = load_certs(cert, "cert")?;
    Identity::from_certificate(&chain[0])
}

/// The identity of the peer of an established rustls connection (its first certificate).
pub fn peer_identity(conn: &rustls::CommonState) -> Result<Identity, TlsError> {
    let cert = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or(TlsError::NoPeerCertificate)?;
    Identity::from_certificate(cert)
}

fn read_file(file: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(file).map_err(|source| TlsError::Read {
        file: file.to_owned(),
        what,
        source,
    })
}

fn pem_all<T: PemObject>(
    file: &Path,
    what: &'static str,
    kind: &'static str,
) -> Result<Vec<T>, TlsError> {
    let bytes = read_file(file, what)?;
    let items = T::pem_slice_iter(&bytes)
        .collect::<Result<Vec<T>, _>>()
        .map_err(|source| TlsError::Pem {
            file: file.to_owned(),
            what,
            source,
        })?;
    if items.is_empty() {
        return Err(TlsError::Missing {
            file: file.to_owned(),
            what,
            kind,
        });
    }
    Ok(items)
}

/// All certificates in a PEM file (text outside PEM blocks is ignored); at least one.
pub fn load_certs(
    file: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    pem_all(file, what, "certificate")
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn load_key(file: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_file(file, "key")?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|source| match source {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::Missing {
            file: file.to_owned(),
            what: "key",
            kind: "private key",
        },
        source => TlsError::Pem {
            file: file.to_owned(),
            what: "key",
            source,
        },
    })
}

/// Every certificate of the `ca-chain` bundle as a trust anchor.
pub fn load_roots(file: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(file, "ca-chain")? {
        roots.add(cert).map_err(|source| TlsError::TrustAnchor {
            file: file.to_owned(),
            source,
        })?;
    }
    Ok(roots)
}

/// All CRLs in a PEM file; at least one.
pub fn load_crls(file: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    pem_all(file, "crl", "CRL")
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration: our `cert`/`key`, client certificates mandatory and verified
/// against `ca-chain` (and `crl` if set), TLS 1.2/1.3, ALPN `http/1.1`.
pub fn server_config(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let roots = Arc::new(load_roots(&files.ca_chain)?);
    let mut verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
    if let Some(crl) = &files.crl {
        verifier = verifier
            .with_crls(load_crls(crl)?)
            .only_check_end_entity_revocation();
    }
    let verifier = verifier.build()?;
    let chain = load_certs(&files.cert, "cert")?;
    let key = load_key(&files.key)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Config {
            what: "server protocol versions",
            source,
        })?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|source| TlsError::Config {
            what: "server certificate and key",
            source,
        })?;
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(config)
}

/// A client configuration: server chain verified against `ca-chain` and the server name or
/// IP checked against its SAN; our `cert`/`key` as client certificate; ALPN `http/1.1`.
/// `crl` is not used on the client side.
pub fn client_config(files: &TlsFiles) -> Result<ClientConfig, TlsError> {
    let roots = load_roots(&files.ca_chain)?;
    let chain = load_certs(&files.cert, "cert")?;
    let key = load_key(&files.key)?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Config {
            what: "client protocol versions",
            source,
        })?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|source| TlsError::Config {
            what: "client certificate and key",
            source,
        })?;
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(config)
}

#[derive(Debug)]
struct Loaded {
    config: Arc<ServerConfig>,
    local: Identity,
}

fn load_server(files: &TlsFiles) -> Result<Loaded, TlsError> {
    Ok(Loaded {
        config: Arc::new(server_config(files)?),
        local: local_identity(&files.cert)?,
    })
}

/// A server configuration that can be reloaded from its files at run time.
///
/// Each accepted connection takes the configuration current at accept time (one read lock
/// per connection); [`reload`](Self::reload) builds a complete new configuration first and
/// swaps it in only if that succeeded, so broken files leave the old one in service.
/// Established connections keep the configuration they were accepted with.
#[derive(Debug)]
pub struct ReloadableServerConfig {
    files: TlsFiles,
    current: RwLock<Loaded>,
}

impl ReloadableServerConfig {
    /// Loads the files (cert, key, ca-chain, optional crl).
    pub fn load(files: TlsFiles) -> Result<ReloadableServerConfig, TlsError> {
        let loaded = load_server(&files)?;
        Ok(ReloadableServerConfig {
            files,
            current: RwLock::new(loaded),
        })
    }

    /// The files this configuration is loaded from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The configuration new connections get now.
    pub fn current(&self) -> Arc<ServerConfig> {
        // A poisoned lock still holds a complete `Loaded` (swaps are a single assignment).
        let guard = self.current.read().unwrap_or_else(|e| e.into_inner());
        guard.config.clone()
    }

    /// Our identity from the current `cert`.
    pub fn local_identity(&self) -> Identity {
        let guard = self.current.read().unwrap_or_else(|e| e.into_inner());
        guard.local.clone()
    }

    /// An acceptor for the current configuration.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current())
    }

    /// Re-reads cert, key, ca-chain and crl. On error the previous configuration stays in
    /// service and the error is returned.
    pub fn reload(&self) -> Result<(), TlsError> {
        let loaded = load_server(&self.files)?;
        let mut guard = self.current.write().unwrap_or_else(|e| e.into_inner());
        *guard = loaded;
        Ok(())
    }

    /// Handshakes on `stream` with the current configuration; see [`accept`].
    pub async fn accept<IO>(
        &self,
        stream: IO,
    ) -> Result<(server::TlsStream<IO>, Identity), TlsError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        accept(&self.acceptor(), stream).await
    }
}

/// Server-side handshake; returns the stream and the client's [`Identity`].
pub async fn accept<IO>(
    acceptor: &TlsAcceptor,
    stream: IO,
) -> Result<(server::TlsStream<IO>, Identity), TlsError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let tls = acceptor.accept(stream).await.map_err(TlsError::Handshake)?;
    let identity = peer_identity(tls.get_ref().1)?;
    Ok((tls, identity))
}

/// Client side: connects to peers and reports their identity.
#[derive(Debug, Clone)]
pub struct Connector {
    config: Arc<ClientConfig>,
}

impl Connector {
    /// A connector from `[TLS]` files ([`client_config`]).
    pub fn new(files: &TlsFiles) -> Result<Connector, TlsError> {
        Ok(Connector {
            config: Arc::new(client_config(files)?),
        })
    }

    /// A connector from an existing client configuration.
    pub fn from_config(config: Arc<ClientConfig>) -> Connector {
        Connector { config }
    }

    /// The client configuration (e.g. for hyper-util's connector).
    pub fn config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }

    /// Handshakes on an established stream; `host` (DNS name or IP, IPv6 with or without
    /// brackets) must match the server certificate's SAN.
    pub async fn connect_stream<IO>(
        &self,
        host: &str,
        stream: IO,
    ) -> Result<(client::TlsStream<IO>, Identity), TlsError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let name = server_name(host)?;
        let tls = TlsConnector::from(self.config.clone())
            .connect(name, stream)
            .await
            .map_err(TlsError::Handshake)?;
        let identity = peer_identity(tls.get_ref().1)?;
        Ok((tls, identity))
    }

    /// Opens a TCP connection to `host:port` and handshakes.
    pub async fn connect(
        &self,
        host: &str,
        port: u16,
    ) -> Result<(client::TlsStream<TcpStream>, Identity), TlsError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let tcp = TcpStream::connect((bare, port))
            .await
            .map_err(|source| TlsError::Connect {
                addr: format!("{host}:{port}"),
                source,
            })?;
        self.connect_stream(host, tcp).await
    }
}

/// A rustls server name from a host as found in a URL or `client_host`.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(bare.to_owned()).map_err(|_| TlsError::ServerName(host.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names() {
        assert!(matches!(
            server_name("127.0.0.1"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(server_name("[::1]"), Ok(ServerName::IpAddress(_))));
        assert!(matches!(server_name("::1"), Ok(ServerName::IpAddress(_))));
        assert!(matches!(
            server_name("localhost"),
            Ok(ServerName::DnsName(_))
        ));
        assert!(server_name("bad host").is_err());
    }

    #[test]
    fn identity_basics() {
        assert!(Identity::unauthenticated().is_unauthenticated());
        assert_eq!(Identity::from("a.b").to_string(), "a.b");
        assert!(Identity::from_certificate(b"junk").is_err());
    }
}
