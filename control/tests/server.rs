//! The HTTPS component and client over loopback mutual TLS with a fresh PKI
//! (needs the `openssl` tool): discovery, inline results, receipts and
//! redemption, interrupt, repeated specifications, exceptions, HTTP errors.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::pki::Pki;
use common::services::{Panics, Quick, Slow, cap, setting};
use hyper::{Method, StatusCode};
use mplane::azn::{Azn, AznMode};
use mplane::client::{Client, ClientError, Url};
use mplane::component::{Component, ComponentOptions};
use mplane::model::{self, MEDIA_TYPE, Message, Statement, WhenText};
use mplane::registry::Registries;
use mplane::scheduler::Scheduler;
use mplane::tls::{Connector, ReloadableServerConfig};
use mplane::value::Value;
use tokio_util::sync::CancellationToken;

struct Fixture {
    pki: Pki,
    base: Url,
    cancel: CancellationToken,
    server: tokio::task::JoinHandle<()>,
    client: Client,
}

impl Fixture {
    async fn start() -> Fixture {
        Fixture::start_with(None, Vec::new()).await
    }

    /// A component that serves `exports` under `/export/` when given, with `more` services.
    async fn start_with(
        exports: Option<std::path::PathBuf>,
        more: Vec<Arc<dyn mplane::scheduler::Service>>,
    ) -> Fixture {
        let pki = Pki::new();
        let roles = vec![setting("org.mplane.SSB.Clients.Client-1", "guest")];
        let azns = vec![setting("test-", "guest")];
        let azn = Azn::from_settings(&roles, &azns, AznMode::Substring);
        let mut sched = Scheduler::new(azn, 3);
        let link = Some("https://127.0.0.1:1/");
        sched.add_service(
            Arc::new(Quick(
                cap(
                    "test-quick-ip4",
                    &["delay.twoway.icmp.us"],
                    "now ... future",
                ),
                false,
            )),
            link,
        );
        sched.add_service(
            Arc::new(Quick(
                cap("test-fail-ip4", &["hops.ip"], "now ... future"),
                true,
            )),
            link,
        );
        sched.add_service(
            Arc::new(Slow(cap(
                "test-slow-ip4",
                &["delay.twoway.icmp.count"],
                "now ... future",
            ))),
            link,
        );
        for service in more {
            sched.add_service(service, link);
        }
        let tls = Arc::new(ReloadableServerConfig::load(pki.files("component")).unwrap());
        let mut opts = ComponentOptions::new(SocketAddr::from(([127, 0, 0, 1], 0)), Some(tls));
        opts.max_body = 64 * 1024;
        opts.reply_wait = Duration::from_millis(1500);
        opts.header_timeout = Duration::from_millis(500);
        opts.handshake_timeout = Duration::from_millis(500);
        opts.export_dir = exports;
        opts.registries_served
            .insert("test".into(), "{\"registry-format\":\"mplane-0\"}".into());
        let comp = Component::bind(opts, sched).await.unwrap();
        let addr = comp.local_addr().unwrap();
        let cancel = CancellationToken::new();
        let c2 = cancel.clone();
        let server = tokio::spawn(async move { comp.serve(c2).await.unwrap() });
        let client = Client::new(
            Some(Connector::new(&pki.files("client")).unwrap()),
            Arc::new(Registries::default()),
        );
        let base = Url::parse(&format!("https://127.0.0.1:{}/", addr.port())).unwrap();
        Fixture {
            pki,
            base,
            cancel,
            server,
            client,
        }
    }

    fn as_identity(&self, leaf: &str) -> Client {
        Client::new(
            Some(Connector::new(&self.pki.files(leaf)).unwrap()),
            Arc::new(Registries::default()),
        )
    }

    async fn caps(&self) -> Vec<Statement> {
        self.client
            .capabilities(&self.base.with_path("/capability"))
            .await
            .unwrap()
    }

    async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.server)
            .await
            .expect("graceful shutdown")
            .unwrap();
    }
}

fn find<'a>(caps: &'a [Statement], label: &str) -> &'a Statement {
    caps.iter()
        .find(|c| c.label.as_deref() == Some(label))
        .unwrap()
}

fn spec(cap: &Statement, when: &str) -> Statement {
    let mut s = cap.specification_for();
    s.set_parameter_value(
        "destination.ip4",
        &Value::Address("10.1.2.3".parse().unwrap()),
    )
    .unwrap();
    s.when = Some(WhenText::parse(when).unwrap());
    s.token = Some(s.default_token());
    s
}

