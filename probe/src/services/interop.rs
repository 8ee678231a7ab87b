//! Rust counterparts of the reference interop test services
//! (`interop_services.py`): three capabilities with the same parameters,
//! constraints, metadata, results and behaviour.
//!
//! * `interop-rows-ip4` — immediate result with N rows, N = `packets.ip` (1..10),
//!   fixed times from 2015-06-01 12:00:00.
//! * `interop-slow-ip4` — runs for the duration of the specification's scope
//!   (one hour if open-ended) or until interrupted, then one aggregate row.
//! * `interop-fail-ip4` — always fails: `interop-fail: deliberate failure`.

use std::net::Ipv4Addr;
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

const S: i64 = 1_000_000;

fn base_cap(
    label: &str,
    results: &[&str],
    when: &str,
    ip4addr: Ipv4Addr,
    regs: &Registries,
) -> Result<Statement, ModelError> {
    let mut cap = Statement::new(StatementKind::Capability, "measure");
    cap.label = Some(label.into());
    cap.set_when(When::parse(when).map_err(|e| ModelError::Invalid(e.to_string()))?);
    cap.add_metadata(
        "measurement.identifier",
        &Value::String("mplane-interop".into()),
        regs,
    )?;
    cap.add_parameter("source.ip4", &ip4addr.to_string(), regs)?;
    cap.add_parameter("destination.ip4", "*", regs)?;
    for r in results {
        cap.add_result_column(r, regs)?;
    }
    Ok(cap)
}

/// The `interop-rows-ip4` capability.
pub fn rows_capability(ip4addr: Ipv4Addr, regs: &Registries) -> Result<Statement, ModelError> {
    let mut cap = base_cap(
        "interop-rows-ip4",
        &[],
        "now ... future / 1s",
        ip4addr,
        regs,
    )?;
    cap.add_parameter("packets.ip", "1 ... 10", regs)?;
    for r in ["time", "delay.twoway.icmp.us", "hops.ip"] {
        cap.add_result_column(r, regs)?;
    }
    Ok(cap)
}

/// The `interop-slow-ip4` capability.
pub fn slow_capability(ip4addr: Ipv4Addr, regs: &Registries) -> Result<Statement, ModelError> {
    base_cap(
        "interop-slow-ip4",
        &[
            "delay.twoway.icmp.us.min",
            "delay.twoway.icmp.us.mean",
            "delay.twoway.icmp.us.max",
            "delay.twoway.icmp.count",
        ],
        "now ... future / 1s",
        ip4addr,
        regs,
    )
}

/// The `interop-fail-ip4` capability.
pub fn fail_capability(ip4addr: Ipv4Addr, regs: &Registries) -> Result<Statement, ModelError> {
    base_cap(
        "interop-fail-ip4",
        &["delay.twoway.icmp.us"],
        "now ... future",
        ip4addr,
        regs,
    )
}

/// 2015-06-01 12:00:00 UTC, the fixed base time of the rows service.
pub fn t0() -> Timestamp {
    Timestamp::from_civil(2015, 6, 1, 12, 0, 0, 0).unwrap_or(Timestamp::from_micros(0))
}

fn err(e: ModelError) -> String {
    e.to_string()
}

/// `interop-rows-ip4`: N rows at once.
#[derive(Debug)]
pub struct RowsService(Statement);

impl Service for RowsService {
    fn capability(&self) -> &Statement {
        &self.0
    }
    fn run(&self, spec: &Statement, _ctx: JobContext) -> Outcome {
        let n = match spec.parameter_value("packets.ip") {
            Some(Value::Natural(n)) => n,
            _ => return Err("packets.ip: not a natural number".into()),
        };
        let t0 = t0();
        let mut res = spec.result_for();
        res.set_when(When::range(
            TimeValue::At(t0),
            TimeValue::At(t0.add_micros((n as i64 - 1) * S)),
        ));
        for i in 0..n {
            res.push_row(&[
                Some(Value::Time(TimeValue::At(
                    t0.add_micros(i as i64 * S + 250_000),
                ))),
                Some(Value::Natural(1000 * (i + 1) + 7)),
                Some(Value::Natural(i + 1)),
            ])
            .map_err(err)?;
        }
        Ok(res)
    }
}

/// `interop-slow-ip4`: runs for the scope's duration or until interrupted.
#[derive(Debug)]
pub struct SlowService(Statement);

impl Service for SlowService {
    fn capability(&self) -> &Statement {
        &self.0
    }
    fn run(&self, spec: &Statement, ctx: JobContext) -> Outcome {
        let start = now();
        let limit = spec.when().duration_micros(start).unwrap_or(3600 * S);
        let mut count = 0u64;
        while now().as_micros() - start.as_micros() < limit {
            if ctx.interrupt.is_set() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
            count += 1;
        }
        let end = now();
        let mut res = spec.result_for();
        res.set_when(When::range(TimeValue::At(start), TimeValue::At(end)));
        res.push_row(&[
            Some(Value::Natural(100)),
            Some(Value::Natural(150)),
            Some(Value::Natural(200)),
            Some(Value::Natural(count)),
        ])
        .map_err(err)?;
        Ok(res)
    }
}

