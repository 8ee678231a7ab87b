//! # HTTPS component (client-initiated workflow; the component-initiated one in [`initiator`])
//!
//! Serves a [`Scheduler`] over HTTP/1.1 on TLS with mandatory client
//! certificates (or plain HTTP when no `[TLS]` is configured, every peer then
//! being `Identity.Unauthenticated.Default`), as the reference `mpcom` with
//! `workflow = client-initiated` (DIGEST §7a):
//!
//! | request | reply |
//! |---|---|
//! | GET `/` | 200 `text/html`: banner + `<pre>` JSON of each capability the peer may use |
//! | GET `/capability` | 200 `text/html`: `<a href='/capability/<token>'>` per authorised capability |
//! | GET `/capability/<token>` | 200 `application/x-mplane+json`; unknown token → **404** `text/html` (the reference answers 500) |
//! | GET `/registry/<name>` | 200 `application/json`: an extension registry given in [`ComponentOptions::registries_served`] |
//! | GET/HEAD `/export/<job>/<file>` | the file, byte ranges honoured, for peers allowed the job's capability ([`files`]) |
//! | GET `/metrics` | 200 Prometheus text: the server's, the scheduler's and the modules' counters, for the identities [`ComponentOptions::metrics`] allows ([`metrics`]); otherwise 403, or 404 when not configured |
//! | POST `/` | 200 `application/x-mplane+json`, exceptions included (quirk Q2) |
//!
//! POST `/` errors (deviations from the reference's tornado 500 page, chosen
//! so that clients learn what was wrong):
//! * `Content-Type` not byte-exactly `application/x-mplane+json` → 415 `text/plain`;
//! * body larger than [`ComponentOptions::max_body`] → 413 `text/plain`;
//! * body that is a JSON object but not a valid mPlane message (unknown
//!   element, bad scope, …) → 200 with an mPlane exception `Invalid message: …`
//!   carrying the `token` of the object if there is one;
//! * body that is not a JSON object → 400 `text/plain`.
//!
//! A specification is answered with its result (or exception) if its job
//! finishes within [`ComponentOptions::reply_wait`] (5 s as the reference),
//! else with its receipt (a result returned inline is forgotten at once; the
//! reference keeps it until one redemption); the waiting is asynchronous, so one slow request
//! never stalls others (unlike the reference, quirk Q12). Each job runs on a thread of its own
//! (not the runtime's blocking pool, which serves export downloads' file system work, so that
//! long jobs never hold downloads back). Slow clients are bounded by a TLS handshake
//! timeout and hyper's header read timeout. Shutdown is graceful on a
//! [`CancellationToken`]: the listener closes, running jobs are interrupted,
//! open connections finish their current request.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub mod files;
pub mod initiator;
pub mod metrics;
pub mod supervisor;

use self::metrics::{MetricsOptions, OpenConnection, ServerStats};
use crate::model::{self, Exception, MEDIA_TYPE, Message, StatementKind};
use crate::registry::Registries;
use crate::scheduler::{Run, Scheduler};
use crate::tls::{Identity, ReloadableServerConfig};
use crate::value::Timestamp;

/// Errors of the component runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ComponentError {
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address asked for.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// Other socket error.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// The component-initiated workflow cannot go on (e.g. no capability is authorised for
    /// the listener's identity).
    #[error("component-initiated: {0}")]
    Initiated(String),
}

/// Settings of the HTTPS server.
#[derive(Debug, Clone)]
pub struct ComponentOptions {
    /// Where to listen (port 0: any free port, see [`Component::local_addr`]).
    pub addr: SocketAddr,
    /// TLS configuration; `None` serves plain HTTP (no `[TLS]` section).
    pub tls: Option<Arc<ReloadableServerConfig>>,
    /// Registries used to parse incoming messages.
    pub registries: Arc<Registries>,
    /// Extension registries served at `/registry/<name>` (name → JSON text).
    pub registries_served: BTreeMap<String, String>,
    /// Largest accepted request body (default 16 MiB).
    pub max_body: usize,
    /// TLS handshake timeout per connection (default 10 s).
    pub handshake_timeout: Duration,
    /// Timeout for reading a request's headers (default 10 s).
    pub header_timeout: Duration,
    /// How long a specification POST waits for the result (default 5 s).
    pub reply_wait: Duration,
    /// Most connections served at once (default 1024); further ones are closed at accept.
    pub max_connections: usize,
    /// Directory of export files served at `/export/` (`None`: not served).
    pub export_dir: Option<std::path::PathBuf>,
    /// `GET /metrics`: who may read it and what the modules add (not served by default).
    pub metrics: MetricsOptions,
    /// The listener of the component-initiated workflow, whose components' capabilities
    /// are relayed to clients ([`supervisor`]); `None`: not a supervisor.
    pub listener: Option<supervisor::ListenerOptions>,
    /// The `link` put on capabilities that components register here (`listen-cap-link`).
    pub cap_link: Option<String>,
}

