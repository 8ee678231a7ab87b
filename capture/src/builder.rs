//! A small packet builder and pcap / pcapng writers, for tests here and in the probe crate.
//!
//! Frames are described outside-in (`Builder::ethernet().vlan(10).ipv4(..).tcp(..)`) and
//! serialised inside-out by [`Builder::build`], which fills lengths, next-protocol fields and
//! valid IPv4 / TCP / UDP / ICMP / ICMPv6 checksums. Ethernet frames are padded to 60 bytes like
//! a NIC does, so tests exercise "the IP length, not the frame length, is the truth".
//! This is test tooling: it allocates freely and is not tuned.

use std::io::{self, Write};

use crate::packet::LinkType;
use crate::packet::ipv4::checksum;

/// One layer of a frame under construction.
#[derive(Debug, Clone)]
enum L {
    Eth,
    Sll,
    Sll2,
    Null,
    Vlan(u16, u16),
    Mpls(u32),
    Ipv4 {
        src: [u8; 4],
        dst: [u8; 4],
        ttl: u8,
        ident: u16,
        options: Vec<u8>,
    },
    Ipv6 {
        src: [u8; 16],
        dst: [u8; 16],
        hop: u8,
        hbh: bool,
    },
    Tcp {
        sport: u16,
        dport: u16,
        seq: u32,
        ack: u32,
        flags: u16,
        window: u16,
        options: Vec<u8>,
    },
    Udp(u16, u16),
    Icmp(u8, u8, u16, u16),
    Icmpv6(u8, u8, u16, u16),
    Gre(Option<u32>),
    Vxlan(u32),
    Gtp(u32),
    Payload(Vec<u8>),
}

/// Builds one frame. See the module doc.
#[derive(Debug, Clone)]
pub struct Builder {
    layers: Vec<L>,
    pad: bool,
}

