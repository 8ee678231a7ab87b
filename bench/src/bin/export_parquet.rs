//! Flow records → ZSTD Parquet on one core: records/s and bytes/record.
//!
//! Generates flow-record-like rows (50 columns: 4 timestamps, 4 addresses,
//! 33 counters, 4 strings, 3 reals, 2 booleans), then, per repetition,
//! builds RecordBatches with `ColumnsBuilder` and writes them through a
//! `Sink` on the calling thread. Prints one line per run and the medians.
//!
//! ```text
//! cargo run --release -p mplane-bench --bin export_parquet -- \
//!     [--records N] [--batch N] [--repeat N] [--zstd L] [--dict text|all|strings|none] \
//!     [--row-group N] [--stats none|time|nontext|chunk|page] [--write-batch N] [--page-rows N] [--plain]
//!     [--arrow-writer] [--out DIR]
//! ```

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use mplane::registry::Primitive;
use mplane_export::{
    ColumnsBuilder, DictionaryPolicy, ExportError, ExportSchema, Sink, SinkConfig, Statistics,
};

const N_COUNTERS: usize = 33;

/// A flow record as a probe might keep it.
struct Flow {
    times: [i64; 4],
    addrs: [IpAddr; 4],
    counters: [u64; N_COUNTERS],
    iface: &'static str,
    app: &'static str,
    reason: &'static str,
    label: String,
    reals: [f64; 3],
    bidir: bool,
    complete: bool,
}

const COUNTER_NAMES: [&str; N_COUNTERS] = [
    "source.port",
    "destination.port",
    "protocol.ip",
    "vlan.id",
    "tos",
    "ttl.min",
    "ttl.max",
    "packets.ip.forward",
    "packets.ip.backward",
    "octets.ip.forward",
    "octets.ip.backward",
    "packets.tcp.syn",
    "packets.tcp.fin",
    "packets.tcp.rst",
    "packets.tcp.ack",
    "packets.tcp.psh",
    "packets.retransmitted.forward",
    "packets.retransmitted.backward",
    "packets.outoforder",
    "packets.duplicate",
    "packets.lost",
    "octets.payload.forward",
    "octets.payload.backward",
    "window.min",
    "window.max",
    "mss",
    "iat.us.min",
    "iat.us.max",
    "iat.us.mean",
    "rtt.us.syn",
    "fragments",
    "flow.id",
    "worker.id",
];

fn schema() -> Result<Arc<ExportSchema>, ExportError> {
    let mut cols: Vec<(String, Primitive)> = Vec::new();
    for t in ["start", "end", "time.first.payload", "time.last.payload"] {
        cols.push((t.into(), Primitive::Time));
    }
    for a in [
        "source.ip",
        "destination.ip",
        "nat.source.ip",
        "nat.destination.ip",
    ] {
        cols.push((a.into(), Primitive::Address));
    }
    for c in COUNTER_NAMES {
        cols.push((c.into(), Primitive::Natural));
    }
    for s in [
        "source.interface",
        "application",
        "flow.end.reason",
        "label",
    ] {
        cols.push((s.into(), Primitive::String));
    }
    for r in ["rtt.ms.mean", "jitter.ms", "loss.ratio"] {
        cols.push((r.into(), Primitive::Real));
    }
    for b in ["flows.bidirectional", "flow.complete"] {
        cols.push((b.into(), Primitive::Boolean));
    }
    Ok(Arc::new(ExportSchema::from_elements(
        "https://probe.invalid/registry/flows",
        cols,
    )?))
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Roughly log-uniform in [0, 2^bits): counters are mostly small.
    fn heavy(&mut self, bits: u32) -> u64 {
        let b = self.below(u64::from(bits) + 1) as u32;
        if b == 0 { 0 } else { self.next() >> (64 - b) }
    }
}

