//! Offline replay: a pcap/pcapng file through the capture pipeline and the flow meters into
//! Parquet files (`mpcom replay FILE --out DIR`).
//!
//! The same pipeline and meters as live capture, with packet time as the only clock, so a
//! replay gives the records the live probe gave, for any number of workers. Files are written
//! through the export sink (atomic commit, ZSTD, footer metadata with the drop counters of
//! the span each file covers) and named after the data's time. A file that turns out to be
//! truncated or corrupt still yields the records of everything before the damage; the
//! summary then carries the error, and `mpcom` exits non-zero.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use mplane_capture::counters::{Counters, CountersSnapshot};
use mplane_capture::pipeline::{Pipeline, PipelineConfig, PipelineError};
use mplane_capture::source::SourceError;
use mplane_capture::source::fileset::FileSet;
use mplane_capture::source::pcap::PcapFile;
use mplane_export::{
    CommittedFile, ExportError, ExportSchema, ExportThread, FileMetadata, Partitioning, SinkConfig,
};

use super::columns::{ColumnContext, FILE_COLUMNS, FlowColumns};
use super::export::{BATCH_ROWS, Delivery, ParquetRecords, ParquetRecordsError};
use super::filter::{Filtered, FlowFilter};
use super::ipfix::{Either, IpfixRecords, IpfixTarget, Losses, NoSink, Tee};
use super::meter::{FlowMeter, MeterConfig, MeterCounters};
use crate::registry;

/// What to replay and how.
#[derive(Debug, Clone)]
pub struct ReplayConfig {
    /// The capture file, or the files of one capture (a rotating capture's files, or one per
    /// port of a tap), read as one in the order of their packets' times
    /// ([`mplane_capture::source::fileset`]).
    pub inputs: Vec<PathBuf>,
    /// Output directory (created if missing).
    pub out: PathBuf,
    /// File name prefix.
    pub prefix: String,
    /// Pipeline workers.
    pub workers: usize,
    /// Pin workers to CPUs.
    pub pin: bool,
    /// Flow meter settings (per worker).
    pub meter: MeterConfig,
    /// `observer.interface` value and internal networks.
    pub context: ColumnContext,
    /// Hive-style partitions `probe=…/date=…/hour=…/` under this probe name.
    pub hive: Option<String>,
    /// Identity written into the files' footer.
    pub identity: Option<String>,
    /// ZSTD level (default 1; 3 is about 1 % smaller and a quarter slower).
    pub zstd_level: i32,
    /// Real columns (RTTs, times to first payload) as `BYTE_STREAM_SPLIT`: ~18 % less
    /// export CPU for ~25 % larger files
    /// ([`WriterOptions::split_reals`](mplane_export::WriterOptions::split_reals)).
    pub split_reals: bool,
    /// Also send the records to this IPFIX collector.
    pub ipfix: Option<IpfixTarget>,
    /// IPFIX as RFC 5103 biflows (else two uniflows per flow).
    pub ipfix_biflow: bool,
    /// Only the records of the flows this selects are written (and sent); every flow is
    /// still metered.
    pub filter: Option<FlowFilter>,
    /// Set from any thread (e.g. on SIGINT) to stop reading: the flows open then end with
    /// reason `shutdown`, their records are written, and the summary says it was
    /// [`ReplaySummary::interrupted`].
    pub stop: Option<Arc<AtomicBool>>,
}

impl ReplayConfig {
    /// Defaults for `input` → `out` (`observer.interface` is the input's file name, `stdin`
    /// for `-`).
    pub fn new(input: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        Self::of_files(vec![input.into()], out)
    }

    /// Defaults for the files of one capture → `out` (`observer.interface` is what their
    /// names share, e.g. `trace.pcap` for `trace.pcap`, `trace.pcap1`, ...).
    pub fn of_files(inputs: Vec<PathBuf>, out: impl Into<PathBuf>) -> Self {
        let interface = interface_of(&inputs);
        ReplayConfig {
            inputs,
            out: out.into(),
            prefix: "flows".into(),
            workers: 1,
            pin: false,
            meter: MeterConfig {
                interface_stats: false,
                ..MeterConfig::default()
            },
            context: ColumnContext {
                interface,
                internal: ColumnContext::default_internal(),
            },
            hive: None,
            identity: None,
            zstd_level: 1,
            split_reals: false,
            ipfix: None,
            ipfix_biflow: true,
            filter: None,
            stop: None,
        }
    }
}

