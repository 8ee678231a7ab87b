//! A JSON writer that produces exactly the bytes of the reference's
//! `json.dumps(obj, sort_keys=True, indent=2, separators=(',', ': '))`:
//! keys sorted at every level, two-space indent, `"key": value`, empty
//! containers as `{}`/`[]`, non-ASCII (and DEL) escaped as lowercase `\uXXXX`
//! (surrogate pairs above U+FFFF), floats as Python `repr`, no trailing newline.

use std::fmt::Write as _;

use serde_json::{Number, Value as Json};

use super::rows::{Cell, Rows};
use crate::value::write_real;

/// A line break and the indentation after it (deeper levels are written in steps).
const NEWLINE: &str = "\n                                                                ";

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

/// The offset of the first byte at or after `i` that must be escaped (see [`ESCAPE`]), or
/// `b.len()`.
#[inline]
fn escape_stop(b: &[u8], i: usize) -> usize {
    use super::scan::{below, eq, first};
    // the high bit of `w` itself flags every non-ASCII byte
    first(
        b,
        i,
        |w| eq(w, b'"') | eq(w, b'\\') | eq(w, 0x7f) | below(w, 0x20) | w,
        &ESCAPE,
    )
}

/// Writes a JSON number as the reference does: integers as they are, floats
/// as Python's `repr`.
pub(crate) fn write_number(n: &Number, out: &mut String) {
    if let Some(u) = n.as_u64() {
        out.push_str(itoa::Buffer::new().format(u));
    } else if let Some(i) = n.as_i64() {
        out.push_str(itoa::Buffer::new().format(i));
    } else if let Some(f) = n.as_f64() {
        write_real(f, out);
    }
}

/// Output buffer with the current indentation.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    pub(crate) out: String,
    depth: usize,
}

impl Writer {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Writer {
            out: String::with_capacity(n),
            depth: 0,
        }
    }

    #[inline]
    fn newline(&mut self) {
        let mut n = 2 * self.depth;
        let k = n.min(NEWLINE.len() - 1);
        self.out.push_str(&NEWLINE[..1 + k]);
        n -= k;
        while n > 0 {
            let k = n.min(NEWLINE.len() - 1);
            self.out.push_str(&NEWLINE[1..1 + k]);
            n -= k;
        }
    }

    /// Opens an object; `n` is the number of members that will follow.
    pub(crate) fn begin_object(&mut self, n: usize) {
        self.out.push('{');
        if n > 0 {
            self.depth += 1;
        }
    }

    /// Writes the key of member `i` (0-based) of the current object.
    pub(crate) fn key(&mut self, i: usize, k: &str) {
        if i > 0 {
            self.out.push(',');
        }
        self.newline();
        self.string(k);
        self.out.push_str(": ");
    }

    pub(crate) fn end_object(&mut self, n: usize) {
        self.end_container(n, '}');
    }

    pub(crate) fn begin_array(&mut self, n: usize) {
        self.out.push('[');
        if n > 0 {
            self.depth += 1;
        }
    }

    pub(crate) fn item(&mut self, i: usize) {
        if i > 0 {
            self.out.push(',');
        }
        self.newline();
    }

    pub(crate) fn end_array(&mut self, n: usize) {
        self.end_container(n, ']');
    }

    fn end_container(&mut self, n: usize, c: char) {
        if n > 0 {
            self.depth -= 1;
            self.newline();
        }
        self.out.push(c);
    }

    /// Writes `null`.
    pub(crate) fn null(&mut self) {
        self.out.push_str("null");
    }

    /// Writes a JSON string literal with Python's `ensure_ascii` escaping.
    #[inline]
    pub(crate) fn string(&mut self, s: &str) {
        let out = &mut self.out;
        out.reserve(s.len() + 2);
        out.push('"');
        let b = s.as_bytes();
        let mut start = 0;
        loop {
            let i = escape_stop(b, start);
            out.push_str(&s[start..i]);
            if i == b.len() {
                break;
            }
            if b[i].is_ascii() {
                escape_ascii(b[i], out);
                start = i + 1;
            } else {
                // a whole non-ASCII character, as UTF-16 escapes
                let c = s[i..].chars().next().unwrap_or('\u{fffd}');
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
                start = i + c.len_utf8();
            }
        }
        out.push('"');
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
                    Cell::Number(n) => self.out.push_str(n),
                    Cell::Bool(true) => self.out.push_str("true"),
                    Cell::Bool(false) => self.out.push_str("false"),
                }
            }
            self.end_array(row.len());
        }
        self.end_array(rows.len());
    }

    /// Writes any JSON value (objects with sorted keys).
    pub(crate) fn value(&mut self, v: &Json) {
        match v {
            Json::Null => self.out.push_str("null"),
            Json::Bool(true) => self.out.push_str("true"),
            Json::Bool(false) => self.out.push_str("false"),
            Json::Number(n) => write_number(n, &mut self.out),
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

fn escape_ascii(b: u8, out: &mut String) {
    match b {
        b'"' => out.push_str("\\\""),
        b'\\' => out.push_str("\\\\"),
        b'\n' => out.push_str("\\n"),
        b'\r' => out.push_str("\\r"),
        b'\t' => out.push_str("\\t"),
        0x08 => out.push_str("\\b"),
        0x0c => out.push_str("\\f"),
        _ => {
            let _ = write!(out, "\\u{b:04x}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dump(v: &Json) -> String {
        let mut w = Writer::default();
        w.value(v);
        w.out
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

    #[test]
    fn escape_stop_finds_the_first_byte_to_escape() {
        let special = [b'"', b'\\', 0, 0x1f, 0x7f, 0x80, 0xc3, b'\n'];
        for len in 0..20 {
            for at in 0..=len {
                for &c in &special {
                    let mut v: Vec<u8> = (0..len).map(|k| b"a ~!#[]Z09"[k % 10]).collect();
                    if at < len {
                        v[at] = c;
                        if at + 1 < len {
                            v[at + 1] = 0xff;
                        }
                    }
                    let want = v.iter().position(|&b| ESCAPE[b as usize]).unwrap_or(len);
                    assert_eq!(escape_stop(&v, 0), want, "{v:?}");
                }
            }
        }
    }

    #[test]
    fn ensure_ascii_escapes() {
        let v = Json::String("é\u{7f}\u{1}\"\\\n😀".into());
        assert_eq!(dump(&v), r#""\u00e9\u007f\u0001\"\\\n\ud83d\ude00""#);
    }
}
