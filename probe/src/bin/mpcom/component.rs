//! `mpcom --config FILE` (run the component) and `mpcom check --config FILE` (read and build
//! everything it would run, report, and exit): both go through [`prepare`], so what `check`
//! accepts is exactly what `run` starts with.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use mplane::azn::RoleAccess;
use mplane::azn::{Azn, AznMode, AznWarning};
use mplane::component::initiator::{InitiatorOptions, TlsReload};
use mplane::component::metrics::MetricsOptions;
use mplane::component::supervisor::ListenerOptions;
use mplane::component::{Component, ComponentOptions};
use mplane::config::{Config, Workflow};
use mplane::registry::Registries;
use mplane::scheduler::Scheduler;
use mplane::tls::ReloadableServerConfig;

/// A configuration read and built, not yet listening.
struct Prepared {
    opts: ComponentOptions,
    /// `workflow = component-initiated`: the listener it connects to.
    initiated: Option<InitiatorOptions>,
    /// Whether it also listens (always for client-initiated; for component-initiated when
    /// `listen-port` is given: downloads, registries, metrics and client-initiated requests).
    listens: bool,
    /// A supervisor's `[client] listen-port` for its components, when it differs from the
    /// clients' port.
    supervisor_port: Option<u16>,
    sched: Scheduler,
    tls: Option<Arc<ReloadableServerConfig>>,
    /// What an operator should look at (unknown keys, authorisation rules that match
    /// nothing, metrics no identity may read); none stops the component.
    warnings: Vec<String>,
    /// Notes that are expected in a working configuration (an `[Authorizations]` key that
    /// covers several capabilities, as `flows` covers the IPv4, IPv6 and export twins).
    notes: Vec<String>,
    /// Per module: section, module kind, capability labels.
    modules: Vec<(String, String, Vec<String>)>,
}

