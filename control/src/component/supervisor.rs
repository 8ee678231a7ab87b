//! # Supervisor: the listener of the component-initiated workflow, relayed to clients
//!
//! Components that connect out ([`super::initiator`], or the reference's `mpcom` with
//! `workflow = component-initiated`) register here; clients see their capabilities on the
//! same server as any capability and run them as usual, as with the reference's `mpsup`
//! (DIGEST §7b). The three paths of the reference's listener, from `[client]`:
//!
//! | request (from a component) | reply |
//! |---|---|
//! | POST `registration-path`: an envelope of capabilities (a bare capability too) | 200 `application/x-mplane+json`: `{"<label>":{"registered":"ok"},...}`, as the reference |
//! | GET `specification-path` | 200 `application/x-mplane+json`: an envelope of what is queued for the peer (empty when nothing is) |
//! | POST `result-path` (or the path of the `link` we gave) | 200, empty: a receipt, result, exception or envelope, filed by token |
//!
//! A registered capability becomes a relay service: a specification from a client is
//! forwarded to the component that registered it (a label `<label>-<n>` and a token of its
//! own, `link` = `listen-spec-link`), queued until that component fetches it, and answered
//! with the component's result under the client's token and label; an interrupt from the
//! client is forwarded too, and the partial result relayed. A component that registers again
//! replaces its capabilities. Media types are checked byte-exactly as by the reference
//! (`400 Invalid format` otherwise); a body that is not an mPlane message is a 400 with the
//! reason (the reference answers a tornado 500 page).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::model::{self, Envelope, Message, Statement, StatementKind};
use crate::registry::Registries;
use crate::scheduler::{JobContext, Outcome, Service};
use crate::tls::Identity;

/// Settings of the listener side (`[client]` with `workflow = component-initiated`).
#[derive(Debug, Clone)]
pub struct ListenerOptions {
    /// Where components register (`/register/capability`).
    pub registration_path: String,
    /// Where components fetch what is queued for them (`/show/specification`).
    pub specification_path: String,
    /// Where components post receipts and results (`/register/result`).
    pub result_path: String,
    /// The `link` put on forwarded specifications (`listen-spec-link`): where the component
    /// posts their results.
    pub spec_link: String,
    /// Most messages queued for one component (default 10,000); a specification beyond it
    /// fails at once.
    pub max_queued: usize,
    /// Most replies held for tokens nobody waits for (default 10,000; the oldest go first).
    pub max_unclaimed: usize,
    /// How long a relayed specification waits for the component after its scope ended (or
    /// after it was interrupted) before it fails (default 60 s).
    pub grace: Duration,
    /// Who may use the listener's paths (`[client] component_roles`); `None`: every accepted
    /// peer, as the reference.
    pub access: Option<crate::azn::RoleAccess>,
}

impl ListenerOptions {
    /// The listener a `[client]` section describes: its paths (a leading `/` added, as the
    /// reference's listener does), `listen-spec-link`, and `component_roles`.
    pub fn from_client(c: &crate::config::ClientConfig) -> ListenerOptions {
        use crate::config::with_slash;
        let mut l = ListenerOptions::new(c.listen_spec_link.clone().unwrap_or_default());
        l.registration_path = with_slash(c.registration_path.clone());
        l.specification_path = with_slash(c.specification_path.clone());
        l.result_path = with_slash(c.result_path.clone());
        l.access = c.component_roles.clone();
        l
    }

    /// Defaults with the reference's paths and `spec_link`.
    pub fn new(spec_link: impl Into<String>) -> ListenerOptions {
        ListenerOptions {
            registration_path: "/register/capability".into(),
            specification_path: "/show/specification".into(),
            result_path: "/register/result".into(),
            spec_link: spec_link.into(),
            max_queued: 10_000,
            max_unclaimed: 10_000,
            grace: Duration::from_secs(60),
            access: None,
        }
    }
}

