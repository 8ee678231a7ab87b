//! GRE header (RFC 2784, key and sequence from RFC 2890; version 1 = enhanced GRE for PPTP,
//! RFC 2637 §4.1, whose key field carries payload length and call id).

use super::{ErrorKind, EtherType, Layer, ParseError, be16, be32};

/// Minimum header length.
pub const MIN_HEADER_LEN: usize = 4;

/// A view over a GRE header.
#[derive(Debug, Clone, Copy)]
pub struct GrePacket<'a> {
    buf: &'a [u8],
    header_len: usize,
}

const fn err(kind: ErrorKind) -> ParseError {
    ParseError::new(Layer::Gre, kind)
}

impl<'a> GrePacket<'a> {
    /// Checks the header including its optional fields (checksum, key, sequence, ack).
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, ParseError> {
        if buf.len() < MIN_HEADER_LEN {
            return Err(err(ErrorKind::Truncated));
        }
        let f = be16(buf, 0);
        let version = f & 7;
        if version > 1 {
            return Err(err(ErrorKind::BadVersion));
        }
        if f & 0x4000 != 0 {
            // routing present (RFC 1701): obsolete and variable length
            return Err(err(ErrorKind::Unsupported));
        }
        let mut len = MIN_HEADER_LEN;
        if f & 0x8000 != 0 {
            len += 4;
        }
        if f & 0x2000 != 0 {
            len += 4;
        }
        if f & 0x1000 != 0 {
            len += 4;
        }
        if version == 1 && f & 0x0080 != 0 {
            len += 4; // acknowledgment number
        }
        if len > buf.len() {
            return Err(err(ErrorKind::Truncated));
        }
        Ok(GrePacket {
            buf,
            header_len: len,
        })
    }
    /// Version (0 or 1).
    pub fn version(&self) -> u8 {
        (be16(self.buf, 0) & 7) as u8
    }
    /// Protocol type of the payload (an EtherType; 0x880B = PPP for version 1).
    pub fn protocol(&self) -> EtherType {
        EtherType(be16(self.buf, 2))
    }
    /// Header length including optional fields.
    pub fn header_len(&self) -> usize {
        self.header_len
    }
    /// The key, if present.
    pub fn key(&self) -> Option<u32> {
        let f = be16(self.buf, 0);
        if f & 0x2000 == 0 {
            return None;
        }
        let off = if f & 0x8000 != 0 { 8 } else { 4 };
        Some(be32(self.buf, off))
    }
    /// The payload.
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[self.header_len..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn key_and_checksum() {
        let g = [0xa0, 0, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, 42, 0x45];
        let p = GrePacket::new_checked(&g).unwrap();
        assert_eq!(p.key(), Some(42));
        assert_eq!(p.protocol(), EtherType::IPV4);
        assert_eq!(p.payload(), &[0x45]);
        assert!(GrePacket::new_checked(&g[..10]).is_err());
    }
}
