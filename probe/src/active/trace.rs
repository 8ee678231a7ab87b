//! Traceroute: the routers on the path to a destination, hop by hop, and how long each takes
//! to answer.
//!
//! Probes leave with a hop limit (IPv4 TTL, IPv6 hop limit) of 1, 2, 3, …; the router where
//! a probe's limit runs out answers with an ICMP *time exceeded*, the destination with what
//! the probe's method draws from it. Three methods without privileges, and one with:
//!
//! * **UDP** (the default, like `traceroute` and `tracepath`): datagrams from one socket and
//!   port to the destination's ports `port`, `port + 1`, … (one per probe); the destination
//!   answers *port unreachable*. The kernel hands the ICMP errors to the socket's error queue
//!   (`IP_RECVERR`) with the sender's address and the probe's destination port, which names
//!   the probe even when a router quotes only the 8 bytes RFC 792 asks for. A datagram that
//!   comes back from the probed port (a service listens there) also means *reached*.
//! * **UDP Paris** (Paris traceroute, scamper's `udp-paris`): the same datagrams, all to port
//!   `port`. A per-flow load balancer (ECMP) hashes the addresses and ports, so with a new
//!   port per probe the probes of one trace take different paths, and a trace through load
//!   balancers mixes routers of parallel paths into false links; with one port they take one
//!   path, the one a connection to that port would take. A probe is then named by the number
//!   in the first 8 bytes of its payload, which routers following RFC 1812 quote (as much of
//!   the datagram as fits in 576 bytes). Where `CAP_NET_RAW` allows a raw ICMP socket, the
//!   errors are read whole from it, and a probe whose router quoted only the 8 bytes RFC 792
//!   asks for (its UDP header) is named by its UDP checksum, which its number makes
//!   distinct; without the privilege, errors come from the socket's error queue, which hands
//!   back only the payload, and such a router's errors are counted in
//!   [`Trace::unattributed`]. A datagram back from the service on `port` answers the probe
//!   whose number it echoes, else a probe of the highest hop limit still unanswered.
//! * **ICMP** echo requests (`traceroute -I`), from the same kind of socket as ping (an
//!   unprivileged one where `net.ipv4.ping_group_range` allows it, else a raw one): the
//!   destination answers with an echo reply, matched as ping matches them; errors come from
//!   the error queue, named by the quoted sequence number. Every request of a trace has the
//!   same checksum (ping's requests keep it constant), so the first four bytes of the ICMP
//!   header, what a load balancer hashes in place of ports, stay the same: one flow, as in
//!   Paris traceroute.
//! * **TCP** SYNs (`traceroute -T`) to `port` from one source port (one flow), sent from a raw
//!   TCP socket (`CAP_NET_RAW`; without it, [`TraceError::Raw`]): probe *i* has the trace's
//!   base sequence number plus *i*, which a router's error quotes within RFC 792's 8 bytes
//!   (read from a raw ICMP socket) and the destination acknowledges in its SYN-ACK (an open
//!   port) or RST (a closed one), both *reached*. A socket filter keeps the raw TCP socket to
//!   the probes' ports; a bound socket that never listens holds the source port, so the
//!   kernel resets the destination's half-open connections.
//!
//! Each hop gets `attempts` probes back to back, and the hops of up to [`SIMULTANEOUS`]
//! probes are in flight at once (five hops of three), as Linux `traceroute` does. A probe is
//! given up on `wait` after it was sent, or sooner: once its hop answered another probe,
//! after [`HERE`] times that hop's slowest answer (a router that rate-limits its errors will
//! not answer later); once a later hop answered, after [`NEAR`] times that hop's slowest
//! answer (a router that never answers does not cost `wait`); never sooner than
//! [`HERE_FLOOR`]. A late answer still counts for its probe. Hops are judged in order, as
//! their probes are answered or given up on; the trace ends when the destination answered, a
//! router said it cannot be reached (*unreachable*: network, host, prohibited…), `gap_limit`
//! hops in a row stayed silent, the hop limit reached `max_hops`, `stop()` turned true
//! (looked at every [`STOP_CHECK`]), or a probe could not be sent (an error of the first probe
//! is the trace's error; a later one ends the trace, once the hops sent are judged, with what
//! it measured). Probes sent beyond the hop that ended the trace are left out of it.
//!
//! Round-trip times run, as ping's, from just before a probe is handed to the kernel to when
//! the kernel received its answer (see [`crate::active::round_trip`]).

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime};

use socket2::{Domain, Protocol, SockRef, Socket, Type};

use super::ping::{self, PingError, STOP_CHECK};
use super::quote;
use super::round_trip;
use super::syn;
use super::sys::{self, ORIGIN_ICMP, ORIGIN_ICMP6, Queue};

/// Once a hop answered a probe, how many times its slowest answer so far the hop's other
/// probes are waited for (after the last was sent), instead of the whole `wait`: Linux
/// `traceroute`'s "here" factor.
pub const HERE: u32 = 3;
/// Once a later hop answered, how many times its slowest answer a silent hop's probes are
/// waited for: Linux `traceroute`'s "near" factor.
pub const NEAR: u32 = 10;
/// The least such wait, so that a hop answering within microseconds (a LAN) is not given up
/// on before a second answer could come through a busy router's control plane.
pub const HERE_FLOOR: Duration = Duration::from_millis(10);
/// Probes in flight at once (Linux `traceroute`'s default): the hops of `SIMULTANEOUS /
/// attempts` hop limits are probed together.
pub const SIMULTANEOUS: usize = 16;

/// How probes are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceMethod {
    /// UDP datagrams to high ports, one port per probe (answered by *port unreachable*).
    Udp,
    /// UDP datagrams all to one port (Paris traceroute): every probe of a trace is one flow,
    /// so that a per-flow load balancer sends them all one way; a probe is named by the
    /// number in its payload or, read from a raw ICMP socket where `CAP_NET_RAW` allows one,
    /// by its UDP checksum (see the module's description).
    UdpParis,
    /// ICMP echo requests (answered by echo replies).
    Icmp,
    /// TCP SYNs to `port`, all of one flow (answered by SYN-ACK or RST); needs
    /// `CAP_NET_RAW`.
    Tcp,
}

impl TraceMethod {
    /// Every method.
    pub const ALL: [TraceMethod; 4] = [
        TraceMethod::Udp,
        TraceMethod::UdpParis,
        TraceMethod::Icmp,
        TraceMethod::Tcp,
    ];
}

/// How a trace is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceOptions {
    /// How probes are sent.
    pub method: TraceMethod,
    /// The largest hop limit tried (1–255).
    pub max_hops: u8,
    /// Probes per hop (at least 1).
    pub attempts: u8,
    /// How long to wait for a hop's answers after its last probe.
    pub wait: Duration,
    /// UDP: the destination port of the first probe (probe *i* goes to `port + i`); UDP
    /// Paris and TCP: the destination port of every probe (for TCP, a service's port such as
    /// 80 or 443, which firewalls let through).
    pub port: u16,
    /// Hops in a row without any answer that end the trace.
    pub gap_limit: u8,
}

impl Default for TraceOptions {
    /// UDP from port 33434, three probes per hop, up to 30 hops, three seconds' wait, and
    /// five silent hops in a row end the trace.
    fn default() -> Self {
        TraceOptions {
            method: TraceMethod::Udp,
            max_hops: 30,
            attempts: 3,
            wait: Duration::from_secs(3),
            port: 33434,
            gap_limit: 5,
        }
    }
}

