//! Flow keys and the symmetric flow hash.
//!
//! A [`FlowKey`] is a small fixed-size value (52 bytes, no heap): VLAN/QinQ ids, tunnel kind and
//! id, and the innermost IP 5-tuple, IPv4 stored IPv4-mapped so v4 and v6 share one layout. It is
//! **canonical**: the endpoint `(address, port)` that compares lower is stored first, and
//! [`FlowKey::from_dissection`] returns a [`Direction`] saying whether the packet went `a → b`
//! (forward) or `b → a`. Both directions of a conversation therefore produce the same key, and
//! any hash of the key is symmetric.
//!
//! What identifies a flow:
//! - TCP, UDP, SCTP: addresses, ports, protocol.
//! - ICMP/ICMPv6 echo (request and reply alike): addresses and the echo identifier (in both port
//!   slots), so a ping session is one flow.
//! - ICMP/ICMPv6 errors are their own flows: [`KeyKind::IcmpError`], type and code, and the
//!   addresses and ports of the *quoted* packet (falling back to the outer addresses when the
//!   quote did not parse). Because the worker hash uses those quoted addresses, an error lands
//!   on the same worker as the flow that caused it.
//! - Non-first fragments carry no ports: their key has ports 0 and [`KeyKind::Fragment`]; a
//!   per-worker [`FragmentTable`] maps them to their first fragment's key by
//!   `(addresses, protocol, fragment ident)`.
//! - GTP-U: the TEID is **not** part of the key (uplink and downlink use different TEIDs, which
//!   would break symmetry); the kind is. VXLAN VNI and GRE key are part of it.
//!
//! # Which worker
//!
//! [`FlowKey::worker_hash`] hashes the canonical address pair, VLAN ids and tunnel only — no
//! ports, no protocol. A datagram's fragments (only the first has ports) and the ICMP errors about
//! a flow thus reach the same worker as the flow, so per-worker state never needs to be shared.
//! The price is that all traffic between one pair of hosts is on one worker; on the reference
//! workload the two workers' shares differ by < 1 % (see bench/README.md).
//!
//! The hashes are a few multiply–xorshift rounds over 64-bit words (no SipHash: keys come from the
//! wire but tables are per worker and bounded, see the flow table's eviction policy).

use crate::packet::{Dissection, L3, TunnelKind};

/// What kind of traffic a key describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum KeyKind {
    /// TCP/UDP/SCTP (ports valid) or another IP protocol (ports 0).
    #[default]
    Transport = 0,
    /// ICMP/ICMPv6 echo request/reply: ports hold the echo identifier.
    IcmpEcho = 1,
    /// ICMP/ICMPv6 error: addresses/ports are the quoted packet's, `icmp_type/code` set.
    IcmpError = 2,
    /// Other ICMP messages (neighbour discovery, router advertisements, ...): type/code set.
    IcmpOther = 3,
    /// A non-first fragment: no ports.
    Fragment = 4,
}

/// Direction of a packet relative to its canonical key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The packet went from endpoint `a` to endpoint `b`.
    Forward,
    /// The packet went from `b` to `a`.
    Reverse,
}

/// A canonical, fixed-size flow key. See the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
#[repr(C)]
pub struct FlowKey {
    /// Lower endpoint address (IPv4-mapped for IPv4).
    pub addr_a: [u8; 16],
    /// Higher endpoint address.
    pub addr_b: [u8; 16],
    /// Port of `a` (echo id for ICMP echo).
    pub port_a: u16,
    /// Port of `b`.
    pub port_b: u16,
    /// VLAN ids `[outer, inner]` (0 = none).
    pub vlans: [u16; 2],
    /// Tunnel id (VXLAN VNI, GRE key; 0 for GTP-U and IP-in-IP).
    pub tunnel_id: u32,
    /// IP protocol (for ICMP errors: 1 or 58).
    pub protocol: u8,
    /// 4 or 6.
    pub ip_version: u8,
    /// Tunnel kind (`TunnelKind as u8`).
    pub tunnel: u8,
    /// Key kind (`KeyKind as u8`).
    pub kind: u8,
    /// ICMP type for `IcmpError` / `IcmpOther` keys.
    pub icmp_type: u8,
    /// ICMP code for `IcmpError` / `IcmpOther` keys.
    pub icmp_code: u8,
}

