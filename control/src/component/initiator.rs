//! # Component-initiated workflow
//!
//! The component connects out to its client or supervisor (the *listener*, an HTTPS server)
//! instead of waiting for it, as the reference `mpcom` does with `workflow =
//! component-initiated` (DIGEST §7b): for a probe behind NAT or a firewall that only lets
//! connections out.
//!
//! 1. A TLS handshake with the listener tells its identity (nothing else is sent).
//! 2. `POST registration_path` with an envelope of the capabilities that identity may use.
//!    The reply (the reference's is `{"<label>":{"registered":"ok"},...}`, not an mPlane
//!    message) is checked label by label and logged.
//! 3. Every [`InitiatorOptions::poll`]: `GET specification_path`, an envelope of what the
//!    listener queued for us. Specifications and interrupts go to the scheduler as if that
//!    identity had posted them, and the immediate reply (receipt, exception) is posted back.
//! 4. When a job ends, its result (or exception) is posted; each completed run of a repeated
//!    specification posts the envelope of its results so far. Replies go to the path of the
//!    specification's `link` (the listener sets its `listen-spec-link` there), else to
//!    `result_path`, always on the listener's host: a `link` cannot send results elsewhere.
//!
//! Unlike the reference, every request has a timeout (the reference hangs on a listener
//! that accepts TCP and never answers); a listener that goes away is retried every
//! [`InitiatorOptions::retry`] and registered with again when it is back (the reference
//! exits), results that could not be delivered wait in a bounded outbox
//! ([`InitiatorOptions::outbox`]) and go first once it is; the reference's pseudo-capability
//! `callback` (quirk Q10) is not sent; results of immediate starts are never lost (the
//! reference's race, §7b).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use hyper::Method;
use tokio_util::sync::CancellationToken;

use super::metrics::InitiatorStats;
use super::{ComponentError, State, now};
use crate::client::{Client, ClientError, HttpReply, Url};
use crate::model::{self, Envelope, MEDIA_TYPE, Message, StatementKind};
use crate::tls::{Connector, Identity};

/// Settings of the component-initiated workflow (the `[component]` keys `client_host`,
/// `client_port`, `registration_path`, `specification_path`, `result_path`).
#[derive(Debug, Clone)]
pub struct InitiatorOptions {
    /// The listener: `https://client_host:client_port/` (`http://` without `[TLS]`).
    pub listener: Url,
    /// Our certificate for the listener (`None` for plain HTTP).
    pub connector: Option<Connector>,
    /// The `[TLS]` files of `connector`: read again at each reconnection, so that renewed
    /// certificates are used once the listener refuses the old ones (or is restarted), and
    /// whenever [`InitiatorOptions::reload`] asks.
    pub tls_files: Option<crate::config::TlsFiles>,
    /// Where capabilities are registered (`/register/capability` in the reference's
    /// examples).
    pub registration_path: String,
    /// Where queued specifications are fetched (`/show/specification`).
    pub specification_path: String,
    /// Where replies go when a specification has no usable `link` (`/register/result`).
    pub result_path: String,
    /// Time between two fetches of the specification path (default 5 s, as the reference).
    pub poll: Duration,
    /// Time before trying again after the listener failed (default 5 s).
    pub retry: Duration,
    /// Longest a request (connection, handshake, reply) may take (default 10 s).
    pub timeout: Duration,
    /// Most replies held while the listener cannot take them (default 10,000); the oldest
    /// are dropped, and counted in the log, beyond it.
    pub outbox: usize,
    /// Asks the running workflow to read [`InitiatorOptions::tls_files`] again now (`mpcom`
    /// does on SIGHUP), instead of at its next reconnection.
    pub reload: TlsReload,
}

/// A request to read the listener's `[TLS]` files again, shared between whoever asks (a
/// signal handler) and the running workflow: the next request to the listener uses the new
/// certificate, without waiting for the listener to refuse the old one. A request made while
/// the workflow is busy is kept until it looks.
#[derive(Debug, Clone, Default)]
pub struct TlsReload(Arc<tokio::sync::Notify>);

impl TlsReload {
    /// Asks for the files to be read again.
    pub fn reload(&self) {
        self.0.notify_one();
    }

    /// Completes when a reload was asked for (since the last one was taken).
    async fn requested(&self) {
        self.0.notified().await;
    }
}

