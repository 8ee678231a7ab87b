//! Criterion benches of the capture hot path: dissection per frame kind, flow key + hashes.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mplane_capture::builder::Builder;
use mplane_capture::flow::FlowKey;
use mplane_capture::packet::tcp::flags;
use mplane_capture::packet::{Dissection, LinkType, dissect, dissect_into};

fn frames() -> Vec<(&'static str, Vec<u8>)> {
    let a = [10, 0, 0, 1];
    let b = [192, 168, 1, 2];
    let mut a6 = [0u8; 16];
    a6[0] = 0x20;
    let mut b6 = a6;
    b6[15] = 1;
    vec![
        (
            "eth_ipv4_tcp_opts",
            Builder::ethernet()
                .ipv4(a, b)
                .tcp_with(
                    1234,
                    443,
                    1,
                    0,
                    flags::SYN,
                    65535,
                    &[
                        2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
                    ],
                )
                .build(),
        ),
        (
            "eth_vlan_ipv4_udp",
            Builder::ethernet()
                .vlan(10)
                .ipv4(a, b)
                .udp(5353, 53)
                .payload(&[0; 40])
                .build(),
        ),
        (
            "eth_qinq_ipv6_tcp",
            Builder::ethernet()
                .qinq(1)
                .vlan(2)
                .ipv6(a6, b6)
                .tcp(1, 2, 3, 4, flags::ACK)
                .payload(&[0; 1000])
                .build(),
        ),
        (
            "eth_ipv4_vxlan_ipv4_tcp",
            Builder::ethernet()
                .ipv4(a, b)
                .udp(40000, 4789)
                .vxlan(7)
                .inner_ethernet()
                .ipv4(b, a)
                .tcp(22, 5000, 1, 1, flags::ACK)
                .build(),
        ),
    ]
}

fn bench(c: &mut Criterion) {
    let frames = frames();
    let mut g = c.benchmark_group("dissect");
    g.throughput(Throughput::Elements(1));
    for (name, f) in &frames {
        g.bench_function(*name, |bch| {
            let mut d = Dissection::default();
            bch.iter(|| {
                dissect_into(&mut d, LinkType::ETHERNET, black_box(f));
                black_box(&d);
            })
        });
    }
    g.finish();
    let mut g = c.benchmark_group("flow_key");
    g.throughput(Throughput::Elements(1));
    for (name, f) in &frames {
        let d = dissect(LinkType::ETHERNET, f);
        g.bench_function(*name, |bch| {
            bch.iter(|| {
                let (k, dir) = FlowKey::from_dissection(black_box(&d)).unwrap();
                black_box((k.hash64(), k.worker_hash(), dir))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
