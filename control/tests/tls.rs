//! Mutual TLS over loopback with a freshly generated PKI (needs the `openssl` tool).
//!
//! Identities are cross-checked against `openssl x509 -subject -nameopt RFC2253` reversed
//! (what make-pki.sh prints), and — when `MPLANE_PEER_PYTHON` names a Python 3 interpreter —
//! against Python's own `getpeercert()`-style decoding (`ssl._ssl._test_decode_cert`) fed
//! through the reference SDK's join loop.

mod common;
mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::pki::Pki;
use mplane::config::TlsFiles;
use mplane::tls::{self, Connector, Identity, ReloadableServerConfig, TlsError};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const CLIENT: &str = "org.mplane.SSB.Clients.Client-1";
const COMPONENT: &str = "org.mplane.SSB.Components.Component-1";

/// Identity as make-pki.sh prints it: RFC 2253 subject, reversed, types dropped.
fn openssl_identity(cert: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in"])
        .arg(cert)
        .output()
        .unwrap();
    let subject = String::from_utf8(out.stdout).unwrap();
    let subject = subject.trim().trim_start_matches("subject=");
    let mut parts: Vec<&str> = subject
        .split(',')
        .map(|p| p.split_once('=').map_or(p, |(_, v)| v))
        .collect();
    parts.reverse();
    parts.join(".")
}

fn server_files(pki: &Pki, crl: bool) -> TlsFiles {
    TlsFiles {
        crl: crl.then(|| pki.path("crl.pem")),
        ..pki.files("component")
    }
}

