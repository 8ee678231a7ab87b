//! `mpcom` — the mPlane component runtime.
//!
//! `mpcom demo` runs on an embedded default with no configuration: it builds
//! the probe's capabilities, derives a specification as a client would, checks
//! it against the capability, answers it, and prints every message exchanged
//! in the reference SDK's wire format.
//!
//! `mpcom check --config FILE` reads and builds everything that would run and reports
//! it, with warnings, without listening.
//!
//! `mpcom --config FILE` (or `mpcom run --config FILE`) runs a component
//! from the reference's INI file unchanged: `[TLS]`, `[Roles]`,
//! `[Authorizations]`, `[module_*]` (services by `module` name, see
//! `mplane_probe::services`) and `[component]` with `workflow =
//! client-initiated`. SIGTERM/SIGINT stop it gracefully, SIGHUP reloads the
//! TLS certificate, key and CA files (for the server, and in the
//! component-initiated workflow for the next request to the listener). The
//! first line on stdout is `listening <addr>` (useful with `listen-port =
//! 0`); logs go to stderr (`RUST_LOG` filters them). The probe's extension
//! registry is served at `/registry/probe`, and a `registry_preload` file at
//! `/registry/<file stem>`.

mod component;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use mplane::model::{self, Message};
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
    /// Run an embedded demonstration (no configuration, no hardware): generate a capture,
    /// meter it into Parquet, and answer a flow specification from it.
    Demo(DemoArgs),
    /// Run the component described by --config.
    Run,
    /// Read the --config file and build everything the component would run (registries,
    /// TLS files, services), print what it found and any warnings, and exit: 0 when `run`
    /// would start, 1 when not (as ExecStartPre= or before a reload).
    Check(CheckArgs),
    /// Replay a pcap/pcapng file through the flow meters into Parquet files.
    Replay(ReplayArgs),
}

#[derive(clap::Args)]
struct CheckArgs {
    /// Warnings (unknown keys, rules that match nothing, metrics nobody may read) fail too.
    #[arg(long)]
    strict: bool,
}

#[derive(clap::Args)]
struct DemoArgs {
    /// Directory for the generated capture and the Parquet files (default: a new
    /// directory under the system's temporary directory, kept afterwards).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Flows in the generated capture.
    #[arg(long, default_value_t = 2000)]
    flows: usize,
}

#[derive(clap::Args)]
struct ReplayArgs {
    /// The capture file (pcap or pcapng; gzip or zstd compressed, a pipe, or `-` for standard
    /// input, are read as streams), or the files of one capture (a rotating capture's, or one
    /// per port of a tap), read as one in the order of their packets' times.
    #[arg(required = true, num_args = 1.., value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Directory for the Parquet files (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Pipeline workers (threads). A capture file is read by all of them; a compressed file,
    /// a pipe or several files are read by one thread (and decoded by another), so on two
    /// cores one worker is the fastest for them.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Pin the workers to CPUs.
    #[arg(long)]
    pin: bool,
    /// Idle timeout, seconds.
    #[arg(long, default_value_t = 60.0)]
    idle_timeout: f64,
    /// Active timeout, seconds.
    #[arg(long, default_value_t = 1800.0)]
    active_timeout: f64,
    /// Most flows tracked at once per worker.
    #[arg(long, default_value_t = 262_144)]
    max_flows: usize,
    /// Do not extract DNS query names, types and response codes.
    #[arg(long)]
    no_dns: bool,
    /// Do not extract TLS server names (SNI).
    #[arg(long)]
    no_tls_sni: bool,
    /// Do not extract HTTP Host headers.
    #[arg(long)]
    no_http_host: bool,
    /// Do not decrypt QUIC Initial packets for their server name.
    #[arg(long)]
    no_quic_sni: bool,
    /// Write only the records of the flows this selects, in pcap-filter syntax on flows
    /// (`src` is the initiator, `dst` the responder), e.g. "tcp port 443 and net 10.0.0.0/8"
    /// (every flow is still metered).
    #[arg(long, value_name = "EXPR")]
    filter: Option<String>,
    /// Value of the `observer_interface` column (default: the file name; for several files,
    /// what their names share).
    #[arg(long)]
    interface: Option<String>,
    /// Hive-style partitions probe=NAME/date=…/hour=…/ under --out.
    #[arg(long, value_name = "NAME")]
    hive: Option<String>,
    /// File name prefix.
    #[arg(long, default_value = "flows")]
    prefix: String,
    /// ZSTD level of the files (3 is about 1 % smaller and a quarter slower).
    #[arg(long, default_value_t = 1)]
    zstd: i32,
    /// Real columns as BYTE_STREAM_SPLIT: about a sixth less CPU to write, a quarter larger
    /// files (pyarrow, DuckDB, polars and Spark read them; some older readers do not).
    #[arg(long)]
    split_reals: bool,
    /// Also send the flow records to an IPFIX collector: ipfix://HOST:PORT (UDP) or
    /// ipfix+tcp://HOST:PORT.
    #[arg(long, value_name = "URL")]
    ipfix: Option<String>,
    /// IPFIX as two uniflows per flow instead of RFC 5103 biflows.
    #[arg(long)]
    uniflow: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn main() -> ExitCode {
    mplane_probe::malloc::keep_freed_memory();
    let cli = Cli::parse();
    let r = match (cli.cmd, cli.config) {
        (Some(Cmd::Demo(args)), _) => demo(&args),
        (Some(Cmd::Replay(args)), _) => replay(&args),
        (Some(Cmd::Run) | None, Some(config)) => component::run(&config),
        (Some(Cmd::Check(args)), Some(config)) => component::check(&config, args.strict),
        (Some(Cmd::Check(_)), None) => Err(anyhow::anyhow!(
            "no configuration: use `mpcom check --config FILE`"
        )),
        (Some(Cmd::Run) | None, None) => Err(anyhow::anyhow!(
            "no configuration: use `mpcom --config FILE` (or `mpcom demo`)"
        )),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mpcom: {}", chain(&e));
            // a signal's conventional status, 128 + its number
            match e.downcast_ref::<Interrupted>() {
                Some(i) => ExitCode::from(128 + i.signal as u8),
                None => ExitCode::FAILURE,
            }
        }
    }
}

