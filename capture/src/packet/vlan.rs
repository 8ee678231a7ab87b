//! IEEE 802.1Q / 802.1ad VLAN tag (the 4 bytes after the tag's TPID): TCI and inner EtherType.

use super::{ErrorKind, EtherType, Layer, ParseError, be16, tail};

/// Tag length after the TPID (TCI + EtherType).
pub const TAG_LEN: usize = 4;

/// A view over one VLAN tag.
#[derive(Debug, Clone, Copy)]
pub struct VlanTag<'a> {
    buf: &'a [u8],
}

impl<'a> VlanTag<'a> {
    /// Checks the length.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, ParseError> {
        if buf.len() < TAG_LEN {
            return Err(ParseError::new(Layer::Vlan, ErrorKind::Truncated));
        }
        Ok(VlanTag { buf })
    }
    /// VLAN identifier (12 bits).
    pub fn vid(&self) -> u16 {
        be16(self.buf, 0) & 0x0fff
    }
    /// Priority code point (3 bits).
    pub fn pcp(&self) -> u8 {
        (be16(self.buf, 0) >> 13) as u8
    }
    /// Drop eligible indicator.
    pub fn dei(&self) -> bool {
        be16(self.buf, 0) & 0x1000 != 0
    }
    /// The EtherType that follows the tag.
    pub fn ethertype(&self) -> EtherType {
        EtherType(be16(self.buf, 2))
    }
    /// The bytes after the tag.
    pub fn payload(&self) -> &'a [u8] {
        tail(self.buf, TAG_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn fields() {
        let t = [0xb0, 0x64, 0x08, 0x00];
        let v = VlanTag::new_checked(&t).unwrap();
        assert_eq!(v.vid(), 100);
        assert_eq!(v.pcp(), 5);
        assert!(v.dei());
        assert_eq!(v.ethertype(), EtherType::IPV4);
    }
}