/// Why a trace could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// Source and destination are not of the same address family.
    #[error("source {source_addr} and destination {destination} are not of the same IP version")]
    Family {
        /// The source address.
        source_addr: IpAddr,
        /// The destination address.
        destination: IpAddr,
    },
    /// The destination is a multicast, broadcast or unspecified address: a path leads to
    /// one host.
    #[error("{0} is not a unicast address: traceroute follows the path to one host")]
    NotUnicast(IpAddr),
    /// The ICMP socket of the ICMP method could not be opened.
    #[error(transparent)]
    Icmp(#[from] PingError),
    /// A UDP socket could not be opened or set up.
    #[error("cannot set up a UDP socket for traceroute: {0}")]
    Socket(std::io::Error),
    /// The raw sockets of the TCP method could not be opened or set up.
    #[error("cannot set up the raw sockets of TCP traceroute (they need CAP_NET_RAW): {0}")]
    Raw(std::io::Error),
    /// The source address is not one of this host's.
    #[error("cannot send from {addr}: {source}")]
    Bind {
        /// The address.
        addr: IpAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The options ask for more probes than there are ports above `port`.
    #[error("{probes} probes from port {port} do not fit below port 65536")]
    Ports {
        /// The first port.
        port: u16,
        /// Probes the options could send.
        probes: usize,
    },
    /// A probe could not be sent (e.g. no route to the destination).
    #[error("cannot send to {addr}: {source}")]
    Send {
        /// The destination.
        addr: IpAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// What answered a probe said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// A router on the way: the probe's hop limit ran out there.
    TimeExceeded,
    /// The destination (its port unreachable, its echo reply, or a datagram back).
    Reached,
    /// Another ICMP error (network, host or port unreachable elsewhere, prohibited, …): the
    /// trace cannot go further.
    Unreachable {
        /// The ICMP (or ICMPv6) type.
        icmp_type: u8,
        /// Its code.
        code: u8,
    },
}

/// An answer to a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// The host that answered.
    pub from: IpAddr,
    /// The round-trip time.
    pub rtt: Duration,
    /// What it said.
    pub answer: Answer,
}

/// One probe of a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Its hop limit (the hop it measures).
    pub ttl: u8,
    /// When it was sent.
    pub sent: SystemTime,
    /// Its answer, if one came.
    pub reply: Option<Reply>,
}

/// Why a trace ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The destination answered.
    Reached,
    /// A router said the destination cannot be reached.
    Unreachable,
    /// `gap_limit` hops in a row stayed silent.
    Gap,
    /// The last hop tried was `max_hops`.
    MaxHops,
    /// `stop()` turned true.
    Stopped,
    /// A probe after the first could not be sent (e.g. the route went away meanwhile).
    SendFailed,
}

/// The probes of a trace, in sending order, and why it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// Every probe sent.
    pub probes: Vec<Probe>,
    /// Why the trace ended.
    pub end: End,
    /// ICMP errors about this trace's flow that could not be tied to a probe: with
    /// [`TraceMethod::UdpParis`] without `CAP_NET_RAW`, the router quoted too little of the
    /// probe to name it. Their hops may show as silent.
    pub unattributed: usize,
}

/// The sockets of the two methods.
enum Prober {
    Udp {
        sock: UdpSocket,
        port: u16,
        /// One port for all probes (Paris traceroute).
        paris: bool,
        /// UDP Paris with `CAP_NET_RAW`: the errors, read whole.
        raw: Option<RawErrors>,
    },
    Icmp {
        sock: Socket,
        raw: bool,
        ident: u16,
        token: [u8; 8],
    },
    Tcp(TcpProber),
}

/// The sockets of the TCP method: SYNs sent and answers read on a raw TCP socket (filtered
/// to the probes' flow), ICMP errors read whole on a raw ICMP one.
struct TcpProber {
    sock: Socket,
    icmp: Socket,
    /// The probes' source address and port.
    local: SocketAddr,
    port: u16,
    /// Probe *i* has sequence number `seq0 + i`.
    seq0: u32,
    /// A TCP socket bound to the source port, so that no connection of this host takes it
    /// meanwhile; never listening, so the kernel answers a SYN-ACK with a RST.
    _reserved: Socket,
}

impl TcpProber {
    fn open(source: IpAddr, destination: IpAddr, port: u16) -> Result<TcpProber, TraceError> {
        let v4 = destination.is_ipv4();
        let domain = if v4 { Domain::IPV4 } else { Domain::IPV6 };
        // the source address the route to the destination takes, unless given: it is in
        // the checksum
        let source = if source.is_unspecified() {
            let probe = UdpSocket::bind(SocketAddr::new(source, 0))
                .and_then(|u| u.connect((destination, port)).map(|()| u))
                .and_then(|u| u.local_addr())
                .map_err(|e| TraceError::Send {
                    addr: destination,
                    source: e,
                })?;
            probe.ip()
        } else {
            source
        };
        let reserved =
            Socket::new(domain, Type::STREAM, Some(Protocol::TCP)).map_err(TraceError::Raw)?;
        reserved
            .bind(&SocketAddr::new(source, 0).into())
            .map_err(|e| TraceError::Bind {
                addr: source,
                source: e,
            })?;
        let local = reserved
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .ok_or_else(|| TraceError::Raw(std::io::Error::other("no local port")))?;
        let sock = Socket::new(domain, Type::RAW, Some(Protocol::TCP)).map_err(TraceError::Raw)?;
        sock.bind(&SocketAddr::new(source, 0).into())
            .map_err(TraceError::Raw)?;
        sock.attach_filter(&syn::port_filter(v4, port, local.port()))
            .map_err(TraceError::Raw)?;
        sock.set_nonblocking(true).map_err(TraceError::Raw)?;
        let icmp = if v4 {
            Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))
        } else {
            Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))
        }
        .map_err(TraceError::Raw)?;
        icmp.set_nonblocking(true).map_err(TraceError::Raw)?;
        let _ = sys::set_timestamps(&sock);
        let _ = sys::set_timestamps(&icmp);
        // a sequence number of this trace's own, so that a stale answer (an earlier trace's
        // from the same port) is not taken for one
        let nanos = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let seq0 = nanos.wrapping_mul(0x9e37_79b9) ^ u32::from(local.port()) << 16;
        Ok(TcpProber {
            sock,
            icmp,
            local,
            port,
            seq0,
            _reserved: reserved,
        })
    }

    /// The probe a sequence number acknowledged (`ack - 1`) or quoted names.
    fn index(&self, sequence: u32, sent: usize) -> Option<usize> {
        probe_index(u64::from(sequence.wrapping_sub(self.seq0)), sent)
    }
}

impl Prober {
    /// The socket answers come on (for TCP, the raw TCP socket).
    fn socket(&self) -> SockRef<'_> {
        match self {
            Prober::Udp { sock, .. } => SockRef::from(sock),
            Prober::Icmp { sock, .. } => SockRef::from(sock),
            Prober::Tcp(t) => SockRef::from(&t.sock),
        }
    }
}

/// The payload of UDP probe `i`: its number in the first 8 bytes (little-endian), then zeros.
fn udp_payload(i: usize) -> [u8; 32] {
    let mut payload = [0u8; 32];
    payload[..8].copy_from_slice(&(i as u64).to_le_bytes());
    payload
}

/// The probe number a UDP payload (or what a router quoted of it) begins with; `None` if it
/// is shorter than a number.
fn number_of(payload: &[u8]) -> Option<u64> {
    payload.first_chunk::<8>().map(|n| u64::from_le_bytes(*n))
}

/// The index of probe number `n`, if it is one of the `sent` probes.
fn probe_index(n: u64, sent: usize) -> Option<usize> {
    usize::try_from(n).ok().filter(|&i| i < sent)
}

/// UDP Paris's ICMP errors read whole from a raw ICMP socket (where `CAP_NET_RAW` allows
/// one), instead of from the UDP socket's error queue: the quoted UDP header names a probe by
/// its checksum, also when a router quoted none of its payload.
struct RawErrors {
    sock: Socket,
    /// The probes' source address and port (the UDP socket is connected, so they are known
    /// before the first probe).
    local: SocketAddr,
    /// Each probe's UDP checksum, in sending order.
    checksums: Vec<u16>,
}

impl RawErrors {
    /// The raw ICMP socket for the errors of `udp` (connected); `None` without the privilege.
    fn open(udp: &Socket, v4: bool) -> Option<RawErrors> {
        let (domain, protocol) = if v4 {
            (Domain::IPV4, Protocol::ICMPV4)
        } else {
            (Domain::IPV6, Protocol::ICMPV6)
        };
        let sock = Socket::new(domain, Type::RAW, Some(protocol)).ok()?;
        let _ = sys::set_timestamps(&sock);
        Some(RawErrors {
            sock,
            local: udp.local_addr().ok()?.as_socket()?,
            checksums: Vec::new(),
        })
    }
}

/// The probe (of those whose checksums are `checksums`) that error `q`, read raw, quotes:
/// by the number in the quoted payload, if the router quoted it; else by checksum (which a
/// virtual device may have left partial, the same for all probes: the number goes first).
fn raw_probe(q: &quote::Quoted<'_>, checksums: &[u16]) -> Option<usize> {
    let by_number = number_of(q.payload).and_then(|n| probe_index(n, checksums.len()));
    by_number.or_else(|| checksums.iter().position(|&c| c == q.checksum))
}

