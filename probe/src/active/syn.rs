//! TCP SYN probes of the `tcp` traceroute method: the segment sent from a raw socket, what
//! the destination answers (SYN-ACK from an open port, RST from a closed one, both
//! acknowledging the probe's sequence number), and the socket filter that keeps a raw TCP
//! socket to the probes' flow.

use std::net::IpAddr;

use socket2::SockFilter;

use super::quote::{TCP, sender_and_payload, transport_checksum};

/// TCP flags.
pub(crate) const SYN: u8 = 0x02;
/// RST.
pub(crate) const RST: u8 = 0x04;
/// ACK.
pub(crate) const ACK: u8 = 0x10;

/// Bytes of a probe: the 20-byte header and one option, the MSS a host on an Ethernet
/// would announce (a SYN without options looks forged to some firewalls).
pub(crate) const SYN_LEN: usize = 24;

/// The SYN segment from `source` to `destination` with `sequence`, checksum included.
pub(crate) fn syn_segment(
    source: (IpAddr, u16),
    destination: (IpAddr, u16),
    sequence: u32,
) -> [u8; SYN_LEN] {
    let mss: u16 = if source.0.is_ipv4() { 1460 } else { 1440 };
    let mut s = [0u8; SYN_LEN];
    s[0..2].copy_from_slice(&source.1.to_be_bytes());
    s[2..4].copy_from_slice(&destination.1.to_be_bytes());
    s[4..8].copy_from_slice(&sequence.to_be_bytes());
    // acknowledgment number 0; data offset 6 words
    s[12] = 6 << 4;
    s[13] = SYN;
    s[14..16].copy_from_slice(&64240u16.to_be_bytes());
    // checksum (16..18) and urgent pointer (18..20) zero; MSS option
    s[20..22].copy_from_slice(&[2, 4]);
    s[22..24].copy_from_slice(&mss.to_be_bytes());
    let sum = transport_checksum(TCP, source.0, destination.0, &s);
    s[16..18].copy_from_slice(&sum.to_be_bytes());
    s
}

/// A TCP segment read from a raw TCP socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Segment {
    /// Its sender.
    pub from: IpAddr,
    /// Its source port.
    pub source_port: u16,
    /// Its destination port.
    pub destination_port: u16,
    /// Its acknowledgment number.
    pub ack: u32,
    /// Its flags (the low byte: FIN … CWR).
    pub flags: u8,
}

impl Segment {
    /// What the destination answers a SYN with: SYN-ACK or RST, acknowledging it.
    pub(crate) fn answers_a_syn(&self) -> bool {
        self.flags & ACK != 0 && self.flags & (SYN | RST) != 0
    }
}

/// The segment a raw TCP socket read (IPv4: from the IP header; IPv6: from the TCP header,
/// the sender in the socket address); `None` if it is too short.
pub(crate) fn segment(packet: &[u8], v4: bool, sender: Option<IpAddr>) -> Option<Segment> {
    let (from, tcp) = sender_and_payload(packet, v4, sender)?;
    let h = tcp.get(..14)?;
    Some(Segment {
        from,
        source_port: u16::from_be_bytes([h[0], h[1]]),
        destination_port: u16::from_be_bytes([h[2], h[3]]),
        ack: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
        flags: h[13],
    })
}

