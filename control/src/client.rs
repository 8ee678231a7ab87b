//! # HTTPS client (client-initiated workflow)
//!
//! Talks to a component as the reference client does (DIGEST §7a): discovers
//! capabilities (GET the capability URL; an HTML page is crawled by following
//! every `href`, an mPlane reply is a capability or an envelope of them),
//! POSTs specifications, redemptions and interrupts to `/` (or the
//! capability's `link`) with the exact media type `application/x-mplane+json`,
//! and parses the reply. One HTTP/1.1 connection per request, over mutual
//! TLS with a [`Connector`] (`https://`) or plain TCP (`http://`).

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::either::Either;

use crate::model::{self, MEDIA_TYPE, Message, ModelError, Statement, StatementKind};
use crate::registry::Registries;
use crate::tls::{Connector, Identity, TlsError};

/// Errors of the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The URL is not `http(s)://host[:port][/path]`.
    #[error("bad URL {0:?}")]
    Url(String),
    /// An `https://` URL without a TLS connector.
    #[error("https URL {0:?} but no TLS configuration")]
    NoTls(String),
    /// TCP connection or TLS handshake failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// TCP connection failed.
    #[error("connect to {addr}: {source}")]
    Connect {
        /// Address.
        addr: String,
        /// Cause.
        source: std::io::Error,
    },
    /// HTTP protocol error.
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    /// Request building failed.
    #[error("HTTP request: {0}")]
    Request(#[from] hyper::http::Error),
    /// The component answered with a non-200 status.
    #[error("HTTP {status}: {body}")]
    Status {
        /// Status code.
        status: StatusCode,
        /// Body (text, truncated to 1000 bytes).
        body: String,
    },
    /// The reply is not `application/x-mplane+json`.
    #[error("reply has media type {0:?}, not application/x-mplane+json")]
    MediaType(String),
    /// The reply is not a valid mPlane message.
    #[error("reply: {0}")]
    Parse(#[from] ModelError),
    /// The reply body is not UTF-8.
    #[error("reply body is not UTF-8")]
    Utf8,
    /// The reply body is larger than [`MAX_REPLY`].
    #[error("reply body larger than {MAX_REPLY} bytes")]
    TooLarge,
    /// A download could not be written.
    #[error("write: {0}")]
    Write(std::io::Error),
}

/// Largest reply body read (256 MiB): a peer cannot make the client hold more.
pub const MAX_REPLY: usize = 256 << 20;

/// A parsed `http(s)://host[:port]/path` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// `true` for `https`.
    pub tls: bool,
    /// Host (IPv6 without brackets).
    pub host: String,
    /// Port (default 443 / 80).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Url {
    /// Parses an absolute URL.
    pub fn parse(url: &str) -> Result<Url, ClientError> {
        let bad = || ClientError::Url(url.to_string());
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(bad());
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = if let Some(h) = authority.strip_prefix('[') {
            let (h, after) = h.split_once(']').ok_or_else(bad)?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p.parse().map_err(|_| bad())?),
                None if after.is_empty() => None,
                None => return Err(bad()),
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p.parse().map_err(|_| bad())?)),
                None => (authority.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(bad());
        }
        Ok(Url {
            tls,
            port: port.unwrap_or(if tls { 443 } else { 80 }),
            host,
            path: path.to_string(),
        })
    }

    /// The same server with another path (`href` relative to the host).
    pub fn with_path(&self, path: &str) -> Url {
        let mut u = self.clone();
        u.path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        u
    }

    /// `host:port` (an IPv6 host in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A raw HTTP reply.
#[derive(Debug, Clone)]
pub struct HttpReply {
    /// Status.
    pub status: StatusCode,
    /// `Content-Type`, if any.
    pub content_type: Option<String>,
    /// All response headers.
    pub headers: hyper::HeaderMap,
    /// Body.
    pub body: Bytes,
    /// The server's identity (unauthenticated over plain HTTP).
    pub peer: Identity,
}

/// An mPlane client.
#[derive(Debug, Clone)]
pub struct Client {
    connector: Option<Connector>,
    registries: Arc<Registries>,
}

impl Client {
    /// A client; `connector` is needed for `https://` URLs.
    pub fn new(connector: Option<Connector>, registries: Arc<Registries>) -> Client {
        Client {
            connector,
            registries,
        }
    }

    /// One HTTP request on a fresh connection.
    pub async fn request(
        &self,
        method: Method,
        url: &Url,
        body: Option<(&str, String)>,
    ) -> Result<HttpReply, ClientError> {
        self.request_with(method, url, body, &[]).await
    }

