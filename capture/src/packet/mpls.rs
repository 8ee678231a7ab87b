//! MPLS label stack entry (RFC 3032 §2.1): label (20 bits), traffic class, bottom-of-stack, TTL.

use super::{ErrorKind, Layer, ParseError, be32, tail};

/// Length of one label stack entry.
pub const ENTRY_LEN: usize = 4;

/// A view over one MPLS label stack entry.
#[derive(Debug, Clone, Copy)]
pub struct MplsEntry<'a> {
    buf: &'a [u8],
}

impl<'a> MplsEntry<'a> {
    /// Checks the length.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, ParseError> {
        if buf.len() < ENTRY_LEN {
            return Err(ParseError::new(Layer::Mpls, ErrorKind::Truncated));
        }
        Ok(MplsEntry { buf })
    }
    /// The 20-bit label.
    pub fn label(&self) -> u32 {
        be32(self.buf, 0) >> 12
    }
    /// Traffic class (3 bits).
    pub fn tc(&self) -> u8 {
        ((be32(self.buf, 0) >> 9) & 7) as u8
    }
    /// Bottom-of-stack flag.
    pub fn bottom(&self) -> bool {
        be32(self.buf, 0) & 0x100 != 0
    }
    /// TTL.
    pub fn ttl(&self) -> u8 {
        be32(self.buf, 0) as u8
    }
    /// The bytes after this entry.
    pub fn payload(&self) -> &'a [u8] {
        tail(self.buf, ENTRY_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn fields() {
        // label 16, tc 0, bottom, ttl 64
        let e = [0x00, 0x01, 0x01, 0x40];
        let m = MplsEntry::new_checked(&e).unwrap();
        assert_eq!(m.label(), 16);
        assert!(m.bottom());
        assert_eq!(m.ttl(), 64);
    }
}
