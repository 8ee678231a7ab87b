//! A JSON writer that produces exactly the bytes of the reference's
//! `json.dumps(obj, sort_keys=True, indent=2, separators=(',', ': '))`:
//! keys sorted at every level, two-space indent, `"key": value`, empty
//! containers as `{}`/`[]`, non-ASCII (and DEL) escaped as lowercase `\uXXXX`
//! (surrogate pairs above U+FFFF), floats as Python `repr`, no trailing newline.

use serde_json::{Number, Value as Json};

use super::rows::{Cell, Rows};
use crate::value::write_real;

/// Bytes that a JSON string cannot hold as they are under `ensure_ascii`:
/// control characters, `"`, `\\`, DEL and every non-ASCII byte.
static ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = i < 0x20 || i >= 0x7f || i == b'"' as usize || i == b'\\' as usize;
        i += 1;
    }
    t
};

/// Writes a JSON number as the reference does: integers as they are, floats
/// as Python's `repr`.
pub(crate) fn write_number(n: &Number, out: &mut String) {
    with_number_text(n, |t| out.push_str(t));
}

/// Calls `f` with the text of `n` as [`write_number`] writes it (integers without a
/// temporary `String`).
fn with_number_text<R>(n: &Number, f: impl FnOnce(&str) -> R) -> R {
    if let Some(u) = n.as_u64() {
        f(itoa::Buffer::new().format(u))
    } else if let Some(i) = n.as_i64() {
        f(itoa::Buffer::new().format(i))
    } else {
        let mut t = String::new();
        if let Some(x) = n.as_f64() {
            write_real(x, &mut t);
        }
        f(&t)
    }
}

/// Output buffer with the current indentation.
///
/// Everything written is ASCII (`ensure_ascii`), so the buffer is bytes, written in
/// fixed-size pieces where it can (a line break and its indentation, eight bytes of a string
/// at a time) instead of a copy of variable length each.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    out: Vec<u8>,
    depth: usize,
}

/// A line break and up to [`INDENT_LIMIT`] bytes of indentation, written whole and then cut.
const LINE: [u8; 32] = *b"\n                               ";
const INDENT_LIMIT: usize = LINE.len() - 1;

impl Writer {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Writer {
            out: Vec::with_capacity(n),
            depth: 0,
        }
    }

    /// The text written.
    pub(crate) fn finish(self) -> String {
        // only ASCII is ever written; were it not so, nothing is lost either
        String::from_utf8(self.out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }

    #[inline]
    fn newline(&mut self) {
        let n = 2 * self.depth;
        if n <= INDENT_LIMIT {
            let end = self.out.len() + 1 + n;
            self.out.extend_from_slice(&LINE);
            self.out.truncate(end);
        } else {
            self.out.push(b'\n');
            self.out.resize(self.out.len() + n, b' ');
        }
    }

    /// Opens an object; `n` is the number of members that will follow.
    pub(crate) fn begin_object(&mut self, n: usize) {
        self.out.push(b'{');
        if n > 0 {
            self.depth += 1;
        }
    }

    /// Writes the key of member `i` (0-based) of the current object.
    pub(crate) fn key(&mut self, i: usize, k: &str) {
        if i > 0 {
            self.out.push(b',');
        }
        self.newline();
        self.string(k);
        self.out.extend_from_slice(b": ");
    }

    pub(crate) fn end_object(&mut self, n: usize) {
        self.end_container(n, b'}');
    }

    pub(crate) fn begin_array(&mut self, n: usize) {
        self.out.push(b'[');
        if n > 0 {
            self.depth += 1;
        }
    }

    pub(crate) fn item(&mut self, i: usize) {
        if i > 0 {
            self.out.push(b',');
        }
        self.newline();
    }

    pub(crate) fn end_array(&mut self, n: usize) {
        self.end_container(n, b']');
    }

    fn end_container(&mut self, n: usize, c: u8) {
        if n > 0 {
            self.depth -= 1;
            self.newline();
        }
        self.out.push(c);
    }

    /// Writes `null`.
    pub(crate) fn null(&mut self) {
        self.out.extend_from_slice(b"null");
    }

    /// Writes text that needs no escaping (numbers, keywords).
    #[inline]
    pub(crate) fn raw(&mut self, s: &str) {
        self.out.extend_from_slice(s.as_bytes());
    }

    /// Writes a JSON string literal with Python's `ensure_ascii` escaping.
    #[inline(always)]
    pub(crate) fn string(&mut self, s: &str) {
        use super::scan::{HI, below, eq};
        let out = &mut self.out;
        out.reserve(s.len() + 2);
        out.push(b'"');
        let b = s.as_bytes();
        let mut i = 0;
        loop {
            // eight bytes at a time: copied whole, then cut back to the first one to escape
            while let Some(chunk) = b.get(i..i + 8) {
                let c: [u8; 8] = chunk.try_into().unwrap_or([0; 8]);
                let w = u64::from_le_bytes(c);
                // the high bit of `w` itself flags every non-ASCII byte
                let t = (eq(w, b'"') | eq(w, b'\\') | eq(w, 0x7f) | below(w, 0x20) | w) & HI;
                out.extend_from_slice(&c);
                if t != 0 {
                    let k = (t.trailing_zeros() / 8) as usize;
                    out.truncate(out.len() - 8 + k);
                    i += k;
                    break;
                }
                i += 8;
            }
            // the last few bytes one by one
            while let Some(&c) = b.get(i) {
                if ESCAPE[c as usize] {
                    break;
                }
                out.push(c);
                i += 1;
            }
            let Some(&c) = b.get(i) else {
                break;
            };
            if c.is_ascii() {
                escape_ascii(c, out);
                i += 1;
            } else {
                // a whole non-ASCII character, as UTF-16 escapes
                let ch = s[i..].chars().next().unwrap_or('\u{fffd}');
                let mut buf = [0u16; 2];
                for unit in ch.encode_utf16(&mut buf) {
                    hex_escape(*unit, out);
                }
                i += ch.len_utf8();
            }
        }
        out.push(b'"');
    }

    /// Writes result rows: an array of arrays of cells.
    pub(crate) fn rows(&mut self, rows: &Rows) {
        self.begin_array(rows.len());
        for (j, row) in rows.iter().enumerate() {
            self.item(j);
            self.begin_array(row.len());
            for (c, cell) in row.iter().enumerate() {
                self.item(c);
                match cell {
                    Cell::Str(s) => self.string(s),
                    Cell::Number(n) => self.raw(n),
                    Cell::Bool(true) => self.raw("true"),
                    Cell::Bool(false) => self.raw("false"),
                }
            }
            self.end_array(row.len());
        }
        self.end_array(rows.len());
    }

    /// Writes any JSON value (objects with sorted keys).
    pub(crate) fn value(&mut self, v: &Json) {
        match v {
            Json::Null => self.null(),
            Json::Bool(true) => self.raw("true"),
            Json::Bool(false) => self.raw("false"),
            Json::Number(n) => with_number_text(n, |t| self.raw(t)),
            Json::String(s) => self.string(s),
            Json::Array(a) => {
                self.begin_array(a.len());
                for (i, x) in a.iter().enumerate() {
                    self.item(i);
                    self.value(x);
                }
                self.end_array(a.len());
            }
            Json::Object(m) => {
                // serde_json's Map is ordered by key (byte order = code point order,
                // which is Python's str ordering).
                self.begin_object(m.len());
                for (i, (k, x)) in m.iter().enumerate() {
                    self.key(i, k);
                    self.value(x);
                }
                self.end_object(m.len());
            }
        }
    }
}

