//! Integration tests: files written with the crate's builder, read back through the sources,
//! the dissector and the pipeline.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use mplane_capture::builder::{Builder, PcapWriter, PcapngWriter, fragment};
use mplane_capture::flow::{Direction, FlowKey, KeyKind};
use mplane_capture::packet::tcp::flags;
use mplane_capture::packet::{Dissection, ErrorKind, Layer, LinkType, ParseError, dissect};
use mplane_capture::pipeline::{Pipeline, PipelineConfig, Worker};
use mplane_capture::source::pcap::PcapFile;
use mplane_capture::source::{PacketRef, PacketSource};
use proptest::prelude::*;

fn v6(x: u8) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0] = 0x20;
    a[1] = 0x01;
    a[2] = 0x0d;
    a[3] = 0xb8;
    a[15] = x;
    a
}

/// A frame in the test workload: bytes, and how many leading bytes were captured.
struct Frame {
    bytes: Vec<u8>,
    caplen: usize,
}

fn full(bytes: Vec<u8>) -> Frame {
    let caplen = bytes.len();
    Frame { bytes, caplen }
}

/// A mixed workload: many TCP conversations (both directions), UDP, ICMP echo and errors,
/// v4/v6, VLAN/QinQ, fragments, tunnels and snaplen-truncated frames.
fn workload() -> Vec<Frame> {
    let mut out = Vec::new();
    for i in 0..60u8 {
        let c = [10, 0, i / 16, i];
        let s = [192, 168, 0, 1 + i % 5];
        let cp = 40000 + u16::from(i);
        let tag = |b: Builder| match i % 4 {
            0 => b,
            1 => b.vlan(100 + u16::from(i)),
            2 => b.qinq(7).vlan(u16::from(i)),
            _ => b,
        };
        if i % 4 == 3 {
            let (c6, s6) = (v6(i), v6(200));
            out.push(full(
                tag(Builder::ethernet())
                    .ipv6(c6, s6)
                    .tcp(cp, 443, 1, 0, flags::SYN)
                    .build(),
            ));
            out.push(full(
                tag(Builder::ethernet())
                    .ipv6(s6, c6)
                    .tcp(443, cp, 9, 2, flags::SYN | flags::ACK)
                    .build(),
            ));
            out.push(full(
                tag(Builder::ethernet())
                    .ipv6(c6, s6)
                    .tcp(cp, 443, 2, 10, flags::ACK)
                    .build(),
            ));
        } else {
            out.push(full(
                tag(Builder::ethernet())
                    .ipv4(c, s)
                    .tcp(cp, 80, 1, 0, flags::SYN)
                    .build(),
            ));
            out.push(full(
                tag(Builder::ethernet())
                    .ipv4(s, c)
                    .tcp(80, cp, 9, 2, flags::SYN | flags::ACK)
                    .build(),
            ));
            let data = tag(Builder::ethernet())
                .ipv4(c, s)
                .tcp(cp, 80, 2, 10, flags::ACK | flags::PSH)
                .payload(&[b'x'; 600])
                .build();
            // captured with a 96-byte snaplen
            out.push(Frame {
                bytes: data,
                caplen: 96,
            });
        }
        // DNS-like UDP both ways
        out.push(full(
            Builder::ethernet()
                .ipv4(c, [8, 8, 8, 8])
                .udp(cp, 53)
                .payload(&[1; 30])
                .build(),
        ));
        out.push(full(
            Builder::ethernet()
                .ipv4([8, 8, 8, 8], c)
                .udp(53, cp)
                .payload(&[2; 80])
                .build(),
        ));
        if i % 6 == 0 {
            out.push(full(
                Builder::ethernet()
                    .ipv4(c, s)
                    .icmp(8, 0, u16::from(i), 1)
                    .build(),
            ));
            out.push(full(
                Builder::ethernet()
                    .ipv4(s, c)
                    .icmp(0, 0, u16::from(i), 1)
                    .build(),
            ));
            let quoted = Builder::raw().ipv4(c, s).udp(cp, 33434).build();
            out.push(full(
                Builder::ethernet()
                    .ipv4([172, 16, 0, 1], c)
                    .icmp(11, 0, 0, 0)
                    .payload(&quoted)
                    .build(),
            ));
        }
        if i % 10 == 0 {
            let big = Builder::ethernet()
                .ipv4(c, s)
                .udp(5000, 5001)
                .payload(&[3; 400])
                .build();
            for f in fragment(&big, 14, 128, u32::from(i) + 1000) {
                out.push(full(f));
            }
            let big6 = Builder::ethernet()
                .ipv6(v6(i), v6(201))
                .udp(5000, 5001)
                .payload(&[4; 300])
                .build();
            for f in fragment(&big6, 14, 128, u32::from(i) + 7000) {
                out.push(full(f));
            }
            out.push(full(
                Builder::ethernet()
                    .ipv4([1, 1, 1, 1], [2, 2, 2, 2])
                    .udp(40000 + u16::from(i), 4789)
                    .vxlan(u32::from(i))
                    .inner_ethernet()
                    .ipv4(c, s)
                    .tcp(cp, 22, 1, 1, flags::ACK)
                    .build(),
            ));
            out.push(full(
                Builder::ethernet()
                    .ipv4([3, 3, 3, 3], [4, 4, 4, 4])
                    .udp(2152, 2152)
                    .gtp(0x100 + u32::from(i))
                    .ipv4(c, s)
                    .udp(cp, 443)
                    .build(),
            ));
            out.push(full(
                Builder::ethernet()
                    .ipv4([5, 5, 5, 5], [6, 6, 6, 6])
                    .gre(Some(u32::from(i)))
                    .ipv6(v6(i), v6(202))
                    .udp(cp, 53)
                    .build(),
            ));
        }
    }
    // a frame cut inside its IPv4 header, and one that is not IP at all
    let f = Builder::ethernet()
        .ipv4([9, 9, 9, 9], [9, 9, 9, 8])
        .udp(1, 2)
        .build();
    out.push(Frame {
        bytes: f,
        caplen: 20,
    });
    let mut arp = vec![0xff; 12];
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.resize(60, 0);
    out.push(full(arp));
    out
}

const T0: u64 = 1_700_000_000_000_000_000;

/// Packet `i` has timestamp T0 + i µs (unique, so it identifies the packet).
fn ts(i: usize) -> u64 {
    T0 + i as u64 * 1000
}

fn write_pcap(path: &Path, frames: &[Frame]) {
    let f = std::fs::File::create(path).unwrap();
    let mut w = PcapWriter::new(
        std::io::BufWriter::new(f),
        LinkType::ETHERNET,
        65535,
        true,
        false,
    )
    .unwrap();
    for (i, fr) in frames.iter().enumerate() {
        w.write(ts(i), &fr.bytes[..fr.caplen], fr.bytes.len() as u32)
            .unwrap();
    }
}

fn write_pcapng(path: &Path, frames: &[Frame]) {
    let f = std::fs::File::create(path).unwrap();
    let mut w = PcapngWriter::new(std::io::BufWriter::new(f)).unwrap();
    let a = w.interface(LinkType::ETHERNET, 0, Some(9)).unwrap();
    let b = w.interface(LinkType::ETHERNET, 0, None).unwrap();
    for (i, fr) in frames.iter().enumerate() {
        let iface = if i % 2 == 0 { a } else { b };
        w.packet(iface, ts(i), &fr.bytes[..fr.caplen], fr.bytes.len() as u32)
            .unwrap();
    }
}

