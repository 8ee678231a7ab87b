//! Ethernet II header (IEEE 802.3 clause 3.1.1): destination, source, EtherType.

use super::{ErrorKind, EtherType, Layer, ParseError, be16, tail};

/// Length of the Ethernet II header without VLAN tags.
pub const HEADER_LEN: usize = 14;
/// Minimum Ethernet frame length without FCS; shorter payloads are padded to it on the wire.
pub const MIN_FRAME_LEN: usize = 60;

/// A view over an Ethernet II frame.
#[derive(Debug, Clone, Copy)]
pub struct EthernetFrame<'a> {
    buf: &'a [u8],
}

impl<'a> EthernetFrame<'a> {
    /// Checks that the header fits; after `Ok` no accessor panics.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, ParseError> {
        if buf.len() < HEADER_LEN {
            return Err(ParseError::new(Layer::Link, ErrorKind::Truncated));
        }
        Ok(EthernetFrame { buf })
    }
    /// Destination MAC address.
    pub fn dst(&self) -> [u8; 6] {
        let mut a = [0; 6];
        a.copy_from_slice(&self.buf[0..6]);
        a
    }
    /// Source MAC address.
    pub fn src(&self) -> [u8; 6] {
        let mut a = [0; 6];
        a.copy_from_slice(&self.buf[6..12]);
        a
    }
    /// EtherType (or 802.3 length when < 0x0600).
    pub fn ethertype(&self) -> EtherType {
        EtherType(be16(self.buf, 12))
    }
    /// Everything after the 14-byte header (may include padding; the IP layer trims it).
    pub fn payload(&self) -> &'a [u8] {
        tail(self.buf, HEADER_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn parses_and_rejects_short() {
        let mut f = [0u8; 20];
        f[12] = 0x08;
        let e = EthernetFrame::new_checked(&f).unwrap();
        assert_eq!(e.ethertype(), EtherType::IPV4);
        assert_eq!(e.payload().len(), 6);
        assert!(EthernetFrame::new_checked(&f[..13]).is_err());
    }
}
