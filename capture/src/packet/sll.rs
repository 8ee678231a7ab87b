//! Linux "cooked" capture headers: SLL (v1, 16 bytes) and SLL2 (v2, 20 bytes).
//! See <https://www.tcpdump.org/linktypes/LINKTYPE_LINUX_SLL.html> and `..._SLL2.html`.

use super::{ErrorKind, EtherType, Layer, ParseError, be16, be32, byte, tail};

/// SLL v1 header length.
pub const SLL_LEN: usize = 16;
/// SLL v2 header length.
pub const SLL2_LEN: usize = 20;

/// A view over a Linux SLL (v1) header.
#[derive(Debug, Clone, Copy)]
pub struct SllHeader<'a> {
    buf: &'a [u8],
}

impl<'a> SllHeader<'a> {
    /// Checks the header length.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, ParseError> {
        if buf.len() < SLL_LEN {
            return Err(ParseError::new(Layer::Link, ErrorKind::Truncated));
        }
        Ok(SllHeader { buf })
    }
    /// Packet type (0 = to us, 4 = outgoing, ...).
    pub fn packet_type(&self) -> u16 {
        be16(self.buf, 0)
    }
    /// ARPHRD_ type of the device.
    pub fn arphrd(&self) -> u16 {
        be16(self.buf, 2)
    }
    /// Protocol (an EtherType for Ethernet-like devices).
    pub fn protocol(&self) -> EtherType {
        EtherType(be16(self.buf, 14))
    }
    /// The bytes after the header.
    pub fn payload(&self) -> &'a [u8] {
        tail(self.buf, SLL_LEN)
    }
}

/// A view over a Linux SLL2 header.
#[derive(Debug, Clone, Copy)]
pub struct Sll2Header<'a> {
    buf: &'a [u8],
}

impl<'a> Sll2Header<'a> {
    /// Checks the header length.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, ParseError> {
        if buf.len() < SLL2_LEN {
            return Err(ParseError::new(Layer::Link, ErrorKind::Truncated));
        }
        Ok(Sll2Header { buf })
    }
    /// Protocol (EtherType).
    pub fn protocol(&self) -> EtherType {
        EtherType(be16(self.buf, 0))
    }
    /// Interface index.
    pub fn ifindex(&self) -> u32 {
        be32(self.buf, 4)
    }
    /// ARPHRD_ type.
    pub fn arphrd(&self) -> u16 {
        be16(self.buf, 8)
    }
    /// Packet type.
    pub fn packet_type(&self) -> u8 {
        byte(self.buf, 10)
    }
    /// The bytes after the header.
    pub fn payload(&self) -> &'a [u8] {
        tail(self.buf, SLL2_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn sll_and_sll2() {
        let mut v1 = [0u8; 16];
        v1[14] = 0x86;
        v1[15] = 0xdd;
        assert_eq!(
            SllHeader::new_checked(&v1).unwrap().protocol(),
            EtherType::IPV6
        );
        let mut v2 = [0u8; 20];
        v2[0] = 0x08;
        v2[7] = 3;
        let h = Sll2Header::new_checked(&v2).unwrap();
        assert_eq!(h.protocol(), EtherType::IPV4);
        assert_eq!(h.ifindex(), 3);
        assert!(Sll2Header::new_checked(&v2[..19]).is_err());
    }
}