type FragId = ([u8; 16], [u8; 16], u32);
type Seen = (u64, Option<(FlowKey, Direction)>, Option<FragId>);

#[derive(Default)]
struct Recorder {
    /// (ts, key, fragment (addrs, ident) if a fragment)
    seen: Vec<Seen>,
    watermarks: Vec<u64>,
    finished: bool,
}

impl Worker for Recorder {
    fn packet(&mut self, pkt: &PacketRef<'_>, d: &Dissection) {
        // the dissection shipped with the packet matches the bytes
        assert_eq!(&dissect(pkt.link, pkt.data), d);
        let frag = d.frag.is_fragment.then(|| {
            let (a, b) = if d.src <= d.dst {
                (d.src, d.dst)
            } else {
                (d.dst, d.src)
            };
            (a, b, d.frag.ident)
        });
        self.seen
            .push((pkt.ts_ns, FlowKey::from_dissection(d), frag));
    }
    fn watermark(&mut self, ts_ns: u64) {
        if let Some(&last) = self.watermarks.last() {
            assert!(ts_ns >= last);
        }
        self.watermarks.push(ts_ns);
    }
    fn finish(&mut self) {
        self.finished = true;
    }
}

fn check_run(workers: &[Recorder], n_frames: usize) {
    let mut all = BTreeSet::new();
    let mut key_worker: BTreeMap<FlowKey, usize> = BTreeMap::new();
    let mut frag_worker: BTreeMap<([u8; 16], [u8; 16], u32), usize> = BTreeMap::new();
    for (w, r) in workers.iter().enumerate() {
        assert!(r.finished);
        let mut last = 0;
        for (t, key, frag) in &r.seen {
            assert!(*t > last, "worker {w} saw packets out of order");
            last = *t;
            assert!(all.insert(*t), "packet {t} delivered twice");
            if let Some((k, _)) = key
                && let Some(prev) = key_worker.insert(*k, w)
            {
                assert_eq!(prev, w, "flow {k:?} on two workers");
            }
            if let Some(f) = frag
                && let Some(prev) = frag_worker.insert(*f, w)
            {
                assert_eq!(prev, w, "fragments of one datagram on two workers");
            }
        }
    }
    assert_eq!(all.len(), n_frames, "every packet exactly once");
    // every worker got the same watermark sequence
    for r in workers {
        assert_eq!(r.watermarks, workers[0].watermarks);
    }
}

#[test]
fn pipeline_delivers_everything_once_for_1_2_3_workers() {
    let frames = workload();
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("w.pcap");
    let ng = dir.path().join("w.pcapng");
    write_pcap(&pcap, &frames);
    write_pcapng(&ng, &frames);
    // compressed, as `tcpdump -z` leaves them: decoded as they are read
    let pcap_gz = dir.path().join("w.pcap.gz");
    let ng_zst = dir.path().join("w.pcapng.zst");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &std::fs::read(&pcap).unwrap()).unwrap();
    std::fs::write(&pcap_gz, gz.finish().unwrap()).unwrap();
    let zst = zstd::encode_all(&std::fs::read(&ng).unwrap()[..], 3).unwrap();
    std::fs::write(&ng_zst, zst).unwrap();
    let mut reference_watermarks = None;
    for path in [&pcap, &ng, &pcap_gz, &ng_zst] {
        for n in 1..=3 {
            for batch in [1, 7, 64] {
                for copy in [false, true] {
                    let p = Pipeline::new(PipelineConfig {
                        workers: n,
                        batch,
                        lookahead: 3,
                        pin: n == 2,
                        cpus: None,
                    });
                    let mut ws: Vec<Recorder> = (0..n).map(|_| Recorder::default()).collect();
                    let file = PcapFile::open(path).unwrap();
                    let rep = if copy {
                        p.run_source(file, &mut ws).unwrap()
                    } else {
                        p.run_file(file, &mut ws).unwrap()
                    };
                    assert_eq!(rep.packets, frames.len() as u64);
                    check_run(&ws, frames.len());
                    if batch == 7 {
                        match &reference_watermarks {
                            None => reference_watermarks = Some(ws[0].watermarks.clone()),
                            Some(r) => assert_eq!(r, &ws[0].watermarks, "n={n}"),
                        }
                    }
                    let s = p.counters().snapshot();
                    assert_eq!(s.packets, frames.len() as u64);
                    assert_eq!(s.source_packets, frames.len() as u64);
                    assert_eq!(s.workers.len(), n);
                    assert_eq!(
                        s.workers.iter().map(|w| w.dissected).sum::<u64>(),
                        frames.len() as u64
                    );
                    let cut = frames.iter().filter(|f| f.caplen < f.bytes.len()).count() as u64;
                    assert_eq!(s.truncated, cut);
                    assert_eq!(s.non_ip, 2);
                    assert_eq!(
                        s.parse_error(ParseError::new(Layer::Ipv4, ErrorKind::Truncated)),
                        1
                    );
                    assert_eq!(s.parse_errors_total(), 1);
                    assert_eq!(s.parse_errors_by_layer()[Layer::Ipv4 as usize], 1);
                    if n > 1 {
                        assert!(s.workers.iter().all(|w| w.packets > 0), "{s:?}");
                    }
                }
            }
        }
    }
}

#[test]
fn views_read_back_what_was_written() {
    let frames = workload();
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("w.pcap");
    write_pcap(&pcap, &frames);
    let mut f = PcapFile::open(&pcap).unwrap();
    let mut i = 0;
    let mut kinds = BTreeMap::new();
    while let Some(p) = f.next_packet().unwrap() {
        let fr = &frames[i];
        assert_eq!(p.data, &fr.bytes[..fr.caplen]);
        assert_eq!(p.ts_ns, ts(i));
        assert_eq!(p.orig_len as usize, fr.bytes.len());
        let d = dissect(p.link, p.data);
        if let Some((k, _)) = FlowKey::from_dissection(&d) {
            *kinds.entry(k.kind).or_insert(0) += 1;
        }
        i += 1;
    }
    assert_eq!(i, frames.len());
    assert!(kinds[&(KeyKind::IcmpEcho as u8)] == 20);
    assert!(kinds[&(KeyKind::IcmpError as u8)] == 10);
    assert!(kinds[&(KeyKind::Fragment as u8)] > 0);
}

#[test]
fn worker_count_mismatch_is_an_error() {
    let frames = workload();
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("w.pcap");
    write_pcap(&pcap, &frames);
    let p = Pipeline::new(PipelineConfig {
        workers: 2,
        ..PipelineConfig::default()
    });
    let mut ws = vec![Recorder::default()];
    assert!(p.run_file(PcapFile::open(&pcap).unwrap(), &mut ws).is_err());
}

#[test]
fn truncated_file_delivers_prefix_then_errors() {
    let frames = workload();
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("w.pcap");
    write_pcap(&pcap, &frames);
    let bytes = std::fs::read(&pcap).unwrap();
    std::fs::write(&pcap, &bytes[..bytes.len() - 5]).unwrap();
    for n in [1, 2, 3] {
        let p = Pipeline::new(PipelineConfig {
            workers: n,
            batch: 16,
            ..PipelineConfig::default()
        });
        let mut ws: Vec<Recorder> = (0..n).map(|_| Recorder::default()).collect();
        let r = p.run_file(PcapFile::open(&pcap).unwrap(), &mut ws);
        assert!(r.is_err());
        check_run(&ws, frames.len() - 1);
    }
}

