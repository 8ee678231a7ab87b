//! ICMPv6 (RFC 4443): errors 1–4 quote the offending packet (as much as fits in the minimum
//! MTU), echo request/reply (128/129) carry an identifier.

use super::{ErrorKind, Layer, ParseError, be16, tail};

/// Header length.
pub const HEADER_LEN: usize = 8;
/// Destination unreachable.
pub const DEST_UNREACHABLE: u8 = 1;
/// Packet too big.
pub const PACKET_TOO_BIG: u8 = 2;
/// Time exceeded.
pub const TIME_EXCEEDED: u8 = 3;
/// Echo request.
pub const ECHO_REQUEST: u8 = 128;
/// Echo reply.
pub const ECHO_REPLY: u8 = 129;

/// A view over an ICMPv6 message.
#[derive(Debug, Clone, Copy)]
pub struct Icmpv6Packet<'a> {
    buf: &'a [u8],
}

impl<'a> Icmpv6Packet<'a> {
    /// Checks the 8-byte header.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, ParseError> {
        if buf.len() < HEADER_LEN {
            return Err(ParseError::new(Layer::Icmpv6, ErrorKind::Truncated));
        }
        Ok(Icmpv6Packet { buf })
    }
    /// Message type.
    pub fn msg_type(&self) -> u8 {
        self.buf[0]
    }
    /// Code.
    pub fn code(&self) -> u8 {
        self.buf[1]
    }
    /// Checksum.
    pub fn checksum(&self) -> u16 {
        be16(self.buf, 2)
    }
    /// `true` for echo request / reply.
    pub fn is_echo(&self) -> bool {
        matches!(self.msg_type(), ECHO_REQUEST | ECHO_REPLY)
    }
    /// `true` for error messages 1–4 (they quote the offending packet).
    pub fn is_error(&self) -> bool {
        matches!(self.msg_type(), 1..=4)
    }
    /// Echo identifier.
    pub fn echo_ident(&self) -> u16 {
        be16(self.buf, 4)
    }
    /// Echo sequence.
    pub fn echo_seq(&self) -> u16 {
        be16(self.buf, 6)
    }
    /// Data after the 8-byte header.
    pub fn payload(&self) -> &'a [u8] {
        tail(self.buf, HEADER_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn echo() {
        let e = [128, 0, 0, 0, 0, 7, 0, 2];
        let p = Icmpv6Packet::new_checked(&e).unwrap();
        assert!(p.is_echo() && !p.is_error());
        assert_eq!(p.echo_ident(), 7);
        assert_eq!(p.echo_seq(), 2);
    }
}
