//! VXLAN header (RFC 7348 §5), carried in UDP to port 4789; an Ethernet frame follows.

use super::{ErrorKind, Layer, ParseError, be32};

/// Header length.
pub const HEADER_LEN: usize = 8;
/// IANA UDP port.
pub const UDP_PORT: u16 = 4789;

/// A view over a VXLAN header.
#[derive(Debug, Clone, Copy)]
pub struct VxlanPacket<'a> {
    buf: &'a [u8],
}

impl<'a> VxlanPacket<'a> {
    /// Checks the length and the I flag (valid VNI).
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, ParseError> {
        if buf.len() < HEADER_LEN {
            return Err(ParseError::new(Layer::Vxlan, ErrorKind::Truncated));
        }
        if buf[0] & 0x08 == 0 {
            return Err(ParseError::new(Layer::Vxlan, ErrorKind::BadVersion));
        }
        Ok(VxlanPacket { buf })
    }
    /// VXLAN network identifier (24 bits).
    pub fn vni(&self) -> u32 {
        be32(self.buf, 4) >> 8
    }
    /// The inner Ethernet frame.
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[HEADER_LEN..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn vni() {
        let v = [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0];
        assert_eq!(VxlanPacket::new_checked(&v).unwrap().vni(), 0x123456);
        assert!(VxlanPacket::new_checked(&[0u8; 8]).is_err());
    }
}
