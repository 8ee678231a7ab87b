//! Helpers shared by the passive tests: fixtures, running the meters, reading Parquet back,
//! and tshark as the independent reader.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use mplane_capture::pipeline::{Pipeline, PipelineConfig};
use mplane_capture::source::pcap::PcapFile;
use mplane_probe::passive::meter::{FlowMeter, MeterConfig, VecSink};
use mplane_probe::passive::record::FlowRecord;

/// The vendored capture: 1,500 flows from the seeded reference workload generator
/// (`gen_flows.py -o flows.pcap --flows 1500 --seed 7 --duration 60`), zstd-compressed, and
/// its ground-truth sidecar.
pub const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/flows-1500-seed7.pcap.zst"
);
pub const SIDECAR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/flows-1500-seed7.pcap.json"
);

/// The fixture decompressed into a shared temporary file (once per test binary).
pub fn fixture() -> &'static Path {
    static P: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    P.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("passive-fixture");
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join(format!("flows-1500-seed7-{}.pcap", std::process::id()));
        let z = std::fs::read(FIXTURE).unwrap();
        let raw = zstd::decode_all(&z[..]).unwrap();
        std::fs::write(&out, raw).unwrap();
        out
    })
}

/// The sidecar as JSON.
pub fn sidecar() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(SIDECAR).unwrap()).unwrap()
}

/// A meter configuration with the given timeouts (seconds).
pub fn meter_cfg(idle_s: u64, active_s: u64) -> MeterConfig {
    MeterConfig {
        idle_timeout_ns: idle_s * 1_000_000_000,
        active_timeout_ns: active_s * 1_000_000_000,
        ..MeterConfig::default()
    }
}

/// Runs `path` through `workers` meters; all records with their names.
pub fn records(path: &Path, workers: usize, cfg: &MeterConfig) -> Vec<(FlowRecord, Vec<u8>)> {
    let p = Pipeline::new(PipelineConfig {
        workers,
        ..PipelineConfig::default()
    });
    let mut ws: Vec<_> = (0..workers)
        .map(|_| FlowMeter::new(cfg.clone(), VecSink::default()))
        .collect();
    p.run_file(PcapFile::open(path).unwrap(), &mut ws).unwrap();
    ws.into_iter().flat_map(|w| w.into_sink().records).collect()
}

/// A canonical, orientation-free identity of a conversation: the two (address, port)
/// endpoints sorted, and the protocol.
pub type Conv = ((IpAddr, u16), (IpAddr, u16), u8);

pub fn conv(a: (IpAddr, u16), b: (IpAddr, u16), proto: u8) -> Conv {
    if a <= b { (a, b, proto) } else { (b, a, proto) }
}

