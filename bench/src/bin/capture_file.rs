//! capture_file: pcap file → dissect → flow key / hash → dispatch → workers, packets per second.
//!
//! ```sh
//! cargo build --release -p mplane-bench --bin capture_file
//! taskset -c 0 target/release/capture_file /dev/shm/flows.pcap --workers 1 --runs 5
//! target/release/capture_file /dev/shm/flows.pcap --workers 2 --runs 5 --pin
//! ```
//! Options: `--workers N[,N..]` (default 1,2), `--runs R` (5), `--batch B` (128),
//! `--lookahead L` (16), `--pin`, `--work touch|table` (touch: build the key, hash it, fold it
//! into a checksum; table: count packets per flow in a per-worker open-addressing table, like
//! the flow aggregator will), `--copy` (use the copying PacketSource path instead of zero-copy),
//! `--populate` (MAP_POPULATE the file), `--frame-only` (only walk the pcap records).
//! Prints one line per run (wall time, pps, CPU seconds per pipeline thread from
//! `/proc/thread-self/schedstat`, `cpu_pps` = packets / busiest thread's CPU time, which is the
//! scaling evidence on a shared machine) and a median line per worker count.

use std::time::Instant;

use mplane_capture::flow::FlowKey;
use mplane_capture::packet::Dissection;
use mplane_capture::pipeline::{Pipeline, PipelineConfig, Worker};
use mplane_capture::source::PacketRef;
use mplane_capture::source::pcap::PcapFile;

#[derive(Clone, Copy, PartialEq)]
enum Work {
    Touch,
    Table,
}

struct BenchWorker {
    work: Work,
    sum: u64,
    packets: u64,
    keys: Vec<FlowKey>,
    counts: Vec<u64>,
    mask: usize,
    flows: u64,
    watermarks: u64,
    /// CPU time of the thread that ran this worker, read in `finish` (schedstat, ns).
    cpu_ns: u64,
}

/// CPU time of the calling thread so far (ns), from `/proc/thread-self/schedstat`.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

impl BenchWorker {
    fn new(work: Work) -> Self {
        let cap = if work == Work::Table { 1 << 20 } else { 1 };
        BenchWorker {
            work,
            sum: 0,
            packets: 0,
            keys: vec![FlowKey::default(); cap],
            counts: vec![0; cap],
            mask: cap - 1,
            flows: 0,
            watermarks: 0,
            cpu_ns: 0,
        }
    }
}

impl Worker for BenchWorker {
    #[inline]
    fn packet(&mut self, pkt: &PacketRef<'_>, d: &Dissection) {
        self.packets += 1;
        if let Some((k, dir)) = FlowKey::from_dissection(d) {
            let h = k.hash64();
            match self.work {
                Work::Touch => {
                    self.sum = self
                        .sum
                        .wrapping_add(h ^ u64::from(pkt.orig_len) ^ dir as u64);
                }
                Work::Table => {
                    let mut i = h as usize & self.mask;
                    loop {
                        if self.counts[i] == 0 {
                            self.keys[i] = k;
                            self.counts[i] = 1;
                            self.flows += 1;
                            break;
                        }
                        if self.keys[i] == k {
                            self.counts[i] += 1;
                            break;
                        }
                        i = (i + 1) & self.mask;
                    }
                }
            }
        }
    }
    fn watermark(&mut self, _ts_ns: u64) {
        self.watermarks += 1;
    }
    fn finish(&mut self) {
        self.cpu_ns = thread_cpu_ns();
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut path = None;
    let mut workers = vec![1usize, 2];
    let mut runs = 5usize;
    let mut batch = 128usize;
    let mut lookahead = 16usize;
    let mut pin = false;
    let mut copy = false;
    let mut work = Work::Touch;
    let mut populate = false;
    let mut frame_only = false;
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{a} needs a value"))
        };
        match a.as_str() {
            "--workers" => {
                workers = val()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            "--runs" => runs = val()?.parse()?,
            "--batch" => batch = val()?.parse()?,
            "--lookahead" => lookahead = val()?.parse()?,
            "--pin" => pin = true,
            "--copy" => copy = true,
            "--populate" => populate = true,
            "--frame-only" => frame_only = true,
            "--work" => {
                work = match val()?.as_str() {
                    "touch" => Work::Touch,
                    "table" => Work::Table,
                    w => anyhow::bail!("unknown --work {w}"),
                }
            }
            _ if path.is_none() => path = Some(a),
            _ => anyhow::bail!("unexpected argument {a}"),
        }
    }
    let path = path.ok_or_else(|| anyhow::anyhow!("usage: capture_file FILE [options]"))?;
    if frame_only {
        // Lower bound of the file path: walk the records, touch one byte each (like pcap_count).
        for run in 0..runs {
            let t = Instant::now();
            let mut f = PcapFile::open_with(path.as_ref(), populate)?;
            let (mut n, mut x) = (0u64, 0u64);
            while let Some(r) = f.next_record()? {
                n += 1;
                x += u64::from(f.data(&r).get(12).copied().unwrap_or(0));
            }
            let secs = t.elapsed().as_secs_f64();
            println!(
                "frame-only run={run} packets={n} secs={secs:.3} pps={:.0} x={}",
                n as f64 / secs,
                x & 1
            );
        }
        return Ok(());
    }
    for &n in &workers {
        let mut rates = Vec::new();
        for run in 0..runs {
            let p = Pipeline::new(PipelineConfig {
                workers: n,
                batch,
                lookahead,
                pin,
                cpus: None,
            });
            let mut ws: Vec<BenchWorker> = (0..n).map(|_| BenchWorker::new(work)).collect();
            let cpu0 = thread_cpu_ns();
            let t = Instant::now();
            let file = PcapFile::open_with(path.as_ref(), populate)?;
            let rep = if copy {
                p.run_source(file, &mut ws)?
            } else {
                p.run_file(file, &mut ws)?
            };
            let secs = t.elapsed().as_secs_f64();
            let s = p.counters().snapshot();
            let pps = rep.packets as f64 / secs;
            rates.push(pps);
            let shares: Vec<String> = s.workers.iter().map(|w| w.packets.to_string()).collect();
            // CPU seconds per pipeline thread (thread 0 = this thread, measured from the start).
            let cpu: Vec<f64> = ws
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    let ns = if i == 0 { w.cpu_ns - cpu0 } else { w.cpu_ns };
                    ns as f64 / 1e9
                })
                .collect();
            let crit = cpu.iter().copied().fold(0.0, f64::max);
            let cpu_s: Vec<String> = cpu.iter().map(|c| format!("{c:.3}")).collect();
            let flows: u64 = ws.iter().map(|w| w.flows).sum();
            let sum = ws.iter().fold(0u64, |a, w| a ^ w.sum);
            println!(
                "workers={n} run={run} packets={} secs={secs:.3} pps={pps:.0} cpu_s=[{}] \
                 cpu_pps={:.0} per_worker=[{}] truncated={} non_ip={} parse_errors={} \
                 flows={flows} pinned={} check={sum:x}",
                rep.packets,
                cpu_s.join(","),
                rep.packets as f64 / crit,
                shares.join(","),
                s.truncated,
                s.non_ip,
                s.parse_errors_total(),
                rep.pinned,
            );
        }
        rates.sort_by(f64::total_cmp);
        let median = rates[rates.len() / 2];
        println!("median workers={n} pps={median:.0} runs={runs}");
    }
    Ok(())
}
