//! One-pass dissection of a captured frame into a fixed-size [`Dissection`].
//!
//! [`dissect()`] walks link → VLAN/QinQ/MPLS → IP (options, extension headers, fragments) → L4,
//! descending through GRE, VXLAN (UDP 4789), GTP-U (UDP 2152) and IP-in-IP to the innermost
//! packet, whose addresses, protocol and ports it reports. It never panics, never allocates and
//! always returns: when a layer cannot be parsed it stops there (the *lax* path, in the style of
//! etherparse's `LaxSlicedPacket`) and records the layer and reason in [`Dissection::stop`]; the
//! fields then describe the deepest layers that were parsed completely.
//!
//! The flow aggregator reads one `Dissection` per packet; it is `Copy` and 180 bytes, so
//! the pipeline ships it to workers inside packet batches instead of parsing twice.

use super::gre::GrePacket;
use super::gtp::{self, GtpPacket};
use super::icmp::IcmpPacket;
use super::icmpv6::Icmpv6Packet;
use super::ipv4::Ipv4Packet;
use super::ipv6::{Ipv6Packet, walk_extensions};
use super::mpls::MplsEntry;
use super::null::LoopbackHeader;
use super::sll::{Sll2Header, SllHeader};
use super::tcp::{TcpOption, TcpPacket};
use super::udp::UdpPacket;
use super::vlan::VlanTag;
use super::vxlan::{self, VxlanPacket};
use super::{
    ErrorKind, EtherType, IpProtocol, Layer, LinkType, ParseError, be16, ethernet::EthernetFrame,
};

/// Maximum VLAN tags + MPLS labels per link header.
const MAX_TAGS: usize = 8;
/// Maximum nested tunnels.
const MAX_TUNNELS: u8 = 3;

/// The network layer found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum L3 {
    /// Nothing parsed (link error or unsupported link type).
    #[default]
    None,
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
    /// Another EtherType (ARP, LLDP, ...): see [`Dissection::ethertype`].
    Other,
}

/// The outermost tunnel the packet travelled in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TunnelKind {
    /// Not tunnelled.
    #[default]
    None,
    /// GRE (id = key, or 0).
    Gre,
    /// VXLAN (id = VNI).
    Vxlan,
    /// GTP-U (id = TEID).
    Gtpu,
    /// IPv4/IPv6 in IP (id = 0).
    IpInIp,
}

/// Fragmentation of the innermost IP packet (IPv4 flags/offset or the IPv6 fragment header).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fragment {
    /// `true` for any fragment (first, middle or last).
    pub is_fragment: bool,
    /// More-fragments flag.
    pub more: bool,
    /// Offset in bytes; non-first fragments have no L4 header (ports are 0).
    pub offset: u16,
    /// Identification (IPv4: 16 bits; IPv6: 32 bits).
    pub ident: u32,
}

/// TCP fields and the options the flow meter cares about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpInfo {
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// Flags (see [`super::tcp::flags`]).
    pub flags: u16,
    /// Unscaled window.
    pub window: u16,
    /// MSS option, 0 when absent.
    pub mss: u16,
    /// Window scale shift, `None` when absent.
    pub wscale: Option<u8>,
    /// SACK-permitted option seen.
    pub sack_permitted: bool,
    /// Timestamps option (value, echo reply).
    pub timestamps: Option<(u32, u32)>,
    /// An option had a malformed length (the rest of the options was skipped).
    pub bad_options: bool,
}

/// ICMP / ICMPv6 fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IcmpInfo {
    /// Type.
    pub msg_type: u8,
    /// Code.
    pub code: u8,
    /// Echo (request/reply) message: `echo_id`/`echo_seq` are valid.
    pub is_echo: bool,
    /// Error message: [`Dissection::quoted`] holds the quoted packet (if it parsed).
    pub is_error: bool,
    /// Echo identifier.
    pub echo_id: u16,
    /// Echo sequence number.
    pub echo_seq: u16,
}

/// The packet quoted inside an ICMP/ICMPv6 error (as sent by the original sender).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quoted {
    /// A quoted IP header was parsed.
    pub present: bool,
    /// 4 or 6.
    pub ip_version: u8,
    /// Its protocol.
    pub protocol: u8,
    /// Its source address (IPv4 as IPv4-mapped IPv6).
    pub src: [u8; 16],
    /// Its destination address.
    pub dst: [u8; 16],
    /// Its source port (TCP/UDP/SCTP), or the echo id for quoted ICMP echoes.
    pub src_port: u16,
    /// Its destination port.
    pub dst_port: u16,
}

