//! TLS ClientHello (RFC 8446 §4.1.2) server name (RFC 6066 §3), over TCP records or as the
//! bare handshake message QUIC carries in its CRYPTO frames (RFC 9001 §4).
//!
//! [`client_hello_sni`] reads one handshake message; [`records_sni`] first walks TLS records
//! (type 22, handshake) of a TCP stream prefix, joining a ClientHello fragmented over several
//! records into a caller buffer. Both say when more bytes are needed, so the caller can wait
//! for the next segment. Never panics, never allocates.

/// Outcome of looking for the server name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hello<'a> {
    /// A complete ClientHello with this server name (`host_name` entry).
    Sni(&'a [u8]),
    /// A complete ClientHello without a server name.
    NoSni,
    /// The message is not complete yet: this many bytes of it are needed.
    Incomplete(usize),
    /// Not a ClientHello (or malformed).
    NotHello,
}

struct R<'a> {
    b: &'a [u8],
    p: usize,
}

impl<'a> R<'a> {
    fn u8(&mut self) -> Option<usize> {
        let v = *self.b.get(self.p)?;
        self.p += 1;
        Some(usize::from(v))
    }
    fn u16(&mut self) -> Option<usize> {
        let s = self.b.get(self.p..self.p + 2)?;
        self.p += 2;
        Some(usize::from(u16::from_be_bytes([s[0], s[1]])))
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.p..self.p.checked_add(n)?)?;
        self.p += n;
        Some(s)
    }
}

/// The server name of the ClientHello handshake message at the start of `hs` (handshake
/// header: type 1, 24-bit length).
pub fn client_hello_sni(hs: &[u8]) -> Hello<'_> {
    if hs.is_empty() {
        return Hello::Incomplete(4);
    }
    if hs[0] != 1 {
        return Hello::NotHello;
    }
    if hs.len() < 4 {
        return Hello::Incomplete(4);
    }
    let len = (usize::from(hs[1]) << 16) | (usize::from(hs[2]) << 8) | usize::from(hs[3]);
    if len < 38 {
        return Hello::NotHello;
    }
    if hs.len() < 4 + len {
        return Hello::Incomplete(4 + len);
    }
    match parse_body(&hs[4..4 + len]) {
        Some(Some(name)) => Hello::Sni(name),
        Some(None) => Hello::NoSni,
        None => Hello::NotHello,
    }
}

fn parse_body(b: &[u8]) -> Option<Option<&[u8]>> {
    let mut r = R { b, p: 0 };
    let version = r.u16()?;
    if version >> 8 != 3 {
        return None;
    }
    r.take(32)?; // random
    let sid = r.u8()?;
    if sid > 32 {
        return None;
    }
    r.take(sid)?;
    let cs = r.u16()?;
    if cs < 2 || cs % 2 != 0 {
        return None;
    }
    r.take(cs)?;
    let comp = r.u8()?;
    r.take(comp)?;
    if r.p == b.len() {
        return Some(None); // no extensions
    }
    let ext_len = r.u16()?;
    let exts = r.take(ext_len)?;
    let mut e = R { b: exts, p: 0 };
    while e.p < exts.len() {
        let ty = e.u16()?;
        let len = e.u16()?;
        let body = e.take(len)?;
        if ty == 0 {
            let mut s = R { b: body, p: 0 };
            let list = s.u16()?;
            let list = s.take(list)?;
            let mut l = R { b: list, p: 0 };
            while l.p < list.len() {
                let name_type = l.u8()?;
                let n = l.u16()?;
                let name = l.take(n)?;
                if name_type == 0 {
                    return Some((!name.is_empty()).then_some(name));
                }
            }
            return Some(None);
        }
    }
    Some(None)
}

/// `true` when `stream` may start with a TLS handshake record (type 22, version 3.x).
pub fn looks_like_tls(stream: &[u8]) -> bool {
    stream.len() >= 3 && stream[0] == 22 && stream[1] == 3 && stream[2] <= 4
}

