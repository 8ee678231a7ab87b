//! The UDP datagram or TCP segment an ICMP error quotes, as a raw ICMP socket reads it, and
//! the checksums of the pseudo-header that name a probe within it.
//!
//! Every ICMP error quotes the IP header of the packet it is about and at least 8 bytes
//! after it (RFC 792): a UDP datagram's whole header, ports and checksum included, or a TCP
//! segment's ports and sequence number. A raw ICMP socket reads the error whole (IPv4: from
//! its IP header; IPv6: from its ICMPv6 header, the sender in the socket address), so probes
//! that differ only in their payload (and so in their checksum) or in their sequence number
//! are told apart even by a router that quotes nothing more.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What an ICMP error says about a UDP datagram or TCP segment it quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Quoted<'a> {
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
    /// UDP: its checksum as the router received it. A datagram sent through a virtual
    /// device (veth, loopback) whose checksum the kernel leaves to a device that never
    /// computes it carries the pseudo-header's partial sum instead, the same for every probe.
    pub checksum: u16,
    /// TCP: its sequence number.
    pub sequence: u32,
    /// What the error quotes after the first 8 bytes of the header (UDP: the payload, often
    /// all of it; possibly nothing).
    pub payload: &'a [u8],
}

/// ICMP types that quote the offending packet: destination unreachable, time exceeded.
const ERRORS_V4: [u8; 2] = [3, 11];
/// ICMPv6 types that do: destination unreachable, time exceeded.
const ERRORS_V6: [u8; 2] = [1, 3];
/// IP protocol number of UDP.
pub(crate) const UDP: u8 = 17;
/// IP protocol number of TCP.
pub(crate) const TCP: u8 = 6;

/// The UDP datagram or TCP segment (IP `protocol`) quoted by the ICMP error `packet`, as a
/// raw ICMP socket read it (`sender`: the socket address it gave, which is the only place an
/// ICMPv6 error's sender is); `None` for any other ICMP message, or one too short or not
/// about `protocol`.
pub(crate) fn quoted(
    packet: &[u8],
    v4: bool,
    sender: Option<IpAddr>,
    protocol: u8,
) -> Option<Quoted<'_>> {
    let (from, icmp) = sender_and_payload(packet, v4, sender)?;
    let (icmp_type, code) = (*icmp.first()?, *icmp.get(1)?);
    let inner = icmp.get(8..)?;
    let (destination, udp) = if v4 {
        if !ERRORS_V4.contains(&icmp_type) || inner.first()? >> 4 != 4 || *inner.get(9)? != protocol
        {
            return None;
        }
        let ihl = usize::from(inner[0] & 0x0f) * 4;
        if ihl < 20 {
            return None;
        }
        let dst: [u8; 4] = inner.get(16..20)?.try_into().ok()?;
        (IpAddr::V4(Ipv4Addr::from(dst)), inner.get(ihl..)?)
    } else {
        // a probe carries no extension header: UDP or TCP follows the fixed header
        if !ERRORS_V6.contains(&icmp_type) || inner.first()? >> 4 != 6 || *inner.get(6)? != protocol
        {
            return None;
        }
        let dst: [u8; 16] = inner.get(24..40)?.try_into().ok()?;
        (IpAddr::V6(Ipv6Addr::from(dst)), inner.get(40..)?)
    };
    let (head, payload) = (udp.get(..8)?, &udp[8..]);
    let word = |at: usize| u16::from_be_bytes([head[at], head[at + 1]]);
    Some(Quoted {
        from,
        icmp_type,
        code,
        destination,
        source_port: word(0),
        destination_port: word(2),
        checksum: word(6),
        sequence: u32::from(word(4)) << 16 | u32::from(word(6)),
        payload,
    })
}