/// Everything the flow aggregator needs from one frame, filled in one pass. Offsets are from
/// the start of the captured frame. IPv4 addresses are stored IPv4-mapped (`::ffff:a.b.c.d`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dissection {
    /// Link type the frame was parsed as.
    pub link: LinkType,
    /// Bit set of layers parsed, `1 << Layer as u16` (see [`Dissection::has`]).
    pub layers: u16,
    /// EtherType of the innermost network layer.
    pub ethertype: u16,
    /// Innermost network layer.
    pub l3: L3,
    /// VLAN tags seen (outer first; more than two are counted, not stored).
    pub vlan_count: u8,
    /// VLAN ids: `[outer, inner]`, 0 when absent.
    pub vlans: [u16; 2],
    /// MPLS labels seen.
    pub mpls_count: u8,
    /// Top (first) MPLS label.
    pub mpls_label: u32,
    /// Outermost tunnel.
    pub tunnel: TunnelKind,
    /// Its id (VNI, TEID, GRE key).
    pub tunnel_id: u32,
    /// Number of tunnels descended through.
    pub tunnel_depth: u8,
    /// Offset of the outermost IP header.
    pub outer_l3_offset: u32,
    /// Offset of the innermost IP header.
    pub l3_offset: u32,
    /// Offset of the innermost L4 header.
    pub l4_offset: u32,
    /// Offset of the L4 payload.
    pub payload_offset: u32,
    /// L4 payload length according to the headers (IP/UDP lengths), not the captured bytes.
    pub payload_len: u32,
    /// 4, 6, or 0 when no IP.
    pub ip_version: u8,
    /// Innermost source address.
    pub src: [u8; 16],
    /// Innermost destination address.
    pub dst: [u8; 16],
    /// IP total length (IPv6: 40 + payload length): the bytes on the wire at the IP layer.
    pub ip_total_len: u32,
    /// TTL / hop limit.
    pub ttl: u8,
    /// TOS / traffic class.
    pub tos: u8,
    /// Upper-layer protocol (after IPv6 extension headers).
    pub protocol: u8,
    /// Fragment information.
    pub frag: Fragment,
    /// L4 source port (0 when none).
    pub src_port: u16,
    /// L4 destination port.
    pub dst_port: u16,
    /// TCP fields (valid when `protocol == 6` and [`Layer::Tcp`] is in `layers`).
    pub tcp: TcpInfo,
    /// ICMP fields (valid for protocol 1 / 58).
    pub icmp: IcmpInfo,
    /// Packet quoted by an ICMP error.
    pub quoted: Quoted,
    /// The layer that stopped the dissection and why; `None` when all layers parsed.
    pub stop: Option<ParseError>,
    /// The capture cut the frame before the end of the IP packet (snaplen).
    pub truncated: bool,
}

impl Dissection {
    /// `true` when `layer` was parsed.
    #[inline]
    pub fn has(&self, layer: Layer) -> bool {
        self.layers & (1 << layer as u16) != 0
    }
    /// `true` for TCP/UDP/SCTP packets with ports (not non-first fragments).
    #[inline]
    pub fn has_ports(&self) -> bool {
        self.has(Layer::Tcp)
            || self.has(Layer::Udp)
            || (self.protocol == 132 && self.l4_offset != 0)
    }
    /// The source address as `IpAddr`.
    pub fn src_addr(&self) -> std::net::IpAddr {
        to_ip(self.ip_version, &self.src)
    }
    /// The destination address as `IpAddr`.
    pub fn dst_addr(&self) -> std::net::IpAddr {
        to_ip(self.ip_version, &self.dst)
    }
    #[inline(always)]
    fn mark(&mut self, layer: Layer) {
        self.layers |= 1 << layer as u16;
    }
}

fn to_ip(version: u8, a: &[u8; 16]) -> std::net::IpAddr {
    if version == 4 {
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(a[12], a[13], a[14], a[15]))
    } else {
        std::net::IpAddr::V6(std::net::Ipv6Addr::from(*a))
    }
}

/// Maps an IPv4 address to IPv4-mapped IPv6 form.
#[inline(always)]
pub fn v4_mapped(a: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
    ]
}

/// Dissects `frame` captured with link type `link`. Never panics; see the module doc.
#[inline]
pub fn dissect(link: LinkType, frame: &[u8]) -> Dissection {
    let mut d = Dissection::default();
    dissect_into(&mut d, link, frame);
    d
}

/// Like [`dissect()`], but fills a caller-owned `Dissection` (it is reset first).
#[inline]
pub fn dissect_into(d: &mut Dissection, link: LinkType, frame: &[u8]) {
    *d = Dissection {
        link,
        ..Dissection::default()
    };
    let mut cx = Cx {
        base: frame.as_ptr() as usize,
        len: frame.len(),
    };
    if let Err(e) = cx.link(d, link, frame) {
        d.stop = Some(e);
        if e.is_truncation() {
            d.truncated = true;
        }
    }
}