fn all_links() -> [LinkType; 11] {
    [
        LinkType::ETHERNET,
        LinkType::NULL,
        LinkType::LOOP,
        LinkType::RAW,
        LinkType::RAW_BSD12,
        LinkType::RAW_BSD14,
        LinkType::IPV4,
        LinkType::IPV6,
        LinkType::LINUX_SLL,
        LinkType::LINUX_SLL2,
        LinkType(147),
    ]
}

proptest! {
    #[test]
    fn dissect_never_panics(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        for l in all_links() {
            let d = dissect(l, &data);
            let _ = FlowKey::from_dissection(&d);
            prop_assert!(d.l3_offset as usize <= data.len());
            prop_assert!(d.l4_offset as usize <= data.len());
        }
    }

    #[test]
    fn dissect_never_panics_on_mutated_frames(
        idx in 0usize..400, pos in any::<usize>(), val in any::<u8>(), cut in any::<usize>()
    ) {
        let frames = workload();
        let f = &frames[idx % frames.len()].bytes;
        let mut f = f.clone();
        let p = pos % f.len();
        f[p] = val;
        let c = cut % (f.len() + 1);
        let _ = dissect(LinkType::ETHERNET, &f[..c]);
    }

    #[test]
    fn pcap_reader_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300), magic in 0usize..3) {
        let mut bytes = match magic {
            0 => vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0, 0, 0],
            1 => vec![0x0a, 0x0d, 0x0d, 0x0a],
            _ => vec![],
        };
        bytes.extend_from_slice(&data);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        std::fs::write(&p, &bytes).unwrap();
        if let Ok(mut f) = PcapFile::open(&p) {
            for _ in 0..1000 {
                match f.next_packet() {
                    Ok(Some(_)) => {}
                    _ => break,
                }
            }
        }
    }

    /// A damaged capture reads the same compressed as plain: the same packets, then the same
    /// end (a clean one, or the same error at the same offset of the capture).
    #[test]
    fn compressed_captures_read_like_plain_ones(
        ng in any::<bool>(), at in any::<usize>(), val in any::<u8>(), cut in any::<usize>(), flip in any::<bool>()
    ) {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("p");
        if ng {
            write_pcapng(&plain, &workload());
        } else {
            write_pcap(&plain, &workload());
        }
        let mut bytes = std::fs::read(&plain).unwrap();
        if flip {
            let i = at % bytes.len();
            bytes[i] = val;
        }
        bytes.truncate(cut % (bytes.len() + 1));
        std::fs::write(&plain, &bytes).unwrap();
        let packed = dir.path().join("p.zst");
        std::fs::write(&packed, zstd::encode_all(&bytes[..], 1).unwrap()).unwrap();
        let read = |path: &Path| {
            let mut got = Vec::new();
            let end = match PcapFile::open(path) {
                Err(e) => Some(e.to_string()),
                Ok(mut f) => loop {
                    match f.next_packet() {
                        Ok(Some(p)) => got.push((p.data.to_vec(), p.ts_ns, p.orig_len, p.link)),
                        Ok(None) => break None,
                        Err(e) => break Some(e.to_string()),
                    }
                },
            };
            (got, end)
        };
        let (a, b) = (read(&plain), read(&packed));
        prop_assert_eq!(a.1, b.1);
        prop_assert!(a.0 == b.0, "different packets");
    }

    #[test]
    fn flow_hash_is_symmetric(
        a in any::<[u8; 4]>(), b in any::<[u8; 4]>(), a6 in any::<[u8; 16]>(), b6 in any::<[u8; 16]>(),
        sp in any::<u16>(), dp in any::<u16>(), vid in 0u16..4096, v4 in any::<bool>(), tcp in any::<bool>()
    ) {
        let mk = |fwd: bool| {
            let (x, y, xp, yp) = if fwd { (a, b, sp, dp) } else { (b, a, dp, sp) };
            let (x6, y6) = if fwd { (a6, b6) } else { (b6, a6) };
            let bld = Builder::ethernet().vlan(vid);
            let bld = if v4 { bld.ipv4(x, y) } else { bld.ipv6(x6, y6) };
            let bld = if tcp { bld.tcp(xp, yp, 1, 1, flags::ACK) } else { bld.udp(xp, yp) };
            FlowKey::from_dissection(&dissect(LinkType::ETHERNET, &bld.build())).unwrap()
        };
        let (k1, d1) = mk(true);
        let (k2, d2) = mk(false);
        prop_assert_eq!(k1, k2);
        prop_assert_eq!(k1.hash64(), k2.hash64());
        prop_assert_eq!(k1.worker_hash(), k2.worker_hash());
        if k1.addr_a != k1.addr_b || k1.port_a != k1.port_b {
            prop_assert_ne!(d1, d2);
        }
    }
}

/// Writes seed corpora for the fuzz targets (run explicitly:
/// `cargo test -p mplane-capture --test capture -- --ignored write_fuzz_corpus`).
#[test]
#[ignore]
fn write_fuzz_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let dissect_dir = root.join("packet_dissect");
    let pcap_dir = root.join("packet_pcap");
    std::fs::create_dir_all(&dissect_dir).unwrap();
    std::fs::create_dir_all(&pcap_dir).unwrap();
    let frames = workload();
    for (i, f) in frames.iter().enumerate().step_by(7) {
        let mut seed = vec![0u8]; // link selector 0 = Ethernet
        seed.extend_from_slice(&f.bytes[..f.caplen]);
        std::fs::write(dissect_dir.join(format!("frame{i:03}")), seed).unwrap();
    }
    write_pcap(&pcap_dir.join("small.pcap"), &frames[..12]);
    write_pcapng(&pcap_dir.join("small.pcapng"), &frames[..12]);
}

/// A workload spanning many 1 MiB chunks, so the parallel walk resynchronises at chunk starts.
fn big_workload(copies: usize) -> Vec<Frame> {
    let mut out = Vec::new();
    for r in 0..copies {
        for (i, f) in workload().into_iter().enumerate() {
            if (i + r) % 3 == 0 {
                // grow some frames so record sizes vary a lot
                let b = Builder::ethernet()
                    .ipv4([10, 1, (r % 200) as u8, (i % 250) as u8], [10, 2, 0, 1])
                    .udp(1000 + (i % 100) as u16, 2000)
                    .payload(&vec![r as u8; (i * 37 + r * 11) % 1400])
                    .build();
                out.push(full(b));
            }
            out.push(f);
        }
    }
    out
}

