//! Flow metering checked against independent readers: the generator's ground truth, tshark's
//! conversation tables and per-packet fields, and captures built around real protocol bytes
//! (rustls ClientHellos, quinn QUIC Initials), and the same file written by every CPU level
//! the export's loops are compiled for. Needs `tshark` and `qemu-user` (Debian packages).

mod cpus;
mod crafted;
mod support;

use std::collections::HashMap;

use mplane_capture::flow::KeyKind;
use mplane_probe::passive::record::EndReason;
use support::*;

const BIG: u64 = 1_000_000; // seconds: no idle or active timeout fires

#[test]
fn sidecar_counts_are_matched_exactly() {
    let truth = sidecar();
    let recs = records(fixture(), 1, &meter_cfg(BIG, BIG));
    let n = |k: &str| truth[k].as_u64().unwrap();
    assert_eq!(recs.len() as u64, n("flows"), "flows");
    let count = |f: &dyn Fn(&mplane_probe::passive::record::FlowRecord) -> bool| {
        recs.iter().filter(|(r, _)| f(r)).count() as u64
    };
    assert_eq!(
        count(&|r| r.key.ip_version == 6),
        n("flows_ipv6"),
        "IPv6 flows"
    );
    assert_eq!(
        count(&|r| r.key.vlans[0] != 0),
        n("flows_vlan"),
        "VLAN flows"
    );
    assert_eq!(
        count(&|r| r.key.vlans[1] != 0),
        n("flows_qinq"),
        "QinQ flows"
    );
    assert_eq!(
        count(&|r| r.fwd.packets == 0 || r.bwd.packets == 0),
        n("flows_unidirectional"),
        "one-way flows"
    );
    let packets: u64 = recs.iter().map(|(r, _)| r.packets()).sum();
    assert_eq!(packets, n("packets"), "Σ packets over flows = IP packets");
    let octets: u64 = recs.iter().map(|(r, _)| r.ip_octets()).sum();
    assert_eq!(octets, n("bytes_ip"), "Σ IP octets");
    let dns = recs
        .iter()
        .filter(|(r, name)| {
            r.app.kind == mplane_probe::passive::record::AppKind::Dns && !name.is_empty()
        })
        .count() as u64;
    assert_eq!(
        dns,
        truth["by_kind"]["dns"].as_u64().unwrap(),
        "DNS flows with a query name"
    );
    // nothing ended by a timeout; everything open at the end is a shutdown record
    assert!(
        recs.iter()
            .all(|(r, _)| r.end != EndReason::Idle && r.end != EndReason::Active)
    );
}

#[test]
fn idle_timeouts_split_exactly_at_the_gaps_above_them() {
    let pkts = tshark_packets(fixture());
    let base = records(fixture(), 1, &meter_cfg(BIG, BIG)).len();
    for idle in [60u64, 120, 300] {
        // gaps above the timeout within each TCP/UDP conversation, from tshark's timestamps
        let mut last: HashMap<Conv, u64> = HashMap::new();
        let mut gaps = 0;
        for p in &pkts {
            let c = conv(p.src, p.dst, p.proto);
            if let Some(prev) = last.insert(c, p.ts_ns)
                && p.ts_ns - prev > idle * 1_000_000_000
            {
                gaps += 1;
            }
        }
        let recs = records(fixture(), 1, &meter_cfg(idle, BIG));
        assert_eq!(
            recs.len(),
            base + gaps,
            "idle {idle} s: {gaps} gaps above it"
        );
        if idle == 60 {
            assert_eq!(
                gaps as u64,
                sidecar()["flows_with_idle_gap_over_60s"].as_u64().unwrap()
            );
        }
        let idled = recs
            .iter()
            .filter(|(r, _)| r.end == EndReason::Idle)
            .count();
        assert!(
            idled >= gaps,
            "every split ends its first part by idle timeout"
        );
    }
}

