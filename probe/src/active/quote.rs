//! The UDP datagram an ICMP error quotes, as a raw ICMP socket reads it, and the UDP
//! checksum that names a datagram within it.
//!
//! Every ICMP error quotes the IP header of the packet it is about and at least 8 bytes
//! after it (RFC 792): a UDP datagram's whole header, ports and checksum included. A raw
//! ICMP socket reads the error whole (IPv4: from its IP header; IPv6: from its ICMPv6
//! header, the sender in the socket address), so probes that differ only in their payload,
//! and so in their checksum, are told apart even by a router that quotes nothing of the
//! payload.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What an ICMP error says about a UDP datagram it quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QuotedUdp<'a> {
    /// The error's sender.
    pub from: IpAddr,
    /// ICMP (or ICMPv6) type.
    pub icmp_type: u8,
    /// Its code.
    pub code: u8,
    /// The quoted datagram's destination address.
    pub destination: IpAddr,
    /// Its source port.
    pub source_port: u16,
    /// Its destination port.
    pub destination_port: u16,
    /// Its UDP checksum as the router received it. A datagram sent through a virtual
    /// device (veth, loopback) whose checksum the kernel leaves to a device that never
    /// computes it carries the pseudo-header's partial sum instead, the same for every probe.
    pub checksum: u16,
    /// What the error quotes of its payload (often all of it, possibly nothing).
    pub payload: &'a [u8],
}

/// ICMP types that quote the offending packet: destination unreachable, time exceeded.
const ERRORS_V4: [u8; 2] = [3, 11];
/// ICMPv6 types that do: destination unreachable, time exceeded.
const ERRORS_V6: [u8; 2] = [1, 3];
/// IP protocol number of UDP.
const UDP: u8 = 17;

/// The UDP datagram quoted by the ICMP error `packet`, as a raw ICMP socket read it
/// (`sender`: the socket address it gave, which is the only place an ICMPv6 error's sender
/// is); `None` for any other ICMP message, or one too short or not about UDP.
pub(crate) fn quoted_udp(packet: &[u8], v4: bool, sender: Option<IpAddr>) -> Option<QuotedUdp<'_>> {
    let (from, icmp) = if v4 {
        let ihl = usize::from(packet.first()? & 0x0f) * 4;
        if ihl < 20 {
            return None;
        }
        let src: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
        (IpAddr::V4(Ipv4Addr::from(src)), packet.get(ihl..)?)
    } else {
        (sender?, packet)
    };
    let (icmp_type, code) = (*icmp.first()?, *icmp.get(1)?);
    let inner = icmp.get(8..)?;
    let (destination, udp) = if v4 {
        if !ERRORS_V4.contains(&icmp_type) || inner.first()? >> 4 != 4 || *inner.get(9)? != UDP {
            return None;
        }
        let ihl = usize::from(inner[0] & 0x0f) * 4;
        if ihl < 20 {
            return None;
        }
        let dst: [u8; 4] = inner.get(16..20)?.try_into().ok()?;
        (IpAddr::V4(Ipv4Addr::from(dst)), inner.get(ihl..)?)
    } else {
        // a probe carries no extension header: UDP follows the fixed header
        if !ERRORS_V6.contains(&icmp_type) || inner.first()? >> 4 != 6 || *inner.get(6)? != UDP {
            return None;
        }
        let dst: [u8; 16] = inner.get(24..40)?.try_into().ok()?;
        (IpAddr::V6(Ipv6Addr::from(dst)), inner.get(40..)?)
    };
    let (udp, payload) = (udp.get(..8)?, &udp[8..]);
    let word = |at: usize| u16::from_be_bytes([udp[at], udp[at + 1]]);
    Some(QuotedUdp {
        from,
        icmp_type,
        code,
        destination,
        source_port: word(0),
        destination_port: word(2),
        checksum: word(6),
        payload,
    })
}