#[test]
fn parallel_walk_over_many_chunks_matches_sequential() {
    let frames = big_workload(40);
    let dir = tempfile::tempdir().unwrap();
    for (nanos, be) in [(true, false), (false, true)] {
        let path = dir.path().join(format!("big{nanos}{be}.pcap"));
        let f = std::fs::File::create(&path).unwrap();
        let mut w = PcapWriter::new(
            std::io::BufWriter::new(f),
            LinkType::ETHERNET,
            65535,
            nanos,
            be,
        )
        .unwrap();
        for (i, fr) in frames.iter().enumerate() {
            w.write(ts(i), &fr.bytes[..fr.caplen], fr.bytes.len() as u32)
                .unwrap();
        }
        drop(w);
        assert!(std::fs::metadata(&path).unwrap().len() > 4 << 20);
        let mut reference = None;
        for n in 1..=3 {
            let p = Pipeline::new(PipelineConfig {
                workers: n,
                batch: 100,
                ..PipelineConfig::default()
            });
            let mut ws: Vec<Recorder> = (0..n).map(|_| Recorder::default()).collect();
            let rep = p.run_file(PcapFile::open(&path).unwrap(), &mut ws).unwrap();
            assert_eq!(rep.packets, frames.len() as u64);
            check_run(&ws, frames.len());
            match &reference {
                None => reference = Some(ws[0].watermarks.clone()),
                Some(r) => assert_eq!(r, &ws[0].watermarks, "watermarks differ for n={n}"),
            }
        }
        // Cut the file inside its last record: every earlier packet arrives, then the error.
        let bytes = std::fs::read(&path).unwrap();
        let cut = dir.path().join("cut.pcap");
        std::fs::write(&cut, &bytes[..bytes.len() - 3]).unwrap();
        for n in 1..=3 {
            let p = Pipeline::new(PipelineConfig {
                workers: n,
                batch: 100,
                ..PipelineConfig::default()
            });
            let mut ws: Vec<Recorder> = (0..n).map(|_| Recorder::default()).collect();
            let e = p
                .run_file(PcapFile::open(&cut).unwrap(), &mut ws)
                .unwrap_err();
            assert!(e.to_string().contains("truncated"), "{e}");
            check_run(&ws, frames.len() - 1);
        }
    }
}

/// Sets the pipeline's stop flag once it has seen `after` packets.
struct StopAfter {
    rec: Recorder,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    after: usize,
}

