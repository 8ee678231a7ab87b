//! Traceroute as mPlane capabilities (`module = traceroute`): the path to a destination, one
//! row per probe.
//!
//! | label | parameters | results |
//! |---|---|---|
//! | `traceroute-ip4`, `-ip6` | `source.ip4`/`ip6` = this host's address, `destination.ip4`/`ip6` = `*`, `hops.ip.max` = `1 ... 255` | `time`, `hops.ip`, `intermediate.ip4`/`ip6`, `delay.twoway.icmp.us` |
//!
//! No deployed mPlane component published a traceroute schema of core elements (scamper's
//! used its own registry under the core's URI); this is the one the mPlane specification's
//! example sketches: `hops.ip` is the probe's hop limit, `intermediate.*` the host that
//! answered (the destination itself at the last hop), `delay.twoway.icmp.us` the time to its
//! answer, and a probe without an answer has neither. `hops.ip.max` is the probe's registry's,
//! as is the result's metadata `traceroute.errors.unattributed`: ICMP errors the trace could
//! not tie to a probe ([`crate::active::trace::Trace::unattributed`]). The capability takes `when = now ... future`: a specification for `now` traces once, to
//! the end; one with a duration (`now + 20s`) stops the trace when it runs out. How probes
//! are sent (UDP, UDP Paris, ICMP or TCP, probes per hop, wait, port, silent hops that end a
//! trace) is the module's configuration ([`crate::active::trace`]).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use mplane::component::now;
use mplane::config::ModuleConfig;
use mplane::model::{ModelError, Statement};
use mplane::registry::Registries;
use mplane::scheduler::{JobContext, Outcome, Service};
use mplane::value::{TimeValue, Value};
use mplane::when::When;

use super::active::{
    destination, measure_capability, natural, scope_end, source_addresses, time_of, version,
};
use super::{ServiceError, one_of};
use crate::active::trace::{self, TraceMethod, TraceOptions};
use crate::registry::PROBE_REGISTRY_URI;

/// The keyword arguments of the module besides the addresses.
const KNOWN: &str = "ip4addr, ip6addr, method, attempts, wait, port, gaplimit";

/// One traceroute capability (one IP version).
#[derive(Debug)]
pub struct TraceService {
    cap: Statement,
    source: IpAddr,
    opts: TraceOptions,
    /// For the result's metadata.
    regs: Registries,
}

impl TraceService {
    /// The capability from `source`, tracing with `opts`.
    pub fn new(source: IpAddr, opts: TraceOptions, regs: &Registries) -> Result<Self, ModelError> {
        let v = version(source);
        let cap = measure_capability(
            &format!("traceroute-{v}"),
            "now ... future",
            Some(PROBE_REGISTRY_URI),
            source,
            &[("hops.ip.max", "1 ... 255")],
            &[
                "time",
                "hops.ip",
                &format!("intermediate.{v}"),
                "delay.twoway.icmp.us",
            ],
            regs,
        )?;
        Ok(TraceService {
            cap,
            source,
            opts,
            regs: regs.clone(),
        })
    }
}

impl Service for TraceService {
    fn capability(&self) -> &Statement {
        &self.cap
    }

    fn run(&self, spec: &Statement, ctx: JobContext) -> Outcome {
        let dst = destination(spec, self.source)?;
        let max_hops = natural(spec, "hops.ip.max", 1..=255, "a hop limit from 1 to 255")? as u8;
        let start = now();
        let when = spec.when();
        // a point scope (`now`) traces once, to the end: only an interrupt stops it; a scope
        // with a duration stops it when it runs out
        let point = when.duration_micros(start) == Some(0);
        let end = scope_end(&when, &ctx, start);
        let stop = || {
            if point {
                ctx.interrupt.is_interrupted()
            } else {
                ctx.interrupt.is_set() || end.is_some_and(|e| now() >= e)
            }
        };
        let opts = TraceOptions {
            max_hops,
            ..self.opts
        };
        let t = trace::trace(self.source, dst, &opts, &stop).map_err(|e| e.to_string())?;
        let mut res = spec.result_for();
        res.set_when(When::range(TimeValue::At(start), TimeValue::At(now())));
        let unattributed = Value::Natural(t.unattributed as u64);
        res.add_metadata("traceroute.errors.unattributed", &unattributed, &self.regs)
            .map_err(|e| e.to_string())?;
        for p in &t.probes {
            res.push_row(&[
                Some(time_of(p.sent)),
                Some(Value::Natural(u64::from(p.ttl))),
                p.reply.map(|r| Value::Address(r.from)),
                p.reply
                    .map(|r| Value::Natural(u64::try_from(r.rtt.as_micros()).unwrap_or(u64::MAX))),
            ])
            .map_err(|e| e.to_string())?;
        }
        Ok(res)
    }
}

