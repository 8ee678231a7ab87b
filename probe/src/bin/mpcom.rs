//! `mpcom` — the mPlane component runtime.
//!
//! `mpcom demo` runs on an embedded default with no configuration: it builds
//! the probe's capabilities, derives a specification as a client would, checks
//! it against the capability, answers it, and prints every message exchanged
//! in the reference SDK's wire format.
//!
//! `mpcom --config FILE` (or `mpcom run --config FILE`) runs a component
//! from the reference's INI file unchanged: `[TLS]`, `[Roles]`,
//! `[Authorizations]`, `[module_*]` (services by `module` name, see
//! `mplane_probe::services`) and `[component]` with `workflow =
//! client-initiated`. SIGTERM/SIGINT stop it gracefully, SIGHUP reloads the
//! TLS certificate, key and CA files. The first line on stdout is
//! `listening <addr>` (useful with `listen-port = 0`); logs go to stderr
//! (`RUST_LOG` filters them). A `registry_preload` file is also served at
//! `/registry/<file stem>`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use mplane::model::{self, Message, StatementKind};
use mplane::registry::Registries;
use mplane::value::{Timestamp, Value};
use mplane::when::When;

#[derive(Parser)]
#[command(name = "mpcom", version, about = "mPlane component runtime")]
struct Cli {
    /// Configuration file (the reference's INI format); runs the component.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run an embedded demonstration (no configuration, no hardware).
    Demo,
    /// Run the component described by --config.
    Run,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match (cli.cmd, cli.config) {
        (Some(Cmd::Demo), _) => demo(),
        (Some(Cmd::Run) | None, Some(config)) => run(&config),
        (Some(Cmd::Run) | None, None) => Err(anyhow::anyhow!(
            "no configuration: use `mpcom --config FILE` (or `mpcom demo`)"
        )),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mpcom: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: &Path) -> Result<()> {
    use mplane::azn::{Azn, AznMode};
    use mplane::component::{Component, ComponentOptions};
    use mplane::config::{Config, Workflow};
    use mplane::scheduler::Scheduler;
    use mplane::tls::ReloadableServerConfig;

    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cfg = Config::read(path)?;
    let comp = cfg
        .component
        .as_ref()
        .with_context(|| format!("{}: missing section [component]", path.display()))?;
    if comp.workflow != Workflow::ClientInitiated {
        anyhow::bail!(
            "{}: [component] workflow = {}: only client-initiated is implemented",
            path.display(),
            comp.workflow.as_str()
        );
    }
    let mut regs = Registries::new();
    let mut served = std::collections::BTreeMap::new();
    if let Some(pre) = &comp.registry_preload {
        regs.load_file(pre)
            .with_context(|| format!("{}: [component] registry_preload", path.display()))?;
        // also served to clients at /registry/<file stem>
        let text = std::fs::read_to_string(pre)
            .with_context(|| format!("{}: [component] registry_preload", path.display()))?;
        let name = pre
            .file_stem()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "registry".into());
        served.insert(name, text);
    }
    let azn = Azn::from_config(&cfg, AznMode::Substring)
        .with_context(|| format!("{}: [Roles]/[Authorizations]", path.display()))?;
    let mut sched = Scheduler::new(azn, comp.scheduler_max_results);
    for m in &cfg.modules {
        for svc in mplane_probe::services::from_module(m, &regs)
            .with_context(|| format!("{}", path.display()))?
        {
            sched.add_service(svc, comp.listen_cap_link.as_deref());
        }
    }
    let tls = match &cfg.tls {
        Some(files) => Some(Arc::new(
            ReloadableServerConfig::load(files.clone())
                .with_context(|| format!("{}: [TLS]", path.display()))?,
        )),
        None => None,
    };
    let addr = SocketAddr::from(([0, 0, 0, 0], comp.listen_port));
    let mut opts = ComponentOptions::new(addr, tls.clone());
    opts.registries = Arc::new(regs);
    opts.registries_served = served;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let result = rt.block_on(async move {
        let component = Component::bind(opts, sched).await?;
        let bound = component.local_addr()?;
        tracing::info!(
            "listening on {bound} ({})",
            if tls.is_some() { "https" } else { "http" }
        );
        // the port actually bound, for scripts using listen-port = 0
        println!("listening {bound}");
        let cancel = tokio_util::sync::CancellationToken::new();
        let signals = tokio::spawn(signals(cancel.clone(), tls));
        component.serve(cancel.clone()).await?;
        cancel.cancel();
        let _ = signals.await;
        tracing::info!("stopped");
        Ok(())
    });
    // do not wait forever for a service thread that ignores its interrupt
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    result
}

async fn signals(
    cancel: tokio_util::sync::CancellationToken,
    tls: Option<Arc<mplane::tls::ReloadableServerConfig>>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); cancel.cancel(); return }
            _ = int.recv() => { tracing::info!("SIGINT: stopping"); cancel.cancel(); return }
            _ = hup.recv() => match &tls {
                Some(t) => match t.reload() {
                    Ok(()) => tracing::info!("SIGHUP: TLS files reloaded"),
                    Err(e) => tracing::error!("SIGHUP: TLS reload failed, keeping the old files: {e}"),
                },
                None => tracing::info!("SIGHUP: no [TLS], nothing to reload"),
            },
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