impl Worker for StopAfter {
    fn packet(&mut self, pkt: &PacketRef<'_>, d: &Dissection) {
        self.rec.packet(pkt, d);
        if self.rec.seen.len() == self.after {
            self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    fn watermark(&mut self, ts_ns: u64) {
        self.rec.watermark(ts_ns);
    }
    fn finish(&mut self) {
        self.rec.finish();
    }
}

#[test]
fn a_stopped_file_run_ends_early_and_finishes_every_worker() {
    let frames = big_workload(40);
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("big.pcap");
    let ng = dir.path().join("big.pcapng");
    write_pcap(&pcap, &frames);
    write_pcapng(&ng, &frames);
    let gz = dir.path().join("big.pcap.gz");
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut e, &std::fs::read(&pcap).unwrap()).unwrap();
    std::fs::write(&gz, e.finish().unwrap()).unwrap();
    // the mapped walk (1 worker), the parallel walk, the single reader of pcapng, a stream
    for (path, n) in [(&pcap, 1), (&pcap, 2), (&ng, 2), (&gz, 1), (&gz, 2)] {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let p = Pipeline::new(PipelineConfig {
            workers: n,
            batch: 64,
            ..PipelineConfig::default()
        })
        .with_stop(stop.clone());
        let mut ws: Vec<StopAfter> = (0..n)
            .map(|_| StopAfter {
                rec: Recorder::default(),
                stop: stop.clone(),
                after: 1000,
            })
            .collect();
        let rep = p.run_file(PcapFile::open(path).unwrap(), &mut ws);
        let what = format!("{} with {n} worker(s)", path.display());
        assert!(rep.is_ok(), "{what}: {rep:?}");
        let mut all = BTreeSet::new();
        for w in &ws {
            assert!(w.rec.finished, "{what}: a worker did not finish");
            for (t, _, _) in &w.rec.seen {
                assert!(all.insert(*t), "{what}: packet {t} twice");
            }
        }
        assert!(
            all.len() >= 1000 && all.len() < frames.len() / 2,
            "{what}: {} of {} packets delivered",
            all.len(),
            frames.len()
        );
    }
}

#[test]
fn embedded_pcap_payloads_never_silently_corrupt() {
    // Payloads that are themselves pcap records fool the chain check; the cross-check against
    // the previous chunk's walk must catch it and walk again, delivering the right packets.
    let inner: Vec<u8> = {
        let mut w = PcapWriter::new(Vec::new(), LinkType::ETHERNET, 65535, true, false).unwrap();
        for i in 0..20u64 {
            w.write(ts(i as usize), &[0x42; 40], 40).unwrap();
        }
        w.into_inner()[24..].to_vec()
    };
    let mut frames = Vec::new();
    for i in 0..12000u32 {
        let b = Builder::ethernet()
            .ipv4([10, 0, 0, (i % 200) as u8], [10, 0, 1, 1])
            .udp(80, 1000 + (i % 50) as u16)
            .payload(&inner[..(i as usize * 97) % inner.len()])
            .build();
        frames.push(full(b));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("evil.pcap");
    write_pcap(&path, &frames);
    for n in 2..=3 {
        let p = Pipeline::new(PipelineConfig {
            workers: n,
            ..PipelineConfig::default()
        });
        let mut ws: Vec<Recorder> = (0..n).map(|_| Recorder::default()).collect();
        p.run_file(PcapFile::open(&path).unwrap(), &mut ws).unwrap();
        check_run(&ws, frames.len());
        assert!(
            p.counters().snapshot().resyncs_fixed > 0,
            "the test should fool the resync"
        );
    }
}

#[test]
fn records_larger_than_a_chunk_and_bogus_snaplen() {
    // 700 kB records leave some 1 MiB chunks without any record start, and the header's
    // snaplen (96) is smaller than every record: the parallel walk must still be exact.
    let mut frames = Vec::new();
    for i in 0..24u32 {
        let mut f = Builder::ethernet()
            .ipv4([10, 3, 0, i as u8], [10, 4, 0, 1])
            .udp(7, 9)
            .build();
        f.resize(
            if i % 3 == 0 {
                700_000
            } else {
                1000 + i as usize
            },
            i as u8,
        );
        frames.push(full(f));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.pcap");
    let f = std::fs::File::create(&path).unwrap();
    let mut w = PcapWriter::new(
        std::io::BufWriter::new(f),
        LinkType::ETHERNET,
        96,
        true,
        false,
    )
    .unwrap();
    for (i, fr) in frames.iter().enumerate() {
        w.write(ts(i), &fr.bytes, fr.bytes.len() as u32).unwrap();
    }
    drop(w);
    for n in 1..=3 {
        let p = Pipeline::new(PipelineConfig {
            workers: n,
            batch: 4,
            ..PipelineConfig::default()
        });
        let mut ws: Vec<Recorder> = (0..n).map(|_| Recorder::default()).collect();
        p.run_file(PcapFile::open(&path).unwrap(), &mut ws).unwrap();
        check_run(&ws, frames.len());
    }
}
/// Helpers for tests through veth pairs into a fresh network namespace. They need root (netns +
/// veth) and python3 (the AF_PACKET sender in the namespace) and skip with a message otherwise.
#[cfg(any(feature = "live", feature = "xdp"))]
mod netns {
    use std::collections::{BTreeMap, BTreeSet, HashMap};
    use std::process::Command;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    use mplane_capture::counters::CountersSnapshot;
    use mplane_capture::pipeline::{PipelineError, RunReport};

    use super::*;

    /// A namespace with `ports` veth pairs: the host ends stay in this namespace, the peers go
    /// into the new one. Dropping it removes everything, also when a test panics.
    pub struct Netns {
        pub ns: String,
        pub host: Vec<String>,
        pub peer: Vec<String>,
        dir: tempfile::TempDir,
    }

    impl Drop for Netns {
        fn drop(&mut self) {
            for h in &self.host {
                let _ = Command::new("ip").args(["link", "del", h]).status();
            }
            let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        }
    }

    pub fn run(args: &[&str]) -> bool {
        Command::new(args[0])
            .args(&args[1..])
            .status()
            .is_ok_and(|s| s.success())
    }

    #[track_caller]
    pub fn run_ok(args: &[&str]) {
        assert!(run(args), "{args:?} failed");
    }

    pub fn is_root() -> bool {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Uid:"))
                    .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
            })
            .unwrap_or(false)
    }

    /// Sends length-prefixed frames, each on the interface its first byte names, in file order.
    /// Port numbers with bit 7 set go through a second socket with `PACKET_VNET_HDR`: the frame
    /// starts with a `virtio_net_hdr` (how a GSO super-frame is injected).
    const SENDER: &str = r#"
import socket, struct, sys
data = open(sys.argv[1], 'rb').read()
socks = []
for name in sys.argv[2:]:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((name, 0))
    v = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    v.setsockopt(263, 15, 1)  # SOL_PACKET, PACKET_VNET_HDR
    v.bind((name, 0))
    socks.append((s, v))
i = 0
while i < len(data):
    port, n = struct.unpack('<BI', data[i:i + 5])
    socks[port & 0x7f][port >> 7].send(data[i + 5:i + 5 + n])
    i += 5 + n
"#;

    /// A TCP/IPv4 segment of `payload` bytes as one GSO super-frame (larger than the MTU), as
    /// TSO/GSO on the sender or GRO on the receiver produce: `(virtio_net_hdr + frame, frame)`.
    pub fn gso_frame(seq: u32, payload: usize) -> (Vec<u8>, Vec<u8>) {
        let frame = Builder::ethernet()
            .ipv4([10, 79, 0, 1], [10, 79, 0, 2])
            .tcp(1234, 80, seq, 1, flags::ACK | flags::PSH)
            .payload(&vec![b'g'; payload])
            .build();
        // flags NEEDS_CSUM, gso_type TCPV4, hdr_len, gso_size, csum_start, csum_offset
        let mut v = vec![1u8, 1];
        for x in [54u16, 1448, 34, 16] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        v.extend_from_slice(&frame);
        (v, frame)
    }

    impl Netns {
        /// Creates the namespace and `ports` veth pairs with `queues` RX/TX queues on each end.
        /// `None` (after a message) if the test cannot run here.
        pub fn create(tag: &str, ports: usize, queues: u32) -> Option<Netns> {
            if !is_root() {
                eprintln!("skipping {tag}: needs root to create a netns and veth");
                return None;
            }
            if !run(&["python3", "-c", "import socket; socket.AF_PACKET"]) {
                eprintln!("skipping {tag}: python3 with AF_PACKET not available");
                return None;
            }
            let pid = std::process::id() % 100_000;
            let mut net = Netns {
                ns: format!("mp{tag}{pid}"),
                host: Vec::new(),
                peer: Vec::new(),
                dir: tempfile::tempdir().unwrap(),
            };
            run_ok(&["ip", "netns", "add", &net.ns]);
            let q = queues.to_string();
            for p in 0..ports {
                let (h, e) = (format!("mh{tag}{p}{pid}"), format!("mp{tag}{p}{pid}"));
                let mut args = vec!["ip", "link", "add", &h];
                if queues > 1 {
                    args.extend(["numrxqueues", &q, "numtxqueues", &q]);
                }
                args.extend(["type", "veth", "peer", "name", &e]);
                if queues > 1 {
                    args.extend(["numrxqueues", &q, "numtxqueues", &q]);
                }
                run_ok(&args);
                net.host.push(h.clone());
                run_ok(&["ip", "link", "set", &e, "netns", &net.ns]);
                net.peer.push(e.clone());
                // no IPv6 on the host end: less chatter on the wire (not required)
                let _ = run(&[
                    "sysctl",
                    "-qw",
                    &format!("net.ipv6.conf.{h}.disable_ipv6=1"),
                ]);
                run_ok(&["ip", "link", "set", &h, "up"]);
                run_ok(&["ip", "-n", &net.ns, "link", "set", &e, "up"]);
            }
            Some(net)
        }

        /// Sends `(port, frame)` from the namespace side in order, from one thread.
        pub fn send(&self, frames: &[(usize, Vec<u8>)]) {
            let mut blob = Vec::new();
            for (port, f) in frames {
                blob.push(*port as u8);
                blob.extend_from_slice(&(f.len() as u32).to_le_bytes());
                blob.extend_from_slice(f);
            }
            let file = self.dir.path().join("frames.bin");
            std::fs::write(&file, &blob).unwrap();
            // One CPU sends, so the receive path (backlog or veth NAPI, scheduled on the sending
            // CPU) stamps frames in sending order; a migrating sender would let two CPUs
            // receive at once, which reorders frames of different flows.
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", &self.ns, "taskset", "-c", "0"])
                .args(["python3", "-c", SENDER])
                .arg(&file)
                .args(&self.peer);
            assert!(cmd.status().unwrap().success(), "sender failed");
        }
    }

    /// The known packet set, as `(direction, frame)` with direction 0 = client → server: UDP
    /// and TCP flows in both directions (some VLAN-tagged, some IPv6), ICMP echo request and
    /// reply, and IPv4 / IPv6 datagrams cut into fragments both ways. Every frame is unique.
    pub fn packet_set(flows: u32) -> Vec<(usize, Vec<u8>)> {
        let mut out = Vec::new();
        for i in 0..flows {
            let c = [10, 77, (i / 200) as u8, (i % 200) as u8 + 1];
            let s = [10, 78, 0, 1 + (i % 3) as u8];
            let cp = 40000 + i as u16;
            let tag = |b: Builder| {
                if i % 5 == 1 {
                    b.vlan(100 + (i % 4) as u16)
                } else {
                    b
                }
            };
            for k in 0..3u32 {
                let pay = |dir: u32| [i.to_be_bytes(), k.to_be_bytes(), dir.to_be_bytes()].concat();
                out.push((
                    0,
                    tag(Builder::ethernet())
                        .ipv4(c, s)
                        .udp(cp, 47000)
                        .payload(&pay(0))
                        .build(),
                ));
                out.push((
                    1,
                    tag(Builder::ethernet())
                        .ipv4(s, c)
                        .udp(47000, cp)
                        .payload(&pay(1))
                        .build(),
                ));
            }
            if i % 4 == 0 {
                let (c6, s6) = (v6(i as u8), v6(200));
                out.push((
                    0,
                    Builder::ethernet()
                        .ipv6(c6, s6)
                        .tcp(cp, 443, i, 0, flags::SYN)
                        .build(),
                ));
                out.push((
                    1,
                    Builder::ethernet()
                        .ipv6(s6, c6)
                        .tcp(443, cp, 7, i + 1, flags::SYN | flags::ACK)
                        .build(),
                ));
                out.push((
                    0,
                    Builder::ethernet()
                        .ipv6(c6, s6)
                        .tcp(cp, 443, i + 1, 8, flags::ACK)
                        .build(),
                ));
            }
            if i % 7 == 0 {
                out.push((0, Builder::ethernet().ipv4(c, s).icmp(8, 0, cp, 1).build()));
                out.push((1, Builder::ethernet().ipv4(s, c).icmp(0, 0, cp, 1).build()));
            }
            if i % 10 == 0 {
                for (dir, (a, b)) in [(c, s), (s, c)].into_iter().enumerate() {
                    // reply from the server port to the client port: one flow, both ways
                    let (pa, pb) = if dir == 0 { (5000, 5001) } else { (5001, 5000) };
                    let big = Builder::ethernet()
                        .ipv4(a, b)
                        .udp(pa, pb)
                        .payload(&vec![i as u8; 700])
                        .build();
                    for f in fragment(&big, 14, 256, i * 2 + dir as u32 + 1) {
                        out.push((dir, f));
                    }
                    let (a6, b6) = if dir == 0 {
                        (v6(i as u8), v6(201))
                    } else {
                        (v6(201), v6(i as u8))
                    };
                    let big6 = Builder::ethernet()
                        .ipv6(a6, b6)
                        .udp(pa, pb)
                        .payload(&vec![i as u8 ^ 0xff; 500])
                        .build();
                    for f in fragment(&big6, 14, 256, i * 2 + dir as u32 + 9000) {
                        out.push((dir, f));
                    }
                }
            }
        }
        let uniq: BTreeSet<&Vec<u8>> = out.iter().map(|(_, f)| f).collect();
        assert_eq!(uniq.len(), out.len(), "test frames must be unique");
        out
    }

    /// Test frames by their exact bytes.
    pub struct Known(HashMap<Vec<u8>, usize>);

    impl Known {
        pub fn new(frames: &[(usize, Vec<u8>)]) -> Arc<Known> {
            Arc::new(Known(
                frames
                    .iter()
                    .enumerate()
                    .map(|(i, (_, f))| (f.clone(), i))
                    .collect(),
            ))
        }
        pub fn index(&self, data: &[u8]) -> Option<usize> {
            self.0.get(data).copied()
        }
    }

    type FragId = ([u8; 16], [u8; 16], u32);
    type SeenFrame = (u64, usize, Option<(FlowKey, Direction)>, Option<FragId>);

    /// A worker recording which test frames it saw (ts, index, key, fragment id).
    pub struct Seen {
        known: Arc<Known>,
        count: Arc<AtomicU64>,
        /// (timestamp, index in the packet set, flow key, fragment id)
        pub frames: Vec<SeenFrame>,
        pub foreign: u64,
        pub watermarks: u64,
    }

    impl Seen {
        pub fn new(known: &Arc<Known>, count: &Arc<AtomicU64>) -> Seen {
            Seen {
                known: Arc::clone(known),
                count: Arc::clone(count),
                frames: Vec::new(),
                foreign: 0,
                watermarks: 0,
            }
        }
    }

    impl Worker for Seen {
        fn packet(&mut self, pkt: &PacketRef<'_>, d: &Dissection) {
            let Some(i) = self.known.index(pkt.data) else {
                self.foreign += 1; // neighbour discovery and other chatter on the link
                return;
            };
            let frag = d.frag.is_fragment.then(|| {
                let (a, b) = if d.src <= d.dst {
                    (d.src, d.dst)
                } else {
                    (d.dst, d.src)
                };
                (a, b, d.frag.ident)
            });
            self.frames
                .push((pkt.ts_ns, i, FlowKey::from_dissection(d), frag));
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        fn watermark(&mut self, _ts_ns: u64) {
            self.watermarks += 1;
        }
        fn finish(&mut self) {}
    }

    /// Runs a 2-worker pipeline (`run` starts it on the source) while `frames` are sent from
    /// the namespace, until every test frame arrived or 10 s passed; returns the workers and
    /// the final counters.
    pub fn capture(
        net: &Netns,
        frames: &[(usize, Vec<u8>)],
        send: &[(usize, Vec<u8>)],
        run: impl FnOnce(&Pipeline, &mut [Seen]) -> Result<RunReport, PipelineError> + Send,
    ) -> (Vec<Seen>, CountersSnapshot) {
        let p = Pipeline::new(PipelineConfig {
            workers: 2,
            batch: 16,
            ..PipelineConfig::default()
        });
        let stop = p.stop_handle();
        let counters = Arc::clone(p.counters());
        let known = Known::new(frames);
        let count = Arc::new(AtomicU64::new(0));
        let mut ws = vec![Seen::new(&known, &count), Seen::new(&known, &count)];
        /// Stops the pipeline even when an assertion below panics (else the scope would hang).
        struct StopOnDrop(Arc<AtomicBool>);
        impl Drop for StopOnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        std::thread::scope(|s| {
            let _stop_guard = StopOnDrop(Arc::clone(&stop));
            let h = s.spawn(|| run(&p, &mut ws));
            std::thread::sleep(Duration::from_millis(200));
            net.send(send);
            let t0 = Instant::now();
            while count.load(Ordering::Relaxed) < frames.len() as u64
                && t0.elapsed() < Duration::from_secs(10)
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            // let an idle period pass so wall-clock watermarks are sent
            std::thread::sleep(Duration::from_millis(50));
            stop.store(true, Ordering::Relaxed);
            h.join().unwrap().unwrap();
        });
        (ws, counters.snapshot())
    }

    /// Every test frame exactly once; every flow (both directions) and every fragmented
    /// datagram on one worker; each worker's frames in time order; both workers busy; idle
    /// watermarks seen; nothing dropped.
    pub fn check(ws: &[Seen], s: &CountersSnapshot, frames: &[(usize, Vec<u8>)]) {
        check_with(ws, s, frames, true);
    }

    /// As [`check`]; with `worker_order` false only each flow's frames must be in time order
    /// (several RX queues deliver different flows with small time overlaps between batches).
    pub fn check_with(
        ws: &[Seen],
        s: &CountersSnapshot,
        frames: &[(usize, Vec<u8>)],
        worker_order: bool,
    ) {
        let mut all: Vec<usize> = ws
            .iter()
            .flat_map(|w| w.frames.iter().map(|f| f.1))
            .collect();
        all.sort_unstable();
        assert_eq!(
            all,
            (0..frames.len()).collect::<Vec<_>>(),
            "every frame exactly once; {s:?}"
        );
        let mut key_worker: BTreeMap<FlowKey, usize> = BTreeMap::new();
        let mut dirs: BTreeMap<FlowKey, BTreeSet<u8>> = BTreeMap::new();
        let mut frag_worker: BTreeMap<FragId, usize> = BTreeMap::new();
        let mut flow_last: BTreeMap<FlowKey, u64> = BTreeMap::new();
        for (w, seen) in ws.iter().enumerate() {
            let mut last = (0, 0);
            for &(ts, i, key, frag) in &seen.frames {
                assert!(
                    !worker_order || ts >= last.0,
                    "worker {w}: frame {i} at {ts} after frame {} at {}",
                    last.1,
                    last.0
                );
                last = (ts, i);
                let (k, d) = key.expect("test frames have flow keys");
                let fl = flow_last.entry(k).or_insert(0);
                assert!(ts >= *fl, "flow {k:?}: frames out of time order");
                *fl = ts;
                assert_eq!(
                    *key_worker.entry(k).or_insert(w),
                    w,
                    "flow {k:?} on two workers"
                );
                dirs.entry(k).or_default().insert(d as u8);
                if let Some(f) = frag {
                    assert_eq!(*frag_worker.entry(f).or_insert(w), w, "fragments split");
                }
            }
        }
        for (k, d) in &dirs {
            assert_eq!(d.len(), 2, "both directions of {k:?}");
        }
        assert!(frag_worker.len() >= 4, "fragmented datagrams in the set");
        assert!(
            ws.iter().all(|w| !w.frames.is_empty()),
            "both workers got traffic"
        );
        assert!(ws.iter().all(|w| w.watermarks > 0));
        assert_eq!(s.ring_full_drops, 0);
    }
}

#[cfg(feature = "live")]
#[test]
fn live_capture_over_veth_delivers_every_frame_once() {
    use mplane_capture::source::SourceSpec;
    use mplane_capture::source::live::LiveConfig;
    let Some(net) = netns::Netns::create("lv", 1, 1) else {
        return;
    };
    let frames = netns::packet_set(60);
    let send: Vec<_> = frames.iter().map(|(_, f)| (0, f.clone())).collect();
    let spec: SourceSpec = format!("pcap-live:{}", net.host[0]).parse().unwrap();
    let src = spec
        .open_live(&LiveConfig {
            filter: Some("ether src 02:00:00:00:00:01".into()),
            ..LiveConfig::default()
        })
        .unwrap();
    let (ws, s) = netns::capture(&net, &frames, &send, move |p, ws| p.run_source(src, ws));
    netns::check(&ws, &s, &frames);
    assert!(ws.iter().all(|w| w.foreign == 0), "the BPF filter applies");
    assert_eq!(s.source.kernel_drops, 0);
    assert_eq!(s.source.snaplen_cut, 0);
    assert_eq!(s.source.over_mtu, 0);
}

/// A two-port tap: each port sees one direction. The merged source is complete and strictly
/// time-ordered, each port's frames keep their order, and the ports really interleave.
#[cfg(feature = "live")]
#[test]
fn live_two_port_merge_is_time_ordered_and_complete() {
    use mplane_capture::source::SourceSpec;
    use mplane_capture::source::live::LiveConfig;
    use std::time::{Duration, Instant};
    let Some(net) = netns::Netns::create("mg", 2, 1) else {
        return;
    };
    let frames = netns::packet_set(60);
    let spec: SourceSpec = format!("pcap-live:{},{}", net.host[0], net.host[1])
        .parse()
        .unwrap();
    let cfg = LiveConfig {
        filter: Some("ether src 02:00:00:00:00:01".into()),
        ..LiveConfig::default()
    };
    let known = netns::Known::new(&frames);

    // 1. The source on its own: the merged order.
    let mut src = spec.open_live(&cfg).unwrap();
    let mut got: Vec<(u64, usize)> = Vec::new();
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(200));
            net.send(&frames);
        });
        let t0 = Instant::now();
        while got.len() < frames.len() && t0.elapsed() < Duration::from_secs(10) {
            match src.next_packet().unwrap() {
                Some(p) => {
                    let i = known
                        .index(p.data)
                        .expect("only test frames pass the filter");
                    got.push((p.ts_ns, i));
                }
                None => src.wait_readable(Duration::from_millis(5)),
            }
        }
    });
    let mut ids: Vec<usize> = got.iter().map(|g| g.1).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..frames.len()).collect::<Vec<_>>(), "complete, once");
    assert!(
        got.windows(2).all(|w| w[0].0 <= w[1].0),
        "merged stream strictly time-ordered"
    );
    for port in 0..2 {
        let seq: Vec<usize> = got
            .iter()
            .map(|g| g.1)
            .filter(|&i| frames[i].0 == port)
            .collect();
        assert!(seq.windows(2).all(|w| w[0] < w[1]), "port {port} in order");
    }
    let switches = got
        .windows(2)
        .filter(|w| frames[w[0].1].0 != frames[w[1].1].0)
        .count();
    assert!(
        switches > frames.len() / 4,
        "ports interleave ({switches} switches)"
    );
    let st = src.stats();
    assert_eq!(st.out_of_order, 0);
    assert_eq!(st.kernel_drops, 0);
    let per_if = src.interfaces();
    assert_eq!(per_if.len(), 2);
    let sent0 = frames.iter().filter(|f| f.0 == 0).count() as u64;
    assert_eq!(per_if[0].frames, sent0);
    assert_eq!(per_if[1].frames, frames.len() as u64 - sent0);
    drop(src);

    // 2. Through the pipeline: both directions of each flow (from two ports) meet on one worker.
    let src = spec.open_live(&cfg).unwrap();
    let (ws, s) = netns::capture(&net, &frames, &frames, move |p, ws| p.run_source(src, ws));
    netns::check(&ws, &s, &frames);
    assert_eq!(s.source.out_of_order, 0);
}

