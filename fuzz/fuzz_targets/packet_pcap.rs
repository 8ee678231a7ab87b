//! Fuzz the pcap/pcapng reader: any bytes as a capture file; read every record and dissect it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mplane_capture::packet::dissect;
use mplane_capture::source::PacketSource;
use mplane_capture::source::pcap::PcapFile;

fuzz_target!(|data: &[u8]| {
    let Ok(mut f) = PcapFile::from_bytes(data.to_vec()) else {
        return;
    };
    while let Ok(Some(p)) = f.next_packet() {
        assert!(p.data.len() <= data.len());
        let _ = dissect(p.link, p.data);
    }
});
