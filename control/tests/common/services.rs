//! Test services for the runtime's tests: a capability from its parts, a service that
//! answers at once (or fails), one that panics, one that runs until interrupted, `[Roles]`-style settings.
//! (Each test crate uses its share.)
#![allow(dead_code)]

use std::time::{Duration, Instant};

use mplane::config::Setting;
use mplane::model::{self, Message, Statement};
use mplane::registry::Registries;
use mplane::scheduler::{JobContext, Outcome, Service};
use mplane::value::Value;

/// A capability `label` with `results`, scope `when`, parameters `source.ip4` (127.0.0.1)
/// and `destination.ip4`.
pub fn cap(label: &str, results: &[&str], when: &str) -> Statement {
    let results: Vec<String> = results.iter().map(|r| format!("\"{r}\"")).collect();
    let text = format!(
        r#"{{"capability":"measure","version":1,"label":"{label}","when":"{when}",
        "parameters":{{"source.ip4":"127.0.0.1","destination.ip4":"*"}},
        "results":[{}]}}"#,
        results.join(",")
    );
    match model::parse(&text, &Registries::default()).unwrap() {
        Message::Statement(s) => s,
        m => panic!("{m:?}"),
    }
}

/// Immediate one-row result, or failure.
pub struct Quick(pub Statement, pub bool);
impl Service for Quick {
    fn capability(&self) -> &Statement {
        &self.0
    }
    fn run(&self, spec: &Statement, _ctx: JobContext) -> Outcome {
        if self.1 {
            return Err("deliberate failure".into());
        }
        let mut r = spec.result_for();
        r.push_row(&[Some(Value::Natural(42))])
            .map_err(|e| e.to_string())?;
        Ok(r)
    }
}

/// Panics with "boom" (a defect in a measurement module).
pub struct Panics(pub Statement);
impl Service for Panics {
    fn capability(&self) -> &Statement {
        &self.0
    }
    fn run(&self, _spec: &Statement, _ctx: JobContext) -> Outcome {
        panic!("boom")
    }
}

/// Runs until interrupted or for the scope's duration; counts 50 ms ticks.
pub struct Slow(pub Statement);
impl Service for Slow {
    fn capability(&self) -> &Statement {
        &self.0
    }
    fn run(&self, spec: &Statement, ctx: JobContext) -> Outcome {
        let start = Instant::now();
        let limit = spec
            .when()
            .duration_micros(mplane::component::now())
            .map(|us| Duration::from_micros(us.max(0) as u64))
            .unwrap_or(Duration::from_secs(3600));
        let mut n = 0;
        while start.elapsed() < limit && !ctx.interrupt.is_set() {
            std::thread::sleep(Duration::from_millis(50));
            n += 1;
        }
        let mut r = spec.result_for();
        r.push_row(&[Some(Value::Natural(n))])
            .map_err(|e| e.to_string())?;
        Ok(r)
    }
}

/// A configuration setting `k = v`.
pub fn setting(k: &str, v: &str) -> Setting {
    Setting {
        key: k.into(),
        value: v.into(),
        line: 1,
    }
}