fn prepare(path: &Path) -> Result<Prepared> {
    let cfg = Config::read(path)?;
    let comp = cfg
        .component
        .as_ref()
        .with_context(|| format!("{}: missing section [component]", path.display()))?;
    let mut warnings: Vec<String> = cfg.warnings().iter().map(|w| w.to_string()).collect();
    let mut notes = Vec::new();
    let mut regs = Registries::new();
    let mut served = std::collections::BTreeMap::new();
    // the probe's own extension registry: always loaded, served at /registry/probe
    regs.load_str(mplane_probe::registry::PROBE_REGISTRY_JSON)
        .context("probe registry")?;
    served.insert(
        mplane_probe::registry::PROBE_REGISTRY_NAME.to_string(),
        mplane_probe::registry::PROBE_REGISTRY_JSON.to_string(),
    );
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
    warnings.extend(azn.warnings().iter().map(|w| w.to_string()));
    let mut sched = Scheduler::new(azn.clone(), comp.scheduler_max_results);
    // files of over-size results are downloadable below the component's URL
    let export_url = comp.listen_cap_link.as_deref().map(|l| {
        let base = l.trim_end_matches('/');
        format!("{base}/export/")
    });
    let mut metrics = MetricsOptions {
        access: comp.metrics_roles.clone(),
        sources: Vec::new(),
    };
    let mut modules = Vec::new();
    let mut labels = Vec::new();
    for m in &cfg.modules {
        let module = mplane_probe::services::from_module(m, &regs, export_url.clone())
            .with_context(|| format!("{}", path.display()))?;
        let mine: Vec<String> = module
            .services
            .iter()
            .filter_map(|s| s.capability().label.clone())
            .collect();
        labels.extend(mine.iter().cloned());
        modules.push((m.section.clone(), m.module.clone(), mine));
        for svc in module.services {
            sched.add_service(svc, comp.listen_cap_link.as_deref());
        }
        metrics.sources.extend(module.metrics);
    }
    // a supervisor's capabilities arrive when its components register: a key that matches
    // none of its own is expected then
    let supervising = cfg
        .client
        .as_ref()
        .is_some_and(|c| c.workflow == Workflow::ComponentInitiated);
    for w in azn.lint(labels.iter().map(String::as_str)) {
        match w {
            AznWarning::KeyMatchesSeveral { .. } => notes.push(w.to_string()),
            AznWarning::KeyMatchesNothing { .. } if supervising => notes.push(format!(
                "{w} (yet: capabilities that components register here may match it)"
            )),
            _ => warnings.push(w.to_string()),
        }
    }
    if cfg.tls.is_none() && (cfg.roles.is_some() || cfg.authorizations.is_some()) {
        warnings.push(format!(
            "{}: [Roles] and [Authorizations] are not applied without [TLS]: every peer is \
             unauthenticated and may use every capability",
            path.display()
        ));
    }
    if let (None, Some(RoleAccess::Roles(_))) = (&cfg.tls, &metrics.access) {
        warnings.push(format!(
            "{}: [component] metrics_roles: without [TLS] no peer holds a role, so nobody \
             can read /metrics (use metrics_roles = * to serve them to everyone)",
            path.display()
        ));
    } else if let Some(RoleAccess::Roles(want)) = &metrics.access {
        let held: BTreeSet<&str> = cfg
            .roles
            .iter()
            .flatten()
            .flat_map(|s| s.value.split(','))
            .map(str::trim)
            .collect();
        if want.iter().all(|r| !held.contains(r.as_str())) {
            warnings.push(format!(
                "{}: [component] metrics_roles: no identity in [Roles] holds {}: nobody can \
                 read /metrics",
                path.display(),
                want.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    for m in &cfg.modules {
        match m.module.as_str() {
            "passive" => warnings.extend(passive_module_warnings(path, m)),
            "ping" | "mplane.components.ping" => {
                warnings.extend(active_module_warnings(path, m, true))
            }
            "tcpconnect" => warnings.extend(active_module_warnings(path, m, false)),
            "traceroute" => {
                let icmp = m
                    .kwargs
                    .iter()
                    .any(|k| k.key == "method" && k.value.trim().eq_ignore_ascii_case("icmp"));
                warnings.extend(active_module_warnings(path, m, icmp))
            }
            _ => {}
        }
    }
    let tls = match &cfg.tls {
        Some(files) => Some(Arc::new(
            ReloadableServerConfig::load(files.clone())
                .with_context(|| format!("{}: [TLS]", path.display()))?,
        )),
        None => None,
    };
    let initiated = match comp.workflow {
        Workflow::ClientInitiated => None,
        Workflow::ComponentInitiated => Some(
            InitiatorOptions::from_component(comp, cfg.tls.as_ref())
                .with_context(|| format!("{}: [component]", path.display()))?,
        ),
    };
    let listens = initiated.is_none() || cfg.ini().get("component", "listen-port")?.is_some();
    // [client] workflow = component-initiated beside a client-initiated [component]: a
    // supervisor, as the reference's mpsup
    let listener = match &cfg.client {
        Some(c) if c.workflow == Workflow::ComponentInitiated => {
            if initiated.is_some() {
                anyhow::bail!(
                    "{}: [client] workflow = component-initiated (a supervisor) needs \
                     [component] workflow = client-initiated, to serve its clients",
                    path.display()
                );
            }
            let l = ListenerOptions::from_client(c);
            if l.access.is_none() {
                warnings.push(format!(
                    "{}: [client] component_roles is not set: any peer with a certificate of \
                     the CA may register capabilities here and receive the specifications \
                     clients send to them",
                    path.display()
                ));
            }
            Some((l, c.listen_port))
        }
        _ => None,
    };
    let supervisor_port = listener
        .as_ref()
        .map(|(_, port)| *port)
        .filter(|p| *p != comp.listen_port || *p == 0);
    // every address of both families, as the reference (IPv4 alone on a host without IPv6)
    let addr = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, comp.listen_port));
    let mut opts = ComponentOptions::new(addr, tls.clone());
    opts.listener = listener.map(|(l, _)| l);
    opts.cap_link = comp.listen_cap_link.clone();
    opts.registries = Arc::new(regs);
    opts.registries_served = served;
    opts.metrics = metrics;
    // the export directory of the (first) passive module is downloadable at /export/
    opts.export_dir = cfg
        .modules
        .iter()
        .filter(|m| m.module == "passive")
        .find_map(|m| m.kwargs.iter().rev().find(|k| k.key == "export_dir"))
        .map(|k| PathBuf::from(k.value.trim()));
    Ok(Prepared {
        opts,
        initiated,
        listens,
        supervisor_port,
        sched,
        tls,
        warnings,
        notes,
        modules,
    })
}

/// What would fail only once a job runs: a capture interface that does not exist (yet), a
/// capture file that cannot be read, an export directory that cannot be written.
fn passive_module_warnings(path: &Path, m: &mplane::config::ModuleConfig) -> Vec<String> {
    use mplane_capture::source::SourceSpec;
    let mut out = Vec::new();
    let value = |key: &str| {
        m.kwargs
            .iter()
            .rev()
            .find(|k| k.key == key)
            .map(|k| k.value.trim().to_string())
    };
    let at = format!("{}: [{}]", path.display(), m.section);
    if let Some(spec) = value("source").and_then(|s| s.parse::<SourceSpec>().ok()) {
        let ifaces = match &spec {
            SourceSpec::PcapLive(i) => i.clone(),
            SourceSpec::Xdp { iface, .. } => vec![iface.clone()],
            SourceSpec::PcapFile(f) => {
                if let Err(e) = std::fs::File::open(f) {
                    out.push(format!("{at} source: cannot read {}: {e}", f.display()));
                }
                Vec::new()
            }
        };
        for i in ifaces {
            if !Path::new("/sys/class/net").join(&i).exists() {
                out.push(format!(
                    "{at} source: no interface {i} on this host (capture opens with the first \
                     job)"
                ));
            }
        }
    }
    if let Some(dir) = value("export_dir").map(PathBuf::from) {
        // the nearest directory that exists must take a file: the rest is created on use
        let mut probe = dir.as_path();
        while !probe.exists() {
            match probe.parent() {
                Some(p) if !p.as_os_str().is_empty() => probe = p,
                _ => break,
            }
        }
        let writable = probe.is_dir()
            && tempfile::Builder::new()
                .prefix(".mpcom-check")
                .tempfile_in(probe)
                .is_ok();
        if !writable {
            out.push(format!(
                "{at} export_dir: {} cannot be written (exports would fail)",
                dir.display()
            ));
        }
    }
    out
}

/// What would fail only once a job runs: an `ip4addr`/`ip6addr` that is not an address of
/// this host, and (`icmp`) no ICMP socket for this process. Nothing is sent.
fn active_module_warnings(
    path: &Path,
    m: &mplane::config::ModuleConfig,
    icmp: bool,
) -> Vec<String> {
    use mplane_probe::active::ping::{PingError, Pinger};
    let at = format!("{}: [{}]", path.display(), m.section);
    let mut out = Vec::new();
    for kw in m
        .kwargs
        .iter()
        .filter(|k| k.key == "ip4addr" || k.key == "ip6addr")
    {
        let Ok(addr) = kw.value.trim().parse::<std::net::IpAddr>() else {
            continue;
        };
        if let Err(e) = std::net::UdpSocket::bind((addr, 0)) {
            out.push(format!(
                "{at} {}: {addr} is not an address of this host ({e}): every job would fail",
                kw.key
            ));
            continue;
        }
        if icmp && let Err(e @ PingError::Socket(_)) = Pinger::new(addr, addr) {
            out.push(format!("{at} {}: {e}", kw.key));
        }
    }
    out
}

/// Runs the component until SIGTERM or SIGINT.
pub fn run(path: &Path) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let Prepared {
        opts,
        initiated,
        listens,
        supervisor_port,
        sched,
        tls,
        warnings,
        notes,
        ..
    } = prepare(path)?;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    for n in &notes {
        tracing::info!("{n}");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let result = rt.block_on(async move {
        let component = if listens {
            let mut component = Component::bind(opts, sched).await?;
            let bound = component.local_addr()?;
            tracing::info!(
                "listening on {bound} ({})",
                if tls.is_some() { "https" } else { "http" }
            );
            // the port actually bound, for scripts using listen-port = 0
            println!("listening {bound}");
            if let Some(port) = supervisor_port {
                let addr = component
                    .listen_also(SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)))
                    .await?;
                tracing::info!("components register on {addr}");
            }
            component
        } else {
            Component::without_listener(opts, sched)
        };
        let cancel = tokio_util::sync::CancellationToken::new();
        let reload = initiated.as_ref().map(|i| i.reload.clone());
        let signals = tokio::spawn(signals(cancel.clone(), tls, reload));
        match initiated {
            Some(init) => {
                tracing::info!(
                    "component-initiated: registering with {}",
                    init.listener.authority()
                );
                // (stdout may be closed by whoever read the first line: no panic then)
                {
                    use std::io::Write as _;
                    let _ = writeln!(
                        std::io::stdout(),
                        "initiating {}",
                        init.listener.authority()
                    );
                }
                component.serve_initiated(init, cancel.clone()).await?
            }
            None => component.serve(cancel.clone()).await?,
        }
        cancel.cancel();
        let _ = signals.await;
        tracing::info!("stopped");
        Ok(())
    });
    // do not wait forever for a service thread that ignores its interrupt
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    result
}