const K1: u64 = 0x9E37_79B9_7F4A_7C15;
const K2: u64 = 0xBF58_476D_1CE4_E5B9;
const K3: u64 = 0x94D0_49BB_1331_11EB;

#[inline(always)]
fn mix(h: u64, w: u64) -> u64 {
    let x = (h ^ w).wrapping_mul(K2);
    x ^ (x >> 29)
}

#[inline(always)]
fn finish(mut h: u64) -> u64 {
    h ^= h >> 32;
    h = h.wrapping_mul(K3);
    h ^ (h >> 29)
}

#[inline(always)]
fn halves(a: &[u8; 16]) -> (u64, u64) {
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&a[..8]);
    hi.copy_from_slice(&a[8..]);
    (u64::from_le_bytes(lo), u64::from_le_bytes(hi))
}

impl FlowKey {
    /// Builds the canonical key of a dissected packet and its direction. `None` for non-IP
    /// frames (or frames whose IP header did not parse).
    #[inline]
    pub fn from_dissection(d: &Dissection) -> Option<(FlowKey, Direction)> {
        if !matches!(d.l3, L3::Ipv4 | L3::Ipv6) || d.ip_version == 0 {
            return None;
        }
        let mut k = FlowKey {
            vlans: d.vlans,
            tunnel: d.tunnel as u8,
            tunnel_id: if d.tunnel == TunnelKind::Gtpu {
                0
            } else {
                d.tunnel_id
            },
            protocol: d.protocol,
            ip_version: d.ip_version,
            ..FlowKey::default()
        };
        let (mut src, mut dst) = (&d.src, &d.dst);
        let (mut sp, mut dp) = (d.src_port, d.dst_port);
        let is_icmp =
            (d.protocol == 1 && d.ip_version == 4) || (d.protocol == 58 && d.ip_version == 6);
        if d.frag.is_fragment && d.frag.offset != 0 {
            k.kind = KeyKind::Fragment as u8;
        } else if is_icmp {
            if d.icmp.is_echo {
                k.kind = KeyKind::IcmpEcho as u8;
                sp = d.icmp.echo_id;
                dp = d.icmp.echo_id;
            } else {
                k.kind = if d.icmp.is_error {
                    KeyKind::IcmpError as u8
                } else {
                    KeyKind::IcmpOther as u8
                };
                k.icmp_type = d.icmp.msg_type;
                k.icmp_code = d.icmp.code;
                if d.icmp.is_error && d.quoted.present {
                    src = &d.quoted.src;
                    dst = &d.quoted.dst;
                    sp = d.quoted.src_port;
                    dp = d.quoted.dst_port;
                }
            }
        }
        let dir = if (src, sp) <= (dst, dp) {
            k.addr_a = *src;
            k.addr_b = *dst;
            k.port_a = sp;
            k.port_b = dp;
            Direction::Forward
        } else {
            k.addr_a = *dst;
            k.addr_b = *src;
            k.port_a = dp;
            k.port_b = sp;
            Direction::Reverse
        };
        Some((k, dir))
    }

    /// The key kind.
    pub fn kind(&self) -> KeyKind {
        match self.kind {
            1 => KeyKind::IcmpEcho,
            2 => KeyKind::IcmpError,
            3 => KeyKind::IcmpOther,
            4 => KeyKind::Fragment,
            _ => KeyKind::Transport,
        }
    }

