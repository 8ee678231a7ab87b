//! A replay exported as IPFIX to a real collector: nfdump's `nfcapd` stores what it receives,
//! `nfdump` reads it back, and every flow has the same addresses, ports, protocol, packets and
//! octets in both directions as the Parquet file the same replay wrote. Needs `nfdump`
//! (Debian package; CI installs it).

#[path = "../../export/tests/support/nfcapd.rs"]
mod nfcapd;

use std::collections::HashMap;
use std::path::Path;

use nfcapd::Nfcapd;

use mplane_export::arrow_array::cast::AsArray;
use mplane_export::arrow_array::types::UInt64Type;
use mplane_export::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use mplane_probe::passive::ipfix::IpfixTarget;
use mplane_probe::passive::replay::{ReplayConfig, replay};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/flows-1500-seed7.pcap.zst"
);

type Row = (String, String, u64, u64, u64, u64, u64, u64, u64);

fn parquet_rows(dir: &Path) -> Vec<Row> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "parquet") {
            continue;
        }
        let r = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&p).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for b in r {
            let b = b.unwrap();
            let s = |n: &str| b.column_by_name(n).unwrap().as_string::<i32>().clone();
            let u = |n: &str| {
                b.column_by_name(n)
                    .unwrap()
                    .as_primitive::<UInt64Type>()
                    .clone()
            };
            let (sa, da) = (s("source_ip"), s("destination_ip"));
            let (sp, dp, pr) = (u("source_port"), u("destination_port"), u("ip_protocol"));
            let (ip, ib, op, ob) = (
                u("packets_forward"),
                u("octets_ip_forward"),
                u("packets_backward"),
                u("octets_ip_backward"),
            );
            for i in 0..b.num_rows() {
                let ports = matches!(pr.value(i), 6 | 17);
                out.push((
                    sa.value(i).to_string(),
                    da.value(i).to_string(),
                    if ports { sp.value(i) } else { 0 },
                    if ports { dp.value(i) } else { 0 },
                    pr.value(i),
                    ip.value(i),
                    ib.value(i),
                    op.value(i),
                    ob.value(i),
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn nfcapd_stores_what_the_parquet_files_hold() {
    if !Nfcapd::installed() {
        panic!(
            "nfcapd is not installed (apt-get install nfdump): this test needs a real collector"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("flows.pcap");
    std::fs::write(
        &pcap,
        zstd::decode_all(&std::fs::read(FIXTURE).unwrap()[..]).unwrap(),
    )
    .unwrap();
    let store = dir.path().join("nfcapd");
    std::fs::create_dir_all(&store).unwrap();
    let collector = Nfcapd::start(&store);
    let port = collector.port;

    let out = dir.path().join("parquet");
    let mut cfg = ReplayConfig::new(&pcap, &out);
    cfg.ipfix = Some(IpfixTarget::parse(&format!("ipfix://127.0.0.1:{port}")).unwrap());
    let s = replay(&cfg, None).unwrap();
    assert!(s.export_errors.is_empty(), "{:?}", s.export_errors);
    assert_eq!(s.ipfix_records, s.records);

    // CSV: full IPv6 addresses (the other formats abbreviate them)
    let text = collector.stop_and_dump("csv");
    let proto = |p: &str| match p {
        "TCP" => 6,
        "UDP" => 17,
        "ICMP" => 1,
        "ICMP6" => 58,
        other => other.parse().unwrap_or_else(|_| panic!("protocol {other}")),
    };
    let mut got: Vec<Row> = text
        .lines()
        .filter(|l| !l.starts_with("ts,") && l.matches(',').count() > 15)
        .map(|l| {
            let c: Vec<&str> = l.split(',').map(str::trim).collect();
            let n = |i: usize| c[i].parse::<u64>().unwrap_or_else(|_| panic!("{l}"));
            let pr = proto(c[7]);
            let ports = matches!(pr, 6 | 17);
            (
                c[3].to_string(),
                c[4].to_string(),
                if ports { n(5) } else { 0 },
                if ports { n(6) } else { 0 },
                pr,
                n(11),
                n(12),
                n(13),
                n(14),
            )
        })
        .collect();
    got.sort();
    let want = parquet_rows(&out);
    assert_eq!(want.len() as u64, s.records);
    assert_eq!(got.len(), want.len(), "flows in nfdump vs Parquet");
    if got != want {
        let w: HashMap<&Row, usize> = want.iter().fold(HashMap::new(), |mut m, r| {
            *m.entry(r).or_default() += 1;
            m
        });
        let first = got.iter().find(|r| !w.contains_key(r));
        panic!("nfdump and Parquet differ, e.g. {first:?}");
    }
    let pk: u64 = got.iter().map(|r| r.5 + r.7).sum();
    assert_eq!(pk, s.counters.packets, "every packet accounted for");
}