    /// Like [`Self::request`], with extra request headers (e.g. `Range` to download part
    /// of an export file). The reply's headers are in [`HttpReply::headers`].
    pub async fn request_with(
        &self,
        method: Method,
        url: &Url,
        body: Option<(&str, String)>,
        headers: &[(&str, &str)],
    ) -> Result<HttpReply, ClientError> {
        let (io, peer) = self.open(url).await?;
        exchange(io, peer, method, url, body, headers).await
    }

    /// Downloads `url` (GET) into `out` as it arrives, with no size limit (an export file,
    /// unlike a reply to a message, may be any size); the bytes written. Any status but 200
    /// is [`ClientError::Status`], and nothing is written then.
    pub async fn download<W>(&self, url: &Url, out: &mut W) -> Result<u64, ClientError>
    where
        W: tokio::io::AsyncWrite + Unpin,
    {
        let (io, _) = self.open(url).await?;
        let ex = start(io, Method::GET, url, None, &[]).await?;
        let status = ex.resp.status();
        if status != StatusCode::OK {
            let mut text = Vec::new();
            let _ = copy_body(ex, &mut text).await;
            return Err(ClientError::Status {
                status,
                body: String::from_utf8_lossy(&text).chars().take(1000).collect(),
            });
        }
        copy_body(ex, out).await
    }

    /// The identity of the server at `url`, from a TLS handshake and nothing more (as the
    /// reference component learns its listener's identity before it registers); over plain
    /// HTTP, the unauthenticated identity once a TCP connection is made.
    pub async fn peer_identity(&self, url: &Url) -> Result<Identity, ClientError> {
        Ok(self.open(url).await?.1)
    }

    /// A connection to `url`'s server, over TLS for `https://`, and the server's identity
    /// (unauthenticated over plain HTTP).
    async fn open(&self, url: &Url) -> Result<(Connection, Identity), ClientError> {
        let tcp = connect(url).await?;
        if !url.tls {
            return Ok((Either::Right(tcp), Identity::unauthenticated()));
        }
        let conn = self
            .connector
            .as_ref()
            .ok_or_else(|| ClientError::NoTls(url.authority()))?;
        let (stream, peer) = conn.connect_stream(&url.host, tcp).await?;
        Ok((Either::Left(stream), peer))
    }

    /// Sends one mPlane message to `url` and parses the mPlane reply.
    pub async fn send(&self, url: &Url, msg: &Message) -> Result<Message, ClientError> {
        let r = self
            .request(Method::POST, url, Some((MEDIA_TYPE, msg.unparse())))
            .await?;
        self.parse_reply(r)
    }

    fn parse_reply(&self, r: HttpReply) -> Result<Message, ClientError> {
        if r.status != StatusCode::OK {
            let body: String = String::from_utf8_lossy(&r.body)
                .chars()
                .take(1000)
                .collect();
            return Err(ClientError::Status {
                status: r.status,
                body,
            });
        }
        let ct = r.content_type.unwrap_or_default();
        if ct != MEDIA_TYPE {
            return Err(ClientError::MediaType(ct));
        }
        let text = std::str::from_utf8(&r.body).map_err(|_| ClientError::Utf8)?;
        Ok(model::parse(text, &self.registries)?)
    }

    /// Discovers capabilities at `url` (e.g. `https://host:port/capability`):
    /// an HTML page is crawled one level deep by following its `href`s.
    pub async fn capabilities(&self, url: &Url) -> Result<Vec<Statement>, ClientError> {
        let r = self.request(Method::GET, url, None).await?;
        if r.content_type.as_deref() == Some(MEDIA_TYPE) {
            return Ok(collect_capabilities(self.parse_reply(r)?));
        }
        if r.status != StatusCode::OK {
            return Err(ClientError::Status {
                status: r.status,
                body: String::from_utf8_lossy(&r.body).into_owned(),
            });
        }
        let page = String::from_utf8_lossy(&r.body).into_owned();
        let mut caps = Vec::new();
        for href in hrefs(&page) {
            let r = self
                .request(Method::GET, &url.with_path(&href), None)
                .await?;
            caps.extend(collect_capabilities(self.parse_reply(r)?));
        }
        Ok(caps)
    }

    /// Sends a specification; the reply is a receipt, result, envelope or exception.
    pub async fn specify(&self, url: &Url, spec: &Statement) -> Result<Message, ClientError> {
        self.send(url, &Message::Statement(spec.clone())).await
    }

    /// Redeems a receipt (sent as the full receipt with kind `redemption`, as the reference client does).
    pub async fn redeem(&self, url: &Url, receipt: &Statement) -> Result<Message, ClientError> {
        let r = receipt.derive(StatementKind::Redemption);
        self.send(url, &Message::Statement(r)).await
    }