    /// Hash of the whole key (for the per-worker flow table). Symmetric because the key is.
    #[inline]
    pub fn hash64(&self) -> u64 {
        let (a0, a1) = halves(&self.addr_a);
        let (b0, b1) = halves(&self.addr_b);
        let w5 = u64::from(self.port_a)
            | u64::from(self.port_b) << 16
            | u64::from(self.vlans[0]) << 32
            | u64::from(self.vlans[1]) << 48;
        let w6 = u64::from(self.tunnel_id)
            | u64::from(self.protocol) << 32
            | u64::from(self.ip_version) << 40
            | u64::from(self.tunnel) << 48
            | u64::from(self.kind) << 56;
        let w7 = u64::from(self.icmp_type) | u64::from(self.icmp_code) << 8;
        let mut h = K1;
        h = mix(h, a0);
        h = mix(h, a1);
        h = mix(h, b0);
        h = mix(h, b1);
        h = mix(h, w5);
        h = mix(h, w6);
        h = mix(h, w7);
        finish(h)
    }

    /// Hash of the address pair, VLANs and tunnel only (no ports, no protocol): decides the
    /// worker, so that every fragment of a datagram and the ICMP errors about a flow go where the
    /// flow goes. See the module doc.
    #[inline]
    pub fn worker_hash(&self) -> u64 {
        let (a0, a1) = halves(&self.addr_a);
        let (b0, b1) = halves(&self.addr_b);
        let w = u64::from(self.vlans[0])
            | u64::from(self.vlans[1]) << 16
            | u64::from(self.tunnel) << 32;
        let mut h = K1;
        h = mix(h, a0);
        h = mix(h, a1);
        h = mix(h, b0);
        h = mix(h, b1);
        h = mix(h, w ^ u64::from(self.tunnel_id) << 40);
        finish(h)
    }

    /// The worker (in `0..n`) for this key: multiply-shift range reduction of
    /// [`Self::worker_hash`] (no division).
    #[inline]
    pub fn worker(&self, n: usize) -> usize {
        worker_of(self.worker_hash(), n)
    }

    /// Endpoint `a` as an `IpAddr`.
    pub fn addr_a(&self) -> std::net::IpAddr {
        to_ip(self.ip_version, &self.addr_a)
    }
    /// Endpoint `b` as an `IpAddr`.
    pub fn addr_b(&self) -> std::net::IpAddr {
        to_ip(self.ip_version, &self.addr_b)
    }
}

fn to_ip(version: u8, a: &[u8; 16]) -> std::net::IpAddr {
    if version == 4 {
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(a[12], a[13], a[14], a[15]))
    } else {
        std::net::IpAddr::V6(std::net::Ipv6Addr::from(*a))
    }
}

/// Maps a 64-bit hash to `0..n` by multiply-shift (Lemire), `n >= 1`.
#[inline(always)]
pub fn worker_of(hash: u64, n: usize) -> usize {
    ((u128::from(hash) * n as u128) >> 64) as usize
}

/// The worker for a dissected packet: non-IP frames go to worker 0 (they have no flow).
#[inline]
pub fn dispatch(d: &Dissection, n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    match FlowKey::from_dissection(d) {
        Some((k, _)) => k.worker(n),
        None => 0,
    }
}

/// Maps the fragments of a datagram to the flow of its first fragment.
///
/// Only the first fragment carries ports, so a non-first fragment's own key is a
/// [`KeyKind::Fragment`] key. A worker keeps one `FragmentTable` (all fragments of a datagram
/// reach the same worker, see the module doc): [`FragmentTable::resolve`] remembers each first
/// fragment's key under `(source, destination, protocol, identification)` and gives later
/// fragments that key. A fragment that arrives before its first fragment (reordering) keeps its
/// `Fragment` key. Fixed size, open addressing over at most 8 slots, entries expire after
/// `timeout_ns` of packet time; no allocation after `new`.
#[derive(Debug)]
pub struct FragmentTable {
    slots: Box<[FragSlot]>,
    mask: usize,
    timeout_ns: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct FragSlot {
    used: bool,
    src: [u8; 16],
    dst: [u8; 16],
    ident: u32,
    protocol: u8,
    expires_ns: u64,
    key: FlowKey,
    dir: Option<Direction>,
}

impl FragmentTable {
    /// A table of `capacity` slots (rounded up to a power of two, at least 64) whose entries
    /// live `timeout_ns` of packet time (RFC 791 suggests 15 s; Linux uses 30 s).
    pub fn new(capacity: usize, timeout_ns: u64) -> Self {
        let cap = capacity.max(64).next_power_of_two();
        FragmentTable {
            slots: vec![FragSlot::default(); cap].into_boxed_slice(),
            mask: cap - 1,
            timeout_ns,
        }
    }