/// A probe's index in a trace from its sequence number or destination port.
fn index_of(value: u16, base: u16, sent: usize) -> Option<usize> {
    probe_index(u64::from(value.wrapping_sub(base)), sent)
}

/// Traces the path from `source` (an address of this host; unspecified = the kernel picks)
/// to `destination`.
pub fn trace(
    source: IpAddr,
    destination: IpAddr,
    opts: &TraceOptions,
    stop: &dyn Fn() -> bool,
) -> Result<Trace, TraceError> {
    if source.is_ipv4() != destination.is_ipv4() {
        return Err(TraceError::Family {
            source_addr: source,
            destination,
        });
    }
    let broadcast = matches!(destination, IpAddr::V4(a) if a.is_broadcast());
    if destination.is_multicast() || destination.is_unspecified() || broadcast {
        return Err(TraceError::NotUnicast(destination));
    }
    let v4 = destination.is_ipv4();
    let most = usize::from(opts.max_hops) * usize::from(opts.attempts.max(1));
    let prober = match opts.method {
        TraceMethod::Udp | TraceMethod::UdpParis => {
            let paris = opts.method == TraceMethod::UdpParis;
            if !paris && usize::from(opts.port) + most > 65536 {
                return Err(TraceError::Ports {
                    port: opts.port,
                    probes: most,
                });
            }
            let domain = if v4 { Domain::IPV4 } else { Domain::IPV6 };
            let sock = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))
                .map_err(TraceError::Socket)?;
            super::bind_source(&sock, source).map_err(|e| TraceError::Bind {
                addr: source,
                source: e,
            })?;
            // UDP Paris: one destination port, so the socket is connected (which fixes the
            // source address and port its errors quote); with a raw ICMP socket, the errors
            // are read from there only
            let raw = if paris {
                let to = SocketAddr::new(destination, opts.port);
                sock.connect(&to.into()).map_err(|e| TraceError::Send {
                    addr: destination,
                    source: e,
                })?;
                RawErrors::open(&sock, v4)
            } else {
                None
            };
            if raw.is_none() {
                sys::set_recverr(&sock, !v4).map_err(TraceError::Socket)?;
            }
            // without them, round-trip times come from the monotonic clock alone
            let _ = sys::set_timestamps(&sock);
            Prober::Udp {
                sock: sock.into(),
                port: opts.port,
                paris,
                raw,
            }
        }
        TraceMethod::Tcp => Prober::Tcp(TcpProber::open(source, destination, opts.port)?),
        TraceMethod::Icmp => {
            let (sock, raw) = ping::open(source, destination)?;
            sys::set_recverr(&sock, !v4).map_err(|e| TraceError::Icmp(PingError::Socket(e)))?;
            let _ = sys::set_timestamps(&sock);
            let (ident, token) = ping::ident_and_token(&sock);
            Prober::Icmp {
                sock,
                raw,
                ident,
                token,
            }
        }
    };
    let seq0 = match &prober {
        // echo requests are numbered from a value of the token, not from 0
        Prober::Icmp { token, .. } => u16::from_le_bytes([token[2], token[3]]),
        Prober::Udp { .. } | Prober::Tcp(_) => 0,
    };
    Tracer {
        prober,
        dst: destination,
        v4,
        probes: Vec::with_capacity(most),
        sent_at: Vec::with_capacity(most),
        seq0,
        buf: vec![0; 2048],
        control: vec![0; 512],
        unattributed: 0,
    }
    .run(opts, stop)
}

/// A trace in progress.
struct Tracer {
    prober: Prober,
    dst: IpAddr,
    v4: bool,
    probes: Vec<Probe>,
    /// When each probe was sent, on the monotonic clock.
    sent_at: Vec<Instant>,
    /// The ICMP sequence number of probe 0.
    seq0: u16,
    buf: Vec<u8>,
    control: Vec<u8>,
    /// ICMP errors not tied to a probe.
    unattributed: usize,
}

impl Tracer {
    fn run(mut self, opts: &TraceOptions, stop: &dyn Fn() -> bool) -> Result<Trace, TraceError> {
        let per_hop = usize::from(opts.attempts.max(1));
        let max = u16::from(opts.max_hops.max(1));
        let window = (SIMULTANEOUS / per_hop).max(1) as u16;
        // hops sent: 1..next; hops judged: 1..judge
        let (mut next, mut judge) = (1u16, 1u16);
        let mut silent = 0u8;
        let mut send_failed = false;
        loop {
            if stop() {
                return Ok(self.done(End::Stopped, next - 1));
            }
            // more hops while the window has room, the trace has not ended at a hop sent
            // already, and sending works
            if !send_failed && next <= max && next - judge < window && !self.ended_before(next) {
                for _ in 0..per_hop {
                    match self.send(next as u8) {
                        Ok(()) => {}
                        // the first probe's error is the trace's
                        Err(e) if self.probes.is_empty() => return Err(e),
                        // a later one ends the trace once the hops sent are judged; the
                        // hop it cut short is dropped
                        Err(_) => {
                            self.drop_hop(next as u8);
                            send_failed = true;
                            break;
                        }
                    }
                }
                if !send_failed {
                    next += 1;
                }
                continue;
            }
            // judge, in order, the hops whose probes are all answered or given up on
            let now = Instant::now();
            let deadlines = self.deadlines(opts);
            while judge < next {
                let hop = self.hop(judge as u8);
                let done = hop.clone().all(|i| {
                    self.probes[i].reply.is_some() || deadlines.get(i).is_none_or(|&d| d <= now)
                });
                if !done {
                    break;
                }
                let answers = || hop.clone().filter_map(|i| self.probes[i].reply);
                let end = if answers().any(|r| r.answer == Answer::Reached) {
                    Some(End::Reached)
                } else if answers().any(|r| matches!(r.answer, Answer::Unreachable { .. })) {
                    Some(End::Unreachable)
                } else {
                    silent = if answers().next().is_none() {
                        silent + 1
                    } else {
                        0
                    };
                    (silent >= opts.gap_limit.max(1)).then_some(End::Gap)
                };
                let end = end.or((judge == max).then_some(End::MaxHops));
                if let Some(end) = end {
                    return Ok(self.done(end, judge));
                }
                judge += 1;
            }
            if judge == next {
                if send_failed {
                    return Ok(self.done(End::SendFailed, next - 1));
                }
                continue;
            }
            // wait for answers until the first of the pending probes is given up on
            let first = deadlines
                .iter()
                .enumerate()
                .filter(|&(i, _)| self.probes[i].reply.is_none())
                .map(|(_, &d)| d)
                .min()
                .unwrap_or(now);
            let left = first.saturating_duration_since(now).min(STOP_CHECK);
            let (ready, raw_ready) = match &self.prober {
                Prober::Udp {
                    sock,
                    raw: Some(raw),
                    ..
                } => {
                    let [ready, raw] = sys::wait([&SockRef::from(sock), &raw.sock], left);
                    (ready, raw.data)
                }
                Prober::Tcp(t) => {
                    let [ready, icmp] = sys::wait([&t.sock, &t.icmp], left);
                    (ready, icmp.data)
                }
                prober => (sys::wait([&prober.socket()], left)[0], false),
            };
            if ready.errors {
                while self.read_error() {}
            }
            if ready.data {
                while self.read_data() {}
            }
            if raw_ready {
                while self.read_raw_error() {}
            }
        }
    }

    /// The indices of hop `ttl`'s probes (every hop but a cut one has `attempts` of them, in
    /// sending order).
    fn hop(&self, ttl: u8) -> std::ops::Range<usize> {
        let first = self.probes.partition_point(|p| p.ttl < ttl);
        first..self.probes.partition_point(|p| p.ttl <= ttl)
    }

    /// Removes the probes of hop `ttl` (the last one sent).
    fn drop_hop(&mut self, ttl: u8) {
        let keep = self.probes.partition_point(|p| p.ttl < ttl);
        self.probes.truncate(keep);
        self.sent_at.truncate(keep);
        if let Prober::Udp { raw: Some(raw), .. } = &mut self.prober {
            raw.checksums.truncate(keep);
        }
    }

