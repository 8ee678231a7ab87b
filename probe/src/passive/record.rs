//! Flow records: what a worker emits when a flow ends or is cut.
//!
//! A [`FlowRecord`] is a plain `Copy` value (no heap): the canonical [`FlowKey`], which endpoint
//! initiated the flow, and per direction a [`DirRecord`] of counters accumulated since the
//! flow's previous cut (window end, active timeout) or its first packet. Application strings
//! (DNS query name, TLS/QUIC SNI, HTTP Host) travel beside the record in the batch's string
//! buffer, referenced by [`AppRecord::name`].
//!
//! Records of one flow cut at several window boundaries can be merged back
//! ([`FlowRecord::merge`]): counters add, minima/maxima and first/last times combine, RTT
//! statistics combine exactly (count, sum, sum of squares). A flow is identified across its
//! segments by `(key, flow_start_ns)`.

use std::net::IpAddr;

use mplane_capture::flow::{FlowKey, KeyKind};
use mplane_capture::packet::TunnelKind;

/// Why a record was emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
#[repr(u8)]
pub enum EndReason {
    /// No packet for the idle timeout.
    #[default]
    Idle = 0,
    /// The flow has lasted the active timeout; it continues in a new record.
    Active = 1,
    /// TCP: both sides sent FIN.
    Fin = 2,
    /// TCP: a RST was seen.
    Rst = 3,
    /// The table was full: the least recently active flow made room for a new one.
    Evicted = 4,
    /// A measurement window ended while the flow was open; it continues in the next window.
    Window = 5,
    /// The source ended (end of a capture file, capture stopped).
    Shutdown = 6,
}

impl EndReason {
    /// All reasons, in code order.
    pub const ALL: [EndReason; 7] = [
        EndReason::Idle,
        EndReason::Active,
        EndReason::Fin,
        EndReason::Rst,
        EndReason::Evicted,
        EndReason::Window,
        EndReason::Shutdown,
    ];

    /// The name written into results and files.
    pub const fn name(self) -> &'static str {
        match self {
            EndReason::Idle => "idle",
            EndReason::Active => "active",
            EndReason::Fin => "fin",
            EndReason::Rst => "rst",
            EndReason::Evicted => "evicted",
            EndReason::Window => "window",
            EndReason::Shutdown => "shutdown",
        }
    }

    /// `true` when the flow goes on after this record (a later record continues it).
    pub const fn continues(self) -> bool {
        matches!(self, EndReason::Active | EndReason::Window)
    }
}

/// Per-segment RTT samples of one direction: data segments sent in that direction and the
/// acknowledgements coming back (one sample in flight at a time, Karn's rule: retransmitted
/// data is never sampled).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RttStats {
    /// Number of samples.
    pub count: u32,
    /// Smallest sample, ns (saturating at `u32::MAX`, 4.29 s).
    pub min_ns: u32,
    /// Largest sample, ns (saturating).
    pub max_ns: u32,
    /// Sum of samples, ns.
    pub sum_ns: u64,
    /// Sum of squared samples, ns².
    pub sum_sq: f64,
}

impl RttStats {
    /// Adds one sample.
    #[inline]
    pub fn add(&mut self, ns: u64) {
        let n32 = ns.min(u64::from(u32::MAX)) as u32;
        if self.count == 0 || n32 < self.min_ns {
            self.min_ns = n32;
        }
        if n32 > self.max_ns {
            self.max_ns = n32;
        }
        self.count += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
        let f = ns as f64;
        self.sum_sq += f * f;
    }

    /// Combines two sets of samples.
    pub fn merge(&mut self, o: &RttStats) {
        if o.count == 0 {
            return;
        }
        if self.count == 0 || o.min_ns < self.min_ns {
            self.min_ns = o.min_ns;
        }
        self.max_ns = self.max_ns.max(o.max_ns);
        self.count += o.count;
        self.sum_ns = self.sum_ns.saturating_add(o.sum_ns);
        self.sum_sq += o.sum_sq;
    }

    /// Mean, ns.
    pub fn mean_ns(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_ns as f64 / f64::from(self.count))
    }

    /// Population standard deviation, ns.
    pub fn stddev_ns(&self) -> Option<f64> {
        let m = self.mean_ns()?;
        let var = (self.sum_sq / f64::from(self.count) - m * m).max(0.0);
        Some(var.sqrt())
    }
}

/// TCP options an endpoint announced in its SYN (or SYN/ACK).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpOptions {
    /// A SYN was seen from this endpoint (the fields below are valid).
    pub syn_seen: bool,
    /// MSS option, 0 when absent.
    pub mss: u16,
    /// Window scale shift, `None` when absent.
    pub wscale: Option<u8>,
    /// SACK-permitted option.
    pub sack_permitted: bool,
    /// Timestamps option.
    pub timestamps: bool,
}

