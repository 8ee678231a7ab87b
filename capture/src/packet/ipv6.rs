//! IPv6 fixed header (RFC 8200 §3) and extension headers (§4): hop-by-hop, routing, fragment,
//! destination options, AH (RFC 4302), mobility, HIP, shim6.
//!
//! The payload length is the truth (padding trimmed). A jumbogram (payload length 0) uses the
//! captured length. [`Ipv6Packet::new_lax`] accepts a payload cut short of the payload length.

use super::{ErrorKind, IpProtocol, Layer, ParseError, be16, be32};

/// Fixed header length.
pub const HEADER_LEN: usize = 40;
/// Maximum number of extension headers walked before giving up.
pub const MAX_EXT_HEADERS: usize = 8;

/// A view over an IPv6 packet.
#[derive(Debug, Clone, Copy)]
pub struct Ipv6Packet<'a> {
    buf: &'a [u8],
    end: usize,
}

const fn err(kind: ErrorKind) -> ParseError {
    ParseError::new(Layer::Ipv6, kind)
}

impl<'a> Ipv6Packet<'a> {
    /// Strict: header and the whole payload length must be present.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, ParseError> {
        let p = Self::new_lax(buf)?;
        if p.is_truncated() {
            return Err(err(ErrorKind::Truncated));
        }
        Ok(p)
    }
    /// Lax: the fixed header must be present; the payload may be cut short.
    pub fn new_lax(buf: &'a [u8]) -> Result<Self, ParseError> {
        if buf.len() < HEADER_LEN {
            return Err(err(ErrorKind::Truncated));
        }
        if buf[0] >> 4 != 6 {
            return Err(err(ErrorKind::BadVersion));
        }
        let plen = usize::from(be16(buf, 4));
        let end = if plen == 0 {
            buf.len()
        } else {
            HEADER_LEN + plen
        };
        Ok(Ipv6Packet { buf, end })
    }
    /// `true` when the captured bytes end before the payload length.
    pub fn is_truncated(&self) -> bool {
        self.end > self.buf.len()
    }
    /// Traffic class.
    pub fn traffic_class(&self) -> u8 {
        ((be16(self.buf, 0) >> 4) & 0xff) as u8
    }
    /// Flow label (20 bits).
    pub fn flow_label(&self) -> u32 {
        be32(self.buf, 0) & 0x000f_ffff
    }
    /// Payload length field.
    pub fn payload_len_field(&self) -> u16 {
        be16(self.buf, 4)
    }
    /// The packet length claimed by the header (40 + payload length).
    pub fn total_len(&self) -> usize {
        self.end
    }
    /// Next header of the fixed header.
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol(self.buf[6])
    }
    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buf[7]
    }
    /// Source address.
    pub fn src(&self) -> [u8; 16] {
        let mut a = [0; 16];
        a.copy_from_slice(&self.buf[8..24]);
        a
    }
    /// Destination address.
    pub fn dst(&self) -> [u8; 16] {
        let mut a = [0; 16];
        a.copy_from_slice(&self.buf[24..40]);
        a
    }
    /// Payload after the fixed header (extension headers included), padding trimmed.
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[HEADER_LEN..self.end.min(self.buf.len())]
    }
    /// Walks the extension headers. See [`ExtWalk`].
    pub fn walk_extensions(&self) -> Result<ExtWalk<'a>, ParseError> {
        walk_extensions(self.next_header(), self.payload())
    }
}

/// The result of walking the extension header chain.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExtWalk<'a> {
    /// The upper-layer protocol (or the header the walk stopped at: ESP, no-next, unknown).
    pub protocol: IpProtocol,
    /// Bytes of extension headers skipped.
    pub ext_len: usize,
    /// Number of extension headers.
    pub count: u8,
    /// The fragment header, if any.
    pub fragment: Option<FragmentHeader>,
    /// The upper-layer data.
    pub payload: &'a [u8],
}

/// The fields of an IPv6 fragment header (RFC 8200 §4.5).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FragmentHeader {
    /// Fragment offset in bytes.
    pub offset: u16,
    /// More-fragments flag.
    pub more: bool,
    /// Identification.
    pub ident: u32,
}

/// `true` for next-header values that are extension headers walked by [`walk_extensions`].
pub fn is_extension(p: IpProtocol) -> bool {
    matches!(p.0, 0 | 43 | 44 | 51 | 60 | 135 | 139 | 140)
}

/// Walks extension headers starting with `next` over `data` (the bytes after the fixed header).
/// Stops at the first non-extension header; errors on a truncated or over-deep chain.
pub fn walk_extensions(mut next: IpProtocol, data: &[u8]) -> Result<ExtWalk<'_>, ParseError> {
    let mut w = ExtWalk::default();
    let mut rest = data;
    while is_extension(next) {
        if usize::from(w.count) >= MAX_EXT_HEADERS {
            return Err(ParseError::new(Layer::Ipv6Ext, ErrorKind::TooDeep));
        }
        if rest.len() < 8 {
            return Err(ParseError::new(Layer::Ipv6Ext, ErrorKind::Truncated));
        }
        let len = if next == IpProtocol::FRAGMENT {
            let off_flags = be16(rest, 2);
            w.fragment = Some(FragmentHeader {
                offset: off_flags & 0xfff8,
                more: off_flags & 1 != 0,
                ident: be32(rest, 4),
            });
            8
        } else if next == IpProtocol::AH {
            (usize::from(rest[1]) + 2) * 4
        } else {
            (usize::from(rest[1]) + 1) * 8
        };
        if len > rest.len() {
            return Err(ParseError::new(Layer::Ipv6Ext, ErrorKind::Truncated));
        }
        next = IpProtocol(rest[0]);
        rest = &rest[len..];
        w.ext_len += len;
        w.count += 1;
    }
    w.protocol = next;
    w.payload = rest;
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn ext_chain_with_fragment() {
        let mut p = vec![0x60, 0, 0, 0, 0, 0, 0, 64];
        p.extend_from_slice(&[0x20; 16]);
        p.extend_from_slice(&[0x30; 16]);
        // hop-by-hop (8 bytes) -> fragment -> UDP
        p.extend_from_slice(&[44, 0, 1, 4, 0, 0, 0, 0]);
        p.extend_from_slice(&[17, 0, 0x05, 0x39, 0xde, 0xad, 0xbe, 0xef]);
        p.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let plen = (p.len() - 40) as u16;
        p[4..6].copy_from_slice(&plen.to_be_bytes());
        p.extend_from_slice(&[0; 6]); // padding
        let v = Ipv6Packet::new_checked(&p).unwrap();
        let w = v.walk_extensions().unwrap();
        assert_eq!(w.protocol, IpProtocol::UDP);
        assert_eq!(w.count, 2);
        assert_eq!(w.payload.len(), 8);
        let f = w.fragment.unwrap();
        assert_eq!(f.offset, 0x538);
        assert!(f.more);
        assert_eq!(f.ident, 0xdeadbeef);
        // truncated chain
        assert!(walk_extensions(IpProtocol::HOP_BY_HOP, &p[40..45]).is_err());
    }
}
