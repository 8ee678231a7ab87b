//! The component-initiated workflow against a listener written here (the three paths of the
//! reference's `HttpListenerClient`, over loopback mutual TLS with a fresh PKI; needs the
//! `openssl` tool): registration, receipts and results pushed to the specification's link,
//! exceptions, interrupts, repetitions; a listener that goes away and comes back, one that
//! never answers, and one no capability is authorised for.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::net::free_port;
use common::pki::Pki;
use common::services::{Quick, Slow, cap, setting};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use mplane::azn::{Azn, AznMode, RoleAccess};
use mplane::client::Url;
use mplane::component::initiator::{InitiatorOptions, TlsReload};
use mplane::component::{Component, ComponentError, ComponentOptions};
use mplane::model::{self, Envelope, MEDIA_TYPE, Message, Statement, StatementKind, WhenText};
use mplane::registry::Registries;
use mplane::scheduler::Scheduler;
use mplane::tls::{Connector, Identity, ReloadableServerConfig};
use mplane::value::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the listener saw and what it hands out.
#[derive(Default)]
struct Seen {
    /// (peer identity, body) of each registration.
    registrations: Vec<(String, String)>,
    /// Messages queued for the component (handed out at the next fetch).
    queue: Vec<Message>,
    /// (path, message) of everything posted to a result path.
    posted: Vec<(String, Message)>,
    fetches: usize,
    /// The peer identity of each fetch.
    fetched_by: Vec<String>,
}

/// A listener as the reference's: `/register/capability`, `/show/specification`, and any
/// other POST path taken as a result path.
struct Listener {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Listener {
    /// A listener on `port` with `who`'s certificate, and what it sees (fresh).
    async fn start(pki: &Pki, who: &str, port: u16) -> (Listener, Arc<Mutex<Seen>>) {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let tls = Arc::new(ReloadableServerConfig::load(pki.files(who)).unwrap());
        let tcp = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .unwrap();
        let stop = CancellationToken::new();
        let (s2, seen2) = (stop.clone(), seen.clone());
        let task = tokio::spawn(async move {
            loop {
                let (conn, _) = tokio::select! {
                    _ = s2.cancelled() => return,
                    c = tcp.accept() => c.unwrap(),
                };
                let (tls, seen, s3) = (tls.clone(), seen2.clone(), s2.clone());
                tokio::spawn(async move {
                    let Ok((stream, peer)) = tls.accept(conn).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |req| {
                        let (seen, peer) = (seen.clone(), peer.clone());
                        async move { Ok::<_, Infallible>(serve(req, &peer, &seen).await) }
                    });
                    let c = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc);
                    tokio::select! {
                        _ = c => {}
                        _ = s3.cancelled() => {}
                    }
                });
            }
        });
        (Listener { stop, task }, seen)
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn serve(
    req: Request<hyper::body::Incoming>,
    peer: &Identity,
    seen: &Mutex<Seen>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let ctype = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .map(|v| v.as_bytes().to_vec());
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    let ok = |ct: &'static str, b: String| {
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", ct)
            .body(Full::new(Bytes::from(b)))
            .unwrap()
    };
    if method == hyper::Method::POST && ctype.as_deref() != Some(MEDIA_TYPE.as_bytes()) {
        return Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .body(Full::new(Bytes::from("Invalid format")))
            .unwrap();
    }
    let mut s = seen.lock().unwrap();
    match (method.as_str(), path.as_str()) {
        ("POST", "/register/capability") => {
            s.registrations
                .push((peer.as_str().to_string(), text.clone()));
            let Message::Envelope(env) = model::parse(&text, &Registries::default()).unwrap()
            else {
                panic!("{text}")
            };
            let answer: serde_json::Map<String, serde_json::Value> = env
                .contents
                .iter()
                .filter_map(|c| c.as_statement()?.label.clone())
                .map(|l| (l, serde_json::json!({"registered": "ok"})))
                .collect();
            ok(MEDIA_TYPE, serde_json::Value::Object(answer).to_string())
        }
        ("GET", "/show/specification") => {
            s.fetches += 1;
            s.fetched_by.push(peer.as_str().to_string());
            let mut env = Envelope::new();
            env.contents = std::mem::take(&mut s.queue);
            ok(MEDIA_TYPE, Message::Envelope(env).unparse())
        }
        ("POST", p) => {
            let m = model::parse(&text, &Registries::default()).unwrap();
            s.posted.push((p.to_string(), m));
            ok("text/html; charset=UTF-8", String::new())
        }
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::new()))
            .unwrap(),
    }
}

