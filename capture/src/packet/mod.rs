//! Zero-copy packet views, one file per protocol, and the one-pass [`dissect()`] function.
//!
//! # Contract (the smoltcp promise)
//!
//! Every view is a thin wrapper over a borrowed `&[u8]`. Its `new_checked` constructor checks all
//! lengths the accessors rely on **once**; after it returns `Ok`, no accessor panics, whatever the
//! bytes are. Payload accessors borrow from the underlying buffer (lifetime `'a`), not from the
//! view, so a view can be dropped while its payload is still in use. Nothing here allocates,
//! formats or uses `anyhow`.
//!
//! Unknown protocol numbers are not errors: they are kept as raw values ([`EtherType`],
//! [`IpProtocol`], [`LinkType`] are open newtypes) and [`dissect()`] simply stops descending.
//!
//! Errors are [`ParseError`]s: a `Copy` pair of the [`Layer`] that failed and an [`ErrorKind`].
//! [`ParseError::index`] maps each pair one-to-one to a drop counter slot
//! (see [`crate::counters`]).
//!
//! Lengths: the IP total length (IPv4) or payload length (IPv6) is the truth, not the frame
//! length. Ethernet frames shorter than 60 bytes are padded on the wire; the views trim that
//! padding. A frame cut by the capture snaplen is parsed by the *lax* rules: [`dissect()`] goes as
//! far as the bytes allow and records in [`Dissection::stop`] which layer stopped and why.

pub mod dissect;
pub mod ethernet;
pub mod gre;
pub mod gtp;
pub mod icmp;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod mpls;
pub mod null;
pub mod sll;
pub mod tcp;
pub mod udp;
pub mod vlan;
pub mod vxlan;

pub use dissect::{
    Dissection, Fragment, IcmpInfo, L3, Quoted, TcpInfo, TunnelKind, dissect, dissect_into,
};

/// A pcap link-layer header type (`LINKTYPE_*`, <https://www.tcpdump.org/linktypes.html>).
/// Open: unknown values are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct LinkType(pub u16);

impl LinkType {
    /// BSD loopback, family in the *capturing host's* byte order (`DLT_NULL`).
    pub const NULL: LinkType = LinkType(0);
    /// Ethernet II / 802.3 (`DLT_EN10MB`).
    pub const ETHERNET: LinkType = LinkType(1);
    /// Raw IP as numbered on some BSDs (`DLT_RAW` = 12).
    pub const RAW_BSD12: LinkType = LinkType(12);
    /// Raw IP as numbered on OpenBSD (`DLT_RAW` = 14).
    pub const RAW_BSD14: LinkType = LinkType(14);
    /// Raw IPv4 or IPv6, version from the first nibble (`LINKTYPE_RAW`).
    pub const RAW: LinkType = LinkType(101);
    /// OpenBSD loopback, family in network byte order (`DLT_LOOP`).
    pub const LOOP: LinkType = LinkType(108);
    /// Linux "cooked" capture v1 (`LINKTYPE_LINUX_SLL`).
    pub const LINUX_SLL: LinkType = LinkType(113);
    /// Raw IPv4 only (`LINKTYPE_IPV4`).
    pub const IPV4: LinkType = LinkType(228);
    /// Raw IPv6 only (`LINKTYPE_IPV6`).
    pub const IPV6: LinkType = LinkType(229);
    /// Linux "cooked" capture v2 (`LINKTYPE_LINUX_SLL2`).
    pub const LINUX_SLL2: LinkType = LinkType(276);
}

/// An EtherType (IEEE 802 numbers). Open: unknown values are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EtherType(pub u16);

impl EtherType {
    /// IPv4.
    pub const IPV4: EtherType = EtherType(0x0800);
    /// ARP.
    pub const ARP: EtherType = EtherType(0x0806);
    /// Transparent Ethernet bridging (Ethernet inside GRE).
    pub const TEB: EtherType = EtherType(0x6558);
    /// 802.1Q customer VLAN tag.
    pub const VLAN: EtherType = EtherType(0x8100);
    /// IPv6.
    pub const IPV6: EtherType = EtherType(0x86DD);
    /// MPLS unicast.
    pub const MPLS: EtherType = EtherType(0x8847);
    /// MPLS multicast.
    pub const MPLS_MC: EtherType = EtherType(0x8848);
    /// 802.1ad service VLAN tag (QinQ outer tag).
    pub const QINQ: EtherType = EtherType(0x88A8);
    /// Legacy QinQ outer tag used by some vendors.
    pub const QINQ_OLD: EtherType = EtherType(0x9100);
}

