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

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand};
use mplane::client::{Client, ClientError, Url};
use mplane::config::{Config, TlsFiles};
use mplane::model::{self, Message, ModelError, Statement, StatementKind, WhenText};
use mplane::registry::{Registries, RegistryError};
use mplane::tls::Connector;
use mplane::value::Value;
use output::Format;
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
        Cmd::Redeem(a) => {
            let receipt = read_receipt(&a.receipt, &session.registries)?;
            let to = session.receipt_url(a.to.as_deref())?;
            let redemption = receipt.derive(StatementKind::Redemption);
            let mut sigint = interrupt_signal()?;
            let reply = session.send(&to, &Message::Statement(redemption)).await?;
            session
                .finish(&to, reply, &a.options, a.wait, &mut sigint)
                .await
        }
        Cmd::Interrupt(a) => {
            let receipt = read_receipt(&a.receipt, &session.registries)?;
            let to = session.receipt_url(a.to.as_deref())?;
            let interrupt = receipt.derive(StatementKind::Interrupt);
            let mut sigint = interrupt_signal()?;
            let reply = session.send(&to, &Message::Statement(interrupt)).await?;
            // the reply is the job's state, normally its receipt: the partial result follows
            // by redemption once the job has stopped
            session
                .finish(&to, reply, &a.options, true, &mut sigint)
                .await
        }
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

/// Where we talk to: the client, its registries, and the component's URLs.
struct Session {
    connector: Option<Connector>,
    registries: Registries,
    client: Client,
    /// Where capabilities are listed.
    capability_url: Option<Url>,
    /// Where specifications without a link and redemptions go.
    default_url: Option<Url>,
    /// Registry URIs fetched from the component (each once).
    fetched: Vec<String>,
}