/// Writes `\uXXXX` (lowercase hex).
fn hex_escape(unit: u16, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(b"\\u");
    for shift in [12, 8, 4, 0] {
        out.push(HEX[usize::from(unit >> shift & 0xf)]);
    }
}

fn escape_ascii(b: u8, out: &mut Vec<u8>) {
    match b {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        b'\n' => out.extend_from_slice(b"\\n"),
        b'\r' => out.extend_from_slice(b"\\r"),
        b'\t' => out.extend_from_slice(b"\\t"),
        0x08 => out.extend_from_slice(b"\\b"),
        0x0c => out.extend_from_slice(b"\\f"),
        _ => hex_escape(u16::from(b), out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dump(v: &Json) -> String {
        let mut w = Writer::default();
        w.value(v);
        w.finish()
    }

    #[test]
    fn python_layout() {
        let v: Json =
            serde_json::from_str(r#"{"b":[1,"x",[]],"a":{},"c":{"z":null,"y":1.5e-7}}"#).unwrap();
        assert_eq!(
            dump(&v),
            "{\n  \"a\": {},\n  \"b\": [\n    1,\n    \"x\",\n    []\n  ],\n  \"c\": {\n    \"y\": 1.5e-07,\n    \"z\": null\n  }\n}"
        );
    }

    /// The eight-byte path agrees with escaping one character at a time wherever the
    /// byte to escape falls (inside a word, across words, in the tail).
    #[test]
    fn string_escapes_wherever_the_byte_falls() {
        fn slow(s: &str) -> String {
            let mut o = String::from("\"");
            for c in s.chars() {
                match c {
                    '"' => o.push_str("\\\""),
                    '\\' => o.push_str("\\\\"),
                    '\n' => o.push_str("\\n"),
                    '\r' => o.push_str("\\r"),
                    '\t' => o.push_str("\\t"),
                    '\u{8}' => o.push_str("\\b"),
                    '\u{c}' => o.push_str("\\f"),
                    ' '..='~' => o.push(c),
                    _ => {
                        let mut buf = [0u16; 2];
                        for u in c.encode_utf16(&mut buf) {
                            o.push_str(&format!("\\u{u:04x}"));
                        }
                    }
                }
            }
            o.push('"');
            o
        }
        let special = [
            '"', '\\', '\0', '\u{1f}', '\u{7f}', '\u{80}', 'é', '\n', '😀',
        ];
        for len in 0..20 {
            for at in 0..=len {
                for &c in &special {
                    let mut v: Vec<char> = (0..len)
                        .map(|k| "a ~!#[]Z09".as_bytes()[k % 10] as char)
                        .collect();
                    if at < len {
                        v[at] = c;
                        if at + 1 < len {
                            v[at + 1] = 'ÿ';
                        }
                    }
                    let s: String = v.into_iter().collect();
                    let mut w = Writer::default();
                    w.string(&s);
                    assert_eq!(w.finish(), slow(&s), "{s:?}");
                }
            }
        }
    }

    #[test]
    fn deep_indentation() {
        let mut v = Json::from(1);
        for _ in 0..40 {
            v = Json::Array(vec![v]);
        }
        let text = dump(&v);
        assert_eq!(serde_json::from_str::<Json>(&text).unwrap(), v);
        assert!(text.contains(&format!("\n{}1", " ".repeat(80))));
    }

    #[test]
    fn ensure_ascii_escapes() {
        let v = Json::String("é\u{7f}\u{1}\"\\\n😀".into());
        assert_eq!(dump(&v), r#""\u00e9\u007f\u0001\"\\\n\ud83d\ude00""#);
    }
}
