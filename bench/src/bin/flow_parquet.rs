//! Flow records into ZSTD Parquet on one core: the probe's real records (metered from a
//! capture file first, then held in memory) through `FlowColumns::append` → `ColumnsBuilder`
//! → `Sink`, the path every flow takes in `mpcom replay` and `flows-export`, all 93 columns
//! of `FILE_COLUMNS`.
//!
//! ```text
//! cargo build --release -p mplane-bench --bin flow_parquet
//! target/release/flow_parquet /dev/shm/flows.pcap [--repeat 5] [--zstd 1] [--columns all|tstat]
//!     [--row-group ROWS] [--page-rows ROWS] [--all-nullable] [--plain] [--arrow-writer] [--compress-all]
//!     [--keep DIR] [--interleave] [--split-reals] [--no-address-dictionary]
//! ```
//!
//! Reports, per run, records/s of the build (worker side), of the write (export thread's
//! side) and of both on one thread, in CPU time of the measuring thread (the box is shared),
//! and the file's bytes per record. Medians of `--repeat` runs. `--keep DIR` writes the files
//! into DIR (each run adds its own) instead of a temporary directory. By default every batch
//! is built before the first is written (the write reads them back from memory, as an export
//! thread on another core would); `--interleave` writes each batch right after building it,
//! while it is still in this core's caches (the whole path on one thread).

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result};
use mplane_capture::pipeline::{Pipeline, PipelineConfig};
use mplane_capture::source::pcap::PcapFile;
use mplane_export::{ExportSchema, Sink, SinkConfig};
use mplane_probe::passive::columns::{ColumnContext, FILE_COLUMNS, FlowColumns};
use mplane_probe::passive::meter::{FlowMeter, MeterConfig, VecSink};
use mplane_probe::passive::record::StrRef;
use mplane_probe::services::passive::TSTAT_CORE_COLUMNS;

