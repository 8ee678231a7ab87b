//! Active measurements as mPlane capabilities: ICMP echo (`module = ping`, or the reference
//! SDK's `mplane.components.ping`) and TCP connection set-up time (`module = tcpconnect`).
//! Both take `ip4addr` and/or `ip6addr`, the address probes are sent from, and offer an
//! aggregate and a per-probe capability for each IP version:
//!
//! | label | parameters | results |
//! |---|---|---|
//! | `ping-average-ip4`, `-ip6` | `source.ip4`/`ip6` = this host's address, `destination.ip4`/`ip6` | `delay.twoway.icmp.us.min`, `.mean`, `.max`, `delay.twoway.icmp.count` |
//! | `ping-detail-ip4`, `-ip6` | the same | `time`, `delay.twoway.icmp.us`: one row per reply |
//! | `tcpconnect-average-ip4`, `-ip6` | the same and `destination.port` | `rtt.us.min`, `.mean`, `.max`, `rtt.count` |
//! | `tcpconnect-detail-ip4`, `-ip6` | the same | `time`, `rtt.us`, `connectivity.ip`: one row per attempt |
//!
//! The ping capabilities are the reference ping component's, which deployed probes
//! (mSLAcert, scamper under its own labels) republished unchanged; the TCP ones use core
//! elements and four of the probe's registry. All take `when = now ... future / 1s`: a
//! specification's scope is how long to measure (`now + 10s / 1s`: ten probes; open-ended
//! until interrupted) and its period the interval between probes (at least the capability's
//! second). An answer counts only within that interval. The count columns are the number of
//! answers; with none, the aggregate row has no min, mean or max. The reference's own ping
//! component never measured anything on Linux (it ran `ping -S`, iputils' socket-buffer
//! option); these send the probes themselves ([`crate::active`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use mplane::component::now;
use mplane::config::ModuleConfig;
use mplane::model::{ModelError, Statement, StatementKind};
use mplane::registry::Registries;
use mplane::scheduler::{JobContext, Outcome, Service};
use mplane::value::{TimeValue, Timestamp, Value};
use mplane::when::When;

use super::ServiceError;
use crate::active::Samples;
use crate::active::connect::{self, Attempt};
use crate::active::ping::Pinger;
use crate::registry::PROBE_REGISTRY_URI;

/// The shortest interval between two probes of one job (the capabilities' period).
const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// The longest a TCP connection attempt may take, whatever the interval.
const CONNECT_LIMIT: Duration = Duration::from_secs(10);

/// What a capability returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// One row: min, mean, max, count.
    Average,
    /// One row per probe (ping: per reply).
    Detail,
}

/// What is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// ICMP echo.
    Ping,
    /// TCP connection set-up.
    Connect,
}

/// One active capability.
#[derive(Debug)]
pub struct ActiveService {
    cap: Statement,
    kind: Kind,
    method: Method,
    source: IpAddr,
}

pub(super) fn version(a: IpAddr) -> &'static str {
    if a.is_ipv4() { "ip4" } else { "ip6" }
}

/// The capability of `method` and `kind` from `source`, the ping ones exactly as the
/// reference builds them.
fn capability(
    method: Method,
    kind: Kind,
    source: IpAddr,
    regs: &Registries,
) -> Result<Statement, ModelError> {
    let v = version(source);
    let (name, results): (&str, &[&str]) = match (method, kind) {
        (Method::Ping, Kind::Average) => (
            "ping-average",
            &[
                "delay.twoway.icmp.us.min",
                "delay.twoway.icmp.us.mean",
                "delay.twoway.icmp.us.max",
                "delay.twoway.icmp.count",
            ],
        ),
        (Method::Ping, Kind::Detail) => ("ping-detail", &["time", "delay.twoway.icmp.us"]),
        (Method::Connect, Kind::Average) => (
            "tcpconnect-average",
            &["rtt.us.min", "rtt.us.mean", "rtt.us.max", "rtt.count"],
        ),
        (Method::Connect, Kind::Detail) => {
            ("tcpconnect-detail", &["time", "rtt.us", "connectivity.ip"])
        }
    };
    let registry = (method == Method::Connect).then_some(PROBE_REGISTRY_URI);
    let port: &[(&str, &str)] = if method == Method::Connect {
        &[("destination.port", "1 ... 65535")]
    } else {
        &[]
    };
    measure_capability(
        &format!("{name}-{v}"),
        "now ... future / 1s",
        registry,
        source,
        port,
        results,
        regs,
    )
}

