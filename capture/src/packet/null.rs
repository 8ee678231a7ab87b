//! BSD loopback headers: `DLT_NULL` (4-byte address family in the capturing host's byte order)
//! and `DLT_LOOP` (the same in network byte order).

use super::{ErrorKind, EtherType, Layer, ParseError, tail};

/// Loopback header length.
pub const HEADER_LEN: usize = 4;

/// A view over a BSD loopback header.
#[derive(Debug, Clone, Copy)]
pub struct LoopbackHeader<'a> {
    buf: &'a [u8],
    network_order: bool,
}

impl<'a> LoopbackHeader<'a> {
    /// Checks the length. `network_order` is `true` for `DLT_LOOP`.
    pub fn new_checked(buf: &'a [u8], network_order: bool) -> Result<Self, ParseError> {
        if buf.len() < HEADER_LEN {
            return Err(ParseError::new(Layer::Link, ErrorKind::Truncated));
        }
        Ok(LoopbackHeader { buf, network_order })
    }
    /// The address family. For `DLT_NULL` the byte order of the writer is unknown, so a value
    /// that only makes sense byte-swapped (families are small numbers) is swapped.
    pub fn family(&self) -> u32 {
        let b = [self.buf[0], self.buf[1], self.buf[2], self.buf[3]];
        if self.network_order {
            return u32::from_be_bytes(b);
        }
        let le = u32::from_le_bytes(b);
        if le > 0xffff {
            u32::from_be_bytes(b)
        } else {
            le
        }
    }
    /// The EtherType equivalent of the family: IPv4 for 2, IPv6 for the BSD/Linux values
    /// (10, 24, 28, 30); `None` otherwise.
    pub fn ethertype(&self) -> Option<EtherType> {
        match self.family() {
            2 => Some(EtherType::IPV4),
            10 | 24 | 28 | 30 => Some(EtherType::IPV6),
            _ => None,
        }
    }
    /// The bytes after the header.
    pub fn payload(&self) -> &'a [u8] {
        tail(self.buf, HEADER_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn both_orders() {
        let le = [2u8, 0, 0, 0, 0x45];
        let h = LoopbackHeader::new_checked(&le, false).unwrap();
        assert_eq!(h.ethertype(), Some(EtherType::IPV4));
        let be = [0u8, 0, 0, 30];
        assert_eq!(
            LoopbackHeader::new_checked(&be, false).unwrap().ethertype(),
            Some(EtherType::IPV6)
        );
        assert_eq!(
            LoopbackHeader::new_checked(&be, true).unwrap().ethertype(),
            Some(EtherType::IPV6)
        );
    }
}