/// What one direction of a flow did since the record's start.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DirRecord {
    /// Packets.
    pub packets: u64,
    /// IP octets: the sum of IP total lengths (the bytes at the IP layer on the wire).
    pub ip_octets: u64,
    /// Transport payload octets, retransmissions included.
    pub payload_octets: u64,
    /// First packet, ns since the epoch (0 when `packets == 0`).
    pub first_ns: u64,
    /// Last packet, ns since the epoch.
    pub last_ns: u64,
    /// Union of the TCP flags seen (low 8 bits: FIN SYN RST PSH ACK URG ECE CWR).
    pub tcp_flags: u8,
    /// Smallest TTL / hop limit.
    pub ttl_min: u8,
    /// Largest TTL / hop limit.
    pub ttl_max: u8,
    /// Segments with SYN (saturating).
    pub syn: u16,
    /// Segments with FIN (saturating).
    pub fin: u16,
    /// Segments with RST (saturating).
    pub rst: u16,
    /// Segments with ACK.
    pub ack: u32,
    /// ACK-only segments (no payload, no SYN/FIN/RST).
    pub pure_ack: u32,
    /// Segments carrying payload.
    pub with_payload: u32,
    /// Segments that carried data already seen (retransmissions).
    pub rxmit_packets: u32,
    /// Payload octets already seen before (retransmitted).
    pub rxmit_octets: u64,
    /// Segments beyond the next expected sequence number (a hole opened).
    pub out_of_sequence: u32,
    /// Segments that filled a hole sooner than a round trip after it opened (reordered in the
    /// network, not retransmitted).
    pub reordered: u32,
    /// Exact copies of the previous segment (same sequence, length and IP identification)
    /// arriving within a millisecond: duplicated by the network.
    pub duplicates: u32,
    /// Segments advertising a zero receive window (RST excluded).
    pub zero_window: u32,
    /// RTT samples of data sent in this direction.
    pub rtt: RttStats,
    /// Options of the sending endpoint's SYN.
    pub options: TcpOptions,
    /// First payload, µs after the flow's first packet (`u32::MAX` = none).
    pub first_payload_us: u32,
    /// Last payload, µs after the flow's first packet (`u32::MAX` = none).
    pub last_payload_us: u32,
    /// First ACK, µs after the flow's first packet (`u32::MAX` = none).
    pub first_ack_us: u32,
}

/// `u32::MAX`: no such event.
pub const NO_TIME_US: u32 = u32::MAX;

impl DirRecord {
    /// An empty direction (no packets).
    pub const EMPTY: DirRecord = DirRecord {
        packets: 0,
        ip_octets: 0,
        payload_octets: 0,
        first_ns: 0,
        last_ns: 0,
        tcp_flags: 0,
        ttl_min: 0,
        ttl_max: 0,
        syn: 0,
        fin: 0,
        rst: 0,
        ack: 0,
        pure_ack: 0,
        with_payload: 0,
        rxmit_packets: 0,
        rxmit_octets: 0,
        out_of_sequence: 0,
        reordered: 0,
        duplicates: 0,
        zero_window: 0,
        rtt: RttStats {
            count: 0,
            min_ns: 0,
            max_ns: 0,
            sum_ns: 0,
            sum_sq: 0.0,
        },
        options: TcpOptions {
            syn_seen: false,
            mss: 0,
            wscale: None,
            sack_permitted: false,
            timestamps: false,
        },
        first_payload_us: NO_TIME_US,
        last_payload_us: NO_TIME_US,
        first_ack_us: NO_TIME_US,
    };

    /// Unique payload octets (payload minus retransmitted octets).
    pub fn unique_octets(&self) -> u64 {
        self.payload_octets.saturating_sub(self.rxmit_octets)
    }

    /// Resets the counters of a new record segment, keeping what describes the endpoint
    /// (announced options, payload/ACK times relative to the flow's start).
    pub fn reset_counters(&mut self) {
        *self = DirRecord {
            options: self.options,
            first_payload_us: self.first_payload_us,
            last_payload_us: self.last_payload_us,
            first_ack_us: self.first_ack_us,
            ..DirRecord::EMPTY
        };
    }