impl ComponentOptions {
    /// Defaults for `addr` and `tls`.
    pub fn new(addr: SocketAddr, tls: Option<Arc<ReloadableServerConfig>>) -> ComponentOptions {
        ComponentOptions {
            addr,
            tls,
            registries: Arc::new(Registries::default()),
            registries_served: BTreeMap::new(),
            max_body: 16 << 20,
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            reply_wait: Duration::from_secs(5),
            max_connections: 1024,
            export_dir: None,
            metrics: MetricsOptions::default(),
            listener: None,
            cap_link: None,
        }
    }
}

/// The current wall-clock time.
pub fn now() -> Timestamp {
    let us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    Timestamp::from_micros(us)
}

struct State {
    scheduler: Mutex<Scheduler>,
    /// Wakes the driver (new job, interrupt, completed run).
    wake: Notify,
    /// Bumped on every completed run.
    done: watch::Sender<u64>,
    opts: ComponentOptions,
    stats: ServerStats,
    /// The supervisor's listener, when [`ComponentOptions::listener`] is set.
    relay: Option<Arc<supervisor::Relay>>,
}

impl State {
    fn sched(&self) -> MutexGuard<'_, Scheduler> {
        self.scheduler.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A component, bound (or, for the component-initiated workflow alone, without a listening
/// socket), not yet serving.
pub struct Component {
    state: Arc<State>,
    listener: Option<TcpListener>,
    /// A second socket serving the same routes ([`listen_also`](Self::listen_also)).
    second: Option<TcpListener>,
}

impl std::fmt::Debug for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Component")
            .field(
                "addr",
                &self.listener.as_ref().and_then(|l| l.local_addr().ok()),
            )
            .finish_non_exhaustive()
    }
}

type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