/// Runs tshark and returns stdout (panics with its stderr on failure).
pub fn tshark(args: &[&str]) -> String {
    let out = Command::new("tshark")
        .args(args)
        .output()
        .expect("run tshark (apt-get install tshark)");
    assert!(
        out.status.success(),
        "tshark {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn endpoint(s: &str) -> (IpAddr, u16) {
    let (a, p) = s.rsplit_once(':').unwrap();
    (a.parse().unwrap(), p.parse().unwrap())
}

/// tshark's conversation table (`-z conv,tcp` / `-z conv,udp`): frames A→B and B→A per
/// conversation, keyed as [`Conv`] with the counts oriented from the lower endpoint.
pub fn tshark_conversations(path: &Path, proto: &str) -> HashMap<Conv, (u64, u64)> {
    let num = if proto == "tcp" { 6 } else { 17 };
    let text = tshark(&[
        "-r",
        path.to_str().unwrap(),
        "-q",
        "-z",
        &format!("conv,{proto}"),
    ]);
    let mut out = HashMap::new();
    for line in text.lines().filter(|l| l.contains("<->")) {
        let t: Vec<&str> = line.split_whitespace().collect();
        let a = endpoint(t[0]);
        let b = endpoint(t[2]);
        // columns: frames B→A, bytes (value unit), frames A→B, bytes, ...
        let b_to_a: u64 = t[3].parse().unwrap();
        let a_to_b: u64 = t[6].parse().unwrap();
        let key = conv(a, b, num);
        let v = if key.0 == a {
            (a_to_b, b_to_a)
        } else {
            (b_to_a, a_to_b)
        };
        let e = out.entry(key).or_insert((0, 0));
        e.0 += v.0;
        e.1 += v.1;
    }
    out
}

/// One packet as tshark reads it.
#[derive(Debug, Clone)]
pub struct TPacket {
    pub src: (IpAddr, u16),
    pub dst: (IpAddr, u16),
    pub proto: u8,
    pub ip_len: u64,
    pub ts_ns: u64,
    pub tcp_flags: u16,
    pub seq: u32,
    pub ack: u32,
}

fn first(s: &str) -> &str {
    s.split(',').next().unwrap_or("")
}

/// Every TCP/UDP packet of `path` with its IP length (IPv4 total length, IPv6 payload length +
/// 40), time and TCP fields, read by tshark. ICMP errors (whose quoted headers tshark also
/// decodes) are left out.
pub fn tshark_packets(path: &Path) -> Vec<TPacket> {
    let text = tshark(&[
        "-r",
        path.to_str().unwrap(),
        "-Y",
        "(tcp || udp) && !icmp && !icmpv6",
        "-T",
        "fields",
        "-E",
        "separator=/t",
        "-e",
        "ip.src",
        "-e",
        "ipv6.src",
        "-e",
        "ip.dst",
        "-e",
        "ipv6.dst",
        "-e",
        "tcp.srcport",
        "-e",
        "tcp.dstport",
        "-e",
        "udp.srcport",
        "-e",
        "udp.dstport",
        "-e",
        "ip.len",
        "-e",
        "ipv6.plen",
        "-e",
        "frame.time_epoch",
        "-e",
        "tcp.flags",
        "-e",
        "tcp.seq_raw",
        "-e",
        "tcp.ack_raw",
    ]);
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let v4 = !f[0].is_empty();
            let src: IpAddr = first(if v4 { f[0] } else { f[1] }).parse().unwrap();
            let dst: IpAddr = first(if v4 { f[2] } else { f[3] }).parse().unwrap();
            let tcp = !f[4].is_empty();
            let port = |i: usize| first(f[i]).parse::<u16>().unwrap();
            let (sp, dp) = if tcp {
                (port(4), port(5))
            } else {
                (port(6), port(7))
            };
            let ip_len = if v4 {
                first(f[8]).parse::<u64>().unwrap()
            } else {
                first(f[9]).parse::<u64>().unwrap() + 40
            };
            let (secs, frac) = f[10].split_once('.').unwrap();
            let mut frac = frac.to_string();
            frac.truncate(9);
            while frac.len() < 9 {
                frac.push('0');
            }
            let ts_ns = secs.parse::<u64>().unwrap() * 1_000_000_000 + frac.parse::<u64>().unwrap();
            let hex = |s: &str| u32::from_str_radix(s.trim_start_matches("0x"), 16).unwrap_or(0);
            TPacket {
                src: (src, sp),
                dst: (dst, dp),
                proto: if tcp { 6 } else { 17 },
                ip_len,
                ts_ns,
                tcp_flags: if tcp { hex(f[11]) as u16 } else { 0 },
                seq: if tcp { f[12].parse().unwrap_or(0) } else { 0 },
                ack: if tcp { f[13].parse().unwrap_or(0) } else { 0 },
            }
        })
        .collect()
}

/// Sorts records into a canonical order (for comparing runs).
pub fn sorted(mut r: Vec<(FlowRecord, Vec<u8>)>) -> Vec<(FlowRecord, Vec<u8>)> {
    r.sort_by(|a, b| {
        (a.0.flow_start_ns, a.0.key, a.0.first_ns()).cmp(&(
            b.0.flow_start_ns,
            b.0.key,
            b.0.first_ns(),
        ))
    });
    r
}