struct Cx {
    base: usize,
    len: usize,
}

impl Cx {
    #[inline(always)]
    fn off(&self, s: &[u8]) -> u32 {
        let o = (s.as_ptr() as usize).wrapping_sub(self.base);
        o.min(self.len) as u32
    }

    fn link(&mut self, d: &mut Dissection, link: LinkType, frame: &[u8]) -> Result<(), ParseError> {
        let (et, rest) = match link {
            LinkType::ETHERNET => {
                let e = EthernetFrame::new_checked(frame)?;
                d.mark(Layer::Link);
                (e.ethertype(), e.payload())
            }
            LinkType::LINUX_SLL => {
                let h = SllHeader::new_checked(frame)?;
                d.mark(Layer::Link);
                (h.protocol(), h.payload())
            }
            LinkType::LINUX_SLL2 => {
                let h = Sll2Header::new_checked(frame)?;
                d.mark(Layer::Link);
                (h.protocol(), h.payload())
            }
            LinkType::NULL | LinkType::LOOP => {
                let h = LoopbackHeader::new_checked(frame, link == LinkType::LOOP)?;
                d.mark(Layer::Link);
                match h.ethertype() {
                    Some(et) => (et, h.payload()),
                    None => return Err(ParseError::new(Layer::Link, ErrorKind::Unsupported)),
                }
            }
            LinkType::RAW | LinkType::RAW_BSD12 | LinkType::RAW_BSD14 => {
                d.mark(Layer::Link);
                (by_nibble(frame, Layer::Link)?, frame)
            }
            LinkType::IPV4 => (EtherType::IPV4, frame),
            LinkType::IPV6 => (EtherType::IPV6, frame),
            _ => return Err(ParseError::new(Layer::Link, ErrorKind::Unsupported)),
        };
        self.tags_then_l3(d, et, rest, 0)
    }

    /// VLAN tags and MPLS labels after a link header, then the network layer.
    fn tags_then_l3(
        &mut self,
        d: &mut Dissection,
        mut et: EtherType,
        mut rest: &[u8],
        depth: u8,
    ) -> Result<(), ParseError> {
        let mut n = 0;
        loop {
            match et {
                EtherType::VLAN | EtherType::QINQ | EtherType::QINQ_OLD => {
                    n += 1;
                    if n > MAX_TAGS {
                        return Err(ParseError::new(Layer::Vlan, ErrorKind::TooDeep));
                    }
                    let t = VlanTag::new_checked(rest)?;
                    if let Some(slot) = d.vlans.get_mut(usize::from(d.vlan_count)) {
                        *slot = t.vid();
                    }
                    d.vlan_count = d.vlan_count.saturating_add(1);
                    d.mark(Layer::Vlan);
                    et = t.ethertype();
                    rest = t.payload();
                }
                EtherType::MPLS | EtherType::MPLS_MC => {
                    loop {
                        n += 1;
                        if n > MAX_TAGS {
                            return Err(ParseError::new(Layer::Mpls, ErrorKind::TooDeep));
                        }
                        let m = MplsEntry::new_checked(rest)?;
                        if d.mpls_count == 0 {
                            d.mpls_label = m.label();
                        }
                        d.mpls_count = d.mpls_count.saturating_add(1);
                        rest = m.payload();
                        if m.bottom() {
                            break;
                        }
                    }
                    d.mark(Layer::Mpls);
                    // RFC 4385: a payload starting with nibble 0 is a pseudowire control word.
                    et = by_nibble(rest, Layer::Mpls)?;
                }
                _ => return self.l3(d, et, rest, depth),
            }
        }
    }

    fn l3(
        &mut self,
        d: &mut Dissection,
        et: EtherType,
        data: &[u8],
        depth: u8,
    ) -> Result<(), ParseError> {
        d.ethertype = et.0;
        match et {
            EtherType::IPV4 => self.ipv4(d, data, depth),
            EtherType::IPV6 => self.ipv6(d, data, depth),
            _ => {
                d.l3 = L3::Other;
                Ok(())
            }
        }
    }

    #[inline(always)]
    fn enter_l3(&self, d: &mut Dissection, data: &[u8], depth: u8) {
        let off = self.off(data);
        if depth == 0 {
            d.outer_l3_offset = off;
        }
        d.l3_offset = off;
        d.l4_offset = 0;
        d.payload_offset = 0;
        d.payload_len = 0;
        d.src_port = 0;
        d.dst_port = 0;
        d.frag = Fragment::default();
        d.tcp = TcpInfo::default();
        d.icmp = IcmpInfo::default();
    }