/// The services of a `[module_*]` section with `module = traceroute`: `ip4addr` and/or
/// `ip6addr` (the addresses probes are sent from, one capability each), and optionally
/// `method` (`udp`, the default, `udp-paris`, `icmp` or `tcp`), `attempts` (probes per hop,
/// 1–10, default 3), `wait` (seconds to wait for a hop's answers, default 3), `port` (UDP: the
/// first destination port, default 33434, at most 62986; UDP Paris: the port of every probe,
/// default 33434; TCP: the port of every probe, default 80) and `gaplimit` (silent hops in a
/// row that end a trace, default 5).
pub fn from_kwargs(
    module: &ModuleConfig,
    regs: &Registries,
) -> Result<Vec<Arc<dyn Service>>, ServiceError> {
    let (sources, opts) = options(module)?;
    sources
        .into_iter()
        .map(|source| {
            TraceService::new(source, opts, regs)
                .map(|s| Arc::new(s) as Arc<dyn Service>)
                .map_err(|e| ServiceError::Model {
                    section: module.section.clone(),
                    source: e,
                })
        })
        .collect()
}

/// The source addresses and the trace options of a module's arguments.
fn options(module: &ModuleConfig) -> Result<(Vec<IpAddr>, TraceOptions), ServiceError> {
    let mut opts = TraceOptions::default();
    let mut port: Option<(u16, String)> = None;
    let bad = |key: &str, value: &str, reason: &str| {
        ServiceError::bad_argument(module, key, value, reason)
    };
    let sources = source_addresses(module, KNOWN, |key, value| {
        match key {
            "method" => {
                let methods = [
                    ("udp", TraceMethod::Udp),
                    ("udp-paris", TraceMethod::UdpParis),
                    ("icmp", TraceMethod::Icmp),
                    ("tcp", TraceMethod::Tcp),
                ];
                opts.method = one_of(&value.to_ascii_lowercase(), &methods)
                    .map_err(|r| bad(key, value, &r))?
            }
            "attempts" => {
                opts.attempts = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=10).contains(n))
                    .ok_or_else(|| bad(key, value, "expected probes per hop from 1 to 10"))?
            }
            "wait" => {
                opts.wait = value
                    .parse::<f64>()
                    .ok()
                    .filter(|s| (0.01..=60.0).contains(s))
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| bad(key, value, "expected seconds from 0.01 to 60"))?
            }
            "port" => {
                let p = value
                    .parse()
                    .ok()
                    .filter(|&p: &u16| p > 0)
                    .ok_or_else(|| bad(key, value, "expected a port from 1 to 65535"))?;
                port = Some((p, value.to_string()));
            }
            "gaplimit" => {
                opts.gap_limit = value
                    .parse()
                    .ok()
                    .filter(|&n: &u8| n > 0)
                    .ok_or_else(|| bad(key, value, "expected silent hops from 1 to 255"))?
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    match (port, opts.method) {
        // classic UDP: one port per probe, up to 255 hops of 10 probes above the first
        (Some((p, value)), TraceMethod::Udp) if usize::from(p) + 255 * 10 > 65536 => {
            return Err(bad(
                "port",
                &value,
                "expected a first UDP port from 1 to 62986 (one port per probe above it)",
            ));
        }
        (Some((p, _)), _) => opts.port = p,
        // a port firewalls let through
        (None, TraceMethod::Tcp) => opts.port = 80,
        (None, _) => {}
    }
    Ok((sources, opts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mplane::scheduler::Interrupt;

    fn module(kw: &[(&str, &str)]) -> ModuleConfig {
        crate::services::test_module("module_trace", "traceroute", kw)
    }

    #[test]
    fn module_arguments() {
        let regs = crate::registry::registries().unwrap();
        let s = from_kwargs(
            &module(&[
                ("ip4addr", "127.0.0.1"),
                ("ip6addr", "::1"),
                ("method", "ICMP"),
                ("attempts", "2"),
                ("wait", "0.5"),
                ("gaplimit", "3"),
            ]),
            &regs,
        )
        .unwrap();
        let labels: Vec<_> = s
            .iter()
            .map(|s| s.capability().label.clone().unwrap())
            .collect();
        assert_eq!(labels, ["traceroute-ip4", "traceroute-ip6"]);
        // the port: per method, and TCP's default
        let port = |kw: &[(&str, &str)]| {
            let mut kw = kw.to_vec();
            kw.push(("ip4addr", "127.0.0.1"));
            options(&module(&kw)).map(|(_, o)| (o.method, o.port))
        };
        assert_eq!(port(&[]).unwrap(), (TraceMethod::Udp, 33434));
        assert_eq!(port(&[("method", "tcp")]).unwrap(), (TraceMethod::Tcp, 80));
        assert_eq!(
            port(&[("port", "65000"), ("method", "tcp")]).unwrap(),
            (TraceMethod::Tcp, 65000)
        );
        assert_eq!(
            port(&[("method", "udp-paris"), ("port", "65000")]).unwrap(),
            (TraceMethod::UdpParis, 65000)
        );
        for (kw, says) in [
            (vec![("method", "sctp")], "udp, udp-paris, icmp or tcp"),
            (vec![("attempts", "0")], "1 to 10"),
            (vec![("wait", "soon")], "seconds"),
            (vec![("port", "65000")], "62986"),
            (vec![("port", "0")], "1 to 65535"),
            (vec![("gaplimit", "0")], "silent"),
            (vec![("count", "3")], "known: ip4addr"),
        ] {
            let mut kw = kw;
            kw.push(("ip4addr", "127.0.0.1"));
            let e = from_kwargs(&module(&kw), &regs).err().unwrap().to_string();
            assert!(e.contains(says), "{kw:?}: {e}");
        }
    }

    /// A trace of loopback through the service: one hop, three rows, each with its answer.
    #[test]
    fn loopback_trace_rows() {
        let regs = crate::registry::registries().unwrap();
        let src: IpAddr = "127.0.0.1".parse().unwrap();
        let s = TraceService::new(src, TraceOptions::default(), &regs).unwrap();
        let mut spec = s.cap.specification_for();
        spec.set_parameter_value("destination.ip4", &Value::Address(src))
            .unwrap();
        spec.set_parameter_value("hops.ip.max", &Value::Natural(8))
            .unwrap();
        spec.set_when(When::parse("now").unwrap());
        let ctx = JobContext {
            interrupt: Interrupt::new(),
            end: None,
        };
        let res = s.run(&spec, ctx).unwrap();
        let text = mplane::model::Message::Statement(res.clone()).unparse();
        assert_eq!(res.rows().len(), 3, "{text}");
        let unattributed = res.metadata.as_ref().unwrap()["traceroute.errors.unattributed"].clone();
        assert_eq!(unattributed.value(), Some(Value::Natural(0)), "{text}");
        for i in 0..3 {
            let r = res.rows().row(i);
            assert_eq!(r.cell(1).as_str(), Some("1"), "{text}");
            assert_eq!(r.cell(2).as_str(), Some("127.0.0.1"), "{text}");
            let us: u64 = r.cell(3).as_str().unwrap().parse().unwrap();
            assert!(us < 1_000_000, "{text}");
        }
        // a hop limit out of range is refused, nothing sent
        spec.set_parameter_value("hops.ip.max", &Value::Natural(0))
            .unwrap();
        let ctx = JobContext {
            interrupt: Interrupt::new(),
            end: None,
        };
        let e = s.run(&spec, ctx).unwrap_err();
        assert!(e.contains("hops.ip.max"), "{e}");
    }
}