fn reply(status: StatusCode, ctype: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

fn mplane_reply(msg: &Message) -> Response<Body> {
    reply(StatusCode::OK, MEDIA_TYPE, msg.unparse())
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    reply(status, "text/plain; charset=utf-8", msg.into())
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&#39;")
        .replace('"', "&quot;")
}

impl Component {
    /// Binds the listening socket; serve with [`serve`](Self::serve).
    pub async fn bind(
        opts: ComponentOptions,
        scheduler: Scheduler,
    ) -> Result<Component, ComponentError> {
        let listener = listen(opts.addr).map_err(|source| ComponentError::Bind {
            addr: opts.addr,
            source,
        })?;
        let mut c = Component::without_listener(opts, scheduler);
        c.listener = Some(listener);
        Ok(c)
    }

    /// Binds a second socket serving the same routes (a supervisor's `[client]
    /// listen-port`, where components register, beside the clients' port); its address.
    pub async fn listen_also(&mut self, addr: SocketAddr) -> Result<SocketAddr, ComponentError> {
        let l = listen(addr).map_err(|source| ComponentError::Bind { addr, source })?;
        let bound = l.local_addr()?;
        self.second = Some(l);
        Ok(bound)
    }

    /// A component that listens nowhere: for the component-initiated workflow alone
    /// ([`serve_initiated`](Self::serve_initiated)), where it connects out to its listener.
    pub fn without_listener(opts: ComponentOptions, scheduler: Scheduler) -> Component {
        let (done, _) = watch::channel(0);
        let relay = opts
            .listener
            .clone()
            .map(|l| Arc::new(supervisor::Relay::new(l)));
        Component {
            state: Arc::new(State {
                scheduler: Mutex::new(scheduler),
                wake: Notify::new(),
                done,
                opts,
                stats: ServerStats::default(),
                relay,
            }),
            listener: None,
            second: None,
        }
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> Result<SocketAddr, ComponentError> {
        match &self.listener {
            Some(l) => Ok(l.local_addr()?),
            None => Err(ComponentError::Io(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "this component listens nowhere",
            ))),
        }
    }

    /// Serves until `cancel` fires, then shuts down gracefully: stops
    /// accepting, interrupts running jobs, lets open connections finish.
    pub async fn serve(self, cancel: CancellationToken) -> Result<(), ComponentError> {
        self.run(None, cancel).await
    }

    /// Runs the component-initiated workflow ([`initiator`]) with `init`, and serves the
    /// bound socket (if any) beside it on the same scheduler, until `cancel` fires or the
    /// workflow cannot go on.
    pub async fn serve_initiated(
        self,
        init: initiator::InitiatorOptions,
        cancel: CancellationToken,
    ) -> Result<(), ComponentError> {
        self.run(Some(init), cancel).await
    }

    async fn run(
        self,
        init: Option<initiator::InitiatorOptions>,
        outer: CancellationToken,
    ) -> Result<(), ComponentError> {
        let Component {
            state,
            listener,
            second,
        } = self;
        // a fatal error of the initiator stops everything, as `outer` does
        let cancel = outer.child_token();
        let mut tasks: JoinSet<()> = JoinSet::new();
        tasks.spawn(drive(state.clone(), cancel.clone()));
        let initiated = init.map(|init| {
            let (state, cancel) = (state.clone(), cancel.clone());
            tokio::spawn(async move {
                let r = initiator::run(state, init, cancel.clone()).await;
                cancel.cancel();
                r
            })
        });
        let accept = async |l: &Option<TcpListener>| match l {
            Some(l) => l.accept().await,
            None => std::future::pending().await,
        };
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                accepted = async {
                    tokio::select! {
                        a = accept(&listener) => a,
                        a = accept(&second) => a,
                    }
                } => match accepted {
                    Ok((tcp, peer)) if tasks.len() > state.opts.max_connections => {
                        tracing::warn!("{peer}: too many connections, closing");
                        state.stats.refused_over_limit.fetch_add(1, Relaxed);
                        drop(tcp);
                    }
                    Ok((tcp, peer)) => {
                        let _ = tcp.set_nodelay(true);
                        tasks.spawn(connection(state.clone(), tcp, peer, cancel.clone()));
                    }
                    Err(e) => {
                        tracing::warn!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(res) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Err(e) = res && e.is_panic() {
                        tracing::error!("task panicked: {e}");
                    }
                }
            }
        }
        drop(listener);
        drop(second);
        if let Some(r) = &state.relay {
            r.wake_all();
        }
        while let Some(res) = tasks.join_next().await {
            if let Err(e) = res
                && e.is_panic()
            {
                tracing::error!("task panicked: {e}");
            }
        }
        match initiated {
            Some(h) => match h.await {
                Ok(r) => r,
                Err(e) => Err(ComponentError::Initiated(format!("task failed: {e}"))),
            },
            None => Ok(()),
        }
    }
}

/// A listening socket on `addr`; the unspecified IPv6 address (`[::]`) takes IPv4
/// connections too (dual stack, whatever `net.ipv6.bindv6only` says), as the reference's
/// tornado server listens on every address of both families. On a host without IPv6, `[::]`
/// becomes `0.0.0.0` (a port in use or not allowed stays an error).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    match listen_on(addr) {
        Err(e)
            if addr.is_ipv6()
                && addr.ip().is_unspecified()
                && !matches!(
                    e.kind(),
                    std::io::ErrorKind::AddrInUse | std::io::ErrorKind::PermissionDenied
                ) =>
        {
            tracing::info!("no IPv6 here ({e}): listening on IPv4 only");
            listen_on(SocketAddr::from(([0, 0, 0, 0], addr.port())))
        }
        r => r,
    }
}

fn listen_on(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        s.set_only_v6(false)?;
    }
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    TcpListener::from_std(s.into())
}