    fn ipv4(&mut self, d: &mut Dissection, data: &[u8], depth: u8) -> Result<(), ParseError> {
        let p = Ipv4Packet::new_lax(data)?;
        self.enter_l3(d, data, depth);
        d.mark(Layer::Ipv4);
        d.l3 = L3::Ipv4;
        d.ip_version = 4;
        d.src = v4_mapped(p.src());
        d.dst = v4_mapped(p.dst());
        d.ip_total_len = (p.header_len() + p.payload_len()) as u32;
        d.ttl = p.ttl();
        d.tos = p.tos();
        d.protocol = p.protocol().0;
        if p.is_fragment() {
            d.frag = Fragment {
                is_fragment: true,
                more: p.more_frags(),
                offset: p.frag_offset(),
                ident: u32::from(p.ident()),
            };
        }
        if p.is_truncated() {
            d.truncated = true;
        }
        let payload = p.payload();
        if p.frag_offset() != 0 {
            let o = self.off(payload);
            d.l4_offset = o;
            d.payload_offset = o;
            d.payload_len = p.payload_len() as u32;
            return Ok(());
        }
        self.l4(d, p.protocol(), payload, p.payload_len(), 4, depth)
    }

    fn ipv6(&mut self, d: &mut Dissection, data: &[u8], depth: u8) -> Result<(), ParseError> {
        let p = Ipv6Packet::new_lax(data)?;
        self.enter_l3(d, data, depth);
        d.mark(Layer::Ipv6);
        d.l3 = L3::Ipv6;
        d.ip_version = 6;
        d.src = p.src();
        d.dst = p.dst();
        d.ip_total_len = p.total_len() as u32;
        d.ttl = p.hop_limit();
        d.tos = p.traffic_class();
        d.protocol = p.next_header().0;
        if p.is_truncated() {
            d.truncated = true;
        }
        let w = p.walk_extensions()?;
        if w.count > 0 {
            d.mark(Layer::Ipv6Ext);
        }
        d.protocol = w.protocol.0;
        let claimed = (p.total_len() - super::ipv6::HEADER_LEN).saturating_sub(w.ext_len);
        if let Some(f) = w.fragment {
            d.frag = Fragment {
                is_fragment: f.offset != 0 || f.more,
                more: f.more,
                offset: f.offset,
                ident: f.ident,
            };
            if f.offset != 0 {
                let o = self.off(w.payload);
                d.l4_offset = o;
                d.payload_offset = o;
                d.payload_len = claimed as u32;
                return Ok(());
            }
        }
        self.l4(d, w.protocol, w.payload, claimed, 6, depth)
    }