impl Builder {
    /// Starts an Ethernet II frame.
    pub fn ethernet() -> Self {
        Builder {
            layers: vec![L::Eth],
            pad: true,
        }
    }
    /// Starts a Linux SLL (v1) frame.
    pub fn sll() -> Self {
        Builder {
            layers: vec![L::Sll],
            pad: false,
        }
    }
    /// Starts a Linux SLL2 frame.
    pub fn sll2() -> Self {
        Builder {
            layers: vec![L::Sll2],
            pad: false,
        }
    }
    /// Starts a BSD loopback (`DLT_NULL`, little-endian family) frame.
    pub fn null() -> Self {
        Builder {
            layers: vec![L::Null],
            pad: false,
        }
    }
    /// Starts a raw IP frame (`LINKTYPE_RAW`).
    pub fn raw() -> Self {
        Builder {
            layers: vec![],
            pad: false,
        }
    }
    /// Disables padding to 60 bytes.
    pub fn no_pad(mut self) -> Self {
        self.pad = false;
        self
    }
    /// Adds an 802.1Q tag.
    pub fn vlan(mut self, vid: u16) -> Self {
        self.layers.push(L::Vlan(0x8100, vid));
        self
    }
    /// Adds an 802.1ad (QinQ outer, TPID 0x88a8) tag.
    pub fn qinq(mut self, vid: u16) -> Self {
        self.layers.push(L::Vlan(0x88a8, vid));
        self
    }
    /// Adds an MPLS label (the last one added is bottom of stack).
    pub fn mpls(mut self, label: u32) -> Self {
        self.layers.push(L::Mpls(label));
        self
    }
    /// Adds an IPv4 header (TTL 64, ident 1).
    pub fn ipv4(mut self, src: [u8; 4], dst: [u8; 4]) -> Self {
        self.layers.push(L::Ipv4 {
            src,
            dst,
            ttl: 64,
            ident: 1,
            options: Vec::new(),
        });
        self
    }
    /// Adds an IPv4 header with identification and options (padded to 4 bytes).
    pub fn ipv4_with(mut self, src: [u8; 4], dst: [u8; 4], ident: u16, options: &[u8]) -> Self {
        let mut o = options.to_vec();
        while !o.len().is_multiple_of(4) {
            o.push(0);
        }
        self.layers.push(L::Ipv4 {
            src,
            dst,
            ttl: 64,
            ident,
            options: o,
        });
        self
    }
    /// Adds an IPv6 header (hop limit 64).
    pub fn ipv6(mut self, src: [u8; 16], dst: [u8; 16]) -> Self {
        self.layers.push(L::Ipv6 {
            src,
            dst,
            hop: 64,
            hbh: false,
        });
        self
    }
    /// Adds an IPv6 header followed by an empty hop-by-hop options header.
    pub fn ipv6_hbh(mut self, src: [u8; 16], dst: [u8; 16]) -> Self {
        self.layers.push(L::Ipv6 {
            src,
            dst,
            hop: 64,
            hbh: true,
        });
        self
    }
    /// Adds a TCP header without options.
    pub fn tcp(self, sport: u16, dport: u16, seq: u32, ack: u32, flags: u16) -> Self {
        self.tcp_with(sport, dport, seq, ack, flags, 65535, &[])
    }
    /// Adds a TCP header with window and raw options (padded with NOPs to 4 bytes).
    #[allow(clippy::too_many_arguments)]
    pub fn tcp_with(
        mut self,
        sport: u16,
        dport: u16,
        seq: u32,
        ack: u32,
        flags: u16,
        window: u16,
        options: &[u8],
    ) -> Self {
        let mut o = options.to_vec();
        while !o.len().is_multiple_of(4) {
            o.push(1);
        }
        self.layers.push(L::Tcp {
            sport,
            dport,
            seq,
            ack,
            flags,
            window,
            options: o,
        });
        self
    }
    /// Adds a UDP header.
    pub fn udp(mut self, sport: u16, dport: u16) -> Self {
        self.layers.push(L::Udp(sport, dport));
        self
    }
    /// Adds an ICMP header (for echo: id and seq; otherwise the rest-of-header is id<<16|seq).
    pub fn icmp(mut self, msg_type: u8, code: u8, id: u16, seq: u16) -> Self {
        self.layers.push(L::Icmp(msg_type, code, id, seq));
        self
    }
    /// Adds an ICMPv6 header.
    pub fn icmpv6(mut self, msg_type: u8, code: u8, id: u16, seq: u16) -> Self {
        self.layers.push(L::Icmpv6(msg_type, code, id, seq));
        self
    }
    /// Adds a GRE header (with key when `Some`).
    pub fn gre(mut self, key: Option<u32>) -> Self {
        self.layers.push(L::Gre(key));
        self
    }
    /// Adds a VXLAN header; put it after `.udp(x, 4789)` and follow it with `.inner_ethernet()`.
    pub fn vxlan(mut self, vni: u32) -> Self {
        self.layers.push(L::Vxlan(vni));
        self
    }
    /// Adds a GTP-U G-PDU header; put it after `.udp(2152, 2152)`.
    pub fn gtp(mut self, teid: u32) -> Self {
        self.layers.push(L::Gtp(teid));
        self
    }
    /// Adds an inner Ethernet header (inside VXLAN or GRE/TEB).
    pub fn inner_ethernet(mut self) -> Self {
        self.layers.push(L::Eth);
        self
    }
    /// Appends payload bytes (e.g. a quoted packet for ICMP errors).
    pub fn payload(mut self, data: &[u8]) -> Self {
        self.layers.push(L::Payload(data.to_vec()));
        self
    }
    /// The link type matching the first layer.
    pub fn link_type(&self) -> LinkType {
        match self.layers.first() {
            Some(L::Eth) => LinkType::ETHERNET,
            Some(L::Sll) => LinkType::LINUX_SLL,
            Some(L::Sll2) => LinkType::LINUX_SLL2,
            Some(L::Null) => LinkType::NULL,
            _ => LinkType::RAW,
        }
    }