/// Runs the scheduler: starts due runs, sleeps until the next deadline.
async fn drive(state: Arc<State>, cancel: CancellationToken) {
    let mut runs: JoinSet<()> = JoinSet::new();
    loop {
        let (due, next) = {
            let mut s = state.sched();
            let t = now();
            let due = s.poll(t);
            (due, s.next_wakeup())
        };
        for run in due {
            runs.spawn(execute(state.clone(), run));
        }
        let delay = next
            .map(|n| {
                let d = n.as_micros().saturating_sub(now().as_micros());
                Duration::from_micros(u64::try_from(d.max(0)).unwrap_or(0))
            })
            .unwrap_or(Duration::from_secs(60))
            .min(Duration::from_secs(60));
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = state.wake.notified() => {}
            _ = tokio::time::sleep(delay) => {}
            Some(_) = runs.join_next(), if !runs.is_empty() => {}
        }
    }
    state.sched().interrupt_all();
    // Services should return soon after their interrupt flag is set; one
    // that does not is abandoned after 10 s (its thread is left to finish).
    let drain = async { while runs.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .is_err()
    {
        tracing::warn!("jobs still running at shutdown were abandoned");
        runs.abort_all();
    }
}

async fn execute(state: Arc<State>, run: Run) {
    let Run {
        id,
        spec,
        service,
        ctx,
    } = run;
    // a thread of its own, not the runtime's blocking pool: a job may run for hours, and that
    // pool (512 threads at most) also does the file system work of export downloads
    let (tx, rx) = tokio::sync::oneshot::channel();
    let thread = std::thread::Builder::new()
        .name(format!("job-{id}"))
        .spawn(move || {
            // a panic is the job's failure, with its message, and nothing else's
            let out =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| service.run(&spec, ctx)))
                    .unwrap_or_else(|panic| {
                        Err(format!("service failed: {}", panic_text(&*panic)))
                    });
            let _ = tx.send(out);
        });
    let out = match thread {
        Ok(_) => rx
            .await
            .unwrap_or_else(|_| Err("service failed: its thread ended".to_string())),
        Err(e) => Err(format!("service not started: no thread: {e}")),
    };
    state.sched().complete(id, out, now());
    state.done.send_modify(|n| *n = n.wrapping_add(1));
    state.wake.notify_one();
}

/// The message a panic carried (`panic!` with a literal or a formatted text).
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_string())
}

async fn connection(
    state: Arc<State>,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    cancel: CancellationToken,
) {
    let st = state.clone();
    let _open = OpenConnection::new(&st.stats);
    match state.opts.tls.clone() {
        None => serve_io(state, tcp, Identity::unauthenticated(), cancel).await,
        Some(tls) => {
            let hs = tokio::time::timeout(state.opts.handshake_timeout, tls.accept(tcp)).await;
            match hs {
                Ok(Ok((stream, identity))) => serve_io(state, stream, identity, cancel).await,
                Ok(Err(e)) => {
                    st.stats.tls_failures.fetch_add(1, Relaxed);
                    tracing::info!("{peer}: TLS: {e}");
                }
                Err(_) => {
                    st.stats.tls_failures.fetch_add(1, Relaxed);
                    tracing::info!("{peer}: TLS handshake timed out");
                }
            }
        }
    }
}

async fn serve_io<IO>(state: Arc<State>, io: IO, identity: Identity, cancel: CancellationToken)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc_state = state.clone();
    let svc = service_fn(move |req| {
        let st = svc_state.clone();
        let id = identity.clone();
        async move {
            let reply = route(&st, &id, req).await;
            st.stats.response(reply.status().as_u16());
            Ok::<_, Infallible>(reply)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(state.opts.header_timeout)
        .serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res { tracing::debug!("connection: {e}"); }
        }
        _ = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(10), conn).await;
        }
    }
}