/// An IP protocol / IPv6 next-header number. Open: unknown values are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct IpProtocol(pub u8);

impl IpProtocol {
    /// IPv6 hop-by-hop options.
    pub const HOP_BY_HOP: IpProtocol = IpProtocol(0);
    /// ICMP (IPv4).
    pub const ICMP: IpProtocol = IpProtocol(1);
    /// IPv4 encapsulated in IP.
    pub const IPIP: IpProtocol = IpProtocol(4);
    /// TCP.
    pub const TCP: IpProtocol = IpProtocol(6);
    /// UDP.
    pub const UDP: IpProtocol = IpProtocol(17);
    /// IPv6 encapsulated in IP.
    pub const IPV6: IpProtocol = IpProtocol(41);
    /// IPv6 routing header.
    pub const ROUTING: IpProtocol = IpProtocol(43);
    /// IPv6 fragment header.
    pub const FRAGMENT: IpProtocol = IpProtocol(44);
    /// GRE.
    pub const GRE: IpProtocol = IpProtocol(47);
    /// IPsec ESP (opaque: dissection stops).
    pub const ESP: IpProtocol = IpProtocol(50);
    /// IPsec AH.
    pub const AH: IpProtocol = IpProtocol(51);
    /// ICMPv6.
    pub const ICMPV6: IpProtocol = IpProtocol(58);
    /// IPv6 no next header.
    pub const NO_NEXT: IpProtocol = IpProtocol(59);
    /// IPv6 destination options.
    pub const DEST_OPTS: IpProtocol = IpProtocol(60);
    /// Mobility header.
    pub const MOBILITY: IpProtocol = IpProtocol(135);
    /// Host identity protocol.
    pub const HIP: IpProtocol = IpProtocol(139);
    /// Shim6.
    pub const SHIM6: IpProtocol = IpProtocol(140);
    /// SCTP (ports are read like TCP/UDP).
    pub const SCTP: IpProtocol = IpProtocol(132);
}

/// The layer at which parsing stopped or failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Layer {
    /// The link header (Ethernet, SLL, SLL2, loopback) or the capture's link type.
    Link = 0,
    /// An 802.1Q / 802.1ad tag.
    Vlan,
    /// An MPLS label stack entry.
    Mpls,
    /// IPv4 header.
    Ipv4,
    /// IPv6 fixed header.
    Ipv6,
    /// IPv6 extension header (including the fragment header).
    Ipv6Ext,
    /// TCP header or options.
    Tcp,
    /// UDP header.
    Udp,
    /// ICMP (v4) header.
    Icmp,
    /// ICMPv6 header.
    Icmpv6,
    /// GRE header.
    Gre,
    /// VXLAN header.
    Vxlan,
    /// GTP-U header.
    Gtp,
}

impl Layer {
    /// Number of layers (size of per-layer counter arrays).
    pub const COUNT: usize = 13;
    /// All layers in index order.
    pub const ALL: [Layer; Layer::COUNT] = [
        Layer::Link,
        Layer::Vlan,
        Layer::Mpls,
        Layer::Ipv4,
        Layer::Ipv6,
        Layer::Ipv6Ext,
        Layer::Tcp,
        Layer::Udp,
        Layer::Icmp,
        Layer::Icmpv6,
        Layer::Gre,
        Layer::Vxlan,
        Layer::Gtp,
    ];
    /// A short lowercase name, for counters and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Layer::Link => "link",
            Layer::Vlan => "vlan",
            Layer::Mpls => "mpls",
            Layer::Ipv4 => "ipv4",
            Layer::Ipv6 => "ipv6",
            Layer::Ipv6Ext => "ipv6_ext",
            Layer::Tcp => "tcp",
            Layer::Udp => "udp",
            Layer::Icmp => "icmp",
            Layer::Icmpv6 => "icmpv6",
            Layer::Gre => "gre",
            Layer::Vxlan => "vxlan",
            Layer::Gtp => "gtp",
        }
    }
}