/// A `measure` capability of an active measurement from `source`: its label, scope and
/// registry (`None`: the core one, which a new statement names), the parameters
/// `source.ip4`/`ip6` (this address) and `destination.ip4`/`ip6` (any), then `params`
/// (element, constraint) and the `results`.
pub(super) fn measure_capability(
    label: &str,
    when: &str,
    registry: Option<&str>,
    source: IpAddr,
    params: &[(&str, &str)],
    results: &[&str],
    regs: &Registries,
) -> Result<Statement, ModelError> {
    let v = version(source);
    let mut cap = Statement::new(StatementKind::Capability, "measure");
    if let Some(uri) = registry {
        cap.registry = Some(uri.to_string());
    }
    cap.label = Some(label.to_string());
    cap.set_when(When::parse(when).map_err(|e| ModelError::Invalid(e.to_string()))?);
    cap.add_parameter(&format!("source.{v}"), &source.to_string(), regs)?;
    cap.add_parameter(&format!("destination.{v}"), "*", regs)?;
    for (element, constraint) in params {
        cap.add_parameter(element, constraint, regs)?;
    }
    for r in results {
        cap.add_result_column(r, regs)?;
    }
    Ok(cap)
}

impl ActiveService {
    fn new(
        method: Method,
        kind: Kind,
        source: IpAddr,
        regs: &Registries,
    ) -> Result<Self, ModelError> {
        Ok(ActiveService {
            cap: capability(method, kind, source, regs)?,
            kind,
            method,
            source,
        })
    }

    /// Runs `probe(seq, wait)` every `interval` until `end` (or the interrupt); `wait` is how
    /// long its answer may take (until the next probe is due or the scope ends). An error of
    /// the first probe ends the job; later ones count as unanswered.
    fn periodic(
        interval: Duration,
        end: Option<Timestamp>,
        ctx: &JobContext,
        mut probe: impl FnMut(u64, Duration) -> Result<Option<Duration>, String>,
    ) -> Result<Samples, String> {
        let start = std::time::Instant::now();
        let mut samples = Samples::default();
        for seq in 0u64.. {
            if ctx.interrupt.is_set() || end.is_some_and(|e| now() >= e) {
                break;
            }
            let sent_at = std::time::SystemTime::now();
            let due = start + interval * (seq as u32 + 1);
            let wait = due.saturating_duration_since(std::time::Instant::now());
            let wait = match end {
                Some(e) => wait.min(Duration::from_micros(
                    (e.as_micros() - now().as_micros()).max(1) as u64,
                )),
                None => wait,
            };
            let rtt = match probe(seq, wait) {
                Ok(r) => r.map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
                Err(e) if seq == 0 => return Err(e),
                Err(_) => None,
            };
            samples.attempts.push((sent_at, rtt));
            // the rest of the interval, watching for the interrupt
            while std::time::Instant::now() < due && !ctx.interrupt.is_set() {
                let left = due.saturating_duration_since(std::time::Instant::now());
                std::thread::sleep(left.min(Duration::from_millis(50)));
            }
        }
        Ok(samples)
    }
}

/// The destination a specification names for a capability from `source` (of its IP
/// version), or the error text of its exception.
pub(super) fn destination(spec: &Statement, source: IpAddr) -> Result<IpAddr, String> {
    let v = version(source);
    match spec.parameter_value(&format!("destination.{v}")) {
        Some(Value::Address(a)) if a.is_ipv4() == source.is_ipv4() => Ok(a),
        other => Err(format!(
            "destination.{v}: expected an {v} address, got {}",
            other.map_or("nothing".into(), |v| v.to_string())
        )),
    }
}

/// The natural number a specification gives `element`, within `range`, or the error text of
/// its exception (which says it expected `what`).
pub(super) fn natural(
    spec: &Statement,
    element: &str,
    range: std::ops::RangeInclusive<u64>,
    what: &str,
) -> Result<u64, String> {
    match spec.parameter_value(element) {
        Some(Value::Natural(n)) if range.contains(&n) => Ok(n),
        other => Err(format!(
            "{element}: expected {what}, got {}",
            other.map_or("nothing".into(), |v| v.to_string())
        )),
    }
}

/// When a run that started at `start` must end: the end of its (sub-)scope as the scheduler
/// knows it, else `start` plus the scope's duration; `None` for an open-ended or point scope.
pub(super) fn scope_end(when: &When, ctx: &JobContext, start: Timestamp) -> Option<Timestamp> {
    ctx.end.or_else(|| {
        when.duration_micros(start)
            .filter(|&d| d > 0)
            .map(|d| start.add_micros(d))
    })
}