/// The `observer.interface` of a replay of `inputs`: the file name (`stdin` for `-`), or what
/// the names of several files start with, without a trailing separator or part of a number
/// (`tap-a.pcap` and `tap-b.pcap` give `tap`, `x-08.pcap` and `x-10.pcap` give `x`); the
/// first file's name if they share nothing.
fn interface_of(inputs: &[PathBuf]) -> String {
    let names: Vec<String> = inputs
        .iter()
        .map(|p| {
            if p == Path::new("-") {
                "stdin".to_string()
            } else {
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            }
        })
        .collect();
    let Some((first, rest)) = names.split_first() else {
        return String::new();
    };
    let mut common = first.as_str();
    for n in rest {
        let same = common
            .char_indices()
            .zip(n.chars())
            .find(|((_, a), b)| a != b)
            .map_or(common.len().min(n.len()), |((i, _), _)| i);
        common = &common[..same];
    }
    // not inside a number: `x-00`, `x-01` share `x-`, not `x-0`
    let digit = |c: char| c.is_ascii_digit();
    if common.ends_with(digit) && names.iter().any(|n| n[common.len()..].starts_with(digit)) {
        common = common.trim_end_matches(digit);
    }
    let common = common.trim_end_matches(['-', '_', '.', ' ']);
    if common.is_empty() {
        first.clone()
    } else {
        common.to_string()
    }
}

/// Progress of a running replay.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Progress {
    /// Fraction of the file read, 0..=1; `None` for a pipe (its end is not known).
    pub fraction: Option<f64>,
    /// Packets so far.
    pub packets: u64,
    /// Flow records so far.
    pub records: u64,
    /// Seconds since the start.
    pub elapsed: f64,
}

/// What a replay did.
#[derive(Debug)]
pub struct ReplaySummary {
    /// Pipeline counters at the end.
    pub counters: CountersSnapshot,
    /// Flows created.
    pub flows: u64,
    /// Records written (rows).
    pub records: u64,
    /// Records [`ReplayConfig::filter`] did not select (not written).
    pub filtered_out: u64,
    /// Flows evicted from a full table.
    pub evicted: u64,
    /// Packets not tracked (table full).
    pub untracked: u64,
    /// Application names extracted.
    pub app_names: u64,
    /// Earliest and latest packet time in a record, ns.
    pub span_ns: Option<(u64, u64)>,
    /// Files committed.
    pub files: Vec<CommittedFile>,
    /// Rows the export lost (queue, disk).
    pub rows_lost: u64,
    /// Export errors (disk full, unwritable directory, IPFIX send failures).
    pub export_errors: Vec<String>,
    /// IPFIX data records sent.
    pub ipfix_records: u64,
    /// The capture file's damage, if any: everything before it was written.
    pub source_error: Option<SourceError>,
    /// [`ReplayConfig::stop`] ended the replay before the end of the capture.
    pub interrupted: bool,
    /// Wall time.
    pub elapsed: Duration,
    /// CPU time of the export thread (Parquet encoding and writing), when known: with
    /// `elapsed`, how much headroom the export left.
    pub export_cpu: Option<Duration>,
    /// Flow table bytes per tracked flow at capacity.
    pub table_bytes_per_flow: f64,
    /// String arena and reassembly bytes per worker.
    pub app_bytes: (usize, usize),
}