    /// `true` if a hop before `ttl` got an answer that ends the trace (the destination, or
    /// an unreachable): no point probing further.
    fn ended_before(&self, ttl: u16) -> bool {
        self.probes.iter().any(|p| {
            u16::from(p.ttl) < ttl && p.reply.is_some_and(|r| r.answer != Answer::TimeExceeded)
        })
    }

    /// When each probe is given up on: `wait` after it was sent; once its hop answered
    /// another, [`HERE`] times that hop's slowest answer; once a later hop answered,
    /// [`NEAR`] times that hop's slowest answer (each at least [`HERE_FLOOR`]).
    fn deadlines(&self, opts: &TraceOptions) -> Vec<Instant> {
        let hops = usize::from(self.probes.last().map_or(0, |p| p.ttl)) + 1;
        // the slowest answer at each hop, then the slowest at any later hop
        let mut slowest = vec![None::<Duration>; hops + 1];
        for p in &self.probes {
            if let Some(r) = p.reply {
                let s = &mut slowest[usize::from(p.ttl)];
                *s = Some(s.map_or(r.rtt, |s| s.max(r.rtt)));
            }
        }
        let mut later = vec![None::<Duration>; hops + 1];
        for h in (0..hops).rev() {
            later[h] = match (later[h + 1], slowest[h + 1]) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
        self.probes
            .iter()
            .zip(&self.sent_at)
            .map(|(p, &sent)| {
                let h = usize::from(p.ttl);
                let mut d = sent + opts.wait;
                if let Some(r) = slowest[h] {
                    d = d.min(sent + (r * HERE).max(HERE_FLOOR));
                }
                if let Some(r) = later[h] {
                    d = d.min(sent + (r * NEAR).max(HERE_FLOOR));
                }
                d
            })
            .collect()
    }

    /// The trace so far, ending for `end`, with the probes of hops up to `last`.
    fn done(mut self, end: End, last: u16) -> Trace {
        self.probes.retain(|p| u16::from(p.ttl) <= last);
        Trace {
            probes: self.probes,
            end,
            unattributed: self.unattributed,
        }
    }

    /// Sends the next probe with hop limit `ttl`.
    fn send(&mut self, ttl: u8) -> Result<(), TraceError> {
        let i = self.probes.len();
        let dst = self.dst;
        let send_err = |e| TraceError::Send {
            addr: dst,
            source: e,
        };
        let sent = SystemTime::now();
        let at = Instant::now();
        match &mut self.prober {
            Prober::Udp {
                sock,
                port,
                paris,
                raw,
            } => {
                let (sock, port, paris) = (&*sock, *port, *paris);
                if self.v4 {
                    sock.set_ttl(u32::from(ttl)).map_err(send_err)?;
                } else {
                    SockRef::from(sock)
                        .set_unicast_hops_v6(u32::from(ttl))
                        .map_err(send_err)?;
                }
                let payload = udp_payload(i);
                let to = SocketAddr::new(dst, if paris { port } else { port + i as u16 });
                retry_pending(|| sock.send_to(&payload, to), || sock.take_error())
                    .map_err(send_err)?;
                if let Some(raw) = raw {
                    let local = (raw.local.ip(), raw.local.port());
                    let sum = quote::udp_checksum(local, (dst, port), &payload);
                    raw.checksums.push(sum);
                }
            }
            Prober::Icmp {
                sock,
                raw,
                ident,
                token,
            } => {
                if self.v4 {
                    sock.set_ttl_v4(u32::from(ttl)).map_err(send_err)?;
                } else {
                    sock.set_unicast_hops_v6(u32::from(ttl)).map_err(send_err)?;
                }
                let seq = self.seq0.wrapping_add(i as u16);
                let msg = ping::echo_request(self.v4, *raw, *ident, seq, *token);
                retry_pending(|| sock.send(&msg), || sock.take_error()).map_err(send_err)?;
            }
            Prober::Tcp(t) => {
                if self.v4 {
                    t.sock.set_ttl_v4(u32::from(ttl)).map_err(send_err)?;
                } else {
                    t.sock
                        .set_unicast_hops_v6(u32::from(ttl))
                        .map_err(send_err)?;
                }
                let seq = t.seq0.wrapping_add(i as u32);
                let local = (t.local.ip(), t.local.port());
                let syn = syn::syn_segment(local, (dst, t.port), seq);
                let to = SocketAddr::new(dst, 0).into();
                retry_pending(|| t.sock.send_to(&syn, &to), || t.sock.take_error())
                    .map_err(send_err)?;
            }
        }
        self.probes.push(Probe {
            ttl,
            sent,
            reply: None,
        });
        self.sent_at.push(at);
        Ok(())
    }

    /// Records `answer` from `from` for probe `i`, unless it already has one; the kernel
    /// received it at `received` (if it said), this thread read it at `read_at`.
    fn answer(
        &mut self,
        i: usize,
        from: IpAddr,
        answer: Answer,
        received: Option<SystemTime>,
        read_at: Instant,
    ) {
        let p = &mut self.probes[i];
        if p.reply.is_none() {
            let rtt = round_trip(p.sent, self.sent_at[i], received, read_at);
            p.reply = Some(Reply { from, rtt, answer });
        }
    }

    /// Reads one datagram or echo reply and records the answer it is; `false` when there is
    /// none to read.
    fn read_data(&mut self) -> bool {
        let sock = self.prober.socket();
        let got = sys::recv(&sock, Queue::Data, &mut self.buf, &mut self.control);
        let got = match got {
            Ok(Some(got)) => got,
            // nothing, or a pending error (read from the error queue)
            Ok(None) | Err(_) => return false,
        };
        let read_at = Instant::now();
        let received = sys::timestamp(&self.control[..got.control_len]);
        let sent = self.probes.len();
        let data = &self.buf[..got.data_len];
        let index = match &self.prober {
            // a datagram back from a probed port
            Prober::Udp {
                port, paris: false, ..
            } => got
                .address
                .filter(|a| a.ip() == self.dst)
                .and_then(|a| index_of(a.port(), *port, sent)),
            // from the one probed port: the probe whose number it echoes (an echo service),
            // else a probe of the highest hop limit still without an answer. Exactly the
            // probes whose hop limit reached the destination draw an answer, so once all came,
            // those are the probes that reached it (their round-trip times may be swapped
            // among probes)
            Prober::Udp {
                port, paris: true, ..
            } => got
                .address
                .filter(|a| a.ip() == self.dst && a.port() == *port)
                .and_then(|_| {
                    let echoed = number_of(data).and_then(|n| probe_index(n, sent));
                    if let Some(i) = echoed.filter(|&i| self.probes[i].reply.is_none()) {
                        return Some(i);
                    }
                    let open = self
                        .probes
                        .iter()
                        .enumerate()
                        .filter(|(_, p)| p.reply.is_none());
                    // the highest hop limit, the earliest sent of its probes
                    open.min_by_key(|(i, p)| (std::cmp::Reverse(p.ttl), *i))
                        .map(|(i, _)| i)
                }),
            // the destination's SYN-ACK or RST, acknowledging a probe's sequence number
            Prober::Tcp(t) => {
                let from = got.address.map(|a| a.ip());
                syn::segment(data, self.v4, from)
                    .filter(|s| {
                        s.from == self.dst
                            && s.source_port == t.port
                            && s.destination_port == t.local.port()
                            && s.answers_a_syn()
                    })
                    .and_then(|s| t.index(s.ack.wrapping_sub(1), sent))
            }
            // a connected ICMP socket reads only what the destination sends
            Prober::Icmp {
                raw, ident, token, ..
            } => {
                let icmp = ping::icmp_of(data, self.v4, *raw);
                let seq = icmp
                    .get(6..8)
                    .map_or(0, |s| u16::from_be_bytes([s[0], s[1]]));
                index_of(seq, self.seq0, sent)
                    .filter(|_| ping::is_echo_reply(icmp, self.v4, *raw, *ident, seq, *token))
            }
        };
        if let Some(i) = index {
            self.answer(i, self.dst, Answer::Reached, received, read_at);
        }
        true
    }

    /// Reads one message of the error queue and records the answer it is; `false` when the
    /// queue is empty.
    fn read_error(&mut self) -> bool {
        let sock = self.prober.socket();
        let q = match sys::recv(&sock, Queue::Errors, &mut self.buf, &mut self.control) {
            Ok(Some(q)) => q,
            Ok(None) | Err(_) => {
                // an error pending on the socket without an error queue (UDP Paris reading
                // errors raw: a connected socket keeps a port unreachable pending) keeps it
                // ready; it is in the raw socket's copy
                let _ = sock.take_error();
                return false;
            }
        };
        let read_at = Instant::now();
        let control = &self.control[..q.control_len];
        let received = sys::timestamp(control);
        let Some(e) = sys::extended_error(control) else {
            return true;
        };
        let icmp = e.origin == ORIGIN_ICMP || e.origin == ORIGIN_ICMP6;
        let Some(from) = e.offender.filter(|_| icmp) else {
            // a local error (e.g. a message too long for the first hop)
            return true;
        };
        let sent = self.probes.len();
        let index = match &self.prober {
            Prober::Udp {
                port, paris: false, ..
            } => q.address.and_then(|d| index_of(d.port(), *port, sent)),
            // the probe's number, in the first 8 bytes of its payload, if the router quoted
            // them
            Prober::Udp {
                port, paris: true, ..
            } => {
                let to_port = q.address.is_some_and(|d| d.port() == *port);
                match number_of(&self.buf[..q.data_len]).filter(|_| to_port) {
                    Some(n) => probe_index(n, sent),
                    None => {
                        self.unattributed += usize::from(to_port);
                        None
                    }
                }
            }
            // read whole from the raw ICMP socket instead
            Prober::Tcp(_) => None,
            Prober::Icmp { ident, raw, .. } => {
                // the quoted request: type, code, checksum, identifier, sequence number
                let quoted = &self.buf[..q.data_len];
                let request = ping::echo_types(self.v4).0;
                match quoted {
                    [t, _, _, _, i0, i1, s0, s1, ..]
                        if *t == request && (!raw || [*i0, *i1] == ident.to_be_bytes()) =>
                    {
                        index_of(u16::from_be_bytes([*s0, *s1]), self.seq0, sent)
                    }
                    _ => None,
                }
            }
        };
        if let Some(i) = index {
            let answer = classify(self.v4, e.icmp_type, e.icmp_code, from == self.dst);
            self.answer(i, from, answer, received, read_at);
        }
        true
    }

    /// Reads one message of the raw ICMP socket (UDP Paris, TCP) and records the answer it
    /// is for a probe of this trace; `false` when there is none to read.
    fn read_raw_error(&mut self) -> bool {
        if let Prober::Tcp(t) = &self.prober {
            let Some(r) = read_raw(&t.icmp, &mut self.buf, &mut self.control) else {
                return false;
            };
            let packet = &self.buf[..r.len];
            let index = quote::quoted(packet, self.v4, r.sender, quote::TCP)
                .filter(|q| {
                    q.destination == self.dst
                        && q.destination_port == t.port
                        && q.source_port == t.local.port()
                })
                .and_then(|q| Some((t.index(q.sequence, self.probes.len())?, q)));
            if let Some((i, q)) = index {
                let answer = classify(self.v4, q.icmp_type, q.code, q.from == self.dst);
                self.answer(i, q.from, answer, r.received, r.read_at);
            }
            return true;
        }
        let Prober::Udp {
            port,
            raw: Some(raw),
            ..
        } = &self.prober
        else {
            return false;
        };
        let Some(r) = read_raw(&raw.sock, &mut self.buf, &mut self.control) else {
            return false;
        };
        let (received, read_at) = (r.received, r.read_at);
        let Some(q) = quote::quoted(&self.buf[..r.len], self.v4, r.sender, quote::UDP) else {
            // another ICMP message of this host
            return true;
        };
        let ours = q.destination == self.dst
            && q.destination_port == *port
            && q.source_port == raw.local.port();
        if !ours {
            return true;
        }
        match raw_probe(&q, &raw.checksums) {
            Some(i) => {
                let answer = classify(self.v4, q.icmp_type, q.code, q.from == self.dst);
                self.answer(i, q.from, answer, received, read_at);
            }
            None => self.unattributed += 1,
        }
        true
    }
}

/// A message read from a raw socket into a buffer.
struct RawRead {
    /// Its bytes in the buffer.
    len: usize,
    /// The socket address's host (an IPv6 raw socket's only record of the sender).
    sender: Option<IpAddr>,
    /// The kernel's receive time, if it said.
    received: Option<SystemTime>,
    /// When it was read.
    read_at: Instant,
}

/// Reads one message of raw socket `sock` into `buf` (`None` when there is none).
fn read_raw(sock: &Socket, buf: &mut [u8], control: &mut [u8]) -> Option<RawRead> {
    let got = sys::recv(sock, Queue::Data, buf, control).ok()??;
    Some(RawRead {
        len: got.data_len,
        sender: got.address.map(|a| a.ip()),
        received: sys::timestamp(&control[..got.control_len]),
        read_at: Instant::now(),
    })
}

/// Runs `send`, first clearing the socket's pending error with `take_error`: an ICMP error
/// for an earlier probe (port unreachable, host unreachable) is left pending on the socket
/// besides its error queue, and would fail the next send. A failed send is tried twice more
/// (an answer may have come in between), then its error is the send's: a local one, such as
/// no route to the destination.
fn retry_pending(
    mut send: impl FnMut() -> std::io::Result<usize>,
    take_error: impl Fn() -> std::io::Result<Option<std::io::Error>>,
) -> std::io::Result<usize> {
    let mut tries = 0;
    loop {
        let _ = take_error();
        match send() {
            Ok(n) => return Ok(n),
            Err(e) if tries == 2 => return Err(e),
            Err(_) => tries += 1,
        }
    }
}

/// What an ICMP error of `icmp_type` and `code` says, `from_destination` if the destination
/// itself sent it.
fn classify(v4: bool, icmp_type: u8, code: u8, from_destination: bool) -> Answer {
    // (time exceeded, destination unreachable, its "port unreachable" code)
    let (exceeded, unreachable, port) = if v4 { (11, 3, 3) } else { (3, 1, 4) };
    if icmp_type == exceeded {
        Answer::TimeExceeded
    } else if icmp_type == unreachable && code == port && from_destination {
        Answer::Reached
    } else {
        Answer::Unreachable { icmp_type, code }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::active::testns::{Netns, run};

    #[test]
    fn icmp_errors_are_classified() {
        let unreachable = |icmp_type, code| Answer::Unreachable { icmp_type, code };
        for (v4, icmp_type, code, from_destination, want) in [
            (true, 11, 0, false, Answer::TimeExceeded),
            (true, 3, 3, true, Answer::Reached),
            (true, 3, 3, false, unreachable(3, 3)),
            (true, 3, 13, true, unreachable(3, 13)),
            (false, 3, 0, false, Answer::TimeExceeded),
            (false, 1, 4, true, Answer::Reached),
            (false, 1, 3, false, unreachable(1, 3)),
        ] {
            assert_eq!(
                classify(v4, icmp_type, code, from_destination),
                want,
                "{v4} {icmp_type}/{code}"
            );
        }
        assert_eq!(index_of(33436, 33434, 3), Some(2));
        assert_eq!(index_of(33437, 33434, 3), None);
        assert_eq!(index_of(2, 65535, 4), Some(3), "sequence numbers wrap");
    }

    #[test]
    fn bad_options_are_refused_before_sending() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let e = trace(
            lo,
            "::1".parse().unwrap(),
            &TraceOptions::default(),
            &|| false,
        )
        .unwrap_err();
        assert!(matches!(e, TraceError::Family { .. }), "{e}");
        let opts = TraceOptions {
            port: 65500,
            ..TraceOptions::default()
        };
        let e = trace(lo, lo, &opts, &|| false).unwrap_err();
        assert!(e.to_string().contains("65500"), "{e}");
        let e = trace(
            "192.0.2.77".parse().unwrap(),
            lo,
            &TraceOptions::default(),
            &|| false,
        )
        .unwrap_err();
        assert!(e.to_string().contains("192.0.2.77"), "{e}");
        for (src, dst) in [
            (lo, "224.0.0.1"),
            (lo, "255.255.255.255"),
            (lo, "0.0.0.0"),
            ("::1".parse().unwrap(), "ff02::1"),
        ] {
            let e = trace(src, dst.parse().unwrap(), &TraceOptions::default(), &|| {
                false
            })
            .unwrap_err();
            assert!(e.to_string().contains("not a unicast"), "{dst}: {e}");
        }
    }

    /// A trace that must succeed; `None`, with a message, where the ICMP method has no
    /// ICMP socket (not root, no CAP_NET_RAW, ping_group_range closed).
    fn trace_unless_no_icmp(src: IpAddr, dst: IpAddr, opts: &TraceOptions) -> Option<Trace> {
        match trace(src, dst, opts, &|| false) {
            Err(TraceError::Icmp(PingError::Socket(e))) => {
                eprintln!("skipping ICMP: no ICMP socket here: {e}");
                None
            }
            Err(TraceError::Raw(e)) => {
                eprintln!("skipping TCP: no raw socket here: {e}");
                None
            }
            other => Some(other.unwrap()),
        }
    }

    /// Loopback is one hop away, by every method and IP version (ICMP needs an ICMP
    /// socket, TCP raw sockets; skipped without them). TCP's closed port answers RST.
    #[test]
    fn loopback_is_reached_at_the_first_hop() {
        for method in TraceMethod::ALL {
            for lo in ["127.0.0.1", "::1"] {
                let lo: IpAddr = lo.parse().unwrap();
                let opts = TraceOptions {
                    method,
                    ..TraceOptions::default()
                };
                let Some(t) = trace_unless_no_icmp(lo, lo, &opts) else {
                    continue;
                };
                assert_eq!(t.end, End::Reached, "{method:?} {lo}: {t:?}");
                assert_eq!(t.probes.len(), 3, "{t:?}");
                for p in &t.probes {
                    let r = p.reply.unwrap();
                    assert_eq!((p.ttl, r.from, r.answer), (1, lo, Answer::Reached));
                    assert!(r.rtt < Duration::from_secs(1));
                }
            }
        }
    }

    /// A listening port answers TCP probes with SYN-ACKs (the kernel then resets the
    /// half-open connections: the probes' port has no socket that listens).
    #[test]
    fn tcp_reaches_a_listening_port() {
        for lo in ["127.0.0.1", "::1"] {
            let lo: IpAddr = lo.parse().unwrap();
            let listener = std::net::TcpListener::bind((lo, 0)).unwrap();
            let opts = TraceOptions {
                method: TraceMethod::Tcp,
                port: listener.local_addr().unwrap().port(),
                ..TraceOptions::default()
            };
            let Some(t) = trace_unless_no_icmp(lo, lo, &opts) else {
                return;
            };
            assert_eq!(t.end, End::Reached, "{lo}: {t:?}");
            assert!(
                t.probes
                    .iter()
                    .all(|p| p.reply.map(|r| (r.from, r.answer)) == Some((lo, Answer::Reached))),
                "{t:?}"
            );
            // nothing was accepted: no connection completed
            listener.set_nonblocking(true).unwrap();
            assert!(listener.accept().is_err());
        }
    }

    /// Errors read raw name their probe by the quoted payload's number, or, when a router
    /// quoted only the UDP header (RFC 792's 8 bytes), by the checksum in it.
    #[test]
    fn raw_errors_name_their_probe() {
        let (me, dst): (IpAddr, IpAddr) = (
            "192.0.2.1".parse().unwrap(),
            "198.51.100.7".parse().unwrap(),
        );
        let checksums: Vec<u16> = (0..6)
            .map(|i| quote::udp_checksum((me, 40000), (dst, 33434), &udp_payload(i)))
            .collect();
        let quoted = |payload, checksum| quote::Quoted {
            from: "203.0.113.9".parse().unwrap(),
            icmp_type: 11,
            code: 0,
            destination: dst,
            source_port: 40000,
            destination_port: 33434,
            checksum,
            sequence: 0,
            payload,
        };
        let number = udp_payload(4);
        // the whole probe quoted
        assert_eq!(
            raw_probe(&quoted(&number, checksums[4]), &checksums),
            Some(4)
        );
        // a checksum left partial by a virtual device: the number names it
        assert_eq!(raw_probe(&quoted(&number, 0x1234), &checksums), Some(4));
        // only the UDP header quoted: the checksum names it
        assert_eq!(raw_probe(&quoted(&[], checksums[2]), &checksums), Some(2));
        assert_eq!(
            raw_probe(&quoted(&number[..7], checksums[5]), &checksums),
            Some(5)
        );
        // neither: no probe of this trace
        assert_eq!(raw_probe(&quoted(&[], 0x1234), &checksums), None);
        assert_eq!(
            raw_probe(&quoted(&udp_payload(9), 0x1234), &checksums),
            None
        );
    }

    /// A service on the probed port answers UDP Paris probes with datagrams: each answers a
    /// probe, and the trace has reached its destination.
    #[test]
    fn udp_paris_reaches_a_listening_service() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let service = UdpSocket::bind((lo, 0)).unwrap();
        let port = service.local_addr().unwrap().port();
        // an echo service: it answers every probe, naming it
        service
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let echo = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while let Ok((n, from)) = service.recv_from(&mut buf) {
                service.send_to(&buf[..n], from).unwrap();
            }
        });
        let opts = TraceOptions {
            method: TraceMethod::UdpParis,
            port,
            ..TraceOptions::default()
        };
        let t = trace(lo, lo, &opts, &|| false).unwrap();
        echo.join().unwrap();
        assert_eq!(t.end, End::Reached, "{t:?}");
        assert_eq!(t.probes.len(), 3, "{t:?}");
        assert_eq!(t.unattributed, 0);
        for p in &t.probes {
            let r = p.reply.unwrap();
            assert_eq!((p.ttl, r.from, r.answer), (1, lo, Answer::Reached));
        }
    }

    /// Two equal-cost paths from `S` to `D` through routers `R1` and `R2`, and a load balancer
    /// in `S` that hashes addresses and ports (`fib_multipath_hash_policy = 1`): a classic UDP
    /// trace sees both routers at its first hop, a UDP Paris trace one, the same for all its
    /// probes. The traces run in `S` (the child test below). Needs root; skipped otherwise.
    #[test]
    fn udp_paris_stays_on_one_of_two_equal_cost_paths() {
        let Some(s) = Netns::create("mpes") else {
            return;
        };
        let (r1, r2, d) = (
            Netns::create("mpe1").unwrap(),
            Netns::create("mpe2").unwrap(),
            Netns::create("mped").unwrap(),
        );
        let net = format!("10.95.{}", std::process::id() % 250 + 1);
        let pid = std::process::id() % 100_000;
        // a veth pair from `a` (address `.x`) to `b` (`.y`), both /30
        let link = |a: &Netns, b: &Netns, tag: &str, x: u8, y: u8| {
            let (ai, bi) = (format!("{tag}a{pid}"), format!("{tag}b{pid}"));
            a.link(
                b,
                &ai,
                &format!("{net}.{x}/30"),
                &bi,
                &format!("{net}.{y}/30"),
            );
        };
        link(&s, &r1, "es1", 1, 2);
        link(&s, &r2, "es2", 5, 6);
        link(&r1, &d, "e1d", 9, 10);
        link(&r2, &d, "e2d", 13, 14);
        let (src, dst) = (format!("{net}.200"), format!("{net}.100"));
        assert!(s.exec(&["ip", "addr", "add", &format!("{src}/32"), "dev", "lo"]));
        assert!(d.exec(&["ip", "addr", "add", &format!("{dst}/32"), "dev", "lo"]));
        let (via1, via2) = (format!("{net}.2"), format!("{net}.6"));
        assert!(s.exec(&[
            "ip", "route", "add", &dst, "nexthop", "via", &via1, "nexthop", "via", &via2
        ]));
        s.sysctls(&["net.ipv4.fib_multipath_hash_policy=1"]);
        for (r, to_s, to_d) in [
            (&r1, format!("{net}.1"), format!("{net}.10")),
            (&r2, format!("{net}.5"), format!("{net}.14")),
        ] {
            assert!(r.exec(&["ip", "route", "add", &src, "via", &to_s]));
            assert!(r.exec(&["ip", "route", "add", &dst, "via", &to_d]));
            r.sysctls(&["net.ipv4.ip_forward=1"]);
        }
        assert!(d.exec(&["ip", "route", "add", "default", "via", &format!("{net}.9")]));
        // no ICMP rate limits: neither per destination nor the namespace's (a burst of 50,
        // then 1,000 a second), which 60 probes of hop 2 in a row would spend
        for ns in [&s, &r1, &r2, &d] {
            ns.sysctls(&[
                "net.ipv4.icmp_ratelimit=0",
                "net.ipv4.icmp_msgs_burst=10000",
                "net.ipv4.icmp_msgs_per_sec=100000",
                "net.ipv4.conf.all.rp_filter=0",
            ]);
        }
        let child = "active::trace::tests::equal_cost_paths_child";
        let env = [("MPLANE_TRACE_ECMP", format!("{src} {dst} {via1} {via2}"))];
        // as root, UDP Paris reads its errors from a raw ICMP socket ...
        s.run_child_test(child, &env);
        // ... and without CAP_NET_RAW from the UDP socket's error queue
        s.run_child_test_under(&["setpriv", "--bounding-set", "-net_raw"], child, &env);
    }

    /// The addresses a parent test passed to its child test in `var`, separated by spaces.
    fn addresses_from_env(var: &str) -> Vec<IpAddr> {
        let text = std::env::var(var).unwrap();
        text.split(' ').map(|s| s.parse().unwrap()).collect()
    }

    /// Run by [`udp_paris_stays_on_one_of_two_equal_cost_paths`] inside S: classic UDP and
    /// UDP Paris traces to D over the two paths.
    #[test]
    #[ignore = "child process of udp_paris_stays_on_one_of_two_equal_cost_paths"]
    fn equal_cost_paths_child() {
        let a = addresses_from_env("MPLANE_TRACE_ECMP");
        let (src, dst, routers) = (a[0], a[1], [Some(a[2]), Some(a[3])]);
        // the answers of hop 1 and of hop 2, over `runs` traces (each checked on its own)
        let run = |method, runs: u16| {
            let mut first = Vec::new();
            for k in 0..runs {
                let opts = TraceOptions {
                    method,
                    attempts: 10,
                    max_hops: 4,
                    wait: Duration::from_millis(500),
                    port: 33434 + k * 100,
                    ..TraceOptions::default()
                };
                let t = trace(src, dst, &opts, &|| false).unwrap();
                assert_eq!(
                    (t.end, t.unattributed),
                    (End::Reached, 0),
                    "{method:?}: {t:?}"
                );
                let hop = |ttl| t.probes.iter().filter(move |p| p.ttl == ttl);
                let one: Vec<_> = hop(1).map(|p| p.reply.map(|r| r.from)).collect();
                assert_eq!(one.len(), 10, "{t:?}");
                assert!(one.iter().all(|r| routers.contains(r)), "{method:?}: {t:?}");
                assert!(
                    hop(2).all(
                        |p| p.reply.map(|r| (r.from, r.answer)) == Some((dst, Answer::Reached))
                    ),
                    "{method:?}: {t:?}"
                );
                if matches!(method, TraceMethod::UdpParis | TraceMethod::Tcp) {
                    assert!(
                        one.iter().all(|r| *r == one[0]),
                        "one flow, one path: {t:?}"
                    );
                }
                first.extend(one);
            }
            first
        };
        // a new port per probe: 30 probes of hop 1 all hashed to one path would be a chance
        // of 2^-29
        let classic = run(TraceMethod::Udp, 3);
        assert!(
            routers.iter().all(|r| classic.contains(r)),
            "classic UDP probes took one path only: {classic:?}"
        );
        run(TraceMethod::UdpParis, 3);
        // TCP SYNs are one flow too; they need raw sockets, and without CAP_NET_RAW the
        // trace is a clear error, nothing sent
        if Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::TCP)).is_ok() {
            run(TraceMethod::Tcp, 3);
        } else {
            let opts = TraceOptions {
                method: TraceMethod::Tcp,
                ..TraceOptions::default()
            };
            let e = trace(src, dst, &opts, &|| false).unwrap_err();
            assert!(
                matches!(e, TraceError::Raw(_)) && e.to_string().contains("CAP_NET_RAW"),
                "{e}"
            );
        }
    }

    /// The namespaces of a routed path: this host – `R` (a router) – `B` (the destination),
    /// over IPv4 and IPv6, with the ICMP rate limits of both lifted.
    struct Path {
        r: Netns,
        b: Netns,
        /// This host's, the router's near and far, and the destination's addresses.
        v4: [IpAddr; 4],
        v6: [IpAddr; 4],
    }

    fn path(tag: &str) -> Option<Path> {
        let pid = std::process::id() % 100_000;
        let net = (pid % 250) as u8 + 1;
        let mut r = Netns::create(&format!("{tag}r"))?;
        let b = Netns::create(&format!("{tag}b"))?;
        let (hr, rh) = (format!("{tag}h{pid}"), format!("{tag}rh{pid}"));
        r.veth(
            &hr,
            &format!("10.93.{net}.1/30"),
            &rh,
            &format!("10.93.{net}.2/30"),
        );
        // the router's far side: a veth pair inside R, one end moved into B
        let (rb, br) = (format!("{tag}rb{pid}"), format!("{tag}br{pid}"));
        r.link(
            &b,
            &rb,
            &format!("10.93.{net}.5/30"),
            &br,
            &format!("10.93.{net}.6/30"),
        );
        for (ns, dev, addr) in [
            (None, hr.as_str(), format!("fd93:{net}:1::1/64")),
            (Some(&r), rh.as_str(), format!("fd93:{net}:1::2/64")),
            (Some(&r), rb.as_str(), format!("fd93:{net}:2::1/64")),
            (Some(&b), br.as_str(), format!("fd93:{net}:2::2/64")),
        ] {
            let cmd = ["ip", "-6", "addr", "add", &addr, "dev", dev, "nodad"];
            assert!(ns.map_or_else(|| run(&cmd), |n| n.exec(&cmd)), "{addr}");
        }
        for ns in [&r, &b] {
            ns.sysctls(&[
                "net.ipv4.ip_forward=1",
                "net.ipv6.conf.all.forwarding=1",
                "net.ipv4.icmp_ratelimit=0",
                "net.ipv6.icmp.ratelimit=0",
            ]);
        }
        // this host reaches B through R (the routes go with the veth when the test ends);
        // B answers through R
        assert!(run(&[
            "ip",
            "route",
            "add",
            &format!("10.93.{net}.4/30"),
            "via",
            &format!("10.93.{net}.2")
        ]));
        assert!(run(&[
            "ip",
            "-6",
            "route",
            "add",
            &format!("fd93:{net}:2::/64"),
            "via",
            &format!("fd93:{net}:1::2")
        ]));
        assert!(b.exec(&[
            "ip",
            "route",
            "add",
            "default",
            "via",
            &format!("10.93.{net}.5")
        ]));
        assert!(b.exec(&[
            "ip",
            "-6",
            "route",
            "add",
            "default",
            "via",
            &format!("fd93:{net}:2::1")
        ]));
        // IPv6 neighbour discovery waits for the link-local addresses' duplicate detection
        for (ns, dev) in [
            (None, &hr),
            (Some(&r), &rh),
            (Some(&r), &rb),
            (Some(&b), &br),
        ] {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let mut cmd = match ns {
                    Some(n) => {
                        let mut c = std::process::Command::new("ip");
                        c.args(["netns", "exec", &n.name, "ip"]);
                        c
                    }
                    None => std::process::Command::new("ip"),
                };
                let out = cmd
                    .args(["-6", "addr", "show", "dev", dev, "tentative"])
                    .output()
                    .unwrap();
                if out.stdout.is_empty() || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let ip = |s: String| s.parse::<IpAddr>().unwrap();
        Some(Path {
            r,
            b,
            v4: [
                ip(format!("10.93.{net}.1")),
                ip(format!("10.93.{net}.2")),
                ip(format!("10.93.{net}.5")),
                ip(format!("10.93.{net}.6")),
            ],
            v6: [
                ip(format!("fd93:{net}:1::1")),
                ip(format!("fd93:{net}:1::2")),
                ip(format!("fd93:{net}:2::1")),
                ip(format!("fd93:{net}:2::2")),
            ],
        })
    }

    /// Two hops, by both methods over both IP versions: the router's time exceeded, then the
    /// destination; then, with the destination's way back removed, the router alone and
    /// silent hops up to the gap limit. Needs root for the namespaces; skipped otherwise.
    #[test]
    fn a_routed_path_hop_by_hop() {
        let Some(p) = path("mptr") else { return };
        let (t0, mut traces) = (Instant::now(), 0u32);
        for [me, router, _, dst] in [p.v4, p.v6] {
            for method in TraceMethod::ALL {
                let opts = TraceOptions {
                    method,
                    wait: Duration::from_millis(500),
                    // TCP: a closed port of the destination answers RST
                    port: if method == TraceMethod::Tcp {
                        80
                    } else {
                        33434
                    },
                    ..TraceOptions::default()
                };
                let Some(t) = trace_unless_no_icmp(me, dst, &opts) else {
                    continue;
                };
                traces += 1;
                assert_eq!(t.end, End::Reached, "{method:?} {dst}: {t:?}");
                let got: Vec<_> = t
                    .probes
                    .iter()
                    .map(|p| (p.ttl, p.reply.map(|r| (r.from, r.answer))))
                    .collect();
                let hop1 = Some((router, Answer::TimeExceeded));
                let hop2 = Some((dst, Answer::Reached));
                assert_eq!(
                    got,
                    [
                        (1, hop1),
                        (1, hop1),
                        (1, hop1),
                        (2, hop2),
                        (2, hop2),
                        (2, hop2)
                    ],
                    "{method:?} {dst}"
                );
            }
        }
        // answers are read as they come: two hops take a millisecond or two, not a wait
        // interval each (200 ms a trace)
        assert!(
            t0.elapsed() < Duration::from_millis(150) * traces,
            "{:?} for {traces} traces",
            t0.elapsed()
        );
        // a router that rate-limits its errors (one a second) answers one probe of three, or
        // two if the test stalled a second:
        // the hop is given up on soon after, not after the whole wait
        // (Linux: a burst of six, then one per icmp_ratelimit ms; ten probes spend the burst)
        let [me, router, _, dst] = p.v4;
        assert!(p.r.exec(&["sysctl", "-qw", "net.ipv4.icmp_ratelimit=1000"]));
        let spend = TraceOptions {
            attempts: 10,
            max_hops: 1,
            wait: Duration::from_millis(100),
            ..TraceOptions::default()
        };
        let _ = trace(me, dst, &spend, &|| false).unwrap();
        std::thread::sleep(Duration::from_millis(1050));
        let opts = TraceOptions {
            wait: Duration::from_secs(5),
            ..TraceOptions::default()
        };
        let t0 = Instant::now();
        let t = trace(me, dst, &opts, &|| false).unwrap();
        let took = t0.elapsed();
        // a router that does not answer at all (its limit now 100 s): its hop is given up
        // on once the next hop answered, after ten times that answer (at least 10 ms)
        assert!(p.r.exec(&["sysctl", "-qw", "net.ipv4.icmp_ratelimit=100000"]));
        let _ = trace(me, dst, &spend, &|| false).unwrap();
        let t1 = Instant::now();
        let silent = trace(me, dst, &opts, &|| false).unwrap();
        let took_silent = t1.elapsed();
        assert!(p.r.exec(&["sysctl", "-qw", "net.ipv4.icmp_ratelimit=0"]));
        assert_eq!(t.end, End::Reached, "{t:?}");
        let hop1: Vec<_> = t.probes[..3]
            .iter()
            .map(|p| p.reply.map(|r| r.from))
            .collect();
        assert!(
            hop1.contains(&Some(router)) && hop1.contains(&None),
            "{t:?}"
        );
        assert!(took < Duration::from_secs(1), "{took:?}: {t:?}");
        assert_eq!(silent.end, End::Reached, "{silent:?}");
        let hops: Vec<_> = silent
            .probes
            .iter()
            .map(|p| (p.ttl, p.reply.map(|r| r.from)))
            .collect();
        let d = Some(dst);
        assert_eq!(
            hops,
            [(1, None), (1, None), (1, None), (2, d), (2, d), (2, d)]
        );
        assert!(
            took_silent < Duration::from_secs(1),
            "{took_silent:?}: {silent:?}"
        );
        // the other way, from B, with an unprivileged ICMP socket (the child test below)
        assert!(p.b.exec(&["sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647"]));
        let back = [p.v4[3], p.v4[2], p.v4[0], p.v6[3], p.v6[2], p.v6[0]].map(|a| a.to_string());
        p.b.run_child_test(
            "active::trace::tests::unprivileged_child",
            &[("MPLANE_TRACE_BACK", back.join(" "))],
        );
        // B loses its way back: beyond the router, nothing answers
        assert!(p.b.exec(&["ip", "route", "del", "default"]));
        assert!(p.b.exec(&["ip", "-6", "route", "del", "default"]));
        let [me, router, _, dst] = p.v4;
        let opts = TraceOptions {
            wait: Duration::from_millis(200),
            gap_limit: 2,
            ..TraceOptions::default()
        };
        let t0 = Instant::now();
        let t = trace(me, dst, &opts, &|| false).unwrap();
        assert_eq!(t.end, End::Gap, "{t:?}");
        assert_eq!(t.probes.len(), 9, "{t:?}");
        assert!(
            t.probes[..3]
                .iter()
                .all(|p| p.reply.unwrap().from == router)
        );
        assert!(t.probes[3..].iter().all(|p| p.reply.is_none()), "{t:?}");
        assert_eq!(t.probes[8].ttl, 3);
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        // and a stop ends the trace at once
        let opts = TraceOptions {
            wait: Duration::from_secs(30),
            ..TraceOptions::default()
        };
        let t0 = Instant::now();
        let stop = || t0.elapsed() > Duration::from_millis(300);
        let t = trace(me, dst, &opts, &stop).unwrap();
        assert_eq!(t.end, End::Stopped, "{t:?}");
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
        // the route to B turns unreachable after the first hop (the check before the second
        // hop's probes does it): the trace ends with the first hop's probes, not an error
        let opts = TraceOptions {
            wait: Duration::from_millis(200),
            ..TraceOptions::default()
        };
        let IpAddr::V4(b) = p.v4[3] else {
            unreachable!()
        };
        let [o0, o1, o2, o3] = b.octets();
        let prefix = format!("{o0}.{o1}.{o2}.{}/30", o3 & !3);
        let hops = std::cell::Cell::new(0);
        let stop = || {
            hops.set(hops.get() + 1);
            if hops.get() == 2 {
                assert!(run(&["ip", "route", "replace", "unreachable", &prefix]));
            }
            false
        };
        let t = trace(me, dst, &opts, &stop);
        assert!(run(&["ip", "route", "del", &prefix]));
        let t = t.unwrap();
        assert_eq!(t.end, End::SendFailed, "{t:?}");
        assert_eq!(t.probes.len(), 3, "{t:?}");
        // unreachable from the start: the first probe's error is the trace's
        assert!(run(&["ip", "route", "replace", "unreachable", &prefix]));
        let e = trace(me, dst, &opts, &|| false);
        assert!(run(&["ip", "route", "del", &prefix]));
        let e = e.unwrap_err();
        assert!(matches!(e, TraceError::Send { .. }), "{e}");
        assert!(e.to_string().contains(&dst.to_string()), "{e}");
    }

    /// Run by [`a_routed_path_hop_by_hop`] inside B, whose `ping_group_range` it opened:
    /// ICMP traces from B back to this host over an unprivileged socket, two hops each.
    #[test]
    #[ignore = "child process of a_routed_path_hop_by_hop"]
    fn unprivileged_child() {
        let a = addresses_from_env("MPLANE_TRACE_BACK");
        for [me, router, dst] in [[a[0], a[1], a[2]], [a[3], a[4], a[5]]] {
            let opts = TraceOptions {
                method: TraceMethod::Icmp,
                wait: Duration::from_millis(500),
                ..TraceOptions::default()
            };
            let t = trace(me, dst, &opts, &|| false).unwrap();
            assert_eq!(t.end, End::Reached, "{dst}: {t:?}");
            let got: Vec<_> = t
                .probes
                .iter()
                .map(|p| (p.ttl, p.reply.map(|r| r.from)))
                .collect();
            let (r, d) = (Some(router), Some(dst));
            assert_eq!(
                got,
                [(1, r), (1, r), (1, r), (2, d), (2, d), (2, d)],
                "{dst}"
            );
        }
        // the socket was an unprivileged one
        assert!(
            !ping::open(a[0], a[2]).unwrap().1,
            "a raw socket was opened"
        );
    }
}