fn scheduler() -> Scheduler {
    let roles = vec![setting("org.mplane.SSB.Clients.Client-1", "guest")];
    let azns = vec![setting("test-", "guest")];
    let azn = Azn::from_settings(&roles, &azns, AznMode::Substring);
    let mut sched = Scheduler::new(azn, 0);
    sched.add_service(
        Arc::new(Quick(
            cap(
                "test-quick-ip4",
                &["delay.twoway.icmp.us"],
                "now ... future / 1s",
            ),
            false,
        )),
        None,
    );
    sched.add_service(
        Arc::new(Quick(
            cap("test-fail-ip4", &["hops.ip"], "now ... future"),
            true,
        )),
        None,
    );
    sched.add_service(
        Arc::new(Slow(cap(
            "test-slow-ip4",
            &["delay.twoway.icmp.count"],
            "now ... future",
        ))),
        None,
    );
    sched
}

type Running = tokio::task::JoinHandle<Result<(), ComponentError>>;

/// The component, initiating towards 127.0.0.1:`port`, fast timers; listening nowhere.
fn component(pki: &Pki, port: u16) -> (CancellationToken, Running) {
    initiate(component_alone(), pki, port)
}

/// A component that does not listen.
fn component_alone() -> Component {
    Component::without_listener(
        ComponentOptions::new(SocketAddr::from(([127, 0, 0, 1], 0)), None),
        scheduler(),
    )
}

/// Certificate files of the component's own in `dir` (as an operator's, which renewals
/// overwrite), holding `who`'s certificate and key to begin with.
fn own_files(pki: &Pki, dir: &std::path::Path, who: &str) -> mplane::config::TlsFiles {
    let files = mplane::config::TlsFiles {
        cert: dir.join("c.crt"),
        key: dir.join("c.key"),
        ca_chain: pki.path("ca.crt"),
        crl: None,
    };
    put_certificate(pki, &files, who);
    files
}

/// Overwrites `files`' certificate and key with `who`'s.
fn put_certificate(pki: &Pki, files: &mplane::config::TlsFiles, who: &str) {
    std::fs::copy(pki.path(&format!("{who}.crt")), &files.cert).unwrap();
    std::fs::copy(pki.path(&format!("{who}.key")), &files.key).unwrap();
}

/// The same, also serving plain HTTP with `/metrics` for anyone; the port it serves on.
async fn component_serving(pki: &Pki, port: u16) -> (CancellationToken, Running, u16) {
    let mut opts = ComponentOptions::new(SocketAddr::from(([127, 0, 0, 1], 0)), None);
    opts.metrics.access = Some(RoleAccess::Anyone);
    let comp = Component::bind(opts, scheduler()).await.unwrap();
    let http = comp.local_addr().unwrap().port();
    let (cancel, running) = initiate(comp, pki, port);
    (cancel, running, http)
}

fn initiate(comp: Component, pki: &Pki, port: u16) -> (CancellationToken, Running) {
    let (cancel, running, _) = initiate_with(comp, pki.files("component"), port);
    (cancel, running)
}

/// Runs `comp`'s component-initiated workflow with the certificate `files` (read again at
/// each reconnection, and when the returned handle asks) towards 127.0.0.1:`port`, fast
/// timers.
fn initiate_with(
    comp: Component,
    files: mplane::config::TlsFiles,
    port: u16,
) -> (CancellationToken, Running, TlsReload) {
    let url = Url::parse(&format!("https://127.0.0.1:{port}/")).unwrap();
    let mut init = InitiatorOptions::new(url, Some(Connector::new(&files).unwrap()));
    init.tls_files = Some(files);
    init.poll = Duration::from_millis(100);
    init.retry = Duration::from_millis(200);
    init.timeout = Duration::from_millis(700);
    let reload = init.reload.clone();
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    (
        cancel,
        tokio::spawn(async move { comp.serve_initiated(init, c2).await }),
        reload,
    )
}