    fn l4(
        &mut self,
        d: &mut Dissection,
        proto: IpProtocol,
        data: &[u8],
        claimed: usize,
        version: u8,
        depth: u8,
    ) -> Result<(), ParseError> {
        let l4 = self.off(data);
        d.l4_offset = l4;
        d.payload_offset = l4;
        d.payload_len = claimed as u32;
        match proto {
            IpProtocol::TCP => {
                let t = TcpPacket::new_checked(data)?;
                d.mark(Layer::Tcp);
                d.src_port = t.src_port();
                d.dst_port = t.dst_port();
                let mut info = TcpInfo {
                    seq: t.seq(),
                    ack: t.ack(),
                    flags: t.flags(),
                    window: t.window(),
                    ..TcpInfo::default()
                };
                if t.header_len() > super::tcp::MIN_HEADER_LEN {
                    for o in t.option_iter() {
                        match o {
                            Ok(TcpOption::Mss(m)) => info.mss = m,
                            Ok(TcpOption::WindowScale(s)) => info.wscale = Some(s),
                            Ok(TcpOption::SackPermitted) => info.sack_permitted = true,
                            Ok(TcpOption::Timestamps(v, e)) => info.timestamps = Some((v, e)),
                            Ok(_) => {}
                            Err(_) => info.bad_options = true,
                        }
                    }
                }
                d.tcp = info;
                d.payload_offset = l4 + t.header_len() as u32;
                d.payload_len = claimed.saturating_sub(t.header_len()) as u32;
                Ok(())
            }
            IpProtocol::UDP => {
                let u = UdpPacket::new_checked(data)?;
                d.mark(Layer::Udp);
                let (sp, dp) = (u.src_port(), u.dst_port());
                d.src_port = sp;
                d.dst_port = dp;
                d.payload_offset = l4 + super::udp::HEADER_LEN as u32;
                let ulen = if u.length() == 0 {
                    claimed
                } else {
                    usize::from(u.length())
                };
                d.payload_len = ulen.saturating_sub(super::udp::HEADER_LEN) as u32;
                let payload = u.payload();
                if depth >= MAX_TUNNELS || d.frag.is_fragment {
                    return Ok(());
                }
                if dp == vxlan::UDP_PORT {
                    let v = VxlanPacket::new_checked(payload)?;
                    d.mark(Layer::Vxlan);
                    self.tunnel(d, TunnelKind::Vxlan, v.vni());
                    let e = EthernetFrame::new_checked(v.payload())?;
                    return self.tags_then_l3(d, e.ethertype(), e.payload(), depth + 1);
                }
                if dp == gtp::UDP_PORT || sp == gtp::UDP_PORT {
                    let g = GtpPacket::new_checked(payload)?;
                    d.mark(Layer::Gtp);
                    self.tunnel(d, TunnelKind::Gtpu, g.teid());
                    if g.msg_type() == gtp::G_PDU && !g.payload().is_empty() {
                        let et = by_nibble(g.payload(), Layer::Gtp)?;
                        return self.l3(d, et, g.payload(), depth + 1);
                    }
                }
                Ok(())
            }
            IpProtocol::ICMP | IpProtocol::ICMPV6 => {
                let (t, c, echo, err, id, seq, payload) = if proto == IpProtocol::ICMP {
                    let i = IcmpPacket::new_checked(data)?;
                    d.mark(Layer::Icmp);
                    (
                        i.msg_type(),
                        i.code(),
                        i.is_echo(),
                        i.is_error(),
                        i.echo_ident(),
                        i.echo_seq(),
                        i.payload(),
                    )
                } else {
                    let i = Icmpv6Packet::new_checked(data)?;
                    d.mark(Layer::Icmpv6);
                    (
                        i.msg_type(),
                        i.code(),
                        i.is_echo(),
                        i.is_error(),
                        i.echo_ident(),
                        i.echo_seq(),
                        i.payload(),
                    )
                };
                let _ = version;
                d.icmp = IcmpInfo {
                    msg_type: t,
                    code: c,
                    is_echo: echo,
                    is_error: err,
                    echo_id: if echo { id } else { 0 },
                    echo_seq: if echo { seq } else { 0 },
                };
                d.payload_offset = l4 + 8;
                d.payload_len = claimed.saturating_sub(8) as u32;
                if err {
                    d.quoted = quoted(payload);
                }
                Ok(())
            }
            IpProtocol::GRE => {
                if depth >= MAX_TUNNELS {
                    return Ok(());
                }
                let g = GrePacket::new_checked(data)?;
                d.mark(Layer::Gre);
                self.tunnel(d, TunnelKind::Gre, g.key().unwrap_or(0));
                match g.protocol() {
                    EtherType::TEB => {
                        let e = EthernetFrame::new_checked(g.payload())?;
                        self.tags_then_l3(d, e.ethertype(), e.payload(), depth + 1)
                    }
                    et @ (EtherType::IPV4 | EtherType::IPV6) => {
                        self.l3(d, et, g.payload(), depth + 1)
                    }
                    _ => Ok(()),
                }
            }
            IpProtocol::IPIP | IpProtocol::IPV6 => {
                if depth >= MAX_TUNNELS {
                    return Ok(());
                }
                self.tunnel(d, TunnelKind::IpInIp, 0);
                let et = if proto == IpProtocol::IPIP {
                    EtherType::IPV4
                } else {
                    EtherType::IPV6
                };
                self.l3(d, et, data, depth + 1)
            }
            IpProtocol::SCTP => {
                if data.len() >= 4 {
                    d.src_port = be16(data, 0);
                    d.dst_port = be16(data, 2);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    #[inline(always)]
    fn tunnel(&self, d: &mut Dissection, kind: TunnelKind, id: u32) {
        if d.tunnel_depth == 0 {
            d.tunnel = kind;
            d.tunnel_id = id;
        }
        d.tunnel_depth += 1;
    }
}

/// Chooses IPv4/IPv6 from the version nibble (raw IP links, MPLS payloads, GTP G-PDUs).
#[inline(always)]
fn by_nibble(data: &[u8], layer: Layer) -> Result<EtherType, ParseError> {
    match data.first().map(|b| b >> 4) {
        Some(4) => Ok(EtherType::IPV4),
        Some(6) => Ok(EtherType::IPV6),
        Some(_) => Err(ParseError::new(layer, ErrorKind::Unsupported)),
        None => Err(ParseError::new(layer, ErrorKind::Truncated)),
    }
}

/// Parses the IP header (+ first 8 bytes of L4) quoted in an ICMP error, laxly: the quote is
/// cut short of the original packet's length by design.
fn quoted(data: &[u8]) -> Quoted {
    let mut q = Quoted::default();
    let (l4, proto) = match data.first().map(|b| b >> 4) {
        Some(4) => {
            let Ok(p) = Ipv4Packet::new_lax(data) else {
                return q;
            };
            q.ip_version = 4;
            q.src = v4_mapped(p.src());
            q.dst = v4_mapped(p.dst());
            if p.frag_offset() != 0 {
                q.present = true;
                q.protocol = p.protocol().0;
                return q;
            }
            (p.payload(), p.protocol())
        }
        Some(6) => {
            let Ok(p) = Ipv6Packet::new_lax(data) else {
                return q;
            };
            q.ip_version = 6;
            q.src = p.src();
            q.dst = p.dst();
            match walk_extensions(p.next_header(), p.payload()) {
                Ok(w) => (w.payload, w.protocol),
                Err(_) => (&[][..], p.next_header()),
            }
        }
        _ => return q,
    };
    q.present = true;
    q.protocol = proto.0;
    match proto {
        IpProtocol::TCP | IpProtocol::UDP | IpProtocol::SCTP if l4.len() >= 4 => {
            q.src_port = be16(l4, 0);
            q.dst_port = be16(l4, 2);
        }
        IpProtocol::ICMP | IpProtocol::ICMPV6 if l4.len() >= 6 => {
            // quoted echo: the id identifies the probe (traceroute / ping)
            q.src_port = be16(l4, 4);
            q.dst_port = be16(l4, 4);
        }
        _ => {}
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::{Builder, fragment};
    use crate::packet::tcp::flags;

    const A: [u8; 4] = [10, 0, 0, 1];
    const B: [u8; 4] = [192, 168, 1, 2];
    fn a6(x: u8) -> [u8; 16] {
        let mut a = [0u8; 16];
        a[0] = 0x20;
        a[1] = 0x01;
        a[15] = x;
        a
    }

    #[test]
    fn ethernet_ipv4_tcp_with_options_and_padding() {
        let opts = [
            2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 9, 0, 0, 0, 0, 1, 3, 3, 7,
        ];
        let b =
            Builder::ethernet()
                .ipv4(A, B)
                .tcp_with(40000, 443, 1000, 0, flags::SYN, 29200, &opts);
        let f = b.build();
        assert_eq!(f.len(), 14 + 20 + 40);
        let d = dissect(b.link_type(), &f);
        assert_eq!(d.stop, None);
        assert_eq!(d.l3, L3::Ipv4);
        assert_eq!(d.src, v4_mapped(A));
        assert_eq!(d.dst, v4_mapped(B));
        assert_eq!((d.src_port, d.dst_port), (40000, 443));
        assert_eq!(d.protocol, 6);
        assert_eq!(d.tcp.flags, flags::SYN);
        assert_eq!(d.tcp.seq, 1000);
        assert_eq!(d.tcp.window, 29200);
        assert_eq!(d.tcp.mss, 1460);
        assert_eq!(d.tcp.wscale, Some(7));
        assert!(d.tcp.sack_permitted);
        assert_eq!(d.tcp.timestamps, Some((9, 0)));
        assert_eq!(d.l3_offset, 14);
        assert_eq!(d.l4_offset, 34);
        assert_eq!(d.payload_offset, 74);
        assert_eq!(d.payload_len, 0);
        assert_eq!(d.ip_total_len, 60);
        assert_eq!(d.ttl, 64);
        assert!(d.has(Layer::Tcp));

        // A 1-byte-payload ACK is padded to 60 bytes: the IP length wins.
        let b = Builder::ethernet()
            .ipv4(A, B)
            .tcp(1, 2, 3, 4, flags::ACK)
            .payload(&[7]);
        let f = b.build();
        assert_eq!(f.len(), 60);
        let d = dissect(LinkType::ETHERNET, &f);
        assert_eq!(d.ip_total_len, 41);
        assert_eq!(d.payload_len, 1);
        assert!(!d.truncated);
    }

    #[test]
    fn vlan_qinq_ipv6_udp() {
        let b = Builder::ethernet()
            .qinq(100)
            .vlan(200)
            .ipv6_hbh(a6(1), a6(2))
            .udp(5353, 53)
            .payload(b"hello");
        let d = dissect(LinkType::ETHERNET, &b.build());
        assert_eq!(d.stop, None);
        assert_eq!(d.vlan_count, 2);
        assert_eq!(d.vlans, [100, 200]);
        assert_eq!(d.ip_version, 6);
        assert_eq!(d.src, a6(1));
        assert_eq!(d.protocol, 17);
        assert!(d.has(Layer::Ipv6Ext));
        assert_eq!((d.src_port, d.dst_port), (5353, 53));
        assert_eq!(d.payload_len, 5);
        assert_eq!(d.l3_offset, 22);
        assert_eq!(d.ip_total_len, 40 + 8 + 8 + 5);
    }

    #[test]
    fn other_links() {
        for b in [
            Builder::sll().ipv4(A, B).udp(1, 2),
            Builder::sll2().ipv4(A, B).udp(1, 2),
            Builder::null().ipv4(A, B).udp(1, 2),
            Builder::raw().ipv4(A, B).udp(1, 2),
            Builder::ethernet().mpls(16).mpls(17).ipv4(A, B).udp(1, 2),
        ] {
            let d = dissect(b.link_type(), &b.build());
            assert_eq!(d.stop, None, "{:?}", b.link_type());
            assert_eq!((d.src_port, d.dst_port), (1, 2));
        }
        let b = Builder::null().ipv6(a6(1), a6(2)).udp(1, 2);
        assert_eq!(dissect(LinkType::NULL, &b.build()).ip_version, 6);
        let b = Builder::ethernet().mpls(16).mpls(17).ipv4(A, B).udp(1, 2);
        let d = dissect(LinkType::ETHERNET, &b.build());
        assert_eq!((d.mpls_count, d.mpls_label), (2, 16));
        let raw = Builder::raw().ipv6(a6(1), a6(2)).udp(1, 2).build();
        assert_eq!(dissect(LinkType::IPV6, &raw).ip_version, 6);
        assert_eq!(
            dissect(LinkType(9999), &raw).stop,
            Some(ParseError::new(Layer::Link, ErrorKind::Unsupported))
        );
    }

    #[test]
    fn icmp_echo_and_error_with_quote() {
        let echo = Builder::ethernet()
            .ipv4(A, B)
            .icmp(8, 0, 0x4242, 1)
            .payload(&[0; 16]);
        let d = dissect(LinkType::ETHERNET, &echo.build());
        assert!(d.icmp.is_echo);
        assert_eq!(d.icmp.echo_id, 0x4242);
        // a router says the UDP datagram B->A was unreachable
        let orig = Builder::raw()
            .ipv4(B, A)
            .udp(3333, 33434)
            .payload(&[0; 20])
            .build();
        let err = Builder::ethernet()
            .ipv4([172, 16, 0, 1], B)
            .icmp(3, 3, 0, 0)
            .payload(&orig[..28]);
        let d = dissect(LinkType::ETHERNET, &err.build());
        assert!(d.icmp.is_error);
        assert_eq!((d.icmp.msg_type, d.icmp.code), (3, 3));
        assert!(d.quoted.present);
        assert_eq!(d.quoted.src, v4_mapped(B));
        assert_eq!(d.quoted.dst, v4_mapped(A));
        assert_eq!((d.quoted.src_port, d.quoted.dst_port), (3333, 33434));
        // ICMPv6 time exceeded quoting a TCP segment
        let orig = Builder::raw()
            .ipv6(a6(1), a6(2))
            .tcp(1000, 80, 1, 0, flags::SYN)
            .build();
        let err = Builder::ethernet()
            .ipv6(a6(9), a6(1))
            .icmpv6(3, 0, 0, 0)
            .payload(&orig);
        let d = dissect(LinkType::ETHERNET, &err.build());
        assert!(d.icmp.is_error && d.quoted.present);
        assert_eq!(d.quoted.protocol, 6);
        assert_eq!((d.quoted.src_port, d.quoted.dst_port), (1000, 80));
    }

    #[test]
    fn fragments_v4_and_v6() {
        let full = Builder::ethernet()
            .vlan(5)
            .ipv4(A, B)
            .udp(7, 9)
            .payload(&[1; 100])
            .build();
        let frags = fragment(&full, 18, 40, 77);
        assert_eq!(frags.len(), 3);
        let d0 = dissect(LinkType::ETHERNET, &frags[0]);
        assert!(d0.frag.is_fragment && d0.frag.more);
        assert_eq!(d0.frag.offset, 0);
        assert_eq!(d0.frag.ident, 77);
        assert_eq!((d0.src_port, d0.dst_port), (7, 9));
        let d1 = dissect(LinkType::ETHERNET, &frags[1]);
        assert_eq!(d1.frag.offset, 40);
        assert_eq!((d1.src_port, d1.dst_port), (0, 0));
        assert_eq!(d1.stop, None);
        let full6 = Builder::ethernet()
            .ipv6(a6(1), a6(2))
            .udp(7, 9)
            .payload(&[1; 100])
            .build();
        let frags = fragment(&full6, 14, 48, 0xabcdef);
        assert_eq!(frags.len(), 3);
        let d0 = dissect(LinkType::ETHERNET, &frags[0]);
        assert_eq!(d0.frag.ident, 0xabcdef);
        assert_eq!((d0.src_port, d0.protocol), (7, 17));
        let d2 = dissect(LinkType::ETHERNET, &frags[2]);
        assert!(d2.frag.is_fragment && !d2.frag.more);
        assert_eq!(d2.frag.offset, 96);
        assert_eq!(d2.src_port, 0);
    }

    #[test]
    fn tunnels_expose_inner() {
        let vx = Builder::ethernet()
            .ipv4(A, B)
            .udp(50000, 4789)
            .vxlan(0x1234)
            .inner_ethernet()
            .vlan(42)
            .ipv4([1, 1, 1, 1], [2, 2, 2, 2])
            .tcp(1111, 22, 5, 6, flags::ACK);
        let d = dissect(LinkType::ETHERNET, &vx.build());
        assert_eq!(d.stop, None);
        assert_eq!((d.tunnel, d.tunnel_id), (TunnelKind::Vxlan, 0x1234));
        assert_eq!(d.src, v4_mapped([1, 1, 1, 1]));
        assert_eq!((d.src_port, d.dst_port), (1111, 22));
        assert_eq!(d.vlans[0], 42);
        assert_eq!(d.outer_l3_offset, 14);
        assert_eq!(d.l3_offset, 14 + 20 + 8 + 8 + 14 + 4);
        let gtp = Builder::ethernet()
            .ipv4(A, B)
            .udp(2152, 2152)
            .gtp(0xdead)
            .ipv6(a6(3), a6(4))
            .udp(1, 2);
        let d = dissect(LinkType::ETHERNET, &gtp.build());
        assert_eq!((d.tunnel, d.tunnel_id), (TunnelKind::Gtpu, 0xdead));
        assert_eq!((d.ip_version, d.src_port), (6, 1));
        let gre = Builder::ethernet()
            .ipv4(A, B)
            .gre(Some(9))
            .ipv4([3, 3, 3, 3], [4, 4, 4, 4])
            .icmp(0, 0, 5, 6);
        let d = dissect(LinkType::ETHERNET, &gre.build());
        assert_eq!((d.tunnel, d.tunnel_id), (TunnelKind::Gre, 9));
        assert_eq!(d.icmp.echo_id, 5);
        assert_eq!(d.dst, v4_mapped([4, 4, 4, 4]));
    }

    #[test]
    fn truncated_frames_record_layer() {
        let f = Builder::ethernet()
            .ipv4(A, B)
            .tcp(1, 2, 3, 4, flags::ACK)
            .payload(&[0; 500])
            .build();
        // snaplen 64: TCP header complete, payload cut
        let d = dissect(LinkType::ETHERNET, &f[..64]);
        assert_eq!(d.stop, None);
        assert!(d.truncated);
        assert_eq!(d.payload_len, 500);
        assert_eq!(d.src_port, 1);
        // cut inside TCP
        let d = dissect(LinkType::ETHERNET, &f[..40]);
        assert_eq!(
            d.stop,
            Some(ParseError::new(Layer::Tcp, ErrorKind::Truncated))
        );
        assert!(d.truncated && d.has(Layer::Ipv4));
        assert_eq!(d.src, v4_mapped(A));
        // cut inside IPv4
        let d = dissect(LinkType::ETHERNET, &f[..30]);
        assert_eq!(
            d.stop,
            Some(ParseError::new(Layer::Ipv4, ErrorKind::Truncated))
        );
        let d = dissect(LinkType::ETHERNET, &f[..5]);
        assert_eq!(
            d.stop,
            Some(ParseError::new(Layer::Link, ErrorKind::Truncated))
        );
    }

    #[test]
    fn every_prefix_never_panics() {
        let frames = [
            Builder::ethernet()
                .qinq(1)
                .vlan(2)
                .ipv4_with(A, B, 9, &[1, 1, 1])
                .udp(1, 4789)
                .vxlan(1)
                .inner_ethernet()
                .ipv6_hbh(a6(1), a6(2))
                .tcp_with(
                    1,
                    2,
                    3,
                    4,
                    5,
                    6,
                    &[2, 4, 1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0],
                )
                .build(),
            Builder::ethernet()
                .ipv4(A, B)
                .udp(2152, 2152)
                .gtp(1)
                .ipv4(A, B)
                .icmp(3, 1, 0, 0)
                .build(),
        ];
        for f in &frames {
            for n in 0..=f.len() {
                let _ = dissect(LinkType::ETHERNET, &f[..n]);
            }
        }
    }
}