/// The sender of what a raw socket read, and what follows the IP header: IPv4 raw sockets
/// read from the IP header, IPv6 ones from the header after it, the sender being only in the
/// socket address (`sender`). `None` if too short.
pub(crate) fn sender_and_payload(
    packet: &[u8],
    v4: bool,
    sender: Option<IpAddr>,
) -> Option<(IpAddr, &[u8])> {
    if v4 {
        let ihl = usize::from(packet.first()? & 0x0f) * 4;
        if ihl < 20 {
            return None;
        }
        let src: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
        Some((IpAddr::V4(Ipv4Addr::from(src)), packet.get(ihl..)?))
    } else {
        Some((sender?, packet))
    }
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
    let mut udp = Vec::with_capacity(len);
    udp.extend_from_slice(&source.1.to_be_bytes());
    udp.extend_from_slice(&destination.1.to_be_bytes());
    udp.extend_from_slice(&(len as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    match transport_checksum(UDP, source.0, destination.0, &udp) {
        0 => 0xffff,
        c => c,
    }
}

/// The Internet checksum of `segment` (its checksum field zero) of IP `protocol` from
/// `source` to `destination`, over the pseudo-header of RFC 793 / RFC 768 or RFC 8200.
pub(crate) fn transport_checksum(
    protocol: u8,
    source: IpAddr,
    destination: IpAddr,
    segment: &[u8],
) -> u16 {
    let len = segment.len();
    let mut b = Vec::with_capacity(40 + len);
    match (source, destination) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            b.extend_from_slice(&s.octets());
            b.extend_from_slice(&d.octets());
            b.extend_from_slice(&[0, protocol]);
            b.extend_from_slice(&(len as u16).to_be_bytes());
        }
        (s, d) => {
            b.extend_from_slice(&v6_octets(s));
            b.extend_from_slice(&v6_octets(d));
            b.extend_from_slice(&(len as u32).to_be_bytes());
            b.extend_from_slice(&[0, 0, 0, protocol]);
        }
    }
    b.extend_from_slice(segment);
    super::ping::checksum(&b)
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
    use mplane_capture::builder::Builder;

    const ME: [u8; 4] = [192, 0, 2, 1];
    const DST: [u8; 4] = [198, 51, 100, 7];
    const ROUTER: [u8; 4] = [203, 0, 113, 9];

    fn v6(a: &str) -> [u8; 16] {
        v6_octets(a.parse().unwrap())
    }

    /// Probe `i`'s payload, as the tracer numbers it.
    fn payload(i: u64) -> [u8; 32] {
        let mut p = [0u8; 32];
        p[..8].copy_from_slice(&i.to_le_bytes());
        p
    }

    /// The checksums agree with those of the packet builder the capture tests use (an
    /// implementation of its own, over whole IPv4 and IPv6 packets), and the probes' numbers
    /// make them distinct.
    #[test]
    fn checksums_agree_with_the_packet_builder() {
        let (s6, d6) = (v6("2001:db8::1"), v6("2001:db8:1::7"));
        for i in [0u64, 1, 2, 255, 256, 2549] {
            for (packet, udp_at, src, dst) in [
                (
                    Builder::raw().ipv4(ME, DST),
                    20,
                    IpAddr::from(ME),
                    IpAddr::from(DST),
                ),
                (
                    Builder::raw().ipv6(s6, d6),
                    40,
                    IpAddr::from(s6),
                    IpAddr::from(d6),
                ),
            ] {
                let built = packet.udp(40000, 33434).payload(&payload(i)).build();
                let want = u16::from_be_bytes([built[udp_at + 6], built[udp_at + 7]]);
                let ours = udp_checksum((src, 40000), (dst, 33434), &payload(i));
                assert_eq!(ours, want, "{src} probe {i}");
            }
        }
        let (s, d) = (IpAddr::from(ME), IpAddr::from(DST));
        let sums: std::collections::HashSet<u16> = (0..2550)
            .map(|i| udp_checksum((s, 1), (d, 2), &payload(i)))
            .collect();
        assert_eq!(sums.len(), 2550);
    }

    #[test]
    fn errors_quoting_only_the_udp_header() {
        // IPv4: ICMP time exceeded from a router, quoting the probe's IP header and its 8
        // bytes of UDP header, nothing more
        let probe = Builder::raw()
            .ipv4(ME, DST)
            .udp(40000, 33434)
            .payload(&payload(3))
            .build();
        let header_only = &probe[..20 + 8];
        let error = |quote: &[u8]| {
            Builder::raw()
                .ipv4(ROUTER, ME)
                .icmp(11, 0, 0, 0)
                .payload(quote)
                .build()
        };
        let packet = error(header_only);
        let q = quoted(&packet, true, None, UDP).unwrap();
        assert_eq!(
            q,
            Quoted {
                from: IpAddr::from(ROUTER),
                icmp_type: 11,
                code: 0,
                destination: IpAddr::from(DST),
                source_port: 40000,
                destination_port: 33434,
                checksum: u16::from_be_bytes([probe[26], probe[27]]),
                sequence: u32::from_be_bytes([probe[24], probe[25], probe[26], probe[27]]),
                payload: &[],
            }
        );
        // cut anywhere before the UDP header's end: nothing
        for cut in 0..packet.len() {
            assert_eq!(quoted(&packet[..cut], true, None, UDP), None, "{cut}");
        }
        // a router that quotes more: the payload too
        let whole = error(&probe);
        assert_eq!(quoted(&whole, true, None, UDP).unwrap().payload, payload(3));
        // not an error, or not about UDP
        let echo = Builder::raw()
            .ipv4(ROUTER, ME)
            .icmp(0, 0, 0, 0)
            .payload(header_only)
            .build();
        assert_eq!(quoted(&echo, true, None, UDP), None);
        let tcp = Builder::raw()
            .ipv4(ME, DST)
            .tcp(40000, 33434, 1, 0, 0x02)
            .build();
        assert_eq!(quoted(&error(&tcp[..28]), true, None, UDP), None);

        // IPv6: the ICMPv6 header (the sender from the socket address), port unreachable
        let (me6, dst6, r6) = (v6("2001:db8::1"), v6("2001:db8:1::7"), v6("2001:db8:2::9"));
        let probe6 = Builder::raw()
            .ipv6(me6, dst6)
            .udp(40000, 33434)
            .payload(&payload(3))
            .build();
        let error6 = Builder::raw()
            .ipv6(r6, me6)
            .icmpv6(1, 4, 0, 0)
            .payload(&probe6[..48])
            .build();
        // a raw ICMPv6 socket reads from the ICMPv6 header on
        let icmp6 = &error6[40..];
        let q = quoted(icmp6, false, Some(IpAddr::from(r6)), UDP).unwrap();
        assert_eq!((q.from, q.icmp_type, q.code), (IpAddr::from(r6), 1, 4));
        assert_eq!(
            (q.destination, q.destination_port),
            (IpAddr::from(dst6), 33434)
        );
        assert_eq!(q.checksum, u16::from_be_bytes([probe6[46], probe6[47]]));
        assert_eq!(quoted(icmp6, false, None, UDP), None);
        assert_eq!(
            quoted(
                &icmp6[..icmp6.len() - 1],
                false,
                Some(IpAddr::from(r6)),
                UDP
            ),
            None
        );
    }
}