fn generate(n: usize) -> Vec<Flow> {
    const IFACES: [&str; 4] = ["eth0", "eth1", "ens1f0", "ens1f1"];
    const APPS: [&str; 8] = [
        "http", "tls", "dns", "quic", "ssh", "ntp", "smtp", "unknown",
    ];
    const REASONS: [&str; 4] = ["idle", "active", "fin", "rst"];
    let mut r = Rng(0x2545_f491_4f6c_dd1d);
    let t0: i64 = 1_795_573_758_000_000_000;
    let clients: Vec<IpAddr> = (0..20_000u32)
        .map(|i| IpAddr::from((0x0a00_0000u32 | i).to_be_bytes()))
        .collect();
    let servers: Vec<IpAddr> = (0..2_000u64)
        .map(|i| {
            if i % 4 == 0 {
                IpAddr::from([0x2001, 0xdb8, 0, (i >> 8) as u16, 0, 0, 0, i as u16 + 1])
            } else {
                IpAddr::from((0xc633_6400u32 + i as u32).to_be_bytes())
            }
        })
        .collect();
    (0..n)
        .map(|i| {
            let start = t0 + i as i64 * 1_000 + r.below(1_000_000) as i64;
            let dur = r.heavy(36) as i64;
            let src = clients[r.below(clients.len() as u64) as usize];
            let dst = servers[(r.heavy(11) % servers.len() as u64) as usize];
            // Counters shaped like real flows: heavy-tailed packet counts
            // (most flows are small), octets following packets, rare
            // retransmissions and losses, a few typical TCP options.
            let pf = r.heavy(12) + 1;
            let pb = if r.below(10) < 3 { 0 } else { r.heavy(12) + 1 };
            let of = pf * (40 + r.below(1460));
            let ob = pb * (40 + r.below(1460));
            let rare = |r: &mut Rng| if r.below(10) == 0 { r.heavy(6) } else { 0 };
            let counters: [u64; N_COUNTERS] = [
                1024 + r.below(64_000),
                [443, 80, 53, 22, 123, 25][r.below(6) as usize],
                [6, 17][r.below(2) as usize],
                100,
                [0, 0, 0, 46][r.below(4) as usize],
                64 - r.below(20),
                64,
                pf,
                pb,
                of,
                ob,
                r.below(3),
                r.below(3),
                u64::from(r.below(20) == 0),
                pf + pb,
                (pf + pb) / 2,
                rare(&mut r),
                rare(&mut r),
                rare(&mut r),
                rare(&mut r),
                rare(&mut r),
                of.saturating_sub(pf * 40),
                ob.saturating_sub(pb * 40),
                [29_200, 64_240, 65_535][r.below(3) as usize],
                65_535 << r.below(4),
                [1460, 1440, 1380, 536][r.below(4) as usize],
                r.heavy(20),
                r.heavy(30),
                r.heavy(24),
                r.below(200_000),
                0,
                i as u64,
                (i % 2) as u64,
            ];
            Flow {
                times: [start, start + dur, start + 1_000, start + dur - 1_000],
                addrs: [src, dst, src, dst],
                counters,
                iface: IFACES[r.below(4) as usize],
                app: APPS[r.below(8) as usize],
                reason: REASONS[r.below(4) as usize],
                label: format!("job-{}", i % 16),
                reals: [
                    r.below(200_000) as f64 / 1000.0,
                    r.below(10_000) as f64 / 1000.0,
                    r.below(100) as f64 / 10_000.0,
                ],
                bidir: r.below(2) == 0,
                complete: r.below(10) != 0,
            }
        })
        .collect()
}

/// The record → row function the record's owner would write.
fn append(b: &mut ColumnsBuilder, f: &Flow) -> Result<(), ExportError> {
    let mut c = 0;
    for t in f.times {
        b.append_time_ns(c, t)?;
        c += 1;
    }
    for a in f.addrs {
        b.append_addr(c, a)?;
        c += 1;
    }
    for v in f.counters {
        b.append_u64(c, v)?;
        c += 1;
    }
    b.append_str(c, f.iface)?;
    b.append_str(c + 1, f.app)?;
    b.append_str(c + 2, f.reason)?;
    b.append_str(c + 3, &f.label)?;
    c += 4;
    for v in f.reals {
        b.append_f64(c, v)?;
        c += 1;
    }
    b.append_bool(c, f.bidir)?;
    b.append_bool(c + 1, f.complete)?;
    Ok(())
}

struct Args {
    records: usize,
    batch: usize,
    repeat: usize,
    zstd: i32,
    dict: DictionaryPolicy,
    row_group: usize,
    stats: Statistics,
    write_batch: usize,
    page_rows: usize,
    plain: bool,
    arrow_writer: bool,
    out: PathBuf,
}

