//! `mpcli` — a command-line mPlane client for the client-initiated workflow.
//!
//! It reads the reference client's INI configuration unchanged (`[TLS]`, and in `[client]`
//! `default-url`, `capability-url`, `registry_preload`), or takes the same settings as
//! options, and does in one command what the reference's interactive `mpcli` does in a
//! session:
//!
//! ```text
//! mpcli --config client.conf caps                          # what may I run here?
//! mpcli --config client.conf run ping-average-ip4 destination.ip4=192.0.2.1 --when 'now + 10s / 1s'
//! mpcli --url https://probe:8888/ --cert c.crt --key c.key --ca-chain ca.crt run flows-ip4 --format csv
//! mpcli --config client.conf run flows-export-ip4 ... --no-wait > receipt.json
//! mpcli --config client.conf redeem receipt.json --wait
//! ```
//!
//! A specification is derived from the capability as the reference client derives it,
//! checked against the capability (parameters, constraints, temporal scope) before it is
//! sent, and sent to the capability's `link` (else to the component's URL). A receipt is
//! redeemed until the result arrives; Ctrl-C interrupts the job and prints what it measured
//! so far. Results print as an aligned table, CSV or the mPlane JSON itself. A capability
//! naming a registry that is not loaded gets it from the component (`/registry/<name>`, where
//! `mpcom` serves its registries) over the same mutual TLS; registries elsewhere must be
//! preloaded (`registry_preload`, `--registry`).
//!
//! Exit status: 0 done, 1 an error or an mPlane exception from the component, 2 bad usage,
//! 3 `--timeout` passed before the result (the receipt is printed), 130 interrupted by Ctrl-C
//! (after the partial result).

mod output;
mod session;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand};
use mplane::client::Url;
use mplane::model::{self, Message, Statement, StatementKind, WhenText};
use mplane::registry::Registries;
use mplane::value::Value;
use output::Format;
use session::Session;
use tokio::signal::unix::{Signal, SignalKind, signal};