    /// Interrupts the job of a receipt; the reply is its current state.
    pub async fn interrupt(&self, url: &Url, receipt: &Statement) -> Result<Message, ClientError> {
        let r = receipt.derive(StatementKind::Interrupt);
        self.send(url, &Message::Statement(r)).await
    }
}

/// A connection to a server: TLS or plain TCP.
type Connection = Either<tokio_rustls::client::TlsStream<TcpStream>, TcpStream>;

/// A TCP connection to `url`'s host and port.
async fn connect(url: &Url) -> Result<TcpStream, ClientError> {
    TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|source| ClientError::Connect {
            addr: url.authority(),
            source,
        })
}

fn collect_capabilities(m: Message) -> Vec<Statement> {
    match m {
        Message::Statement(s) if s.kind == StatementKind::Capability => vec![s],
        Message::Envelope(e) => e
            .contents
            .into_iter()
            .flat_map(collect_capabilities)
            .collect(),
        _ => Vec::new(),
    }
}

/// The `href` targets of an HTML page (quoted with `'` or `"`).
pub fn hrefs(page: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = page;
    while let Some(i) = rest.find("href=") {
        rest = &rest[i + 5..];
        let Some(q) = rest.chars().next().filter(|c| *c == '\'' || *c == '"') else {
            continue;
        };
        rest = &rest[1..];
        if let Some(end) = rest.find(q) {
            out.push(rest[..end].to_string());
            rest = &rest[end..];
        }
    }
    out
}

/// A request sent and its response's head in: the body is read from `resp`, while the
/// connection is driven by its own task (stopped when this is dropped).
struct Exchange {
    resp: hyper::Response<hyper::body::Incoming>,
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    driver: Driver,
}

/// The task driving a connection, stopped when dropped.
struct Driver(tokio::task::JoinHandle<()>);

impl Drop for Driver {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn start<IO>(
    io: IO,
    method: Method,
    url: &Url,
    body: Option<(&str, String)>,
    headers: &[(&str, &str)],
) -> Result<Exchange, ClientError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = Request::builder()
        .method(method)
        .uri(url.path.as_str())
        .header(HOST, url.authority());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let payload = match body {
        Some((ct, b)) => {
            req = req.header(CONTENT_TYPE, ct);
            Bytes::from(b)
        }
        None => Bytes::new(),
    };
    let resp = sender.send_request(req.body(Full::new(payload))?).await?;
    Ok(Exchange {
        resp,
        sender,
        driver: Driver(driver),
    })
}

/// Copies the body of `ex` into `out` as it arrives; the bytes written.
async fn copy_body<W>(mut ex: Exchange, out: &mut W) -> Result<u64, ClientError>
where
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let mut n = 0u64;
    while let Some(frame) = ex.resp.body_mut().frame().await {
        if let Some(data) = frame?.data_ref() {
            out.write_all(data).await.map_err(ClientError::Write)?;
            n += data.len() as u64;
        }
    }
    out.flush().await.map_err(ClientError::Write)?;
    Ok(n)
}

async fn exchange<IO>(
    io: IO,
    peer: Identity,
    method: Method,
    url: &Url,
    body: Option<(&str, String)>,
    headers: &[(&str, &str)],
) -> Result<HttpReply, ClientError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Exchange {
        resp,
        sender,
        driver,
    } = start(io, method, url, body, headers).await?;
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let reply_headers = resp.headers().clone();
    let body = match http_body_util::Limited::new(resp.into_body(), MAX_REPLY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Err(match e.downcast::<hyper::Error>() {
                Ok(h) => ClientError::Http(*h),
                Err(_) => ClientError::TooLarge,
            });
        }
    };
    drop(sender);
    drop(driver);
    Ok(HttpReply {
        status,
        content_type,
        headers: reply_headers,
        body,
        peer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = Url::parse("https://127.0.0.1:8888/capability").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.path.as_str()),
            (true, "127.0.0.1", 8888, "/capability")
        );
        let u = Url::parse("http://[::1]:1/").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 1));
        assert_eq!(Url::parse("https://h").unwrap().port, 443);
        assert!(Url::parse("ftp://h").is_err());
        assert!(Url::parse("https://h:x/").is_err());
        assert_eq!(u.with_path("capability/x").path, "/capability/x");
    }

    #[test]
    fn href_extraction() {
        let page = "<a href='/capability/a'>x</a><a href=\"/b\">y</a><a href=bad>";
        assert_eq!(hrefs(page), vec!["/capability/a", "/b"]);
    }
}
