//! GTPv1-U header (3GPP TS 29.281 §5), carried in UDP port 2152: flags, message type, length,
//! TEID, optional sequence / N-PDU / extension header chain. G-PDUs (type 255) carry an IP packet.

use super::{ErrorKind, Layer, ParseError, be16, be32};

/// Mandatory header length.
pub const MIN_HEADER_LEN: usize = 8;
/// IANA UDP port for GTP-U.
pub const UDP_PORT: u16 = 2152;
/// Message type of a G-PDU (user data).
pub const G_PDU: u8 = 255;
/// Maximum extension headers walked.
const MAX_EXT: usize = 8;

/// A view over a GTP-U header.
#[derive(Debug, Clone, Copy)]
pub struct GtpPacket<'a> {
    buf: &'a [u8],
    header_len: usize,
}

const fn err(kind: ErrorKind) -> ParseError {
    ParseError::new(Layer::Gtp, kind)
}

impl<'a> GtpPacket<'a> {
    /// Checks version 1, PT = 1, and the optional fields and extension headers.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, ParseError> {
        if buf.len() < MIN_HEADER_LEN {
            return Err(err(ErrorKind::Truncated));
        }
        let flags = buf[0];
        if flags >> 5 != 1 || flags & 0x10 == 0 {
            return Err(err(ErrorKind::BadVersion));
        }
        let mut len = MIN_HEADER_LEN;
        if flags & 0x07 != 0 {
            // sequence (2), N-PDU (1), next extension type (1)
            len += 4;
            if len > buf.len() {
                return Err(err(ErrorKind::Truncated));
            }
            let mut next = buf[len - 1];
            let mut n = 0;
            if flags & 0x04 != 0 {
                while next != 0 {
                    n += 1;
                    if n > MAX_EXT {
                        return Err(err(ErrorKind::TooDeep));
                    }
                    let Some(&units) = buf.get(len) else {
                        return Err(err(ErrorKind::Truncated));
                    };
                    if units == 0 {
                        return Err(err(ErrorKind::BadOption));
                    }
                    len += usize::from(units) * 4;
                    if len > buf.len() {
                        return Err(err(ErrorKind::Truncated));
                    }
                    next = buf[len - 1];
                }
            }
        }
        Ok(GtpPacket {
            buf,
            header_len: len,
        })
    }
    /// Message type (255 = G-PDU).
    pub fn msg_type(&self) -> u8 {
        self.buf[1]
    }
    /// Length field (bytes after the mandatory 8-byte header).
    pub fn length(&self) -> u16 {
        be16(self.buf, 2)
    }
    /// Tunnel endpoint identifier.
    pub fn teid(&self) -> u32 {
        be32(self.buf, 4)
    }
    /// Header length including optional fields and extension headers.
    pub fn header_len(&self) -> usize {
        self.header_len
    }
    /// The payload (the user IP packet for a G-PDU).
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[self.header_len..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn with_extension_header() {
        // E flag, G-PDU, TEID 0x01020304, seq 0, npdu 0, next ext 0x85 (PDU session container)
        let g = [
            0x34, 0xff, 0, 12, 1, 2, 3, 4, 0, 0, 0, 0x85, 1, 0x10, 0x01, 0x00, 0x45,
        ];
        let p = GtpPacket::new_checked(&g).unwrap();
        assert_eq!(p.teid(), 0x01020304);
        assert_eq!(p.header_len(), 16);
        assert_eq!(p.payload(), &[0x45]);
        assert!(GtpPacket::new_checked(&g[..14]).is_err());
    }
}