#[derive(Parser)]
#[command(
    name = "mpcli",
    version,
    about = "mPlane client: list a component's capabilities, run specifications, redeem receipts"
)]
struct Cli {
    /// Client configuration in the reference's INI format: cert, key and ca-chain of its TLS
    /// section; default-url, capability-url and registry_preload of its client section
    /// (relative paths from the working directory, as the reference reads them).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// The component: its base URL (https://HOST:PORT/) or its capability URL; replaces the
    /// configuration's URLs.
    #[arg(long, global = true)]
    url: Option<String>,
    /// Our certificate (PEM), instead of the configuration's TLS cert.
    #[arg(long, global = true)]
    cert: Option<PathBuf>,
    /// Our private key (PEM), instead of the configuration's TLS key.
    #[arg(long, global = true)]
    key: Option<PathBuf>,
    /// The CA bundle that signs the component's certificate, instead of the configuration's TLS
    /// ca-chain.
    #[arg(long = "ca-chain", global = true)]
    ca_chain: Option<PathBuf>,
    /// A registry file to load (as registry_preload); may be given several times.
    #[arg(long, global = true)]
    registry: Vec<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List the capabilities the component offers to this identity.
    Caps {
        /// Print the capabilities as mPlane JSON (an array) instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Print one capability, by label or token, as mPlane JSON.
    Show {
        /// Label or token.
        capability: String,
    },
    /// Fill in a capability, send the specification and print the result.
    Run(RunArgs),
    /// Redeem a receipt (saved from `run --no-wait`) and print the result if it is ready.
    Redeem(ReceiptArgs),
    /// Interrupt the job of a receipt and print what it measured so far.
    Interrupt(ReceiptArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// The capability's label (or token).
    capability: String,
    /// Parameter values, NAME=VALUE (e.g. destination.ip4=192.0.2.1).
    params: Vec<String>,
    /// Temporal scope of the specification (e.g. 'now + 30s / 1s', '2026-12-07 10:00:00 ...
    /// 2026-12-07 11:00:00').
    #[arg(long, default_value = "now")]
    when: String,
    /// Label of the specification (default: the capability's).
    #[arg(long)]
    label: Option<String>,
    /// Send the specification here instead of to the capability's link.
    #[arg(long, value_name = "URL")]
    to: Option<String>,
    #[command(flatten)]
    wait: WaitArgs,
    /// Print the receipt (mPlane JSON, for `redeem` later) instead of waiting for the result.
    #[arg(long)]
    no_wait: bool,
}

#[derive(clap::Args)]
struct ReceiptArgs {
    /// A file holding the receipt's mPlane JSON, or - for standard input.
    receipt: PathBuf,
    /// Keep redeeming until the result is ready.
    #[arg(long)]
    wait: bool,
    /// Send the redemption here instead of to the component's URL.
    #[arg(long, value_name = "URL")]
    to: Option<String>,
    #[command(flatten)]
    options: WaitArgs,
}

#[derive(clap::Args)]
struct WaitArgs {
    /// How results print: an aligned table, CSV, or the mPlane JSON as received.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Seconds between redemptions while a receipt is pending.
    #[arg(long, default_value_t = 1.0, value_parser = seconds)]
    poll: f64,
    /// Stop waiting after this many seconds (the job goes on): print the receipt, exit 3.
    #[arg(long, value_parser = seconds)]
    timeout: Option<f64>,
    /// Download the files the result names (`export.url` rows or metadata) into this
    /// directory, over the same mutual TLS; a file appears there only once complete.
    #[arg(long, value_name = "DIR")]
    download: Option<PathBuf>,
}

/// A number of seconds: finite, from 0.05 to a day.
fn seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.05..=86_400.0).contains(&v) => Ok(v),
        Ok(_) => Err("seconds from 0.05 to 86400".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// How a command ended, as the exit status says it.
enum Outcome {
    Done,
    TimedOut,
    Interrupted,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mpcli: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::TimedOut) => ExitCode::from(3),
        Ok(Outcome::Interrupted) => ExitCode::from(130),
        Err(e) => {
            eprintln!("mpcli: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<Outcome> {
    let mut session = Session::new(&cli)?;
    match cli.cmd {
        Cmd::Caps { json } => {
            let caps = session.capabilities().await?;
            if json {
                let all: Vec<String> = caps
                    .iter()
                    .map(|c| Message::Statement(c.clone()).unparse())
                    .collect();
                put(&format!("[{}]\n", all.join(",\n")));
            } else if caps.is_empty() {
                eprintln!("no capabilities for this identity");
            } else {
                put(&output::summary(&caps));
            }
            Ok(Outcome::Done)
        }
        Cmd::Show { capability } => {
            let caps = session.capabilities().await?;
            let cap = find(&caps, &capability)?;
            put_line(&Message::Statement(cap.clone()).unparse());
            Ok(Outcome::Done)
        }
        Cmd::Run(a) => {
            let caps = session.capabilities().await?;
            let cap = find(&caps, &a.capability)?;
            let spec = specification(cap, &a)?;
            let to = match (&a.to, &cap.link) {
                (Some(to), _) => Url::parse(to)?,
                (None, Some(link)) => {
                    Url::parse(link).with_context(|| format!("the capability's link {link:?}"))?
                }
                (None, None) => session.base()?,
            };
            // from here on Ctrl-C interrupts the job (once its receipt is in) instead of
            // leaving it running unseen
            let mut sigint = interrupt_signal()?;
            let reply = session.send(&to, &Message::Statement(spec)).await?;
            if a.no_wait {
                put_line(&reply.unparse());
                return match &reply {
                    Message::Exception(e) => bail!("exception from the component: {}", e.message),
                    _ => Ok(Outcome::Done),
                };
            }
            session.finish(&to, reply, &a.wait, true, &mut sigint).await
        }
        Cmd::Redeem(a) => about_receipt(&mut session, &a, StatementKind::Redemption, a.wait).await,
        // the reply is the job's state, normally its receipt: the partial result follows by
        // redemption once the job has stopped
        Cmd::Interrupt(a) => about_receipt(&mut session, &a, StatementKind::Interrupt, true).await,
    }
}

/// Writes `text` to standard output. A reader that went away (`mpcli caps | head -3`) ends
/// the program quietly instead of a panic.
fn put(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("mpcli: standard output: {e}");
        std::process::exit(1);
    }
}

/// [`put`] with a line feed.
fn put_line(text: &str) {
    put(&format!("{text}\n"));
}

/// SIGINT (Ctrl-C) as a stream, registered now: a signal that arrives while a request is in
/// flight waits for [`Session::finish`] to see it.
fn interrupt_signal() -> Result<Signal> {
    signal(SignalKind::interrupt()).context("listen for Ctrl-C")
}

/// The capability labelled (or with the token) `which`.
fn find<'a>(caps: &'a [Statement], which: &str) -> Result<&'a Statement> {
    caps.iter()
        .find(|c| c.label.as_deref() == Some(which))
        .or_else(|| caps.iter().find(|c| c.token.as_deref() == Some(which)))
        .ok_or_else(|| {
            let labels: Vec<&str> = caps.iter().filter_map(|c| c.label.as_deref()).collect();
            anyhow!(
                "no capability {which:?} here; there are: {}",
                if labels.is_empty() {
                    "none".to_string()
                } else {
                    labels.join(", ")
                }
            )
        })
}