/// The checksum the kernel gives a UDP datagram with `payload` from `source` to
/// `destination` (RFC 768 over the pseudo-header of RFC 768 or RFC 8200; a sum of zero is
/// sent as `0xffff`).
pub(crate) fn udp_checksum(
    source: (IpAddr, u16),
    destination: (IpAddr, u16),
    payload: &[u8],
) -> u16 {
    let len = 8 + payload.len();
    let mut b = Vec::with_capacity(40 + len);
    match (source.0, destination.0) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            b.extend_from_slice(&s.octets());
            b.extend_from_slice(&d.octets());
            b.extend_from_slice(&[0, UDP]);
            b.extend_from_slice(&(len as u16).to_be_bytes());
        }
        (s, d) => {
            b.extend_from_slice(&v6_octets(s));
            b.extend_from_slice(&v6_octets(d));
            b.extend_from_slice(&(len as u32).to_be_bytes());
            b.extend_from_slice(&[0, 0, 0, UDP]);
        }
    }
    b.extend_from_slice(&source.1.to_be_bytes());
    b.extend_from_slice(&destination.1.to_be_bytes());
    b.extend_from_slice(&(len as u16).to_be_bytes());
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(payload);
    match super::ping::checksum(&b) {
        0 => 0xffff,
        c => c,
    }
}

