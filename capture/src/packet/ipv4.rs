//! IPv4 header (RFC 791 §3.1), with options and fragmentation fields.
//!
//! The total length field is the truth: the payload ends there, so Ethernet padding of short
//! frames is trimmed. [`Ipv4Packet::new_lax`] accepts a packet whose total length runs past the
//! captured bytes (snaplen cut, or a header quoted in an ICMP error).

use super::{ErrorKind, IpProtocol, Layer, ParseError, be16, byte};

/// Minimum header length.
pub const MIN_HEADER_LEN: usize = 20;

/// A view over an IPv4 packet.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Packet<'a> {
    buf: &'a [u8],
    header_len: usize,
    /// End of the payload within `buf` (total length, or less when truncated).
    end: usize,
}

const fn err(kind: ErrorKind) -> ParseError {
    ParseError::new(Layer::Ipv4, kind)
}

impl<'a> Ipv4Packet<'a> {
    /// Strict: header and the whole total length must be present.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, ParseError> {
        let p = Self::new_lax(buf)?;
        if p.is_truncated() {
            return Err(err(ErrorKind::Truncated));
        }
        Ok(p)
    }

    /// Lax: the header (with options) must be present and consistent, but the payload may be
    /// cut short of the total length; [`Self::is_truncated`] tells.
    pub fn new_lax(buf: &'a [u8]) -> Result<Self, ParseError> {
        if buf.len() < MIN_HEADER_LEN {
            return Err(err(ErrorKind::Truncated));
        }
        if buf[0] >> 4 != 4 {
            return Err(err(ErrorKind::BadVersion));
        }
        let header_len = usize::from(buf[0] & 0x0f) * 4;
        if header_len < MIN_HEADER_LEN {
            return Err(err(ErrorKind::BadHeaderLen));
        }
        if header_len > buf.len() {
            return Err(err(ErrorKind::Truncated));
        }
        let total = usize::from(be16(buf, 2));
        // total == 0 happens with TCP segmentation offload captured on the host: trust the frame.
        let end = if total == 0 {
            buf.len()
        } else if total < header_len {
            return Err(err(ErrorKind::BadLength));
        } else {
            total
        };
        Ok(Ipv4Packet {
            buf,
            header_len,
            end,
        })
    }

    /// `true` when the captured bytes end before the total length.
    pub fn is_truncated(&self) -> bool {
        self.end > self.buf.len()
    }
    /// Header length in bytes (20..=60).
    pub fn header_len(&self) -> usize {
        self.header_len
    }
    /// Type of service / DSCP+ECN byte.
    pub fn tos(&self) -> u8 {
        self.buf[1]
    }
    /// Total length field (0 means "unknown, TSO").
    pub fn total_len(&self) -> u16 {
        be16(self.buf, 2)
    }
    /// Identification.
    pub fn ident(&self) -> u16 {
        be16(self.buf, 4)
    }
    /// Don't-fragment flag.
    pub fn dont_frag(&self) -> bool {
        self.buf[6] & 0x40 != 0
    }
    /// More-fragments flag.
    pub fn more_frags(&self) -> bool {
        self.buf[6] & 0x20 != 0
    }
    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        (be16(self.buf, 6) & 0x1fff) << 3
    }
    /// `true` for any fragment (offset ≠ 0 or MF set).
    pub fn is_fragment(&self) -> bool {
        be16(self.buf, 6) & 0x3fff != 0
    }
    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.buf[8]
    }
    /// Protocol of the payload.
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol(self.buf[9])
    }
    /// Header checksum.
    pub fn checksum(&self) -> u16 {
        be16(self.buf, 10)
    }
    /// Source address.
    pub fn src(&self) -> [u8; 4] {
        [self.buf[12], self.buf[13], self.buf[14], self.buf[15]]
    }
    /// Destination address.
    pub fn dst(&self) -> [u8; 4] {
        [self.buf[16], self.buf[17], self.buf[18], self.buf[19]]
    }
    /// Options bytes (between the fixed header and the payload).
    pub fn options(&self) -> &'a [u8] {
        &self.buf[MIN_HEADER_LEN..self.header_len]
    }
    /// The payload, ending at the total length (padding trimmed) or at the captured end.
    pub fn payload(&self) -> &'a [u8] {
        let end = self.end.min(self.buf.len());
        &self.buf[self.header_len..end]
    }
    /// The full payload length claimed by the header.
    pub fn payload_len(&self) -> usize {
        self.end - self.header_len
    }
    /// Verifies the header checksum (RFC 1071).
    pub fn verify_checksum(&self) -> bool {
        checksum(&self.buf[..self.header_len]) == 0
    }
    /// First byte of the view (for diagnostics).
    pub fn first_byte(&self) -> u8 {
        byte(self.buf, 0)
    }
}

/// RFC 1071 one's-complement sum, folded and inverted.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    fn hdr() -> Vec<u8> {
        let mut h = vec![
            0x46, 0, 0, 28, 0x12, 0x34, 0x20, 0x01, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, 1, 1,
            1, 0,
        ];
        h[3] = 24 + 4;
        h.extend_from_slice(&[9, 9, 9, 9]);
        let c = checksum(&h[..24]);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h
    }
    #[test]
    fn fields_options_fragments_padding() {
        let mut h = hdr();
        h.extend_from_slice(&[0; 10]); // padding
        let p = Ipv4Packet::new_checked(&h).unwrap();
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.options(), &[1, 1, 1, 0]);
        assert_eq!(p.payload(), &[9, 9, 9, 9]);
        assert!(p.more_frags());
        assert_eq!(p.frag_offset(), 8);
        assert!(p.is_fragment());
        assert!(p.verify_checksum());
        assert_eq!(p.src(), [10, 0, 0, 1]);
    }
    #[test]
    fn truncated_lax_vs_strict() {
        let h = hdr();
        assert!(Ipv4Packet::new_checked(&h[..26]).is_err());
        let p = Ipv4Packet::new_lax(&h[..26]).unwrap();
        assert!(p.is_truncated());
        assert_eq!(p.payload().len(), 2);
        assert_eq!(
            Ipv4Packet::new_lax(&h[..22]).unwrap_err().kind,
            ErrorKind::Truncated
        );
        let mut bad = h.clone();
        bad[0] = 0x44;
        assert_eq!(
            Ipv4Packet::new_lax(&bad).unwrap_err().kind,
            ErrorKind::BadHeaderLen
        );
    }
}