/// The specification `a` asks for: the capability's, with the parameter values and scope
/// given, checked against the capability before anything is sent.
fn specification(cap: &Statement, a: &RunArgs) -> Result<Statement> {
    let mut spec = cap.specification_for();
    for p in &a.params {
        let (name, text) = p
            .split_once('=')
            .ok_or_else(|| anyhow!("parameter {p:?}: expected NAME=VALUE"))?;
        let entry = cap.parameter(name).ok_or_else(|| {
            anyhow!(
                "{:?} has no parameter {name:?}; its parameters: {}",
                cap.label.as_deref().unwrap_or("the capability"),
                output::parameters(cap)
            )
        })?;
        let value = Value::parse_some(entry.prim, text)
            .with_context(|| format!("parameter {name} ({})", entry.prim))?;
        spec.set_parameter_value(name, &value)?;
    }
    spec.when =
        Some(WhenText::parse(&a.when).with_context(|| format!("temporal scope {:?}", a.when))?);
    if let Some(l) = &a.label {
        spec.label = Some(l.clone());
    }
    let now = mplane::component::now();
    if let Err(e) = model::check_fulfills(&spec, cap, now) {
        let hint = match e {
            model::MatchError::MissingValue(_) | model::MatchError::Constraint { .. } => {
                format!("its parameters: {}", output::parameters(cap))
            }
            model::MatchError::Scope(_) => format!(
                "its scope: {} (give --when)",
                cap.when.as_ref().map_or("past ... future", |w| w.text())
            ),
            _ => String::new(),
        };
        bail!(
            "the specification does not fit {:?}: {e}; {hint}",
            cap.label.as_deref().unwrap_or("the capability")
        );
    }
    // as the reference client: a relative scope resolved at `now` is part of the token, so
    // that running the same command again starts a new job
    spec.token = Some(spec.client_token(now));
    Ok(spec)
}

/// Sends the `kind` (redemption or interrupt) of the saved receipt `a.receipt` to its
/// component (or `a.to`), and follows the reply as `run` does (`wait`: until the result).
async fn about_receipt(
    session: &mut Session,
    a: &ReceiptArgs,
    kind: StatementKind,
    wait: bool,
) -> Result<Outcome> {
    let receipt = read_receipt(&a.receipt, &session.registries)?;
    let to = session.receipt_url(a.to.as_deref())?;
    let mut sigint = interrupt_signal()?;
    let reply = session
        .send(&to, &Message::Statement(receipt.derive(kind)))
        .await?;
    session
        .finish(&to, reply, &a.options, wait, &mut sigint)
        .await
}

/// A receipt from a file or standard input.
fn read_receipt(path: &Path, registries: &Registries) -> Result<Statement> {
    let text = if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("read the receipt from standard input")?;
        s
    } else {
        std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?
    };
    match model::parse(&text, registries)
        .with_context(|| format!("the receipt in {}", path.display()))?
    {
        Message::Statement(s) if s.kind == StatementKind::Receipt => Ok(s),
        m => bail!(
            "{} holds a {}, not a receipt",
            path.display(),
            m.kind_name()
        ),
    }
}