    /// Combines a later segment of the same direction into this one.
    pub fn merge(&mut self, o: &DirRecord) {
        if o.packets == 0 {
            return;
        }
        if self.packets == 0 {
            self.first_ns = o.first_ns;
            self.ttl_min = o.ttl_min;
            self.ttl_max = o.ttl_max;
        } else {
            self.first_ns = self.first_ns.min(o.first_ns);
            self.ttl_min = self.ttl_min.min(o.ttl_min);
            self.ttl_max = self.ttl_max.max(o.ttl_max);
        }
        self.last_ns = self.last_ns.max(o.last_ns);
        self.packets += o.packets;
        self.ip_octets += o.ip_octets;
        self.payload_octets += o.payload_octets;
        self.tcp_flags |= o.tcp_flags;
        self.syn = self.syn.saturating_add(o.syn);
        self.fin = self.fin.saturating_add(o.fin);
        self.rst = self.rst.saturating_add(o.rst);
        self.ack += o.ack;
        self.pure_ack += o.pure_ack;
        self.with_payload += o.with_payload;
        self.rxmit_packets += o.rxmit_packets;
        self.rxmit_octets += o.rxmit_octets;
        self.out_of_sequence += o.out_of_sequence;
        self.reordered += o.reordered;
        self.duplicates += o.duplicates;
        self.zero_window += o.zero_window;
        self.rtt.merge(&o.rtt);
        if !self.options.syn_seen {
            self.options = o.options;
        }
        let min_t = |a: u32, b: u32| if a == NO_TIME_US { b } else { a.min(b) };
        let max_t = |a: u32, b: u32| match (a == NO_TIME_US, b == NO_TIME_US) {
            (true, _) => b,
            (_, true) => a,
            _ => a.max(b),
        };
        self.first_payload_us = min_t(self.first_payload_us, o.first_payload_us);
        self.last_payload_us = max_t(self.last_payload_us, o.last_payload_us);
        self.first_ack_us = min_t(self.first_ack_us, o.first_ack_us);
    }
}

/// The application protocol whose metadata a record carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum AppKind {
    /// Nothing recognised (or extraction switched off).
    #[default]
    None = 0,
    /// DNS: `name` is the first query's name.
    Dns = 1,
    /// TLS over TCP: `name` is the ClientHello's server name (SNI).
    Tls = 2,
    /// HTTP/1.x: `name` is the first request's `Host` header.
    Http = 3,
    /// QUIC: `name` is the server name of the ClientHello in the client's Initial packets.
    Quic = 4,
}

impl AppKind {
    /// Lowercase name.
    pub const fn name(self) -> &'static str {
        match self {
            AppKind::None => "",
            AppKind::Dns => "dns",
            AppKind::Tls => "tls",
            AppKind::Http => "http",
            AppKind::Quic => "quic",
        }
    }
}

/// A byte range in a batch's string buffer (`len == 0`: no string).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StrRef {
    /// Offset into the buffer.
    pub offset: u32,
    /// Length in bytes.
    pub len: u16,
}

impl StrRef {
    /// Appends `s` (a name of at most [`super::arena::MAX_STR`] bytes) to a batch's string
    /// buffer and refers to it there.
    pub fn append(buf: &mut Vec<u8>, s: &[u8]) -> StrRef {
        let r = StrRef {
            offset: buf.len() as u32,
            len: s.len() as u16,
        };
        buf.extend_from_slice(s);
        r
    }

    /// The referenced bytes of `buf` (empty when out of range).
    pub fn get<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        let s = self.offset as usize;
        buf.get(s..s + usize::from(self.len)).unwrap_or(&[])
    }
}

/// Application metadata of a flow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppRecord {
    /// Which protocol.
    pub kind: AppKind,
    /// The name (DNS query name, SNI, Host), in the batch's string buffer.
    pub name: StrRef,
    /// DNS: query type of the first query (0 = none).
    pub dns_qtype: u16,
    /// DNS: response code of the first response (`None` = no response seen).
    pub dns_rcode: Option<u8>,
}

/// One flow (or one segment of a flow between cuts), oriented initiator → responder.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FlowRecord {
    /// The canonical key (endpoint `a` is the lower one, see [`FlowKey`]).
    pub key: FlowKey,
    /// `true` when endpoint `b` of the key initiated the flow.
    pub initiator_is_b: bool,
    /// The flow's first packet, ns (identifies the flow across its segments).
    pub flow_start_ns: u64,
    /// Initiator → responder.
    pub fwd: DirRecord,
    /// Responder → initiator.
    pub bwd: DirRecord,
    /// TCP handshake: SYN → SYN/ACK as seen at the observer (the responder's side), ns.
    pub handshake_responder_ns: Option<u64>,
    /// TCP handshake: SYN/ACK → ACK (the initiator's side), ns.
    pub handshake_initiator_ns: Option<u64>,
    /// Application metadata.
    pub app: AppRecord,
    /// Why this record was emitted.
    pub end: EndReason,
}

impl FlowRecord {
    /// Initiator address, port.
    pub fn source(&self) -> (IpAddr, u16) {
        if self.initiator_is_b {
            (self.key.addr_b(), self.key.port_b)
        } else {
            (self.key.addr_a(), self.key.port_a)
        }
    }

    /// Responder address, port.
    pub fn destination(&self) -> (IpAddr, u16) {
        if self.initiator_is_b {
            (self.key.addr_a(), self.key.port_a)
        } else {
            (self.key.addr_b(), self.key.port_b)
        }
    }