/// `interop-fail-ip4`: always fails.
#[derive(Debug)]
pub struct FailService(Statement);

impl Service for FailService {
    fn capability(&self) -> &Statement {
        &self.0
    }
    fn run(&self, _spec: &Statement, _ctx: JobContext) -> Outcome {
        Err("interop-fail: deliberate failure".into())
    }
}

/// The three services for `ip4addr`.
pub fn services(ip4addr: Ipv4Addr, regs: &Registries) -> Result<Vec<Arc<dyn Service>>, ModelError> {
    Ok(vec![
        Arc::new(RowsService(rows_capability(ip4addr, regs)?)),
        Arc::new(SlowService(slow_capability(ip4addr, regs)?)),
        Arc::new(FailService(fail_capability(ip4addr, regs)?)),
    ])
}

/// The services of a `[module_*]` section with `module = interop_services`
/// (keyword argument `ip4addr`, default 127.0.0.1).
pub fn from_kwargs(
    module: &ModuleConfig,
    regs: &Registries,
) -> Result<Vec<Arc<dyn Service>>, ServiceError> {
    let mut ip4addr = Ipv4Addr::LOCALHOST;
    for kw in &module.kwargs {
        match kw.key.as_str() {
            "ip4addr" => {
                ip4addr = kw
                    .value
                    .trim()
                    .parse()
                    .map_err(|e: std::net::AddrParseError| ServiceError::BadArgument {
                        section: module.section.clone(),
                        key: kw.key.clone(),
                        value: kw.value.clone(),
                        reason: e.to_string(),
                    })?
            }
            _ => {
                return Err(ServiceError::BadArgument {
                    section: module.section.clone(),
                    key: kw.key.clone(),
                    value: kw.value.clone(),
                    reason: "unexpected keyword argument (known: ip4addr)".into(),
                });
            }
        }
    }
    services(ip4addr, regs).map_err(|source| ServiceError::Model {
        section: module.section.clone(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mplane::scheduler::Interrupt;

    fn ctx() -> JobContext {
        JobContext {
            interrupt: Interrupt::new(),
            end: None,
        }
    }

    /// Tokens and schema hashes the reference SDK computes for the capabilities
    /// of its `interop_services` module with `ip4addr = 127.0.0.1` (the token
    /// covers scope, parameters, constraints, metadata and results).
    #[test]
    fn capabilities_equal_the_reference_ones() {
        let regs = Registries::default();
        let ip = Ipv4Addr::new(127, 0, 0, 1);
        for (cap, token, schema) in [
            (
                rows_capability(ip, &regs).unwrap(),
                "a6aa128430a0dbc0c76e5f26b7bdb121",
                "918b34e7ed9609ba2e3ea8516138f9af",
            ),
            (
                slow_capability(ip, &regs).unwrap(),
                "f21b76b3f2c6bb0616639ebc2d85b911",
                "e2ca42e60e5e998c7b7bc1fc439129b4",
            ),
            (
                fail_capability(ip, &regs).unwrap(),
                "5b8a63fac19966e6196414314b480515",
                "e6246fd8fbadf12f730d121f1a0694f5",
            ),
        ] {
            let mut c = cap.clone();
            c.token = None;
            assert_eq!(c.default_token(), token, "{:?}", cap.label);
            assert_eq!(c.schema_hash(), schema, "{:?}", cap.label);
        }
    }

    #[test]
    fn rows_and_fail() {
        let regs = Registries::default();
        let svcs = services(Ipv4Addr::LOCALHOST, &regs).unwrap();
        let cap = svcs[0].capability();
        let mut spec = cap.specification_for();
        spec.set_parameter_value(
            "destination.ip4",
            &Value::Address("10.0.0.1".parse().unwrap()),
        )
        .unwrap();
        spec.set_parameter_value("packets.ip", &Value::Natural(3))
            .unwrap();
        let r = svcs[0].run(&spec, ctx()).unwrap();
        assert_eq!(r.rows().len(), 3);
        let text = mplane::model::Message::from(r).unparse();
        assert!(text.contains("2015-06-01 12:00:02.250000"), "{text}");
        assert!(text.contains("\"3007\""), "{text}");
        let f = svcs[2].run(&svcs[2].capability().specification_for(), ctx());
        assert_eq!(f.unwrap_err(), "interop-fail: deliberate failure");
    }

    #[test]
    fn slow_stops_on_interrupt() {
        let regs = Registries::default();
        let svcs = services(Ipv4Addr::LOCALHOST, &regs).unwrap();
        let c = ctx();
        c.interrupt.set();
        let r = svcs[1]
            .run(&svcs[1].capability().specification_for(), c)
            .unwrap();
        assert_eq!(r.rows().len(), 1);
    }
}