/// Errors that stop a replay before it starts (or lose its output).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The capture file cannot be opened or is not a capture file.
    #[error("{}", input_text(path, source))]
    Input {
        /// The file.
        path: PathBuf,
        /// Why.
        source: SourceError,
    },
    /// The output cannot be set up.
    #[error("{0}")]
    Export(#[from] ExportError),
    /// The registry does not load (a build defect).
    #[error("probe registry: {0}")]
    Registry(#[from] mplane::registry::RegistryError),
    /// The column set is not valid (a build defect).
    #[error(transparent)]
    Columns(#[from] ParquetRecordsError),
    /// The pipeline could not run.
    #[error("{0}")]
    Pipeline(String),
    /// The IPFIX collector cannot be reached.
    #[error("IPFIX: {0}")]
    Ipfix(String),
}

/// `PATH: what`, without the path twice when the source error names it already.
fn input_text(path: &std::path::Path, source: &SourceError) -> String {
    match source {
        SourceError::Open { .. } => source.to_string(),
        _ => format!("{}: {source}", path.display()),
    }
}

/// Rows per Parquet row group of replay files. The writer holds an open row group as
/// compressed pages (~100 bytes per flow record) and text dictionaries, so a row group of
/// 32 Ki rows costs what the one Arrow batch it replaces did; larger ones repeat fewer
/// dictionaries and chunk headers (64 Ki: 3 % fewer instructions, 1.6 % smaller files) but
/// take the replay of the reference workload past 100 MiB (bench/README.md, Export).
const REPLAY_ROW_GROUP: usize = 32 * 1024;
/// Arrow batches queued for the export thread (each ~8 Ki rows).
const REPLAY_QUEUE: usize = 2;

/// Runs a replay; `progress` is called about five times a second from a monitor thread.
pub fn replay(
    cfg: &ReplayConfig,
    progress: Option<&(dyn Fn(&Progress) + Sync)>,
) -> Result<ReplaySummary, ReplayError> {
    let started = Instant::now();
    let input = Input::open(&cfg.inputs)?;
    let extent = input.extent();
    let reg = registry::probe_registry()?;
    let schema = Arc::new(
        ExportSchema::from_registry(&reg, FILE_COLUMNS)?.with_required(FlowColumns::is_required),
    );
    let workers = cfg.workers.max(1);
    let mut pipeline = Pipeline::new(PipelineConfig {
        workers,
        pin: cfg.pin,
        ..PipelineConfig::default()
    });
    if let Some(stop) = &cfg.stop {
        pipeline = pipeline.with_stop(Arc::clone(stop));
    }

    let meters: Vec<Arc<MeterCounters>> = (0..workers)
        .map(|_| Arc::new(MeterCounters::default()))
        .collect();
    let mut sink_cfg = SinkConfig::new(&cfg.out, cfg.prefix.clone());
    sink_cfg.time_column = Some("start".into());
    sink_cfg.writer.zstd_level = cfg.zstd_level;
    sink_cfg.writer.split_reals = cfg.split_reals;
    sink_cfg.writer.row_group_rows = REPLAY_ROW_GROUP;
    // a page per batch: each batch is encoded as it arrives, and none is held back
    sink_cfg.writer.data_page_rows = BATCH_ROWS;
    sink_cfg.metadata = FileMetadata {
        identity: cfg.identity.clone(),
        extra: std::iter::once(("mplane.source".into(), source_text(&cfg.inputs)))
            .chain(
                cfg.filter
                    .as_ref()
                    .map(|f| ("mplane.filter".into(), f.text().to_string())),
            )
            .collect(),
        ..FileMetadata::default()
    };
    if let Some(p) = &cfg.hive {
        sink_cfg.partitioning = Partitioning::Hive { probe: p.clone() };
    }
    sink_cfg.drop_counters = Some(drop_counters(pipeline.counters().clone(), meters.clone()));
    let export = ExportThread::spawn(sink_cfg, schema.clone(), REPLAY_QUEUE)?;
    let ctx = Arc::new(cfg.context.clone());
    let mut ws = Vec::with_capacity(workers);
    for (i, shared) in meters.iter().enumerate() {
        let parquet = ParquetRecords::new(
            schema.clone(),
            ctx.clone(),
            export.handle(),
            Delivery::Blocking,
        )?;
        let ipfix = match &cfg.ipfix {
            // one observation domain per worker: each keeps its own sequence numbers
            Some(t) => {
                let (pc, mc) = (pipeline.counters().clone(), shared.clone());
                let losses: Losses = Arc::new(move || {
                    let s = pc.snapshot();
                    (
                        s.kernel_drops + s.source.interface_drops + s.ring_full_drops,
                        mc.untracked.load(Relaxed),
                    )
                });
                Either::A(
                    IpfixRecords::connect(t, 1 + i as u32, cfg.ipfix_biflow, Some(losses))
                        .map_err(|e| ReplayError::Ipfix(format!("{}: {e}", t.url())))?,
                )
            }
            None => Either::B(NoSink),
        };
        let filter = cfg.filter.clone().unwrap_or_else(FlowFilter::all);
        ws.push(
            FlowMeter::new(
                cfg.meter.clone(),
                Filtered::new(filter, Tee(parquet, ipfix)),
            )
            .with_counters(shared.clone()),
        );
    }
    let table_bytes_per_flow = ws[0].table_bytes_per_flow();
    let app_bytes = ws[0].app_bytes();

    let done = AtomicBool::new(false);
    let counters = pipeline.counters().clone();
    let result = std::thread::scope(|s| {
        if let Some(cb) = progress {
            let (done, counters, meters, extent) = (&done, &counters, &meters, &extent);
            s.spawn(move || {
                while !done.load(Relaxed) {
                    std::thread::sleep(Duration::from_millis(200));
                    cb(&progress_of(counters, meters, extent, started));
                }
            });
        }
        let r = match input {
            Input::File(file) => pipeline.run_file(file, &mut ws),
            Input::Set(set) => pipeline.run_source(set, &mut ws),
        };
        done.store(true, Relaxed);
        r
    });
    let source_error = match result {
        Ok(_) => None,
        Err(PipelineError::Source(e)) => Some(e),
        Err(e) => return Err(ReplayError::Pipeline(e.to_string())),
    };
    let (mut records, mut first, mut last) = (0u64, u64::MAX, 0u64);
    let (mut ipfix_records, mut ipfix_errors) = (0u64, Vec::new());
    let mut filtered_out = 0;
    for w in &ws {
        filtered_out += w.sink().rejected;
        let Tee(s, x) = &w.sink().inner;
        records += s.records;
        first = first.min(s.first_ns);
        last = last.max(s.last_ns);
        if let Either::A(x) = x {
            ipfix_records += x.records;
            if let Some(e) = &x.last_error {
                ipfix_errors.push(format!(
                    "{}: {e} ({} flows not sent)",
                    x.target().url(),
                    x.not_sent
                ));
            }
        }
    }
    drop(ws);
    let report = export.finish()?;
    if let Some(cb) = progress {
        cb(&progress_of(&counters, &meters, &extent, started));
    }
    let sum = |f: fn(&MeterCounters) -> u64| meters.iter().map(|m| f(m)).sum::<u64>();
    Ok(ReplaySummary {
        counters: counters.snapshot(),
        flows: sum(|m| m.flows.load(Relaxed)),
        records,
        filtered_out,
        evicted: sum(|m| m.evicted.load(Relaxed)),
        untracked: sum(|m| m.untracked.load(Relaxed)),
        app_names: sum(|m| m.app_names.load(Relaxed)),
        span_ns: (first <= last).then_some((first, last)),
        rows_lost: report.stats.rows_dropped + report.stats.rows_lost,
        export_errors: report
            .errors
            .iter()
            .map(|e| e.to_string())
            .chain(ipfix_errors)
            .collect(),
        ipfix_records,
        files: report.files,
        source_error,
        interrupted: cfg.stop.as_ref().is_some_and(|s| s.load(Relaxed)),
        elapsed: started.elapsed(),
        export_cpu: report.cpu,
        table_bytes_per_flow,
        app_bytes,
    })
}

/// What a replay reads: one capture file (mapped, zero copy), or a set of them.
enum Input {
    File(PcapFile),
    Set(FileSet),
}

impl Input {
    /// Opens `inputs` (an error names the file).
    fn open(inputs: &[PathBuf]) -> Result<Input, ReplayError> {
        let input = match inputs {
            [one] => {
                let mut file = PcapFile::open(one).map_err(|source| ReplayError::Input {
                    path: one.clone(),
                    source,
                })?;
                // keep the mapped part of the file small: the meters need only the current
                // batches
                file.set_window(super::FILE_WINDOW);
                Input::File(file)
            }
            _ => {
                let mut set = FileSet::open(inputs).map_err(|e| match e {
                    SourceError::InFile { path, source } => ReplayError::Input {
                        path,
                        source: *source,
                    },
                    SourceError::Open { ref path, .. } => ReplayError::Input {
                        path: path.clone(),
                        source: e,
                    },
                    e => ReplayError::Pipeline(e.to_string()),
                })?;
                set.set_window(super::FILE_WINDOW);
                Input::Set(set)
            }
        };
        Ok(input)
    }

    fn extent(&self) -> Extent {
        match self {
            Input::File(file) => match (file.stream_progress(), file.mapping()) {
                (Some((read, size)), _) => Extent::Stream { read, size },
                (None, m) => Extent::Mapped(m.map_or(0, |m| m.bytes().len() as u64)),
            },
            Input::Set(set) => {
                let (read, size) = set.progress();
                Extent::Stream { read, size }
            }
        }
    }
}

/// The `mplane.source` footer entry of a replay of `inputs`: `pcap:FILE[,FILE...]`, the
/// first and last of a long list with their count.
fn source_text(inputs: &[PathBuf]) -> String {
    const LISTED: usize = 16;
    let list = |ps: &[PathBuf]| {
        ps.iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    if inputs.len() <= LISTED {
        format!("pcap:{}", list(inputs))
    } else {
        format!(
            "pcap:{},...,{} ({} files)",
            inputs[0].display(),
            inputs[inputs.len() - 1].display(),
            inputs.len()
        )
    }
}

/// What a replay's progress is measured against.
enum Extent {
    /// A mapped capture of this many bytes, against the bytes of the packets read.
    Mapped(u64),
    /// A capture read as a stream, against the bytes taken from its file (compressed bytes,
    /// for a compressed capture).
    Stream {
        /// Taken so far (updated by the reader).
        read: Arc<AtomicU64>,
        /// The file's size; 0 for a pipe, whose end is not known.
        size: u64,
    },
}

fn progress_of(
    c: &Counters,
    meters: &[Arc<MeterCounters>],
    extent: &Extent,
    started: Instant,
) -> Progress {
    let s = c.snapshot();
    let (done, of) = match extent {
        // record headers are 16 bytes (pcap) or about 32 (pcapng EPB); the bar only needs a
        // monotone estimate
        Extent::Mapped(len) => (s.bytes + 16 * s.packets, *len),
        Extent::Stream { read, size } => (read.load(Relaxed), *size),
    };
    Progress {
        fraction: match extent {
            Extent::Stream { size: 0, .. } => None,
            _ if of == 0 => Some(1.0),
            _ => Some((done as f64 / of as f64).min(1.0)),
        },
        packets: s.packets,
        records: meters.iter().map(|m| m.records.load(Relaxed)).sum(),
        elapsed: started.elapsed().as_secs_f64(),
    }
}

/// The drop counters a file's footer carries: pipeline and flow-table losses.
pub fn drop_counters(
    pipeline: Arc<Counters>,
    meters: Vec<Arc<MeterCounters>>,
) -> mplane_export::sink::DropCounters {
    Arc::new(move || {
        let s = pipeline.snapshot();
        let mut m = std::collections::BTreeMap::new();
        m.insert("capture.drops.kernel".into(), s.kernel_drops);
        m.insert("capture.drops.ring".into(), s.ring_full_drops);
        m.insert("capture.truncated".into(), s.truncated);
        m.insert("capture.parse_errors".into(), s.parse_errors_total());
        let sum = |f: fn(&MeterCounters) -> u64| meters.iter().map(|x| f(x)).sum::<u64>();
        m.insert("flows.evicted".into(), sum(|x| x.evicted.load(Relaxed)));
        m.insert("flows.untracked".into(), sum(|x| x.untracked.load(Relaxed)));
        m
    })
}

/// `true` when `path` exists and is a directory we could write into (for early errors).
pub fn check_out_dir(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(m) if !m.is_dir() => Err(format!("{}: not a directory", path.display())),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interface_is_named_after_the_input() {
        let name = |input: &str| ReplayConfig::new(input, "out").context.interface;
        assert_eq!(name("/captures/tap1-0001.pcap.gz"), "tap1-0001.pcap.gz");
        assert_eq!(name("-"), "stdin");
        let names = |inputs: &[&str]| {
            ReplayConfig::of_files(inputs.iter().map(PathBuf::from).collect(), "out")
                .context
                .interface
        };
        assert_eq!(
            names(&["/c/trace.pcap", "/c/trace.pcap1", "/c/trace.pcap10"]),
            "trace.pcap"
        );
        assert_eq!(names(&["tap-a.pcap", "tap-b.pcap"]), "tap");
        assert_eq!(names(&["x-00.pcap.gz", "x-01.pcap.gz"]), "x");
        assert_eq!(names(&["x-08.pcap", "x-10.pcap"]), "x");
        assert_eq!(names(&["tap1-a.pcap", "tap1-b.pcap"]), "tap1");
        assert_eq!(names(&["east.pcap", "west.pcap"]), "east.pcap");
        assert_eq!(names(&["é1.pcap", "é2.pcap"]), "é");
    }

    #[test]
    fn the_footer_names_the_inputs() {
        let ps = |n: usize| {
            (0..n)
                .map(|i| PathBuf::from(format!("t{i}")))
                .collect::<Vec<_>>()
        };
        assert_eq!(source_text(&ps(1)), "pcap:t0");
        assert_eq!(source_text(&ps(3)), "pcap:t0,t1,t2");
        assert_eq!(source_text(&ps(40)), "pcap:t0,...,t39 (40 files)");
    }
}