/// CPU time of this thread (s), independent of other load on the box.
fn thread_cpu() -> f64 {
    mplane_export::thread::thread_cpu().map_or(0.0, |d| d.as_secs_f64())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<()> {
    // as mpcom does: freed batch buffers stay in the heap instead of going back to the kernel
    mplane_probe::malloc::keep_freed_memory();
    let mut args = std::env::args().skip(1);
    let mut file = None;
    let mut repeat = 5;
    let mut zstd = 1;
    let mut cols = "all".to_string();
    // as `mpcom replay` writes: row groups of 32 Ki rows, a page per 8 Ki-record batch
    let mut rg = 32 * 1024;
    let mut page_rows = 8 * 1024;
    let mut all_nullable = false;
    let mut plain = false;
    let mut arrow_writer = false;
    let mut skip_incompressible = true;
    let mut keep: Option<std::path::PathBuf> = None;
    let mut interleave = false;
    let mut split_reals = false;
    let mut strings_only = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--repeat" => repeat = args.next().context("--repeat N")?.parse()?,
            "--zstd" => zstd = args.next().context("--zstd L")?.parse()?,
            "--columns" => cols = args.next().context("--columns all|tstat")?,
            "--row-group" => rg = args.next().context("--row-group ROWS")?.parse()?,
            "--page-rows" => page_rows = args.next().context("--page-rows ROWS")?.parse()?,
            "--all-nullable" => all_nullable = true,
            "--plain" => plain = true,
            "--arrow-writer" => arrow_writer = true,
            "--compress-all" => skip_incompressible = false,
            "--interleave" => interleave = true,
            "--split-reals" => split_reals = true,
            "--no-address-dictionary" => strings_only = true,
            "--keep" => keep = Some(args.next().context("--keep DIR")?.into()),
            f if !f.starts_with("--") => file = Some(f.to_string()),
            o => anyhow::bail!(
                "unknown option {o}; usage: flow_parquet FILE.pcap [--repeat N] [--zstd L] \
                 [--columns all|tstat] [--row-group ROWS] [--page-rows ROWS] [--all-nullable] \
                 [--plain] [--arrow-writer] [--compress-all] [--keep DIR] [--interleave] \
                 [--split-reals] [--no-address-dictionary]"
            ),
        }
    }
    let file = file
        .context("usage: flow_parquet FILE.pcap [--repeat N] [--zstd L] [--columns all|tstat]")?;
    let t = Instant::now();
    let p = Pipeline::new(PipelineConfig::default());
    let mut ws = vec![FlowMeter::new(MeterConfig::default(), VecSink::default())];
    p.run_file(PcapFile::open(file.as_ref())?, &mut ws)?;
    let recs = ws.pop().map(|w| w.into_sink().records).unwrap_or_default();
    eprintln!(
        "{} records metered in {:.2} s",
        recs.len(),
        t.elapsed().as_secs_f64()
    );
    let elements: Vec<String> = match cols.as_str() {
        "tstat" => TSTAT_CORE_COLUMNS.iter().map(|s| s.to_string()).collect(),
        _ => FILE_COLUMNS.iter().map(|s| s.to_string()).collect(),
    };
    let reg = mplane_probe::registry::probe_registry()?;
    let schema = ExportSchema::from_registry(&reg, &elements)?;
    let schema = Arc::new(if all_nullable {
        schema
    } else {
        schema.with_required(FlowColumns::is_required)
    });
    let fc = FlowColumns::new(&elements)?;
    let ctx = ColumnContext {
        interface: "bench".into(),
        internal: ColumnContext::default_internal(),
    };
    let n = recs.len() as f64;
    let (mut build, mut write, mut both, mut per) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..repeat {
        let dir = tempfile::tempdir()?;
        let out = keep.clone().unwrap_or_else(|| dir.path().to_path_buf());
        let mut cfg = SinkConfig::new(&out, "bench");
        cfg.writer.zstd_level = zstd;
        cfg.writer.row_group_rows = rg;
        cfg.writer.data_page_rows = page_rows;
        cfg.writer.delta_integers = !plain;
        cfg.writer.column_encoder = !arrow_writer;
        cfg.writer.skip_incompressible = skip_incompressible;
        cfg.writer.split_reals = split_reals;
        if strings_only {
            cfg.writer.dictionary = mplane_export::DictionaryPolicy::StringsOnly;
        }
        cfg.time_column = Some("start".into());
        let mut sink = Sink::open(cfg, schema.clone())?;
        let mut batches = Vec::new();
        let now = SystemTime::now();
        let (mut tb, mut tw) = (0.0, 0.0);
        let mut c0 = thread_cpu();
        // as the sink does: records buffered with their names, 8 Ki per batch, built column
        // by column
        let mut buf = Vec::with_capacity(8192);
        let mut names = Vec::new();
        for (r, name) in &recs {
            let mut r = *r;
            r.app.name = StrRef::append(&mut names, name);
            buf.push(r);
            if buf.len() == 8192 {
                batches.push(fc.record_batch(&schema, &buf, &names, &ctx)?);
                buf.clear();
                names.clear();
                if interleave {
                    let c1 = thread_cpu();
                    for batch in batches.drain(..) {
                        sink.write(&batch, now)?;
                    }
                    let c2 = thread_cpu();
                    (tb, tw) = (tb + c1 - c0, tw + c2 - c1);
                    c0 = c2;
                }
            }
        }
        if !buf.is_empty() {
            batches.push(fc.record_batch(&schema, &buf, &names, &ctx)?);
        }
        let c1 = thread_cpu();
        for batch in &batches {
            sink.write(batch, now)?;
        }
        let report = sink.finish(now)?;
        let c2 = thread_cpu();
        let bytes: u64 = report.files.iter().map(|f| f.bytes).sum();
        let (tb, tw) = (tb + c1 - c0, tw + c2 - c1);
        build.push(n / tb);
        write.push(n / tw);
        both.push(n / (tb + tw));
        per.push(bytes as f64 / n);
        eprintln!(
            "run {run}: build {:.2} M rec/s, write {:.2} M rec/s, both {:.2} M rec/s, {:.1} bytes/record",
            n / tb / 1e6,
            n / tw / 1e6,
            n / (tb + tw) / 1e6,
            bytes as f64 / n
        );
    }
    println!(
        "{} records × {} columns, ZSTD({zstd}), medians of {repeat}: build {:.2} M rec/s, write {:.2} M rec/s, build+write {:.2} M rec/s, {:.1} bytes/record",
        recs.len(),
        elements.len(),
        median(&mut build) / 1e6,
        median(&mut write) / 1e6,
        median(&mut both) / 1e6,
        median(&mut per)
    );
    Ok(())
}