/// An address's IPv6 form (IPv4 ones mapped; a datagram's two addresses are of one version).
fn v6_octets(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A UDP datagram's header, checksum filled in, from `src` to `dst`.
    fn udp_header(src: (IpAddr, u16), dst: (IpAddr, u16), payload: &[u8]) -> [u8; 8] {
        let mut h = [0u8; 8];
        h[0..2].copy_from_slice(&src.1.to_be_bytes());
        h[2..4].copy_from_slice(&dst.1.to_be_bytes());
        h[4..6].copy_from_slice(&(8 + payload.len() as u16).to_be_bytes());
        h[6..8].copy_from_slice(&udp_checksum(src, dst, payload).to_be_bytes());
        h
    }

    #[test]
    fn a_udp_checksum_verifies() {
        // a datagram carrying its checksum sums, with its pseudo-header, to zero
        for (s, d) in [
            ("192.0.2.1", "198.51.100.7"),
            ("2001:db8::1", "2001:db8:1::7"),
        ] {
            let (s, d): (IpAddr, IpAddr) = (s.parse().unwrap(), d.parse().unwrap());
            for payload in [&[0u8; 32][..], b"odd", &[]] {
                let h = udp_header((s, 40000), (d, 33434), payload);
                let mut whole = Vec::new();
                match (s, d) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => {
                        whole.extend_from_slice(&s.octets());
                        whole.extend_from_slice(&d.octets());
                        whole.extend_from_slice(&[0, UDP]);
                        whole.extend_from_slice(&h[4..6]);
                    }
                    _ => {
                        whole.extend_from_slice(&v6_octets(s));
                        whole.extend_from_slice(&v6_octets(d));
                        whole.extend_from_slice(&[0, 0, h[4], h[5], 0, 0, 0, UDP]);
                    }
                }
                whole.extend_from_slice(&h);
                whole.extend_from_slice(payload);
                assert_eq!(super::super::ping::checksum(&whole), 0, "{s} {payload:?}");
            }
        }
        // probes that differ in their number differ in their checksum
        let (s, d): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let sums: std::collections::HashSet<u16> = (0..2550u64)
            .map(|i| {
                let mut p = [0u8; 32];
                p[..8].copy_from_slice(&i.to_le_bytes());
                udp_checksum((s, 1), (d, 2), &p)
            })
            .collect();
        assert_eq!(sums.len(), 2550);
    }

    /// The checksums agree with those of the packet builder the capture tests use (an
    /// implementation of its own, over whole IPv4 and IPv6 packets).
    #[test]
    fn checksums_agree_with_the_packet_builder() {
        use mplane_capture::builder::Builder;
        let (s4, d4) = ([192, 0, 2, 1], [198, 51, 100, 7]);
        let (s6, d6) = (
            v6_octets("2001:db8::1".parse().unwrap()),
            v6_octets("2001:db8:1::7".parse().unwrap()),
        );
        for i in [0u64, 1, 2, 255, 256, 2549] {
            let mut payload = [0u8; 32];
            payload[..8].copy_from_slice(&i.to_le_bytes());
            for (packet, udp_at, src, dst) in [
                (
                    Builder::raw().ipv4(s4, d4),
                    20,
                    IpAddr::from(s4),
                    IpAddr::from(d4),
                ),
                (
                    Builder::raw().ipv6(s6, d6),
                    40,
                    IpAddr::from(s6),
                    IpAddr::from(d6),
                ),
            ] {
                let built = packet.udp(40000, 33434).payload(&payload).build();
                let want = u16::from_be_bytes([built[udp_at + 6], built[udp_at + 7]]);
                let ours = udp_checksum((src, 40000), (dst, 33434), &payload);
                assert_eq!(ours, want, "{src} probe {i}");
            }
        }
    }

    #[test]
    fn errors_quoting_only_the_udp_header() {
        let (me, dst, router): (IpAddr, IpAddr, IpAddr) = (
            "192.0.2.1".parse().unwrap(),
            "198.51.100.7".parse().unwrap(),
            "203.0.113.9".parse().unwrap(),
        );
        let udp = udp_header((me, 40000), (dst, 33434), &[7; 32]);
        // IPv4: the error's IP header, ICMP time exceeded, the probe's IP header (TTL 1) and
        // its 8 bytes of UDP header, nothing more
        let mut quoted_ip = [0u8; 20];
        quoted_ip[0] = 0x45;
        quoted_ip[8] = 1;
        quoted_ip[9] = UDP;
        quoted_ip[12..16].copy_from_slice(&[192, 0, 2, 1]);
        quoted_ip[16..20].copy_from_slice(&[198, 51, 100, 7]);
        let mut outer = [0u8; 20];
        outer[0] = 0x45;
        outer[9] = 1;
        outer[12..16].copy_from_slice(&[203, 0, 113, 9]);
        let icmp = [11, 0, 0, 0, 0, 0, 0, 0];
        let packet = [&outer[..], &icmp, &quoted_ip, &udp].concat();
        let q = quoted_udp(&packet, true, None).unwrap();
        assert_eq!(
            q,
            QuotedUdp {
                from: router,
                icmp_type: 11,
                code: 0,
                destination: dst,
                source_port: 40000,
                destination_port: 33434,
                checksum: u16::from_be_bytes([udp[6], udp[7]]),
                payload: &[],
            }
        );
        // a router that quotes more: the payload too
        let longer = [&packet[..], &[7; 32]].concat();
        assert_eq!(quoted_udp(&longer, true, None).unwrap().payload, [7; 32]);
        // cut anywhere before the UDP header's end: nothing
        for cut in 0..packet.len() {
            assert_eq!(quoted_udp(&packet[..cut], true, None), None, "{cut}");
        }
        // not an error, or not about UDP
        let echo = [&outer[..], &[0, 0, 0, 0, 0, 0, 0, 0], &quoted_ip, &udp].concat();
        assert_eq!(quoted_udp(&echo, true, None), None);
        let mut tcp = packet.clone();
        tcp[20 + 8 + 9] = 6;
        assert_eq!(quoted_udp(&tcp, true, None), None);

        // IPv6: the ICMPv6 header (the sender from the socket address), port unreachable
        let (me6, dst6, r6): (IpAddr, IpAddr, IpAddr) = (
            "2001:db8::1".parse().unwrap(),
            "2001:db8:1::7".parse().unwrap(),
            "2001:db8:2::9".parse().unwrap(),
        );
        let udp6 = udp_header((me6, 40000), (dst6, 33434), &[7; 32]);
        let mut ip6 = [0u8; 40];
        ip6[0] = 0x60;
        ip6[6] = UDP;
        ip6[8..24].copy_from_slice(&v6_octets(me6));
        ip6[24..40].copy_from_slice(&v6_octets(dst6));
        let packet6 = [&[1, 4, 0, 0, 0, 0, 0, 0][..], &ip6, &udp6].concat();
        let q = quoted_udp(&packet6, false, Some(r6)).unwrap();
        assert_eq!((q.from, q.icmp_type, q.code), (r6, 1, 4));
        assert_eq!((q.destination, q.destination_port), (dst6, 33434));
        assert_eq!(q.checksum, u16::from_be_bytes([udp6[6], udp6[7]]));
        assert_eq!(quoted_udp(&packet6, false, None), None);
        assert_eq!(
            quoted_udp(&packet6[..packet6.len() - 1], false, Some(r6)),
            None
        );
    }
}