async fn route(state: &State, identity: &Identity, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    if let Some(relay) = &state.relay
        && let Some(which) = relay.route(&path)
    {
        return listener_route(state, relay, which, identity, req).await;
    }
    match (req.method(), path.as_str()) {
        (&Method::GET, "/") => index(state, identity),
        (&Method::GET, "/capability" | "/capability/") => capability_links(state, identity),
        (&Method::GET, p) if p.starts_with("/capability/") => {
            let token = &p["/capability/".len()..];
            match state.sched().capability(token) {
                Some(c) => mplane_reply(&Message::Statement(c.clone())),
                None => reply(
                    StatusCode::NOT_FOUND,
                    "text/html; charset=UTF-8",
                    "<html><body>404: no such capability</body></html>",
                ),
            }
        }
        (&Method::GET, p) if p.starts_with("/registry/") => {
            match state.opts.registries_served.get(&p["/registry/".len()..]) {
                Some(json) => reply(StatusCode::OK, "application/json", json.clone()),
                None => text(StatusCode::NOT_FOUND, "no such registry"),
            }
        }
        (m, p) if p.starts_with("/export/") || p == "/export" => {
            let Some(root) = &state.opts.export_dir else {
                return text(StatusCode::NOT_FOUND, "no exports here");
            };
            let labels: Vec<String> = state
                .sched()
                .capabilities_for(identity)
                .filter_map(|c| c.label.clone())
                .collect();
            let rel = p
                .strip_prefix("/export")
                .unwrap_or("")
                .trim_start_matches('/');
            match files::serve(root, rel, m, req.headers(), &labels).await {
                files::Served::Small(status, ctype, body) => reply(status, ctype, body),
                files::Served::File {
                    status,
                    headers,
                    file,
                    len,
                } => {
                    let body = match file {
                        Some(f) => files::body(f, len).boxed(),
                        None => full(Bytes::new()),
                    };
                    let mut r = Response::new(body);
                    *r.status_mut() = status;
                    *r.headers_mut() = headers;
                    r
                }
            }
        }
        (&Method::GET, "/metrics") => metrics(state, identity),
        (&Method::POST, "/") => post(state, identity, req).await,
        (_, "/") => text(StatusCode::METHOD_NOT_ALLOWED, "use GET or POST"),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/html; charset=UTF-8",
            "<html><body>404: Not Found</body></html>",
        ),
    }
}

fn metrics(state: &State, identity: &Identity) -> Response<Body> {
    let Some(access) = &state.opts.metrics.access else {
        return text(
            StatusCode::NOT_FOUND,
            "metrics are not enabled ([component] metrics_roles)",
        );
    };
    let (allowed, jobs, caps) = {
        let s = state.sched();
        (
            access.allows(identity, s.azn()),
            s.job_count(),
            s.capabilities().count(),
        )
    };
    if !allowed {
        return text(
            StatusCode::FORBIDDEN,
            "this identity may not read the metrics",
        );
    }
    let mut out = crate::metrics::Exposition::new();
    state.stats.collect(&mut out, jobs, caps);
    for source in &state.opts.metrics.sources {
        source.collect(&mut out);
    }
    reply(StatusCode::OK, crate::metrics::CONTENT_TYPE, out.render())
}

fn index(state: &State, identity: &Identity) -> Response<Body> {
    let mut page = String::from(
        "<html><head><title>mplane component</title></head><body>\n\
         <h1>mPlane component</h1>\n<p>Capabilities available to you:</p>\n",
    );
    for c in state.sched().capabilities_for(identity) {
        let json = Message::Statement(c.clone()).unparse();
        let _ = writeln!(page, "<pre>{}</pre>", html_escape(&json));
    }
    page.push_str("</body></html>\n");
    reply(StatusCode::OK, "text/html; charset=UTF-8", page)
}

fn capability_links(state: &State, identity: &Identity) -> Response<Body> {
    let mut page = String::from("<html><head><title>Capabilities</title></head><body>\n");
    for c in state.sched().capabilities_for(identity) {
        let tok = html_escape(c.token.as_deref().unwrap_or(""));
        let label = html_escape(c.label.as_deref().unwrap_or(""));
        let _ = writeln!(page, "<a href='/capability/{tok}'>{label}</a><br/>");
    }
    page.push_str("</body></html>\n");
    reply(StatusCode::OK, "text/html; charset=UTF-8", page)
}

