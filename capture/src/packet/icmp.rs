//! ICMP for IPv4 (RFC 792): type, code, echo identifier/sequence, and the quoted datagram of
//! error messages (destination unreachable, source quench, redirect, time exceeded, parameter
//! problem), which is parsed with the lax rules since it is cut after 8 bytes of payload.

use super::{ErrorKind, Layer, ParseError, be16, tail};

/// Header length (type, code, checksum, rest-of-header).
pub const HEADER_LEN: usize = 8;

/// Echo reply.
pub const ECHO_REPLY: u8 = 0;
/// Destination unreachable.
pub const DEST_UNREACHABLE: u8 = 3;
/// Echo request.
pub const ECHO_REQUEST: u8 = 8;
/// Time exceeded.
pub const TIME_EXCEEDED: u8 = 11;

/// A view over an ICMP message.
#[derive(Debug, Clone, Copy)]
pub struct IcmpPacket<'a> {
    buf: &'a [u8],
}

impl<'a> IcmpPacket<'a> {
    /// Checks the 8-byte header.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, ParseError> {
        if buf.len() < HEADER_LEN {
            return Err(ParseError::new(Layer::Icmp, ErrorKind::Truncated));
        }
        Ok(IcmpPacket { buf })
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
    /// `true` for echo request / reply (and timestamp / info / address mask pairs, which share
    /// the identifier layout).
    pub fn is_echo(&self) -> bool {
        matches!(self.msg_type(), 0 | 8 | 13 | 14 | 15 | 16 | 17 | 18)
    }
    /// `true` for error messages that quote the offending datagram.
    pub fn is_error(&self) -> bool {
        matches!(self.msg_type(), 3 | 4 | 5 | 11 | 12)
    }
    /// Echo identifier (meaningful when [`Self::is_echo`]).
    pub fn echo_ident(&self) -> u16 {
        be16(self.buf, 4)
    }
    /// Echo sequence number.
    pub fn echo_seq(&self) -> u16 {
        be16(self.buf, 6)
    }
    /// Data after the 8-byte header: the echo payload, or the quoted IP header + 8 bytes.
    pub fn payload(&self) -> &'a [u8] {
        tail(self.buf, HEADER_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn echo_and_error() {
        let e = [8, 0, 0, 0, 0x12, 0x34, 0, 1, 0xaa];
        let p = IcmpPacket::new_checked(&e).unwrap();
        assert!(p.is_echo());
        assert_eq!(p.echo_ident(), 0x1234);
        assert_eq!(p.payload(), &[0xaa]);
        let u = [3, 3, 0, 0, 0, 0, 0, 0];
        assert!(IcmpPacket::new_checked(&u).unwrap().is_error());
        assert!(IcmpPacket::new_checked(&u[..7]).is_err());
    }
}