    #[inline]
    fn home(d: &Dissection) -> usize {
        let (s0, s1) = halves(&d.src);
        let (t0, t1) = halves(&d.dst);
        let mut h = K1;
        h = mix(h, s0);
        h = mix(h, s1);
        h = mix(h, t0);
        h = mix(h, t1);
        h = mix(h, u64::from(d.frag.ident) | u64::from(d.protocol) << 32);
        finish(h) as usize
    }

    #[inline]
    fn matches(s: &FragSlot, d: &Dissection, now_ns: u64) -> bool {
        s.used
            && s.expires_ns >= now_ns
            && s.ident == d.frag.ident
            && s.protocol == d.protocol
            && s.src == d.src
            && s.dst == d.dst
    }

    /// The flow key of a packet: [`FlowKey::from_dissection`], except that a non-first
    /// fragment whose first fragment was seen gets the first fragment's key and direction.
    pub fn resolve(&mut self, d: &Dissection, now_ns: u64) -> Option<(FlowKey, Direction)> {
        let own = FlowKey::from_dissection(d)?;
        if !d.frag.is_fragment {
            return Some(own);
        }
        let home = Self::home(d);
        if d.frag.offset == 0 {
            // First fragment: remember it in a free, expired or the oldest of 8 slots.
            let mut victim = home & self.mask;
            let mut oldest = u64::MAX;
            for i in 0..8 {
                let idx = (home + i) & self.mask;
                let s = &self.slots[idx];
                if !s.used || s.expires_ns < now_ns || Self::matches(s, d, now_ns) {
                    victim = idx;
                    break;
                }
                if s.expires_ns < oldest {
                    oldest = s.expires_ns;
                    victim = idx;
                }
            }
            self.slots[victim] = FragSlot {
                used: true,
                src: d.src,
                dst: d.dst,
                ident: d.frag.ident,
                protocol: d.protocol,
                expires_ns: now_ns.saturating_add(self.timeout_ns),
                key: own.0,
                dir: Some(own.1),
            };
            return Some(own);
        }
        for i in 0..8 {
            let idx = (home + i) & self.mask;
            let s = &self.slots[idx];
            if Self::matches(s, d, now_ns)
                && let Some(dir) = s.dir
            {
                let key = s.key;
                if !d.frag.more {
                    // Last fragment: the datagram is complete (in order), free the slot.
                    self.slots[idx].used = false;
                }
                return Some((key, dir));
            }
        }
        Some(own)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::{Builder, fragment};
    use crate::packet::{LinkType, dissect, tcp::flags};

    const A: [u8; 4] = [10, 0, 0, 1];
    const B: [u8; 4] = [192, 168, 1, 2];

    fn key(f: &[u8]) -> (FlowKey, Direction) {
        FlowKey::from_dissection(&dissect(LinkType::ETHERNET, f)).unwrap()
    }

    #[test]
    fn both_directions_same_key() {
        let fwd = Builder::ethernet()
            .vlan(7)
            .ipv4(A, B)
            .tcp(40000, 80, 1, 0, flags::SYN)
            .build();
        let rev = Builder::ethernet()
            .vlan(7)
            .ipv4(B, A)
            .tcp(80, 40000, 9, 2, flags::SYN | flags::ACK)
            .build();
        let (k1, d1) = key(&fwd);
        let (k2, d2) = key(&rev);
        assert_eq!(k1, k2);
        assert_ne!(d1, d2);
        assert_eq!(k1.hash64(), k2.hash64());
        assert_eq!(k1.vlans, [7, 0]);
        assert_eq!(k1.kind(), KeyKind::Transport);
        // same addresses, ports swapped onto the same host
        let (k3, _) = key(&Builder::ethernet().ipv4(A, A).udp(2, 1).build());
        let (k4, _) = key(&Builder::ethernet().ipv4(A, A).udp(1, 2).build());
        assert_eq!(k3, k4);
    }

    #[test]
    fn echo_and_errors() {
        let req = Builder::ethernet().ipv4(A, B).icmp(8, 0, 99, 1).build();
        let rep = Builder::ethernet().ipv4(B, A).icmp(0, 0, 99, 1).build();
        let (k1, _) = key(&req);
        assert_eq!(k1, key(&rep).0);
        assert_eq!(k1.kind(), KeyKind::IcmpEcho);
        assert_eq!(k1.port_a, 99);
        let orig = Builder::raw().ipv4(A, B).udp(5000, 53).build();
        let err = Builder::ethernet()
            .ipv4([1, 2, 3, 4], A)
            .icmp(3, 1, 0, 0)
            .payload(&orig)
            .build();
        let (ke, _) = key(&err);
        assert_eq!(ke.kind(), KeyKind::IcmpError);
        assert_eq!((ke.icmp_type, ke.icmp_code), (3, 1));
        let (ku, _) = key(&Builder::ethernet().ipv4(B, A).udp(53, 5000).build());
        assert_eq!(ke.addr_a, ku.addr_a);
        assert_eq!(ke.worker_hash(), ku.worker_hash());
        assert_ne!(ke, ku);
    }

    #[test]
    fn fragments_share_worker() {
        let full = Builder::ethernet()
            .ipv4(A, B)
            .udp(1234, 4321)
            .payload(&[0; 300])
            .build();
        let frags = fragment(&full, 14, 64, 5);
        let (k0, _) = key(&frags[0]);
        for f in &frags[1..] {
            let (k, _) = key(f);
            assert_eq!(k.kind(), KeyKind::Fragment);
            assert_eq!(k.worker_hash(), k0.worker_hash());
            for n in 1..8 {
                assert_eq!(k.worker(n), k0.worker(n));
            }
        }
        assert!(FlowKey::from_dissection(&dissect(LinkType::ETHERNET, &[0; 14])).is_none());
    }

    #[test]
    fn fragment_table_maps_fragments_to_the_first() {
        let full = Builder::ethernet()
            .ipv4(A, B)
            .udp(1234, 4321)
            .payload(&[0; 300])
            .build();
        let frags = fragment(&full, 14, 64, 5);
        let (first, _) = key(&full);
        let mut t = FragmentTable::new(64, 30_000_000_000);
        let d = |f: &[u8]| dissect(LinkType::ETHERNET, f);
        // a later fragment before the first: its own Fragment key
        assert_eq!(
            t.resolve(&d(&frags[2]), 0).unwrap().0.kind(),
            KeyKind::Fragment
        );
        for f in &frags {
            assert_eq!(t.resolve(&d(f), 1).unwrap().0, first);
        }
        // the last fragment freed the slot
        assert_eq!(
            t.resolve(&d(&frags[1]), 2).unwrap().0.kind(),
            KeyKind::Fragment
        );
        // expiry
        t.resolve(&d(&frags[0]), 10).unwrap();
        assert_eq!(
            t.resolve(&d(&frags[1]), 40_000_000_000).unwrap().0.kind(),
            KeyKind::Fragment
        );
        // not a fragment: plain key
        assert_eq!(t.resolve(&d(&full), 0).unwrap().0, first);
    }

    #[test]
    fn worker_of_is_in_range() {
        for h in [0, 1, u64::MAX, K1, K2] {
            for n in 1..9 {
                assert!(worker_of(h, n) < n);
            }
        }
        assert_eq!(std::mem::size_of::<FlowKey>(), 52);
    }
}