impl InitiatorOptions {
    /// The workflow a `[component]` section with `workflow = component-initiated`
    /// describes: the listener at `client_host:client_port` (`https` with `tls`, whose files
    /// are read again at each reconnection), its paths, and `poll_interval`.
    pub fn from_component(
        c: &crate::config::ComponentConfig,
        tls: Option<&crate::config::TlsFiles>,
    ) -> Result<InitiatorOptions, ComponentError> {
        let host = c.client_host.clone().unwrap_or_default();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let bracketed = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        let listener = Url::parse(&format!("{scheme}://{bracketed}:{}/", c.client_port))
            .map_err(|e| ComponentError::Initiated(format!("client_host {host:?}: {e}")))?;
        let connector = tls
            .map(Connector::new)
            .transpose()
            .map_err(|e| ComponentError::Initiated(format!("[TLS]: {e}")))?;
        let mut init = InitiatorOptions::new(listener, connector);
        init.tls_files = tls.cloned();
        for (given, path) in [
            (&c.registration_path, &mut init.registration_path),
            (&c.specification_path, &mut init.specification_path),
            (&c.result_path, &mut init.result_path),
        ] {
            if let Some(p) = given {
                *path = p.clone();
            }
        }
        if let Some(p) = c.poll_interval {
            init.poll = p;
        }
        Ok(init)
    }

    /// Defaults for `listener` with the reference's example paths.
    pub fn new(listener: Url, connector: Option<Connector>) -> InitiatorOptions {
        InitiatorOptions {
            listener,
            connector,
            tls_files: None,
            registration_path: "/register/capability".into(),
            specification_path: "/show/specification".into(),
            result_path: "/register/result".into(),
            poll: Duration::from_secs(5),
            retry: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
            outbox: 10_000,
            reload: TlsReload::default(),
        }
    }
}

/// Why a session with the listener ended.
enum Ended {
    /// The component is stopping.
    Cancelled,
    /// The listener failed; try again later.
    Retry(String),
}

/// A job whose replies we push: where they go, and how many of its runs were reported.
struct Tracked {
    path: String,
    reported: u64,
}

/// The workflow's state across sessions (reconnections).
struct Initiator {
    state: Arc<State>,
    opts: InitiatorOptions,
    client: Client,
    /// Replies not yet delivered: (path on the listener, message).
    outbox: VecDeque<(String, Message)>,
    /// Jobs whose results are still to be pushed, by token.
    tracked: BTreeMap<String, Tracked>,
    dropped: u64,
}

/// Runs the workflow until `cancel` fires; an error only for what retrying cannot mend (no
/// capability authorised for the listener).
pub(super) async fn run(
    state: Arc<State>,
    opts: InitiatorOptions,
    cancel: CancellationToken,
) -> Result<(), ComponentError> {
    let client = Client::new(opts.connector.clone(), state.opts.registries.clone());
    let mut me = Initiator {
        state,
        opts,
        client,
        outbox: VecDeque::new(),
        tracked: BTreeMap::new(),
        dropped: 0,
    };
    me.stats().active.store(true, Relaxed);
    let mut done = me.state.done.subscribe();
    let reload = me.opts.reload.clone();
    loop {
        match me.session(&cancel).await? {
            Ended::Cancelled => return Ok(()),
            Ended::Retry(why) => {
                me.stats().failures.fetch_add(1, Relaxed);
                me.reload_tls(false);
                tracing::warn!(
                    "listener {}: {why}; trying again in {:?}",
                    me.opts.listener.authority(),
                    me.opts.retry
                );
                // jobs that end meanwhile are taken from the scheduler (which forgets
                // finished jobs after a while) into the outbox
                let retry = tokio::time::sleep(me.opts.retry);
                tokio::pin!(retry);
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => return Ok(()),
                        _ = &mut retry => break,
                        // new files: try them now
                        _ = reload.requested() => {
                            me.reload_tls(true);
                            break;
                        }
                        r = done.changed() => {
                            if r.is_err() {
                                return Ok(());
                            }
                            me.collect();
                        }
                    }
                }
            }
        }
    }
}

impl Initiator {
    fn stats(&self) -> &InitiatorStats {
        &self.state.stats.initiator
    }

    /// Reads the TLS files again (see [`InitiatorOptions::tls_files`]); keeps the connector
    /// it has when they do not load. `asked`: on request ([`TlsReload`]), which is logged
    /// either way.
    fn reload_tls(&mut self, asked: bool) {
        let Some(files) = &self.opts.tls_files else {
            if asked {
                tracing::info!("no [TLS] for the listener, nothing to read again");
            }
            return;
        };
        match Connector::new(files) {
            Ok(c) => {
                self.client = Client::new(Some(c), self.state.opts.registries.clone());
                if asked {
                    tracing::info!("[TLS] files for the listener read again");
                }
            }
            Err(e) => tracing::warn!("[TLS] files not reloaded, keeping the old ones: {e}"),
        }
    }

