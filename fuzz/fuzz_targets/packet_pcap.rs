//! Fuzz the pcap/pcapng reader: any bytes as a capture file; read every record and dissect it.
//! The same bytes read as a stream (a reader giving a few bytes at a time, as a pipe may)
//! must give the same packets and end the same way.
#![no_main]

use std::io::Read;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mplane_capture::packet::{LinkType, dissect};
use mplane_capture::source::decompress::Codec;
use mplane_capture::source::pcap::PcapFile;
use mplane_capture::source::{PacketSource, SourceError};

/// Gives at most `step` bytes per read.
struct Trickle {
    data: Vec<u8>,
    at: usize,
    step: usize,
}

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.step.min(buf.len()).min(self.data.len() - self.at);
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

type Read_ = (Vec<(Vec<u8>, u64, u32, LinkType)>, Option<String>);

fn read_all(f: Result<PcapFile, SourceError>, limit: usize) -> Read_ {
    let mut f = match f {
        Ok(f) => f,
        Err(e) => return (Vec::new(), Some(e.to_string())),
    };
    let mut out = Vec::new();
    loop {
        match f.next_packet() {
            Ok(Some(p)) => {
                assert!(p.data.len() <= limit);
                let _ = dissect(p.link, p.data);
                out.push((p.data.to_vec(), p.ts_ns, p.orig_len, p.link));
            }
            Ok(None) => return (out, None),
            Err(e) => return (out, Some(e.to_string())),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mapped = read_all(PcapFile::from_bytes(data.to_vec()), data.len());
    // a compressed stream is decoded, where the mapped bytes are refused
    if Codec::sniff(data).is_some() {
        return;
    }
    let trickle = Trickle {
        data: data.to_vec(),
        at: 0,
        step: data.len() % 61 + 1,
    };
    let streamed = read_all(PcapFile::from_reader(Path::new("fuzz"), trickle), data.len());
    assert_eq!(mapped, streamed);
});