/// Reads and builds everything `run` would (configuration, registries, TLS files,
/// services), prints what it found, and returns without listening or capturing: an error
/// for what would stop the component, the warnings otherwise (`strict`: warnings are errors
/// too).
pub fn check(path: &Path, strict: bool) -> Result<()> {
    let p = prepare(path)?;
    let mut out = String::new();
    let security = match &p.tls {
        Some(_) => "https, client certificates required",
        None => "plain http, no authentication",
    };
    if let Some(init) = &p.initiated {
        let _ = writeln!(
            out,
            "{}: component-initiated: registers with {} ({}; paths {}, {}, {})",
            path.display(),
            init.listener.authority(),
            if p.tls.is_some() {
                "https"
            } else {
                "plain http"
            },
            init.registration_path,
            init.specification_path,
            init.result_path
        );
    }
    if p.listens {
        let _ = writeln!(
            out,
            "{}: listens on {} ({security})",
            path.display(),
            p.opts.addr
        );
    }
    if let Some(l) = &p.opts.listener {
        let _ = writeln!(
            out,
            "  supervisor: components register on port {} (paths {}, {}, {}; results to {})",
            p.supervisor_port
                .map_or_else(|| p.opts.addr.port().to_string(), |x| x.to_string()),
            l.registration_path,
            l.specification_path,
            l.result_path,
            l.spec_link
        );
    }
    for (section, kind, labels) in &p.modules {
        let _ = writeln!(
            out,
            "  [{section}] module = {kind}: {} capabilities: {}",
            labels.len(),
            labels.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "  /metrics: {}",
        match &p.opts.metrics.access {
            None => "not served (no [component] metrics_roles)".to_string(),
            Some(RoleAccess::Anyone) => "every accepted peer".to_string(),
            Some(RoleAccess::Roles(r)) =>
                format!("roles {}", r.iter().cloned().collect::<Vec<_>>().join(", ")),
        }
    );
    if let Some(dir) = &p.opts.export_dir {
        let _ = writeln!(out, "  /export/: {}", dir.display());
    }
    for n in &p.notes {
        let _ = writeln!(out, "  note: {n}");
    }
    for w in &p.warnings {
        let _ = writeln!(out, "  warning: {w}");
    }
    print!("{out}");
    if strict && !p.warnings.is_empty() {
        anyhow::bail!(
            "{}: {} warning(s) (--strict)",
            path.display(),
            p.warnings.len()
        );
    }
    Ok(())
}

/// Stops on SIGTERM and SIGINT; on SIGHUP reads the `[TLS]` files again, for the server
/// (`tls`) and for the connections to the listener of the component-initiated workflow
/// (`initiator`).
async fn signals(
    cancel: tokio_util::sync::CancellationToken,
    tls: Option<Arc<ReloadableServerConfig>>,
    initiator: Option<TlsReload>,
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
            _ = hup.recv() => {
                match &tls {
                    Some(t) => match t.reload() {
                        Ok(()) => tracing::info!("SIGHUP: TLS files reloaded"),
                        Err(e) => tracing::error!("SIGHUP: TLS reload failed, keeping the old files: {e}"),
                    },
                    None => tracing::info!("SIGHUP: no [TLS], nothing to reload"),
                }
                // the workflow logs what it read
                if let Some(r) = &initiator {
                    r.reload();
                }
            }
        }
    }
}