/// The component's `/metrics` lines that start with `prefix`.
async fn metrics(http: u16, prefix: &str) -> Vec<String> {
    let client = mplane::client::Client::new(None, Arc::new(Registries::default()));
    let url = Url::parse(&format!("http://127.0.0.1:{http}/metrics")).unwrap();
    let r = client
        .request(hyper::Method::GET, &url, None)
        .await
        .unwrap();
    String::from_utf8_lossy(&r.body)
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// Cancels the component and checks that it stops, cleanly, soon.
async fn stop(cancel: CancellationToken, comp: Running) {
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(15), comp)
        .await
        .expect("stops when cancelled")
        .unwrap()
        .unwrap();
}

/// Waits (up to 10 s) until `f` holds for what the listener saw.
async fn until(seen: &Mutex<Seen>, what: &str, f: impl Fn(&Seen) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f(&seen.lock().unwrap()) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A specification for `label` as a listener derives it, its link set to `link`.
fn spec(seen: &Mutex<Seen>, label: &str, when: &str, link: &str) -> Statement {
    let s = seen.lock().unwrap();
    let (_, body) = s.registrations.last().unwrap();
    let Message::Envelope(env) = model::parse(body, &Registries::default()).unwrap() else {
        panic!()
    };
    let cap = env
        .contents
        .iter()
        .filter_map(|m| m.as_statement())
        .find(|c| c.label.as_deref() == Some(label))
        .unwrap();
    let mut spec = cap.specification_for();
    spec.set_parameter_value(
        "destination.ip4",
        &Value::Address("127.0.0.2".parse().unwrap()),
    )
    .unwrap();
    spec.when = Some(WhenText::parse(when).unwrap());
    spec.link = Some(link.to_string());
    spec.token = Some(spec.client_token(mplane::component::now()));
    spec
}

fn posted_for(s: &Seen, token: &str) -> Vec<(String, String)> {
    s.posted
        .iter()
        .filter(|(_, m)| m.token() == Some(token))
        .map(|(p, m)| (p.clone(), m.kind_name().to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_runs_and_reports_to_the_listener() {
    let pki = Pki::new();
    let port = free_port();
    let (listener, seen) = Listener::start(&pki, "client", port).await;
    let (cancel, comp) = component(&pki, port);
    until(&seen, "the registration", |s| !s.registrations.is_empty()).await;
    {
        let s = seen.lock().unwrap();
        let (peer, body) = &s.registrations[0];
        assert_eq!(peer, "org.mplane.SSB.Components.Component-1");
        let Message::Envelope(env) = model::parse(body, &Registries::default()).unwrap() else {
            panic!("{body}")
        };
        let mut labels: Vec<&str> = env
            .contents
            .iter()
            .filter_map(|m| m.as_statement()?.label.as_deref())
            .collect();
        labels.sort();
        assert_eq!(labels, ["test-fail-ip4", "test-quick-ip4", "test-slow-ip4"]);
    }
    let link = format!("https://127.0.0.1:{port}/custom/result");

    // an immediate start: receipt, then the result, both to the link's path
    let quick = spec(&seen, "test-quick-ip4", "now + 1s / 1s", &link);
    let fail = spec(&seen, "test-fail-ip4", "now", "");
    let slow = spec(&seen, "test-slow-ip4", "now + 60s", &link);
    seen.lock().unwrap().queue = vec![
        Message::Statement(quick.clone()),
        Message::Statement(fail.clone()),
        Message::Statement(slow.clone()),
    ];
    let qt = quick.token.clone().unwrap();
    let ft = fail.token.clone().unwrap();
    let st = slow.token.clone().unwrap();
    until(&seen, "the quick result", |s| posted_for(s, &qt).len() == 2).await;
    until(&seen, "the exception", |s| posted_for(s, &ft).len() == 2).await;
    until(&seen, "the slow receipt", |s| {
        !posted_for(s, &st).is_empty()
    })
    .await;
    {
        let s = seen.lock().unwrap();
        let p = "/custom/result".to_string();
        assert_eq!(
            posted_for(&s, &qt),
            [(p.clone(), "receipt".into()), (p.clone(), "result".into())]
        );
        // no link: the result path
        let r = "/register/result".to_string();
        assert_eq!(
            posted_for(&s, &ft),
            [(r.clone(), "receipt".into()), (r, "exception".into())]
        );
        assert_eq!(posted_for(&s, &st), [(p, "receipt".into())]);
        let result = s
            .posted
            .iter()
            .find_map(|(_, m)| match m {
                Message::Statement(r) if r.kind == StatementKind::Result => Some(r.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(result.rows().row(0).cell(0).text(), "42");
    }

    // an interrupt queued as the reference's listener does (the receipt, kind interrupt):
    // the job's state at once, then the partial result
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut interrupt = slow.derive(StatementKind::Interrupt);
    interrupt.link = None;
    seen.lock()
        .unwrap()
        .queue
        .push(Message::Statement(interrupt));
    until(&seen, "the partial result", |s| {
        posted_for(s, &st).iter().any(|(_, k)| k == "result")
    })
    .await;
    {
        let s = seen.lock().unwrap();
        let kinds: Vec<String> = posted_for(&s, &st).into_iter().map(|(_, k)| k).collect();
        assert_eq!(kinds, ["receipt", "receipt", "result"]);
    }

    // a repeated specification: the envelope again after each repetition
    let rep = spec(
        &seen,
        "test-quick-ip4",
        "repeat now + 2s / 1s { now + 1s / 1s }",
        &link,
    );
    let rt = rep.token.clone().unwrap();
    seen.lock().unwrap().queue.push(Message::Statement(rep));
    until(&seen, "two envelopes", |s| {
        posted_for(s, &rt)
            .iter()
            .filter(|(_, k)| k == "envelope")
            .count()
            >= 2
    })
    .await;
    {
        let s = seen.lock().unwrap();
        let sizes: Vec<usize> = s
            .posted
            .iter()
            .filter_map(|(_, m)| match m {
                Message::Envelope(e) if e.token.as_deref() == Some(rt.as_str()) => {
                    Some(e.contents.len())
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            &sizes[..2],
            [1, 2],
            "each envelope holds the results so far"
        );
    }
    stop(cancel, comp).await;
    listener.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_comes_back_gets_the_registration_and_the_results_again() {
    let pki = Pki::new();
    let port = free_port();
    // the component starts first: the listener is not there yet (it serves its metrics)
    let (cancel, comp, http) = component_serving(&pki, port).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (listener, seen) = Listener::start(&pki, "client", port).await;
    until(&seen, "the registration", |s| !s.registrations.is_empty()).await;
    // a one-second job; the listener goes away while it runs
    let slow = spec(&seen, "test-slow-ip4", "now + 1s", "");
    let st = slow.token.clone().unwrap();
    seen.lock().unwrap().queue.push(Message::Statement(slow));
    until(&seen, "the receipt", |s| !posted_for(s, &st).is_empty()).await;
    listener.stop().await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    // back, with nothing of the past: registered again, and the result that could not be
    // delivered arrives
    let (listener, seen2) = Listener::start(&pki, "client", port).await;
    until(&seen2, "the registration again", |s| {
        !s.registrations.is_empty()
    })
    .await;
    until(&seen2, "the held result", |s| {
        posted_for(s, &st).iter().any(|(_, k)| k == "result")
    })
    .await;
    // what an operator sees: two registrations, failures while the listener was away, the
    // receipt and the result posted, nothing left waiting
    let m = metrics(http, "mplane_initiator_").await;
    let value = |name: &str| -> f64 {
        m.iter()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {m:?}"))
            .parse()
            .unwrap()
    };
    assert_eq!(value("mplane_initiator_registrations_total"), 2.0, "{m:?}");
    assert!(value("mplane_initiator_failures_total") >= 2.0, "{m:?}");
    assert_eq!(
        value("mplane_initiator_messages_fetched_total"),
        1.0,
        "{m:?}"
    );
    assert_eq!(value("mplane_initiator_replies_posted_total"), 2.0, "{m:?}");
    assert_eq!(value("mplane_initiator_outbox"), 0.0, "{m:?}");
    assert_eq!(
        value("mplane_initiator_replies_dropped_total"),
        0.0,
        "{m:?}"
    );
    stop(cancel, comp).await;
    listener.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_never_answers_does_not_hang_the_component() {
    let pki = Pki::new();
    // accepts connections and never reads from them
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let a2 = accepted.clone();
    let holder = tokio::spawn(async move {
        loop {
            let (c, _) = tcp.accept().await.unwrap();
            a2.lock().unwrap().push(c);
        }
    });
    let (cancel, comp) = component(&pki, port);
    // each attempt times out (0.7 s) and is made again (0.2 s later)
    let deadline = Instant::now() + Duration::from_secs(10);
    while accepted.lock().unwrap().len() < 3 {
        assert!(Instant::now() < deadline, "the component stopped trying");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t = Instant::now();
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), comp)
        .await
        .expect("stops when cancelled")
        .unwrap()
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(3));
    holder.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_no_capability_is_authorised_for_is_an_error() {
    let pki = Pki::new();
    let port = free_port();
    // the supervisor's certificate: an identity without a role
    let (listener, seen) = Listener::start(&pki, "supervisor", port).await;
    let (_cancel, comp) = component(&pki, port);
    let err = tokio::time::timeout(Duration::from_secs(10), comp)
        .await
        .expect("gives up")
        .unwrap()
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("no capability is authorised for the listener's identity org.mplane.SSB.Supervisors.Supervisor-1"),
        "{text}"
    );
    assert!(seen.lock().unwrap().registrations.is_empty());
    listener.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewed_certificate_files_are_read_at_the_next_connection() {
    let pki = Pki::new();
    let port = free_port();
    let (listener, seen) = Listener::start(&pki, "client", port).await;
    // the component starts with a certificate of another CA, which the listener refuses
    let dir = tempfile::tempdir().unwrap();
    let files = own_files(&pki, dir.path(), "other");
    let (cancel, running, _) = initiate_with(component_alone(), files.clone(), port);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(seen.lock().unwrap().registrations.is_empty());
    // the renewed files: registered at the next attempt, without a restart
    put_certificate(&pki, &files, "component");
    until(&seen, "the registration", |s| !s.registrations.is_empty()).await;
    stop(cancel, running).await;
    listener.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_request_puts_new_certificate_files_in_use_at_once() {
    let pki = Pki::new();
    let port = free_port();
    let (listener, seen) = Listener::start(&pki, "client", port).await;
    let dir = tempfile::tempdir().unwrap();
    let files = own_files(&pki, dir.path(), "component");
    let (cancel, running, reload) = initiate_with(component_alone(), files.clone(), port);
    until(&seen, "fetches", |s| s.fetches >= 2).await;
    let component = seen.lock().unwrap().registrations[0].0.clone();
    // another certificate of the same CA in the files: nothing fails, so without a request
    // the workflow goes on with the certificate it loaded
    put_certificate(&pki, &files, "supervisor");
    let before = seen.lock().unwrap().fetches;
    until(&seen, "more fetches", |s| s.fetches >= before + 3).await;
    assert!(
        seen.lock()
            .unwrap()
            .fetched_by
            .iter()
            .all(|who| *who == component),
        "{:?}",
        seen.lock().unwrap().fetched_by
    );
    // asked (mpcom: SIGHUP), the next fetch comes with the new certificate, on the same
    // session: no failure, no second registration
    reload.reload();
    let supervisor = "org.mplane.SSB.Supervisors.Supervisor-1";
    until(&seen, "a fetch with the new certificate", |s| {
        s.fetched_by.iter().any(|who| who == supervisor)
    })
    .await;
    {
        let s = seen.lock().unwrap();
        let first_new = s.fetched_by.iter().position(|w| w == supervisor).unwrap();
        assert!(
            s.fetched_by[first_new..].iter().all(|w| w == supervisor),
            "{:?}",
            s.fetched_by
        );
        assert_eq!(s.registrations.len(), 1);
    }
    stop(cancel, running).await;
    listener.stop().await;
}