/// SPAN ports mirroring ingress and egress: every frame arrives on both ports. With duplicate
/// suppression each is delivered once and the copies are counted.
#[cfg(feature = "live")]
#[test]
fn live_span_duplicates_are_suppressed_and_counted() {
    use mplane_capture::source::SourceSpec;
    use mplane_capture::source::live::LiveConfig;
    use std::time::Duration;
    let Some(net) = netns::Netns::create("dd", 2, 1) else {
        return;
    };
    let frames = netns::packet_set(30);
    let send: Vec<(usize, Vec<u8>)> = frames
        .iter()
        .flat_map(|(_, f)| [(0, f.clone()), (1, f.clone())])
        .collect();
    let spec: SourceSpec = format!("pcap-live:{},{}", net.host[0], net.host[1])
        .parse()
        .unwrap();
    let src = spec
        .open_live(&LiveConfig {
            filter: Some("ether src 02:00:00:00:00:01".into()),
            // generous: the sender's two copies may be descheduled apart on a busy machine
            dedup_window: Some(Duration::from_millis(200)),
            ..LiveConfig::default()
        })
        .unwrap();
    let (ws, s) = netns::capture(&net, &frames, &send, move |p, ws| p.run_source(src, ws));
    netns::check(&ws, &s, &frames);
    assert_eq!(s.source.duplicates, frames.len() as u64);
}