/// The server name of a ClientHello carried in the TLS records at the start of a TCP
/// stream. A hello split over several records is joined into `join` (a hello longer than
/// `join` is [`Hello::NotHello`]).
pub fn records_sni<'a>(stream: &'a [u8], join: &'a mut [u8]) -> Hello<'a> {
    // common case: the first record holds the whole message
    let mut p = 0usize;
    let mut n = 0usize;
    let mut need_total = None::<usize>;
    let mut single = true;
    loop {
        let Some(h) = stream.get(p..p + 5) else {
            return Hello::Incomplete(p + 5);
        };
        if h[0] != 22 || h[1] != 3 {
            return Hello::NotHello;
        }
        let rl = usize::from(u16::from_be_bytes([h[3], h[4]]));
        if rl == 0 || rl > 16384 + 256 {
            return Hello::NotHello;
        }
        let body = &stream[p + 5..stream.len().min(p + 5 + rl)];
        if single && p == 0 {
            match client_hello_sni(body) {
                Hello::Incomplete(k) if body.len() == rl && k > rl => {
                    // the message continues in the next record
                    single = false;
                    need_total = Some(k);
                }
                Hello::Incomplete(k) => return Hello::Incomplete(5 + k),
                other => return rebind(other, stream),
            }
        }
        if n + body.len() > join.len() {
            return Hello::NotHello;
        }
        join[n..n + body.len()].copy_from_slice(body);
        n += body.len();
        if body.len() < rl {
            return Hello::Incomplete(p + 5 + rl);
        }
        p += 5 + rl;
        if let Some(total) = need_total
            && n >= total
        {
            break;
        }
        if p > 8 * 16384 {
            return Hello::NotHello;
        }
    }
    match client_hello_sni(&join[..n]) {
        Hello::Sni(s) => Hello::Sni(s),
        Hello::NoSni => Hello::NoSni,
        Hello::Incomplete(_) | Hello::NotHello => Hello::NotHello,
    }
}

/// Reborrows a result of `client_hello_sni(body)` with `body` inside `stream`.
fn rebind<'a>(h: Hello<'_>, stream: &'a [u8]) -> Hello<'a> {
    match h {
        Hello::Sni(s) => {
            let off = s.as_ptr() as usize - stream.as_ptr() as usize;
            Hello::Sni(&stream[off..off + s.len()])
        }
        Hello::NoSni => Hello::NoSni,
        Hello::Incomplete(k) => Hello::Incomplete(k),
        Hello::NotHello => Hello::NotHello,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal ClientHello handshake message with the given server name and `pad` bytes of
    /// padding extension.
    pub(crate) fn hello(sni: Option<&[u8]>, pad: usize) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.push(0);
        body.extend_from_slice(&[0, 2, 0x13, 0x01]);
        body.extend_from_slice(&[1, 0]);
        let mut exts = Vec::new();
        exts.extend_from_slice(&[0, 43, 0, 3, 2, 3, 4]); // supported_versions
        if let Some(s) = sni {
            let mut e = Vec::new();
            e.extend_from_slice(&((s.len() + 3) as u16).to_be_bytes());
            e.push(0);
            e.extend_from_slice(&(s.len() as u16).to_be_bytes());
            e.extend_from_slice(s);
            exts.extend_from_slice(&[0, 0]);
            exts.extend_from_slice(&(e.len() as u16).to_be_bytes());
            exts.extend_from_slice(&e);
        }
        exts.extend_from_slice(&[0, 21]);
        exts.extend_from_slice(&(pad as u16).to_be_bytes());
        exts.extend(std::iter::repeat_n(0u8, pad));
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(&exts);
        let mut hs = vec![1];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        hs
    }

    pub(crate) fn records(hs: &[u8], max: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for c in hs.chunks(max) {
            out.extend_from_slice(&[22, 3, 1]);
            out.extend_from_slice(&(c.len() as u16).to_be_bytes());
            out.extend_from_slice(c);
        }
        out
    }

    #[test]
    fn sni_from_message_and_records() {
        let hs = hello(Some(b"example.com"), 10);
        assert_eq!(client_hello_sni(&hs), Hello::Sni(b"example.com"));
        assert_eq!(client_hello_sni(&hs[..20]), Hello::Incomplete(hs.len()));
        let rec = records(&hs, 16384);
        let mut join = [0u8; 4096];
        assert_eq!(records_sni(&rec, &mut join), Hello::Sni(b"example.com"));
        assert_eq!(
            records_sni(&rec[..30], &mut join),
            Hello::Incomplete(rec.len())
        );
        assert!(looks_like_tls(&rec));
        // fragmented over records of 100 bytes
        let big = hello(Some(b"split.example"), 1500);
        let rec = records(&big, 100);
        assert_eq!(records_sni(&rec, &mut join), Hello::Sni(b"split.example"));
        match records_sni(&rec[..250], &mut join) {
            Hello::Incomplete(n) => assert!(n > 250),
            o => panic!("{o:?}"),
        }
        let mut small = [0u8; 64];
        assert_eq!(records_sni(&rec, &mut small), Hello::NotHello);
    }

    #[test]
    fn no_sni_and_garbage() {
        assert_eq!(client_hello_sni(&hello(None, 0)), Hello::NoSni);
        assert_eq!(client_hello_sni(&[2, 0, 0, 40]), Hello::NotHello);
        let mut bad = hello(Some(b"x.y"), 0);
        bad[4] = 9; // version
        assert_eq!(client_hello_sni(&bad), Hello::NotHello);
        let mut join = [0u8; 256];
        assert_eq!(
            records_sni(b"GET / HTTP/1.1\r\n", &mut join),
            Hello::NotHello
        );
        for n in 0..60 {
            let _ = client_hello_sni(&hello(Some(b"a.b"), 0)[..n]);
        }
    }
}