    /// One connection's worth of the workflow: learn the listener's identity, register,
    /// then deliver and poll until the listener fails or `cancel` fires.
    async fn session(&mut self, cancel: &CancellationToken) -> Result<Ended, ComponentError> {
        let listener = self.opts.listener.clone();
        let identity = tokio::select! {
            _ = cancel.cancelled() => return Ok(Ended::Cancelled),
            r = tokio::time::timeout(self.opts.timeout, self.client.peer_identity(&listener)) => {
                match r {
                    Ok(Ok(id)) => id,
                    Ok(Err(e)) => return Ok(Ended::Retry(e.to_string())),
                    Err(_) => return Ok(Ended::Retry("no TLS handshake in time".into())),
                }
            }
        };
        if let Err(why) = self.register(&identity, cancel).await? {
            return Ok(Ended::Retry(why));
        }
        let mut done = self.state.done.subscribe();
        let mut next_poll = tokio::time::Instant::now();
        let reload = self.opts.reload.clone();
        loop {
            self.collect();
            if let Err(why) = self.deliver(cancel).await {
                return Ok(why);
            }
            tokio::select! {
                _ = cancel.cancelled() => return Ok(Ended::Cancelled),
                r = done.changed() => if r.is_err() { return Ok(Ended::Cancelled) },
                // the next request goes out with the new certificate
                _ = reload.requested() => self.reload_tls(true),
                _ = tokio::time::sleep_until(next_poll) => {
                    next_poll = tokio::time::Instant::now() + self.opts.poll;
                    match self.fetch(&identity, cancel).await {
                        Ok(()) => {}
                        Err(ended) => return Ok(ended),
                    }
                }
            }
        }
    }

