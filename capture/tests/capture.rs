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
    let mut reference_watermarks = None;
    for path in [&pcap, &ng] {
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

/// Helpers for tests through a veth pair into a fresh network namespace. They need root (netns
/// + veth) and python3 (the AF_PACKET sender in the namespace) and skip with a message otherwise.
#[cfg(any(feature = "live", feature = "xdp"))]
mod netns {
    use std::process::Command;

    use super::*;

    /// Removes the namespace and the host end of the veth pair in every case.
    pub struct NetnsGuard {
        pub ns: String,
        pub host_if: String,
    }
    impl Drop for NetnsGuard {
        fn drop(&mut self) {
            let _ = Command::new("ip")
                .args(["link", "del", &self.host_if])
                .status();
            let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        }
    }

    pub fn run(args: &[&str]) -> bool {
        Command::new(args[0])
            .args(&args[1..])
            .status()
            .is_ok_and(|s| s.success())
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

    pub const SENDER: &str = r#"
import socket, struct, sys
data = open(sys.argv[1], 'rb').read()
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[2], 0))
i = 0
while i < len(data):
    n = struct.unpack('<I', data[i:i + 4])[0]
    s.send(data[i + 4:i + 4 + n])
    i += 4 + n
"#;

    #[derive(Default)]
    pub struct Ids {
        pub ids: Vec<u32>,
        pub watermarks: u64,
    }
    impl Worker for Ids {
        fn packet(&mut self, pkt: &PacketRef<'_>, d: &Dissection) {
            if d.dst_port != 47000 {
                return; // neighbour discovery and other chatter on the link
            }
            let p = d.payload_offset as usize;
            if let Some(b) = pkt.data.get(p..p + 4) {
                self.ids.push(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            }
        }
        fn watermark(&mut self, _ts_ns: u64) {
            self.watermarks += 1;
        }
        fn finish(&mut self) {}
    }

    /// Creates the namespace and veth pair (host end up in this namespace, peer in `ns`) and
    /// writes `n` numbered UDP frames for the sender. `None` (after a message) if not possible.
    pub fn setup(tag: &str, n: u32) -> Option<(NetnsGuard, String, tempfile::TempDir)> {
        if !is_root() {
            eprintln!("skipping {tag}: needs root to create a netns and veth");
            return None;
        }
        if !run(&["python3", "-c", "import socket; socket.AF_PACKET"]) {
            eprintln!("skipping {tag}: python3 with AF_PACKET not available");
            return None;
        }
        let pid = std::process::id() % 100_000;
        let guard = NetnsGuard {
            ns: format!("mp{tag}{pid}"),
            host_if: format!("mph{tag}{pid}"),
        };
        let peer = format!("mpp{tag}{pid}");
        assert!(run(&["ip", "netns", "add", &guard.ns]));
        assert!(run(&[
            "ip",
            "link",
            "add",
            &guard.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &peer
        ]));
        assert!(run(&["ip", "link", "set", &peer, "netns", &guard.ns]));
        assert!(run(&["ip", "link", "set", &guard.host_if, "up"]));
        assert!(run(&["ip", "-n", &guard.ns, "link", "set", &peer, "up"]));
        let mut blob = Vec::new();
        for i in 0..n {
            let f = Builder::ethernet()
                .ipv4(
                    [10, 77, (i / 200) as u8, (i % 200) as u8 + 1],
                    [10, 78, 0, 1],
                )
                .udp(40000 + (i % 7) as u16, 47000)
                .payload(&i.to_be_bytes())
                .build();
            blob.extend_from_slice(&(f.len() as u32).to_le_bytes());
            blob.extend_from_slice(&f);
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("frames.bin"), &blob).unwrap();
        Some((guard, peer, dir))
    }

    /// Sends the frames from the namespace side.
    pub fn send(guard: &NetnsGuard, peer: &str, dir: &tempfile::TempDir) {
        let sent = Command::new("ip")
            .args(["netns", "exec", &guard.ns, "python3", "-c", SENDER])
            .arg(dir.path().join("frames.bin"))
            .arg(peer)
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// Runs `src` through a 2-worker pipeline while the frames are sent; returns the workers
    /// and the final counters.
    pub fn capture<S: PacketSource>(
        open: impl FnOnce() -> S + Send,
        n: u32,
        guard: &NetnsGuard,
        peer: &str,
        dir: &tempfile::TempDir,
    ) -> (Vec<Ids>, mplane_capture::counters::CountersSnapshot) {
        use std::sync::atomic::Ordering;
        use std::time::{Duration, Instant};
        let p = Pipeline::new(PipelineConfig {
            workers: 2,
            batch: 16,
            ..PipelineConfig::default()
        });
        let stop = p.stop_handle();
        let counters = std::sync::Arc::clone(p.counters());
        let mut ws = vec![Ids::default(), Ids::default()];
        /// Stops the pipeline even when an assertion below panics (else the scope would hang).
        struct StopOnDrop(std::sync::Arc<std::sync::atomic::AtomicBool>);
        impl Drop for StopOnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        std::thread::scope(|s| {
            let _stop_guard = StopOnDrop(std::sync::Arc::clone(&stop));
            let h = s.spawn(|| p.run_source(open(), &mut ws));
            std::thread::sleep(Duration::from_millis(200));
            send(guard, peer, dir);
            let t0 = Instant::now();
            while counters.snapshot().packets < u64::from(n)
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

    /// Every frame exactly once, both workers busy, idle watermarks seen.
    pub fn check(ws: &[Ids], s: &mplane_capture::counters::CountersSnapshot, n: u32) {
        let mut all: Vec<u32> = ws.iter().flat_map(|w| w.ids.iter().copied()).collect();
        all.sort_unstable();
        assert_eq!(
            all,
            (0..n).collect::<Vec<_>>(),
            "every frame exactly once; {s:?}"
        );
        assert!(
            ws.iter().all(|w| !w.ids.is_empty()),
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
    const N: u32 = 300;
    let Some((guard, peer, dir)) = netns::setup("lv", N) else {
        return;
    };
    let spec: SourceSpec = format!("pcap-live:{}", guard.host_if).parse().unwrap();
    let src = spec
        .open_live(&LiveConfig {
            filter: Some("udp and dst port 47000".into()),
            ..LiveConfig::default()
        })
        .unwrap();
    let (ws, s) = netns::capture(move || src, N, &guard, &peer, &dir);
    netns::check(&ws, &s, N);
    assert_eq!(s.source.kernel_drops, 0);
}

#[cfg(feature = "xdp")]
#[test]
fn xdp_capture_over_veth_delivers_every_frame_once() {
    use mplane_capture::source::xdp::{AttachMode, XdpConfig};
    const N: u32 = 300;
    let cfg = XdpConfig {
        frames: 4096,
        mode: AttachMode::Skb,
        ..XdpConfig::default()
    };
    if !cfg.object.exists() {
        eprintln!(
            "skipping xdp test: {} missing (apt-get install libxdp1)",
            cfg.object.display()
        );
        return;
    }
    let Some((guard, peer, dir)) = netns::setup("xd", N) else {
        return;
    };
    let spec: mplane_capture::source::SourceSpec =
        format!("xdp:{}", guard.host_if).parse().unwrap();
    let open = move || spec.open_xdp(&cfg).unwrap();
    let (ws, s) = netns::capture(open, N, &guard, &peer, &dir);
    netns::check(&ws, &s, N);
}