/// Why a layer could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ErrorKind {
    /// The captured bytes end before the header does (snaplen cut or runt frame).
    Truncated = 0,
    /// A version field has an unsupported value.
    BadVersion,
    /// A header-length field is smaller than the minimum or beyond the data.
    BadHeaderLen,
    /// A total/payload length field is smaller than the header.
    BadLength,
    /// A TLV option is malformed (zero or overlong length).
    BadOption,
    /// The link type (or a family / protocol needed to continue) is not supported.
    Unsupported,
    /// Too many nested headers (VLAN tags, MPLS labels, extension headers, tunnels).
    TooDeep,
}

impl ErrorKind {
    /// Number of kinds (size of per-kind counter arrays).
    pub const COUNT: usize = 7;
    /// All kinds in index order.
    pub const ALL: [ErrorKind; ErrorKind::COUNT] = [
        ErrorKind::Truncated,
        ErrorKind::BadVersion,
        ErrorKind::BadHeaderLen,
        ErrorKind::BadLength,
        ErrorKind::BadOption,
        ErrorKind::Unsupported,
        ErrorKind::TooDeep,
    ];
    /// A short lowercase name, for counters and logs.
    pub const fn name(self) -> &'static str {
        match self {
            ErrorKind::Truncated => "truncated",
            ErrorKind::BadVersion => "bad_version",
            ErrorKind::BadHeaderLen => "bad_header_len",
            ErrorKind::BadLength => "bad_length",
            ErrorKind::BadOption => "bad_option",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::TooDeep => "too_deep",
        }
    }
}

/// A parse error: which layer, and why. `Copy`, two bytes, one counter slot each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ParseError {
    /// The layer that failed.
    pub layer: Layer,
    /// Why it failed.
    pub kind: ErrorKind,
}

impl ParseError {
    /// Number of distinct errors (= drop counter slots).
    pub const COUNT: usize = Layer::COUNT * ErrorKind::COUNT;

    /// Builds an error.
    pub const fn new(layer: Layer, kind: ErrorKind) -> Self {
        ParseError { layer, kind }
    }

    /// The counter slot of this error, in `0..ParseError::COUNT`.
    pub const fn index(self) -> usize {
        self.layer as usize * ErrorKind::COUNT + self.kind as usize
    }

    /// `true` when the error only means "the capture cut the frame short".
    pub const fn is_truncation(self) -> bool {
        matches!(self.kind, ErrorKind::Truncated)
    }
}

impl core::fmt::Display for ParseError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}: {}", self.layer.name(), self.kind.name())
    }
}

impl std::error::Error for ParseError {}

/// Reads a big-endian `u16` at `off`. Callers guarantee `off + 2 <= b.len()` (checked lengths).
#[inline(always)]
pub(crate) fn be16(b: &[u8], off: usize) -> u16 {
    match b.get(off..off + 2) {
        Some(s) => u16::from_be_bytes([s[0], s[1]]),
        None => 0,
    }
}

/// Reads a big-endian `u32` at `off`; 0 when out of bounds (never reached after `new_checked`).
#[inline(always)]
pub(crate) fn be32(b: &[u8], off: usize) -> u32 {
    match b.get(off..off + 4) {
        Some(s) => u32::from_be_bytes([s[0], s[1], s[2], s[3]]),
        None => 0,
    }
}

/// Reads the byte at `off`; 0 when out of bounds (never reached after `new_checked`).
#[inline(always)]
pub(crate) fn byte(b: &[u8], off: usize) -> u8 {
    b.get(off).copied().unwrap_or(0)
}

/// Sub-slice from `start` to the end, empty when `start` is past the end.
#[inline(always)]
pub(crate) fn tail(b: &[u8], start: usize) -> &[u8] {
    b.get(start..).unwrap_or(&[])
}