fn exception_text(m: &Message) -> String {
    match m {
        Message::Exception(e) => e.message.clone(),
        m => panic!("not an exception: {}", m.unparse()),
    }
}

fn statement(m: Message) -> Statement {
    match m {
        Message::Statement(s) => s,
        m => panic!("not a statement: {}", m.unparse()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_and_pages() {
    let f = Fixture::start().await;
    let caps = f.caps().await;
    assert_eq!(caps.len(), 3);
    for c in &caps {
        assert!(c.token.is_some());
        assert_eq!(c.link.as_deref(), Some("https://127.0.0.1:1/"));
    }
    let r = f.client.request(Method::GET, &f.base, None).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.content_type.unwrap().starts_with("text/html"));
    assert_eq!(String::from_utf8_lossy(&r.body).matches("<pre>").count(), 3);
    // unknown capability token -> 404; unknown path -> 404
    let r = f
        .client
        .request(Method::GET, &f.base.with_path("/capability/nope"), None)
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = f
        .client
        .request(Method::GET, &f.base.with_path("/x"), None)
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = f
        .client
        .request(Method::GET, &f.base.with_path("/registry/test"), None)
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    // an identity without roles sees no capabilities
    let sup = f.as_identity("supervisor");
    assert!(
        sup.capabilities(&f.base.with_path("/capability"))
            .await
            .unwrap()
            .is_empty()
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_result_failure_and_unknown_job() {
    let f = Fixture::start().await;
    let caps = f.caps().await;
    let s = spec(find(&caps, "test-quick-ip4"), "now");
    let r = statement(f.client.specify(&f.base, &s).await.unwrap());
    assert_eq!(r.kind.key(), "result");
    assert_eq!(r.token, s.token);
    assert_eq!(r.rows().len(), 1);
    // forgotten after being returned once
    let again = f.client.redeem(&f.base, &r).await.unwrap();
    assert_eq!(exception_text(&again), "Unknown job");

    let s = spec(find(&caps, "test-fail-ip4"), "now");
    let r = f.client.specify(&f.base, &s).await.unwrap();
    assert_eq!(exception_text(&r), "deliberate failure");
    assert_eq!(r.token(), s.token.as_deref());
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipt_redemption_and_interrupt() {
    let f = Fixture::start().await;
    let caps = f.caps().await;
    let slow = find(&caps, "test-slow-ip4");
    // runs 2 s > reply_wait 1.5 s -> receipt, then redemption gets the result
    let s = spec(slow, "now + 2s");
    let rec = statement(f.client.specify(&f.base, &s).await.unwrap());
    assert_eq!(rec.kind.key(), "receipt");
    assert_eq!(rec.token, s.token);
    // same token again while the job exists -> the receipt
    let again = statement(f.client.specify(&f.base, &s).await.unwrap());
    assert_eq!(again.kind.key(), "receipt");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let res = statement(f.client.redeem(&f.base, &rec).await.unwrap());
    assert_eq!(res.kind.key(), "result");

    // open-ended job, interrupted -> partial result
    let s = spec(slow, "now ... future");
    let rec = statement(f.client.specify(&f.base, &s).await.unwrap());
    assert_eq!(rec.kind.key(), "receipt");
    let i = statement(f.client.interrupt(&f.base, &rec).await.unwrap());
    assert_eq!(i.kind.key(), "receipt");
    let mut got = None;
    for _ in 0..50 {
        let m = statement(f.client.redeem(&f.base, &rec).await.unwrap());
        if m.kind.key() == "result" {
            got = Some(m);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = got.expect("partial result after interrupt");
    assert_eq!(got.rows().len(), 1);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_specification_gives_envelope() {
    let f = Fixture::start().await;
    let caps = f.caps().await;
    let s = spec(
        find(&caps, "test-quick-ip4"),
        "repeat now + 3s / 1s { now }",
    );
    let rec = statement(f.client.specify(&f.base, &s).await.unwrap());
    assert_eq!(rec.kind.key(), "receipt");
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let m = f.client.redeem(&f.base, &rec).await.unwrap();
    let Message::Envelope(env) = m else {
        panic!("{}", m.unparse())
    };
    assert_eq!(env.token, s.token);
    assert_eq!(env.label, s.label);
    assert!(
        !env.contents.is_empty() && env.contents.len() <= 3,
        "{}",
        env.contents.len()
    );
    for c in &env.contents {
        assert_eq!(c.kind_name(), "result");
        assert_ne!(c.token(), s.token.as_deref());
    }
    // finished: forgotten after the reply
    let m = f.client.redeem(&f.base, &rec).await.unwrap();
    assert_eq!(exception_text(&m), "Unknown job");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceptions_and_http_errors() {
    let f = Fixture::start().await;
    let caps = f.caps().await;
    let quick = find(&caps, "test-quick-ip4");

    // unauthorised identity
    let sup = f.as_identity("supervisor");
    let m = sup.specify(&f.base, &spec(quick, "now")).await.unwrap();
    assert_eq!(
        exception_text(&m),
        "User has no permission to request this capability"
    );

    // fits no capability: constraint violated
    let mut s = quick.specification_for();
    s.set_parameter_value(
        "destination.ip4",
        &Value::Address("10.1.2.3".parse().unwrap()),
    )
    .unwrap();
    s.set_parameter_value("source.ip4", &Value::Address("10.9.9.9".parse().unwrap()))
        .unwrap();
    let m = f.client.specify(&f.base, &s).await.unwrap();
    assert_eq!(
        exception_text(&m),
        "No service registered for specification"
    );

    // fits no capability: temporal scope outside the capability's
    let m = f
        .client
        .specify(&f.base, &spec(quick, "2000-01-01 ... 2000-01-02"))
        .await
        .unwrap();
    assert_eq!(
        exception_text(&m),
        "No service registered for specification"
    );

    // a capability is not a request
    let m = f
        .client
        .send(&f.base, &Message::Statement(quick.clone()))
        .await
        .unwrap();
    assert_eq!(exception_text(&m), "Unexpected message type");

    // unknown token on interrupt
    let mut rec = spec(quick, "now").derive(model::StatementKind::Receipt);
    rec.token = Some("0123".into());
    let m = f.client.interrupt(&f.base, &rec).await.unwrap();
    assert_eq!(exception_text(&m), "Unknown job");

    let post = |ct: &'static str, body: String| {
        let c = f.client.clone();
        let u = f.base.clone();
        async move { c.request(Method::POST, &u, Some((ct, body))).await.unwrap() }
    };
    // metrics not configured -> 404 saying how to enable them
    let r = f
        .client
        .request(Method::GET, &f.base.with_path("/metrics"), None)
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&r.body).contains("metrics_roles"));
    // malformed JSON -> 400
    let r = post(MEDIA_TYPE, "{not json".into()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // JSON object, bad message -> 200 + exception with its token
    let r = post(
        MEDIA_TYPE,
        r#"{"specification":"measure","token":"t1","when":"now","results":["no.such.element"]}"#
            .into(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let m = model::parse(
        std::str::from_utf8(&r.body).unwrap(),
        &Registries::default(),
    )
    .unwrap();
    assert_eq!(m.token(), Some("t1"));
    assert!(exception_text(&m).starts_with("Invalid message"));
    // wrong media type (parameterised) -> 415
    let r = post("application/x-mplane+json; charset=utf-8", "{}".into()).await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // oversized -> 413 (or the connection closed while the client was still writing)
    let big = f
        .client
        .request(
            Method::POST,
            &f.base,
            Some((MEDIA_TYPE, "x".repeat(70 * 1024))),
        )
        .await;
    match big {
        Ok(r) => assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE),
        Err(ClientError::Http(e)) => assert!(!e.is_parse(), "{e}"),
        Err(e) => panic!("{e}"),
    }

    // a client without certificate is refused
    let roots = mplane::tls::load_roots(&f.pki.path("ca.crt")).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let anon = Client::new(
        Some(Connector::from_config(Arc::new(cfg))),
        Arc::new(Registries::default()),
    );
    let r = anon
        .request(Method::GET, &f.base.with_path("/capability"), None)
        .await;
    assert!(r.is_err(), "served a client without certificate: {r:?}");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_peers_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let f = Fixture::start().await;
    // no TLS hello at all: closed after the handshake timeout
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", f.base.port))
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("handshake timeout closes the connection");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");

    // TLS done, headers never finished: closed after the header timeout
    let conn = Connector::new(&f.pki.files("client")).unwrap();
    let (mut tls, _) = conn.connect("127.0.0.1", f.base.port).await.unwrap();
    tls.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out))
        .await
        .expect("header timeout closes the connection");
    assert!(!String::from_utf8_lossy(&out).contains("200 OK"), "{r:?}");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_without_tls() {
    let mut sched = Scheduler::new(Azn::off(), 0);
    sched.add_service(
        Arc::new(Quick(
            cap(
                "test-quick-ip4",
                &["delay.twoway.icmp.us"],
                "now ... future",
            ),
            false,
        )),
        None,
    );
    let opts = ComponentOptions::new(SocketAddr::from(([127, 0, 0, 1], 0)), None);
    let comp = Component::bind(opts, sched).await.unwrap();
    let port = comp.local_addr().unwrap().port();
    let cancel = CancellationToken::new();
    let server = tokio::spawn(comp.serve(cancel.clone()));
    let client = Client::new(None, Arc::new(Registries::default()));
    let base = Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
    let caps = client
        .capabilities(&base.with_path("/capability"))
        .await
        .unwrap();
    assert_eq!(caps.len(), 1);
    let r = statement(client.specify(&base, &spec(&caps[0], "now")).await.unwrap());
    assert_eq!(r.kind.key(), "result");
    // an https URL needs a TLS configuration
    let https = Url::parse(&format!("https://127.0.0.1:{port}/")).unwrap();
    assert!(matches!(
        client.request(Method::GET, &https, None).await,
        Err(ClientError::NoTls(_))
    ));
    cancel.cancel();
    server.await.unwrap().unwrap();
}

/// Jobs run on threads of their own, not on the runtime's blocking pool, which also does the
/// file system work of export downloads: with more jobs running than that pool has threads,
/// every job runs and a download still answers at once.
#[test]
fn running_jobs_leave_the_blocking_pool_to_downloads() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let exports = tempfile::tempdir().unwrap();
        let job = exports.path().join("test-quick-ip4-1");
        std::fs::create_dir(&job).unwrap();
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(job.join("flows.parquet"), &bytes).unwrap();
        let f = Fixture::start_with(Some(exports.path().to_path_buf()), Vec::new()).await;
        let caps = f.caps().await;
        let slow = find(&caps, "test-slow-ip4");
        // three jobs that run until interrupted: more than the blocking pool's two threads
        let mut receipts = Vec::new();
        for secs in [30, 31, 32] {
            let s = spec(slow, &format!("now + {secs}s"));
            let rec = statement(f.client.specify(&f.base, &s).await.unwrap());
            assert_eq!(rec.kind.key(), "receipt");
            receipts.push(rec);
        }
        let url = f.base.with_path("/export/test-quick-ip4-1/flows.parquet");
        let mut got = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(5), f.client.download(&url, &mut got))
            .await
            .expect("the download waited for a job to end")
            .unwrap();
        assert_eq!(n, bytes.len() as u64);
        assert!(got == bytes, "the file's bytes");
        // every job ran all along: each counted its 50 ms ticks since it was specified (at
        // least the 1.5 s each waited for its receipt); a job queued behind the pool would
        // only start once interrupted, and count none
        for rec in &receipts {
            let i = statement(f.client.interrupt(&f.base, rec).await.unwrap());
            assert_eq!(i.kind.key(), "receipt");
        }
        for rec in &receipts {
            let mut ticks = None;
            for _ in 0..50 {
                let m = statement(f.client.redeem(&f.base, rec).await.unwrap());
                if m.kind.key() == "result" {
                    ticks = Some(m.rows().row(0).cell(0).text().parse::<u64>().unwrap());
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let ticks = ticks.expect("a result after the interrupt");
            assert!(ticks >= 20, "{ticks} ticks of 50 ms");
        }
        f.stop().await;
    });
}

/// A service that panics fails its own job, with the panic's message as the exception, and
/// the component goes on answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_service_fails_its_job_with_the_message() {
    let panics = cap(
        "test-panics-ip4",
        &["delay.twoway.icmp.us.max"],
        "now ... future",
    );
    let f = Fixture::start_with(None, vec![Arc::new(Panics(panics))]).await;
    let caps = f.caps().await;
    let m = f
        .client
        .specify(&f.base, &spec(find(&caps, "test-panics-ip4"), "now"))
        .await
        .unwrap();
    assert_eq!(exception_text(&m), "service failed: boom");
    let m = f
        .client
        .specify(&f.base, &spec(find(&caps, "test-quick-ip4"), "now"))
        .await
        .unwrap();
    assert_eq!(statement(m).kind.key(), "result");
    f.stop().await;
}
