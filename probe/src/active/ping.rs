//! ICMP echo (ping) over IPv4 and IPv6.
//!
//! A [`Pinger`] owns one socket connected to one destination: an unprivileged ICMP socket
//! (`SOCK_DGRAM` with `IPPROTO_ICMP` / `IPPROTO_ICMPV6`, which Linux grants to the groups in
//! `net.ipv4.ping_group_range`) where the kernel allows one, else a raw socket (needs
//! `CAP_NET_RAW`, which the shipped systemd unit grants). Each request carries the pinger's
//! identifier, a sequence number and a 16-byte token of its own; a reply counts only if all
//! three match, so replies to other programs' pings, duplicates and late replies to earlier
//! requests are never taken for this one. The round-trip time runs from just before the
//! request is handed to the kernel to when the kernel received the reply (its
//! `SO_TIMESTAMPNS` receive time, which leaves out the wake-up of the reading thread), or,
//! where the kernel gives no time or the system clock stepped meanwhile, to just after the
//! reply is read, on the monotonic clock.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use socket2::{Domain, Protocol, Socket, Type};

use super::round_trip;
use super::sys::{self, Queue};

/// Why a pinger could not be set up or a request not sent.
#[derive(Debug, thiserror::Error)]
pub enum PingError {
    /// Source and destination are not of the same address family.
    #[error("source {source_addr} and destination {destination} are not of the same IP version")]
    Family {
        /// The source address.
        source_addr: IpAddr,
        /// The destination address.
        destination: IpAddr,
    },
    /// Neither an unprivileged ICMP socket nor a raw one could be opened.
    #[error(
        "cannot open an ICMP socket ({0}): allow the group in net.ipv4.ping_group_range or grant CAP_NET_RAW"
    )]
    Socket(std::io::Error),
    /// The source address is not one of this host's.
    #[error("cannot send from {addr}: {source}")]
    Bind {
        /// The address.
        addr: IpAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The request could not be sent (e.g. no route to the destination).
    #[error("cannot send to {addr}: {source}")]
    Send {
        /// The destination.
        addr: IpAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// How often a wait for a reply looks at its `stop` condition.
pub const STOP_CHECK: Duration = Duration::from_millis(100);

/// Bytes of each request's payload, after the identifier and sequence number: the token, the
/// sequence number, the word that keeps the checksum constant ([`echo_request`]), zeros.
pub(crate) const TOKEN: usize = 16;
/// ICMP echo request / reply types.
const ECHO_V4: (u8, u8) = (8, 0);
const ECHO_V6: (u8, u8) = (128, 129);

/// A socket that sends ICMP echo requests to one destination and matches its replies.
#[derive(Debug)]
pub struct Pinger {
    sock: Socket,
    dst: IpAddr,
    /// A raw socket (the kernel neither fills in the identifier nor strips the IPv4 header).
    raw: bool,
    /// The identifier raw requests carry (an unprivileged socket's is the kernel's).
    ident: u16,
    /// Distinguishes this pinger's requests from any other's with the same identifier.
    token: [u8; 8],
    buf: Vec<u8>,
    control: Vec<u8>,
    kernel_times: u64,
}

impl Pinger {
    /// A pinger from `source` (an address of this host; unspecified = the kernel picks) to
    /// `destination`.
    pub fn new(source: IpAddr, destination: IpAddr) -> Result<Pinger, PingError> {
        if source.is_ipv4() != destination.is_ipv4() {
            return Err(PingError::Family {
                source_addr: source,
                destination,
            });
        }
        let (sock, raw) = open(source, destination)?;
        // without them, round-trip times come from the monotonic clock alone
        let _ = sys::set_timestamps(&sock);
        let (ident, token) = ident_and_token(&sock);
        Ok(Pinger {
            sock,
            dst: destination,
            raw,
            ident,
            token,
            buf: vec![0; 2048],
            control: vec![0; 128],
            kernel_times: 0,
        })
    }

    /// The destination.
    pub fn destination(&self) -> IpAddr {
        self.dst
    }

    /// `true` for an unprivileged ICMP socket, `false` for a raw one.
    pub fn unprivileged(&self) -> bool {
        !self.raw
    }

    /// Sends echo request `seq` and waits up to `timeout` for its reply: the round-trip time,
    /// or `None` if no matching reply came in time or `stop()` turned true while waiting
    /// (looked at every [`STOP_CHECK`]).
    pub fn ping(
        &mut self,
        seq: u16,
        timeout: Duration,
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<Duration>, PingError> {
        let v4 = self.dst.is_ipv4();
        let msg = echo_request(v4, self.raw, self.ident, seq, self.token);
        let sent = SystemTime::now();
        let sent_at = Instant::now();
        self.sock.send(&msg).map_err(|e| PingError::Send {
            addr: self.dst,
            source: e,
        })?;
        let deadline = sent_at + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let [ready] = sys::wait([&self.sock], left.min(STOP_CHECK));
            if !ready.data && !ready.errors {
                if stop() {
                    return Ok(None);
                }
                continue;
            }
            // a reply, or an ICMP error for an earlier request (e.g. host unreachable),
            // which the read returns and clears: keep waiting
            let got = match sys::recv(&self.sock, Queue::Data, &mut self.buf, &mut self.control) {
                Ok(Some(got)) => got,
                Ok(None) | Err(_) => continue,
            };
            let read_at = Instant::now();
            let icmp = icmp_of(&self.buf[..got.data_len], v4, self.raw);
            if is_echo_reply(icmp, v4, self.raw, self.ident, seq, self.token) {
                let received = sys::timestamp(&self.control[..got.control_len]);
                self.kernel_times += u64::from(received.is_some());
                return Ok(Some(round_trip(sent, sent_at, received, read_at)));
            }
        }
    }

    /// How many replies so far were timed by the kernel's receive time (the others by the
    /// monotonic clock when they were read; see [`crate::active::round_trip`]).
    pub fn kernel_times(&self) -> u64 {
        self.kernel_times
    }
}

/// An ICMP socket from `source` connected to `destination` (of the same family): an
/// unprivileged one where the kernel allows it, else a raw one (`true`).
pub(crate) fn open(source: IpAddr, destination: IpAddr) -> Result<(Socket, bool), PingError> {
    let (domain, proto) = if destination.is_ipv4() {
        (Domain::IPV4, Protocol::ICMPV4)
    } else {
        (Domain::IPV6, Protocol::ICMPV6)
    };
    let (sock, raw) = match Socket::new(domain, Type::DGRAM, Some(proto)) {
        Ok(s) => (s, false),
        Err(first) => match Socket::new(domain, Type::RAW, Some(proto)) {
            Ok(s) => (s, true),
            Err(_) => return Err(PingError::Socket(first)),
        },
    };
    super::bind_source(&sock, source).map_err(|e| PingError::Bind {
        addr: source,
        source: e,
    })?;
    sock.connect(&SocketAddr::new(destination, 0).into())
        .map_err(|e| PingError::Send {
            addr: destination,
            source: e,
        })?;
    Ok((sock, raw))
}

/// The (request, reply) ICMP types of echo in IPv4 or IPv6.
pub(crate) fn echo_types(v4: bool) -> (u8, u8) {
    if v4 { ECHO_V4 } else { ECHO_V6 }
}

/// An identifier and a token distinct per socket: from the clock's nanoseconds, the process
/// and the socket.
pub(crate) fn ident_and_token(sock: &Socket) -> (u16, [u8; 8]) {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id()).rotate_left(32)
        ^ (std::os::fd::AsRawFd::as_raw_fd(sock) as u64).rotate_left(48);
    (
        (seed >> 16) as u16 ^ std::process::id() as u16,
        seed.to_le_bytes(),
    )
}

/// An echo request of `ident` (raw sockets; an unprivileged socket puts in its own) with
/// sequence number `seq` and `token`, checksummed where the kernel does not do it.
///
/// The payload is the token, the sequence number again (little-endian) and a word that
/// cancels both copies of the sequence number out of the checksum: every request of one
/// identifier and token has the same checksum, whatever its sequence number (ICMPv6's
/// pseudo-header is the same for all of them too). A per-flow load balancer that hashes the
/// first four bytes of the ICMP header (type, code, checksum), as it hashes a UDP or TCP
/// header's ports, so sends all of a ping's or a traceroute's echo requests along one path
/// (Paris traceroute's ICMP probes).
pub(crate) fn echo_request(
    v4: bool,
    raw: bool,
    ident: u16,
    seq: u16,
    token: [u8; 8],
) -> [u8; 8 + TOKEN] {
    let mut msg = [0u8; 8 + TOKEN];
    msg[0] = echo_types(v4).0;
    msg[4..6].copy_from_slice(&ident.to_be_bytes());
    msg[6..8].copy_from_slice(&seq.to_be_bytes());
    msg[8..16].copy_from_slice(&token);
    msg[16..18].copy_from_slice(&seq.to_le_bytes());
    // the checksum of the two copies is the word that, summed with them, makes zero
    let copies = [msg[6], msg[7], msg[16], msg[17]];
    msg[18..20].copy_from_slice(&checksum(&copies).to_be_bytes());
    if v4 && raw {
        // the kernel computes ICMPv6 checksums, and those of unprivileged sockets
        let sum = checksum(&msg);
        msg[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    msg
}

/// The ICMP message in `packet` as read from an ICMP socket (a raw IPv4 socket reads the IP
/// header too).
pub(crate) fn icmp_of(packet: &[u8], v4: bool, raw: bool) -> &[u8] {
    if v4 && raw {
        let ihl = usize::from(packet.first().map_or(0, |b| b & 0x0f)) * 4;
        packet.get(ihl..).unwrap_or(&[])
    } else {
        packet
    }
}

/// `true` if `icmp` is the echo reply to request `seq` of `ident` and `token` (the
/// identifier is checked on raw sockets only: an unprivileged socket only ever reads replies
/// to its own).
pub(crate) fn is_echo_reply(
    icmp: &[u8],
    v4: bool,
    raw: bool,
    ident: u16,
    seq: u16,
    token: [u8; 8],
) -> bool {
    let reply = echo_types(v4).1;
    if icmp.len() < 8 + TOKEN || icmp[0] != reply || icmp[1] != 0 {
        return false;
    }
    (!raw || icmp[4..6] == ident.to_be_bytes())
        && icmp[6..8] == seq.to_be_bytes()
        && icmp[8..16] == token
        && icmp[16..18] == seq.to_le_bytes()
}

/// The Internet checksum of `data` (RFC 1071).
pub(crate) fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_a_known_echo_request() {
        // echo request, id 0x1234, seq 1, no payload: 0xffff - (0x0800 + 0x1234 + 0x0001)
        let msg = [8, 0, 0, 0, 0x12, 0x34, 0, 1];
        assert_eq!(checksum(&msg), !(0x0800u16 + 0x1234 + 0x0001));
        // a message carrying its checksum sums to zero
        let mut m = msg;
        m[2..4].copy_from_slice(&checksum(&msg).to_be_bytes());
        assert_eq!(checksum(&m), 0);
        assert_eq!(checksum(&[0xff]), !0xff00);
    }

    #[test]
    fn echo_requests_of_one_socket_share_their_checksum() {
        let token = *b"\x01\x23\x45\x67\x89\xab\xcd\xef";
        for (v4, raw) in [(true, true), (true, false), (false, false)] {
            // where the kernel computes it, it computes this over the message (ICMPv6 adds a
            // pseudo-header, the same for every request of the socket)
            let sum = |m: &[u8; 8 + TOKEN]| {
                let mut m = *m;
                m[2..4].fill(0);
                checksum(&m)
            };
            let first = echo_request(v4, raw, 0x4242, 0, token);
            for seq in [1, 2, 0x00ff, 0x0100, 0x7fff, 0x8000, 0xfffe, 0xffff, 12345] {
                let msg = echo_request(v4, raw, 0x4242, seq, token);
                assert_eq!(sum(&msg), sum(&first), "v4 {v4} raw {raw} seq {seq}");
                if v4 && raw {
                    assert_eq!(msg[2..4], first[2..4], "seq {seq}");
                    assert_eq!(checksum(&msg), 0, "seq {seq}");
                }
                // the reply echoes the payload: it is recognised as the answer to `seq` only
                let mut reply = msg;
                reply[0] = echo_types(v4).1;
                assert!(is_echo_reply(&reply, v4, raw, 0x4242, seq, token));
                assert!(!is_echo_reply(&reply, v4, raw, 0x4242, seq ^ 1, token));
            }
        }
    }

    #[test]
    fn families_must_agree() {
        let e = Pinger::new("127.0.0.1".parse().unwrap(), "::1".parse().unwrap()).unwrap_err();
        assert!(matches!(e, PingError::Family { .. }), "{e}");
    }

    /// A source address this host does not have is refused when the socket binds (nothing is
    /// sent).
    #[test]
    fn foreign_source_address_is_named() {
        match Pinger::new("192.0.2.77".parse().unwrap(), "127.0.0.1".parse().unwrap()) {
            Err(PingError::Socket(e)) => eprintln!("skipping: no ICMP socket here: {e}"),
            Err(e @ PingError::Bind { .. }) => assert!(e.to_string().contains("192.0.2.77"), "{e}"),
            other => panic!("{other:?}"),
        }
    }

    /// Both kinds of socket: here (a raw one when run as root, whose group
    /// `net.ipv4.ping_group_range` leaves out by default) and, in a network namespace this
    /// test creates with the range opened to every group, an unprivileged one (the child
    /// test below, run there by `ip netns exec`). Needs root for the namespace.
    #[test]
    fn unprivileged_sockets_in_a_namespace() {
        let Some(ns) = crate::active::testns::Netns::create("mpping") else {
            return;
        };
        assert!(ns.exec(&["sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647"]));
        ns.run_child_test("active::ping::tests::unprivileged_child", &[]);
    }

    /// Run by [`unprivileged_sockets_in_a_namespace`] inside its namespace.
    #[test]
    #[ignore = "child process of unprivileged_sockets_in_a_namespace"]
    fn unprivileged_child() {
        for dst in ["127.0.0.1", "::1"] {
            let ip: IpAddr = dst.parse().unwrap();
            let mut p = Pinger::new(ip, ip).unwrap();
            assert!(p.unprivileged(), "{dst}: a raw socket was opened");
            for seq in 0..3 {
                let rtt = p.ping(seq, Duration::from_secs(1), &|| false).unwrap();
                assert!(rtt.is_some(), "{dst}: no reply to {seq}");
            }
        }
    }

    /// Loopback answers every request (needs an ICMP socket: root, CAP_NET_RAW or
    /// ping_group_range; skipped otherwise).
    #[test]
    fn loopback_answers_v4_and_v6() {
        for (src, dst) in [
            ("127.0.0.1", "127.0.0.1"),
            ("::1", "::1"),
            ("0.0.0.0", "127.0.0.1"),
        ] {
            let mut p = match Pinger::new(src.parse().unwrap(), dst.parse().unwrap()) {
                Ok(p) => p,
                Err(PingError::Socket(e)) => {
                    eprintln!("skipping: no ICMP socket here: {e}");
                    return;
                }
                Err(e) => panic!("{dst}: {e}"),
            };
            for seq in 0..3 {
                let rtt = p.ping(seq, Duration::from_secs(1), &|| false).unwrap();
                let rtt = rtt.unwrap_or_else(|| panic!("{dst}: no reply to {seq}"));
                assert!(rtt < Duration::from_secs(1), "{dst}: {rtt:?}");
            }
            assert_eq!(p.kernel_times(), 3, "{dst}: replies timed by the kernel");
        }
    }
}