    /// Serialises the frame.
    pub fn build(&self) -> Vec<u8> {
        let mut inner: Vec<u8> = Vec::new();
        // What the layer after the current one is, for next-protocol fields.
        let mut next: Option<&L> = None;
        for (i, layer) in self.layers.iter().enumerate().rev() {
            let mut h: Vec<u8> = Vec::new();
            match layer {
                L::Payload(p) => h.extend_from_slice(p),
                L::Eth => {
                    h.extend_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
                    h.extend_from_slice(&ethertype_of(next).to_be_bytes());
                }
                L::Sll => {
                    h.extend_from_slice(&[0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
                    h.extend_from_slice(&ethertype_of(next).to_be_bytes());
                }
                L::Sll2 => {
                    h.extend_from_slice(&ethertype_of(next).to_be_bytes());
                    h.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
                }
                L::Null => {
                    let fam: u32 = if matches!(next, Some(L::Ipv6 { .. })) {
                        30
                    } else {
                        2
                    };
                    h.extend_from_slice(&fam.to_le_bytes());
                }
                L::Vlan(_, vid) => {
                    h.extend_from_slice(&vid.to_be_bytes());
                    h.extend_from_slice(&ethertype_of(next).to_be_bytes());
                }
                L::Mpls(label) => {
                    let bottom = !matches!(next, Some(L::Mpls(_)));
                    let v = (label << 12) | if bottom { 0x100 } else { 0 } | 64;
                    h.extend_from_slice(&v.to_be_bytes());
                }
                L::Ipv4 {
                    src,
                    dst,
                    ttl,
                    ident,
                    options,
                } => {
                    let hl = 20 + options.len();
                    let total = (hl + inner.len()) as u16;
                    h.push(0x40 | (hl / 4) as u8);
                    h.push(0);
                    h.extend_from_slice(&total.to_be_bytes());
                    h.extend_from_slice(&ident.to_be_bytes());
                    h.extend_from_slice(&[0, 0, *ttl, proto_of(next), 0, 0]);
                    h.extend_from_slice(src);
                    h.extend_from_slice(dst);
                    h.extend_from_slice(options);
                    let c = checksum(&h);
                    h[10..12].copy_from_slice(&c.to_be_bytes());
                    let mut pseudo = Vec::with_capacity(12);
                    pseudo.extend_from_slice(src);
                    pseudo.extend_from_slice(dst);
                    pseudo.extend_from_slice(&[0, proto_of(next)]);
                    pseudo.extend_from_slice(&(inner.len() as u16).to_be_bytes());
                    l4_checksum(next, &pseudo, &mut inner);
                }
                L::Ipv6 { src, dst, hop, hbh } => {
                    let mut body = Vec::new();
                    let first = if *hbh {
                        body.extend_from_slice(&[proto_of(next), 0, 1, 4, 0, 0, 0, 0]);
                        0
                    } else {
                        proto_of(next)
                    };
                    let mut pseudo = Vec::with_capacity(40);
                    pseudo.extend_from_slice(src);
                    pseudo.extend_from_slice(dst);
                    pseudo.extend_from_slice(&(inner.len() as u32).to_be_bytes());
                    pseudo.extend_from_slice(&[0, 0, 0, proto_of(next)]);
                    l4_checksum(next, &pseudo, &mut inner);
                    let plen = (body.len() + inner.len()) as u16;
                    h.extend_from_slice(&[0x60, 0, 0, 0]);
                    h.extend_from_slice(&plen.to_be_bytes());
                    h.extend_from_slice(&[first, *hop]);
                    h.extend_from_slice(src);
                    h.extend_from_slice(dst);
                    h.extend_from_slice(&body);
                }
                L::Tcp {
                    sport,
                    dport,
                    seq,
                    ack,
                    flags,
                    window,
                    options,
                } => {
                    let hl = 20 + options.len();
                    h.extend_from_slice(&sport.to_be_bytes());
                    h.extend_from_slice(&dport.to_be_bytes());
                    h.extend_from_slice(&seq.to_be_bytes());
                    h.extend_from_slice(&ack.to_be_bytes());
                    let off_flags = ((hl as u16 / 4) << 12) | (flags & 0x1ff);
                    h.extend_from_slice(&off_flags.to_be_bytes());
                    h.extend_from_slice(&window.to_be_bytes());
                    h.extend_from_slice(&[0, 0, 0, 0]);
                    h.extend_from_slice(options);
                }
                L::Udp(s, d) => {
                    h.extend_from_slice(&s.to_be_bytes());
                    h.extend_from_slice(&d.to_be_bytes());
                    h.extend_from_slice(&((8 + inner.len()) as u16).to_be_bytes());
                    h.extend_from_slice(&[0, 0]);
                }
                L::Icmp(t, c, id, seq) | L::Icmpv6(t, c, id, seq) => {
                    h.extend_from_slice(&[*t, *c, 0, 0]);
                    h.extend_from_slice(&id.to_be_bytes());
                    h.extend_from_slice(&seq.to_be_bytes());
                    if matches!(layer, L::Icmp(..)) {
                        let mut all = h.clone();
                        all.extend_from_slice(&inner);
                        let cs = checksum(&all);
                        h[2..4].copy_from_slice(&cs.to_be_bytes());
                    }
                }
                L::Gre(key) => {
                    let flags: u16 = if key.is_some() { 0x2000 } else { 0 };
                    h.extend_from_slice(&flags.to_be_bytes());
                    h.extend_from_slice(&ethertype_of(next).to_be_bytes());
                    if let Some(k) = key {
                        h.extend_from_slice(&k.to_be_bytes());
                    }
                }
                L::Vxlan(vni) => {
                    h.extend_from_slice(&[0x08, 0, 0, 0]);
                    h.extend_from_slice(&(vni << 8).to_be_bytes());
                }
                L::Gtp(teid) => {
                    h.extend_from_slice(&[0x30, 0xff]);
                    h.extend_from_slice(&(inner.len() as u16).to_be_bytes());
                    h.extend_from_slice(&teid.to_be_bytes());
                }
            }
            h.extend_from_slice(&inner);
            inner = h;
            next = self.layers.get(i);
        }
        if self.pad && matches!(self.layers.first(), Some(L::Eth)) && inner.len() < 60 {
            inner.resize(60, 0);
        }
        inner
    }
}

fn ethertype_of(next: Option<&L>) -> u16 {
    match next {
        Some(L::Ipv4 { .. }) => 0x0800,
        Some(L::Ipv6 { .. }) => 0x86dd,
        Some(L::Vlan(tpid, _)) => *tpid,
        Some(L::Mpls(_)) => 0x8847,
        Some(L::Eth) => 0x6558,
        _ => 0x88b5, // local experimental
    }
}

fn proto_of(next: Option<&L>) -> u8 {
    match next {
        Some(L::Tcp { .. }) => 6,
        Some(L::Udp(..)) => 17,
        Some(L::Icmp(..)) => 1,
        Some(L::Icmpv6(..)) => 58,
        Some(L::Gre(_)) => 47,
        Some(L::Ipv4 { .. }) => 4,
        Some(L::Ipv6 { .. }) => 41,
        _ => 253, // experimentation
    }
}

/// Fills the TCP/UDP/ICMPv6 checksum of `seg` (which starts with that header).
fn l4_checksum(next: Option<&L>, pseudo: &[u8], seg: &mut [u8]) {
    let at = match next {
        Some(L::Tcp { .. }) => 16,
        Some(L::Udp(..)) => 6,
        Some(L::Icmpv6(..)) => 2,
        _ => return,
    };
    if seg.len() < at + 2 {
        return;
    }
    seg[at] = 0;
    seg[at + 1] = 0;
    let mut all = pseudo.to_vec();
    all.extend_from_slice(seg);
    let mut c = checksum(&all);
    if c == 0 && at == 6 {
        c = 0xffff;
    }
    seg[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// Splits the IP packet starting at `l3` in `frame` into fragments carrying at most `chunk`
/// payload bytes (rounded down to 8), each prefixed by the frame's link bytes. IPv4 sets
/// MF/offset; IPv6 inserts a fragment header (assumes no other extension headers).
pub fn fragment(frame: &[u8], l3: usize, chunk: usize, ident: u32) -> Vec<Vec<u8>> {
    let chunk = (chunk / 8).max(1) * 8;
    let link = &frame[..l3];
    let ip = &frame[l3..];
    let mut out = Vec::new();
    if ip[0] >> 4 == 4 {
        let hl = usize::from(ip[0] & 15) * 4;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        let payload = &ip[hl..total];
        let mut off = 0;
        while off < payload.len() {
            let end = (off + chunk).min(payload.len());
            let mut h = ip[..hl].to_vec();
            h[2..4].copy_from_slice(&((hl + end - off) as u16).to_be_bytes());
            h[4..6].copy_from_slice(&(ident as u16).to_be_bytes());
            let mf = if end < payload.len() { 0x2000 } else { 0 };
            h[6..8].copy_from_slice(&((off / 8) as u16 | mf).to_be_bytes());
            h[10] = 0;
            h[11] = 0;
            let c = checksum(&h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            let mut f = link.to_vec();
            f.extend_from_slice(&h);
            f.extend_from_slice(&payload[off..end]);
            if f.len() < 60 && l3 >= 14 {
                f.resize(60, 0);
            }
            out.push(f);
            off = end;
        }
    } else {
        let plen = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
        let next = ip[6];
        let payload = &ip[40..40 + plen];
        let mut off = 0;
        while off < payload.len() {
            let end = (off + chunk).min(payload.len());
            let mut h = ip[..40].to_vec();
            h[4..6].copy_from_slice(&((8 + end - off) as u16).to_be_bytes());
            h[6] = 44;
            let m = if end < payload.len() { 1 } else { 0 };
            h.extend_from_slice(&[next, 0]);
            h.extend_from_slice(&((off as u16) | m).to_be_bytes());
            h.extend_from_slice(&ident.to_be_bytes());
            let mut f = link.to_vec();
            f.extend_from_slice(&h);
            f.extend_from_slice(&payload[off..end]);
            out.push(f);
            off = end;
        }
    }
    out
}

/// Writes a classic pcap file.
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    w: W,
    nanos: bool,
    big_endian: bool,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the global header. `nanos` selects the ns magic (0xa1b23c4d).
    pub fn new(
        mut w: W,
        link: LinkType,
        snaplen: u32,
        nanos: bool,
        big_endian: bool,
    ) -> io::Result<Self> {
        let magic: u32 = if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 };
        let mut h = Vec::with_capacity(24);
        let u32b = |v: u32| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let u16b = |v: u16| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        h.extend_from_slice(&u32b(magic));
        h.extend_from_slice(&u16b(2));
        h.extend_from_slice(&u16b(4));
        h.extend_from_slice(&u32b(0));
        h.extend_from_slice(&u32b(0));
        h.extend_from_slice(&u32b(snaplen));
        h.extend_from_slice(&u32b(u32::from(link.0)));
        w.write_all(&h)?;
        Ok(PcapWriter {
            w,
            nanos,
            big_endian,
        })
    }
    /// Writes one record: timestamp in ns, captured bytes, original length.
    pub fn write(&mut self, ts_ns: u64, data: &[u8], orig_len: u32) -> io::Result<()> {
        let secs = (ts_ns / 1_000_000_000) as u32;
        let frac = if self.nanos {
            (ts_ns % 1_000_000_000) as u32
        } else {
            ((ts_ns % 1_000_000_000) / 1000) as u32
        };
        for v in [secs, frac, data.len() as u32, orig_len] {
            let b = if self.big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            };
            self.w.write_all(&b)?;
        }
        self.w.write_all(data)
    }
    /// Returns the inner writer.
    pub fn into_inner(self) -> W {
        self.w
    }
}

/// Writes a pcapng file: SHB, then IDBs, EPBs and SPBs, little-endian unless
/// [`PcapngWriter::new_big_endian`] is used.
#[derive(Debug)]
pub struct PcapngWriter<W: Write> {
    w: W,
    be: bool,
    /// Per interface: ticks per second.
    resol: Vec<u64>,
}

impl<W: Write> PcapngWriter<W> {
    /// Writes a little-endian section header block.
    pub fn new(w: W) -> io::Result<Self> {
        Self::with_order(w, false)
    }
    /// Writes a big-endian section header block (the whole section is then big-endian).
    pub fn new_big_endian(w: W) -> io::Result<Self> {
        Self::with_order(w, true)
    }
    fn with_order(w: W, be: bool) -> io::Result<Self> {
        let mut me = PcapngWriter {
            w,
            be,
            resol: vec![],
        };
        let mut b = Vec::new();
        me.u32(&mut b, 0x1A2B_3C4D);
        me.u16(&mut b, 1);
        me.u16(&mut b, 0);
        b.extend_from_slice(&[0xff; 8]); // section length: unknown (-1)
        me.block(0x0A0D_0D0A, &b)?;
        Ok(me)
    }
    fn u16(&self, b: &mut Vec<u8>, v: u16) {
        b.extend_from_slice(&if self.be {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        });
    }
    fn u32(&self, b: &mut Vec<u8>, v: u32) {
        b.extend_from_slice(&if self.be {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        });
    }
    fn block(&mut self, t: u32, body: &[u8]) -> io::Result<()> {
        let len = (12 + body.len()) as u32;
        let mut h = Vec::with_capacity(8);
        self.u32(&mut h, t);
        self.u32(&mut h, len);
        self.w.write_all(&h)?;
        self.w.write_all(body)?;
        let mut tail = Vec::with_capacity(4);
        self.u32(&mut tail, len);
        self.w.write_all(&tail)
    }
    /// Adds an interface; `tsresol` is the raw if_tsresol option byte (6 = µs, 9 = ns,
    /// 0x80|n = 2^-n), `None` for the default (µs). Returns its id.
    pub fn interface(
        &mut self,
        link: LinkType,
        snaplen: u32,
        tsresol: Option<u8>,
    ) -> io::Result<u32> {
        let mut b = Vec::new();
        self.u16(&mut b, link.0);
        self.u16(&mut b, 0);
        self.u32(&mut b, snaplen);
        if let Some(r) = tsresol {
            self.u16(&mut b, 9);
            self.u16(&mut b, 1);
            b.extend_from_slice(&[r, 0, 0, 0]);
            b.extend_from_slice(&[0, 0, 0, 0]); // opt_endofopt
        }
        self.block(1, &b)?;
        let tps = match tsresol {
            None => 1_000_000,
            Some(r) if r & 0x80 != 0 => 1u64 << (r & 0x7f),
            Some(r) => 10u64.pow(u32::from(r)),
        };
        self.resol.push(tps);
        Ok(self.resol.len() as u32 - 1)
    }
    /// Writes an enhanced packet block.
    pub fn packet(&mut self, iface: u32, ts_ns: u64, data: &[u8], orig_len: u32) -> io::Result<()> {
        let tps = self.resol.get(iface as usize).copied().unwrap_or(1_000_000);
        let ticks = (u128::from(ts_ns) * u128::from(tps) / 1_000_000_000) as u64;
        let mut b = Vec::with_capacity(20 + data.len() + 3);
        self.u32(&mut b, iface);
        self.u32(&mut b, (ticks >> 32) as u32);
        self.u32(&mut b, ticks as u32);
        self.u32(&mut b, data.len() as u32);
        self.u32(&mut b, orig_len);
        b.extend_from_slice(data);
        while !b.len().is_multiple_of(4) {
            b.push(0);
        }
        self.block(6, &b)
    }
    /// Writes a simple packet block (interface 0, no timestamp).
    pub fn simple_packet(&mut self, data: &[u8], orig_len: u32) -> io::Result<()> {
        let mut b = Vec::with_capacity(4 + data.len() + 3);
        self.u32(&mut b, orig_len);
        b.extend_from_slice(data);
        while !b.len().is_multiple_of(4) {
            b.push(0);
        }
        self.block(3, &b)
    }
    /// Writes an arbitrary block (e.g. a name resolution block, to test skipping).
    pub fn raw_block(&mut self, block_type: u32, body: &[u8]) -> io::Result<()> {
        self.block(block_type, body)
    }
    /// Returns the inner writer.
    pub fn into_inner(self) -> W {
        self.w
    }
}