/// A request of a component to the supervisor's listener paths.
async fn listener_route(
    state: &State,
    relay: &Arc<supervisor::Relay>,
    which: supervisor::ListenerPath,
    identity: &Identity,
    req: Request<Incoming>,
) -> Response<Body> {
    use supervisor::ListenerPath as P;
    if let Some(access) = &relay.opts.access
        && !access.allows(identity, state.sched().azn())
    {
        return text(
            StatusCode::FORBIDDEN,
            "this identity may not register components here ([client] component_roles)",
        );
    }
    let answer = match (which, req.method()) {
        (P::Specification, &Method::GET) => relay.fetch(identity),
        (P::Registration | P::Result, &Method::POST) => {
            // the reference's listener: `400 Invalid format` for any other media type
            if req
                .headers()
                .get(CONTENT_TYPE)
                .is_none_or(|v| v.as_bytes() != MEDIA_TYPE.as_bytes())
            {
                return text(StatusCode::BAD_REQUEST, "Invalid format");
            }
            let body = match read_body(state, req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            if which == P::Result {
                relay.file(&body, &state.opts.registries)
            } else {
                match relay.register(&body, identity, &state.opts.registries) {
                    Err(a) => a,
                    Ok(r) => {
                        let n = r.services.len();
                        {
                            let mut s = state.sched();
                            s.retain_services(|c| {
                                !c.token.as_ref().is_some_and(|t| r.replaced.contains(t))
                            });
                            for svc in r.services {
                                s.add_service(svc, state.opts.cap_link.as_deref());
                            }
                        }
                        tracing::info!("{identity} registered {n} capabilities");
                        r.answer
                    }
                }
            }
        }
        _ => return text(StatusCode::METHOD_NOT_ALLOWED, "wrong method for this path"),
    };
    let (status, ctype, body) = answer;
    reply(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        ctype,
        body,
    )
}

/// The body of a POST as text, bounded by [`ComponentOptions::max_body`]; the error
/// response otherwise.
async fn read_body(state: &State, req: Request<Incoming>) -> Result<String, Response<Body>> {
    let max = state.opts.max_body;
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body larger than {max} bytes\n"),
        ));
    }
    let body = match Limited::new(req.into_body(), max).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return Err(text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("body larger than {max} bytes\n"),
                ));
            }
            return Err(text(
                StatusCode::BAD_REQUEST,
                format!("cannot read body: {e}\n"),
            ));
        }
    };
    match String::from_utf8(body.to_vec()) {
        Ok(b) => Ok(b),
        Err(_) => Err(text(StatusCode::BAD_REQUEST, "body is not UTF-8\n")),
    }
}

async fn post(state: &State, identity: &Identity, req: Request<Incoming>) -> Response<Body> {
    let ctype_ok = req
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == MEDIA_TYPE.as_bytes());
    if !ctype_ok {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type must be exactly {MEDIA_TYPE}\n"),
        );
    }
    let body = match read_body(state, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let body = body.as_str();
    let msg = match model::parse(body, &state.opts.registries) {
        Ok(m) => m,
        Err(e) => {
            return match serde_json::from_str::<serde_json::Value>(body) {
                Ok(serde_json::Value::Object(o)) => {
                    let token = o.get("token").and_then(|t| t.as_str()).map(str::to_string);
                    mplane_reply(&Exception::new(token, e.exception_message()).into())
                }
                Ok(_) => text(StatusCode::BAD_REQUEST, "body is not a JSON object\n"),
                Err(je) => text(StatusCode::BAD_REQUEST, format!("malformed JSON: {je}\n")),
            };
        }
    };
    let spec_token = match &msg {
        Message::Statement(s) if s.kind == StatementKind::Specification => {
            Some(s.token.clone().unwrap_or_else(|| s.default_token()))
        }
        _ => None,
    };
    let mut done = state.done.subscribe();
    let (answer, wait_for) = {
        let mut s = state.sched();
        let existed = spec_token
            .as_deref()
            .is_some_and(|t| s.is_repeated(t).is_some());
        let answer = s.handle(&msg, identity, now());
        let wait_for = match (&spec_token, existed) {
            (Some(t), false) if s.is_repeated(t) == Some(false) => Some(t.clone()),
            _ => None,
        };
        (answer, wait_for)
    };
    state.wake.notify_one();
    let Some(token) = wait_for else {
        return mplane_reply(&answer);
    };
    let deadline = tokio::time::Instant::now() + state.opts.reply_wait;
    loop {
        {
            let mut s = state.sched();
            if s.is_finished(&token) {
                return mplane_reply(&s.redeem(&token, now()));
            }
            if s.is_repeated(&token).is_none() {
                return mplane_reply(&answer);
            }
        }
        tokio::select! {
            r = done.changed() => if r.is_err() { break },
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    mplane_reply(&answer)
}
