//! DNS messages (RFC 1035 §4.1): the header and the first question.
//!
//! Only what a flow record keeps: query or response, response code, the first question's name
//! and type. The name is written in presentation form, lowercased (DNS names compare
//! case-insensitively; resolvers randomise case, RFC 5452 / "0x20"), with `\.`, `\\` and
//! `\DDD` escapes for dots inside labels, backslashes and bytes outside printable ASCII. The
//! root is `.`. Compression pointers are followed (at most 16, never forward into the same
//! place twice). Never panics, never allocates.

use super::super::arena::MAX_STR;

/// Header and first question of a DNS message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsInfo {
    /// QR bit: a response.
    pub response: bool,
    /// RCODE (low 4 bits of the header flags).
    pub rcode: u8,
    /// QTYPE of the first question.
    pub qtype: u16,
    /// Length of the name written to the output buffer.
    pub name_len: usize,
}

/// Parses a DNS message (UDP payload, or a TCP message after its 2-byte length), writing the
/// first question's name into `name`. `None` when it is not a plausible DNS message with at
/// least one question.
pub fn parse(msg: &[u8], name: &mut [u8; MAX_STR]) -> Option<DnsInfo> {
    if msg.len() < 12 {
        return None;
    }
    let flags = u16::from_be_bytes([msg[2], msg[3]]);
    let qdcount = u16::from_be_bytes([msg[4], msg[5]]);
    let opcode = (flags >> 11) & 0xf;
    if qdcount == 0 || opcode > 6 {
        return None;
    }
    let (name_len, after) = read_name(msg, 12, name)?;
    let q = msg.get(after..after + 4)?;
    Some(DnsInfo {
        response: flags & 0x8000 != 0,
        rcode: (flags & 0xf) as u8,
        qtype: u16::from_be_bytes([q[0], q[1]]),
        name_len,
    })
}

/// Reads the name at `start`; returns its presentation length and the offset after the name
/// in the original position.
fn read_name(msg: &[u8], start: usize, buf: &mut [u8; MAX_STR]) -> Option<(usize, usize)> {
    let mut out = Writer {
        buf,
        len: 0,
        dot: false,
        full: false,
    };
    let mut pos = start;
    let mut after = None;
    let mut jumps = 0;
    let mut wire_len = 0usize;
    loop {
        let len = *msg.get(pos)? as usize;
        match len & 0xc0 {
            0x00 => {
                if len == 0 {
                    let end = after.unwrap_or(pos + 1);
                    if out.len == 0 {
                        out.put(b".");
                    }
                    return Some((out.len, end));
                }
                wire_len += len + 1;
                if wire_len > 255 {
                    return None;
                }
                let label = msg.get(pos + 1..pos + 1 + len)?;
                // the dot between labels goes out with the label's first piece
                out.dot = out.len > 0;
                for &c in label {
                    match c {
                        b'.' | b'\\' => out.put(&[b'\\', c]),
                        0x21..=0x7e => out.put(&[c.to_ascii_lowercase()]),
                        _ => out.put(&[b'\\', b'0' + c / 100, b'0' + (c / 10) % 10, b'0' + c % 10]),
                    }
                }
                pos += 1 + len;
            }
            0xc0 => {
                let lo = *msg.get(pos + 1)? as usize;
                let target = ((len & 0x3f) << 8) | lo;
                if after.is_none() {
                    after = Some(pos + 2);
                }
                jumps += 1;
                // pointers must go backwards (RFC 1035 §4.1.4: to a prior occurrence)
                if jumps > 16 || target >= pos {
                    return None;
                }
                pos = target;
            }
            _ => return None, // 0x40/0x80: extended label types, obsolete
        }
    }
}

/// The presentation form being written: whole pieces (a character or a whole escape, with
/// the dot before a label's first one) or nothing, and nothing more once a piece did not
/// fit, so a name too long for the buffer ends cleanly before the first piece left out:
/// never inside a `\DDD` escape, never on a dot.
struct Writer<'a> {
    buf: &'a mut [u8; MAX_STR],
    len: usize,
    /// A dot is due before the next piece.
    dot: bool,
    full: bool,
}

