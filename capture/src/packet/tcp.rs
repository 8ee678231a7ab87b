//! TCP header (RFC 9293 §3.1) and options: MSS (kind 2), window scale (3, RFC 7323),
//! SACK-permitted (4, RFC 2018), SACK (5), timestamps (8, RFC 7323).

use super::{ErrorKind, Layer, ParseError, be16, be32};

/// Minimum header length.
pub const MIN_HEADER_LEN: usize = 20;

/// TCP flag bits as in the 13th/14th header bytes (NS is bit 8).
pub mod flags {
    /// FIN.
    pub const FIN: u16 = 0x001;
    /// SYN.
    pub const SYN: u16 = 0x002;
    /// RST.
    pub const RST: u16 = 0x004;
    /// PSH.
    pub const PSH: u16 = 0x008;
    /// ACK.
    pub const ACK: u16 = 0x010;
    /// URG.
    pub const URG: u16 = 0x020;
    /// ECE.
    pub const ECE: u16 = 0x040;
    /// CWR.
    pub const CWR: u16 = 0x080;
    /// NS (historic, RFC 3540).
    pub const NS: u16 = 0x100;
}

/// A view over a TCP segment.
#[derive(Debug, Clone, Copy)]
pub struct TcpPacket<'a> {
    buf: &'a [u8],
    header_len: usize,
}

const fn err(kind: ErrorKind) -> ParseError {
    ParseError::new(Layer::Tcp, kind)
}

impl<'a> TcpPacket<'a> {
    /// Checks the fixed header and the data offset (options included).
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, ParseError> {
        if buf.len() < MIN_HEADER_LEN {
            return Err(err(ErrorKind::Truncated));
        }
        let header_len = usize::from(buf[12] >> 4) * 4;
        if header_len < MIN_HEADER_LEN {
            return Err(err(ErrorKind::BadHeaderLen));
        }
        if header_len > buf.len() {
            return Err(err(ErrorKind::Truncated));
        }
        Ok(TcpPacket { buf, header_len })
    }
    /// Source port.
    pub fn src_port(&self) -> u16 {
        be16(self.buf, 0)
    }
    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        be16(self.buf, 2)
    }
    /// Sequence number.
    pub fn seq(&self) -> u32 {
        be32(self.buf, 4)
    }
    /// Acknowledgement number.
    pub fn ack(&self) -> u32 {
        be32(self.buf, 8)
    }
    /// Header length in bytes.
    pub fn header_len(&self) -> usize {
        self.header_len
    }
    /// Flags (9 bits, see [`flags`]).
    pub fn flags(&self) -> u16 {
        be16(self.buf, 12) & 0x01ff
    }
    /// Window (unscaled).
    pub fn window(&self) -> u16 {
        be16(self.buf, 14)
    }
    /// Checksum.
    pub fn checksum(&self) -> u16 {
        be16(self.buf, 16)
    }
    /// Urgent pointer.
    pub fn urgent(&self) -> u16 {
        be16(self.buf, 18)
    }
    /// Raw options bytes.
    pub fn options(&self) -> &'a [u8] {
        &self.buf[MIN_HEADER_LEN..self.header_len]
    }
    /// Iterator over options.
    pub fn option_iter(&self) -> TcpOptionIter<'a> {
        TcpOptionIter {
            rest: self.options(),
        }
    }
    /// Payload after the header (the caller trims it to the IP length).
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[self.header_len..]
    }
}

/// One TCP option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpOption<'a> {
    /// Maximum segment size.
    Mss(u16),
    /// Window scale shift.
    WindowScale(u8),
    /// SACK permitted.
    SackPermitted,
    /// SACK blocks (raw, 8 bytes per block).
    Sack(&'a [u8]),
    /// Timestamps: value, echo reply.
    Timestamps(u32, u32),
    /// No-operation (padding).
    Nop,
    /// Any other option: kind and data.
    Unknown(u8, &'a [u8]),
}

/// Iterates options; yields `Err(BadOption)` once (then stops) on a malformed length.
#[derive(Debug, Clone)]
pub struct TcpOptionIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for TcpOptionIter<'a> {
    type Item = Result<TcpOption<'a>, ParseError>;
    fn next(&mut self) -> Option<Self::Item> {
        let kind = *self.rest.first()?;
        match kind {
            0 => {
                self.rest = &[];
                None
            }
            1 => {
                self.rest = &self.rest[1..];
                Some(Ok(TcpOption::Nop))
            }
            _ => {
                let len = match self.rest.get(1) {
                    Some(&l) if l >= 2 && usize::from(l) <= self.rest.len() => usize::from(l),
                    _ => {
                        self.rest = &[];
                        return Some(Err(err(ErrorKind::BadOption)));
                    }
                };
                let data = &self.rest[2..len];
                self.rest = &self.rest[len..];
                let opt = match (kind, data.len()) {
                    (2, 2) => TcpOption::Mss(be16(data, 0)),
                    (3, 1) => TcpOption::WindowScale(data[0]),
                    (4, 0) => TcpOption::SackPermitted,
                    (5, _) => TcpOption::Sack(data),
                    (8, 8) => TcpOption::Timestamps(be32(data, 0), be32(data, 4)),
                    _ => TcpOption::Unknown(kind, data),
                };
                Some(Ok(opt))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn header_and_options() {
        let mut s = vec![
            0x04, 0xd2, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0xa0, 0x02, 0xff, 0xff,
        ];
        s.extend_from_slice(&[0, 0, 0, 0]);
        s.extend_from_slice(&[
            2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 7, 0, 0, 0, 0, 1, 3, 3, 7,
        ]);
        let t = TcpPacket::new_checked(&s).unwrap();
        assert_eq!(t.src_port(), 1234);
        assert_eq!(t.flags(), flags::SYN);
        let opts: Vec<_> = t.option_iter().map(|o| o.unwrap()).collect();
        assert_eq!(
            opts,
            vec![
                TcpOption::Mss(1460),
                TcpOption::SackPermitted,
                TcpOption::Timestamps(7, 0),
                TcpOption::Nop,
                TcpOption::WindowScale(7)
            ]
        );
        let mut bad = s.clone();
        bad[21] = 40;
        let t = TcpPacket::new_checked(&bad).unwrap();
        assert!(t.option_iter().any(|o| o.is_err()));
        assert!(TcpPacket::new_checked(&s[..30]).is_err());
    }
}