#[test]
fn active_timeout_cuts_long_flows_into_records_that_add_up() {
    let whole = records(fixture(), 1, &meter_cfg(BIG, BIG));
    let cut = records(fixture(), 1, &meter_cfg(BIG, 5));
    assert!(cut.len() > whole.len());
    assert!(cut.iter().any(|(r, _)| r.end == EndReason::Active));
    let sum = |v: &[(mplane_probe::passive::record::FlowRecord, Vec<u8>)]| -> (u64, u64) {
        (
            v.iter().map(|(r, _)| r.packets()).sum(),
            v.iter().map(|(r, _)| r.ip_octets()).sum(),
        )
    };
    assert_eq!(sum(&cut), sum(&whole));
    // no record spans more than the active timeout
    for (r, _) in &cut {
        assert!(r.last_ns() - r.first_ns() < 5_000_000_000, "{r:?}");
    }
    // merged back by flow, the segments give the whole flows
    let mut merged: HashMap<
        (mplane_capture::flow::FlowKey, u64),
        mplane_probe::passive::record::FlowRecord,
    > = HashMap::new();
    for (r, _) in &cut {
        merged
            .entry((r.key, r.flow_start_ns))
            .and_modify(|m| m.merge(r))
            .or_insert(*r);
    }
    assert_eq!(merged.len(), whole.len());
    for (w, _) in &whole {
        let m = &merged[&(w.key, w.flow_start_ns)];
        assert_eq!(
            (m.fwd.packets, m.bwd.packets),
            (w.fwd.packets, w.bwd.packets)
        );
        assert_eq!(
            (m.fwd.ip_octets, m.bwd.ip_octets),
            (w.fwd.ip_octets, w.bwd.ip_octets)
        );
        assert_eq!(
            m.fwd.rtt.count + m.bwd.rtt.count,
            w.fwd.rtt.count + w.bwd.rtt.count
        );
    }
}

#[test]
fn per_flow_packets_and_ip_octets_equal_tshark() {
    let recs = records(fixture(), 1, &meter_cfg(BIG, BIG));
    let mut convs = tshark_conversations(fixture(), "tcp");
    convs.extend(tshark_conversations(fixture(), "udp"));
    // IP lengths per conversation and direction (lower endpoint first)
    let mut octets: HashMap<Conv, (u64, u64)> = HashMap::new();
    for p in tshark_packets(fixture()) {
        let c = conv(p.src, p.dst, p.proto);
        let e = octets.entry(c).or_default();
        if c.0 == p.src {
            e.0 += p.ip_len;
        } else {
            e.1 += p.ip_len;
        }
    }
    let mut seen = 0;
    for (r, _) in &recs {
        if r.kind() != KeyKind::Transport || !matches!(r.key.protocol, 6 | 17) {
            continue;
        }
        let (s, d) = (r.source(), r.destination());
        let c = conv(s, d, r.key.protocol);
        let forward_is_lower = c.0 == s;
        let orient = |(lo, hi): (u64, u64)| if forward_is_lower { (lo, hi) } else { (hi, lo) };
        let t = convs
            .get(&c)
            .unwrap_or_else(|| panic!("tshark has no conversation {c:?}"));
        assert_eq!(
            (r.fwd.packets, r.bwd.packets),
            orient(*t),
            "packets of {c:?}"
        );
        assert_eq!(
            (r.fwd.ip_octets, r.bwd.ip_octets),
            orient(octets[&c]),
            "IP octets of {c:?}"
        );
        seen += 1;
    }
    assert_eq!(seen, convs.len(), "every tshark conversation is one flow");
}

#[test]
fn one_and_two_workers_give_identical_records() {
    for (idle, active) in [(BIG, BIG), (60, 20)] {
        let cfg = meter_cfg(idle, active);
        let one = sorted(records(fixture(), 1, &cfg));
        let two = sorted(records(fixture(), 2, &cfg));
        let three = sorted(records(fixture(), 3, &cfg));
        assert_eq!(one.len(), two.len());
        assert!(
            one == two,
            "1 vs 2 workers differ (idle {idle}, active {active})"
        );
        assert!(
            one == three,
            "1 vs 3 workers differ (idle {idle}, active {active})"
        );
    }
}

