//! HTTP/1.x requests (RFC 9112): the `Host` header of the first request.

/// Methods that start a request line (RFC 9110 §9, plus PATCH).
const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"HEAD ",
    b"PUT ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];

/// `true` when `payload` starts like an HTTP/1.x request.
pub fn looks_like_request(payload: &[u8]) -> bool {
    METHODS.iter().any(|m| payload.starts_with(m))
}

/// Result of looking for the `Host` header in a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host<'a> {
    /// The header's value (surrounding whitespace removed).
    Found(&'a [u8]),
    /// The header block ended without a `Host` header (HTTP/1.0).
    Absent,
    /// Not in these bytes, and the header block goes on.
    NotYet,
}

/// Looks for a `Host:` header line in `bytes` (the start of a request, or a later segment
/// of its header block). Header names compare case-insensitively.
pub fn find_host(bytes: &[u8]) -> Host<'_> {
    let mut line_start = 0usize;
    let mut i = 0usize;
    while i < bytes.len() {
        if bytes[i] == b'\n' {
            let line = trim_cr(&bytes[line_start..i]);
            if line.is_empty() && line_start > 0 {
                return Host::Absent;
            }
            if let Some(v) = host_value(line) {
                return Host::Found(v);
            }
            line_start = i + 1;
        }
        i += 1;
    }
    Host::NotYet
}

fn trim_cr(l: &[u8]) -> &[u8] {
    l.strip_suffix(b"\r").unwrap_or(l)
}

fn host_value(line: &[u8]) -> Option<&[u8]> {
    if line.len() < 5 || !line[..5].eq_ignore_ascii_case(b"host:") {
        return None;
    }
    let v = &line[5..];
    let s = v
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(v.len());
    let e = v
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(s, |p| p + 1);
    Some(&v[s..e.max(s)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_header() {
        let r = b"GET /index.html HTTP/1.1\r\nUser-Agent: x\r\nhOsT:  www.example.org:8080 \r\nAccept: */*\r\n\r\n";
        assert!(looks_like_request(r));
        assert_eq!(find_host(r), Host::Found(b"www.example.org:8080"));
        assert_eq!(
            find_host(b"GET / HTTP/1.0\r\nAccept: */*\r\n\r\n"),
            Host::Absent
        );
        assert_eq!(find_host(b"GET / HTTP/1.1\r\nCookie: abc"), Host::NotYet);
        assert_eq!(find_host(b"Host: a.b\n"), Host::Found(b"a.b"));
        assert_eq!(find_host(b"X-Host: no\r\n\r\n"), Host::Absent);
        assert!(!looks_like_request(b"\x16\x03\x01"));
        assert_eq!(find_host(b"Host:\r\n"), Host::Found(b""));
    }
}
