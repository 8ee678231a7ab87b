//! Parse + unparse throughput of the information model, side by side with
//! the reference SDK's model on the same messages, in the same run.
//!
//! ```text
//! cargo build --release -p mplane-bench --bin model_codec
//! target/release/model_codec [--python PATH] [--seconds S] [--repeat N] [--only capability|specification|result]
//!     [--phase both|parse|unparse] [--count N]
//! ```
//! `--python` names a Python 3.11 with `mplane-sdk` 0.9.0 installed (e.g. the
//! test venv `target/peer-venv/bin/python`); without it only ours is measured.
//! Reports messages/s (median of `--repeat` runs) and the ratio per core. `--phase` times only
//! our parse or only our unparse (the reference always does both).

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use mplane::model::{self, Message, Statement, StatementKind};
use mplane::registry::Registries;
use mplane::value::{TimeValue, Timestamp, Value};
use mplane::when::When;

fn capability(regs: &Registries) -> Result<Message> {
    let mut c = Statement::new(StatementKind::Capability, "measure");
    c.label = Some("ping-average-ip4".into());
    c.set_when(When::parse("now ... future / 1s")?);
    c.add_parameter("source.ip4", "10.0.27.2", regs)?;
    c.add_parameter("destination.ip4", "*", regs)?;
    for r in [
        "delay.twoway.icmp.us.min",
        "delay.twoway.icmp.us.mean",
        "delay.twoway.icmp.us.max",
        "delay.twoway.icmp.count",
    ] {
        c.add_result_column(r, regs)?;
    }
    c.token = Some(c.default_token());
    Ok(c.into())
}

fn specification(cap: &Message) -> Result<Message> {
    let mut s = cap.as_statement().context("cap")?.specification_for();
    s.label = Some("ping-average-ip4-0".into());
    s.set_when(When::parse("2035-12-24 22:18:42 + 1m / 1s")?);
    s.set_parameter_value("destination.ip4", &Value::Address("192.0.2.33".parse()?))?;
    s.token = Some(s.default_token());
    Ok(s.into())
}

fn result(regs: &Registries, rows: usize) -> Result<Message> {
    let mut r = Statement::new(StatementKind::Result, "measure");
    r.label = Some("ping-detail-ip4-0".into());
    r.add_parameter("source.ip4", "10.0.27.2", regs)?;
    r.add_parameter("destination.ip4", "192.0.2.33", regs)?;
    r.add_result_column("time", regs)?;
    r.add_result_column("delay.twoway.icmp.us", regs)?;
    let t0 = Timestamp::parse("2035-12-24 22:18:42.003").context("t0")?;
    r.set_when(When::range(
        TimeValue::At(t0),
        TimeValue::At(t0.add_micros(rows as i64 * 1_000_000)),
    ));
    for i in 0..rows {
        r.push_row(&[
            Some(Value::Time(TimeValue::At(
                t0.add_micros(i as i64 * 1_000_000),
            ))),
            Some(Value::Natural(30_000 + (i as u64 * 7919) % 20_000)),
        ])?;
    }
    r.token = Some(r.default_token());
    Ok(r.into())
}

/// What one iteration of our side does.
#[derive(Clone, Copy, PartialEq)]
enum Phase {
    /// Parse and unparse (what the reference is measured doing).
    Both,
    /// Parse only.
    Parse,
    /// Unparse only (of a message parsed once).
    Unparse,
}

/// One iteration of our side: `phase` of `text` (`parsed` is `text` parsed once).
fn once(phase: Phase, text: &str, parsed: &Message, regs: &Registries) -> Result<()> {
    match phase {
        Phase::Both => {
            let m = model::parse(std::hint::black_box(text), regs)?;
            std::hint::black_box(m.unparse());
        }
        Phase::Parse => {
            std::hint::black_box(model::parse(std::hint::black_box(text), regs)?);
        }
        Phase::Unparse => {
            std::hint::black_box(std::hint::black_box(parsed).unparse());
        }
    }
    Ok(())
}

fn ours(text: &str, regs: &Registries, seconds: f64, phase: Phase) -> Result<f64> {
    let parsed = model::parse(text, regs)?;
    // warm up, then count iterations for `seconds`
    for _ in 0..100 {
        once(phase, text, &parsed, regs)?;
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        for _ in 0..64 {
            once(phase, text, &parsed, regs)?;
        }
        n += 64;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

const REF_SCRIPT: &str = r#"
import sys, time
import mplane.model as m
m.initialize_registry()
text = sys.stdin.read()
secs = float(sys.argv[1])
for _ in range(3):
    m.unparse_json(m.parse_json(text))
n = 0
t0 = time.perf_counter()
while time.perf_counter() - t0 < secs:
    m.unparse_json(m.parse_json(text))
    n += 1
print(n / (time.perf_counter() - t0))
"#;

fn reference(python: &str, text: &str, seconds: f64) -> Result<f64> {
    use std::io::Write;
    let mut child = Command::new(python)
        .args(["-c", REF_SCRIPT, &seconds.to_string()])
        .env("PYTHONHASHSEED", "0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("start the reference")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("reference failed");
    }
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let get = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let python = get("--python");
    let seconds: f64 = get("--seconds")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(2.0);
    let repeat: usize = get("--repeat").map(|s| s.parse()).transpose()?.unwrap_or(5);
    let only = get("--only");
    // --count N: run exactly N iterations of ours per message and print nothing else
    // (for instruction counts under `valgrind --tool=callgrind`)
    let count: Option<u64> = get("--count").map(|s| s.parse()).transpose()?;
    let phase = match get("--phase").as_deref() {
        None | Some("both") => Phase::Both,
        Some("parse") => Phase::Parse,
        Some("unparse") => Phase::Unparse,
        Some(p) => bail!("--phase both|parse|unparse, not {p}"),
    };
    let regs = Registries::new();
    let cap = capability(&regs)?;
    let spec = specification(&cap)?;
    let res = result(&regs, 1000)?;
    println!(
        "{:<22} {:>14} {:>14} {:>9}",
        "message", "ours msg/s", "reference/s", "ratio"
    );
    for (name, msg) in [
        ("capability", &cap),
        ("specification", &spec),
        ("result (1000 rows)", &res),
    ] {
        if only.as_deref().is_some_and(|o| !name.starts_with(o)) {
            continue;
        }
        let text = msg.unparse();
        if let Some(n) = count {
            let parsed = model::parse(&text, &regs)?;
            for _ in 0..n {
                once(phase, &text, &parsed, &regs)?;
            }
            continue;
        }
        let o = median(
            (0..repeat)
                .map(|_| ours(&text, &regs, seconds, phase))
                .collect::<Result<Vec<_>>>()?,
        );
        match &python {
            Some(py) => {
                let r = median(
                    (0..repeat)
                        .map(|_| reference(py, &text, seconds))
                        .collect::<Result<Vec<_>>>()?,
                );
                println!("{name:<22} {o:>14.0} {r:>14.1} {:>8.0}x", o / r);
            }
            None => println!("{name:<22} {o:>14.0} {:>14} {:>9}", "-", "-"),
        }
    }
    Ok(())
}