/// A replay that a signal ended before the end of its capture.
#[derive(Debug)]
struct Interrupted {
    signal: i32,
    records: u64,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = if self.signal == libc::SIGTERM {
            "SIGTERM"
        } else {
            "SIGINT"
        };
        write!(
            f,
            "interrupted by {name} (the {} records of the packets read before it were written)",
            self.records
        )
    }
}

impl std::error::Error for Interrupted {}

/// Sets `stop` on SIGINT or SIGTERM, and records which in `got`; a second one exits at once.
/// The handlers are in place when this returns.
fn stop_on_signals(
    stop: Arc<std::sync::atomic::AtomicBool>,
    got: Arc<std::sync::atomic::AtomicI32>,
) -> Result<()> {
    use std::sync::atomic::Ordering::SeqCst;
    use tokio::signal::unix::{SignalKind, signal};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let (mut int, mut term) = rt.block_on(async {
        Ok::<_, std::io::Error>((
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        ))
    })?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            rt.block_on(async move {
                loop {
                    let sig = tokio::select! {
                        _ = int.recv() => libc::SIGINT,
                        _ = term.recv() => libc::SIGTERM,
                    };
                    if stop.swap(true, SeqCst) {
                        std::process::exit(128 + sig);
                    }
                    got.store(sig, SeqCst);
                    eprintln!(
                        "\nmpcom: interrupted: writing the records of what was read (again to quit at once)"
                    );
                }
            })
        })?;
    Ok(())
}

/// The error and its causes on one line, each cause once: the library errors already quote
/// their source in their own message (`cannot open F: No such file ...`), so a cause whose
/// text the line holds already is not repeated.
fn chain(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line
}

/// One line per committed file: path, rows, bytes.
fn print_files(lead: &str, files: &[mplane_export::CommittedFile]) {
    for f in files {
        println!(
            "{lead}{} ({} rows, {} bytes)",
            f.path.display(),
            f.rows,
            f.bytes
        );
    }
}