impl Writer<'_> {
    #[inline]
    fn put(&mut self, piece: &[u8]) {
        let dot = usize::from(self.dot);
        match self.buf.get_mut(self.len..self.len + dot + piece.len()) {
            Some(dst) if !self.full => {
                dst[..dot].fill(b'.');
                dst[dot..].copy_from_slice(piece);
                self.len += dot + piece.len();
                self.dot = false;
            }
            _ => self.full = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(id: u16, flags: u16, name: &[&[u8]], qtype: u16) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&id.to_be_bytes());
        m.extend_from_slice(&flags.to_be_bytes());
        m.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        for l in name {
            m.push(l.len() as u8);
            m.extend_from_slice(l);
        }
        m.push(0);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        m
    }

    fn name_of(m: &[u8]) -> (DnsInfo, String) {
        let mut buf = [0u8; MAX_STR];
        let i = parse(m, &mut buf).unwrap();
        (i, String::from_utf8(buf[..i.name_len].to_vec()).unwrap())
    }

    #[test]
    fn query_and_response() {
        let q = query(0x1234, 0x0100, &[b"WWW", b"Example", b"com"], 28);
        let (i, n) = name_of(&q);
        assert_eq!(n, "www.example.com");
        assert!(!i.response);
        assert_eq!(i.qtype, 28);
        let r = query(0x1234, 0x8183, &[b"nx", b"example", b"com"], 1);
        let (i, _) = name_of(&r);
        assert!(i.response);
        assert_eq!(i.rcode, 3);
    }

    #[test]
    fn escapes_and_root() {
        let q = query(1, 0, &[b"a.b", b"c\\d", &[0x07, b'x']], 16);
        assert_eq!(name_of(&q).1, "a\\.b.c\\\\d.\\007x");
        let root = query(1, 0, &[], 2);
        assert_eq!(name_of(&root).1, ".");
    }

    #[test]
    fn compression_pointer() {
        // question name is a pointer back to a name stored... before the question is not
        // possible in a real message, so point into the header region built by hand
        let mut m = vec![0u8, 1, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&[3, b'f', b'o', b'o', 0]); // offset 12: foo.
        m.extend_from_slice(&[3, b'b', b'a', b'r', 0xc0, 12]); // offset 17: bar.<ptr 12>
        m.extend_from_slice(&[0, 1, 0, 1]);
        let mut buf = [0u8; MAX_STR];
        let (len, after) = read_name(&m, 17, &mut buf).unwrap();
        assert_eq!(&buf[..len], b"bar.foo");
        assert_eq!(after, 23);
        // a pointer loop is refused
        let lp = [0u8, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1];
        assert!(parse(&lp, &mut buf).is_none());
    }

    #[test]
    fn a_name_too_long_for_the_buffer_never_ends_inside_an_escape() {
        // three labels of 63 bytes and one of 61, each byte outside printable ASCII: 255
        // wire bytes with the root (the most a name may have), 994 in presentation form
        let label = [0xffu8; 63];
        let q = query(1, 0, &[&label, &label, &label, &label[..61]], 1);
        let (i, n) = name_of(&q);
        assert_eq!(i.qtype, 1, "the question after the name is still read");
        // the first label's 63 escapes; the dot and the second label's first escape do not fit
        assert_eq!(n, "\\255".repeat(63));
        // a cut in the middle of a label: 251 printable bytes then escapes
        let mut mixed = vec![b'a'; 60];
        mixed.push(0x01);
        let q = query(1, 0, &[&[b'b'; 63], &[b'c'; 63], &[b'd'; 63], &mixed], 1);
        let (_, n) = name_of(&q);
        // 3 × 63 + 3 dots + 60 = 252 bytes, then "\001" does not fit in the 3 left
        assert_eq!(n.len(), 252);
        assert!(n.ends_with(&"a".repeat(60)), "{n}");
        assert!(n.bytes().all(|c| (0x21..=0x7e).contains(&c)));
    }

    #[test]
    fn garbage_is_refused() {
        let mut buf = [0u8; MAX_STR];
        assert!(parse(&[0; 5], &mut buf).is_none());
        assert!(parse(&[0; 12], &mut buf).is_none()); // no question
        let mut q = query(1, 0, &[b"abc"], 1);
        q.truncate(q.len() - 2);
        assert!(parse(&q, &mut buf).is_none());
        // names longer than 255 wire bytes
        let long: Vec<&[u8]> =
            std::iter::repeat_n(&b"abcdefghijklmnopqrstuvwxyz0123456789"[..], 8).collect();
        assert!(parse(&query(1, 0, &long, 1), &mut buf).is_none());
    }
}