/// A socket filter (classic BPF) that passes only segments from `remote_port` to
/// `local_port`, so that a raw TCP socket does not queue a copy of every segment the host
/// receives. IPv4 raw sockets see the IP header first, IPv6 ones the TCP header.
pub(crate) fn port_filter(v4: bool, remote_port: u16, local_port: u16) -> Vec<SockFilter> {
    // classic BPF opcodes
    const LDX_MSH: u16 = 0xb1; // x = 4 * (packet[k] & 0x0f)
    const LDH_IND: u16 = 0x48; // a = u16 at x + k
    const LDH_ABS: u16 = 0x28; // a = u16 at k
    const JEQ: u16 = 0x15; // a == k ? jump jt : jump jf
    const RET: u16 = 0x06; // return k bytes (0: drop)
    let (remote, local) = (u32::from(remote_port), u32::from(local_port));
    let mut f = Vec::with_capacity(7);
    let ldh = if v4 {
        f.push(SockFilter::new(LDX_MSH, 0, 0, 0));
        LDH_IND
    } else {
        LDH_ABS
    };
    f.push(SockFilter::new(ldh, 0, 0, 0));
    f.push(SockFilter::new(JEQ, 0, 3, remote));
    f.push(SockFilter::new(ldh, 0, 0, 2));
    f.push(SockFilter::new(JEQ, 0, 1, local));
    f.push(SockFilter::new(RET, 0, 0, 0xffff));
    f.push(SockFilter::new(RET, 0, 0, 0));
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use mplane_capture::builder::Builder;

    /// The probe is the segment the capture tests' packet builder makes (its own checksum
    /// code, over whole packets), for IPv4 and IPv6.
    #[test]
    fn syn_segments_agree_with_the_packet_builder() {
        let (s4, d4) = ([192, 0, 2, 1], [198, 51, 100, 7]);
        let s6: [u8; 16] = "2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        let d6: [u8; 16] = "2001:db8:1::7"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        for seq in [0u32, 1, 0x8000_0000, u32::MAX] {
            let built = Builder::raw()
                .ipv4(s4, d4)
                .tcp_with(40000, 80, seq, 0, 0x02, 64240, &[2, 4, 0x05, 0xb4])
                .build();
            let ours = syn_segment((s4.into(), 40000), (d4.into(), 80), seq);
            assert_eq!(&built[20..], &ours[..], "IPv4, seq {seq}");
            let built = Builder::raw()
                .ipv6(s6, d6)
                .tcp_with(40000, 443, seq, 0, 0x02, 64240, &[2, 4, 0x05, 0xa0])
                .build();
            let ours = syn_segment((s6.into(), 40000), (d6.into(), 443), seq);
            assert_eq!(&built[40..], &ours[..], "IPv6, seq {seq}");
        }
    }

    #[test]
    fn answers_are_read_from_raw_sockets() {
        let (me, dst) = ([192, 0, 2, 1], [198, 51, 100, 7]);
        let syn_ack = Builder::raw()
            .ipv4(dst, me)
            .tcp(80, 40000, 77, 1235, 0x12)
            .build();
        let s = segment(&syn_ack, true, None).unwrap();
        assert_eq!(
            s,
            Segment {
                from: IpAddr::from(dst),
                source_port: 80,
                destination_port: 40000,
                ack: 1235,
                flags: SYN | ACK,
            }
        );
        assert!(s.answers_a_syn());
        // a closed port's RST-ACK answers too; a bare ACK (another connection) does not
        let rst = Builder::raw()
            .ipv4(dst, me)
            .tcp(80, 40000, 0, 1235, 0x14)
            .build();
        assert!(segment(&rst, true, None).unwrap().answers_a_syn());
        let ack = Builder::raw()
            .ipv4(dst, me)
            .tcp(80, 40000, 5, 1235, 0x10)
            .build();
        assert!(!segment(&ack, true, None).unwrap().answers_a_syn());
        // cut short: nothing
        for cut in 0..20 + 14 {
            assert_eq!(segment(&syn_ack[..cut], true, None), None, "{cut}");
        }
        // IPv6: the TCP header first, the sender from the socket address
        let from: IpAddr = "2001:db8:1::7".parse().unwrap();
        let tcp6 = &syn_ack[20..];
        let s = segment(tcp6, false, Some(from)).unwrap();
        assert_eq!((s.from, s.ack, s.flags), (from, 1235, SYN | ACK));
        assert_eq!(segment(tcp6, false, None), None);
    }
}
