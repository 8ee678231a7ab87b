//! Fuzz the dissector and the flow key: the first byte picks the link type, the rest is the frame.
//! Properties: no panic, offsets inside the frame, the key is canonical.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mplane_capture::flow::FlowKey;
use mplane_capture::packet::{LinkType, dissect};

const LINKS: [LinkType; 10] = [
    LinkType::ETHERNET,
    LinkType::NULL,
    LinkType::LOOP,
    LinkType::RAW,
    LinkType::IPV4,
    LinkType::IPV6,
    LinkType::LINUX_SLL,
    LinkType::LINUX_SLL2,
    LinkType::RAW_BSD12,
    LinkType::RAW_BSD14,
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, frame)) = data.split_first() else {
        return;
    };
    let d = dissect(LINKS[usize::from(sel) % LINKS.len()], frame);
    assert!(d.l3_offset as usize <= frame.len());
    assert!(d.l4_offset as usize <= frame.len());
    if let Some((k, _)) = FlowKey::from_dissection(&d) {
        assert!((k.addr_a, k.port_a) <= (k.addr_b, k.port_b));
        let _ = (k.hash64(), k.worker(3));
    }
});