    /// Initiator address bytes (IPv4-mapped for IPv4).
    pub fn source_bytes(&self) -> &[u8; 16] {
        if self.initiator_is_b {
            &self.key.addr_b
        } else {
            &self.key.addr_a
        }
    }

    /// Responder address bytes.
    pub fn destination_bytes(&self) -> &[u8; 16] {
        if self.initiator_is_b {
            &self.key.addr_a
        } else {
            &self.key.addr_b
        }
    }

    /// First packet of this record (either direction).
    pub fn first_ns(&self) -> u64 {
        match (self.fwd.packets > 0, self.bwd.packets > 0) {
            (true, true) => self.fwd.first_ns.min(self.bwd.first_ns),
            (true, false) => self.fwd.first_ns,
            (false, true) => self.bwd.first_ns,
            (false, false) => self.flow_start_ns,
        }
    }

    /// Last packet of this record.
    pub fn last_ns(&self) -> u64 {
        self.fwd.last_ns.max(self.bwd.last_ns)
    }

    /// Packets in both directions.
    pub fn packets(&self) -> u64 {
        self.fwd.packets + self.bwd.packets
    }

    /// IP octets in both directions.
    pub fn ip_octets(&self) -> u64 {
        self.fwd.ip_octets + self.bwd.ip_octets
    }

    /// The key kind.
    pub fn kind(&self) -> KeyKind {
        self.key.kind()
    }

    /// The tunnel the flow travelled in.
    pub fn tunnel(&self) -> TunnelKind {
        match self.key.tunnel {
            1 => TunnelKind::Gre,
            2 => TunnelKind::Vxlan,
            3 => TunnelKind::Gtpu,
            4 => TunnelKind::IpInIp,
            _ => TunnelKind::None,
        }
    }

    /// Merges a later segment of the same flow (same key and `flow_start_ns`). Application
    /// metadata and handshake times are kept from whichever segment has them (the caller
    /// keeps the string buffers of both alive); the end reason is the later segment's.
    pub fn merge(&mut self, o: &FlowRecord) {
        self.fwd.merge(&o.fwd);
        self.bwd.merge(&o.bwd);
        self.handshake_responder_ns = self.handshake_responder_ns.or(o.handshake_responder_ns);
        self.handshake_initiator_ns = self.handshake_initiator_ns.or(o.handshake_initiator_ns);
        if self.app.kind == AppKind::None {
            self.app = o.app;
        } else if self.app.kind == AppKind::Dns && self.app.dns_rcode.is_none() {
            self.app.dns_rcode = o.app.dns_rcode;
        }
        if o.last_ns() >= self.last_ns() || !o.end.continues() {
            self.end = o.end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtt_stats_merge_is_exact() {
        let samples = [3_000u64, 5_000, 4_000, 10_000, 1_000];
        let mut all = RttStats::default();
        samples.iter().for_each(|&s| all.add(s));
        let (mut a, mut b) = (RttStats::default(), RttStats::default());
        samples[..2].iter().for_each(|&s| a.add(s));
        samples[2..].iter().for_each(|&s| b.add(s));
        a.merge(&b);
        assert_eq!(a, all);
        assert_eq!(all.min_ns, 1_000);
        assert_eq!(all.max_ns, 10_000);
        assert_eq!(all.mean_ns(), Some(4_600.0));
        let sd = all.stddev_ns().unwrap();
        assert!((sd - 3_006.659_275_674_582).abs() < 1e-6, "{sd}");
        assert_eq!(RttStats::default().mean_ns(), None);
    }

    #[test]
    fn dir_merge_combines_segments() {
        let mut a = DirRecord {
            packets: 2,
            ip_octets: 100,
            first_ns: 10,
            last_ns: 20,
            ttl_min: 60,
            ttl_max: 64,
            first_payload_us: 5,
            ..DirRecord::EMPTY
        };
        let b = DirRecord {
            packets: 1,
            ip_octets: 40,
            first_ns: 30,
            last_ns: 30,
            ttl_min: 50,
            ttl_max: 50,
            last_payload_us: 9,
            ..DirRecord::EMPTY
        };
        a.merge(&b);
        assert_eq!(
            (a.packets, a.ip_octets, a.first_ns, a.last_ns),
            (3, 140, 10, 30)
        );
        assert_eq!((a.ttl_min, a.ttl_max), (50, 64));
        assert_eq!((a.first_payload_us, a.last_payload_us), (5, 9));
        a.merge(&DirRecord::EMPTY);
        assert_eq!(a.packets, 3);
        let mut e = DirRecord::EMPTY;
        e.merge(&b);
        assert_eq!(e.first_ns, 30);
        assert_eq!(e.ttl_min, 50);
    }
}