/// Serves TLS echo connections (line by line) with the current config; each accept result
/// (client identity or error) is sent on the returned channel.
async fn echo_server(
    config: Arc<ReloadableServerConfig>,
) -> (
    u16,
    tokio::sync::mpsc::UnboundedReceiver<Result<Identity, TlsError>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let config = config.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match config.accept(tcp).await {
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                    Ok((stream, identity)) => {
                        let _ = tx.send(Ok(identity.clone()));
                        let (r, mut w) = tokio::io::split(stream);
                        let mut lines = BufReader::new(r).lines();
                        while let Ok(Some(line)) = lines.next_line().await {
                            let reply = format!("{identity} {line}\n");
                            if w.write_all(reply.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (port, rx)
}

async fn echo<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    msg: &str,
) -> std::io::Result<String> {
    s.write_all(format!("{msg}\n").as_bytes()).await?;
    let mut line = String::new();
    let n = BufReader::new(s).read_line(&mut line).await?;
    if n == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(line.trim_end().to_owned())
}

#[test]
fn identities_match_openssl_and_reference_layout() {
    let pki = Pki::new();
    for (name, expected) in [
        ("client", CLIENT),
        ("component", COMPONENT),
        ("supervisor", "org.mplane.SSB.Supervisors.Supervisor-1"),
        ("ca", "org.mplane.Root-CA.Root-CA-1"),
    ] {
        let cert = pki.path(&format!("{name}.crt"));
        assert_eq!(tls::local_identity(&cert).unwrap().as_str(), expected);
        assert_eq!(openssl_identity(&cert), expected, "{name}");
    }
    // Multi-valued RDN: its first value in DER order (what Python's `elem[0]` is).
    assert_eq!(
        tls::local_identity(&pki.path("multi.crt"))
            .unwrap()
            .as_str(),
        "org.mplane.SSB.Clients.Client-1"
    );
}

/// Compared with Python's certificate decoding, in the reference peer venv.
#[test]
fn identities_match_python_getpeercert() {
    // The reference peer venv (created on first use; MPLANE_PEER_PYTHON picks its base).
    let python = support::peer::python();
    let pki = Pki::new();
    // The loop of mplane/tls.py extract_peer_identity over getpeercert()['subject'].
    let script = "import ssl,sys\n\
        for p in sys.argv[1:]:\n\
        \x20   cert = ssl._ssl._test_decode_cert(p)\n\
        \x20   identity = ''\n\
        \x20   for elem in cert.get('subject'):\n\
        \x20       identity = str(elem[0][1]) if identity == '' else identity + '.' + str(elem[0][1])\n\
        \x20   print(identity)\n";
    let names = [
        "client",
        "component",
        "supervisor",
        "multi",
        "other",
        "expired",
        "ca",
    ];
    let out = Command::new(&python)
        .arg("-c")
        .arg(script)
        .args(names.iter().map(|n| pki.path(&format!("{n}.crt"))))
        .output()
        .expect("MPLANE_PEER_PYTHON does not run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let python_ids: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    for (name, py) in names.iter().zip(&python_ids) {
        let ours = tls::local_identity(&pki.path(&format!("{name}.crt"))).unwrap();
        assert_eq!(ours.as_str(), py, "{name}");
    }
}

#[tokio::test]
async fn mutual_tls_handshake_and_identities() {
    let pki = Pki::new();
    let server = Arc::new(ReloadableServerConfig::load(server_files(&pki, true)).unwrap());
    assert_eq!(server.local_identity().as_str(), COMPONENT);
    assert_eq!(server.current().alpn_protocols, [b"http/1.1".to_vec()]);
    let (port, mut accepted) = echo_server(server).await;

    // By IP (SAN IP:127.0.0.1) and by name (SAN DNS:localhost); PKCS#1 server key, SEC1 client key.
    let client = Connector::new(&pki.files("client")).unwrap();
    for host in ["127.0.0.1", "localhost"] {
        let (mut stream, server_id) = client.connect(host, port).await.unwrap();
        assert_eq!(server_id.as_str(), COMPONENT);
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        assert_eq!(accepted.recv().await.unwrap().unwrap().as_str(), CLIENT);
        assert_eq!(
            echo(&mut stream, "hi").await.unwrap(),
            format!("{CLIENT} hi")
        );
    }
    let supervisor = Connector::new(&pki.files("supervisor")).unwrap();
    let (mut s, _) = supervisor.connect("127.0.0.1", port).await.unwrap();
    assert_eq!(
        accepted.recv().await.unwrap().unwrap().as_str(),
        "org.mplane.SSB.Supervisors.Supervisor-1"
    );
    assert!(
        echo(&mut s, "x")
            .await
            .unwrap()
            .starts_with("org.mplane.SSB.Supervisors.Supervisor-1 ")
    );
}

/// Connects with `connector` and expects the server to refuse; returns the server's error.
async fn refused(
    connector: &Connector,
    port: u16,
    accepted: &mut tokio::sync::mpsc::UnboundedReceiver<Result<Identity, TlsError>>,
) -> String {
    // With TLS 1.3 the client may finish its side before the server rejects it; then the
    // first read fails.
    if let Ok((mut stream, _)) = connector.connect("127.0.0.1", port).await {
        assert!(echo(&mut stream, "hi").await.is_err());
    }
    match accepted.recv().await.unwrap() {
        Ok(id) => panic!("server accepted {id}"),
        Err(e) => {
            assert!(matches!(e, TlsError::Handshake(_)), "{e:?}");
            e.to_string()
        }
    }
}

#[tokio::test]
async fn server_rejects_bad_client_certificates() {
    let pki = Pki::new();
    let server = Arc::new(ReloadableServerConfig::load(server_files(&pki, true)).unwrap());
    let (port, mut accepted) = echo_server(server).await;

    // No client certificate at all.
    let anonymous = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(tls::load_roots(&pki.path("ca.crt")).unwrap())
    .with_no_client_auth();
    let e = refused(
        &Connector::from_config(Arc::new(anonymous)),
        port,
        &mut accepted,
    )
    .await;
    assert!(e.contains("no certificates"), "{e}");

    // A client certificate from an unrelated CA (trusting our CA for the server).
    let other = TlsFiles {
        ca_chain: pki.path("ca.crt"),
        ..pki.files("other")
    };
    let e = refused(&Connector::new(&other).unwrap(), port, &mut accepted).await;
    assert!(e.contains("UnknownIssuer"), "{e}");

    let e = refused(
        &Connector::new(&pki.files("expired")).unwrap(),
        port,
        &mut accepted,
    )
    .await;
    assert!(e.to_lowercase().contains("expired"), "{e}");

    let e = refused(
        &Connector::new(&pki.files("revoked")).unwrap(),
        port,
        &mut accepted,
    )
    .await;
    assert!(e.to_lowercase().contains("revoked"), "{e}");

    // The revoked certificate is accepted by a server without the CRL.
    let no_crl = Arc::new(ReloadableServerConfig::load(server_files(&pki, false)).unwrap());
    let (port2, mut accepted2) = echo_server(no_crl).await;
    let (mut s, _) = Connector::new(&pki.files("revoked"))
        .unwrap()
        .connect("127.0.0.1", port2)
        .await
        .unwrap();
    assert_eq!(accepted2.recv().await.unwrap().unwrap().as_str(), CLIENT);
    assert!(echo(&mut s, "ok").await.is_ok());
}

#[tokio::test]
async fn client_checks_server_chain_and_name() {
    let pki = Pki::new();
    let server = Arc::new(ReloadableServerConfig::load(server_files(&pki, false)).unwrap());
    let (port, _accepted) = echo_server(server).await;

    // Name not in the server's SAN.
    let client = Connector::new(&pki.files("client")).unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let e = client.connect_stream("example.org", tcp).await.unwrap_err();
    assert!(e.to_string().contains("not valid for name"), "{e}");

    // A client that trusts only another CA refuses our server.
    let distrustful = TlsFiles {
        ca_chain: pki.path("other-ca.crt"),
        ..pki.files("client")
    };
    let e = Connector::new(&distrustful)
        .unwrap()
        .connect("127.0.0.1", port)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
}

#[tokio::test]
async fn reload_swaps_certificate_and_keeps_connections() {
    let pki = Pki::new();
    // Serve from copies so the test can overwrite them.
    let live = tempfile::tempdir().unwrap();
    let files = TlsFiles {
        cert: live.path().join("server.crt"),
        key: live.path().join("server.key"),
        ca_chain: pki.path("ca.crt"),
        crl: None,
    };
    std::fs::copy(pki.path("component.crt"), &files.cert).unwrap();
    std::fs::copy(pki.path("component.key"), &files.key).unwrap();
    let server = Arc::new(ReloadableServerConfig::load(files.clone()).unwrap());
    let (port, mut accepted) = echo_server(server.clone()).await;
    let client = Connector::new(&pki.files("client")).unwrap();

    let (mut first, id) = client.connect("127.0.0.1", port).await.unwrap();
    assert_eq!(id.as_str(), COMPONENT);
    accepted.recv().await.unwrap().unwrap();
    assert!(echo(&mut first, "before").await.is_ok());

    std::fs::copy(pki.path("component2.crt"), &files.cert).unwrap();
    std::fs::copy(pki.path("component2.key"), &files.key).unwrap();
    server.reload().unwrap();
    assert_eq!(
        server.local_identity().as_str(),
        "org.mplane.SSB.Components.Component-2"
    );

    // The established connection is untouched; new ones see the new certificate.
    assert_eq!(
        echo(&mut first, "after").await.unwrap(),
        format!("{CLIENT} after")
    );
    let (mut second, id) = client.connect("127.0.0.1", port).await.unwrap();
    assert_eq!(id.as_str(), "org.mplane.SSB.Components.Component-2");
    accepted.recv().await.unwrap().unwrap();
    assert!(echo(&mut second, "new").await.is_ok());

    // Broken files: reload fails, the previous configuration stays in service.
    std::fs::write(&files.cert, "not a certificate\n").unwrap();
    let e = server.reload().unwrap_err();
    assert!(matches!(e, TlsError::Missing { .. }), "{e:?}");
    assert!(e.to_string().contains("server.crt"), "{e}");
    // Mismatched key and certificate.
    std::fs::copy(pki.path("component.crt"), &files.cert).unwrap();
    let e = server.reload().unwrap_err();
    assert!(matches!(e, TlsError::Config { .. }), "{e:?}");
    let (_third, id) = client.connect("127.0.0.1", port).await.unwrap();
    assert_eq!(id.as_str(), "org.mplane.SSB.Components.Component-2");
    assert!(echo(&mut first, "still").await.is_ok());
}

#[test]
fn loading_errors_name_the_file() {
    let pki = Pki::new();
    let mut files = pki.files("client");
    files.key = pki.path("nope.key");
    let e = tls::server_config(&files).unwrap_err();
    assert!(matches!(e, TlsError::Read { what: "key", .. }), "{e:?}");
    assert!(e.to_string().contains("nope.key"), "{e}");
    // A certificate file where the key should be.
    files.key = pki.path("client.crt");
    let e = tls::server_config(&files).unwrap_err();
    assert!(matches!(e, TlsError::Missing { what: "key", .. }), "{e:?}");
    // A CRL file without CRLs.
    let files = TlsFiles {
        crl: Some(pki.path("ca.crt")),
        ..pki.files("component")
    };
    let e = tls::server_config(&files).unwrap_err();
    assert!(matches!(e, TlsError::Missing { what: "crl", .. }), "{e:?}");
    // The text preamble before the PEM block is ignored.
    let text = std::fs::read_to_string(pki.path("client.crt")).unwrap();
    assert!(text.contains("Subject: DC = org"));
    assert_eq!(
        tls::load_certs(&pki.path("client.crt"), "cert")
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn ca_bundle_and_crl_coverage() {
    let pki = Pki::new();
    let bundle = pki.path("bundle.crt");
    let mut both = std::fs::read(pki.path("ca.crt")).unwrap();
    both.extend(std::fs::read(pki.path("other-ca.crt")).unwrap());
    std::fs::write(&bundle, both).unwrap();
    let other = TlsFiles {
        ca_chain: pki.path("ca.crt"),
        ..pki.files("other")
    };
    let other = Connector::new(&other).unwrap();

    // Every certificate of the bundle is a trust anchor.
    let files = TlsFiles {
        ca_chain: bundle.clone(),
        ..pki.files("component")
    };
    let (port, mut accepted) = echo_server(Arc::new(
        ReloadableServerConfig::load(files.clone()).unwrap(),
    ))
    .await;
    let (mut s, _) = other.connect("127.0.0.1", port).await.unwrap();
    assert_eq!(accepted.recv().await.unwrap().unwrap().as_str(), CLIENT);
    assert!(echo(&mut s, "x").await.is_ok());

    // With a CRL of only one CA, clients of the other CA are refused (unknown status).
    let files = TlsFiles {
        crl: Some(pki.path("crl.pem")),
        ..files
    };
    let (port, mut accepted) =
        echo_server(Arc::new(ReloadableServerConfig::load(files).unwrap())).await;
    let e = refused(&other, port, &mut accepted).await;
    assert!(
        e.contains("UnknownRevocationStatus") || e.to_lowercase().contains("revocation"),
        "{e}"
    );
    let client = Connector::new(&pki.files("client")).unwrap();
    let (mut s, _) = client.connect("127.0.0.1", port).await.unwrap();
    assert_eq!(accepted.recv().await.unwrap().unwrap().as_str(), CLIENT);
    assert!(echo(&mut s, "x").await.is_ok());
}

/// Live interop with Python's `ssl` (what tornado and urllib3 use) in both directions:
/// a Python mTLS client against our server and our client against a Python mTLS server.
/// Each side reports the identity it derived for the other, the reference's way.
#[tokio::test]
async fn python_ssl_peers_agree_on_identities() {
    let python = support::peer::python();
    let pki = Pki::new();
    const IDENT: &str = "def ident(cert):\n\
        \x20   i = ''\n\
        \x20   for elem in cert.get('subject'):\n\
        \x20       i = str(elem[0][1]) if i == '' else i + '.' + str(elem[0][1])\n\
        \x20   return i\n";

    // Python client → our server.
    let server = Arc::new(ReloadableServerConfig::load(server_files(&pki, true)).unwrap());
    let (port, mut accepted) = echo_server(server).await;
    let client_py = format!(
        "import ssl,socket,sys\n{IDENT}\
         ctx = ssl.create_default_context(cafile=sys.argv[1])\n\
         ctx.load_cert_chain(sys.argv[2], sys.argv[3])\n\
         s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', int(sys.argv[4]))), server_hostname='127.0.0.1')\n\
         s.sendall(b'hi\\n')\n\
         reply = b''\n\
         while not reply.endswith(b'\\n'):\n\
         \x20   reply += s.recv(100)\n\
         print(ident(s.getpeercert()))\n\
         print(reply.decode().strip())\n"
    );
    let py = tokio::process::Command::new(&python)
        .arg("-c")
        .arg(&client_py)
        .arg(pki.path("ca.crt"))
        .arg(pki.path("client.crt"))
        .arg(pki.path("client.key"))
        .arg(port.to_string())
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(20), py)
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines, [COMPONENT, &format!("{CLIENT} hi")]);
    assert_eq!(accepted.recv().await.unwrap().unwrap().as_str(), CLIENT);

    // Our client → Python server (RSA PKCS#1 component key).
    let server_py = format!(
        "import ssl,socket,sys\n{IDENT}\
         ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
         ctx.load_cert_chain(sys.argv[1], sys.argv[2])\n\
         ctx.load_verify_locations(sys.argv[3])\n\
         ctx.verify_mode = ssl.CERT_REQUIRED\n\
         l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen(1)\n\
         print(l.getsockname()[1], flush=True)\n\
         c, _ = l.accept()\n\
         t = ctx.wrap_socket(c, server_side=True)\n\
         t.sendall((ident(t.getpeercert()) + '\\n').encode())\n\
         t.recv(10)\n"
    );
    let mut child = tokio::process::Command::new(&python)
        .arg("-c")
        .arg(&server_py)
        .arg(pki.path("component.crt"))
        .arg(pki.path("component.key"))
        .arg(pki.path("ca.crt"))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut port = String::new();
    stdout.read_line(&mut port).await.unwrap();
    let port: u16 = port.trim().parse().unwrap();
    let client = Connector::new(&pki.files("client")).unwrap();
    let (stream, server_id) = client.connect("127.0.0.1", port).await.unwrap();
    assert_eq!(server_id.as_str(), COMPONENT);
    let mut line = String::new();
    let mut reader = BufReader::new(stream);
    reader.read_line(&mut line).await.unwrap();
    assert_eq!(line.trim_end(), CLIENT);
    reader.get_mut().write_all(b"bye").await.unwrap();
    let status = tokio::time::timeout(std::time::Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}
