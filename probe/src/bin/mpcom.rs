//! `mpcom` — the mPlane component runtime.
//!
//! `mpcom demo` runs on an embedded default with no configuration: it builds
//! the probe's capabilities, derives a specification as a client would, checks
//! it against the capability, answers it, and prints every message exchanged
//! in the reference SDK's wire format.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use mplane::model::{self, Message, StatementKind};
use mplane::registry::Registries;
use mplane::value::{Timestamp, Value};
use mplane::when::When;

#[derive(Parser)]
#[command(name = "mpcom", version, about = "mPlane component runtime")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run an embedded demonstration (no configuration, no hardware).
    Demo,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Demo => demo(),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mpcom: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn demo() -> Result<()> {
    let regs = Registries::new();
    let now = Timestamp::from_micros(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .context("clock before 1970")?
            .as_micros() as i64,
    );
    let mut cap = model::Statement::new(StatementKind::Capability, "measure");
    cap.label = Some("interop-rows-ip4".into());
    cap.set_when(When::parse("now ... future / 1s")?);
    cap.add_metadata(
        "measurement.identifier",
        &Value::String("mplane-interop".into()),
        &regs,
    )?;
    cap.add_parameter("source.ip4", "127.0.0.1", &regs)?;
    cap.add_parameter("destination.ip4", "*", &regs)?;
    cap.add_parameter("packets.ip", "1 ... 10", &regs)?;
    for c in ["time", "delay.twoway.icmp.us", "hops.ip"] {
        cap.add_result_column(c, &regs)?;
    }
    cap.token = Some(cap.default_token());
    println!("# capability\n{}\n", Message::from(cap.clone()));

    let mut spec = cap.specification_for();
    spec.label = Some("interop-rows-ip4-0".into());
    spec.set_when(When::parse("now + 1s / 1s")?);
    spec.set_parameter_value("destination.ip4", &Value::Address("127.0.0.2".parse()?))?;
    spec.set_parameter_value("packets.ip", &Value::Natural(3))?;
    spec.token = Some(spec.client_token(now));
    let text = Message::from(spec).unparse();
    println!("# specification\n{text}\n");

    // what a component does: parse, match, answer
    let parsed = model::parse(&text, &regs)?;
    let spec = parsed.as_statement().context("not a statement")?;
    model::check_fulfills(spec, &cap, now)?;
    let mut res = spec.result_for();
    let t0 = Timestamp::parse("2015-06-01 12:00:00").context("timestamp")?;
    res.set_when(When::range(
        mplane::value::TimeValue::At(t0),
        mplane::value::TimeValue::At(t0.add_micros(2_000_000)),
    ));
    for i in 0..3u64 {
        res.push_row(&[
            Some(Value::Time(mplane::value::TimeValue::At(
                t0.add_micros(i as i64 * 1_000_000 + 250_000),
            ))),
            Some(Value::Natural(1000 * (i + 1) + 7)),
            Some(Value::Natural(i + 1)),
        ])?;
    }
    println!("# result\n{}", Message::from(res));
    Ok(())
}