/// Offloads read from a veth match what `ethtool` set; the suggested fix command, run as is,
/// turns every receive-side distortion off; and the symptom (frames longer than the MTU, here
/// GSO super-frames) is counted while those frames are still delivered whole.
#[cfg(feature = "live")]
#[test]
fn hygiene_offloads_of_a_veth_and_over_mtu_frames() {
    use mplane_capture::hygiene::{Offload, Offloads};
    use mplane_capture::source::SourceSpec;
    use mplane_capture::source::live::LiveConfig;
    let Some(net) = netns::Netns::create("hy", 1, 1) else {
        return;
    };
    if !netns::run(&["ethtool", "--version"]) {
        eprintln!("skipping hygiene test: ethtool not installed");
        return;
    }
    let h = &net.host[0];
    netns::run_ok(&["ethtool", "-K", h, "gro", "on"]);
    let o = Offloads::read(h).unwrap();
    assert_eq!(o.mtu, 1500);
    let gro = o.get(Offload::Gro).unwrap();
    assert!(gro.active && gro.changeable, "{o}");
    assert!(
        o.get(Offload::RxVlanStrip).unwrap().active,
        "veth strips VLAN tags: {o}"
    );
    assert!(
        !o.get(Offload::Lro).unwrap().changeable,
        "veth has no LRO: {o}"
    );
    assert!(!o.receive_clean());
    let fix = o.fix_command().unwrap();
    assert!(
        fix.contains(" gro off") && fix.contains(" rxvlan off"),
        "{fix}"
    );
    assert!(
        !fix.contains(" lro off"),
        "fixed features are left out: {fix}"
    );
    assert!(o.warnings().iter().any(|w| w.contains("gro is on")));
    assert!(o.pairs().contains(&("gro", true)));
    netns::run_ok(&["sh", "-c", &fix]);
    let o = Offloads::read(h).unwrap();
    assert!(o.receive_clean(), "after `{fix}`: {o}");
    assert!(!o.get(Offload::Gro).unwrap().active);

    // The symptom: three GSO super-frames among normal frames.
    let mut frames = netns::packet_set(10);
    let mut send: Vec<(usize, Vec<u8>)> = frames.iter().map(|(_, f)| (0, f.clone())).collect();
    for k in 0..3 {
        let (with_hdr, frame) = netns::gso_frame(k * 5000, 5000);
        assert!(frame.len() > 1500 + 22);
        send.push((0x80, with_hdr));
        frames.push((0, frame));
    }
    let spec: SourceSpec = format!("pcap-live:{h}").parse().unwrap();
    let src = spec
        .open_live(&LiveConfig {
            filter: Some("ether src 02:00:00:00:00:01".into()),
            ..LiveConfig::default()
        })
        .unwrap();
    let (ws, s) = netns::capture(&net, &frames, &send, move |p, ws| p.run_source(src, ws));
    let got: usize = ws.iter().map(|w| w.frames.len()).sum();
    assert_eq!(got, frames.len(), "super-frames delivered whole, {s:?}");
    assert_eq!(s.source.over_mtu, 3);
    assert_eq!(s.source.snaplen_cut, 0);
}