fn replay(a: &ReplayArgs) -> Result<()> {
    use mplane_probe::passive::app::AppConfig;
    use mplane_probe::passive::replay::{self, Progress, ReplayConfig};
    use std::io::IsTerminal;

    let secs = |v: f64, what: &str| -> Result<u64> {
        if !(v > 0.0 && v.is_finite()) {
            anyhow::bail!("--{what}: must be a positive number of seconds");
        }
        Ok((v * 1e9) as u64)
    };
    let mut cfg = ReplayConfig::of_files(a.files.clone(), &a.out);
    let shown = match a.files.as_slice() {
        [one] => one.display().to_string(),
        many => format!(
            "{} files ({} ... {})",
            many.len(),
            many[0].display(),
            many[many.len() - 1].display()
        ),
    };
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let signal = Arc::new(std::sync::atomic::AtomicI32::new(0));
    stop_on_signals(Arc::clone(&stop), Arc::clone(&signal))?;
    cfg.stop = Some(stop);
    cfg.workers = a.workers.max(1);
    cfg.pin = a.pin;
    cfg.prefix = a.prefix.clone();
    cfg.hive = a.hive.clone();
    cfg.zstd_level = a.zstd;
    cfg.split_reals = a.split_reals;
    cfg.meter.idle_timeout_ns = secs(a.idle_timeout, "idle-timeout")?;
    cfg.meter.active_timeout_ns = secs(a.active_timeout, "active-timeout")?;
    cfg.meter.max_flows = a.max_flows.max(1);
    cfg.meter.app = AppConfig {
        dns: !a.no_dns,
        tls_sni: !a.no_tls_sni,
        http_host: !a.no_http_host,
        quic_sni: !a.no_quic_sni,
        ..AppConfig::default()
    };
    if let Some(i) = &a.interface {
        cfg.context.interface = i.clone();
    }
    if let Some(f) = &a.filter {
        cfg.filter = Some(mplane_probe::passive::filter::FlowFilter::parse(f)?);
    }
    cfg.identity = Some(format!("mpcom replay {}", env!("CARGO_PKG_VERSION")));
    if let Some(u) = &a.ipfix {
        cfg.ipfix =
            Some(mplane_probe::passive::ipfix::IpfixTarget::parse(u).map_err(anyhow::Error::msg)?);
        cfg.ipfix_biflow = !a.uniflow;
    }
    replay::check_out_dir(&a.out).map_err(anyhow::Error::msg)?;
    let bar = !a.quiet && std::io::stderr().is_terminal();
    let draw = |p: &Progress| {
        let width = 30;
        // a pipe's end is not known: the counts alone
        let bar = p.fraction.map_or_else(String::new, |f| {
            let done = ((f * width as f64).round() as usize).min(width);
            format!(
                "[{}{}] {:5.1}%  ",
                "#".repeat(done),
                "-".repeat(width - done),
                f * 100.0
            )
        });
        eprint!(
            "\r{bar}{} packets  {} flow records  {:.1} s ",
            p.packets, p.records, p.elapsed
        );
    };
    let s = replay::replay(&cfg, bar.then_some(&draw as &(dyn Fn(&Progress) + Sync)))?;
    if bar {
        eprintln!();
    }
    let c = &s.counters;
    let secs = s.elapsed.as_secs_f64();
    println!("{shown}");
    println!(
        "  packets      {} ({} bytes), {:.2} Mpkt/s over {:.2} s with {} worker(s)",
        c.packets,
        c.bytes,
        c.packets as f64 / secs.max(1e-9) / 1e6,
        secs,
        cfg.workers
    );
    if let Some((first, last)) = s.span_ns {
        println!(
            "  capture      {} ... {} ({:.1} s)",
            mplane_export::metadata::mplane_time(first as i64),
            mplane_export::metadata::mplane_time(last as i64),
            (last - first) as f64 / 1e9
        );
    }
    let filtered = match &cfg.filter {
        Some(f) => format!(
            " ({} more not selected by \"{}\")",
            s.filtered_out,
            f.text()
        ),
        None => String::new(),
    };
    println!(
        "  flows        {} flows, {} records{filtered}, {} application names",
        s.flows, s.records, s.app_names
    );
    println!(
        "  losses       {} evicted (table full), {} packets untracked, {} frames without IP, {} cut by the snaplen, {} parse errors, {} rows lost in export",
        s.evicted,
        s.untracked,
        c.non_ip,
        c.truncated,
        c.parse_errors_total(),
        s.rows_lost
    );
    println!(
        "  memory       {:.0} bytes of flow table per tracked flow; string arena {} KiB, reassembly {} KiB per worker",
        s.table_bytes_per_flow,
        s.app_bytes.0 / 1024,
        s.app_bytes.1 / 1024
    );
    if let Some(cpu) = s.export_cpu {
        let secs = cpu.as_secs_f64();
        println!(
            "  export       {secs:.2} s of CPU on the export thread ({:.2} M records/s), {:.0} % of the run",
            if secs > 0.0 {
                s.records as f64 / secs / 1e6
            } else {
                0.0
            },
            100.0 * secs / s.elapsed.as_secs_f64().max(1e-9)
        );
    }
    print_files("  wrote        ", &s.files);
    for e in &s.export_errors {
        eprintln!("mpcom: export: {e}");
    }
    if let Some(e) = &s.source_error {
        // the error of a file of several names it
        let at = match a.files.as_slice() {
            [one] => format!("{}: ", one.display()),
            _ => String::new(),
        };
        anyhow::bail!(
            "{at}{e} (the {} records of the packets before it were written)",
            s.records
        );
    }
    if s.interrupted {
        let e = Interrupted {
            signal: signal.load(std::sync::atomic::Ordering::SeqCst),
            records: s.records,
        };
        return Err(anyhow::Error::new(e).context(shown));
    }
    if !s.export_errors.is_empty() {
        anyhow::bail!("{} export error(s)", s.export_errors.len());
    }
    Ok(())
}