#[test]
fn handshake_rtts_equal_those_of_the_packet_times() {
    let recs = records(fixture(), 1, &meter_cfg(BIG, BIG));
    // per conversation: last SYN before the first SYN/ACK, the SYN/ACK, the ACK of it
    #[derive(Default)]
    struct Hs {
        syn: Option<(u64, (std::net::IpAddr, u16))>,
        synack: Option<(u64, u32)>,
        ack: Option<u64>,
    }
    let mut hs: HashMap<Conv, Hs> = HashMap::new();
    for p in tshark_packets(fixture()).iter().filter(|p| p.proto == 6) {
        let h = hs.entry(conv(p.src, p.dst, 6)).or_default();
        let (syn, ack) = (p.tcp_flags & 2 != 0, p.tcp_flags & 16 != 0);
        if syn && !ack && h.synack.is_none() {
            h.syn = Some((p.ts_ns, p.src));
        } else if syn && ack && h.synack.is_none() {
            h.synack = Some((p.ts_ns, p.seq));
        } else if !syn
            && ack
            && h.ack.is_none()
            && let (Some((_, init)), Some((_, sseq))) = (h.syn, h.synack)
            && p.src == init
            && p.ack == sseq.wrapping_add(1)
        {
            h.ack = Some(p.ts_ns);
        }
    }
    let mut checked = 0;
    for (r, _) in recs.iter().filter(|(r, _)| r.key.protocol == 6) {
        let h = &hs[&conv(r.source(), r.destination(), 6)];
        let expect_resp = match (h.syn, h.synack) {
            (Some((s, _)), Some((a, _))) => Some(a - s),
            _ => None,
        };
        let expect_init = match (h.synack, h.ack) {
            (Some((a, _)), Some(k)) => Some(k - a),
            _ => None,
        };
        assert_eq!(r.handshake_responder_ns, expect_resp, "{:?}", r.source());
        assert_eq!(r.handshake_initiator_ns, expect_init, "{:?}", r.source());
        checked += usize::from(expect_init.is_some());
    }
    assert!(checked > 500, "{checked} complete handshakes");
}

#[test]
fn replay_with_split_reals_writes_the_same_records() {
    use mplane_export::arrow_array::{Array, RecordBatch};
    use mplane_export::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use mplane_export::parquet::basic::Encoding;
    use mplane_export::parquet::file::reader::{FileReader, SerializedFileReader};
    use mplane_probe::passive::replay::{ReplayConfig, replay};

    let dir = tempfile::tempdir().unwrap();
    let mut tables: Vec<Vec<RecordBatch>> = Vec::new();
    for split in [false, true] {
        let mut cfg = ReplayConfig::new(fixture(), dir.path().join(split.to_string()));
        cfg.split_reals = split;
        let s = replay(&cfg, None).unwrap();
        assert_eq!(s.files.len(), 1);
        let path = &s.files[0].path;
        // every real column (and only those) in byte streams when asked
        let r = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
        let schema = r.metadata().file_metadata().schema_descr_ptr();
        let mut reals = 0;
        for (i, c) in r.metadata().row_group(0).columns().iter().enumerate() {
            let is_real =
                schema.column(i).physical_type() == mplane_export::parquet::basic::Type::DOUBLE;
            let split_here = c.encodings().any(|e| e == Encoding::BYTE_STREAM_SPLIT);
            assert_eq!(split_here, split && is_real, "column {}", c.column_path());
            reals += usize::from(is_real);
        }
        assert!(reals >= 10, "{reals} real columns");
        let f = std::fs::File::open(path).unwrap();
        let batches = ParquetRecordBatchReaderBuilder::try_new(f)
            .unwrap()
            .build()
            .unwrap()
            .map(|b| b.unwrap())
            .collect();
        tables.push(batches);
    }
    let (plain, split) = (&tables[0], &tables[1]);
    assert_eq!(plain.len(), split.len());
    let mut rtts = 0;
    for (a, b) in plain.iter().zip(split) {
        assert_eq!(a, b, "same rows, same values");
        rtts += a.column_by_name("rtt_handshake_source_ms").unwrap().len()
            - a.column_by_name("rtt_handshake_source_ms")
                .unwrap()
                .null_count();
    }
    assert!(rtts > 100, "{rtts} handshake RTTs to compare");
}