fn parse() -> anyhow::Result<Args> {
    let mut a = Args {
        records: 1_000_000,
        batch: 8192,
        repeat: 5,
        zstd: 1,
        dict: DictionaryPolicy::Text,
        row_group: 128 * 1024,
        stats: Statistics::NonText,
        write_batch: 8192,
        page_rows: 20_000,
        plain: false,
        arrow_writer: false,
        out: std::env::temp_dir().join("mplane-export-bench"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut val = || it.next().with_context(|| format!("{k} needs a value"));
        match k.as_str() {
            "--records" => a.records = val()?.parse()?,
            "--batch" => a.batch = val()?.parse()?,
            "--repeat" => a.repeat = val()?.parse()?,
            "--zstd" => a.zstd = val()?.parse()?,
            "--row-group" => a.row_group = val()?.parse()?,
            "--out" => a.out = val()?.into(),
            "--write-batch" => a.write_batch = val()?.parse()?,
            "--page-rows" => a.page_rows = val()?.parse()?,
            "--stats" => {
                a.stats = match val()?.as_str() {
                    "none" => Statistics::None,
                    "time" => Statistics::TimeOnly,
                    "nontext" => Statistics::NonText,
                    "chunk" => Statistics::Chunk,
                    "page" => Statistics::Page,
                    v => bail!("unknown --stats {v}"),
                }
            }
            "--plain" => a.plain = true,
            "--arrow-writer" => a.arrow_writer = true,
            "--dict" => {
                a.dict = match val()?.as_str() {
                    "text" => DictionaryPolicy::Text,
                    "all" => DictionaryPolicy::All,
                    "strings" => DictionaryPolicy::StringsOnly,
                    "none" => DictionaryPolicy::None,
                    d => bail!("unknown --dict {d}"),
                }
            }
            "--bench" => {} // passed by `cargo bench`
            _ => bail!("unknown argument {k}"),
        }
    }
    if a.batch == 0 || a.repeat == 0 || a.records == 0 {
        bail!("--records, --batch and --repeat must be positive");
    }
    Ok(a)
}

/// CPU time of the calling thread (ns), from `/proc/thread-self/schedstat`:
/// on a shared 2-core machine wall time also counts other processes.
fn cpu_ns() -> u64 {
    mplane_export::thread::thread_cpu().map_or(0, |d| d.as_nanos() as u64)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let a = parse()?;
    let schema = schema()?;
    eprintln!(
        "generating {} records ({} columns)...",
        a.records,
        schema.len()
    );
    let flows = generate(a.records);
    let (mut build_rps, mut write_rps) = (Vec::new(), Vec::new());
    let (mut total_rps, mut bpr) = (Vec::new(), Vec::new());
    for run in 0..a.repeat {
        // Build only.
        let mut b = ColumnsBuilder::new(schema.clone(), a.batch);
        let c = cpu_ns();
        let mut rows = 0;
        for chunk in flows.chunks(a.batch) {
            for f in chunk {
                append(&mut b, f)?;
            }
            rows += b.finish()?.num_rows();
        }
        let build = Duration::from_nanos(cpu_ns() - c);
        // Build + write.
        let dir = a.out.join(format!("run{run}"));
        let _ = std::fs::remove_dir_all(&dir);
        let mut cfg = SinkConfig::new(&dir, "flows");
        cfg.max_file_bytes = u64::MAX;
        cfg.max_file_age = Duration::from_secs(86_400);
        cfg.writer.zstd_level = a.zstd;
        cfg.writer.dictionary = a.dict;
        cfg.writer.row_group_rows = a.row_group;
        cfg.writer.statistics = a.stats;
        cfg.writer.write_batch_size = a.write_batch;
        cfg.writer.data_page_rows = a.page_rows;
        cfg.writer.delta_integers = !a.plain;
        cfg.writer.column_encoder = !a.arrow_writer;
        let mut sink = Sink::open(cfg, schema.clone())?;
        let t = Instant::now();
        let c = cpu_ns();
        for chunk in flows.chunks(a.batch) {
            for f in chunk {
                append(&mut b, f)?;
            }
            sink.write(&b.finish()?, SystemTime::now())?;
        }
        let report = sink.finish(SystemTime::now())?;
        let wall = t.elapsed();
        let total = Duration::from_nanos(cpu_ns() - c);
        let bytes: u64 = report.files.iter().map(|f| f.bytes).sum();
        let r_build = rows as f64 / build.as_secs_f64();
        let r_total = rows as f64 / total.as_secs_f64();
        let r_wall = rows as f64 / wall.as_secs_f64();
        // The export thread's share: build+write minus build.
        let r_write = rows as f64 / (total.as_secs_f64() - build.as_secs_f64()).max(1e-9);
        let per = bytes as f64 / rows as f64;
        println!(
            "run {run}: CPU: build {:.2} M rec/s, write {:.3} M rec/s, build+write {:.3} M rec/s (wall {:.3}), {:.1} bytes/rec, {} files, {:.1} MB",
            r_build / 1e6,
            r_write / 1e6,
            r_total / 1e6,
            r_wall / 1e6,
            per,
            report.files.len(),
            bytes as f64 / 1e6
        );
        build_rps.push(r_build);
        write_rps.push(r_write);
        total_rps.push(r_total);
        bpr.push(per);
        let _ = std::fs::remove_dir_all(&dir);
    }
    println!(
        "median (CPU time, one thread): build {:.2} M rec/s, write {:.3} M rec/s, build+write {:.3} M rec/s, {:.1} bytes/rec (records={} batch={} zstd={} dict={:?} row_group={} stats={:?} write_batch={} page_rows={} plain={} arrow_writer={})",
        median(&mut build_rps) / 1e6,
        median(&mut write_rps) / 1e6,
        median(&mut total_rps) / 1e6,
        median(&mut bpr),
        a.records,
        a.batch,
        a.zstd,
        a.dict,
        a.row_group,
        a.stats,
        a.write_batch,
        a.page_rows,
        a.plain,
        a.arrow_writer
    );
    Ok(())
}