impl Session {
    fn new(cli: &Cli) -> Result<Session> {
        let config = cli.config.as_deref().map(Config::read).transpose()?;
        let client_cfg = config.as_ref().and_then(|c| c.client.as_ref());
        let tls = match (&cli.cert, &cli.key, &cli.ca_chain) {
            (Some(cert), Some(key), Some(ca)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca_chain: ca.clone(),
                crl: None,
            }),
            (None, None, None) => config.as_ref().and_then(|c| c.tls.clone()),
            _ => bail!("--cert, --key and --ca-chain go together"),
        };
        let connector = tls
            .as_ref()
            .map(Connector::new)
            .transpose()
            .context("TLS files")?;
        let mut registries = Registries::default();
        let preload = client_cfg.and_then(|c| c.registry_preload.clone());
        for file in preload.iter().chain(&cli.registry) {
            registries
                .load_file(file)
                .with_context(|| format!("registry {}", file.display()))?;
        }
        let (capability_url, default_url) = match &cli.url {
            Some(u) => {
                let url = Url::parse(u)?;
                if url.path.is_empty() || url.path == "/" {
                    (Some(url.with_path("/capability")), Some(url.with_path("/")))
                } else {
                    (Some(url.clone()), Some(url.with_path("/")))
                }
            }
            None => {
                let default = client_cfg
                    .and_then(|c| c.default_url.as_deref())
                    .map(Url::parse)
                    .transpose()?;
                let caps = match client_cfg.and_then(|c| c.capability_url.as_deref()) {
                    Some(u) => Some(Url::parse(u)?),
                    None => default.as_ref().map(|d| d.with_path("/capability")),
                };
                let default = default.or_else(|| caps.as_ref().map(|c| c.with_path("/")));
                (caps, default)
            }
        };
        let client = Client::new(connector.clone(), Arc::new(registries.clone()));
        Ok(Session {
            connector,
            registries,
            client,
            capability_url,
            default_url,
            fetched: Vec::new(),
        })
    }

    /// The component's URL for messages without a link of their own.
    fn base(&self) -> Result<Url> {
        self.default_url.clone().ok_or_else(|| {
            anyhow!("no component URL: give --url, or default-url / capability-url in [client]")
        })
    }

    /// Where a receipt's redemption or interrupt goes.
    fn receipt_url(&self, to: Option<&str>) -> Result<Url> {
        match to {
            Some(t) => Ok(Url::parse(t)?),
            None => self.base(),
        }
    }

    /// The capabilities offered at the capability URL.
    async fn capabilities(&mut self) -> Result<Vec<Statement>> {
        let url = self.capability_url.clone().ok_or_else(|| {
            anyhow!("no component URL: give --url, or default-url / capability-url in [client]")
        })?;
        loop {
            match self.client.capabilities(&url).await {
                Err(e) => self.learn_registry(e, &url).await?,
                Ok(caps) => return Ok(caps),
            }
        }
    }

    /// Sends `msg` to `to`; the reply.
    async fn send(&mut self, to: &Url, msg: &Message) -> Result<Message> {
        loop {
            match self.client.send(to, msg).await {
                Err(e) => self.learn_registry(e, to).await?,
                Ok(m) => return Ok(m),
            }
        }
    }

    /// When `e` is a reply naming a registry we lack, loads it from the component at `from`,
    /// which serves its registries at `/registry/<name>` (this project's registry URIs are
    /// `https://mplane-rs.invalid/registry/<name>` on every probe, doc/protocol.md), so that
    /// the request can be made again; any other error is returned as it is. Nothing is
    /// fetched from anywhere but the component itself, over the same mutual TLS.
    async fn learn_registry(&mut self, e: ClientError, from: &Url) -> Result<()> {
        let uri = match &e {
            ClientError::Parse(ModelError::Registry(RegistryError::Unknown(uri))) => uri.clone(),
            _ => return Err(e).with_context(|| from.authority()),
        };
        let path = match Url::parse(&uri) {
            Ok(u) if u.path.starts_with("/registry/") && !self.fetched.contains(&uri) => u.path,
            _ => bail!(
                "the component's messages use the registry {uri}, which is not loaded and not \
                 served by {}: load it with --registry or registry_preload",
                from.authority()
            ),
        };
        self.fetched.push(uri.clone());
        let url = from.with_path(&path);
        let reply = self
            .client
            .request(hyper::Method::GET, &url, None)
            .await
            .with_context(|| format!("fetch the registry {uri} from {}", url.authority()))?;
        if reply.status != hyper::StatusCode::OK {
            bail!(
                "the registry {uri} is not loaded, and {} answers HTTP {} for {path}: load it \
                 with --registry or registry_preload",
                url.authority(),
                reply.status
            );
        }
        let text = std::str::from_utf8(&reply.body)
            .map_err(|_| anyhow!("the registry {uri} is not UTF-8"))?;
        let reg = self
            .registries
            .load_str(text)
            .with_context(|| format!("the registry {uri}"))?;
        if self.registries.get(&uri).is_none() {
            bail!("{uri} served the registry {}, not itself", reg.uri());
        }
        self.client = Client::new(self.connector.clone(), Arc::new(self.registries.clone()));
        Ok(())
    }

    /// Downloads every export file `reply` names into `dir`: each under a hidden temporary
    /// name first, renamed once complete and of the size the result states.
    async fn download(&self, reply: &Message, dir: &Path) -> Result<()> {
        let files = output::export_files(reply);
        if files.is_empty() {
            eprintln!("the result names no file to download");
            return Ok(());
        }
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        for (url, size) in files {
            let u = Url::parse(&url).with_context(|| format!("export URL {url:?}"))?;
            let name = u
                .path
                .rsplit('/')
                .next()
                .filter(|n| {
                    !n.is_empty()
                        && !n.starts_with('.')
                        && n.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"._-=".contains(&b))
                })
                .ok_or_else(|| anyhow!("export URL {url:?} names no file"))?;
            let dest = dir.join(name);
            let part = dir.join(format!(".{name}.part"));
            let result = async {
                let mut f = tokio::fs::File::create(&part)
                    .await
                    .with_context(|| format!("create {}", part.display()))?;
                let n = self
                    .client
                    .download(&u, &mut f)
                    .await
                    .with_context(|| format!("download {url}"))?;
                f.sync_all()
                    .await
                    .with_context(|| format!("write {}", part.display()))?;
                if let Some(want) = size
                    && want != n
                {
                    bail!("download {url}: {n} bytes, the result says {want}");
                }
                tokio::fs::rename(&part, &dest)
                    .await
                    .with_context(|| format!("rename to {}", dest.display()))?;
                Ok(n)
            }
            .await;
            match result {
                Ok(n) => eprintln!("downloaded {} ({n} bytes)", dest.display()),
                Err(e) => {
                    let _ = std::fs::remove_file(&part);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Prints what `reply` settles: a result or envelope, or (with `wait`) the result a
    /// receipt is redeemed for; an exception is an error. Ctrl-C (`sigint`) while waiting
    /// interrupts the job and prints its partial result; a second one gives up waiting and
    /// prints the receipt.
    async fn finish(
        &mut self,
        to: &Url,
        mut reply: Message,
        opts: &WaitArgs,
        wait: bool,
        sigint: &mut Signal,
    ) -> Result<Outcome> {
        let poll = Duration::from_secs_f64(opts.poll);
        let deadline = opts
            .timeout
            .map(|s| Instant::now() + Duration::from_secs_f64(s));
        let mut interrupted = false;
        loop {
            let receipt = match reply {
                Message::Exception(e) => bail!("exception from the component: {}", e.message),
                Message::Statement(s) if s.kind == StatementKind::Receipt => s,
                Message::Statement(ref s) if s.kind != StatementKind::Result => {
                    bail!("the component answered with a {}", reply.kind_name())
                }
                done => {
                    put(&output::results(&done, opts.format));
                    if let Some(dir) = &opts.download {
                        self.download(&done, dir).await?;
                    }
                    return Ok(if interrupted {
                        Outcome::Interrupted
                    } else {
                        Outcome::Done
                    });
                }
            };
            if !wait {
                put_line(&Message::Statement(receipt).unparse());
                eprintln!("not ready yet: redeem it later");
                return Ok(Outcome::TimedOut);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                put_line(&Message::Statement(receipt).unparse());
                eprintln!("still running after --timeout: redeem the receipt above later");
                return Ok(Outcome::TimedOut);
            }
            let stop = tokio::select! {
                biased;
                _ = sigint.recv() => true,
                _ = tokio::time::sleep(poll) => false,
            };
            if stop && interrupted {
                put_line(&Message::Statement(receipt).unparse());
                eprintln!(
                    "interrupted again: not waiting for the partial result (the receipt above)"
                );
                return Ok(Outcome::Interrupted);
            }
            let kind = if stop {
                interrupted = true;
                eprintln!("interrupting the job");
                StatementKind::Interrupt
            } else {
                StatementKind::Redemption
            };
            reply = self
                .send(to, &Message::Statement(receipt.derive(kind)))
                .await?;
        }
    }
}