    /// One request to the listener, bounded by the timeout and `cancel`.
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
        cancel: &CancellationToken,
    ) -> Result<HttpReply, Ended> {
        let url = self.opts.listener.with_path(path);
        let req = self
            .client
            .request(method, &url, body.map(|b| (MEDIA_TYPE, b)));
        tokio::select! {
            _ = cancel.cancelled() => Err(Ended::Cancelled),
            r = tokio::time::timeout(self.opts.timeout, req) => match r {
                Ok(Ok(reply)) => Ok(reply),
                Ok(Err(e)) => Err(Ended::Retry(format!("{path}: {e}"))),
                Err(_) => Err(Ended::Retry(format!("{path}: no reply in {:?}", self.opts.timeout))),
            },
        }
    }

    /// Registers the capabilities `identity` may use. `Ok(Err(why))`: try again later;
    /// `Err`: none is authorised, which only a new configuration mends.
    async fn register(
        &mut self,
        identity: &Identity,
        cancel: &CancellationToken,
    ) -> Result<Result<(), String>, ComponentError> {
        let caps: Vec<Message> = self
            .state
            .sched()
            .capabilities_for(identity)
            .map(|c| Message::Statement(c.clone()))
            .collect();
        if caps.is_empty() {
            return Err(ComponentError::Initiated(format!(
                "no capability is authorised for the listener's identity {identity} \
                 ([Roles] and [Authorizations])"
            )));
        }
        let labels: Vec<String> = caps
            .iter()
            .filter_map(|c| c.as_statement()?.label.clone())
            .collect();
        let mut env = Envelope::new();
        env.contents = caps;
        let path = self.opts.registration_path.clone();
        let reply = match self
            .request(
                Method::POST,
                &path,
                Some(Message::Envelope(env).unparse()),
                cancel,
            )
            .await
        {
            Ok(r) => r,
            Err(Ended::Cancelled) => return Ok(Ok(())),
            Err(Ended::Retry(why)) => return Ok(Err(why)),
        };
        if !reply.status.is_success() {
            return Ok(Err(format!(
                "{path}: HTTP {} {}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
                    .chars()
                    .take(200)
                    .collect::<String>()
            )));
        }
        // {"<label>": {"registered": "ok"}, ...} from the reference; anything else is logged
        let answer: serde_json::Value =
            serde_json::from_slice(&reply.body).unwrap_or(serde_json::Value::Null);
        for label in &labels {
            match answer.get(label).and_then(|a| a.get("registered")) {
                Some(v) if v == "ok" => {}
                Some(_) => tracing::warn!(
                    "listener {}: capability {label} not registered: {}",
                    self.opts.listener.authority(),
                    answer[label]
                ),
                None => {}
            }
        }
        self.stats().registrations.fetch_add(1, Relaxed);
        tracing::info!(
            "registered {} capabilities with {} ({identity})",
            labels.len(),
            self.opts.listener.authority()
        );
        Ok(Ok(()))
    }

    /// Fetches what the listener queued and hands it to the scheduler; the immediate
    /// replies go to the outbox.
    async fn fetch(
        &mut self,
        identity: &Identity,
        cancel: &CancellationToken,
    ) -> Result<(), Ended> {
        let path = self.opts.specification_path.clone();
        let reply = self.request(Method::GET, &path, None, cancel).await?;
        if !reply.status.is_success() {
            return Err(Ended::Retry(format!("{path}: HTTP {}", reply.status)));
        }
        if reply.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let parsed = std::str::from_utf8(&reply.body)
            .map_err(|_| ClientError::Utf8)
            .and_then(|t| Ok(model::parse(t, &self.state.opts.registries)?));
        let messages = match parsed {
            Ok(Message::Envelope(e)) => e.contents,
            Ok(m) => vec![m],
            Err(e) => {
                // one bad message must not stop the workflow: say so, and poll again
                tracing::warn!("listener {}: {path}: {e}", self.opts.listener.authority());
                return Ok(());
            }
        };
        self.stats()
            .fetched
            .fetch_add(messages.len() as u64, Relaxed);
        for msg in messages {
            self.handle(msg, identity);
        }
        self.state.wake.notify_one();
        Ok(())
    }

    /// One message from the listener: to the scheduler, its reply to the outbox.
    fn handle(&mut self, msg: Message, identity: &Identity) {
        let Message::Statement(st) = &msg else {
            tracing::warn!(
                "listener {}: ignored a queued {}",
                self.opts.listener.authority(),
                msg.kind_name()
            );
            return;
        };
        let token = st.token.clone().unwrap_or_else(|| st.default_token());
        let path = match st.kind {
            StatementKind::Specification => self.reply_path(st.link.as_deref()),
            _ => self
                .tracked
                .get(&token)
                .map(|t| t.path.clone())
                .unwrap_or_else(|| self.reply_path(st.link.as_deref())),
        };
        let answer = {
            let mut s = self.state.sched();
            let answer = s.handle(&msg, identity, now());
            if st.kind == StatementKind::Specification && s.completed_runs(&token).is_some() {
                self.tracked.entry(token).or_insert(Tracked {
                    path: path.clone(),
                    reported: 0,
                });
            }
            answer
        };
        self.push(path, answer);
    }

    /// Where replies to a statement with `link` go on the listener: the link's path, or
    /// the result path.
    fn reply_path(&self, link: Option<&str>) -> String {
        link.filter(|l| !l.is_empty())
            .and_then(|l| Url::parse(l).ok())
            .map(|u| u.path)
            .filter(|p| p != "/")
            .unwrap_or_else(|| self.opts.result_path.clone())
    }

    /// Moves what finished jobs produced into the outbox: the result of a single job once,
    /// a repeated job's envelope after each completed run.
    fn collect(&mut self) {
        let mut out = Vec::new();
        {
            let mut s = self.state.sched();
            let t = now();
            self.tracked.retain(|token, job| {
                let Some(runs) = s.completed_runs(token) else {
                    return false;
                };
                let repeated = s.is_repeated(token) == Some(true);
                let finished = s.is_finished(token);
                if finished || (repeated && runs > job.reported) {
                    job.reported = runs;
                    out.push((job.path.clone(), s.redeem(token, t)));
                }
                !finished
            });
        }
        for (path, msg) in out {
            self.push(path, msg);
        }
    }

    fn push(&mut self, path: String, msg: Message) {
        if self.outbox.len() >= self.opts.outbox {
            self.outbox.pop_front();
            self.dropped += 1;
            self.stats().dropped.fetch_add(1, Relaxed);
            tracing::warn!(
                "listener {}: outbox full, {} replies dropped so far",
                self.opts.listener.authority(),
                self.dropped
            );
        }
        self.outbox.push_back((path, msg));
        self.stats().outbox.store(self.outbox.len() as u64, Relaxed);
    }

    /// Posts the outbox in order; stops at the first failure (the rest waits).
    async fn deliver(&mut self, cancel: &CancellationToken) -> Result<(), Ended> {
        while let Some((path, msg)) = self.outbox.front() {
            let path = path.clone();
            let reply = self
                .request(Method::POST, &path, Some(msg.unparse()), cancel)
                .await?;
            if reply.status.is_server_error() {
                return Err(Ended::Retry(format!("{path}: HTTP {}", reply.status)));
            }
            if !reply.status.is_success() {
                // the listener refuses this message for good: do not block the others
                tracing::warn!(
                    "listener {}: {path}: HTTP {} for a {}",
                    self.opts.listener.authority(),
                    reply.status,
                    msg.kind_name()
                );
            }
            self.outbox.pop_front();
            self.stats().posted.fetch_add(1, Relaxed);
            self.stats().outbox.store(self.outbox.len() as u64, Relaxed);
        }
        Ok(())
    }
}