/// Skips (with a message) where the kernel or the machine cannot run AF_XDP tests.
#[cfg(feature = "xdp")]
fn xdp_unavailable(tag: &str, e: &mplane_capture::source::SourceError) -> bool {
    let m = e.to_string();
    // Kernels without AF_XDP (CONFIG_XDP_SOCKETS) or BPF give EAFNOSUPPORT / ENOSYS.
    if m.contains("Address family not supported") || m.contains("Function not implemented") {
        eprintln!("skipping {tag}: the kernel lacks AF_XDP or BPF: {m}");
        return true;
    }
    false
}

/// Wall-clock time, ns since the Unix epoch.
#[cfg(feature = "xdp")]
fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// `true` if `ip` shows an XDP program attached to `iface`.
#[cfg(feature = "xdp")]
fn xdp_attached(iface: &str) -> bool {
    let out = std::process::Command::new("ip")
        .args(["-d", "link", "show", "dev", iface])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
}

/// AF_XDP in copy mode (veth has no zero-copy) with the program in generic and in native mode:
/// the known packet set exactly once through the zero-copy hand-off to two workers, frames too
/// large for a UMEM frame counted and never delivered, every UMEM frame accounted for, and the
/// program detached when the source is dropped.
#[cfg(feature = "xdp")]
#[test]
fn xdp_capture_over_veth_delivers_every_frame_once() {
    use mplane_capture::source::SourceSpec;
    use mplane_capture::source::xdp::{AttachMode, BindMode, XdpConfig};
    for attach in [AttachMode::Skb, AttachMode::Driver] {
        let Some(net) = netns::Netns::create("xd", 1, 1) else {
            return;
        };
        let h = net.host[0].clone();
        // Jumbo MTU on both ends so the peer can send frames larger than a 2 KiB UMEM frame.
        netns::run_ok(&["ip", "link", "set", &h, "mtu", "3000"]);
        netns::run_ok(&[
            "ip",
            "-n",
            &net.ns,
            "link",
            "set",
            &net.peer[0],
            "mtu",
            "3000",
        ]);
        let frames = netns::packet_set(60);
        let mut send: Vec<(usize, Vec<u8>)> = frames.iter().map(|(_, f)| (0, f.clone())).collect();
        for k in 0..5u16 {
            let big = Builder::ethernet()
                .ipv4([10, 80, 0, 1], [10, 80, 0, 2])
                .udp(7000 + k, 47000)
                .payload(&[0x5a; 2200])
                .build();
            send.insert(usize::from(k) * 50, (0, big));
        }
        let spec: SourceSpec = format!("xdp:{h}").parse().unwrap();
        let cfg = XdpConfig {
            frames: 4096,
            attach,
            bind: BindMode::Auto,
            ..XdpConfig::default()
        };
        let mut src = match spec.open_xdp(&cfg) {
            Ok(s) => s,
            Err(e) if xdp_unavailable("xdp test", &e) => return,
            Err(e) => panic!("{attach:?}: {e}"),
        };
        assert_eq!(src.attach_mode(), attach);
        assert!(
            !src.zero_copy(),
            "veth has no zero-copy: copy mode reported"
        );
        assert!(xdp_attached(&h));
        assert_eq!(src.max_frame_len(), 2048 - 256 - 16);
        let before = wall_ns();
        let (ws, s) = netns::capture(&net, &frames, &send, |p, ws| p.run_xdp(&mut src, ws));
        let after = wall_ns();
        netns::check(&ws, &s, &frames);
        // Stamped by the program (XDP metadata) or, where the kernel refuses it, when read:
        // wall-clock times inside the capture either way.
        eprintln!(
            "{attach:?}: timestamps from {}",
            if src.kernel_timestamps() {
                "XDP metadata"
            } else {
                "the reader"
            }
        );
        for w in &ws {
            for f in &w.frames {
                assert!(
                    (before..=after).contains(&f.0),
                    "{attach:?}: frame {} at {} outside the capture {before}..{after}",
                    f.1,
                    f.0
                );
            }
        }
        assert_eq!(s.source.oversize, 5, "{attach:?}: {s:?}");
        assert_eq!(s.source.kernel_drops, 0, "{attach:?}: {s:?}");
        assert!(
            ws.iter()
                .all(|w| w.frames.iter().all(|f| frames[f.1].1.len() <= 1776)),
            "no oversize frame delivered"
        );
        let acc = src.frames_accounted();
        assert_eq!(acc.lent, 0, "every lent frame came back: {acc:?}");
        assert_eq!(
            acc.fill_ring + acc.rx_ring + acc.pending,
            acc.total,
            "no frame lost: {acc:?}"
        );
        drop(src);
        assert!(!xdp_attached(&h), "program detached on drop");
        // The kernel frees the queue in deferred work: reopening at once must still work.
        let again = spec.open_xdp(&cfg).unwrap();
        assert!(xdp_attached(&h));
        drop(again);
    }
}

/// Two RX queues in native mode (a veth created with two queues): one socket per queue on a
/// shared UMEM, both queues busy, everything delivered once with each flow on one worker.
#[cfg(feature = "xdp")]
#[test]
fn xdp_two_queues_share_one_umem() {
    use mplane_capture::source::SourceSpec;
    use mplane_capture::source::xdp::{AttachMode, XdpConfig};
    let Some(net) = netns::Netns::create("xq", 1, 2) else {
        return;
    };
    let h = net.host[0].clone();
    let frames = netns::packet_set(80);
    let send: Vec<_> = frames.iter().map(|(_, f)| (0, f.clone())).collect();
    let spec: SourceSpec = format!("xdp:{h}:2").parse().unwrap();
    let cfg = XdpConfig {
        frames: 8192,
        attach: AttachMode::Driver,
        ..XdpConfig::default()
    };
    let mut src = match spec.open_xdp(&cfg) {
        Ok(s) => s,
        Err(e) if xdp_unavailable("xdp two-queue test", &e) => return,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(src.queues(), 2);
    let (ws, s) = netns::capture(&net, &frames, &send, |p, ws| p.run_xdp(&mut src, ws));
    netns::check_with(&ws, &s, &frames, false);
    let per_q = src.frames_per_queue();
    assert!(
        per_q.iter().all(|&n| n > 0),
        "both queues received: {per_q:?}"
    );
    assert_eq!(s.source.kernel_drops, 0);
    let acc = src.frames_accounted();
    assert_eq!(acc.lent, 0);
    assert_eq!(
        acc.fill_ring + acc.rx_ring + acc.pending,
        acc.total,
        "{acc:?}"
    );
}