fn demo(a: &DemoArgs) -> Result<()> {
    use mplane_probe::passive::columns::FlowColumns;
    use mplane_probe::passive::meter::{FlowMeter, MeterConfig, VecSink};
    use mplane_probe::passive::replay::{self, ReplayConfig};
    use mplane_probe::services::passive::{FLOW_COLUMNS, PassiveModule};

    let dir = match &a.out {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("mpcom-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
    let pcap = dir.join("demo.pcap");
    let synth = mplane_probe::synth::SynthConfig {
        flows: a.flows.max(1),
        ..Default::default()
    };
    let packets = mplane_probe::synth::write_capture(
        std::fs::File::create(&pcap).with_context(|| format!("{}", pcap.display()))?,
        &synth,
    )?;
    println!(
        "# generated {} ({} flows, {packets} packets)\n",
        pcap.display(),
        synth.flows
    );

    // 1. the capture through the flow meters into Parquet, as `mpcom replay` does
    let mut cfg = ReplayConfig::new(&pcap, dir.join("flows"));
    cfg.workers = 2;
    cfg.context.interface = "demo".into();
    let s = replay::replay(&cfg, None)?;
    println!(
        "# replay: {} packets, {} flows, {} records, {} application names in {:.2} s",
        s.counters.packets,
        s.flows,
        s.records,
        s.app_names,
        s.elapsed.as_secs_f64()
    );
    print_files("#   wrote ", &s.files);
    println!(
        "#   duckdb -c \"select * from '{}/**/*.parquet' limit 10\"\n",
        dir.join("flows").display()
    );

    // 2. the mPlane exchange: the probe's flow capability, a specification derived from it
    //    as a client would, checked against the capability and answered from the same records
    let regs = mplane_probe::registry::registries()?;
    let mut pipeline = mplane_probe::passive::hub::PassiveConfig::new(
        mplane_capture::source::SourceSpec::PcapFile(pcap.clone()),
        "demo",
    );
    pipeline.workers = 1;
    let module = PassiveModule {
        pipeline,
        system_id: "demo".into(),
        inline_rows: 10_000,
        export_dir: None,
        export_url: None,
    };
    let services =
        mplane_probe::services::passive::services(module, Arc::new(regs.clone()))?.services;
    let svc = services
        .iter()
        .find(|s| s.capability().label.as_deref() == Some("flows-ip4"))
        .context("flows-ip4")?;
    let cap = svc.capability().clone();
    println!("# capability\n{}\n", Message::from(cap.clone()));
    let now = mplane::component::now();
    let mut spec = cap.specification_for();
    spec.label = Some("flows-ip4-0".into());
    spec.set_when(When::parse("now + 1m")?);
    spec.set_parameter_value("observer.interface", &Value::String("demo".into()))?;
    spec.set_parameter_value("flow.filter", &Value::String("tcp".into()))?;
    spec.token = Some(spec.client_token(now));
    let text = Message::from(spec).unparse();
    println!("# specification\n{text}\n");
    let parsed = model::parse(&text, &regs)?;
    let spec = parsed.as_statement().context("not a statement")?;
    model::check_fulfills(spec, &cap, now)?;
    // the answer: the first TCP flows of the capture (a live probe would measure the window)
    let p = mplane_capture::pipeline::Pipeline::new(Default::default());
    let mut ws = vec![FlowMeter::new(MeterConfig::default(), VecSink::default())];
    p.run_file(
        mplane_capture::source::pcap::PcapFile::open(&pcap)?,
        &mut ws,
    )?;
    let mut recs = ws.pop().map(|w| w.into_sink().records).unwrap_or_default();
    recs.retain(|(r, _)| r.key.ip_version == 4 && r.key.protocol == 6);
    recs.sort_by_key(|(r, _)| r.first_ns());
    recs.truncate(3);
    let cols = FlowColumns::new(FLOW_COLUMNS)?;
    let ctx = mplane_probe::passive::columns::ColumnContext {
        interface: "demo".into(),
        internal: mplane_probe::passive::columns::ColumnContext::default_internal(),
    };
    let mut res = spec.result_for();
    if let (Some((f, _)), Some((l, _))) = (recs.first(), recs.last()) {
        let us = |ns: u64| Timestamp::from_micros((ns / 1000) as i64);
        res.set_when(When::range(
            mplane::value::TimeValue::At(us(f.first_ns())),
            mplane::value::TimeValue::At(us(l.last_ns().max(f.first_ns()))),
        ));
    }
    for (r, name) in &recs {
        res.push_row(&cols.row(r, name, &ctx))?;
    }
    println!("# result (first three TCP flows)\n{}", Message::from(res));
    Ok(())
}