#[derive(Default)]
struct Inner {
    /// What each component will get at its next fetch.
    queues: BTreeMap<Identity, Vec<Message>>,
    /// The latest reply per forwarded token.
    replies: BTreeMap<String, Message>,
    /// Tokens of `replies` in arrival order (to bound those nobody claims).
    arrival: VecDeque<String>,
    /// Capability tokens each component registered.
    registered: BTreeMap<Identity, Vec<String>>,
    /// Serial number of forwarded specifications (their labels).
    serial: u64,
    /// When each component last fetched its queue.
    last_fetch: BTreeMap<Identity, Instant>,
}

/// The listener's state, shared by the HTTP routes and the relay services.
pub(crate) struct Relay {
    pub(crate) opts: ListenerOptions,
    inner: Mutex<Inner>,
    arrived: Condvar,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

/// What a route answers: status, content type, body.
pub(crate) type Answer = (u16, &'static str, String);

/// What a registration brings: the relay services of the capabilities, the tokens of what
/// the component registered before (to remove), and the reply.
pub(crate) struct Registered {
    pub(crate) services: Vec<Arc<dyn Service>>,
    pub(crate) replaced: Vec<String>,
    pub(crate) answer: Answer,
}

impl Relay {
    pub(crate) fn new(opts: ListenerOptions) -> Relay {
        Relay {
            opts,
            inner: Mutex::new(Inner::default()),
            arrived: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Which listener path `path` is, if any (a trailing `/` allowed, as the reference).
    pub(crate) fn route(&self, path: &str) -> Option<ListenerPath> {
        let p = path
            .strip_suffix('/')
            .filter(|p| !p.is_empty())
            .unwrap_or(path);
        if p == self.opts.registration_path {
            Some(ListenerPath::Registration)
        } else if p == self.opts.specification_path {
            Some(ListenerPath::Specification)
        } else if p == self.opts.result_path || self.link_path().as_deref() == Some(p) {
            Some(ListenerPath::Result)
        } else {
            None
        }
    }

    fn link_path(&self) -> Option<String> {
        crate::client::Url::parse(&self.opts.spec_link)
            .ok()
            .map(|u| u.path)
    }

    /// A registration from `identity`: the capabilities to relay (replacing what it
    /// registered before: the tokens to remove), and the reply.
    pub(crate) fn register(
        self: &Arc<Self>,
        body: &str,
        identity: &Identity,
        registries: &Registries,
    ) -> Result<Registered, Answer> {
        let msg = model::parse(body, registries)
            .map_err(|e| (400, "text/plain", format!("not an mPlane message: {e}\n")))?;
        let contents = match msg {
            Message::Envelope(e) => e.contents,
            m => vec![m],
        };
        let mut answer = serde_json::Map::new();
        let mut services: Vec<Arc<dyn Service>> = Vec::new();
        let mut tokens = Vec::new();
        for m in contents {
            match m {
                Message::Statement(mut cap) if cap.kind == StatementKind::Capability => {
                    let label = cap.label.clone().unwrap_or_default();
                    // relayed under our own link (the scheduler sets it) and a token of
                    // the capability and the component, so that two components offering
                    // the same capability stay two capabilities here
                    cap.link = None;
                    cap.token = Some(crate::model::token::md5_hex(&format!(
                        "{}:{identity}",
                        cap.default_token()
                    )));
                    tokens.extend(cap.token.clone());
                    answer.insert(label, serde_json::json!({"registered": "ok"}));
                    services.push(Arc::new(RelayService {
                        cap,
                        component: identity.clone(),
                        relay: self.clone(),
                    }));
                }
                m => {
                    let label = m
                        .as_statement()
                        .and_then(|s| s.label.clone())
                        .unwrap_or_default();
                    answer.insert(
                        label,
                        serde_json::json!({"registered": "no", "reason": "Not a capability"}),
                    );
                }
            }
        }
        let old = self
            .lock()
            .registered
            .insert(identity.clone(), tokens)
            .unwrap_or_default();
        let reply = serde_json::Value::Object(answer).to_string();
        Ok(Registered {
            services,
            replaced: old,
            answer: (200, model::MEDIA_TYPE, reply),
        })
    }

    /// What is queued for `identity`, as an envelope (empty when nothing is).
    pub(crate) fn fetch(&self, identity: &Identity) -> Answer {
        let mut env = Envelope::new();
        let mut inner = self.lock();
        inner.last_fetch.insert(identity.clone(), Instant::now());
        env.contents = inner.queues.remove(identity).unwrap_or_default();
        drop(inner);
        (200, model::MEDIA_TYPE, Message::Envelope(env).unparse())
    }

    /// A reply from a component: filed by token, waiters woken.
    pub(crate) fn file(&self, body: &str, registries: &Registries) -> Answer {
        let msg = match model::parse(body, registries) {
            Ok(m) => m,
            Err(e) => return (400, "text/plain", format!("not an mPlane message: {e}\n")),
        };
        let Some(token) = msg.token().map(str::to_string) else {
            return (400, "text/plain", "a reply without a token\n".into());
        };
        let mut inner = self.lock();
        if inner.replies.insert(token.clone(), msg).is_none() {
            inner.arrival.push_back(token);
        }
        while inner.arrival.len() > self.opts.max_unclaimed {
            if let Some(old) = inner.arrival.pop_front() {
                inner.replies.remove(&old);
            }
        }
        drop(inner);
        self.arrived.notify_all();
        (200, "text/html; charset=UTF-8", String::new())
    }

    /// Queues `msg` for `component`; false when its queue is full.
    fn queue(&self, component: &Identity, msg: Message) -> bool {
        let mut inner = self.lock();
        let q = inner.queues.entry(component.clone()).or_default();
        if q.len() >= self.opts.max_queued {
            return false;
        }
        q.push(msg);
        true
    }

    /// Takes `token`'s message back out of `component`'s queue if the component has not
    /// fetched since `queued` (it is gone, or stuck); true if it was still there.
    fn withdraw_unfetched(&self, component: &Identity, token: &str, queued: Instant) -> bool {
        let mut inner = self.lock();
        if inner
            .last_fetch
            .get(component)
            .is_some_and(|t| *t >= queued)
        {
            return false;
        }
        let Some(q) = inner.queues.get_mut(component) else {
            return false;
        };
        let before = q.len();
        q.retain(|m| m.token() != Some(token));
        q.len() != before
    }

    /// Waits up to `d` for a reply to `token` other than a receipt; takes it.
    fn wait_reply(&self, token: &str, d: Duration) -> Option<Message> {
        let deadline = Instant::now() + d;
        let mut inner = self.lock();
        loop {
            match inner.replies.get(token) {
                Some(Message::Statement(s)) if s.kind == StatementKind::Receipt => {}
                Some(_) => {
                    inner.arrival.retain(|t| t != token);
                    return inner.replies.remove(token);
                }
                None => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            inner = self
                .arrived
                .wait_timeout(inner, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    /// Wakes every relay (shutdown: they see their interrupt flags).
    pub(crate) fn wake_all(&self) {
        self.arrived.notify_all();
    }
}

/// The listener's paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListenerPath {
    Registration,
    Specification,
    Result,
}

/// A capability registered by a component, run by forwarding to it.
struct RelayService {
    cap: Statement,
    component: Identity,
    relay: Arc<Relay>,
}

impl Service for RelayService {
    fn capability(&self) -> &Statement {
        &self.cap
    }

    fn run(&self, spec: &Statement, ctx: JobContext) -> Outcome {
        let serial = {
            let mut inner = self.relay.lock();
            inner.serial += 1;
            inner.serial
        };
        let mut fwd = spec.clone();
        fwd.kind = StatementKind::Specification;
        fwd.link = Some(self.relay.opts.spec_link.clone());
        fwd.label = Some(format!(
            "{}-{serial}",
            self.cap.label.as_deref().unwrap_or("relay")
        ));
        fwd.token = None;
        let token = fwd.default_token();
        fwd.token = Some(token.clone());
        if !self
            .relay
            .queue(&self.component, Message::Statement(fwd.clone()))
        {
            return Err(format!(
                "component {} has too many specifications waiting",
                self.component
            ));
        }
        let queued = Instant::now();
        let mut interrupted = false;
        let mut stopped_at: Option<Instant> = None;
        loop {
            if let Some(reply) = self.relay.wait_reply(&token, Duration::from_millis(200)) {
                return match reply {
                    Message::Statement(mut r) if r.kind == StatementKind::Result => {
                        r.token = spec.token.clone();
                        r.label = spec.label.clone();
                        Ok(r)
                    }
                    Message::Exception(e) => Err(e.message),
                    m => Err(format!(
                        "component {} answered with a {}",
                        self.component,
                        m.kind_name()
                    )),
                };
            }
            // a component that stopped fetching (gone, or stuck) fails the job instead of
            // leaving it waiting for ever
            if queued.elapsed() > self.relay.opts.grace
                && self
                    .relay
                    .withdraw_unfetched(&self.component, &token, queued)
            {
                return Err(format!(
                    "component {} has not fetched its specifications for {:?}: is it running?",
                    self.component, self.relay.opts.grace
                ));
            }
            if ctx.interrupt.is_interrupted() && !interrupted {
                // forwarded at once: the component returns what it has
                interrupted = true;
                let mut int = fwd.derive(StatementKind::Interrupt);
                int.link = None;
                self.relay.queue(&self.component, Message::Statement(int));
            }
            if ctx.interrupt.is_set() {
                let since = *stopped_at.get_or_insert_with(Instant::now);
                if since.elapsed() > self.relay.opts.grace {
                    return Err(format!(
                        "component {} did not answer within {:?} of the end",
                        self.component, self.relay.opts.grace
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps_envelope(labels: &[&str]) -> String {
        let caps: Vec<String> = labels
            .iter()
            .map(|l| {
                format!(
                    r#"{{"capability":"measure","version":1,"label":"{l}","when":"now ... future",
                    "parameters":{{"destination.ip4":"*"}},"results":["delay.twoway.icmp.us"]}}"#
                )
            })
            .collect();
        format!(
            r#"{{"envelope":"message","version":1,"contents":[{},{{"exception":"x","message":"m"}}]}}"#,
            caps.join(",")
        )
    }

    #[test]
    fn registrations_are_per_component_and_replace_the_last() {
        let relay = Arc::new(Relay::new(ListenerOptions::new(
            "https://127.0.0.1:1/register/result",
        )));
        let regs = Registries::default();
        let (a, b) = (Identity::new("probe.a"), Identity::new("probe.b"));
        let ra = relay
            .register(&caps_envelope(&["ping", "trace"]), &a, &regs)
            .unwrap();
        assert_eq!(ra.services.len(), 2);
        assert!(ra.replaced.is_empty());
        let answer: serde_json::Value = serde_json::from_str(&ra.answer.2).unwrap();
        assert_eq!(answer["ping"]["registered"], "ok");
        assert_eq!(
            answer[""]["registered"], "no",
            "the exception is not a capability"
        );
        // the same capability from another component is another capability here
        let rb = relay
            .register(&caps_envelope(&["ping"]), &b, &regs)
            .unwrap();
        let token = |r: &Registered, i: usize| r.services[i].capability().token.clone().unwrap();
        assert_ne!(token(&ra, 0), token(&rb, 0));
        // registering again names what it replaces: its own, not the other's
        let ra2 = relay
            .register(&caps_envelope(&["ping"]), &a, &regs)
            .unwrap();
        assert_eq!(ra2.replaced, [token(&ra, 0), token(&ra, 1)]);
        assert_eq!(token(&ra2, 0), token(&ra, 0));
        // not a message
        let Err(bad) = relay.register("{\"capability\":", &a, &regs) else {
            panic!("accepted")
        };
        assert_eq!(bad.0, 400);
    }

    #[test]
    fn a_component_that_stops_fetching_fails_the_relayed_job() {
        let mut opts = ListenerOptions::new("https://127.0.0.1:1/back");
        opts.grace = Duration::from_millis(150);
        let relay = Arc::new(Relay::new(opts));
        let regs = Registries::default();
        let a = Identity::new("probe.a");
        let r = relay
            .register(&caps_envelope(&["ping"]), &a, &regs)
            .unwrap();
        let svc = r.services[0].clone();
        let mut spec = svc.capability().specification_for();
        spec.set_parameter_value(
            "destination.ip4",
            &crate::value::Value::Address("192.0.2.1".parse().unwrap()),
        )
        .unwrap();
        spec.token = Some(spec.default_token());
        let ctx = || JobContext {
            interrupt: crate::scheduler::Interrupt::new(),
            end: None,
        };
        // nobody fetches: the job fails after the grace period, and its message is withdrawn
        let t = Instant::now();
        let err = svc.run(&spec, ctx()).unwrap_err();
        assert!(err.contains("has not fetched its specifications"), "{err}");
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(relay.fetch(&a).2.contains("\"contents\": []"));
        // a component that fetches and answers: the result under the client's token
        let (relay2, spec2) = (relay.clone(), spec.clone());
        let answer = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let body = relay2.fetch(&Identity::new("probe.a")).2;
                let Ok(Message::Envelope(env)) = model::parse(&body, &Registries::default()) else {
                    panic!("{body}")
                };
                if let Some(Message::Statement(fwd)) = env.contents.first() {
                    let mut res = fwd.result_for();
                    res.push_row(&[Some(crate::value::Value::Natural(7))])
                        .unwrap();
                    let text = Message::Statement(res).unparse();
                    assert_eq!(relay2.file(&text, &Registries::default()).0, 200);
                    return;
                }
                assert!(Instant::now() < deadline);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let res = svc.run(&spec2, ctx()).unwrap();
        answer.join().unwrap();
        assert_eq!(res.token, spec.token);
        assert_eq!(res.rows().len(), 1);
    }

    #[test]
    fn replies_are_filed_by_token_and_queues_are_per_component() {
        let mut opts = ListenerOptions::new("https://127.0.0.1:1/back");
        opts.max_unclaimed = 2;
        opts.max_queued = 1;
        let relay = Relay::new(opts);
        let regs = Registries::default();
        assert_eq!(relay.route("/back"), Some(ListenerPath::Result));
        assert_eq!(relay.route("/register/result/"), Some(ListenerPath::Result));
        assert_eq!(
            relay.route("/show/specification"),
            Some(ListenerPath::Specification)
        );
        assert_eq!(relay.route("/capability"), None);
        let a = Identity::new("probe.a");
        let e = |t: &str| format!(r#"{{"exception":"{t}","message":"boom {t}"}}"#);
        assert!(relay.queue(&a, Message::Exception(model::Exception::new(None, "q"))));
        assert!(!relay.queue(&a, Message::Exception(model::Exception::new(None, "q"))));
        assert!(relay.fetch(&a).2.contains("\"q\""));
        assert!(relay.fetch(&a).2.contains("\"contents\": []"));
        assert_eq!(relay.file(&e("t1"), &regs).0, 200);
        assert_eq!(relay.file("{}", &regs).0, 400);
        match relay.wait_reply("t1", Duration::from_millis(10)) {
            Some(Message::Exception(x)) => assert_eq!(x.message, "boom t1"),
            m => panic!("{m:?}"),
        }
        assert!(
            relay.wait_reply("t1", Duration::from_millis(10)).is_none(),
            "taken"
        );
        // replies nobody claims are bounded
        for t in ["u1", "u2", "u3"] {
            relay.file(&e(t), &regs);
        }
        assert!(relay.wait_reply("u1", Duration::ZERO).is_none());
        assert!(relay.wait_reply("u3", Duration::ZERO).is_some());
    }
}