/// `at` as an mPlane time value (µs).
pub(super) fn time_of(at: std::time::SystemTime) -> Value {
    let us = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    Value::Time(TimeValue::At(Timestamp::from_micros(us)))
}

impl Service for ActiveService {
    fn capability(&self) -> &Statement {
        &self.cap
    }

    fn run(&self, spec: &Statement, ctx: JobContext) -> Outcome {
        let dst = destination(spec, self.source)?;
        let when = spec.when();
        let interval = when
            .period
            .map_or(MIN_INTERVAL, |p| {
                Duration::from_micros(p.as_micros().max(0) as u64)
            })
            .max(MIN_INTERVAL);
        let start = now();
        let end = scope_end(&when, &ctx, start);
        let samples = match self.method {
            Method::Ping => {
                let mut pinger = Pinger::new(self.source, dst).map_err(|e| e.to_string())?;
                let stop = || ctx.interrupt.is_set();
                Self::periodic(interval, end, &ctx, |seq, wait| {
                    pinger
                        .ping(seq as u16, wait, &stop)
                        .map_err(|e| e.to_string())
                })?
            }
            Method::Connect => {
                let port = natural(spec, "destination.port", 1..=65535, "a port number")? as u16;
                let to = SocketAddr::new(dst, port);
                Self::periodic(interval, end, &ctx, |_, wait| {
                    // a handshake slower than this is a failure (and an interrupt waits at
                    // most this long)
                    match connect::attempt(self.source, to, wait.min(CONNECT_LIMIT)) {
                        Ok(Attempt::Connected(d)) => Ok(Some(d)),
                        Ok(_) => Ok(None),
                        Err(e) => Err(e.to_string()),
                    }
                })?
            }
        };
        let mut res = spec.result_for();
        res.set_when(When::range(TimeValue::At(start), TimeValue::At(now())));
        let err = |e: ModelError| e.to_string();
        match (self.kind, self.method) {
            (Kind::Average, _) => {
                let s = samples.summary();
                res.push_row(&[
                    s.map(|s| Value::Natural(s.0)),
                    s.map(|s| Value::Natural(s.1)),
                    s.map(|s| Value::Natural(s.2)),
                    Some(Value::Natural(samples.answered().count() as u64)),
                ])
                .map_err(err)?;
            }
            // the reference lists replies only
            (Kind::Detail, Method::Ping) => {
                for (at, rtt) in samples.answered() {
                    res.push_row(&[Some(time_of(at)), Some(Value::Natural(rtt))])
                        .map_err(err)?;
                }
            }
            (Kind::Detail, Method::Connect) => {
                for &(at, rtt) in &samples.attempts {
                    res.push_row(&[
                        Some(time_of(at)),
                        rtt.map(Value::Natural),
                        Some(Value::Boolean(rtt.is_some())),
                    ])
                    .map_err(err)?;
                }
            }
        }
        Ok(res)
    }
}

/// The services of a `[module_*]` section measuring with `method`: keyword arguments
/// `ip4addr` and `ip6addr`, as for the reference's ping component, each giving the average
/// and detail capabilities of its IP version (at least one is needed).
pub fn from_kwargs(
    module: &ModuleConfig,
    method: Method,
    regs: &Registries,
) -> Result<Vec<Arc<dyn Service>>, ServiceError> {
    let sources = source_addresses(module, "ip4addr, ip6addr", |_, _| Ok(false))?;
    let mut out: Vec<Arc<dyn Service>> = Vec::new();
    for source in sources {
        for kind in [Kind::Average, Kind::Detail] {
            let s = ActiveService::new(method, kind, source, regs).map_err(|e| {
                ServiceError::Model {
                    section: module.section.clone(),
                    source: e,
                }
            })?;
            out.push(Arc::new(s));
        }
    }
    Ok(out)
}

