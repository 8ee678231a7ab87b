//! UDP header (RFC 768). The length field bounds the payload.

use super::{ErrorKind, Layer, ParseError, be16};

/// Header length.
pub const HEADER_LEN: usize = 8;

/// A view over a UDP datagram.
#[derive(Debug, Clone, Copy)]
pub struct UdpPacket<'a> {
    buf: &'a [u8],
}

impl<'a> UdpPacket<'a> {
    /// Checks the 8-byte header and that the length field is at least 8. The payload may be cut
    /// short of the length field (lax); [`Self::is_truncated`] tells.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, ParseError> {
        if buf.len() < HEADER_LEN {
            return Err(ParseError::new(Layer::Udp, ErrorKind::Truncated));
        }
        let len = be16(buf, 4);
        // 0 is legal for IPv6 jumbograms; otherwise the length must cover the header.
        if len != 0 && usize::from(len) < HEADER_LEN {
            return Err(ParseError::new(Layer::Udp, ErrorKind::BadLength));
        }
        Ok(UdpPacket { buf })
    }
    /// Source port.
    pub fn src_port(&self) -> u16 {
        be16(self.buf, 0)
    }
    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        be16(self.buf, 2)
    }
    /// Length field (header + payload; 0 for IPv6 jumbograms).
    pub fn length(&self) -> u16 {
        be16(self.buf, 4)
    }
    /// Checksum.
    pub fn checksum(&self) -> u16 {
        be16(self.buf, 6)
    }
    /// `true` when the captured bytes end before the length field says.
    pub fn is_truncated(&self) -> bool {
        usize::from(self.length()) > self.buf.len()
    }
    /// Payload, bounded by the length field and by the captured bytes.
    pub fn payload(&self) -> &'a [u8] {
        let len = usize::from(self.length());
        let end = if len == 0 {
            self.buf.len()
        } else {
            len.min(self.buf.len())
        };
        &self.buf[HEADER_LEN..end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn length_bounds_payload() {
        let d = [0, 53, 0x30, 0x39, 0, 10, 0, 0, 1, 2, 3, 4];
        let u = UdpPacket::new_checked(&d).unwrap();
        assert_eq!(u.src_port(), 53);
        assert_eq!(u.payload(), &[1, 2]);
        let bad = [0, 53, 0x30, 0x39, 0, 4, 0, 0];
        assert_eq!(
            UdpPacket::new_checked(&bad).unwrap_err().kind,
            ErrorKind::BadLength
        );
    }
}