/// The addresses an active module sends from: its keyword arguments `ip4addr` and `ip6addr`
/// (at least one), IPv4 first. Every other keyword goes to `other(key, value)`, which takes
/// it (`Ok(true)`) or does not know it (`Ok(false)`: an error listing the `known` keys).
pub(super) fn source_addresses(
    module: &ModuleConfig,
    known: &str,
    mut other: impl FnMut(&str, &str) -> Result<bool, ServiceError>,
) -> Result<Vec<IpAddr>, ServiceError> {
    let bad = |key: &str, value: &str, reason: String| {
        ServiceError::bad_argument(module, key, value, reason)
    };
    let (mut v4, mut v6): (Option<Ipv4Addr>, Option<Ipv6Addr>) = (None, None);
    for kw in &module.kwargs {
        let value = kw.value.trim();
        match kw.key.as_str() {
            "ip4addr" => {
                v4 = Some(value.parse().map_err(|_| {
                    bad(
                        &kw.key,
                        value,
                        "expected an IPv4 address of this host".into(),
                    )
                })?)
            }
            "ip6addr" => {
                v6 = Some(value.parse().map_err(|_| {
                    bad(
                        &kw.key,
                        value,
                        "expected an IPv6 address of this host".into(),
                    )
                })?)
            }
            key => {
                if !other(key, value)? {
                    return Err(bad(
                        key,
                        value,
                        format!("unexpected keyword argument (known: {known})"),
                    ));
                }
            }
        }
    }
    if v4.is_none() && v6.is_none() {
        return Err(bad(
            "ip4addr",
            "",
            "missing: give ip4addr, ip6addr or both (the address probes are sent from)".into(),
        ));
    }
    Ok(v4
        .map(IpAddr::V4)
        .into_iter()
        .chain(v6.map(IpAddr::V6))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mplane::scheduler::Interrupt;

    /// Tokens the reference SDK assigned to its ping component's capabilities
    /// (`control/tests/data/golden/capability-ping-*.json`).
    #[test]
    fn capabilities_equal_the_reference_ones() {
        let regs = Registries::default();
        let v4: IpAddr = "10.0.27.2".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        for (kind, source, golden) in [
            (Kind::Average, v4, "capability-ping-average-ip4.json"),
            (Kind::Detail, v4, "capability-ping-detail-ip4.json"),
            (Kind::Average, v6, "capability-ping-average-ip6.json"),
            (Kind::Detail, v6, "capability-ping-detail-ip6.json"),
        ] {
            let ours = ActiveService::new(Method::Ping, kind, source, &regs).unwrap();
            let path = format!(
                "{}/../control/tests/data/golden/{golden}",
                env!("CARGO_MANIFEST_DIR")
            );
            let text = std::fs::read_to_string(&path).unwrap();
            let theirs = mplane::model::parse(&text, &regs).unwrap();
            let mplane::model::Message::Statement(theirs) = theirs else {
                panic!("{golden}: not a statement")
            };
            assert_eq!(ours.cap.label, theirs.label, "{golden}");
            assert_eq!(ours.cap.registry, theirs.registry, "{golden}");
            assert_eq!(
                {
                    let mut c = ours.cap.clone();
                    c.token = None;
                    c.default_token()
                },
                theirs.token.clone().unwrap(),
                "{golden}: token"
            );
            assert_eq!(ours.cap.schema_hash(), theirs.schema_hash(), "{golden}");
        }
    }

    #[test]
    fn module_arguments() {
        let regs = Registries::default();
        let m = |kw: &[(&str, &str)]| crate::services::test_module("module_ping", "ping", kw);
        let labels = |s: Vec<Arc<dyn Service>>| {
            s.iter()
                .map(|s| s.capability().label.clone().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            labels(
                from_kwargs(
                    &m(&[("ip4addr", "127.0.0.1"), ("ip6addr", "::1")]),
                    Method::Ping,
                    &regs
                )
                .unwrap()
            ),
            [
                "ping-average-ip4",
                "ping-detail-ip4",
                "ping-average-ip6",
                "ping-detail-ip6"
            ]
        );
        for (kw, says) in [
            (vec![], "missing"),
            (vec![("ip4addr", "::1")], "IPv4"),
            (vec![("ip4addr", "127.0.0.1"), ("count", "3")], "unexpected"),
        ] {
            let e = from_kwargs(&m(&kw), Method::Ping, &regs)
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains(says), "{kw:?}: {e}");
        }
    }

    /// A three-second scope pings loopback three times, a second apart (needs an ICMP socket;
    /// skipped without one).
    #[test]
    fn three_seconds_of_loopback() {
        let regs = Registries::default();
        let src: IpAddr = "127.0.0.1".parse().unwrap();
        if let Err(crate::active::ping::PingError::Socket(e)) = Pinger::new(src, src) {
            eprintln!("skipping: no ICMP socket here: {e}");
            return;
        }
        for kind in [Kind::Average, Kind::Detail] {
            let s = ActiveService::new(Method::Ping, kind, src, &regs).unwrap();
            let mut spec = s.cap.specification_for();
            spec.set_parameter_value("destination.ip4", &Value::Address(src))
                .unwrap();
            spec.set_when(When::parse("now + 3s / 1s").unwrap());
            let t = std::time::Instant::now();
            let ctx = JobContext {
                interrupt: Interrupt::new(),
                end: None,
            };
            let res = s.run(&spec, ctx).unwrap();
            let took = t.elapsed();
            assert!(
                (Duration::from_millis(2900)..Duration::from_millis(4500)).contains(&took),
                "{took:?}"
            );
            let text = mplane::model::Message::Statement(res.clone()).unparse();
            match kind {
                Kind::Average => {
                    assert_eq!(res.rows().len(), 1, "{text}");
                    let row = res.rows().row(0);
                    assert_eq!(row.cell(3).as_str(), Some("3"), "{text}");
                    let n = |i: usize| row.cell(i).as_str().unwrap().parse::<u64>().unwrap();
                    assert!(n(0) <= n(1) && n(1) <= n(2) && n(2) < 1_000_000, "{text}");
                }
                Kind::Detail => {
                    assert_eq!(res.rows().len(), 3, "{text}");
                }
            }
        }
    }

    /// Three seconds of TCP connections to a loopback listener, then to a port nobody listens
    /// on: three set-up times, then three refused attempts.
    #[test]
    fn three_seconds_of_tcp_connections() {
        let regs = crate::registry::registries().unwrap();
        let src: IpAddr = "127.0.0.1".parse().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap().port();
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let run = |kind: Kind, port: u16| {
            let s = ActiveService::new(Method::Connect, kind, src, &regs).unwrap();
            let mut spec = s.cap.specification_for();
            spec.set_parameter_value("destination.ip4", &Value::Address(src))
                .unwrap();
            spec.set_parameter_value("destination.port", &Value::Natural(u64::from(port)))
                .unwrap();
            spec.set_when(When::parse("now + 3s / 1s").unwrap());
            let ctx = JobContext {
                interrupt: Interrupt::new(),
                end: None,
            };
            s.run(&spec, ctx).unwrap()
        };
        let avg = run(Kind::Average, open);
        let row = avg.rows().row(0);
        let n = |i: usize| row.cell(i).as_str().unwrap().parse::<u64>().unwrap();
        assert_eq!(n(3), 3);
        assert!(n(0) <= n(1) && n(1) <= n(2) && n(2) < 1_000_000);
        let detail = run(Kind::Detail, closed);
        assert_eq!(detail.rows().len(), 3);
        for i in 0..3 {
            let r = detail.rows().row(i);
            assert_eq!(r.cell(1).as_str(), Some("*"), "no set-up time when refused");
            assert_eq!(r.cell(2).as_str(), Some("False"));
        }
        let avg = run(Kind::Average, closed);
        let row = avg.rows().row(0);
        assert_eq!(row.cell(3).as_str(), Some("0"));
        assert_eq!(
            row.cell(0).as_str(),
            Some("*"),
            "no minimum without an answer"
        );
        drop(listener);
    }

    /// A job whose requests get no reply (the peer is a network namespace of this test that
    /// ignores echo requests) ends within a fraction of a second of its interrupt, not when
    /// its 30-second wait for a reply would. Needs root for the namespace; skipped otherwise.
    #[test]
    fn interrupt_ends_an_unanswered_ping_promptly() {
        let Some(mut ns) = crate::active::testns::Netns::create("mpint") else {
            return;
        };
        let pid = std::process::id() % 100_000;
        let net = (pid % 250) as u8 + 1;
        let (h, p) = (format!("10.91.{net}.1"), format!("10.91.{net}.2"));
        ns.veth(
            &format!("mih{pid}"),
            &format!("{h}/30"),
            &format!("mip{pid}"),
            &format!("{p}/30"),
        );
        assert!(ns.exec(&["sysctl", "-qw", "net.ipv4.icmp_echo_ignore_all=1"]));
        let regs = Registries::default();
        let src: IpAddr = h.parse().unwrap();
        let s = ActiveService::new(Method::Ping, Kind::Average, src, &regs).unwrap();
        let mut spec = s.cap.specification_for();
        spec.set_parameter_value("destination.ip4", &Value::Address(p.parse().unwrap()))
            .unwrap();
        spec.set_when(When::parse("now + 60s / 30s").unwrap());
        let interrupt = Interrupt::new();
        let ctx = JobContext {
            interrupt: interrupt.clone(),
            end: None,
        };
        let t = std::time::Instant::now();
        let setter = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(700));
            interrupt.set();
        });
        let res = s.run(&spec, ctx).unwrap();
        let took = t.elapsed();
        setter.join().unwrap();
        assert!(took < Duration::from_secs(2), "{took:?}");
        assert_eq!(res.rows().row(0).cell(3).as_str(), Some("0"));
    }
}
